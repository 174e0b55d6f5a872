"""The call layer of the loss zoo: a registered loss on a batch, aggregated, with metrics.

Design decisions
----------------
* ``policy_loss`` is the one public entry for a batch of sequences: checks (``_prepare_inputs``),
  the registered per-token function, ``simulator.aggregation``, then metrics (grlab's and
  verl's, docs/conventions.md). ``group_losses`` is its batched twin over [G, K, T] groups, the
  exact engines' fast path (value checks and most metrics skipped). ``pairwise_surrogate`` is
  the paper's surrogate, a theory object rather than a registered loss.
* The loss is named by a string or given as a ``LossSetup`` (``simulator.loss_registry``): the
  call's own options (``agg``, ``norm_len``, ``rows``, ``denominator``, ``token_weights``,
  ``validate``) are explicit, and a loss keyword can never share their names (``RESERVED``).
* Imports point one way: the zoo (``simulator.losses``) imports this module and re-exports its
  names, never the reverse. ``LOSSES`` is filled when the zoo is imported, so callers import
  these names from ``simulator.losses``, the public face (every module of grlab does); this
  module alone, imported by nothing but the zoo, needs none of the zoo at import.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from simulator import numerics
from simulator.aggregation import aggregate, check_options, masked_mean
from simulator.corrections import Correction, CorrectionInputs, apply_corrections, as_corrections
from simulator.loss_registry import LOSSES, LossOutput, LossSetup, LossSpec, TokenLoss
from simulator.numerics import PEER_LOG_RATIO_CLAMP, finite, mul
from simulator.validation import (
    as_bool_mask,
    require_finite,
    require_float_tensor,
    require_ndim,
    require_positive,
    require_same_device,
    require_same_dtype,
    require_tensor,
)

__all__ = ["GroupLosses", "group_losses", "pairwise_surrogate", "policy_loss"]




def _prepare_inputs(logp: Tensor, logp_old: Tensor, advantages: Tensor, mask: Tensor,
                    validate: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Check shapes, dtypes and devices; broadcast A to [B, T]; zero the masked positions;
    detach the constants; float64 for the math (``simulator.numerics``)."""
    logp = require_float_tensor("logp", logp)
    logp_old = require_float_tensor("logp_old", logp_old)
    advantages = require_float_tensor("advantages", advantages)
    require_ndim("logp", logp, (2,), "a [B, T] tensor of per-token log-probs")
    if logp_old.shape != logp.shape:
        raise ValueError(f"logp_old must have the shape of logp {tuple(logp.shape)}, "
                         f"got {tuple(logp_old.shape)}")
    if advantages.shape not in (logp.shape[:1], logp.shape):
        raise ValueError(f"advantages must have shape [B] = {tuple(logp.shape[:1])} or "
                         f"[B, T] = {tuple(logp.shape)}, got {tuple(advantages.shape)}")
    require_same_device(logp=logp, logp_old=logp_old, advantages=advantages,
                        mask=require_tensor("mask", mask))
    require_same_dtype(logp=logp, logp_old=logp_old, advantages=advantages)
    mask = as_bool_mask("mask", mask, tuple(logp.shape))
    if advantages.ndim == 1:
        advantages = advantages.unsqueeze(-1).expand_as(logp)
    if validate:
        if not bool(mask.any()):
            raise ValueError("mask has no valid token: there is nothing to compute a loss on")
        require_finite("logp", logp, mask)
        require_finite("logp_old", logp_old, mask)
        require_finite("advantages", advantages, mask)
    zero = logp.new_zeros(())
    logp = numerics.upcast(torch.where(mask, logp, zero))
    logp_old = torch.where(mask, logp_old.detach(), zero).to(torch.float64)
    advantages = torch.where(mask, advantages.detach(), zero).to(torch.float64)
    return logp, logp_old, advantages, mask


def _metrics(out: TokenLoss, logp: Tensor, logp_old: Tensor, mask: Tensor,
             dtype: torch.dtype) -> dict[str, Tensor]:
    """grlab's metrics and verl's (docs/conventions.md), as detached scalars of ``dtype``."""
    with torch.no_grad():
        log_ratio = numerics.log_ratio(logp.detach(), logp_old)
        dual = out.extras.get("dual_clipped", torch.zeros_like(out.clipped))
        values = {
            "clipfrac": out.clipped,
            "pg_clipfrac": out.clipped & ~dual,
            "pg_clipfrac_lower": dual,
            "approx_kl": -log_ratio,
            "ppo_kl": -log_ratio.clamp(-PEER_LOG_RATIO_CLAMP, PEER_LOG_RATIO_CLAMP),
            "ratio_mean": numerics.exp(log_ratio),
        }
        values.update((k, v) for k, v in out.extras.items() if k != "dual_clipped")
        return {key: numerics.downcast(masked_mean(value.to(torch.float64), mask), dtype)
                for key, value in values.items()}


