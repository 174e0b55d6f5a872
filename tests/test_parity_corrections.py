"""Parity of simulator/corrections.py with the peers' own code: verl 0.9.1, TRL 1.16.0,
Trinity-RFT 0.6.0 (installed: their functions are called), and AReaL (not pip-installable
here: a transcription of its functions at commit 4aef98d8d818af55b43621aaadba047ae10f4e77).

Where a peer's code is inline in a larger method (TRL's vLLM importance sampling in
``_generate_and_score_completions``, its KL and entropy terms in ``_compute_loss``), the
reference below reproduces those lines (file and line numbers cited) and a guard test reads
TRL's own source and fails if those lines change. Defaults are read from the peers' own
configuration objects, so a peer that changes a default fails here.

The batch is tests/parity_batch.py's (every clip region, a ragged mask, a fully masked row)
with a rollout policy μ = π_old + noise. Tolerances: float64 round-off, except where a peer adds
1e-8 to a denominator (Trinity-RFT's masked mean: relative 1e-8 per token count).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from types import SimpleNamespace

import pytest
import torch

from simulator.corrections import (
    CORRECTIONS,
    Correction,
    CorrectionInputs,
    apply_corrections,
    as_corrections,
)
from simulator.corrections import proximal_logp as grlab_proximal_logp
from simulator.losses import policy_loss
from tests.parity_batch import check_regions, parity_batch

F64 = torch.float64
VERL_MODES = ("token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean")
AREAL_COMMIT = "4aef98d8d818af55b43621aaadba047ae10f4e77"


def rollout_batch(seed: int = 0, noise: float = 0.3):
    """parity_batch plus μ = π_old + N(0, noise²), log π_ref and entropies (float32-exact)."""
    logp, old, adv, mask = parity_batch(seed)
    check_regions(logp, old, adv, mask)
    g = torch.Generator().manual_seed(100 + seed)
    mu = old + noise * torch.randn(old.shape, generator=g, dtype=F64)
    ref = logp + 0.3 * torch.randn(old.shape, generator=g, dtype=F64)
    entropy = (torch.rand(old.shape, generator=g, dtype=torch.float32) * 3).to(F64)
    return logp, old, mu, ref, entropy, adv, mask


def grlab_applied(corrections, logp, old, mu, adv, mask, *, ref=None, entropy=None):
    """The corrections' combined stage on inputs prepared as policy_loss prepares them."""
    z = lambda x: None if x is None else torch.where(mask, x, 0.0)  # noqa: E731
    inputs = CorrectionInputs(z(logp), z(old), z(mu), z(adv.unsqueeze(-1).expand_as(logp)),
                              mask, z(ref), z(entropy))
    return apply_corrections(as_corrections(corrections), inputs)


def run_grad(name, logp, old, adv, mask, **kwargs):
    leaf = logp.clone().requires_grad_(True)
    out = policy_loss(name, leaf, old, adv, mask, **kwargs)
    (grad,) = torch.autograd.grad(out.loss, leaf)
    return out.loss.detach(), grad


def some_but_not_all(keep, mask):
    kept = keep & mask
    assert bool(kept.any()) and bool((mask & ~kept).any()), "the case rejects nothing or all"


def partial_case(candidates, kept_by_peer, mask):
    """The first candidate threshold for which the PEER's own function rejects part (not none,
    not all) of the batch: the case is chosen with the peer, the expected value is the peer's."""
    for candidate in candidates:
        kept = kept_by_peer(candidate) & mask
        if bool(kept.any()) and bool((mask & ~kept).any()):
            return candidate
    raise AssertionError("no candidate threshold rejects part of the batch")


# ============================================================================ verl 0.9.1


def _verl_rc():
    return pytest.importorskip("verl.trainer.ppo.rollout_corr_helper",
                               reason="verl is not installed (pip install 'grlab[verl]')")


def grlab_for_verl_rs(option: str, threshold: str | float, ratio: str = "old") -> Correction:
    """verl's rollout_rs option and threshold as grlab's ``reject``: the verl adapter's own
    mapping (``llm_bridge.integrations.verl.verl_rejection``)."""
    from llm_bridge.integrations.verl import verl_rejection

    return verl_rejection(option, threshold, ratio)


# candidate thresholds (partial_case picks one that rejects part of the batch)
K1_CANDIDATES = ["0.9_1.1", "0.8_1.25", "0.7_1.6", "1.15", "0.5_2.0", "1.5", "0.3_3.0"]
K_CANDIDATES = [0.001, 0.003, 0.01, 0.02, 0.04, 0.1, 0.2, 0.5, 1.0]
VERL_RS_THRESHOLDS = {option: K1_CANDIDATES if option.endswith("k1") else K_CANDIDATES
                      for option in ("token_k1", "token_k2", "token_k3", "seq_sum_k1",
                                     "seq_sum_k2", "seq_sum_k3", "seq_mean_k1", "seq_mean_k2",
                                     "seq_mean_k3", "seq_max_k2", "seq_max_k3")}


def test_every_verl_rejection_option_has_a_grlab_reading():
    """Iterates verl's own SUPPORTED_ROLLOUT_RS_OPTIONS: an option verl adds fails here."""
    rc = _verl_rc()
    assert set(rc.SUPPORTED_ROLLOUT_RS_OPTIONS) == set(VERL_RS_THRESHOLDS)
    # verl's function defaults to token_k1 but has no default threshold (it raises); grlab's
    # reject defaults to verl's K3-RS preset instead (docs/corrections.md)
    params = inspect.signature(rc.compute_rollout_rejection_mask).parameters
    assert (params["rollout_rs"].default, params["rollout_rs_threshold"].default) == (
        "token_k1", None)
    with pytest.raises(ValueError, match="rollout_rs_threshold must be provided"):
        rc.compute_rollout_rejection_mask(torch.zeros(1, 2), torch.ones(1, 2))
    d = CORRECTIONS["reject"].defaults()
    assert (d["statistic"], d["aggregate"], d["low"], d["high"], d["denominator"]) == (
        "k3", "seq_mean", None, 0.01, "drop")


