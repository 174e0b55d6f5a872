"""Catalogue 4, 4b, 5, 8, 10, 14 (``simulator/claims/reinforce.py``): expected REINFORCE-type
gradients and their dynamics. One hypothesis test per claim, generated from the catalogue
(``strategies.claim_tests``; ``grlab verify`` runs the same checks), then tests that the checks
of claims 8 and 14 reject wrong answers, and claim 4 at a zero-probability response.
"""

from __future__ import annotations

import torch

from simulator.bandit import SoftmaxBandit
from simulator.claims.reinforce import (
    _asymre_instance,
    _on_policy_gaps,
    asymre_kkt_checks,
    rate_checks,
    rate_correction,
)
from simulator.closed_forms import (
    asymre_fixed_point,
    reinforce_expected_logit_gradient,
    softmax_pg_rate_constant,
)
from simulator.exact import expected_gradient
from theory_tests.strategies import claim_tests

globals().update(claim_tests("reinforce", __name__))


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
