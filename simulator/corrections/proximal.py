"""AReaL's approximation of the proximal policy's log-probs from μ's and π_θ's (decoupled PPO
without a third forward pass)."""

from __future__ import annotations

import torch
from torch import Tensor

from simulator.corrections.core import (
    PROXIMAL_METHODS,
)
from simulator.validation import (
    require_choice,
)


def proximal_logp(logp_rollout: Tensor, logp: Tensor, versions: Tensor, current_version: int,
                  *, method: str = "loglinear") -> Tensor:
    """AReaL's approximation of π_prox (the policy one update behind π_θ) without a forward
    pass (``prox_logp_method="loglinear"``; AReaL 4aef98d areal/trainer/ppo/actor.py
    ``compute_prox_logp_approximations``).

    With v the version that generated each token (``versions``, < 0 for prompt tokens),
    v_θ = ``current_version`` and v_prox = v_θ − 1:
    α = clamp((v_prox − v)/(v_θ − v), 0, 1) where v ≥ 0 and v_θ > v, else 0;
    loglinear: log π_prox = (1 − α)·log μ + α·log π_θ; linear: log((1 − α)·μ + α·π_θ)
    (AReaL adds 1e-10 inside the log; grlab computes it exactly with logaddexp);
    rollout: log μ. Returns a detached float64 tensor of the inputs' shape.
    """
    require_choice("method", method, PROXIMAL_METHODS)
    if logp_rollout.shape != logp.shape or versions.shape != logp.shape:
        raise ValueError(f"logp_rollout, logp and versions must share one shape, got "
                         f"{tuple(logp_rollout.shape)}, {tuple(logp.shape)}, "
                         f"{tuple(versions.shape)}")
    if isinstance(current_version, bool) or not isinstance(current_version, int):
        raise TypeError(f"current_version must be an int, got {type(current_version).__name__}")
    mu = logp_rollout.detach().to(torch.float64)
    theta = logp.detach().to(torch.float64)
    v = versions.to(torch.float64)
    diff = current_version - v
    alpha = torch.where((diff > 0) & (versions >= 0), (current_version - 1 - v) / diff.clamp(
        min=1.0), torch.zeros_like(v)).clamp(0.0, 1.0)
    if method == "rollout":
        return mu.clone()
    if method == "loglinear":
        return mu + alpha * (theta - mu)
    return torch.logaddexp(torch.log1p(-alpha) + mu, torch.log(alpha) + theta)
