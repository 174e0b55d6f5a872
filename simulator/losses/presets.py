"""Presets: names for what papers and peers call algorithms (a loss + bound keywords +
an advantage kind), as data, never a copied body."""

from __future__ import annotations

from simulator.loss_registry import register_preset
from simulator.losses.common import TRINITY, TRL, VERL

register_preset("grpo", "ppo", advantage="mean-std", agg="seq-mean-token-mean",
                eps_low=0.2, eps_high=0.2, dual_clip=None,
                follows=f"DeepSeekMath (Shao et al. 2024); {TRL} loss_type='grpo'",
                summary="GRPO: PPO-clip 0.2, std-normalised group advantages, mean over each "
                        "response's tokens, then over responses")
register_preset("bnpo", "ppo", advantage="mean-std", agg="token-mean",
                follows=f"{TRL} loss_type='bnpo'; the paper's GRPO config aggregates this way",
                summary="GRPO with the batch's token-mean (every valid token weighs the same)")
register_preset("ppo-dual-clip", "ppo", advantage="mean-std", dual_clip=3.0,
                follows=f"{VERL} vanilla / {TRINITY} ppo (they also clamp δ to ±20: "
                        "log_ratio_clamp=20)",
                summary="PPO-clip 0.2 with dual clip c = 3 for negative advantages")
for _clip, _tag in (("one-side", "oneside"), ("two-side", "twoside"), ("ring", "ring")):
    for _weight, _w in (("none", "nois"), ("is", "is")):
        register_preset(
            f"rec-{_tag}-{_w}", "rec", clip=_clip, weight=_weight, advantage="mean",
            follows=f"{TRINITY} examples/rec_gsm8k (REC-{_tag}-{_w.upper()})",
            summary=f"REC: clip={_clip}, weight={_weight}, mean baseline, ε = 0.2/0.2",
        )
register_preset("red-weight", "rec", clip="none", weight="advantage", temp=1.0,
                advantage="mean", follows=f"{TRINITY} examples/rec_gsm8k (RED-Weight)",
                summary="RED-Weight: ℓ = −A·e^{A/T}·log π, T = 1")
register_preset("red-drop", "rec", clip="none", weight="none", advantage="red-drop",
                follows=f"{TRINITY} examples/rec_gsm8k (RED-Drop: drop='balance')",
                summary="RED-Drop: drop surplus negatives per group, then unclipped REINFORCE")
register_preset("dapo", "ppo", advantage="mean-std", eps_low=0.2, eps_high=0.28,
                agg="token-mean", drop_uniform_groups=True,
                follows=f"Yu et al. 2025 (DAPO); {TRL} loss_type='dapo'",
                summary="DAPO: clip-higher ε_high = 0.28, token-mean, uniform groups dropped")
register_preset("dr-grpo", "ppo", advantage="mean", agg="seq-mean-token-sum-norm",
                follows=f"Liu et al. 2025 (Dr.GRPO); {TRL} loss_type='dr_grpo'",
                summary="Dr.GRPO: PPO-clip, no std division, constant length normaliser "
                        "(norm_len = the maximum completion length)")
register_preset("luspo", "gspo", agg="seq-mean-token-sum",
                follows=f"{TRL} loss_type='luspo' (importance_sampling_level='sequence')",
                summary="LUSPO: GSPO's sequence ratio, each response's loss scaled by its length")
register_preset("rloo", "reinforce", advantage="loo",
                follows="Ahmadian et al. 2024 (RLOO)",
                summary="RLOO: REINFORCE with the leave-one-out mean baseline")

# 2025–26 presets (simulator/losses/trust_region.py holds the new base losses)
register_preset("dro", "opmd-kimi", level="token", tau=1.0, advantage="mean-std",
                follows=f"{VERL} dro (tau = dro_beta)",
                summary="DRO: −A·log π + (τ/2)·δ² per token, τ = verl's dro_beta")
register_preset("cispo-scalerl", "cispo", eps_low=1.0, eps_high=4.0, advantage="mean-std",
                follows=f"ScaleRL (arXiv 2510.13786); {TRL} cispo, epsilon_high=5",
                summary="CISPO with ScaleRL's bound: −sg(min(ρ, 5))·A·log π")
register_preset("decoupled-ppo", "ppo", eps_low=0.2, eps_high=0.2, advantage="mean-std",
                corrections="mis-token:high=5.0",
                follows="AReaL decoupled PPO (behave_imp_weight_cap=5, token_mask)",
                summary="Decoupled PPO: PPO-clip times π_old/μ, tokens above 5 dropped")
