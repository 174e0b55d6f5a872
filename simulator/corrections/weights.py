"""IS weights over π_old/μ at token, sequence or geometric level — truncated (TIS) or masked
(MIS, IcePop's band) — and DeepSeek-V3.2's off-policy sequence mask (OPSM)."""

from __future__ import annotations

import torch
from torch import Tensor

from simulator import numerics
from simulator.aggregation import masked_mean, sequence_mean
from simulator.corrections.core import (
    CorrectionInputs,
    Stage,
    drops,
    register_correction,
    register_correction_preset,
)
from simulator.validation import (
    require_choice,
    require_nonnegative,
    require_positive,
)


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
    return Stage(weight=weight, keep=keep, drop=drops(denominator) and keep is not None,
                 metrics={"is_ratio_mean": w})


def _sequence_mean_of(values: Tensor, inputs: CorrectionInputs) -> Tensor:
    return sequence_mean(values, inputs.mask).unsqueeze(-1).expand_as(values)


@register_correction("opsm", follows="DeepSeek-V3.2 (off-policy sequence masking)")
def off_policy_sequence_mask(inputs: CorrectionInputs, *, delta: float = 1e-4,
                             ratio: str = "current", denominator: str = "keep",
                             level: str = "sequence") -> Stage:
    """OPSM: drop a sequence with A < 0 whose mean log(μ/π_anchor) over its tokens exceeds
    ``delta`` (DeepSeek-V3.2: negative samples the current policy has moved away from).

    ``level="token"`` decides token by token instead (a token with A < 0 whose own
    log(μ/π_anchor) exceeds δ: the open slime change; docs/disputes.md compares the two)."""
    if require_choice("level", level, ("sequence", "token")) == "token":
        drift, advantage = -inputs.mismatch(ratio), inputs.advantages
    else:
        drift = _sequence_mean_of(-inputs.mismatch(ratio), inputs)
        advantage = _sequence_mean_of(inputs.advantages, inputs)
    keep = ~((advantage < 0) & (drift > delta))
    return Stage(keep=keep, drop=drops(denominator),
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
