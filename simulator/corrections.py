"""Off-policy corrections that compose with any loss: importance weights, rejection masks,
sequence masks and extra per-token terms, as data.

Three policies meet in an LLM trainer: the rollout engine's policy μ that sampled the tokens
(``logp_rollout``), the old or proximal policy π_old whose recomputed log-probs the loss clips
against (``logp_old``), and the current policy π_θ (``logp``). A loss sees π_θ and π_old; a
correction sees all three and returns a ``Stage``: a constant weight per token (truncated IS,
TIS), a keep mask (masked IS, MIS; IcePop's band; rejection by a divergence statistic; OPSM's
sequence mask), or a per-token term added to the loss (a KL to a reference, an entropy bonus).
Stages compose: weights multiply, keep masks intersect, terms add.

Design decisions
----------------
* The grammar is the peers' own, with one name per axis: ``level`` (token / sequence as a
  product of token ratios / geometric, the mean of log-ratios) × action (``truncate`` or
  ``mask``) × statistic × ``ratio`` (the anchor of the mismatch ratio: ``"old"`` = π_old/μ,
  decoupled PPO; ``"current"`` = sg(π_θ)/μ, verl's bypass mode, where the caller passes μ as
  ``logp_old`` too). Presets (``tis-token``, ``mis-seq``, ``icepop``, ...) are the peers' names
  for bound keyword values, as the loss presets are.
* Where peers disagree whether a removed token stays in the token-mean denominator, every
  masking correction takes ``denominator="keep"`` (it stays, as a zero: AReaL, TRL, OpenRLHF,
  verl's IcePop) or ``"drop"`` (it leaves the batch: verl's rejection sampling, slime's MIS).
  A dropped token also leaves the mask the loss sees, so sequence-level quantities of the loss
  (GSPO's sequence ratio) are taken over the kept tokens, as in verl, whose rejection edits
  ``response_mask`` before the loss.
* Statistics of the mismatch follow ``simulator.kl``'s estimators. Peers read them in opposite
  directions (verl: estimators of KL(μ‖π) from μ's samples, k1 = log(μ/π); AReaL: KL(π‖μ),
  k1 = log(π/μ)): ``direction`` gives both; a ratio's sequence sum and mean are taken in log
  space (the product, the geometric mean). docs/corrections.md is the peer-by-peer table.
* Everything a correction computes from log-probs is a constant (detached), except the terms
  (``penalty``), which carry the gradient of π_θ. With no correction and no ``logp_rollout``
  nothing here runs: a one-policy caller gets exactly the numbers it got before.
* ``CORRECTIONS`` maps a name to a ``CorrectionSpec`` (``validation.Registry``, the
  ``BoundFunction`` rules of the loss registry: unknown names and keywords fail with the valid
  ones listed). ``Correction`` is one use of a name with keyword values; ``Correction.parse``
  reads the command line's ``name:key=value,key=value``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor

from simulator import kl, numerics
from simulator.aggregation import masked_mean, sequence_mean, sequence_sum
from simulator.validation import (
    BoundFunction,
    Registry,
    require_choice,
    require_nonnegative,
    require_number,
    require_positive,
)

__all__ = ["CORRECTIONS", "Applied", "Correction", "CorrectionInputs", "CorrectionSpec", "Stage",
           "apply_corrections", "as_corrections", "binary_kl", "divergence_statistic",
           "proximal_logp", "register_correction", "register_correction_preset"]

LEVELS = ("token", "sequence", "geometric")
RATIO_ANCHORS = ("old", "current")
DENOMINATORS = ("keep", "drop")
STATISTICS = ("ratio", "k1", "k2", "k3")
AGGREGATES = ("token", "seq_sum", "seq_mean", "seq_max", "seq_min")
DIRECTIONS = ("mu-pi", "pi-mu")
PROXIMAL_METHODS = ("loglinear", "linear", "rollout")


@dataclasses.dataclass(frozen=True)
class CorrectionInputs:
    """What a correction sees: [B, T] float64 tensors with the masked positions zeroed.

    ``logp`` carries π_θ's gradient (only terms may use it with gradient); ``logp_old``,
    ``logp_rollout`` (μ; π_old when the caller gave none), ``advantages``, ``logp_ref`` and
    ``entropy`` (None when not given) are as ``policy_loss`` received them.
    """

    logp: Tensor
    logp_old: Tensor
    logp_rollout: Tensor
    advantages: Tensor
    mask: Tensor
    logp_ref: Tensor | None = None
    entropy: Tensor | None = None

    def mismatch(self, ratio: str) -> Tensor:
        """log(π_anchor/μ) per token, detached: π_old/μ (``"old"``) or π_θ/μ (``"current"``)."""
        anchor = self.logp_old if require_choice("ratio", ratio, RATIO_ANCHORS) == "old" \
            else self.logp.detach()
        return torch.where(self.mask, numerics.log_ratio(anchor, self.logp_rollout),
                           anchor.new_zeros(()))

    def at_level(self, log_ratio: Tensor, level: str) -> Tensor:
        """A per-token log-ratio [B, T] at ``level``: itself, the row's sum (the log of the
        product of the token ratios) or the row's mean (geometric), spread over the row."""
        require_choice("level", level, LEVELS)
        if level == "token":
            return log_ratio
        row = sequence_sum(log_ratio, self.mask) if level == "sequence" \
            else sequence_mean(log_ratio, self.mask)
        return row.unsqueeze(-1).expand_as(log_ratio)

    def require(self, name: str, correction: str) -> Tensor:
        """The optional input ``name`` (``logp_ref``, ``entropy``), or a ValueError naming the
        correction that needs it."""
        value = getattr(self, name)
        if value is None:
            raise ValueError(f"correction {correction!r} needs {name}: pass {name}=[B, T] "
                             "tensor to policy_loss")
        return value


