"""Exact expectations over groups by sufficient statistics instead of enumeration.

A group-relative loss sees a group of K i.i.d. responses y_1..y_K ∼ μ only through

* the advantage of each member: a function of its own reward and the *multiset* of the
  group's rewards, i.e. of the counts c_v of each distinct reward value v;
* the aggregation's normaliser N (every mode is Σ_i row_terms_i / N, see
  ``simulator.aggregation``): for ``token-mean`` the group's total valid length, otherwise a
  constant of K.

By exchangeability of the members,

    E[Σ_i t(y_i, A_i) / N] = K · Σ_y μ(y) · Σ_{c, S} P(c, S) · t(y, A(r(y), c)) / N(L(y) + S)

where (c, S) are the K − 1 *other* members' counts of each reward value and total length.
Their law is a multinomial over the classes (v, ℓ) (reward value, length): with
q_v(z) = Σ_{y: r(y)=v} μ(y)·z^{L(y)−L_min},

    P(c, S) = (K − 1)!/Π_v c_v! · [z^{S − (K−1)·L_min}] Π_v q_v(z)^{c_v},

computed exactly (no sampling, no FFT): powers q_v^n by repeated short convolutions, then one
truncated polynomial product per count vector c. With V distinct reward values the count
vectors are the C(K − 1 + V − 1, V − 1) compositions of K − 1 into V parts — 64 for binary
rewards and K = 64 — so the work is N·C rows instead of C(N + K − 1, K)·K.

Design decisions
----------------
* No loss or advantage formula is re-derived. A member's advantage comes from the loss's own
  ``shaped_advantages`` on a representative reward vector (own reward, then the rest's
  values by count), which handles every group-local kind — mean, mean-std (population or
  sample, eps), loo, logavgexp, shift — and DAPO's filter. A row term is the loss's own
  ``group_losses`` on a group of one row times ``normaliser`` of that row (N of a single row),
  so t = row_terms exactly; the group's N is ``normaliser`` of a representative [K, H] mask
  with the right row lengths. Any future loss or mode obeying "Σ_i row_terms_i / N" is handled.
* Assumptions, checked rather than trusted: the advantage kind is group-local and symmetric
  (``require_group_local`` probes it; a batch statistic is refused), and the keep mask is all
  or nothing per group (DAPO's filter; a partial filter such as RED-Drop would make N depend
  on which rows survive, and is refused).
* The clip fraction of a group is its token-mean of clipped tokens, the same Σ/N structure
  with N the group's valid-token count: it is computed alongside, with the token-mean
  normaliser, whatever the loss's own aggregation.
* Rows with μ(y) = 0 or with a count vector of probability 0 are left out (never multiplied by
  0: their logp_old is −inf). The behavior is never differentiated.
* Three policies (μ samples, the loss's ratio is against an anchor π_old): each row gets
  logp_old = log π_old(y) and logp_rollout = log μ(y), and the setup's corrections run on
  the row. That is exact only for a correction that is a function of the row alone (its
  μ, π_old, π_θ and advantage) and removes no token from a normaliser:
  ``corrections_refusal`` says why one is not — a batch normalisation (``normalize=True``),
  a dropped token (``denominator="drop"``: the group's N and clip fraction would depend on
  the other members' ratios), or a probe showing that rows change each other's weights or
  masks — and the engine refuses it (``method="auto"`` then enumerates).
* Rows are evaluated in pieces of bounded size (``simulator.groups.accumulate``).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor

from simulator.advantages import require_exact, shaped_advantages
from simulator.aggregation import normaliser
from simulator.corrections import CORRECTIONS, CorrectionInputs, apply_corrections
from simulator.groups import CHUNK_ELEMENTS, accumulate
from simulator.losses import group_losses
from simulator.validation import require_int

if TYPE_CHECKING:
    from simulator.loss_registry import LossSetup
    from simulator.responses import ResponseSpace

__all__ = ["MAX_STATES", "SufficientStats", "compositions", "corrections_refusal",
           "covariance_cost", "require_group_local", "reward_classes", "sufficient_cost"]

MAX_STATES = 2**24  # P·N·C candidate rows above which the engine refuses (memory)
MAX_GRADIENT_ELEMENTS = 2**27  # P·N·C·D row-gradient entries the covariance may hold (1 GiB)


class RewardClasses(NamedTuple):
    """Distinct reward values per prompt: ``index`` [P, N] (class of each response),
    ``values`` [P, V] (sorted; prompts with fewer than V values repeat their largest)."""

    index: Tensor
    values: Tensor


def reward_classes(rewards: Tensor) -> RewardClasses:
    """Group each prompt's responses by exact reward value (V = the most values of a prompt)."""
    ordered, order = rewards.sort(dim=1)
    new = torch.ones_like(ordered, dtype=torch.long)
    new[:, 1:] = (ordered[:, 1:] != ordered[:, :-1]).long()
    new[:, 0] = 0
    rank = new.cumsum(dim=1)  # class of the sorted entries
    index = torch.empty_like(rank).scatter_(1, order, rank)
    v = int(rank.max()) + 1
    values = ordered.new_zeros(rewards.shape[0], v)
    values.scatter_(1, rank, ordered)
    count = rank[:, -1:] + 1  # classes per prompt; pad the unused slots with the largest value
    slots = torch.arange(v).expand_as(values)
    values = torch.where(slots < count, values, ordered[:, -1:].expand_as(values))
    return RewardClasses(index, values)


