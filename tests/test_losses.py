"""Hand-checked values and gradients for every loss in ``simulator.losses.LOSSES``.

Every expected number below was worked out by hand from the formula in the loss's docstring
(and the paper it cites) on a tiny batch; the arithmetic is in each test's docstring. Nothing here
was copied from the code's output. Comparisons are float64 with rel=1e-12, or exact.

The main batch (B = 2 sequences, T = 5 tokens, every token valid) is built so that the five
token ratios ρ = π/π_old of each row cover every clipping region of ε = 0.2 and ε' = (0.6, 2.0):

    row 0, A = +1:  π     = 0.8   0.75  0.55  0.4   0.2      Π π = 0.0264
                    π_old = 0.2   0.5   0.5   0.8   0.8
    row 1, A = −1:  π     = 0.4   0.6   0.22  0.3   0.1      Π π = 0.001584
                    π_old = 0.1   0.4   0.2   0.6   0.4
    both rows:      ρ     = 4     1.5   1.1   0.5   0.25     Π ρ = 0.825

(Π π: 0.8·0.75 = 0.6, ·0.55 = 0.33, ·0.4 = 0.132, ·0.2 = 0.0264; 0.4·0.6 = 0.24, ·0.22 = 0.0528,
·0.3 = 0.01584, ·0.1 = 0.001584. Π ρ: 4·1.5 = 6, ·1.1 = 6.6, ·0.5 = 3.3, ·0.25 = 0.825.)
Token-mean over N = 10 tokens unless a test says otherwise. Gradients are d loss / d log π.
"""

from __future__ import annotations

import math

import pytest
import torch

from simulator.advantages import group_advantages
from simulator.losses import LOSSES, pairwise_surrogate, policy_loss

log = math.log
E = math.e
LN2 = math.log(2.0)

PI = [[0.8, 0.75, 0.55, 0.4, 0.2], [0.4, 0.6, 0.22, 0.3, 0.1]]
PI_OLD = [[0.2, 0.5, 0.5, 0.8, 0.8], [0.1, 0.4, 0.2, 0.6, 0.4]]
RHO = [4.0, 1.5, 1.1, 0.5, 0.25]
ADV = [1.0, -1.0]


def _logs(rows: list[list[float]]) -> torch.Tensor:
    """log of each entry, taken in Python (math.log) so the inputs do not depend on torch.log."""
    return torch.tensor([[log(p) if p > 0 else math.nan for p in row] for row in rows],
                        dtype=torch.float64)


def _batch(pi, pi_old, adv, mask=None):
    logp = _logs(pi).requires_grad_()
    logp_old = _logs(pi_old)
    adv = torch.tensor(adv, dtype=torch.float64)
    if mask is None:
        mask = torch.ones(logp.shape, dtype=torch.bool)
    else:
        mask = torch.tensor(mask, dtype=torch.bool)
    return logp, logp_old, adv, mask


def main_batch():
    return _batch(PI, PI_OLD, ADV)


def run(name, batch, **kwargs):
    """(loss value, d loss / d logp, metrics) of ``policy_loss(name, ...)``."""
    logp, logp_old, adv, mask = batch
    out = policy_loss(name, logp, logp_old, adv, mask, **kwargs)
    (grad,) = torch.autograd.grad(out.loss, logp)
    return out.loss.item(), grad, {k: v.item() for k, v in out.metrics.items()}


def approx(value):
    return pytest.approx(value, rel=1e-12)


def assert_tensor(actual: torch.Tensor, expected) -> None:
    flat = torch.tensor(expected, dtype=torch.float64).flatten().tolist()
    assert actual.detach().flatten().tolist() == approx(flat)


def row_sum(coefs, probs):
    """Σ_t c_t·log π_t, written out for the docstrings' sums."""
    return sum(c * log(p) for c, p in zip(coefs, probs, strict=True))


# --------------------------------------------------------------------------------------------
# REINFORCE and REC
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["reinforce", "rec"])
def test_reinforce_and_unclipped_rec_nois_are_minus_a_log_pi(name):
    """ℓ = −A·log π. Row 0 (A = +1) gives −log 0.0264, row 1 (A = −1) gives +log 0.001584.

    loss = (log 0.001584 − log 0.0264)/10 = log(0.06)/10 (0.0264·0.06 = 0.001584).
    d loss/d log π = −A/10: −0.1 on row 0, +0.1 on row 1. ``rec`` with clip="none" is the same.
    """
    kwargs = {"clip": "none"} if name == "rec" else {}
    value, grad, metrics = run(name, main_batch(), **kwargs)
    assert value == approx(log(0.06) / 10)
    assert_tensor(grad, [[-0.1] * 5, [0.1] * 5])
    assert metrics["clipfrac"] == 0.0


def test_metrics_approx_kl_and_ratio_mean():
    """approx_kl = mean(log π_old − log π) = −(2·log Π ρ)/10 = −log(0.825)/5;
    ratio_mean = 2·(4 + 1.5 + 1.1 + 0.5 + 0.25)/10 = 2·7.35/10 = 1.47."""
    _, _, metrics = run("reinforce", main_batch())
    assert metrics["approx_kl"] == approx(-log(0.825) / 5)
    assert metrics["ratio_mean"] == approx(1.47)


@pytest.mark.parametrize("name", ["rec-oneside-nois", "rec"])
def test_rec_oneside_nois(name):
    """One-side mask, ε = 0.2: keep (A ≥ 0 ∧ ρ ≤ 1.2) ∨ (A ≤ 0 ∧ ρ ≥ 0.8).

    Row 0 (A = +1): ρ = 4, 1.5 > 1.2 are removed; 1.1, 0.5, 0.25 kept → −log(0.55·0.4·0.2)
    = −log 0.044. Row 1 (A = −1): ρ = 0.5, 0.25 < 0.8 removed; 4, 1.5, 1.1 kept →
    +log(0.4·0.6·0.22) = log 0.0528. loss = log(0.0528/0.044)/10 = log(1.2)/10.
    grad = −M·A/10: row 0 [0, 0, −.1, −.1, −.1]; row 1 [.1, .1, .1, 0, 0]. clipfrac = 4/10.
    (``rec``'s defaults are clip one-side, weight none.)
    """
    value, grad, metrics = run(name, main_batch())
    assert value == approx(log(1.2) / 10)
    assert_tensor(grad, [[0, 0, -0.1, -0.1, -0.1], [0.1, 0.1, 0.1, 0, 0]])
    assert metrics["clipfrac"] == approx(0.4)


