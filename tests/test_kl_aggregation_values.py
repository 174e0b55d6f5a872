"""Hand-checked values of the KL estimators (``simulator.kl``) and of every aggregation mode
(``simulator.aggregation``), with their gradients.

Formulas from the modules' docstrings (Schulman's k1/k2/k3 with log r = log π_ref − log π_θ;
aggregation modes with M the mask, L_i the valid length, B' the rows with a valid token).
Arithmetic in each docstring; float64, rel=1e-12 or exact.
"""

from __future__ import annotations

import math

import pytest
import torch

from simulator.aggregation import (
    aggregate,
    masked_mean,
    sequence_mean,
    sequence_sum,
    spread_over_tokens,
)
from simulator.kl import KL_ESTIMATORS, k3_clamped, kl_penalty

LN2 = math.log(2.0)


def approx(values):
    return pytest.approx(values, rel=1e-12)


def flat(t: torch.Tensor) -> list[float]:
    return t.detach().flatten().tolist()


def kl_inputs():
    """Three tokens: π_θ = (.25, .5, .5), π_ref = (.5, .25, .5).
    log r = log π_ref − log π_θ = (log 2, −log 2, 0), r = (2, 0.5, 1)."""
    logp = torch.tensor([[math.log(0.25), math.log(0.5), math.log(0.5)]],
                        dtype=torch.float64).requires_grad_()
    logp_ref = torch.tensor([[math.log(0.5), math.log(0.25), math.log(0.5)]], dtype=torch.float64)
    return logp, logp_ref


def _value_and_grad(estimator, **kwargs):
    logp, logp_ref = kl_inputs()
    if kwargs:
        values = k3_clamped(logp, logp_ref, **kwargs)
    else:
        values = kl_penalty(logp, logp_ref, estimator)
    (grad,) = torch.autograd.grad(values.sum(), logp)
    return flat(values), flat(grad)


def test_k1():
    """k1 = −log r = (−log 2, log 2, 0); d k1/d log π_θ = 1."""
    values, grad = _value_and_grad("k1")
    assert values == approx([-LN2, LN2, 0.0])
    assert grad == [1.0, 1.0, 1.0]


def test_k2():
    """k2 = ½(log r)² = (½(log 2)², ½(log 2)², 0); d/d log π_θ = log π_θ − log π_ref
    = (−log 2, log 2, 0)."""
    values, grad = _value_and_grad("k2")
    assert values == approx([0.5 * LN2**2, 0.5 * LN2**2, 0.0])
    assert grad == approx([-LN2, LN2, 0.0])


@pytest.mark.parametrize("estimator", ["k3", "k3-clamped"])
def test_k3(estimator):
    """k3 = (r − 1) − log r: r = 2 → 1 − log 2; r = 0.5 → −0.5 + log 2; r = 1 → 0.
    d/d log π_θ = 1 − r (dr/d log π_θ = −r, d(−log r)/d log π_θ = 1) = (−1, 0.5, 0).
    Inside the clamps (|log r| ≤ 20, value ≤ 10) k3-clamped is k3."""
    values, grad = _value_and_grad(estimator)
    assert values == approx([1 - LN2, LN2 - 0.5, 0.0])
    assert grad == approx([-1.0, 0.5, 0.0])


def test_k3_clamped_extremes():
    """log r = 25 → clamped to 20: e^{20} − 1 − 20 ≈ 4.9e8 → value clamp 10.
    log r = −25 → −20: e^{−20} − 1 + 20 ≈ 19 → 10. Both constants: gradient 0.
    (Unclamped k3 at log r = −25 is e^{−25} + 24 ≈ 24.)"""
    logp = torch.tensor([[-25.0, 0.0]], dtype=torch.float64).requires_grad_()
    logp_ref = torch.tensor([[0.0, -25.0]], dtype=torch.float64)
    values = kl_penalty(logp, logp_ref, "k3-clamped")
    (grad,) = torch.autograd.grad(values.sum(), logp)
    assert flat(values) == [10.0, 10.0]
    assert flat(grad) == [0.0, 0.0]
    assert flat(kl_penalty(logp, logp_ref, "k3"))[1] == approx(math.exp(-25.0) + 24.0)


def test_k3_clamped_custom_clamps():
    """On log r = (log 2, −log 2, 0):
    log_ratio_clamp = 0.7 (> log 2 ≈ 0.693, no log-ratio clamping), value_clamp = 0.25:
    token 0: k3 = 1 − log 2 ≈ 0.307 > 0.25 → 0.25, grad 0; token 1: k3 = log 2 − 0.5 ≈ 0.193,
    kept, grad 1 − r = 0.5; token 2: 0, grad 0.
    log_ratio_clamp = log 1.5 (value clamp 10): log r → (log 1.5, −log 1.5, 0), r → (1.5, 2/3, 1):
    k3 = (0.5 − log 1.5, −1/3 + log 1.5, 0); tokens 0, 1 are clamped so their gradient is 0,
    token 2 has 1 − r = 0."""
    values, grad = _value_and_grad("k3-clamped", log_ratio_clamp=0.7, value_clamp=0.25)
    assert values == approx([0.25, LN2 - 0.5, 0.0])
    assert grad == approx([0.0, 0.5, 0.0])
    values, grad = _value_and_grad("k3-clamped", log_ratio_clamp=math.log(1.5))
    assert values == approx([0.5 - math.log(1.5), math.log(1.5) - 1 / 3, 0.0])
    assert grad == [0.0, 0.0, 0.0]


