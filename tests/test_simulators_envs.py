"""Testbeds, policies and closed forms: structure, naive twins, bad input."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from simulator.bandit import SoftmaxBandit
from simulator.closed_forms import (
    asymre_fixed_point,
    grpo_std_factor,
    kl_regularized_optimum,
    mirror_descent_iterates,
    reinforce_expected_logit_gradient,
    simplex_projection,
    soft_bellman_policy,
)
from simulator.policies import (
    LogLinearPolicy,
    fixed_behavior,
    mixture_behavior,
    policy_behavior,
    random_logits,
    tempered_behavior,
    uniform_behavior,
)
from simulator.tree import EOS, TreeMDP


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("vocab,depth,eos", [(2, 1, False), (3, 2, False), (2, 3, True),
                                             (3, 3, True), (4, 2, True)])
def test_tree_enumerates_every_response_once_in_the_bridge_layout(vocab, depth, eos):
    tree = TreeMDP.random(2, vocab, depth, eos, gen())
    assert tree.num_responses == TreeMDP.count(vocab, depth, eos)
    assert tree.tokens.shape == tree.mask.shape == (tree.num_responses, depth)
    sequences = [tuple(t[m].tolist()) for t, m in zip(tree.tokens, tree.mask, strict=True)]
    assert len(set(sequences)) == len(sequences)
    # naive twin: every token string a sampler could produce, built by brute force
    expected = set()
    for length in range(1, depth + 1):
        for seq in itertools.product(range(vocab), repeat=length):
            ends = length == depth or (eos and seq[-1] == EOS)
            early_eos = eos and EOS in seq[:-1]
            if ends and not early_eos:
                expected.add(seq)
    assert set(sequences) == expected
    assert bool(tree.mask[:, 0].all()) and bool((tree.mask[:, :-1] >= tree.mask[:, 1:]).all())


def test_tree_probabilities_sum_to_one_and_per_token_logprobs_round_trip():
    tree = TreeMDP.random(3, 3, 3, True, gen(1))
    logits = random_logits(tree, gen(2))
    probs = tree.sequence_probs(logits)
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, dtype=torch.float64))
    recovered = tree.token_logprobs_of(probs)
    torch.testing.assert_close(recovered, tree.token_logprobs(logits), rtol=1e-10, atol=1e-12)


def test_bandit_is_the_one_token_tree():
    rewards = torch.rand(2, 4, generator=gen(3), dtype=torch.float64)
    bandit, tree = SoftmaxBandit(rewards), TreeMDP(rewards, 4, 1)
    logits = random_logits(bandit, gen(4))
    torch.testing.assert_close(bandit.token_logprobs(logits),
                               tree.token_logprobs(logits.unsqueeze(1)))


def test_behaviours_are_distributions_over_responses():
    tree = TreeMDP.random(2, 2, 3, True, gen(5))
    a, b = random_logits(tree, gen(6)), random_logits(tree, gen(7))
    mix = mixture_behavior([0.25, 0.75], [policy_behavior(tree, a), policy_behavior(tree, b)])
    torch.testing.assert_close(mix.sum(-1), torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(tempered_behavior(tree, a, 1.0), policy_behavior(tree, a))
    hot = tempered_behavior(tree, a, 1e6)  # token-level uniform, not response-level uniform
    uniform_tokens = policy_behavior(tree, torch.zeros_like(a))
    torch.testing.assert_close(hot, uniform_tokens, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(fixed_behavior(tree, uniform_behavior(tree)).sum(-1),
                               torch.ones(2, dtype=torch.float64))


def test_log_linear_policy_maps_weights_to_tabular_logits():
    tree = TreeMDP.random(1, 2, 2, False, gen(8))
    policy = LogLinearPolicy.random(tree, 5, gen(9))
    w = torch.randn(5, generator=gen(10), dtype=torch.float64)
    assert policy.logits(w).shape == tree.logits_shape
    with pytest.raises(ValueError, match="weights must have shape"):
        policy.logits(torch.zeros(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="features must have shape"):
        LogLinearPolicy(tree, torch.zeros(2, 2, dtype=torch.float64))


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
    (lambda: SoftmaxBandit(torch.zeros(2, 3, dtype=torch.long)), TypeError, "floating"),
    (lambda: SoftmaxBandit(torch.zeros(3, dtype=torch.float64)), ValueError, r"\[P, n\]"),
    (lambda: SoftmaxBandit(torch.tensor([[0.0, float("nan")]])), ValueError, "NaN"),
    (lambda: TreeMDP(torch.zeros(1, 3, dtype=torch.float64), 2, 2), ValueError, "N = 4"),
    (lambda: TreeMDP.count(1, 2), ValueError, "vocab must be >= 2"),
    (lambda: TreeMDP.count(2, 0), ValueError, "depth must be >= 1"),
    (lambda: TreeMDP.count(2, 2, eos=1), TypeError, "eos must be a bool"),
    (lambda: fixed_behavior(SoftmaxBandit(torch.zeros(1, 2, dtype=torch.float64)),
                            torch.tensor([[0.7, 0.7]], dtype=torch.float64)), ValueError, "sum"),
    (lambda: fixed_behavior(SoftmaxBandit(torch.zeros(1, 2, dtype=torch.float64)),
                            torch.tensor([[1.5, -0.5]], dtype=torch.float64)), ValueError, ">= 0"),
    (lambda: mixture_behavior([0.5], []), ValueError, "equal length"),
    (lambda: tempered_behavior(SoftmaxBandit(torch.zeros(1, 2, dtype=torch.float64)),
                               torch.zeros(1, 2, dtype=torch.float64), 0.0), ValueError, "> 0"),
    (lambda: kl_regularized_optimum(torch.ones(2, dtype=torch.float64) / 2,
                                    torch.zeros(3, dtype=torch.float64), 1.0), ValueError, "shape"),
    (lambda: grpo_std_factor(1.0, 3), ValueError, "p must be in"),
])
def test_bad_input_is_a_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()
