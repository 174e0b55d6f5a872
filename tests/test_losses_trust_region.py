"""Hand-checked values and gradients of the 2025–26 losses (simulator/losses/trust_region.py) and
their presets (dro, cispo-scalerl, decoupled-ppo), in the style of tests/test_losses.py: every
expected number is worked out from the formula in the loss's docstring with Python's ``math``,
never copied from grlab's output. The main batch is tests/test_losses.py's (ρ = 4, 1.5, 1.1,
0.5, 0.25 on both rows, A = +1 and −1, token-mean over N = 10); gradients are d loss / d log π.
"""

from __future__ import annotations

import math

import pytest
import torch

from simulator.losses import LOSSES, policy_loss
from tests.test_losses import PI, PI_OLD, RHO, _batch, _logs, approx, assert_tensor, main_batch, run

log = math.log


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_sapo_surrogate_and_weight_forms():
    """Rows of one token: ρ = 1.5 with A = +1 (τ_pos = 1), ρ = 0.5 with A = −1 (τ_neg = 1.05).
    f(ρ) = σ(τ(ρ − 1))·4/τ and f′(ρ) = 4σ(1 − σ), whatever τ.
    surrogate: value (−4σ(0.5) + (4/1.05)σ(−0.525))/2 (seq-mean-token-mean over 2 rows),
    gradient −4σ(0.5)σ(−0.5)·1.5/2 and +4σ(−0.525)σ(0.525)·0.5/2;
    weight (Trinity): value (−4σ(0.5)·log 0.75 + (4/1.05)σ(−0.525)·log 0.3)/2, gradient
    −4σ(0.5)/2 and +(4/1.05)σ(−0.525)/2."""
    batch = _batch([[0.75], [0.3]], [[0.5], [0.6]], [1.0, -1.0])
    value, grad, metrics = run("sapo", batch)
    assert value == approx((-4 * sigmoid(0.5) + 4 / 1.05 * sigmoid(-0.525)) / 2)
    assert_tensor(grad, [[-4 * sigmoid(0.5) * sigmoid(-0.5) * 1.5 / 2],
                         [4 * sigmoid(-0.525) * sigmoid(0.525) * 0.5 / 2]])
    assert metrics["clipfrac"] == 0.0
    assert metrics["soft_gate"] == approx((4 * sigmoid(0.5) + 4 / 1.05 * sigmoid(-0.525)) / 2)
    value, grad, _ = run("sapo", _batch([[0.75], [0.3]], [[0.5], [0.6]], [1.0, -1.0]),
                         form="weight")
    assert value == approx((-4 * sigmoid(0.5) * log(0.75)
                            + 4 / 1.05 * sigmoid(-0.525) * log(0.3)) / 2)
    assert_tensor(grad, [[-4 * sigmoid(0.5) / 2], [4 / 1.05 * sigmoid(-0.525) / 2]])


def test_gmpo_clips_in_log_space_and_takes_the_geometric_mean():
    """ε = 0.2. Row 0 (A = +1): δ̃ = min(δ, clip(δ)) = 0.2, 0.2, log 1.1, log 0.5, log 0.25;
    s_0 = exp((0.4 + log 0.1375)/5), ℓ_0 = −s_0. Row 1 (A = −1): δ̃ = max(δ, clip(δ)) = log 4,
    log 1.5, log 1.1, −0.2, −0.2; s_1 = exp((log 6.6 − 0.4)/5), ℓ_1 = +s_1. Value (ℓ_0 + ℓ_1)/2;
    gradient −s_0/10 on row 0's unclipped tokens 3–5, +s_1/10 on row 1's tokens 1–3, 0 on the
    four clipped ones (clipfrac 4/10)."""
    s0 = math.exp((0.4 + log(1.1 * 0.5 * 0.25)) / 5)
    s1 = math.exp((log(4 * 1.5 * 1.1) - 0.4) / 5)
    value, grad, metrics = run("gmpo", main_batch())
    assert value == approx((-s0 + s1) / 2)
    assert_tensor(grad, [[0, 0, -s0 / 10, -s0 / 10, -s0 / 10], [s1 / 10, s1 / 10, s1 / 10, 0, 0]])
    assert metrics["clipfrac"] == approx(0.4)


