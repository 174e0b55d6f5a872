"""The loss zoo: every policy loss of the GRPO family, written once.

Design decisions
----------------
* A loss is a pure per-token function ``fn(logp, logp_old, adv, mask, *, hparams) -> TokenLoss``
  on [B, T] tensors: no ``.item()``, no Python branch on tensor values, no in-place edits, so
  ``torch.func`` can trace it. ``policy_loss`` (``simulator.loss_call``, re-exported here)
  wraps it: checks, per-token loss, aggregation (``simulator.aggregation``), then metrics.
  This module is the zoo only: shared loss math, the losses, the presets.
* The registry ``LOSSES`` (``simulator.loss_registry``) maps a name to a ``LossSpec``: the
  function, bound keyword values, the advantage kind that travels with it (``grpo`` divides by
  the group std, ``rec-*`` does not), its default aggregation, and the peer or paper the name
  follows. Presets are data: a ``LossSpec`` with other bound values, never a copied body.
* Names follow their peers. Where grlab uses a name of the paper's code (Trinity-RFT
  0.6.0), verl 0.9.1 or TRL 1.16, it gives that peer's numbers, or docs/conventions.md says why
  not and which keyword restores the peer (tests/test_parity_*.py pin every convention).
* Masked positions are replaced by 0 before any math, so whatever a padded position holds
  (garbage, NaN, inf) cannot reach the loss or its gradient. ``logp_old`` and the advantages
  are constants: they are detached, whatever the caller passes.
* One numerical rule (``simulator.numerics``): the math runs in float64 for every input dtype;
  exponentials, products and sums that could overflow saturate instead; the value and metrics
  come back in float32 (float64 for float64 inputs) and the gradient in the input's dtype,
  saturated. Finite for every finite input; equal to the plain math wherever that is finite.

Symbols: π = π_θ (``logp``, with gradient), π_old = behavior/rollout policy (``logp_old``),
ρ = π/π_old per token, δ = log ρ, A = advantage (``advantages``: [B] per sequence or [B, T]),
M = clipping mask, sg = stop-gradient, ε = ``eps_low``/``eps_high``. Sequence quantities use the
valid tokens of the row only. Paper: Yao et al., "Group-Relative REINFORCE Is Secretly an
Off-Policy Algorithm" (arXiv 2509.24203): the derivation of its Sec. 2.2, the REC family, OPMD's
penalty (its Sec. 4.2), AsymRE and RED; friends as cited per loss.
"""

from __future__ import annotations

from simulator.loss_call import GroupLosses, group_losses, pairwise_surrogate, policy_loss
from simulator.loss_registry import (
    LOSSES,
    LossOutput,
    LossSetup,
    LossSpec,
    TokenLoss,
    register_loss,
    register_preset,
)
from simulator.numerics import PEER_LOG_RATIO_CLAMP

# isort: off
# Importing the zoo's modules fills LOSSES: the base losses first, the presets that bind them last.
from simulator.losses import reinforce, clipped, trust_region  # noqa: F401
from simulator.losses import presets  # noqa: F401
# isort: on

__all__ = [
    "LOSSES",
    "PEER_LOG_RATIO_CLAMP",
    "GroupLosses",
    "LossOutput",
    "LossSetup",
    "LossSpec",
    "TokenLoss",
    "group_losses",
    "pairwise_surrogate",
    "policy_loss",
    "register_loss",
    "register_preset",
]
