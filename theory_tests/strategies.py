"""Hypothesis strategies shared by the theory and contract tests: random loss inputs, and the
theory tests of the claim catalogue, generated from it.

A ``LossCase`` is a batch of B sequences of T tokens (float64): current log-probs, behaviour
log-probs at a chosen log-ratio scale, advantages per sequence or per token, and a mask with at
least one valid token in every row (rows may have different lengths).

Random draws leave the edges to chance, so the edges are also fixed examples that every
profile runs (``@example``, in the explicit phase, before any random draw):
``boundary_loss_cases`` (one token; ρ exactly 1 + ε and 1 − ε for the default ε = 0.2 with
A > 0, A < 0 and A = 0; ragged rows with a fully masked row; equal lengths with the zero
advantages of a uniform group), attached by ``boundary_examples``; and ``claim_examples``,
which runs a claim at the smallest and the largest sizes it declares (K = 1 where allowed).

Every claim of ``simulator.claims`` gets one test, ``claim_test``: named
``test_claim_<key>_<name>``, its docstring the claim's statement and source, drawing a seed and
the claim's sizes. ``theory_tests/test_<family>.py`` adds its family's tests with
``claim_tests``, so a claim is written once, in ``simulator/claims/<family>.py``.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from hypothesis import example, given, settings
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
    return max(2, settings.default.max_examples // divisor)


# --- fixed boundary cases, run under every profile ------------------------------------------

F64 = torch.float64


@functools.cache
def _logp_at_ratio(target: float, logp_old: float) -> float:
    """A log π with e^{log π − log π_old} == ``target`` exactly in float64, for a scalar, a
    [1, 1] and a [64, 64] tensor (vectorised and scalar exp agree on it): the middle of the
    float64 values around log π_old + log target that qualify."""
    def exact(logp: float) -> bool:
        small = torch.exp(torch.tensor([[logp]], dtype=F64) - torch.tensor([[logp_old]], dtype=F64))
        big = torch.exp(torch.full((64, 64), logp, dtype=F64) - torch.full((64, 64), logp_old,
                                                                          dtype=F64))
        return (math.exp(logp - logp_old) == target and float(small) == target
                and bool((big == target).all()))

    centre, found = logp_old + math.log(target), []
    for direction in (-math.inf, math.inf):
        value = centre
        for _ in range(40):
            if exact(value):
                found.append(value)
            value = math.nextafter(value, direction)
    if not found:
        raise RuntimeError(f"no float64 log-prob gives a ratio of exactly {target}")
    return sorted(set(found))[len(set(found)) // 2]


def _clip_boundary_rows() -> tuple[torch.Tensor, torch.Tensor]:
    """(logp, logp_old) [3, 3]: every row holds ρ = 1 + 0.2, 1 − 0.2 and 1, exactly."""
    hi, lo = _logp_at_ratio(1 + 0.2, -0.5), _logp_at_ratio(1 - 0.2, -0.25)
    logp = torch.tensor([[hi, lo, -1.3]] * 3, dtype=F64)
    logp_old = torch.tensor([[-0.5, -0.25, -1.3]] * 3, dtype=F64)
    return logp, logp_old


def boundary_loss_cases(*, on_policy: bool = False, per_token_adv: bool | None = None
                        ) -> list[LossCase]:
    """The fixed edge cases, as ``loss_cases`` would draw them with the same options:

    1. one sequence of one token (a group of K = 1);
    2. equal lengths, ρ exactly 1 + ε and 1 − ε (ε = 0.2, the default of PPO/GRPO/REC) and 1 on
       rows with A = +1, −1 and 0;
    3. ragged rows (lengths 3, 2, 1) and a fully masked row (finite junk at masked places);
    4. equal lengths and all A = 0 (the advantages of a uniform group).
    ``on_policy``: log π_old = log π (ρ = 1 everywhere). ``per_token_adv`` None alternates.
    """
    bounds_logp, bounds_old = _clip_boundary_rows()
    ragged_logp = torch.tensor([[-0.4, -1.1, -2.0], [-0.9, -0.3, -50.0], [-1.6, -50.0, -50.0],
                                [-50.0, -50.0, -50.0]], dtype=F64)
    ragged_old = ragged_logp - torch.tensor([[0.7, -0.2, 0.05], [-0.9, 0.4, 3.0],
                                             [0.3, 3.0, 3.0], [3.0, 3.0, 3.0]], dtype=F64)
    uniform_logp = torch.tensor([[-0.2, -1.7], [-0.8, -0.6], [-2.2, -0.1]], dtype=F64)
    rows = [  # (logp, logp_old, A per sequence, lengths)
        (torch.tensor([[-0.7]], dtype=F64), torch.tensor([[-1.0]], dtype=F64), [1.0], [1]),
        (bounds_logp, bounds_old, [1.0, -1.0, 0.0], [3, 3, 3]),
        (ragged_logp, ragged_old, [0.8, -0.4, 0.0, 1.5], [3, 2, 1, 0]),
        (uniform_logp, uniform_logp - 0.3, [0.0, 0.0, 0.0], [2, 2, 2]),
    ]
    cases = []
    for i, (logp, logp_old, adv, lengths) in enumerate(rows):
        width = logp.shape[1]
        mask = torch.arange(width).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
        per_token = bool(i % 2) if per_token_adv is None else per_token_adv
        advantages = torch.tensor(adv, dtype=F64)
        if per_token:  # vary along the row where A ≠ 0, keep the A = 0 rows at 0
            advantages = advantages.unsqueeze(1) * torch.linspace(1.0, 0.5, width, dtype=F64)
        cases.append(LossCase(logp.clone(), logp.clone() if on_policy else logp_old.clone(),
                              advantages, mask))
    return cases


def boundary_examples(*, on_policy: bool = False, per_token_adv: bool | None = None,
                      **values: Sequence[object]) -> Callable:
    """Decorator (under ``@given``): ``@example(case=c, **v)`` for every boundary case c and
    every combination v of ``values`` (the test's other arguments, e.g. ``agg=AGGREGATIONS``)."""
    cases = boundary_loss_cases(on_policy=on_policy, per_token_adv=per_token_adv)
    names = list(values)

    def decorate(test: Callable) -> Callable:
        for case, combo in itertools.product(cases, itertools.product(*values.values())):
            test = example(case=case, **dict(zip(names, combo, strict=True)))(test)
        return test

    return decorate


def claim_examples(key: str) -> Callable:
    """Decorator (under ``@given(seed=..., size=sizes(key))``): the claim at the smallest and
    at the largest sizes it declares (K = 1, one prompt, depth 1 where its ranges allow)."""
    from simulator.claims import CLAIMS

    ranges = CLAIMS[key].sizes
    low = {name: lo for name, (lo, _) in ranges.items()}
    high = {name: hi for name, (_, hi) in ranges.items()}

    def decorate(test: Callable) -> Callable:
        return example(seed=0, size=low)(example(seed=1, size=high)(test))

    return decorate


def claim_test(key: str) -> Callable[[], None]:
    """The theory test of claim ``key``: ``assert_claim`` on a seed and the claim's sizes drawn
    by hypothesis, its ``claim_examples`` first, and 1/``slow`` of the profile's examples (at
    least 2) for a slow claim. Named ``test_claim_<key>_<name>`` (``pytest -k`` finds it by key
    or name); its docstring is the claim's statement and source."""
    from simulator.claims import CLAIMS, assert_claim

    claim = CLAIMS[key]

    def test(seed: int, size: dict[str, int]) -> None:
        assert_claim(key, seed, **size)

    test.__name__ = test.__qualname__ = f"test_claim_{key}_{claim.name}"
    test.__doc__ = f"Claim {key}: {claim.statement}\n\nSource: {claim.source}."
    test = given(seed=SEEDS, size=sizes(key))(claim_examples(key)(test))
    return test if claim.slow == 1 else settings(max_examples=examples(claim.slow))(test)


def claim_tests(family: str, module: str) -> dict[str, Callable[[], None]]:
    """The ``claim_test`` of every claim of ``simulator/claims/<family>.py``, in catalogue order,
    by name, for the theory test module ``module`` to add to its namespace (an unknown family
    is a ``KeyError`` naming the families)."""
    from simulator.claims import CATALOGUE, CLAIMS
    from simulator.names import lookup

    lookup("claim family", family, {claim.family for claim in CLAIMS.values()})
    tests = {}
    for key in CATALOGUE:
        if CLAIMS[key].family == family:
            test = claim_test(key)
            test.__module__ = module
            tests[test.__name__] = test
    return tests