def test_dppo_tv_masks_by_the_probability_change_and_truncates_rho_at_c():
    """π − π_old: row 0 (A = +1) 0.6, 0.25, 0.05, −0.4, −0.6 → kept where ≤ 0.2: tokens 3–5;
    row 1 (A = −1) 0.3, 0.2, 0.02, −0.3, −0.3 → kept where ≥ −0.2: tokens 1–3. Weights
    sg(min(ρ, 3)): row 0 1.1, 0.5, 0.25; row 1 3 (ρ = 4 truncated), 1.5, 1.1.
    ℓ = −A·w·log π: value [−(1.1 log .55 + .5 log .4 + .25 log .2) + (3 log .4 + 1.5 log .6 +
    1.1 log .22)]/10; with c = 20 row 1's first weight is 4."""
    row0 = 1.1 * log(0.55) + 0.5 * log(0.4) + 0.25 * log(0.2)
    for c, first in ((None, 3.0), (20.0, 4.0)):
        options = {} if c is None else {"clip_ratio_c": c}
        value, grad, metrics = run("dppo-tv", main_batch(), **options)
        assert value == approx((-row0 + first * log(0.4) + 1.5 * log(0.6) + 1.1 * log(0.22)) / 10)
        assert_tensor(grad, [[0, 0, -0.11, -0.05, -0.025], [first / 10, 0.15, 0.11, 0, 0]])
        assert metrics["clipfrac"] == approx(0.4)
        assert metrics["pg_clipfrac_lower"] == approx(0.1 if c is None else 0.0)


def test_dppo_kl_masks_by_the_binary_kl():
    """Row 0 (A = +1): p_old = 0.5, p = 0.75, D = 0.5·log(0.5/0.75) + 0.5·log((0.5 + 1e-8)/
    (0.25 + 1e-8)) ≈ 0.144 ≤ 0.2: kept, ℓ = −1.5·log 0.75. Row 1 (A = −1): p = 0.2, D = 0.5·
    log(2.5) + 0.5·log((0.5 + 1e-8)/(0.8 + 1e-8)) ≈ 0.223 > 0.2 and p < p_old: dropped. Token
    mean over 2. With ε_high = 0.1 row 0 is dropped too (D > 0.1, p > p_old)."""
    kl0 = 0.5 * log(0.5 / 0.75) + 0.5 * log((0.5 + 1e-8) / (0.25 + 1e-8))
    kl1 = 0.5 * log(0.5 / 0.2) + 0.5 * log((0.5 + 1e-8) / (0.8 + 1e-8))
    assert 0.1 < kl0 <= 0.2 < kl1
    batch = _batch([[0.75], [0.2]], [[0.5], [0.5]], [1.0, -1.0])
    value, grad, metrics = run("dppo-kl", batch)
    assert value == approx(-1.5 * log(0.75) / 2)
    assert_tensor(grad, [[-0.75], [0.0]])
    assert metrics["clipfrac"] == approx(0.5)
    value, grad, _ = run("dppo-kl", _batch([[0.75], [0.2]], [[0.5], [0.5]], [1.0, -1.0]),
                         eps_high=0.1)
    assert value == 0.0
    assert_tensor(grad, [[0.0], [0.0]])


def test_vespo_weights_by_the_gamma_shape_of_the_sequence_ratio():
    """Row 0 (A = +1, k = 2, λ = 3): ρ = 1.5, 1.1, w = 1.65, φ_0 = e^3·1.65²·e^{−4.95}. Row 1
    (A = −1, k = 3, λ = 2): one valid token ρ = 0.5, φ_1 = e^2·0.125·e^{−1}. ℓ = −φ·A·log π,
    token mean over 3: value [−φ_0(log .75 + log .55) + φ_1·log .3]/3, gradient −φ_0/3 on row
    0, +φ_1/3 on row 1's token."""
    phi0 = math.exp(3) * 1.65**2 * math.exp(-3 * 1.65)
    phi1 = math.exp(2) * 0.5**3 * math.exp(-2 * 0.5)
    batch = _batch([[0.75, 0.55], [0.3, 0.5]], [[0.5, 0.5], [0.6, 0.5]], [1.0, -1.0],
                   mask=[[True, True], [True, False]])
    value, grad, metrics = run("vespo", batch)
    assert value == approx((-phi0 * (log(0.75) + log(0.55)) + phi1 * log(0.3)) / 3)
    assert_tensor(grad, [[-phi0 / 3, -phi0 / 3], [phi1 / 3, 0.0]])
    assert metrics["phi_seq"] == approx((2 * phi0 + phi1) / 3)