def test_kl_estimator_registry():
    assert set(KL_ESTIMATORS) == {"k1", "k2", "k3", "k3-clamped"}


# --------------------------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------------------------


def agg_inputs():
    """per_token (B = 3, T = 3) with mask:
        row 0: 1, 2, [nan]      L_0 = 2, row sum 3
        row 1: 4, 5, 6          L_1 = 3, row sum 15
        row 2: [7, 8, inf]      L_2 = 0 (no valid token): B = 3, B' = 2
    The masked values (nan, inf) must not leak into the value or the gradient."""
    per_token = torch.tensor([[1.0, 2.0, math.nan], [4.0, 5.0, 6.0], [7.0, 8.0, math.inf]],
                             dtype=torch.float64).requires_grad_()
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [0, 0, 0]], dtype=torch.bool)
    return per_token, mask


@pytest.mark.parametrize(
    ("mode", "norm_len", "rows", "expected", "grad"),
    [
        # Σ M·ℓ / Σ M = (3 + 15)/5; every valid token weighs 1/5.
        ("token-mean", None, "all", 18 / 5, [[0.2, 0.2, 0], [0.2, 0.2, 0.2], [0, 0, 0]]),
        # Σ M·ℓ = 18; every valid token weighs 1 (verl's token-sum).
        ("token-sum", None, "all", 18.0, [[1, 1, 0], [1, 1, 1], [0, 0, 0]]),
        # (3/2 + 15/3 + 0)/3 = 6.5/3; weights 1/(L_i·B): 1/6 and 1/9.
        ("seq-mean-token-mean", None, "all", 6.5 / 3,
         [[1 / 6, 1 / 6, 0], [1 / 9, 1 / 9, 1 / 9], [0, 0, 0]]),
        # B' = 2 (verl's single-process count): 6.5/2 = 3.25; weights 1/4 and 1/6.
        ("seq-mean-token-mean", None, "valid", 3.25,
         [[0.25, 0.25, 0], [1 / 6, 1 / 6, 1 / 6], [0, 0, 0]]),
        # (3 + 15)/3 = 6; weights 1/B = 1/3.
        ("seq-mean-token-sum", None, "all", 6.0,
         [[1 / 3, 1 / 3, 0], [1 / 3, 1 / 3, 1 / 3], [0, 0, 0]]),
        # norm_len = 3: (3/3 + 15/3)/3 = 2; weights 1/(3·3) = 1/9.
        ("seq-mean-token-sum-norm", 3.0, "all", 2.0,
         [[1 / 9, 1 / 9, 0], [1 / 9, 1 / 9, 1 / 9], [0, 0, 0]]),
        # norm_len = 2, B' = 2: (3/2 + 15/2)/2 = 4.5; weights 1/(2·2) = 1/4.
        ("seq-mean-token-sum-norm", 2.0, "valid", 4.5,
         [[0.25, 0.25, 0], [0.25, 0.25, 0.25], [0, 0, 0]]),
    ],
)
def test_aggregation_modes(mode, norm_len, rows, expected, grad):
    """Values and d/dℓ of each mode on ``agg_inputs`` (row 2 has no valid token: counted in
    B = 3, not in B′ = 2)."""
    per_token, mask = agg_inputs()
    value = aggregate(per_token, mask, mode, norm_len=norm_len, rows=rows)
    (g,) = torch.autograd.grad(value, per_token)
    assert value.item() == approx(expected)
    assert flat(g) == approx(flat(torch.tensor(grad, dtype=torch.float64)))


@pytest.mark.parametrize("mode", ["token-mean", "token-sum", "seq-mean-token-mean",
                                  "seq-mean-token-sum", "seq-mean-token-sum-norm"])
def test_aggregation_of_empty_mask_is_exactly_zero(mode):
    """No valid token at all: the result is exactly 0 (never NaN), whatever the padding holds."""
    per_token = torch.tensor([[math.nan, 1.0]], dtype=torch.float64)
    mask = torch.zeros(1, 2, dtype=torch.bool)
    norm_len = 2.0 if mode == "seq-mean-token-sum-norm" else None
    assert aggregate(per_token, mask, mode, norm_len=norm_len).item() == 0.0


def test_norm_len_rejected_outside_sum_norm():
    per_token, mask = agg_inputs()
    with pytest.raises(ValueError, match="norm_len"):
        aggregate(per_token, mask, "token-mean", norm_len=3.0)


def test_sequence_helpers():
    """On ``agg_inputs``: sequence_sum = (3, 15, 0); sequence_mean = (3/2, 5, 0);
    masked_mean = 18/5; spread_over_tokens((6, 9, 4)) = (3, 3, 0 | 3, 3, 3 | 0, 0, 0):
    each row's total on its valid tokens, 6/2 and 9/3; nothing on a row with no valid token."""
    per_token, mask = agg_inputs()
    assert flat(sequence_sum(per_token, mask)) == [3.0, 15.0, 0.0]
    assert flat(sequence_mean(per_token, mask)) == [1.5, 5.0, 0.0]
    assert masked_mean(per_token, mask).item() == approx(3.6)
    spread = spread_over_tokens(torch.tensor([6.0, 9.0, 4.0], dtype=torch.float64), mask)
    assert flat(spread) == [3.0, 3.0, 0.0, 3.0, 3.0, 3.0, 0.0, 0.0, 0.0]
