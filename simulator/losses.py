"""The loss zoo: every policy loss of the GRPO family, written once.

Design decisions
----------------
* A loss is a pure per-token function ``fn(logp, logp_old, adv, mask, *, hparams) -> TokenLoss``
  on [B, T] tensors: no ``.item()``, no Python branch on tensor values, no in-place edits, so
  ``torch.func`` can trace it. ``policy_loss`` wraps it: checks, per-token loss, aggregation
  (``simulator.aggregation``), then metrics.
* The registry ``LOSSES`` maps a name to a ``LossSpec``: the function, bound keyword values, the
  advantage kind that travels with it (``grpo`` divides by the group std, ``rec-*`` does not),
  and its default aggregation. Presets are data: a ``LossSpec`` with other bound values, never
  a copied body.
* Masked positions are replaced by 0 before any math, so whatever a padded position holds
  (garbage, NaN, inf) cannot reach the loss or its gradient.
* bf16/fp16 inputs are upcast to float32 for the math (ratios e^{Δ} lose all precision in bf16);
  the gradient still flows back to the low-precision ``logp``.

Symbols: π = π_θ (``logp``, with gradient), π_old = behaviour/rollout policy (``logp_old``),
ρ = π/π_old per token, δ = log ρ, A = advantage (``advantages``: [B] per sequence or [B, T]),
M = clipping mask, sg = stop-gradient, ε = ``eps_low``/``eps_high``. Sequence quantities use the
valid tokens of the row only. Paper: Yao et al., "Group-Relative REINFORCE Is Secretly an
Off-Policy Algorithm" (arXiv 2509.24203), §2–§6; friends as cited per loss.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor

from simulator import kl
from simulator.advantages import ADVANTAGE_KINDS, shaped_advantages
from simulator.aggregation import (
    AGGREGATIONS,
    aggregate,
    masked_mean,
    sequence_mean,
    sequence_sum,
    spread_over_tokens,
)
from simulator.validation import (
    as_bool_mask,
    require_choice,
    require_finite,
    require_float_tensor,
    require_ndim,
    require_nonnegative,
    require_number,
    require_positive,
    require_same_device,
    require_same_dtype,
    require_tensor,
    unknown_name_message,
)

__all__ = [
    "LOSSES",
    "LossOutput",
    "LossSpec",
    "TokenLoss",
    "pairwise_surrogate",
    "policy_loss",
    "register_loss",
    "register_preset",
]


class TokenLoss(NamedTuple):
    """What a per-token loss function returns.

    loss:    [B, T] per-token loss (the value at masked positions is ignored).
    clipped: [B, T] bool, True where a clipping mask removed the token's policy-gradient term.
    extras:  loss-specific per-token quantities [B, T]; reported as masked means.
    """

    loss: Tensor
    clipped: Tensor
    extras: dict[str, Tensor]


class LossOutput(NamedTuple):
    """``policy_loss``'s result: a scalar loss and a dict of detached scalar metrics."""

    loss: Tensor
    metrics: dict[str, Tensor]


LossFn = Callable[..., TokenLoss]


