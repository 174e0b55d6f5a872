"""Terms added to each token's loss, with π_θ's gradient: a KL to a reference policy (plain or
IS-corrected k3), an entropy bonus; and the top-entropy token mask."""

from __future__ import annotations

import torch

from simulator import kl, numerics
from simulator.corrections.core import (
    LEVELS,
    CorrectionInputs,
    Stage,
    drops,
    register_correction,
)
from simulator.validation import (
    require_choice,
    require_nonnegative,
    require_number,
    require_positive,
)

IS_ANCHORS = ("old", "rollout")


@register_correction("kl", follows="DeepSeekMath GRPO (β·k3); TRL 1.16 grpo_trainer.py "
                     "(_compute_loss: beta, use_bias_correction_kl); Trinity-RFT 0.6.0 "
                     "kl_fn.py (K3Fn, CorrectedK3Fn)", inputs=("logp_ref",))
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
                     "entropy_loss_fn.py (DefaultEntropyLossFn); TRL 1.16 entropy_coef",
                     inputs=("entropy",))
def entropy_bonus(inputs: CorrectionInputs, *, coef: float = 0.001) -> Stage:
    """An entropy bonus: −coef·H_t per token (H_t the policy's entropy at the token, with its
    gradient), aggregated like the loss (verl, Trinity-RFT; TRL takes the token mean)."""
    entropy = inputs.require("entropy", "entropy-bonus")
    coef = require_number("coef", coef)
    entropy = torch.where(inputs.mask, entropy, entropy.new_zeros(()))
    return Stage(penalty=numerics.mul(-coef, entropy), metrics={"entropy": entropy.detach()})


@register_correction("top-entropy", follows="Wang et al. 2025, Beyond the 80/20 Rule (arXiv "
                     "2506.01939); TRL 1.16 grpo_trainer.py (get_high_entropy_mask, "
                     "top_entropy_quantile)", inputs=("entropy",))
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
    return Stage(keep=keep, drop=drops(denominator),
                 metrics={"top_entropy_frac": keep.to(torch.float64)})
