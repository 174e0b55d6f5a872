"""The REINFORCE family: the paper's REC/REP/RED, OPMD, AsymRE, TOPR, SPPO — the log π
gradient with a mask, a weight or a regulariser (Yao et al. 2025: the derivation of its
Sec. 2.2, its two principles; each friend cited where it is defined)."""

from __future__ import annotations

import torch
from torch import Tensor

from simulator import numerics
from simulator.aggregation import sequence_mean, sequence_sum, spread_over_tokens
from simulator.loss_registry import TokenLoss, register_loss
from simulator.losses.common import (
    TRINITY,
    check_eps,
    no_clip,
    one_side_mask,
    ring_mask,
    sequence_log_ratio,
    token_ratio,
    two_side_mask,
)
from simulator.numerics import finite, mul
from simulator.numerics import log_ratio as _log_ratio
from simulator.validation import (
    require_choice,
    require_number,
    require_positive,
)

REC_CLIPS = ("none", "one-side", "two-side", "ring", "gspo-one-side")
REC_WEIGHTS = ("none", "is", "gspo-is", "advantage")
REC_REGULARIZERS = ("none", "k2", "forward-kl")


def _regularizer(kind: str, logp: Tensor, logp_old: Tensor) -> Tensor:
    """Per-token penalties of REC/REP as the paper's code defines them (Trinity-RFT 0.6.0,
    ``rec_policy_loss.py``; the coefficient multiplies these):

    k2:         (log π − log π_old)²  (Kimi's ½ absorbed into the coefficient, as in Trinity-RFT)
    forward-kl: −log π                (its gradient −∇log π is AsymRE's extra term; on samples
                                        from π_old it is KL(π_old‖π) up to a constant)
    """
    if kind == "k2":
        return finite(_log_ratio(logp, logp_old) ** 2)
    return -logp


# --------------------------------------------------------------------------------------------
# The losses
# --------------------------------------------------------------------------------------------


@register_loss("reinforce",
               follows=f"{TRINITY} rec (clip none, weight none); Yao et al. 2025, Sec. 2.2")
def reinforce(logp: Tensor, logp_old: Tensor, adv: Tensor, mask: Tensor) -> TokenLoss:
    """REINFORCE: ℓ = −A·log π.

    With group-mean advantages this is the paper's group-relative REINFORCE (its Sec. 2.2):
    one gradient step of the pairwise surrogate L̂ at θ = θ_t, valid for any behavior policy.
    """
    return TokenLoss(mul(-adv, logp), no_clip(mask), {})


def _rec_keep(clip: str, ratio: Tensor, seq_ratio: Tensor, adv: Tensor,
              eps: tuple[float, float, float, float]) -> Tensor:
    """REC's mask M for ``clip`` (ratio and seq_ratio detached)."""
    if clip == "none":
        return torch.ones_like(adv, dtype=torch.bool)
    if clip == "one-side":
        return one_side_mask(ratio, adv, eps[0], eps[1])
    if clip == "gspo-one-side":
        return one_side_mask(seq_ratio.expand_as(adv), adv, eps[0], eps[1])
    if clip == "two-side":
        return two_side_mask(ratio, eps[0], eps[1])
    return ring_mask(ratio, adv, eps)


