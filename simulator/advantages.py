"""Group baselines and data shaping: from rewards [G, K] to advantages [G, K].

G groups (prompts) of K responses each. Every kind is a baseline b and a scale s:

    A_i = (r_i − b + shift) / s

* ``none``       b = 0, s = 1                     plain REINFORCE (no group needed)
* ``mean``       b = r̄, s = 1                     group-relative REINFORCE (the paper's Sec. 2.2)
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

``red_drop`` is data shaping (the paper's RED-Drop, its Principle 2): it balances a group's
negatives against its positives by dropping random negatives, then re-centres on the kept
samples.

Design decisions
----------------
* ``ADVANTAGES`` (a ``validation.Registry``) is the one list of kinds a loss may name: each
  entry says how it is computed and what it needs (``needs_generator``: random draws;
  ``group_local``: a group's advantages depend on that group alone, not on the batch;
  ``exact``: the exact engines can take its expectation). Callers ask the entry, never a name.
* "All rewards of a group are equal" is ``is_uniform``, decided by exact equality; both the
  zero-advantage rule and DAPO's drop read it. DAPO's filter is one keep-mask step at the end
  of ``shaped_advantages``, switched on by the loss preset (``LossSpec.drop_uniform_groups``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import Tensor

from simulator.validation import (
    Registry,
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
"""The baseline kinds of ``group_advantages``; ``ADVANTAGES`` holds these and ``red-drop``."""
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
    return torch.where(is_uniform(rewards), torch.full_like(advantages, shift), advantages)


def is_uniform(rewards: Tensor) -> Tensor:
    """[G, 1] bool: True for a group whose rewards are all exactly equal (no signal)."""
    return (rewards == rewards[:, :1]).all(dim=1, keepdim=True)


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


@dataclasses.dataclass(frozen=True)
class AdvantageKind:
    """An entry of ``ADVANTAGES``: how a kind is computed and what it needs.

    ``compute(rewards [G, K], generator, **options) -> (advantages [G, K], keep [G, K])``.
    """

    name: str
    compute: Callable[..., tuple[Tensor, Tensor]]
    needs_generator: bool = False
    group_local: bool = True
    exact: bool = True


ADVANTAGES: Registry = Registry("advantage kind")


def _baseline_kind(kind: str) -> Callable[..., tuple[Tensor, Tensor]]:
    def compute(rewards: Tensor, generator: torch.Generator | None, **options: float | str
                ) -> tuple[Tensor, Tensor]:
        advantages = group_advantages(rewards, kind, **options)  # type: ignore[arg-type]
        return advantages, torch.ones_like(advantages, dtype=torch.bool)
    return compute


def _red_drop(rewards: Tensor, generator: torch.Generator | None, **options: bool
              ) -> tuple[Tensor, Tensor]:
    if set(options) - {"mask_dropped"}:
        raise TypeError(f"kind='red-drop' takes only mask_dropped=, got {sorted(options)}")
    return red_drop(rewards, generator, **options)  # type: ignore[arg-type]


for _kind in ADVANTAGE_KINDS:
    ADVANTAGES[_kind] = AdvantageKind(_kind, _baseline_kind(_kind),
                                      group_local=_kind != "mean-batch-std")
ADVANTAGES["red-drop"] = AdvantageKind("red-drop", _red_drop, needs_generator=True, exact=False)


def advantage_kind(kind: object, name: str = "kind") -> AdvantageKind:
    """The ``ADVANTAGES`` entry of ``kind``; an unknown kind is a ValueError naming ``name``."""
    return ADVANTAGES[require_choice(name, kind, ADVANTAGES)]


def require_exact(kind: str) -> None:
    """Refuse a kind whose exact expectation the exact engines do not compute."""
    if not advantage_kind(kind, "advantage").exact:
        raise ValueError(f"advantage {kind!r} drops samples at random: its exact expectation "
                         "is not computed; use sample_groups with a generator")


def shaped_advantages(
    rewards: Tensor,
    kind: str,
    *,
    generator: torch.Generator | None = None,
    drop_uniform_groups: bool = False,
    **kwargs: float | str,
) -> tuple[Tensor, Tensor]:
    """Advantages and a keep mask for any kind of ``ADVANTAGES``.

    ``generator`` is used by the kinds that draw (``needs_generator``: ``red-drop``, for which
    it is required) and ignored by the others. ``drop_uniform_groups`` (DAPO's
    dynamic-sampling filter) marks every sample of a group whose rewards are all equal as not
    kept: such groups carry no signal and would only dilute a token-mean. Callers drop ``~keep``
    samples from the loss mask.
    """
    entry = advantage_kind(kind)
    if entry.needs_generator and generator is None:
        raise ValueError(f"kind={kind!r} needs a torch.Generator in generator=")
    advantages, keep = entry.compute(rewards, generator if entry.needs_generator else None,
                                     **kwargs)
    if drop_uniform_groups:
        keep = keep & ~is_uniform(rewards)
    return advantages, keep
