"""Behaviour that no other test pinned, found by the mutation check (tests/mutation/).

Each test here kills at least one mutant of ``tests/mutation/mutants.py`` that the rest of the
suite let live (the mutant's name is in the docstring). Expected values are worked out by hand
from the docstrings' formulas or from a peer's definition, never read from the code's output.
Boundary values are made exact in float64: for ρ ∈ [½, 2], ρ − 1 is computed without rounding
(Sterbenz), so ε = ρ − 1 puts the token exactly on 1 + ε.
"""

from __future__ import annotations

import math

import pytest
import torch

from simulator.advantages import group_advantages
from simulator.aggregation import AGGREGATIONS, aggregate
from simulator.losses import policy_loss

F64 = torch.float64
ONE_SIDE = ("ppo", "grpo", "dapo", "bnpo", "rec-oneside-is", "rec-oneside-nois")


def _tokens(log_ratios: list[float], adv: list[float]):
    """One row of len(adv) tokens: log π = −1, log π_old = −1 − δ, per-token advantages."""
    logp = torch.full((1, len(adv)), -1.0, dtype=F64, requires_grad=True)
    logp_old = (logp.detach() - torch.tensor([log_ratios], dtype=F64))
    return logp, logp_old, torch.tensor([adv], dtype=F64), torch.ones(1, len(adv), dtype=bool)


def _rho(logp: torch.Tensor, logp_old: torch.Tensor) -> torch.Tensor:
    """ρ as the loss computes it: e^{log π − log π_old} in float64."""
    return torch.exp(logp.detach() - logp_old)


@pytest.mark.parametrize("name", ONE_SIDE)
def test_a_token_with_zero_advantage_is_never_counted_as_clipped(name):
    """Mutant a-zero-counted-clipped. PPO-clip removes a gradient only when −A·clip(ρ) > −A·ρ
    (verl's pg_clipfrac), never at A = 0; the one-side mask keeps A = 0 on both sides. Tokens:
    A = 0 at ρ = 4, 1, ¼, and A = +1 at ρ = 4 (clipped: ρ > 1.28 ≥ 1 + ε_high for every preset
    here): clipfrac = pg_clipfrac = 1/4 exactly."""
    logp, logp_old, adv, mask = _tokens([math.log(4), 0.0, -math.log(4), math.log(4)],
                                        [0.0, 0.0, 0.0, 1.0])
    metrics = policy_loss(name, logp, logp_old, adv, mask, agg="token-mean").metrics
    assert float(metrics["clipfrac"]) == 0.25
    assert float(metrics["pg_clipfrac"]) == 0.25


@pytest.mark.parametrize("side", ["high", "low"])
def test_the_one_side_mask_keeps_a_ratio_exactly_on_its_boundary(side):
    """Mutants one-side-high-strict, one-side-low-strict. M = (A ≥ 0 ∧ ρ ≤ 1+ε_high) ∨
    (A ≤ 0 ∧ ρ ≥ 1−ε_low) (the paper's REC family, non-strict): a token at ρ = 1 + ε_high with
    A = +1 (or at ρ = 1 − ε_low with A = −1) keeps REC-OneSide-NoIS's gradient −A/N = ∓1 (one
    token, N = 1) and is not counted as clipped, for REC and for PPO. One ulp of ρ further in (ε
    smaller by 2⁻⁵², so 1 + ε is the float just below ρ) it is clipped: the boundary is where it
    says."""
    delta, a = (0.2, 1.0) if side == "high" else (-0.2, -1.0)
    logp, logp_old, adv, mask = _tokens([delta], [a])
    rho = float(_rho(logp, logp_old))
    eps = rho - 1.0 if side == "high" else 1.0 - rho  # exact (Sterbenz)
    assert (1.0 + eps if side == "high" else 1.0 - eps) == rho
    for inside, clipfrac in ((eps, 0.0), (eps - 2.0**-52, 1.0)):
        out = policy_loss("rec-oneside-nois", logp, logp_old, adv, mask,
                          **{f"eps_{side}": inside})
        (grad,) = torch.autograd.grad(out.loss, logp)
        assert float(grad) == (-a if clipfrac == 0.0 else 0.0)
        assert float(out.metrics["clipfrac"]) == clipfrac
        ppo = policy_loss("ppo", logp, logp_old, adv, mask, **{f"eps_{side}": inside})
        assert float(ppo.metrics["clipfrac"]) == clipfrac


def test_the_two_side_band_keeps_both_of_its_ends():
    """1 − ε_low ≤ ρ ≤ 1 + ε_high, closed: with ε_high = ρ₁ − 1 and ε_low = 1 − ρ₂ both
    tokens sit on an end and REC-TwoSide-NoIS keeps both gradients −A/N = (−½, +½)."""
    logp, logp_old, adv, mask = _tokens([0.2, -0.2], [1.0, -1.0])
    rho = _rho(logp, logp_old)[0]
    out = policy_loss("rec-twoside-nois", logp, logp_old, adv, mask,
                      eps_high=float(rho[0]) - 1.0, eps_low=1.0 - float(rho[1]))
    (grad,) = torch.autograd.grad(out.loss, logp)
    assert grad.tolist() == [[-0.5, 0.5]]
    assert float(out.metrics["clipfrac"]) == 0.0


