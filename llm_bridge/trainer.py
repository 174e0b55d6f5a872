"""The bridge's trainer: any loss of the zoo on a Hugging Face causal LM, off-policy, on one
process or several (``torchrun`` / ``accelerate launch``).

One step (CleanRL/nanochat style, top to bottom in ``train``):
prompts → K samples each from the rollout copy → exact rewards → group advantages
(``LOSSES[loss].advantages``, the preset's kind) → ``policy_loss`` over micro-batches →
AdamW with gradient clipping.

Design decisions
----------------
* The losses and advantages are ``simulator.losses`` / ``simulator.advantages``, unchanged:
  the trainer only supplies [B, T] log-probs, behaviour log-probs, advantages and a mask.
* Off-policyness is the simulator's ``Schedule``: the data trained on at step t were sampled
  by θ_{b(t)}, b = ``Schedule.behaviour_step``. At step s the rollout copy is synced to θ_s and
  samples every future step u with b(u) = s — however long the run, so ``--resume --steps``
  can extend a finished run (at most ``sync_interval + sync_offset − 1`` batches past the end
  are sampled for nothing) — and they wait in a queue of *pending stale rollouts* (part of a
  checkpoint) until step u, as with an asynchronous rollout engine. ``offline``: the rollout
  copy is θ_0 for ever and each batch is drawn when due (the draws of drawing all at step 0).
* Exact micro-batching: every aggregation mode is Σ(row-local terms)/N with N a count of the
  whole batch (``simulator.aggregation.normaliser``), and every per-token loss of the zoo is
  row-local once the advantages are fixed (they are computed on the full batch first). So each
  micro-batch's ``policy_loss`` divides by the full batch's N (``denominator=``) and the
  accumulated gradient is the full-batch gradient, whatever the micro-batches' token counts
  (tested for every mode).
* Several processes (``llm_bridge.distributed``): each samples whole groups; advantages and N
  come from the global batch, and each loss is multiplied by the number of processes W to undo
  DDP's averaging, so W processes give exactly the one-process gradient of the same batch
  (tested for every mode). Process 0 writes files and shows progress; evaluation is split.
* log π_θ uses the rollout's temperature (ratio exactly 1 on-policy, see ``rollout``);
  dropout stays off (the model is kept in eval mode) for the same reason.
* bf16 autocast on CUDA (log-probs in fp32 from the hidden states); float32 on CPU. Every
  random draw has its own checkpointed ``torch.Generator``: ``resume`` continues to exactly the
  parameters of an uninterrupted run. Ctrl-C is answered at once and stops at the end of the
  step with a checkpoint (``TrainingInterrupted``); a second one aborts the step (the last
  checkpoint stands).
* Process 0 writes curves.png at every checkpoint (atomically), so an interrupted or failed
  run has the figure of what it did; a write that fails in the run folder (a full disk) is
  ``runs.RunWriteError`` carrying the step of the last complete checkpoint.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from llm_bridge import runs
from llm_bridge.distributed import (
    SINGLE,
    Generators,
    LogProbs,
    Processes,
    StopOnInterrupt,
    TrainingInterrupted,
    current,
)
from llm_bridge.logprobs import logprobs_and_entropy
from llm_bridge.rollout import Batch, Rollout, generate, pad_rows
from llm_bridge.runs import Progress, Resumed
from llm_bridge.tasks import task_fingerprint
from simulator import kl
from simulator.aggregation import AGGREGATIONS, normaliser
from simulator.files import atomic_write_text
from simulator.losses import LOSSES, policy_loss
from simulator.schedule import Schedule
from simulator.validation import require_choice, require_int, require_positive

__all__ = ["Batch", "TrainConfig", "TrainResult", "TrainingInterrupted", "accumulate_gradients",
           "evaluate", "make_batch", "run_fingerprint", "supervised_warmup", "train"]

TOKEN_METRICS = ("clipfrac", "approx_kl", "ratio_mean", "entropy", "kl_ref")


@dataclasses.dataclass
class TrainConfig:
    """Everything that decides a run (the CLI's flags; see ``llm_bridge.cli.train_llm``, whose
    defaults are these — tested)."""

    loss: str = "grpo"
    agg: str | None = None
    sync_interval: int = 1
    sync_offset: int = 0
    offline: bool = False
    group_size: int = 4
    prompts_per_step: int = 2
    micro_batch: int = 8
    max_new_tokens: int = 12
    temperature: float = 1.0
    top_p: float = 1.0
    lr: float = 2e-5
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    steps: int = 20
    eval_every: int = 10
    eval_prompts: int = 20
    checkpoint_every: int = 10
    seed: int = 0
    chunk_size: int | None = None
    ref_kl: bool = True
    device: str = "cpu"
    out: Path | None = None
    resume: bool = False
    overwrite: bool = False
    progress: bool = False
    plot: bool = True
    keep_previous: bool = True

    def __post_init__(self) -> None:
        LOSSES[self.loss]  # unknown loss: KeyError listing the valid names
        if self.agg is not None:
            require_choice("agg", self.agg, AGGREGATIONS)
        Schedule(self.sync_interval, self.sync_offset, self.offline)  # checks the knobs
        for name in ("group_size", "prompts_per_step", "micro_batch", "max_new_tokens", "steps",
                     "eval_every", "eval_prompts", "checkpoint_every"):
            require_int(name, getattr(self, name), 1)
        for name in ("temperature", "lr", "max_grad_norm"):
            require_positive(name, getattr(self, name))
        if not 0.0 < require_positive("top_p", self.top_p) <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if (self.resume or self.overwrite) and self.out is None:
            raise ValueError("resume and overwrite need out= (the run folder)")
        if self.resume and self.overwrite:
            raise ValueError("resume (--resume) continues the run in out and overwrite "
                             "(--overwrite) replaces it: pass one of them")

    @property
    def schedule(self) -> Schedule:
        return Schedule(self.sync_interval, self.sync_offset, self.offline)

    @property
    def behaviour_gap(self) -> bool:
        """Whether π_θ can differ from the behaviour policy on a batch (stale data, or top-p
        truncation); otherwise clipfrac and approx_kl are exactly 0 and not worth showing."""
        return self.offline or self.sync_interval > 1 or self.sync_offset > 0 or self.top_p < 1

    @property
    def aggregation(self) -> str:
        return self.agg or LOSSES[self.loss].agg

    def fingerprint(self) -> dict[str, Any]:
        """The fields a resumed run must share with the run it continues (``steps`` may grow)."""
        skip = {"resume", "overwrite", "progress", "plot", "out", "device", "eval_every",
                "checkpoint_every", "steps", "keep_previous"}
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}


def run_fingerprint(cfg: TrainConfig, task: Any) -> dict[str, Any]:
    """What a resumed run must share with the run it continues: the config's fingerprint and
    the task's (``llm_bridge.tasks.task_fingerprint``: task, data hash, prompts, rewards)."""
    return {**cfg.fingerprint(), **task_fingerprint(task)}


