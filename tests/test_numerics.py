"""The numerical rule (simulator.numerics), over the whole registry: every loss × aggregation ×
dtype × extreme input gives a finite value, finite gradient and finite metrics, and equals the
plain math wherever that is finite.

The extreme inputs are the ones real runs hit and peers break on: a stale token with
δ = log π − log π_old of ±100 or ±1000 (ρ overflows float32 at δ ≈ 88.7, float64 at ≈ 709.8),
advantages of ±89 (e^A overflows float32: RED-Weight) and ±1e4, log-probs of −1e30 (SPPO's
square), and the largest finite value of each dtype.
"""

from __future__ import annotations

import math

import pytest
import torch

from simulator.aggregation import AGGREGATIONS
from simulator.losses import LOSSES, policy_loss
from tests.loss_inputs import extra_inputs

DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]


def _cases(dtype: torch.dtype) -> dict[str, tuple[list[float], list[float], float]]:
    """name -> (log π per token, log π_old per token, A): one row, three tokens."""
    big = torch.finfo(dtype).max
    huge = min(1e30, big / 4)
    return {
        "on-policy": ([-0.5, -1.0, -2.0], [-0.5, -1.0, -2.0], 1.0),
        "delta +30, A < 0": ([-0.1, -0.2, -0.3], [-30.1, -0.2, -0.3], -1.0),
        "delta +100, A < 0": ([-0.1, -0.2, -0.3], [-100.1, -0.2, -0.3], -1.0),
        "delta -100, A > 0": ([-100.1, -0.2, -0.3], [-0.1, -0.2, -0.3], 1.0),
        "delta +1000 both signs": ([-0.1, -1000.0, -0.3], [-1000.1, -0.2, -0.3], -2.0),
        "delta +-huge": ([-huge, 0.0, -0.3], [0.0, -huge, -0.3], -1.0),
        "delta +-max": ([-big, big, -0.3], [big, -big, -0.3], 1.0),
        "A = +89": ([-0.5, -1.0, -0.2], [-0.4, -1.2, -0.2], 89.0),
        "A = -1e4": ([-0.5, -1.0, -0.2], [-0.4, -1.2, -0.2], -min(1e4, big)),
        "A = max": ([-0.5, -1.0, -0.2], [-0.4, -1.2, -0.2], big),
        "logp = -1e30": ([-huge, -1.0, -0.2], [-huge, -1.0, -0.2], 1.0),
        "positive log-probs": ([huge, -huge, 1.0], [-huge, huge, -1.0], -big),
    }


def _norm(agg: str) -> dict[str, float]:
    return {"norm_len": 3.0} if agg == "seq-mean-token-sum-norm" else {}


def _not_finite(out, leaf: torch.Tensor, dtype: torch.dtype) -> list[str]:
    """What of a policy_loss result is not finite (loss, gradient, metrics), or a gradient
    that is not in the input's dtype."""
    (grad,) = torch.autograd.grad(out.loss, leaf)
    bad = [key for key, value in out.metrics.items() if not torch.isfinite(value)]
    if not torch.isfinite(out.loss):
        bad.append("loss")
    if not torch.isfinite(grad).all():
        bad.append("grad")
    if grad.dtype != dtype:
        bad.append(f"grad dtype {grad.dtype}")
    return bad


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", list(_cases(torch.float64)))
def test_every_loss_is_finite_on_extreme_inputs_in_every_dtype(dtype, case):
    logp_row, old_row, adv = _cases(dtype)[case]
    # a second row of ordinary values, and one padded position holding garbage
    logp = torch.tensor([logp_row, [-0.7, -0.9, float("nan")]], dtype=torch.float64).to(dtype)
    logp_old = torch.tensor([old_row, [-0.6, -1.1, float("inf")]],
                            dtype=torch.float64).to(dtype)
    advantages = torch.tensor([adv, -0.5], dtype=torch.float64).to(dtype)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    assert torch.isfinite(logp[mask]).all() and torch.isfinite(advantages).all()
    failures = []
    for name in LOSSES:
        for agg in AGGREGATIONS:
            leaf = logp.clone().requires_grad_(True)
            out = policy_loss(name, leaf, logp_old, advantages, mask, agg=agg, **_norm(agg),
                              **extra_inputs(name, logp_old))
            bad = _not_finite(out, leaf, dtype)
            if bad:
                failures.append(f"{name}/{agg}: {bad}")
    assert not failures, failures


def test_a_negative_advantage_keeps_its_exact_huge_gradient_where_peers_clamp_it_away():
    """PPO without dual clip, A = −1, δ = 30: the token is not clipped (A < 0 and ρ > 1 − ε), so
    ∂ℓ/∂log π = −A·ρ = e^{30}; token-mean over 1 token. verl and Trinity clamp δ at 20 first and
    get 0 (``log_ratio_clamp=20`` reproduces them)."""
    logp = torch.tensor([[-0.1]], dtype=torch.float64, requires_grad=True)
    old = logp.detach() - 30.0
    adv = torch.tensor([-1.0], dtype=torch.float64)
    mask = torch.ones(1, 1, dtype=torch.bool)
    (grad,) = torch.autograd.grad(policy_loss("ppo", logp, old, adv, mask).loss, logp)
    assert float(grad) == pytest.approx(math.exp(30.0), rel=1e-12)
    clamped = policy_loss("ppo", logp, old, adv, mask, log_ratio_clamp=20.0)
    assert float(clamped.loss.detach()) == pytest.approx(math.exp(20.0), rel=1e-12)
    (grad,) = torch.autograd.grad(clamped.loss, logp)
    assert float(grad) == 0.0