class _Call(NamedTuple):
    spec: LossSpec
    agg: str
    norm_len: float | None
    rows: str
    corrections: tuple[Correction, ...]
    hparams: dict[str, Any]


def _resolve(loss: str | LossSetup, agg: str | None, norm_len: float | None, rows: str | None,
             corrections: Any, hparams: dict[str, Any]) -> _Call:
    """What a name or a ``LossSetup`` means for one call: an explicit option wins over the
    setup's; corrections add up (the preset's, the setup's, the call's)."""
    extra = as_corrections(corrections)
    if isinstance(loss, LossSetup):
        agg = loss.agg if agg is None else agg
        norm_len = loss.norm_len if norm_len is None else norm_len
        rows = loss.rows if rows is None else rows
        hparams = {**loss.hparams, **hparams}
        extra = (*loss.corrections, *extra)
        loss = loss.loss
    spec = LOSSES[loss]
    return _Call(spec, spec.agg if agg is None else agg, norm_len, rows or "all",
                 (*spec.corrections, *extra), hparams)


def _optional_input(name: str, value: Tensor | None, mask: Tensor, validate: bool
                    ) -> Tensor | None:
    """An extra [B, T] input (``logp_rollout``, ``logp_ref``, ``entropy``): checked like
    ``logp_old``, masked positions 0, float64. ``entropy`` keeps its gradient (an entropy
    bonus trains through it); the log-probs are constants."""
    if value is None:
        return None
    value = require_float_tensor(name, value)
    if tuple(value.shape) != tuple(mask.shape):
        raise ValueError(f"{name} must have the shape of logp {tuple(mask.shape)}, "
                         f"got {tuple(value.shape)}")
    require_same_device(**{name: value, "mask": mask})
    if validate:
        require_finite(name, value, mask)
    value = value if name == "entropy" else value.detach()
    return torch.where(mask, value.to(torch.float64), value.new_zeros((), dtype=torch.float64))


class _Corrected(NamedTuple):
    loss_mask: Tensor
    weight: Tensor | None
    penalty: Tensor | None
    tensors: dict[str, Tensor | None]
    metrics: dict[str, Tensor]


def _corrected(call: _Call, logp: Tensor, logp_old: Tensor, advantages: Tensor, mask: Tensor,
               extra: dict[str, Tensor | None], validate: bool) -> _Corrected:
    """The corrections' combined stage and the extra tensors the loss reads; nothing runs (and
    nothing changes) when there is no correction and no extra tensor."""
    tensors = {name: _optional_input(name, value, mask, validate) for name, value in extra.items()}
    if not call.corrections:
        return _Corrected(mask, None, None, tensors, {})
    rollout = tensors["logp_rollout"]
    inputs = CorrectionInputs(logp, logp_old, logp_old if rollout is None else rollout,
                              advantages, mask, tensors["logp_ref"], tensors["entropy"])
    applied = apply_corrections(call.corrections, inputs)
    if validate and not bool(applied.loss_mask.any()):
        raise ValueError("the corrections removed every token from the batch (the corrections: "
                         f"{', '.join(map(str, call.corrections))})")
    return _Corrected(applied.loss_mask, applied.weight, applied.penalty, tensors,
                      applied.metrics)


