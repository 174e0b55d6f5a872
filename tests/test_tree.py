"""``simulator.tree``: the token tree against a brute-force enumeration, probabilities that
round-trip, bad input."""

from __future__ import annotations

import itertools

import pytest
import torch

from simulator.policies import random_logits
from simulator.tree import EOS, TreeMDP


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("vocab,depth,eos", [(2, 1, False), (3, 2, False), (2, 3, True),
                                             (3, 3, True), (4, 2, True)])
def test_tree_enumerates_every_response_once_in_the_bridge_layout(vocab, depth, eos):
    tree = TreeMDP.random(2, vocab, depth, eos, gen())
    assert tree.num_responses == TreeMDP.count(vocab, depth, eos)
    assert tree.tokens.shape == tree.mask.shape == (tree.num_responses, depth)
    sequences = [tuple(t[m].tolist()) for t, m in zip(tree.tokens, tree.mask, strict=True)]
    assert len(set(sequences)) == len(sequences)
    # naive twin: every token string a sampler could produce, built by brute force
    expected = set()
    for length in range(1, depth + 1):
        for seq in itertools.product(range(vocab), repeat=length):
            ends = length == depth or (eos and seq[-1] == EOS)
            early_eos = eos and EOS in seq[:-1]
            if ends and not early_eos:
                expected.add(seq)
    assert set(sequences) == expected
    assert bool(tree.mask[:, 0].all()) and bool((tree.mask[:, :-1] >= tree.mask[:, 1:]).all())


def test_tree_probabilities_sum_to_one_and_per_token_logprobs_round_trip():
    tree = TreeMDP.random(3, 3, 3, True, gen(1))
    logits = random_logits(tree, gen(2))
    probs = tree.sequence_probs(logits)
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, dtype=torch.float64))
    recovered = tree.token_logprobs_of(probs)
    torch.testing.assert_close(recovered, tree.token_logprobs(logits), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("call,error,match", [
    (lambda: TreeMDP(torch.zeros(1, 3, dtype=torch.float64), 2, 2), ValueError, "N = 4"),
    (lambda: TreeMDP.count(1, 2), ValueError, "vocab must be >= 2"),
    (lambda: TreeMDP.count(2, 0), ValueError, "depth must be >= 1"),
    (lambda: TreeMDP.count(2, 2, eos=1), TypeError, "eos must be a bool"),
])
def test_bad_input_is_a_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()
