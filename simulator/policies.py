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
    "sampling_logprobs",
    "tempered_behavior",
    "truncated_behavior",
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


def sampling_logprobs(logits: Tensor, temperature: float = 1.0, top_p: float = 1.0,
                      top_k: int | None = None) -> Tensor:
    """log μ [..., V] of the distribution an LLM sampler draws from at one position:
    softmax(logits / T), restricted to the ``top_k`` most likely tokens (when given) and
    renormalised, then truncated to the smallest set of most likely tokens whose mass reaches
    ``top_p`` (the most likely token is always kept), renormalised; −inf outside the kept set.
    float64 logits stay float64, anything else is computed in float32 (the trainer's sampler,
    ``llm_bridge.rollout``, and the exact engines' ``truncated_behavior`` share this)."""
    logits = logits if logits.dtype == torch.float64 else logits.float()
    logp = torch.log_softmax(logits / temperature, dim=-1)
    if top_k is not None and top_k < logp.shape[-1]:
        kept = torch.zeros_like(logp, dtype=torch.bool).scatter(
            -1, logp.topk(top_k, dim=-1).indices, True)
        logp = torch.where(kept, logp, torch.full_like(logp, -torch.inf))
        logp = logp - torch.logsumexp(logp, dim=-1, keepdim=True)
    if top_p >= 1.0:
        return logp
    sorted_logp, order = logp.sort(dim=-1, descending=True)
    mass_before = sorted_logp.exp().cumsum(dim=-1) - sorted_logp.exp()
    drop_sorted = mass_before >= top_p  # the first token has mass_before 0 < top_p: kept
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    kept = torch.where(drop, torch.full_like(logp, -torch.inf), logp)
    return kept - torch.logsumexp(kept, dim=-1, keepdim=True)


def truncated_behavior(env: ResponseSpace, logits: Tensor, *, temperature: float = 1.0,
                       top_p: float = 1.0, top_k: int | None = None) -> Tensor:
    """The response distribution of an LLM sampler on a tabular softmax policy: at every node
    the token is drawn from ``sampling_logprobs`` (temperature, then top-k, then top-p, each
    renormalised); μ(y) is the product along y's path (0 for a response with a truncated
    token). Detached, float64, [P, N]."""
    temperature = require_positive("temperature", temperature)
    if not 0.0 < float(top_p) <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int)
                              or top_k < 1):
        raise ValueError(f"top_k must be None or an int >= 1, got {top_k!r}")
    z = env.check_logits(logits).detach().to(torch.float64)
    node_logp = sampling_logprobs(z.reshape(env.num_prompts, env.num_nodes, env.vocab),
                                  temperature, top_p, top_k)
    gathered = node_logp[:, env.node_index, env.tokens]
    per_token = torch.where(env.mask, gathered, gathered.new_zeros(()))
    return per_token.sum(dim=-1).exp()


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