def test_ppo_kl_clamps_the_log_ratio_at_twenty_as_verl_does():
    """Mutant ppo-kl-unclamped. verl's ppo_kl = masked mean of −clamp(δ, −20, 20); grlab's
    approx_kl is the unclamped mean of −δ. δ = (30, −5): ppo_kl = (−20 + 5)/2 = −7.5,
    approx_kl = (−30 + 5)/2 = −12.5."""
    logp, logp_old, adv, mask = _tokens([30.0, -5.0], [1.0, 1.0])
    metrics = policy_loss("reinforce", logp, logp_old, adv, mask).metrics
    assert float(metrics["ppo_kl"]) == -7.5
    assert float(metrics["approx_kl"]) == -12.5


@pytest.mark.parametrize("mode", AGGREGATIONS)
@pytest.mark.parametrize("junk", [math.nan, math.inf, -math.inf])
def test_aggregate_ignores_non_finite_values_at_masked_positions(mode, junk):
    """Mutant sequence-sum-multiplies-mask. ``aggregate`` never lets a masked value through
    (NaN·0 = NaN, so masking must select, not multiply): ℓ = [[1, 2, junk], [3, junk, junk]]
    with the junk masked equals the same batch with 0 there; token-mean (1 + 2 + 3)/3 = 2."""
    mask = torch.tensor([[True, True, False], [True, False, False]])
    clean = torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0]], dtype=F64)
    dirty = torch.where(mask, clean, torch.tensor(junk, dtype=F64))
    options = {"norm_len": 3.0} if mode == "seq-mean-token-sum-norm" else {}
    value = aggregate(dirty, mask, mode, **options)
    assert torch.isfinite(value)
    assert float(value) == float(aggregate(clean, mask, mode, **options))
    if mode == "token-mean":
        assert float(value) == 2.0


def test_a_float_denominator_replaces_the_batchs_own_count():
    """Mutant float-denominator-ignored. denominator = 8 (the global token count of a larger
    batch): token-mean of ℓ = [1, 2, 3] (3 valid tokens) is (1 + 2 + 3)/8 = 0.75, not 2; the
    same as a tensor denominator."""
    values = torch.tensor([[1.0, 2.0, 3.0]], dtype=F64)
    mask = torch.ones(1, 3, dtype=bool)
    assert float(aggregate(values, mask, "token-mean", denominator=8.0)) == 0.75
    assert float(aggregate(values, mask, "token-mean",
                           denominator=torch.tensor(8.0, dtype=F64))) == 0.75


def test_the_logavgexp_baseline_does_not_overflow_for_large_rewards():
    """Mutant logavgexp-overflows. b = τ·log((e^{r₁/τ} + e^{r₂/τ})/2) for r = (1000, 0), τ = 1:
    e^{1000} overflows float64, but b = 1000 + log((1 + e^{−1000})/2) = 1000 − log 2 exactly
    in float64, so A = (log 2, log 2 − 1000)."""
    adv = group_advantages(torch.tensor([[1000.0, 0.0]], dtype=F64), "logavgexp", tau=1.0)
    torch.testing.assert_close(adv, torch.tensor([[math.log(2), math.log(2) - 1000.0]],
                                                 dtype=F64), rtol=1e-15, atol=1e-12)


def test_pg_clipfrac_and_pg_clipfrac_lower_split_the_clip_as_verl_does():
    """Mutant pg-clipfrac-includes-dual. verl 0.9.1 (compute_policy_loss_vanilla), written
    here from its definitions: ℓ₁ = −A·ρ, ℓ₂ = −A·clip(ρ, 0.8, 1.2), pg_clipfrac = mean(ℓ₂ > ℓ₁);
    ℓ₃ = −A·c, pg_clipfrac_lower = mean(max(ℓ₁, ℓ₂) > ℓ₃ ∧ A < 0). Tokens (A, ρ): (−1, 4) is
    dual-clipped (4 > c = 3), (−1, ½) and (+1, 4) are PPO-clipped, (−1, 1.1) is kept:
    pg_clipfrac = 2/4, pg_clipfrac_lower = 1/4, and grlab's clipfrac (both) = 3/4."""
    rho = [4.0, 0.5, 4.0, 1.1]
    logp, logp_old, adv, mask = _tokens([math.log(r) for r in rho], [-1.0, -1.0, 1.0, -1.0])
    ratio = _rho(logp, logp_old)
    l1, l2, l3 = -adv * ratio, -adv * ratio.clamp(0.8, 1.2), -adv * 3.0
    verl_pg = float((l2 > l1).to(F64).mean())
    verl_lower = float(((torch.maximum(l1, l2) > l3) & (adv < 0)).to(F64).mean())
    assert (verl_pg, verl_lower) == (0.5, 0.25)
    metrics = policy_loss("ppo", logp, logp_old, adv, mask, dual_clip=3.0).metrics
    assert float(metrics["pg_clipfrac"]) == verl_pg
    assert float(metrics["pg_clipfrac_lower"]) == verl_lower
    assert float(metrics["clipfrac"]) == 0.75


