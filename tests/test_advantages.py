"""group_advantages and red_drop: vectorised code against looped twins, edge cases, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from simulator.advantages import ADVANTAGE_KINDS, group_advantages, red_drop, shaped_advantages

EXACT = {"rtol": 1e-12, "atol": 1e-12}


def looped_advantages(rewards, kind, *, std="population", eps=1e-6, tau=1.0, shift=0.0):
    """The naive twin: one group and one response at a time, in plain Python floats
    (mean-batch-std: σ over every reward of the batch; a uniform group gets r − r̄ + shift)."""
    flat = [x for group in rewards.tolist() for x in group]
    out = []
    for group in rewards.tolist():
        k = len(group)
        mean = sum(group) / k
        row = []
        for i, r in enumerate(group):
            if kind == "none":
                row.append(r + shift)
            elif k == 1:
                row.append(shift)
            elif kind == "mean":
                row.append(r - mean + shift)
            elif kind in ("mean-std", "mean-batch-std"):
                ddof = 0 if std == "population" else 1
                pool = group if kind == "mean-std" else flat
                pool_mean = sum(pool) / len(pool)
                sigma = math.sqrt(sum((x - pool_mean) ** 2 for x in pool) / (len(pool) - ddof))
                uniform = all(x == group[0] for x in group)
                row.append((r - mean + shift) / (sigma + eps) if sigma > 0 and not uniform
                           else r - mean + shift)
            elif kind == "loo":
                row.append(r - (sum(group) - group[i]) / (k - 1) + shift)
            else:
                baseline = tau * math.log(sum(math.exp(x / tau) for x in group) / k)
                row.append(r - baseline + shift)
        out.append(row)
    return torch.tensor(out, dtype=torch.float64)


rewards_st = st.builds(
    lambda seed, g, k, binary: (
        torch.randint(0, 2, (g, k), generator=torch.Generator().manual_seed(seed)).double()
        if binary else
        torch.randn(g, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)),
    st.integers(0, 2**32 - 1), st.integers(1, 5), st.integers(1, 8), st.booleans(),
)


@given(rewards=rewards_st, kind=st.sampled_from(ADVANTAGE_KINDS),
       std=st.sampled_from(["population", "sample"]), tau=st.floats(0.1, 10.0),
       shift=st.floats(-1.0, 1.0))
def test_vectorised_advantages_equal_the_looped_twin(rewards, kind, std, tau, shift):
    got = group_advantages(rewards, kind, std=std, tau=tau, shift=shift)
    torch.testing.assert_close(got, looped_advantages(rewards, kind, std=std, tau=tau,
                                                      shift=shift), **EXACT)


@pytest.mark.parametrize("kind", ["mean", "mean-std", "loo", "logavgexp"])
@pytest.mark.parametrize("k", [1, 2, 3, 5, 7])
@given(value=st.floats(-1e6, 1e6))
def test_equal_rewards_and_lone_responses_give_exactly_zero(kind, k, value):
    """Exactly 0, not round-off: with eps = 0 round-off/round-off would give ±1 (found by the
    hand-checked tests for three rewards of 0.1)."""
    rewards = torch.full((3, k), value, dtype=torch.float64)
    for eps in (0.0, 1e-6):
        extra = {"eps": eps} if kind == "mean-std" else {}
        adv = group_advantages(rewards, kind, **extra)
        assert torch.equal(adv, torch.zeros_like(adv)), (kind, k, eps)


def test_none_keeps_the_raw_rewards_even_for_a_lone_response():
    rewards = torch.tensor([[0.3], [1.0]], dtype=torch.float64)
    torch.testing.assert_close(group_advantages(rewards, "none"), rewards)


@given(rewards=rewards_st)
def test_sample_std_is_population_std_times_sqrt_k_over_k_minus_one(rewards):
    k = rewards.shape[1]
    pop = group_advantages(rewards, "mean-std", std="population", eps=0.0)
    sample = group_advantages(rewards, "mean-std", std="sample", eps=0.0)
    factor = math.sqrt(k / (k - 1)) if k > 1 else 1.0
    torch.testing.assert_close(pop, sample * factor, **EXACT)


@given(rewards=rewards_st, tau=st.floats(0.05, 20.0))
def test_logavgexp_baseline_lies_between_the_mean_and_the_max(rewards, tau):
    """τ·log mean e^{r/τ} ∈ [r̄, max r] (Jensen and log-sum-exp ≤ max + τ log K − τ log K)."""
    baseline = rewards - group_advantages(rewards, "logavgexp", tau=tau)
    mean = rewards.mean(1, keepdim=True)
    top = rewards.max(1, keepdim=True).values
    assert (baseline >= mean - 1e-12).all() and (baseline <= top + 1e-12).all()


def test_logavgexp_tends_to_the_mean_for_large_tau_and_to_the_max_for_small_tau():
    rewards = torch.tensor([[0.0, 1.0, 0.5, 0.2]], dtype=torch.float64)
    hot = rewards - group_advantages(rewards, "logavgexp", tau=1e4)
    cold = rewards - group_advantages(rewards, "logavgexp", tau=1e-3)
    assert float(hot[0, 0]) == pytest.approx(float(rewards.mean()), abs=1e-4)
    assert float(cold[0, 0]) == pytest.approx(1.0 - 1e-3 * math.log(4), abs=1e-9)


# ----------------------------------------------------------------------------- RED-Drop


def looped_red_drop(rewards, scores):
    """Naive twin of the seed's RED-Drop: per group, positives r ≥ r̄, negatives r < r̄ (at the
    mean within round-off counts as positive); order the negatives by the same random scores,
    keep the first #positives of them, re-centre on the kept samples."""
    adv = torch.zeros_like(rewards)
    keep = torch.ones_like(rewards, dtype=torch.bool)
    for g, group in enumerate(rewards.tolist()):
        mean = sum(group) / len(group)
        tol = 8 * 2.0**-52 * max(abs(r) for r in group)  # "at the mean" within round-off
        neg = sorted((i for i, r in enumerate(group) if r - mean < -tol),
                     key=lambda i: scores[g, i])
        for i in neg[len(group) - len(neg):]:
            keep[g, i] = False
        kept = [i for i in range(len(group)) if keep[g, i]]
        kept_mean = sum(group[i] for i in kept) / len(kept)
        for i in kept:
            adv[g, i] = group[i] - kept_mean if neg else 0.0
    return adv, keep


