"""Catalogue 13 (``simulator/claims/trees.py``): token-level trees — soft Bellman, token sums,
length normalisation. One hypothesis test per claim, generated from the catalogue
(``strategies.claim_tests``); ``grlab verify`` runs the same checks.
"""

from __future__ import annotations

from theory_tests.strategies import claim_tests

globals().update(claim_tests("trees", __name__))