@functools.lru_cache(maxsize=32)
def _compositions(total: int, parts: int) -> Tensor:
    count = math.comb(total + parts - 1, parts - 1)
    bars = torch.tensor(list(itertools.combinations(range(total + parts - 1), parts - 1)),
                        dtype=torch.long).reshape(count, parts - 1)
    edges = torch.cat([torch.full((len(bars), 1), -1), bars,
                       torch.full((len(bars), 1), total + parts - 1)], dim=1)
    return edges.diff(dim=1) - 1


def compositions(total: int, parts: int) -> Tensor:
    """Every c ∈ ℕ^parts with Σ c = total, [C, parts], C = C(total + parts − 1, parts − 1)
    (stars and bars). Cached; do not modify the result."""
    return _compositions(require_int("total", total, 0), require_int("parts", parts, 1))


def sufficient_cost(env: ResponseSpace, k: int) -> tuple[int, int]:
    """(candidate rows P·N·C, a work estimate) of the engine on ``env`` with groups of K."""
    v = int(reward_classes(env.rewards).values.shape[1])
    states = math.comb(k - 1 + v - 1, v - 1)
    lengths = env.lengths
    depth = (k - 1) * int(lengths.max() - lengths.min()) + 1
    rows = env.num_prompts * env.num_responses * states
    return rows, rows * env.horizon + env.num_prompts * v * states * depth**2


_PROBE = torch.tensor([[0.0, 1.0, 1.0, 0.3, 2.0], [5.0, 7.0, 7.5, 9.0, 11.0]],
                      dtype=torch.float64)


@functools.lru_cache(maxsize=256)
def _probe(shaper: Callable[..., tuple[Tensor, Tensor]], kind: str, options: tuple,
           drop: bool) -> bool:
    """Whether ``shaper`` (``shaped_advantages``) is symmetric and local on the probe groups;
    cached per function, kind and options (the answer depends on nothing else)."""

    def shape(rewards: Tensor) -> Tensor:
        adv, keep = shaper(rewards, kind, drop_uniform_groups=drop, **dict(options))
        return torch.cat([adv, keep.to(adv.dtype)], dim=1)

    together = shape(_PROBE)
    alone = torch.cat([shape(_PROBE[:1]), shape(_PROBE[1:])])
    perm = torch.tensor([4, 2, 0, 3, 1])
    permuted = shape(_PROBE[:, perm])[:, torch.cat([perm.argsort(), 5 + perm.argsort()])]
    return (torch.allclose(together, alone, rtol=1e-12, atol=1e-12)
            and torch.allclose(together, permuted, rtol=1e-12, atol=1e-12))