@pytest.mark.parametrize("ratio", ["old", "current"])
@pytest.mark.parametrize("option", sorted(VERL_RS_THRESHOLDS))
def test_reject_is_verls_rejection_mask(option, ratio):
    """verl's compute_rollout_rejection_mask on log r = log π_old − log μ (decoupled) or
    log π_θ − log μ (bypass: ratio="current") keeps exactly the tokens grlab's reject keeps."""
    rc = _verl_rc()
    logp, old, mu, _, _, adv, mask = rollout_batch()
    anchor = old if ratio == "old" else logp

    def verl_keeps(threshold):
        return rc.compute_rollout_rejection_mask(anchor - mu, mask.to(F64), option,
                                                 threshold)[0].bool()

    threshold = partial_case(VERL_RS_THRESHOLDS[option], verl_keeps, mask)
    verl_mask = verl_keeps(threshold)
    applied = grlab_applied(grlab_for_verl_rs(option, threshold, ratio), logp, old, mu, adv,
                            mask)
    some_but_not_all(applied.loss_mask, mask)
    assert torch.equal(verl_mask.bool(), applied.loss_mask)


def test_verls_chained_options_are_grlabs_corrections_together():
    rc = _verl_rc()
    logp, old, mu, _, _, adv, mask = rollout_batch()
    verl_mask, _ = rc.compute_rollout_rejection_mask(old - mu, mask.to(F64),
                                                     "token_k1,seq_mean_k3", "0.7_1.6,0.04")
    applied = grlab_applied([grlab_for_verl_rs("token_k1", "0.7_1.6"),
                             grlab_for_verl_rs("seq_mean_k3", 0.04)], logp, old, mu, adv, mask)
    some_but_not_all(applied.loss_mask, mask)
    assert torch.equal(verl_mask.bool(), applied.loss_mask)


def test_verls_k1_bounds_are_on_mu_over_pi_not_on_the_ratio():
    """A surprise of verl's options: "lo_hi" of a k1 option bounds μ/π (= exp(k1)), so
    token_k1 "0.5_1.25" keeps π/μ in [0.8, 2], not in [0.5, 1.25]."""
    rc = _verl_rc()
    log_r = torch.log(torch.tensor([[0.6, 1.1, 1.9]], dtype=F64))
    kept, _ = rc.compute_rollout_rejection_mask(log_r, torch.ones_like(log_r), "token_k1",
                                                "0.5_1.25")
    assert kept.tolist() == [[0.0, 1.0, 1.0]]


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("threshold", [2.0, "0.5_1.5"])
@pytest.mark.parametrize("level", ["token", "sequence"])
def test_is_weights_are_verls_including_batch_normalisation(level, threshold, normalize):
    """verl's compute_rollout_correction_weights: TIS (a single threshold) or IcePop
    ("lower_upper", weights zeroed outside), token or sequence (product) level, with and
    without rollout_is_batch_normalize (the mean over valid tokens at the token level, over
    rows with a valid token at the sequence level) = grlab's ``is``."""
    rc = _verl_rc()
    logp, old, mu, _, _, adv, mask = rollout_batch(noise=0.8)  # ratios beyond 2 and 3
    weights, _ = rc.compute_rollout_correction_weights(old - mu, mask.to(F64), level, threshold,
                                                       normalize)
    if isinstance(threshold, str):
        low, high = (float(x) for x in threshold.split("_"))
        kw = {"action": "mask", "low": low, "high": high}
    else:
        kw = {"action": "truncate", "high": threshold}
    applied = grlab_applied(Correction("is", {"level": level, "normalize": normalize, **kw}),
                            logp, old, mu, adv, mask)
    if isinstance(threshold, str):
        some_but_not_all(applied.weight > 0, mask)
    elif not normalize:
        assert bool((applied.weight[mask] == 2.0).any())  # some weights are truncated
    # verl's masked_mean divides by Σ mask + 1e-8: relative 1e-8 once normalised
    rtol = 1e-8 if normalize else 1e-12
    torch.testing.assert_close(applied.weight[mask], weights[mask], rtol=rtol, atol=1e-15)


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_batch_normalisation_is_over_the_batch_before_rejection_as_in_verl(level):
    """verl normalises the IS weights over the original response_mask, before rejection
    sampling edits it; grlab's normalize=True averages over the valid tokens (rows) the caller
    gave, whatever another correction rejects."""
    rc = _verl_rc()
    logp, old, mu, _, _, adv, mask = rollout_batch()
    proto, verl_mask, _ = rc.compute_rollout_correction_and_rejection_mask(
        old, mu, mask.to(F64), rollout_is=level, rollout_is_threshold=2.0,
        rollout_is_batch_normalize=True, rollout_rs="seq_mean_k3", rollout_rs_threshold=0.04)
    applied = grlab_applied([Correction("is", {"level": level, "normalize": True}),
                             grlab_for_verl_rs("seq_mean_k3", 0.04)], logp, old, mu, adv, mask)
    some_but_not_all(applied.loss_mask, mask)
    assert torch.equal(applied.loss_mask, verl_mask.bool())
    kept = applied.loss_mask
    torch.testing.assert_close(applied.weight[kept], proto.batch["rollout_is_weights"][kept],
                               rtol=1e-8, atol=1e-15)  # verl's masked mean: Σ mask + 1e-8


def _verl_config_cases():
    from verl.trainer.config.algorithm import RolloutCorrectionConfig as C

    return [(C(), ["tis-seq"]), (C.decoupled_token_is(), ["tis-token"]),
            (C.decoupled_seq_is(), ["tis-seq"]), (C.decoupled_token_icepop(), ["icepop"]),
            (C.decoupled_seq_is_rs(), ["tis-seq", "seq-rs"]), (C.decoupled_geo_rs(), ["geo-rs"]),
            (C.decoupled_k3_rs(), ["k3-rs"]),
            (C.decoupled_geo_rs_token_tis(), ["tis-token", "geo-rs"]),
            (C.decoupled_geo_rs_seq_tis(), ["tis-seq", "geo-rs"])]


