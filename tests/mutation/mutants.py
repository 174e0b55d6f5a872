"""The mutants: one semantic bug each, in the loss core, that the test suite must kill.

Each mutant is a bug that a peer has shipped or that a careless edit would make, written as
exact text edits of one source file (``old`` must occur exactly once in the file, so a refactor
that moves the code makes the list fail loudly instead of silently testing nothing). Every
mutant changes behaviour somewhere a caller can see (a value, a gradient, a metric, an error
or a NaN); a mutant found to be equivalent is removed, not kept as a free kill.

``MODULE_TESTS`` says which test files are relevant to each mutated file; ``tests`` of a
mutant names the files expected to kill it, run first so that ``pytest -x`` stops early (the
runner reports which test actually failed). ``issue`` marks the six mutants of issue 10 that
survived an independent check before the suite was strengthened.
"""

from __future__ import annotations

import dataclasses

__all__ = ["MODULE_TESTS", "MUTANTS", "Mutant", "selected_tests"]

LOSSES = "simulator/losses/reinforce.py"  # the REINFORCE family
CLIPPED = "simulator/losses/clipped.py"
PRESETS = "simulator/losses/presets.py"
TRUST_REGION = "simulator/losses/trust_region.py"  # the 2025–26 losses
COMMON = "simulator/losses/common.py"
LOSS_CALL = "simulator/loss_call.py"
AGGREGATION = "simulator/aggregation.py"
ADVANTAGES = "simulator/advantages.py"
NUMERICS = "simulator/numerics.py"
KL = "simulator/kl.py"
EXACT = "simulator/exact.py"
GROUPS = "simulator/groups.py"
SUFFICIENT = "simulator/sufficient.py"
DYNAMICS = "simulator/dynamics.py"
CORRECTIONS = "simulator/corrections/core.py"
CORR_WEIGHTS = "simulator/corrections/weights.py"
CORR_REJECTION = "simulator/corrections/rejection.py"
CORR_TERMS = "simulator/corrections/terms.py"
CORR_PROXIMAL = "simulator/corrections/proximal.py"
CORR_PRESETS = "simulator/corrections/presets.py"

GUARDS = "tests/test_mutation_guards.py"
LOSS_VALUES = "tests/test_losses.py"
CONTRACT = "tests/test_loss_call.py"
IDENTITIES = "theory_tests/test_loss_identities.py"
FUZZ = "tests/test_numerics.py"
AGG_TESTS = "tests/test_aggregation.py"
KL_TESTS = "tests/test_kl.py"
ADV_TESTS = "tests/test_advantages.py"
EXACT_VALIDATION = "tests/test_exact_validation.py"
EXACT_MAIN = "tests/test_exact.py"
EXACT_GROUPS = "tests/test_groups.py"
EXACT_SUFFICIENT = "tests/test_sufficient.py"
THEORY_OFFPOLICY = "theory_tests/test_offpolicy.py"
THEORY_REINFORCE = "theory_tests/test_reinforce.py"
THEORY_TREES = "theory_tests/test_trees.py"
THREE_POLICIES = "tests/test_exact_three_policies.py"
LAB = "tests/test_dynamics.py"
TR_VALUES = "tests/test_losses_trust_region.py"
TR_PARITY = "tests/test_parity_trust_region.py"
CORRECTION_TESTS = "tests/test_corrections.py"
CORRECTION_PARITY = "tests/test_parity_corrections.py"

_LOSS_TESTS = (LOSS_VALUES, IDENTITIES, CONTRACT, FUZZ, GUARDS)
_EXACT_TESTS = (EXACT_VALIDATION, EXACT_MAIN, EXACT_GROUPS, EXACT_SUFFICIENT, THREE_POLICIES,
                THEORY_TREES, THEORY_REINFORCE, THEORY_OFFPOLICY, GUARDS)
MODULE_TESTS: dict[str, tuple[str, ...]] = {
    LOSSES: _LOSS_TESTS,
    CLIPPED: _LOSS_TESTS,
    PRESETS: _LOSS_TESTS,
    TRUST_REGION: (TR_VALUES, TR_PARITY, CONTRACT, FUZZ, GUARDS),
    COMMON: _LOSS_TESTS,
    LOSS_CALL: (*_LOSS_TESTS, THREE_POLICIES),
    AGGREGATION: (AGG_TESTS, LOSS_VALUES, CONTRACT, GUARDS),
    ADVANTAGES: (ADV_TESTS, LOSS_VALUES, GUARDS),
    NUMERICS: (FUZZ, CONTRACT, LOSS_VALUES, GUARDS),
    KL: (KL_TESTS, THEORY_OFFPOLICY),
    EXACT: _EXACT_TESTS,
    GROUPS: _EXACT_TESTS,
    SUFFICIENT: _EXACT_TESTS,
    DYNAMICS: (THREE_POLICIES, LAB),
    **dict.fromkeys((CORRECTIONS, CORR_WEIGHTS, CORR_REJECTION, CORR_TERMS, CORR_PROXIMAL,
                     CORR_PRESETS), (CORRECTION_TESTS, CORRECTION_PARITY)),
}


@dataclasses.dataclass(frozen=True)
class Mutant:
    """``edits``: (old, new) pairs applied in order to ``path``; ``why``: the bug it stands for."""

    name: str
    path: str
    edits: tuple[tuple[str, str], ...]
    why: str
    tests: tuple[str, ...] = ()
    issue: bool = False


def selected_tests(mutant: Mutant) -> tuple[str, ...]:
    """The mutant's own test files first, then its module's, each once."""
    return tuple(dict.fromkeys((*mutant.tests, *MODULE_TESTS[mutant.path])))


def _m(name: str, path: str, old: str, new: str, why: str, *tests: str,
       issue: bool = False) -> Mutant:
    return Mutant(name, path, ((old, new),), why, tests, issue)