def require_group_local(setup: LossSetup) -> None:
    """Refuse an advantage kind whose value depends on other groups or on the group's order.

    Probe: two groups advantaged together must equal each advantaged alone, and permuting a
    group must permute its advantages. A batch statistic (a std over every prompt's groups)
    fails the first; exact expectations over one prompt's groups do not exist for it. The
    probe runs ``shaped_advantages`` itself rather than trusting ``ADVANTAGES``' declared
    ``group_local``, so a kind declared wrongly is caught too.
    """
    kind, kwargs = setup.advantage_kind()
    drop_uniform_groups = setup.spec.drop_uniform_groups
    require_exact(kind)
    try:
        local = _probe(shaped_advantages, kind, tuple(sorted(kwargs.items())),
                       drop_uniform_groups)
    except TypeError:  # an unhashable option: probe without the cache
        local = _probe.__wrapped__(shaped_advantages, kind, tuple(sorted(kwargs.items())),
                                   drop_uniform_groups)
    if not local:
        raise ValueError(f"advantage {kind!r} is not a symmetric function of one group's "
                         "rewards (it couples prompts or depends on order): exact "
                         "expectations over a prompt's groups do not apply; use sample_groups")


# four rows of three tokens, ratios π_old/μ and π_θ/μ from e^-3 to e^3, advantages of both
# signs: a correction that couples rows or removes tokens shows it on these
_CORRECTION_PROBE = torch.tensor([[-3.0, -0.7, 0.0], [0.4, 1.1, 3.0], [-1.5, 2.2, 0.05],
                                  [0.9, -2.4, -0.2]], dtype=torch.float64)


def _probe_corrections(corrections: tuple) -> str | None:
    """Why ``corrections`` are not a function of one row (None if the probe finds nothing)."""
    rollout = -torch.ones_like(_CORRECTION_PROBE)
    old = rollout + _CORRECTION_PROBE
    logp = rollout - _CORRECTION_PROBE.flip(0)
    adv = torch.tensor([1.0, -1.0, -0.5, 0.5], dtype=torch.float64).unsqueeze(-1).expand_as(old)
    mask = torch.ones_like(old, dtype=torch.bool)

    def run(rows: slice) -> tuple[Tensor, Tensor, Tensor | None]:
        applied = apply_corrections(corrections, CorrectionInputs(
            logp[rows], old[rows], rollout[rows], adv[rows], mask[rows]))
        return applied.weight, applied.loss_mask, applied.penalty

    try:
        together = run(slice(None))
        alone = [run(slice(i, i + 1)) for i in range(len(old))]
    except ValueError as error:  # an input the exact engines do not have (logp_ref, entropy)
        return str(error)
    if not bool(together[1].all()):
        return "it removes tokens from the batch (denominator='drop')"
    for i, (weight, keep, penalty) in enumerate(alone):
        same = (torch.equal(weight[0], together[0][i]) and torch.equal(keep[0], together[1][i])
                and (penalty is None) == (together[2] is None)
                and (penalty is None or torch.allclose(penalty[0], together[2][i])))
        if not same:
            return "a row's weight or mask depends on the other rows of its batch"
    return None


def corrections_refusal(setup: LossSetup) -> str | None:
    """Why the statistics engine cannot apply ``setup``'s loss and corrections exactly (None:
    it can).

    Each row of the engine is evaluated alone, so the loss must not select its tokens over
    the batch (``LossSpec.couples_rows``: M2PO, Clip-Cov, KL-Cov), and a correction must be a
    function of one response and keep every token in the normaliser: ``normalize=True`` (a
    batch mean) and ``denominator="drop"`` are refused by their keywords, any other coupling
    by a probe."""
    if setup.spec.couples_rows:
        return (f"loss {setup.loss!r} selects its tokens over the whole group "
                "(LossSpec.couples_rows)")
    corrections = setup.all_corrections()
    if not corrections:
        return None
    for correction in corrections:
        values = CORRECTIONS[correction.name].resolve(correction.hparams)
        if values.get("normalize"):
            return (f"correction {str(correction)!r} normalises its weights over the batch "
                    "(normalize=True), a statistic of the whole group")
        if values.get("denominator") == "drop":
            return (f"correction {str(correction)!r} drops tokens from the normaliser "
                    "(denominator='drop'), so the group's N depends on the other members' "
                    "ratios")
    reason = _probe_corrections(corrections)
    if reason is not None:
        names = ", ".join(map(str, corrections))
        return f"the corrections ({names}) are not a function of one response: {reason}"
    return None


