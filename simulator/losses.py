"""The loss zoo: every policy loss of the GRPO family, written once.

Design decisions
----------------
* A loss is a pure per-token function ``fn(logp, logp_old, adv, mask, *, hparams) -> TokenLoss``
  on [B, T] tensors: no ``.item()``, no Python branch on tensor values, no in-place edits, so
  ``torch.func`` can trace it. ``policy_loss`` (``simulator.loss_call``, re-exported here)
  wraps it: checks, per-token loss, aggregation (``simulator.aggregation``), then metrics.
  This module is the zoo only: shared loss math, the losses, the presets.
* The registry ``LOSSES`` (``simulator.loss_registry``) maps a name to a ``LossSpec``: the
  function, bound keyword values, the advantage kind that travels with it (``grpo`` divides by
  the group std, ``rec-*`` does not), its default aggregation, and the peer or paper the name
  follows. Presets are data: a ``LossSpec`` with other bound values, never a copied body.
* Names follow their peers. Where grlab uses a name of the paper's code (Trinity-RFT
  0.6.0), verl 0.9.1 or TRL 1.16, it gives that peer's numbers, or docs/conventions.md says why
  not and which keyword restores the peer (tests/test_parity_*.py pin every convention).
* Masked positions are replaced by 0 before any math, so whatever a padded position holds
  (garbage, NaN, inf) cannot reach the loss or its gradient. ``logp_old`` and the advantages
  are constants: they are detached, whatever the caller passes.
* One numerical rule (``simulator.numerics``): the math runs in float64 for every input dtype;
  exponentials, products and sums that could overflow saturate instead; the value and metrics
  come back in float32 (float64 for float64 inputs) and the gradient in the input's dtype,
  saturated. Finite for every finite input; equal to the plain math wherever that is finite.

Symbols: π = π_θ (``logp``, with gradient), π_old = behavior/rollout policy (``logp_old``),
ρ = π/π_old per token, δ = log ρ, A = advantage (``advantages``: [B] per sequence or [B, T]),
M = clipping mask, sg = stop-gradient, ε = ``eps_low``/``eps_high``. Sequence quantities use the
valid tokens of the row only. Paper: Yao et al., "Group-Relative REINFORCE Is Secretly an
Off-Policy Algorithm" (arXiv 2509.24203), §2–§6; friends as cited per loss.
"""

from __future__ import annotations

import torch
from torch import Tensor

from simulator import numerics
from simulator.aggregation import sequence_mean, sequence_sum, spread_over_tokens
from simulator.loss_call import GroupLosses, group_losses, pairwise_surrogate, policy_loss
from simulator.loss_registry import (
    LOSSES,
    LossOutput,
    LossSetup,
    LossSpec,
    TokenLoss,
    register_loss,
    register_preset,
)
from simulator.numerics import PEER_LOG_RATIO_CLAMP, finite, mul
from simulator.numerics import log_ratio as _log_ratio
from simulator.validation import (
    require_choice,
    require_nonnegative,
    require_number,
    require_positive,
)

__all__ = [
    "LOSSES",
    "PEER_LOG_RATIO_CLAMP",
    "GroupLosses",
    "LossOutput",
    "LossSetup",
    "LossSpec",
    "TokenLoss",
    "group_losses",
    "pairwise_surrogate",
    "policy_loss",
    "register_loss",
    "register_preset",
]

TRINITY = "Trinity-RFT 0.6.0"
VERL = "verl 0.9.1"
TRL = "TRL 1.16"

# --------------------------------------------------------------------------------------------
# Small shared pieces of loss math
# --------------------------------------------------------------------------------------------


def _ratio(logp: Tensor, logp_old: Tensor, clamp: float | None = None) -> Tensor:
    """ρ = e^δ with gradient through log π; ``clamp`` bounds δ to ±clamp first (peers' rule)."""
    delta = _log_ratio(logp, logp_old)
    if clamp is not None:
        delta = delta.clamp(-clamp, clamp)
    return numerics.exp(delta)


def _no_clip(mask: Tensor) -> Tensor:
    return torch.zeros_like(mask)


def _check_eps(**eps: float) -> None:
    for name, value in eps.items():
        require_nonnegative(name, value)


