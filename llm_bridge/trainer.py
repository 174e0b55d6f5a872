"""The bridge's trainer: any loss of the zoo on a Hugging Face causal LM, off-policy.

One step (CleanRL/nanochat style, top to bottom in ``train``):
prompts → K samples each from the rollout copy → exact rewards → group advantages
(``LOSSES[loss].advantages``, the preset's kind) → ``policy_loss`` over micro-batches →
AdamW with gradient clipping.

Design decisions
----------------
* The losses and advantages are ``simulator.losses`` / ``simulator.advantages``, unchanged:
  the trainer only supplies [B, T] log-probs, behaviour log-probs, advantages and a mask.
* Off-policyness is the simulator's ``Schedule`` (``sync_interval``, ``sync_offset``,
  ``offline``): the data trained on at step t were sampled by θ_{b(t)},
  b = ``Schedule.behaviour_step``. Batches are generated when their behaviour policy is
  current — at step s the rollout copy is synced to θ_s and samples every future step u with
  b(u) = s — and wait in a queue of *pending stale rollouts* until step u (this is how an
  asynchronous rollout engine behaves; ``offline`` samples every step's data from θ_0 at
  step 0). The queue is part of a checkpoint.
* Exact micro-batching: every aggregation mode is Σ(row-local terms)/N with N a count of the
  whole batch (``simulator.aggregation.normaliser``), and every per-token loss of the zoo is
  row-local once the advantages are fixed (they are computed on the full batch first). So each
  micro-batch's ``policy_loss`` is scaled by N_micro/N_full and the accumulated gradient is the
  full-batch gradient, whatever the micro-batches' token counts (tested for every mode).
* log π_θ uses the rollout's temperature (ratio exactly 1 on-policy, see ``rollout``);
  dropout stays off (the model is kept in eval mode) for the same reason.
* bf16 autocast on CUDA (log-probs are still computed in fp32 from the hidden states);
  float32 on CPU. Every random draw has its own ``torch.Generator`` whose state is
  checkpointed, so ``resume`` continues to exactly the parameters of an uninterrupted run.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from llm_bridge.logprobs import logprobs_and_entropy
from llm_bridge.rollout import Rollout, generate
from simulator import kl
from simulator.aggregation import AGGREGATIONS, normaliser
from simulator.files import atomic_torch_save
from simulator.losses import LOSSES, policy_loss
from simulator.schedule import Schedule

__all__ = ["Batch", "TrainConfig", "TrainResult", "accumulate_gradients", "evaluate",
           "make_batch", "supervised_warmup", "train"]

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
TOKEN_METRICS = ("clipfrac", "approx_kl", "ratio_mean", "entropy", "kl_ref")


@dataclasses.dataclass
class TrainConfig:
    """Everything that decides a run (the CLI's flags; see ``llm_bridge.cli.train_llm``)."""

    loss: str = "grpo"
    agg: str | None = None
    sync_interval: int = 1
    sync_offset: int = 0
    offline: bool = False
    group_size: int = 4
    prompts_per_step: int = 2
    micro_batch: int = 8
    max_new_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    lr: float = 1e-5
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    steps: int = 20
    eval_every: int = 10
    eval_prompts: int = 32
    checkpoint_every: int = 10
    seed: int = 0
    chunk_size: int | None = None
    ref_kl: bool = True
    device: str = "cpu"
    out: Path | None = None
    resume: bool = False
    progress: bool = False
    plot: bool = True

    def __post_init__(self) -> None:
        LOSSES[self.loss]  # unknown loss: KeyError listing the valid names
        if self.agg is not None and self.agg not in AGGREGATIONS:
            raise ValueError(f"agg must be None or one of {list(AGGREGATIONS)}, got {self.agg!r}")
        Schedule(self.sync_interval, self.sync_offset, self.offline)  # checks the knobs
        for name in ("group_size", "prompts_per_step", "micro_batch", "max_new_tokens", "steps",
                     "eval_every", "eval_prompts", "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        for name in ("temperature", "lr", "max_grad_norm"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if self.resume and self.out is None:
            raise ValueError("resume needs out= (the folder holding checkpoint.pt)")

    @property
    def schedule(self) -> Schedule:
        return Schedule(self.sync_interval, self.sync_offset, self.offline)

    @property
    def aggregation(self) -> str:
        return self.agg or LOSSES[self.loss].agg

    def fingerprint(self) -> dict[str, Any]:
        """The fields a resumed run must share with the run it continues."""
        skip = {"resume", "progress", "plot", "out", "device", "eval_every", "checkpoint_every"}
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}


@dataclasses.dataclass
class Batch:
    """One step's data: G·K rollouts (group-major rows), rewards [G, K], their behaviour step."""

    rollout: Rollout
    rewards: Tensor
    behaviour_step: int

    def state(self) -> dict[str, Any]:
        return {"rollout": self.rollout.state(), "rewards": self.rewards,
                "behaviour_step": self.behaviour_step}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Batch:
        return cls(Rollout.from_state(state["rollout"]), state["rewards"],
                   state["behaviour_step"])


@dataclasses.dataclass
class TrainResult:
    model: Any
    history: list[dict[str, float]]
    files: dict[str, Path]


def _valid_ids(rollout: Rollout, row: int) -> list[int]:
    return rollout.response_ids[row][rollout.response_mask[row]].tolist()


def make_batch(rollout_model: Any, tokenizer: Any, task: Any, cfg: TrainConfig, *,
               data_generator: torch.Generator, sample_generator: torch.Generator,
               behaviour_step: int = 0) -> Batch:
    """Sample ``prompts_per_step`` problems, K responses each, and score them."""
    problems = task.train_problems(cfg.prompts_per_step, data_generator)
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


def accumulate_gradients(model: Any, batch: Batch, cfg: TrainConfig, *,
                         advantage_generator: torch.Generator | None = None,
                         allowed_tokens: Tensor | None = None, ref_model: Any = None,
                         device: torch.device | str = "cpu") -> dict[str, float]:
    """Add ∇θ of the full batch's ``policy_loss`` into ``.grad``, one micro-batch at a time.

    Returns the full-batch metrics: loss, the token-weighted ``policy_loss`` metrics, entropy
    and (with ``ref_model``) kl_ref = masked mean of k3(log π_θ, log π_ref) on the batch.
    """
    spec, mode = LOSSES[cfg.loss], cfg.aggregation
    advantages, keep = spec.advantages(batch.rewards, generator=advantage_generator)
    rollout = batch.rollout.to(device)
    adv = advantages.reshape(-1).to(device=device, dtype=torch.float32)
    mask = rollout.response_mask & keep.reshape(-1, 1).to(device)
    norm_len = float(cfg.max_new_tokens) if mode == "seq-mean-token-sum-norm" else None
    total, total_tokens = normaliser(mask, mode), mask.sum().clamp(min=1)
    sums = dict.fromkeys(("loss", *TOKEN_METRICS), 0.0)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=rollout.input_ids.is_cuda)
    for rows in _micro_batches(mask.shape[0], cfg.micro_batch):
        micro_mask = mask[rows]
        if not bool(micro_mask.any()):
            continue  # nothing valid: contributes 0 to every aggregation
        part = rollout.rows(rows)
        with autocast:
            logp, entropy = logprobs_and_entropy(
                model, part.input_ids, part.attention_mask, chunk_size=cfg.chunk_size,
                temperature=cfg.temperature, first_target=part.prompt_width,
                allowed_tokens=allowed_tokens)
        out = policy_loss(cfg.loss, logp, part.logp_behaviour, adv[rows], micro_mask, agg=mode,
                          norm_len=norm_len)
        share = float(normaliser(micro_mask, mode) / total)
        (out.loss * share).backward()
        tokens = float(micro_mask.sum() / total_tokens)
        sums["loss"] += float(out.loss.detach()) * share
        for name in ("clipfrac", "approx_kl", "ratio_mean"):
            sums[name] += float(out.metrics[name]) * tokens
        sums["entropy"] += float(entropy[micro_mask].mean()) * tokens
        if ref_model is not None:
            with torch.no_grad(), autocast:
                ref = logprobs_and_entropy(
                    ref_model, part.input_ids, part.attention_mask, chunk_size=cfg.chunk_size,
                    temperature=cfg.temperature, first_target=part.prompt_width,
                    allowed_tokens=allowed_tokens)[0]
            sums["kl_ref"] += float(kl.k3(logp.detach(), ref)[micro_mask].mean()) * tokens
    if ref_model is None:
        del sums["kl_ref"]
    return sums