def test_sppo_trinity_keeps_the_band_from_one_over_one_plus_eps():
    """Mutant sppo-trinity-band. Trinity-RFT's sPPO (sppo_loss_fn.py) keeps a token when
    1/(1+ε) ≤ ρ ≤ 1+ε; with ε = 0.3 the lower end is 1/1.3 ≈ 0.769, not 1 − ε = 0.7. Tokens at
    ρ = 0.72, 0.75 (inside [0.7, 0.769): dropped) and 0.78, 1.2 (kept), A = +1, token-mean:
    loss = −(log 0.78 + log 1.2)/4, gradient −A/4 on the kept tokens, clipfrac = 2/4."""
    rho = [0.72, 0.75, 0.78, 1.2]
    logp, logp_old, adv, mask = _tokens([math.log(r) for r in rho], [1.0] * 4)
    out = policy_loss("sppo-trinity", logp, logp_old, adv, mask, eps=0.3)
    (grad,) = torch.autograd.grad(out.loss, logp)
    delta = (logp.detach() - logp_old)[0]
    assert float(out.loss.detach()) == pytest.approx(-float(delta[2] + delta[3]) / 4, rel=1e-14)
    assert grad.tolist() == [[0.0, 0.0, -0.25, -0.25]]
    assert float(out.metrics["clipfrac"]) == 0.5


def test_the_batch_std_is_taken_over_every_reward_of_the_batch():
    """Mutant batch-std-per-group. mean-batch-std (TRL scale_rewards="batch"): A = (r − r̄_group)
    /(σ_batch + eps). r = [[0, 1], [0, 3]]: batch mean 1, population σ² = (1 + 0 + 1 + 4)/4 =
    3/2, sample σ² = 6/3 = 2; group means ½ and 3/2."""
    rewards = torch.tensor([[0.0, 1.0], [0.0, 3.0]], dtype=F64)
    centred = torch.tensor([[-0.5, 0.5], [-1.5, 1.5]], dtype=F64)
    for std, variance in (("population", 1.5), ("sample", 2.0)):
        adv = group_advantages(rewards, "mean-batch-std", std=std, eps=1e-6)
        torch.testing.assert_close(adv, centred / (math.sqrt(variance) + 1e-6),
                                   rtol=1e-14, atol=0.0)


def test_saturated_terms_of_both_signs_sum_to_their_true_total():
    """Mutant safe-sum-unscaled. −A·log π with log π = −1 and A = (M, M, −M, −M), M the float64
    maximum: the true loss is exactly 0 (token-sum and token-mean). A plain sum overflows at
    M + M = inf and ends at inf or NaN; ``safe_sum`` scales by 2⁻⁶⁴ (exact) and gets 0."""
    big = torch.finfo(F64).max
    logp = torch.full((1, 4), -1.0, dtype=F64, requires_grad=True)
    adv = torch.tensor([[big, big, -big, -big]], dtype=F64)
    for agg in ("token-sum", "token-mean"):
        out = policy_loss("reinforce", logp, logp.detach(), adv, torch.ones(1, 4, dtype=bool),
                          agg=agg)
        assert float(out.loss.detach()) == 0.0


def test_std_normalised_advantages_never_take_the_closed_form():
    """Mutant closed-form-for-std-advantages. The closed form needs A linear in the rewards
    (r − r̄ + shift, or leave-one-out); dividing by the group std is not, so ``reinforce`` with
    ``advantage="mean-std"`` must go through an exact engine, and "auto" must equal the
    enumeration (this instance: rewards 1, 0, 0.5, 0.2, K = 3, where the two differ)."""
    from simulator.exact import ExpectedLoss, LossSetup, expected_gradient
    from simulator.tree import TreeMDP

    env = TreeMDP(torch.tensor([[1.0, 0.0, 0.5, 0.2]], dtype=F64), 2, 2, eos=False)
    theta = torch.tensor([[[0.3, -0.2], [1.0, 0.1], [-0.5, 0.4]]], dtype=F64)
    mu = torch.tensor([[0.4, 0.3, 0.2, 0.1]], dtype=F64)
    options = {"advantage": "mean-std"}
    assert ExpectedLoss(env, LossSetup("reinforce", **options), 3).method != "closed-form"
    with pytest.raises(ValueError, match="no closed form"):
        expected_gradient(env, theta, mu, "reinforce", 3, method="closed-form", **options)
    auto = expected_gradient(env, theta, mu, "reinforce", 3, **options)
    enumerated = expected_gradient(env, theta, mu, "reinforce", 3, method="enumerate", **options)
    torch.testing.assert_close(auto, enumerated, rtol=1e-12, atol=1e-14)
    plain = expected_gradient(env, theta, mu, "reinforce", 3, method="enumerate")
    assert float((plain - enumerated).abs().max()) > 1e-3