_LOSS_MUTANTS = [
    # --- the two loss mutants of issue 10 -----------------------------------------------
    _m("dual-clip-1-accepted", CLIPPED,
       'if require_number("dual_clip", dual_clip) <= 1:',
       'if require_number("dual_clip", dual_clip) < 1:',
       "dual_clip = 1 accepted (c must be > 1: c = 1 caps every negative sample at −A)",
       f"{CONTRACT}::test_bad_hyperparameters_raise_value_errors_naming_them", issue=True),
    _m("a-zero-counted-clipped", COMMON,
       "return ((adv >= 0) & (ratio <= 1 + eps_high)) | ((adv <= 0) & (ratio >= 1 - eps_low))",
       "return ((adv > 0) & (ratio <= 1 + eps_high)) | ((adv < 0) & (ratio >= 1 - eps_low))",
       "tokens with A = 0 counted as clipped (clipfrac inflated by zero-advantage tokens)",
       f"{GUARDS}::test_a_token_with_zero_advantage_is_never_counted_as_clipped", issue=True),
    # --- clipping masks ------------------------------------------------------------------
    _m("one-side-high-strict", COMMON,
       "return ((adv >= 0) & (ratio <= 1 + eps_high))",
       "return ((adv >= 0) & (ratio < 1 + eps_high))",
       "one-side mask drops ρ = 1 + ε_high exactly (< instead of ≤)",
       f"{GUARDS}::test_the_one_side_mask_keeps_a_ratio_exactly_on_its_boundary"),
    _m("one-side-low-strict", COMMON,
       "| ((adv <= 0) & (ratio >= 1 - eps_low))",
       "| ((adv <= 0) & (ratio > 1 - eps_low))",
       "one-side mask drops ρ = 1 − ε_low exactly (> instead of ≥)",
       f"{GUARDS}::test_the_one_side_mask_keeps_a_ratio_exactly_on_its_boundary"),
    _m("one-side-eps-swapped", COMMON,
       "return ((adv >= 0) & (ratio <= 1 + eps_high)) | ((adv <= 0) & (ratio >= 1 - eps_low))",
       "return ((adv >= 0) & (ratio <= 1 + eps_low)) | ((adv <= 0) & (ratio >= 1 - eps_high))",
       "ε_low and ε_high swapped in the one-side mask (DAPO's clip-higher lost)",
       f"{LOSS_VALUES}::test_rec_oneside_widened_clip"),
    _m("one-side-sign-flip", COMMON,
       "return ((adv >= 0) & (ratio <= 1 + eps_high)) | ((adv <= 0) & (ratio >= 1 - eps_low))",
       "return ((adv <= 0) & (ratio <= 1 + eps_high)) | ((adv >= 0) & (ratio >= 1 - eps_low))",
       "the one-side mask's bounds attached to the wrong sign of A",
       f"{LOSS_VALUES}::test_rec_oneside_nois"),
    _m("two-side-eps-swapped", COMMON,
       "return (ratio >= 1 - eps_low) & (ratio <= 1 + eps_high)",
       "return (ratio >= 1 - eps_high) & (ratio <= 1 + eps_low)",
       "ε_low and ε_high swapped in the two-side band",
       f"{GUARDS}::test_the_two_side_band_keeps_both_of_its_ends"),
    _m("ring-outer-low-sign", COMMON,
       "outer_low = (adv >= 0) & (ratio <= 1 - eps_low_prime)",
       "outer_low = (adv <= 0) & (ratio <= 1 - eps_low_prime)",
       "ring's lower outer band kept for A ≤ 0 instead of A ≥ 0",
       f"{LOSS_VALUES}::test_rec_ring_nois"),
    _m("ring-outer-high-eps", COMMON,
       "outer_high = (adv <= 0) & (ratio >= 1 + eps_high_prime)",
       "outer_high = (adv <= 0) & (ratio >= 1 + eps_low_prime)",
       "ring's upper outer band at 1 + ε'_low instead of 1 + ε'_high",
       f"{LOSS_VALUES}::test_rec_ring_with_wide_outer_band_is_two_side"),
    _m("ppo-clamp-eps-swapped", COMMON,
       "clipped = mul(-adv, ratio.clamp(1 - eps_low, 1 + eps_high))",
       "clipped = mul(-adv, ratio.clamp(1 - eps_high, 1 + eps_low))",
       "PPO's clip(ρ, 1 − ε_low, 1 + ε_high) with the two ε swapped",
       f"{LOSS_VALUES}::test_dapo_keeps_gradient_grpo_clips_between_1_2_and_1_28"),
    # --- ratios, weights, detaching --------------------------------------------------------
    _m("log-ratio-reversed", NUMERICS,
       "return finite(logp - logp_old)", "return finite(logp_old - logp)",
       "ρ computed as π_old/π (δ = log π_old − log π)",
       f"{LOSS_VALUES}::test_metrics_approx_kl_and_ratio_mean"),
    _m("rec-is-weight-not-detached", LOSSES,
       "ratio = token_ratio(logp, logp_old).detach()\n    seq_ratio = (",
       "ratio = token_ratio(logp, logp_old)\n    seq_ratio = (",
       "REC's IS weight ρ not detached (gradient gets an extra −A·ρ·log π·∇log π)",
       f"{LOSS_VALUES}::test_rec_oneside_is"),
    _m("cispo-weight-not-detached", CLIPPED,
       "ratio = token_ratio(logp, logp_old).detach()\n    weight = ratio.clamp(",
       "ratio = token_ratio(logp, logp_old)\n    weight = ratio.clamp(",
       "CISPO's clipped IS weight not detached",
       f"{LOSS_VALUES}::test_cispo_truncated_weight_keeps_every_gradient"),
    _m("gspo-token-seq-ratio-not-detached", CLIPPED,
       'seq_ratio = numerics.exp(sequence_log_ratio(logp, logp_old, mask, "mean")).detach()',
       'seq_ratio = numerics.exp(sequence_log_ratio(logp, logp_old, mask, "mean"))',
       "GSPO-token's sg(s_i) without the stop-gradient",
       f"{LOSS_VALUES}::test_gspo_default_eps"),
    _m("gspo-sum-of-delta", CLIPPED,
       'sequence_log_ratio(logp, logp_old, mask, "mean")).unsqueeze(-1)',
       'sequence_log_ratio(logp, logp_old, mask, "sum")).unsqueeze(-1)',
       "GSPO's sequence ratio from Σ_t δ instead of mean_t δ",
       f"{LOSS_VALUES}::test_gspo_default_eps"),
    _m("logp-masked-not-zeroed", LOSS_CALL,
       "logp = numerics.upcast(torch.where(mask, logp, zero))",
       "logp = numerics.upcast(logp)",
       "padded positions of logp reach the loss math (a NaN there poisons the gradient)",
       f"{LOSS_VALUES}::test_gspo_default_eps"),
    _m("logp-old-not-detached", LOSS_CALL,
       "logp_old = torch.where(mask, logp_old.detach(), zero)",
       "logp_old = torch.where(mask, logp_old, zero)",
       "logp_old not treated as a constant",
       f"{CONTRACT}::test_logp_old_and_advantages_are_constants"),
    # --- dual clip and metrics ---------------------------------------------------------
    _m("dual-clip-on-positive-a", CLIPPED,
       "dual = (adv < 0) & (loss > cap)", "dual = (adv != 0) & (loss > cap)",
       "dual clip applied to A > 0 as well",
       f"{LOSS_VALUES}::test_ppo_dual_clip"),
    _m("dual-clip-not-in-clipfrac", CLIPPED,
       'return TokenLoss(loss, removed | dual.detach(), {"dual_clipped"',
       'return TokenLoss(loss, removed, {"dual_clipped"',
       "clipfrac misses the tokens the dual clip removed",
       f"{LOSS_VALUES}::test_ppo_dual_clip"),
    _m("pg-clipfrac-includes-dual", LOSS_CALL,
       '"pg_clipfrac": out.clipped & ~dual,', '"pg_clipfrac": out.clipped,',
       "verl's pg_clipfrac counting the dual-clipped tokens too",
       f"{GUARDS}::test_pg_clipfrac_and_pg_clipfrac_lower_split_the_clip_as_verl_does"),
    _m("approx-kl-sign", LOSS_CALL,
       '"approx_kl": -log_ratio,', '"approx_kl": log_ratio,',
       "approx_kl = mean(log π − log π_old) instead of log π_old − log π",
       f"{LOSS_VALUES}::test_metrics_approx_kl_and_ratio_mean"),
    _m("ppo-kl-unclamped", LOSS_CALL,
       '"ppo_kl": -log_ratio.clamp(-PEER_LOG_RATIO_CLAMP, PEER_LOG_RATIO_CLAMP),',
       '"ppo_kl": -log_ratio,',
       "verl's ppo_kl without its ±20 clamp of δ",
       f"{GUARDS}::test_ppo_kl_clamps_the_log_ratio_at_twenty_as_verl_does"),
    # --- regularisers and the REP/RED family ---------------------------------------------
    _m("k2-regularizer-half", LOSSES,
       "return finite(_log_ratio(logp, logp_old) ** 2)",
       "return finite(0.5 * _log_ratio(logp, logp_old) ** 2)",
       "REC's k2 regulariser with Kimi's ½ (Trinity absorbs it into reg_coef)",
       f"{LOSS_VALUES}::test_rec_k2_regularizer"),
    _m("kimi-sequence-penalty-no-half", LOSSES,
       "penalty = spread_over_tokens(mul(0.5 * tau, finite(seq**2)), mask)",
       "penalty = spread_over_tokens(mul(tau, finite(seq**2)), mask)",
       "OPMD-Kimi's (τ/2)·δ² without the ½",
       f"{LOSS_VALUES}::test_opmd_kimi_sequence_level"),
    _m("forward-kl-sign", LOSSES,
       "    return -logp\n", "    return logp\n",
       "forward-KL regulariser +log π instead of −log π",
       f"{LOSS_VALUES}::test_rec_forward_kl_regularizer"),
    _m("red-weight-temp-multiplied", LOSSES,
       "numerics.exp(adv / temp)", "numerics.exp(adv * temp)",
       "RED-Weight e^{A·T} instead of e^{A/T}",
       f"{LOSS_VALUES}::test_rec_advantage_weight_temperature"),
    _m("asymre-beta-sign", LOSSES,
       "mul(-finite(adv + beta), logp)", "mul(-finite(adv - beta), logp)",
       "AsymRE's baseline shifted up instead of down",
       f"{LOSS_VALUES}::test_asymre"),
    _m("opmd-trinity-denominator", LOSSES,
       "mul(-adv, logp) / (1.0 + tau)", "mul(-adv, logp) / tau",
       "Trinity's OPMD −A·log π/τ instead of /(1 + τ)",
       f"{LOSS_VALUES}::test_opmd_trinity"),
    _m("topr-taper-on-nonnegative", LOSSES,
       "alpha = torch.where(adv <= threshold, taper, torch.ones_like(taper))",
       "alpha = torch.where(adv >= threshold, taper, torch.ones_like(taper))",
       "TOPR's taper applied to A ≥ 0 instead of A ≤ 0",
       f"{LOSS_VALUES}::test_topr_sequence_taper"),
    _m("topr-sequence-mean-ratio", LOSSES,
       "log_ratio = sequence_sum(log_ratio, mask).unsqueeze(-1)",
       "log_ratio = sequence_mean(log_ratio, mask).unsqueeze(-1)",
       "TOPR's trajectory ratio π/μ from the mean of δ instead of the sum",
       f"{LOSS_VALUES}::test_topr_sequence_taper"),
    _m("sppo-trinity-band", LOSSES,
       "keep = (ratio >= 1 / (1 + eps))", "keep = (ratio >= 1 - eps)",
       "sPPO's lower bound 1 − ε instead of 1/(1 + ε)",
       f"{GUARDS}::test_sppo_trinity_keeps_the_band_from_one_over_one_plus_eps"),
    _m("pairwise-surrogate-over-k", LOSS_CALL,
       "/ rewards.shape[1] ** 2", "/ rewards.shape[1]",
       "the pairwise surrogate divided by K instead of K²",
       f"{LOSS_VALUES}::test_pairwise_surrogate_k3_explicit_pairs"),
    _m("group-clipfrac-in-loss-aggregation", LOSS_CALL,
       'aggregate(clipped, loss_mask, "token-mean")', "aggregate(clipped, loss_mask, call.agg)",
       "a group's clip fraction aggregated like the loss instead of per valid token",
       f"{EXACT_MAIN}::test_group_losses_is_policy_loss_of_each_group_for_every_loss_and_aggregation"),
    # --- presets -------------------------------------------------------------------------
    _m("grpo-preset-token-mean", PRESETS,
       'register_preset("grpo", "ppo", advantage="mean-std", agg="seq-mean-token-mean",',
       'register_preset("grpo", "ppo", advantage="mean-std", agg="token-mean",',
       "the grpo preset aggregating by token-mean (the GRPO paper averages per response)",
       f"{LOSS_VALUES}::test_bnpo_is_the_token_mean_and_grpo_the_sequence_mean"),
    _m("dapo-preset-no-clip-higher", PRESETS,
       "eps_low=0.2, eps_high=0.28,", "eps_low=0.2, eps_high=0.2,",
       "the dapo preset without clip-higher",
       f"{LOSS_VALUES}::test_dapo_clip_higher"),
    _m("rec-presets-std-normalised", PRESETS,
       'clip=_clip, weight=_weight, advantage="mean",',
       'clip=_clip, weight=_weight, advantage="mean-std",',
       "REC presets dividing the advantage by the group std (REC does not)",
       f"{LOSS_VALUES}::test_preset_binds_what_its_paper_says"),
]