ONESIDE_IS_GRAD = [[0, 0, -0.11, -0.05, -0.025], [0.4, 0.15, 0.11, 0, 0]]


def test_rec_oneside_is():
    """Same mask as NoIS, weight sg(ρ): ℓ = −M·ρ·A·log π.

    loss = [−(1.1·log .55 + .5·log .4 + .25·log .2) + (4·log .4 + 1.5·log .6 + 1.1·log .22)]/10.
    grad = −M·ρ·A/10: row 0 [0, 0, −0.11, −0.05, −0.025]; row 1 [0.4, 0.15, 0.11, 0, 0].
    """
    value, grad, metrics = run("rec-oneside-is", main_batch())
    expected = (-row_sum([1.1, 0.5, 0.25], PI[0][2:]) + row_sum([4, 1.5, 1.1], PI[1][:3])) / 10
    assert value == approx(expected)
    assert_tensor(grad, ONESIDE_IS_GRAD)
    assert metrics["clipfrac"] == approx(0.4)


@pytest.mark.parametrize("name", ["rec-twoside-nois", "rec-twoside-is"])
def test_rec_twoside(name):
    """Two-side mask 0.8 ≤ ρ ≤ 1.2 keeps only ρ = 1.1 (token 2) in both rows.

    NoIS: loss = (−log .55 + log .22)/10 = log(0.4)/10, grad ∓0.1 on token 2.
    IS (w = 1.1): loss = 1.1·log(0.4)/10, grad row 0 token 2 = −0.11, row 1 token 2 = +0.11.
    clipfrac = 8/10.
    """
    w = 1.1 if name.endswith("-is") else 1.0
    value, grad, metrics = run(name, main_batch())
    assert value == approx(w * log(0.4) / 10)
    assert_tensor(grad, [[0, 0, -w / 10, 0, 0], [0, 0, w / 10, 0, 0]])
    assert metrics["clipfrac"] == approx(0.8)


def test_rec_ring_nois():
    """Ring, ε = 0.2, ε' = (0.6, 2.0): band [0.8, 1.2] ∨ (A ≥ 0 ∧ ρ ≤ 0.4) ∨ (A ≤ 0 ∧ ρ ≥ 3).

    Row 0 (A = +1) keeps ρ = 1.1 and ρ = 0.25 (≤ 0.4): −log(0.55·0.2) = −log 0.11.
    Row 1 (A = −1) keeps ρ = 4 (≥ 3) and ρ = 1.1: +log(0.4·0.22) = log 0.088.
    loss = log(0.088/0.11)/10 = log(0.8)/10. grad row 0 [0, 0, −.1, 0, −.1], row 1
    [.1, 0, .1, 0, 0]. clipfrac = 6/10.
    """
    value, grad, metrics = run("rec-ring-nois", main_batch())
    assert value == approx(log(0.8) / 10)
    assert_tensor(grad, [[0, 0, -0.1, 0, -0.1], [0.1, 0, 0.1, 0, 0]])
    assert metrics["clipfrac"] == approx(0.6)


def test_rec_ring_is():
    """Ring mask as above with w = ρ.

    loss = [−(1.1·log .55 + 0.25·log .2) + (4·log .4 + 1.1·log .22)]/10.
    grad row 0 [0, 0, −0.11, 0, −0.025], row 1 [0.4, 0, 0.11, 0, 0].
    """
    value, grad, _ = run("rec-ring-is", main_batch())
    expected = (-(1.1 * log(0.55) + 0.25 * log(0.2)) + (4 * log(0.4) + 1.1 * log(0.22))) / 10
    assert value == approx(expected)
    assert_tensor(grad, [[0, 0, -0.11, 0, -0.025], [0.4, 0, 0.11, 0, 0]])


def test_rec_ring_with_wide_outer_band_is_two_side():
    """ε' = (0.8, 3.5): outer regions ρ ≤ 0.2 and ρ ≥ 4.5 hold none of our ρ (0.25 > 0.2,
    4 < 4.5), so the ring keeps only the band: loss = log(0.4)/10 as two-side NoIS."""
    value, _, _ = run("rec", main_batch(), clip="ring", eps_low_prime=0.8, eps_high_prime=3.5)
    assert value == approx(log(0.4) / 10)


def test_rec_ring_rejects_inner_outer_band():
    """ε'_low < ε_low makes no ring: 0.1 < 0.2 is a ValueError."""
    with pytest.raises(ValueError, match="eps_low_prime"):
        run("rec", main_batch(), clip="ring", eps_low_prime=0.1)


def test_rec_oneside_widened_clip():
    """One-side with (ε_low, ε_high) = (0.6, 2.0): keep (A ≥ 0 ∧ ρ ≤ 3) ∨ (A ≤ 0 ∧ ρ ≥ 0.4).

    Row 0 drops only ρ = 4: −log(0.75·0.55·0.4·0.2) = −log 0.033.
    Row 1 drops only ρ = 0.25: +log(0.4·0.6·0.22·0.3) = log 0.01584.
    loss = log(0.01584/0.033)/10 = log(0.48)/10 (0.033·0.48 = 0.01584).
    """
    value, grad, _ = run("rec", main_batch(), eps_low=0.6, eps_high=2.0)
    assert value == approx(log(0.48) / 10)
    assert_tensor(grad, [[0, -0.1, -0.1, -0.1, -0.1], [0.1, 0.1, 0.1, 0.1, 0]])


def test_rec_unclipped_is():
    """clip none, w = ρ: loss = [−Σ_t ρ_t·log π_0t + Σ_t ρ_t·log π_1t]/10, grad −ρ·A/10."""
    value, grad, _ = run("rec", main_batch(), clip="none", weight="is")
    assert value == approx((-row_sum(RHO, PI[0]) + row_sum(RHO, PI[1])) / 10)
    assert_tensor(grad, [[-r / 10 for r in RHO], [r / 10 for r in RHO]])


def test_red_weight():
    """RED-Weight: ℓ = −A·e^{A/T}·log π, T = 1, no clipping.

    loss = [−e·log 0.0264 + e^{−1}·log 0.001584]/10; grad −e/10 on row 0, +e^{−1}/10 on row 1.
    """
    value, grad, metrics = run("red-weight", main_batch())
    assert value == approx((-E * log(0.0264) + log(0.001584) / E) / 10)
    assert_tensor(grad, [[-E / 10] * 5, [1 / (E * 10)] * 5])
    assert metrics["clipfrac"] == 0.0


