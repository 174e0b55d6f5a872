"""How a per-token loss [B, T] becomes one scalar.

The aggregation is part of the algorithm, not a detail: it decides how much each response and
each token weighs in the gradient (Dr.GRPO's length bias argument, DAPO's token-mean).

Every mode is Σ_i (a row-local term) / N, with N a count of the whole batch (ℓ per-token loss,
M mask, L_i = Σ_t M_it the valid length of row i, B the number of rows):

* ``token-mean``               Σ_it M·ℓ / Σ_it M                  every valid token weighs the same
* ``token-sum``                Σ_it M·ℓ                            (N = 1; verl's ``token-sum``)
* ``seq-mean-token-mean``      (1/B)·Σ_i (Σ_t M·ℓ)/L_i             every response weighs the same
* ``seq-mean-token-sum``       (1/B)·Σ_i Σ_t M·ℓ                   sequence-level sum per response
* ``seq-mean-token-sum-norm``  (1/B)·Σ_i (Σ_t M·ℓ)/norm_len         Dr.GRPO: a constant length

The names are verl's (``verl.trainer.ppo.core_algos.agg_loss``, 0.9.1), and so are the
formulas, with two decisions (docs/conventions.md has the peer-by-peer table):

* Rows. B counts every row, a row with no valid token included (it contributes 0): TRL
  (``GRPOTrainer._compute_loss``, 1.16), Trinity-RFT (``aggregate_loss``, 0.6.0) and verl's
  distributed engines (``global_batch_size`` = the mini-batch size) do this. verl's
  single-process ``agg_loss`` without ``global_batch_size`` divides by the rows that have a
  valid token (B′): ``rows="valid"`` gives that. The two differ only when a row is fully masked
  (DAPO's filter, RED-Drop's dropped samples, padding rows).
* ``norm_len`` is a constant the caller states (Dr.GRPO and TRL use the maximum completion
  length). It is never the padded width of the batch, which would change from batch to batch;
  without it ``seq-mean-token-sum-norm`` is a ``ValueError``.

``denominator`` replaces the batch's own N by a count of a larger batch: with the global number
of valid tokens (``token-mean``) or rows (``seq-mean-*``), a micro-batch's or one process's
share sums to the global batch's value exactly (see ``normaliser``). If no token at all is
valid the result is exactly 0 (never NaN); ``policy_loss`` rejects such a batch before it gets
here. Sums go through ``simulator.numerics.safe_sum`` (bit-identical to a plain sum wherever
that is finite, saturated instead of inf or NaN beyond).
"""

from __future__ import annotations

import torch
from torch import Tensor

from simulator.numerics import safe_sum
from simulator.validation import require_choice, require_positive

AGGREGATIONS: tuple[str, ...] = (
    "token-mean",
    "token-sum",
    "seq-mean-token-mean",
    "seq-mean-token-sum",
    "seq-mean-token-sum-norm",
)
ROW_COUNTS: tuple[str, ...] = ("all", "valid")


def check_options(mode: str, norm_len: float | None, rows: str = "all") -> None:
    """Reject an unknown mode, a missing or misplaced ``norm_len`` and an unknown ``rows``."""
    require_choice("agg", mode, AGGREGATIONS)
    require_choice("rows", rows, ROW_COUNTS)
    if mode == "seq-mean-token-sum-norm":
        if norm_len is None:
            raise ValueError("agg='seq-mean-token-sum-norm' divides each response's token sum by a "
                             "constant length: pass norm_len= (Dr.GRPO and TRL use the maximum "
                             "completion length)")
        require_positive("norm_len", norm_len)
    elif norm_len is not None:
        raise ValueError(f"norm_len only applies to agg='seq-mean-token-sum-norm', not {mode!r}")


def norm_len_for(mode: str, max_len: float, norm_len: float | None = None) -> float | None:
    """``norm_len`` in force: under ``seq-mean-token-sum-norm`` the caller's, else the maximum
    completion length ``max_len`` (Dr.GRPO's and TRL's constant; never the padded width of one
    batch); under any other mode the caller's (None unless given, which ``check_options``
    refuses there)."""
    if mode != "seq-mean-token-sum-norm" or norm_len is not None:
        return norm_len
    return float(max_len)


