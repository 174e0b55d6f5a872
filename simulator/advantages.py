"""Group baselines and data shaping: from rewards [G, K] to advantages [G, K].

G groups (prompts) of K responses each. Every kind is a baseline b and a scale s:

    A_i = (r_i − b + shift) / s

* ``none``       b = 0, s = 1                     plain REINFORCE (no group needed)
* ``mean``       b = r̄, s = 1                     group-relative REINFORCE (paper eq. in §2)
* ``mean-std``   b = r̄, s = σ + eps               GRPO; σ population (ddof 0) or sample (ddof 1)
* ``mean-batch-std`` b = r̄, s = σ_batch + eps    σ over every reward of the batch (all G·K):
                                                 TRL's scale_rewards="batch", Trinity-RFT's
                                                 std_cal_level="batch" (couples the groups)
* ``loo``        b_i = (Σ_j r_j − r_i)/(K − 1)     RLOO; equals K/(K−1)·(r_i − r̄)
* ``logavgexp``  b = τ·log((1/K)·Σ_j e^{r_j/τ})   OPMD's soft baseline (τ·log Z estimate)

``shift`` moves the baseline down by β (AsymRE): ``group_advantages(r, "mean", shift=β)``
followed by REINFORCE is the same update as the ``asymre`` loss with ``beta=β``.

A group of one response has no group to compare with: every group-relative kind gives it
advantage 0 (plus ``shift``); ``none`` gives r. (verl and Trinity-RFT give a lone response
baseline 0 and scale 1, i.e. A = r; docs/conventions.md.) Groups whose rewards are all equal
give exactly 0 under every group-relative kind (never NaN: σ = 0 is guarded by ``eps``;
``loo`` with K = 1 is defined as 0).

Peers' std conventions, reachable by keyword: the paper's REC advantage with std_normalize
(Trinity-RFT 0.6.0 ``rec_advantage.py``) uses the population std + 1e-6 — grlab's default;
verl 0.9.1 (``compute_grpo_outcome_advantage``) and Trinity's GRPO advantage use the sample std
+ 1e-6 (``std="sample"``); TRL 1.16 the sample std + 1e-4 (``std="sample", eps=1e-4``).

``red_drop`` is data shaping (paper §6): it balances a group's negatives against its positives
by dropping random negatives, then re-centres on the kept samples.
"""

from __future__ import annotations

import torch
from torch import Tensor

from simulator.validation import (
    require_choice,
    require_finite,
    require_float_tensor,
    require_ndim,
    require_nonnegative,
    require_number,
    require_positive,
)

ADVANTAGE_KINDS: tuple[str, ...] = ("none", "mean", "mean-std", "mean-batch-std", "loo",
                                   "logavgexp")
GROUP_LOCAL_KINDS: tuple[str, ...] = ("none", "mean", "mean-std", "loo", "logavgexp")
"""The kinds whose advantages in one group depend on that group alone (not ``mean-batch-std``)."""
STD_KINDS: tuple[str, ...] = ("population", "sample")


def _check_rewards(rewards: object) -> Tensor:
    rewards = require_float_tensor("rewards", rewards)
    require_ndim("rewards", rewards, (2,), "a [G, K] tensor (groups × responses)")
    if rewards.shape[1] == 0:
        raise ValueError("rewards must hold at least one response per group, got K = 0")
    require_finite("rewards", rewards)
    return rewards


def group_advantages(
    rewards: Tensor,
    kind: str = "mean",
    *,
    std: str = "population",
    eps: float = 1e-6,
    tau: float = 1.0,
    shift: float = 0.0,
) -> Tensor:
    """Advantages [G, K] from rewards [G, K] under the baseline ``kind`` (see module docstring).

    Args:
        rewards: [G, K] float rewards, finite.
        kind: one of ``ADVANTAGE_KINDS``.
        std: ``"population"`` (ddof 0: the paper's REC configs) or ``"sample"`` (ddof 1: verl, TRL,
            ``torch.std``'s default); only for ``mean-std`` and ``mean-batch-std``.
        eps: added to σ in ``mean-std`` (≥ 0).
        tau: temperature τ > 0 of the ``logavgexp`` baseline.
        shift: β, subtracted from the baseline (AsymRE); may be negative.
    """
    rewards = _check_rewards(rewards)
    require_choice("kind", kind, ADVANTAGE_KINDS)
    require_choice("std", std, STD_KINDS)
    eps = require_nonnegative("eps", eps)
    tau = require_positive("tau", tau)
    shift = require_number("shift", shift)

    if kind == "none":
        return rewards + shift
    baseline, scale = _baseline_and_scale(rewards, kind, std=std, eps=eps, tau=tau)
    advantages = (rewards - baseline + shift) / scale
    # A group whose rewards are all equal carries no signal. Decide that by exact equality:
    # r̄ of (0.1, 0.1, 0.1) is 0.10000000000000002, and dividing that round-off by an equally
    # tiny σ would turn "no signal" into advantages of ±1.
    uniform = (rewards == rewards[:, :1]).all(dim=1, keepdim=True)
    return torch.where(uniform, torch.full_like(advantages, shift), advantages)


