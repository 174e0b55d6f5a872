"""Rejection by a divergence statistic between π_anchor and μ (verl's rollout_rs, AReaL's
rejection sampling), the token veto, and KPop's binary-KL mask."""

from __future__ import annotations

import torch
from torch import Tensor

from simulator import kl, numerics
from simulator.aggregation import sequence_mean, sequence_sum
from simulator.corrections.core import (
    AGGREGATES,
    DIRECTIONS,
    RATIO_ANCHORS,
    STATISTICS,
    CorrectionInputs,
    Stage,
    drops,
    register_correction,
)
from simulator.validation import (
    require_choice,
    require_number,
    require_positive,
)


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
    return Stage(keep=keep, drop=drops(denominator),
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
    return Stage(keep=keep, drop=drops(denominator),
                 metrics={"kpop_binary_kl_mean": stat, "kpop_frac": (~keep).to(torch.float64)})
