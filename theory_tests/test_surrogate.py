"""Catalogue 1, 2, 3, 9: the KL-regularised step and the pairwise surrogate (paper §2–§3).

Each test runs one registered claim (``simulator.claims``, shared with ``grlab verify``) on
instances drawn by hypothesis: a seed for the float64 draws and the claim's integer sizes.
"""

from __future__ import annotations

from hypothesis import given, settings

from simulator.claims import assert_claim
from theory_tests.strategies import SEEDS, claim_examples, examples, sizes


@settings(max_examples=examples(10))
@given(seed=SEEDS, size=sizes("1"))
@claim_examples("1")
def test_kl_regularized_optimum_maximises_regularised_reward(seed, size):
    """argmax_π E_π r − τ·KL(π‖π_t) = π_t·e^{r/τ}/Z (∇J = 0 there; damped Newton from π_t
    lands on it within 10‖∇J‖/λ_min). Source: paper §2 step 2."""
    assert_claim("1", seed, **size)


@given(seed=SEEDS, size=sizes("2"))
@claim_examples("2")
def test_one_step_of_pairwise_surrogate_is_group_relative_reinforce(seed, size):
    """∇L̂(θ)|_{θ=θ_t} = −(2τ/K)·Σ_i (r_i − r̄)·∇log π(y_i) = 2τ·∇(reinforce loss), for groups
    drawn uniformly (not from π_t), trees with and without EOS. Source: paper §2 step 5."""
    assert_claim("2", seed, **size)


@given(seed=SEEDS, size=sizes("2b"))
@claim_examples("2b")
def test_away_from_theta_t_the_surrogate_adds_a_log_ratio_variance_term(seed, size):
    """Condition of claim 2 (θ = θ_t): in general L̂ = const + 2τ·[REINFORCE loss +
    (τ/2K)·Σ_i (δ_i − δ̄)²], δ = log π_θ − log π_t, so away from θ_t the gradient differs
    from REINFORCE by that variance term. Source: paper §2 step 7."""
    assert_claim("2b", seed, **size)


@given(seed=SEEDS, size=sizes("3"))
@claim_examples("3")
def test_population_pairwise_surrogate_is_minimised_at_kl_optimum_under_coverage(seed, size):
    """μ with full support: argmin_θ E_{groups∼μ}[L̂(θ)] = π* = π_t·e^{r/τ}/Z, and E L̂(π*) = 0
    (Newton on the exact enumerated expectation from a random start). Source: paper §2 step 6."""
    assert_claim("3", seed, **size)


@given(seed=SEEDS, size=sizes("3b"))
@claim_examples("3b")
def test_without_coverage_the_population_minimiser_is_not_unique(seed, size):
    """μ(y) = 0 for one response: π* and a π' ≠ π* (mass moved onto the unseen response) both
    give E_μ L̂ = 0, so the minimiser is not unique. Source: paper §2 step 6."""
    assert_claim("3b", seed, **size)


@given(seed=SEEDS, size=sizes("3c"))
@claim_examples("3c")
def test_with_groups_of_one_the_surrogate_is_zero_for_every_policy(seed, size):
    """Condition K ≥ 2 of claim 3: with K = 1 there are no pairs, E_μ L̂ ≡ 0 and every policy
    is a minimiser. Source: paper §2 step 6."""
    assert_claim("3c", seed, **size)


@given(seed=SEEDS, size=sizes("9a"))
@claim_examples("9a")
def test_one_step_of_weighted_surrogate_is_weighted_reinforce(seed, size):
    """∇[(1/K²)·Σ_{i<j} w_i w_j (a_i − a_j)²]|_{θ_t} = −(2τ/K²)·W·Σ_i w_i (r_i − r̄_w)·∇log π(y_i),
    W = Σ w, r̄_w the w-mean. Finding: the issue's −2τ·W·Σ… omits the 1/K² that
    ``pairwise_surrogate`` (and the unweighted L̂) carries. Source: paper §3 Principle 2."""
    assert_claim("9a", seed, **size)


@given(seed=SEEDS, size=sizes("9b"))
@claim_examples("9b")
def test_kl_optimum_still_minimises_weighted_surrogate(seed, size):
    """For any w ≥ 0 and any group, L̂_w(π*) = 0 = min L̂_w and ∇L̂_w(π*) = 0.
    Source: paper §3 Principle 2."""
    assert_claim("9b", seed, **size)


@given(seed=SEEDS, size=sizes("9c"))
@claim_examples("9c")
def test_red_weight_pull_is_nonnegative_for_centred_advantages(seed, size):
    """Σ_i A_i = 0 ⇒ Σ_i A_i·e^{A_i/T} ≥ 0 (T > 0). Source: paper §6 RED-Weight."""
    assert_claim("9c", seed, **size)


@given(seed=SEEDS, size=sizes("9d"))
@claim_examples("9d")
def test_red_weight_pull_can_be_negative_without_centring(seed, size):
    """Condition of 9c: with Σ_i A_i < 0 (all A_i < 0) the sum Σ_i A_i·e^{A_i/T} is negative.
    Source: paper §6 (the centring condition)."""
    assert_claim("9d", seed, **size)