def _baseline_and_scale(rewards: Tensor, kind: str, *, std: str, eps: float, tau: float
                        ) -> tuple[Tensor, Tensor | float]:
    """b [G, 1] or [G, K] and s of A = (r − b + shift)/s for the group-relative kinds."""
    k = rewards.shape[1]
    if k == 1:  # a lone response has nothing to be relative to (and is "uniform" anyway)
        return rewards, 1.0
    if kind == "loo":
        return (rewards.sum(dim=1, keepdim=True) - rewards) / (k - 1), 1.0
    if kind == "logavgexp":
        # τ·log((1/K)·Σ e^{r/τ}), a soft maximum between r̄ and max r, shifted by the max so
        # nothing overflows.
        top = rewards.max(dim=1, keepdim=True).values
        soft = torch.exp((rewards - top) / tau).mean(dim=1, keepdim=True)
        return top + tau * torch.log(soft), 1.0
    mean = rewards.mean(dim=1, keepdim=True)
    if kind == "mean":
        return mean, 1.0
    correction = 0 if std == "population" else 1
    if kind == "mean-batch-std":
        sigma = rewards.flatten().std(correction=correction).reshape(1, 1)
    else:
        sigma = rewards.std(dim=1, keepdim=True, correction=correction)
    # σ = 0 only in uniform groups, which the caller overrides; avoid 0/0 there when eps = 0
    return mean, torch.where(sigma > 0, sigma + eps, torch.ones_like(sigma))


def red_drop(rewards: Tensor, generator: torch.Generator, *, mask_dropped: bool = False
             ) -> tuple[Tensor, Tensor]:
    """RED-Drop (the paper's data shaping), as its code implements it (Trinity-RFT 0.6.0,
    ``rec_advantage.py``, ``drop="balance"``): balance negatives against positives, then re-centre.

    In each group, positives are r_i ≥ r̄ and negatives r_i < r̄ (a sample within round-off of
    r̄ counts as ≥). When a group has more negatives than positives, negatives are dropped
    uniformly at random (using ``generator``) until the counts are equal; the mean is then
    recomputed over the kept samples and the kept samples get A_i = r_i − r̄_kept. Dropped
    samples get A = 0. ``mask_dropped=False`` (the paper's code): their tokens stay in the loss's
    token count (``keep`` all True); ``True``: ``keep`` is False for them, so callers drop them
    from the loss mask as well.

    Returns:
        (advantages [G, K], keep [G, K] bool)
    """
    rewards = _check_rewards(rewards)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if not isinstance(mask_dropped, bool):
        raise TypeError(f"mask_dropped must be a bool, got {type(mask_dropped).__name__}")
    mean = rewards.mean(dim=1, keepdim=True)
    # Which side of r̄ a sample is on must not be decided by round-off: r̄ of (0.1, 0.1, 0.1)
    # is 0.10000000000000002, which would make all three "negatives". Within a few ulps of the
    # group's scale a sample counts as at the mean, i.e. positive.
    tol = 8 * torch.finfo(rewards.dtype).eps * rewards.abs().amax(dim=1, keepdim=True)
    negative = rewards - mean < -tol
    n_keep_negative = torch.minimum((~negative).sum(1, keepdim=True), negative.sum(1, keepdim=True))

    # A uniformly random order of each group's negatives: rank by i.i.d. uniform scores.
    scores = torch.rand(rewards.shape, generator=generator, device=generator.device)
    scores = scores.to(rewards.device).to(rewards.dtype)
    scores = torch.where(negative, scores, torch.full_like(scores, 2.0))  # non-negatives last
    rank = scores.argsort(dim=1).argsort(dim=1)
    kept = ~negative | (rank < n_keep_negative)

    weight = kept.to(rewards.dtype)
    kept_mean = (rewards * weight).sum(1, keepdim=True) / weight.sum(1, keepdim=True)
    # a group without negatives is uniform: exactly 0, not round-off
    signal = kept & negative.any(dim=1, keepdim=True)
    advantages = torch.where(signal, rewards - kept_mean, torch.zeros_like(rewards))
    return advantages, (kept if mask_dropped else torch.ones_like(kept))


def shaped_advantages(
    rewards: Tensor,
    kind: str,
    *,
    generator: torch.Generator | None = None,
    drop_uniform_groups: bool = False,
    **kwargs: float | str,
) -> tuple[Tensor, Tensor]:
    """Advantages and a keep mask for any kind a loss preset may name.

    ``kind`` is one of ``ADVANTAGE_KINDS`` or ``"red-drop"`` (which needs ``generator``).
    ``drop_uniform_groups`` (DAPO's dynamic-sampling filter) marks every sample of a group whose
    rewards are all equal as not kept: such groups carry no signal and would only dilute a
    token-mean. Callers drop ``~keep`` samples from the loss mask.
    """
    if kind == "red-drop":
        if generator is None:
            raise ValueError("kind='red-drop' needs a torch.Generator in generator=")
        if set(kwargs) - {"mask_dropped"}:
            raise TypeError(f"kind='red-drop' takes only mask_dropped=, got {sorted(kwargs)}")
        advantages, keep = red_drop(rewards, generator, **kwargs)  # type: ignore[arg-type]
    else:
        advantages = group_advantages(rewards, kind, **kwargs)  # type: ignore[arg-type]
        keep = torch.ones_like(advantages, dtype=torch.bool)
    if drop_uniform_groups:
        uniform = (rewards == rewards[:, :1]).all(dim=1, keepdim=True)
        keep = keep & ~uniform
    return advantages, keep
