"""grlab's losses and advantage kinds in verl (0.9.x): importing this module registers them.

After ``import llm_bridge.integrations.verl``, every name of ``simulator.losses.LOSSES`` is a verl
policy loss ``grlab/<name>`` (``actor_rollout_ref.actor.policy_loss.loss_mode=grlab/rec-ring-is``)
and every grlab advantage kind and loss preset is a verl advantage estimator ``grlab/<kind>`` /
``grlab/<loss>`` (``algorithm.adv_estimator=grlab/red-drop``). docs/engines.md shows a run.

Design decisions
----------------
* Registration happens here, on import, never at ``import simulator``. verl imports this module
  in every process through its own hook: ``VERL_USE_EXTERNAL_MODULES=llm_bridge.integrations.verl``
  (read by ``verl/__init__.py``); setting ``policy_loss._target_`` to ``GrlabPolicyLossConfig``
  also imports it wherever the actor config is built.
* The loss is grlab's ``policy_loss``, called exactly as verl calls its own losses. verl's
  ``loss_agg_mode`` is honoured, with verl's global-batch normalisation
  (``config.global_batch_info``, set by ``verl.workers.utils.losses.ppo_loss``): each rank's
  loss is Σ(its rows' terms) / (global count / dp_size), so the gradient that DDP/FSDP averages
  over dp ranks is the global batch's. Mapping (``aggregation_options``):
  token-mean → ``denominator = batch_num_tokens / dp_size``; token-sum → ``1 / dp_size``;
  seq-mean-* → ``global_batch_size / dp_size`` (rows="all"), or, without global batch info,
  the rows with a valid token (rows="valid", verl's ``agg_loss``); seq-mean-token-sum-norm →
  ``norm_len = loss_scale_factor``, or the padded response length when that is None (verl's
  default; set ``actor.loss_scale_factor`` to a constant for Dr.GRPO's).
* Keywords. A grlab loss gets its preset's values (``LOSSES[name].defaults()``), then verl's
  clip fields that the user *changed from verl's defaults* (read from verl's ``ActorConfig``):
  ``clip_ratio_low`` (or ``clip_ratio``) → ``eps_low``, ``clip_ratio_high`` (or ``clip_ratio``)
  → ``eps_high``, ``clip_ratio_c`` → ``dual_clip``; then ``policy_loss.grlab_kwargs``, which
  wins. A verl field left at its default means "not set", so ``grlab/dapo`` keeps ε_high = 0.28
  and ``grlab/grpo`` has no dual clip (verl's ``vanilla`` always dual-clips at c = 3:
  ``grlab/ppo-dual-clip`` is that loss). A changed field the loss has no keyword for is a
  ``ValueError``, never silently ignored; so is an unknown ``grlab_kwargs`` key. verl's
  loss-specific fields (SAPO's ``tau_pos``/``tau_neg``, Clip-Cov's and KL-Cov's
  ``policy_loss.clip_cov_*``/``kl_cov_ratio``/``ppo_kl_coef``, DRO's ``policy_loss.dro_beta``)
  follow the same rule through ``VERL_LOSS_FIELDS``: a grlab loss taking the field's grlab
  keyword (the field's own name; ``tau`` for ``dro_beta``; ``clip_ratio_c`` is vanilla's
  ``dual_clip`` and DPPO's ``clip_ratio_c``) gets the changed value; any other grlab keyword
  comes by ``grlab_kwargs``.
* Metrics: verl's names ``actor/pg_clipfrac``, ``actor/ppo_kl``, ``actor/pg_clipfrac_lower``
  from grlab's metrics of the same definitions, and every grlab metric as ``actor/grlab/<name>``.
  verl averages them over micro-batches (``AggregationType.MEAN``), as for its own losses.
* ``rollout_is_weights`` (verl's rollout correction) multiply each token's loss before the
  aggregation, as verl's own losses do: ``policy_loss(..., token_weights=...)``.
* verl's rollout correction (``algorithm.rollout_correction``, ``RolloutCorrectionConfig``)
  is grlab's corrections (``verl_corrections``): ``rollout_is`` token/sequence with a float
  threshold → ``is`` truncate (TIS), with ``"lower_upper"`` → ``is`` mask (IcePop, the token
  stays counted), ``rollout_is_batch_normalize`` → ``normalize``; ``bypass_mode`` → the ratio
  against the current policy (``ratio="current"``; verl then passes μ as ``old_log_prob``).
  In decoupled mode verl 0.9.1 computes its weights and rejection mask itself, before the loss,
  from ``old_log_probs`` and ``rollout_log_probs``, and hands the loss only the weights (as
  ``rollout_is_weights``) and the edited mask: those are honoured as above, and
  ``verl_corrections`` is the same correction as grlab data (for grlab's trainer and exact
  engines; tested to give verl's weights and mask). ``rollout_rs`` (rejection by a k1/k2/k3
  divergence, comma-separated options) → one ``reject`` per option (``verl_rejection``).
* ``policy_loss.grlab_corrections`` (``GrlabPolicyLossConfig``): grlab corrections applied
  inside the loss. When verl passes ``rollout_log_probs`` to the loss they are μ, apart from
  ``old_log_prob`` (π_old); otherwise μ is π_old (corrections with ``ratio="current"`` still
  act). Do not also enable verl's rollout correction for the same ratio: both would apply.
* Advantage estimators use verl's signature ``fn(token_level_rewards, response_mask, index,
  config, ...) -> (advantages, returns)``. Responses are grouped by ``index`` (verl's uid);
  groups of different sizes are computed size by size, which is exact since every grlab kind is
  per group. Options come from ``algorithm.grlab_advantage_kwargs`` (e.g. ``{tau: 0.5}``;
  ``seed`` for RED-Drop's draws). RED-Drop's dropped samples and DAPO's uniform groups get
  A = 0 but stay in the token count: verl's estimator API cannot change the loss mask.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from llm_bridge.integrations import common_dtype, import_engine
from simulator.advantages import ADVANTAGES, shaped_advantages
from simulator.aggregation import norm_len_for
from simulator.corrections import Correction, as_corrections
from simulator.losses import LOSSES, LossSetup, policy_loss

core_algos = import_engine("verl.trainer.ppo.core_algos", "verl")
verl_config = import_engine("verl.workers.config", "verl")

__all__ = [
    "ADVANTAGE_KINDS_VERL",
    "PREFIX",
    "GrlabPolicyLossConfig",
    "aggregation_options",
    "grlab_advantages",
    "loss_keywords",
    "register_all",
    "verl_corrections",
]

PREFIX = "grlab/"
ADVANTAGE_KINDS_VERL: tuple[str, ...] = tuple(ADVANTAGES)  # every kind, as verl estimators
# verl's config fields -> the grlab keyword of the same meaning: (grlab keywords, where verl
# keeps the field: the actor config or its policy_loss, the field, the field verl falls back to
# when it is None). A grlab loss gets the changed value (changed from verl's default) under the
# first of the keywords it takes; a changed field the loss cannot take is refused. clip_ratio_c
# is vanilla PPO's dual clip and DPPO's truncation of ρ; dro_beta is the τ of opmd-kimi/dro.
VERL_LOSS_FIELDS: tuple[tuple[tuple[str, ...], str, str, str | None], ...] = (
    (("eps_low",), "actor", "clip_ratio_low", "clip_ratio"),
    (("eps_high",), "actor", "clip_ratio_high", "clip_ratio"),
    (("dual_clip", "clip_ratio_c"), "actor", "clip_ratio_c", None),
    (("tau_pos",), "actor", "tau_pos", None),  # sapo: the positive-advantage temperature
    (("tau_neg",), "actor", "tau_neg", None),  # sapo: the negative-advantage temperature
    (("clip_cov_ratio",), "policy_loss", "clip_cov_ratio", None),  # clip_cov: share clipped
    (("clip_cov_lb",), "policy_loss", "clip_cov_lb", None),  # clip_cov: covariance band, lower
    (("clip_cov_ub",), "policy_loss", "clip_cov_ub", None),  # clip_cov: covariance band, upper
    (("kl_cov_ratio",), "policy_loss", "kl_cov_ratio", None),  # kl_cov: share penalised
    (("ppo_kl_coef",), "policy_loss", "ppo_kl_coef", None),  # kl_cov: the KL coefficient
    (("tau",), "policy_loss", "dro_beta", None),  # dro: its β
)
VERL_METRIC_NAMES: Mapping[str, str] = {
    "pg_clipfrac": "actor/pg_clipfrac",
    "ppo_kl": "actor/ppo_kl",
    "pg_clipfrac_lower": "actor/pg_clipfrac_lower",
}
# verl's own defaults, read from its ActorConfig: a clip field left at its default is "not set"
_VERL_DEFAULTS = {f.name: f.default for f in dataclasses.fields(verl_config.ActorConfig)
                  if f.default is not dataclasses.MISSING}
_VERL_POLICY_LOSS_DEFAULTS = {f.name: f.default
                              for f in dataclasses.fields(verl_config.PolicyLossConfig)
                              if f.default is not dataclasses.MISSING}
_log = logging.getLogger(__name__)


@dataclasses.dataclass
class GrlabPolicyLossConfig(verl_config.PolicyLossConfig):
    """verl's ``PolicyLossConfig`` plus ``grlab_kwargs``: keywords of the grlab loss.

    Select it with ``actor_rollout_ref.actor.policy_loss._target_=`` this class's dotted path
    (verl's own config class rejects unknown keys), then
    ``+actor_rollout_ref.actor.policy_loss.grlab_kwargs={eps_high: 0.28}``.
    """

    grlab_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    grlab_corrections: list[str] = dataclasses.field(default_factory=list)


def _get(config: Any, key: str, default: Any = None) -> Any:
    """``config.key`` for verl's dataclass configs, DictConfigs and plain dicts alike."""
    if isinstance(config, Mapping) or hasattr(config, "get"):
        return config.get(key, default)
    return getattr(config, key, default)


def _effective(source: Any, field: str, fallback: str | None) -> Any:
    """verl's own resolution: ``clip_ratio_low if clip_ratio_low is not None else clip_ratio``."""
    value = _get(source, field)
    return _get(source, fallback) if value is None and fallback is not None else value


def loss_keywords(name: str, config: Any) -> dict[str, Any]:
    """The keywords ``grlab/<name>`` runs with under the verl actor config ``config``.

    Preset values, then the verl clip fields changed from verl's defaults, then
    ``config.policy_loss.grlab_kwargs`` (see the module docstring). Unknown keywords raise
    ``TypeError`` (from ``LossSpec.resolve``); a changed clip field the loss cannot take raises
    ``ValueError``.
    """
    spec = LOSSES[name]
    takes = spec.defaults()
    keywords: dict[str, Any] = {}
    policy = _get(config, "policy_loss", {}) or {}
    for names, where, field, fallback in VERL_LOSS_FIELDS:
        source, defaults = (config, _VERL_DEFAULTS) if where == "actor" \
            else (policy, _VERL_POLICY_LOSS_DEFAULTS)
        value, default = _effective(source, field, fallback), _effective(defaults, field, fallback)
        if value is None or value == default:
            continue
        keyword = next((k for k in names if k in takes), None)
        if keyword is None:
            shown = field if where == "actor" else f"policy_loss.{field}"
            raise ValueError(
                f"actor.{shown}={value} has no counterpart in loss grlab/{name} (its keywords: "
                f"{sorted(takes) or 'none'}); leave it at verl's default {default} and give "
                "the loss's own keyword in policy_loss.grlab_kwargs")
        keywords[keyword] = float(value)
    extra = _get(policy, "grlab_kwargs", None) or {}
    keywords.update(dict(extra))
    spec.resolve(keywords)  # a typo in grlab_kwargs is a TypeError naming the valid keywords
    return keywords


def aggregation_options(loss_agg_mode: str, mask: Tensor, global_batch_info: Mapping[str, Any]
                        ) -> dict[str, Any]:
    """``policy_loss``'s ``agg``/``norm_len``/``rows``/``denominator`` for verl's ``agg_loss``.

    ``global_batch_info``: ``dp_size``, ``batch_num_tokens`` (valid tokens of the global
    mini-batch), ``global_batch_size`` (its rows), ``loss_scale_factor`` (all optional, as in
    verl). The result makes grlab's value equal verl's ``agg_loss(..., **global_batch_info)``.
    """
    dp_size = int(global_batch_info.get("dp_size") or 1)
    tokens = global_batch_info.get("batch_num_tokens")
    rows = global_batch_info.get("global_batch_size")
    options: dict[str, Any] = {"agg": loss_agg_mode, "norm_len": None, "rows": "all",
                               "denominator": None}
    if loss_agg_mode == "token-mean":
        count, what = tokens, "batch_num_tokens"
    elif loss_agg_mode == "token-sum":
        count, what = 1.0, None
    else:
        count, what = rows, "global_batch_size"
        options["rows"] = "valid" if rows is None else "all"
    if count is None and dp_size > 1:
        raise ValueError(f"loss_agg_mode={loss_agg_mode!r} with dp_size={dp_size} needs "
                         f"config.global_batch_info[{what!r}] (verl's engines set it)")
    if count is not None and (dp_size > 1 or loss_agg_mode != "token-sum"):
        options["denominator"] = float(count) / dp_size
    if loss_agg_mode == "seq-mean-token-sum-norm":  # verl reads loss_scale_factor only here
        scale = global_batch_info.get("loss_scale_factor")
        options["norm_len"] = norm_len_for(loss_agg_mode, mask.shape[-1],
                                           None if scale is None else float(scale))
    return options


def verl_metrics(metrics: Mapping[str, Tensor]) -> dict[str, float]:
    """grlab's metrics under verl's names; the others as ``actor/grlab/<name>``."""
    out = {verl: float(metrics[ours]) for ours, verl in VERL_METRIC_NAMES.items()
           if ours in metrics}
    out.update({f"actor/grlab/{key}": float(value) for key, value in metrics.items()
                if key not in VERL_METRIC_NAMES})
    return out


def verl_corrections(rollout_correction: Any) -> tuple[Correction, ...]:
    """verl 0.9.1's ``RolloutCorrectionConfig`` (or its dict) as grlab corrections.

    ``rollout_is`` ("token" / "sequence": the product of the token ratios, grlab's
    ``sequence``) with ``rollout_is_threshold`` a number (TIS: min(w, threshold)) or
    ``"lower_upper"`` (IcePop: w outside [lower, upper] set to 0, the token kept in the
    normaliser) → ``is``; ``rollout_is_batch_normalize`` → ``normalize=True``; the ratio is
    π_old/μ (``ratio="old"``, decoupled mode) or, with ``bypass_mode``, π_θ/μ
    (``ratio="current"``). ``rollout_rs`` (comma-separated options, one threshold each or one
    for all) → one ``reject`` per option (``verl_rejection``).
    """
    if rollout_correction is None:
        return ()
    ratio = "current" if _get(rollout_correction, "bypass_mode", False) else "old"
    out: list[Correction] = []
    level = _get(rollout_correction, "rollout_is", None)
    if level is not None:
        if level not in ("token", "sequence"):
            raise ValueError(f"rollout_is must be 'token', 'sequence' or None, got {level!r}")
        upper, lower = _verl_threshold(_get(rollout_correction, "rollout_is_threshold", 2.0))
        out.append(Correction("is", {
            "level": level, "action": "truncate" if lower is None else "mask", "high": upper,
            "low": lower, "denominator": "keep", "ratio": ratio,
            "normalize": bool(_get(rollout_correction, "rollout_is_batch_normalize", False))}))
    options = _get(rollout_correction, "rollout_rs", None)
    if options is not None:
        names = [part.strip() for part in str(options).split(",") if part.strip()]
        threshold = _get(rollout_correction, "rollout_rs_threshold", None)
        if threshold is None:
            raise ValueError(f"rollout_rs={options!r} needs rollout_rs_threshold (as in verl)")
        specs = [part.strip() for part in str(threshold).split(",") if part.strip()]
        if len(specs) not in (1, len(names)):
            raise ValueError(f"rollout_rs_threshold={threshold!r} must give one threshold or "
                             f"one per rollout_rs option ({len(names)})")
        specs = specs * len(names) if len(specs) == 1 else specs
        out.extend(verl_rejection(name, spec, ratio)
                   for name, spec in zip(names, specs, strict=True))
    return tuple(out)


def verl_rejection(option: str, threshold: str | float, ratio: str = "old") -> Correction:
    """One verl ``rollout_rs`` option (``token_k1``, ``seq_mean_k3``, ...; verl's
    ``SUPPORTED_ROLLOUT_RS_OPTIONS``) with its threshold as grlab's ``reject``: the option's
    level and estimator; a k1 threshold ``"lo_hi"`` bounds exp(k1) = μ/π (a single value u:
    [1/u, u]); k2/k3 thresholds are upper bounds. Rejected tokens leave the normaliser
    (``reject``'s default ``denominator="drop"``), as verl edits the response mask."""
    aggregate, _, statistic = option.rpartition("_")
    if statistic not in ("k1", "k2", "k3") or aggregate not in (
            "token", "seq_sum", "seq_mean", "seq_max") or option == "seq_max_k1":
        raise ValueError(f"rollout_rs option {option!r} is not one of verl's (token|seq_sum|"
                         "seq_mean)_k(1|2|3) or seq_max_k(2|3)")
    text = str(threshold)
    if statistic == "k1":
        low, high = (float(x) for x in text.split("_", 1)) if "_" in text \
            else (1 / float(text), float(text))
        if not 0 < low <= high:
            raise ValueError(f"rollout_rs_threshold {text!r} for {option}: need 0 < lower ≤ upper")
        bounds = {"low": math.log(low), "high": math.log(high)}
    else:
        if "_" in text or float(text) <= 0:
            raise ValueError(f"rollout_rs_threshold {text!r} for {option}: one positive upper "
                             "bound")
        bounds = {"low": None, "high": float(text)}
    return Correction("reject", {"statistic": statistic, "aggregate": aggregate, "ratio": ratio,
                                 **bounds})


def _verl_threshold(spec: Any) -> tuple[float, float | None]:
    """(upper, lower) of verl's ``rollout_is_threshold``: a number, or ``"lower_upper"``."""
    if isinstance(spec, bool) or not isinstance(spec, int | float | str):
        raise TypeError(f"rollout_is_threshold must be a number or 'lower_upper', got {spec!r}")
    if isinstance(spec, str) and "_" in spec:
        lower, upper = (float(part) for part in spec.split("_", 1))
        return upper, lower
    return float(spec), None


def _make_policy_loss(name: str) -> Callable[..., tuple[Tensor, dict[str, float]]]:
    def grlab_policy_loss(
        old_log_prob: Tensor, log_prob: Tensor, advantages: Tensor, response_mask: Tensor,
        loss_agg_mode: str = "token-mean", config: Any = None,
        rollout_is_weights: Tensor | None = None, rollout_log_probs: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, float]]:
        if config is None:
            raise ValueError(f"grlab/{name}: config must be verl's actor config, got None")
        keywords = loss_keywords(name, config)
        _log_once(name, keywords)
        if not bool(response_mask.any()):  # only empty responses: verl's agg_loss gives 0
            return (log_prob * 0).sum(), {}
        dtype = common_dtype(log_prob, old_log_prob, advantages)
        options = aggregation_options(loss_agg_mode, response_mask,
                                      _get(config, "global_batch_info", None) or {})
        weights = None if rollout_is_weights is None else rollout_is_weights.to(dtype)
        corrections = as_corrections(
            _get(_get(config, "policy_loss", {}) or {}, "grlab_corrections", None) or ())
        sampler = None if rollout_log_probs is None or not corrections \
            else rollout_log_probs.to(dtype)
        out = policy_loss(name, log_prob.to(dtype), old_log_prob.to(dtype),
                          advantages.to(dtype), response_mask, token_weights=weights,
                          corrections=corrections, logp_rollout=sampler, **options, **keywords)
        return out.loss, verl_metrics(out.metrics)

    grlab_policy_loss.__name__ = f"grlab_{name.replace('-', '_')}"
    grlab_policy_loss.__doc__ = f"grlab's {name!r} loss in verl's policy-loss signature."
    return grlab_policy_loss