class Stage(NamedTuple):
    """What one correction returns; ``None`` fields change nothing.

    weight:  [B, T] constants ≥ 0 multiplying each token's loss (an IS weight).
    keep:    [B, T] bool; False removes the token's loss.
    drop:    True: a removed token also leaves the aggregation's denominator (and the mask the
             loss sees); False: it stays there as a zero.
    penalty: [B, T] a term added to each token's loss, with π_θ's gradient (after weighting).
    metrics: per-token quantities [B, T], reported as means over the valid tokens.
    """

    weight: Tensor | None = None
    keep: Tensor | None = None
    drop: bool = False
    penalty: Tensor | None = None
    metrics: Mapping[str, Tensor] = {}


CorrectionFn = Callable[..., Stage]


@dataclasses.dataclass(frozen=True)
class CorrectionSpec(BoundFunction):
    """A registered correction: ``fn(inputs, **keywords) -> Stage`` with bound keyword values,
    a one-line summary and the peers or papers it follows (file and version)."""

    summary: str = ""
    follows: str = ""
    kind: str = "correction"

    def __call__(self, inputs: CorrectionInputs, **hparams: Any) -> Stage:
        return self.fn(inputs, **self.resolve(hparams))


CORRECTIONS: Registry = Registry("correction")


def register_correction(name: str, *, follows: str = "", summary: str = ""
                        ) -> Callable[[CorrectionFn], CorrectionFn]:
    """Decorator: register ``fn(inputs: CorrectionInputs, *, keywords) -> Stage``."""
    def decorate(fn: CorrectionFn) -> CorrectionFn:
        first_line = next(iter((fn.__doc__ or "").strip().splitlines()), "")
        CORRECTIONS[name] = CorrectionSpec(name=name, fn=fn, summary=summary or first_line,
                                           follows=follows)
        return fn
    return decorate


def register_correction_preset(name: str, base: str, *, summary: str, follows: str = "",
                               **hparams: Any) -> CorrectionSpec:
    """Bind a registered correction's keywords under a peer's name (checked at import)."""
    parent = CORRECTIONS[base]
    parent.resolve(hparams)
    spec = dataclasses.replace(parent, name=name, hparams={**parent.hparams, **hparams},
                               summary=summary, follows=follows or parent.follows)
    CORRECTIONS[name] = spec
    return spec


def _parse_value(text: str) -> Any:
    lowered = text.strip().lower()
    if lowered in ("none", "null"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.strip()


@dataclasses.dataclass(frozen=True)
class Correction:
    """One correction in use: a registered name and the keyword values that override its
    bound ones. Unknown names and keywords fail here, when the correction is named."""

    name: str
    hparams: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        CORRECTIONS[self.name].resolve(self.hparams)

    @classmethod
    def parse(cls, text: str) -> Correction:
        """``"tis-token"`` or ``"tis-token:high=2.0,ratio=current"`` (the command line's form);
        values are read as None, bools, ints, floats, else strings."""
        name, _, rest = text.partition(":")
        hparams: dict[str, Any] = {}
        for item in filter(None, (part.strip() for part in rest.split(","))):
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"correction {text!r}: expected NAME or "
                                 f"NAME:key=value,key=value, got the item {item!r}")
            hparams[key.strip()] = _parse_value(value)
        return cls(name.strip(), hparams)

    def canonical(self) -> Correction:
        """The same correction written one way: keywords at their bound value left out, the
        rest sorted, numbers as floats (``tis-token:high=2`` and ``tis-token`` are one)."""
        spec = CORRECTIONS[self.name]
        bound, given = spec.resolve({}), spec.resolve(self.hparams)
        return Correction(self.name, {
            key: float(value) if isinstance(value, int) and not isinstance(value, bool)
            else value for key, value in sorted(given.items()) if value != bound[key]})

    def __str__(self) -> str:
        if not self.hparams:
            return self.name
        return self.name + ":" + ",".join(f"{k}={v}" for k, v in self.hparams.items())

    def __call__(self, inputs: CorrectionInputs) -> Stage:
        return CORRECTIONS[self.name](inputs, **self.hparams)