def test_rec_advantage_weight_temperature():
    """weight advantage with T = 2: w = e^{±1/2}; loss = [−√e·log 0.0264 + log 0.001584/√e]/10."""
    value, _, _ = run("rec", main_batch(), clip="none", weight="advantage", temp=2.0)
    root_e = math.sqrt(E)
    assert value == approx((-root_e * log(0.0264) + log(0.001584) / root_e) / 10)


def test_rec_k2_regularizer():
    """ℓ = −M·A·log π + c·δ² (Trinity's k2: Kimi's ½ absorbed into c), one-side NoIS, c = 0.1;
    the penalty is not masked by the clip (Trinity-RFT 0.6.0, rec_policy_loss.py).

    S = (log 4)² + (log 1.5)² + (log 1.1)² + (log 0.5)² + (log 0.25)² per row, two rows:
    penalty total = 0.1·2S = 0.2·S, so loss = log(1.2)/10 + 0.2·S/10.
    grad = one-side NoIS grad + 0.1·2δ_t/10 (d δ²/d log π = 2δ).
    regularizer metric = mean of δ² = 2S/10.
    """
    value, grad, metrics = run("rec", main_batch(), regularizer="k2", reg_coef=0.1)
    deltas = [log(r) for r in RHO]
    s = sum(d * d for d in deltas)
    assert value == approx(log(1.2) / 10 + 0.2 * s / 10)
    pg = [[0, 0, -0.1, -0.1, -0.1], [0.1, 0.1, 0.1, 0, 0]]
    assert_tensor(grad, [[g + 0.02 * d for g, d in zip(row, deltas, strict=True)] for row in pg])
    assert metrics["regularizer"] == approx(2 * s / 10)


def test_rec_forward_kl_regularizer():
    """R = −log π (Trinity's forward-kl), c = 0.5: penalty total = −0.5·(log 0.0264 +
    log 0.001584) (the rows' Σ log π).

    loss = log(1.2)/10 − 0.5·(log 0.0264 + log 0.001584)/10; grad = one-side NoIS grad − 0.5/10
    on every token.
    """
    value, grad, _ = run("rec", main_batch(), regularizer="forward-kl", reg_coef=0.5)
    assert value == approx(log(1.2) / 10 - 0.5 * (log(0.0264) + log(0.001584)) / 10)
    assert_tensor(grad, [[-0.05, -0.05, -0.15, -0.15, -0.15], [0.05, 0.05, 0.05, -0.05, -0.05]])


def test_red_drop_preset_loss_is_unclipped_reinforce():
    """``red-drop`` is the paper's released RED-Drop config: unclipped REINFORCE after the drop (its
    difference is the advantage kind): −(log 0.0264 − log 0.001584)/10."""
    value, grad, _ = run("red-drop", main_batch())
    assert value == approx(-(log(0.0264) - log(0.001584)) / 10)
    assert_tensor(grad, [[-0.1] * 5, [0.1] * 5])


# --------------------------------------------------------------------------------------------
# PPO family
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ppo", "grpo"])
def test_ppo_clip_value_and_gradient_equal_rec_oneside_is(name):
    """ℓ = max(−ρA, −clip(ρ, 0.8, 1.2)·A).

    Row 0 (A = +1): ℓ = −min(ρ, clip ρ) = −1.2, −1.2, −1.1, −0.5, −0.25 → −4.25.
    Row 1 (A = −1): ℓ = max(ρ, clip ρ) = 4, 1.5, 1.1, 0.8, 0.8 → 8.2.
    loss = (8.2 − 4.25)/10 = 0.395. Gradient: −ρA where the unclipped branch wins strictly,
    0 where the clipped constant wins: row 0 [0, 0, −0.11, −0.05, −0.025], row 1
    [0.4, 0.15, 0.11, 0, 0] — exactly REC-OneSide-IS's gradient. clipfrac = 4/10.
    """
    value, grad, metrics = run(name, main_batch())
    assert value == approx(0.395)
    assert_tensor(grad, ONESIDE_IS_GRAD)
    assert metrics["clipfrac"] == approx(0.4)


@pytest.mark.parametrize(("name", "kwargs"), [("ppo", {"dual_clip": 3.0}), ("ppo-dual-clip", {})])
def test_ppo_dual_clip(name, kwargs):
    """Dual clip c = 3 for A < 0: ℓ = min(ℓ, −c·A) = min(ℓ, 3) on row 1.

    Row 1: ρ = 4 gives 4 > 3 → 3 (constant, gradient 0); the rest unchanged: 3 + 1.5 + 1.1
    + 0.8 + 0.8 = 7.2. loss = (7.2 − 4.25)/10 = 0.295. grad row 1 = [0, 0.15, 0.11, 0, 0].
    clipfrac = 5/10 (the dual-clipped token is also removed).
    """
    value, grad, metrics = run(name, main_batch(), **kwargs)
    assert value == approx(0.295)
    assert_tensor(grad, [[0, 0, -0.11, -0.05, -0.025], [0, 0.15, 0.11, 0, 0]])
    assert metrics["clipfrac"] == approx(0.5)


def test_ppo_dual_clip_below_one_plus_eps_high():
    """c = 1.3: row 1 ℓ = min(max(ρ, clip ρ), 1.3) = 1.3, 1.3, 1.1, 0.8, 0.8 → 5.3.
    loss = (5.3 − 4.25)/10 = 0.105; grad row 1 = [0, 0, 0.11, 0, 0]."""
    value, grad, _ = run("ppo", main_batch(), dual_clip=1.3)
    assert value == approx(0.105)
    assert_tensor(grad, [[0, 0, -0.11, -0.05, -0.025], [0, 0, 0.11, 0, 0]])


def test_dapo_clip_higher():
    """DAPO: ε_high = 0.28. Row 0: −(1.28 + 1.28 + 1.1 + 0.5 + 0.25) = −4.41; row 1 unchanged
    8.2 (clip(ρ, 0.8, 1.28) ≤ max). loss = (8.2 − 4.41)/10 = 0.379; gradient as GRPO's."""
    value, grad, _ = run("dapo", main_batch())
    assert value == approx(0.379)
    assert_tensor(grad, ONESIDE_IS_GRAD)