def test_vespo_weight_is_one_on_policy():
    """φ(1) = e^λ·1·e^{−λ} = 1: on-policy VESPO is REINFORCE."""
    batch = _batch([[0.5, 0.25]], [[0.5, 0.25]], [2.0])
    value, grad, _ = run("vespo", batch)
    assert value == approx(-2.0 * (log(0.5) + log(0.25)) / 2)
    assert_tensor(grad, [[-1.0, -1.0]])


def test_m2po_paper_variant_drops_the_largest_second_moments_of_the_active_quadrants():
    """μ = π_old. Active quadrants: row 0 (A = +1) tokens with π > μ: ρ = 4, 1.5, 1.1 →
    (log ρ)² = 1.922, 0.164, 0.009; row 1 (A = −1) with π < μ: ρ = 0.5, 0.25 → 0.480, 1.922.
    Means of the rest after dropping the largest 0, 1, 2, 3, 4: 0.900, 0.644, 0.218, 0.087,
    0.009. τ = 0.04 drops four (all but ρ = 1.1 of row 0); τ = 0.3 drops two: row 0's ρ = 4
    and row 1's ρ = 0.25. ℓ = −ρ·A on the rest (no clip), token mean over 10."""
    logp, old, adv, mask = main_batch()
    out = policy_loss("m2po", logp, old, adv, mask, logp_rollout=old)
    (grad,) = torch.autograd.grad(out.loss, logp)
    assert float(out.loss.detach()) == approx((-(1.1 + 0.5 + 0.25) + (4 + 1.5 + 1.1)) / 10)
    assert_tensor(grad, [[0, 0, -0.11, -0.05, -0.025], [0.4, 0.15, 0.11, 0, 0]])
    assert float(out.metrics["m2_dropped"]) == approx(0.4)
    logp, old, adv, mask = main_batch()
    out = policy_loss("m2po", logp, old, adv, mask, logp_rollout=old, threshold=0.3)
    (grad,) = torch.autograd.grad(out.loss, logp)
    expected = (-(1.5 + 1.1 + 0.5 + 0.25) + (4 + 1.5 + 1.1 + 0.5)) / 10
    assert float(out.loss.detach()) == approx(expected)
    assert_tensor(grad, [[0, -0.15, -0.11, -0.05, -0.025], [0.4, 0.15, 0.11, 0.05, 0]])


def test_m2po_areal_variant_drops_by_the_rollout_drift_over_all_tokens():
    """log μ = log π_old + 0.5 (row 0) / + 0.4 (row 1) on token 1 and + 0.1 on token 5:
    (log μ − log π_old)² = 0.25, 0, 0, 0, 0.01 and 0.16, 0, 0, 0, 0.01; mean 0.043 ≥ 0.04,
    without the 0.25: 0.18/9 = 0.02 < 0.04: only row 0's first token goes.
    Value [−(1.5 + 1.1 + .5 + .25) + (4 + 1.5 + 1.1 + .5 + .25)]/10 = 0.4."""
    logp, old, adv, mask = main_batch()
    shift = torch.tensor([[0.5, 0, 0, 0, 0.1], [0.4, 0, 0, 0, 0.1]], dtype=torch.float64)
    out = policy_loss("m2po", logp, old, adv, mask, logp_rollout=old + shift, variant="areal")
    (grad,) = torch.autograd.grad(out.loss, logp)
    assert float(out.loss.detach()) == approx(0.4)
    assert_tensor(grad, [[0, -0.15, -0.11, -0.05, -0.025], [0.4, 0.15, 0.11, 0.05, 0.025]])


def test_m2po_with_a_clip_is_ppo_on_the_kept_tokens():
    """μ = π_old, τ = 0.3 (row 0's ρ = 4 and row 1's ρ = 0.25 dropped), ε = 0.2: row 0 keeps
    −1.2 (ρ = 1.5 clipped), −1.1, −0.5, −0.25; row 1 keeps ρ = 4, 1.5, 1.1 and max(0.5, 0.8)
    (clipped)."""
    logp, old, adv, mask = main_batch()
    out = policy_loss("m2po", logp, old, adv, mask, logp_rollout=old, threshold=0.3,
                      eps_low=0.2, eps_high=0.2)
    (grad,) = torch.autograd.grad(out.loss, logp)
    expected = (-(1.2 + 1.1 + 0.5 + 0.25) + (4 + 1.5 + 1.1 + 0.8)) / 10
    assert float(out.loss.detach()) == approx(expected)
    assert_tensor(grad, [[0, 0, -0.11, -0.05, -0.025], [0.4, 0.15, 0.11, 0, 0]])