_AGGREGATION_MUTANTS = [
    _m("token-mean-counts-padding", AGGREGATION,
       "count = mask.sum(dim=(-2, -1))",
       "count = torch.full(mask.shape[:-2], mask.shape[-2] * mask.shape[-1], "
       "device=mask.device)",
       "token-mean's normaliser counting padded positions",
       f"{AGG_TESTS}::test_aggregation_modes", issue=True),
    _m("seq-mean-divides-by-valid-rows", AGGREGATION,
       "count = torch.full(mask.shape[:-2], mask.shape[-2], device=mask.device)",
       "count = (mask.sum(dim=-1) > 0).sum(dim=-1)",
       "seq-mean-* dividing by B′ (rows with a valid token) for rows='all'",
       f"{AGG_TESTS}::test_aggregation_modes"),
    _m("sum-norm-uses-padded-width", AGGREGATION,
       "return row_sum / norm_len", "return row_sum / per_token.shape[-1]",
       "seq-mean-token-sum-norm dividing by the padded width instead of norm_len",
       f"{AGG_TESTS}::test_aggregation_modes"),
    _m("seq-mean-token-mean-padded-length", AGGREGATION,
       "return row_sum / mask.to(per_token.dtype).sum(dim=-1).clamp(min=1.0)",
       "return row_sum / per_token.shape[-1]",
       "seq-mean-token-mean dividing each row by T instead of its valid length",
       f"{AGG_TESTS}::test_aggregation_modes"),
    _m("seq-mean-token-mean-empty-row-nan", AGGREGATION,
       "return row_sum / mask.to(per_token.dtype).sum(dim=-1).clamp(min=1.0)",
       "return row_sum / mask.to(per_token.dtype).sum(dim=-1)",
       "an empty row's length 0 not clamped (0/0 = NaN)",
       f"{AGG_TESTS}::test_aggregation_modes"),
    _m("normaliser-unclamped", AGGREGATION,
       "return count.to(torch.float64).clamp(min=1.0)", "return count.to(torch.float64)",
       "an all-masked batch's normaliser 0 (0/0 = NaN)",
       f"{AGG_TESTS}::test_aggregation_of_empty_mask_is_exactly_zero"),
    _m("masked-mean-over-padding", AGGREGATION,
       "/ mask.to(values.dtype).sum().clamp(\n        min=1.0)", "/ values.numel()",
       "metrics averaged over padded positions too",
       f"{AGG_TESTS}::test_sequence_helpers"),
    _m("sequence-sum-multiplies-mask", AGGREGATION,
       "return safe_sum(torch.where(mask, values, values.new_zeros(())), dim=-1)",
       "return safe_sum(values * mask, dim=-1)",
       "masking by multiplication: a NaN or inf at a padded position leaks (NaN·0 = NaN)",
       f"{AGG_TESTS}::test_aggregation_modes"),
    _m("float-denominator-ignored", AGGREGATION,
       'return terms / require_positive("denominator", denominator)',
       "return terms / normaliser(mask, mode, rows=rows).to(per_token.dtype)",
       "a float denominator (the global token count) silently ignored",
       f"{CONTRACT}::test_bad_aggregation_arguments"),
]

