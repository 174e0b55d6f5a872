"""The multi-prompt softmax bandit: P prompts × n one-token responses (as the paper's Pitfall 1).

Design decisions
----------------
* A bandit is the one-token case (H = 1) of ``simulator.responses.ResponseSpace``, which holds
  the shared representation (tokens, mask, decision nodes, behavior tables); ``ResponseSpace``
  and ``check_probs`` are re-exported here for the callers that import them from this module.
* float64 throughout; rewards are stored as given (checked finite, [P, n]).
"""

from __future__ import annotations

import torch
from torch import Tensor

from simulator.responses import ResponseSpace, check_probs
from simulator.validation import require_finite, require_float_tensor, require_ndim

__all__ = ["ResponseSpace", "SoftmaxBandit", "check_probs"]


class SoftmaxBandit(ResponseSpace):
    """P prompts × n responses, one token each: the exact testbed of the paper's Pitfall 1.

    ``rewards`` [P, n] (float64, finite). Logits are [P, n] (one softmax per prompt); the
    response space is n one-token sequences, so every loss sees ``logp`` [K, 1].
    """

    def __init__(self, rewards: Tensor) -> None:
        rewards = require_float_tensor("rewards", rewards)
        require_ndim("rewards", rewards, (2,), "a [P, n] table (prompts × responses)")
        if rewards.shape[1] < 1:
            raise ValueError("rewards must have at least one response per prompt")
        require_finite("rewards", rewards)
        self.rewards = rewards.to(torch.float64)
        n = rewards.shape[1]
        self.tokens = torch.arange(n).unsqueeze(-1)
        self.mask = torch.ones(n, 1, dtype=torch.bool)
        self.node_index = torch.zeros(n, 1, dtype=torch.long)
        self.num_nodes = 1
        self.vocab = n

    @property
    def logits_shape(self) -> tuple[int, ...]:
        return (self.num_prompts, self.vocab)

    def __repr__(self) -> str:
        return f"SoftmaxBandit(P={self.num_prompts}, n={self.vocab})"
