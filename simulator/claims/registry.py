"""The claim registry: one home for every theory check, shared by theory_tests and ``grlab verify``.

Design decisions
----------------
* A claim is a check function ``check(generator, **sizes) -> Check`` plus metadata: a key (the
  catalogue number, with a letter for sub-claims), the claim's name (the theory test
  is named after it), its source, and integer size ranges. ``grlab verify`` draws sizes and a
  seed from a ``torch.Generator``; the hypothesis tests draw the same sizes and seeds through
  strategies built from the same ranges. The check itself is written once.
* A ``Check`` carries the measured error and the tolerance it must meet, and says how the
  tolerance was derived (``what``). Exact identities in float64 use ``EXACT_TOL``; Monte Carlo
  comparisons measure the error in standard errors computed from the samples (``MC_Z``);
  optimiser comparisons derive the tolerance from the optimiser's final gradient.
* A claim that needs a condition is registered twice: the claim, and the statement that it
  fails without the condition (e.g. "3b: without coverage the minimiser is not unique"). Both
  are positive statements that pass when true.
* ``CLAIMS`` is a ``simulator.validation.Registry``: a key registered twice is refused, an
  unknown key is a ``KeyError`` with the valid keys and a "did you mean". A claim's family is
  the module its check is written in (``simulator/claims/<family>.py``); its theory test is
  generated from the entry in ``theory_tests/test_<family>.py``, so the name, the statement
  (the check's docstring), the sizes and the example budget are written once, here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor

from simulator.validation import Registry, require_int

__all__ = [
    "CLAIMS",
    "EXACT_TOL",
    "MC_Z",
    "Check",
    "Claim",
    "ClaimReport",
    "assert_claim",
    "catalogue",
    "draw_sizes",
    "exact_stderr",
    "mc_z_error",
    "register_claim",
    "relative_error",
    "run_claim",
    "single_threaded",
    "worst",
]

# float64 sums over ≤ 10⁴ terms of size O(1) round at ~1e-12; 1e-10 leaves a margin of 100
# without hiding any real discrepancy (the effects measured are ≥ 1e-4).
EXACT_TOL = 1e-10
# Monte Carlo: max over ≤ 100 components of |estimate − exact|/SE; P(|z| > 5) ≈ 5.7e-7 per
# component for a Gaussian, so a correct estimator fails with probability < 1e-4.
MC_Z = 5.0


@dataclasses.dataclass(frozen=True)
class Check:
    """A measured error, the tolerance it must meet, and what was compared."""

    error: float
    tolerance: float
    what: str

    @property
    def passed(self) -> bool:
        return math.isfinite(self.error) and self.error <= self.tolerance

    @property
    def ratio(self) -> float:
        return self.error / self.tolerance if math.isfinite(self.error) else math.inf


def worst(*checks: Check) -> Check:
    """The check closest to (or furthest past) its tolerance."""
    return max(checks, key=lambda c: c.ratio)


def relative_error(actual: Tensor, expected: Tensor) -> float:
    """max|actual − expected| / max(1, max|expected|): relative for large values, absolute
    for values of order 1 or below (so an exact zero can be checked)."""
    diff = (actual - expected).abs().max()
    return float(diff / expected.abs().max().clamp(min=1.0))


def exact_stderr(env: Any, logits: Tensor, behavior: Any, loss: str, k: int, num_groups: int,
                 **options: Any) -> Tensor:
    """The exact standard error of ``sampled_gradient``'s mean over ``num_groups`` groups per
    prompt, of ``logits``' shape: √(diag Cov_p / S)/P from ``gradient_covariance``. A Monte
    Carlo check divides by this, not by the sample's own SE, which underestimates the error of a
    rarely drawn response (seen: 0.0006 against an exact 0.0015 for a response of probability
    0.03 in 400 groups of 4, |z| 6.4 against an exact-SE |z| of 2.7)."""
    from simulator.exact import gradient_covariance

    cov = gradient_covariance(env, logits, behavior, loss, k, **options)
    cov = cov.reshape(env.num_prompts, *cov.shape[-2:])
    # a variance that is 0 in exact arithmetic can come out as −1e-18: 0, not a NaN
    diag = torch.diagonal(cov, dim1=-2, dim2=-1).clamp(min=0.0)  # [P, D]
    return ((diag / num_groups).sqrt() / env.num_prompts).reshape(logits.shape)


def mc_z_error(estimate: Tensor, stderr: Tensor, exact: Tensor) -> float:
    """max over components of |estimate − exact|/SE (components with SE = 0 must match to
    float64 rounding)."""
    floor = 1e-12 * (1.0 + exact.abs())
    return float(((estimate - exact).abs() / torch.maximum(stderr, floor)).max())


@dataclasses.dataclass(frozen=True)
class Claim:
    key: str
    name: str
    source: str
    sizes: Mapping[str, tuple[int, int]]
    check: Callable[..., Check]
    instances: int = 16  # how many fresh instances `grlab verify` tries
    slow: int = 1  # its theory test draws 1/slow of the hypothesis profile's examples (≥ 2)

    @property
    def family(self) -> str:
        """The module of ``simulator/claims`` that holds the check (``reinforce``, ...)."""
        return self.check.__module__.rsplit(".", 1)[-1]

    @property
    def statement(self) -> str:
        """What the claim says: its check's docstring, as one paragraph per blank line."""
        return inspect.cleandoc(self.check.__doc__ or self.name.replace("_", " "))


