"""The 2025–26 trust-region losses: soft gates (SAPO), a geometric-mean ratio (GMPO), divergence
masks (DPPO-TV/KL), a gamma-shaped sequence weight (VESPO), a second-moment mask (M2PO) and the
covariance-selected clip and penalty of the entropy-mechanism paper (Clip-Cov, KL-Cov).

Each follows the peer named in its ``follows`` (verl 0.9.1 ``verl/trainer/ppo/core_algos.py``,
TRL 1.16 ``trl/trainer/grpo_trainer.py``, Trinity-RFT 0.6.0, AReaL); where peers disagree a
keyword gives each reading, and docs/conventions.md ("2025–26 losses") says which peer does which.
Like every loss of the zoo these are pure tensor functions: no ``.item()``, no Python branch
on tensor values (the token selections of M2PO, Clip-Cov and KL-Cov are ranks computed with
tensor ops), except Clip-Cov's ``seed`` reading, which reproduces verl's random draw eagerly.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from simulator import numerics
from simulator.aggregation import masked_mean, sequence_mean, sequence_sum
from simulator.loss_registry import TokenLoss, register_loss
from simulator.losses.common import (
    TRINITY,
    TRL,
    VERL,
    check_eps,
    no_clip,
    ppo_clip,
    token_ratio,
)
from simulator.numerics import finite, mul
from simulator.numerics import log_ratio as _log_ratio
from simulator.validation import require_choice, require_number, require_positive

AREAL = "AReaL 4aef98d"

# --------------------------------------------------------------------------------------------
# SAPO
# --------------------------------------------------------------------------------------------


@register_loss("sapo", advantage="mean-std", agg="seq-mean-token-mean",
               summary="SAPO: a soft gate, ℓ = −σ(τ·(ρ − 1))·(4/τ)·A",
               follows=f"SAPO (arXiv 2511.20347); {VERL} sapo; {TRL} sapo; "
                       f"{TRINITY} sapo: form='weight'")
def sapo(
    logp: Tensor, logp_old: Tensor, adv: Tensor, mask: Tensor, *,
    tau_pos: float = 1.0, tau_neg: float = 1.05, form: str = "surrogate",
    log_ratio_clamp: float | None = None,
) -> TokenLoss:
    """SAPO (Qwen, 2025): a soft gate f(ρ) = σ(τ·(ρ − 1))·4/τ instead of a hard clip, τ =
    ``tau_pos`` where A > 0 and ``tau_neg`` where A ≤ 0.

    ``form="surrogate"`` (verl, TRL): ℓ = −f(ρ)·A, gradient −A·4σ(1 − σ)·ρ·∇log π (a weight
    that peaks at ρ = 1 and fades on both sides). ``form="weight"`` (Trinity-RFT): ℓ =
    −sg(f(ρ))·A·log π, gradient −A·f(ρ)·∇log π (f itself as the weight: 2/τ at ρ = 1, rising
    to 4/τ as ρ grows). ``log_ratio_clamp``: clamp δ first (verl clamps at 20).
    """
    require_positive("tau_pos", tau_pos)
    require_positive("tau_neg", tau_neg)
    require_choice("form", form, ("surrogate", "weight"))
    if log_ratio_clamp is not None:
        require_positive("log_ratio_clamp", log_ratio_clamp)
    ratio = token_ratio(logp, logp_old, log_ratio_clamp)
    tau = torch.where(adv > 0, adv.new_tensor(tau_pos), adv.new_tensor(tau_neg))
    gate = torch.sigmoid(mul(tau, ratio - 1.0)) * (4.0 / tau)
    surrogate = form == "surrogate"
    loss = mul(-gate, adv) if surrogate else mul(mul(-gate.detach(), adv), logp)
    return TokenLoss(loss, no_clip(mask), {"soft_gate": gate.detach()})


# --------------------------------------------------------------------------------------------
# GMPO
# --------------------------------------------------------------------------------------------


@register_loss("gmpo", advantage="mean-std", agg="seq-mean-token-mean",
               summary="GMPO: −Ā·exp(mean_t δ̃), δ clipped in log space on PPO's side",
               follows=f"GMPO (arXiv 2507.20673); {VERL} geo_mean")
def gmpo(
    logp: Tensor, logp_old: Tensor, adv: Tensor, mask: Tensor, *,
    eps_low: float = 0.2, eps_high: float = 0.2,
) -> TokenLoss:
    """GMPO: ℓ_i = −Ā_i·exp((1/L_i)·Σ_t δ̃_t), on every valid token of row i, with
    δ̃ = sgn(A)·min(sgn(A)·δ, sgn(A)·clip(δ, −ε_low, ε_high)) (PPO's one-sided clip, in log
    space) and Ā_i the mean of A over the row.

    The per-row value sits on every token, so ``seq-mean-token-mean`` (the default) is verl's
    mean over rows. Defaults ε = 0.2/0.2 as verl's config; the paper uses (e^−0.4, e^0.4):
    ``eps_low=0.4, eps_high=0.4``.
    """
    check_eps(eps_low=eps_low, eps_high=eps_high)
    delta = _log_ratio(logp, logp_old)
    sign = torch.sign(adv)
    clamped = delta.clamp(-eps_low, eps_high)
    tilde = sign * torch.minimum(sign * delta, sign * clamped)
    seq_ratio = numerics.exp(sequence_mean(tilde, mask))
    seq_adv = sequence_mean(adv.expand_as(logp), mask)
    loss = mul(-seq_adv, seq_ratio).unsqueeze(-1).expand_as(logp)
    removed = ((adv > 0) & (delta > eps_high)) | ((adv < 0) & (delta < -eps_low))
    out_of_range = (delta > eps_high) | (delta < -eps_low)
    # verl's metrics: pg_clipfrac = δ outside the range with A > 0, pg_clipfrac_lower = with A < 0
    return TokenLoss(loss, removed.detach(),
                     {"pg_clipfrac": (out_of_range & (adv > 0)).detach(),
                      "pg_clipfrac_lower": (out_of_range & (adv < 0)).detach(),
                      "seq_ratio": seq_ratio.detach().unsqueeze(-1).expand_as(logp)})


# --------------------------------------------------------------------------------------------
# DPPO
# --------------------------------------------------------------------------------------------


def _dppo(logp: Tensor, logp_old: Tensor, adv: Tensor, keep: Tensor, clip_ratio_c: float
          ) -> TokenLoss:
    ratio = token_ratio(logp, logp_old).detach()
    truncated = ratio.clamp(max=clip_ratio_c)
    loss = torch.where(keep, mul(mul(-adv, truncated), logp), logp.new_zeros(()))
    return TokenLoss(loss, ~keep, {"pg_clipfrac_lower": (ratio > clip_ratio_c) & keep})


def _check_dppo(eps_low: float, eps_high: float, clip_ratio_c: float) -> None:
    check_eps(eps_low=eps_low, eps_high=eps_high)
    require_positive("clip_ratio_c", clip_ratio_c)


@register_loss("dppo-tv", advantage="mean-std",
               summary="DPPO-TV: −M·A·sg(min(ρ, c))·log π, M a bound on π − π_old",
               follows=f"DPPO (arXiv 2602.04879); {VERL} dppo_tv")
def dppo_tv(
    logp: Tensor, logp_old: Tensor, adv: Tensor, mask: Tensor, *,
    eps_low: float = 0.2, eps_high: float = 0.2, clip_ratio_c: float = 3.0,
) -> TokenLoss:
    """DPPO-Binary-TV: ℓ = −M·A·sg(min(ρ, c))·log π, M = (π − π_old ≤ ε_high) where A > 0,
    (π − π_old ≥ −ε_low) where A ≤ 0 (a total-variation trust region on the sampled token's
    probability instead of a ratio clip).

    c = ``clip_ratio_c`` = 3.0, verl's config default (``actor.clip_ratio_c``); verl's code
    falls back to 20 when the key is absent: ``clip_ratio_c=20.0``. ε = verl's ``clip_ratio``.
    """
    _check_dppo(eps_low, eps_high, clip_ratio_c)
    change = numerics.exp(logp) - numerics.exp(logp_old)
    keep = torch.where(adv > 0, change <= eps_high, change >= -eps_low)
    return _dppo(logp, logp_old, adv, keep.detach(), clip_ratio_c)


@register_loss("dppo-kl", advantage="mean-std",
               summary="DPPO-KL: dppo-tv with M a bound on the token's binary KL",
               follows=f"DPPO (arXiv 2602.04879); {VERL} dppo_kl")
def dppo_kl(
    logp: Tensor, logp_old: Tensor, adv: Tensor, mask: Tensor, *,
    eps_low: float = 0.2, eps_high: float = 0.2, clip_ratio_c: float = 3.0,
) -> TokenLoss:
    """DPPO-Binary-KL: as ``dppo-tv`` with M from the binary KL of the sampled token,
    D = p_old·log(p_old/p) + (1 − p_old)·log((1 − p_old + 1e-8)/(1 − p + 1e-8)) (verl's 1e-8):
    M = (D ≤ ε_high ∨ p ≤ p_old) where A > 0, (D ≤ ε_low ∨ p ≥ p_old) where A ≤ 0.

    Probabilities are e^{min(log p, 0)} (a log-prob above 0 is not a probability; verl would
    take the log of a negative number there). c = 3.0 as ``dppo-tv``.
    """
    _check_dppo(eps_low, eps_high, clip_ratio_c)
    lp, lp_old = logp.detach().clamp(max=0.0), logp_old.clamp(max=0.0)
    p, p_old = torch.exp(lp), torch.exp(lp_old)
    binary_kl = finite(mul(p_old, lp_old - lp)
                       + (1 - p_old) * torch.log((1.0 - p_old + 1e-8) / (1.0 - p + 1e-8)))
    keep = torch.where(adv > 0, (binary_kl <= eps_high) | (p <= p_old),
                       (binary_kl <= eps_low) | (p >= p_old))
    return _dppo(logp, logp_old, adv, keep, clip_ratio_c)


# --------------------------------------------------------------------------------------------
# VESPO
# --------------------------------------------------------------------------------------------

_TRL_LOG_W_LOW = math.log(1e-8)


@register_loss("vespo", advantage="mean-std",
               summary="VESPO: −sg(φ(w))·A·log π, φ a gamma shape of the sequence ratio",
               follows=f"VESPO; {TRL} vespo")
def vespo(
    logp: Tensor, logp_old: Tensor, adv: Tensor, mask: Tensor, *,
    k_pos: float = 2.0, lambda_pos: float = 3.0, k_neg: float = 3.0, lambda_neg: float = 2.0,
    peer_clamp: bool = False,
) -> TokenLoss:
    """VESPO: ℓ = −sg(φ(w_i))·A·log π with w_i = exp(Σ_t δ_it) the sequence ratio and the
    gamma-shaped weight φ(w) = e^λ·w^k·e^{−λw} (φ(1) = 1), (k, λ) = (``k_pos``,
    ``lambda_pos``) where A ≥ 0, (``k_neg``, ``lambda_neg``) where A < 0 (TRL's defaults 2, 3,
    3, 2). φ is computed in log space, exactly; ``peer_clamp=True`` clamps δ to ±20 and log w
    to [log 1e-8, 20] first, as TRL does (it only matters for w < 1e-8 or w > e^20, where φ is
    below 1e-13 either way).
    """
    for name, value in (("k_pos", k_pos), ("lambda_pos", lambda_pos), ("k_neg", k_neg),
                        ("lambda_neg", lambda_neg)):
        require_positive(name, value)
    delta = _log_ratio(logp, logp_old).detach()
    if peer_clamp:
        delta = delta.clamp(-20.0, 20.0)
    log_w = sequence_sum(delta, mask).unsqueeze(-1)
    if peer_clamp:
        log_w = log_w.clamp(_TRL_LOG_W_LOW, 20.0)
    nonneg = adv >= 0
    k = torch.where(nonneg, adv.new_tensor(k_pos), adv.new_tensor(k_neg))
    lam = torch.where(nonneg, adv.new_tensor(lambda_pos), adv.new_tensor(lambda_neg))
    log_phi = finite(lam + mul(k, log_w) - mul(lam, numerics.exp(log_w)))
    phi = numerics.exp(log_phi).expand_as(logp)
    return TokenLoss(mul(mul(-phi, adv), logp), no_clip(mask), {"phi_seq": phi})


# --------------------------------------------------------------------------------------------
# M2PO
# --------------------------------------------------------------------------------------------


def _second_moment_mask(m2: Tensor, candidates: Tensor, threshold: float, keep_one: bool
                        ) -> Tensor:
    """Where to drop: the candidates of largest ``m2``, fewest first, until the mean of the
    remaining candidates is below ``threshold`` (``keep_one``: never drop the last one)."""
    flat = torch.where(candidates, m2, m2.new_full((), -1.0)).reshape(-1)
    order = torch.sort(flat, descending=True, stable=True).indices
    ranked = flat[order]
    is_candidate = ranked >= 0
    values = torch.where(is_candidate, ranked, ranked.new_zeros(()))
    count = is_candidate.to(values.dtype).sum()
    # the mean of the candidates from position j on: Σ_{i ≥ j} values_i / (count − j), the sums
    # taken on values·2^-64 (exact scaling: saturated squares cannot overflow the sum)
    scale = 2.0**-64
    suffix = torch.flip(torch.cumsum(torch.flip(values * scale, (0,)), 0), (0,))
    position = torch.arange(flat.numel(), dtype=values.dtype, device=flat.device)
    remaining = (count - position).clamp(min=1.0)
    above = is_candidate & (suffix / remaining >= threshold * scale)
    n_drop = above.to(values.dtype).sum()
    if keep_one:
        n_drop = torch.minimum(n_drop, (count - 1).clamp(min=0.0))
    drop_ranked = position < n_drop
    drop = torch.zeros_like(drop_ranked).scatter(0, order, drop_ranked)
    return drop.reshape(m2.shape) & candidates


@register_loss("m2po", advantage="mean-std", inputs=("logp_rollout",), couples_rows=True,
               summary="M2PO: −ρ·A without the tokens of largest second moment",
               follows=f"M2PO (arXiv 2510.01161); {AREAL}: variant='areal'")
def m2po(
    logp: Tensor, logp_old: Tensor, adv: Tensor, mask: Tensor, *, logp_rollout: Tensor,
    threshold: float = 0.04, variant: str = "paper",
    eps_low: float | None = None, eps_high: float | None = None,
) -> TokenLoss:
    """M2PO: drop the tokens of largest second moment until the batch's mean second moment is
    below τ_M2 = ``threshold`` (0.04, the paper's and AReaL's), then ℓ = −ρ·A on the rest
    (PPO-clip with ``eps_low``/``eps_high`` when given; None = unclipped, the paper's objective).

    ``variant="paper"``: the second moment of each token is (log π − log μ)² (μ =
    ``logp_rollout``, π the current policy, detached), over the tokens of PPO's active
    quadrants, (A > 0 ∧ π > μ) ∨ (A < 0 ∧ π < μ); the others are never dropped.
    ``variant="areal"`` (AReaL): (log μ − log π_old)² over all valid tokens, never dropping the
    last one. Ties are dropped in a fixed (stable-sort) order.
    """
    require_positive("threshold", threshold)
    require_choice("variant", variant, ("paper", "areal"))
    if eps_low is not None or eps_high is not None:
        check_eps(eps_low=0.0 if eps_low is None else eps_low,
                  eps_high=0.0 if eps_high is None else eps_high)
    if variant == "paper":
        drift = _log_ratio(logp.detach(), logp_rollout)
        candidates = mask & (((adv > 0) & (drift > 0)) | ((adv < 0) & (drift < 0)))
    else:
        drift = _log_ratio(logp_rollout, logp_old)
        candidates = mask
    drop = _second_moment_mask(finite(drift * drift), candidates, threshold,
                               keep_one=variant == "areal")
    ratio = token_ratio(logp, logp_old)
    if eps_low is None and eps_high is None:
        loss, removed = mul(-adv, ratio), torch.zeros_like(mask)
    else:
        inf = math.inf
        loss, removed = ppo_clip(ratio, adv, inf if eps_low is None else eps_low,
                                 inf if eps_high is None else eps_high)
    loss = torch.where(drop, logp.new_zeros(()), loss)
    return TokenLoss(loss, removed | drop, {"m2_dropped": drop})


# --------------------------------------------------------------------------------------------
# Clip-Cov, KL-Cov
# --------------------------------------------------------------------------------------------


def _centred_covariance(logp: Tensor, adv: Tensor, mask: Tensor) -> Tensor:
    """(A − mean A)·(log π − mean log π) per token, the means over the valid tokens (detached)."""
    a = adv.expand_as(logp)
    lp = logp.detach()
    return finite(mul(a - masked_mean(a, mask), lp - masked_mean(lp, mask)))


def _count(ratio: float, mask: Tensor) -> Tensor:
    """max(⌊ratio·N⌋, 1) with N the valid tokens, as verl."""
    return torch.floor(ratio * mask.to(torch.float64).sum()).clamp(min=1.0)


def _top_ranked(score: Tensor, eligible: Tensor, k: Tensor) -> Tensor:
    """The k eligible positions of largest score (stable order among ties)."""
    flat = torch.where(eligible, score, score.new_full((), -math.inf)).reshape(-1)
    order = torch.sort(flat, descending=True, stable=True).indices
    position = torch.arange(flat.numel(), device=flat.device, dtype=torch.float64)
    chosen = (position < k) & eligible.reshape(-1)[order]
    return torch.zeros_like(chosen).scatter(0, order, chosen).reshape(score.shape)


@register_loss("clip-cov", advantage="mean-std", couples_rows=True,
               summary="Clip-Cov: PPO-clip, a few high-covariance tokens switched off",
               follows=f"Cui et al. 2025; {VERL} clip_cov")
def clip_cov(
    logp: Tensor, logp_old: Tensor, adv: Tensor, mask: Tensor, *,
    eps_low: float = 0.2, eps_high: float = 0.2, clip_cov_ratio: float = 2e-4,
    clip_cov_lb: float = 1.0, clip_cov_ub: float = 5.0, seed: int | None = None,
) -> TokenLoss:
    """Clip-Cov: PPO-clip, and the gradient of n = max(⌊r·N⌋, 1) tokens switched off (ℓ = 0),
    chosen among the valid tokens PPO did not clip with lb < Cov < ub, Cov = (A − Ā)·(log π −
    mean log π) (means over the batch's valid tokens).

    verl draws the n tokens at random (``torch.randperm``, the global generator): ``seed=s``
    draws them from a generator seeded with s (verl's choice after ``torch.manual_seed(s)`` on
    CPU; eager only). ``seed=None`` (default, deterministic, traceable): the n of largest Cov.
    """
    check_eps(eps_low=eps_low, eps_high=eps_high)
    require_positive("clip_cov_ratio", clip_cov_ratio)
    if require_number("clip_cov_lb", clip_cov_lb) >= require_number("clip_cov_ub", clip_cov_ub):
        raise ValueError(f"clip_cov_lb must be < clip_cov_ub, got {clip_cov_lb}, {clip_cov_ub}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"seed must be None or an int, got {type(seed).__name__}")
    ratio = token_ratio(logp, logp_old)
    loss, removed = ppo_clip(ratio, adv, eps_low, eps_high)
    cov = _centred_covariance(logp, adv, mask)
    clipped_by_ppo = mul(-adv, ratio.detach().clamp(1 - eps_low, 1 + eps_high)) > mul(
        -adv, ratio.detach())
    band = mask & ~clipped_by_ppo & (cov > clip_cov_lb) & (cov < clip_cov_ub)
    n = _count(clip_cov_ratio, mask)
    if seed is None:
        chosen = _top_ranked(cov, band, n)
    else:
        chosen = torch.zeros_like(band)
        index = torch.nonzero(band)
        perm = torch.randperm(len(index), generator=torch.Generator().manual_seed(seed))
        picked = index[perm[: int(n)]]
        chosen[picked[:, 0], picked[:, 1]] = True
    loss = torch.where(chosen, logp.new_zeros(()), loss)
    return TokenLoss(loss, removed | chosen, {"pg_clipfrac": chosen, "cov_clipped": chosen})


@register_loss("kl-cov", advantage="mean-std", couples_rows=True,
               summary="KL-Cov: −ρ·A, + c·abs(δ) on the highest-covariance tokens",
               follows=f"Cui et al. 2025; {VERL} kl_cov")
def kl_cov(
    logp: Tensor, logp_old: Tensor, adv: Tensor, mask: Tensor, *,
    kl_cov_ratio: float = 2e-4, ppo_kl_coef: float = 0.1,
) -> TokenLoss:
    """KL-Cov: ℓ = −ρ·A (no clip), plus ``ppo_kl_coef``·|δ| on the n = max(⌊r·N⌋, 1) valid
    tokens of largest Cov = (A − Ā)·(log π − mean log π) (deterministic: verl's ``topk``).

    ``ppo_kl_coef`` = 0.1 as verl's config (``policy_loss.ppo_kl_coef``); verl's code falls back
    to 1.0 when the key is absent (its docstring says 1): ``ppo_kl_coef=1.0``.
    """
    require_positive("kl_cov_ratio", kl_cov_ratio)
    require_positive("ppo_kl_coef", ppo_kl_coef)
    ratio = token_ratio(logp, logp_old)
    chosen = _top_ranked(_centred_covariance(logp, adv, mask), mask, _count(kl_cov_ratio, mask))
    penalty = mul(ppo_kl_coef, _log_ratio(logp, logp_old).abs())
    loss = mul(-adv, ratio)
    loss = torch.where(chosen, finite(loss + penalty), loss)
    return TokenLoss(loss, no_clip(mask), {"kl_cov_penalised": chosen})