def test_dapo_keeps_gradient_grpo_clips_between_1_2_and_1_28():
    """One token, A = +1, π = 0.5, π_old = 0.4: ρ = 1.25.

    GRPO: 1.25 > 1.2 → ℓ = −1.2, gradient 0. DAPO: 1.25 ≤ 1.28 → ℓ = −1.25, gradient −1.25.
    """
    grpo_value, grpo_grad, _ = run("grpo", _batch([[0.5]], [[0.4]], [1.0]))
    dapo_value, dapo_grad, _ = run("dapo", _batch([[0.5]], [[0.4]], [1.0]))
    assert grpo_value == approx(-1.2)
    assert grpo_grad.item() == 0.0
    assert dapo_value == approx(-1.25)
    assert dapo_grad.item() == approx(-1.25)


RAGGED_PI = [[0.75, 0.4, 0.0], [0.6, 0.0, 0.0], [0.0, 0.0, 0.0]]
RAGGED_PI_OLD = [[0.5, 0.8, 0.0], [0.4, 0.0, 0.0], [0.0, 0.0, 0.0]]
RAGGED_MASK = [[1, 1, 0], [1, 0, 0], [0, 0, 0]]


def ragged_batch():
    """Row 0 (A = +1): ρ = 1.5, 0.5, pad; row 1 (A = −1): ρ = 1.5, pad, pad; row 2: all pad.

    Padded log-probs are NaN (log 0 → nan here) and the third advantage is NaN: they must
    not matter.
    """
    return _batch(RAGGED_PI, RAGGED_PI_OLD, [1.0, -1.0, math.nan], RAGGED_MASK)


def test_dr_grpo_on_ragged_batch():
    """Dr.GRPO: PPO-clip 0.2 with seq-mean-token-sum-norm, norm_len = 3 (the maximum completion
    length, stated by the caller), B = 3 rows (the fully masked row counts, as in TRL).

    Row 0: ℓ = −min(1.5, 1.2) = −1.2, −min(0.5, 0.8) = −0.5 → −1.7. Row 1: max(1.5, 1.2) = 1.5.
    loss = (−1.7/3 + 1.5/3)/3 = −1/45.
    grad: row 0 token 0 clipped → 0; token 1: −ρA/(3·3) = −0.5/9; row 1 token 0: 1.5/9.
    """
    value, grad, _ = run("dr-grpo", ragged_batch(), norm_len=3.0)
    assert value == approx(-1 / 45)
    assert_tensor(grad, [[0, -0.5 / 9, 0], [1.5 / 9, 0, 0], [0, 0, 0]])


def test_dr_grpo_without_a_stated_length_is_a_clear_error():
    """The constant must come from the caller: dividing by the padded width would make the
    loss depend on how much padding the batch carries."""
    with pytest.raises(ValueError, match="pass norm_len="):
        run("dr-grpo", ragged_batch())


@pytest.mark.parametrize(
    ("agg", "norm_len", "rows", "expected"),
    [
        ("token-mean", None, "all", (-1.7 + 1.5) / 3),
        ("token-sum", None, "all", -1.7 + 1.5),
        ("seq-mean-token-mean", None, "all", (-1.7 / 2 + 1.5) / 3),
        ("seq-mean-token-mean", None, "valid", (-1.7 / 2 + 1.5) / 2),
        ("seq-mean-token-sum", None, "all", (-1.7 + 1.5) / 3),
        ("seq-mean-token-sum", None, "valid", (-1.7 + 1.5) / 2),
        ("seq-mean-token-sum-norm", 3.0, "all", (-1.7 + 1.5) / 3 / 3),
        ("seq-mean-token-sum-norm", 2.0, "all", (-1.7 + 1.5) / 2 / 3),
        ("seq-mean-token-sum-norm", 2.0, "valid", (-1.7 + 1.5) / 2 / 2),
    ],
)
def test_grpo_ragged_batch_under_each_aggregation(agg, norm_len, rows, expected):
    """Per-token PPO losses −1.2, −0.5 | 1.5 | (row 2 has no valid token): B = 3, B′ = 2.

    token-mean −0.2/3; token-sum −0.2; seq-mean-token-mean (−0.85 + 1.5)/B; seq-mean-token-sum
    −0.2/B; sum-norm −0.2/norm_len/B.
    """
    value, grad, _ = run("grpo", ragged_batch(), agg=agg, norm_len=norm_len, rows=rows)
    assert value == approx(expected)
    assert torch.isfinite(grad).all()


def test_bnpo_is_the_token_mean_and_grpo_the_sequence_mean():
    """On the ragged batch: bnpo = token-mean = −0.2/3; grpo = seq-mean-token-mean =
    (−1.7/2 + 1.5)/3 (GRPO paper / TRL loss_type='grpo'; bnpo is TRL's loss_type='bnpo')."""
    assert run("bnpo", ragged_batch())[0] == approx(-0.2 / 3)
    assert run("grpo", ragged_batch())[0] == approx((-1.7 / 2 + 1.5) / 3)


# --------------------------------------------------------------------------------------------
# GSPO
# --------------------------------------------------------------------------------------------

GSPO_PI = [[0.5, 0.9, 0.0], [0.8, 0.5, 0.5]]
GSPO_PI_OLD = [[0.25, 0.8, 0.0], [0.2, 0.25, 0.5]]
GSPO_MASK = [[1, 1, 0], [1, 1, 1]]


def gspo_batch(adv=(1.0, -1.0)):
    """Row 0 (A = +1): δ = log 2, log 1.125, pad → s_0 = exp(log(2.25)/2) = 1.5.
    Row 1 (A = −1): δ = log 4, log 2, log 1 → s_1 = exp(log(8)/3) = 2."""
    return _batch(GSPO_PI, GSPO_PI_OLD, list(adv), GSPO_MASK)


@pytest.mark.parametrize("name", ["gspo", "gspo-token"])
def test_gspo_default_eps(name):
    """ε = (3e-4, 4e-4), seq-mean-token-mean.

    Row 0: ℓ = max(−1.5, −1.0004) = −1.0004 on both tokens (clipped, no gradient).
    Row 1: ℓ = max(2, clip(2) = 1.0004) = 2 on all 3 tokens (unclipped).
    loss = (−1.0004 + 2)/2 = 0.4998.
    Gradient, row 1: the row mean is s_1 (gspo: ds/d log π_t = s/L = 2/3 on each of 3 equal
    terms, mean → 2/3; gspo-token: each term's own token gets s = 2, mean → 2/3); /B = 2 →
    1/3 per token. clipfrac = 2/5; seq_ratio metric = (2·1.5 + 3·2)/5 = 1.8.
    """
    value, grad, metrics = run(name, gspo_batch())
    assert value == approx(0.4998)
    assert_tensor(grad, [[0, 0, 0], [1 / 3, 1 / 3, 1 / 3]])
    assert metrics["clipfrac"] == approx(0.4)
    assert metrics["seq_ratio"] == approx(1.8)


