"""Policy parametrisations and behavior policies for the exact testbeds.

Design decisions
----------------
* The exact machinery works on *tabular logits* (``env.logits_shape``: [P, n] for a bandit,
  [P, M, b] for a tree). A parametrisation is a map θ ↦ logits: ``tabular`` is the identity,
  ``LogLinearPolicy`` is logits = Φ·w with shared features Φ [*logits_shape, d], so responses
  generalise to each other as they do in an LLM (a tabular policy cannot). Gradients with
  respect to w come from autograd through that map.
* A behavior policy μ is a distribution over complete responses, ``probs`` [P, N]: a fixed
  table, an older parameter vector, a mixture, a tempered policy — one representation, and the
  testbed recovers its per-token log-probs (``env.token_logprobs_of``). All are detached: the
  sampling distribution is never differentiated.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from simulator.responses import ResponseSpace, check_probs
from simulator.validation import require_float_tensor, require_positive

__all__ = [
    "LogLinearPolicy",
    "fixed_behavior",
    "mixture_behavior",
    "policy_behavior",
    "random_logits",
    "tempered_behavior",
    "uniform_behavior",
]


def random_logits(env: ResponseSpace, generator: torch.Generator, scale: float = 1.0) -> Tensor:
    """Tabular logits ∼ scale·N(0, 1) of ``env.logits_shape`` (float64) from ``generator``."""
    require_positive("scale", scale)
    return scale * torch.randn(env.logits_shape, generator=generator, dtype=torch.float64)


class LogLinearPolicy:
    """logits = Φ·w: a log-linear softmax with features Φ [*env.logits_shape, d] shared across
    prompts, nodes and tokens (π(a|s) ∝ exp(φ(s, a)ᵀw))."""

    def __init__(self, env: ResponseSpace, features: Tensor) -> None:
        features = require_float_tensor("features", features)
        if tuple(features.shape[:-1]) != env.logits_shape or features.ndim != len(
                env.logits_shape) + 1:
            raise ValueError(f"features must have shape {(*env.logits_shape, 'd')}, "
                             f"got {tuple(features.shape)}")
        self.env = env
        self.features = features

    @property
    def dim(self) -> int:
        return self.features.shape[-1]

    def logits(self, weights: Tensor) -> Tensor:
        """Tabular logits Φ·w of ``env.logits_shape`` (differentiable in ``weights`` [d])."""
        weights = require_float_tensor("weights", weights)
        if tuple(weights.shape) != (self.dim,):
            raise ValueError(f"weights must have shape ({self.dim},), got {tuple(weights.shape)}")
        return self.features @ weights

    @classmethod
    def random(cls, env: ResponseSpace, dim: int, generator: torch.Generator) -> LogLinearPolicy:
        shape = (*env.logits_shape, dim)
        return cls(env, torch.randn(shape, generator=generator, dtype=torch.float64))


def fixed_behavior(env: ResponseSpace, probs: Tensor) -> Tensor:
    """Any fixed distribution over responses, ``probs`` [P, N] (checked), as float64."""
    probs = check_probs("probs", probs, (env.num_prompts, env.num_responses))
    return probs.detach().to(torch.float64)


def uniform_behavior(env: ResponseSpace) -> Tensor:
    """μ(y) = 1/N for every prompt."""
    n = env.num_responses
    return torch.full((env.num_prompts, n), 1.0 / n, dtype=torch.float64)


def policy_behavior(env: ResponseSpace, logits: Tensor) -> Tensor:
    """The response distribution of a tabular softmax policy (e.g. an older θ), detached."""
    return env.sequence_probs(logits.detach()).to(torch.float64)


def tempered_behavior(env: ResponseSpace, logits: Tensor, temperature: float) -> Tensor:
    """Token-level sampling at temperature T: π_T(a|s) ∝ exp(logits(s, a)/T), as LLM samplers do."""
    temperature = require_positive("temperature", temperature)
    return policy_behavior(env, logits / temperature)


def mixture_behavior(weights: Sequence[float], behaviors: Sequence[Tensor]) -> Tensor:
    """μ = Σ_j α_j·μ_j over responses (α ≥ 0, Σ α = 1); e.g. a mix of stale and fresh rollouts."""
    if len(weights) != len(behaviors) or not behaviors:
        raise ValueError("weights and behaviors must be non-empty and of equal length, "
                         f"got {len(weights)} and {len(behaviors)}")
    alpha = torch.tensor([float(w) for w in weights], dtype=torch.float64)
    if bool((alpha < 0).any()) or abs(float(alpha.sum()) - 1.0) > 1e-12:
        raise ValueError(f"weights must be >= 0 and sum to 1, got {alpha.tolist()}")
    stacked = torch.stack([b.to(torch.float64) for b in behaviors])
    return torch.einsum("j,jpn->pn", alpha, stacked)
