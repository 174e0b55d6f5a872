"""grlab's losses in TRL's ``GRPOTrainer`` (1.16): ``GrlabGRPOConfig`` and ``GrlabGRPOTrainer``.

``GrlabGRPOTrainer`` is TRL's trainer — its generation, reward functions, gradient accumulation,
logging and checkpoints — with two things replaced: the advantages (grlab's advantage kind of
the loss preset, from the rewards) and the loss (``simulator.losses.policy_loss``). A script:
docs/engines.md.

Design decisions
----------------
* Three small overrides, each calling TRL first: ``_calculate_rewards`` keeps the rewards of
  every process; ``_generate_and_score_completions`` replaces TRL's advantages with grlab's
  (``LossSetup.advantages``: the preset's kind, or ``grlab_advantage``) and adds a keep mask
  (RED-Drop's dropped samples, DAPO's uniform groups), which the loss removes from its mask;
  ``_compute_loss`` is grlab's loss. TRL computes advantages inline in a 600-line method, so
  recomputing them after it is the smallest override that does not copy TRL's code.
* Normalisation across gradient accumulation and processes (``trl_denominator``). DDP averages
  gradients over P processes, and each optimiser step sums ``current_gradient_accumulation_steps``
  (GA) micro-batches, so every micro-batch divides its row terms by (global count of the
  window) / P. token-mean: the window's valid tokens = ``num_items_in_batch``·GA/
  ``steps_per_generation`` (TRL's own ``dapo`` normaliser, recounted after the keep mask);
  exact when ``steps_per_generation`` = GA (TRL's default), TRL's proportional estimate
  otherwise. seq-mean-*: B·GA rows per process (TRL's ``grpo``/``dr_grpo``; every micro-batch
  has B rows, so this is exact). token-sum: 1/P. ``seq-mean-token-sum-norm`` uses
  ``max_completion_length`` as its constant length (TRL's ``dr_grpo``).
* TRL's ``loss_type="bnpo"`` is a token mean *per micro-batch* divided by GA; grlab's
  ``token-mean`` is the window's token mean (``dapo``). They agree on one micro-batch, and
  differ when micro-batches of a window hold different token counts.
* Keywords follow the rule of ``llm_bridge.integrations.verl``: the preset's values, then TRL's
  ``epsilon`` → ``eps_low`` and ``epsilon_high`` (or ``epsilon``) → ``eps_high`` when changed
  from TRL's defaults, then ``grlab_loss_kwargs``, which wins. TRL fields that only TRL's own
  loss or advantage would read (``loss_type``, ``scale_rewards``, ``importance_sampling_level``,
  ``delta``, entropy masks and bonuses, ``normalize_then_sum``) are refused with a
  ``ValueError`` when changed, never ignored. The KL
  term (``beta``) is kept: TRL's k3 against the reference model, times ρ when
  ``use_bias_correction_kl`` (TRL's default), aggregated like the loss.
* TRL's off-policy corrections are grlab's (``trl_corrections``): the vLLM importance sampling
  options (``vllm_importance_sampling_correction``, ``_mode``, ``_clip_max``, ``_clip_min``)
  become the ``is`` correction on π_old/μ (π_old: TRL's ``old_per_token_logps``, μ: vLLM's
  ``sampling_per_token_logps``), ``off_policy_mask_threshold`` becomes ``opsm``; both weigh
  grlab's per-token loss before aggregation, as TRL weighs its own (tested against TRL's code
  on a fixed batch). ``grlab_corrections`` adds any other grlab correction.
* Metrics: every grlab metric under its grlab name (``clipfrac``, ``approx_kl``, ``pg_clipfrac``,
  ...), averaged over processes, in TRL's log next to TRL's ``entropy``, ``kl`` and rewards.
* RED-Drop's draws come from a ``torch.Generator`` seeded with ``args.seed`` when the trainer is
  built; every process makes the same draws (they all see the gathered rewards).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from llm_bridge.integrations import common_dtype, import_engine
from simulator import kl, numerics
from simulator.advantages import advantage_kind
from simulator.aggregation import AGGREGATIONS, aggregate
from simulator.corrections import Correction, as_corrections
from simulator.losses import LOSSES, LossSetup, policy_loss
from simulator.validation import require_choice

trl = import_engine("trl", "trl")

__all__ = ["GrlabGRPOConfig", "GrlabGRPOTrainer", "trl_corrections", "trl_denominator"]

_TRL_DEFAULTS = {f.name: f.default for f in dataclasses.fields(trl.GRPOConfig)
                 if f.default is not dataclasses.MISSING}
# TRL fields whose only reader is TRL's own loss or advantage code: changed ones are refused
_REPLACED = {
    "loss_type": "the loss is grlab_loss (and grlab_agg)",
    "scale_rewards": "the advantage is grlab_advantage (e.g. 'mean-std', grlab_advantage_kwargs)",
    "importance_sampling_level": "sequence ratios are grlab losses ('gspo', 'gspo-token')",
    "delta": "grlab's ppo has dual_clip (grlab_loss_kwargs)",
    "multi_objective_aggregation": "rewards are summed with reward_weights, then grlab's kind",
    "top_entropy_quantile": "not supported by GrlabGRPOTrainer",
    "entropy_coef": "not supported by GrlabGRPOTrainer",
    "use_adaptive_entropy": "not supported by GrlabGRPOTrainer",
}
# TRL 1.16's vllm_importance_sampling_mode -> grlab's ``is`` correction (level, action)
VLLM_IS_MODES = {mode: "vllm-is-" + mode.replace("_", "-") for mode in (
    "token_truncate", "token_mask", "sequence_truncate", "sequence_mask")}
"""TRL's ``vllm_importance_sampling_mode`` -> the grlab correction preset of that mode."""
# the model inputs TRL's _compute_loss forwards to _get_per_token_logps_and_entropies
_MODEL_INPUTS = ("pixel_values", "image_grid_thw", "num_images", "pixel_attention_mask",
                 "spatial_shapes", "num_tiles", "image_sizes", "token_type_ids",
                 "mm_token_type_ids", "image_position_ids")