def as_corrections(value: str | Correction | Iterable[str | Correction] | None
                   ) -> tuple[Correction, ...]:
    """The ``corrections`` argument as a tuple of ``Correction``: None, one name or
    ``Correction``, or a sequence of them (strings are parsed as by ``Correction.parse``)."""
    if value is None:
        return ()
    if isinstance(value, str | Correction):
        value = (value,)
    out = []
    for item in value:
        if isinstance(item, str):
            out.append(Correction.parse(item))
        elif isinstance(item, Correction):
            out.append(item)
        else:
            raise TypeError("corrections must be names, Correction objects or a sequence of "
                            f"them, got {type(item).__name__}")
    return tuple(out)


class Applied(NamedTuple):
    """The stages of a list of corrections, combined.

    weight:    [B, T] the product of the weights (1 where none), 0 where a stage removed the
               token with ``drop=False``.
    loss_mask: [B, T] bool, the mask the loss and the aggregation see: the valid tokens less
               those a ``drop=True`` stage removed.
    penalty:   [B, T] the sum of the terms, or None.
    metrics:   detached scalars (float64): each stage's metrics, ``is_weight_mean`` and
               ``rejected_frac`` (the share of valid tokens a stage removed).
    """

    weight: Tensor
    loss_mask: Tensor
    penalty: Tensor | None
    metrics: dict[str, Tensor]


def apply_corrections(corrections: Iterable[Correction], inputs: CorrectionInputs) -> Applied:
    """Run each correction on ``inputs`` and combine the stages (weights multiply, keep masks
    intersect, terms add); the order does not matter."""
    mask = inputs.mask
    weight = torch.ones_like(inputs.logp_old)
    kept = torch.ones_like(mask)
    loss_mask = mask
    penalty: Tensor | None = None
    metrics: dict[str, Tensor] = {}
    for correction in corrections:
        stage = correction(inputs)
        if stage.weight is not None:
            weight = numerics.mul(weight, stage.weight.detach())
        if stage.keep is not None:
            keep = stage.keep.detach() | ~mask
            kept = kept & keep
            if stage.drop:
                loss_mask = loss_mask & keep
        if stage.penalty is not None:
            penalty = stage.penalty if penalty is None else numerics.finite(penalty + stage.penalty)
        for key, value in stage.metrics.items():
            metrics[key] = masked_mean(value.detach().to(torch.float64), mask)
    weight = torch.where(kept, weight, weight.new_zeros(()))
    metrics["is_weight_mean"] = masked_mean(weight, loss_mask)
    metrics["rejected_frac"] = masked_mean((~kept).to(torch.float64), mask)
    return Applied(weight, loss_mask, penalty, metrics)


# --------------------------------------------------------------------------------------------
# The corrections
# --------------------------------------------------------------------------------------------


def _denominator(denominator: str) -> bool:
    return require_choice("denominator", denominator, DENOMINATORS) == "drop"


def _batch_normalised(weight: Tensor, inputs: CorrectionInputs, level: str) -> Tensor:
    """The weights divided by their mean over the batch (over tokens at the token level, over
    rows at a sequence level), so that they average to 1."""
    if level == "token":
        mean = masked_mean(weight, inputs.mask)
    else:
        rows = inputs.mask.any(dim=-1)
        mean = masked_mean(weight[:, 0], rows) if weight.shape[-1] else weight.new_ones(())
    return weight / mean.clamp(min=torch.finfo(weight.dtype).tiny)


@register_correction("is", follows="verl 0.9.1 rollout_corr_helper.py "
                     "(compute_rollout_correction_weights); TRL 1.16 vLLM importance sampling")