_ADVANTAGE_MUTANTS = [
    _m("mean-baseline-not-centred", ADVANTAGES,
       "        return mean, 1.0\n", "        return torch.zeros_like(mean), 1.0\n",
       "the group-mean baseline dropped (A = r)",
       f"{ADV_TESTS}::test_mean_baseline_per_group"),
    _m("std-population-sample-swapped", ADVANTAGES,
       'correction = 0 if std == "population" else 1',
       'correction = 1 if std == "population" else 0',
       "population and sample std swapped (ddof 0 ↔ 1)",
       f"{ADV_TESTS}::test_mean_std_population_eps_zero"),
    _m("eps-under-the-root", ADVANTAGES,
       "torch.where(sigma > 0, sigma + eps, torch.ones_like(sigma))",
       "torch.where(sigma > 0, (sigma**2 + eps).sqrt(), torch.ones_like(sigma))",
       "eps added to the variance instead of the std",
       f"{ADV_TESTS}::test_mean_std_default_eps_is_added_to_sigma"),
    _m("shift-sign", ADVANTAGES,
       "advantages = (rewards - baseline + shift) / scale",
       "advantages = (rewards - baseline - shift) / scale",
       "the AsymRE shift moving the baseline up",
       f"{ADV_TESTS}::test_mean_with_shift_is_asymre_baseline"),
    _m("shift-not-scaled", ADVANTAGES,
       "advantages = (rewards - baseline + shift) / scale",
       "advantages = (rewards - baseline) / scale + shift",
       "the shift added after the std division",
       f"{ADV_TESTS}::test_mean_std_shift_is_divided_by_sigma"),
    _m("loo-divides-by-k", ADVANTAGES,
       "- rewards) / (k - 1), 1.0", "- rewards) / k, 1.0",
       "leave-one-out mean over K instead of K − 1",
       f"{ADV_TESTS}::test_loo"),
    _m("logavgexp-no-tau", ADVANTAGES,
       "return top + tau * torch.log(soft), 1.0", "return top + torch.log(soft), 1.0",
       "logavgexp baseline without the τ in front of the log",
       f"{ADV_TESTS}::test_logavgexp"),
    _m("logavgexp-overflows", ADVANTAGES,
       "soft = torch.exp((rewards - top) / tau).mean(dim=1, keepdim=True)\n"
       "        return top + tau * torch.log(soft), 1.0",
       "soft = torch.exp(rewards / tau).mean(dim=1, keepdim=True)\n"
       "        return tau * torch.log(soft), 1.0",
       "logavgexp without the max shift (e^{r/τ} overflows for r/τ > 709)",
       f"{ADV_TESTS}::test_logavgexp_tends_to_the_mean_for_large_tau_and_to_the_max_for_small_tau"),
    _m("uniform-group-not-zeroed", ADVANTAGES,
       "return torch.where(is_uniform(rewards), torch.full_like(advantages, shift), advantages)",
       "return advantages",
       "uniform groups not forced to 0 (round-off/σ becomes ±1 advantages)",
       f"{ADV_TESTS}::test_uniform_group_of_inexact_rewards_mean_std_eps_zero_is_zero"),
    _m("batch-std-per-group", ADVANTAGES,
       "sigma = rewards.flatten().std(correction=correction).reshape(1, 1)",
       "sigma = rewards.std(dim=1, keepdim=True, correction=correction)",
       "mean-batch-std using each group's std",
       f"{GUARDS}::test_the_batch_std_is_taken_over_every_reward_of_the_batch"),
    _m("red-drop-mean-is-negative", ADVANTAGES,
       "negative = rewards - mean < -tol", "negative = rewards - mean < tol",
       "RED-Drop counting a sample at the mean as negative (positives r > r̄, not r ≥ r̄)",
       f"{ADV_TESTS}::test_red_drop_uniform_group_keeps_all_with_zero_advantage"),
    _m("red-drop-keeps-surplus", ADVANTAGES,
       "n_keep_negative = torch.minimum(", "n_keep_negative = torch.maximum(",
       "RED-Drop keeping every negative",
       f"{ADV_TESTS}::test_red_drop_one_positive_three_negatives_enumerated"),
    _m("red-drop-not-recentred", ADVANTAGES,
       "torch.where(signal, rewards - kept_mean, torch.zeros_like(rewards))",
       "torch.where(signal, rewards - mean, torch.zeros_like(rewards))",
       "RED-Drop's advantages centred on the full group's mean, not the kept samples'",
       f"{ADV_TESTS}::test_red_drop_one_positive_three_negatives_enumerated"),
    _m("dapo-filter-inverted", ADVANTAGES,
       "keep = keep & ~is_uniform(rewards)", "keep = keep & is_uniform(rewards)",
       "DAPO's filter keeping only the uniform groups",
       f"{ADV_TESTS}::test_preset_advantage_kind"),
]

