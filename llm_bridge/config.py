"""``TrainConfig``: everything that decides a ``train-llm`` run, and the one home of the
trainer's defaults and of its flags' help (``grlab train-llm`` builds its flags from the
fields and their docstrings, ``llm_bridge.cli``).

Design decisions
----------------
* A field's docstring is its flag's help: the default and the text that explains it sit on
  adjacent lines, and nothing else repeats them.
* The loss is described as the loss layer describes it (``setup``: ``simulator.losses.LossSetup``
  with the advantage override, its options and the aggregation), so the trainer, the exact
  engines and the integrations resolve the advantage kind, the aggregation and ``norm_len``
  (``LossSetup.length_for`` the longest response) by one rule.
* Importing this module imports no torch (``grlab --help`` builds the flags from it at once):
  the loss layer is imported when a config is made.
* Checks that need no model are here (``__post_init__``, ``check_processes``), so the command
  reports a bad setting before anything slow happens.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from simulator.schedule import Schedule
from simulator.validation import require_int, require_positive

if TYPE_CHECKING:
    from simulator.losses import LossSetup

__all__ = ["DEFAULT_MODEL", "TrainConfig", "check_processes", "run_fingerprint"]

DEFAULT_MODEL = "smollm2"  # the model a run loads unless told (llm_bridge.models.load_model)


@dataclasses.dataclass
class TrainConfig:
    """Everything that decides a run. The one home of the trainer's defaults; each field's
    docstring is the help of its ``grlab train-llm`` flag (``llm_bridge.cli``)."""

    loss: str = "grpo"
    """any name of `grlab losses` (a loss or a preset such as grpo, rec-oneside-nois)."""
    advantage: str | None = None
    """advantage kind instead of the loss's own (`grlab losses --name LOSS` shows it)."""
    advantage_kwargs: dict[str, float] | None = None
    """options of the advantage kind (e.g. --advantage-kwargs tau 0.5); with --advantage
    they replace the preset's, without it they update them."""
    agg: str | None = None
    """aggregation mode instead of the loss's own (token-mean, seq-mean-token-mean, ...)."""
    sync_interval: int = 1
    """the rollout copy is synced to the policy every this many steps."""
    sync_offset: int = 0
    """rollouts run this many steps ahead (data about this many updates old)."""
    offline: bool = False
    """every step's data come from the initial policy."""
    group_size: int = 4
    """K, responses per prompt (advantages are relative within a group)."""
    prompts_per_step: int = 2
    """prompts per optimiser step (the batch is prompts × K responses; with several
    processes, each samples whole groups)."""
    micro_batch: int = 8
    """responses per forward/backward; gradients accumulate to exactly the full-batch loss
    under every aggregation."""
    max_new_tokens: int = 12
    """the longest response (also norm_len of seq-mean-token-sum-norm)."""
    temperature: float = 1.0
    """sampling temperature; log π_θ uses the same one (ratio 1 on-policy)."""
    top_p: float = 1.0
    """nucleus sampling mass; behavior log-probs are those of the truncated distribution."""
    lr: float = 2e-5
    """AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """the gradient's norm is clipped to this."""
    steps: int = 20
    """optimiser steps (with --resume, may extend a finished run)."""
    eval_every: int = 10
    """evaluate greedy answers to held-out prompts every this many steps."""
    eval_prompts: int = 20
    """held-out prompts per evaluation."""
    checkpoint_every: int = 10
    """write out/checkpoint.pt and curves.png every this many steps (and at the end, and on
    Ctrl-C)."""
    seed: int = 0
    """seed of every generator (prompts, sampling, advantages; tiny model's init)."""
    chunk_size: int | None = None
    """tokens whose logits exist at once in the log-prob pass (default: from the vocabulary
    size)."""
    ref_kl: bool = True
    """report kl_ref, the KL to the initial policy (costs a reference copy of the model)."""
    device: str = "cpu"
    """where the model runs."""
    out: Path | None = None
    """output folder (metrics.jsonl, checkpoint.pt, curves.png); None writes nothing."""
    resume: bool = False
    """continue the run in --out from its checkpoint (same settings, same number of
    processes)."""
    overwrite: bool = False
    """replace the run already in --out (its metrics, checkpoints and plot)."""
    progress: bool = False
    """show a progress bar (or a line a minute off a terminal)."""
    plot: bool = True
    """write curves.png at every checkpoint."""
    keep_previous: bool = True
    """keep the checkpoint before the last as checkpoint.prev.pt, the exact fallback when
    checkpoint.pt cannot be read. A checkpoint holds the weights and AdamW's two moments, 12
    bytes per parameter: 1.6 GB for SmolLM2-135M, so 3.2 GB at rest with this, 1.6 GB without
    (writing one needs room for two either way)."""

    def __post_init__(self) -> None:
        self.setup  # noqa: B018 -- unknown loss, advantage kind or aggregation: a named error
        Schedule(self.sync_interval, self.sync_offset, self.offline)  # checks the knobs
        for name in ("group_size", "prompts_per_step", "micro_batch", "max_new_tokens", "steps",
                     "eval_every", "eval_prompts", "checkpoint_every"):
            require_int(name, getattr(self, name), 1)
        if self.chunk_size is not None:
            require_int("chunk_size", self.chunk_size, 1)
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
    def setup(self) -> LossSetup:
        """The loss as the loss layer feeds it: advantage override and aggregation."""
        from simulator.losses import LossSetup  # the loss layer (torch) only when a run is set up

        return LossSetup(self.loss, advantage=self.advantage,
                         advantage_kwargs=self.advantage_kwargs, agg=self.agg)

    @property
    def schedule(self) -> Schedule:
        return Schedule(self.sync_interval, self.sync_offset, self.offline)

    @property
    def behavior_gap(self) -> bool:
        """Whether π_θ can differ from the behavior policy on a batch (stale data, or top-p
        truncation); otherwise clipfrac and approx_kl are exactly 0 and not worth showing."""
        return self.offline or self.sync_interval > 1 or self.sync_offset > 0 or self.top_p < 1

    @property
    def aggregation(self) -> str:
        return self.setup.aggregation()

    @property
    def norm_len(self) -> float | None:
        """``norm_len`` in force: the loss layer's rule for the longest response."""
        return self.setup.length_for(self.max_new_tokens)

    def fingerprint(self) -> dict[str, Any]:
        """The fields a resumed run must share with the run it continues (``steps`` may grow)."""
        skip = {"resume", "overwrite", "progress", "plot", "out", "device", "eval_every",
                "checkpoint_every", "steps", "keep_previous"}
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}


def check_processes(prompts_per_step: int, world_size: int) -> None:
    """Each process samples whole groups: at least one prompt per process."""
    if prompts_per_step < world_size:
        raise ValueError(f"prompts_per_step is {prompts_per_step}, below the number of "
                         f"processes ({world_size}): each process samples whole groups")


def run_fingerprint(cfg: TrainConfig, task: Any) -> dict[str, Any]:
    """What a resumed run must share with the run it continues: the config's fingerprint and
    the task's (``llm_bridge.tasks.task_fingerprint``: task, data hash, prompts, rewards)."""
    from llm_bridge.tasks import task_fingerprint

    return {**cfg.fingerprint(), **task_fingerprint(task)}
