"""The peers' names for bound keyword values of the corrections (verl's RolloutCorrectionConfig
presets, AReaL's behaviour-weight modes, TRL's vLLM importance-sampling modes, DeepSeek-V3.2's
and Trinity's KL), as data."""

from __future__ import annotations

import math

from simulator.corrections.core import (
    register_correction_preset,
)

_VERL_CONFIG = "verl 0.9.1 trainer/config/algorithm.py RolloutCorrectionConfig"
register_correction_preset(
    "geo-rs", "reject", statistic="k1", aggregate="seq_mean", low=math.log(0.999),
    high=math.log(1.001), summary="verl's Geo-RS: reject a sequence whose mean log(μ/π_old) "
    "is outside [log 0.999, log 1.001] (rollout_rs='seq_mean_k1', '0.999_1.001')",
    follows=f"{_VERL_CONFIG}.decoupled_geo_rs")
register_correction_preset(
    "k3-rs", "reject", statistic="k3", aggregate="seq_mean", high=0.01,
    summary="verl's K3-RS: reject a sequence whose mean k3 exceeds 0.01 "
    "(rollout_rs='seq_mean_k3')", follows=f"{_VERL_CONFIG}.decoupled_k3_rs")
register_correction_preset(
    "seq-rs", "reject", statistic="k1", aggregate="seq_sum", low=math.log(0.5),
    high=math.log(2.0), summary="verl's sequence RS of Seq-MIS: reject a sequence whose ratio "
    "π_old/μ (the product) is outside [0.5, 2] (rollout_rs='seq_sum_k1', '0.5_2.0')",
    follows=f"{_VERL_CONFIG}.decoupled_seq_is_rs")
register_correction_preset(
    "token-veto", "reject", statistic="ratio", aggregate="seq_min", low=1e-4, high=None,
    summary="the token veto: reject a whole sequence if any token's π_old/μ is below 1e-4",
    follows="slime 624b824 examples/train_infer_mismatch_helper/mis.py (calculate_veto_mask; "
    "rs_veto_threshold 1e-4 in mis.yaml); verl 0.9.1 has no veto option")

_AREAL = ("AReaL 4aef98d areal/api/cli_args.py (the behave_imp_weight_cap = 5 of earlier "
          "versions as rejection_sampling: level token, metric ratio, upper 5)")
register_correction_preset(
    "areal-token-mask", "is", level="token", action="mask", high=5.0, low=None,
    summary="AReaL's behave_imp_weight_mode='token_mask' (cap 5): weight π_prox/μ, tokens above "
    "5 removed but kept in the denominator", follows=_AREAL)
register_correction_preset(
    "areal-token-truncate", "is", level="token", action="truncate", high=5.0, low=None,
    summary="AReaL's behave_imp_weight_mode='token_truncate' (cap 5): weight min(π_prox/μ, 5)",
    follows=_AREAL)

_TRL = "TRL 1.16 grpo_trainer.py (_generate_and_score_completions, vLLM importance sampling)"
for _mode, _level, _action in (("token-truncate", "token", "truncate"),
                               ("token-mask", "token", "mask"),
                               ("sequence-truncate", "sequence", "truncate"),
                               ("sequence-mask", "sequence", "mask")):
    register_correction_preset(
        f"vllm-is-{_mode}", "is", level=_level, action=_action, high=3.0, low=None,
        summary=f"TRL's vllm_importance_sampling_mode={_mode.replace('-', '_')!r} (C_max 3): "
        f"π_old/μ at the {'token' if _level == 'token' else 'sequence (product)'} level",
        follows=_TRL)
register_correction_preset(
    "kl-corrected", "kl", is_level="token",
    summary="β·(π_θ/π_old)·k3: the IS-corrected KL of DeepSeek-V3.2 (TRL's "
    "use_bias_correction_kl, its default)",
    follows="DeepSeek-V3.2 (arXiv 2512.02556); TRL 1.16 grpo_trainer.py _compute_loss")
register_correction_preset(
    "kl-corrected-trinity", "kl", is_level="token", is_cap=2.0, beta=0.001,
    summary="Trinity-RFT's corrected_k3: kl_coef·clamp(π_θ/π_old, 0, 2)·k3",
    follows="Trinity-RFT 0.6.0 algorithm/kl_fn/kl_fn.py (CorrectedK3Fn, kl_coef 0.001)")
