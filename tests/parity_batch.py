"""The seeded batch every parity test uses: every clipping region populated, a ragged mask and
one fully masked row (so B and B′ differ), advantages of both signs and zero.

Shared by tests/test_parity_{trinity,verl,trl}.py. Regions, for ε = 0.2, dual clip c = 3 and
ring ε′ = (0.6, 2.0): A > 0 with ρ above / inside / below the band, A < 0 likewise, A < 0 with
ρ > 3 (dual clip), A ≥ 0 with ρ ≤ 0.4 and A ≤ 0 with ρ ≥ 3 (ring's outer regions), A = 0.
``check_regions`` asserts each is non-empty, so the batch cannot silently lose one.
"""

from __future__ import annotations

import torch

B, T = 8, 6


def parity_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logp [B, T], logp_old [B, T], advantages [B], mask [B, T] bool), float64."""
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(B, T, generator=g, dtype=torch.float64) * 2 - 0.05
    delta = torch.empty(B, T, dtype=torch.float64).uniform_(-1.6, 1.6, generator=g)
    delta[0, 0], delta[1, 1], delta[2, 2] = 1.5, 1.3, -1.2  # ρ ≈ 4.5, 3.7, 0.3
    logp_old = logp - delta
    adv = torch.tensor([1.0, -1.0, 0.5, -2.0, 0.0, 1.5, -0.7, 0.3], dtype=torch.float64)
    lengths = torch.tensor([6, 5, 6, 3, 4, 6, 2, 0])  # row 7 is fully masked
    mask = torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)
    return logp, logp_old, adv, mask


def check_regions(logp: torch.Tensor, logp_old: torch.Tensor, adv: torch.Tensor,
                  mask: torch.Tensor) -> None:
    rho = torch.exp(logp - logp_old)
    a = adv.unsqueeze(-1).expand_as(rho)
    regions = {
        "A>0, ρ>1.2": (a > 0) & (rho > 1.2), "A>0 in band": (a > 0) & (rho - 1).abs().le(0.2),
        "A>0, ρ<0.8": (a > 0) & (rho < 0.8), "A<0, ρ>1.2": (a < 0) & (rho > 1.2),
        "A<0 in band": (a < 0) & (rho - 1).abs().le(0.2), "A<0, ρ<0.8": (a < 0) & (rho < 0.8),
        "A<0, ρ>3 (dual)": (a < 0) & (rho > 3), "A≥0, ρ≤0.4 (ring)": (a >= 0) & (rho <= 0.4),
        "A≤0, ρ≥3 (ring)": (a <= 0) & (rho >= 3), "A=0": a == 0,
    }
    empty = [name for name, where in regions.items() if not bool((where & mask).any())]
    assert not empty, f"the parity batch lost its regions: {empty}"
    assert not bool(mask[-1].any()) and bool(mask[:-1].any(dim=1).all())
