"""How many samples it takes to tell two expected updates apart: the atlas's "groups needed"
and "runs needed", and the disputes' "batches needed".

Its own module so that ``simulator.atlas`` and ``simulator.disputes`` share it without
importing each other (the simulator's import graph has no cycle: tests/test_experiments.py).
"""

from __future__ import annotations

import math

from torch import Tensor

__all__ = ["NEEDED_FACTOR", "groups_needed", "runs_needed"]

NEEDED_FACTOR = (1.959963984540054 + 0.8416212335729143) ** 2  # α = 0.05 two-sided, power 0.8


def groups_needed(mean_a: Tensor, cov_a: Tensor, mean_b: Tensor, cov_b: Tensor) -> float:
    """Groups per arm to tell two expected updates apart (z-test along the gap, α = 0.05
    two-sided, power 0.8): NEEDED_FACTOR·uᵀ(C_a + C_b)u/|Δ|²; inf when the gap is 0."""
    gap = (mean_a - mean_b).flatten()
    size = float(gap.norm())
    if size <= 1e-13 * max(float(mean_a.norm()), float(mean_b.norm()), 1e-300):
        return math.inf
    u = gap / size
    return NEEDED_FACTOR * float(u @ (cov_a + cov_b) @ u) / size ** 2


def runs_needed(groups: float, steps: int, batch: int) -> float:
    """Runs per arm to tell two settings apart, from ``groups_needed``'s figure.

    A run is S = ``steps`` steps of B = ``batch`` independent groups each at the level's
    fixed state (θ, π_old, μ); its statistic is the mean of its S·B group gradients (with
    plain SGD, the accumulated update divided by −lr·S·B). That mean has mean m and
    covariance C/(S·B), so the same z-test along the gap (α = 0.05 two-sided, power 0.8)
    needs groups/(S·B) runs per arm. Below 1: one run per arm is enough when the spread is
    known (a test that estimates it from the runs needs at least 2 per arm)."""
    for name, value in (("steps", steps), ("batch", batch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if isinstance(groups, bool) or not isinstance(groups, int | float) or not groups >= 0:
        raise ValueError(f"groups must be a number >= 0 (inf allowed), got {groups!r}")
    return groups / (steps * batch)
