"""The theory catalogue of issue 3: every claim, checked by one function, registered once.

``CLAIMS`` maps a key (the catalogue number, a letter for sub-claims and conditions) to a
``Claim``; ``theory_tests/test_*.py`` run each under hypothesis and ``grlab verify`` runs each
on fresh random instances. Families: ``surrogate`` (1, 2, 3, 9), ``reinforce`` (4, 5, 8, 10),
``offpolicy`` (6, 7, 11, 12, 15), ``trees`` (13, 14).
"""

from simulator.claims import offpolicy, reinforce, surrogate, trees
from simulator.claims.registry import (
    CLAIMS,
    EXACT_TOL,
    MC_Z,
    Check,
    Claim,
    ClaimReport,
    assert_claim,
    catalogue,
    run_claim,
)

CATALOGUE: tuple[str, ...] = catalogue()

__all__ = [
    "CATALOGUE",
    "CLAIMS",
    "EXACT_TOL",
    "MC_Z",
    "Check",
    "Claim",
    "ClaimReport",
    "assert_claim",
    "offpolicy",
    "reinforce",
    "run_claim",
    "surrogate",
    "trees",
]
