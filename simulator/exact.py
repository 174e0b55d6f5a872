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
    weight (``simulator.groups``), in pieces of bounded memory when the groups are many
    (``accumulate``), refusing only above ``MAX_GROUPS`` (hours). ``"ordered"``: N^K ordered
    tuples through a validated Python loop, the twin's twin.
  ``"auto"`` (default): the closed form where it applies, else whichever of the other two
  does less work (``sufficient_cost``, weighted by ``SUFFICIENT_ROW_COST``, vs
  C(N + K − 1, K)·K rows). Tests check every engine against enumeration to 1e-12 for every
  registered loss.
* ``gradient_covariance`` (Cov of one group's gradient) has the same engines but the closed
  form: ``"sufficient"`` (``SufficientStats.gradient_moments``: the second moment over
  (response, others' counts) and (pair of members, the other K − 2's counts) classes, exact
  for every loss that engine accepts), ``"enumerate"``, ``"ordered"``; ``"auto"`` as above
  with ``sufficient.covariance_cost``.
* Batches of groups, enumerated or sampled, become a loss through one function,
  ``groups.batch_terms``. This module re-exports the names of ``simulator.groups`` that its
  callers use (``__all__``); the rest are imported from ``simulator.groups``.
* A loss is named with keywords (sorted by ``LossSetup.from_keywords``) or given as a whole
  ``LossSetup``; ``method`` is each function's own keyword, never a loss keyword.
* Refused, with a ValueError naming the reason: a kind the advantage registry marks as not
  exact (RED-Drop's random drops: use sampling) and any advantage kind that couples prompts or
  depends on order (a batch statistic), detected by a probe
  (``sufficient.require_group_local``) rather than trusted from a list of names.
* The behavior is never differentiated: gradients are E_{groups∼μ}[∇_logits loss], the
  quantity an optimiser follows. ``logp_old`` is the behavior's per-token log-prob unless an
  ``anchor`` distribution π_old is given (``LossSetup.anchor``, or per call
  ``ExpectedLoss.terms(..., anchor)``): then three policies meet — μ samples the groups, the
  loss's ratio is against π_old, and the loss gets ``logp_rollout`` = log μ, so the setup's
  corrections (``simulator.corrections``) see both. Without an anchor nothing changes. The
  closed form has no weights (it steps aside for corrections); the statistics engine takes
  corrections that are functions of one response and refuses the rest
  (``sufficient.corrections_refusal``; ``auto`` then enumerates). docs/engines.md, "Three
  policies".
* Every public function validates what it is given and names the public argument (K, logits,
  behavior, anchor, method, ...) with the checks of ``simulator.groups``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor

from simulator.aggregation import normaliser, row_terms
from simulator.groups import (
    CHUNK_ELEMENTS,
    Behavior,
    GroupBatch,
    accumulate,
    batch_advantages,
    batch_loss,
    batch_terms,
    check_batch,
    check_logits,
    enumerate_groups,
    multiset_chunks,
    multisets,
    old_table,
    ordered_tuples,
    prepare,
    resolve_behavior,
    rollout_table,
    sample_groups,
)
from simulator.losses import LossSetup, group_losses, pairwise_surrogate, policy_loss
from simulator.responses import ResponseSpace
from simulator.sufficient import (
    MAX_STATES,
    SufficientStats,
    corrections_refusal,
    covariance_cost,
    require_group_local,
    sufficient_cost,
)
from simulator.validation import (
    require_choice,
    require_finite,
    require_float_tensor,
    require_int,
    require_number,
    require_positive,
)

__all__ = [
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
    "gradient_covariance",
    "group_gradients",
    "group_losses",
    "iterate_expected_update",
    "multiset_chunks",
    "multisets",
    "ordered_tuples",
    "sample_groups",
    "sampled_gradient",
    "setup_of",
]

METHODS: tuple[str, ...] = ("auto", "closed-form", "sufficient", "enumerate", "ordered")


class _ClosedForm(NamedTuple):
    """c_K, β + shift, and the per-token weights w [N, H] of g(y)·K/N = Σ_t w_t·log π_t(y)."""

    c_k: float
    beta: float
    weights: Tensor


def _closed_form(env: ResponseSpace, setup: LossSetup, k: int) -> _ClosedForm | None:
    """The closed form's constants when it applies, else None (see module docstring)."""
    spec = setup.spec
    kind, kwargs = setup.advantage_kind()
    if spec.base not in ("reinforce", "asymre") or spec.drop_uniform_groups:
        return None
    if setup.all_corrections() or spec.inputs:  # weights, masks or μ's log-probs: not linear
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
    # row_terms is linear in the per-token values: its weight on token t is its value on e_t
    unit = torch.eye(env.horizon, dtype=torch.float64).unsqueeze(1).expand(-1, *env.mask.shape)
    weights = row_terms(unit, env.mask, setup.aggregation(), norm_len=setup.length(env)).T
    factor = (1.0 - 1.0 / k) if kind == "mean" else float(k > 1)
    beta = float(spec.resolve(setup.hparams).get("beta", 0.0))
    return _ClosedForm(factor, beta + float(kwargs.get("shift", 0.0)),
                       weights * (k / float(counts[0])))


def _closed_form_loss(env: ResponseSpace, logits: Tensor, mu: Tensor, form: _ClosedForm
                      ) -> Tensor:
    """−(1/P)·Σ_p Σ_y μ(y)·[c_K·(r(y) − E_μ r) + β]·g(y)·K/N, g = row_terms(log π(y))."""
    g = (env.token_logprobs(logits) * form.weights).sum(-1)  # [P, N]
    centred = env.rewards - (mu * env.rewards).sum(-1, keepdim=True)
    return -(mu * (form.c_k * centred + form.beta) * g).sum() / env.num_prompts


def _enumeration_rows(env: ResponseSpace, k: int) -> int:
    return env.num_prompts * math.comb(env.num_responses + k - 1, k) * k * env.horizon


# A row position costs the sufficient-statistics engine about 1.5 times what it costs the
# enumeration (its rows carry count-vector weights and a rest-of-group law): measured on the
# tree of 16 leaves with continuous rewards, K = 8 — 13.6 M positions in 2.0 s against 15.7 M
# in 1.6 s (benchmarks/exact_vs_mc.py). Where rewards take few values the two counts differ by
# orders of magnitude and the factor changes nothing.
SUFFICIENT_ROW_COST = 1.5


def _choose(env: ResponseSpace, setup: LossSetup, k: int) -> str:
    """"sufficient" or "enumerate", whichever does less work (row positions evaluated, the
    sufficient engine's weighted by ``SUFFICIENT_ROW_COST``); "enumerate" when a correction is
    not a function of one response (``sufficient.corrections_refusal``); "ordered" for a loss
    that selects tokens over the group (M2PO, Clip-Cov, KL-Cov: ties go by row order, so the
    loss is not symmetric in the members and multisets would be wrong)."""
    if setup.spec.couples_rows:
        return "ordered"
    if corrections_refusal(setup) is not None:
        return "enumerate"
    rows, cost = sufficient_cost(env, k)
    cheaper = SUFFICIENT_ROW_COST * cost <= _enumeration_rows(env, k)
    return "sufficient" if rows <= MAX_STATES and cheaper else "enumerate"


class ExpectedLoss:
    """(logits, behavior) ↦ E_{groups of K ∼ μ}[loss], exact, for many calls on one testbed.

    A training loop calls it once per step with a new behavior: what depends on neither — the
    engine's choice, the multisets or count vectors, their rewards, advantages and masks — is
    built on the first call and reused. ``method`` as in ``expected_loss``; ``self.method`` is
    the engine in use ("closed-form", "sufficient", "enumerate" or "ordered").
    """

    def __init__(self, env: ResponseSpace, setup: LossSetup, K: int, method: str = "auto"
                 ) -> None:
        self.k = require_int("K", K, 1)
        require_choice("method", method, METHODS)
        if not isinstance(setup, LossSetup):
            raise TypeError(f"setup must be a LossSetup, got {type(setup).__name__}")
        self.env, self.setup = env, setup
        self._closed = (_closed_form(env, setup, self.k)
                        if method in ("auto", "closed-form") else None)
        if method == "closed-form" and self._closed is None:
            raise ValueError(f"no closed form for loss {setup.loss!r} with this "
                             "advantage/aggregation")
        if self._closed is not None:
            self.method = "closed-form"
        else:
            self.method = _choose(env, setup, self.k) if method == "auto" else method
        if self.method == "enumerate" and setup.spec.couples_rows:
            raise ValueError(
                f"loss {setup.loss!r} selects its tokens over the group and breaks ties by row "
                "order (LossSpec.couples_rows), so its value is not a symmetric function of "
                "the group's members, which the multiset enumeration assumes: use "
                "method='ordered' (method='auto' does)")
        self._stats: SufficientStats | None = None
        self._checked = False
        self._groups: tuple[Tensor, Tensor] | None = None  # (prompt [G], responses [G, K])
        self._shaped: tuple[Tensor, Tensor] | None = None
        self._counts: Tensor | None = None

    def __call__(self, logits: Tensor, behavior: Behavior, anchor: Tensor | None = None
                 ) -> Tensor:
        return self.terms(logits, behavior, anchor)[0]

    def terms(self, logits: Tensor, behavior: Behavior, anchor: Tensor | None = None
              ) -> tuple[Tensor, Tensor]:
        """(E[loss], expected clip fraction per prompt [P]) — see ``batch_terms``.

        ``anchor``: π_old [P, N] for this call, apart from the sampling policy μ =
        ``behavior`` (else ``setup.anchor``; else μ itself, one policy). With an anchor the
        loss gets logp_old = log π_old and logp_rollout = log μ, and the setup's corrections
        see both."""
        logits = check_logits(self.env, logits)
        return self._terms(logits, resolve_behavior(self.env, behavior, logits), anchor)

    def _terms(self, logits: Tensor, mu: Tensor, anchor: Tensor | None = None
               ) -> tuple[Tensor, Tensor]:
        """``terms`` on checked inputs (no value checks on logits: ``torch.func`` traces it)."""
        env, setup = self.env, self.setup
        if self.method == "closed-form":  # REINFORCE-type: nothing is ever clipped, no ratio
            return (_closed_form_loss(env, logits, mu, self._closed),
                    torch.zeros(env.num_prompts, dtype=torch.float64))
        if self.method == "sufficient":
            if self._stats is None:
                self._stats = SufficientStats(env, setup, self.k)
            return self._stats.terms(logits, mu, old_table(env, mu, setup, anchor),
                                     rollout_table(env, mu, setup, anchor))
        if not self._checked:
            require_group_local(setup)
            self._checked = True
        if self.method == "ordered":
            batch = enumerate_groups(mu, self.k, ordered=True)
            return batch_terms(env, logits, batch, mu, setup, looped=True, anchor=anchor)
        return self._enumerated(logits, mu, anchor)

    def _enumerated(self, logits: Tensor, mu: Tensor, anchor: Tensor | None
                    ) -> tuple[Tensor, Tensor]:
        """Every multiset: cached in one piece when small, else streamed in pieces."""
        env, k = self.env, self.k
        per_group = env.num_prompts * k * env.horizon
        count = math.comb(env.num_responses + k - 1, k)
        if count * per_group > CHUNK_ELEMENTS:
            size = max(1, CHUNK_ELEMENTS // per_group)
            pieces = (functools.partial(self._piece, mu=mu, anchor=anchor, chunk=chunk)
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
            return batch_terms(env, logits, enumerate_groups(mu, k), mu, self.setup,
                               anchor=anchor)
        if self._groups is None:
            prompt = torch.arange(env.num_prompts).repeat_interleave(len(outcomes))
            self._groups = (prompt, outcomes.repeat(env.num_prompts, 1))
            rows = (prompt.unsqueeze(-1), self._groups[1])
            self._shaped = batch_advantages(env, rows, self.setup, None, None, exact=True)
        batch = GroupBatch(*self._groups, weight.flatten(), exact=True)
        return batch_terms(env, logits, batch, mu, self.setup, shaped=self._shaped,
                           anchor=anchor)

    def _piece(self, logits: Tensor, *, mu: Tensor, anchor: Tensor | None,
               chunk: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """One slice of the multisets, for every prompt, as a weighted batch."""
        outcomes, log_coef = chunk
        weight = torch.exp(log_coef + torch.log(mu)[:, outcomes].sum(dim=-1))  # [P, m]
        prompt, index = (weight > 0).nonzero(as_tuple=True)
        if not len(prompt):
            return logits.new_zeros(()), torch.zeros(self.env.num_prompts, dtype=torch.float64)
        batch = GroupBatch(prompt, outcomes[index], weight[prompt, index], exact=True)
        return batch_terms(self.env, logits, batch, mu, self.setup, anchor=anchor)


def expected_loss(env: ResponseSpace, logits: Tensor, behavior: Behavior, loss: str | LossSetup,
                  K: int, *, method: str = "auto", **options: Any) -> Tensor:
    """E_{groups of K ∼ μ}[loss], exact and differentiable in ``logits`` (μ held fixed).

    ``method``: one of ``METHODS`` — "auto" (closed form where it applies, else the cheaper of
    "sufficient" and "enumerate"), "closed-form" (error if it does not apply), "sufficient",
    "enumerate", "ordered" (naive twin: ordered tuples, looped losses). ``options``:
    ``anchor``, ``advantage``, ``advantage_kwargs``, ``agg``, ``norm_len`` (see
    ``LossSetup``), everything else goes to the loss as a keyword; or ``loss`` is a whole
    ``LossSetup`` and ``options`` is empty.
    """
    return _loss_fn(env, behavior, setup_of(loss, options), K, method)(logits)


def setup_of(loss: str | LossSetup, options: Mapping[str, Any]) -> LossSetup:
    """``loss`` itself when it is a ``LossSetup``, else ``LossSetup.from_keywords``."""
    if not isinstance(loss, LossSetup):
        return LossSetup.from_keywords(loss, **options)
    if options:
        raise TypeError(f"loss is a LossSetup: give its keywords and options in it, not as "
                        f"keywords ({sorted(options)})")
    return loss


def _loss_fn(env: ResponseSpace, behavior: Behavior, setup: LossSetup, K: int, method: str
             ) -> Callable[[Tensor], Tensor]:
    """logits ↦ exact E[loss], with everything that does not depend on logits resolved once."""
    value = ExpectedLoss(env, setup, K, method)
    return lambda logits: value(logits, behavior)


def expected_gradient(env: ResponseSpace, logits: Tensor, behavior: Behavior,
                      loss: str | LossSetup, K: int, *, method: str = "auto",
                      **options: Any) -> Tensor:
    """∇_logits E_{groups of K i.i.d. ∼ behavior}[loss]: exact, same shape as ``logits``.

    ``behavior``: [P, N] response probabilities (float64), ``"on-policy"`` (π_θ itself,
    detached) or a callable logits ↦ probs. ``method`` and ``options`` as in ``expected_loss``.
    """
    value = _loss_fn(env, behavior, setup_of(loss, options), K, method)
    return _gradient(value, env, logits)


def _gradient(value: Callable[[Tensor], Tensor], env: ResponseSpace, logits: Tensor) -> Tensor:
    """∇ value(logits); ``value`` (an ``ExpectedLoss``) checks the logits' values itself."""
    logits = env.check_logits(logits).detach().to(torch.float64).requires_grad_(True)
    (grad,) = torch.autograd.grad(value(logits), logits)
    return grad


def expected_hessian(env: ResponseSpace, logits: Tensor, behavior: Behavior,
                     loss: str | LossSetup, K: int, *, method: str = "auto",
                     **options: Any) -> Tensor:
    """∇²_logits E[loss] [*shape, *shape], reverse-over-reverse ``torch.func.jacrev`` (the
    forward-mode ``torch.func.hessian`` warns from inside torch); behavior held fixed.
    Problems small enough for one piece only (``accumulate`` carries first derivatives)."""
    logits = check_logits(env, logits).detach()
    mu = resolve_behavior(env, behavior, logits)
    value = ExpectedLoss(env, setup_of(loss, options), K, method)
    # one plain call first: what the engine caches (multisets, advantages, tables) must be
    # built outside the transforms, or a later call finds tensors of a finished transform
    value._terms(logits, mu)
    return torch.func.jacrev(torch.func.jacrev(lambda z: value._terms(z, mu)[0]))(logits)


def group_gradients(env: ResponseSpace, logits: Tensor, batch: GroupBatch, behavior: Behavior,
                    loss: str | LossSetup, *, generator: torch.Generator | None = None,
                    advantages: Tensor | None = None, **options: Any) -> Tensor:
    """∇_logits loss(group g) for every group of ``batch``: [G, *logits.shape].

    ``vmap`` over groups of ``grad`` of one group's ``policy_loss`` (O(G); a ``jacrev`` of the
    vector of group losses would cost O(G²)). ``options`` as in ``expected_loss``.
    """
    setup = setup_of(loss, options)
    logits = check_logits(env, logits).detach()
    mu = resolve_behavior(env, behavior, logits)
    prepared = prepare(env, check_batch(env, batch), mu, setup, generator, advantages)

    def one(z: Tensor, prompt: Tensor, responses: Tensor, logp_old: Tensor, adv: Tensor,
            mask: Tensor, rollout: Tensor) -> Tensor:
        flat = env.token_logprobs(z).flatten(0, 1)  # [P·N, H]; a 0-d batched index would sync
        logp = flat[prompt * env.num_responses + responses]
        return policy_loss(setup.loss, logp, logp_old, adv, mask, validate=False,
                           logp_rollout=None if distinct is None else rollout,
                           **setup.call_options(env.horizon)).loss

    distinct = prepared.logp_rollout  # log μ apart from logp_old (three policies), else None
    rollout = prepared.logp_old if distinct is None else distinct
    per_group = torch.func.vmap(torch.func.grad(one), in_dims=(None, 0, 0, 0, 0, 0, 0))
    return per_group(logits, batch.prompt, batch.responses, prepared.logp_old,
                     prepared.advantages, prepared.mask, rollout)


def sampled_gradient(env: ResponseSpace, logits: Tensor, behavior: Behavior,
                     loss: str | LossSetup, K: int, num_groups: int, generator: torch.Generator,
                     **options: Any) -> tuple[Tensor, Tensor]:
    """Monte Carlo twin of ``expected_gradient`` from S = ``num_groups`` groups per prompt.

    Returns (mean, standard error), both of ``logits``' shape: the per-group gradients come
    from ``group_gradients``; the error is √(Σ_p s_p²/S)/P with s_p² the sample variance
    (ddof 1) over prompt p's groups (the prompts' estimates are independent); 0 when S = 1.
    """
    logits = check_logits(env, logits).detach()
    batch = sample_groups(resolve_behavior(env, behavior, logits), K, num_groups, generator)
    grads = group_gradients(env, logits, batch, behavior, loss, generator=generator, **options)
    per_prompt = grads.reshape(env.num_prompts, num_groups, *logits.shape)
    mean = per_prompt.mean(dim=1).sum(dim=0) / env.num_prompts
    var = per_prompt.var(dim=1, correction=1) if num_groups > 1 else torch.zeros_like(
        per_prompt[:, 0])
    stderr = (var.sum(dim=0) / num_groups).sqrt() / env.num_prompts
    return mean, stderr


COVARIANCE_METHODS: tuple[str, ...] = ("auto", "sufficient", "enumerate", "ordered")


def _covariance_method(env: ResponseSpace, setup: LossSetup, k: int, method: str) -> str:
    """The covariance's engine: ``method`` itself, or under "auto" the statistics engine
    where it is exact (``SufficientStats`` accepts the loss: group-local advantage, no
    row-coupling loss or correction) and does less work than the enumeration
    (``covariance_cost`` against C(N + K − 1, K) groups of K·H positions and a D² product
    each), else "enumerate"; "ordered" for a loss that selects its tokens over the group
    (``LossSpec.couples_rows``, as ``expected_gradient``)."""
    require_choice("method", method, (*COVARIANCE_METHODS, "closed-form"))
    if method == "closed-form":
        raise ValueError("gradient_covariance has no closed form: use method='auto', "
                         "'sufficient', 'enumerate' or 'ordered'")
    if method == "enumerate" and setup.spec.couples_rows:
        raise ValueError(
            f"loss {setup.loss!r} selects its tokens over the group and breaks ties by row "
            "order (LossSpec.couples_rows): its gradient is not a symmetric function of the "
            "group's members, which the multiset enumeration assumes; use method='ordered' "
            "(method='auto' does)")
    if method != "auto":
        return method
    if setup.spec.couples_rows:
        return "ordered"
    refused = corrections_refusal(setup)
    if refused is not None:
        return "enumerate"
    rows, cost = covariance_cost(env, k)
    d = math.prod(env.logits_shape[1:])
    enumerated = (env.num_prompts * math.comb(env.num_responses + k - 1, k)
                  * (k * env.horizon + d * d))
    return "sufficient" if rows <= MAX_STATES and cost <= enumerated else "enumerate"


def gradient_covariance(env: ResponseSpace, logits: Tensor, behavior: Behavior,
                        loss: str | LossSetup, K: int, *, method: str = "auto",
                        **options: Any) -> Tensor:
    """The exact covariance of one group's gradient: [D, D] for one prompt, [P, D, D] for P.

    For prompt p, g = ∇_{θ_p} loss(group) is the gradient of the loss of one group of K i.i.d.
    draws from ``behavior`` (the group is its own batch), θ_p the prompt's logits flattened to
    D entries; Cov_p = E[g gᵀ] − m mᵀ with m = E[g]. A batch of S independent groups of that
    prompt has covariance Cov_p/S. ``options`` as in ``expected_gradient``.

    ``method``: "enumerate" sums w_g·g gᵀ over every multiset of the enumeration (weights
    summing to 1; "ordered": over the N^K ordered tuples); "sufficient" sums over reward
    counts instead (``SufficientStats.gradient_moments``: E[g gᵀ] = K·E[h_1 h_1ᵀ/N²] +
    K(K − 1)·E[h_1 h_2ᵀ/N²] with h_i member i's row-term gradient, over (own response, the
    others' counts) and (two members, the other K − 2's counts) classes) — exact for every
    loss that engine accepts and a ValueError naming the reason for the rest; "auto"
    (default) takes the statistics engine where it applies and is cheaper, else enumerates.
    "closed-form" is refused (there is none for the covariance).
    """
    setup = setup_of(loss, options)
    k = require_int("K", K, 1)
    logits = check_logits(env, logits).detach()
    mu = resolve_behavior(env, behavior, logits)
    method = _covariance_method(env, setup, k, method)
    if method == "sufficient":
        stats = SufficientStats(env, setup, k)
        mean, second = stats.gradient_moments(logits, mu, old_table(env, mu, setup),
                                              rollout_table(env, mu, setup))
        out = second - mean.unsqueeze(-1) * mean.unsqueeze(-2)
        return out[0] if env.num_prompts == 1 else out
    batch = enumerate_groups(mu, k, ordered=method == "ordered")
    grads = group_gradients(env, logits, batch, mu, setup)  # [G, P, ...]
    d = logits[0].numel()
    own = grads.reshape(len(batch.weight), env.num_prompts, d)[
        torch.arange(len(batch.weight)), batch.prompt]  # [G, D]: a group moves its own prompt
    weight = batch.weight.unsqueeze(-1)
    covs = []
    for prompt in range(env.num_prompts):
        rows = batch.prompt == prompt
        g, w = own[rows], weight[rows]
        mean = (w * g).sum(dim=0)
        covs.append((w * g).T @ g - torch.outer(mean, mean))
    out = torch.stack(covs)
    return out[0] if env.num_prompts == 1 else out


def iterate_expected_update(env: ResponseSpace, logits: Tensor, behavior: Behavior,
                            loss: str | LossSetup, K: int, *, lr: float, steps: int,
                            record_every: int = 1, method: str = "auto",
                            **options: Any) -> Tensor:
    """Exact gradient descent θ ← θ − lr·∇E[loss], ``steps`` times; returns the logits at
    steps 0, r, 2r, … (r = ``record_every``) and the last step: [R, *shape]."""
    lr = require_number("lr", lr)
    steps, record_every = require_int("steps", steps, 0), require_int("record_every",
                                                                       record_every, 1)
    theta = check_logits(env, logits).detach()
    value = _loss_fn(env, behavior, setup_of(loss, options), K, method)
    record = [theta]
    for step in range(1, steps + 1):
        theta = theta - lr * _gradient(value, env, theta)
        if step % record_every == 0 or step == steps:
            record.append(theta)
    return torch.stack(record)


def expected_pairwise_surrogate(env: ResponseSpace, logits: Tensor, anchor_logits: Tensor,
                                behavior: Behavior, K: int, tau: float) -> Tensor:
    """E_{groups of K ∼ μ}[L̂] through ``losses.pairwise_surrogate``, one group at a time.

    a_i = r_i − τ·(log π_θ(y_i) − log π_t(y_i)) with π_t given by ``anchor_logits``;
    (1/P)·Σ_p Σ_g w_g·L̂(group g), differentiable in ``logits``.
    """
    logits = check_logits(env, logits)
    anchor_logits = require_float_tensor("anchor_logits", anchor_logits)
    if tuple(anchor_logits.shape) != env.logits_shape:
        raise ValueError(f"anchor_logits must have shape {env.logits_shape}, got "
                         f"{tuple(anchor_logits.shape)}")
    require_finite("anchor_logits", anchor_logits)
    tau = require_positive("tau", tau)
    mu = resolve_behavior(env, behavior, logits)
    batch = enumerate_groups(mu, K)
    rows = (batch.prompt.unsqueeze(-1), batch.responses)
    seq_logp = env.sequence_logprobs(logits)[rows]
    seq_anchor = env.sequence_logprobs(anchor_logits.detach().to(torch.float64))[rows]

    def one(r: Tensor, s: Tensor, a: Tensor) -> Tensor:
        return pairwise_surrogate(r.unsqueeze(0), s.unsqueeze(0), a.unsqueeze(0), tau)

    per_group = torch.func.vmap(one)(env.rewards[rows], seq_logp, seq_anchor)
    return (batch.weight * per_group).sum() / env.num_prompts

