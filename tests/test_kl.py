"""``simulator.kl``: hand-checked values of the KL estimators with their gradients, then their
properties (non-negativity, the clamp, dispatch by name).

Formulas from the module's docstring (Schulman's k1/k2/k3 with log r = log π_ref − log π_θ).
Arithmetic in each docstring; float64, rel=1e-12 or exact.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from simulator.kl import KL_ESTIMATORS, k3, k3_clamped, kl_penalty

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
# Properties
# --------------------------------------------------------------------------------------------


@given(x=st.floats(-30, 30), y=st.floats(-30, 30))
def test_k3_is_nonnegative_and_zero_only_at_equal_log_probs(x, y):
    value = float(k3(torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)))
    assert value >= 0.0
    if x == y:
        assert value == 0.0


@given(x=st.floats(-5, 5), y=st.floats(-5, 5))
def test_clamped_k3_equals_k3_inside_the_clamp(x, y):
    a, b = torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)
    if float(k3(a, b)) <= 10.0:
        assert float(k3_clamped(a, b)) == pytest.approx(float(k3(a, b)), rel=1e-12, abs=1e-15)


def test_k3_saturates_where_its_plain_math_overflows_and_clamped_k3_is_bounded():
    """At log r = 1000, r = e^1000 is no float: plain math gives inf (and a NaN gradient
    through the saturation); grlab's k3 gives the dtype's max with a finite gradient (the
    numerical rule: the saturated part carries none), k3-clamped its bound 10."""
    a = torch.tensor([-1000.0], requires_grad=True)
    b = torch.tensor([0.0])
    plain = torch.expm1(b - a.detach()) - (b - a.detach())
    assert not torch.isfinite(plain).all()
    value = k3(a, b)
    assert float(value.detach()) == torch.finfo(torch.float32).max
    (grad,) = torch.autograd.grad(value.sum(), a)
    assert torch.isfinite(grad).all()
    assert float(k3_clamped(a.detach(), b)) == 10.0


def test_kl_penalty_dispatches_by_name_and_rejects_bad_input():
    a = torch.tensor([[-1.0, -2.0]])
    b = torch.tensor([[-1.5, -1.0]])
    for name, fn in KL_ESTIMATORS.items():
        assert torch.equal(kl_penalty(a, b, name), fn(a, b))
    with pytest.raises(ValueError, match="unknown KL estimator 'k4'; Valid: k1"):
        kl_penalty(a, b, "k4")
    with pytest.raises(ValueError, match="logp_ref must have the shape"):
        kl_penalty(a, b[:, :1], "k1")