_NUMERICS_MUTANTS = [
    _m("exp-unclamped", NUMERICS,
       "return torch.exp(x.clamp(max=LOG_MAX))", "return torch.exp(x)",
       "e^δ without the clamp at log(max): inf beyond δ = 709.78",
       f"{FUZZ}::test_every_loss_is_finite_on_extreme_inputs_in_every_dtype"),
    _m("finite-is-identity", NUMERICS,
       "limit = torch.finfo(x.dtype).max\n    return x.clamp(-limit, limit)\n",
       "return x\n", "finite() no longer saturates ±inf",
       f"{FUZZ}::test_every_loss_is_finite_on_extreme_inputs_in_every_dtype"),
    _m("mul-unsaturated", NUMERICS,
       "return finite(a * b)", "return a * b", "products overflow to ±inf",
       f"{FUZZ}::test_every_loss_is_finite_on_extreme_inputs_in_every_dtype"),
    _m("safe-sum-unscaled", NUMERICS,
       "return finite((x * _SCALE_DOWN).sum(dim=dim) * _SCALE_UP)",
       "return finite(x.sum(dim=dim))",
       "sums of saturated terms of both signs give inf − inf = NaN",
       f"{GUARDS}::test_saturated_terms_of_both_signs_sum_to_their_true_total"),
    _m("upcast-gradient-unsaturated", NUMERICS,
       "return grad.clamp(-limit, limit).to(ctx.dtype)", "return grad.to(ctx.dtype)",
       "an fp16 gradient beyond 65504 becomes inf",
       f"{FUZZ}::test_every_loss_is_finite_on_extreme_inputs_in_every_dtype"),
    _m("downcast-unsaturated", NUMERICS,
       "return x.clamp(-limit, limit).to(dtype)", "return x.to(dtype)",
       "a float64 value beyond float32's max rounds to inf",
       f"{FUZZ}::test_every_loss_is_finite_on_extreme_inputs_in_every_dtype"),
]

_KL_MUTANTS = [
    _m("kl-k2-no-half", KL,
       "0.5 * numerics.log_ratio(logp, logp_ref) ** 2", "numerics.log_ratio(logp, logp_ref) ** 2",
       "k2 = δ² instead of ½δ²",
       f"{KL_TESTS}::test_k2"),
    _m("kl-k3-sign", KL,
       "log_r.clamp(max=numerics.LOG_MAX)) - log_r)", "log_r.clamp(max=numerics.LOG_MAX)) + log_r)",
       "k3 = (r − 1) + log r",
       f"{KL_TESTS}::test_k3"),
]