def importance_weight(inputs: CorrectionInputs, *, level: str = "token",
                      action: str = "truncate", high: float | None = 2.0,
                      low: float | None = None, ratio: str = "old", normalize: bool = False,
                      denominator: str = "keep") -> Stage:
    """An importance weight w = π_anchor/μ at ``level``, truncated (TIS) or masked (MIS).

    truncate: w ← min(w, high) (and max(w, low) when ``low`` is given); every token kept.
    mask:     tokens with w > high or w < low get weight 0 (the rest keep w); ``denominator``
              says whether they stay in the token-mean denominator.
    ``high=None``: no upper bound (TRL's ``vllm_importance_sampling_clip_max=None``; with
    ``truncate`` and no ``low``, the plain weight, as AReaL's behave_imp_weight).
    ``normalize``: divide by the batch mean, so the weights average to 1 (verl's
    ``rollout_is_batch_normalize``).
    """
    require_choice("action", action, ("truncate", "mask"))
    if high is not None:
        high = require_positive("high", high)
    if low is not None:
        low = require_nonnegative("low", low)
        if high is not None and low > high:
            raise ValueError(f"low must be None or in [0, high={high}], got {low}")
    log_w = inputs.at_level(inputs.mismatch(ratio), level)
    w = numerics.exp(log_w)
    if action == "truncate":
        weight = w.clamp(min=low if low is not None else 0.0, max=high)
        keep = None
    else:
        keep = w >= (low if low is not None else 0.0)
        if high is not None:
            keep = keep & (w <= high)
        weight = torch.where(keep, w, w.new_zeros(()))
    if normalize:
        weight = _batch_normalised(weight, inputs, level)
    return Stage(weight=weight, keep=keep, drop=_denominator(denominator) and keep is not None,
                 metrics={"is_ratio_mean": w})


def _sequence_mean_of(values: Tensor, inputs: CorrectionInputs) -> Tensor:
    return sequence_mean(values, inputs.mask).unsqueeze(-1).expand_as(values)


@register_correction("opsm", follows="DeepSeek-V3.2 (off-policy sequence masking)")
def off_policy_sequence_mask(inputs: CorrectionInputs, *, delta: float = 1e-4,
                             ratio: str = "current", denominator: str = "keep") -> Stage:
    """OPSM: drop a sequence with A < 0 whose mean log(μ/π_anchor) over its tokens exceeds
    ``delta`` (DeepSeek-V3.2: negative samples the current policy has moved away from)."""
    drift = _sequence_mean_of(-inputs.mismatch(ratio), inputs)
    advantage = _sequence_mean_of(inputs.advantages, inputs)
    keep = ~((advantage < 0) & (drift > delta))
    return Stage(keep=keep, drop=_denominator(denominator),
                 metrics={"opsm_frac": (~keep).to(torch.float64)})


for _level, _tag in (("token", "token"), ("sequence", "seq"), ("geometric", "geo")):
    register_correction_preset(
        f"tis-{_tag}", "is", level=_level, action="truncate", high=2.0,
        summary=f"TIS at the {_level} level: w = min(π_old/μ, 2)",
        follows="verl 0.9.1 rollout_is='token'/'sequence' (threshold 2.0)")
    register_correction_preset(
        f"mis-{_tag}", "is", level=_level, action="mask", high=2.0,
        summary=f"MIS at the {_level} level: w = π_old/μ where w ≤ 2, else the token is removed",
        follows="Liu et al. (MIS); verl 0.9.1's Seq-MIS (decoupled_seq_is_rs) is mis-seq with "
        "low=0.5, denominator='drop' (docs/corrections.md)")
register_correction_preset(
    "icepop", "is", level="token", action="mask", low=0.5, high=5.0,
    summary="IcePop: keep tokens with π_old/μ in [0.5, 5] (weighted by it), zero the rest",
    follows="Ring-1T IcePop (α = 0.5, β = 5)")


# --------------------------------------------------------------------------------------------
# Rejection by a divergence statistic (verl's rollout_rs, AReaL's rejection_sampling), the
# token veto, KPop's binary-KL mask
# --------------------------------------------------------------------------------------------


def _anchor_logp(inputs: CorrectionInputs, ratio: str) -> Tensor:
    """log π_anchor per token, detached: π_old (``"old"``) or π_θ (``"current"``)."""
    require_choice("ratio", ratio, RATIO_ANCHORS)
    return inputs.logp_old if ratio == "old" else inputs.logp.detach()