def test_verls_named_configurations_are_grlabs_presets_defaults_included():
    """Each of verl's RolloutCorrectionConfig presets, with its default thresholds, run through
    verl's compute_rollout_correction_and_rejection_mask, gives the weights and the mask of the
    grlab presets named next to it (so a changed verl default fails here). μ is close to π_old
    (noise 0.004) so that Geo-RS's ±0.1% band rejects part of the batch."""
    rc = _verl_rc()
    logp, old, mu, _, _, adv, mask = rollout_batch(noise=0.004)
    for config, names in _verl_config_cases():
        proto, verl_mask, _ = rc.compute_rollout_correction_and_rejection_mask(
            old, mu, mask.to(F64), rollout_is=config.rollout_is,
            rollout_is_threshold=config.rollout_is_threshold,
            rollout_is_batch_normalize=config.rollout_is_batch_normalize,
            rollout_rs=config.rollout_rs, rollout_rs_threshold=config.rollout_rs_threshold)
        applied = grlab_applied(names, logp, old, mu, adv, mask)
        assert torch.equal(verl_mask.bool(), applied.loss_mask), names
        if config.rollout_rs == "seq_mean_k1":
            some_but_not_all(applied.loss_mask, mask)
        if proto is not None:
            kept = applied.loss_mask
            weights = proto.batch["rollout_is_weights"]
            torch.testing.assert_close(applied.weight[kept], weights[kept], rtol=1e-12,
                                       atol=1e-15)
    # verl's Seq-MIS is grlab's mis-seq with the lower bound 0.5 and the rows dropped
    config = next(c for c, names in _verl_config_cases() if names == ["tis-seq", "seq-rs"])
    logp, old, mu, _, _, adv, mask = rollout_batch(noise=0.6)
    proto, verl_mask, _ = rc.compute_rollout_correction_and_rejection_mask(
        old, mu, mask.to(F64), rollout_is=config.rollout_is,
        rollout_is_threshold=config.rollout_is_threshold, rollout_rs=config.rollout_rs,
        rollout_rs_threshold=config.rollout_rs_threshold)
    mis = grlab_applied(Correction("mis-seq", {"low": 0.5, "denominator": "drop"}), logp, old,
                        mu, adv, mask)
    some_but_not_all(verl_mask.bool(), mask)
    assert torch.equal(mis.loss_mask, verl_mask.bool())
    torch.testing.assert_close(mis.weight[mis.loss_mask],
                               proto.batch["rollout_is_weights"][mis.loss_mask], rtol=1e-12,
                               atol=1e-15)
    plain = grlab_applied("mis-seq", logp, old, mu, adv, mask)
    assert torch.equal(plain.loss_mask, mask)  # grlab's preset keeps them in the count
    defaults = inspect.signature(rc.compute_rollout_correction_weights).parameters
    assert (defaults["rollout_is"].default, defaults["rollout_is_threshold"].default,
            defaults["rollout_is_batch_normalize"].default) == ("token", 2.0, False)
    d = CORRECTIONS["is"].defaults()
    assert (d["level"], d["action"], d["high"], d["normalize"]) == ("token", "truncate", 2.0,
                                                                   False)


def _verl_actor_config():
    from verl.workers.config import ActorConfig

    return ActorConfig(strategy="fsdp", clip_ratio=0.2, clip_ratio_low=0.2, clip_ratio_high=0.2,
                       clip_ratio_c=3.0, rollout_n=1, ppo_micro_batch_size_per_gpu=1)


@pytest.mark.parametrize("mode", VERL_MODES)
def test_verls_decoupled_pipeline_end_to_end(mode):
    """verl's decoupled mode: compute_rollout_correction_and_rejection_mask (Seq-TIS +
    seq_mean_k3 rejection) edits response_mask and gives rollout_is_weights; verl's own
    vanilla loss takes both. grlab: ppo-dual-clip (δ clamp 20, rows="valid" as single-process
    verl) with logp_rollout=μ and corrections tis-seq + reject(k3, seq_mean, drop): the same
    value and gradient under every aggregation."""
    rc = _verl_rc()
    from verl.trainer.ppo import core_algos

    logp, old, mu, _, _, adv, mask = rollout_batch()
    proto, verl_mask, _ = rc.compute_rollout_correction_and_rejection_mask(
        old, mu, mask.to(F64), rollout_is="sequence", rollout_is_threshold=2.0,
        rollout_rs="seq_mean_k3", rollout_rs_threshold=0.04)
    some_but_not_all(verl_mask.bool(), mask)
    leaf = logp.clone().requires_grad_(True)
    value, _ = core_algos.get_policy_loss_fn("vanilla")(
        old, leaf, adv.unsqueeze(-1).expand_as(logp), verl_mask, mode, _verl_actor_config(),
        rollout_is_weights=proto.batch["rollout_is_weights"])
    (grad,) = torch.autograd.grad(value, leaf)
    ours, our_grad = run_grad("ppo-dual-clip", logp, old, adv, mask, agg=mode, rows="valid",
                              log_ratio_clamp=20.0, logp_rollout=mu,
                              corrections=["tis-seq", grlab_for_verl_rs("seq_mean_k3", 0.04)])
    rtol = 1e-8 if mode == "seq-mean-token-mean" else 1e-12  # verl's L + 1e-8
    assert float(ours) == pytest.approx(float(value.detach()), rel=rtol)
    torch.testing.assert_close(our_grad, grad, rtol=rtol, atol=1e-15)


# verl kl_loss_type -> grlab kl keywords (core_algos.kl_penalty_forward's names)
VERL_KL_TYPES = {"kl": {"estimator": "k1"}, "k1": {"estimator": "k1"},
                 "mse": {"estimator": "k2"}, "k2": {"estimator": "k2"},
                 "low_var_kl": {"estimator": "k3-clamped"}, "k3": {"estimator": "k3-clamped"},
                 "k3+": {"estimator": "k3-clamped", "straight_through": True},
                 "low_var_kl+": {"estimator": "k3-clamped", "straight_through": True}}