def policy_loss(
    name: str | LossSetup,
    logp: Tensor,
    logp_old: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    agg: str | None = None,
    norm_len: float | None = None,
    rows: str | None = None,
    denominator: float | Tensor | None = None,
    token_weights: Tensor | None = None,
    logp_rollout: Tensor | None = None,
    corrections: Any = None,
    logp_ref: Tensor | None = None,
    entropy: Tensor | None = None,
    validate: bool = True,
    **hparams: Any,
) -> LossOutput:
    """The loss ``name`` on a batch of sequences, aggregated to a scalar, with metrics.

    Args:
        name: a key of ``LOSSES`` (a base loss or a preset; unknown names raise ``KeyError``),
            or a ``LossSetup`` (its ``agg``, ``norm_len`` and keywords; explicit ones win).
        logp: [B, T] log π_θ of the sampled tokens, with gradient.
        logp_old: [B, T] log-probs under the old policy π_old (the proximal policy the loss's
            ratio and clip are taken against: the trainer's recomputed log-probs); constants.
            With one policy (no ``logp_rollout``) it is also the sampling policy μ.
        advantages: [B] (one per sequence) or [B, T]; already computed (see
            ``LOSSES[name].advantages(rewards)`` for the kind this loss expects); constants.
        mask: [B, T] bool or 0/1; False marks padding. Masked values never matter.
        agg: an aggregation mode of ``simulator.aggregation``; ``None`` means the loss's own
            default; an explicit value wins.
        norm_len: the constant length of ``seq-mean-token-sum-norm`` (required there: the
            maximum completion length, as Dr.GRPO and TRL; never the padded width).
        rows: "all" (divide per-sequence modes by B, as TRL and Trinity-RFT) or "valid" (by
            the rows with a valid token, verl's single-process ``agg_loss``); ``None``: the
            setup's, else "all".
        denominator: divide by this count instead of the batch's own (the global number of
            valid tokens or rows when this batch is a micro-batch or one process's share).
        token_weights: [B, T] non-negative constants multiplying each token's loss before
            aggregation (verl's ``rollout_is_weights``, TRL's vLLM importance-sampling
            correction); the normaliser is unchanged, as in those engines.
        validate: check values (NaN/inf, empty mask). Set False inside ``torch.func`` transforms;
            shapes, dtypes and devices are always checked.
        **hparams: the loss's keywords (see ``LOSSES[name].defaults()``); a typo is a TypeError.

    Returns:
        ``LossOutput(loss, metrics)``: the loss in float32 (float64 for float64 inputs); metrics
        ``clipfrac`` (share of valid tokens whose policy-gradient term a clip removed, dual clip
        included), ``pg_clipfrac`` and ``pg_clipfrac_lower`` (verl's: the PPO clip and the dual
        clip apart), ``approx_kl`` (mean of log π_old − log π), ``ppo_kl`` (verl's: the same with
        δ clamped to ±20), ``ratio_mean``, plus loss-specific ones, all detached scalars.
    """
    call = _resolve(name, agg, norm_len, rows, corrections, hparams)
    check_options(call.agg, call.norm_len, call.rows)  # before any work: norm_len fails here
    dtype = numerics.output_dtype(require_float_tensor("logp", logp).dtype)
    logp, logp_old, advantages, mask = _prepare_inputs(logp, logp_old, advantages, mask, validate)
    fixed = _corrected(call, logp, logp_old, advantages, mask,
                       {"logp_rollout": logp_rollout, "logp_ref": logp_ref, "entropy": entropy},
                       validate)
    per_token, out = _token_loss(call, logp, logp_old, advantages, fixed)
    if token_weights is not None:
        per_token = mul(per_token, _check_token_weights(token_weights, mask, validate))
    loss = aggregate(per_token, fixed.loss_mask, call.agg, norm_len=call.norm_len,
                     rows=call.rows, denominator=denominator)
    metrics = _metrics(out, logp, logp_old, fixed.loss_mask, dtype)
    metrics.update((key, numerics.downcast(value, dtype)) for key, value in fixed.metrics.items())
    return LossOutput(numerics.downcast(loss, dtype), metrics)


def _token_loss(call: _Call, logp: Tensor, logp_old: Tensor, advantages: Tensor,
                fixed: _Corrected, groups: int | None = None) -> tuple[Tensor, TokenLoss]:
    """The loss per token with the corrections applied: ℓ·w + penalty. ``groups``: the rows
    are that many batches of equal size (``group_losses``); a loss that selects its tokens
    over its batch (``LossSpec.couples_rows``) then runs on each group apart."""
    if groups and call.spec.couples_rows:
        out = _per_group(call, logp, logp_old, advantages, fixed, groups)
    else:
        out = call.spec(logp, logp_old, advantages, fixed.loss_mask, fixed.tensors,
                        **call.hparams)
    per_token = finite(out.loss)
    if fixed.weight is not None:
        per_token = mul(per_token, fixed.weight)
    if fixed.penalty is not None:
        per_token = finite(per_token + fixed.penalty)
    return per_token, out