def _group_masks(k: int, lmin: int, spread: int, horizon: int) -> Tensor:
    """Representative token masks [J, D, K, H]: row 0 of length L_min + j (the member), rows
    1..K−1 of lengths in [L_min, L_min + spread] summing to (K − 1)·L_min + s."""
    depth = (k - 1) * spread + 1
    own = lmin + torch.arange(spread + 1).view(-1, 1, 1).expand(-1, depth, 1)
    extra = torch.arange(depth).view(1, -1, 1) - spread * torch.arange(k - 1).view(1, 1, -1)
    rest = lmin + extra.clamp(0, spread).expand(spread + 1, -1, -1)
    lengths = torch.cat([own, rest], dim=-1)
    return torch.arange(horizon) < lengths.unsqueeze(-1)


def _poly_mul(a: Tensor, b: Tensor) -> Tensor:
    """Truncated product of polynomials in the last dim: out_s = Σ_{t ≤ s} a_t·b_{s−t}."""
    out = a[..., :1] * b
    for t in range(1, a.shape[-1]):
        out[..., t:] += a[..., t:t + 1] * b[..., :-t]
    return out


class _Rows(NamedTuple):
    prompt: Tensor  # [R]
    response: Tensor  # [R]
    advantage: Tensor  # [R]
    keep: Tensor  # [R] bool
    weight: Tensor  # [R]: K·μ(y)·E_rest[1/N] (loss normaliser)
    clip_weight: Tensor  # [R]: K·μ(y)·E_rest[1/N_tokens]