@pytest.mark.parametrize("mode", VERL_MODES)
@pytest.mark.parametrize("kl_type", sorted(VERL_KL_TYPES))
def test_verls_kl_loss_is_grlabs_kl_term(kl_type, mode):
    """verl/workers/utils/losses.py (0.9.1) adds kl_loss_coef · agg_loss(kl_penalty(...)) and
    subtracts entropy_coeff · agg_loss(entropy): called here with verl's own kl_penalty and
    agg_loss, against the difference grlab's kl / entropy-bonus make to policy_loss (the same
    aggregation, rows="valid" as single-process verl)."""
    _verl_rc()
    from verl.trainer.ppo import core_algos
    from verl.workers.config import ActorConfig

    coef = {f.name: f.default for f in dataclasses.fields(ActorConfig)}
    assert (coef["kl_loss_type"], coef["kl_loss_coef"], coef["entropy_coeff"]) == (
        "low_var_kl", 0.001, 0)
    logp, old, _, ref, entropy, adv, mask = rollout_batch()
    ref = ref.clone()
    ref[0, 1] = logp[0, 1] + 25.0  # beyond verl's ±20 clamp of k3: k3-clamped's reading
    leaf = logp.clone().requires_grad_(True)
    theirs = core_algos.agg_loss(core_algos.kl_penalty(leaf, ref, kl_type), mask.to(F64), mode)
    (grad,) = torch.autograd.grad(theirs, leaf)
    kw = {"agg": mode, "rows": "valid"}
    with_kl, g1 = run_grad("reinforce", logp, old, adv, mask, logp_ref=ref, **kw,
                           corrections=Correction("kl", {"beta": 1.0, **VERL_KL_TYPES[kl_type]}))
    without, g0 = run_grad("reinforce", logp, old, adv, mask, **kw)
    rtol = 1e-8 if mode == "seq-mean-token-mean" else 1e-12
    assert float(with_kl - without) == pytest.approx(float(theirs.detach()), rel=rtol)
    torch.testing.assert_close(g1 - g0, grad, rtol=rtol, atol=1e-12)
    ent = core_algos.agg_loss(entropy, mask.to(F64), mode)
    bonus = policy_loss("reinforce", logp, old, adv, mask, entropy=entropy, **kw,
                        corrections=Correction("entropy-bonus", {"coef": 0.01})).loss
    plain = policy_loss("reinforce", logp, old, adv, mask, **kw).loss
    assert float(plain - bonus) == pytest.approx(0.01 * float(ent), rel=rtol)


# ============================================================================ TRL 1.16.0


def _trl():
    pytest.importorskip("trl", reason="the [trl] extra is not installed")
    from trl import GRPOConfig, GRPOTrainer

    return GRPOConfig, GRPOTrainer


def _normalised(text: str) -> str:
    return " ".join(text.split())


def test_trls_source_still_has_the_lines_the_references_transcribe():
    """The references below reproduce inline code of trl/trainer/grpo_trainer.py (1.16.0); this
    fails when those lines change. Also pins the two readings of a "sequence" ratio: the vLLM
    correction's is the PRODUCT (a sum of log-ratios), importance_sampling_level="sequence"'s
    the GEOMETRIC mean (a mean of log-ratios)."""
    _, trainer = _trl()
    generate = _normalised(inspect.getsource(trainer._generate_and_score_completions))
    loss = _normalised(inspect.getsource(trainer._compute_loss))
    for line in ("per_token_logps_diff = (old_per_token_logps - sampling_per_token_logps) * mask",
                 "per_sequence_logps_diff = per_token_logps_diff.sum(dim=-1, keepdim=True)",
                 "vllm_importance_sampling_ratio = torch.exp(logps_diff)",
                 "min=self.vllm_importance_sampling_clip_min, "
                 "max=self.vllm_importance_sampling_clip_max,",
                 "invalid_mis_mask, value=0.0"):
        assert _normalised(line) in generate, line
    for line in ("log_importance_weights = (log_ratio * mask).sum(-1) / "
                 "mask.sum(-1).clamp(min=1.0)",
                 "torch.exp(ref_per_token_logps - per_token_logps) - "
                 "(ref_per_token_logps - per_token_logps) - 1",
                 "per_token_kl = per_token_kl * coef_1",
                 "per_token_loss = per_token_loss * off_policy_mask",
                 "per_token_loss = per_token_loss * entropy_mask",
                 'per_token_loss = per_token_loss * inputs["importance_sampling_ratio"]',
                 "per_token_loss = per_token_loss + self.beta * per_token_kl",
                 "(entropies * effective_mask).sum() / effective_mask.sum().clamp(min=1.0)",
                 "loss = loss - apply_coef * entropy_loss"):
        assert _normalised(line) in loss, line
    # the order of the terms: the masks and the vLLM ratio multiply before β·KL is added
    assert loss.index("per_token_loss * off_policy_mask") < loss.index(
        'per_token_loss * inputs["importance_sampling_ratio"]') < loss.index(
        "self.beta * per_token_kl")


def trl_vllm_ratio(old, sampling, mask, mode, clip_min, clip_max):
    """grpo_trainer.py 1.16.0 lines 2660–2708 (_generate_and_score_completions)."""
    per_token_logps_diff = torch.nan_to_num((old - sampling) * mask, nan=0.0)
    if mode in ("sequence_mask", "sequence_truncate"):
        logps_diff = per_token_logps_diff.sum(dim=-1, keepdim=True)
    else:
        logps_diff = per_token_logps_diff
    ratio = torch.exp(logps_diff)
    if mode in ("sequence_truncate", "token_truncate"):
        return torch.clamp(ratio, min=clip_min, max=clip_max)
    min_val = clip_min if clip_min is not None else -math.inf
    max_val = clip_max if clip_max is not None else math.inf
    return ratio.masked_fill((ratio < min_val) | (ratio > max_val), value=0.0)


def test_trls_defaults_are_grlabs_preset_values():
    """GRPOConfig's defaults: vLLM IS "sequence_mask" with C_max 3 and no C_min (grlab:
    vllm-is-sequence-mask), use_bias_correction_kl True (kl-corrected), β 0 (no KL term),
    top_entropy_quantile 1 (no mask), entropy_coef 0, off_policy_mask_threshold None."""
    config, _ = _trl()
    d = {f.name: f.default for f in dataclasses.fields(config)}
    assert (d["vllm_importance_sampling_mode"], d["vllm_importance_sampling_clip_max"],
            d["vllm_importance_sampling_clip_min"]) == ("sequence_mask", 3.0, None)
    preset = CORRECTIONS["vllm-is-sequence-mask"].defaults()
    assert (preset["level"], preset["action"], preset["high"], preset["low"]) == (
        "sequence", "mask", 3.0, None)
    assert d["use_bias_correction_kl"] is True and CORRECTIONS["kl-corrected"].defaults()[
        "is_level"] == "token"
    assert (d["beta"], d["top_entropy_quantile"], d["entropy_coef"],
            d["off_policy_mask_threshold"]) == (0.0, 1.0, 0.0, None)