@dataclasses.dataclass(frozen=True)
class LossSpec:
    """A registered loss: a per-token function plus the data that make it a named algorithm."""

    name: str
    fn: LossFn
    hparams: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    advantage: str = "mean"
    advantage_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    agg: str = "token-mean"
    drop_uniform_groups: bool = False
    base: str = ""
    summary: str = ""

    def defaults(self) -> dict[str, Any]:
        """Every keyword this loss takes, with the value it gets when the caller says nothing."""
        params = inspect.signature(self.fn).parameters.values()
        found = {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}
        return {**found, **self.hparams}

    def resolve(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """Bound values overridden by the caller's; an unknown keyword is a ``TypeError``."""
        defaults = self.defaults()
        unknown = sorted(set(overrides) - set(defaults))
        if unknown:
            message = unknown_name_message(f"keyword for loss {self.name!r}:", unknown[0], defaults)
            raise TypeError(message)
        return {**defaults, **overrides}

    def __call__(self, logp: Tensor, logp_old: Tensor, adv: Tensor, mask: Tensor,
                 **hparams: Any) -> TokenLoss:
        return self.fn(logp, logp_old, adv, mask, **self.resolve(hparams))

    def advantages(self, rewards: Tensor, generator: torch.Generator | None = None
                   ) -> tuple[Tensor, Tensor]:
        """(advantages [G, K], keep [G, K]) from rewards [G, K], as this loss's preset says."""
        return shaped_advantages(
            rewards, self.advantage, generator=generator,
            drop_uniform_groups=self.drop_uniform_groups, **self.advantage_kwargs,
        )


class LossRegistry(dict):
    """name -> LossSpec. Rejects duplicate names; an unknown name lists the valid ones."""

    def __missing__(self, key: str) -> LossSpec:
        raise KeyError(unknown_name_message("loss", key, self))

    def __setitem__(self, key: str, value: LossSpec) -> None:
        if key in self:
            raise ValueError(f"a loss named {key!r} is already registered")
        super().__setitem__(key, value)


LOSSES: LossRegistry = LossRegistry()


def register_loss(name: str, *, advantage: str = "mean", agg: str = "token-mean",
                  summary: str = "") -> Callable[[LossFn], LossFn]:
    """Decorator: register a per-token loss function under ``name``."""
    require_choice("advantage", advantage, (*ADVANTAGE_KINDS, "red-drop"))
    require_choice("agg", agg, AGGREGATIONS)

    def decorate(fn: LossFn) -> LossFn:
        first_line = next(iter((fn.__doc__ or "").strip().splitlines()), "")
        LOSSES[name] = LossSpec(name=name, fn=fn, advantage=advantage, agg=agg, base=name,
                                summary=summary or first_line)
        return fn

    return decorate


def register_preset(name: str, base: str, *, summary: str, advantage: str | None = None,
                    agg: str | None = None, drop_uniform_groups: bool = False,
                    advantage_kwargs: Mapping[str, Any] | None = None,
                    **hparams: Any) -> LossSpec:
    """Bind a registered loss to keyword values (and an advantage kind) under a new name."""
    parent = LOSSES[base]
    parent.resolve(hparams)  # unknown keywords fail here, at import, not at first use
    spec = dataclasses.replace(
        parent, name=name, hparams={**parent.hparams, **hparams}, summary=summary,
        advantage=advantage or parent.advantage, agg=agg or parent.agg,
        drop_uniform_groups=drop_uniform_groups,
        advantage_kwargs=dict(advantage_kwargs or parent.advantage_kwargs),
    )
    LOSSES[name] = spec
    return spec


# --------------------------------------------------------------------------------------------
# Small shared pieces of loss math
# --------------------------------------------------------------------------------------------


def _ratio(logp: Tensor, logp_old: Tensor) -> Tensor:
    """ρ = π/π_old = e^{log π − log π_old}, with gradient through log π."""
    return torch.exp(logp - logp_old)


def _no_clip(mask: Tensor) -> Tensor:
    return torch.zeros_like(mask)


def _check_eps(**eps: float) -> None:
    for name, value in eps.items():
        require_nonnegative(name, value)


def _one_side_mask(ratio: Tensor, adv: Tensor, eps_low: float, eps_high: float) -> Tensor:
    """(A ≥ 0 ∧ ρ ≤ 1+ε_high) ∨ (A ≤ 0 ∧ ρ ≥ 1−ε_low): where PPO-clip keeps the gradient."""
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
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1 - eps_low, 1 + eps_high)
    removed = ~_one_side_mask(ratio.detach(), adv, eps_low, eps_high)
    return torch.maximum(unclipped, clipped), removed


REC_CLIPS = ("none", "one-side", "two-side", "ring")
REC_WEIGHTS = ("none", "is", "advantage")
REC_REGULARIZERS = ("none", "k2", "forward-kl")


