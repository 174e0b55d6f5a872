"""group_advantages and red_drop: vectorised code against looped twins, edge cases, bad input;
then hand-checked values of every kind, ``red_drop`` and the presets' ``LossSpec.advantages``.

Each hand-checked value is worked out by hand from the formula A_i = (r_i − b + shift)/s in
``simulator/advantages.py``'s docstring (and the papers it cites); the arithmetic is in the
docstrings. float64, rel=1e-12 or exact.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from simulator.advantages import ADVANTAGE_KINDS, group_advantages, red_drop, shaped_advantages
from simulator.losses import LOSSES

EXACT = {"rtol": 1e-12, "atol": 1e-12}
LN2 = math.log(2.0)
SQRT2 = math.sqrt(2.0)
SQRT3 = math.sqrt(3.0)


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
    """Naive twin of the released RED-Drop: per group, positives r ≥ r̄, negatives r < r̄ (at the
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


# --------------------------------------------------------------------------------------------
# Hand-checked values
# --------------------------------------------------------------------------------------------


def rewards(rows):
    return torch.tensor(rows, dtype=torch.float64)


def approx(values):
    return pytest.approx(values, rel=1e-12)


def flat(t: torch.Tensor) -> list[float]:
    return t.flatten().tolist()


def test_none_is_the_raw_reward_plus_shift():
    """b = 0, s = 1: A = r (+ shift 0.25)."""
    r = rewards([[1.0, 0.0, 0.5]])
    assert flat(group_advantages(r, "none")) == [1.0, 0.0, 0.5]
    assert flat(group_advantages(r, "none", shift=0.25)) == [1.25, 0.25, 0.75]


def test_mean_baseline_per_group():
    """Group 1: r̄ = 1.5/3 = 0.5 → (0.5, −0.5, 0). Group 2: r̄ = 9/3 = 3 → (−1, −1, 2)."""
    adv = group_advantages(rewards([[1.0, 0.0, 0.5], [2.0, 2.0, 5.0]]), "mean")
    assert flat(adv) == approx([0.5, -0.5, 0.0, -1.0, -1.0, 2.0])


def test_mean_with_shift_is_asymre_baseline():
    """shift β = 0.1 moves the baseline down: (0.5, −0.5, 0) + 0.1 = (0.6, −0.4, 0.1)."""
    adv = group_advantages(rewards([[1.0, 0.0, 0.5]]), "mean", shift=0.1)
    assert flat(adv) == approx([0.6, -0.4, 0.1])


def test_mean_std_population_eps_zero():
    """(0, 1, 1, 0): r̄ = 0.5, σ² = 4·0.25/4 = 0.25, σ = 0.5 → (−1, 1, 1, −1).
    (2, 2, 5): r̄ = 3, σ² = (1 + 1 + 4)/3 = 2 → (−1/√2, −1/√2, 2/√2 = √2)."""
    adv = group_advantages(rewards([[0.0, 1.0, 1.0, 0.0], [2.0, 2.0, 5.0, 3.0]]), "mean-std",
                           eps=0.0)
    # second group padded with its mean 3 (A = 0): r̄ = 12/4 = 3, σ² = (1 + 1 + 4 + 0)/4 = 1.5
    assert flat(adv)[:4] == approx([-1.0, 1.0, 1.0, -1.0])
    s = math.sqrt(1.5)
    assert flat(adv)[4:] == approx([-1 / s, -1 / s, 2 / s, 0.0])
    adv3 = group_advantages(rewards([[2.0, 2.0, 5.0]]), "mean-std", eps=0.0)
    assert flat(adv3) == approx([-1 / SQRT2, -1 / SQRT2, SQRT2])


def test_mean_std_default_eps_is_added_to_sigma():
    """eps = 1e-6 (default): (0, 1, 1, 0) → ±0.5/(0.5 + 1e-6)."""
    adv = group_advantages(rewards([[0.0, 1.0, 1.0, 0.0]]), "mean-std")
    a = 0.5 / (0.5 + 1e-6)
    assert flat(adv) == approx([-a, a, a, -a])


def test_mean_std_sample_std():
    """ddof 1: (0, 1, 1, 0): s² = 1/3 → ±0.5·√3. (2, 2, 5): s² = 6/2 = 3 → (−1, −1, 2)/√3."""
    adv = group_advantages(rewards([[0.0, 1.0, 1.0, 0.0]]), "mean-std", std="sample", eps=0.0)
    assert flat(adv) == approx([-0.5 * SQRT3, 0.5 * SQRT3, 0.5 * SQRT3, -0.5 * SQRT3])
    adv3 = group_advantages(rewards([[2.0, 2.0, 5.0]]), "mean-std", std="sample", eps=0.0)
    assert flat(adv3) == approx([-1 / SQRT3, -1 / SQRT3, 2 / SQRT3])


def test_mean_std_shift_is_divided_by_sigma():
    """A = (r − r̄ + β)/σ: (0, 1, 1, 0), β = 0.5, σ = 0.5 → (0, 2, 2, 0)."""
    adv = group_advantages(rewards([[0.0, 1.0, 1.0, 0.0]]), "mean-std", eps=0.0, shift=0.5)
    assert flat(adv) == approx([0.0, 2.0, 2.0, 0.0])


def test_loo():
    """b_i = (Σ_j r_j − r_i)/(K − 1).
    (1, 0, 0): b = (0, 0.5, 0.5) → (1, −0.5, −0.5).
    (3, 1, 2, 2): Σ = 8, b = (5/3, 7/3, 2, 2) → (4/3, −4/3, 0, 0) = 4/3·(r − r̄), r̄ = 2."""
    assert flat(group_advantages(rewards([[1.0, 0.0, 0.0]]), "loo")) == approx([1.0, -0.5, -0.5])
    adv = group_advantages(rewards([[3.0, 1.0, 2.0, 2.0]]), "loo")
    assert flat(adv) == approx([4 / 3, -4 / 3, 0.0, 0.0])


def test_logavgexp():
    """b = τ·log((1/K)·Σ_j e^{r_j/τ}).
    τ = 1, r = (0, log 3): b = log((1 + 3)/2) = log 2 → (−log 2, log 3 − log 2 = log 1.5).
    τ = 2, r = (0, 2·log 3): r/τ = (0, log 3), b = 2·log 2 → (−2 log 2, 2·log 1.5).
    τ = 1, r = (0, 0, log 4): b = log(6/3) = log 2 → (−log 2, −log 2, log 2)."""
    adv = group_advantages(rewards([[0.0, math.log(3.0)]]), "logavgexp")
    assert flat(adv) == approx([-LN2, math.log(1.5)])
    adv = group_advantages(rewards([[0.0, 2 * math.log(3.0)]]), "logavgexp", tau=2.0)
    assert flat(adv) == approx([-2 * LN2, 2 * math.log(1.5)])
    adv = group_advantages(rewards([[0.0, 0.0, math.log(4.0)]]), "logavgexp")
    assert flat(adv) == approx([-LN2, -LN2, LN2])


def test_logavgexp_with_shift():
    """τ = 1, r = (0, log 3), β = 0.25: (−log 2 + 0.25, log 1.5 + 0.25)."""
    adv = group_advantages(rewards([[0.0, math.log(3.0)]]), "logavgexp", shift=0.25)
    assert flat(adv) == approx([-LN2 + 0.25, math.log(1.5) + 0.25])


@pytest.mark.parametrize("kind", ["mean", "mean-std", "loo", "logavgexp"])
def test_lone_response_gets_zero_plus_shift(kind):
    """K = 1: no group to compare with → 0 (+ shift 0.3); ``none`` gives r (+ shift)."""
    r = rewards([[5.0], [-2.0]])
    assert flat(group_advantages(r, kind)) == [0.0, 0.0]
    assert flat(group_advantages(r, kind, shift=0.3)) == [0.3, 0.3]
    assert flat(group_advantages(r, "none", shift=0.3)) == approx([5.3, -1.7])


@pytest.mark.parametrize("kind", ["mean", "mean-std", "loo", "logavgexp"])
def test_uniform_group_gives_exact_zero(kind):
    """Equal rewards 0.5 (r̄ = 0.5 exactly, σ = 0): every group-relative kind gives 0, also
    with eps = 0 for mean-std (σ = 0 is guarded, never 0/0)."""
    r = rewards([[0.5, 0.5, 0.5]])
    kwargs = {"eps": 0.0} if kind == "mean-std" else {}
    assert flat(group_advantages(r, kind, **kwargs)) == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("value", [0.1, 0.7])
def test_uniform_group_of_inexact_rewards_mean_std_eps_zero_is_zero(value):
    """Equal rewards 0.1 (or 0.7), not binary fractions, eps = 0. All r_i are equal, so
    r_i − r̄ = 0 and σ = 0: the module docstring promises A = 0 ("never NaN: σ = 0 is guarded").
    A uniform group carries no signal; it must not get advantage ±1 on every sample."""
    r = rewards([[value, value, value]])
    assert flat(group_advantages(r, "mean-std", eps=0.0)) == [0.0, 0.0, 0.0]
    adv, keep = red_drop(r, torch.Generator().manual_seed(0))
    assert flat(adv) == [0.0, 0.0, 0.0] and keep.all()


@pytest.mark.parametrize("kind", ["mean", "mean-std", "loo", "logavgexp"])
def test_uniform_group_of_inexact_rewards_gives_exact_zero(kind):
    """Equal rewards 0.1: "Groups whose rewards are all equal give exactly 0 under every
    group-relative kind" (module docstring). Mathematically r_i − b = 0 for each kind
    (b = r̄, r̄, (3·0.1 − 0.1)/2 = 0.1, 0.1 + log(3)/1 − log 3 = 0.1), so A = (0, 0, 0)."""
    assert flat(group_advantages(rewards([[0.1, 0.1, 0.1]]), kind)) == [0.0, 0.0, 0.0]


# --------------------------------------------------------------------------------------------
# RED-Drop
# --------------------------------------------------------------------------------------------

SEEDS = range(16)


def _draws(r):
    """16 draws; keep marks the kept samples (mask_dropped=True shows which were dropped)."""
    out = []
    for seed in SEEDS:
        adv, keep = red_drop(r, torch.Generator().manual_seed(seed), mask_dropped=True)
        out.append((tuple(flat(adv)), tuple(flat(keep))))
    return out


def test_red_drop_more_positives_drops_nothing():
    """(1, 1, 0): r̄ = 2/3, 2 positives ≥ 1 negative → nothing dropped, whatever the draw:
    A = r − 2/3 = (1/3, 1/3, −2/3), keep all."""
    for adv, keep in _draws(rewards([[1.0, 1.0, 0.0]])):
        assert list(adv) == approx([1 / 3, 1 / 3, -2 / 3])
        assert keep == (True, True, True)


def test_red_drop_uniform_group_keeps_all_with_zero_advantage():
    """(0.5, 0.5): no positive, no negative → keep both, A = 0."""
    for adv, keep in _draws(rewards([[0.5, 0.5]])):
        assert adv == (0.0, 0.0)
        assert keep == (True, True)


def test_red_drop_one_positive_three_negatives_enumerated():
    """(1, 0, 0, 0): r̄ = 0.25, 1 positive, 3 negatives → keep exactly one negative, chosen at
    random. Kept {1, 0}: r̄_kept = 0.5 → A = 0.5 for the positive, −0.5 for the kept negative,
    0 for the two dropped. The three outcomes (kept index 1, 2 or 3) are enumerated; every
    draw must be one of them, and over 16 seeds more than one occurs."""
    outcomes = {}
    for j in (1, 2, 3):
        adv = [0.5 if i == 0 else (-0.5 if i == j else 0.0) for i in range(4)]
        keep = tuple(i in (0, j) for i in range(4))
        outcomes[keep] = adv
    seen = set()
    for adv, keep in _draws(rewards([[1.0, 0.0, 0.0, 0.0]])):
        assert keep in outcomes
        assert list(adv) == approx(outcomes[keep])
        seen.add(keep)
    assert len(seen) > 1


def test_red_drop_sample_at_the_mean_counts_as_positive():
    """(3, 1, 0, 0): r̄ = 1. The seed counts r ≥ r̄ as positive (Trinity-RFT 0.6.0,
    rec_advantage.py: is_pos = rewards >= mean): positives {3, 1}, negatives {0, 0} → balanced,
    nothing dropped: A = r − 1 = (2, 0, −1, −1)."""
    for adv, keep in _draws(rewards([[3.0, 1.0, 0.0, 0.0]])):
        assert list(adv) == approx([2.0, 0.0, -1.0, -1.0])
        assert keep == (True, True, True, True)


def test_red_drop_tie_at_the_mean_changes_how_many_are_dropped():
    """(1, 0.25, 0, 0, 0): r̄ = 0.25; positives {1, 0.25} (2), negatives 3 → drop one negative.
    Kept {1, 0.25, 0, 0}: r̄_kept = 1.25/4 → A = 1 − 0.3125, 0.25 − 0.3125, −0.3125 (two kept
    negatives), 0 for the dropped one."""
    seen = set()
    for adv, keep in _draws(rewards([[1.0, 0.25, 0.0, 0.0, 0.0]])):
        assert keep[:2] == (True, True) and sum(keep[2:]) == 2
        expected = [0.6875, -0.0625] + [-0.3125 if k else 0.0 for k in keep[2:]]
        assert list(adv) == approx(expected)
        seen.add(keep)
    assert len(seen) > 1


def test_red_drop_keeps_dropped_tokens_in_the_count_by_default():
    """The released RED-Drop (Trinity-RFT) sets a dropped sample's advantage to 0 but leaves
    its action mask: keep is all True unless mask_dropped=True."""
    r = rewards([[1.0, 0.0, 0.0, 0.0]])
    adv, keep = red_drop(r, torch.Generator().manual_seed(0))
    assert keep.all() and int((adv == 0).sum()) == 2
    _, keep = red_drop(r, torch.Generator().manual_seed(0), mask_dropped=True)
    assert int(keep.sum()) == 2


def test_red_drop_groups_are_independent():
    """Two groups at once: (1, 1, 0) as above, and (1, 0, 0) → keep one of the two negatives:
    r̄_kept = 0.5 → (0.5, −0.5, 0) or (0.5, 0, −0.5)."""
    second = {
        (True, True, False): [0.5, -0.5, 0.0],
        (True, False, True): [0.5, 0.0, -0.5],
    }
    for adv, keep in _draws(rewards([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])):
        assert list(adv[:3]) == approx([1 / 3, 1 / 3, -2 / 3])
        assert keep[:3] == (True, True, True)
        assert keep[3:] in second
        assert list(adv[3:]) == approx(second[keep[3:]])


def test_red_drop_preset_needs_a_generator_and_uses_red_drop():
    """``LOSSES['red-drop'].advantages`` is red_drop: (1, 1, 0) → (1/3, 1/3, −2/3)."""
    r = rewards([[1.0, 1.0, 0.0]])
    with pytest.raises(ValueError, match="generator"):
        LOSSES["red-drop"].advantages(r)
    adv, keep = LOSSES["red-drop"].advantages(r, generator=torch.Generator().manual_seed(0))
    assert flat(adv) == approx([1 / 3, 1 / 3, -2 / 3])
    assert keep.all()


# --------------------------------------------------------------------------------------------
# Presets' advantage kinds
# --------------------------------------------------------------------------------------------

REWARDS = [[0.0, 1.0, 1.0, 0.0]]
MEAN = [-0.5, 0.5, 0.5, -0.5]  # r̄ = 0.5
MEAN_STD = [-0.5 / (0.5 + 1e-6), 0.5 / (0.5 + 1e-6), 0.5 / (0.5 + 1e-6), -0.5 / (0.5 + 1e-6)]
LOO = [-2 / 3, 2 / 3, 2 / 3, -2 / 3]  # 4/3·(r − r̄)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("grpo", MEAN_STD), ("ppo", MEAN_STD), ("ppo-dual-clip", MEAN_STD), ("gspo", MEAN_STD),
        ("gspo-token", MEAN_STD), ("cispo", MEAN_STD),
        ("reinforce", MEAN), ("rec", MEAN), ("rec-oneside-nois", MEAN), ("rec-oneside-is", MEAN),
        ("rec-twoside-nois", MEAN), ("rec-twoside-is", MEAN), ("rec-ring-nois", MEAN),
        ("rec-ring-is", MEAN), ("red-weight", MEAN), ("dr-grpo", MEAN), ("opmd-kimi", MEAN),
        ("opmd-trinity", MEAN), ("asymre", MEAN), ("sppo", MEAN), ("sppo-trinity", MEAN),
        ("bnpo", MEAN_STD), ("luspo", MEAN_STD), ("dapo", MEAN_STD), ("rloo", LOO),
        ("topr", REWARDS[0]),  # the raw reward, as the TOPR paper and Trinity's TOPR use
    ],
)
def test_preset_advantage_kind(name, expected):
    """(0, 1, 1, 0): mean → ±0.5; mean-std (population, eps 1e-6) → ±0.5/(0.5 + 1e-6);
    loo → b = (2 − r_i)/3 = (2/3, 1/3, 1/3, 2/3) → (−2/3, 2/3, 2/3, −2/3); none → r."""
    adv, keep = LOSSES[name].advantages(rewards(REWARDS))
    assert flat(adv) == approx(expected)
    assert keep.all()


def test_dapo_drops_uniform_groups():
    """DAPO: group (1, 1, 1) is uniform → all not kept, A = 0. Group (1, 0, 0): r̄ = 1/3,
    σ² = (4/9 + 1/9 + 1/9)/3 = 2/9, σ = √2/3 → A = (2/3, −1/3, −1/3)/(√2/3 + 1e-6), kept."""
    adv, keep = LOSSES["dapo"].advantages(rewards([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]]))
    s = SQRT2 / 3 + 1e-6
    assert flat(adv) == approx([0.0, 0.0, 0.0, 2 / 3 / s, -1 / 3 / s, -1 / 3 / s])
    assert flat(keep) == [False, False, False, True, True, True]


def test_shaped_advantages_drop_uniform_groups_with_mean():
    """drop_uniform_groups with kind mean: (2, 2) → keep False, A = 0; (2, 0) → (1, −1)."""
    adv, keep = shaped_advantages(rewards([[2.0, 2.0], [2.0, 0.0]]), "mean",
                                  drop_uniform_groups=True)
    assert flat(adv) == [0.0, 0.0, 1.0, -1.0]
    assert flat(keep) == [False, False, True, True]