@pytest.mark.parametrize("mode", ["token_truncate", "token_mask", "sequence_truncate",
                                  "sequence_mask"])
@pytest.mark.parametrize(("clip_min", "clip_max"), [(None, 3.0), (0.5, 1.5), (0.5, None)])
def test_the_vllm_importance_sampling_presets_are_trls(mode, clip_min, clip_max):
    logp, old, mu, _, _, adv, mask = rollout_batch(noise=0.8)  # ratios beyond 3
    theirs = trl_vllm_ratio(old, mu, mask.to(F64), mode, clip_min, clip_max).expand_as(logp)
    name = "vllm-is-" + mode.replace("_", "-")
    applied = grlab_applied(Correction(name, {"low": clip_min, "high": clip_max}), logp, old,
                            mu, adv, mask)
    if mode.endswith("mask"):
        some_but_not_all(applied.weight > 0, mask)
    torch.testing.assert_close(applied.weight[mask], theirs[mask], rtol=1e-12, atol=1e-15)


def test_trls_off_policy_mask_is_grlabs_opsm():
    """GRPOTrainer.get_off_policy_mask (TRL's own static method): keep a row if A ≥ 0 or its
    mean log(μ/π_θ) ≤ δ = grlab's opsm (ratio "current", denominator "keep")."""
    _, trainer = _trl()
    logp, old, mu, _, _, adv, mask = rollout_batch()
    for delta in (-0.05, 0.0, 0.05, 0.2):
        theirs = trainer.get_off_policy_mask(adv.unsqueeze(1), logp, mu, mask.to(F64), delta)
        applied = grlab_applied(Correction("opsm", {"delta": delta}), logp, old, mu, adv, mask)
        expected = theirs.bool().expand_as(mask) & mask
        assert torch.equal((applied.weight > 0) & mask, expected), delta
        assert torch.equal(applied.loss_mask, mask)  # kept in the denominator
    assert not bool(torch.equal(trainer.get_off_policy_mask(
        adv.unsqueeze(1), logp, mu, mask.to(F64), 0.05), torch.ones(8, 1, dtype=F64)))


class _OneProcess:
    """accelerate's collectives on one process: padding and gathering change nothing."""

    def pad_across_processes(self, tensor, dim=0, pad_index=0):
        return tensor

    def gather(self, tensor):
        return tensor


@pytest.mark.parametrize("rho", [0.2, 0.5, 0.0, 1.0])
def test_the_top_entropy_mask_is_trls_get_high_entropy_mask(rho):
    """GRPOTrainer.get_high_entropy_mask (TRL's own method, called with threshold 1 − ρ as
    _compute_loss calls it) keeps exactly the tokens grlab's top-entropy keeps."""
    _, trainer = _trl()
    logp, old, mu, _, entropy, adv, mask = rollout_batch()
    theirs = trainer.get_high_entropy_mask(SimpleNamespace(accelerator=_OneProcess()), entropy,
                                           mask.to(F64), 1 - rho)
    applied = grlab_applied(Correction("top-entropy", {"rho": rho}), logp, old, mu, adv, mask,
                            entropy=entropy)
    assert torch.equal((applied.weight > 0) & mask, theirs)


def trl_loss(logp, old, adv, mask, loss_type, *, level="token", eps=0.2, ref=None, beta=0.0,
             bias_correction=True, off_policy_mask=None, entropy_mask=None, vllm_ratio=None,
             entropies=None, entropy_coef=0.0):
    """GRPOTrainer._compute_loss 1.16.0, lines 3067–3211, for loss_type grpo and bnpo, one
    process, no accumulation."""
    m = mask.to(logp.dtype)
    a = adv.unsqueeze(1)
    log_ratio = logp - old
    if level == "token":
        log_importance_weights = log_ratio
    else:
        log_importance_weights = ((log_ratio * m).sum(-1) / m.sum(-1).clamp(min=1.0)).unsqueeze(-1)
    coef_1 = torch.exp(log_importance_weights)
    if beta != 0.0:
        per_token_kl = torch.exp(ref - logp) - (ref - logp) - 1
        if bias_correction:
            per_token_kl = per_token_kl * coef_1
    coef_2 = torch.clamp(coef_1, 1 - eps, 1 + eps)
    per_token_loss = -torch.min(coef_1 * a, coef_2 * a)
    if off_policy_mask is not None:
        per_token_loss = per_token_loss * off_policy_mask
    if entropy_mask is not None:
        per_token_loss = per_token_loss * entropy_mask
    if vllm_ratio is not None:
        per_token_loss = per_token_loss * vllm_ratio
    if beta != 0.0:
        per_token_loss = per_token_loss + beta * per_token_kl
    if loss_type == "grpo":
        loss = ((per_token_loss * m).sum(-1) / m.sum(-1).clamp(min=1.0)).mean()
    else:
        loss = (per_token_loss * m).sum() / m.sum().clamp(min=1.0)
    if entropy_coef:
        effective = m if entropy_mask is None else m * entropy_mask
        loss = loss - entropy_coef * (entropies * effective).sum() / effective.sum().clamp(min=1.0)
    return loss


# (TRL loss_type, importance_sampling_level, grlab loss, grlab KL level)
TRL_KL_CASES = [("bnpo", "token", "bnpo", "token"), ("grpo", "token", "grpo", "token"),
                ("grpo", "sequence", "gspo", "geometric")]


@pytest.mark.parametrize("bias_correction", [True, False])
@pytest.mark.parametrize(("loss_type", "level", "name", "kl_level"), TRL_KL_CASES)
def test_the_kl_term_is_trls_with_and_without_bias_correction(loss_type, level, name, kl_level,
                                                              bias_correction):
    """β·k3, times TRL's coef_1 (π_θ/π_old per token, or the geometric sequence ratio, with
    gradient) under use_bias_correction_kl; value and gradient."""
    logp, old, _, ref, _, adv, mask = rollout_batch()
    leaf = logp.clone().requires_grad_(True)
    value = trl_loss(leaf, old, adv, mask, loss_type, level=level, ref=ref, beta=0.04,
                     bias_correction=bias_correction)
    (grad,) = torch.autograd.grad(value, leaf)
    kl = Correction("kl-corrected", {"is_level": kl_level}) if bias_correction else "kl"
    ours, our_grad = run_grad(name, logp, old, adv, mask, logp_ref=ref, corrections=kl,
                              **({"eps_low": 0.2, "eps_high": 0.2} if name == "gspo" else {}))
    assert float(ours) == pytest.approx(float(value.detach()), rel=1e-12)
    torch.testing.assert_close(our_grad, grad, rtol=1e-12, atol=1e-15)


