"""Catalogue 6, 7, 11, 12, 15 (``simulator/claims/offpolicy.py``): clipping, regularisers,
importance sampling, KL estimators. One hypothesis test per claim, generated from the catalogue
(``strategies.claim_tests``; ``grlab verify`` runs the same checks), then a test that claims 6
and 15 refuse a vacuous all-zero comparison.
"""

from __future__ import annotations

import torch

from simulator.claims import CLAIMS, offpolicy
from theory_tests.strategies import claim_tests

globals().update(claim_tests("offpolicy", __name__))


def test_a_comparison_of_all_zero_gradients_is_rejected_as_vacuous():
    """Claims 6 and 15 compare per-group gradients; where every group's gradient is zero
    (K = 1 gives every advantage 0) the identity would hold as 0 = 0. Their liveness check
    fails there: run outside their registered K ≥ 2, at K = 1, both claims fail."""
    assert not offpolicy._live(torch.zeros(3, 2, 2)).passed
    assert offpolicy._live(torch.tensor([[0.0], [1e-300]], dtype=torch.float64)).passed
    for key in ("6", "15"):
        for seed in range(3):
            result = CLAIMS[key].check(torch.Generator().manual_seed(seed), vocab=2, depth=2,
                                       k=1)
            assert not result.passed and "nonzero gradient: 0%" in result.what