@given(rewards=rewards_st, seed=st.integers(0, 2**32 - 1))
def test_red_drop_equals_the_looped_twin_on_the_same_draw(rewards, seed):
    adv, keep = red_drop(rewards, torch.Generator().manual_seed(seed), mask_dropped=True)
    scores = torch.rand(rewards.shape, generator=torch.Generator().manual_seed(seed))
    adv_ref, keep_ref = looped_red_drop(rewards, scores.double())
    assert torch.equal(keep, keep_ref)
    torch.testing.assert_close(adv, adv_ref, **EXACT)
    default_adv, default_keep = red_drop(rewards, torch.Generator().manual_seed(seed))
    assert torch.equal(default_adv, adv) and default_keep.all()


@given(rewards=rewards_st, seed=st.integers(0, 2**32 - 1))
def test_red_drop_balances_negatives_keeps_positives_and_recentres(rewards, seed):
    adv, keep = red_drop(rewards, torch.Generator().manual_seed(seed), mask_dropped=True)
    mean = rewards.mean(1, keepdim=True)
    tol = 8 * 2.0**-52 * rewards.abs().amax(1, keepdim=True)
    negative = rewards - mean < -tol
    assert keep[~negative].all()
    kept_negative = (keep & negative).sum(1)
    assert torch.equal(kept_negative, torch.minimum((~negative).sum(1), negative.sum(1)))
    assert (adv[~keep] == 0).all()
    torch.testing.assert_close((adv * keep).sum(1), torch.zeros(rewards.shape[0],
                                                                dtype=torch.float64),
                               rtol=0, atol=1e-12)


def test_red_drop_is_reproducible_from_the_generator_and_varies_across_seeds():
    rewards = torch.tensor([[1.0] + [0.0] * 7] * 4, dtype=torch.float64)
    a = red_drop(rewards, torch.Generator().manual_seed(1), mask_dropped=True)
    b = red_drop(rewards, torch.Generator().manual_seed(1), mask_dropped=True)
    assert torch.equal(a[1], b[1]) and torch.equal(a[0], b[0])
    kept = {tuple(red_drop(rewards, torch.Generator().manual_seed(s), mask_dropped=True)[1][0]
                  .tolist()) for s in range(20)}
    assert len(kept) > 1
    # one positive, seven negatives: the positive and one negative survive, A = ±0.5
    adv, keep = a
    assert keep.sum(1).tolist() == [2, 2, 2, 2]
    assert sorted(adv[0][keep[0]].tolist()) == [-0.5, 0.5]