def _one_side_mask(ratio: Tensor, adv: Tensor, eps_low: float, eps_high: float) -> Tensor:
    """(A ≥ 0 ∧ ρ ≤ 1+ε_high) ∨ (A ≤ 0 ∧ ρ ≥ 1−ε_low): where PPO-clip keeps the gradient.

    A token with A = 0 is always kept (it has no gradient to remove), as in verl's
    ``pg_clipfrac`` (−A·clip(ρ) > −A·ρ is never true at A = 0) and TRL's clip metrics."""
    return ((adv >= 0) & (ratio <= 1 + eps_high)) | ((adv <= 0) & (ratio >= 1 - eps_low))


def _two_side_mask(ratio: Tensor, eps_low: float, eps_high: float) -> Tensor:
    """1−ε_low ≤ ρ ≤ 1+ε_high, whatever the sign of A."""
    return (ratio >= 1 - eps_low) & (ratio <= 1 + eps_high)


def _ring_mask(ratio: Tensor, adv: Tensor, eps: tuple[float, float, float, float]) -> Tensor:
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
    return _two_side_mask(ratio, eps_low, eps_high) | outer_low | outer_high


def _ppo_clip(ratio: Tensor, adv: Tensor, eps_low: float, eps_high: float) -> tuple[Tensor, Tensor]:
    """max(−ρ·A, −clip(ρ, 1−ε_low, 1+ε_high)·A) and where its gradient was clipped away."""
    unclipped = mul(-adv, ratio)
    clipped = mul(-adv, ratio.clamp(1 - eps_low, 1 + eps_high))
    removed = ~_one_side_mask(ratio.detach(), adv, eps_low, eps_high)
    return torch.maximum(unclipped, clipped), removed


def _sequence_log_ratio(logp: Tensor, logp_old: Tensor, mask: Tensor, how: str) -> Tensor:
    """Σ_t δ_t ("sum") or the mean over the row's valid tokens ("mean"): [B]."""
    delta = _log_ratio(logp, logp_old)
    return sequence_sum(delta, mask) if how == "sum" else sequence_mean(delta, mask)


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


@register_loss("reinforce", follows=f"{TRINITY} rec (clip none, weight none); paper §2")
def reinforce(logp: Tensor, logp_old: Tensor, adv: Tensor, mask: Tensor) -> TokenLoss:
    """REINFORCE: ℓ = −A·log π.

    With group-mean advantages this is the paper's group-relative REINFORCE (§2, step 5):
    one gradient step of the pairwise surrogate L̂ at θ = θ_t, valid for any behavior policy.
    """
    return TokenLoss(mul(-adv, logp), _no_clip(mask), {})