_EXACT_MUTANTS = [
    # --- the three exact-engine mutants of issue 10 ---------------------------------------
    _m("closed-form-unequal-token-mean", EXACT,
       "    if float(counts[0]) != float(counts[1]):\n        return None\n", "",
       "the closed form used for token-mean over responses of unequal length",
       f"{EXACT_VALIDATION}::test_closed_form_is_not_used_for_token_mean_over_unequal_lengths",
       issue=True),
    _m("closed-form-drops-shift", EXACT,
       'beta + float(kwargs.get("shift", 0.0))', "beta",
       "the closed form dropping the advantage shift",
       f"{EXACT_VALIDATION}::test_closed_form_keeps_the_advantage_shift", issue=True),
    _m("sampled-stderr-ddof-0", EXACT,
       "var = per_prompt.var(dim=1, correction=1)", "var = per_prompt.var(dim=1, correction=0)",
       "the sampled gradient's standard error from the population variance",
       f"{EXACT_VALIDATION}::test_sampled_standard_error_uses_the_sample_variance", issue=True),
    # --- closed form --------------------------------------------------------------------
    _m("closed-form-loo-factor", EXACT,
       'factor = (1.0 - 1.0 / k) if kind == "mean" else float(k > 1)',
       "factor = 1.0 - 1.0 / k",
       "the closed form's c_K of the mean baseline used for leave-one-out",
       f"{EXACT_VALIDATION}::test_closed_form_keeps_the_advantage_shift"),
    _m("closed-form-not-centred", EXACT,
       "centred = env.rewards - (mu * env.rewards).sum(-1, keepdim=True)",
       "centred = env.rewards",
       "the closed form without E_μ r",
       f"{EXACT_VALIDATION}::test_closed_form_keeps_the_advantage_shift"),
    _m("closed-form-for-std-advantages", EXACT,
       'if kind not in ("mean", "loo") or', 'if kind not in ("mean", "loo", "mean-std") or',
       "the closed form used for std-normalised advantages",
       f"{GUARDS}::test_std_normalised_advantages_never_take_the_closed_form"),
    # --- enumeration and batches ----------------------------------------------------------
    _m("multinomial-coefficient-off-by-one", GROUPS,
       "return math.lgamma(k + 1) - torch.log(rank).sum(dim=1)",
       "return math.lgamma(k) - torch.log(rank).sum(dim=1)",
       "multiset weights with (K − 1)! instead of K!",
       f"{EXACT_VALIDATION}::test_closed_form_is_not_used_for_token_mean_over_unequal_lengths"),
    _m("chunks-drop-a-multiset", GROUPS,
       "yield outcomes[start:start + size], log_coef[start:start + size]",
       "yield outcomes[start:start + size - 1], log_coef[start:start + size - 1]",
       "streamed enumeration missing the last group of every piece",
       f"{EXACT_SUFFICIENT}::test_evaluation_in_pieces_equals_one_piece"),
    _m("batch-loss-not-averaged-over-prompts", GROUPS,
       "return (prepared.weight * groups.loss).sum() / env.num_prompts, clipfrac",
       "return (prepared.weight * groups.loss).sum(), clipfrac",
       "the exact loss summed over prompts instead of averaged",
       f"{EXACT_MAIN}::test_closed_form_fast_path_agrees_with_enumeration"),
    _m("on-policy-behaviour-not-detached", GROUPS,
       "return env.sequence_probs(logits.detach().to(torch.float64))",
       "return env.sequence_probs(logits.to(torch.float64))",
       "the on-policy behaviour differentiated through the group probabilities",
       THEORY_REINFORCE),  # killed by claim 5b's generated test (run.py checks only `def` names)
    _m("sufficient-coefficient-off-by-one", SUFFICIENT,
       "self.log_coef = math.lgamma(k) - torch.lgamma(",
       "self.log_coef = math.lgamma(k + 1) - torch.lgamma(",
       "the law of the K − 1 other members with K! instead of (K − 1)!",
       f"{EXACT_SUFFICIENT}::test_sufficient_statistics_equal_the_enumeration"),
    # --- several prompts, an upstream gradient, a callable behaviour -----------------------
    # (the suite once used one prompt, an upstream gradient of 1 and tables as behaviours,
    # under which each of these is invisible)
    _m("accumulate-ignores-upstream-gradient", GROUPS,
       "return grad_value * grad, None", "return grad, None",
       "the piecewise expectation's backward treating its upstream gradient as 1",
       f"{EXACT_SUFFICIENT}::test_a_function_of_the_expectation_in_pieces_follows_the_chain_rule"),
    _m("callable-behaviour-differentiated", GROUPS,
       "behavior = behavior(logits.detach())", "behavior = behavior(logits)",
       "a callable behaviour given differentiable logits (μ not held fixed in the gradient)",
       f"{EXACT_MAIN}::test_a_callable_behaviour_is_held_fixed_while_the_gradient_is_taken"),
    _m("covariance-weights-normalised-over-prompts", EXACT,
       "weight = batch.weight.unsqueeze(-1)",
       "weight = (batch.weight / batch.weight.sum()).unsqueeze(-1)",
       "the covariance's group weights normalised over all prompts instead of per prompt",
       f"{EXACT_MAIN}::test_each_prompts_covariance_is_the_brute_force_sum_over_its_own_ordered"
       "_groups"),
    _m("covariance-sums-every-prompts-groups", EXACT,
       "g, w = own[rows], weight[rows]", "g, w = own, weight",
       "each prompt's covariance summed over every prompt's groups",
       f"{EXACT_MAIN}::test_each_prompts_covariance_is_the_brute_force_sum_over_its_own_ordered"
       "_groups"),
    _m("covariance-gradient-of-prompt-0", EXACT,
       "torch.arange(len(batch.weight)), batch.prompt]", "torch.arange(len(batch.weight)), 0]",
       "a group's gradient read at prompt 0's logits instead of its own prompt's",
       f"{EXACT_MAIN}::test_each_prompts_covariance_is_the_brute_force_sum_over_its_own_ordered"
       "_groups"),
    _m("sufficient-loss-not-averaged-over-prompts", SUFFICIENT,
       "value = (rows.weight[part] * row_terms).sum() / env.num_prompts",
       "value = (rows.weight[part] * row_terms).sum()",
       "the statistics engine's loss summed over prompts instead of averaged",
       f"{EXACT_SUFFICIENT}::test_sufficient_statistics_equal_the_enumeration"),
    _m("closed-form-baseline-over-every-prompt", EXACT,
       "centred = env.rewards - (mu * env.rewards).sum(-1, keepdim=True)",
       "centred = env.rewards - (mu * env.rewards).sum() / env.num_prompts",
       "the closed form's E_μ r averaged over every prompt instead of taken per prompt",
       f"{EXACT_MAIN}::test_closed_form_fast_path_agrees_with_enumeration"),
]

# --- three policies: μ samples, the loss's ratio is against π_old ---------------------------
_THREE = THREE_POLICIES
_THREE_POLICY_MUTANTS = [
    _m("group-losses-corrections-over-all-groups", LOSS_CALL,
       "split = [t.reshape(groups, -1, *t.shape[1:])", "split = [t.reshape(1, -1, *t.shape[1:])",
       "group_losses normalising a correction over all G·K rows, not each group's K",
       f"{_THREE}::test_group_losses_applies_the_corrections_per_group"),
    _m("engines-never-pass-rollout-log-probs", GROUPS,
       'if not distinct and "logp_rollout" not in setup.spec.inputs:', "if True:",
       "the exact engines giving the loss no logp_rollout: corrections see μ = π_old",
       f"{_THREE}::test_truncated_is_has_the_bias_theory_predicts"),
    _m("per-call-anchor-ignored", GROUPS,
       "anchor = setup.anchor if anchor is None else anchor", "anchor = setup.anchor",
       "an anchor given per call (the lab's π_old) ignored: the ratio taken against μ",
       f"{_THREE}::test_statistics_take_a_per_call_anchor_like_the_enumeration"),
    _m("group-gradients-without-rollout", EXACT,
       "logp_rollout=None if distinct is None else rollout,", "logp_rollout=None,",
       "per-group gradients (covariance, sampler) computed with μ = π_old in the corrections",
       f"{_THREE}::test_per_group_gradients_and_the_ordered_twin_equal_the_enumeration"),
    _m("closed-form-ignores-corrections", EXACT,
       "if setup.all_corrections() or spec.inputs:", "if spec.inputs:",
       "REINFORCE's closed form used with an IS weight or mask it does not have",
       f"{_THREE}::test_the_closed_form_steps_aside_for_corrections"),
    _m("auto-picks-statistics-it-refuses", EXACT,
       'if corrections_refusal(setup) is not None:\n        return "enumerate"\n', "pass\n",
       "method='auto' choosing the statistics engine for a correction it refuses",
       f"{_THREE}::test_statistics_refuse_corrections_of_the_whole_group"),
    _m("statistics-rows-without-rollout", SUFFICIENT,
       "logp_rollout=None if rollout is None else rollout[part].unsqueeze(1),",
       "logp_rollout=None,",
       "the statistics engine's rows corrected with μ = π_old",
       f"{_THREE}::test_statistics_equal_enumeration_for_per_response_corrections"),
    _m("statistics-probe-off", SUFFICIENT,
       "reason = _probe_corrections(corrections)", "reason = None",
       "a correction that couples rows accepted by the statistics engine",
       f"{_THREE}::test_statistics_probe_refuses_a_correction_that_couples_rows"),
    _m("lab-samples-from-pi-old", DYNAMICS,
       "mu_flat = (mu if rollout is None else rollout).reshape(runs.env.rewards.shape)",
       "mu_flat = mu.reshape(runs.env.rewards.shape)",
       "the lab's mismatched sampler ignored: groups drawn from π_old",
       f"{_THREE}::test_one_lab_step_is_the_exact_gradient_under_the_tempered_sampler"),
    _m("lab-ratio-against-mu", DYNAMICS,
       "value, clipped = lab.update_value(runs.logits(leaf), mu_flat, batch, anchor)",
       "value, clipped = lab.update_value(runs.logits(leaf), mu_flat, batch)",
       "the lab's loss ratio taken against the sampler μ instead of π_old",
       f"{_THREE}::test_one_lab_step_is_the_exact_gradient_under_the_tempered_sampler"),
    _m("lab-temperature-multiplies", DYNAMICS,
       "torch.tensor([1.0 / sch.rollout_temperature", "torch.tensor([sch.rollout_temperature",
       "the sampler's logits multiplied by T instead of divided",
       f"{_THREE}::test_one_lab_step_is_the_exact_gradient_under_the_tempered_sampler"),
]