@dataclasses.dataclass
class TrainResult:
    model: Any
    history: list[dict[str, float]]
    files: dict[str, Path]


def _valid_ids(rollout: Rollout, row: int) -> list[int]:
    return rollout.response_ids[row][rollout.response_mask[row]].tolist()


def make_batch(rollout_model: Any, tokenizer: Any, task: Any, cfg: TrainConfig, *,
               data_generator: torch.Generator, sample_generator: torch.Generator,
               behaviour_step: int = 0, processes: Processes = SINGLE) -> Batch:
    """Sample ``prompts_per_step`` problems, K responses each, and score them. With several
    processes every one draws the same problems and samples its share of the groups."""
    problems = task.train_problems(cfg.prompts_per_step, data_generator)
    problems = problems[processes.share(len(problems))]
    k = cfg.group_size
    prompts = [task.prompt_ids(p, tokenizer) for p in problems for _ in range(k)]
    rollout = generate(rollout_model, prompts, max_new_tokens=cfg.max_new_tokens,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                       generator=sample_generator, temperature=cfg.temperature, top_p=cfg.top_p,
                       allowed_tokens=task.allowed_tokens(tokenizer)).to("cpu")
    rewards = torch.tensor([task.reward(problems[row // k], _valid_ids(rollout, row), tokenizer)
                            for row in range(len(prompts))], dtype=torch.float64)
    return Batch(rollout, rewards.reshape(len(problems), k), behaviour_step)


def _micro_batches(n_rows: int, size: int) -> list[slice]:
    return [slice(start, min(start + size, n_rows)) for start in range(0, n_rows, size)]


def _this_process_rows(batch: Batch, cfg: TrainConfig, processes: Processes,
                       advantage_generator: torch.Generator | None, device: torch.device | str
                       ) -> tuple[Rollout, Tensor, Tensor, Tensor]:
    """(rollout, advantages [B_r], mask [B_r, R]) of this process's rows, and the global
    batch's mask [B, R] (its count is N). Advantages need whole groups, and batch-level kinds
    the whole batch: they are computed on every process's rewards."""
    rewards = processes.gather_rows(batch.rewards)
    advantages, keep = LOSSES[cfg.loss].advantages(rewards, generator=advantage_generator)
    groups = processes.share(rewards.shape[0])
    if tuple(rewards[groups].shape) != tuple(batch.rewards.shape):
        raise ValueError("batch must hold this process's share of the groups "
                         "(Batch.groups(processes.share(G)))")
    rollout = batch.rollout.to(device)
    adv = advantages[groups].reshape(-1).to(device=device, dtype=torch.float32)
    mask = rollout.response_mask & keep[groups].reshape(-1, 1).to(device)
    return rollout, adv, mask, processes.gather_rows(mask)


def accumulate_gradients(model: Any, batch: Batch, cfg: TrainConfig, *,
                         advantage_generator: torch.Generator | None = None,
                         allowed_tokens: Tensor | None = None, ref_model: Any = None,
                         device: torch.device | str = "cpu", processes: Processes = SINGLE
                         ) -> dict[str, float]:
    """Add ∇θ of the full batch's ``policy_loss`` into ``.grad``, one micro-batch at a time.

    ``model``: the causal LM, or ``processes.wrap(model)`` (DDP) with several processes, each
    holding its share of the step's groups in ``batch``. Returns the full-batch metrics: loss,
    the token-weighted ``policy_loss`` metrics, entropy and (with ``ref_model``) kl_ref =
    masked mean of k3(log π_θ, log π_ref) on the batch.
    """
    mode = cfg.aggregation
    policy = model if isinstance(model, torch.nn.parallel.DistributedDataParallel | LogProbs) \
        else LogProbs(model)
    rollout, adv, mask, everyone = _this_process_rows(batch, cfg, processes,
                                                      advantage_generator, device)
    norm_len = float(cfg.max_new_tokens) if mode == "seq-mean-token-sum-norm" else None
    total, total_tokens = normaliser(everyone, mode), everyone.sum().clamp(min=1)
    forward = {"chunk_size": cfg.chunk_size, "temperature": cfg.temperature,
               "first_target": rollout.prompt_width, "allowed_tokens": allowed_tokens}
    sums = dict.fromkeys(("loss", *TOKEN_METRICS), 0.0)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=rollout.input_ids.is_cuda)
    parts = _micro_batches(mask.shape[0], cfg.micro_batch)
    for i, rows in enumerate(parts):
        micro_mask, last = mask[rows], i == len(parts) - 1
        empty = not bool(micro_mask.any())
        if empty and not (last and processes.distributed and bool(everyone.any())):
            continue  # nothing valid: contributes 0 to every aggregation
        part = rollout.rows(rows)
        with processes.sync_gradients(policy, sync=last):
            with autocast:
                logp, entropy = policy(part.input_ids, part.attention_mask, **forward)
            if empty:  # nothing valid here, but this process must join the gradient all-reduce
                torch.where(micro_mask, logp, logp.new_zeros(())).sum().mul(0.0).backward()
                continue
            # divided by the global batch's count: the parts' losses sum to the batch's loss
            out = policy_loss(cfg.loss, logp, part.logp_behaviour, adv[rows], micro_mask,
                              agg=mode, norm_len=norm_len, denominator=total)
            # DDP averages the W processes' gradients; × W makes it their sum (exact for W = 1)
            (out.loss * processes.world_size).backward()
        tokens = float(micro_mask.sum() / total_tokens)
        sums["loss"] += float(out.loss.detach())
        for name in ("clipfrac", "approx_kl", "ratio_mean"):
            sums[name] += float(out.metrics[name]) * tokens
        sums["entropy"] += float(entropy[micro_mask].mean()) * tokens
        if ref_model is not None:
            with torch.no_grad(), autocast:
                ref = logprobs_and_entropy(ref_model, part.input_ids, part.attention_mask,
                                           **forward)[0]
            sums["kl_ref"] += float(kl.k3(logp.detach(), ref)[micro_mask].mean()) * tokens
    if ref_model is None:
        del sums["kl_ref"]
    return dict(zip(sums, processes.sum(list(sums.values())), strict=True))


@torch.no_grad()
def evaluate(model: Any, tokenizer: Any, task: Any, cfg: TrainConfig, device: Any = "cpu",
             processes: Processes = SINGLE) -> float:
    """Mean reward of greedy responses to the task's held-out problems (first ``eval_prompts``);
    with several processes each answers its share and the rewards are summed."""
    problems = task.eval_problems()[: cfg.eval_prompts]
    mine = problems[processes.share(len(problems))]
    rewards = []
    for start in range(0, len(mine), 64):
        chunk = mine[start: start + 64]
        rollout = generate(model, [task.prompt_ids(p, tokenizer) for p in chunk],
                           max_new_tokens=cfg.max_new_tokens,
                           eos_token_id=tokenizer.eos_token_id,
                           pad_token_id=tokenizer.pad_token_id, generator=None, temperature=0.0,
                           allowed_tokens=task.allowed_tokens(tokenizer)).to("cpu")
        rewards += [task.reward(p, _valid_ids(rollout, i), tokenizer)
                    for i, p in enumerate(chunk)]
    if not processes.distributed:
        return sum(rewards) / len(rewards)
    total, count = processes.sum([sum(rewards), len(rewards)])
    return total / count


def supervised_warmup(model: Any, tokenizer: Any, task: Any, *, steps: int, lr: float = 3e-3,
                      batch_size: int = 32, seed: int = 0, device: Any = "cpu") -> list[float]:
    """A short supervised warm-up: cross-entropy of the gold answer (+ EOS) after the prompt,
    on training problems only. Returns the loss per step."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    losses = []
    for _ in range(steps):
        problems = task.train_problems(batch_size, generator)
        prompts = [task.prompt_ids(p, tokenizer) for p in problems]
        answers = [[*tokenizer.encode(p.answer, add_special_tokens=False),
                    tokenizer.eos_token_id] for p in problems]
        # the rollout's layout: prompts left-padded, answers right-padded
        prompt_ids, prompt_mask = pad_rows(prompts, tokenizer.pad_token_id, left=True)
        answer_ids, answer_mask = pad_rows(answers, tokenizer.pad_token_id, left=False)
        width = prompt_ids.shape[1]
        ids = torch.cat([prompt_ids, answer_ids], dim=-1).to(device)
        attention = torch.cat([prompt_mask, answer_mask], dim=-1).to(device)
        logp = logprobs_and_entropy(model, ids, attention, first_target=width)[0]
        target = attention[:, width:].bool()
        loss = -logp[target].mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


def _param_fingerprint(model: Any) -> float:
    with torch.no_grad():
        return float(sum(p.double().sum() + p.double().abs().sum() for p in model.parameters()))


class _Run:
    """The state of one run: the policy, its rollout and reference copies, the optimiser, the
    generators, the pending stale rollouts and the metric history (all of it checkpointed)."""

    def __init__(self, cfg: TrainConfig, model: Any, tokenizer: Any, task: Any,
                 processes: Processes, resumed: Resumed | None) -> None:
        if cfg.prompts_per_step < processes.world_size:
            raise ValueError(f"prompts_per_step ({cfg.prompts_per_step}) must be at least the "
                             f"number of processes ({processes.world_size}): each samples whole "
                             "groups")
        self.cfg, self.tokenizer, self.task, self.processes = cfg, tokenizer, task, processes
        self.device = torch.device(cfg.device)
        self.model = model.to(self.device).eval()  # eval: no dropout, π_θ at θ_old = sampler
        self.init_fingerprint = _param_fingerprint(model)
        # copies of θ_0, made before any resume: the rollout copy stays θ_0 until its first sync
        # (offline: for ever), the reference copy for ever
        self.rollout_model = copy.deepcopy(model).requires_grad_(False)
        self.ref_model = copy.deepcopy(model).requires_grad_(False) if cfg.ref_kl else None
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr,
                                           weight_decay=cfg.weight_decay)
        self.generators = Generators(cfg.seed, self.device, processes)
        allowed = task.allowed_tokens(tokenizer)
        self.allowed = None if allowed is None else allowed.to(self.device)
        self.pending: dict[int, Batch] = {}
        self.history: list[dict[str, float]] = []
        self.start = self.done = 0
        self.saved_step: int | None = None
        self.rotate = True  # the next checkpoint keeps the current one as checkpoint.prev.pt
        self.folder = None if cfg.out is None else Path(cfg.out)
        self.files = self.open_folder()
        if cfg.resume:
            self.restore(resumed or runs.find_checkpoint(self.folder, warn=True))
        self.policy = processes.wrap(self.model)  # what is differentiated (DDP: all-reduced)
        if "metrics" in self.files:  # the file holds exactly the history up to the restart
            with runs.writing(self.folder):
                atomic_write_text(self.files["metrics"],
                                  "".join(json.dumps(r) + "\n" for r in self.history))

    def open_folder(self) -> dict[str, Path]:
        """Check ``out`` (process 0: only it writes files); clear an old run on overwrite."""
        if self.folder is None or not self.processes.is_main:
            return {}
        runs.check_out(self.folder, resume=self.cfg.resume, overwrite=self.cfg.overwrite)
        if self.cfg.overwrite:
            runs.clear_run(self.folder)
        return {"metrics": self.folder / runs.METRICS, "checkpoint": self.folder / runs.CHECKPOINT}

    def restore(self, resumed: Resumed) -> None:
        state, path = resumed.state, resumed.path
        runs.check_resumable(state, run_fingerprint(self.cfg, self.task),
                             world_size=self.processes.world_size, steps=self.cfg.steps,
                             path=path)
        runs.load_model_state(state, self.model, self.optimizer, path,
                              init_fingerprint=self.init_fingerprint)
        mine = state["ranks"][self.processes.rank]
        self.generators.load(mine["generators"])
        torch.set_rng_state(mine["torch_rng"])
        self.pending = {int(u): Batch.from_state(b) for u, b in mine["pending"].items()}
        self.history, self.start = state["history"], state["step"]
        self.done = self.saved_step = state["step"]
        self.rotate = resumed.notice is None  # never rotate an unreadable file over a good one

    def checkpoint(self, next_step: int) -> None:
        if self.folder is None:
            return
        mine = {"generators": self.generators.state(), "torch_rng": torch.get_rng_state(),
                "pending": {u: b.state() for u, b in self.pending.items()}}
        ranks = self.processes.all_objects(mine)  # every process's draws and queue
        if self.processes.is_main:
            runs.save_checkpoint(self.folder, {
                "step": next_step, "steps": self.cfg.steps, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "history": self.history,
                "ranks": ranks, "config": runs.jsonable(run_fingerprint(self.cfg, self.task)),
                "world_size": self.processes.world_size,
                "init_fingerprint": self.init_fingerprint,
            }, keep_current=self.rotate, keep_previous=self.cfg.keep_previous)
        self.rotate, self.saved_step = True, next_step
        self.plot()

    def plot(self) -> None:
        """Process 0: curves.png of the run so far (atomic), at every checkpoint."""
        if not (self.cfg.plot and "metrics" in self.files):
            return
        from llm_bridge.plots import plot_training

        with runs.writing(self.folder):
            self.files["plot"] = plot_training(
                self.history, self.folder / runs.PLOT,
                title=f"{self.cfg.loss} on {getattr(self.task, 'name', '')}")

    def sample(self, behaviour_step: int) -> Batch:
        return make_batch(self.rollout_model, self.tokenizer, self.task, self.cfg,
                          data_generator=self.generators.data,
                          sample_generator=self.generators.sample,
                          behaviour_step=behaviour_step, processes=self.processes)

    def batch_for(self, step: int) -> Batch:
        """The data of step t, sampled by θ_{b(t)}: at step s, sync the rollout copy and sample
        every future step u with b(u) = s; they wait in ``pending`` until their step."""
        schedule = self.cfg.schedule
        if schedule.offline:  # the rollout copy is θ_0 for ever
            return self.sample(behaviour_step=0)
        due = [u for u in schedule.sampled_at(step) if u not in self.pending]
        if due:
            self.rollout_model.load_state_dict(self.model.state_dict())
            for u in due:
                self.pending[u] = self.sample(behaviour_step=step)
        return self.pending.pop(step)

    def data_metrics(self, batch: Batch) -> dict[str, float]:
        """Mean reward and response length of the step's (global) batch."""
        rewards = self.processes.gather_rows(batch.rewards)
        lengths = self.processes.gather_rows(batch.rollout.response_mask.sum(-1))
        return {"reward": float(rewards.mean()), "response_len": float(lengths.double().mean())}

    def update(self, batch: Batch) -> dict[str, float]:
        """One optimiser step on ``batch``: accumulated gradients, clipping, AdamW."""
        self.optimizer.zero_grad(set_to_none=True)
        metrics = accumulate_gradients(
            self.policy, batch, self.cfg, advantage_generator=self.generators.advantage,
            allowed_tokens=self.allowed, ref_model=self.ref_model, device=self.device,
            processes=self.processes)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(),
                                                   self.cfg.max_grad_norm)
        self.optimizer.step()
        return {"grad_norm": float(grad_norm), **metrics}

    def evaluate(self) -> float:
        return evaluate(self.model, self.tokenizer, self.task, self.cfg, self.device,
                        self.processes)