@register_loss("rec", follows=f"{TRINITY} rec_policy_loss.py (RECPolicyLossFn)")
def rec(
    logp: Tensor, logp_old: Tensor, adv: Tensor, mask: Tensor, *,
    clip: str = "one-side", weight: str = "none", regularizer: str = "none",
    reg_coef: float = 0.1, eps_low: float = 0.2, eps_high: float = 0.2,
    eps_low_prime: float = 0.6, eps_high_prime: float = 2.0, temp: float = 1.0,
) -> TokenLoss:
    """REINFORCE with clipping: ℓ = −M·w·A·log π + reg_coef·R (the paper's REC; R and w
    give its REP and RED-Weight variants).

    M (``clip``, on sg(ρ)): none → 1; one-side → (A ≥ 0 ∧ ρ ≤ 1+ε_high) ∨ (A ≤ 0 ∧ ρ ≥ 1−ε_low);
    two-side → 1−ε_low ≤ ρ ≤ 1+ε_high; ring → two-side ∨ (A ≥ 0 ∧ ρ ≤ 1−ε'_low) ∨
    (A ≤ 0 ∧ ρ ≥ 1+ε'_high) with ε' = (``eps_low_prime``, ``eps_high_prime``); gspo-one-side →
    one-side on the sequence ratio s = exp(mean_t δ) (Trinity-RFT's experimental variant; use it
    with ``agg="seq-mean-token-mean"``, which Trinity-RFT forces).
    w (``weight``): none → 1 ("NoIS"); is → sg(ρ) ("IS"); gspo-is → sg(s); advantage → e^{A/T},
    T = ``temp`` (RED-Weight). R (``regularizer``): none; k2 → δ²; forward-kl → −log π
    (see ``_regularizer``: Trinity-RFT's definitions, Kimi's ½ absorbed into ``reg_coef``).
    With ``clip="one-side", weight="is"`` the gradient is exactly PPO-clip's.
    """
    require_choice("clip", clip, REC_CLIPS)
    require_choice("weight", weight, REC_WEIGHTS)
    require_choice("regularizer", regularizer, REC_REGULARIZERS)
    require_number("reg_coef", reg_coef)
    check_eps(eps_low=eps_low, eps_high=eps_high, eps_low_prime=eps_low_prime,
               eps_high_prime=eps_high_prime)
    require_positive("temp", temp)

    ratio = token_ratio(logp, logp_old).detach()
    seq_ratio = (numerics.exp(sequence_log_ratio(logp, logp_old, mask, "mean")).detach()
                 .unsqueeze(-1) if "gspo" in clip + weight else ratio)
    keep = _rec_keep(clip, ratio, seq_ratio, adv, (eps_low, eps_high, eps_low_prime,
                                                   eps_high_prime))
    weighted = -adv  # the weight w multiplies −A; w = 1 costs nothing
    if weight == "is":
        weighted = mul(weighted, ratio)
    elif weight == "gspo-is":
        weighted = mul(weighted, seq_ratio)
    elif weight == "advantage":
        weighted = mul(weighted, numerics.exp(adv / temp))
    pg = torch.where(keep, mul(weighted, logp), logp.new_zeros(()))
    if regularizer == "none":
        return TokenLoss(pg, ~keep, {})
    penalty = _regularizer(regularizer, logp, logp_old)
    return TokenLoss(finite(pg + mul(reg_coef, penalty)), ~keep,
                     {"regularizer": penalty.detach()})




@register_loss("opmd-kimi", follows="Kimi k1.5 (sequence δ); Yao et al. 2025, Sec. 4.2")
def opmd_kimi(
    logp: Tensor, logp_old: Tensor, adv: Tensor, mask: Tensor, *,
    tau: float = 1.0, level: str = "sequence",
) -> TokenLoss:
    """OPMD as Kimi k1.5 defines it: ℓ = −A·log π + (τ/2)·δ² (the square-loss
    penalty the paper discusses in its Sec. 4.2).

    The gradient of ½(r − r̄ − τδ)² is τ times this one's. ``level="sequence"`` (Kimi): δ_i =
    Σ_t δ_it, and the penalty (τ/2)·δ_i² is spread evenly over the row's valid tokens, so
    ``seq-mean-token-sum`` gives exactly Σ_i [−A_i·log π(y_i) + (τ/2)·δ_i²]/B.
    ``level="token"``: (τ/2)·δ_it² per token — the paper's released "Kimi's OPMD" config is
    ``rec(clip="none", regularizer="k2", reg_coef=c)``, which is this with τ = 2c. The two
    levels differ once a response has more than one token.
    """
    require_positive("tau", tau)
    require_choice("level", level, ("sequence", "token"))
    if level == "sequence":
        seq = sequence_log_ratio(logp, logp_old, mask, "sum")
        penalty = spread_over_tokens(mul(0.5 * tau, finite(seq**2)), mask)
    else:
        penalty = mul(0.5 * tau, finite(_log_ratio(logp, logp_old) ** 2))  # kl.k2, saturated
    return TokenLoss(finite(mul(-adv, logp) + penalty), no_clip(mask),
                     {"penalty": penalty.detach()})


@register_loss("opmd-trinity", follows=f"{TRINITY} opmd_policy_loss.py (OPMDPolicyLossFn)")
def opmd_trinity(
    logp: Tensor, logp_old: Tensor, adv: Tensor, mask: Tensor, *, tau: float = 1.0
) -> TokenLoss:
    """Trinity-RFT's ``opmd`` loss: ℓ = −A·log π/(1 + τ) (mean or τ·logavgexp baseline)."""
    require_positive("tau", tau)
    return TokenLoss(mul(-adv, logp) / (1.0 + tau), no_clip(mask), {})


@register_loss("asymre",
               follows=f"Arnal et al. 2025; {TRINITY} rec forward-kl (Meta's AsymRE config)")
