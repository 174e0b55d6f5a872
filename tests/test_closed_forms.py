"""``simulator.closed_forms``: each closed form against its definition or a brute-force twin,
the paper's numbers, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from simulator.closed_forms import (
    asymre_fixed_point,
    grpo_std_factor,
    kl_regularized_optimum,
    mirror_descent_iterates,
    reinforce_expected_logit_gradient,
    simplex_projection,
    soft_bellman_policy,
)
from simulator.tree import TreeMDP


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_simplex_projection_matches_brute_force_kkt():
    g = gen(11)
    for _ in range(50):
        u = torch.randn(5, generator=g, dtype=torch.float64)
        p = simplex_projection(u)
        assert math.isclose(float(p.sum()), 1.0, abs_tol=1e-12) and bool((p >= 0).all())
        # KKT: u − p = λ on the support, u − p ≤ λ off it
        lam = (u - p)[p > 0]
        assert float(lam.max() - lam.min()) < 1e-12
        assert bool(((u - p)[p == 0] <= lam.max() + 1e-12).all())


def test_closed_forms_agree_with_their_definitions_on_small_cases():
    pi_t = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    r = torch.tensor([1.0, 0.0, 0.5], dtype=torch.float64)
    star = kl_regularized_optimum(pi_t, r, 0.5)
    torch.testing.assert_close(star, pi_t * torch.exp(r / 0.5) / (pi_t * torch.exp(r / 0.5)).sum())
    torch.testing.assert_close(mirror_descent_iterates(pi_t, r, 0.5, 1)[1], star)
    # the paper's Pitfall-1 numbers, as K → ∞
    mu = torch.tensor([0.3, 0.6, 0.1], dtype=torch.float64)
    arms = torch.tensor([0.0, 0.8, 1.0], dtype=torch.float64)
    torch.testing.assert_close(reinforce_expected_logit_gradient(mu, arms, 10**9),
                               torch.tensor([-0.174, 0.132, 0.042], dtype=torch.float64))
    # c_K(p) by hand for K = 2: E√(m(2−m)) = 2p(1−p) → c = 2 = K for every p
    assert math.isclose(grpo_std_factor(0.3, 2), 2.0, rel_tol=1e-12)
    assert math.isclose(grpo_std_factor(0.5, 1), 0.0, abs_tol=1e-15)


def test_asymre_fixed_point_is_interior_when_every_reward_beats_v():
    mu = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    r = torch.tensor([1.0, 0.6, 0.8], dtype=torch.float64)
    v = 0.1
    expected = mu * (r - v) / ((mu * r).sum() - v)
    torch.testing.assert_close(asymre_fixed_point(mu, r, v), expected)
    with pytest.raises(ValueError, match="collapses"):
        asymre_fixed_point(mu, r, float((mu * r).sum()))


def test_soft_bellman_rejects_a_reference_of_the_wrong_shape():
    tree = TreeMDP.random(1, 2, 2, False, gen(12))
    with pytest.raises(ValueError, match="pi_t must have shape"):
        soft_bellman_policy(tree, torch.zeros(1, 2, dtype=torch.float64), 1.0)


@pytest.mark.parametrize("call,error,match", [
    (lambda: kl_regularized_optimum(torch.ones(2, dtype=torch.float64) / 2,
                                    torch.zeros(3, dtype=torch.float64), 1.0), ValueError, "shape"),
    (lambda: grpo_std_factor(1.0, 3), ValueError, "p must be in"),
])
def test_bad_input_is_a_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()
