"""Catalogue 4, 5, 8, 10, 14: expected REINFORCE-type gradients and their dynamics on bandits.

Each test runs one registered claim (``simulator.claims``, shared with ``grlab verify``):
exact enumeration through the loss code vs closed forms, plus Monte Carlo at 5 standard errors.
"""

from __future__ import annotations

from hypothesis import given, settings

from simulator.claims import assert_claim
from theory_tests.strategies import SEEDS, examples, sizes


@given(seed=SEEDS, size=sizes("4"))
def test_expected_group_reinforce_gradient_is_independent_of_theta(seed, size):
    """Tabular softmax, any μ: E[(1/K)·Σ_i (r_i − r̄)·∇_θ log π(y_i)] = (1 − 1/K)·μ⊙(r − E_μ r),
    the same at every θ (enumeration vs closed form at two θ; Monte Carlo within 5 SE).
    Source: paper §3 Pitfall 1 (the paper's numbers are the K → ∞ limit)."""
    assert_claim("4", seed, **size)


@given(seed=SEEDS, size=sizes("4b"))
def test_on_deep_trees_the_expected_reinforce_gradient_depends_on_theta(seed, size):
    """Condition of claim 4 (one softmax over whole responses): with per-node softmaxes on a
    tree of depth ≥ 2 the expected gradient changes with θ. Source: derived here."""
    assert_claim("4b", seed, **size)


@settings(max_examples=examples(20))
@given(seed=SEEDS, size=sizes("5"))
def test_off_policy_reinforce_on_fixed_behavior_converges_to_a_suboptimal_arm(seed, size):
    """μ = [0.3, 0.6, 0.1], r = [0, 0.8, 1]: θ_t = θ_0 + t·η·(1 − 1/K)·[−0.174, 0.132, 0.042]
    exactly, so π_t → arm 2. Source: paper §3 Pitfall 1."""
    assert_claim("5", seed, **size)


@settings(max_examples=examples(20))
@given(seed=SEEDS, size=sizes("5b"))
def test_on_policy_reinforce_and_mirror_descent_converge_to_the_optimal_arm(seed, size):
    """Same bandit: on-policy exact REINFORCE and mirror descent π_t ∝ π_0·e^{t·r/τ} put their
    mass on arm 3. Source: paper §3 Pitfall 1."""
    assert_claim("5b", seed, **size)


@settings(max_examples=examples(20))
@given(seed=SEEDS, size=sizes("8"))
def test_asymre_dynamics_converge_to_the_projected_fixed_point_when_v_below_mean(seed, size):
    """AsymRE under fixed μ with V < E_μ r (β > 0, V = E_μ r − βK/(K−1)): the exact expected
    dynamics converge to π(a) = max(0, μ(a)(r(a) − V) − λ)/(E_μ r − V), i.e. the simplex
    projection of μ⊙(r − V)/(E_μ r − V). Source: Arnal et al. 2025; paper §5."""
    assert_claim("8", seed, **size)


@settings(max_examples=examples(20))
@given(seed=SEEDS, size=sizes("8b"))
def test_asymre_support_collapses_when_v_at_or_above_mean(seed, size):
    """V ≥ E_μ r (β ≤ 0): the policy collapses onto a single response. Source: Arnal et al.
    2025; paper §5."""
    assert_claim("8b", seed, **size)


@given(seed=SEEDS, size=sizes("10"))
def test_grpo_std_normalisation_reweights_prompts_by_difficulty(seed, size):
    """Binary rewards, on-policy: E[Σ_i (r_i − r̄)/σ·∇log π(y_i)] = c_K(p)·∇p,
    c_K(p) = E_{m∼Bin(K,p)}[√(m(K−m))]/(p(1−p)); mean baseline: (K − 1)·∇p.
    Source: derived in closed_forms.grpo_std_factor (paper §8, GRPO)."""
    assert_claim("10", seed, **size)


@settings(max_examples=examples(30))
@given(seed=SEEDS, size=sizes("14"))
def test_on_policy_softmax_policy_gradient_converges_at_rate_one_over_t(seed, size):
    """Exact on-policy softmax PG: t·(r* − E_{π_t} r) → m/((m+1)·η·(1 − 1/K)) (m sub-optimal
    arms), within [G/2, 2G] over t ∈ [T/10, T]: Θ(1/t). Source: Mei et al. 2020; the constant
    is derived in closed_forms.softmax_pg_rate_constant."""
    assert_claim("14", seed, **size)


@settings(max_examples=examples(20))
@given(seed=SEEDS, size=sizes("5c"))
def test_iterated_surrogate_minimisation_off_policy_is_mirror_descent(seed, size):
    """Same bandit, fixed off-policy μ: argmin_θ E_μ[L̂(θ; π_t)] = π_t·e^{r/τ}/Z at each step,
    so iterating it is mirror descent π_t ∝ π_0·e^{t·r/τ}, which converges to arm 3.
    Source: paper §2–§3 (the surrogate, not its one-step REINFORCE, is off-policy safe)."""
    assert_claim("5c", seed, **size)