@pytest.mark.parametrize("name", ["gspo", "gspo-token"])
def test_gspo_token_mean_override(name):
    """Same per-token values under token-mean: (2·(−1.0004) + 3·2)/5 = 3.9992/5 = 0.79984.
    Row 1 gradient: d(Σ_t ℓ_1t)/d log π_t = 3·(2/3) = 2 (gspo) = 2 (gspo-token); /5 = 0.4."""
    value, grad, _ = run(name, gspo_batch(), agg="token-mean")
    assert value == approx(0.79984)
    assert_tensor(grad, [[0, 0, 0], [0.4, 0.4, 0.4]])


def test_luspo_scales_each_response_by_its_length():
    """LUSPO (TRL loss_type='luspo'): GSPO's per-token values, seq-mean-token-sum.

    Row 0: 2 tokens × −1.0004 = −2.0008; row 1: 3 × 2 = 6; loss = (−2.0008 + 6)/2 = 1.9996.
    Row 1 gradient: Σ_t ℓ_1t = 3·s_1, ds_1/d log π_t = s_1/3 = 2/3 → 3·(2/3) = 2, /B = 2 → 1.
    """
    value, grad, metrics = run("luspo", gspo_batch())
    assert value == approx(1.9996)
    assert_tensor(grad, [[0, 0, 0], [1, 1, 1]])
    assert metrics["clipfrac"] == approx(0.4)


def test_gspo_wider_eps():
    """ε = (0.6, 0.6): s_0 = 1.5 ≤ 1.6 is no longer clipped: row 0 ℓ = −1.5, ds_0/d log π_t =
    1.5/2 → row-mean gradient −0.75, /2 → −0.375. Row 1 unchanged (2 > 1.6 but A < 0).
    loss = (−1.5 + 2)/2 = 0.25."""
    value, grad, _ = run("gspo", gspo_batch(), eps_low=0.6, eps_high=0.6)
    assert value == approx(0.25)
    assert_tensor(grad, [[-0.375, -0.375, 0], [1 / 3, 1 / 3, 1 / 3]])


def test_gspo_token_per_token_advantages():
    """A = [[+1, −1, pad], [−1, −1, +1]], s = (1.5, 2), default ε, seq-mean-token-mean.

    Row 0: token 0 max(−1.5, −1.0004) = −1.0004 (clipped); token 1 max(1.5, 1.0004) = 1.5,
    gradient −A·s_0 = 1.5 on its own token. Row mean (−1.0004 + 1.5)/2 = 0.2498.
    Row 1: 2, 2 (gradient 2 each), then max(−2, −1.0004) = −1.0004 (clipped). Row mean
    2.9996/3. loss = (0.2498 + 2.9996/3)/2.
    grad: row 0 token 1 = 1.5/(2·2) = 0.375; row 1 tokens 0, 1 = 2/(3·2) = 1/3.
    """
    batch = gspo_batch()
    adv = torch.tensor([[1.0, -1.0, 0.0], [-1.0, -1.0, 1.0]], dtype=torch.float64)
    value, grad, _ = run("gspo-token", (batch[0], batch[1], adv, batch[3]))
    assert value == approx((0.2498 + 2.9996 / 3) / 2)
    assert_tensor(grad, [[0, 0.375, 0], [1 / 3, 1 / 3, 0]])


# --------------------------------------------------------------------------------------------
# CISPO
# --------------------------------------------------------------------------------------------


def test_cispo_truncated_weight_keeps_every_gradient():
    """ℓ = −sg(clip(ρ, 0, 1.28))·A·log π: w = 1.28, 1.28, 1.1, 0.5, 0.25 in both rows.

    loss = [−Σ w_t·log π_0t + Σ w_t·log π_1t]/10; grad = −w·A/10 on every token (none is 0).
    clipfrac = 0; is_clipfrac = 4/10 (ρ = 4 and 1.5 truncated in each row).
    """
    w = [1.28, 1.28, 1.1, 0.5, 0.25]
    value, grad, metrics = run("cispo", main_batch())
    assert value == approx((-row_sum(w, PI[0]) + row_sum(w, PI[1])) / 10)
    assert_tensor(grad, [[-x / 10 for x in w], [x / 10 for x in w]])
    assert metrics["clipfrac"] == 0.0
    assert metrics["is_clipfrac"] == approx(0.4)


def test_cispo_lower_bound():
    """ε_low = 0.6: w = clip(ρ, 0.4, 1.28) lifts ρ = 0.25 to 0.4; is_clipfrac = 6/10."""
    w = [1.28, 1.28, 1.1, 0.5, 0.4]
    value, grad, metrics = run("cispo", main_batch(), eps_low=0.6)
    assert value == approx((-row_sum(w, PI[0]) + row_sum(w, PI[1])) / 10)
    assert_tensor(grad, [[-x / 10 for x in w], [x / 10 for x in w]])
    assert metrics["is_clipfrac"] == approx(0.6)


# --------------------------------------------------------------------------------------------
# REP: OPMD, AsymRE; SPPO
# --------------------------------------------------------------------------------------------


def rep_batch(adv=(1.0, -1.0)):
    """B = 2, T = 2. Row 0 (A = +1): π = (.5, .5), π_old = (.25, .5) → δ = (log 2, 0), Σδ = log 2.
    Row 1 (A = −1): π = (.25, .5), π_old = (.5, .25) → δ = (−log 2, log 2), Σδ = 0.
    Σ log π: row 0 −2·log 2, row 1 −3·log 2; so Σ_i −A_i·Σ log π_i = 2 log 2 − 3 log 2 = −log 2.
    """
    return _batch([[0.5, 0.5], [0.25, 0.5]], [[0.25, 0.5], [0.5, 0.25]], list(adv))