_logged: set[tuple[str, str]] = set()


def _log_once(name: str, keywords: Mapping[str, Any]) -> None:
    """Say once per run which keywords each grlab loss runs with (the rule has defaults)."""
    key = (name, repr(sorted(keywords.items())))
    if key not in _logged:
        _logged.add(key)
        _log.info("grlab/%s runs with %s", name, LOSSES[name].resolve(keywords))


# --------------------------------------------------------------------------------------------
# Advantage estimators
# --------------------------------------------------------------------------------------------

_generators: dict[int, torch.Generator] = {}


def _generator(seed: int) -> torch.Generator:
    """One generator per seed for the whole run, so successive batches draw fresh numbers."""
    if seed not in _generators:
        _generators[seed] = torch.Generator().manual_seed(seed)
    return _generators[seed]


def grlab_advantages(scores: Tensor, index: Any, kind: str, *, drop_uniform_groups: bool = False,
                     generator: torch.Generator | None = None, **options: Any) -> Tensor:
    """Per-response advantages [B] from scores [B], grouped by ``index`` (verl's uid per row).

    Rows with equal ``index`` form a group; groups of equal size are stacked into [G, K] and
    passed to ``simulator.advantages.shaped_advantages`` (``kind``, ``options``), one size at a
    time (exact: the kinds are per group; a batch-level kind needs one size). Computed in
    float64, returned in ``scores``' dtype.
    """
    index = np.asarray(index)
    if index.shape != (scores.shape[0],):
        raise ValueError(f"index must hold one group id per response ({scores.shape[0]}), "
                         f"got shape {index.shape}")
    _, group_of = np.unique(index, return_inverse=True)
    groups = [np.flatnonzero(group_of == g) for g in range(group_of.max() + 1)]
    values = scores.detach().to(torch.float64)
    out = torch.zeros_like(values)
    sizes = sorted({len(g) for g in groups})
    if len(sizes) > 1 and not ADVANTAGES[kind].group_local:
        raise ValueError(f"kind {kind!r} normalises over the whole batch: it needs groups of one "
                         f"size, got sizes {sizes}")
    for size in sizes:
        rows = torch.as_tensor(np.stack([g for g in groups if len(g) == size]), device=out.device)
        adv, _ = shaped_advantages(values[rows], kind, generator=generator,
                                   drop_uniform_groups=drop_uniform_groups, **options)
        out[rows] = adv
    return out.to(scores.dtype)


