"""TreeMDP: an autoregressive "language model" small enough to enumerate.

A response is a token sequence y = (y^1..y^L) over a vocabulary of b tokens, of length
L ≤ H = ``depth``. With ``eos=True`` token 0 is EOS: choosing it ends the response (it is the
response's last token), so responses have lengths 1..H; without EOS every response has length
H. The state after a prefix is the prefix itself (a tree), so a tabular softmax policy has one
logit vector per decision node (a prefix that is not yet complete): ``logits`` [P, M, b].

Rewards sit on complete responses, ``rewards`` [P, N]. Responses are enumerated depth-first;
``tokens``, ``mask``, ``node_index`` have the bridge's [N, H] layout (left-aligned, padding
masked), so the losses see exactly what they see on a transformer.

Counts: M = Σ_{l<H} c^l nodes with c = b − 1 non-EOS tokens (c = b without EOS);
N = b^H without EOS, Σ_{l<H−1} c^l + b·c^{H−1} with EOS.
"""

from __future__ import annotations

import torch
from torch import Tensor

from simulator.responses import ResponseSpace
from simulator.validation import require_finite, require_float_tensor, require_int, require_ndim

__all__ = ["EOS", "TreeMDP"]

EOS = 0


def _enumerate(vocab: int, depth: int, eos: bool
               ) -> tuple[list[list[int]], list[list[int]], list[list[int]]]:
    """Depth-first enumeration: (responses' tokens, responses' nodes, children table).

    children[m][a] = ("node", id) or ("response", id), encoded as id ≥ 0 for nodes and
    −1 − id for responses.
    """
    responses: list[list[int]] = []
    nodes_of: list[list[int]] = []
    children: list[list[int]] = []

    def visit(prefix: list[int], path: list[int]) -> int:
        node = len(children)
        children.append([0] * vocab)
        for token in range(vocab):
            done = len(prefix) + 1 == depth or (eos and token == EOS)
            if done:
                children[node][token] = -1 - len(responses)
                responses.append([*prefix, token])
                nodes_of.append([*path, node])
            else:
                children[node][token] = visit([*prefix, token], [*path, node])
        return node

    visit([], [])
    return responses, nodes_of, children


class TreeMDP(ResponseSpace):
    """Token-level tree MDP with P prompts, vocabulary ``vocab``, depth ``depth``, optional EOS.

    Args:
        rewards: [P, N] rewards of the complete responses (N = ``TreeMDP.count(vocab, depth,
            eos)``), in the depth-first order of ``tokens``.
        vocab: b ≥ 2 tokens (with EOS, token 0 is EOS).
        depth: H ≥ 1, the maximum response length.
        eos: whether token 0 ends a response early.
    """

    def __init__(self, rewards: Tensor, vocab: int, depth: int, eos: bool = False) -> None:
        vocab, depth = self._check_structure(vocab, depth, eos)
        responses, nodes_of, children = _enumerate(vocab, depth, eos)
        rewards = require_float_tensor("rewards", rewards)
        require_ndim("rewards", rewards, (2,), "a [P, N] table (prompts × responses)")
        if rewards.shape[1] != len(responses):
            raise ValueError(f"rewards must have N = {len(responses)} columns for vocab={vocab}, "
                             f"depth={depth}, eos={eos}; got shape {tuple(rewards.shape)}")
        require_finite("rewards", rewards)
        self.rewards = rewards.to(torch.float64)
        self.vocab, self.depth, self.eos = vocab, depth, eos
        self.num_nodes = len(children)
        n = len(responses)
        self.tokens = torch.zeros(n, depth, dtype=torch.long)
        self.node_index = torch.zeros(n, depth, dtype=torch.long)
        self.mask = torch.zeros(n, depth, dtype=torch.bool)
        for i, (toks, path) in enumerate(zip(responses, nodes_of, strict=True)):
            self.tokens[i, : len(toks)] = torch.tensor(toks)
            self.node_index[i, : len(path)] = torch.tensor(path)
            self.mask[i, : len(toks)] = True
        # children[m, a]: child node id, or −1 − response id when (m, a) completes a response
        self.children = torch.tensor(children, dtype=torch.long)

    @staticmethod
    def _check_structure(vocab: object, depth: object, eos: object) -> tuple[int, int]:
        require_int("vocab", vocab, 2)
        require_int("depth", depth, 1)
        if not isinstance(eos, bool):
            raise TypeError(f"eos must be a bool, got {type(eos).__name__}")
        return int(vocab), int(depth)  # type: ignore[arg-type]

    @staticmethod
    def count(vocab: int, depth: int, eos: bool = False) -> int:
        """N, the number of complete responses."""
        TreeMDP._check_structure(vocab, depth, eos)
        if not eos:
            return vocab**depth
        c = vocab - 1
        return sum(c**level for level in range(depth - 1)) + vocab * c ** (depth - 1)

    @classmethod
    def random(cls, num_prompts: int, vocab: int, depth: int, eos: bool,
               generator: torch.Generator) -> TreeMDP:
        """A tree with rewards drawn uniformly from [0, 1) using ``generator``."""
        n = cls.count(vocab, depth, eos)
        rewards = torch.rand(num_prompts, n, generator=generator, dtype=torch.float64)
        return cls(rewards, vocab, depth, eos)

    def __repr__(self) -> str:
        return (f"TreeMDP(P={self.num_prompts}, vocab={self.vocab}, depth={self.depth}, "
                f"eos={self.eos}, N={self.num_responses}, M={self.num_nodes})")