def _row_aggregate(values: Tensor, mask: Tensor, aggregate: str) -> Tensor:
    """One value per row [B] over the valid tokens: sum, mean, max or min (0 for a row with no
    valid token, as verl's ``_sequence_max``)."""
    if aggregate == "seq_sum":
        return sequence_sum(values, mask)
    if aggregate == "seq_mean":
        return sequence_mean(values, mask)
    if values.shape[-1] == 0:
        return values.new_zeros(values.shape[:-1])
    fill = values.new_tensor(float("-inf") if aggregate == "seq_max" else float("inf"))
    filled = torch.where(mask, values, fill)
    row = filled.amax(dim=-1) if aggregate == "seq_max" else filled.amin(dim=-1)
    return torch.where(mask.any(dim=-1), row, row.new_zeros(()))


def _bounds(low: float | None, high: float | None, statistic: str
            ) -> tuple[float | None, float | None]:
    if low is None and high is None:
        raise ValueError("reject needs a bound: give low, high or both")
    low = None if low is None else require_number("low", low)
    high = None if high is None else require_number("high", high)
    if low is not None and high is not None and low > high:
        raise ValueError(f"low must be <= high = {high}, got {low}")
    if statistic == "ratio" and ((low is not None and low < 0) or (high is not None and high <= 0)):
        raise ValueError(f"the ratio's bounds must be low >= 0 and high > 0, got low={low}, "
                         f"high={high}")
    return low, high


def _within(values: Tensor, low: float | None, high: float | None) -> Tensor:
    keep = torch.ones_like(values, dtype=torch.bool)
    if low is not None:
        keep = keep & (values >= low)
    if high is not None:
        keep = keep & (values <= high)
    return keep


def divergence_statistic(log_ratio: Tensor, statistic: str, direction: str = "mu-pi") -> Tensor:
    """A per-token statistic of log r = log(π_anchor/μ) (masked positions should hold 0).

    ratio: r itself; k1, k2, k3: ``simulator.kl``'s estimators. ``direction="mu-pi"`` (verl)
    takes them as estimators of KL(μ‖π) from μ's samples: k1 = −log r, k2 = ½(log r)²,
    k3 = r − 1 − log r; ``"pi-mu"`` (AReaL) of KL(π‖μ): k1 = log r, k2 the same,
    k3 = 1/r − 1 + log r.
    """
    require_choice("statistic", statistic, STATISTICS)
    require_choice("direction", direction, DIRECTIONS)
    if statistic == "ratio":
        return numerics.exp(log_ratio)
    signed = log_ratio if direction == "mu-pi" else -log_ratio
    return numerics.finite(kl.KL_ESTIMATORS[statistic](torch.zeros_like(signed), signed))


@register_correction("reject", follows="verl 0.9.1 rollout_corr_helper.py "
                     "(compute_rollout_rejection_mask, SUPPORTED_ROLLOUT_RS_OPTIONS); AReaL "
                     "4aef98d areal/utils/functional/functional.py (apply_rejection_sampling)")
def rejection(inputs: CorrectionInputs, *, statistic: str = "k3", aggregate: str = "seq_mean",
              low: float | None = None, high: float | None = 0.01, ratio: str = "old",
              direction: str = "mu-pi", denominator: str = "drop") -> Stage:
    """Reject tokens (``aggregate="token"``) or whole sequences whose divergence statistic
    s lies outside [low, high] (None: no bound on that side).

    statistic: ``ratio`` r = π_anchor/μ, or k1/k2/k3 of log r (``divergence_statistic``;
    ``direction``: verl's KL(μ‖π) estimators or AReaL's KL(π‖μ)).
    aggregate: token: s_t; seq_sum: Σ_t s_t; seq_mean: Σ_t s_t / L; seq_max / seq_min: the
    row's extreme token. For ``ratio`` the sum and mean are taken in log space (the product
    Π_t r_t and the geometric mean), as verl's k1 and AReaL's ratio metric.
    verl's ``token_k1`` with threshold "lo_hi" bounds exp(k1) = μ/π, so it is
    ``statistic="k1", low=log(lo), high=log(hi)``; see docs/corrections.md for every option.
    """
    require_choice("aggregate", aggregate, AGGREGATES)
    require_choice("direction", direction, DIRECTIONS)
    log_r = inputs.mismatch(ratio)
    low, high = _bounds(low, high, require_choice("statistic", statistic, STATISTICS))
    mask = inputs.mask
    if statistic == "ratio":
        values = log_r if aggregate == "token" else \
            _row_aggregate(log_r, mask, aggregate).unsqueeze(-1).expand_as(log_r)
        stat = numerics.exp(values)
    else:
        token = divergence_statistic(log_r, statistic, direction)
        stat = token if aggregate == "token" else \
            _row_aggregate(token, mask, aggregate).unsqueeze(-1).expand_as(token)
    keep = _within(stat, low, high)
    return Stage(keep=keep, drop=_denominator(denominator),
                 metrics={"reject_statistic_mean": stat,
                          "reject_frac": (~keep).to(torch.float64)})