def _covariances():
    """(A − Ā)(log π − mean log π) over the main batch: Ā = 0, mean log π = log(Π π)/10."""
    mean = (log(0.0264) + log(0.001584)) / 10
    return [[a * (log(p) - mean) for p in row] for a, row in zip((1.0, -1.0), PI, strict=True)]


def test_clip_cov_switches_off_the_largest_covariance_in_the_band():
    """PPO clips row 0's ρ = 4, 1.5 and row 1's ρ = 0.5, 0.25. Among the rest, lb = 0.3 <
    Cov < 5 holds for row 0's π = 0.55 (Cov ≈ 0.41) and row 1's π = 0.22 (≈ 0.51); n =
    ⌊0.1·10⌋ = 1: the larger, row 1's token 3, gets ℓ = 0. Value [−(1.2 + 1.2 + 1.1 + .5 + .25)
    + (4 + 1.5 + 0 + .8 + .8)]/10; clipfrac 5/10, pg_clipfrac (verl's) 1/10."""
    cov = _covariances()
    assert 0.3 < cov[0][2] < cov[1][2] < 5 and cov[0][3] < 0.3 and cov[0][4] < 0.3
    value, grad, metrics = run("clip-cov", main_batch(), clip_cov_ratio=0.1, clip_cov_lb=0.3)
    assert value == approx((-(1.2 + 1.2 + 1.1 + 0.5 + 0.25) + (4 + 1.5 + 0.8 + 0.8)) / 10)
    assert_tensor(grad, [[0, 0, -0.11, -0.05, -0.025], [0.4, 0.15, 0, 0, 0]])
    assert metrics["clipfrac"] == approx(0.5) and metrics["pg_clipfrac"] == approx(0.1)


def test_clip_cov_with_a_seed_draws_at_random_reproducibly():
    """Both band tokens are candidates; a seed picks one of them, the same one every time."""
    picks = set()
    for seed in range(8):
        first = run("clip-cov", main_batch(), clip_cov_ratio=0.1, clip_cov_lb=0.3, seed=seed)
        again = run("clip-cov", main_batch(), clip_cov_ratio=0.1, clip_cov_lb=0.3, seed=seed)
        assert first[0] == again[0] and first[2]["pg_clipfrac"] == approx(0.1)
        picks.add(round(first[0], 12))
    assert len(picks) == 2


def test_kl_cov_penalises_the_largest_covariance():
    """Cov is largest at row 1's π = 0.1 (A = −1, log 0.1 − mean ≈ −1.29); n = 1 with ratio 0.1.
    ℓ = −A·ρ everywhere (the two rows cancel: Σρ = 7.35 each) plus 0.1·|log 0.25| there:
    value 0.1·log 4/10; gradient ∓ρ/10, and (0.25 − 0.1)/10 at the penalised token."""
    cov = _covariances()
    assert max(max(row) for row in cov) == cov[1][4]
    value, grad, metrics = run("kl-cov", main_batch(), kl_cov_ratio=0.1)
    assert value == approx(0.1 * log(4) / 10)
    assert_tensor(grad, [[-r / 10 for r in RHO], [0.4, 0.15, 0.11, 0.05, (0.25 - 0.1) / 10]])
    assert metrics["kl_cov_penalised"] == approx(0.1)


def test_dro_is_reinforce_with_a_half_beta_squared_log_ratio():
    """π = 0.75, π_old = 0.5, A = 1, τ = β = 2: ℓ = −log 0.75 + (log 1.5)², gradient
    −1 + 2·log 1.5."""
    value, grad, _ = run("dro", _batch([[0.75]], [[0.5]], [1.0]), tau=2.0)
    assert value == approx(-log(0.75) + log(1.5) ** 2)
    assert_tensor(grad, [[-1 + 2 * log(1.5)]])


def test_cispo_scalerl_caps_the_weight_at_five_without_a_lower_bound():
    """ρ = 8 → weight 5 (ε_max = 5), ρ = 0.25 → 0.25 (no lower bound); A = +1, token mean."""
    value, grad, metrics = run("cispo-scalerl", _batch([[0.8, 0.2]], [[0.1, 0.8]], [1.0]))
    assert value == approx(-(5 * log(0.8) + 0.25 * log(0.2)) / 2)
    assert_tensor(grad, [[-2.5, -0.125]])
    assert metrics["is_clipfrac"] == approx(0.5)