@torch.no_grad()
def evaluate(model: Any, tokenizer: Any, task: Any, cfg: TrainConfig, device: Any = "cpu"
             ) -> float:
    """Mean reward of greedy responses to the task's held-out problems (first ``eval_prompts``)."""
    problems = task.eval_problems()[: cfg.eval_prompts]
    rewards = []
    for start in range(0, len(problems), 64):
        chunk = problems[start: start + 64]
        rollout = generate(model, [task.prompt_ids(p, tokenizer) for p in chunk],
                           max_new_tokens=cfg.max_new_tokens,
                           eos_token_id=tokenizer.eos_token_id,
                           pad_token_id=tokenizer.pad_token_id, generator=None, temperature=0.0,
                           allowed_tokens=task.allowed_tokens(tokenizer)).to("cpu")
        rewards += [task.reward(p, _valid_ids(rollout, i), tokenizer)
                    for i, p in enumerate(chunk)]
    return sum(rewards) / len(rewards)


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
        width = max(len(p) for p in prompts)
        length = max(len(a) for a in answers)
        ids = torch.full((len(problems), width + length), tokenizer.pad_token_id)
        attention = torch.zeros_like(ids)
        for i, (prompt, answer) in enumerate(zip(prompts, answers, strict=True)):
            ids[i, width - len(prompt): width + len(answer)] = torch.tensor(prompt + answer)
            attention[i, width - len(prompt): width + len(answer)] = 1
        ids, attention = ids.to(device), attention.to(device)
        logp = logprobs_and_entropy(model, ids, attention, first_target=width)[0]
        target = attention[:, width:].bool()
        loss = -logp[target].mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