def _make_estimator(name: str) -> Callable[..., tuple[Tensor, Tensor]]:
    """The verl estimator ``grlab/<name>``: a grlab kind, or the advantage of a loss preset."""

    def grlab_estimator(token_level_rewards: Tensor, response_mask: Tensor, index: Any = None,
                        config: Any = None, **_verl_extras: Any) -> tuple[Tensor, Tensor]:
        if index is None:
            raise ValueError(f"grlab/{name} groups responses by prompt: it needs verl's index "
                             "(the uid of each response's prompt)")
        setup = _advantage_setup(name, _get(config, "grlab_advantage_kwargs", None) or {})
        kind, options = setup.advantage_kind()
        # only a kind that draws takes a seed; a seed for another kind is a TypeError below
        generator = (_generator(int(options.pop("seed", 0)))
                     if ADVANTAGES[kind].needs_generator else None)
        adv = grlab_advantages(token_level_rewards.sum(dim=-1), index, kind,
                               drop_uniform_groups=setup.spec.drop_uniform_groups,
                               generator=generator, **options)
        per_token = adv.unsqueeze(-1) * response_mask
        return per_token, per_token

    grlab_estimator.__name__ = f"grlab_advantage_{name.replace('-', '_')}"
    return grlab_estimator


def _advantage_setup(name: str, options: Mapping[str, Any]) -> LossSetup:
    """The estimator ``grlab/<name>`` as a ``LossSetup``: a loss preset's advantage, or the
    kind ``name`` overriding plain REINFORCE's (no DAPO filter), with ``options``."""
    if name in LOSSES:
        return LossSetup(name, advantage_kwargs=dict(options))
    return LossSetup("reinforce", advantage=name, advantage_kwargs=dict(options))