def _regularizer(kind: str, logp: Tensor, logp_old: Tensor) -> Tensor:
    """Per-token penalties of REC/REP on behaviour samples.

    k2:         ½·(log π − log π_old)²  (Trinity's token-level OPMD term)
    forward-kl: log π_old − log π       (k1 estimate of KL(π_old‖π) on samples from π_old;
                                          its gradient −∇log π is AsymRE's extra term)
    """
    if kind == "k2":
        return kl.k2(logp, logp_old)
    if kind == "forward-kl":
        return kl.k1(logp_old, logp)
    return torch.zeros_like(logp)


# --------------------------------------------------------------------------------------------
# The losses
# --------------------------------------------------------------------------------------------


@register_loss("reinforce")
def reinforce(logp: Tensor, logp_old: Tensor, adv: Tensor, mask: Tensor) -> TokenLoss:
    """REINFORCE: ℓ = −A·log π.

    With group-mean advantages this is the paper's group-relative REINFORCE (§2, step 5):
    one gradient step of the pairwise surrogate L̂ at θ = θ_t, valid for any behaviour policy.
    """
    return TokenLoss(-adv * logp, _no_clip(mask), {})


@register_loss("rec")
def rec(
    logp: Tensor, logp_old: Tensor, adv: Tensor, mask: Tensor, *,
    clip: str = "one-side", weight: str = "none", regularizer: str = "none",
    reg_coef: float = 0.1, eps_low: float = 0.2, eps_high: float = 0.2,
    eps_low_prime: float = 0.6, eps_high_prime: float = 2.0, temp: float = 1.0,
) -> TokenLoss:
    """REINFORCE with clipping: ℓ = −M·w·A·log π + reg_coef·R (paper §4–§6).

    M (``clip``, on sg(ρ)): none → 1; one-side → (A ≥ 0 ∧ ρ ≤ 1+ε_high) ∨ (A ≤ 0 ∧ ρ ≥ 1−ε_low);
    two-side → 1−ε_low ≤ ρ ≤ 1+ε_high; ring → two-side ∨ (A ≥ 0 ∧ ρ ≤ 1−ε'_low) ∨
    (A ≤ 0 ∧ ρ ≥ 1+ε'_high) with ε' = (``eps_low_prime``, ``eps_high_prime``).
    w (``weight``): none → 1 ("NoIS"); is → sg(ρ) ("IS"); advantage → e^{A/T}, T = ``temp``
    (RED-Weight). R (``regularizer``): none; k2 → ½δ²; forward-kl → −δ (see ``_regularizer``).
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
    if clip == "none":
        keep = torch.ones_like(mask)
    elif clip == "one-side":
        keep = _one_side_mask(ratio, adv, eps_low, eps_high)
    elif clip == "two-side":
        keep = _two_side_mask(ratio, eps_low, eps_high)
    else:
        keep = _ring_mask(ratio, adv, (eps_low, eps_high, eps_low_prime, eps_high_prime))

    weighted = -adv  # the weight w multiplies −A; w = 1 costs nothing
    if weight == "is":
        weighted = weighted * ratio
    elif weight == "advantage":
        weighted = weighted * torch.exp(adv.detach() / temp)
    pg = torch.where(keep, weighted * logp, logp.new_zeros(()))
    if regularizer == "none":
        return TokenLoss(pg, ~keep, {})
    penalty = _regularizer(regularizer, logp, logp_old)
    return TokenLoss(pg + reg_coef * penalty, ~keep, {"regularizer": penalty.detach()})


@register_loss("ppo", advantage="mean-std")
def ppo(
    logp: Tensor, logp_old: Tensor, adv: Tensor, mask: Tensor, *,
    eps_low: float = 0.2, eps_high: float = 0.2, dual_clip: float | None = None,
) -> TokenLoss:
    """PPO-clip: ℓ = max(−ρ·A, −clip(ρ, 1−ε_low, 1+ε_high)·A) (Schulman et al. 2017).

    Dual clip (Ye et al. 2020), for A < 0 only: ℓ = min(ℓ, −c·A) with c = ``dual_clip`` > 1, so a
    negative sample's loss is capped at c·|A| when ρ > c. Its gradient is −M·ρ·A·∇log π with M
    the one-side mask (and ρ ≤ c for A < 0 under dual clip).
    """
    _check_eps(eps_low=eps_low, eps_high=eps_high)
    ratio = _ratio(logp, logp_old)
    loss, removed = _ppo_clip(ratio, adv, eps_low, eps_high)
    if dual_clip is not None:
        if require_number("dual_clip", dual_clip) <= 1:
            raise ValueError(f"dual_clip must be None or > 1, got {dual_clip}")
        cap = -dual_clip * adv
        dual = (adv < 0) & (loss > cap)
        loss = torch.where(dual, cap, loss)
        removed = removed | dual.detach()
    return TokenLoss(loss, removed, {})


def _gspo_surrogate(seq_ratio: Tensor, adv: Tensor, eps_low: float, eps_high: float
                    ) -> TokenLoss:
    loss, removed = _ppo_clip(seq_ratio.expand_as(adv), adv, eps_low, eps_high)
    return TokenLoss(loss, removed, {"seq_ratio": seq_ratio.detach().expand_as(adv)})


@register_loss("gspo", advantage="mean-std", agg="seq-mean-token-mean")
def gspo(
    logp: Tensor, logp_old: Tensor, adv: Tensor, mask: Tensor, *,
    eps_low: float = 3e-4, eps_high: float = 4e-4,
) -> TokenLoss:
    """GSPO (Zheng et al. 2025): PPO-clip on the sequence ratio s_i = exp(mean_t δ_it).

    ℓ_it = max(−s_i·A_it, −clip(s_i, 1−ε_low, 1+ε_high)·A_it), the same s_i on every token of
    the row; with ``seq-mean-token-mean`` (the default) that is GSPO's per-sequence objective.
    """
    _check_eps(eps_low=eps_low, eps_high=eps_high)
    seq_ratio = torch.exp(sequence_mean(logp - logp_old, mask)).unsqueeze(-1)
    return _gspo_surrogate(seq_ratio, adv, eps_low, eps_high)


@register_loss("gspo-token", advantage="mean-std", agg="seq-mean-token-mean")
def gspo_token(
    logp: Tensor, logp_old: Tensor, adv: Tensor, mask: Tensor, *,
    eps_low: float = 3e-4, eps_high: float = 4e-4,
) -> TokenLoss:
    """GSPO-token: s_it = sg(s_i)·π(y_t)/sg(π(y_t)) — value s_i, gradient s_i·∇log π(y_t).

    Allows per-token advantages; with A constant along each row it equals ``gspo`` in value
    and gradient, under every aggregation.
    """
    _check_eps(eps_low=eps_low, eps_high=eps_high)
    seq_ratio = torch.exp(sequence_mean(logp - logp_old, mask)).detach().unsqueeze(-1)
    token_ratio = seq_ratio * torch.exp(logp - logp.detach())
    return _gspo_surrogate(token_ratio, adv, eps_low, eps_high)


@register_loss("cispo", advantage="mean-std")
def cispo(
    logp: Tensor, logp_old: Tensor, adv: Tensor, mask: Tensor, *,
    eps_low: float = 1.0, eps_high: float = 0.28,
) -> TokenLoss:
    """CISPO (MiniMax-M1, 2025): ℓ = −sg(clip(ρ, 1−ε_low, 1+ε_high))·A·log π.

    The IS weight is clipped, the token never loses its gradient (so ``clipfrac`` is 0 and
    ``is_clipfrac`` reports the share of truncated weights). ε_low = 1 means no lower bound
    (clip(ρ, 0, 1+ε_high)), as MiniMax-M1 and Trinity-RFT use; ε_high = 0.28 as Trinity-RFT.
    """
    _check_eps(eps_low=eps_low, eps_high=eps_high)
    ratio = _ratio(logp, logp_old).detach()
    weight = ratio.clamp(1 - eps_low, 1 + eps_high)
    truncated = (ratio > 1 + eps_high) | (ratio < 1 - eps_low)
    return TokenLoss(-weight * adv * logp, _no_clip(mask), {"is_clipfrac": truncated})


@register_loss("opmd-kimi")
def opmd_kimi(
    logp: Tensor, logp_old: Tensor, adv: Tensor, mask: Tensor, *,
    tau: float = 1.0, level: str = "sequence",
) -> TokenLoss:
    """OPMD as Kimi k1.5 defines it: ℓ = −A·log π + (τ/2)·δ² (paper §5).

    The gradient of ½(r − r̄ − τδ)² is τ times this one's. ``level="sequence"`` (Kimi): δ_i =
    Σ_t δ_it, and the penalty (τ/2)·δ_i² is spread evenly over the row's valid tokens, so
    ``seq-mean-token-sum`` gives exactly Σ_i [−A_i·log π(y_i) + (τ/2)·δ_i²]/B.
    ``level="token"`` (Trinity's k2): (τ/2)·δ_it² per token. The two differ once a response
    has more than one token.
    """
    require_positive("tau", tau)
    require_choice("level", level, ("sequence", "token"))
    log_ratio = logp - logp_old
    if level == "sequence":
        penalty = spread_over_tokens(0.5 * tau * sequence_sum(log_ratio, mask) ** 2, mask)
    else:
        penalty = tau * kl.k2(logp, logp_old)
    return TokenLoss(-adv * logp + penalty, _no_clip(mask), {"penalty": penalty.detach()})


@register_loss("opmd-trinity")
def opmd_trinity(
    logp: Tensor, logp_old: Tensor, adv: Tensor, mask: Tensor, *, tau: float = 1.0
) -> TokenLoss:
    """Trinity-RFT's ``opmd`` loss: ℓ = −A·log π/(1 + τ) (mean or τ·logavgexp baseline)."""
    require_positive("tau", tau)
    return TokenLoss(-adv * logp / (1.0 + tau), _no_clip(mask), {})


@register_loss("asymre")
def asymre(
    logp: Tensor, logp_old: Tensor, adv: Tensor, mask: Tensor, *, beta: float = 0.1
) -> TokenLoss:
    """AsymRE (Arnal et al. 2025): ℓ = −(A + β)·log π = REINFORCE − β·log π (paper §5).

    The baseline is shifted down by β; −β·log π is β·KL(μ‖π) up to a constant on samples
    from μ. Same update as ``group_advantages(r, "mean", shift=β)`` + ``reinforce``.
    """
    require_number("beta", beta)
    return TokenLoss(-(adv + beta) * logp, _no_clip(mask), {})


@register_loss("topr")
def topr(
    logp: Tensor, logp_old: Tensor, adv: Tensor, mask: Tensor, *, level: str = "sequence"
) -> TokenLoss:
    """TOPR (Le Roux et al. 2025): ℓ = −α·A·log π, α = 1 if A ≥ 0 else sg(clip(π/μ, 0, 1)).

    ``level="sequence"`` (the paper's trajectory-level taper): π/μ = e^{Σ_t δ_t}.
    ``level="token"``: the per-token ratio. The sign test uses the advantage the caller passes
    (raw rewards with ``advantage="none"``, as in the paper, or centred ones).
    """
    require_choice("level", level, ("sequence", "token"))
    log_ratio = logp - logp_old
    if level == "sequence":
        log_ratio = sequence_sum(log_ratio, mask).unsqueeze(-1).expand_as(logp)
    log_ratio = log_ratio.detach()
    taper = torch.exp(log_ratio.clamp(max=0.0))  # clip(e^{δ}, 0, 1) without overflow
    alpha = torch.where(adv >= 0, torch.ones_like(taper), taper)
    tapered = (adv < 0) & (log_ratio < 0)
    return TokenLoss(-alpha * adv * logp, _no_clip(mask), {"taperfrac": tapered})


@register_loss("sppo")
def sppo(
    logp: Tensor, logp_old: Tensor, adv: Tensor, mask: Tensor, *, eta: float = 1.0
) -> TokenLoss:
    """SPPO (Wu et al. 2024): ℓ_i = (δ_i − η·A_i)², δ_i = Σ_t δ_it, regressed per sequence.

    SPPO's target is η·(P̂ − ½); with a group baseline A_i plays that role. The per-sequence
    square is spread over the row's valid tokens (as ``opmd-kimi``); a per-token A is
    averaged over the row first. Its gradient at δ = 0 is −2η·A_i·∇log π(y_i): REINFORCE again.
    """
    require_positive("eta", eta)
    delta = sequence_sum(logp - logp_old, mask)
    target = eta * sequence_mean(adv, mask)
    return TokenLoss(spread_over_tokens((delta - target) ** 2, mask), _no_clip(mask), {})


# --------------------------------------------------------------------------------------------
# Presets: names for what papers call algorithms (a loss + bound keywords + advantage kind)
# --------------------------------------------------------------------------------------------

register_preset("grpo", "ppo", advantage="mean-std", eps_low=0.2, eps_high=0.2, dual_clip=None,
                summary="GRPO: PPO-clip 0.2 with std-normalised group advantages (token-mean)")
register_preset("ppo-dual-clip", "ppo", advantage="mean-std", dual_clip=3.0,
                summary="PPO-clip 0.2 with dual clip c = 3 for negative advantages")
for _clip, _tag in (("one-side", "oneside"), ("two-side", "twoside"), ("ring", "ring")):
    for _weight, _w in (("none", "nois"), ("is", "is")):
        register_preset(
            f"rec-{_tag}-{_w}", "rec", clip=_clip, weight=_weight, advantage="mean",
            summary=f"REC: clip={_clip}, weight={_weight}, mean baseline, ε = 0.2/0.2",
        )
register_preset("red-weight", "rec", clip="none", weight="advantage", temp=1.0,
                advantage="mean", summary="RED-Weight: ℓ = −A·e^{A/T}·log π, T = 1")
register_preset("red-drop", "rec", clip="one-side", weight="none", advantage="red-drop",
                summary="RED-Drop: drop surplus negatives per group, then REC-OneSide-NoIS")
register_preset("dapo", "ppo", advantage="mean-std", eps_low=0.2, eps_high=0.28,
                agg="token-mean", drop_uniform_groups=True,
                summary="DAPO: clip-higher ε_high = 0.28, token-mean, uniform groups dropped")
register_preset("dr-grpo", "ppo", advantage="mean", agg="seq-mean-token-sum-norm",
                summary="Dr.GRPO: PPO-clip, no std division, constant length normaliser")
register_preset("rloo", "reinforce", advantage="loo",
                summary="RLOO: REINFORCE with the leave-one-out mean baseline")


# --------------------------------------------------------------------------------------------
# The public entry point
# --------------------------------------------------------------------------------------------


def _prepare_inputs(logp: Tensor, logp_old: Tensor, advantages: Tensor, mask: Tensor,
                    validate: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Check shapes, dtypes and devices; broadcast A to [B, T]; zero the masked positions."""
    logp = require_float_tensor("logp", logp)
    logp_old = require_float_tensor("logp_old", logp_old)
    advantages = require_float_tensor("advantages", advantages)
    require_ndim("logp", logp, (2,), "a [B, T] tensor of per-token log-probs")
    if logp_old.shape != logp.shape:
        raise ValueError(f"logp_old must have the shape of logp {tuple(logp.shape)}, "
                         f"got {tuple(logp_old.shape)}")
    if advantages.shape not in (logp.shape[:1], logp.shape):
        raise ValueError(f"advantages must have shape [B] = {tuple(logp.shape[:1])} or "
                         f"[B, T] = {tuple(logp.shape)}, got {tuple(advantages.shape)}")
    require_same_device(logp=logp, logp_old=logp_old, advantages=advantages,
                        mask=require_tensor("mask", mask))
    require_same_dtype(logp=logp, logp_old=logp_old, advantages=advantages)
    mask = as_bool_mask("mask", mask, tuple(logp.shape))
    if advantages.ndim == 1:
        advantages = advantages.unsqueeze(-1).expand_as(logp)
    if validate:
        if not bool(mask.any()):
            raise ValueError("mask has no valid token: there is nothing to compute a loss on")
        require_finite("logp", logp, mask)
        require_finite("logp_old", logp_old, mask)
        require_finite("advantages", advantages, mask)
    if logp.dtype in (torch.bfloat16, torch.float16):
        logp, logp_old, advantages = (t.float() for t in (logp, logp_old, advantages))
    zero = logp.new_zeros(())
    return (torch.where(mask, logp, zero), torch.where(mask, logp_old, zero),
            torch.where(mask, advantages, zero), mask)


def _metrics(out: TokenLoss, logp: Tensor, logp_old: Tensor, mask: Tensor) -> dict[str, Tensor]:
    with torch.no_grad():
        log_ratio = logp.detach() - logp_old
        metrics = {
            "clipfrac": masked_mean(out.clipped.to(logp.dtype), mask),
            "approx_kl": masked_mean(-log_ratio, mask),
            "ratio_mean": masked_mean(torch.exp(log_ratio), mask),
        }
        for key, value in out.extras.items():
            metrics[key] = masked_mean(value.detach().to(logp.dtype), mask)
    return metrics


def policy_loss(
    name: str,
    logp: Tensor,
    logp_old: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    agg: str | None = None,
    norm_len: float | None = None,
    validate: bool = True,
    **hparams: Any,
) -> LossOutput:
    """The loss ``name`` on a batch of sequences, aggregated to a scalar, with metrics.

    Args:
        name: a key of ``LOSSES`` (a base loss or a preset); unknown names raise ``KeyError``.
        logp: [B, T] log π_θ of the sampled tokens, with gradient.
        logp_old: [B, T] log-probs under the behaviour (rollout) policy; treated as constants.
        advantages: [B] (one per sequence) or [B, T]; already computed (see
            ``LOSSES[name].advantages(rewards)`` for the kind this loss expects).
        mask: [B, T] bool or 0/1; False marks padding. Masked values never matter.
        agg: an aggregation mode of ``simulator.aggregation``; ``None`` means the loss's own
            default (``token-mean`` except ``gspo*``, ``dr-grpo``); an explicit value wins.
        norm_len: the constant length of ``seq-mean-token-sum-norm`` (default T).
        validate: check values (NaN/inf, empty mask). Set False inside ``torch.func`` transforms;
            shapes, dtypes and devices are always checked.
        **hparams: the loss's keywords (see ``LOSSES[name].defaults()``); a typo is a TypeError.

    Returns:
        ``LossOutput(loss, metrics)``: metrics ``clipfrac``, ``approx_kl`` (mean of
        log π_old − log π), ``ratio_mean``, plus loss-specific ones, all detached scalars.
    """
    spec = LOSSES[name]
    logp, logp_old, advantages, mask = _prepare_inputs(logp, logp_old, advantages, mask, validate)
    out = spec(logp, logp_old, advantages, mask, **hparams)
    loss = aggregate(out.loss, mask, spec.agg if agg is None else agg, norm_len=norm_len)
    return LossOutput(loss, _metrics(out, logp, logp_old, mask))


class GroupLosses(NamedTuple):
    """Per-group values: ``loss`` [G] (with gradient) and ``clipfrac`` [G] (detached: the
    share of the group's valid tokens whose gradient the loss's clipping switched off)."""

    loss: Tensor
    clipfrac: Tensor


def group_losses(name: str, logp: Tensor, logp_old: Tensor, advantages: Tensor, mask: Tensor,
                 *, agg: str | None = None, norm_len: float | None = None, **hparams: Any
                 ) -> GroupLosses:
    """``policy_loss(name, ...)`` of every group at once: [G, K, T] inputs give [G] values.

    Group g's loss is exactly what ``policy_loss`` returns on the [K, T] batch of group g
    (every loss is computed row by row, and ``aggregate`` reduces each group on its own), and
    its clip fraction is that call's ``clipfrac`` metric; the other metrics and the value
    checks are skipped, which is what makes the exact simulator's enumeration of thousands of
    groups per step cheap. ``advantages`` is [G, K] or [G, K, T].
    """
    spec = LOSSES[name]
    require_ndim("logp", require_float_tensor("logp", logp), (3,), "a [G, K, T] tensor")
    shape = logp.shape
    flat = [t.reshape(-1, *t.shape[2:]) for t in (logp, logp_old, advantages, mask)]
    logp, logp_old, advantages, mask = _prepare_inputs(*flat, validate=False)
    out = spec(logp, logp_old, advantages, mask, **hparams)
    mask = mask.reshape(shape)
    loss = aggregate(out.loss.reshape(shape), mask, spec.agg if agg is None else agg,
                     norm_len=norm_len)
    clipped = out.clipped.detach().reshape(shape).to(logp.dtype)
    return GroupLosses(loss, aggregate(clipped, mask, "token-mean"))


def pairwise_surrogate(rewards: Tensor, seq_logp: Tensor, seq_logp_anchor: Tensor, tau: float,
                       weights: Tensor | None = None) -> Tensor:
    """The paper's pairwise surrogate L̂ (§2 step 4; §3 weighted form), averaged over groups.

    a_i = r_i − τ·(log π_θ(y_i) − log π_t(y_i)),
    L̂ = (1/K²)·Σ_{i<j} w_i·w_j·(a_i − a_j)²  (w ≡ 1 when ``weights`` is None),
    computed in O(K) as (1/K²)·W·Σ_i w_i·(a_i − ā_w)², W = Σ_i w_i, ā_w the w-weighted mean.
    At θ = θ_t its gradient is −(2τ/K²)·W·Σ_i w_i·(r_i − r̄_w)·∇log π(y_i), which for w ≡ 1 is
    −(2τ/K)·Σ_i (r_i − r̄)·∇log π(y_i): group-relative REINFORCE.

    Args: rewards, seq_logp (with gradient), seq_logp_anchor, weights: [G, K]; tau > 0.
    Returns: a scalar, the mean of L̂ over the G groups.
    """
    rewards = require_float_tensor("rewards", rewards)
    require_ndim("rewards", rewards, (2,), "a [G, K] tensor")
    for arg, value in (("seq_logp", seq_logp), ("seq_logp_anchor", seq_logp_anchor)):
        if require_float_tensor(arg, value).shape != rewards.shape:
            raise ValueError(f"{arg} must have the shape of rewards {tuple(rewards.shape)}, "
                             f"got {tuple(value.shape)}")
    tau = require_positive("tau", tau)
    if weights is None:
        weights = torch.ones_like(rewards)
    elif require_float_tensor("weights", weights).shape != rewards.shape:
        raise ValueError(f"weights must have the shape of rewards {tuple(rewards.shape)}, "
                         f"got {tuple(weights.shape)}")
    elif bool((weights < 0).any()):
        raise ValueError("weights must be >= 0")
    a = rewards - tau * (seq_logp - seq_logp_anchor)
    total = weights.sum(dim=1, keepdim=True)
    a_bar = (weights * a).sum(dim=1, keepdim=True) / total.clamp(min=torch.finfo(a.dtype).tiny)
    per_group = total.squeeze(1) * (weights * (a - a_bar) ** 2).sum(dim=1) / rewards.shape[1] ** 2
    return per_group.mean()
