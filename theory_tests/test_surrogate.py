"""Catalogue 1, 2, 3, 9 (``simulator/claims/surrogate.py``): the KL-regularised step and the
pairwise surrogate. One hypothesis test per claim, generated from the catalogue
(``strategies.claim_tests``); ``grlab verify`` runs the same checks.
"""

from __future__ import annotations

from theory_tests.strategies import claim_tests

globals().update(claim_tests("surrogate", __name__))
