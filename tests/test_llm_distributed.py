"""The trainer on two processes (gloo, CPU): the same gradient as one process on the whole batch
under every aggregation, resume, and a real ``torchrun ... grlab.cli train-llm``.

Two processes are spawned once for the module (``two_processes``); they run every job and
process 0 saves the results, which the tests compare with one-process references computed
here, in the test process, by the same public functions on the whole batch.
"""

from __future__ import annotations

import copy
import datetime
import gc
import json
import os
import subprocess
import sys
import time
import weakref
from pathlib import Path

import pytest

pytest.importorskip("transformers")

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from llm_bridge import distributed
from llm_bridge.models import char_tokenizer, tiny_model
from llm_bridge.tasks import TreeTask
from llm_bridge.trainer import TrainConfig, accumulate_gradients, train
from simulator.aggregation import AGGREGATIONS
from tests.test_llm_trainer import stale_arithmetic_batch

LOSSES = ("rec-oneside-is", "red-drop")
GROUPS, K = 3, 3  # 3 groups over 2 processes: process 0 gets 2 groups (6 rows), process 1 one


def _grad(model) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def _cfg(loss: str, mode: str, micro_batch: int) -> TrainConfig:
    return TrainConfig(loss=loss, agg=mode, group_size=K, prompts_per_step=GROUPS,
                       max_new_tokens=6, temperature=1.3, micro_batch=micro_batch)


def _batches(tok):
    """Two global batches of 3 groups × 3 responses sampled by θ_old, and θ (a perturbed copy,
    so ratios are not 1). "uneven": responses cut to unequal lengths, so the processes hold
    different token counts (process 0: 6 rows, process 1: 3 rows), and row 4 fully masked.
    "empty-share": in addition, process 1's whole share (rows 6–8) masked: it has nothing to
    contribute but must join the gradient all-reduce."""
    lengths = [0 if i == 4 else 1 + (5 * i) % 6 for i in range(GROUPS * K)]
    batch, model = stale_arithmetic_batch(tok, groups=GROUPS, k=K, lengths=lengths)
    empty = copy.deepcopy(batch)
    empty.rollout.response_mask[2 * K:] = False
    return {"uneven": batch, "empty-share": empty}, model


def _resume_cfg(out: Path, **overrides) -> tuple[TrainConfig, object, object]:
    task = TreeTask.random(prompts=2, vocab=3, depth=3, eos=True, seed=4)
    model = tiny_model(char_tokenizer(), init_std=0.3, seed=4)
    cfg = TrainConfig(**{"loss": "grpo", "sync_interval": 2, "sync_offset": 1, "steps": 5,
                         "group_size": 3, "prompts_per_step": 3, "max_new_tokens": 3,
                         "lr": 3e-3, "eval_every": 5, "eval_prompts": 2, "checkpoint_every": 100,
                         "out": out, "plot": False, **overrides})
    return cfg, model, task


def _strip(history):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


# --------------------------------------------------------------------------------------------
# The spawned processes
# --------------------------------------------------------------------------------------------


def _gradient_jobs(processes, results) -> None:
    tok = char_tokenizer()
    batches, model = _batches(tok)
    policy = processes.wrap(model)  # DDP
    for case, batch in batches.items():
        mine = batch.groups(processes.share(GROUPS))
        for loss in LOSSES:
            for mode in AGGREGATIONS:
                model.zero_grad()
                accumulate_gradients(policy, mine, _cfg(loss, mode, micro_batch=2),
                                     advantage_generator=torch.Generator().manual_seed(7),
                                     processes=processes)
                results[("ddp", case, loss, mode)] = _grad(model)
    # the common bug: each process normalises by its own count and DDP averages
    mine = batches["uneven"].groups(processes.share(GROUPS))
    for mode in AGGREGATIONS:
        model.zero_grad()
        accumulate_gradients(model, mine, _cfg("rec-oneside-is", mode, micro_batch=2),
                             advantage_generator=torch.Generator().manual_seed(7))
        grad = _grad(model)
        dist.all_reduce(grad)
        results[("naive", mode)] = grad / processes.world_size


