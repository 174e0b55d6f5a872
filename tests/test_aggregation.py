"""``simulator.aggregation``: every mode against its looped twin, invariances and edge cases,
then the hand-checked values and gradients of every mode.

Hand-checked values: aggregation modes with M the mask, L_i the valid length, B' the rows with a
valid token, from the module's docstring. Arithmetic in each docstring; float64, rel=1e-12 or
exact.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from simulator.aggregation import (
    AGGREGATIONS,
    aggregate,
    masked_mean,
    normaliser,
    sequence_mean,
    sequence_sum,
    spread_over_tokens,
)
from theory_tests.strategies import LossCase, loss_cases


def looped_aggregate(per_token, mask, mode, norm_len=None, rows="all"):
    """Naive twin of ``aggregate``: explicit loops over rows and tokens (B counts every row
    unless rows="valid")."""
    terms, tokens, valid_rows = [], 0, 0
    for values, valid in zip(per_token.tolist(), mask.tolist(), strict=True):
        kept = [v for v, m in zip(values, valid, strict=True) if m]
        tokens += len(kept)
        valid_rows += bool(kept)
        if not kept:
            terms.append(0.0)
        elif mode == "seq-mean-token-mean":
            terms.append(sum(kept) / len(kept))
        elif mode == "seq-mean-token-sum-norm":
            terms.append(sum(kept) / norm_len)
        else:
            terms.append(sum(kept))
    if mode == "token-mean":
        return sum(terms) / max(tokens, 1)
    if mode == "token-sum":
        return sum(terms)
    return sum(terms) / max(len(terms) if rows == "all" else valid_rows, 1)


@given(case=loss_cases(), mode=st.sampled_from(AGGREGATIONS), empty_row=st.booleans(),
       rows=st.sampled_from(["all", "valid"]))
@example(case=LossCase(torch.tensor([[-1.0, -2.0]], dtype=torch.float64),
                       torch.zeros(1, 2, dtype=torch.float64), torch.ones(1, dtype=torch.float64),
                       torch.tensor([[True, False]])),
         mode="seq-mean-token-mean", empty_row=True, rows="all")
def test_aggregate_equals_the_looped_twin(case, mode, empty_row, rows):
    """Every mode and row count against the loops; a NaN-filled empty row changes the value
    only through B (rows="all"), never through its NaNs."""
    values, mask = case.logp, case.mask.clone()
    if empty_row:
        values = torch.cat([values, torch.full_like(values[:1], float("nan"))])
        mask = torch.cat([mask, torch.zeros_like(mask[:1])])
    norm_len = 3.0 if mode == "seq-mean-token-sum-norm" else None
    got = aggregate(values, mask, mode, norm_len=norm_len, rows=rows)
    expected = looped_aggregate(values, mask, mode, norm_len, rows)
    assert float(got) == pytest.approx(expected, rel=1e-12, abs=1e-300)


@pytest.mark.parametrize("mode", AGGREGATIONS)
def test_an_all_masked_batch_aggregates_to_zero_not_nan(mode):
    values = torch.full((2, 3), float("nan"), dtype=torch.float64, requires_grad=True)
    norm_len = 3.0 if mode == "seq-mean-token-sum-norm" else None
    out = aggregate(values, torch.zeros(2, 3, dtype=torch.bool), mode, norm_len=norm_len)
    assert float(out.detach()) == 0.0
    out.backward()
    assert torch.equal(values.grad, torch.zeros_like(values))


@given(case=loss_cases(), mode=st.sampled_from(AGGREGATIONS), split=st.integers(1, 5),
       rows=st.sampled_from(["all", "valid"]))
def test_parts_divided_by_the_whole_batchs_count_sum_to_the_batch(case, mode, split, rows):
    """Σ_m aggregate(ℓ_m, M_m, denominator=normaliser(M)) = aggregate(ℓ, M): the identity
    micro-batching and data parallelism stand on, for every split of the rows."""
    values, mask = case.logp, case.mask
    norm_len = 2.0 if mode == "seq-mean-token-sum-norm" else None
    whole = aggregate(values, mask, mode, norm_len=norm_len, rows=rows)
    count = normaliser(mask, mode, rows=rows)
    cut = min(split, values.shape[0])
    parts = sum(aggregate(v, m, mode, norm_len=norm_len, rows=rows, denominator=count)
                for v, m in ((values[:cut], mask[:cut]), (values[cut:], mask[cut:])))
    assert float(parts) == pytest.approx(float(whole), rel=1e-12, abs=1e-300)


def test_norm_len_sets_the_dr_grpo_constant():
    values = torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    assert float(aggregate(values, mask, "seq-mean-token-sum-norm", norm_len=10)) == (
        pytest.approx((3.0 / 10 + 3.0 / 10) / 2))
    with pytest.raises(ValueError, match="pass norm_len="):
        aggregate(values, mask, "seq-mean-token-sum-norm")


def test_spread_over_tokens_sums_back_to_the_sequence_value():
    mask = torch.tensor([[True, True, False], [False, False, False], [True, True, True]])
    per_seq = torch.tensor([3.0, 5.0, -1.5], dtype=torch.float64)
    spread = spread_over_tokens(per_seq, mask)
    torch.testing.assert_close(spread.sum(1), torch.tensor([3.0, 0.0, -1.5], dtype=torch.float64))
    assert (spread[~mask] == 0).all()


# --------------------------------------------------------------------------------------------
# Hand-checked values
# --------------------------------------------------------------------------------------------


def approx(values):
    return pytest.approx(values, rel=1e-12)


def flat(t: torch.Tensor) -> list[float]:
    return t.detach().flatten().tolist()


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