def binary_kl(logp_p: Tensor, logp_q: Tensor, eps: float = 1e-6) -> Tensor:
    """D_B(p‖q) = p·log(p/q) + (1−p)·log((1−p)/(1−q)) per token, the KL between the two-event
    distributions (this token, every other token) of p = e^{logp_p} and q = e^{logp_q}, both
    clamped to [eps, 1 − eps]."""
    p = numerics.exp(logp_p).clamp(eps, 1 - eps)
    q = numerics.exp(logp_q).clamp(eps, 1 - eps)
    return p * (torch.log(p) - torch.log(q)) + (1 - p) * (torch.log1p(-p) - torch.log1p(-q))


@register_correction("kpop", follows="KPop (Guo, Sun et al., Ant Group, 2026, "
                     "ringtech.notion.site/kpop); no released peer: verl PR #6800 and prime-rl "
                     "PR #3283 are open")
def binary_kl_mask(inputs: CorrectionInputs, *, threshold: float = 0.1, eps: float = 1e-6,
                   ratio: str = "old", denominator: str = "drop") -> Stage:
    """KPop: keep a token iff max(D_B(π‖μ), D_B(μ‖π)) ≤ ``threshold`` (φ), the binary KL of
    ``binary_kl`` in both directions between π_anchor's and μ's probability of the token
    (wide in ratio terms for rare tokens, tight for confident ones)."""
    threshold = require_positive("threshold", threshold)
    if not 0 < require_number("eps", eps) < 0.5:
        raise ValueError(f"eps must be in (0, 0.5), got {eps}")
    anchor = _anchor_logp(inputs, ratio)
    forward = binary_kl(anchor, inputs.logp_rollout, eps)
    backward = binary_kl(inputs.logp_rollout, anchor, eps)
    stat = torch.maximum(forward, backward)
    keep = stat <= threshold
    return Stage(keep=keep, drop=_denominator(denominator),
                 metrics={"kpop_binary_kl_mean": stat, "kpop_frac": (~keep).to(torch.float64)})


# --------------------------------------------------------------------------------------------
# Terms: a KL to a reference, an entropy bonus; the top-entropy token mask
# --------------------------------------------------------------------------------------------


IS_ANCHORS = ("old", "rollout")


@register_correction("kl", follows="DeepSeekMath GRPO (β·k3); TRL 1.16 grpo_trainer.py "
                     "(_compute_loss: beta, use_bias_correction_kl); Trinity-RFT 0.6.0 "
                     "kl_fn.py (K3Fn, CorrectedK3Fn)")
def kl_term(inputs: CorrectionInputs, *, beta: float = 0.04, estimator: str = "k3",
            is_level: str | None = None, is_cap: float | None = None,
            is_anchor: str = "old", straight_through: bool = False) -> Stage:
    """A KL penalty to the reference policy: β·k(π_θ, π_ref) per token, with π_θ's gradient
    (``simulator.kl``'s estimators; GRPO's term is k3 = π_ref/π_θ − 1 − log(π_ref/π_θ)).

    ``is_level`` (None: off) multiplies k by the importance ratio w = π_θ/π_anchor, with its
    gradient (DeepSeek-V3.2's unbiased KL estimate, TRL's ``use_bias_correction_kl``):
    token (TRL's importance_sampling_level="token"), geometric (TRL's "sequence") or sequence
    (the product); ``is_cap`` clamps w to [0, is_cap] (Trinity-RFT's corrected_k3: 2);
    ``is_anchor``: π_old (TRL, Trinity, DeepSeek-V3.2) or μ (``"rollout"``).
    ``straight_through``: the estimator's value with k2's gradient (verl's ``"k3+"``,
    ``"low_var_kl+"``: k2 − sg(k2) + sg(k)).
    The term is added after the corrections' weights and masks that keep the token in the
    denominator (as in TRL, which adds β·KL after its IS ratio, OPSM and entropy masks).
    """
    logp_ref = inputs.require("logp_ref", "kl")
    beta = require_nonnegative("beta", beta)
    require_choice("estimator", estimator, kl.KL_ESTIMATORS)
    mask = inputs.mask
    k = numerics.finite(kl.kl_penalty(inputs.logp, logp_ref, estimator))
    if not isinstance(straight_through, bool):
        raise TypeError(f"straight_through must be a bool, got {type(straight_through).__name__}")
    if straight_through:
        k2 = numerics.finite(kl.k2(inputs.logp, logp_ref))
        k = k2 - k2.detach() + k.detach()
    if is_level is not None:
        require_choice("is_level", is_level, LEVELS)
        anchor = inputs.logp_old if require_choice("is_anchor", is_anchor, IS_ANCHORS) == "old" \
            else inputs.logp_rollout
        log_w = torch.where(mask, numerics.log_ratio(inputs.logp, anchor), k.new_zeros(()))
        w = numerics.exp(inputs.at_level(log_w, is_level))
        if is_cap is not None:
            w = w.clamp(0.0, require_positive("is_cap", is_cap))
        k = numerics.mul(k, w)
    elif is_cap is not None:
        raise ValueError("is_cap needs is_level: the cap applies to the importance ratio")
    k = torch.where(mask, k, k.new_zeros(()))
    return Stage(penalty=numerics.mul(beta, k), metrics={"kl": k.detach()})