CLAIMS: Registry = Registry("claim")


def register_claim(key: str, name: str, source: str, instances: int = 16, slow: int = 1,
                   **sizes: tuple[int, int]) -> Callable[[Callable[..., Check]],
                                                           Callable[..., Check]]:
    """Decorator: register ``check(generator, **sizes) -> Check`` as claim ``key`` (a key
    registered twice is a ``ValueError``)."""
    require_int("instances", instances, 1)
    require_int("slow", slow, 1)

    def decorate(check: Callable[..., Check]) -> Callable[..., Check]:
        CLAIMS[key] = Claim(key, name, source, dict(sizes), check, instances, slow)
        return check

    return decorate


def catalogue() -> tuple[str, ...]:
    """Every registered key in catalogue order: 1, 2, 2b, 3, …, 15b."""

    def order(key: str) -> tuple[int, str]:
        digits = "".join(ch for ch in key if ch.isdigit())
        return int(digits), key[len(digits):]

    return tuple(sorted(CLAIMS, key=order))


def draw_sizes(claim: Claim, generator: torch.Generator) -> dict[str, int]:
    return {name: int(torch.randint(lo, hi + 1, (), generator=generator))
            for name, (lo, hi) in claim.sizes.items()}


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """Run torch on one intra-op thread, then restore the previous setting.

    The exact testbeds are tiny tensors: a parallel kernel (softmax) gains nothing and, when
    another process holds a core, waits a scheduler quantum per call (measured: 8 ms instead
    of 2 µs for a [4, 4] softmax on 2 busy cores).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def assert_claim(key: str, seed: int, **sizes: int) -> Check:
    """Run claim ``key`` on the instance (seed, sizes); raise AssertionError when it fails."""
    with single_threaded():
        result = CLAIMS[key].check(torch.Generator().manual_seed(seed), **sizes)
    assert result.passed, (f"claim {key} ({CLAIMS[key].name}) failed on seed={seed}, "
                           f"sizes={sizes}: {result.what}: error {result.error:.3e} > "
                           f"tolerance {result.tolerance:.3e}")
    return result


@dataclasses.dataclass(frozen=True)
class ClaimReport:
    key: str
    name: str
    source: str
    instances: int
    worst_error: float
    tolerance: float
    what: str
    passed: bool
    seconds: float


def run_claim(claim: Claim, generator: torch.Generator, instances: int | None = None
              ) -> ClaimReport:
    """Run ``claim`` on fresh instances; report the worst (error, tolerance) pair seen."""
    start = time.perf_counter()
    results = []
    for _ in range(claim.instances if instances is None else instances):
        seed = int(torch.randint(0, 2**31 - 1, (), generator=generator))
        sizes = draw_sizes(claim, generator)
        try:
            with single_threaded():
                results.append(claim.check(torch.Generator().manual_seed(seed), **sizes))
        except Exception as error:  # a crash is a failed instance, reported, not hidden
            results.append(Check(math.inf, 0.0, f"{type(error).__name__}: {error}"))
    bad = worst(*results)
    return ClaimReport(claim.key, claim.name, claim.source, len(results), bad.error,
                       bad.tolerance, bad.what, all(r.passed for r in results),
                       time.perf_counter() - start)