def test_decoupled_ppo_weights_by_pi_old_over_mu_and_drops_weights_above_five():
    """Token 1: π = 0.55, π_old = 0.5, μ = 0.25: ρ = 1.1 (inside the clip), w = 2:
    ℓ = −1.1·2. Token 2: π_old/μ = 0.5/0.05 = 10 > 5: removed, still counted (N = 2)."""
    logp, old, adv, mask = _batch([[0.55, 0.75]], [[0.5, 0.5]], [1.0])
    out = policy_loss("decoupled-ppo", logp, old, adv, mask, logp_rollout=_logs([[0.25, 0.05]]))
    (grad,) = torch.autograd.grad(out.loss, logp)
    assert float(out.loss.detach()) == approx(-1.1 * 2 / 2)
    assert_tensor(grad, [[-1.1, 0.0]])


NEW = ("sapo", "gmpo", "dppo-tv", "dppo-kl", "vespo", "m2po", "clip-cov", "kl-cov", "dro",
       "cispo-scalerl", "decoupled-ppo")


@pytest.mark.parametrize(("name", "kwargs", "argument", "error"), [
    ("sapo", {"tau_pos": 0.0}, "tau_pos", ValueError),
    ("sapo", {"form": "gate"}, "form", ValueError),
    ("gmpo", {"eps_low": -0.1}, "eps_low", ValueError),
    ("dppo-tv", {"clip_ratio_c": 0.0}, "clip_ratio_c", ValueError),
    ("dppo-kl", {"eps_high": float("nan")}, "eps_high", ValueError),
    ("vespo", {"lambda_neg": -1.0}, "lambda_neg", ValueError),
    ("m2po", {"variant": "released"}, "variant", ValueError),
    ("m2po", {"threshold": 0.0}, "threshold", ValueError),
    ("clip-cov", {"clip_cov_lb": 5.0}, "clip_cov_lb", ValueError),
    ("clip-cov", {"clip_cov_ratio": 0.0}, "clip_cov_ratio", ValueError),
    ("clip-cov", {"seed": 1.5}, "seed", TypeError),
    ("kl-cov", {"ppo_kl_coef": -0.1}, "ppo_kl_coef", ValueError),
])
def test_bad_keywords_raise_errors_naming_them(name, kwargs, argument, error):
    logp, old, adv, mask = main_batch()
    with pytest.raises(error, match=argument):
        policy_loss(name, logp, old, adv, mask, logp_rollout=old, **kwargs)


def test_m2po_without_logp_rollout_is_m2po_with_mu_equal_to_pi_old():
    """One policy: no logp_rollout means μ = π_old (as for every correction), bit for bit."""
    logp, old, adv, mask = main_batch()
    alone = policy_loss("m2po", logp, old, adv, mask, threshold=0.01)
    given = policy_loss("m2po", logp, old, adv, mask, threshold=0.01, logp_rollout=old)
    assert torch.equal(alone.loss, given.loss)


def test_the_batch_coupled_losses_say_so():
    assert {n for n in NEW if LOSSES[n].couples_rows} == {"m2po", "clip-cov", "kl-cov"}
    assert LOSSES["m2po"].inputs == ("logp_rollout",)


@pytest.mark.parametrize("name", NEW)
def test_the_new_losses_trace_under_torch_func(name):
    """validate=False: torch.func.grad equals autograd and vmap equals the loop (the default
    readings have no .item() and no branch on tensor values; clip-cov's ``seed`` is eager)."""
    logp, old, adv, mask = main_batch()
    logp = logp.detach()
    rollout = old + 0.1

    def f(x):
        return policy_loss(name, x, old, adv, mask, logp_rollout=rollout, validate=False).loss

    x = logp.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(f(x), x)
    torch.testing.assert_close(torch.func.grad(f)(logp), expected, rtol=0, atol=0)
    batched = torch.func.vmap(f)(torch.stack([logp, logp - 0.1]))
    torch.testing.assert_close(batched[1], f(logp - 0.1), rtol=1e-15, atol=0)


def test_presets_bind_what_their_sources_say():
    dro = LOSSES["dro"]
    assert dro.base == "opmd-kimi" and dro.defaults()["level"] == "token"
    scalerl = LOSSES["cispo-scalerl"].defaults()
    assert (scalerl["eps_low"], scalerl["eps_high"]) == (1.0, 4.0)
    decoupled = LOSSES["decoupled-ppo"]
    assert decoupled.base == "ppo" and decoupled.defaults()["dual_clip"] is None
    assert [str(c) for c in decoupled.corrections] == ["mis-token:high=5.0"]
    assert PI_OLD and PI  # the main batch of tests/test_losses.py
