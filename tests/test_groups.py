"""``simulator.groups``: the multisets of K responses (count, order, weights, streaming), against
their naive twins (itertools, ordered tuples, factorials by hand)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from simulator.groups import enumerate_groups, multiset_chunks, multisets


@pytest.mark.parametrize("n,k", [(1, 1), (3, 1), (3, 4), (5, 3), (15, 2)])
def test_multisets_count_and_weights_sum_to_one(n, k):
    outcomes, _log_coef = multisets(n, k)
    assert outcomes.shape == (math.comb(n + k - 1, k), k)
    mu = torch.softmax(torch.randn(2, n, dtype=torch.float64), -1)
    batch = enumerate_groups(mu, k)
    totals = torch.zeros(2, dtype=torch.float64).index_add_(0, batch.prompt, batch.weight)
    torch.testing.assert_close(totals, torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-12)
    assert multisets(n, k)[0] is outcomes  # cached


@pytest.mark.parametrize("n,k", [(1, 1), (1, 5), (4, 1), (3, 4), (6, 3), (16, 5)])
def test_multisets_are_itertools_combinations_with_replacement_in_its_order(n, k):
    """The vectorised builder against its naive twin, the standard library."""
    expected = torch.tensor(list(itertools.combinations_with_replacement(range(n), k)),
                            dtype=torch.long).reshape(-1, k)
    assert torch.equal(multisets(n, k)[0], expected)


def test_multiset_probabilities_match_ordered_tuples():
    """Naive twin: summing ordered-tuple probabilities over each multiset gives its weight."""
    mu = torch.tensor([[0.2, 0.5, 0.3]], dtype=torch.float64)
    ordered = enumerate_groups(mu, 3, ordered=True)
    merged: dict[tuple[int, ...], float] = {}
    for group, weight in zip(ordered.responses.tolist(), ordered.weight.tolist(), strict=True):
        key = tuple(sorted(group))
        merged[key] = merged.get(key, 0.0) + weight
    fast = enumerate_groups(mu, 3)
    for group, weight in zip(fast.responses.tolist(), fast.weight.tolist(), strict=True):
        assert math.isclose(merged[tuple(group)], weight, rel_tol=1e-12)


def test_streamed_multisets_equal_the_materialised_ones(monkeypatch):
    """Above MAX_MATERIALISED the multisets are streamed from itertools in slices: the same
    outcomes in the same order, with the same coefficients, as the cached tensor."""
    import simulator.groups as groups

    outcomes, log_coef = multisets(5, 4)
    monkeypatch.setattr(groups, "MAX_MATERIALISED", 10)
    chunks = list(multiset_chunks(5, 4, 7))
    assert [len(c[0]) for c in chunks] == [7] * 10  # C(8, 4) = 70 outcomes
    torch.testing.assert_close(torch.cat([c[0] for c in chunks]), outcomes, rtol=0, atol=0)
    torch.testing.assert_close(torch.cat([c[1] for c in chunks]), log_coef, rtol=0, atol=1e-14)
    counts = torch.zeros(len(outcomes), 5).scatter_add_(1, outcomes, torch.ones(outcomes.shape))
    by_hand = [math.log(math.factorial(4) / math.prod(math.factorial(int(c)) for c in row))
               for row in counts]
    torch.testing.assert_close(log_coef, torch.tensor(by_hand, dtype=torch.float64),
                               rtol=0, atol=1e-12)
