"""Exact expectations over groups: weighted batches through the ordinary loss code.

Design decisions
----------------
* Three exact engines compute one quantity, E_{groups of K i.i.d. ∼ μ}[loss] (differentiable
  in the logits, μ held fixed) and the expected clip fraction; ``method`` picks one:
  - ``"closed-form"``: REINFORCE-type losses (−(A + β)·log π with A = r − r̄ (+shift) or
    leave-one-out) whose normaliser N is the same for every group. The loss is linear in each
    row term g(y) = row_terms(log π(y)), so E = −(K/N)·Σ_y μ(y)·[c_K·(r(y) − E_μ r) + β +
    shift]·g(y), c_K = 1 − 1/K (mean) or 1 (loo, K ≥ 2). O(N). Not for token-mean over
    responses of unequal length (N then varies with the group).
  - ``"sufficient"`` (``simulator.sufficient``): sums over the other members' counts of each
    distinct reward value (and their total length when N or the clip fraction needs it),
    instead of over groups. N·C(K + V − 2, V − 1) rows for V distinct rewards: binary rewards
    with N = 1,024 responses and K = 64 are 65,536 rows, where enumeration would be 10^99
    groups. Every zoo loss, advantage kind and aggregation through their own code.
  - ``"enumerate"`` (the naive twin): every multiset of K responses with its multinomial
    weight (``simulator.enumeration``), in pieces of bounded memory when the groups are many
    (``accumulate``), refusing only above ``MAX_GROUPS`` (hours). ``"ordered"``: N^K ordered
    tuples through a validated Python loop, the twin's twin.
  ``"auto"`` (default): the closed form where it applies, else whichever of the other two
  does less work (``sufficient_cost`` vs C(N + K − 1, K)·K rows). Tests check every engine
  against enumeration to 1e-12 for every registered loss.
* One function turns an enumerated or sampled batch into a loss: ``batch_terms`` gathers
  [G, K, H] token log-probs, computes advantages inside each group as the loss's preset says,
  and evaluates every group's loss in one pass with ``losses.group_losses``. The expectation is
  E = (1/P)·Σ_p Σ_g w_g·loss(group g); each group is its own batch, so batch-level normalisers
  (token-mean, DAPO's filter) act within one prompt's group. A group DAPO drops (all rewards
  equal) contributes 0: the result is E[loss·1{kept}], not DAPO's resampling E[loss | kept].
* Refused, with a ValueError naming the reason: RED-Drop (random drops: use sampling) and any
  advantage kind that couples prompts or depends on order (a batch statistic), detected by a
  probe (``sufficient.require_group_local``) rather than a list of names.
* The behaviour is never differentiated: gradients are E_{groups∼μ}[∇_logits loss], the
  quantity an optimiser follows. ``logp_old`` is the behaviour's per-token log-prob unless an
  ``anchor`` distribution is given (theory sometimes separates the two).
* Every public function validates what it is given and names the public argument: K an int
  ≥ 1 (not a bool, not 2.5), logits finite floats of the testbed's shape (computed in
  float64), behaviour / anchor float64 tables of distributions, method one of ``METHODS``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor

from simulator.advantages import ADVANTAGE_KINDS, shaped_advantages
from simulator.aggregation import AGGREGATIONS, normaliser, row_terms
from simulator.bandit import ResponseSpace
from simulator.enumeration import (
    CHUNK_ELEMENTS,
    MAX_GROUPS,
    MAX_MATERIALISED,
    GroupBatch,
    accumulate,
    enumerate_groups,
    multiset_chunks,
    multisets,
    ordered_tuples,
    require_table,
    sample_groups,
)
from simulator.losses import LOSSES, GroupLosses, group_losses, pairwise_surrogate, policy_loss
from simulator.sufficient import MAX_STATES, SufficientStats, require_group_local, sufficient_cost
from simulator.validation import (
    require_choice,
    require_finite,
    require_float_tensor,
    require_int,
    require_number,
    require_positive,
)

__all__ = [
    "MAX_GROUPS",
    "MAX_MATERIALISED",
    "METHODS",
    "ExpectedLoss",
    "GroupBatch",
    "LossSetup",
    "batch_loss",
    "batch_terms",
    "enumerate_groups",
    "expected_gradient",
    "expected_hessian",
    "expected_loss",
    "expected_pairwise_surrogate",
    "group_gradients",
    "iterate_expected_update",
    "multiset_chunks",
    "multisets",
    "ordered_tuples",
    "per_group_losses",
    "sample_groups",
    "sampled_gradient",
]

METHODS: tuple[str, ...] = ("auto", "closed-form", "sufficient", "enumerate", "ordered")

Behavior = Tensor | str | Callable[[Tensor], Tensor]


@dataclasses.dataclass(frozen=True)
class LossSetup:
    """Which loss and how it is fed: name, keywords, advantage override, aggregation, anchor."""

    loss: str
    hparams: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    advantage: str | None = None
    advantage_kwargs: Mapping[str, Any] | None = None
    agg: str | None = None
    norm_len: float | None = None
    anchor: Tensor | None = None

    def __post_init__(self) -> None:
        LOSSES[self.loss].resolve(self.hparams)  # unknown loss or keyword fails here
        if self.advantage is not None:
            require_choice("advantage", self.advantage, (*ADVANTAGE_KINDS, "red-drop"))
        if self.agg is not None:
            require_choice("agg", self.agg, AGGREGATIONS)

    def aggregation(self) -> str:
        """The aggregation mode in force: the caller's ``agg``, else the loss's own."""
        return self.agg or LOSSES[self.loss].agg

    def length(self, env: ResponseSpace) -> float | None:
        """``norm_len`` of ``seq-mean-token-sum-norm``: the caller's, else the testbed's longest
        response H (the analogue of an LLM run's maximum completion length); None otherwise."""
        if self.aggregation() != "seq-mean-token-sum-norm":
            return self.norm_len
        return float(env.horizon) if self.norm_len is None else self.norm_len

    def advantage_kind(self) -> tuple[str, dict[str, Any]]:
        spec = LOSSES[self.loss]
        kind = self.advantage or spec.advantage
        base = dict(spec.advantage_kwargs) if self.advantage is None else {}
        return kind, {**base, **(self.advantage_kwargs or {})}


def _check_logits(env: ResponseSpace, logits: object) -> Tensor:
    """Logits of the testbed's shape, finite, as float64 (differentiably)."""
    logits = env.check_logits(logits)
    require_finite("logits", logits)
    return logits.to(torch.float64)


def _old_table(env: ResponseSpace, behavior: Tensor, setup: LossSetup) -> Tensor:
    """Per-token log-probs [P, N, H] of the behaviour, or of ``anchor`` when one is given."""
    if setup.anchor is None:
        return env.token_logprobs_of(behavior)
    shape = (env.num_prompts, env.num_responses)
    return env.token_logprobs_of(require_table("anchor", setup.anchor, shape))


class _Prepared(NamedTuple):
    """Everything about a batch that does not depend on the logits being differentiated."""

    rows: tuple[Tensor, Tensor]  # (prompt [G, 1], responses [G, K]) indexing [P, N]
    logp_old: Tensor  # [G, K, H]
    advantages: Tensor  # [G, K]
    mask: Tensor  # [G, K, H]
    weight: Tensor  # [G]


def _prepare(env: ResponseSpace, batch: GroupBatch, behavior: Tensor, setup: LossSetup,
             generator: torch.Generator | None, advantages: Tensor | None,
             shaped: tuple[Tensor, Tensor] | None = None) -> _Prepared:
    """``shaped``: (advantages, mask) of this batch's groups, when already known (they do not
    depend on the behaviour, only on which groups the batch holds)."""
    rows = (batch.prompt.unsqueeze(-1), batch.responses)
    table = _old_table(env, behavior, setup)  # [P, N, H]
    logp_old = table[rows]
    if shaped is None:
        shaped = _shape_advantages(env, rows, setup, generator, advantages, batch.exact)
    advantages, mask = shaped
    # checked on the small table first: only a response of probability 0 can give −inf
    if (not bool(torch.isfinite(table).logical_or(~env.mask).all())
            and not bool(torch.isfinite(logp_old).logical_or(~mask).all())):
        raise ValueError("logp_old = −inf: the behaviour (or anchor) gives probability 0 to a "
                         "response in the batch")
    return _Prepared(rows, logp_old, advantages, mask, batch.weight)


def _shape_advantages(env: ResponseSpace, rows: tuple[Tensor, Tensor], setup: LossSetup,
                      generator: torch.Generator | None, advantages: Tensor | None,
                      exact: bool) -> tuple[Tensor, Tensor]:
    """(advantages [G, K], token mask [G, K, H]) of the groups ``rows``, as the preset says."""
    mask = env.mask[rows[1]]
    if advantages is not None:
        return advantages, mask
    kind, kwargs = setup.advantage_kind()
    if kind == "red-drop" and exact:
        raise ValueError("red-drop drops samples at random: its exact expectation is not "
                         "enumerated; use sample_groups with a generator")
    advantages, keep = shaped_advantages(
        env.rewards[rows], kind, generator=generator,
        drop_uniform_groups=LOSSES[setup.loss].drop_uniform_groups, **kwargs)
    return advantages, mask & keep.unsqueeze(-1)


def _check_batch(env: ResponseSpace, batch: object) -> GroupBatch:
    if not isinstance(batch, GroupBatch):
        raise TypeError(f"batch must be a GroupBatch, got {type(batch).__name__}")
    responses, prompt = batch.responses, batch.prompt
    if (responses.ndim != 2 or prompt.shape != responses.shape[:1]
            or batch.weight.shape != prompt.shape):
        raise ValueError("batch must hold prompt [G], responses [G, K] and weight [G], got "
                         f"{tuple(prompt.shape)}, {tuple(responses.shape)}, "
                         f"{tuple(batch.weight.shape)}")
    if len(prompt) and (int(responses.min()) < 0 or int(responses.max()) >= env.num_responses
                        or int(prompt.min()) < 0 or int(prompt.max()) >= env.num_prompts):
        raise ValueError("batch indexes a prompt or response outside the testbed")
    return batch


def per_group_losses(env: ResponseSpace, logits: Tensor, prepared: _Prepared, setup: LossSetup,
                     *, looped: bool = False) -> GroupLosses:
    """(loss [G], clipfrac [G]) of every group: all groups in one pass
    (``losses.group_losses``), or (``looped``, the naive twin) a loop calling the validated
    ``policy_loss`` once per group."""
    logp = env.token_logprobs(logits)[prepared.rows]
    args = (logp, prepared.logp_old, prepared.advantages, prepared.mask)
    options = {"agg": setup.agg, "norm_len": setup.length(env), **setup.hparams}
    if not looped:
        return group_losses(setup.loss, *args, **options)
    outs = [policy_loss(setup.loss, *group, validate=bool(group[-1].any()), **options)
            for group in zip(*args, strict=True)]
    return GroupLosses(torch.stack([out.loss for out in outs]),
                       torch.stack([out.metrics["clipfrac"] for out in outs]))


def batch_terms(env: ResponseSpace, logits: Tensor, batch: GroupBatch, behavior: Behavior,
                setup: LossSetup, *, generator: torch.Generator | None = None,
                advantages: Tensor | None = None, looped: bool = False,
                shaped: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """(``batch_loss``, clip fraction per prompt [P]: Σ_g w_g·clipfrac(g) over its groups)."""
    logits = _check_logits(env, logits)
    prepared = _prepare(env, _check_batch(env, batch), _resolve(env, behavior, logits), setup,
                        generator, advantages, shaped)
    groups = per_group_losses(env, logits, prepared, setup, looped=looped)
    clipfrac = torch.zeros(env.num_prompts, dtype=groups.clipfrac.dtype).index_add_(
        0, batch.prompt, prepared.weight.to(groups.clipfrac.dtype) * groups.clipfrac)
    return (prepared.weight * groups.loss).sum() / env.num_prompts, clipfrac


def batch_loss(env: ResponseSpace, logits: Tensor, batch: GroupBatch, behavior: Behavior,
               setup: LossSetup, *, generator: torch.Generator | None = None,
               advantages: Tensor | None = None, looped: bool = False) -> Tensor:
    """(1/P)·Σ_g w_g·loss(group g): the exact expectation for an enumerated batch, the Monte
    Carlo estimate for a sampled one. ``advantages`` [G, K] overrides the preset's kind."""
    return batch_terms(env, logits, batch, behavior, setup, generator=generator,
                       advantages=advantages, looped=looped)[0]


def _resolve(env: ResponseSpace, behavior: Behavior, logits: Tensor) -> Tensor:
    """Behaviour probabilities [P, N]: a table, ``"on-policy"`` (π_θ, detached) or a callable."""
    if isinstance(behavior, str):
        if behavior != "on-policy":
            raise ValueError(f"behavior must be [P, N] probabilities, 'on-policy' or a callable, "
                             f"got {behavior!r}")
        return env.sequence_probs(logits.detach().to(torch.float64))
    if callable(behavior) and not isinstance(behavior, Tensor):
        behavior = behavior(logits.detach())
    return require_table("behavior", behavior, (env.num_prompts, env.num_responses))


def _closed_form_factors(env: ResponseSpace, setup: LossSetup, k: int
                         ) -> tuple[float, float, float] | None:
    """(c_K, β + shift, N) when the closed form applies, else None (see module docstring)."""
    spec = LOSSES[setup.loss]
    kind, kwargs = setup.advantage_kind()
    if spec.base not in ("reinforce", "asymre") or spec.drop_uniform_groups:
        return None
    if kind not in ("mean", "loo") or set(kwargs) - {"shift"}:
        return None
    # N must not depend on the group: compare groups of the shortest and of the longest rows
    # (for token-mean over unequal lengths they differ, and the loss is not linear per row)
    lengths = torch.stack([env.lengths.min(), env.lengths.max()]).view(2, 1, 1)
    masks = (torch.arange(env.horizon) < lengths).expand(2, k, env.horizon)
    counts = normaliser(masks, setup.aggregation())
    if float(counts[0]) != float(counts[1]):
        return None
    factor = (1.0 - 1.0 / k) if kind == "mean" else float(k > 1)
    beta = float(spec.resolve(setup.hparams).get("beta", 0.0))
    return factor, beta + float(kwargs.get("shift", 0.0)), float(counts[0])


def _closed_form_loss(env: ResponseSpace, logits: Tensor, mu: Tensor, setup: LossSetup,
                      k: int, factors: tuple[float, float, float]) -> Tensor:
    """−(K/N)·(1/P)·Σ_p Σ_y μ(y)·[c_K·(r(y) − E_μ r) + β]·g(y), g = row_terms(log π(y))."""
    g = row_terms(env.token_logprobs(logits), env.mask, setup.aggregation(),
                  norm_len=setup.length(env))  # [P, N]
    c_k, beta, count = factors
    centred = env.rewards - (mu * env.rewards).sum(-1, keepdim=True)
    return -(k / count) * (mu * (c_k * centred + beta) * g).sum() / env.num_prompts


def _enumeration_rows(env: ResponseSpace, k: int) -> int:
    return env.num_prompts * math.comb(env.num_responses + k - 1, k) * k * env.horizon


def _choose(env: ResponseSpace, k: int) -> str:
    """"sufficient" or "enumerate", whichever does less work (row positions evaluated)."""
    rows, cost = sufficient_cost(env, k)
    return "sufficient" if rows <= MAX_STATES and cost <= _enumeration_rows(env, k) else "enumerate"


class ExpectedLoss:
    """(logits, behaviour) ↦ E_{groups of K ∼ μ}[loss], exact, for many calls on one testbed.

    A training loop calls it once per step with a new behaviour: what depends on neither — the
    engine's choice, the multisets or count vectors, their rewards, advantages and masks — is
    built on the first call and reused. ``method`` as in ``expected_loss``; ``self.method`` is
    the engine in use ("closed-form", "sufficient", "enumerate" or "ordered").
    """

    def __init__(self, env: ResponseSpace, setup: LossSetup, k: int, method: str = "auto"
                 ) -> None:
        self.k = require_int("K", k, 1)
        require_choice("method", method, METHODS)
        if not isinstance(setup, LossSetup):
            raise TypeError(f"setup must be a LossSetup, got {type(setup).__name__}")
        self.env, self.setup = env, setup
        self.factors = (_closed_form_factors(env, setup, self.k)
                        if method in ("auto", "closed-form") else None)
        if method == "closed-form" and self.factors is None:
            raise ValueError(f"no closed form for loss {setup.loss!r} with this "
                             "advantage/aggregation")
        if self.factors is not None:
            self.method = "closed-form"
        else:
            self.method = _choose(env, self.k) if method == "auto" else method
        self._stats: SufficientStats | None = None
        self._checked = False
        self._groups: tuple[Tensor, Tensor] | None = None  # (prompt [G], responses [G, K])
        self._shaped: tuple[Tensor, Tensor] | None = None
        self._counts: Tensor | None = None

    def __call__(self, logits: Tensor, behavior: Behavior) -> Tensor:
        return self.terms(logits, behavior)[0]

    def terms(self, logits: Tensor, behavior: Behavior) -> tuple[Tensor, Tensor]:
        """(E[loss], expected clip fraction per prompt [P]) — see ``batch_terms``."""
        logits = _check_logits(self.env, logits)
        return self._terms(logits, _resolve(self.env, behavior, logits))

    def _terms(self, logits: Tensor, mu: Tensor) -> tuple[Tensor, Tensor]:
        """``terms`` on checked inputs (no value checks on logits: ``torch.func`` traces it)."""
        env, setup = self.env, self.setup
        if self.method == "closed-form":  # REINFORCE-type: nothing is ever clipped
            return (_closed_form_loss(env, logits, mu, setup, self.k, self.factors),
                    torch.zeros(env.num_prompts, dtype=torch.float64))
        if self.method == "sufficient":
            if self._stats is None:
                self._stats = SufficientStats(env, setup, self.k)
            return self._stats.terms(logits, mu, _old_table(env, mu, setup))
        if not self._checked:
            kind, kwargs = setup.advantage_kind()
            require_group_local(kind, kwargs, LOSSES[setup.loss].drop_uniform_groups)
            self._checked = True
        if self.method == "ordered":
            batch = enumerate_groups(mu, self.k, ordered=True)
            return batch_terms(env, logits, batch, mu, setup, looped=True)
        return self._enumerated(logits, mu)

    def _enumerated(self, logits: Tensor, mu: Tensor) -> tuple[Tensor, Tensor]:
        """Every multiset: cached in one piece when small, else streamed in pieces."""
        env, k = self.env, self.k
        per_group = env.num_prompts * k * env.horizon
        count = math.comb(env.num_responses + k - 1, k)
        if count * per_group > CHUNK_ELEMENTS:
            size = max(1, CHUNK_ELEMENTS // per_group)
            pieces = (functools.partial(self._piece, mu=mu, chunk=chunk)
                      for chunk in multiset_chunks(env.num_responses, k, size))
            return accumulate(logits, pieces, single=False)
        outcomes, log_coef = multisets(env.num_responses, k)
        if self._counts is None:  # c[m, j]: how often response j occurs in multiset m
            self._counts = torch.zeros(len(outcomes), env.num_responses, dtype=torch.float64
                                       ).scatter_add_(1, outcomes, torch.ones(outcomes.shape,
                                                                              dtype=torch.float64))
        # log P(group) = log K!/Π c_j! + Σ_j c_j·log μ_j: one [P, N] × [N, M] product; a μ
        # with zeros gives −inf or NaN here and takes the fallback below
        weight = torch.exp(log_coef + torch.log(mu) @ self._counts.T)
        if not bool((weight > 0).all()):
            return batch_terms(env, logits, enumerate_groups(mu, k), mu, self.setup)
        if self._groups is None:
            prompt = torch.arange(env.num_prompts).repeat_interleave(len(outcomes))
            self._groups = (prompt, outcomes.repeat(env.num_prompts, 1))
            rows = (prompt.unsqueeze(-1), self._groups[1])
            self._shaped = _shape_advantages(env, rows, self.setup, None, None, exact=True)
        batch = GroupBatch(*self._groups, weight.flatten(), exact=True)
        return batch_terms(env, logits, batch, mu, self.setup, shaped=self._shaped)

    def _piece(self, logits: Tensor, *, mu: Tensor, chunk: tuple[Tensor, Tensor]
               ) -> tuple[Tensor, Tensor]:
        """One slice of the multisets, for every prompt, as a weighted batch."""
        outcomes, log_coef = chunk
        weight = torch.exp(log_coef + torch.log(mu)[:, outcomes].sum(dim=-1))  # [P, m]
        prompt, index = (weight > 0).nonzero(as_tuple=True)
        if not len(prompt):
            return logits.new_zeros(()), torch.zeros(self.env.num_prompts, dtype=torch.float64)
        batch = GroupBatch(prompt, outcomes[index], weight[prompt, index], exact=True)
        return batch_terms(self.env, logits, batch, mu, self.setup)


def _setup(loss: str, options: Mapping[str, Any]) -> LossSetup:
    names = {f.name for f in dataclasses.fields(LossSetup)} - {"loss", "hparams"}
    known = {key: value for key, value in options.items() if key in names}
    hparams = {key: value for key, value in options.items() if key not in names}
    return LossSetup(loss, hparams, **known)


def expected_loss(env: ResponseSpace, logits: Tensor, behavior: Behavior, loss: str, k: int, *,
                  method: str = "auto", **options: Any) -> Tensor:
    """E_{groups of K ∼ μ}[loss], exact and differentiable in ``logits`` (μ held fixed).

    ``method``: one of ``METHODS`` — "auto" (closed form where it applies, else the cheaper of
    "sufficient" and "enumerate"), "closed-form" (error if it does not apply), "sufficient",
    "enumerate", "ordered" (naive twin: ordered tuples, looped losses). ``options``:
    ``anchor``, ``advantage``, ``advantage_kwargs``, ``agg``, ``norm_len`` (see
    ``LossSetup``), everything else goes to the loss as a keyword.
    """
    return _loss_fn(env, behavior, loss, k, method, options)(logits)


def _loss_fn(env: ResponseSpace, behavior: Behavior, loss: str, k: int, method: str,
             options: Mapping[str, Any]) -> Callable[[Tensor], Tensor]:
    """logits ↦ exact E[loss], with everything that does not depend on logits resolved once."""
    value = ExpectedLoss(env, _setup(loss, options), k, method)
    return lambda logits: value(logits, behavior)


def expected_gradient(env: ResponseSpace, logits: Tensor, behavior: Behavior, loss: str, K: int,
                      **hparams: Any) -> Tensor:
    """∇_logits E_{groups of K i.i.d. ∼ behavior}[loss]: exact, same shape as ``logits``.

    ``behavior``: [P, N] response probabilities (float64), ``"on-policy"`` (π_θ itself,
    detached) or a callable logits ↦ probs. ``hparams``: the loss's keywords plus the options
    of ``expected_loss`` (``method``, ``anchor``, ``advantage``, ``advantage_kwargs``, ``agg``,
    ``norm_len``).
    """
    method = hparams.pop("method", "auto")
    return _gradient(_loss_fn(env, behavior, loss, K, method, hparams), env, logits)


def _gradient(value: Callable[[Tensor], Tensor], env: ResponseSpace, logits: Tensor) -> Tensor:
    logits = _check_logits(env, logits).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(value(logits), logits)
    return grad


def expected_hessian(env: ResponseSpace, logits: Tensor, behavior: Behavior, loss: str, k: int,
                     **hparams: Any) -> Tensor:
    """∇²_logits E[loss] [*shape, *shape], reverse-over-reverse ``torch.func.jacrev`` (the
    forward-mode ``torch.func.hessian`` warns from inside torch); behaviour held fixed.
    Problems small enough for one piece only (``accumulate`` carries first derivatives)."""
    logits = _check_logits(env, logits).detach()
    mu = _resolve(env, behavior, logits)
    method = hparams.pop("method", "auto")
    value = ExpectedLoss(env, _setup(loss, hparams), k, method)
    # one plain call first: what the engine caches (multisets, advantages, tables) must be
    # built outside the transforms, or a later call finds tensors of a finished transform
    value._terms(logits, mu)
    return torch.func.jacrev(torch.func.jacrev(lambda z: value._terms(z, mu)[0]))(logits)


def group_gradients(env: ResponseSpace, logits: Tensor, batch: GroupBatch, behavior: Behavior,
                    loss: str, *, generator: torch.Generator | None = None,
                    advantages: Tensor | None = None, **options: Any) -> Tensor:
    """∇_logits loss(group g) for every group of ``batch``: [G, *logits.shape].

    ``vmap`` over groups of ``grad`` of one group's ``policy_loss`` (O(G); a ``jacrev`` of the
    vector of group losses would cost O(G²)). ``options`` as in ``expected_loss``.
    """
    setup = _setup(loss, options)
    logits = _check_logits(env, logits).detach()
    mu = _resolve(env, behavior, logits)
    prepared = _prepare(env, _check_batch(env, batch), mu, setup, generator, advantages)

    def one(z: Tensor, prompt: Tensor, responses: Tensor, logp_old: Tensor, adv: Tensor,
            mask: Tensor) -> Tensor:
        flat = env.token_logprobs(z).flatten(0, 1)  # [P·N, H]; a 0-d batched index would sync
        logp = flat[prompt * env.num_responses + responses]
        return policy_loss(setup.loss, logp, logp_old, adv, mask, agg=setup.agg,
                           norm_len=setup.length(env), validate=False,
                           **setup.hparams).loss

    per_group = torch.func.vmap(torch.func.grad(one), in_dims=(None, 0, 0, 0, 0, 0))
    return per_group(logits, batch.prompt, batch.responses, prepared.logp_old,
                     prepared.advantages, prepared.mask)


def sampled_gradient(env: ResponseSpace, logits: Tensor, behavior: Behavior, loss: str, k: int,
                     num_groups: int, generator: torch.Generator, **options: Any
                     ) -> tuple[Tensor, Tensor]:
    """Monte Carlo twin of ``expected_gradient`` from S = ``num_groups`` groups per prompt.

    Returns (mean, standard error), both of ``logits``' shape: the per-group gradients come
    from ``group_gradients``; the error is √(Σ_p s_p²/S)/P with s_p² the sample variance
    (ddof 1) over prompt p's groups (the prompts' estimates are independent); 0 when S = 1.
    """
    logits = _check_logits(env, logits).detach()
    batch = sample_groups(_resolve(env, behavior, logits), k, num_groups, generator)
    grads = group_gradients(env, logits, batch, behavior, loss, generator=generator, **options)
    per_prompt = grads.reshape(env.num_prompts, num_groups, *logits.shape)
    mean = per_prompt.mean(dim=1).sum(dim=0) / env.num_prompts
    var = per_prompt.var(dim=1, correction=1) if num_groups > 1 else torch.zeros_like(
        per_prompt[:, 0])
    stderr = (var.sum(dim=0) / num_groups).sqrt() / env.num_prompts
    return mean, stderr


def iterate_expected_update(env: ResponseSpace, logits: Tensor, behavior: Behavior, loss: str,
                            k: int, *, lr: float, steps: int, record_every: int = 1,
                            **hparams: Any) -> Tensor:
    """Exact gradient descent θ ← θ − lr·∇E[loss], ``steps`` times; returns the logits at
    steps 0, r, 2r, … (r = ``record_every``) and the last step: [R, *shape]."""
    lr = require_number("lr", lr)
    steps, record_every = require_int("steps", steps, 0), require_int("record_every",
                                                                       record_every, 1)
    theta = _check_logits(env, logits).detach()
    method = hparams.pop("method", "auto")
    value = _loss_fn(env, behavior, loss, k, method, hparams)
    record = [theta]
    for step in range(1, steps + 1):
        theta = theta - lr * _gradient(value, env, theta)
        if step % record_every == 0 or step == steps:
            record.append(theta)
    return torch.stack(record)


def expected_pairwise_surrogate(env: ResponseSpace, logits: Tensor, anchor_logits: Tensor,
                                behavior: Behavior, k: int, tau: float) -> Tensor:
    """E_{groups of K ∼ μ}[L̂] through ``losses.pairwise_surrogate``, one group at a time.

    a_i = r_i − τ·(log π_θ(y_i) − log π_t(y_i)) with π_t given by ``anchor_logits``;
    (1/P)·Σ_p Σ_g w_g·L̂(group g), differentiable in ``logits``.
    """
    logits = _check_logits(env, logits)
    anchor_logits = require_float_tensor("anchor_logits", anchor_logits)
    if tuple(anchor_logits.shape) != env.logits_shape:
        raise ValueError(f"anchor_logits must have shape {env.logits_shape}, got "
                         f"{tuple(anchor_logits.shape)}")
    require_finite("anchor_logits", anchor_logits)
    tau = require_positive("tau", tau)
    mu = _resolve(env, behavior, logits)
    batch = enumerate_groups(mu, k)
    rows = (batch.prompt.unsqueeze(-1), batch.responses)
    seq_logp = env.sequence_logprobs(logits)[rows]
    seq_anchor = env.sequence_logprobs(anchor_logits.detach().to(torch.float64))[rows]

    def one(r: Tensor, s: Tensor, a: Tensor) -> Tensor:
        return pairwise_surrogate(r.unsqueeze(0), s.unsqueeze(0), a.unsqueeze(0), tau)

    per_group = torch.func.vmap(one)(env.rewards[rows], seq_logp, seq_anchor)
    return (batch.weight * per_group).sum() / env.num_prompts

