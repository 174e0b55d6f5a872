"""``simulator.policies``: behaviours are distributions over responses, the log-linear policy's
map to tabular logits, bad input."""

from __future__ import annotations

import pytest
import torch

from simulator.bandit import SoftmaxBandit
from simulator.policies import (
    LogLinearPolicy,
    fixed_behavior,
    mixture_behavior,
    policy_behavior,
    random_logits,
    tempered_behavior,
    uniform_behavior,
)
from simulator.tree import TreeMDP


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


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


@pytest.mark.parametrize("call,error,match", [
    (lambda: fixed_behavior(SoftmaxBandit(torch.zeros(1, 2, dtype=torch.float64)),
                            torch.tensor([[0.7, 0.7]], dtype=torch.float64)), ValueError, "sum"),
    (lambda: fixed_behavior(SoftmaxBandit(torch.zeros(1, 2, dtype=torch.float64)),
                            torch.tensor([[1.5, -0.5]], dtype=torch.float64)), ValueError, ">= 0"),
    (lambda: mixture_behavior([0.5], []), ValueError, "equal length"),
    (lambda: tempered_behavior(SoftmaxBandit(torch.zeros(1, 2, dtype=torch.float64)),
                               torch.zeros(1, 2, dtype=torch.float64), 0.0), ValueError, "> 0"),
])
def test_bad_input_is_a_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_truncated_behavior_is_the_llm_samplers_response_distribution():
    """μ(y) = Π_l μ(y^l | y^<l) with each step drawn from sampling_logprobs (temperature, top-k,
    top-p): a distribution; without truncation it is the tempered policy; a response through a
    truncated token has μ = 0; the per-step law is the sampler's, checked by walking each
    path by hand."""
    from simulator.policies import sampling_logprobs, tempered_behavior, truncated_behavior
    from simulator.tree import TreeMDP

    g = torch.Generator().manual_seed(3)
    env = TreeMDP.random(2, 3, 2, True, g)
    logits = 2.0 * random_logits(env, g)
    torch.testing.assert_close(truncated_behavior(env, logits, temperature=0.7),
                               tempered_behavior(env, logits, 0.7), rtol=1e-12, atol=0)
    for options in ({"top_k": 2}, {"top_p": 0.6}, {"temperature": 1.5, "top_k": 2,
                                                   "top_p": 0.8}):
        mu = truncated_behavior(env, logits, **options)
        torch.testing.assert_close(mu.sum(-1), torch.ones(2, dtype=torch.float64))
        assert bool((mu == 0).any())
        steps = sampling_logprobs(logits.reshape(2, env.num_nodes, env.vocab), **options)
        for p in range(2):
            for y in range(env.num_responses):
                by_hand = 1.0
                for node, token, valid in zip(env.node_index[y], env.tokens[y], env.mask[y],
                                              strict=True):
                    if valid:
                        by_hand *= float(steps[p, node, token].exp())
                assert abs(float(mu[p, y]) - by_hand) < 1e-12
    with pytest.raises(ValueError, match="top_p"):
        truncated_behavior(env, logits, top_p=0.0)
    with pytest.raises(ValueError, match="top_k"):
        truncated_behavior(env, logits, top_k=0)