_TRUST_REGION_MUTANTS = [
    # --- one per 2025–26 loss and preset (simulator/losses/trust_region.py, presets.py) ------
    _m("sapo-temperatures-swapped", TRUST_REGION,
       "tau = torch.where(adv > 0, adv.new_tensor(tau_pos), adv.new_tensor(tau_neg))",
       "tau = torch.where(adv > 0, adv.new_tensor(tau_neg), adv.new_tensor(tau_pos))",
       "SAPO's τ_pos given to negative advantages and τ_neg to positive ones",
       f"{TR_VALUES}::test_sapo_surrogate_and_weight_forms"),
    _m("gmpo-clip-direction-reversed", TRUST_REGION,
       "tilde = sign * torch.minimum(sign * delta, sign * clamped)",
       "tilde = sign * torch.maximum(sign * delta, sign * clamped)",
       "GMPO's log-space clip taken on the wrong side (the pessimistic min lost)",
       f"{TR_VALUES}::test_gmpo_clips_in_log_space_and_takes_the_geometric_mean"),
    _m("dppo-tv-eps-swapped", TRUST_REGION,
       "keep = torch.where(adv > 0, change <= eps_high, change >= -eps_low)",
       "keep = torch.where(adv > 0, change <= eps_low, change >= -eps_high)",
       "DPPO-TV's ε_low and ε_high swapped (equal by default: only a non-default ε sees it)",
       f"{TR_PARITY}::test_dppo_is_verls_dppo"),
    _m("dppo-kl-negative-side-flipped", TRUST_REGION,
       "(binary_kl <= eps_low) | (p >= p_old))",
       "(binary_kl <= eps_low) | (p <= p_old))",
       "DPPO-KL keeps a negative-advantage token whose probability fell past the KL bound",
       f"{TR_VALUES}::test_dppo_kl_masks_by_the_binary_kl"),
    _m("vespo-not-normalised-at-one", TRUST_REGION,
       "log_phi = finite(lam + mul(k, log_w) - mul(lam, numerics.exp(log_w)))",
       "log_phi = finite(mul(k, log_w) - mul(lam, numerics.exp(log_w)))",
       "VESPO's gamma weight without e^λ: φ(1) = e^−λ, on-policy VESPO no longer REINFORCE",
       f"{TR_VALUES}::test_vespo_weight_is_one_on_policy"),
    _m("m2po-inactive-quadrants", TRUST_REGION,
       "candidates = mask & (((adv > 0) & (drift > 0)) | ((adv < 0) & (drift < 0)))",
       "candidates = mask & (((adv > 0) & (drift < 0)) | ((adv < 0) & (drift > 0)))",
       "M2PO's second moment taken over the quadrants PPO does not act on",
       f"{TR_VALUES}::test_m2po_paper_variant_drops_the_largest_second_moments_of_the_active"
       "_quadrants"),
    _m("clip-cov-smallest-covariance", TRUST_REGION,
       "chosen = _top_ranked(cov, band, n)", "chosen = _top_ranked(-cov, band, n)",
       "Clip-Cov's deterministic reading switching off the smallest covariance in the band",
       f"{TR_VALUES}::test_clip_cov_switches_off_the_largest_covariance_in_the_band"),
    _m("kl-cov-signed-penalty", TRUST_REGION,
       "penalty = mul(ppo_kl_coef, _log_ratio(logp, logp_old).abs())",
       "penalty = mul(ppo_kl_coef, _log_ratio(logp, logp_old))",
       "KL-Cov's penalty on δ instead of |δ| (rewards moving away for δ < 0)",
       f"{TR_VALUES}::test_kl_cov_penalises_the_largest_covariance"),
    _m("dro-sequence-level", PRESETS,
       'register_preset("dro", "opmd-kimi", level="token"',
       'register_preset("dro", "opmd-kimi", level="sequence"',
       "DRO's square taken on the sequence log-ratio (Kimi's) instead of per token (verl's)",
       f"{TR_PARITY}::test_dro_is_verls_dro_with_tau_as_dro_beta"),
    _m("cispo-scalerl-epsilon-max-as-eps", PRESETS,
       'register_preset("cispo-scalerl", "cispo", eps_low=1.0, eps_high=4.0,',
       'register_preset("cispo-scalerl", "cispo", eps_low=1.0, eps_high=5.0,',
       "ScaleRL's ε_max = 5 bound as ε_high = 5 (a cap of 6 instead of 5)",
       f"{TR_VALUES}::test_cispo_scalerl_caps_the_weight_at_five_without_a_lower_bound"),
    _m("decoupled-ppo-truncates", PRESETS,
       'corrections="mis-token:high=5.0",', 'corrections="tis-token:high=5.0",',
       "decoupled PPO truncating the IS weight at 5 instead of dropping the token (AReaL masks)",
       f"{TR_VALUES}::test_decoupled_ppo_weights_by_pi_old_over_mu_and_drops_weights_above_five"),
]