def _as_dict(name: str, value: dict | str | None) -> dict[str, Any]:
    """A dict field that may come from the command line as JSON text."""
    if value is None:
        return {}
    if isinstance(value, str):
        value = json.loads(value)
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a dict (or its JSON text), got {type(value).__name__}")
    return dict(value)


@dataclasses.dataclass
class GrlabGRPOConfig(trl.GRPOConfig):
    """TRL's ``GRPOConfig`` with a grlab loss. Every other field keeps TRL's meaning."""

    grlab_loss: str = dataclasses.field(
        default="grpo", metadata={"help": "A grlab loss name (`grlab losses` lists them)."})
    grlab_loss_kwargs: dict | str | None = dataclasses.field(
        default=None, metadata={"help": "Keywords of the loss, e.g. {'eps_high': 0.28}."})
    grlab_advantage: str | None = dataclasses.field(
        default=None, metadata={"help": "An advantage kind; None: the loss preset's."})
    grlab_advantage_kwargs: dict | str | None = dataclasses.field(
        default=None, metadata={"help": "Options of the advantage kind, e.g. {'tau': 0.5}."})
    grlab_agg: str | None = dataclasses.field(
        default=None, metadata={"help": "An aggregation mode; None: the loss preset's."})
    grlab_corrections: list | str | None = dataclasses.field(
        default=None, metadata={"help": "grlab corrections on π_old/μ added to TRL's own, e.g. "
                                        "['icepop', 'tis-token:high=2'] (or its JSON text)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        self.grlab_loss_kwargs = _as_dict("grlab_loss_kwargs", self.grlab_loss_kwargs)
        self.grlab_advantage_kwargs = _as_dict("grlab_advantage_kwargs",
                                               self.grlab_advantage_kwargs)
        LOSSES[self.grlab_loss]  # an unknown name is a KeyError listing the valid ones
        if self.grlab_advantage is not None:
            advantage_kind(self.grlab_advantage, "grlab_advantage")
        if self.grlab_agg is not None:
            require_choice("grlab_agg", self.grlab_agg, AGGREGATIONS)
        for field, use_instead in _REPLACED.items():
            if getattr(self, field) != _TRL_DEFAULTS[field]:
                raise ValueError(f"{field}={getattr(self, field)!r} is read only by TRL's own loss "
                                 f"or advantage, which GrlabGRPOTrainer replaces: {use_instead}")
        if isinstance(self.grlab_corrections, str):
            self.grlab_corrections = json.loads(self.grlab_corrections)
        self.grlab_setup()  # a typo in grlab_loss_kwargs or a correction fails here

    def grlab_keywords(self) -> dict[str, Any]:
        """The loss keywords: TRL's ε where changed from TRL's defaults, then grlab_loss_kwargs."""
        takes = LOSSES[self.grlab_loss].defaults()
        keywords: dict[str, Any] = {}
        pairs = (("eps_low", "epsilon", self.epsilon, _TRL_DEFAULTS["epsilon"]),
                 ("eps_high", "epsilon_high", _or(self.epsilon_high, self.epsilon),
                  _or(_TRL_DEFAULTS["epsilon_high"], _TRL_DEFAULTS["epsilon"])))
        for keyword, field, value, default in pairs:
            if value == default:
                continue
            if keyword not in takes:
                raise ValueError(f"{field}={value} has no counterpart in grlab loss "
                                 f"{self.grlab_loss!r} (its keywords: {sorted(takes) or 'none'})")
            keywords[keyword] = float(value)
        return {**keywords, **self.grlab_loss_kwargs}

    def grlab_setup(self) -> LossSetup:
        """The grlab loss and how this run feeds it (keywords, advantage override, agg,
        corrections: TRL's own as grlab's, ``trl_corrections``, then ``grlab_corrections``)."""
        return LossSetup(self.grlab_loss, self.grlab_keywords(), advantage=self.grlab_advantage,
                         advantage_kwargs=self.grlab_advantage_kwargs, agg=self.grlab_agg,
                         corrections=(*trl_corrections(self),
                                      *as_corrections(self.grlab_corrections)))

    def grlab_advantage_options(self) -> tuple[str, dict[str, Any], bool]:
        """(kind, options, drop_uniform_groups) in force (``LossSetup.advantage_kind``)."""
        setup = self.grlab_setup()
        return (*setup.advantage_kind(), setup.spec.drop_uniform_groups)


def trl_corrections(args: Any) -> tuple[Correction, ...]:
    """TRL 1.16's off-policy options as grlab corrections (``simulator.corrections``).

    * ``use_vllm`` and ``vllm_importance_sampling_correction`` (TRL's default True): ``is``
      with ``ratio="old"`` (TRL's ratio is exp(old_per_token_logps − sampling_per_token_logps),
      π_old/μ), ``level`` token or sequence (TRL's sequence ratio is the exp of the summed
      log-ratios: a product, grlab's ``sequence``), ``action`` truncate or mask from
      ``vllm_importance_sampling_mode``, ``high``/``low`` from ``_clip_max``/``_clip_min``
      (None: unbounded),
      ``denominator="keep"`` (TRL zeroes a masked token's loss and keeps it
      in the normaliser).
    * ``off_policy_mask_threshold`` δ: ``opsm`` with ``delta=δ``, ``ratio="current"`` (TRL's
      ``get_off_policy_mask``: a sequence with A < 0 whose mean of log μ − log π_θ over its
      tokens exceeds δ is dropped, μ the sampling log-probs, else π_old),
      ``denominator="keep"``.
    """
    out = []
    if args.use_vllm and args.vllm_importance_sampling_correction:
        mode = args.vllm_importance_sampling_mode
        if mode not in VLLM_IS_MODES:
            raise ValueError(f"vllm_importance_sampling_mode must be one of "
                             f"{sorted(VLLM_IS_MODES)}, got {mode!r}")
        high, low = (args.vllm_importance_sampling_clip_max,
                     args.vllm_importance_sampling_clip_min)
        # the preset of the mode (simulator.corrections: level, action, ratio π_old/μ, the
        # token kept in the normaliser) with TRL's bounds
        out.append(Correction(VLLM_IS_MODES[mode], {
            "high": None if high is None else float(high),
            "low": None if low is None else float(low)}))
    if args.off_policy_mask_threshold is not None:
        out.append(Correction("opsm", {"delta": float(args.off_policy_mask_threshold),
                                       "ratio": "current", "denominator": "keep"}))
    return tuple(out)


def _or(value: Any, fallback: Any) -> Any:
    return fallback if value is None else value


def trl_denominator(agg: str, *, rows: int, num_items: float, grad_accum: int,
                    steps_per_generation: int, num_processes: int, train: bool) -> float:
    """What one micro-batch of one process divides its summed row terms by (module docstring).

    ``rows``: this micro-batch's rows; ``num_items``: valid tokens of the whole generation
    batch over all processes (TRL's ``num_items_in_batch``). In eval there is no accumulation.
    """
    window = grad_accum / steps_per_generation if train else 1.0
    if agg == "token-mean":
        return max(float(num_items), 1.0) / num_processes * window
    if agg == "token-sum":
        return 1.0 / num_processes
    return float(rows) * (grad_accum if train else 1)


class GrlabGRPOTrainer(trl.GRPOTrainer):
    """TRL's GRPOTrainer whose advantages and loss are grlab's (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        config = kwargs.get("args", args[2] if len(args) > 2 else None)
        if not isinstance(config, GrlabGRPOConfig):
            raise TypeError("GrlabGRPOTrainer needs args=GrlabGRPOConfig(...), got "
                            f"{type(config).__name__}")
        super().__init__(*args, **kwargs)
        if self.aux_loss_enabled:
            raise ValueError("GrlabGRPOTrainer does not add a MoE router aux loss; set "
                             "router_aux_loss_coef=0.0")
        self._grlab_setup = config.grlab_setup()
        self._grlab_generator = torch.Generator().manual_seed(config.seed)
        self._grlab_rewards: Tensor | None = None

    # -- advantages ---------------------------------------------------------------------------

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._grlab_rewards = rewards  # [all processes' samples, reward functions]
        return rewards

    def grlab_advantages(self, rewards_per_func: Tensor, num_generations: int
                         ) -> tuple[Tensor, Tensor]:
        """Advantages and keep mask [N] of every process's samples from TRL's rewards [N, F].

        Rewards are Σ_f w_f·r_f (TRL's ``reward_weights``), grouped by prompt in groups of
        ``num_generations`` (TRL's order), then grlab's advantage kind, in float64.
        """
        weights = self.reward_weights.to(rewards_per_func.device)
        if bool(torch.isnan(rewards_per_func).all(dim=1).any()):
            raise ValueError("every reward function returned None for some completion: grlab's "
                             "group advantages need a reward for every completion")
        rewards = (rewards_per_func * weights).nansum(dim=1).to(torch.float64)
        adv, keep = self._grlab_setup.advantages(rewards.view(-1, num_generations),
                                                 self._grlab_generator)
        return adv.flatten(), keep.flatten()

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        mode = "train" if self.model.training else "eval"
        num_generations = self.num_generations if mode == "train" else self.num_generations_eval
        adv, keep = self.grlab_advantages(self._grlab_rewards, num_generations)
        local = len(output["advantages"])
        start = self.accelerator.process_index * local
        output["advantages"] = adv[start:start + local].to(output["advantages"].dtype)
        output["grlab_keep"] = keep[start:start + local]
        mask = self._grlab_mask(output)
        output["grlab_num_items"] = self.accelerator.gather(mask.sum()).sum()
        logged = self._logs["advantages"]  # show grlab's advantages in TRL's completions table
        for _ in range(min(len(adv), len(logged))):
            logged.pop()
        logged.extend(adv.tolist())
        return output

    # -- loss ---------------------------------------------------------------------------------

    @staticmethod
    def _grlab_mask(inputs: Mapping[str, Tensor]) -> Tensor:
        """The loss mask [B, T]: completion tokens (TRL's tool mask applied), kept samples only."""
        mask = inputs["completion_mask"].bool()
        if "tool_mask" in inputs:
            mask = mask & inputs["tool_mask"].bool()
        if "grlab_keep" in inputs:
            mask = mask & inputs["grlab_keep"].bool()[:, None]
        return mask

    def _grlab_aggregation(self, inputs: Mapping[str, Any], mask: Tensor, train: bool
                           ) -> dict[str, Any]:
        agg = self._grlab_setup.aggregation()
        num_items = inputs.get("grlab_num_items", inputs.get("num_items_in_batch"))
        denominator = trl_denominator(
            agg, rows=mask.shape[0], num_items=float(num_items),
            grad_accum=self.current_gradient_accumulation_steps,
            steps_per_generation=self.args.steps_per_generation,
            num_processes=self.accelerator.num_processes, train=train)
        norm_len = self._grlab_setup.length_for(self.max_completion_length)
        return {"agg": agg, "norm_len": norm_len, "denominator": denominator}

    def _compute_loss(self, model, inputs):
        mode = "train" if self.model.training else "eval"
        prompt_ids, completion_ids = inputs["prompt_ids"], inputs["completion_ids"]
        logps, entropies, _ = self._get_per_token_logps_and_entropies(
            model, torch.cat([prompt_ids, completion_ids], dim=1),
            torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1),
            completion_ids.size(1), compute_entropy=True,
            **{key: inputs.get(key) for key in _MODEL_INPUTS})
        mask = self._grlab_mask(inputs)
        if not bool(mask.any()):  # every sample of this micro-batch was dropped: no gradient
            return (logps * 0).sum()
        old = inputs.get("old_per_token_logps")
        old = logps.detach() if old is None else old  # TRL's rule: on-policy, ratio 1
        dtype = common_dtype(logps, old, inputs["advantages"])
        options = self._grlab_aggregation(inputs, mask, train=mode == "train")
        if self._grlab_setup.all_corrections():
            options.update(self._grlab_policies(inputs, old, dtype))
        out = policy_loss(self._grlab_setup, logps.to(dtype), old.to(dtype),
                          inputs["advantages"].to(dtype), mask, **options)
        loss = out.loss
        if self.beta != 0.0:  # TRL's KL term, aggregated like the loss (aggregation is linear)
            per_token_kl = self._kl_term(logps, old, inputs["ref_per_token_logps"])
            loss = loss + self.beta * aggregate(per_token_kl, mask, options["agg"],
                                                norm_len=options["norm_len"],
                                                denominator=options["denominator"]).to(loss.dtype)
            self._metrics[mode]["kl"].append(self._global_mean(per_token_kl, mask))
        self._metrics[mode]["entropy"].append(self._global_mean(entropies, mask))
        self._log_grlab_metrics(mode, out.metrics)
        return loss

    @staticmethod
    def _grlab_policies(inputs: Mapping[str, Any], old: Tensor, dtype: torch.dtype
                        ) -> dict[str, Tensor | None]:
        """The corrections' other policies: μ, the sampler's log-probs (vLLM's
        ``sampling_per_token_logps``; absent: μ is π_old, as TRL's OPSM falls back), a token
        vLLM could not score (NaN) taking π_old's value (ratio 1, as TRL), and π_ref."""
        sampling = inputs.get("sampling_per_token_logps")
        if sampling is not None:
            sampling = torch.where(torch.isnan(sampling), old, sampling).to(dtype)
        ref = inputs.get("ref_per_token_logps")
        return {"logp_rollout": sampling, "logp_ref": None if ref is None else ref.to(dtype)}

    def _kl_term(self, logps: Tensor, old: Tensor, ref: Tensor) -> Tensor:
        """TRL's per-token KL: k3(π_θ, π_ref), times ρ = π_θ/π_old (with gradient) when
        ``use_bias_correction_kl`` (TRL's default: the unbiased reverse-KL gradient), in float64."""
        logps = logps.to(torch.float64)
        per_token = kl.k3(logps, ref.detach().to(torch.float64))
        if self.args.use_bias_correction_kl:
            per_token = per_token * numerics.exp(logps - old.detach().to(torch.float64))
        return per_token

    def _global_mean(self, values: Tensor, mask: Tensor) -> float:
        """Token mean over every process (TRL's ``global_masked_mean``)."""
        masked = torch.where(mask, values.detach(), values.new_zeros(()))
        totals = torch.stack([masked.sum(), mask.sum().to(masked.dtype)])
        totals = self.accelerator.reduce(totals, reduction="sum")
        return float(totals[0] / totals[1].clamp(min=1.0))

    def _log_grlab_metrics(self, mode: str, metrics: Mapping[str, Tensor]) -> None:
        """grlab's metrics under grlab's names, each the mean over processes."""
        names = list(metrics)
        values = torch.stack([metrics[name].detach().float() for name in names])
        gathered = self.accelerator.gather(values[None]).view(-1, len(names)).nanmean(dim=0)
        for name, value in zip(names, gathered.tolist(), strict=True):
            self._metrics[mode][name].append(value)