def test_trls_composed_corrections_under_bnpo():
    """All of TRL's masks and weights at once (vLLM sequence_mask IS with its defaults, OPSM
    δ = 0.05, top-entropy ρ = 0.5, the bias-corrected KL with β = 0.04), token mean (bnpo):
    every mask keeps its tokens in the denominator and the KL is added after them."""
    _, trainer = _trl()
    logp, old, mu, ref, entropy, adv, mask = rollout_batch(noise=0.15)
    m = mask.to(F64)
    off = trainer.get_off_policy_mask(adv.unsqueeze(1), logp, mu, m, 0.05)
    high = trainer.get_high_entropy_mask(SimpleNamespace(accelerator=_OneProcess()), entropy, m,
                                         0.5)
    ratio = trl_vllm_ratio(old, mu, m, "sequence_mask", None, 3.0)
    leaf = logp.clone().requires_grad_(True)
    value = trl_loss(leaf, old, adv, mask, "bnpo", ref=ref, beta=0.04, off_policy_mask=off,
                     entropy_mask=high, vllm_ratio=ratio)
    (grad,) = torch.autograd.grad(value, leaf)
    ours, our_grad = run_grad(
        "bnpo", logp, old, adv, mask, logp_rollout=mu, logp_ref=ref, entropy=entropy,
        corrections=["vllm-is-sequence-mask", Correction("opsm", {"delta": 0.05}),
                     Correction("top-entropy", {"rho": 0.5}), "kl-corrected"])
    assert float(ours) == pytest.approx(float(value.detach()), rel=1e-12)
    torch.testing.assert_close(our_grad, grad, rtol=1e-12, atol=1e-15)


def test_the_entropy_bonus_is_trls_under_the_token_mean():
    """TRL subtracts entropy_coef · (token mean of the entropies), whatever the loss type;
    grlab's entropy-bonus is aggregated like the loss, so the two agree under bnpo."""
    logp, old, _, _, entropy, adv, mask = rollout_batch()
    ent = entropy.clone().requires_grad_(True)
    value = trl_loss(logp, old, adv, mask, "bnpo", entropies=ent, entropy_coef=0.01)
    (grad,) = torch.autograd.grad(value, ent)
    ent2 = entropy.clone().requires_grad_(True)
    out = policy_loss("bnpo", logp, old, adv, mask, entropy=ent2,
                      corrections=Correction("entropy-bonus", {"coef": 0.01}))
    (our_grad,) = torch.autograd.grad(out.loss, ent2)
    assert float(out.loss.detach()) == pytest.approx(float(value.detach()), rel=1e-12)
    torch.testing.assert_close(our_grad, grad, rtol=1e-12, atol=1e-15)


# ====================================================================== Trinity-RFT 0.6.0


def _trinity_kl():
    return pytest.importorskip("trinity.algorithm.kl_fn.kl_fn",
                               reason="trinity-rft is not installed")


TRINITY_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")


@pytest.mark.parametrize("mode", TRINITY_MODES)
@pytest.mark.parametrize(("cls", "grlab"), [("K3Fn", "kl"),
                                            ("CorrectedK3Fn", "kl-corrected-trinity")])
def test_trinitys_k3_and_corrected_k3_are_grlabs_terms(cls, grlab, mode):
    """Trinity's calculate_kl_loss (its own class, its default kl_coef 0.001) adds
    kl_coef · aggregate(k): grlab's term is that difference of policy_loss, in value and
    gradient. CorrectedK3Fn clamps π_θ/π_old to [0, 2] (the preset's is_cap)."""
    module = _trinity_kl()
    fn = getattr(module, cls)(**getattr(module, cls).default_args())
    logp, old, _, ref, _, adv, mask = rollout_batch()
    leaf = logp.clone().requires_grad_(True)
    kl_loss, _ = fn.calculate_kl_loss(leaf, ref, mask, mode, old_logprob=old)
    (grad,) = torch.autograd.grad(kl_loss, leaf)
    beta = {"beta": fn.kl_coef}
    with_kl, g1 = run_grad("reinforce", logp, old, adv, mask, agg=mode, logp_ref=ref,
                           corrections=Correction(grlab, beta))
    without, g0 = run_grad("reinforce", logp, old, adv, mask, agg=mode)
    assert float(with_kl - without) == pytest.approx(float(kl_loss.detach()), rel=1e-7)
    torch.testing.assert_close(g1 - g0, grad, rtol=1e-7, atol=1e-12)
    if cls == "CorrectedK3Fn":
        assert bool(((logp - old).exp() > 2)[mask].any())  # the cap acts on this batch


def test_trinitys_entropy_loss_is_grlabs_entropy_bonus():
    pytest.importorskip("trinity", reason="trinity-rft is not installed")
    from trinity.algorithm.entropy_loss_fn.entropy_loss_fn import DefaultEntropyLossFn

    logp, old, _, _, entropy, adv, mask = rollout_batch()
    for mode in TRINITY_MODES:
        theirs, _ = DefaultEntropyLossFn(0.01)(entropy, mask, loss_agg_mode=mode)
        with_bonus = policy_loss("reinforce", logp, old, adv, mask, agg=mode, entropy=entropy,
                                 corrections=Correction("entropy-bonus", {"coef": 0.01})).loss
        without = policy_loss("reinforce", logp, old, adv, mask, agg=mode).loss
        assert float(without - with_bonus) == pytest.approx(float(theirs), rel=1e-7), mode


