"""Catalogue 13: token-level trees — soft Bellman, token sums, length normalisation.

Each test runs one registered claim (``simulator.claims``, shared with ``grlab verify``).
"""

from __future__ import annotations

from hypothesis import given

from simulator.claims import assert_claim
from theory_tests.strategies import SEEDS, claim_examples, sizes


@given(seed=SEEDS, size=sizes("13"))
@claim_examples("13")
def test_sequence_kl_optimum_is_the_product_of_soft_bellman_token_policies(seed, size):
    """Π_l π*(y^l|y^<l) = π_t(y)·e^{r(y)/τ}/Z with π*(a|s) = π_t(a|s)·e^{(Q(s,a) − V(s))/τ}.
    Source: soft Q-learning (Haarnoja et al. 2017); paper §2."""
    assert_claim("13", seed, **size)


@given(seed=SEEDS, size=sizes("13b"))
@claim_examples("13b")
def test_token_level_reinforce_with_token_sum_is_sequence_level_reinforce(seed, size):
    """E[∇ Σ_l −A·log π(y^l|y^<l)] = −(1 − 1/K)·E_μ[(r − E_μ r)·∇log π(y)]. Source: §1."""
    assert_claim("13b", seed, **size)


@given(seed=SEEDS, size=sizes("13c"))
@claim_examples("13c")
def test_dr_grpo_is_sequence_reinforce_divided_by_a_constant_length(seed, size):
    """On-policy at θ_old, dr-grpo's expected gradient = (1/H)·sequence-level REINFORCE.
    Source: Liu et al. 2025 (Dr.GRPO)."""
    assert_claim("13c", seed, **size)


@given(seed=SEEDS, size=sizes("13d"))
@claim_examples("13d")
def test_seq_mean_token_mean_weights_each_response_by_inverse_length(seed, size):
    """seq-mean-token-mean: −(1 − 1/K)·E_μ[(r − E_μ r)·∇log π(y)/L(y)]. Source: Dr.GRPO."""
    assert_claim("13d", seed, **size)


@given(seed=SEEDS, size=sizes("13e"))
@claim_examples("13e")
def test_seq_mean_token_mean_is_not_parallel_to_sequence_reinforce_on_eos_trees(seed, size):
    """Condition of 13c/13d (equal lengths): with EOS the 1/L weighting turns the expected
    gradient away from sequence-level REINFORCE (1 − cos > 0). Source: Dr.GRPO."""
    assert_claim("13e", seed, **size)