def _per_group(call: _Call, logp: Tensor, logp_old: Tensor, advantages: Tensor,
               fixed: _Corrected, groups: int) -> TokenLoss:
    """The token loss of [G·K, T] rows with each group its own batch, group by group (a
    batch-wide token selection has data-dependent sizes, which vmap cannot trace)."""
    def split(t: Tensor | None) -> list[Any]:
        return [None] * groups if t is None else list(t.reshape(groups, -1, *t.shape[1:]))

    parts = zip(*(split(t) for t in (logp, logp_old, advantages, fixed.loss_mask)),
                *(split(t) for t in fixed.tensors.values()), strict=True)
    outs = [call.spec(lp, old, adv, valid, dict(zip(fixed.tensors, extra, strict=True)),
                      **call.hparams) for lp, old, adv, valid, *extra in parts]
    return TokenLoss(torch.cat([o.loss for o in outs]), torch.cat([o.clipped for o in outs]),
                     {key: torch.cat([o.extras[key] for o in outs]) for key in outs[0].extras})


def _check_token_weights(weights: Tensor, mask: Tensor, validate: bool) -> Tensor:
    """[B, T] float64 constants (detached, masked positions 0); negative or non-finite valid
    entries are a ValueError when ``validate``."""
    weights = require_float_tensor("token_weights", weights)
    if tuple(weights.shape) != tuple(mask.shape):
        raise ValueError(f"token_weights must have the shape of logp {tuple(mask.shape)}, "
                         f"got {tuple(weights.shape)}")
    require_same_device(token_weights=weights, mask=mask)
    weights = torch.where(mask, weights.detach(), weights.new_zeros(())).to(torch.float64)
    if validate:
        require_finite("token_weights", weights, mask)
        if bool((weights < 0).any()):
            raise ValueError("token_weights must be >= 0")
    return weights


class GroupLosses(NamedTuple):
    """Per-group values: ``loss`` [G] (with gradient) and ``clipfrac`` [G] (detached: the
    share of the group's valid tokens whose gradient the loss's clipping switched off)."""

    loss: Tensor
    clipfrac: Tensor


def group_losses(name: str | LossSetup, logp: Tensor, logp_old: Tensor, advantages: Tensor,
                 mask: Tensor, *, agg: str | None = None, norm_len: float | None = None,
                 rows: str | None = None, logp_rollout: Tensor | None = None,
                 corrections: Any = None, **hparams: Any) -> GroupLosses:
    """``policy_loss(name, ...)`` of every group at once: [G, K, T] inputs give [G] values.

    Group g's loss is exactly what ``policy_loss`` returns on the [K, T] batch of group g
    (every loss is computed row by row, and ``aggregate`` reduces each group on its own), and
    its clip fraction is that call's ``clipfrac`` metric; the other metrics and the value
    checks are skipped, which is what makes the exact simulator's enumeration of thousands of
    groups per step cheap. ``advantages`` is [G, K] or [G, K, T]; ``logp_rollout`` (μ) is
    [G, K, T] like ``logp_old``, and ``corrections`` are ``policy_loss``'s, applied to each
    group on its own: a correction that normalises over its batch (``normalize=True``)
    normalises over the group's K rows, as ``policy_loss`` on that group does, never over
    all G·K rows. Values are float64.
    """
    call = _resolve(name, agg, norm_len, rows, corrections, hparams)
    require_ndim("logp", require_float_tensor("logp", logp), (3,), "a [G, K, T] tensor")
    check_options(call.agg, call.norm_len, call.rows)
    shape = logp.shape
    flat = [t.reshape(-1, *t.shape[2:]) for t in (logp, logp_old, advantages, mask)]
    logp, logp_old, advantages, mask = _prepare_inputs(*flat, validate=False)
    rollout = None if logp_rollout is None else logp_rollout.reshape(-1, *shape[2:])
    fixed = _corrected_per_group(call, logp, logp_old, advantages, mask, rollout, shape[0])
    per_token, out = _token_loss(call, logp, logp_old, advantages, fixed, groups=shape[0])
    loss_mask = fixed.loss_mask.reshape(shape)
    loss = aggregate(per_token.reshape(shape), loss_mask, call.agg, norm_len=call.norm_len,
                     rows=call.rows)
    clipped = out.clipped.detach().reshape(shape).to(torch.float64)
    return GroupLosses(loss, aggregate(clipped, loss_mask, "token-mean"))