def _register_estimator(name: str, fn: Callable[..., Any]) -> None:
    registry = core_algos.ADV_ESTIMATOR_REGISTRY
    existing = registry.get(name)
    if existing is not None and not getattr(existing, "_grlab", False):
        raise ValueError(f"verl already has an advantage estimator {name!r} that is not grlab's")
    registry.pop(name, None)  # re-registering our own (a reload) replaces it
    fn._grlab = True  # type: ignore[attr-defined]
    core_algos.register_adv_est(name)(fn)


def register_all() -> list[str]:
    """Register every grlab loss and advantage kind in verl's registries; returns the names.

    Called on import; call it again after registering new grlab losses.
    """
    # a name that is both a loss and a kind ("red-drop") must mean the same advantage in both
    clash = sorted(n for n in set(LOSSES) & set(ADVANTAGE_KINDS_VERL) if LOSSES[n].advantage != n)
    if clash:
        raise ValueError(f"grlab names used both as a loss and another advantage kind: {clash}")
    names = []
    for name in LOSSES:
        core_algos.register_policy_loss(PREFIX + name)(_make_policy_loss(name))
        names.append(PREFIX + name)
    for name in dict.fromkeys((*LOSSES, *ADVANTAGE_KINDS_VERL)):
        _register_estimator(PREFIX + name, _make_estimator(name))
    return names


register_all()
