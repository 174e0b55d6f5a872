"""Catalogue 6, 7, 11, 12, 15: clipping, regularisers, importance sampling, KL estimators.

Each test runs one registered claim (``simulator.claims``, shared with ``grlab verify``) on
exact trees; per-batch identities are checked group by group on sampled groups.
"""

from __future__ import annotations

import torch
from hypothesis import given, settings

from simulator.claims import CLAIMS, assert_claim, offpolicy
from theory_tests.strategies import SEEDS, claim_examples, examples, sizes


@given(seed=SEEDS, size=sizes("6"))
@claim_examples("6")
def test_rec_oneside_is_has_the_gradient_of_ppo_clip(seed, size):
    """For every group and any ratios: ∇ rec-oneside-is = ∇ PPO-clip (no dual clip, same ε,
    same advantages). Source: paper §4."""
    assert_claim("6", seed, **size)


@given(seed=SEEDS, size=sizes("6c"))
@claim_examples("6c")
def test_with_dual_clip_ppo_is_no_longer_rec_oneside_is(seed, size):
    """Condition of claim 6 (no dual clip): with dual clip c = 3, tokens with A < 0 and ρ > 3
    lose their gradient under PPO but not under REC-OneSide-IS. Source: paper §4, §8."""
    assert_claim("6c", seed, **size)


@given(seed=SEEDS, size=sizes("6b"))
@claim_examples("6b")
def test_every_rec_variant_is_reinforce_at_theta_old(seed, size):
    """θ = θ_old: every rec-* preset has REINFORCE's gradient, group by group. Source: §4."""
    assert_claim("6b", seed, **size)


@given(seed=SEEDS, size=sizes("7"))
@claim_examples("7")
def test_opmd_gradient_is_tau_times_reinforce_plus_half_tau_delta_squared(seed, size):
    """∇½(r − b − τδ)² = τ·[−(r − b)·∇log π + (τ/2)·∇δ²] for the sequence δ (opmd-kimi,
    level=sequence, token-sum). Source: Kimi k1.5; paper §5."""
    assert_claim("7", seed, **size)


@given(seed=SEEDS, size=sizes("7b"))
@claim_examples("7b")
def test_opmd_with_soft_baseline_is_minimised_at_kl_optimum_for_every_behavior(seed, size):
    """b = τ·log Z: the exact population gradient of opmd-kimi vanishes at π* for any
    full-support μ, where E_μ(r − b − τδ)² = 0 (its minimum). Source: Kimi k1.5; paper §5."""
    assert_claim("7b", seed, **size)


@settings(max_examples=examples(20))
@given(seed=SEEDS, size=sizes("7c"))
@claim_examples("7c")
def test_opmd_with_mean_baseline_has_a_behavior_dependent_minimiser(seed, size):
    """b = E_μ r: the minimiser satisfies μ(k)·e(k) = π(k)·E_μ e (e = r − b − τδ) and differs
    between behaviours. Source: Kimi k1.5; paper §5."""
    assert_claim("7c", seed, **size)


@given(seed=SEEDS, size=sizes("11"))
@claim_examples("11")
def test_kl_estimators_as_losses_k1_zero_k2_forward_k3_reverse(seed, size):
    """y ∼ π_θ, sequence log-ratio: E[∇k1] = 0, E[∇k2] = ∇KL(π_θ‖π_ref),
    E[∇k3] = ∇KL(π_ref‖π_θ). Source: Schulman 2020; paper §8."""
    assert_claim("11", seed, **size)


@given(seed=SEEDS, size=sizes("11b"))
@claim_examples("11b")
def test_per_token_k2_and_k3_are_not_sequence_kl_gradients_on_deep_trees(seed, size):
    """Condition of claim 11 (sequence-level log-ratio): summed per token on trees of depth
    ≥ 2, k2 and k3 miss ∇KL(π‖ref) and ∇KL(ref‖π). Source: derived here."""
    assert_claim("11b", seed, **size)


@given(seed=SEEDS, size=sizes("12"))
@claim_examples("12")
def test_sequence_level_importance_sampling_is_unbiased(seed, size):
    """E_{y∼μ}[(π(y)/μ(y))·r(y)·∇log π(y)] = ∇E_π r. Source: importance sampling; paper §4."""
    assert_claim("12", seed, **size)


@given(seed=SEEDS, size=sizes("12b"))
@claim_examples("12b")
def test_per_token_importance_ratios_are_biased_on_deep_trees(seed, size):
    """E_μ[Σ_l ρ_l·r·∇log π(y^l|y^<l)] = ∇E_π r at depth 1 only; biased at depth ≥ 2.
    Source: importance sampling; paper §4."""
    assert_claim("12b", seed, **size)


@given(seed=SEEDS, size=sizes("15"))
@claim_examples("15")
def test_gspo_equals_gspo_token_with_sequence_constant_advantages(seed, size):
    """Per group, ∇ gspo = ∇ gspo-token when A is constant along each sequence.
    Source: Zheng et al. 2025 (GSPO)."""
    assert_claim("15", seed, **size)


@given(seed=SEEDS, size=sizes("15b"))
@claim_examples("15b")
def test_kimi_sequence_penalty_and_token_k2_differ_on_deep_trees(seed, size):
    """(τ/2)(Σ_l δ_l)² vs (τ/2)Σ_l δ_l²: equal expected gradients at depth 1, different at
    depth ≥ 2. Source: Kimi k1.5; Trinity-RFT; paper §5."""
    assert_claim("15b", seed, **size)


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