def asymre(
    logp: Tensor, logp_old: Tensor, adv: Tensor, mask: Tensor, *, beta: float = 0.1
) -> TokenLoss:
    """AsymRE (Arnal et al. 2025): ℓ = −(A + β)·log π = REINFORCE − β·log π, which the
    paper reads as regularised REINFORCE.

    The baseline is shifted down by β; on groups of any size K drawn from μ, with the
    sequence log-probability (``seq-mean-token-sum``), the expected β-term is β·KL(μ‖π) up to
    the constant β·H(μ) — exactly for every K (claim 8c). Same value and gradient as the
    paper's released "Meta's AsymRE" config
    ``rec(clip="none", regularizer="forward-kl", reg_coef=β)``, and the same update as
    ``group_advantages(r, "mean", shift=β)`` + ``reinforce``.
    """
    require_number("beta", beta)
    return TokenLoss(mul(-finite(adv + beta), logp), no_clip(mask), {})


@register_loss("topr", advantage="none", follows="Le Roux et al. 2025 (trajectory taper); "
               f"{TRINITY} topr_policy_loss.py with level='token'")
def topr(
    logp: Tensor, logp_old: Tensor, adv: Tensor, mask: Tensor, *, level: str = "sequence",
    threshold: float = 0.0,
) -> TokenLoss:
    """TOPR (Le Roux et al. 2025): ℓ = −α·A·log π, α = sg(clip(π/μ, 0, 1)) if A ≤ ``threshold``
    else 1.

    ``level="sequence"`` (the paper's trajectory-level taper): π/μ = e^{Σ_t δ_t}.
    ``level="token"``: the per-token ratio (Trinity-RFT's ``topr``). The default advantage is the
    raw reward (``advantage="none"``), as in the paper and Trinity's TOPR algorithm.
    """
    require_choice("level", level, ("sequence", "token"))
    require_number("threshold", threshold)
    log_ratio = _log_ratio(logp, logp_old)
    if level == "sequence":
        log_ratio = sequence_sum(log_ratio, mask).unsqueeze(-1).expand_as(logp)
    log_ratio = log_ratio.detach()
    taper = torch.exp(log_ratio.clamp(max=0.0))  # clip(e^{δ}, 0, 1) without overflow
    alpha = torch.where(adv <= threshold, taper, torch.ones_like(taper))
    tapered = (adv <= threshold) & (log_ratio < 0)
    return TokenLoss(mul(mul(-alpha, adv), logp), no_clip(mask),
                     {"taperfrac": tapered, "avg_alpha": alpha})


@register_loss("sppo", follows="Wu et al. 2024 (SPPO); not Trinity-RFT's sppo (sppo-trinity)")
def sppo(
    logp: Tensor, logp_old: Tensor, adv: Tensor, mask: Tensor, *, eta: float = 1.0
) -> TokenLoss:
    """SPPO (Wu et al. 2024): ℓ_i = (δ_i − η·A_i)², δ_i = Σ_t δ_it, regressed per sequence.

    SPPO's target is η·(P̂ − ½); with a group baseline A_i plays that role. The per-sequence
    square is spread over the row's valid tokens (as ``opmd-kimi``); a per-token A is
    averaged over the row first. Its gradient at δ = 0 is −2η·A_i·∇log π(y_i): REINFORCE again.
    """
    require_positive("eta", eta)
    delta = sequence_log_ratio(logp, logp_old, mask, "sum")
    target = mul(eta, sequence_mean(adv, mask))
    return TokenLoss(spread_over_tokens(finite(finite(delta - target) ** 2), mask),
                     no_clip(mask), {})


@register_loss("sppo-trinity", follows=f"{TRINITY} sppo_loss_fn.py (sPPOPolicyLossFn)")
def sppo_trinity(
    logp: Tensor, logp_old: Tensor, adv: Tensor, mask: Tensor, *, eps: float = 0.3
) -> TokenLoss:
    """Trinity-RFT's ``sppo`` (sPPO, arXiv 2108.05828): ℓ = −M·A·δ, M = 1/(1+ε) ≤ sg(ρ) ≤ 1+ε.

    A different algorithm from grlab's ``sppo`` (Wu et al.'s SPPO), registered under its own
    name; its gradient is −M·A·∇log π.
    """
    require_positive("eps", eps)
    ratio = token_ratio(logp, logp_old).detach()
    keep = (ratio >= 1 / (1 + eps)) & (ratio <= 1 + eps)
    loss = torch.where(keep, mul(-adv, _log_ratio(logp, logp_old)), logp.new_zeros(()))
    return TokenLoss(loss, ~keep, {})