@register_correction("entropy-bonus", follows="verl 0.9.1 entropy_coeff; Trinity-RFT 0.6.0 "
                     "entropy_loss_fn.py (DefaultEntropyLossFn); TRL 1.16 entropy_coef")
def entropy_bonus(inputs: CorrectionInputs, *, coef: float = 0.001) -> Stage:
    """An entropy bonus: −coef·H_t per token (H_t the policy's entropy at the token, with its
    gradient), aggregated like the loss (verl, Trinity-RFT; TRL takes the token mean)."""
    entropy = inputs.require("entropy", "entropy-bonus")
    coef = require_number("coef", coef)
    entropy = torch.where(inputs.mask, entropy, entropy.new_zeros(()))
    return Stage(penalty=numerics.mul(-coef, entropy), metrics={"entropy": entropy.detach()})


@register_correction("top-entropy", follows="Wang et al. 2025, Beyond the 80/20 Rule (arXiv "
                     "2506.01939); TRL 1.16 grpo_trainer.py (get_high_entropy_mask, "
                     "top_entropy_quantile)")
def top_entropy_mask(inputs: CorrectionInputs, *, rho: float = 0.2,
                     denominator: str = "keep") -> Stage:
    """Keep only the top-ρ fraction of the batch's valid tokens by entropy: H_t ≥ the
    (1 − ρ)-quantile of the valid entropies (``torch.quantile``, linear interpolation, as TRL;
    ρ = 1 keeps every token, ρ = 0 only the highest)."""
    entropy = inputs.require("entropy", "top-entropy").detach()
    rho = require_number("rho", rho)
    if not 0 <= rho <= 1:
        raise ValueError(f"rho must be in [0, 1], got {rho}")
    valid = entropy[inputs.mask]
    if valid.numel() == 0:
        keep = torch.zeros_like(inputs.mask)
    else:
        keep = entropy >= torch.quantile(valid, 1 - rho)
    return Stage(keep=keep, drop=_denominator(denominator),
                 metrics={"top_entropy_frac": keep.to(torch.float64)})


# --------------------------------------------------------------------------------------------
# AReaL's proximal policy approximation
# --------------------------------------------------------------------------------------------


def proximal_logp(logp_rollout: Tensor, logp: Tensor, versions: Tensor, current_version: int,
                  *, method: str = "loglinear") -> Tensor:
    """AReaL's approximation of π_prox (the policy one update behind π_θ) without a forward
    pass (``prox_logp_method="loglinear"``; AReaL 4aef98d areal/trainer/ppo/actor.py
    ``compute_prox_logp_approximations``).

    With v the version that generated each token (``versions``, < 0 for prompt tokens),
    v_θ = ``current_version`` and v_prox = v_θ − 1:
    α = clamp((v_prox − v)/(v_θ − v), 0, 1) where v ≥ 0 and v_θ > v, else 0;
    loglinear: log π_prox = (1 − α)·log μ + α·log π_θ; linear: log((1 − α)·μ + α·π_θ)
    (AReaL adds 1e-10 inside the log; grlab computes it exactly with logaddexp);
    rollout: log μ. Returns a detached float64 tensor of the inputs' shape.
    """
    require_choice("method", method, PROXIMAL_METHODS)
    if logp_rollout.shape != logp.shape or versions.shape != logp.shape:
        raise ValueError(f"logp_rollout, logp and versions must share one shape, got "
                         f"{tuple(logp_rollout.shape)}, {tuple(logp.shape)}, "
                         f"{tuple(versions.shape)}")
    if isinstance(current_version, bool) or not isinstance(current_version, int):
        raise TypeError(f"current_version must be an int, got {type(current_version).__name__}")
    mu = logp_rollout.detach().to(torch.float64)
    theta = logp.detach().to(torch.float64)
    v = versions.to(torch.float64)
    diff = current_version - v
    alpha = torch.where((diff > 0) & (versions >= 0), (current_version - 1 - v) / diff.clamp(
        min=1.0), torch.zeros_like(v)).clamp(0.0, 1.0)
    if method == "rollout":
        return mu.clone()
    if method == "loglinear":
        return mu + alpha * (theta - mu)
    return torch.logaddexp(torch.log1p(-alpha) + mu, torch.log(alpha) + theta)