def test_opmd_kimi_sequence_level():
    """ℓ = −A·log π + spread((τ/2)·(Σ_t δ)²), τ = 1, token-mean over 4 tokens.

    Penalties: row 0 ½(log 2)², row 1 0. loss = (−log 2 + ½(log 2)²)/4.
    grad: −A/4 + τ·Σδ_i/4 (the spread square's row total is (τ/2)(Σδ)²):
    row 0 (−1 + log 2)/4 on both tokens, row 1 (1 + 0)/4. penalty metric = ½(log 2)²/4.
    """
    value, grad, metrics = run("opmd-kimi", rep_batch())
    assert value == approx((-LN2 + 0.5 * LN2**2) / 4)
    g0 = (-1 + LN2) / 4
    assert_tensor(grad, [[g0, g0], [0.25, 0.25]])
    assert metrics["penalty"] == approx(0.5 * LN2**2 / 4)


def test_opmd_kimi_sequence_level_seq_sum_is_kimi_objective():
    """seq-mean-token-sum gives Σ_i [−A_i·log π(y_i) + (τ/2)δ_i²]/B, τ = 2:
    (−log 2 + (log 2)²)/2; grad row 0 (−1 + 2·log 2)/2, row 1 (1 + 0)/2."""
    value, grad, _ = run("opmd-kimi", rep_batch(), tau=2.0, agg="seq-mean-token-sum")
    assert value == approx((-LN2 + LN2**2) / 2)
    g0 = (-1 + 2 * LN2) / 2
    assert_tensor(grad, [[g0, g0], [0.5, 0.5]])


def test_opmd_kimi_token_level():
    """level token: penalty (τ/2)·δ_t² per token, τ = 1: ½(log 2)², 0 | ½(log 2)², ½(log 2)².

    loss = (−log 2 + 1.5·(log 2)²)/4 (differs from the sequence level's ½(log 2)²).
    grad (−A + τδ_t)/4: row 0 [(−1 + log 2)/4, −1/4]; row 1 [(1 − log 2)/4, (1 + log 2)/4].
    """
    value, grad, metrics = run("opmd-kimi", rep_batch(), level="token")
    assert value == approx((-LN2 + 1.5 * LN2**2) / 4)
    assert_tensor(grad, [[(-1 + LN2) / 4, -0.25], [(1 - LN2) / 4, (1 + LN2) / 4]])
    assert metrics["penalty"] == approx(1.5 * LN2**2 / 4)


@pytest.mark.parametrize(("tau", "scale"), [(1.0, 2.0), (3.0, 4.0)])
def test_opmd_trinity(tau, scale):
    """ℓ = −A·log π/(1 + τ): loss = −log 2/((1 + τ)·4); grad = −A/((1 + τ)·4)."""
    value, grad, _ = run("opmd-trinity", rep_batch(), tau=tau)
    assert value == approx(-LN2 / (scale * 4))
    g = 1 / (scale * 4)
    assert_tensor(grad, [[-g, -g], [g, g]])


def test_asymre():
    """ℓ = −(A + β)·log π, β = 0.1 (default): row 0 −1.1·(−2 log 2) = 2.2 log 2;
    row 1 −(−0.9)·(−3 log 2) = −2.7 log 2. loss = −0.5·log 2/4; grad −(A + β)/4:
    row 0 −1.1/4, row 1 0.9/4."""
    value, grad, _ = run("asymre", rep_batch())
    assert value == approx(-0.5 * LN2 / 4)
    assert_tensor(grad, [[-0.275, -0.275], [0.225, 0.225]])


def test_asymre_equals_reinforce_with_shifted_baseline():
    """rewards (1, −1): r̄ = 0, group_advantages(shift = 0.1) = (1.1, −0.9); REINFORCE on these
    gives the same −0.5·log 2/4 as asymre(β = 0.1) on A = (1, −1)."""
    adv = group_advantages(torch.tensor([[1.0, -1.0]], dtype=torch.float64), "mean", shift=0.1)
    assert adv.flatten().tolist() == approx([1.1, -0.9])
    value, _, _ = run("reinforce", rep_batch(adv=adv.flatten().tolist()))
    assert value == approx(-0.5 * LN2 / 4)


@pytest.mark.parametrize("eta", [1.0, 2.0])
def test_sppo(eta):
    """ℓ_i = (Σδ_i − η·A_i)² spread over the row, token-mean over 4 tokens.

    Row 0: (log 2 − η)²; row 1: (0 + η)² = η². loss = ((log 2 − η)² + η²)/4.
    grad 2·(Σδ_i − η·A_i)/4: row 0 (log 2 − η)/2; row 1 η/2 (= −2η·A/4 at δ = 0: REINFORCE).
    """
    value, grad, _ = run("sppo", rep_batch(), eta=eta)
    assert value == approx(((LN2 - eta) ** 2 + eta**2) / 4)
    g0 = (LN2 - eta) / 2
    assert_tensor(grad, [[g0, g0], [eta / 2, eta / 2]])


def test_sppo_averages_a_per_token_advantage():
    """A = [[1, 3], [−1, −1]]: Ā_0 = 2, Ā_1 = −1. loss = ((log 2 − 2)² + 1)/4."""
    batch = rep_batch()
    adv = torch.tensor([[1.0, 3.0], [-1.0, -1.0]], dtype=torch.float64)
    value, _, _ = run("sppo", (batch[0], batch[1], adv, batch[3]))
    assert value == approx(((LN2 - 2) ** 2 + 1) / 4)


def test_sppo_trinity_masks_outside_its_band():
    """Trinity-RFT's sPPO, ε = 0.3: M = 1/1.3 ≤ ρ ≤ 1.3, ℓ = −M·A·δ. Of ρ = 4, 1.5, 1.1, 0.5,
    0.25 only 1.1 is inside, in both rows. A = (+1, −3): loss = (−log 1.1 + 3·log 1.1)/10;
    grad −M·A/10: row 0 token 2 −0.1, row 1 token 2 +0.3; clipfrac 8/10."""
    logp, logp_old, _, mask = main_batch()
    adv = torch.tensor([1.0, -3.0], dtype=torch.float64)
    value, grad, metrics = run("sppo-trinity", (logp, logp_old, adv, mask))
    assert value == approx(2 * log(1.1) / 10)
    assert_tensor(grad, [[0, 0, -0.1, 0, 0], [0, 0, 0.3, 0, 0]])
    assert metrics["clipfrac"] == approx(0.8) and metrics["pg_clipfrac"] == approx(0.8)


