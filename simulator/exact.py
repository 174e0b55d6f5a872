"""Exact expectations over groups: weighted batches through the ordinary loss code.

Design decisions
----------------
* One type, ``GroupBatch``: G groups, each a prompt and K response indices, with a weight.
  ``enumerate_groups`` lists every multiset of K responses with its probability
  K!/Π_j c_j! · Π_j μ(j)^{c_j} under i.i.d. draws from the behaviour μ (weights sum to 1 per
  prompt); ``sample_groups`` draws S groups per prompt from a ``torch.Generator`` (weights 1/S).
  Groups are multisets because every advantage kind and aggregation is symmetric in the group's
  order; ``ordered_tuples`` is the naive twin (N^K ordered groups, weight Π μ) and tests check
  that both give the same expectation.
* One function turns a batch into a loss: ``batch_loss`` gathers [G, K, H] token log-probs,
  computes advantages inside each group as the loss's preset says (``LOSSES[loss].advantages``)
  and evaluates every group's loss in one pass with ``losses.group_losses`` (exactly
  ``policy_loss`` per group; ``looped=True`` is the naive twin: a Python loop over
  ``policy_loss`` with validation on). ``ExpectedLoss`` keeps the enumeration's parts that do
  not change between training steps (groups, rewards, advantages, masks). The expectation is
  E = (1/P)·Σ_p Σ_g w_g·loss(group g); each group is its own batch, so batch-level
  normalisers (token-mean, DAPO's filter) act within one prompt's group. A group DAPO drops
  (all rewards equal) contributes 0: the result is E[loss·1{kept}], not DAPO's resampling
  E[loss | kept] (divide by P(kept) for that).
* The behaviour is never differentiated: gradients are E_{groups∼μ}[∇_logits loss], the
  quantity an optimiser follows. ``logp_old`` is the behaviour's per-token log-prob unless an
  ``anchor`` distribution is given (theory sometimes separates the two).
* Fast path (``method="closed-form"``): for REINFORCE-type losses (−(A + β)·log π with
  A = r − r̄ (+shift) or leave-one-out) the expectation is exact in O(N):
  E[(1/K)·Σ_i (A_i + β)·g(y_i)] = c_K·E_μ[(r − E_μ r)·g] + (β + shift)·E_μ[g],
  c_K = 1 − 1/K (mean) or 1 (loo, K ≥ 2), g(y) = the aggregated log π(y). ``method="auto"``
  uses it when it applies; tests check it against the enumeration.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor

from simulator.advantages import shaped_advantages
from simulator.bandit import ResponseSpace, check_probs
from simulator.losses import LOSSES, GroupLosses, group_losses, pairwise_surrogate, policy_loss

__all__ = [
    "MAX_GROUPS",
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
    "multisets",
    "ordered_tuples",
    "per_group_losses",
    "sample_groups",
    "sampled_gradient",
]

MAX_GROUPS = 200_000  # outcomes per prompt above which enumeration refuses (use sampling)

Behavior = Tensor | str | Callable[[Tensor], Tensor]


class GroupBatch(NamedTuple):
    """G groups: ``prompt`` [G] (long), ``responses`` [G, K] (long), ``weight`` [G] (float64,
    summing to 1 over each prompt's groups), ``exact`` (enumerated, not sampled)."""

    prompt: Tensor
    responses: Tensor
    weight: Tensor
    exact: bool


def _check_sizes(n: int, k: int) -> None:
    for name, value in (("N", n), ("K", k)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")


@functools.lru_cache(maxsize=128)
def multisets(n: int, k: int) -> tuple[Tensor, Tensor]:
    """Every multiset of k draws from n items: (outcomes [M, k] sorted, log K!/Π c_j! [M]).

    M = C(n + k − 1, k). Cached; the returned tensors must not be modified.
    """
    _check_sizes(n, k)
    count = math.comb(n + k - 1, k)
    if count > MAX_GROUPS:
        raise ValueError(f"{count} groups of K={k} from N={n} responses exceed MAX_GROUPS="
                         f"{MAX_GROUPS}; use sample_groups instead")
    outcomes = torch.tensor(list(itertools.combinations_with_replacement(range(n), k)),
                            dtype=torch.long).reshape(count, k)
    counts = torch.zeros(count, n, dtype=torch.float64)
    counts.scatter_add_(1, outcomes, torch.ones(count, k, dtype=torch.float64))
    log_coef = math.lgamma(k + 1) - torch.lgamma(counts + 1).sum(dim=1)
    return outcomes, log_coef


def ordered_tuples(n: int, k: int) -> tuple[Tensor, Tensor]:
    """Naive twin of ``multisets``: all n^k ordered groups, each with coefficient 1."""
    _check_sizes(n, k)
    if n**k > MAX_GROUPS:
        raise ValueError(f"{n**k} ordered groups exceed MAX_GROUPS={MAX_GROUPS}")
    outcomes = torch.tensor(list(itertools.product(range(n), repeat=k)), dtype=torch.long)
    return outcomes.reshape(n**k, k), torch.zeros(n**k, dtype=torch.float64)


def enumerate_groups(behavior: Tensor, k: int, *, ordered: bool = False) -> GroupBatch:
    """Every group of K i.i.d. draws from ``behavior`` [P, N] with its exact probability.

    Outcomes of probability 0 are left out (they cannot occur, and their log-probs are −inf).
    """
    if behavior.ndim != 2:
        raise ValueError(f"behavior must be [P, N] probabilities, got {tuple(behavior.shape)}")
    behavior = check_probs("behavior", behavior, tuple(behavior.shape))
    outcomes, log_coef = (ordered_tuples if ordered else multisets)(behavior.shape[1], k)
    log_mu = torch.log(behavior.to(torch.float64))
    weight = torch.exp(log_coef + log_mu[:, outcomes].sum(dim=-1))  # [P, M]
    prompt, index = (weight > 0).nonzero(as_tuple=True)
    return GroupBatch(prompt, outcomes[index], weight[prompt, index], exact=True)


def sample_groups(behavior: Tensor, k: int, num_groups: int, generator: torch.Generator
                  ) -> GroupBatch:
    """S = ``num_groups`` groups of K i.i.d. draws from ``behavior`` [P, N] per prompt."""
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    _check_sizes(num_groups, k)
    behavior = check_probs("behavior", behavior, tuple(behavior.shape))
    p = behavior.shape[0]
    draws = torch.multinomial(behavior, num_groups * k, replacement=True, generator=generator)
    prompt = torch.arange(p).repeat_interleave(num_groups)
    weight = torch.full((p * num_groups,), 1.0 / num_groups, dtype=torch.float64)
    return GroupBatch(prompt, draws.reshape(p * num_groups, k), weight, exact=False)


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

    def advantage_kind(self) -> tuple[str, dict[str, Any]]:
        spec = LOSSES[self.loss]
        kind = self.advantage or spec.advantage
        base = dict(spec.advantage_kwargs) if self.advantage is None else {}
        return kind, {**base, **(self.advantage_kwargs or {})}


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
    old = behavior if setup.anchor is None else setup.anchor
    table = env.token_logprobs_of(old)  # [P, N, H]
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


def per_group_losses(env: ResponseSpace, logits: Tensor, prepared: _Prepared, setup: LossSetup,
                     *, looped: bool = False) -> GroupLosses:
    """(loss [G], clipfrac [G]) of every group: all groups in one pass
    (``losses.group_losses``), or (``looped``, the naive twin) a loop calling the validated
    ``policy_loss`` once per group."""
    logp = env.token_logprobs(logits)[prepared.rows]
    args = (logp, prepared.logp_old, prepared.advantages, prepared.mask)
    options = {"agg": setup.agg, "norm_len": setup.norm_len, **setup.hparams}
    if not looped:
        return group_losses(setup.loss, *args, **options)
    outs = [policy_loss(setup.loss, *group, validate=bool(group[-1].any()), **options)
            for group in zip(*args, strict=True)]
    return GroupLosses(torch.stack([out.loss for out in outs]),
                       torch.stack([out.metrics["clipfrac"] for out in outs]))


def batch_terms(env: ResponseSpace, logits: Tensor, batch: GroupBatch, behavior: Tensor,
                setup: LossSetup, *, generator: torch.Generator | None = None,
                advantages: Tensor | None = None, looped: bool = False,
                shaped: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """(``batch_loss``, clip fraction per prompt [P]: Σ_g w_g·clipfrac(g) over its groups)."""
    prepared = _prepare(env, batch, _resolve(env, behavior, logits), setup, generator,
                        advantages, shaped)
    groups = per_group_losses(env, logits, prepared, setup, looped=looped)
    clipfrac = torch.zeros(env.num_prompts, dtype=groups.clipfrac.dtype).index_add_(
        0, batch.prompt, prepared.weight.to(groups.clipfrac.dtype) * groups.clipfrac)
    return (prepared.weight * groups.loss).sum() / env.num_prompts, clipfrac


def batch_loss(env: ResponseSpace, logits: Tensor, batch: GroupBatch, behavior: Tensor,
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
        return env.sequence_probs(logits.detach())
    if callable(behavior) and not isinstance(behavior, Tensor):
        behavior = behavior(logits.detach())
    return check_probs("behavior", behavior, (env.num_prompts, env.num_responses))


def _fast_path_factor(env: ResponseSpace, setup: LossSetup, k: int) -> tuple[float, float] | None:
    """(c_K, β + shift) when the closed form applies, else None (see module docstring)."""
    spec = LOSSES[setup.loss]
    kind, kwargs = setup.advantage_kind()
    if spec.base not in ("reinforce", "asymre") or spec.drop_uniform_groups:
        return None
    if kind not in ("mean", "loo") or set(kwargs) - {"shift"}:
        return None
    agg = setup.agg or spec.agg
    if agg == "token-mean" and bool((env.lengths != env.lengths[0]).any()):
        return None  # token-mean over responses of unequal length is not linear per response
    factor = (1.0 - 1.0 / k) if kind == "mean" else float(k > 1)
    beta = float(LOSSES[setup.loss].resolve(setup.hparams).get("beta", 0.0))
    return factor, beta + float(kwargs.get("shift", 0.0))


def _closed_form_loss(env: ResponseSpace, logits: Tensor, mu: Tensor, setup: LossSetup,
                      factors: tuple[float, float]) -> Tensor:
    """−(1/P)·Σ_p Σ_y μ(y)·[c_K·(r(y) − E_μ r) + β]·g(y) with g the aggregated log π(y)."""
    agg = setup.agg or LOSSES[setup.loss].agg
    token_logp = env.token_logprobs(logits)
    lengths = env.lengths.to(token_logp.dtype)
    if agg in ("token-mean", "seq-mean-token-mean"):
        g = token_logp.sum(-1) / lengths
    elif agg == "seq-mean-token-sum":
        g = token_logp.sum(-1)
    else:
        g = token_logp.sum(-1) / (env.horizon if setup.norm_len is None else setup.norm_len)
    c_k, beta = factors
    centred = env.rewards - (mu * env.rewards).sum(-1, keepdim=True)
    return -(mu * (c_k * centred + beta) * g).sum() / env.num_prompts


def expected_loss(env: ResponseSpace, logits: Tensor, behavior: Behavior, loss: str, k: int, *,
                  method: str = "auto", **options: Any) -> Tensor:
    """E_{groups of K ∼ μ}[loss], exact and differentiable in ``logits`` (μ held fixed).

    ``method``: "auto" (closed form where it applies, else enumeration), "enumerate",
    "ordered" (naive twin: ordered tuples, looped losses), "closed-form" (error if it does
    not apply). ``options``: ``anchor``, ``advantage``, ``advantage_kwargs``, ``agg``,
    ``norm_len`` (see ``LossSetup``), everything else goes to the loss as a keyword.
    """
    return _loss_fn(env, behavior, loss, k, method, options)(logits)


def _loss_fn(env: ResponseSpace, behavior: Behavior, loss: str, k: int, method: str,
             options: Mapping[str, Any]) -> Callable[[Tensor], Tensor]:
    """logits ↦ exact E[loss], with everything that does not depend on logits resolved once."""
    value = ExpectedLoss(env, _setup(loss, options), k, method)
    return lambda logits: value(logits, behavior)


class ExpectedLoss:
    """(logits, behaviour) ↦ E_{groups of K ∼ μ}[loss], exact, for many calls on one testbed.

    A training loop calls it once per step with a new behaviour: the enumeration's parts that
    depend on neither — the multisets, their rewards, advantages and masks — are built on the
    first call and reused while every multiset has positive probability (a behaviour with
    exact zeros falls back to ``enumerate_groups``, which leaves impossible groups out).
    ``method`` as in ``expected_loss``.
    """

    def __init__(self, env: ResponseSpace, setup: LossSetup, k: int, method: str = "auto"
                 ) -> None:
        if method not in ("auto", "enumerate", "ordered", "closed-form"):
            raise ValueError(f"method must be one of ['auto', 'enumerate', 'ordered', "
                             f"'closed-form'], got {method!r}")
        self.env, self.setup, self.k, self.method = env, setup, k, method
        self.factors = (_fast_path_factor(env, setup, k)
                        if method in ("auto", "closed-form") else None)
        if method == "closed-form" and self.factors is None:
            raise ValueError(f"no closed form for loss {setup.loss!r} with this "
                             "advantage/aggregation")
        self._groups: tuple[Tensor, Tensor] | None = None  # (prompt [G], responses [G, K])
        self._shaped: tuple[Tensor, Tensor] | None = None
        self._counts: Tensor | None = None

    def __call__(self, logits: Tensor, behavior: Behavior) -> Tensor:
        return self.terms(logits, behavior)[0]

    def terms(self, logits: Tensor, behavior: Behavior) -> tuple[Tensor, Tensor]:
        """(E[loss], expected clip fraction per prompt [P]) — see ``batch_terms``."""
        env, setup = self.env, self.setup
        mu = _resolve(env, behavior, logits)
        if self.factors is not None:  # REINFORCE-type: nothing is ever clipped
            return (_closed_form_loss(env, logits, mu, setup, self.factors),
                    torch.zeros(env.num_prompts, dtype=torch.float64))
        if self.method == "ordered":
            batch = enumerate_groups(mu, self.k, ordered=True)
            return batch_terms(env, logits, batch, mu, setup, looped=True)
        outcomes, log_coef = multisets(env.num_responses, self.k)
        if self._counts is None:  # c[m, j]: how often response j occurs in multiset m
            self._counts = torch.zeros(len(outcomes), env.num_responses, dtype=torch.float64
                                       ).scatter_add_(1, outcomes, torch.ones(outcomes.shape,
                                                                              dtype=torch.float64))
        # log P(group) = log K!/Π c_j! + Σ_j c_j·log μ_j: one [P, N] × [N, M] product; a μ
        # with zeros gives −inf or NaN here and takes the fallback below
        weight = torch.exp(log_coef + torch.log(mu.to(torch.float64)) @ self._counts.T)
        if not bool((weight > 0).all()):
            return batch_terms(env, logits, enumerate_groups(mu, self.k), mu, setup)
        if self._groups is None:
            prompt = torch.arange(env.num_prompts).repeat_interleave(len(outcomes))
            self._groups = (prompt, outcomes.repeat(env.num_prompts, 1))
            rows = (prompt.unsqueeze(-1), self._groups[1])
            self._shaped = _shape_advantages(env, rows, setup, None, None, exact=True)
        batch = GroupBatch(*self._groups, weight.flatten(), exact=True)
        return batch_terms(env, logits, batch, mu, setup, shaped=self._shaped)


def _setup(loss: str, options: Mapping[str, Any]) -> LossSetup:
    names = {f.name for f in dataclasses.fields(LossSetup)} - {"loss", "hparams"}
    known = {key: value for key, value in options.items() if key in names}
    hparams = {key: value for key, value in options.items() if key not in names}
    return LossSetup(loss, hparams, **known)


def expected_gradient(env: ResponseSpace, logits: Tensor, behavior: Behavior, loss: str, K: int,
                      **hparams: Any) -> Tensor:
    """∇_logits E_{groups of K i.i.d. ∼ behavior}[loss]: exact, same shape as ``logits``.

    ``behavior``: [P, N] response probabilities, ``"on-policy"`` (π_θ itself, detached) or a
    callable logits ↦ probs. ``hparams``: the loss's keywords plus the options of
    ``expected_loss`` (``method``, ``anchor``, ``advantage``, ``advantage_kwargs``, ``agg``,
    ``norm_len``).
    """
    method = hparams.pop("method", "auto")
    return _gradient(_loss_fn(env, behavior, loss, K, method, hparams), env, logits)


def _gradient(value: Callable[[Tensor], Tensor], env: ResponseSpace, logits: Tensor) -> Tensor:
    logits = env.check_logits(logits).detach().to(torch.float64).requires_grad_(True)
    (grad,) = torch.autograd.grad(value(logits), logits)
    return grad


def expected_hessian(env: ResponseSpace, logits: Tensor, behavior: Tensor, loss: str, k: int,
                     **hparams: Any) -> Tensor:
    """∇²_logits E[loss] [*shape, *shape], reverse-over-reverse ``torch.func.jacrev`` (the
    forward-mode ``torch.func.hessian`` warns from inside torch); behaviour held fixed."""
    mu = _resolve(env, behavior, logits)
    value = _loss_fn(env, mu, loss, k, hparams.pop("method", "auto"), hparams)
    return torch.func.jacrev(torch.func.jacrev(value))(logits.detach().to(torch.float64))


def group_gradients(env: ResponseSpace, logits: Tensor, batch: GroupBatch, behavior: Behavior,
                    loss: str, *, generator: torch.Generator | None = None,
                    advantages: Tensor | None = None, **options: Any) -> Tensor:
    """∇_logits loss(group g) for every group of ``batch``: [G, *logits.shape].

    ``vmap`` over groups of ``grad`` of one group's ``policy_loss`` (O(G); a ``jacrev`` of the
    vector of group losses would cost O(G²)). ``options`` as in ``expected_loss``.
    """
    setup = _setup(loss, options)
    logits = env.check_logits(logits).detach().to(torch.float64)
    mu = _resolve(env, behavior, logits)
    prepared = _prepare(env, batch, mu, setup, generator, advantages)

    def one(z: Tensor, prompt: Tensor, responses: Tensor, logp_old: Tensor, adv: Tensor,
            mask: Tensor) -> Tensor:
        flat = env.token_logprobs(z).flatten(0, 1)  # [P·N, H]; a 0-d batched index would sync
        logp = flat[prompt * env.num_responses + responses]
        return policy_loss(setup.loss, logp, logp_old, adv, mask, agg=setup.agg,
                           norm_len=setup.norm_len, validate=False, **setup.hparams).loss

    per_group = torch.func.vmap(torch.func.grad(one), in_dims=(None, 0, 0, 0, 0, 0))
    return per_group(logits, batch.prompt, batch.responses, prepared.logp_old,
                     prepared.advantages, prepared.mask)


def sampled_gradient(env: ResponseSpace, logits: Tensor, behavior: Behavior, loss: str, k: int,
                     num_groups: int, generator: torch.Generator, **options: Any
                     ) -> tuple[Tensor, Tensor]:
    """Monte Carlo twin of ``expected_gradient`` from S = ``num_groups`` groups per prompt.

    Returns (mean, standard error), both of ``logits``' shape: the per-group gradients come
    from ``group_gradients``; the error is √(Σ_p s_p²/S)/P with s_p² the sample variance over
    prompt p's groups (the prompts' estimates are independent).
    """
    logits = env.check_logits(logits).detach().to(torch.float64)
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
    theta = env.check_logits(logits).detach().to(torch.float64)
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
    mu = _resolve(env, behavior, logits)
    batch = enumerate_groups(mu, k)
    rows = (batch.prompt.unsqueeze(-1), batch.responses)
    seq_logp = env.sequence_logprobs(logits)[rows]
    seq_anchor = env.sequence_logprobs(anchor_logits.detach())[rows]

    def one(r: Tensor, s: Tensor, a: Tensor) -> Tensor:
        return pairwise_surrogate(r.unsqueeze(0), s.unsqueeze(0), a.unsqueeze(0), tau)

    per_group = torch.func.vmap(one)(env.rewards[rows], seq_logp, seq_anchor)
    return (batch.weight * per_group).sum() / env.num_prompts