# --------------------------------------------------------------------------------------------
# The peers' names
# --------------------------------------------------------------------------------------------

_VERL_CONFIG = "verl 0.9.1 trainer/config/algorithm.py RolloutCorrectionConfig"
register_correction_preset(
    "geo-rs", "reject", statistic="k1", aggregate="seq_mean", low=math.log(0.999),
    high=math.log(1.001), summary="verl's Geo-RS: reject a sequence whose mean log(μ/π_old) "
    "is outside [log 0.999, log 1.001] (rollout_rs='seq_mean_k1', '0.999_1.001')",
    follows=f"{_VERL_CONFIG}.decoupled_geo_rs")
register_correction_preset(
    "k3-rs", "reject", statistic="k3", aggregate="seq_mean", high=0.01,
    summary="verl's K3-RS: reject a sequence whose mean k3 exceeds 0.01 "
    "(rollout_rs='seq_mean_k3')", follows=f"{_VERL_CONFIG}.decoupled_k3_rs")
register_correction_preset(
    "seq-rs", "reject", statistic="k1", aggregate="seq_sum", low=math.log(0.5),
    high=math.log(2.0), summary="verl's sequence RS of Seq-MIS: reject a sequence whose ratio "
    "π_old/μ (the product) is outside [0.5, 2] (rollout_rs='seq_sum_k1', '0.5_2.0')",
    follows=f"{_VERL_CONFIG}.decoupled_seq_is_rs")
register_correction_preset(
    "token-veto", "reject", statistic="ratio", aggregate="seq_min", low=1e-4, high=None,
    summary="the token veto: reject a whole sequence if any token's π_old/μ is below 1e-4",
    follows="slime 624b824 examples/train_infer_mismatch_helper/mis.py (calculate_veto_mask; "
    "rs_veto_threshold 1e-4 in mis.yaml); verl 0.9.1 has no veto option")

_AREAL = ("AReaL 4aef98d areal/api/cli_args.py (the behave_imp_weight_cap = 5 of earlier "
          "versions as rejection_sampling: level token, metric ratio, upper 5)")
register_correction_preset(
    "areal-token-mask", "is", level="token", action="mask", high=5.0, low=None,
    summary="AReaL's behave_imp_weight_mode='token_mask' (cap 5): weight π_prox/μ, tokens above "
    "5 removed but kept in the denominator", follows=_AREAL)
register_correction_preset(
    "areal-token-truncate", "is", level="token", action="truncate", high=5.0, low=None,
    summary="AReaL's behave_imp_weight_mode='token_truncate' (cap 5): weight min(π_prox/μ, 5)",
    follows=_AREAL)

_TRL = "TRL 1.16 grpo_trainer.py (_generate_and_score_completions, vLLM importance sampling)"
for _mode, _level, _action in (("token-truncate", "token", "truncate"),
                               ("token-mask", "token", "mask"),
                               ("sequence-truncate", "sequence", "truncate"),
                               ("sequence-mask", "sequence", "mask")):
    register_correction_preset(
        f"vllm-is-{_mode}", "is", level=_level, action=_action, high=3.0, low=None,
        summary=f"TRL's vllm_importance_sampling_mode={_mode.replace('-', '_')!r} (C_max 3): "
        f"π_old/μ at the {'token' if _level == 'token' else 'sequence (product)'} level",
        follows=_TRL)
register_correction_preset(
    "kl-corrected", "kl", is_level="token",
    summary="β·(π_θ/π_old)·k3: the IS-corrected KL of DeepSeek-V3.2 (TRL's "
    "use_bias_correction_kl, its default)",
    follows="DeepSeek-V3.2 (arXiv 2512.02556); TRL 1.16 grpo_trainer.py _compute_loss")
register_correction_preset(
    "kl-corrected-trinity", "kl", is_level="token", is_cap=2.0, beta=0.001,
    summary="Trinity-RFT's corrected_k3: kl_coef·clamp(π_θ/π_old, 0, 2)·k3",
    follows="Trinity-RFT 0.6.0 algorithm/kl_fn/kl_fn.py (CorrectedK3Fn, kl_coef 0.001)")