def _resume_jobs(processes, folder: Path, results) -> None:
    tok = char_tokenizer()
    cfg, model, task = _resume_cfg(folder / "straight")
    straight = train(cfg, model, tok, task)
    cfg, model, task = _resume_cfg(folder / "split")
    train(cfg, model, tok, task, stop_after=3)
    cfg, model, task = _resume_cfg(folder / "split", resume=True)
    resumed = train(cfg, model, tok, task)
    flat = torch.cat([p.detach().flatten() for p in straight.model.parameters()])
    everyone = [torch.empty_like(flat) for _ in range(processes.world_size)]
    dist.all_gather(everyone, flat)
    results["straight"] = [p.detach().clone() for p in straight.model.parameters()]
    results["resumed"] = [p.detach().clone() for p in resumed.model.parameters()]
    results["histories"] = (_strip(straight.history), _strip(resumed.history))
    results["ranks_agree"] = all(torch.equal(everyone[0], other) for other in everyone)


def _worker(rank: int, world: int, folder: str) -> None:
    folder = Path(folder)
    torch.set_num_threads(1)  # two processes on a small machine
    dist.init_process_group("gloo", init_method=f"file://{folder / 'store'}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=120))
    try:
        processes = distributed.current()
        results: dict = {}
        _gradient_jobs(processes, results)
        _resume_jobs(processes, folder, results)
        if processes.is_main:
            torch.save(results, folder / "results.pt")
    finally:
        distributed.stop()  # what train-llm does: collect DDP's cycles, then leave the group


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("two-processes")
    context = mp.start_processes(_worker, args=(2, str(folder)), nprocs=2, join=False,
                                 start_method="spawn")
    deadline = time.monotonic() + 600
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the two processes did not finish in 600 s (a deadlock?)")
    return folder, torch.load(folder / "results.pt", weights_only=False)


@pytest.fixture(scope="module")
def references():
    """One process, the whole batch, one micro-batch: the gradient the two must reproduce."""
    batches, model = _batches(char_tokenizer())
    out = {}
    for case, batch in batches.items():
        for loss in LOSSES:
            for mode in AGGREGATIONS:
                model.zero_grad()
                accumulate_gradients(model, batch, _cfg(loss, mode, micro_batch=1000),
                                     advantage_generator=torch.Generator().manual_seed(7))
                out[(case, loss, mode)] = _grad(model)
    return out


# --------------------------------------------------------------------------------------------
# The tests
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", AGGREGATIONS)
@pytest.mark.parametrize("case", ["uneven", "empty-share"])
def test_two_processes_give_the_one_process_gradient(two_processes, references, mode, case):
    """DDP over 2 processes (6 and 3 rows, unequal token counts, a fully masked row; or the
    second process's share fully masked), micro-batches of 2 rows: after the all-reduce every
    process holds ∇ of the global batch's loss — the one-process gradient on the whole batch —
    for every aggregation, for a clipped token-ratio loss (REC-OneSide-IS) and one whose
    advantages and dropped rows are random (RED-Drop: every process draws them for the whole
    batch from the same generator)."""
    _, results = two_processes
    for loss in LOSSES:
        want = references[(case, loss, mode)]
        scale = float(want.abs().max())
        assert scale > 1e-3
        torch.testing.assert_close(results[("ddp", case, loss, mode)], want, rtol=0,
                                   atol=1e-6 * scale)


@pytest.mark.parametrize("mode", AGGREGATIONS)
def test_normalising_per_process_and_averaging_is_wrong(two_processes, references, mode):
    """The power of the test above: each process dividing by its own count and DDP averaging
    (the common bug) misses the one-process gradient under every mode (by 2× for token-sum)."""
    _, results = two_processes
    want = references[("uneven", "rec-oneside-is", mode)]
    gap = float((results[("naive", mode)] - want).abs().max())
    assert gap > 1e-2 * float(want.abs().max())


def test_resume_with_two_processes_equals_the_uninterrupted_run(two_processes):
    """2 processes, 5 steps straight vs 3 steps, new objects, resume, 2 more (sync_interval 2,
    sync_offset 1: the checkpoint after step 3 holds each process's pending batches of steps 3
    and 4, sampled by θ_2): identical parameters and metrics; both processes hold the same
    parameters; the checkpoint keeps one state per process."""
    folder, results = two_processes
    for a, b in zip(results["straight"], results["resumed"], strict=True):
        assert torch.equal(a, b)
    straight, resumed = results["histories"]
    assert straight == resumed and [row["step"] for row in straight] == list(range(6))
    assert results["ranks_agree"]
    state = torch.load(folder / "split" / "checkpoint.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["ranks"]) == 2
    lines = (folder / "split" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == list(range(6))


def test_a_two_process_checkpoint_is_not_resumed_by_one_process(two_processes):
    folder, _ = two_processes
    cfg, model, task = _resume_cfg(folder / "split", resume=True, steps=7)
    with pytest.raises(ValueError, match="2 process"):
        train(cfg, model, char_tokenizer(), task)


def _report(result: subprocess.CompletedProcess) -> str:
    """A failed launch as the workers wrote it: their output comes before torchrun's own
    summary (which names the failed rank and its signal), so the head of stderr is kept too."""
    return (f"exit {result.returncode}\n--- stdout (tail)\n{result.stdout[-2000:]}\n"
            f"--- stderr (head)\n{result.stderr[:4000]}\n--- stderr (tail)\n"
            f"{result.stderr[-2000:]}")


@pytest.mark.parametrize("device", [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(torch.cuda.device_count() < 2,
                                                  reason="needs 2 CUDA devices (NCCL)")),
])
def test_torchrun_trains_and_resumes(tmp_path, device):
    """The command a user types, on 2 processes (gloo on CPU, NCCL on 2 GPUs): 2 steps, then
    --resume to 3 steps. Only process 0 prints; the metrics hold every step once."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", "2", "-m", "grlab.cli", "train-llm", "--model", "tiny",
               "--task", "tree", "--eval-every", "1", "--device", device, "--out", str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    first = subprocess.run([*command, "--steps", "2"], capture_output=True, text=True,
                           env=env, timeout=300)
    assert first.returncode == 0, _report(first)
    assert first.stdout.count("held-out reward") == 1 and "× 2 processes" in first.stdout
    again = subprocess.run([*command, "--steps", "3", "--resume"], capture_output=True,
                           text=True, env=env, timeout=300)
    assert again.returncode == 0, _report(again)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [0, 1, 2, 3]
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["step"] == 3 and state["world_size"] == 2


def test_stop_frees_the_ddp_wrapper_before_leaving_the_group(tmp_path):
    """A DDP wrapper in a reference cycle: ``stop`` must collect it while the group is alive (not
    at interpreter shutdown, where gloo can die of SIGABRT)."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    enabled = gc.isenabled()
    gc.disable()  # no collection may happen by chance between here and stop()
    try:
        policy = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 4))
        policy(torch.randn(2, 4)).sum().backward()
        # after a backward DDP is often in a cycle already (not always: it depends on what ran
        # before in the process); one more makes the case certain
        policy.__dict__["itself"] = policy
        alive = weakref.ref(policy)
        del policy
        assert alive() is not None  # the cycle: a plain del does not free it
        distributed.stop()
        assert alive() is None and not dist.is_initialized()  # before gc runs on its own again
    finally:
        if enabled:
            gc.enable()
        if dist.is_initialized():  # a failure above must not leave the group to later tests
            dist.destroy_process_group()
