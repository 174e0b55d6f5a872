"""Response spaces for exact work: the enumerated responses every testbed shares.

Design decisions
----------------
* Every testbed enumerates its complete responses as token sequences with a mask, exactly the
  shape the LLM bridge hands to the losses: ``tokens`` [N, H], ``mask`` [N, H] (True on the
  response's own tokens, left-aligned), ``rewards`` [P, N] for P prompts. The bandit
  (``simulator.bandit``) is the one-token case (H = 1); ``simulator.tree.TreeMDP`` is the
  general one. Both subclass ``ResponseSpace``, which lives here rather than beside either.
* A tabular softmax policy has one logit vector per decision node: ``logits`` [P, M, b] for M
  nodes (token prefixes) and b tokens. ``node_index`` [N, H] names the node at which each token
  was chosen, so log π(y^l | x, y^<l) = log_softmax(logits)[x, node_index[y, l], tokens[y, l]].
* A behavior policy is any distribution over complete responses, ``probs`` [P, N] (checked by
  ``check_probs``). Its per-token log-probs (the ``logp_old`` a loss sees) are recovered from
  prefix masses: μ(y^l | y^<l) = m(y^≤l)/m(y^<l), m(prefix) = Σ_{y ⊒ prefix} μ(y). So
  mixtures, older parameters, tempered policies and arbitrary fixed tables all have one
  representation.
* float64 throughout; rewards are stored as given (checked finite, [P, N]).
"""

from __future__ import annotations

import torch
from torch import Tensor

from simulator.validation import require_finite, require_float_tensor

__all__ = ["ResponseSpace", "check_probs"]


def check_probs(name: str, probs: object, shape: tuple[int, ...], atol: float = 1e-9) -> Tensor:
    """A [P, N] table of distributions: finite, ≥ 0, each row summing to 1 (within ``atol``)."""
    probs = require_float_tensor(name, probs)
    if tuple(probs.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)} (prompts × responses), "
                         f"got {tuple(probs.shape)}")
    require_finite(name, probs)
    if bool((probs < 0).any()):
        raise ValueError(f"{name} must be >= 0 (a distribution over responses)")
    row_sums = probs.sum(dim=-1)
    if bool(((row_sums - 1).abs() > atol).any()):
        raise ValueError(f"each row of {name} must sum to 1, got sums {row_sums.tolist()}")
    return probs


class ResponseSpace:
    """The enumerated responses of a testbed: tokens, mask, decision nodes and rewards.

    Subclasses set ``tokens`` [N, H] (long), ``mask`` [N, H] (bool), ``node_index`` [N, H]
    (long; 0 at padding), ``num_nodes`` M, ``vocab`` b and ``rewards`` [P, N] (float64).
    """

    tokens: Tensor
    mask: Tensor
    node_index: Tensor
    num_nodes: int
    vocab: int
    rewards: Tensor

    @property
    def num_prompts(self) -> int:
        return self.rewards.shape[0]

    @property
    def num_responses(self) -> int:
        return self.tokens.shape[0]

    @property
    def horizon(self) -> int:
        return self.tokens.shape[1]

    @property
    def lengths(self) -> Tensor:
        """L(y) [N]: the number of valid tokens of each response."""
        return self.mask.sum(dim=-1)

    @property
    def logits_shape(self) -> tuple[int, ...]:
        return (self.num_prompts, self.num_nodes, self.vocab)

    def check_logits(self, logits: object) -> Tensor:
        logits = require_float_tensor("logits", logits)
        if tuple(logits.shape) != self.logits_shape:
            raise ValueError(f"logits must have shape {self.logits_shape} for this "
                             f"{type(self).__name__}, got {tuple(logits.shape)}")
        return logits

    def token_logprobs(self, logits: Tensor) -> Tensor:
        """log π(y^l | x, y^<l) [P, N, H] of a tabular softmax policy (0 at padding)."""
        logits = self.check_logits(logits)
        node_logp = torch.log_softmax(logits.reshape(self.num_prompts, self.num_nodes,
                                                     self.vocab), dim=-1)
        gathered = node_logp[:, self.node_index, self.tokens]
        return torch.where(self.mask, gathered, gathered.new_zeros(()))

    def sequence_logprobs(self, logits: Tensor) -> Tensor:
        """log π(y | x) = Σ_l log π(y^l | x, y^<l), [P, N]."""
        return self.token_logprobs(logits).sum(dim=-1)

    def sequence_probs(self, logits: Tensor) -> Tensor:
        """π(y | x) [P, N]: the distribution over complete responses."""
        return self.sequence_logprobs(logits).exp()

    def reward_gradient(self, logits: Tensor, *, anchor: Tensor | None = None,
                        tau: float = 0.0) -> Tensor:
        """∇_logits of J − τ·KL(π_θ ‖ anchor), J = (1/P)·Σ_p Σ_y π_θ(y|p)·r(p, y), the KL a
        prompt mean over responses: with ``tau`` = 0 the exact policy gradient ∇J (the ascent
        direction every expected update is compared with); with an ``anchor`` π_t [P, N] the
        gradient of the paper's KL-regularised step (its maximiser π_t·e^{r/τ}/Z), which equals
        ∇J at π_θ = π_t. By autograd of the exact sums."""
        logits = self.check_logits(logits).detach().to(torch.float64).requires_grad_(True)
        probs = self.sequence_probs(logits)
        value = (probs * self.rewards).sum()
        if tau:
            if anchor is None:
                raise ValueError("tau > 0 needs anchor (the policy π_t the KL is taken to)")
            anchor = check_probs("anchor", anchor, (self.num_prompts, self.num_responses))
            if bool(((anchor == 0) & (probs.detach() > 0)).any()):
                raise ValueError("anchor gives probability 0 to a response π_θ can produce: "
                                 "KL(π_θ ‖ anchor) is infinite")
            log_ratio = torch.log(probs) - torch.log(anchor.to(torch.float64))
            value = value - tau * (probs * log_ratio).sum()
        (grad,) = torch.autograd.grad(value / self.num_prompts, logits)
        return grad

    def node_mass(self, probs: Tensor) -> Tensor:
        """m(node) [P, M] = Σ_{y through node} μ(y): the probability of reaching each prefix."""
        visits = torch.zeros(self.num_responses, self.num_nodes, dtype=probs.dtype)
        rows = torch.arange(self.num_responses).unsqueeze(-1).expand_as(self.node_index)
        visits[rows[self.mask], self.node_index[self.mask]] = 1.0
        return probs @ visits

    def token_logprobs_of(self, probs: Tensor) -> Tensor:
        """Per-token log μ(y^l | y^<l) [P, N, H] of a distribution ``probs`` [P, N] over responses.

        μ(y^l | y^<l) = m(y^≤l)/m(y^<l); the last token's numerator is μ(y) itself. Responses
        with μ(y) = 0 get −inf somewhere (they are never sampled); padding gets 0.
        """
        probs = check_probs("probs", probs, (self.num_prompts, self.num_responses))
        mass = self.node_mass(probs)  # [P, M]
        before = mass[:, self.node_index]  # m(y^<l): mass of the node the token is chosen at
        next_node = torch.roll(self.node_index, shifts=-1, dims=1)
        is_last = self.mask & ~torch.roll(self.mask, shifts=-1, dims=1)
        is_last[:, -1] = self.mask[:, -1]
        after = torch.where(is_last, probs.unsqueeze(-1), mass[:, next_node])
        logp = torch.log(after) - torch.log(before)
        safe = torch.where(after > 0, logp, torch.full_like(logp, -torch.inf))
        return torch.where(self.mask, safe, safe.new_zeros(()))
