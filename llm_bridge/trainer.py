"""The bridge's trainer: any loss of the zoo on a Hugging Face causal LM, off-policy, on one
process or several (``torchrun`` / ``accelerate launch``).

One step reads top to bottom in ``train``, in ruled sections: sample (or pop the pending
batch sampled earlier by an older θ) → advantages of the global batch (``process_rows``: the
loss's kind, or ``TrainConfig.advantage``) → the loss over micro-batches
(``micro_batched_loss``) → gradient clipping and the AdamW step → evaluation, the metric row
and the checkpoint when due. ``_Run`` is the state (models, optimiser, generators, pending
batches, history) and writes and restores it as a checkpoint.

Design decisions
----------------
* The losses and advantages are ``simulator.losses`` / ``simulator.advantages``, unchanged,
  fed through the loss layer's ``LossSetup`` (the loss, the advantage override, the
  aggregation): the trainer only supplies [B, T] log-probs, behavior log-probs, advantages and
  a mask.
* ``TrainConfig`` (``llm_bridge.config``) is the one home of the trainer's defaults and of
  its flags' help (each field's docstring); ``grlab train-llm`` builds its flags from it.
* Off-policyness is the simulator's ``Schedule``: the data trained on at step t were sampled
  by θ_{b(t)}, b = ``Schedule.behavior_step``. At step s the rollout copy is synced to θ_s and
  samples every future step u with b(u) = s — however long the run, so ``--resume --steps``
  can extend a finished run (at most ``sync_interval + sync_offset − 1`` batches past the end
  are sampled for nothing) — and they wait on the CPU in a queue of *pending stale rollouts*
  (part of a checkpoint) until step u, as with an asynchronous rollout engine. A batch used at
  the step that samples it (on-policy, offline) stays on the device. ``offline``: the rollout
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
* Three policies. A mismatched sampler (``--sampler-temperature``, ``--top-k``, ``--top-p``,
  ``--sampler-dtype bf16``) samples from its own μ, recorded token by token as it draws
  (``Rollout.logp_behavior``). π_old is then recomputed at sampling time, by the trainer's own
  log-prob pass on the weights that sampled (θ_b(t): staleness stays in the loss's ratio
  π_θ/π_old and its clip), and carried in the batch (``Rollout.logp_old``); the loss gets μ
  apart as ``logp_rollout``, and the corrections (``--correction``) act on π_old/μ. A matched
  sampler recomputes nothing: μ is π_old, the one-policy call of before (same numbers).
  ``recompute_old=False`` keeps μ as π_old under a mismatched sampler (verl's bypass mode).
* log π_θ uses the rollout's temperature (ratio exactly 1 on-policy, see ``rollout``);
  dropout stays off (the model is kept in eval mode) for the same reason.
* bf16 autocast on CUDA (log-probs in fp32 from the hidden states); float32 on CPU. Every
  random draw has its own checkpointed ``torch.Generator``: ``resume`` continues to exactly the
  parameters of an uninterrupted run. Ctrl-C is answered at once and stops at the end of the
  step with a checkpoint (``runs.TrainingInterrupted``); a second one aborts the step (the last
  checkpoint stands).
* Process 0 writes curves.png at every checkpoint (atomically), so an interrupted or failed
  run has the figure of what it did; a write that fails in the run folder (a full disk) is
  ``runs.RunWriteError`` carrying the step of the last complete checkpoint.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor

from llm_bridge import runs
from llm_bridge.config import TrainConfig, check_processes, run_fingerprint
from llm_bridge.distributed import SINGLE, Generators, LogProbs, Processes, StopOnInterrupt, current
from llm_bridge.logprobs import logprobs_and_entropy
from llm_bridge.rollout import Batch, Rollout, generate, pad_rows
from llm_bridge.runs import Progress, Resumed, TrainingInterrupted
from simulator import kl
from simulator.aggregation import normaliser
from simulator.files import atomic_write_text
from simulator.losses import LOSSES, policy_loss  # noqa: F401 (LOSSES: the zoo, re-exported)

__all__ = ["Batch", "TrainConfig", "TrainResult", "TrainingInterrupted", "accumulate_gradients",
           "check_processes", "evaluate", "make_batch", "micro_batched_loss", "process_rows",
           "run_fingerprint", "supervised_warmup", "train"]

TOKEN_METRICS = ("clipfrac", "approx_kl", "ratio_mean", "entropy", "kl_ref")
# policy_loss's metrics that are not recorded (verl's names of the same quantities)
UNRECORDED = frozenset({"pg_clipfrac", "pg_clipfrac_lower", "ppo_kl"})


def correction_metrics(cfg: TrainConfig) -> tuple[str, ...]:
    """The metrics a row records besides ``TOKEN_METRICS`` when the loss has corrections
    (``--correction`` or the preset's): ``is_weight_mean``, ``rejected_frac``, each
    correction's own (the names of a one-token call, so every process has the same)."""
    if not cfg.setup.all_corrections():
        return ()
    one = torch.zeros(1, 1)
    out = policy_loss(cfg.setup, one, one, one[0], torch.ones(1, 1, dtype=torch.bool),
                      agg=cfg.aggregation, norm_len=cfg.norm_len, logp_rollout=one,
                      logp_ref=one, entropy=one, validate=False)
    return tuple(sorted(set(out.metrics) - set(TOKEN_METRICS) - UNRECORDED))


@dataclasses.dataclass
class TrainResult:
    model: Any
    history: list[dict[str, float]]
    files: dict[str, Path]


def _valid_ids(rollout: Rollout, row: int) -> list[int]:
    return rollout.response_ids[row][rollout.response_mask[row]].tolist()


def make_batch(rollout_model: Any, tokenizer: Any, task: Any, cfg: TrainConfig, *,
               data_generator: torch.Generator, sample_generator: torch.Generator,
               behavior_step: int = 0, processes: Processes = SINGLE,
               store: torch.device | str = "cpu") -> Batch:
    """Sample ``prompts_per_step`` problems, K responses each, and score them; the rollout is
    kept on ``store``. With several processes every one draws the same problems and samples
    its share of the groups. A mismatched sampler (``cfg.sampler_mismatch``) draws from its own
    μ (temperature, top-k, top-p, bf16 weights); with ``cfg.recomputes_old`` the trainer's
    log-probs of the drawn tokens on the same weights (π_old) are recomputed here, at sampling
    time, and carried in ``Rollout.logp_old``."""
    problems = task.train_problems(cfg.prompts_per_step, data_generator)
    problems = problems[processes.share(len(problems))]
    k = cfg.group_size
    prompts = [task.prompt_ids(p, tokenizer) for p in problems for _ in range(k)]
    allowed = task.allowed_tokens(tokenizer)
    sampler = rollout_model if cfg.sampler_dtype == "fp32" \
        else copy.deepcopy(rollout_model).to(torch.bfloat16)
    rollout = generate(sampler, prompts, max_new_tokens=cfg.max_new_tokens,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                       generator=sample_generator, temperature=cfg.sampling_temperature,
                       top_p=cfg.top_p, top_k=cfg.top_k, allowed_tokens=allowed)
    if cfg.recomputes_old:
        rollout.logp_old = recompute_old(rollout_model, rollout, cfg, allowed)
    rollout = rollout.to(store)
    rewards = torch.tensor([task.reward(problems[row // k], _valid_ids(rollout, row), tokenizer)
                            for row in range(len(prompts))], dtype=torch.float64)
    return Batch(rollout, rewards.reshape(len(problems), k), behavior_step)


@torch.no_grad()
def recompute_old(model: Any, rollout: Rollout, cfg: TrainConfig,
                  allowed_tokens: Tensor | None = None) -> Tensor:
    """π_old [B, R]: the trainer's log-probs of the sampled tokens on ``model`` (the weights
    that sampled), by the trainer's own pass (its temperature, precision and chunking),
    micro-batch by micro-batch; 0 at padding (float32)."""
    forward = {"chunk_size": cfg.chunk_size, "temperature": cfg.temperature,
               "first_target": rollout.prompt_width, "with_entropy": False,
               "allowed_tokens": None if allowed_tokens is None
               else allowed_tokens.to(rollout.input_ids.device)}
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=rollout.input_ids.is_cuda)
    parts = []
    for start in range(0, rollout.input_ids.shape[0], cfg.micro_batch):
        rows = slice(start, start + cfg.micro_batch)
        with autocast:
            parts.append(logprobs_and_entropy(model, rollout.input_ids[rows],
                                              rollout.attention_mask[rows], **forward)[0])
    logp = torch.cat(parts).float()
    return torch.where(rollout.response_mask, logp, logp.new_zeros(()))


class Rows(NamedTuple):
    """This process's rows of a step, ready for the loss."""

    rollout: Rollout  # on the device
    advantages: Tensor  # [B_r] float32
    mask: Tensor  # [B_r, R]: valid tokens of the rows the advantage kind keeps
    everyone: Tensor  # [B, R]: the global batch's mask (its count is N)


def process_rows(batch: Batch, cfg: TrainConfig, processes: Processes,
                 generator: torch.Generator | None, device: torch.device | str) -> Rows:
    """The advantages of this process's rows. They need whole groups, and batch-level kinds
    the whole batch: they are computed on every process's rewards."""
    rewards = processes.gather_rows(batch.rewards)
    advantages, keep = cfg.setup.advantages(rewards, generator)
    groups = processes.share(rewards.shape[0])
    if tuple(rewards[groups].shape) != tuple(batch.rewards.shape):
        raise ValueError("batch must hold this process's share of the groups "
                         "(Batch.groups(processes.share(G)))")
    rollout = batch.rollout.to(device)
    adv = advantages[groups].reshape(-1).to(device=device, dtype=torch.float32)
    mask = rollout.response_mask & keep[groups].reshape(-1, 1).to(device)
    return Rows(rollout, adv, mask, processes.gather_rows(mask))


def micro_batched_loss(policy: Any, rows: Rows, cfg: TrainConfig, *,
                       allowed_tokens: Tensor | None = None, ref_model: Any = None,
                       processes: Processes = SINGLE) -> dict[str, float]:
    """Add ∇θ of the full batch's ``policy_loss`` into ``.grad``, one micro-batch at a time;
    return the full-batch metrics: loss, the token-weighted ``policy_loss`` metrics, entropy
    and (with ``ref_model``) kl_ref = masked mean of k3(log π_θ, log π_ref).

    Three policies when the rollout carries π_old (``Rollout.logp_old``): the loss's old
    log-probs are π_old and the sampler's μ is ``logp_rollout``; the metrics add
    ``kl_sampler`` (mean of log μ − log π_old over the sampled tokens, a k1 estimate of
    KL(μ‖π_old)). With corrections (``--correction`` or the loss preset's) they add
    ``is_weight_mean``, ``rejected_frac`` and each correction's own metrics."""
    rollout, adv, mask, everyone = rows
    setup, mode, norm_len = cfg.setup, cfg.aggregation, cfg.norm_len
    extra = correction_metrics(cfg)
    total, total_tokens = normaliser(everyone, mode), everyone.sum().clamp(min=1)
    forward = {"chunk_size": cfg.chunk_size, "temperature": cfg.temperature,
               "first_target": rollout.prompt_width, "allowed_tokens": allowed_tokens}
    sums = dict.fromkeys(("loss", *TOKEN_METRICS, *extra), 0.0)
    if rollout.logp_old is not None:
        sums["kl_sampler"] = 0.0
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=rollout.input_ids.is_cuda)
    parts = [slice(start, start + cfg.micro_batch)
             for start in range(0, mask.shape[0], cfg.micro_batch)]
    for i, part_rows in enumerate(parts):
        micro_mask, last = mask[part_rows], i == len(parts) - 1
        empty = not bool(micro_mask.any())
        if empty and not (last and processes.distributed and bool(everyone.any())):
            continue  # nothing valid: contributes 0 to every aggregation
        part = rollout.rows(part_rows)
        ref = None
        if ref_model is not None and not empty:
            with torch.no_grad(), autocast:
                ref = logprobs_and_entropy(ref_model, part.input_ids, part.attention_mask,
                                           **forward)[0]
        with processes.sync_gradients(policy, sync=last):
            with autocast:
                logp, entropy = policy(part.input_ids, part.attention_mask, **forward)
            if empty:  # nothing valid here, but this process must join the gradient all-reduce
                torch.where(micro_mask, logp, logp.new_zeros(())).sum().mul(0.0).backward()
                continue
            # one policy (μ is π_old) or three (π_old recomputed, μ apart)
            old, sampler = (part.logp_behavior, None) if part.logp_old is None \
                else (part.logp_old, part.logp_behavior)
            # divided by the global batch's count: the parts' losses sum to the batch's loss
            out = policy_loss(setup, logp, old, adv[part_rows], micro_mask, agg=mode,
                              norm_len=norm_len, denominator=total, logp_rollout=sampler,
                              logp_ref=ref if extra else None,
                              entropy=entropy if extra else None)
            # DDP averages the W processes' gradients; × W makes it their sum (exact for W = 1)
            (out.loss * processes.world_size).backward()
        tokens = float(micro_mask.sum() / total_tokens)
        sums["loss"] += float(out.loss.detach())
        for name in ("clipfrac", "approx_kl", "ratio_mean"):
            sums[name] += float(out.metrics[name]) * tokens
        for name in extra:
            sums[name] += float(out.metrics[name]) * tokens
        if sampler is not None:
            gap = (sampler.float() - old.float())[micro_mask].mean()
            sums["kl_sampler"] += float(gap) * tokens
        sums["entropy"] += float(entropy.detach()[micro_mask].mean()) * tokens
        if ref is not None:
            sums["kl_ref"] += float(kl.k3(logp.detach(), ref)[micro_mask].mean()) * tokens
    if ref_model is None:
        del sums["kl_ref"]
    return dict(zip(sums, processes.sum(list(sums.values())), strict=True))


def accumulate_gradients(model: Any, batch: Batch, cfg: TrainConfig, *,
                         advantage_generator: torch.Generator | None = None,
                         allowed_tokens: Tensor | None = None, ref_model: Any = None,
                         device: torch.device | str = "cpu", processes: Processes = SINGLE
                         ) -> dict[str, float]:
    """``process_rows`` then ``micro_batched_loss``: the loss part of one step on ``batch``.

    ``model``: the causal LM, or ``processes.wrap(model)`` (DDP) with several processes, each
    holding its share of the step's groups in ``batch``.
    """
    policy = model if isinstance(model, torch.nn.parallel.DistributedDataParallel | LogProbs) \
        else LogProbs(model)
    rows = process_rows(batch, cfg, processes, advantage_generator, device)
    return micro_batched_loss(policy, rows, cfg, allowed_tokens=allowed_tokens,
                              ref_model=ref_model, processes=processes)


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
    """Not part of the RL loop: a short supervised warm-up, cross-entropy of the gold answer
    (+ EOS) after the prompt, on training problems only; returns the loss per step. It gives a
    randomly initialised tiny model a start the RL loop can improve on (the learning test)."""
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
    generators, the pending stale rollouts and the metric history; ``checkpoint`` writes it
    all and ``restore`` reads it back."""

    def __init__(self, cfg: TrainConfig, model: Any, tokenizer: Any, task: Any,
                 processes: Processes, resumed: Resumed | None) -> None:
        check_processes(cfg.prompts_per_step, processes.world_size)
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


OnStep = Callable[[dict[str, float], Batch | None], None]


def train(cfg: TrainConfig, model: Any, tokenizer: Any, task: Any, *,
          processes: Processes | None = None, resumed: Resumed | None = None,
          stop_after: int | None = None, on_step: OnStep | None = None) -> TrainResult:
    """Train ``model`` in place for ``cfg.steps`` steps (or ``stop_after`` steps of this call,
    which simulates an interruption); process 0 writes metrics.jsonl, checkpoint.pt and
    curves.png under ``cfg.out``. ``processes``: default, the group already started
    (``distributed.current``); ``resumed``: a checkpoint already read. ``on_step(row, batch)``
    sees every metric row and its batch. Ctrl-C raises ``TrainingInterrupted``."""
    processes = current() if processes is None else processes
    run = _Run(cfg, model, tokenizer, task, processes, resumed)
    end = cfg.steps if stop_after is None else min(cfg.steps, run.start + stop_after)
    progress = Progress(cfg.loss, cfg.steps, run.start, enabled=cfg.progress and processes.is_main,
                        behavior=cfg.behavior_gap)
    with _stopping(run, progress) as interrupt:
        if run.start == 0 and not run.history:
            _record(run, {"step": 0, "eval_reward": _evaluate(run)}, None, on_step)
        for step in range(run.start, end):
            if processes.any(interrupt.requested):  # every process stops at this step
                if run.saved_step != step:
                    run.checkpoint(step)
                raise TrainingInterrupted(step, run.saved_step)
            tic = time.perf_counter()
            # ---- sample, or pop the batch θ_b(step) sampled earlier -----------------------
            batch = _batch_for(run, step)
            # ---- advantages, on the global batch ------------------------------------------
            rows = process_rows(batch, cfg, processes, run.generators.advantage, run.device)
            # ---- the loss, micro-batch by micro-batch: the full batch's gradient ----------
            run.optimizer.zero_grad(set_to_none=True)
            metrics = micro_batched_loss(run.policy, rows, cfg, allowed_tokens=run.allowed,
                                         ref_model=run.ref_model, processes=processes)
            # ---- clip and step ------------------------------------------------------------
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            run.optimizer.step()
            # ---- evaluate, record, checkpoint ---------------------------------------------
            row = {"step": step + 1, "behavior_step": batch.behavior_step,
                   "staleness": step - batch.behavior_step, **_data_metrics(batch, processes),
                   "grad_norm": float(grad_norm), **metrics}
            if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
                row["eval_reward"] = _evaluate(run)
            row["seconds"] = time.perf_counter() - tic
            _record(run, row, batch, on_step)
            run.done = step + 1
            progress.update(row)
            if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == end:
                run.checkpoint(step + 1)
    if "metrics" in run.files and cfg.plot and (run.folder / runs.PLOT).is_file():
        run.files.setdefault("plot", run.folder / runs.PLOT)
    return TrainResult(model, run.history, run.files)


@contextlib.contextmanager
def _stopping(run: _Run, progress: Progress) -> Iterator[StopOnInterrupt]:
    """Ctrl-C answered at once (stop at the end of the step); a second Ctrl-C or a failed
    write ends the run saying which checkpoint stands."""
    try:
        with StopOnInterrupt(announce=run.processes.is_main) as interrupt:
            yield interrupt
    except TrainingInterrupted:
        raise
    except KeyboardInterrupt:  # a second Ctrl-C cut a step short: the last checkpoint stands
        raise TrainingInterrupted(run.done, run.saved_step) from None
    except runs.RunWriteError as error:  # the files left are sound: say where to go on from
        error.checkpoint_step = run.saved_step
        raise
    finally:
        progress.close()


def _batch_for(run: _Run, step: int) -> Batch:
    """The data of step t, sampled by θ_{b(t)}: at step s, sync the rollout copy and sample
    every future step u with b(u) = s; they wait in ``run.pending``, on the CPU, until their
    step (a batch used at once stays on the device)."""
    schedule = run.cfg.schedule
    if schedule.offline:  # the rollout copy is θ_0 for ever
        return _sample(run, behavior_step=0, store=run.device)
    due = [u for u in schedule.sampled_at(step) if u not in run.pending]
    if due:
        run.rollout_model.load_state_dict(run.model.state_dict())
        for u in due:
            run.pending[u] = _sample(run, behavior_step=step,
                                     store=run.device if u == step else "cpu")
    return run.pending.pop(step)


def _sample(run: _Run, *, behavior_step: int, store: torch.device | str) -> Batch:
    return make_batch(run.rollout_model, run.tokenizer, run.task, run.cfg,
                      data_generator=run.generators.data, sample_generator=run.generators.sample,
                      behavior_step=behavior_step, processes=run.processes, store=store)


def _data_metrics(batch: Batch, processes: Processes) -> dict[str, float]:
    """Mean reward and response length of the step's (global) batch."""
    rewards = processes.gather_rows(batch.rewards)
    lengths = processes.gather_rows(batch.rollout.response_mask.sum(-1))
    return {"reward": float(rewards.mean()), "response_len": float(lengths.double().mean())}


def _evaluate(run: _Run) -> float:
    return evaluate(run.model, run.tokenizer, run.task, run.cfg, run.device, run.processes)


def _record(run: _Run, row: dict[str, float], batch: Batch | None,
            on_step: OnStep | None) -> None:
    run.history.append(row)
    if "metrics" in run.files:  # a line cut short by a full disk is rewritten on resume
        with runs.writing(run.folder), run.files["metrics"].open("a") as handle:
            handle.write(json.dumps(row) + "\n")
    if on_step is not None:
        on_step(row, batch)