def _corrected_per_group(call: _Call, logp: Tensor, logp_old: Tensor, advantages: Tensor,
                         mask: Tensor, rollout: Tensor | None, groups: int) -> _Corrected:
    """``_corrected`` on [G·K, T] rows with each of the G groups its own batch: the corrections
    run once per group (``torch.func.vmap`` over the groups; a loop where a correction cannot
    be vmapped), so a batch statistic (``normalize=True``) is the group's. Metrics skipped."""
    extra = {"logp_rollout": rollout, "logp_ref": None, "entropy": None}
    if not call.corrections or groups == 0:  # nothing to correct, or no group to map over
        return _corrected(call, logp, logp_old, advantages, mask, extra, False)
    tensors = {name: _optional_input(name, value, mask, False) for name, value in extra.items()}
    mu = logp_old if tensors["logp_rollout"] is None else tensors["logp_rollout"]
    penalised: list[bool] = []

    def one(lp: Tensor, old: Tensor, rollout_: Tensor, adv: Tensor, valid: Tensor
            ) -> tuple[Tensor, Tensor, Tensor]:
        applied = apply_corrections(call.corrections,
                                    CorrectionInputs(lp, old, rollout_, adv, valid))
        penalised.append(applied.penalty is not None)
        penalty = torch.zeros_like(lp) if applied.penalty is None else applied.penalty
        return applied.weight, applied.loss_mask, penalty

    split = [t.reshape(groups, -1, *t.shape[1:]) for t in (logp, logp_old, mu, advantages, mask)]
    try:
        weight, loss_mask, penalty = torch.func.vmap(one)(*split)
    except RuntimeError:  # a correction with data-dependent Python control flow: group by group
        penalised.clear()
        outs = [one(*group) for group in zip(*split, strict=True)]
        weight, loss_mask, penalty = (torch.stack(parts) for parts in zip(*outs, strict=True))
    flat = [t.reshape(-1, *t.shape[2:]) for t in (weight, loss_mask, penalty)]
    return _Corrected(flat[1], flat[0], flat[2] if any(penalised) else None, tensors, {})


def pairwise_surrogate(rewards: Tensor, seq_logp: Tensor, seq_logp_anchor: Tensor, tau: float,
                       weights: Tensor | None = None) -> Tensor:
    """The paper's pairwise surrogate L̂ (its Eq. 6; the weighted form: its Principle 2),
    averaged over groups.

    a_i = r_i − τ·(log π_θ(y_i) − log π_t(y_i)),
    L̂ = (1/K²)·Σ_{i<j} w_i·w_j·(a_i − a_j)²  (w ≡ 1 when ``weights`` is None),
    computed in O(K) as (1/K²)·W·Σ_i w_i·(a_i − ā_w)², W = Σ_i w_i, ā_w the w-weighted mean.
    At θ = θ_t its gradient is −(2τ/K²)·W·Σ_i w_i·(r_i − r̄_w)·∇log π(y_i), which for w ≡ 1 is
    −(2τ/K)·Σ_i (r_i − r̄)·∇log π(y_i): group-relative REINFORCE.

    Args: rewards, seq_logp (with gradient), seq_logp_anchor, weights: [G, K]; tau > 0.
    Returns: a scalar, the mean of L̂ over the G groups.
    """
    rewards = require_float_tensor("rewards", rewards)
    require_ndim("rewards", rewards, (2,), "a [G, K] tensor")
    for arg, value in (("seq_logp", seq_logp), ("seq_logp_anchor", seq_logp_anchor)):
        if require_float_tensor(arg, value).shape != rewards.shape:
            raise ValueError(f"{arg} must have the shape of rewards {tuple(rewards.shape)}, "
                             f"got {tuple(value.shape)}")
    tau = require_positive("tau", tau)
    if weights is None:
        weights = torch.ones_like(rewards)
    elif require_float_tensor("weights", weights).shape != rewards.shape:
        raise ValueError(f"weights must have the shape of rewards {tuple(rewards.shape)}, "
                         f"got {tuple(weights.shape)}")
    elif bool((weights < 0).any()):
        raise ValueError("weights must be >= 0")
    a = rewards - tau * (seq_logp - seq_logp_anchor)
    total = weights.sum(dim=1, keepdim=True)
    a_bar = (weights * a).sum(dim=1, keepdim=True) / total.clamp(min=torch.finfo(a.dtype).tiny)
    per_group = total.squeeze(1) * (weights * (a - a_bar) ** 2).sum(dim=1) / rewards.shape[1] ** 2
    return per_group.mean()