def _param_fingerprint(model: Any) -> float:
    with torch.no_grad():
        return float(sum(p.double().sum() + p.double().abs().sum() for p in model.parameters()))


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    atomic_torch_save(state, path)  # a crash mid-write leaves the previous checkpoint intact


def _load_checkpoint(path: Path, cfg: TrainConfig, init_fingerprint: float) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"resume: no checkpoint at {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state["config"] != _jsonable(cfg.fingerprint()):
        changed = sorted(k for k in state["config"]
                         if state["config"][k] != _jsonable(cfg.fingerprint()).get(k))
        raise ValueError(f"resume: the checkpoint at {path} was written with other settings "
                         f"({', '.join(changed)}); resume with the same ones")
    if not math.isclose(state["init_fingerprint"], init_fingerprint, rel_tol=1e-12):
        raise ValueError("resume: the model loaded now is not the run's initial model")
    return state


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


class _Generators:
    """One generator per kind of draw: prompts, sampling (on the model's device), advantages."""

    def __init__(self, seed: int, device: torch.device) -> None:
        self.data = torch.Generator().manual_seed(seed)
        self.sample = torch.Generator(device=device).manual_seed(seed + 1)
        self.advantage = torch.Generator().manual_seed(seed + 2)

    def state(self) -> dict[str, Tensor]:
        return {"data": self.data.get_state(), "sample": self.sample.get_state(),
                "advantage": self.advantage.get_state()}

    def load(self, state: dict[str, Tensor]) -> None:
        self.data.set_state(state["data"])
        self.sample.set_state(state["sample"])
        self.advantage.set_state(state["advantage"])


class _Run:
    """The state of one run: the policy, its rollout and reference copies, the optimiser, the
    generators, the pending stale rollouts and the metric history (all of it checkpointed)."""

    def __init__(self, cfg: TrainConfig, model: Any, tokenizer: Any, task: Any) -> None:
        self.cfg, self.tokenizer, self.task = cfg, tokenizer, task
        self.device = torch.device(cfg.device)
        self.model = model.to(self.device).eval()  # eval: no dropout, π_θ at θ_old = sampler
        self.init_fingerprint = _param_fingerprint(model)
        self.rollout_model = copy.deepcopy(model).requires_grad_(False)
        self.ref_model = copy.deepcopy(model).requires_grad_(False) if cfg.ref_kl else None
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr,
                                           weight_decay=cfg.weight_decay)
        self.generators = _Generators(cfg.seed, self.device)
        allowed = task.allowed_tokens(tokenizer)
        self.allowed = None if allowed is None else allowed.to(self.device)
        self.pending: dict[int, Batch] = {}
        self.history: list[dict[str, float]] = []
        self.start = 0
        self.files: dict[str, Path] = {}
        if cfg.out is not None:
            out = Path(cfg.out)
            out.mkdir(parents=True, exist_ok=True)
            self.files = {"metrics": out / METRICS, "checkpoint": out / CHECKPOINT}
        if cfg.resume:
            self.restore()
        if "metrics" in self.files:  # the file holds exactly the history up to the restart
            self.files["metrics"].write_text("".join(json.dumps(r) + "\n" for r in self.history))

    def restore(self) -> None:
        state = _load_checkpoint(self.files["checkpoint"], self.cfg, self.init_fingerprint)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generators.load(state["generators"])
        torch.set_rng_state(state["torch_rng"])
        self.pending = {int(u): Batch.from_state(b) for u, b in state["pending"].items()}
        self.history, self.start = state["history"], state["step"]

    def checkpoint(self, next_step: int) -> None:
        if "checkpoint" not in self.files:
            return
        _save_checkpoint(self.files["checkpoint"], {
            "step": next_step, "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "generators": self.generators.state(),
            "torch_rng": torch.get_rng_state(), "history": self.history,
            "pending": {u: b.state() for u, b in self.pending.items()},
            "config": _jsonable(self.cfg.fingerprint()), "init_fingerprint": self.init_fingerprint,
        })

    def batch_for(self, step: int) -> Batch:
        """The data of step t, sampled by θ_{b(t)}: at step s, sync the rollout copy and sample
        every future step u with b(u) = s; they wait in ``pending`` until their step."""
        schedule = self.cfg.schedule
        due = [u for u in range(step, self.cfg.steps)
               if u not in self.pending and schedule.behaviour_step(u) == step]
        if due:
            self.rollout_model.load_state_dict(self.model.state_dict())
            for u in due:
                self.pending[u] = make_batch(
                    self.rollout_model, self.tokenizer, self.task, self.cfg,
                    data_generator=self.generators.data,
                    sample_generator=self.generators.sample, behaviour_step=step)
        return self.pending.pop(step)

    def update(self, batch: Batch) -> dict[str, float]:
        """One optimiser step on ``batch``: accumulated gradients, clipping, AdamW."""
        self.optimizer.zero_grad(set_to_none=True)
        metrics = accumulate_gradients(
            self.model, batch, self.cfg, advantage_generator=self.generators.advantage,
            allowed_tokens=self.allowed, ref_model=self.ref_model, device=self.device)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(),
                                                   self.cfg.max_grad_norm)
        self.optimizer.step()
        return {"grad_norm": float(grad_norm), **metrics}

    def evaluate(self) -> float:
        return evaluate(self.model, self.tokenizer, self.task, self.cfg, self.device)


