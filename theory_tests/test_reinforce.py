"""Catalogue 4, 5, 8, 10, 14: expected REINFORCE-type gradients and their dynamics on bandits.

Each test runs one registered claim (``simulator.claims``, shared with ``grlab verify``):
exact enumeration through the loss code vs closed forms, plus Monte Carlo at 5 standard errors.
"""

from __future__ import annotations

import torch
from hypothesis import given, settings

from simulator.bandit import SoftmaxBandit
from simulator.claims import assert_claim
from simulator.claims.reinforce import _asymre_instance, asymre_kkt_checks
from simulator.claims.trees import _on_policy_gaps, rate_checks, rate_correction
from simulator.closed_forms import (
    asymre_fixed_point,
    reinforce_expected_logit_gradient,
    softmax_pg_rate_constant,
)
from simulator.exact import expected_gradient
from theory_tests.strategies import SEEDS, claim_examples, examples, sizes


@given(seed=SEEDS, size=sizes("4"))
@claim_examples("4")
def test_expected_group_reinforce_gradient_is_independent_of_theta(seed, size):
    """Tabular softmax, any μ: E[(1/K)·Σ_i (r_i − r̄)·∇_θ log π(y_i)] = (1 − 1/K)·μ⊙(r − E_μ r),
    the same at every θ (enumeration vs closed form at two θ; Monte Carlo within 5 SE).
    Source: paper §3 Pitfall 1 (the paper's numbers are the K → ∞ limit)."""
    assert_claim("4", seed, **size)


@given(seed=SEEDS, size=sizes("4b"))
@claim_examples("4b")
def test_on_deep_trees_the_expected_reinforce_gradient_depends_on_theta(seed, size):
    """Condition of claim 4 (one softmax over whole responses): with per-node softmaxes on a
    tree of depth ≥ 2 the expected gradient changes with θ. Source: derived here."""
    assert_claim("4b", seed, **size)


@settings(max_examples=examples(20))
@given(seed=SEEDS, size=sizes("5"))
@claim_examples("5")
def test_off_policy_reinforce_on_fixed_behavior_converges_to_a_suboptimal_arm(seed, size):
    """μ = [0.3, 0.6, 0.1], r = [0, 0.8, 1]: θ_t = θ_0 + t·η·(1 − 1/K)·[−0.174, 0.132, 0.042]
    exactly, so π_t → arm 2. Source: paper §3 Pitfall 1."""
    assert_claim("5", seed, **size)


@settings(max_examples=examples(20))
@given(seed=SEEDS, size=sizes("5b"))
@claim_examples("5b")
def test_on_policy_reinforce_and_mirror_descent_converge_to_the_optimal_arm(seed, size):
    """Same bandit: on-policy exact REINFORCE and mirror descent π_t ∝ π_0·e^{t·r/τ} put their
    mass on arm 3. Source: paper §3 Pitfall 1."""
    assert_claim("5b", seed, **size)


@settings(max_examples=examples(20))
@given(seed=SEEDS, size=sizes("8"))
@claim_examples("8")
def test_asymre_dynamics_converge_to_the_projected_fixed_point_when_v_below_mean(seed, size):
    """AsymRE under fixed μ with V < E_μ r (β > 0, V = E_μ r − βK/(K−1)): the exact expected
    dynamics converge to π(a) = max(0, μ(a)(r(a) − V) − λ)/(E_μ r − V), i.e. the simplex
    projection of μ⊙(r − V)/(E_μ r − V): its KKT conditions for the loss code's expected
    update on every instance, and the iterated dynamics reaching it where they converge in
    3000 steps. Source: Arnal et al. 2025; paper §5."""
    assert_claim("8", seed, **size)


@settings(max_examples=examples(20))
@given(seed=SEEDS, size=sizes("8b"))
@claim_examples("8b")
def test_asymre_support_collapses_when_v_at_or_above_mean(seed, size):
    """V ≥ E_μ r (β ≤ 0): the policy collapses onto a single response. Source: Arnal et al.
    2025; paper §5."""
    assert_claim("8b", seed, **size)


@given(seed=SEEDS, size=sizes("10"))
@claim_examples("10")
def test_grpo_std_normalisation_reweights_prompts_by_difficulty(seed, size):
    """Binary rewards, on-policy: E[Σ_i (r_i − r̄)/σ·∇log π(y_i)] = c_K(p)·∇p,
    c_K(p) = E_{m∼Bin(K,p)}[√(m(K−m))]/(p(1−p)); mean baseline: (K − 1)·∇p.
    Source: derived in closed_forms.grpo_std_factor (paper §8, GRPO)."""
    assert_claim("10", seed, **size)


@settings(max_examples=examples(30))
@given(seed=SEEDS, size=sizes("14"))
@claim_examples("14")
def test_on_policy_softmax_policy_gradient_converges_at_rate_one_over_t(seed, size):
    """Exact on-policy softmax PG: gap(t) = r* − E_{π_t} r = G/t·(1 + a(t)), G = m/((m+1)·η·
    (1 − 1/K)) (m sub-optimal arms), |a(t)| ≤ 2ε(t) = O(log t/t): the decay exponent between
    T/2 and T is 1 and T·gap/G is 1, each within the derived correction. Source: Mei et al.
    2020; G in closed_forms.softmax_pg_rate_constant, ε in claims.trees.rate_correction."""
    assert_claim("14", seed, **size)


@settings(max_examples=examples(20))
@given(seed=SEEDS, size=sizes("5c"))
@claim_examples("5c")
def test_iterated_surrogate_minimisation_off_policy_is_mirror_descent(seed, size):
    """Same bandit, fixed off-policy μ: argmin_θ E_μ[L̂(θ; π_t)] = π_t·e^{r/τ}/Z at each step,
    so iterating it is mirror descent π_t ∝ π_0·e^{t·r/τ}, which converges to arm 3.
    Source: paper §2–§3 (the surrogate, not its one-step REINFORCE, is off-policy safe)."""
    assert_claim("5c", seed, **size)