def row_terms(per_token: Tensor, mask: Tensor, mode: str, *, norm_len: float | None = None
              ) -> Tensor:
    """The row-local terms of ``mode``: [..., B, T] -> [..., B] (before dividing by N).

    token modes: Σ_t M·ℓ; ``seq-mean-token-mean``: Σ_t M·ℓ / L_i (0 for an empty row);
    ``seq-mean-token-sum``: Σ_t M·ℓ; ``seq-mean-token-sum-norm``: Σ_t M·ℓ / norm_len.
    """
    row_sum = sequence_sum(per_token, mask)
    if mode == "seq-mean-token-mean":
        return row_sum / mask.to(per_token.dtype).sum(dim=-1).clamp(min=1.0)
    if mode == "seq-mean-token-sum-norm":
        return row_sum / norm_len
    return row_sum


def normaliser(mask: Tensor, mode: str = "token-mean", *, rows: str = "all") -> Tensor:
    """N, the count ``aggregate`` divides the summed row terms by, over the last two dims.

    ``token-mean``: the number of valid tokens; ``token-sum``: 1; ``seq-mean-*``: the number of
    rows B (``rows="valid"``: of rows with a valid token), all clamped to ≥ 1. Because every
    mode is Σ_i row_terms_i / N, splitting the rows into parts m (micro-batches, processes)
    gives Σ_m aggregate(ℓ_m, M_m, denominator=N(M)) = aggregate(ℓ, M): exact gradient
    accumulation and data parallelism, whatever each part's token count.
    """
    require_choice("agg", mode, AGGREGATIONS)
    require_choice("rows", rows, ROW_COUNTS)
    if mode == "token-mean":
        count = mask.sum(dim=(-2, -1))
    elif mode == "token-sum":
        count = torch.ones(mask.shape[:-2], device=mask.device)
    elif rows == "all":
        count = torch.full(mask.shape[:-2], mask.shape[-2], device=mask.device)
    else:
        count = (mask.sum(dim=-1) > 0).sum(dim=-1)
    return count.to(torch.float64).clamp(min=1.0)


def aggregate(
    per_token: Tensor, mask: Tensor, mode: str = "token-mean", *, norm_len: float | None = None,
    rows: str = "all", denominator: float | Tensor | None = None,
) -> Tensor:
    """Reduce ``per_token`` [B, T] under a bool ``mask`` [B, T] to a scalar, as ``mode`` says.

    Leading dimensions are batch dimensions: [..., B, T] gives [...], each [B, T] slice reduced
    on its own (the exact simulator aggregates every group of K responses this way at once).
    ``norm_len``: the constant of ``seq-mean-token-sum-norm`` (required there, rejected
    elsewhere). ``rows``: "all" (B) or "valid" (B′) for the ``seq-mean-*`` modes.
    ``denominator``: divide by this count instead of ``normaliser(mask, mode)`` (> 0).
    """
    check_options(mode, norm_len, rows)
    terms = safe_sum(row_terms(per_token, mask, mode, norm_len=norm_len), dim=-1)
    if denominator is None:
        return terms / normaliser(mask, mode, rows=rows).to(per_token.dtype)
    if isinstance(denominator, Tensor):
        if bool((denominator <= 0).any()):
            raise ValueError("denominator must be > 0")
        return terms / denominator.to(per_token.dtype)
    return terms / require_positive("denominator", denominator)


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` over the positions where the bool ``mask`` is True (0 when none)."""
    masked = torch.where(mask, values, values.new_zeros(()))
    return safe_sum(masked, dim=tuple(range(masked.ndim))) / mask.to(values.dtype).sum().clamp(
        min=1.0)


def sequence_sum(values: Tensor, mask: Tensor) -> Tensor:
    """Σ_t M·values per row: [B, T] -> [B] (e.g. a sequence log-probability)."""
    # torch.where, not multiplication: a masked NaN or inf must not leak (NaN·0 = NaN).
    return safe_sum(torch.where(mask, values, values.new_zeros(())), dim=-1)


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