@pytest.mark.parametrize("mode", TRINITY_MODES)
def test_trinitys_sequence_masking_is_grlabs_opsm(mode):
    """Trinity's PPOPolicyLossFn with enable_sequence_masking (its own class, its default
    delta_sequence_masking 0.1): a token with A < 0 in a row whose mean log(π_old/π_θ) exceeds
    δ is zeroed and stays in the denominator = ppo-dual-clip (δ clamp 20) with opsm (ratio
    "current", δ = 0.1), where π_old plays μ (a one-policy call)."""
    pytest.importorskip("trinity", reason="trinity-rft is not installed")
    from trinity.algorithm.policy_loss_fn.ppo_policy_loss import PPOPolicyLossFn

    args = {**PPOPolicyLossFn.default_args(), "enable_sequence_masking": True,
            "loss_agg_mode": mode}
    fn = PPOPolicyLossFn(**args)
    logp, old, _, _, _, adv, mask = rollout_batch()
    leaf = logp.clone().requires_grad_(True)
    value, metrics = fn(logprob=leaf, old_logprob=old, action_mask=mask,
                        advantages=adv.unsqueeze(-1).expand_as(logp))
    (grad,) = torch.autograd.grad(value, leaf)
    assert metrics["seq_mask/masked_tokens"] > 0  # the mask acts on this batch
    delta = args["delta_sequence_masking"]
    ours, our_grad = run_grad("ppo-dual-clip", logp, old, adv, mask, agg=mode,
                              log_ratio_clamp=20.0,
                              corrections=Correction("opsm", {"delta": delta}))
    assert float(ours) == pytest.approx(float(value.detach()), rel=1e-7)
    torch.testing.assert_close(our_grad, grad, rtol=1e-7, atol=1e-12)


# ================================================================ AReaL (commit 4aef98d8)


def areal_rejection(prox, behave, loss_mask, *, level, metric, agg, upper, lower,
                    action="mask"):
    """areal/utils/functional/functional.py ``apply_rejection_sampling`` (2D padded path;
    action "clamp" at the token level only) with ``KLEstimator._compute_approx_kl``
    (areal/utils/data.py, no clamp)."""
    if action == "clamp":
        assert level == "token" and metric == "ratio"
        weight = torch.exp(prox - behave).clamp(min=lower if lower is not None else 0.0,
                                                max=upper)
        return loss_mask, torch.where(loss_mask, weight, 0.0)
    log_ratio = prox - behave
    log_ratio = torch.where(torch.isfinite(log_ratio), log_ratio, 0.0)
    if metric == "ratio":
        value = torch.exp(log_ratio)
    else:
        x = prox - behave
        value = {"kl_k1": x, "kl_k2": x**2 / 2.0,
                 "kl_k3": torch.exp(-x) - 1 - (-x)}[metric]
    weight = torch.exp(log_ratio)
    use_log = metric == "ratio"

    def check(v):
        return (v >= lower) & (v <= upper) if lower is not None else v <= upper

    if level == "sequence":
        agg_values = log_ratio if use_log else value
        masked = torch.where(loss_mask, agg_values, 0.0)
        count = loss_mask.sum(dim=-1, keepdim=True).clamp(min=1)
        if use_log:
            weight = torch.exp(masked.sum(dim=-1, keepdim=True) / count).expand_as(log_ratio)
        if agg == "sum":
            seq = masked.sum(dim=-1, keepdim=True)
        elif agg == "mean":
            seq = masked.sum(dim=-1, keepdim=True) / count
        else:
            seq = agg_values.masked_fill(~loss_mask, float("-inf")).max(dim=-1, keepdim=True)[0]
            seq = torch.where(loss_mask.sum(-1, keepdim=True) == 0, torch.zeros_like(seq), seq)
        in_bounds = check(torch.exp(seq) if use_log else seq).expand_as(loss_mask)
    else:
        in_bounds = check(value)
    updated = loss_mask & in_bounds
    return updated, torch.where(updated, weight, 0.0)


def areal_ppo_loss(logp, prox, behave, adv, loss_mask, eps=0.2, **rs):
    """``ppo_actor_loss_fn`` (token level, no dual clip): the denominator is the ORIGINAL
    number of valid tokens (a rejected token stays in it), the loss times behave_imp_weight."""
    count = loss_mask.count_nonzero()
    loss_mask, weight = areal_rejection(prox, behave, loss_mask, **rs)
    a = adv.unsqueeze(-1).expand_as(logp)
    ratio = torch.where(loss_mask, torch.exp(logp - prox), 0)
    clipped = torch.clamp(ratio, 1.0 - eps, 1.0 + eps)
    pg = torch.max(-a * ratio, -a * clipped) * weight
    return torch.where(loss_mask, pg, 0).sum() / count


def areal_prox_logp(old_logp, logprobs, versions, current_version, method):
    """areal/trainer/ppo/actor.py ``compute_prox_logp_approximations``."""
    v_proximal = current_version - 1
    v_behave = versions.float()
    v_theta = float(current_version)
    generated = versions >= 0
    diff, gap = v_theta - v_behave, v_proximal - v_behave
    alpha = torch.where((diff > 0) & generated, gap / diff, torch.zeros_like(v_behave))
    alpha = torch.clamp(alpha, 0.0, 1.0).to(old_logp.dtype)
    if method == "loglinear":
        return old_logp + alpha * (logprobs - old_logp)
    if method == "linear":
        mix = (1 - alpha) * torch.exp(old_logp) + alpha * torch.exp(logprobs)
        return torch.log(mix + 1e-10)
    return old_logp.clone()


AREAL_CASES = [  # (level, metric, agg, candidate (lower, upper) bounds)
    ("token", "ratio", "mean", [(0.7, 1.4), (0.8, 1.25), (None, 1.2)]),
    ("token", "kl_k1", "mean", [(-0.3, 0.3), (-0.1, 0.1), (None, 0.1)]),
    ("token", "kl_k2", "mean", [(None, u) for u in (0.005, 0.02, 0.05)]),
    ("token", "kl_k3", "mean", [(None, u) for u in (0.005, 0.02, 0.05)]),
    ("sequence", "ratio", "sum", [(0.5, 2.0), (0.7, 1.4), (0.9, 1.1)]),
    ("sequence", "ratio", "mean", [(0.9, 1.1), (0.95, 1.05), (0.98, 1.02)]),
    ("sequence", "ratio", "max", [(None, u) for u in (1.8, 1.5, 1.3, 1.2)]),
    ("sequence", "kl_k1", "sum", [(-0.5, 0.5), (-0.2, 0.2), (-0.1, 0.1)]),
    ("sequence", "kl_k2", "mean", [(None, u) for u in (0.04, 0.02, 0.01, 0.005)]),
    ("sequence", "kl_k3", "max", [(None, u) for u in (0.1, 0.05, 0.02)]),
    ("sequence", "kl_k3", "sum", [(None, u) for u in (0.15, 0.08, 0.04, 0.02)]),
]


