"""Shared pieces of loss math: ratios, the clipping masks, PPO's clipped surrogate, sequence
log-ratios, and the peers' names as the registry's ``follows`` cites them."""

from __future__ import annotations

import torch
from torch import Tensor

from simulator import numerics
from simulator.aggregation import sequence_mean, sequence_sum
from simulator.numerics import log_ratio as _log_ratio
from simulator.numerics import mul
from simulator.validation import require_nonnegative

TRINITY = "Trinity-RFT 0.6.0"
VERL = "verl 0.9.1"
TRL = "TRL 1.16"

# --------------------------------------------------------------------------------------------
# Small shared pieces of loss math
# --------------------------------------------------------------------------------------------


def token_ratio(logp: Tensor, logp_old: Tensor, clamp: float | None = None) -> Tensor:
    """ρ = e^δ with gradient through log π; ``clamp`` bounds δ to ±clamp first (peers' rule)."""
    delta = _log_ratio(logp, logp_old)
    if clamp is not None:
        delta = delta.clamp(-clamp, clamp)
    return numerics.exp(delta)


def no_clip(mask: Tensor) -> Tensor:
    return torch.zeros_like(mask)


def check_eps(**eps: float) -> None:
    for name, value in eps.items():
        require_nonnegative(name, value)


def one_side_mask(ratio: Tensor, adv: Tensor, eps_low: float, eps_high: float) -> Tensor:
    """(A ≥ 0 ∧ ρ ≤ 1+ε_high) ∨ (A ≤ 0 ∧ ρ ≥ 1−ε_low): where PPO-clip keeps the gradient.

    A token with A = 0 is always kept (it has no gradient to remove), as in verl's
    ``pg_clipfrac`` (−A·clip(ρ) > −A·ρ is never true at A = 0) and TRL's clip metrics."""
    return ((adv >= 0) & (ratio <= 1 + eps_high)) | ((adv <= 0) & (ratio >= 1 - eps_low))


def two_side_mask(ratio: Tensor, eps_low: float, eps_high: float) -> Tensor:
    """1−ε_low ≤ ρ ≤ 1+ε_high, whatever the sign of A."""
    return (ratio >= 1 - eps_low) & (ratio <= 1 + eps_high)


def ring_mask(ratio: Tensor, adv: Tensor, eps: tuple[float, float, float, float]) -> Tensor:
    """TwoSide band ∨ (A ≥ 0 ∧ ρ ≤ 1−ε'_low) ∨ (A ≤ 0 ∧ ρ ≥ 1+ε'_high)."""
    eps_low, eps_high, eps_low_prime, eps_high_prime = eps
    if eps_low_prime < eps_low or eps_high_prime < eps_high:
        raise ValueError(
            "ring clipping needs eps_low_prime >= eps_low and eps_high_prime >= eps_high, got "
            f"eps_low={eps_low}, eps_low_prime={eps_low_prime}, "
            f"eps_high={eps_high}, eps_high_prime={eps_high_prime}"
        )
    outer_low = (adv >= 0) & (ratio <= 1 - eps_low_prime)
    outer_high = (adv <= 0) & (ratio >= 1 + eps_high_prime)
    return two_side_mask(ratio, eps_low, eps_high) | outer_low | outer_high


def ppo_clip(ratio: Tensor, adv: Tensor, eps_low: float, eps_high: float) -> tuple[Tensor, Tensor]:
    """max(−ρ·A, −clip(ρ, 1−ε_low, 1+ε_high)·A) and where its gradient was clipped away."""
    unclipped = mul(-adv, ratio)
    clipped = mul(-adv, ratio.clamp(1 - eps_low, 1 + eps_high))
    removed = ~one_side_mask(ratio.detach(), adv, eps_low, eps_high)
    return torch.maximum(unclipped, clipped), removed


def sequence_log_ratio(logp: Tensor, logp_old: Tensor, mask: Tensor, how: str) -> Tensor:
    """Σ_t δ_t ("sum") or the mean over the row's valid tokens ("mean"): [B]."""
    delta = _log_ratio(logp, logp_old)
    return sequence_sum(delta, mask) if how == "sum" else sequence_mean(delta, mask)