_CORRECTION_MUTANTS = [
    _m("reject-k1-sign", CORR_REJECTION,
       'signed = log_ratio if direction == "mu-pi" else -log_ratio',
       'signed = -log_ratio if direction == "mu-pi" else log_ratio',
       "verl's k1 = log(μ/π) and AReaL's k1 = log(π/μ) swapped (and k3's direction with them)",
       f"{CORRECTION_TESTS}::test_reject_token_level_statistics_by_hand"),
    _m("reject-ratio-arithmetic-mean", CORR_REJECTION,
       "_row_aggregate(log_r, mask, aggregate).unsqueeze(-1).expand_as(log_r)",
       "torch.log(_row_aggregate(numerics.exp(log_r), mask, aggregate)).unsqueeze(-1)"
       ".expand_as(log_r)",
       "the ratio's sequence mean taken arithmetically (the 'length trap') instead of in log "
       "space (geometric mean, product)",
       f"{CORRECTION_TESTS}::test_reject_sequence_aggregates_by_hand"),
    _m("reject-keeps-denominator", CORR_REJECTION,
       'direction: str = "mu-pi", denominator: str = "drop") -> Stage:',
       'direction: str = "mu-pi", denominator: str = "keep") -> Stage:',
       "verl's rejection leaves a rejected token in the token-mean denominator",
       f"{CORRECTION_TESTS}::test_reject_drops_from_the_denominator_by_default_and_keeps_on"
       "_request"),
    _m("geo-rs-bounds-not-logged", CORR_PRESETS,
       "low=math.log(0.999),\n    high=math.log(1.001)", "low=0.999,\n    high=1.001",
       "verl's Geo-RS ratio bounds used as bounds on k1 = log(μ/π) without the log",
       f"{CORRECTION_PARITY}::test_verls_named_configurations_are_grlabs_presets_defaults"
       "_included"),
    _m("kpop-one-direction", CORR_REJECTION,
       "stat = torch.maximum(forward, backward)", "stat = forward",
       "KPop's binary KL taken in one direction only (π‖μ) instead of the larger of both",
       f"{CORRECTION_TESTS}::test_binary_kl_by_hand"),
    _m("kpop-no-complement", CORR_REJECTION,
       "return p * (torch.log(p) - torch.log(q)) + (1 - p) * (torch.log1p(-p) - torch.log1p(-q))",
       "return p * (torch.log(p) - torch.log(q))",
       "the binary KL without the (1 − p)·log((1 − p)/(1 − q)) term of the other event",
       f"{CORRECTION_TESTS}::test_binary_kl_by_hand"),
    _m("kl-is-weight-detached", CORR_TERMS,
       "w = numerics.exp(inputs.at_level(log_w, is_level))",
       "w = numerics.exp(inputs.at_level(log_w, is_level)).detach()",
       "the IS-corrected KL's ratio detached (DeepSeek-V3.2 and TRL differentiate through it)",
       f"{CORRECTION_TESTS}::test_the_is_corrected_k3_and_its_gradient_by_hand"),
    _m("kl-straight-through-keeps-k3-gradient", CORR_TERMS,
       "k = k2 - k2.detach() + k.detach()", "k = k2.detach() - k2.detach() + k",
       "verl's straight-through KL ('k3+') keeps k3's gradient instead of taking k2's",
       f"{CORRECTION_TESTS}::test_the_straight_through_term_has_k3s_value_and_k2s_gradient"),
    _m("kl-trinity-uncapped", CORR_PRESETS,
       '"kl-corrected-trinity", "kl", is_level="token", is_cap=2.0, beta=0.001,',
       '"kl-corrected-trinity", "kl", is_level="token", beta=0.001,',
       "Trinity-RFT's corrected_k3 without its clamp of π_θ/π_old to [0, 2]",
       f"{CORRECTION_PARITY}::test_trinitys_k3_and_corrected_k3_are_grlabs_terms"),
    _m("entropy-bonus-sign", CORR_TERMS,
       "return Stage(penalty=numerics.mul(-coef, entropy)",
       "return Stage(penalty=numerics.mul(coef, entropy)",
       "the entropy bonus added to the loss (an entropy penalty) instead of subtracted",
       f"{CORRECTION_TESTS}::test_the_entropy_bonus_and_its_gradient_by_hand"),
    _m("top-entropy-bottom-quantile", CORR_TERMS,
       "keep = entropy >= torch.quantile(valid, 1 - rho)",
       "keep = entropy >= torch.quantile(valid, rho)",
       "the top-entropy mask keeps the top 1 − ρ instead of the top ρ",
       f"{CORRECTION_TESTS}::test_the_top_entropy_mask_by_hand"),
    _m("vllm-sequence-is-geometric", CORR_PRESETS,
       '("sequence-mask", "sequence", "mask")', '("sequence-mask", "geometric", "mask")',
       "TRL's vLLM sequence ratio taken as a geometric mean (it is the product)",
       f"{CORRECTION_PARITY}::test_the_vllm_importance_sampling_presets_are_trls"),
    _m("normalize-sequence-over-tokens", CORR_WEIGHTS,
       '    if level == "token":\n        mean = masked_mean(weight, inputs.mask)',
       '    if level != "geometric":\n        mean = masked_mean(weight, inputs.mask)',
       "sequence-level batch normalisation averages the weights over tokens (verl: over rows)",
       f"{CORRECTION_PARITY}::test_is_weights_are_verls_including_batch_normalisation"),
    _m("token-veto-on-the-mean", CORR_PRESETS,
       '"token-veto", "reject", statistic="ratio", aggregate="seq_min",',
       '"token-veto", "reject", statistic="ratio", aggregate="seq_mean",',
       "the token veto tests the row's geometric mean instead of its smallest token ratio",
       f"{CORRECTION_TESTS}::test_the_token_veto_rejects_a_whole_row_for_one_token"),
    _m("proximal-alpha-current-version", CORR_PROXIMAL,
       "(current_version - 1 - v) / diff.clamp(", "(current_version - v) / diff.clamp(",
       "AReaL's α interpolates towards π_θ's version instead of the proximal version v_θ − 1",
       f"{CORRECTION_TESTS}::test_proximal_logp_interpolates_by_version_as_areal"),
]

MUTANTS: tuple[Mutant, ...] = (*_LOSS_MUTANTS, *_AGGREGATION_MUTANTS, *_ADVANTAGE_MUTANTS,
                               *_NUMERICS_MUTANTS, *_KL_MUTANTS, *_EXACT_MUTANTS,
                               *_THREE_POLICY_MUTANTS, *_TRUST_REGION_MUTANTS,
                               *_CORRECTION_MUTANTS)