@pytest.mark.parametrize(("dtype", "expected"), [(torch.float32, math.exp(50.0)),
                                                 (torch.bfloat16, None),
                                                 (torch.float16, 65504.0)])
def test_a_gradient_beyond_the_input_dtype_saturates_at_its_max(dtype, expected):
    """The same token at δ = 50: the true gradient e^{50} ≈ 5.2e21 is a float32 (exact up to
    float32 rounding), rounds to bf16, and is beyond fp16's 65504, where it saturates instead
    of becoming inf."""
    logp = torch.tensor([[-0.125]], dtype=dtype, requires_grad=True)
    old = (logp.detach().double() - 50.0).to(dtype)
    adv = torch.tensor([-1.0], dtype=dtype)
    out = policy_loss("ppo", logp, old, adv, torch.ones(1, 1, dtype=torch.bool))
    (grad,) = torch.autograd.grad(out.loss, logp)
    true = math.exp(float(logp.detach().double() - old.double()))
    assert torch.isfinite(grad).all()
    if expected is None:  # bf16: the true value, rounded
        assert float(grad) == pytest.approx(true, rel=1e-2)
    else:
        assert float(grad) == pytest.approx(min(true, expected), rel=1e-6)


def test_red_weight_at_a_large_advantage_is_the_plain_math_in_float64():
    """A = 89: e^{89} overflows float32 but not float64; RED-Weight's ℓ = −A·e^{A}·log π is
    computed in float64, so a float32 batch gets the exact value (≈ 4.0e40 overflows float32:
    the value saturates at float32's max, the gradient too)."""
    logp = torch.tensor([[-0.5]], dtype=torch.float64, requires_grad=True)
    adv = torch.tensor([89.0], dtype=torch.float64)
    mask = torch.ones(1, 1, dtype=torch.bool)
    out = policy_loss("red-weight", logp, logp.detach(), adv, mask)
    assert float(out.loss.detach()) == pytest.approx(89.0 * math.exp(89.0) * 0.5, rel=1e-12)
    low = policy_loss("red-weight", logp.detach().float().requires_grad_(True),
                      logp.detach().float(), adv.float(), mask)
    assert float(low.loss.detach()) == torch.finfo(torch.float32).max


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_low_precision_inputs_get_the_float64_math_of_their_own_values(dtype):
    """A low-precision batch is computed exactly as the float64 batch of the same (rounded)
    numbers, then rounded once: value and gradient agree to the output dtype's rounding."""
    g = torch.Generator().manual_seed(4)
    logp = (-torch.rand(4, 5, generator=g, dtype=torch.float64) * 3).to(dtype)
    old = (logp.double() + 0.5 * torch.randn(4, 5, generator=g, dtype=torch.float64)).to(dtype)
    adv = torch.randn(4, generator=g, dtype=torch.float64).to(dtype)
    mask = torch.rand(4, 5, generator=g) > 0.2
    mask[:, 0] = True
    unit = {torch.float32: 2.0**-23, torch.bfloat16: 2.0**-7, torch.float16: 2.0**-10}[dtype]
    for name in LOSSES:
        ref_leaf = logp.double().requires_grad_(True)
        extra = extra_inputs(name, old)  # the same rounded values in both calls
        ref = policy_loss(name, ref_leaf, old.double(), adv.double(), mask,
                          **_norm(LOSSES[name].agg),
                          **{key: value.double() for key, value in extra.items()})
        (ref_grad,) = torch.autograd.grad(ref.loss, ref_leaf)
        leaf = logp.clone().requires_grad_(True)
        out = policy_loss(name, leaf, old, adv, mask, **_norm(LOSSES[name].agg), **extra)
        (grad,) = torch.autograd.grad(out.loss, leaf)
        assert out.loss.dtype == torch.float32
        # the value is rounded once to float32; the gradient once to the input's dtype
        value, expected = float(out.loss.detach()), float(ref.loss.detach())
        assert value == pytest.approx(expected, rel=2.0**-23, abs=1e-30), name
        torch.testing.assert_close(grad.double(), ref_grad, rtol=unit, atol=1e-30)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", list(_cases(torch.float64)))
def test_every_correction_is_finite_on_extreme_inputs_in_every_dtype(dtype, case):
    """Each registered correction on PPO with the extreme cases as the π_old–μ mismatch (the
    case's log π_old is μ, its log π is π_old, and π_θ sits near π_old): loss, gradient and
    metrics finite, the gradient in the input dtype. A correction may remove every token
    (then policy_loss says so), never give a NaN."""
    from simulator.corrections import CORRECTIONS

    logp_row, old_row, adv = _cases(dtype)[case]
    old = torch.tensor([logp_row, [-0.7, -0.9, float("nan")]], dtype=torch.float64).to(dtype)
    mu = torch.tensor([old_row, [-0.6, -1.1, float("inf")]], dtype=torch.float64).to(dtype)
    logp = old.clone()
    advantages = torch.tensor([adv, -0.5], dtype=torch.float64).to(dtype)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    entropy = torch.ones_like(logp)
    failures = []
    for name in CORRECTIONS:
        leaf = logp.clone().requires_grad_(True)
        try:
            out = policy_loss("ppo", leaf, old, advantages, mask, logp_rollout=mu,
                              logp_ref=mu, entropy=entropy, corrections=name)
        except ValueError as error:
            if "removed every token" not in str(error):
                failures.append(f"{name}: {error}")
            continue
        bad = _not_finite(out, leaf, dtype)
        if bad:
            failures.append(f"{name}: {bad}")
    assert not failures, failures