def _rate_problem():
    """Two prompts of three arms (gaps ≥ 0.2), η = 0.4, K = 2, T = 20000: G and ε at T/2, T."""
    r = torch.tensor([[0.1, 0.5, 0.9], [0.8, 0.2, 0.4]], dtype=torch.float64)
    lr, k, horizon = 0.4, 2, 20000
    eps = torch.stack([rate_correction(r, lr, k, t) for t in (horizon // 2, horizon)])
    return r, lr, k, horizon, softmax_pg_rate_constant(r, lr, k), eps


def test_the_rate_check_of_claim_14_rejects_laws_other_than_g_over_t():
    """Claim 14's check (``rate_checks``) on synthetic gaps: G/t·(1 + ε(t)) passes. The
    t^{−½} law c·G/√(T·t) fails the exponent (p = ½): with c = 1 it meets G exactly at T (so
    the exponent check is what catches it), and with c = 1.8 it passed the old check (t·gap/G
    within [½, 2] at T/10, T/4, T/2, T). 1.25·G/t fails the constant; e^{−t/5000} the exponent."""
    _, _, _, horizon, g, eps = _rate_problem()
    t = torch.tensor([[horizon / 2], [horizon]], dtype=torch.float64)
    assert all(c.passed for c in rate_checks(g / t * (1 + eps), horizon, g, eps))
    exponent, constant = rate_checks(g / torch.sqrt(horizon * t), horizon, g, eps)
    assert constant.passed and not exponent.passed
    old = torch.tensor([0.1, 0.25, 0.5, 1.0]) * horizon
    assert all(0.5 <= 1.8 * (s / horizon) ** 0.5 <= 2.0 for s in old.tolist())  # t·gap/G
    assert not rate_checks(1.8 * g / torch.sqrt(horizon * t), horizon, g, eps)[0].passed
    exponent, constant = rate_checks(1.25 * g / t, horizon, g, eps)
    assert exponent.passed and not constant.passed
    assert not rate_checks(torch.exp(-t / 5000.0) * g, horizon, g, eps)[0].passed


def test_the_rate_check_of_claim_14_rejects_the_true_dynamics_against_a_wrong_constant():
    """The exact dynamics pass against G = m/((m+1)·η·(1 − 1/K)) and fail against the
    constants of two plausible slips: without the 1/(m+1) (G·(m+1)) and without the
    (1 − 1/K) of the group baseline (G·(1 − 1/K))."""
    r, lr, k, horizon, g, eps = _rate_problem()
    theta = torch.tensor([[0.2, -0.1, 0.0], [0.1, 0.3, -0.2]], dtype=torch.float64)
    gaps = _on_policy_gaps(r, theta, lr, k, [horizon // 2, horizon])
    assert all(c.passed for c in rate_checks(gaps, horizon, g, eps))
    m = 2
    for wrong in (g * (m + 1), g * (1 - 1 / k)):
        assert not rate_checks(gaps, horizon, wrong, eps)[1].passed


def _asymre_case(seed: int = 0, k: int = 3, beta: float = 0.3):
    generator = torch.Generator().manual_seed(seed)
    env, mu, v = _asymre_instance(generator, 2, 4, k, beta)
    return env, mu, v, k, beta


def test_the_kkt_check_of_claim_8_rejects_points_that_are_not_the_fixed_point():
    """Claim 8 checks, on every instance, the KKT conditions of the projected fixed point
    against the loss code's exact expected update. The closed form passes to rounding; the
    projection with V = E_μ r − β (the K/(K − 1) forgotten) fails stationarity, μ itself fails,
    and the closed form with its smallest active arm moved to 0 fails (that arm's logit
    would drift up: dual feasibility, and the others' stationarity)."""
    env, mu, v, k, beta = _asymre_case()
    target = asymre_fixed_point(mu, env.rewards, v)
    assert all(c.passed for c in asymre_kkt_checks(env, mu, k, beta, target))
    wrong_v = asymre_fixed_point(mu, env.rewards, (mu * env.rewards).sum(-1) - beta)
    dropped = target.clone()
    smallest = torch.where(target > 0, target, torch.inf).argmin(-1)
    dropped[torch.arange(2), smallest] = 0.0
    dropped = dropped / dropped.sum(-1, keepdim=True)
    for wrong in (wrong_v, mu, dropped):
        checks = asymre_kkt_checks(env, mu, k, beta, wrong)
        assert not all(c.passed for c in checks)
        assert max(c.error for c in checks) > 1e-4


def test_expected_group_reinforce_gradient_with_a_zero_probability_response():
    """Boundary of claim 4: a behaviour that never samples a response (μ(a) = 0). The groups
    containing it have probability 0 and are left out; the expectation is still
    (1 − 1/K)·μ⊙(r − E_μ r) (0 at a), on every engine, and finite."""
    env = SoftmaxBandit(torch.tensor([[0.2, 0.9, 0.4, 0.0]], dtype=torch.float64))
    mu = torch.tensor([[0.5, 0.0, 0.3, 0.2]], dtype=torch.float64)
    theta = torch.tensor([[0.1, -0.3, 0.7, 0.0]], dtype=torch.float64)
    for k in (1, 2, 3):
        closed = -reinforce_expected_logit_gradient(mu, env.rewards, k)
        for method in ("auto", "enumerate", "sufficient", "ordered"):
            got = expected_gradient(env, theta, mu, "reinforce", k, method=method)
            torch.testing.assert_close(got, closed, rtol=1e-12, atol=1e-14)