@pytest.mark.parametrize(
    ("agg", "value_of", "grad_scale"),
    [
        ("token-mean", lambda s0, s1: (s0 + s1) / 3, (1 / 3, 1 / 3)),
        ("seq-mean-token-mean", lambda s0, s1: (s0 / 2 + s1) / 2, (1 / 4, 1 / 2)),
        ("seq-mean-token-sum", lambda s0, s1: (s0 + s1) / 2, (1 / 2, 1 / 2)),
    ],
)
def test_sppo_on_a_ragged_batch(agg, value_of, grad_scale):
    """Row 0 (A = +1): δ = (log 2, 0), L = 2; row 1 (A = −1): δ = (log 2, pad), L = 1.
    Squares S_0 = (log 2 − 1)², S_1 = (log 2 + 1)², spread as S_0/2, S_0/2 | S_1.
    token-mean (S_0 + S_1)/3; seq-mean-token-mean (S_0/2 + S_1)/2; seq-mean-token-sum
    (S_0 + S_1)/2. d S_i/d log π_t = 2(Σδ_i − A_i) for each valid token, times the row's weight
    in the mode: token-mean 1/3, 1/3; seq-mean-token-mean 1/(2·2), 1/(1·2); token-sum 1/2."""
    batch = _batch([[0.5, 0.5], [0.5, 0.0]], [[0.25, 0.5], [0.25, 0.0]], [1.0, -1.0],
                   [[1, 1], [1, 0]])
    value, grad, _ = run("sppo", batch, agg=agg)
    s0, s1 = (LN2 - 1) ** 2, (LN2 + 1) ** 2
    assert value == approx(value_of(s0, s1))
    g0, g1 = 2 * (LN2 - 1) * grad_scale[0], 2 * (LN2 + 1) * grad_scale[1]
    assert_tensor(grad, [[g0, g0], [g1, 0.0]])


# --------------------------------------------------------------------------------------------
# TOPR
# --------------------------------------------------------------------------------------------


def topr_batch():
    """B = 4, T = 2, token-mean over 8.

    row 0, A = −1: π = (.25, .25),  π_old = (.5, .5)    δ = (log .5, log .5)   Σδ = log .25
    row 1, A = −1: π = (.5, .125),  π_old = (.25, .5)   δ = (log 2, log .25)   Σδ = log .5
    row 2, A = +1: π = (.25, .5),   π_old = (.5, 1)     δ = (log .5, log .5)   Σδ = log .25
    row 3, A = −1: π = (.5, .5),    π_old = (.25, .5)   δ = (log 2, 0)         Σδ = log 2
    Σ log π per row: −4 log 2, −4 log 2, −3 log 2, −2 log 2.
    """
    return _batch(
        [[0.25, 0.25], [0.5, 0.125], [0.25, 0.5], [0.5, 0.5]],
        [[0.5, 0.5], [0.25, 0.5], [0.5, 1.0], [0.25, 0.5]],
        [-1.0, -1.0, 1.0, -1.0],
    )


def test_topr_sequence_taper():
    """α = 1 for A ≥ 0, clip(e^{Σδ}, 0, 1) for A < 0: α = 0.25, 0.5, 1, 1 (e^{log 2} → 1).

    ℓ = −α·A·log π per row sum: 0.25·(−4 log 2) = −log 2; 0.5·(−4 log 2) = −2 log 2;
    −(−3 log 2) = 3 log 2; −2 log 2. loss = −2·log 2/8 = −log 2/4.
    grad −α·A/8 (α is detached): row 0 0.25/8, row 1 0.5/8, row 2 −1/8, row 3 1/8.
    taperfrac = 4/8 (rows 0 and 1).
    """
    value, grad, metrics = run("topr", topr_batch())
    assert value == approx(-LN2 / 4)
    assert_tensor(grad, [[0.25 / 8] * 2, [0.5 / 8] * 2, [-1 / 8] * 2, [1 / 8] * 2])
    assert metrics["taperfrac"] == approx(0.5)


def test_topr_token_taper():
    """Token level: α = clip(e^{δ_t}, 0, 1) for A < 0: row 0 (.5, .5), row 1 (1, .25),
    row 2 (1, 1) as A > 0, row 3 (1, 1).

    Row sums of −α·A·log π: .5·(−2 log 2)·2 = −2 log 2; −log 2 + .25·(−3 log 2) = −1.75 log 2;
    3 log 2; −2 log 2. loss = −2.75·log 2/8. grad row 0 (.5, .5)/8, row 1 (1, .25)/8,
    row 2 (−1, −1)/8, row 3 (1, 1)/8. taperfrac = 3/8.
    """
    value, grad, metrics = run("topr", topr_batch(), level="token")
    assert value == approx(-2.75 * LN2 / 8)
    assert_tensor(grad, [[0.5 / 8, 0.5 / 8], [1 / 8, 0.25 / 8], [-1 / 8, -1 / 8], [1 / 8, 1 / 8]])
    assert metrics["taperfrac"] == approx(3 / 8)


# --------------------------------------------------------------------------------------------
# RLOO, presets, registry coverage
# --------------------------------------------------------------------------------------------


def test_rloo_advantages_and_loss():
    """rewards (1, 0, 0), K = 3: b_i = (Σ_j r_j − r_i)/2 = (0, 0.5, 0.5) → A = (1, −0.5, −0.5).
    T = 1, π = (0.5, 0.25, 0.8): loss = −(log 0.5 − 0.5·log 0.25 − 0.5·log 0.8)/3;
    grad −A/3 = (−1/3, 1/6, 1/6)."""
    adv, keep = LOSSES["rloo"].advantages(torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64))
    assert adv.flatten().tolist() == approx([1.0, -0.5, -0.5])
    assert keep.all()
    batch = _batch([[0.5], [0.25], [0.8]], [[0.5], [0.5], [0.5]], adv.flatten().tolist())
    value, grad, _ = run("rloo", batch)
    assert value == approx(-(log(0.5) - 0.5 * log(0.25) - 0.5 * log(0.8)) / 3)
    assert_tensor(grad, [[-1 / 3], [1 / 6], [1 / 6]])