def test_shaped_advantages_marks_uniform_groups_when_asked():
    rewards = torch.tensor([[1.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    _, keep = shaped_advantages(rewards, "mean", drop_uniform_groups=True)
    assert keep.tolist() == [[False, False], [True, True]]
    _, keep = shaped_advantages(rewards, "red-drop", generator=torch.Generator(),
                                drop_uniform_groups=True)
    assert keep.tolist() == [[False, False], [True, True]]


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda: group_advantages(torch.ones(4, dtype=torch.float64)), ValueError, r"\[G, K\]"),
    (lambda: group_advantages(torch.ones(2, 0, dtype=torch.float64)), ValueError, "K = 0"),
    (lambda: group_advantages(torch.ones(2, 3, dtype=torch.int64)), TypeError, "floating"),
    (lambda: group_advantages(torch.tensor([[0.0, float("nan")]])), ValueError, "NaN"),
    (lambda: group_advantages(torch.ones(2, 3), "median"), ValueError, "kind must be one of"),
    (lambda: group_advantages(torch.ones(2, 3), "mean-std", std="unbiased"), ValueError, "std"),
    (lambda: group_advantages(torch.ones(2, 3), "logavgexp", tau=0.0), ValueError, "tau"),
    (lambda: group_advantages(torch.ones(2, 3), "mean-std", eps=-1.0), ValueError, "eps"),
    (lambda: red_drop(torch.ones(2, 3), 0), TypeError, "generator"),
    (lambda: shaped_advantages(torch.ones(2, 3), "red-drop"), ValueError, "generator"),
    (lambda: shaped_advantages(torch.ones(2, 3), "mean", tau=1.0, std="x"), ValueError, "std"),
])
def test_bad_input_raises_clear_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_the_advantage_registry_declares_what_each_kind_needs():
    """Every kind a loss may name is in ADVANTAGES; only RED-Drop draws (and is therefore not
    exact), only mean-batch-std is batch-wide; an unknown kind is a ValueError naming it."""
    from simulator.advantages import ADVANTAGES, advantage_kind

    assert set(ADVANTAGES) == {*ADVANTAGE_KINDS, "red-drop"}
    assert [k for k, e in ADVANTAGES.items() if e.needs_generator] == ["red-drop"]
    assert [k for k, e in ADVANTAGES.items() if not e.exact] == ["red-drop"]
    assert [k for k, e in ADVANTAGES.items() if not e.group_local] == ["mean-batch-std"]
    with pytest.raises(ValueError, match="advantage must be one of"):
        advantage_kind("mean_std", "advantage")


@pytest.mark.parametrize("kind", ["none", "mean", "mean-std", "mean-batch-std", "loo",
                                  "logavgexp"])
def test_declared_group_locality_agrees_with_the_exact_engines_probe(kind):
    """The registry's group_local and the sufficient engine's probe (which computes) agree."""
    from simulator.advantages import ADVANTAGES
    from simulator.losses import LossSetup
    from simulator.sufficient import require_group_local

    setup = LossSetup("reinforce", advantage=kind)
    if ADVANTAGES[kind].group_local:
        require_group_local(setup)
    else:
        with pytest.raises(ValueError, match="couples prompts"):
            require_group_local(setup)


def test_is_uniform_is_exact_equality_per_group():
    from simulator.advantages import is_uniform

    rewards = torch.tensor([[0.1, 0.1, 0.1], [0.1, 0.1, 0.1 + 1e-17 + 1e-16], [2.0, 2.0, 2.0]],
                           dtype=torch.float64)
    assert is_uniform(rewards).squeeze(1).tolist() == [True, False, True]


def test_a_generator_is_ignored_by_kinds_that_do_not_draw():
    """Adapters pass their generator whatever the kind: a kind that does not draw neither
    needs nor consumes it."""
    g = torch.Generator().manual_seed(3)
    state = g.get_state()
    rewards = torch.tensor([[0.0, 1.0, 1.0]], dtype=torch.float64)
    with_g = shaped_advantages(rewards, "mean-std", generator=g)
    assert torch.equal(g.get_state(), state)
    assert all(torch.equal(a, b) for a, b in zip(with_g, shaped_advantages(rewards, "mean-std"),
                                                 strict=True))
