"""``simulator.bandit``: the bandit is the one-token tree; bad input."""

from __future__ import annotations

import pytest
import torch

from simulator.bandit import SoftmaxBandit
from simulator.policies import random_logits
from simulator.tree import TreeMDP


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_bandit_is_the_one_token_tree():
    rewards = torch.rand(2, 4, generator=gen(3), dtype=torch.float64)
    bandit, tree = SoftmaxBandit(rewards), TreeMDP(rewards, 4, 1)
    logits = random_logits(bandit, gen(4))
    torch.testing.assert_close(bandit.token_logprobs(logits),
                               tree.token_logprobs(logits.unsqueeze(1)))


@pytest.mark.parametrize("call,error,match", [
    (lambda: SoftmaxBandit(torch.zeros(2, 3, dtype=torch.long)), TypeError, "floating"),
    (lambda: SoftmaxBandit(torch.zeros(3, dtype=torch.float64)), ValueError, r"\[P, n\]"),
    (lambda: SoftmaxBandit(torch.tensor([[0.0, float("nan")]])), ValueError, "NaN"),
])
def test_bad_input_is_a_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()