class SufficientStats:
    """The engine for one testbed, loss and K: (logits, μ) ↦ (E[loss], E[clip fraction] [P]).

    Everything that depends on neither the logits nor μ (reward classes, count vectors,
    advantages, normalisers) is built once; each call computes P(c, S) for its μ.
    """

    def __init__(self, env: ResponseSpace, setup: LossSetup, k: int) -> None:
        require_group_local(setup)
        refusal = corrections_refusal(setup)
        if refusal is not None:
            raise ValueError(f"the statistics engine evaluates each response alone: {refusal}; "
                             "use method='enumerate'")
        kind, kwargs = setup.advantage_kind()
        rows, _ = sufficient_cost(env, k)
        if rows > MAX_STATES:
            raise ValueError(f"the statistics engine would hold {rows} candidate rows "
                             f"(> MAX_STATES = {MAX_STATES}): too many distinct rewards for "
                             "this K; use method='enumerate' or sample_groups")
        self.env, self.setup, self.k = env, setup, k
        self.classes = reward_classes(env.rewards)
        v = self.classes.values.shape[1]
        self.comps = compositions(k - 1, v)  # [C, V]
        self.log_coef = math.lgamma(k) - torch.lgamma(self.comps.to(torch.float64) + 1).sum(1)
        self.advantage, self.keep = self._advantages(kind, kwargs,
                                                     setup.spec.drop_uniform_groups)
        lengths = env.lengths
        self.lmin, self.spread = int(lengths.min()), int(lengths.max() - lengths.min())
        masks = _group_masks(k, self.lmin, self.spread, env.horizon)
        self.inv_norm = 1.0 / normaliser(masks, setup.aggregation())  # [J, D]
        self.inv_tokens = 1.0 / normaliser(masks, "token-mean")

    def _advantages(self, kind: str, kwargs: dict, drop: bool) -> tuple[Tensor, Tensor]:
        """A and keep [P, V, C] of a member of class v whose K − 1 others have counts c."""
        values, (c, v), k = self.classes.values, self.comps.shape, self.k
        rest = torch.repeat_interleave(torch.arange(v).repeat(c), self.comps.flatten())
        rest = values[:, rest.reshape(c, k - 1)]  # [P, C, K−1]
        p = values.shape[0]
        block = max(1, 2**20 // (p * v * k))
        parts = []
        for start in range(0, c, block):
            own = values.view(p, v, 1, 1).expand(p, v, min(block, c - start), 1)
            others = rest[:, start:start + block].unsqueeze(1).expand(p, v, -1, k - 1)
            rewards = torch.cat([own, others], dim=-1).reshape(-1, k)
            adv, keep = shaped_advantages(rewards, kind, drop_uniform_groups=drop, **kwargs)
            if bool((keep.any(1) & ~keep.all(1)).any()):
                raise ValueError("the advantage shaping keeps part of a group: the statistics "
                                 "engine needs all-or-nothing filters; use method='enumerate'")
            parts.append((adv[:, 0].reshape(p, v, -1), keep[:, 0].reshape(p, v, -1)))
        return torch.cat([a for a, _ in parts], -1), torch.cat([b for _, b in parts], -1)

    def rest_law(self, mu: Tensor, others: int | None = None) -> Tensor:
        """P(c, S) [P, C, D] of the K − 1 others: count vector c, length S − (K−1)·L_min
        (``others``: of that many others instead, c over ``compositions(others, V)``; the
        covariance needs the K − 2 others of a pair of members).

        Factored so that nothing overflows at large K: the multinomial probability of the
        counts, exp(log (K−1)!/Π c_v! + Σ_v c_v·log p_v) ≤ 1, times the law of S given c,
        ⊛_v λ_v^{⊛c_v} with λ_v = q_v/p_v the length law of one class-v draw (each a
        distribution, so neither the coefficient nor p_v^{c_v} is ever formed alone).
        """
        env, (p, v) = self.env, self.classes.values.shape
        others = self.k - 1 if others is None else others
        comps, log_coef = self.comps, self.log_coef
        if others != self.k - 1:
            comps = compositions(others, v)
            log_coef = math.lgamma(others + 1) - torch.lgamma(comps.to(torch.float64) + 1).sum(1)
        depth = others * self.spread + 1
        q = mu.new_zeros(p, v, self.spread + 1)
        q.index_put_((torch.arange(p).unsqueeze(1).expand_as(self.classes.index),
                      self.classes.index, (env.lengths - self.lmin).expand_as(self.classes.index)),
                     mu, accumulate=True)
        mass = q.sum(-1)  # p_v [P, V]
        step = q / mass.clamp(min=torch.finfo(mu.dtype).tiny).unsqueeze(-1)  # λ_v (0 if p_v = 0)
        power = mu.new_zeros(p, v, depth)
        power[..., 0] = 1.0
        powers = [power]
        for _ in range(others):  # λ_v^{⊛n} = λ_v^{⊛(n−1)} ⊛ λ_v, spread + 1 taps
            power = _poly_mul(step, power) if self.spread else step * power
            powers.append(power)
        stacked = torch.stack(powers, dim=2)  # [P, V, K, D]
        lengths = None
        for j in range(v):
            factor = stacked[:, j, comps[:, j]]  # [P, C, D]
            lengths = factor if lengths is None else (_poly_mul(lengths, factor) if self.spread
                                                      else lengths * factor)
        counts = comps.to(mu.dtype)
        log_prob = log_coef + torch.xlogy(counts, mass.unsqueeze(1)).sum(-1)  # [P, C]
        return torch.exp(log_prob).unsqueeze(-1) * lengths

    def rows(self, mu: Tensor) -> _Rows:
        """The (prompt, response, count vector) rows of positive probability, with weights."""
        env, k = self.env, self.k
        law = self.rest_law(mu)
        weight = torch.einsum("pcs,js->pjc", law, self.inv_norm)  # E_S[1/N | c] per length
        tokens = torch.einsum("pcs,js->pjc", law, self.inv_tokens)
        own_len = env.lengths - self.lmin
        live = (mu > 0).unsqueeze(-1) & (law.sum(-1) > 0).unsqueeze(1)  # [P, N, C]
        prompt, response, state = live.nonzero(as_tuple=True)
        cls = self.classes.index[prompt, response]
        scale = k * mu[prompt, response]
        return _Rows(prompt, response, self.advantage[prompt, cls, state],
                     self.keep[prompt, cls, state],
                     scale * weight[prompt, own_len[response], state],
                     scale * tokens[prompt, own_len[response], state])

    def terms(self, logits: Tensor, mu: Tensor, logp_old: Tensor,
              logp_rollout: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(E[loss] averaged over prompts, E[clip fraction] [P]); ``logp_old`` [P, N, H] (π_old);
        ``logp_rollout`` [P, N, H] (log μ, when apart from π_old: three policies)."""
        rows = self.rows(mu)
        old = logp_old[rows.prompt, rows.response]
        rollout = None if logp_rollout is None else logp_rollout[rows.prompt, rows.response]
        mask = self.env.mask[rows.response] & rows.keep.unsqueeze(-1)
        if not bool(torch.isfinite(old).logical_or(~mask).all()):
            raise ValueError("logp_old = −inf: the behavior (or anchor) gives probability 0 "
                             "to a response the behavior samples")
        size = max(1, CHUNK_ELEMENTS // self.env.horizon)
        spans = [(s, min(s + size, len(rows.prompt))) for s in range(0, len(rows.prompt), size)]
        pieces = (functools.partial(self._piece, rows=rows, old=old, rollout=rollout, mask=mask,
                                    span=span)
                  for span in spans or [(0, 0)])
        return accumulate(logits, pieces, single=len(spans) <= 1)

    def _piece(self, logits: Tensor, *, rows: _Rows, old: Tensor, rollout: Tensor | None,
               mask: Tensor, span: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Σ_rows weight·t(row) / P and Σ_rows clip_weight·clipped tokens(row) per prompt."""
        env, setup, part = self.env, self.setup, slice(*span)
        logp = env.token_logprobs(logits)[rows.prompt[part], rows.response[part]]
        one_row = mask[part].unsqueeze(1)  # each row is a group of one
        out = group_losses(setup.loss, logp.unsqueeze(1), old[part].unsqueeze(1),
                           rows.advantage[part].unsqueeze(1), one_row,
                           logp_rollout=None if rollout is None else rollout[part].unsqueeze(1),
                           **setup.call_options(env.horizon))
        row_terms = out.loss * normaliser(one_row, setup.aggregation())
        clipped = out.clipfrac * normaliser(one_row, "token-mean")
        value = (rows.weight[part] * row_terms).sum() / env.num_prompts
        clip = torch.zeros(env.num_prompts, dtype=torch.float64).index_add_(
            0, rows.prompt[part], rows.clip_weight[part] * clipped.to(torch.float64))
        return value, clip

    # ----------------------------------------------------------------------------------------
    # The covariance of one group's gradient (``exact.gradient_covariance(method=
    # "sufficient")``). A group's gradient is g = Σ_i h_i / N with h_i = ∇_θ t(y_i, A_i) the
    # gradient of member i's row term; by exchangeability of the K i.i.d. members
    #
    #   E[g gᵀ] = K·E[h_1 h_1ᵀ / N²] + K(K − 1)·E[h_1 h_2ᵀ / N²],
    #
    # the first over (own response y, the K − 1 others' counts c and length S) — as E[g] is —,
    # the second over (y_1, y_2, the K − 2 others' counts c' and length S'): member 1's
    # advantage sees the rest c' + e_{v(y_2)}, member 2's c' + e_{v(y_1)}, and N is that of the
    # lengths L(y_1), L(y_2), S'. The pair sum factors through the class totals
    # G[v, ℓ, c] = Σ_{y: v(y) = v, L(y) = ℓ} μ(y)·h(y, c), so it costs (V·J)²·C(K − 2) outer
    # products, not N²·C(K − 2).
    # ----------------------------------------------------------------------------------------

    def _row_gradients(self, logits: Tensor, mu: Tensor, logp_old: Tensor,
                       logp_rollout: Tensor | None) -> tuple[Tensor, Tensor]:
        """h(y, c) = ∇_{θ_p} t(y, A(v(y), c)) [P, N, C, D] for every response and count vector
        of the K − 1 others (0 where μ(y) = 0 or the count vector has probability 0), and
        the rest law [P, C, S] of ``rest_law``."""
        env, setup = self.env, self.setup
        p, n = env.num_prompts, env.num_responses
        c, d = self.comps.shape[0], logits[0].numel()
        if p * n * c * d > MAX_GRADIENT_ELEMENTS:
            raise ValueError(f"the covariance by statistics would hold {p * n * c * d} row-"
                             f"gradient entries (P·N·C·D > {MAX_GRADIENT_ELEMENTS}, 8 bytes "
                             "each): too large; use fewer responses or K, or sample_groups")
        law = self.rest_law(mu)
        live = (mu > 0).unsqueeze(-1) & (law.sum(-1) > 0).unsqueeze(1)  # [P, N, C]
        prompt, response, state = live.nonzero(as_tuple=True)
        cls = self.classes.index[prompt, response]
        advantage, keep = self.advantage[prompt, cls, state], self.keep[prompt, cls, state]
        old = logp_old[prompt, response]
        mask = env.mask[response] & keep.unsqueeze(-1)
        if not bool(torch.isfinite(old).logical_or(~mask).all()):
            raise ValueError("logp_old = −inf: the behavior (or anchor) gives probability 0 "
                             "to a response the behavior samples")
        rollout = None if logp_rollout is None else logp_rollout[prompt, response]
        # dt/dlogp per row (rows are groups of one, so the gradient of their sum is each
        # row's own), then the chain rule through the Jacobian of the token log-probs
        # J[p, y, l, :] = ∂ log π(y^l | ·)/∂θ_p
        logp_all = env.token_logprobs(logits).detach()
        size = max(1, CHUNK_ELEMENTS // env.horizon)
        slopes = []
        for start in range(0, len(prompt), size):
            part = slice(start, start + size)
            logp = logp_all[prompt[part], response[part]].clone().requires_grad_(True)
            one_row = mask[part].unsqueeze(1)
            part_rollout = None if rollout is None else rollout[part].unsqueeze(1)
            out = group_losses(setup.loss, logp.unsqueeze(1), old[part].unsqueeze(1),
                               advantage[part].unsqueeze(1), one_row,
                               logp_rollout=part_rollout, **setup.call_options(env.horizon))
            terms = out.loss * normaliser(one_row, setup.aggregation())
            (slope,) = torch.autograd.grad(terms.sum(), logp)
            slopes.append(slope)
        slope = torch.cat(slopes) if slopes else logp_all.new_zeros(0, env.horizon)
        grads = logits.new_zeros(p, n, c, d)
        grads[prompt, response, state] = _chain_rule(env, logits.detach(), prompt, response,
                                                     slope)
        return grads, law

    def gradient_moments(self, logits: Tensor, mu: Tensor, logp_old: Tensor,
                         logp_rollout: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(E[g] [P, D], E[g gᵀ] [P, D, D]) of one group's gradient g = ∇_{θ_p} loss(group),
        θ_p prompt p's logits flattened (see the comment above)."""
        env, k = self.env, self.k
        grads, law = self._row_gradients(logits, mu, logp_old, logp_rollout)
        own = env.lengths - self.lmin  # [N]
        masks = _group_masks(k, self.lmin, self.spread, env.horizon)
        inv = 1.0 / normaliser(masks, self.setup.aggregation())  # [J, S]
        first_w = torch.einsum("pcs,js->pjc", law, inv)[:, own]  # [P, N, C]: E_S[1/N | c, y]
        second_w = torch.einsum("pcs,js->pjc", law, inv**2)[:, own]
        mean = k * torch.einsum("pn,pnc,pncd->pd", mu, first_w, grads)
        weighted = (k * mu.unsqueeze(-1) * second_w).unsqueeze(-1) * grads
        second = torch.einsum("pncd,pnce->pde", weighted, grads)
        if k >= 2:
            second = second + self._pair_term(grads, mu, own)
        return mean, second

    def _pair_term(self, grads: Tensor, mu: Tensor, own: Tensor) -> Tensor:
        """K(K − 1)·E[h_1 h_2ᵀ / N²] [P, D, D] through the class totals G[v, ℓ, c]."""
        env, k = self.env, self.k
        p, v = self.classes.values.shape
        c, d = self.comps.shape[0], grads.shape[-1]
        j = self.spread + 1
        totals = grads.new_zeros(p, v, j, c, d)  # G[p, v, ℓ, c] = Σ_{y ∈ (v, ℓ)} μ(y)·h(y, c)
        cls = self.classes.index  # [P, N]
        rows = torch.arange(p).unsqueeze(1).expand_as(cls)
        totals.index_put_((rows, cls, own.expand_as(cls)), mu.unsqueeze(-1).unsqueeze(-1) * grads,
                          accumulate=True)
        pair = compositions(k - 2, v)  # [C', V]
        index = {tuple(row): i for i, row in enumerate(self.comps.tolist())}
        plus = torch.tensor([[index[(*row[:u], row[u] + 1, *row[u + 1:])]
                              for u in range(v)] for row in pair.tolist()],
                            dtype=torch.long).reshape(len(pair), v)  # c' + e_u in comps(K−1)
        law = self.rest_law(mu, k - 2)  # [P, C', S']
        masks = _pair_masks(k, self.lmin, self.spread, env.horizon)  # [J, J, S', K, H]
        inv2 = normaliser(masks, self.setup.aggregation()) ** -2.0
        weight = k * (k - 1) * torch.einsum("pcs,abs->pcab", law, inv2)  # [P, C', J, J]
        # member 1 of class v1 and length a sees c' + e_{v2}; member 2 (v2, b) sees c' + e_{v1}
        first = totals[:, :, :, plus]  # [P, V1, J, C', V2, D]: G[v1, a, c' + e_{v2}]
        left = first.permute(0, 3, 1, 4, 2, 5)  # [P, C', V1, V2, A, D]
        right = first.permute(0, 3, 4, 1, 2, 5)  # [P, C', V1, V2, B, D]: G[v2, b, c' + e_{v1}]
        scaled = torch.einsum("pcab,pcuwad->pcuwbd", weight, left)
        return torch.einsum("pcuwbd,pcuwbe->pde", scaled, right)


def _chain_rule(env: ResponseSpace, logits: Tensor, prompt: Tensor, response: Tensor,
                slope: Tensor) -> Tensor:
    """∇_{θ_p} Σ_l slope[r, l]·log π(y_r^l | ·) [R, D] for rows r = (prompt, response).

    A tabular softmax (``ResponseSpace.token_logprobs`` itself) has ∂ log π(y^l)/∂θ[node, a] =
    1{node = node(y, l)}·(1{a = y^l} − π(a | node)) on valid tokens, applied here directly;
    an environment with its own ``token_logprobs`` goes through ``torch.func.jacrev`` of it
    (the same numbers, plus torch.func's one-time set-up of a few seconds per process)."""
    from simulator.responses import ResponseSpace

    p, d = logits.shape[0], logits[0].numel()
    if type(env).token_logprobs is not ResponseSpace.token_logprobs:
        jac = torch.func.jacrev(env.token_logprobs)(logits)  # [P, N, H, P, ...]
        jac = jac.reshape(p, env.num_responses, env.horizon, p, d)[torch.arange(p), :, :,
                                                                    torch.arange(p)]
        return torch.einsum("rl,rld->rd", slope, jac[prompt, response])
    b = env.vocab
    probs = torch.softmax(logits.reshape(p, env.num_nodes, b), dim=-1)
    slope = torch.where(env.mask[response], slope, slope.new_zeros(()))  # [R, H]
    node = env.node_index[response]  # [R, H]
    rows = torch.arange(len(prompt)).unsqueeze(-1).expand_as(node)
    out = slope.new_zeros(len(prompt), env.num_nodes, b)
    out.index_put_((rows, node), -slope.unsqueeze(-1) * probs[prompt.unsqueeze(-1), node],
                   accumulate=True)
    out.index_put_((rows, node, env.tokens[response]), slope, accumulate=True)
    return out.reshape(len(prompt), d)


def _pair_masks(k: int, lmin: int, spread: int, horizon: int) -> Tensor:
    """Representative token masks [J, J, D', K, H] of a group whose member 0 has length
    L_min + a, member 1 L_min + b and members 2..K−1 lengths summing to (K − 2)·L_min + s."""
    rest = _group_masks(k - 1, lmin, spread, horizon)  # [J(b), D', K − 1, H]
    first = torch.arange(horizon) < (lmin + torch.arange(spread + 1)).unsqueeze(-1)  # [J, H]
    j, depth = spread + 1, rest.shape[1]
    first = first.view(j, 1, 1, 1, horizon).expand(j, j, depth, 1, horizon)
    return torch.cat([first, rest.unsqueeze(0).expand(j, -1, -1, -1, -1)], dim=-2)


def covariance_cost(env: ResponseSpace, k: int) -> tuple[int, int]:
    """(candidate rows P·N·C, a work estimate) of the statistics engine's covariance of one
    group's gradient: the rows' gradients (each H tokens, then D entries) and their outer
    products, and the (V·J)²·C(K − 2) pair products."""
    rows, _ = sufficient_cost(env, k)
    v = int(reward_classes(env.rewards).values.shape[1])
    d = math.prod(env.logits_shape[1:])
    j = int(env.lengths.max() - env.lengths.min()) + 1
    pairs = env.num_prompts * (v * j) ** 2 * (math.comb(k - 2 + v - 1, v - 1) if k >= 2 else 0)
    return rows, rows * (env.horizon * d + d * d) + pairs * d * d
