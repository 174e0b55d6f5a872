"""The extra tensors a registered loss declares (``LossSpec.inputs``), for tests that call every
loss of the registry: generic, by input name, never by loss name."""

from __future__ import annotations

import torch

from simulator.losses import LOSSES


def extra_inputs(name: str, logp_old: torch.Tensor) -> dict[str, torch.Tensor]:
    """``logp_rollout`` (μ) and ``logp_ref``: ``logp_old`` shifted by a fixed ±0.3 pattern (so
    μ differs from π_old on some tokens and not on others); ``entropy``: 1. Same shape, dtype
    and device as ``logp_old``; masked positions may hold whatever ``logp_old`` holds."""
    out = {}
    for item in LOSSES[name].inputs:
        if item == "entropy":
            out[item] = torch.ones_like(logp_old)
            continue
        pattern = torch.tensor([0.3, 0.0, -0.3], dtype=torch.float64, device=logp_old.device)
        shift = pattern.repeat(logp_old.shape[-1] // 3 + 1)[: logp_old.shape[-1]]
        out[item] = (logp_old.detach().to(torch.float64) + shift).to(logp_old.dtype)
    return out
