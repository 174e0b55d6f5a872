"""Aggregation modes and KL estimators: invariances, twins and edge cases."""

from __future__ import annotations

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from simulator.aggregation import AGGREGATIONS, aggregate, normaliser, spread_over_tokens
from simulator.kl import KL_ESTIMATORS, k3, k3_clamped, kl_penalty
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


def test_clamped_k3_stays_finite_where_k3_overflows():
    a, b = torch.tensor([-1000.0]), torch.tensor([0.0])
    assert not torch.isfinite(k3(a, b)).all()
    assert float(k3_clamped(a, b)) == 10.0


def test_kl_penalty_dispatches_by_name_and_rejects_bad_input():
    a = torch.tensor([[-1.0, -2.0]])
    b = torch.tensor([[-1.5, -1.0]])
    for name, fn in KL_ESTIMATORS.items():
        assert torch.equal(kl_penalty(a, b, name), fn(a, b))
    with pytest.raises(ValueError, match="unknown KL estimator 'k4'; Valid: k1"):
        kl_penalty(a, b, "k4")
    with pytest.raises(ValueError, match="logp_ref must have the shape"):
        kl_penalty(a, b[:, :1], "k1")
