"""Catalogue 16–20 (``simulator/claims/corrections.py``): the off-policy corrections with three
policies — sequence- vs token-level IS, decoupled PPO at θ_prox, what MIS and OPSM remove,
truncation's bias and variance, the top-p ratio. One hypothesis test per claim, generated from
the catalogue (``strategies.claim_tests``); ``grlab verify`` runs the same checks.
"""

from __future__ import annotations

from theory_tests.strategies import claim_tests

globals().update(claim_tests("corrections", __name__))
