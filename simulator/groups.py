"""Groups of K responses: listed exactly or sampled, turned into a loss, summed in pieces.

Design decisions
----------------
* One type, ``GroupBatch``: G groups, each a prompt and K response indices, with a weight.
  ``enumerate_groups`` lists every multiset of K responses with its probability
  K!/Π_j c_j! · Π_j μ(j)^{c_j} under i.i.d. draws from the behavior μ (weights sum to 1 per
  prompt); ``sample_groups`` draws S groups per prompt from a ``torch.Generator`` (weights 1/S).
  Groups are multisets because every advantage kind and aggregation is symmetric in the group's
  order; ``ordered_tuples`` is the naive twin (N^K ordered groups, weight Π μ).
* One function turns a batch into a loss: ``batch_terms`` gathers [G, K, H] token log-probs,
  computes advantages inside each group as the loss's preset says (``LossSetup``) and evaluates
  every group's loss in one pass with ``losses.group_losses`` (``looped=True``: the naive twin,
  a loop over the validated ``policy_loss``). The result is (1/P)·Σ_p Σ_g w_g·loss(group g);
  each group is its own batch, so batch-level normalisers (token-mean, DAPO's filter) act
  within one prompt's group. A group DAPO drops (all rewards equal) contributes 0: the result
  is E[loss·1{kept}], not DAPO's resampling E[loss | kept].
* Sizes. ``multisets`` materialises (and caches) at most ``MAX_MATERIALISED`` outcomes;
  ``multiset_chunks`` streams any count up to ``MAX_GROUPS`` (10⁸: hours of work; beyond it
  the enumeration refuses) in slices of bounded size, so the limit is time, not memory.
* ``accumulate`` sums differentiable pieces one at a time: value = Σ_m v_m(θ) and
  ∇value = Σ_m ∇v_m(θ), each piece differentiated as soon as it is built, so only one piece's
  autograd graph ever exists. The result is an ordinary differentiable scalar (an
  ``autograd.Function`` whose backward scales the stored gradient), so callers upstream of θ —
  a log-linear policy, the lab's batched runs — back-propagate through it unchanged. It carries
  first derivatives only; a problem that fits in one piece is returned as that piece's own graph
  (twice differentiable, ``torch.func``-traceable).
* Inputs are checked here, once, naming the public argument: K an int ≥ 1 — before any cache
  is consulted, since ``lru_cache`` keys compare ``True == 1`` —, logits finite and computed in
  float64, behavior and anchor float64 tables of distributions (``require_table``).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor

from simulator.advantages import require_exact
from simulator.losses import GroupLosses, LossSetup, group_losses, policy_loss
from simulator.responses import ResponseSpace, check_probs
from simulator.validation import require_finite, require_float_tensor, require_int

__all__ = [
    "CHUNK_ELEMENTS",
    "MAX_GROUPS",
    "MAX_MATERIALISED",
    "GroupBatch",
    "LossSetup",
    "accumulate",
    "batch_loss",
    "batch_terms",
    "enumerate_groups",
    "multiset_chunks",
    "multisets",
    "ordered_tuples",
    "per_group_losses",
    "require_table",
    "sample_groups",
]

MAX_GROUPS = 100_000_000  # multisets per prompt above which enumeration refuses (hours of work)
MAX_MATERIALISED = 5_000_000  # outcomes ``multisets``/``ordered_tuples`` hold at once
CHUNK_ELEMENTS = 2**20  # token positions ([rows, H] entries) evaluated in one piece

Piece = Callable[[Tensor], tuple[Tensor, Tensor]]  # θ ↦ (value term, detached extra term)
Behavior = Tensor | str | Callable[[Tensor], Tensor]


class GroupBatch(NamedTuple):
    """G groups: ``prompt`` [G] (long), ``responses`` [G, K] (long), ``weight`` [G] (float64,
    summing to 1 over each prompt's groups), ``exact`` (enumerated, not sampled)."""

    prompt: Tensor
    responses: Tensor
    weight: Tensor
    exact: bool


def require_table(name: str, probs: object, shape: tuple[int, int]) -> Tensor:
    """A float64 [P, N] table of distributions (``responses.check_probs``). Exact work is float64:
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


def _sorted_tuples(n: int, k: int) -> Tensor:
    """Every sorted K-tuple over range(n) [C(n + K − 1, K), K], in the (lexicographic) order of
    ``itertools.combinations_with_replacement``, built one column at a time: each row of
    length j grows into one row per value from its last value to n − 1. (A Python list of
    tuples turned into a tensor took 0.46 s of a 1.3-s exact gradient at n = 16, K = 8.)"""
    rows = torch.arange(n).unsqueeze(1)
    for _ in range(1, k):
        last = rows[:, -1]
        children = n - last
        parent = torch.repeat_interleave(torch.arange(len(rows)), children)
        first_child = torch.cumsum(children, 0) - children
        value = last[parent] + torch.arange(len(parent)) - first_child[parent]
        rows = torch.cat([rows[parent], value.unsqueeze(1)], dim=1)
    return rows


@functools.lru_cache(maxsize=64)
def _multisets(n: int, k: int) -> tuple[Tensor, Tensor]:
    outcomes = _sorted_tuples(n, k)
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


def check_logits(env: ResponseSpace, logits: object) -> Tensor:
    """Logits of the testbed's shape, finite, as float64 (differentiably)."""
    logits = env.check_logits(logits)
    require_finite("logits", logits)
    return logits.to(torch.float64)


def old_table(env: ResponseSpace, behavior: Tensor, setup: LossSetup,
              anchor: Tensor | None = None) -> Tensor:
    """Per-token log-probs [P, N, H] of π_old: the behavior μ, or the anchor when one is given
    (``anchor``, else ``setup.anchor``)."""
    anchor = setup.anchor if anchor is None else anchor
    if anchor is None:
        return env.token_logprobs_of(behavior)
    shape = (env.num_prompts, env.num_responses)
    return env.token_logprobs_of(require_table("anchor", anchor, shape))


def rollout_table(env: ResponseSpace, behavior: Tensor, setup: LossSetup,
                  anchor: Tensor | None = None) -> Tensor | None:
    """Per-token log μ [P, N, H] (``logp_rollout``) where the loss call needs it apart from
    ``logp_old``: an anchor π_old is given (three policies: μ samples, the loss's ratio is
    taken against π_old, the corrections see both), or the loss reads ``logp_rollout``. None
    otherwise: with one policy μ = π_old, and the loss call gets exactly what it got before."""
    distinct = anchor is not None or setup.anchor is not None
    if not distinct and "logp_rollout" not in setup.spec.inputs:
        return None
    return env.token_logprobs_of(behavior)


class Prepared(NamedTuple):
    """Everything about a batch that does not depend on the logits being differentiated."""

    rows: tuple[Tensor, Tensor]  # (prompt [G, 1], responses [G, K]) indexing [P, N]
    logp_old: Tensor  # [G, K, H]
    advantages: Tensor  # [G, K]
    mask: Tensor  # [G, K, H]
    weight: Tensor  # [G]
    logp_rollout: Tensor | None = None  # [G, K, H] log μ, when apart from logp_old


def prepare(env: ResponseSpace, batch: GroupBatch, behavior: Tensor, setup: LossSetup,
            generator: torch.Generator | None, advantages: Tensor | None,
            shaped: tuple[Tensor, Tensor] | None = None, anchor: Tensor | None = None
            ) -> Prepared:
    """``shaped``: (advantages, mask) of this batch's groups, when already known (they do not
    depend on the behavior, only on which groups the batch holds). ``anchor``: π_old [P, N]
    apart from the behavior μ (else ``setup.anchor``, else μ itself)."""
    rows = (batch.prompt.unsqueeze(-1), batch.responses)
    table = old_table(env, behavior, setup, anchor)  # [P, N, H]
    rollout = rollout_table(env, behavior, setup, anchor)
    logp_old = table[rows]
    if shaped is None:
        shaped = batch_advantages(env, rows, setup, generator, advantages, batch.exact)
    advantages, mask = shaped
    # checked on the small table first: only a response of probability 0 can give −inf
    if (not bool(torch.isfinite(table).logical_or(~env.mask).all())
            and not bool(torch.isfinite(logp_old).logical_or(~mask).all())):
        raise ValueError("logp_old = −inf: the behavior (or anchor) gives probability 0 to a "
                         "response in the batch")
    return Prepared(rows, logp_old, advantages, mask, batch.weight,
                    None if rollout is None else rollout[rows])


def batch_advantages(env: ResponseSpace, rows: tuple[Tensor, Tensor], setup: LossSetup,
                     generator: torch.Generator | None, advantages: Tensor | None,
                     exact: bool) -> tuple[Tensor, Tensor]:
    """(advantages [G, K], token mask [G, K, H]) of the groups ``rows``, as the preset says."""
    mask = env.mask[rows[1]]
    if advantages is not None:
        return advantages, mask
    if exact:
        require_exact(setup.advantage_kind()[0])
    advantages, keep = setup.advantages(env.rewards[rows], generator)
    return advantages, mask & keep.unsqueeze(-1)


def check_batch(env: ResponseSpace, batch: object) -> GroupBatch:
    """A ``GroupBatch`` of consistent shapes whose indices lie inside the testbed."""
    if not isinstance(batch, GroupBatch):
        raise TypeError(f"batch must be a GroupBatch, got {type(batch).__name__}")
    responses, prompt = batch.responses, batch.prompt
    if (responses.ndim != 2 or prompt.shape != responses.shape[:1]
            or batch.weight.shape != prompt.shape):
        raise ValueError("batch must hold prompt [G], responses [G, K] and weight [G], got "
                         f"{tuple(prompt.shape)}, {tuple(responses.shape)}, "
                         f"{tuple(batch.weight.shape)}")
    outside = ((responses < 0) | (responses >= env.num_responses)).any() | (
        (prompt < 0) | (prompt >= env.num_prompts)).any()
    if bool(outside):  # one host sync
        raise ValueError("batch indexes a prompt or response outside the testbed")
    return batch


def per_group_losses(env: ResponseSpace, logits: Tensor, prepared: Prepared, setup: LossSetup,
                     *, looped: bool = False) -> GroupLosses:
    """(loss [G], clipfrac [G]) of every group: all groups in one pass
    (``losses.group_losses``), or (``looped``, the naive twin) a loop calling the validated
    ``policy_loss`` once per group."""
    logp = env.token_logprobs(logits)[prepared.rows]
    args = (logp, prepared.logp_old, prepared.advantages, prepared.mask)
    options = setup.call_options(env.horizon)
    if not looped:
        return group_losses(setup.loss, *args, logp_rollout=prepared.logp_rollout, **options)
    rollout = prepared.logp_rollout
    # a group whose tokens the corrections all remove contributes 0, as in group_losses (a
    # validated policy_loss refuses such a batch): with corrections the values go unchecked
    checked = not setup.all_corrections()
    outs = [policy_loss(setup.loss, *group, validate=checked and bool(group[-1].any()),
                        logp_rollout=None if rollout is None else rollout[g], **options)
            for g, group in enumerate(zip(*args, strict=True))]
    return GroupLosses(torch.stack([out.loss for out in outs]),
                       torch.stack([out.metrics["clipfrac"] for out in outs]))


def batch_terms(env: ResponseSpace, logits: Tensor, batch: GroupBatch, behavior: Behavior,
                setup: LossSetup, *, generator: torch.Generator | None = None,
                advantages: Tensor | None = None, looped: bool = False,
                shaped: tuple[Tensor, Tensor] | None = None, anchor: Tensor | None = None
                ) -> tuple[Tensor, Tensor]:
    """(``batch_loss``, clip fraction per prompt [P]: Σ_g w_g·clipfrac(g) over its groups).
    ``anchor``: π_old [P, N] for this call (else ``setup.anchor``; else the behavior)."""
    logits = check_logits(env, logits)
    mu = resolve_behavior(env, behavior, logits)
    prepared = prepare(env, check_batch(env, batch), mu, setup, generator, advantages, shaped,
                       anchor)
    groups = per_group_losses(env, logits, prepared, setup, looped=looped)
    clipfrac = torch.zeros(env.num_prompts, dtype=groups.clipfrac.dtype).index_add_(
        0, batch.prompt, prepared.weight.to(groups.clipfrac.dtype) * groups.clipfrac)
    return (prepared.weight * groups.loss).sum() / env.num_prompts, clipfrac


def batch_loss(env: ResponseSpace, logits: Tensor, batch: GroupBatch, behavior: Behavior,
               setup: LossSetup, *, generator: torch.Generator | None = None,
               advantages: Tensor | None = None, looped: bool = False,
               anchor: Tensor | None = None) -> Tensor:
    """(1/P)·Σ_g w_g·loss(group g): the exact expectation for an enumerated batch, the Monte
    Carlo estimate for a sampled one. ``advantages`` [G, K] overrides the preset's kind;
    ``anchor``: π_old apart from the behavior (``batch_terms``)."""
    return batch_terms(env, logits, batch, behavior, setup, generator=generator,
                       advantages=advantages, looped=looped, anchor=anchor)[0]


def resolve_behavior(env: ResponseSpace, behavior: Behavior, logits: Tensor) -> Tensor:
    """Behavior probabilities [P, N]: a table, ``"on-policy"`` (π_θ, detached) or a callable."""
    if isinstance(behavior, str):
        if behavior != "on-policy":
            raise ValueError(f"behavior must be [P, N] probabilities, 'on-policy' or a callable, "
                             f"got {behavior!r}")
        return env.sequence_probs(logits.detach().to(torch.float64))
    if callable(behavior) and not isinstance(behavior, Tensor):
        behavior = behavior(logits.detach())
    return require_table("behavior", behavior, (env.num_prompts, env.num_responses))


def loss_setup(loss: str, options: Mapping[str, Any]) -> LossSetup:
    """``LossSetup.from_keywords(loss, **options)`` (kept for callers of the mapping form)."""
    return LossSetup.from_keywords(loss, **options)


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
