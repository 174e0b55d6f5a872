"""grlab's one numerical rule for loss math: finite for every finite input, exact wherever the
plain math is finite.

Real RL batches hit the edges: a stale token whose log-ratio δ = log π − log π_old is +100
(ρ = e^{100} overflows float32), a bf16 or fp16 batch, an advantage of 1e4. Peers clamp δ to
[−20, 20] before e^δ (verl ``core_algos.compute_policy_loss_vanilla``, Trinity-RFT
``ppo_policy_loss.py``), which changes the gradient wherever the token was not clipped away
anyway (a negative advantage without dual clip, an IS weight). grlab instead:

1. Computes every loss in float64, whatever the input dtype (``upcast``). A float32, bf16 or
   fp16 value has magnitude ≤ 3.4e38 ≈ e^{88.7}; in float64 their products, squares and sums
   of up to 2^64 terms stay far below the float64 maximum, and e^δ is exact up to δ = 709.78.
   The loss is elementwise over [B, T]: float64 costs nothing next to the model.
2. Bounds the few operations that can still overflow in float64, each in one helper:
   ``exp`` (argument clamped at log(max) = 709.78, the largest finite e^x), ``mul`` and
   ``finite`` (a product or sum that overflows saturates at ±max instead of ±inf), and
   ``safe_sum`` (sums scaled by 2^-64 and back, which is exact in binary floating point, so no
   partial sum of saturated terms overflows into inf − inf = NaN).
3. Casts results back with saturation: the value and metrics to the output dtype (float32 for
   bf16/fp16/float32 inputs, float64 for float64; ``downcast``), and the gradient to the
   input's dtype (``upcast``'s backward), so a true gradient of 1e6 reaches an fp16 input as
   65504, not inf.

Consequences (tested in tests/test_numerics.py over every loss × aggregation × dtype):
value, gradient and metrics are finite for every finite input; they equal the unclamped math
wherever that math is finite, because each bound only acts where the plain computation would
have produced ±inf (or, for ``exp``, where e^x is not representable in float64); where a bound
acts the saturated quantity carries no gradient (clamp's gradient is 0 outside its range).
A float64 input whose true loss is beyond 1.8e308 gets ±1.8e308: there is no finite exact
answer there.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["LOG_MAX", "MAX", "PEER_LOG_RATIO_CLAMP", "downcast", "exp", "finite", "log_ratio",
           "mul", "output_dtype", "safe_sum", "upcast"]

MAX = torch.finfo(torch.float64).max
LOG_MAX = math.log(MAX)  # 709.78…: e^LOG_MAX is the largest finite float64 exponential
_SCALE_DOWN = 2.0**-64  # exact in binary floating point; 2^64 saturated terms still sum finitely
_SCALE_UP = 2.0**64
PEER_LOG_RATIO_CLAMP = 20.0  # verl's and Trinity-RFT's clamp of δ before e^δ (keyword only)


def finite(x: Tensor) -> Tensor:
    """x with ±inf replaced by ±max of its dtype (finite values unchanged; NaN stays NaN)."""
    limit = torch.finfo(x.dtype).max
    return x.clamp(-limit, limit)


def log_ratio(logp: Tensor, logp_old: Tensor) -> Tensor:
    """δ = log π − log π_old (saturated: two huge float64 log-probs cannot make it inf)."""
    return finite(logp - logp_old)


def mul(a: Tensor | float, b: Tensor | float) -> Tensor:
    """a·b, saturating at ±max instead of overflowing to ±inf."""
    return finite(a * b)  # type: ignore[operator]


def exp(x: Tensor) -> Tensor:
    """e^x for x ≤ LOG_MAX, e^{LOG_MAX} = max beyond (where e^x is not a float64)."""
    return torch.exp(x.clamp(max=LOG_MAX))


def safe_sum(x: Tensor, dim: int | tuple[int, ...]) -> Tensor:
    """x.sum(dim), computed as (2^-64·x).sum·2^64 in float64 and saturated: bit-identical to
    the plain sum whenever that is finite (scaling by a power of two is exact), never
    inf − inf = NaN when saturated terms of both signs meet."""
    if x.dtype != torch.float64:
        return finite(x.sum(dim=dim))
    return finite((x * _SCALE_DOWN).sum(dim=dim) * _SCALE_UP)


def output_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of a loss's value and metrics: float64 for float64 inputs, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


class _Upcast(torch.autograd.Function):
    """x → float64; the gradient goes back in x's dtype, saturated at that dtype's max."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor) -> Tensor:  # type: ignore[override]
        return x.to(torch.float64)

    @staticmethod
    def setup_context(ctx, inputs, output):  # type: ignore[no-untyped-def]
        ctx.dtype = inputs[0].dtype

    @staticmethod
    def backward(ctx, grad):  # type: ignore[no-untyped-def]
        limit = torch.finfo(ctx.dtype).max
        return grad.clamp(-limit, limit).to(ctx.dtype)


def upcast(x: Tensor) -> Tensor:
    """x in float64 (itself when it already is), with a saturating gradient cast back."""
    if x.dtype == torch.float64:
        return x
    if not x.requires_grad:
        return x.to(torch.float64)
    return _Upcast.apply(x)


def downcast(x: Tensor, dtype: torch.dtype) -> Tensor:
    """A float64 result in ``dtype``, saturated at its max instead of rounding to ±inf."""
    if dtype == torch.float64:
        return finite(x)
    limit = torch.finfo(dtype).max
    return x.clamp(-limit, limit).to(dtype)
