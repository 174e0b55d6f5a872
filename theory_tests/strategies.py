"""Hypothesis strategies shared by the theory and contract tests: random loss inputs.

A ``LossCase`` is a batch of B sequences of T tokens (float64): current log-probs, behaviour
log-probs at a chosen log-ratio scale, advantages per sequence or per token, and a mask with at
least one valid token in every row (rows may have different lengths).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from hypothesis import strategies as st


@dataclass
class LossCase:
    logp: torch.Tensor
    logp_old: torch.Tensor
    adv: torch.Tensor
    mask: torch.Tensor

    def leaf(self) -> torch.Tensor:
        """A fresh copy of ``logp`` that requires grad."""
        return self.logp.clone().requires_grad_(True)


@st.composite
def loss_cases(draw, *, per_token_adv: bool | None = None, max_log_ratio: float = 2.0,
               on_policy: bool = False, max_b: int = 4, max_t: int = 5) -> LossCase:
    b = draw(st.integers(1, max_b))
    t = draw(st.integers(1, max_t))
    seed = draw(st.integers(0, 2**32 - 1))
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(b, t, generator=g, dtype=torch.float64) * 3.0 - 1e-3
    log_ratio = (torch.rand(b, t, generator=g, dtype=torch.float64) * 2 - 1) * max_log_ratio
    logp_old = logp.clone() if on_policy else logp - log_ratio
    if per_token_adv is None:
        per_token_adv = draw(st.booleans())
    shape = (b, t) if per_token_adv else (b,)
    adv = torch.randn(shape, generator=g, dtype=torch.float64)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    mask = torch.arange(t).unsqueeze(0) < lengths.unsqueeze(1)
    return LossCase(logp, logp_old, adv, mask)


# --- strategies for the claim catalogue (simulator.claims): one home for all claim tests ---

SEEDS = st.integers(0, 2**31 - 1)


def sizes(key: str) -> st.SearchStrategy[dict[str, int]]:
    """The size ranges a claim declares in its registry entry, as a hypothesis strategy."""
    from simulator.claims import CLAIMS

    return st.fixed_dictionaries({name: st.integers(lo, hi)
                                  for name, (lo, hi) in CLAIMS[key].sizes.items()})


def examples(divisor: int) -> int:
    """A share of the active profile's example count, for the slower claims."""
    from hypothesis import settings

    return max(2, settings.default.max_examples // divisor)
