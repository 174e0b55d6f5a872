"""How a per-token loss [B, T] becomes one scalar.

The aggregation is part of the algorithm, not a detail: it decides how much each response and
each token weighs in the gradient (Dr.GRPO's length bias argument, DAPO's token-mean).

Modes (ℓ per-token loss, M mask, L_i = Σ_t M_it the valid length of row i, B' the number of
rows with at least one valid token):

* ``token-mean``               Σ_it M·ℓ / Σ_it M                  every valid token weighs the same
* ``seq-mean-token-mean``      (1/B')·Σ_i (Σ_t M·ℓ)/L_i            every response weighs the same
* ``seq-mean-token-sum``       (1/B')·Σ_i Σ_t M·ℓ                  sequence-level sum per response
* ``seq-mean-token-sum-norm``  (1/B')·Σ_i (Σ_t M·ℓ)/norm_len       Dr.GRPO: a constant length

A row with no valid token contributes nothing and is not counted in B'. If no token at all is
valid the result is exactly 0 (never NaN); ``policy_loss`` rejects such a batch before it gets
here. Note on peers: verl's ``seq-mean-token-sum-norm`` divides the *sum* over rows by T; ours is
the mean over rows divided by ``norm_len`` (default T), i.e. verl's value divided by B'. The
gradient direction is the same; the scale follows Dr.GRPO's (1/G)·Σ_i form.
"""

from __future__ import annotations

import torch
from torch import Tensor

from simulator.validation import require_choice, require_positive

AGGREGATIONS: tuple[str, ...] = (
    "token-mean",
    "seq-mean-token-mean",
    "seq-mean-token-sum",
    "seq-mean-token-sum-norm",
)


def aggregate(
    per_token: Tensor, mask: Tensor, mode: str = "token-mean", *, norm_len: float | None = None
) -> Tensor:
    """Reduce ``per_token`` [B, T] under a bool ``mask`` [B, T] to a scalar, as ``mode`` says.

    Leading dimensions are batch dimensions: [..., B, T] gives [...], each [B, T] slice reduced
    on its own (the exact simulator aggregates every group of K responses this way at once).
    ``norm_len`` is the constant length of ``seq-mean-token-sum-norm`` (default: T, the padded
    width); it is rejected for the other modes so that it is never silently ignored.
    """
    require_choice("agg", mode, AGGREGATIONS)
    if norm_len is not None and mode != "seq-mean-token-sum-norm":
        raise ValueError(f"norm_len only applies to agg='seq-mean-token-sum-norm', not {mode!r}")
    weights = mask.to(per_token.dtype)
    # torch.where, not multiplication: a masked NaN or inf must not leak (NaN·0 = NaN).
    masked = torch.where(mask, per_token, per_token.new_zeros(()))
    if mode == "token-mean":
        return masked.sum(dim=(-2, -1)) / weights.sum(dim=(-2, -1)).clamp(min=1.0)
    row_len = weights.sum(dim=-1)
    row_sum = masked.sum(dim=-1)
    if mode == "seq-mean-token-mean":
        row_value = row_sum / row_len.clamp(min=1.0)
    elif mode == "seq-mean-token-sum":
        row_value = row_sum
    else:
        length = float(per_token.shape[-1]) if norm_len is None else norm_len
        row_value = row_sum / require_positive("norm_len", length)
    n_rows = (row_len > 0).to(per_token.dtype).sum(dim=-1).clamp(min=1.0)
    return row_value.sum(dim=-1) / n_rows


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` over the positions where the bool ``mask`` is True (0 when none)."""
    masked = torch.where(mask, values, values.new_zeros(()))
    return masked.sum() / mask.to(values.dtype).sum().clamp(min=1.0)


def sequence_sum(values: Tensor, mask: Tensor) -> Tensor:
    """Σ_t M·values per row: [B, T] -> [B] (e.g. a sequence log-probability)."""
    return torch.where(mask, values, values.new_zeros(())).sum(dim=-1)


def sequence_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Σ_t M·values / L_i per row: [B, T] -> [B]; 0 for a row with no valid token."""
    length = mask.to(values.dtype).sum(dim=-1).clamp(min=1.0)
    return sequence_sum(values, mask) / length


def spread_over_tokens(per_sequence: Tensor, mask: Tensor) -> Tensor:
    """Put a per-sequence quantity [B] evenly on the valid tokens of its row: [B, T].

    Σ_t of the result is the original value, so ``seq-mean-token-sum`` of it recovers the
    sequence-level objective exactly, and every other mode gives the same per-row scaling it
    gives any other per-token loss. Used by the sequence-level penalties (OPMD-Kimi, SPPO).
    """
    length = mask.to(per_sequence.dtype).sum(dim=-1, keepdim=True).clamp(min=1.0)
    spread = per_sequence.unsqueeze(-1) / length
    return torch.where(mask, spread, spread.new_zeros(()))


def normaliser(mask: Tensor, mode: str = "token-mean") -> Tensor:
    """The count ``aggregate`` divides by under ``mode``: the number of valid tokens for
    ``token-mean``, the number B' of rows with a valid token for the ``seq-mean-*`` modes
    (clamped to ≥ 1 as there). Every mode is Σ (row-local terms) / normaliser, so for a split
    of the rows into micro-batches m, Σ_m aggregate(ℓ_m, M_m)·normaliser(M_m)/normaliser(M)
    = aggregate(ℓ, M): exact gradient accumulation (pass the same ``norm_len`` to every
    micro-batch of ``seq-mean-token-sum-norm``).
    """
    require_choice("agg", mode, AGGREGATIONS)
    if mode == "token-mean":
        return mask.sum().to(torch.float64).clamp(min=1.0)
    return (mask.sum(dim=-1) > 0).sum().to(torch.float64).clamp(min=1.0)