def grlab_for_areal(level, metric, agg, lower, upper):
    """AReaL's rejection_sampling config as grlab corrections: reject in AReaL's KL direction
    (π‖μ) keeping the tokens in the denominator, plus AReaL's behave_imp_weight π_prox/μ (the
    geometric sequence mean for the ratio metric at the sequence level, untruncated)."""
    statistic = "ratio" if metric == "ratio" else metric[3:]
    aggregate = "token" if level == "token" else f"seq_{agg}"
    weight_level = "geometric" if (level == "sequence" and metric == "ratio") else "token"
    return [Correction("reject", {"statistic": statistic, "aggregate": aggregate, "low": lower,
                                  "high": upper, "direction": "pi-mu", "denominator": "keep"}),
            Correction("is", {"level": weight_level, "high": None})]


@pytest.mark.parametrize(("level", "metric", "agg", "candidates"), AREAL_CASES)
def test_areals_rejection_sampling_and_decoupled_loss(level, metric, agg, candidates):
    """AReaL's rejection (mask action) and its decoupled PPO loss (rejected tokens stay in the
    denominator, the loss times π_prox/μ) = grlab's ppo with reject(direction="pi-mu",
    denominator="keep") and an untruncated is weight, in value and gradient."""
    logp, old, mu, _, _, adv, mask = rollout_batch()

    def areal_keeps(bounds):
        return areal_rejection(old, mu, mask, level=level, metric=metric, agg=agg,
                               lower=bounds[0], upper=bounds[1])[0]

    lower, upper = partial_case(candidates, areal_keeps, mask)
    kept = areal_keeps((lower, upper))
    leaf = logp.clone().requires_grad_(True)
    value = areal_ppo_loss(leaf, old, mu, adv, mask, level=level, metric=metric, agg=agg,
                           upper=upper, lower=lower)
    (grad,) = torch.autograd.grad(value, leaf)
    corrections = grlab_for_areal(level, metric, agg, lower, upper)
    applied = grlab_applied(corrections[:1], logp, old, mu, adv, mask)
    assert torch.equal((applied.weight > 0) & mask, kept)
    ours, our_grad = run_grad("ppo", logp, old, adv, mask, logp_rollout=mu,
                              corrections=corrections)
    assert float(ours) == pytest.approx(float(value.detach()), rel=1e-12)
    torch.testing.assert_close(our_grad, grad, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(("preset", "action"), [("areal-token-mask", "mask"),
                                                ("areal-token-truncate", "clamp")])
def test_areals_former_behave_imp_weight_cap_is_a_preset(preset, action):
    """behave_imp_weight_mode token_mask / token_truncate with cap 5 (AReaL's old default,
    now rejection_sampling {level: token, metric: ratio, action: mask/clamp, upper: 5}): the
    decoupled loss with the preset alone."""
    logp, old, mu, _, _, adv, mask = rollout_batch()
    mu = mu.clone()
    mu[0, 1], mu[3, 0] = old[0, 1] - 2.0, old[3, 0] - 1.7  # π_prox/μ = 7.4 and 5.5: the cap acts
    leaf = logp.clone().requires_grad_(True)
    value = areal_ppo_loss(leaf, old, mu, adv, mask, level="token", metric="ratio", agg="mean",
                           upper=5.0, lower=None, action=action)
    (grad,) = torch.autograd.grad(value, leaf)
    ours, our_grad = run_grad("ppo", logp, old, adv, mask, logp_rollout=mu, corrections=preset)
    assert float(ours) == pytest.approx(float(value.detach()), rel=1e-12)
    torch.testing.assert_close(our_grad, grad, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("method", ["loglinear", "linear", "rollout"])
def test_proximal_logp_is_areals_approximation(method):
    g = torch.Generator().manual_seed(5)
    mu = -torch.rand(4, 6, generator=g, dtype=F64) * 3
    theta = mu + 0.4 * torch.randn(4, 6, generator=g, dtype=F64)
    versions = torch.randint(-1, 7, (4, 6), generator=g)
    for current in (3, 6, 7):
        expected = areal_prox_logp(mu, theta, versions, current, method)
        got = grlab_proximal_logp(mu, theta, versions, current, method=method)
        # AReaL takes α in float32 (versions.float()); linear adds 1e-10 inside the log
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-7)


# ========================================================= slime (commit 624b824a, the veto)

SLIME_COMMIT = "624b824a898ab0ec1fcb4d373004c7f3852bf515"


def slime_veto_mask(log_ratio, loss_mask, veto_threshold):
    """examples/train_infer_mismatch_helper/mis.py ``calculate_veto_mask``, called there on one
    sequence at a time (here: row by row) with log_ratio = log π_old − log μ."""
    rows = []
    for lr, m in zip(log_ratio, loss_mask, strict=True):
        log_veto = torch.log(torch.tensor(veto_threshold, dtype=lr.dtype))
        catastrophic = (lr < log_veto) & m.bool()
        rows.append((~catastrophic.any()).to(lr.dtype).expand_as(lr))
    return torch.stack(rows)


def test_the_token_veto_is_slimes():
    """slime's rs_veto_threshold (1e-4 in its mis.yaml): a sequence with any valid token whose
    π_old/μ is below the threshold is rejected whole = grlab's token-veto."""
    logp, old, mu, _, _, adv, mask = rollout_batch()
    mu = mu.clone()
    mu[1, 2] = old[1, 2] + 10.0  # π_old/μ = e^-10 < 1e-4 on a valid token
    mu[3, 5] = old[3, 5] + 12.0  # ... and on a padded one (row 3 has 3 valid tokens)
    theirs = slime_veto_mask(old - mu, mask, 1e-4).bool() & mask
    applied = grlab_applied("token-veto", logp, old, mu, adv, mask)
    assert torch.equal(applied.loss_mask, theirs)
    assert not bool(theirs[1].any()) and bool(theirs[3].any())