def train(cfg: TrainConfig, model: Any, tokenizer: Any, task: Any, *,
          processes: Processes | None = None, resumed: Resumed | None = None,
          stop_after: int | None = None,
          on_step: Callable[[dict[str, float], Batch | None], None] | None = None
          ) -> TrainResult:
    """Train ``model`` in place for ``cfg.steps`` steps (or ``stop_after`` steps of this call,
    which simulates an interruption); process 0 writes metrics.jsonl, checkpoint.pt and
    curves.png under ``cfg.out``. ``processes``: default, the group already started
    (``distributed.current``); ``resumed``: a checkpoint already read. ``on_step(row, batch)``
    sees every metric row and its batch. Ctrl-C raises ``TrainingInterrupted``."""
    processes = current() if processes is None else processes
    run = _Run(cfg, model, tokenizer, task, processes, resumed)
    end = cfg.steps if stop_after is None else min(cfg.steps, run.start + stop_after)
    progress = Progress(cfg.loss, cfg.steps, run.start, enabled=cfg.progress and processes.is_main,
                        behaviour=cfg.behaviour_gap)
    try:
        with StopOnInterrupt(announce=processes.is_main) as interrupt:
            if run.start == 0 and not run.history:
                _record(run, {"step": 0, "eval_reward": run.evaluate()}, None, on_step)
            for step in range(run.start, end):
                if processes.any(interrupt.requested):  # every process stops at this step
                    if run.saved_step != step:
                        run.checkpoint(step)
                    raise TrainingInterrupted(step, run.saved_step)
                _step(run, step, progress, on_step)
                if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == end:
                    run.checkpoint(step + 1)
    except TrainingInterrupted:
        raise
    except KeyboardInterrupt:  # a second Ctrl-C cut a step short: the last checkpoint stands
        raise TrainingInterrupted(run.done, run.saved_step) from None
    except runs.RunWriteError as error:  # the files left are sound: say where to go on from
        error.checkpoint_step = run.saved_step
        raise
    finally:
        progress.close()
    if "metrics" in run.files and cfg.plot and (run.folder / runs.PLOT).is_file():
        run.files.setdefault("plot", run.folder / runs.PLOT)
    return TrainResult(model, run.history, run.files)


def _step(run: _Run, step: int, progress: Progress,
          on_step: Callable[[dict[str, float], Batch | None], None] | None) -> None:
    """One training step: its batch, the update, evaluation when due, the metric row."""
    tic = time.perf_counter()
    batch = run.batch_for(step)
    row = {"step": step + 1, "behaviour_step": batch.behaviour_step,
           "staleness": step - batch.behaviour_step, **run.data_metrics(batch),
           **run.update(batch)}
    if (step + 1) % run.cfg.eval_every == 0 or step + 1 == run.cfg.steps:
        row["eval_reward"] = run.evaluate()
    row["seconds"] = time.perf_counter() - tic
    _record(run, row, batch, on_step)
    run.done = step + 1
    progress.update(row)


def _record(run: _Run, row: dict[str, float], batch: Batch | None,
            on_step: Callable[[dict[str, float], Batch | None], None] | None) -> None:
    run.history.append(row)
    if "metrics" in run.files:  # a line cut short by a full disk is rewritten on resume
        with runs.writing(run.folder), run.files["metrics"].open("a") as handle:
            handle.write(json.dumps(row) + "\n")
    if on_step is not None:
        on_step(row, batch)
