"""The theory catalogue: every claim, checked by one function, registered once.

``CLAIMS`` (a ``simulator.validation.Registry``) maps a key (the catalogue number, a letter for
sub-claims and conditions) to a ``Claim``; ``grlab verify`` runs each on fresh random instances,
and ``theory_tests/test_<family>.py`` runs each under hypothesis, one test per claim generated
from its entry. A family is a module of this package: ``surrogate`` (1, 2, 3, 9), ``reinforce``
(4, 5, 8, 10, 14), ``offpolicy`` (6, 7, 11, 12, 15), ``trees`` (13),
``corrections`` (16–20).
"""

from simulator.claims import corrections, offpolicy, reinforce, surrogate, trees
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
    "corrections",
    "offpolicy",
    "reinforce",
    "run_claim",
    "surrogate",
    "trees",
]