def train(cfg: TrainConfig, model: Any, tokenizer: Any, task: Any, *,
          stop_after: int | None = None,
          on_step: Callable[[dict[str, float], Batch | None], None] | None = None
          ) -> TrainResult:
    """Train ``model`` in place for ``cfg.steps`` steps (or ``stop_after`` steps of this call,
    which simulates an interruption). Writes metrics.jsonl, checkpoint.pt and curves.png
    under ``cfg.out`` when it is set. ``on_step(row, batch)`` sees every metric row (and the
    batch it was trained on). Returns the model, the metric history and the files."""
    run = _Run(cfg, model, tokenizer, task)
    end = cfg.steps if stop_after is None else min(cfg.steps, run.start + stop_after)
    if run.start == 0 and not run.history:
        _record(run, {"step": 0, "eval_reward": run.evaluate()}, None, on_step)
    progress = _ProgressBar(cfg, run.start) if cfg.progress else None
    for step in range(run.start, end):
        tic = time.perf_counter()
        batch = run.batch_for(step)
        row = {"step": step + 1, "behaviour_step": batch.behaviour_step,
               "staleness": step - batch.behaviour_step, "reward": float(batch.rewards.mean()),
               "response_len": float(batch.rollout.response_mask.sum(-1).double().mean()),
               **run.update(batch)}
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            row["eval_reward"] = run.evaluate()
        row["seconds"] = time.perf_counter() - tic
        _record(run, row, batch, on_step)
        if progress is not None:
            progress.update(row)
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == end:
            run.checkpoint(step + 1)
    if progress is not None:
        progress.close()
    if cfg.out is not None and cfg.plot and end == cfg.steps:
        from llm_bridge.plots import plot_training

        run.files["plot"] = plot_training(run.history, Path(cfg.out) / "curves.png",
                                          title=f"{cfg.loss} on {task.name}")
    return TrainResult(model, run.history, run.files)


def _record(run: _Run, row: dict[str, float], batch: Batch | None,
            on_step: Callable[[dict[str, float], Batch | None], None] | None) -> None:
    run.history.append(row)
    if "metrics" in run.files:
        with run.files["metrics"].open("a") as handle:
            handle.write(json.dumps(row) + "\n")
    if on_step is not None:
        on_step(row, batch)


class _ProgressBar:
    """A rich progress bar with the latest reward and KL."""

    def __init__(self, cfg: TrainConfig, start: int) -> None:
        from simulator.progress import progress_bar

        self.bar = progress_bar()
        self.bar.start()
        self.task = self.bar.add_task(f"{cfg.loss}", total=cfg.steps, completed=start)
        self.loss = cfg.loss

    def update(self, row: dict[str, float]) -> None:
        text = f"{self.loss} reward {row['reward']:.2f} kl {row['approx_kl']:+.3f}"
        if "eval_reward" in row:
            text += f" eval {row['eval_reward']:.2f}"
        self.bar.update(self.task, completed=row["step"], description=text)

    def close(self) -> None:
        self.bar.stop()
