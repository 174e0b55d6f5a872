"""The ratio family: PPO-clip, GSPO, CISPO — losses whose value or weight is the ratio
ρ = π/π_old, clipped or truncated."""

from __future__ import annotations

import torch
from torch import Tensor

from simulator import numerics
from simulator.loss_registry import TokenLoss, register_loss
from simulator.losses.common import (
    TRINITY,
    TRL,
    VERL,
    check_eps,
    no_clip,
    ppo_clip,
    sequence_log_ratio,
    token_ratio,
)
from simulator.numerics import mul
from simulator.validation import (
    require_number,
    require_positive,
)


@register_loss("ppo", advantage="mean-std", follows="Schulman et al. 2017 (PPO-clip); "
               f"{TRL} loss_type grpo/bnpo per token")
def ppo(
    logp: Tensor, logp_old: Tensor, adv: Tensor, mask: Tensor, *,
    eps_low: float = 0.2, eps_high: float = 0.2, dual_clip: float | None = None,
    log_ratio_clamp: float | None = None,
) -> TokenLoss:
    """PPO-clip: ℓ = max(−ρ·A, −clip(ρ, 1−ε_low, 1+ε_high)·A) (Schulman et al. 2017).

    Dual clip (Ye et al. 2020), for A < 0 only: ℓ = min(ℓ, −c·A) with c = ``dual_clip`` > 1, so a
    negative sample's loss is capped at c·|A| when ρ > c. Its gradient is −M·ρ·A·∇log π with M
    the one-side mask (and ρ ≤ c for A < 0 under dual clip). ``log_ratio_clamp``: clamp δ to
    ±this before e^δ, as verl and Trinity-RFT do with 20 (off by default: grlab's numerical
    rule keeps the gradient exact instead; see ``simulator.numerics``).
    """
    check_eps(eps_low=eps_low, eps_high=eps_high)
    if log_ratio_clamp is not None:
        require_positive("log_ratio_clamp", log_ratio_clamp)
    ratio = token_ratio(logp, logp_old, log_ratio_clamp)
    loss, removed = ppo_clip(ratio, adv, eps_low, eps_high)
    if dual_clip is None:
        return TokenLoss(loss, removed, {})
    if require_number("dual_clip", dual_clip) <= 1:
        raise ValueError(f"dual_clip must be None or > 1, got {dual_clip}")
    cap = mul(-dual_clip, adv)
    dual = (adv < 0) & (loss > cap)
    loss = torch.where(dual, cap, loss)
    return TokenLoss(loss, removed | dual.detach(), {"dual_clipped": dual.detach()})


def _gspo_surrogate(seq_ratio: Tensor, adv: Tensor, eps_low: float, eps_high: float
                    ) -> TokenLoss:
    loss, removed = ppo_clip(seq_ratio.expand_as(adv), adv, eps_low, eps_high)
    return TokenLoss(loss, removed, {"seq_ratio": seq_ratio.detach().expand_as(adv)})


@register_loss("gspo", advantage="mean-std", agg="seq-mean-token-mean",
               follows=f"Zheng et al. 2025; {TRL} importance_sampling_level='sequence'")
def gspo(
    logp: Tensor, logp_old: Tensor, adv: Tensor, mask: Tensor, *,
    eps_low: float = 3e-4, eps_high: float = 4e-4,
) -> TokenLoss:
    """GSPO (Zheng et al. 2025): PPO-clip on the sequence ratio s_i = exp(mean_t δ_it).

    ℓ_it = max(−s_i·A_it, −clip(s_i, 1−ε_low, 1+ε_high)·A_it), the same s_i on every token of
    the row; with ``seq-mean-token-mean`` (the default) that is GSPO's per-sequence objective.
    """
    check_eps(eps_low=eps_low, eps_high=eps_high)
    seq_ratio = numerics.exp(sequence_log_ratio(logp, logp_old, mask, "mean")).unsqueeze(-1)
    return _gspo_surrogate(seq_ratio, adv, eps_low, eps_high)


@register_loss("gspo-token", advantage="mean-std", agg="seq-mean-token-mean",
               follows=f"{TRINITY} gspo_policy_loss.py; {VERL} gspo")
def gspo_token(
    logp: Tensor, logp_old: Tensor, adv: Tensor, mask: Tensor, *,
    eps_low: float = 3e-4, eps_high: float = 4e-4,
) -> TokenLoss:
    """GSPO-token: s_it = sg(s_i)·π(y_t)/sg(π(y_t)) — value s_i, gradient s_i·∇log π(y_t).

    Allows per-token advantages; with A constant along each row it equals ``gspo`` in value
    and gradient, under every aggregation.
    """
    check_eps(eps_low=eps_low, eps_high=eps_high)
    seq_ratio = numerics.exp(sequence_log_ratio(logp, logp_old, mask, "mean")).detach()
    token_ratio = mul(seq_ratio.unsqueeze(-1), torch.exp(logp - logp.detach()))
    return _gspo_surrogate(token_ratio, adv, eps_low, eps_high)


@register_loss("cispo", advantage="mean-std", follows=f"{TRINITY} cispo_policy_loss.py")
def cispo(
    logp: Tensor, logp_old: Tensor, adv: Tensor, mask: Tensor, *,
    eps_low: float = 1.0, eps_high: float = 0.28, mask_clip: bool = False,
    mask_eps_low: float = 1.0, mask_eps_high: float = 0.28,
) -> TokenLoss:
    """CISPO (MiniMax-M1, 2025): ℓ = −sg(clip(ρ, 1−ε_low, 1+ε_high))·A·log π.

    The IS weight is clipped, the token keeps its gradient (so ``clipfrac`` is 0, and
    ``is_clipfrac`` — also reported as ``pg_clipfrac``, verl's name for it — is the share of
    truncated weights). ε_low = 1 means no lower bound
    (clip(ρ, 0, 1+ε_high)), as MiniMax-M1 and Trinity-RFT use; ε_high = 0.28 as Trinity-RFT.
    ``mask_clip`` (Trinity's ``enable_mask_clip``): also drop tokens with A > 0 ∧ ρ >
    1+``mask_eps_high`` or A < 0 ∧ ρ < 1−``mask_eps_low``. TRL's ``loss_type="cispo"`` caps ρ
    at ``epsilon_high`` itself: ``eps_high = epsilon_high − 1`` here.
    """
    check_eps(eps_low=eps_low, eps_high=eps_high, mask_eps_low=mask_eps_low,
               mask_eps_high=mask_eps_high)
    ratio = token_ratio(logp, logp_old).detach()
    weight = ratio.clamp(1 - eps_low, 1 + eps_high)
    truncated = (ratio > 1 + eps_high) | (ratio < 1 - eps_low)
    loss = mul(mul(-weight, adv), logp)
    # verl's cispo reports the truncated share as pg_clipfrac; grlab's clipfrac stays "tokens
    # whose gradient was removed" (none, unless mask_clip drops some)
    extras = {"is_clipfrac": truncated, "pg_clipfrac": truncated}
    if not mask_clip:
        return TokenLoss(loss, no_clip(mask), extras)
    dropped = ((adv > 0) & (ratio > 1 + mask_eps_high)) | ((adv < 0) & (ratio < 1 - mask_eps_low))
    return TokenLoss(torch.where(dropped, logp.new_zeros(()), loss), dropped, extras)