PRESET_BINDINGS = {
    "grpo": ("ppo", {"eps_low": 0.2, "eps_high": 0.2, "dual_clip": None}, "mean-std",
             "seq-mean-token-mean"),
    "bnpo": ("ppo", {"eps_low": 0.2, "eps_high": 0.2, "dual_clip": None}, "mean-std",
             "token-mean"),
    "luspo": ("gspo", {"eps_low": 3e-4, "eps_high": 4e-4}, "mean-std", "seq-mean-token-sum"),
    "ppo-dual-clip": ("ppo", {"eps_low": 0.2, "eps_high": 0.2, "dual_clip": 3.0,
                              "log_ratio_clamp": None}, "mean-std", "token-mean"),
    "dapo": ("ppo", {"eps_low": 0.2, "eps_high": 0.28, "dual_clip": None}, "mean-std",
             "token-mean"),
    "dr-grpo": ("ppo", {"eps_low": 0.2, "eps_high": 0.2, "dual_clip": None}, "mean",
                "seq-mean-token-sum-norm"),
    "rloo": ("reinforce", {}, "loo", "token-mean"),
    "red-weight": ("rec", {"clip": "none", "weight": "advantage", "temp": 1.0}, "mean",
                   "token-mean"),
    "red-drop": ("rec", {"clip": "none", "weight": "none"}, "red-drop", "token-mean"),
    **{
        f"rec-{tag}-{w}": ("rec", {"clip": clip, "weight": weight, "eps_low": 0.2,
                                   "eps_high": 0.2}, "mean", "token-mean")
        for clip, tag in (("one-side", "oneside"), ("two-side", "twoside"), ("ring", "ring"))
        for weight, w in (("none", "nois"), ("is", "is"))
    },
}


@pytest.mark.parametrize("name", sorted(PRESET_BINDINGS))
def test_preset_binds_what_its_paper_says(name):
    """Each preset is its base loss with the keyword values, advantage kind and aggregation
    named in their papers (GRPO 0.2/std; DAPO ε_high 0.28; Dr.GRPO constant length;
    RLOO leave-one-out; REC mean baseline, ε = 0.2)."""
    base, bound, advantage, agg = PRESET_BINDINGS[name]
    spec = LOSSES[name]
    defaults = spec.defaults()
    assert spec.base == base
    assert {key: defaults[key] for key in bound} == bound
    assert spec.advantage == advantage
    assert spec.agg == agg
    assert spec.drop_uniform_groups == (name == "dapo")


def test_every_registered_loss_has_a_hand_checked_value():
    """This file has value tests for exactly these names; a new loss must get one too."""
    covered = {
        "reinforce", "rec", "ppo", "gspo", "gspo-token", "cispo", "opmd-kimi", "opmd-trinity",
        "asymre", "topr", "sppo", "grpo", "ppo-dual-clip", "rec-oneside-nois", "rec-oneside-is",
        "rec-twoside-nois", "rec-twoside-is", "rec-ring-nois", "rec-ring-is", "red-weight",
        "red-drop", "dapo", "dr-grpo", "rloo", "bnpo", "luspo", "sppo-trinity",
    }
    # the 2025–26 losses' value tests are in tests/test_losses_trust_region.py
    covered |= {"sapo", "gmpo", "dppo-tv", "dppo-kl", "vespo", "m2po", "clip-cov", "kl-cov",
                "dro", "cispo-scalerl", "decoupled-ppo"}
    assert set(LOSSES) == covered


# --------------------------------------------------------------------------------------------
# The pairwise surrogate
# --------------------------------------------------------------------------------------------


def test_pairwise_surrogate_k3_explicit_pairs():
    """K = 3, r = (1, 0, 0.5), τ = 0.5, δ = log π_θ − log π_t = (0.2, −0.4, 0.6).

    a = r − τδ = (1 − 0.1, 0 + 0.2, 0.5 − 0.3) = (0.9, 0.2, 0.2).
    Pairs: (1,2): 0.7² = 0.49; (1,3): 0.7² = 0.49; (2,3): 0. L̂ = 0.98/9.
    dL̂/da_i = (2/9)·Σ_j (a_i − a_j) = (2/9)·(1.4, −0.7, −0.7); d/d log π_θ = −τ·that
    = (−1.4/9, 0.7/9, 0.7/9).
    """
    rewards = torch.tensor([[1.0, 0.0, 0.5]], dtype=torch.float64)
    anchor = torch.tensor([[-1.0, -2.0, -1.5]], dtype=torch.float64)
    seq_logp = (anchor + torch.tensor([[0.2, -0.4, 0.6]], dtype=torch.float64)).requires_grad_()
    value = pairwise_surrogate(rewards, seq_logp, anchor, tau=0.5)
    (grad,) = torch.autograd.grad(value, seq_logp)
    assert value.item() == approx(0.98 / 9)
    assert_tensor(grad, [[-1.4 / 9, 0.7 / 9, 0.7 / 9]])


def test_pairwise_surrogate_weighted_and_averaged_over_groups():
    """Group 1 as above with w = (1, 2, 3): Σ w_i w_j (a_i − a_j)² = 1·2·0.49 + 1·3·0.49
    + 2·3·0 = 2.45, L̂ = 2.45/9. Group 2: r = (0, 0, 0), δ = 0 → a = 0, L̂ = 0.
    Mean over the 2 groups = 2.45/18."""
    rewards = torch.tensor([[1.0, 0.0, 0.5], [0.0, 0.0, 0.0]], dtype=torch.float64)
    anchor = torch.tensor([[-1.0, -2.0, -1.5], [-1.0, -1.0, -1.0]], dtype=torch.float64)
    delta = torch.tensor([[0.2, -0.4, 0.6], [0.0, 0.0, 0.0]], dtype=torch.float64)
    weights = torch.tensor([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    value = pairwise_surrogate(rewards, anchor + delta, anchor, tau=0.5, weights=weights)
    assert value.item() == approx(2.45 / 18)


def test_pairwise_surrogate_gradient_at_anchor_is_group_relative_reinforce():
    """δ = 0: a = r = (1, 0, 0.5). Pairs: 1² + 0.5² + 0.5² = 1.5, L̂ = 1.5/9 = 1/6.
    Gradient −(2τ/K)·(r_i − r̄) with τ = 0.5, K = 3, r̄ = 0.5: −(1/3)·(0.5, −0.5, 0)
    = (−1/6, 1/6, 0)."""
    rewards = torch.tensor([[1.0, 0.0, 0.5]], dtype=torch.float64)
    anchor = torch.tensor([[-1.0, -2.0, -1.5]], dtype=torch.float64)
    seq_logp = anchor.clone().requires_grad_()
    value = pairwise_surrogate(rewards, seq_logp, anchor, tau=0.5)
    (grad,) = torch.autograd.grad(value, seq_logp)
    assert value.item() == approx(1 / 6)
    assert_tensor(grad, [[-1 / 6, 1 / 6, 0.0]])
