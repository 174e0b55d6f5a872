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
import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

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
    loss_kwargs: dict[str, float | str] | None = None
    """keywords of the loss over its preset's (e.g. --loss rec --loss-kwargs clip ring
    eps_low_prime 0.6; `grlab losses --name LOSS` lists them)."""
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
    """the sampler's nucleus mass: it samples from the smallest set of most likely tokens
    holding this mass (μ, renormalised; recorded as the sampler's log-probs)."""
    top_k: int | None = None
    """the sampler draws from the k most likely tokens only (μ renormalised over them, before
    top-p, as vLLM and transformers); unset: all."""
    sampler_temperature: float | None = None
    """the sampler's temperature when it differs from --temperature (a mismatched sampler);
    unset: --temperature."""
    sampler_dtype: Literal["fp32", "bf16"] = "fp32"
    """bf16: the sampler runs a bfloat16 copy of the rollout weights (as an inference engine
    does), so its log-probs differ from the trainer's fp32 ones."""
    recompute_old: bool = True
    """with a mismatched sampler (--sampler-temperature, --top-p, --top-k, --sampler-dtype),
    recompute π_old (the loss's old log-probs) with the trainer's log-prob pass on the weights
    that sampled, and give the loss the sampler's log-probs μ apart; --no-recompute-old uses
    μ as π_old (verl's bypass mode: corrections then need ratio=current)."""
    correction: tuple[str, ...] = ()
    """an off-policy correction NAME[:KEY=VALUE,...] on π_old/μ, repeatable: a name of
    simulator.corrections.CORRECTIONS (tis-token, mis-seq, icepop, opsm, is, ...) with its
    keywords, e.g. --correction tis-token:high=3 --correction is:level=sequence,action=mask."""
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
        if self.top_k is not None:
            require_int("top_k", self.top_k, 1)
        if self.sampler_temperature is not None:
            require_positive("sampler_temperature", self.sampler_temperature)
        if self.sampler_dtype not in ("fp32", "bf16"):
            raise ValueError(f"sampler_dtype must be 'fp32' or 'bf16', got {self.sampler_dtype!r}")
        self.correction = tuple(self.correction)
        for text, correction in zip(self.correction, self.corrections, strict=True):
            if not self.ref_kl and "logp_ref" in _spec(correction).inputs:
                raise ValueError(f"correction {text!r} reads the reference policy's log-probs, "
                                 "which need the reference copy of the model: drop --no-ref-kl")
        if (self.resume or self.overwrite) and self.out is None:
            raise ValueError("resume and overwrite need out= (the run folder)")
        if self.resume and self.overwrite:
            raise ValueError("resume (--resume) continues the run in out and overwrite "
                             "(--overwrite) replaces it: pass one of them")

    @property
    def setup(self) -> LossSetup:
        """The loss as the loss layer feeds it: advantage override and aggregation."""
        from simulator.losses import LossSetup  # the loss layer (torch) only when a run is set up

        return LossSetup(self.loss, dict(self.loss_kwargs or {}), advantage=self.advantage,
                         advantage_kwargs=self.advantage_kwargs, agg=self.agg,
                         corrections=self.corrections)

    @functools.cached_property
    def corrections(self) -> tuple[Any, ...]:
        """``correction`` as ``simulator.corrections.Correction`` objects, each checked by
        running it once on a one-token batch (a bad name, keyword or value fails here); parsed
        once per config, not at every ``setup`` (each training step)."""
        return tuple(_checked_correction(text) for text in self.correction)

    @property
    def sampling_temperature(self) -> float:
        """The temperature the sampler draws at."""
        return self.temperature if self.sampler_temperature is None else self.sampler_temperature

    @property
    def sampler_mismatch(self) -> bool:
        """Whether the sampler's distribution μ differs from the trained policy's at the same
        weights (another temperature, top-p or top-k truncation, bf16 weights)."""
        return (self.sampling_temperature != self.temperature or self.top_p < 1
                or self.top_k is not None or self.sampler_dtype != "fp32")

    @property
    def recomputes_old(self) -> bool:
        """Whether π_old is recomputed apart from the sampler's μ (three policies)."""
        return self.recompute_old and self.sampler_mismatch

    @property
    def schedule(self) -> Schedule:
        return Schedule(self.sync_interval, self.sync_offset, self.offline)

    @property
    def behavior_gap(self) -> bool:
        """Whether π_θ can differ from the loss's π_old on a batch (stale data, or a
        mismatched sampler whose μ is used as π_old); otherwise clipfrac and approx_kl are
        exactly 0 and not worth showing."""
        return (self.offline or self.sync_interval > 1 or self.sync_offset > 0
                or (self.sampler_mismatch and not self.recompute_old))

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
        values = {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}
        # one text per correction, however it was written (high=2, high=2.0 or the default)
        values["correction"] = [str(c.canonical()) for c in self.corrections]
        # the sampler's fields at their defaults are left out: a checkpoint written before
        # they existed (a matched sampler, no correction) still resumes
        return {k: v for k, v in values.items()
                if not (k in SAMPLER_FIELDS and v == SAMPLER_FIELDS[k])}


# the fields added with the mismatched sampler and their defaults (see ``fingerprint``)
SAMPLER_FIELDS: dict[str, Any] = {"loss_kwargs": None, "top_k": None, "sampler_temperature": None,
                                  "sampler_dtype": "fp32", "recompute_old": True,
                                  "correction": []}


def _spec(correction: Any) -> Any:
    """The registered ``CorrectionSpec`` of a ``Correction`` (what it reads, its keywords)."""
    from simulator.corrections import CORRECTIONS

    return CORRECTIONS[correction.name]


def _checked_correction(text: str) -> Any:
    """``Correction.parse(text)``, run once on a one-token batch, so that a bad name, keyword
    or value fails before any model loads; the error names the flag."""
    import torch

    from simulator.corrections import Correction, CorrectionInputs

    try:
        correction = Correction.parse(text)
        if _spec(correction).resolve(correction.hparams).get("normalize"):
            raise ValueError("batch normalisation (normalize=true) is not exact in the trainer: "
                             "each micro-batch and process would normalise its own share")
        one = torch.zeros(1, 1, dtype=torch.float64)
        correction(CorrectionInputs(one, one, one, one, torch.ones(1, 1, dtype=torch.bool),
                                    one, one))
    except (KeyError, ValueError, TypeError) as error:
        message = str(error.args[0]) if isinstance(error, KeyError) and error.args \
            else str(error)
        raise type(error)(f"correction has a bad value {text!r}: {message}") from None
    return correction


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
