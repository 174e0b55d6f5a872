"""Groups of K responses: listed exactly, sampled, and summed in pieces of bounded memory.

Design decisions
----------------
* One type, ``GroupBatch``: G groups, each a prompt and K response indices, with a weight.
  ``enumerate_groups`` lists every multiset of K responses with its probability
  K!/Π_j c_j! · Π_j μ(j)^{c_j} under i.i.d. draws from the behaviour μ (weights sum to 1 per
  prompt); ``sample_groups`` draws S groups per prompt from a ``torch.Generator`` (weights 1/S).
  Groups are multisets because every advantage kind and aggregation is symmetric in the group's
  order; ``ordered_tuples`` is the naive twin (N^K ordered groups, weight Π μ).
* Sizes. ``multisets`` materialises (and caches) at most ``MAX_MATERIALISED`` outcomes;
  ``multiset_chunks`` streams any count up to ``MAX_GROUPS`` (10⁸: hours of work; beyond it
  the enumeration refuses) in slices of bounded size, so the limit of the exact engine is
  time, not memory.
* ``accumulate`` sums differentiable pieces one at a time: value = Σ_m v_m(θ) and
  ∇value = Σ_m ∇v_m(θ), each piece differentiated as soon as it is built, so only one piece's
  autograd graph ever exists. The result is an ordinary differentiable scalar (an
  ``autograd.Function`` whose backward scales the stored gradient), so callers upstream of θ —
  a log-linear policy, the lab's batched runs — back-propagate through it unchanged. It carries
  first derivatives only; a problem that fits in one piece is returned as that piece's own graph
  (twice differentiable, ``torch.func``-traceable).
* Every size argument is validated before any cache is consulted: ``lru_cache`` keys compare
  ``True == 1``, so a bool K must be refused outside the cached function.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

import torch
from torch import Tensor

from simulator.bandit import check_probs
from simulator.validation import require_float_tensor, require_int

__all__ = [
    "CHUNK_ELEMENTS",
    "MAX_GROUPS",
    "MAX_MATERIALISED",
    "GroupBatch",
    "accumulate",
    "enumerate_groups",
    "multiset_chunks",
    "multisets",
    "ordered_tuples",
    "require_table",
    "sample_groups",
]

MAX_GROUPS = 100_000_000  # multisets per prompt above which enumeration refuses (hours of work)
MAX_MATERIALISED = 5_000_000  # outcomes ``multisets``/``ordered_tuples`` hold at once
CHUNK_ELEMENTS = 2**21  # token positions ([rows, H] entries) evaluated in one piece

Piece = Callable[[Tensor], tuple[Tensor, Tensor]]  # θ ↦ (value term, detached extra term)


class GroupBatch(NamedTuple):
    """G groups: ``prompt`` [G] (long), ``responses`` [G, K] (long), ``weight`` [G] (float64,
    summing to 1 over each prompt's groups), ``exact`` (enumerated, not sampled)."""

    prompt: Tensor
    responses: Tensor
    weight: Tensor
    exact: bool


def require_table(name: str, probs: object, shape: tuple[int, int]) -> Tensor:
    """A float64 [P, N] table of distributions (``bandit.check_probs``). Exact work is float64:
    a float32 table is refused here, naming ``name``, rather than deep inside a loss."""
    probs = check_probs(name, probs, shape)
    if probs.dtype != torch.float64:
        raise TypeError(f"{name} must be a float64 table (exact expectations are computed in "
                        f"float64), got {probs.dtype}; pass {name}.double()")
    return probs


def _behavior_table(behavior: object) -> Tensor:
    behavior = require_float_tensor("behavior", behavior)
    if behavior.ndim != 2:
        raise ValueError(f"behavior must be [P, N] probabilities, got shape "
                         f"{tuple(behavior.shape)}")
    return require_table("behavior", behavior, tuple(behavior.shape))


def _log_multinomial(outcomes: Tensor, k: int) -> Tensor:
    """log K!/Π_j c_j! of sorted outcomes [M, K]: Σ_j log c_j! = Σ_i log(rank of i in its run)."""
    position = torch.arange(k)
    starts = torch.ones_like(outcomes, dtype=torch.bool)
    starts[:, 1:] = outcomes[:, 1:] != outcomes[:, :-1]
    run_start = torch.where(starts, position, 0).cummax(dim=1).values
    rank = (position - run_start + 1).to(torch.float64)
    return math.lgamma(k + 1) - torch.log(rank).sum(dim=1)


@functools.lru_cache(maxsize=64)
def _multisets(n: int, k: int) -> tuple[Tensor, Tensor]:
    count = math.comb(n + k - 1, k)
    outcomes = torch.tensor(list(itertools.combinations_with_replacement(range(n), k)),
                            dtype=torch.long).reshape(count, k)
    return outcomes, _log_multinomial(outcomes, k)


def _check_count(n: object, k: object) -> tuple[int, int, int]:
    n, k = require_int("n", n, 1), require_int("K", k, 1)
    count = math.comb(n + k - 1, k)
    if count > MAX_GROUPS:
        raise ValueError(f"{count} groups of K={k} from n={n} responses exceed MAX_GROUPS="
                         f"{MAX_GROUPS} (hours of enumeration); use method='sufficient' "
                         "(few distinct rewards) or sample_groups")
    return n, k, count


def multisets(n: int, k: int) -> tuple[Tensor, Tensor]:
    """Every multiset of K draws from n items: (outcomes [M, K] sorted, log K!/Π c_j! [M]).

    M = C(n + K − 1, K) ≤ ``MAX_MATERIALISED``. Cached; the returned tensors must not be
    modified. Larger counts: ``multiset_chunks``.
    """
    n, k, count = _check_count(n, k)
    if count > MAX_MATERIALISED:
        raise ValueError(f"{count} groups of K={k} from n={n} responses exceed "
                         f"MAX_MATERIALISED={MAX_MATERIALISED} held at once; multiset_chunks "
                         "(used by ExpectedLoss and expected_gradient) streams them")
    return _multisets(n, k)


def multiset_chunks(n: int, k: int, size: int) -> Iterator[tuple[Tensor, Tensor]]:
    """``multisets(n, K)`` in consecutive slices of at most ``size`` outcomes, for any count up
    to ``MAX_GROUPS`` (streamed from ``itertools`` above ``MAX_MATERIALISED``)."""
    n, k, count = _check_count(n, k)  # here, not at the first next(): a generator is lazy
    return _chunks(n, k, count, require_int("size", size, 1))


def _chunks(n: int, k: int, count: int, size: int) -> Iterator[tuple[Tensor, Tensor]]:
    if count <= MAX_MATERIALISED:
        outcomes, log_coef = _multisets(n, k)
        for start in range(0, count, size):
            yield outcomes[start:start + size], log_coef[start:start + size]
        return
    stream = itertools.combinations_with_replacement(range(n), k)
    while block := list(itertools.islice(stream, size)):
        outcomes = torch.tensor(block, dtype=torch.long).reshape(len(block), k)
        yield outcomes, _log_multinomial(outcomes, k)


def ordered_tuples(n: int, k: int) -> tuple[Tensor, Tensor]:
    """Naive twin of ``multisets``: all n^K ordered groups, each with coefficient 1."""
    n, k = require_int("n", n, 1), require_int("K", k, 1)
    if n**k > MAX_MATERIALISED:
        raise ValueError(f"{n**k} ordered groups exceed MAX_MATERIALISED={MAX_MATERIALISED}")
    outcomes = torch.tensor(list(itertools.product(range(n), repeat=k)), dtype=torch.long)
    return outcomes.reshape(n**k, k), torch.zeros(n**k, dtype=torch.float64)


def enumerate_groups(behavior: Tensor, k: int, *, ordered: bool = False) -> GroupBatch:
    """Every group of K i.i.d. draws from ``behavior`` [P, N] with its exact probability.

    Outcomes of probability 0 are left out (they cannot occur, and their log-probs are −inf).
    """
    behavior = _behavior_table(behavior)
    outcomes, log_coef = (ordered_tuples if ordered else multisets)(behavior.shape[1], k)
    weight = torch.exp(log_coef + torch.log(behavior)[:, outcomes].sum(dim=-1))  # [P, M]
    prompt, index = (weight > 0).nonzero(as_tuple=True)
    return GroupBatch(prompt, outcomes[index], weight[prompt, index], exact=True)


def sample_groups(behavior: Tensor, k: int, num_groups: int, generator: torch.Generator
                  ) -> GroupBatch:
    """S = ``num_groups`` groups of K i.i.d. draws from ``behavior`` [P, N] per prompt."""
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    k, num_groups = require_int("K", k, 1), require_int("num_groups", num_groups, 1)
    behavior = _behavior_table(behavior)
    p = behavior.shape[0]
    draws = torch.multinomial(behavior, num_groups * k, replacement=True, generator=generator)
    prompt = torch.arange(p).repeat_interleave(num_groups)
    weight = torch.full((p * num_groups,), 1.0 / num_groups, dtype=torch.float64)
    return GroupBatch(prompt, draws.reshape(p * num_groups, k), weight, exact=False)


class _Accumulated(torch.autograd.Function):
    """Forward: Σ_m v_m and Σ_m ∇v_m in one pass over the pieces; backward: g ↦ g·Σ_m ∇v_m."""

    @staticmethod
    def forward(ctx, theta: Tensor, pieces: Iterable[Piece]) -> tuple[Tensor, Tensor]:
        leaf = theta.detach().requires_grad_(True)
        value, extra, grad = theta.new_zeros(()), None, torch.zeros_like(theta)
        for piece in pieces:
            with torch.enable_grad():
                part, more = piece(leaf)
                if part.requires_grad:  # a piece with no surviving term has no graph
                    grad = grad + torch.autograd.grad(part, leaf)[0]
            value = value + part.detach()
            extra = more.detach() if extra is None else extra + more.detach()
        if extra is None:
            raise ValueError("accumulate needs at least one piece")
        ctx.save_for_backward(grad)
        ctx.mark_non_differentiable(extra)
        return value, extra

    @staticmethod
    def backward(ctx, grad_value: Tensor, _grad_extra: Tensor) -> tuple[Tensor, None]:
        (grad,) = ctx.saved_tensors
        return grad_value * grad, None


def accumulate(theta: Tensor, pieces: Iterable[Piece], *, single: bool) -> tuple[Tensor, Tensor]:
    """(Σ_m v_m(θ), Σ_m e_m) over ``pieces``, differentiable in θ, one piece in memory at a time.

    ``single``: the caller knows there is exactly one piece; it is then evaluated as is (its
    own autograd graph). Without a gradient to take, the pieces are summed under ``no_grad``.
    """
    if single:
        (piece,) = tuple(pieces)
        return piece(theta)
    if not (torch.is_grad_enabled() and theta.requires_grad):
        value, extra = theta.new_zeros(()), None
        with torch.no_grad():
            for piece in pieces:
                part, more = piece(theta)
                value, extra = value + part, more if extra is None else extra + more
        if extra is None:
            raise ValueError("accumulate needs at least one piece")
        return value, extra
    return _Accumulated.apply(theta, pieces)