def _rec_keep(clip: str, ratio: Tensor, seq_ratio: Tensor, adv: Tensor,
              eps: tuple[float, float, float, float]) -> Tensor:
    """REC's mask M for ``clip`` (ratio and seq_ratio detached)."""
    if clip == "none":
        return torch.ones_like(adv, dtype=torch.bool)
    if clip == "one-side":
        return _one_side_mask(ratio, adv, eps[0], eps[1])
    if clip == "gspo-one-side":
        return _one_side_mask(seq_ratio.expand_as(adv), adv, eps[0], eps[1])
    if clip == "two-side":
        return _two_side_mask(ratio, eps[0], eps[1])
    return _ring_mask(ratio, adv, eps)


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
    _check_eps(eps_low=eps_low, eps_high=eps_high, eps_low_prime=eps_low_prime,
               eps_high_prime=eps_high_prime)
    require_positive("temp", temp)

    ratio = _ratio(logp, logp_old).detach()
    seq_ratio = (numerics.exp(_sequence_log_ratio(logp, logp_old, mask, "mean")).detach()
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
    _check_eps(eps_low=eps_low, eps_high=eps_high)
    if log_ratio_clamp is not None:
        require_positive("log_ratio_clamp", log_ratio_clamp)
    ratio = _ratio(logp, logp_old, log_ratio_clamp)
    loss, removed = _ppo_clip(ratio, adv, eps_low, eps_high)
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
    loss, removed = _ppo_clip(seq_ratio.expand_as(adv), adv, eps_low, eps_high)
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
    _check_eps(eps_low=eps_low, eps_high=eps_high)
    seq_ratio = numerics.exp(_sequence_log_ratio(logp, logp_old, mask, "mean")).unsqueeze(-1)
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
    _check_eps(eps_low=eps_low, eps_high=eps_high)
    seq_ratio = numerics.exp(_sequence_log_ratio(logp, logp_old, mask, "mean")).detach()
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
    _check_eps(eps_low=eps_low, eps_high=eps_high, mask_eps_low=mask_eps_low,
               mask_eps_high=mask_eps_high)
    ratio = _ratio(logp, logp_old).detach()
    weight = ratio.clamp(1 - eps_low, 1 + eps_high)
    truncated = (ratio > 1 + eps_high) | (ratio < 1 - eps_low)
    loss = mul(mul(-weight, adv), logp)
    # verl's cispo reports the truncated share as pg_clipfrac; grlab's clipfrac stays "tokens
    # whose gradient was removed" (none, unless mask_clip drops some)
    extras = {"is_clipfrac": truncated, "pg_clipfrac": truncated}
    if not mask_clip:
        return TokenLoss(loss, _no_clip(mask), extras)
    dropped = ((adv > 0) & (ratio > 1 + mask_eps_high)) | ((adv < 0) & (ratio < 1 - mask_eps_low))
    return TokenLoss(torch.where(dropped, logp.new_zeros(()), loss), dropped, extras)


@register_loss("opmd-kimi", follows="Kimi k1.5 (sequence δ); paper §5")
def opmd_kimi(
    logp: Tensor, logp_old: Tensor, adv: Tensor, mask: Tensor, *,
    tau: float = 1.0, level: str = "sequence",
) -> TokenLoss:
    """OPMD as Kimi k1.5 defines it: ℓ = −A·log π + (τ/2)·δ² (paper §5).

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
        seq = _sequence_log_ratio(logp, logp_old, mask, "sum")
        penalty = spread_over_tokens(mul(0.5 * tau, finite(seq**2)), mask)
    else:
        penalty = mul(0.5 * tau, finite(_log_ratio(logp, logp_old) ** 2))  # kl.k2, saturated
    return TokenLoss(finite(mul(-adv, logp) + penalty), _no_clip(mask),
                     {"penalty": penalty.detach()})


@register_loss("opmd-trinity", follows=f"{TRINITY} opmd_policy_loss.py (OPMDPolicyLossFn)")
def opmd_trinity(
    logp: Tensor, logp_old: Tensor, adv: Tensor, mask: Tensor, *, tau: float = 1.0
) -> TokenLoss:
    """Trinity-RFT's ``opmd`` loss: ℓ = −A·log π/(1 + τ) (mean or τ·logavgexp baseline)."""
    require_positive("tau", tau)
    return TokenLoss(mul(-adv, logp) / (1.0 + tau), _no_clip(mask), {})


@register_loss("asymre",
               follows=f"Arnal et al. 2025; {TRINITY} rec forward-kl (Meta's AsymRE config)")
def asymre(
    logp: Tensor, logp_old: Tensor, adv: Tensor, mask: Tensor, *, beta: float = 0.1
) -> TokenLoss:
    """AsymRE (Arnal et al. 2025): ℓ = −(A + β)·log π = REINFORCE − β·log π (paper §5).

    The baseline is shifted down by β; −β·log π is β·KL(μ‖π) up to a constant on samples
    from μ. Same value and gradient as the paper's released "Meta's AsymRE" config
    ``rec(clip="none", regularizer="forward-kl", reg_coef=β)``, and the same update as
    ``group_advantages(r, "mean", shift=β)`` + ``reinforce``.
    """
    require_number("beta", beta)
    return TokenLoss(mul(-finite(adv + beta), logp), _no_clip(mask), {})


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
    return TokenLoss(mul(mul(-alpha, adv), logp), _no_clip(mask),
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
    delta = _sequence_log_ratio(logp, logp_old, mask, "sum")
    target = mul(eta, sequence_mean(adv, mask))
    return TokenLoss(spread_over_tokens(finite(finite(delta - target) ** 2), mask),
                     _no_clip(mask), {})


@register_loss("sppo-trinity", follows=f"{TRINITY} sppo_loss_fn.py (sPPOPolicyLossFn)")
def sppo_trinity(
    logp: Tensor, logp_old: Tensor, adv: Tensor, mask: Tensor, *, eps: float = 0.3
) -> TokenLoss:
    """Trinity-RFT's ``sppo`` (sPPO, arXiv 2108.05828): ℓ = −M·A·δ, M = 1/(1+ε) ≤ sg(ρ) ≤ 1+ε.

    A different algorithm from grlab's ``sppo`` (Wu et al.'s SPPO), registered under its own
    name; its gradient is −M·A·∇log π.
    """
    require_positive("eps", eps)
    ratio = _ratio(logp, logp_old).detach()
    keep = (ratio >= 1 / (1 + eps)) & (ratio <= 1 + eps)
    loss = torch.where(keep, mul(-adv, _log_ratio(logp, logp_old)), logp.new_zeros(()))
    return TokenLoss(loss, ~keep, {})


# --------------------------------------------------------------------------------------------
# Presets: names for what papers and peers call algorithms (a loss + bound keywords + advantage)
# --------------------------------------------------------------------------------------------

register_preset("grpo", "ppo", advantage="mean-std", agg="seq-mean-token-mean",
                eps_low=0.2, eps_high=0.2, dual_clip=None,
                follows=f"DeepSeekMath (Shao et al. 2024); {TRL} loss_type='grpo'",
                summary="GRPO: PPO-clip 0.2, std-normalised group advantages, mean over each "
                        "response's tokens, then over responses")
register_preset("bnpo", "ppo", advantage="mean-std", agg="token-mean",
                follows=f"{TRL} loss_type='bnpo'; the paper's GRPO config aggregates this way",
                summary="GRPO with the batch's token-mean (every valid token weighs the same)")
register_preset("ppo-dual-clip", "ppo", advantage="mean-std", dual_clip=3.0,
                follows=f"{VERL} vanilla / {TRINITY} ppo (they also clamp δ to ±20: "
                        "log_ratio_clamp=20)",
                summary="PPO-clip 0.2 with dual clip c = 3 for negative advantages")
for _clip, _tag in (("one-side", "oneside"), ("two-side", "twoside"), ("ring", "ring")):
    for _weight, _w in (("none", "nois"), ("is", "is")):
        register_preset(
            f"rec-{_tag}-{_w}", "rec", clip=_clip, weight=_weight, advantage="mean",
            follows=f"{TRINITY} examples/rec_gsm8k (REC-{_tag}-{_w.upper()})",
            summary=f"REC: clip={_clip}, weight={_weight}, mean baseline, ε = 0.2/0.2",
        )
register_preset("red-weight", "rec", clip="none", weight="advantage", temp=1.0,
                advantage="mean", follows=f"{TRINITY} examples/rec_gsm8k (RED-Weight)",
                summary="RED-Weight: ℓ = −A·e^{A/T}·log π, T = 1")
register_preset("red-drop", "rec", clip="none", weight="none", advantage="red-drop",
                follows=f"{TRINITY} examples/rec_gsm8k (RED-Drop: drop='balance')",
                summary="RED-Drop: drop surplus negatives per group, then unclipped REINFORCE")
register_preset("dapo", "ppo", advantage="mean-std", eps_low=0.2, eps_high=0.28,
                agg="token-mean", drop_uniform_groups=True,
                follows=f"Yu et al. 2025 (DAPO); {TRL} loss_type='dapo'",
                summary="DAPO: clip-higher ε_high = 0.28, token-mean, uniform groups dropped")
register_preset("dr-grpo", "ppo", advantage="mean", agg="seq-mean-token-sum-norm",
                follows=f"Liu et al. 2025 (Dr.GRPO); {TRL} loss_type='dr_grpo'",
                summary="Dr.GRPO: PPO-clip, no std division, constant length normaliser "
                        "(norm_len = the maximum completion length)")
register_preset("luspo", "gspo", agg="seq-mean-token-sum",
                follows=f"{TRL} loss_type='luspo' (importance_sampling_level='sequence')",
                summary="LUSPO: GSPO's sequence ratio, each response's loss scaled by its length")
register_preset("rloo", "reinforce", advantage="loo",
                follows="Ahmadian et al. 2024 (RLOO)",
                summary="RLOO: REINFORCE with the leave-one-out mean baseline")
