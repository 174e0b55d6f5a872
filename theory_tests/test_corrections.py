"""Catalogue 16–20 (``simulator/claims/corrections.py``): the off-policy corrections with three
policies — sequence- vs token-level IS, decoupled PPO at θ_prox, what MIS and OPSM remove,
truncation's bias and variance, the top-p ratio. One hypothesis test per claim, generated from
the catalogue (``strategies.claim_tests``; ``grlab verify`` runs the same checks), then a test
that the claims asserting a bias fail where the theory says there is none.
"""

from __future__ import annotations

import torch

from simulator.claims import CLAIMS
from theory_tests.strategies import claim_tests

globals().update(claim_tests("corrections", __name__))


def test_the_bias_claims_fail_where_theory_says_there_is_no_bias():
    """Claims 16b, 16c and 16d pass only on a gap above 100 × EXACT_TOL. Run where the theory
    says the gap is zero, outside their registered sizes, each fails: at depth 1 every length
    is 1 (token-mean no longer couples) and the token ratio is the sequence ratio; with K = 1
    the group-mean baseline's factor 1 − 1/K is 0."""
    for seed in range(3):
        generator = torch.Generator().manual_seed
        assert not CLAIMS["16b"].check(generator(seed), depth=1, k=2).passed
        assert not CLAIMS["16c"].check(generator(seed), prompts=1, vocab=2, depth=1,
                                       k=2).passed
        assert not CLAIMS["16d"].check(generator(seed), prompts=1, vocab=2, depth=2,
                                       k=1).passed
