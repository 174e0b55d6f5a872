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
