"""Per-token KL estimators against a reference policy (Schulman's k1, k2, k3).

With ``logp`` = log π_θ(y_t|…) for tokens sampled from π_θ and ``logp_ref`` = log π_ref(y_t|…),
and the log-ratio log r = logp_ref − logp:

* ``k1``          −log r                       unbiased for KL(π_θ‖π_ref); high variance
* ``k2``          ½·(log r)²                   biased, low variance
* ``k3``          (r − 1) − log r              unbiased for KL(π_θ‖π_ref), always ≥ 0
* ``k3-clamped``  k3 with log r clamped to [−20, 20] and the result to [−10, 10]
                  (the "low_var_kl" of verl; keeps r = e^{log r} finite in any dtype)

Used as a *loss* with samples from π_θ (and no importance weight), their expected gradients are
not what their values suggest: k1 has zero expected gradient, k2 gives ∇KL(π_θ‖π_ref), and k3
gives ∇KL(π_ref‖π_θ) (``theory_tests`` pin all three exactly).

Design decisions
----------------
* ``KL_ESTIMATORS`` is a ``validation.Registry`` like every named collection; ``kl_penalty``
  answers an unknown name with its message as a ``ValueError`` (a bad value of the
  ``estimator`` argument), not the registry's ``KeyError``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from simulator import numerics
from simulator.validation import Registry


def k1(logp: Tensor, logp_ref: Tensor) -> Tensor:
    """k1 = log π_θ − log π_ref, per token."""
    return numerics.log_ratio(logp, logp_ref)


def k2(logp: Tensor, logp_ref: Tensor) -> Tensor:
    """k2 = ½·(log π_θ − log π_ref)², per token."""
    return numerics.finite(0.5 * numerics.log_ratio(logp, logp_ref) ** 2)


def k3(logp: Tensor, logp_ref: Tensor) -> Tensor:
    """k3 = r − 1 − log r with r = π_ref/π_θ, per token (≥ 0 for every r > 0); saturated by
    grlab's numerical rule (``simulator.numerics``): r beyond e^{709.78} is that bound, with
    no gradient, instead of inf and a NaN gradient."""
    log_r = numerics.log_ratio(logp_ref, logp)
    return numerics.finite(torch.expm1(log_r.clamp(max=numerics.LOG_MAX)) - log_r)


def k3_clamped(logp: Tensor, logp_ref: Tensor, *, log_ratio_clamp: float = 20.0,
               value_clamp: float = 10.0) -> Tensor:
    """k3 with log r clamped to ±``log_ratio_clamp`` and the result to ±``value_clamp``."""
    log_r = (logp_ref - logp).clamp(-log_ratio_clamp, log_ratio_clamp)
    return (torch.expm1(log_r) - log_r).clamp(-value_clamp, value_clamp)


KL_ESTIMATORS: Registry = Registry("KL estimator", {
    "k1": k1,
    "k2": k2,
    "k3": k3,
    "k3-clamped": k3_clamped,
})


def kl_penalty(logp: Tensor, logp_ref: Tensor, estimator: str = "k3") -> Tensor:
    """Per-token KL estimate [B, T] by name (one of ``KL_ESTIMATORS``); an unknown name is a
    ``ValueError`` listing the estimators, with a "did you mean" when one is close."""
    try:
        fn = KL_ESTIMATORS[estimator]
    except KeyError as error:
        raise ValueError(error.args[0]) from None
    if logp.shape != logp_ref.shape:
        raise ValueError(
            f"logp_ref must have the shape of logp {tuple(logp.shape)}, "
            f"got {tuple(logp_ref.shape)}"
        )
    return fn(logp, logp_ref)
