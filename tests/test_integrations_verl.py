"""grlab's losses and advantages inside verl 0.9.x (``llm_bridge.integrations.verl``).

References come from verl's own code wherever verl has the concept: its ``agg_loss`` for
every aggregation mode and the global-batch normalisation, its ``vanilla``/``gspo``/``cispo``
losses, its ``rloo``/``grpo`` estimators, and its real call site ``ppo_loss`` (which builds
``config.global_batch_info`` and fetches the loss by name). Everything runs in float64, so the
tolerances are round-off; the one exception is named where it is used (verl's 1e-8 in
``seq-mean-token-mean``). Skipped when verl is not installed (``pip install 'grlab[verl]'``).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("verl", reason="the [verl] extra is not installed")

from tensordict import TensorDict
from verl.trainer.ppo import core_algos
from verl.utils import tensordict_utils as tu
from verl.workers.config import ActorConfig, PolicyLossConfig
from verl.workers.utils.losses import ppo_loss

import llm_bridge.integrations.verl as grlab_verl
from simulator.advantages import group_advantages
from simulator.losses import LOSSES, policy_loss

MODES = ("token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-sum-norm",
         "seq-mean-token-mean")
# verl's seq-mean-token-mean divides a row's sum by L_i + 1e-8: a relative difference of at
# most 1e-8 / min L_i = 1e-8 here (rows have ≥ 1 token); everything else agrees to round-off.
RTOL = {"seq-mean-token-mean": 2e-8}
DEFAULT_RTOL = 1e-10


def actor_config(loss_mode: str, grlab_kwargs: dict | None = None, **fields) -> ActorConfig:
    policy = (grlab_verl.GrlabPolicyLossConfig(loss_mode=loss_mode, grlab_kwargs=grlab_kwargs)
              if grlab_kwargs is not None else PolicyLossConfig(loss_mode=loss_mode))
    return ActorConfig(strategy="fsdp", rollout_n=2, ppo_micro_batch_size_per_gpu=2,
                       policy_loss=policy, **fields)


def batch(extreme: bool = False, seed: int = 0):
    """[B, T] = [10, 7] float64 tensors with every PPO region populated for both signs of A.

    Rows 0–3 hold, token by token, ρ < 1−ε, inside the band, 1+ε < ρ < c, ρ > c = 3 (dual
    clip), and (``extreme``) |δ| > 20 (verl's clamp); rows 4–8 have random lengths and δ;
    row 9 is fully masked. Advantages are per sequence (verl broadcasts outcome advantages
    over tokens), positive, negative and zero.
    """
    gen = torch.Generator().manual_seed(seed)
    rows, width = 10, 7
    deltas = torch.log(torch.tensor([0.5, 0.9, 1.05, 1.25, 1.6, 4.0, 0.7], dtype=torch.float64))
    if extreme:
        deltas[2], deltas[6] = 25.0, -25.0
    delta = 0.6 * torch.randn(rows, width, generator=gen, dtype=torch.float64)
    delta[:4] = deltas + 1e-3 * torch.randn(4, width, generator=gen, dtype=torch.float64)
    lengths = torch.tensor([7, 7, 7, 7, 1, 3, 5, 6, 2, 0])
    mask = torch.arange(width)[None, :] < lengths[:, None]
    adv_row = torch.tensor([1.3, -0.8, 0.6, -1.7, 0.0, 0.9, -0.4, 1.1, -1.2, 0.5],
                           dtype=torch.float64)
    old = -torch.rand(rows, width, generator=gen, dtype=torch.float64) * 3 - 0.05
    logp = (old + delta).detach().requires_grad_()
    return logp, old, adv_row[:, None].expand(rows, width).clone(), mask


def grad_of(loss, logp):
    (grad,) = torch.autograd.grad(loss, logp)
    return grad


def grlab_token_loss(name, logp, old, adv, mask, **keywords):
    """grlab's per-token loss [B, T] (zeroed where masked, as ``policy_loss`` prepares it)."""
    zero = logp.new_zeros(())
    return LOSSES[name](torch.where(mask, logp, zero), torch.where(mask, old, zero),
                        torch.where(mask, adv, zero), mask, **keywords).loss


@pytest.mark.parametrize("mode", MODES)
# a loss reading another tensor (LossSpec.inputs: M2PO's logp_rollout) needs an adapter that
# passes it; verl's policy-loss signature has no such argument
@pytest.mark.parametrize("name", sorted(name for name, spec in LOSSES.items() if not spec.inputs))
def test_every_registered_loss_through_verl_equals_verls_aggregation_of_the_grlab_loss(
        name, mode):
    """For every loss and every verl mode, ``get_policy_loss_fn('grlab/<name>')`` called as
    verl calls it equals verl's own ``agg_loss`` of grlab's per-token loss, value and gradient,
    in the single-process case (no global batch info: verl divides by the valid rows)."""
    logp, old, adv, mask = batch()
    fn = core_algos.get_policy_loss_fn(f"grlab/{name}")
    loss, metrics = fn(old_log_prob=old, log_prob=logp, advantages=adv, response_mask=mask,
                       loss_agg_mode=mode, config=actor_config(f"grlab/{name}"),
                       rollout_is_weights=None)
    reference = core_algos.agg_loss(grlab_token_loss(name, logp, old, adv, mask), mask, mode)
    rtol = RTOL.get(mode, DEFAULT_RTOL)
    torch.testing.assert_close(loss, reference, rtol=rtol, atol=1e-12)
    torch.testing.assert_close(grad_of(loss, logp), grad_of(reference, logp), rtol=rtol,
                               atol=1e-12)
    assert all(isinstance(value, float) for value in metrics.values())
    assert "actor/grlab/clipfrac" in metrics and "actor/pg_clipfrac" in metrics


@pytest.mark.parametrize("scale", [None, 5])
@pytest.mark.parametrize("mode", MODES)
def test_data_parallel_shards_sum_to_the_global_batch_loss(mode, scale):
    """verl's engines give every micro-batch of every dp rank the global counts
    (``batch_num_tokens``, ``global_batch_size``) and ``dp_size``; DDP averages the ranks'
    gradients. Two ranks × two micro-batches, averaged over ranks, equal verl's ``agg_loss`` of
    the whole mini-batch in value and gradient (rows counted as verl's engines count them: all
    rows, the fully masked one included)."""
    name = "rec-oneside-nois"
    logp, old, adv, mask = batch()
    info = {"dp_size": 2, "batch_num_tokens": int(mask.sum()),
            "global_batch_size": mask.shape[0], "loss_scale_factor": scale}
    config = actor_config(f"grlab/{name}")
    fn = core_algos.get_policy_loss_fn(f"grlab/{name}")
    total = logp.new_zeros(())
    for rank_rows in ([0, 2, 4, 6, 8], [1, 3, 5, 7, 9]):
        for micro in (rank_rows[:2], rank_rows[2:]):
            config.global_batch_info.update(info)
            loss, _ = fn(old[micro], logp[micro], adv[micro], mask[micro], mode, config)
            total = total + loss / info["dp_size"]  # DDP's average over the two ranks
    per_token = grlab_token_loss(name, logp, old, adv, mask)
    reference = core_algos.agg_loss(per_token, mask, mode, dp_size=1,
                                    batch_num_tokens=info["batch_num_tokens"],
                                    global_batch_size=info["global_batch_size"],
                                    loss_scale_factor=scale)
    rtol = RTOL.get(mode, DEFAULT_RTOL)
    torch.testing.assert_close(total, reference, rtol=rtol, atol=1e-12)
    torch.testing.assert_close(grad_of(total, logp), grad_of(reference, logp), rtol=rtol,
                               atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_verl_vanilla_equals_grlab_ppo_with_dual_clip_and_verls_clamp(mode):
    """verl's ``vanilla`` always dual-clips (clip_ratio_c = 3) and clamps δ to ±20 before e^δ;
    grlab's ``ppo`` with ``dual_clip=3.0, log_ratio_clamp=20.0`` and ε from the verl config is
    the same loss: value, gradient, ``pg_clipfrac``, ``pg_clipfrac_lower`` and ``ppo_kl``, on a
    batch that also holds |δ| > 20."""
    logp, old, adv, mask = batch(extreme=True)
    fields = {"clip_ratio_low": 0.2, "clip_ratio_high": 0.28}
    ours, our_metrics = core_algos.get_policy_loss_fn("grlab/ppo")(
        old, logp, adv, mask, mode,
        actor_config("grlab/ppo", {"dual_clip": 3.0, "log_ratio_clamp": 20.0}, **fields))
    theirs, their_metrics = core_algos.get_policy_loss_fn("vanilla")(
        old, logp, adv, mask, mode, actor_config("vanilla", **fields))
    rtol = RTOL.get(mode, DEFAULT_RTOL)
    torch.testing.assert_close(ours, theirs, rtol=rtol, atol=1e-12)
    torch.testing.assert_close(grad_of(ours, logp), grad_of(theirs, logp), rtol=rtol, atol=1e-12)
    # verl takes the clip fractions' mean of a float32 indicator (.float()): float32 round-off
    for key in ("actor/pg_clipfrac", "actor/pg_clipfrac_lower"):
        assert our_metrics[key] == pytest.approx(their_metrics[key], rel=1e-6), key
    assert our_metrics["actor/ppo_kl"] == pytest.approx(their_metrics["actor/ppo_kl"], rel=1e-12)
    # the batch really populates both clip regions, so the metric comparison has teeth
    assert their_metrics["actor/pg_clipfrac"] > 0.1 and their_metrics["actor/pg_clipfrac_lower"] > 0


def test_grlab_grpo_is_not_verl_vanilla_without_the_dual_clip():
    """grlab's presets keep their own keywords when the verl clip fields sit at verl's defaults:
    ``grlab/grpo`` has no dual clip, so it differs from ``vanilla`` on negative samples with
    ρ > 3, and ``grlab/ppo-dual-clip`` (+ verl's clamp) closes the gap."""
    logp, old, adv, mask = batch()
    vanilla, _ = core_algos.get_policy_loss_fn("vanilla")(old, logp, adv, mask, "token-mean",
                                                          actor_config("vanilla"))
    grpo, _ = core_algos.get_policy_loss_fn("grlab/grpo")(old, logp, adv, mask, "token-mean",
                                                         actor_config("grlab/grpo"))
    dual, _ = core_algos.get_policy_loss_fn("grlab/ppo-dual-clip")(
        old, logp, adv, mask, "token-mean",
        actor_config("grlab/ppo-dual-clip", {"log_ratio_clamp": 20.0}))
    assert abs(float((grpo - vanilla).detach())) > 1e-3
    torch.testing.assert_close(dual, vanilla, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("ours", ["gspo", "gspo-token"])
def test_verl_gspo_equals_grlab_gspo_with_verls_epsilons(ours, mode):
    """verl's ``gspo`` is GSPO-token (value s_i, gradient s_i·∇log π per token); with
    advantages constant along a row it equals grlab's ``gspo`` and ``gspo-token`` in value,
    gradient and ``pg_clipfrac`` (ε = 3e-4/4e-4 set in verl's config reach grlab's keywords)."""
    logp, old, adv, mask = batch()
    logp = (old + 1e-3 * (logp - old)).detach().requires_grad_()  # sequence ratios near 1 ± ε
    fields = {"clip_ratio_low": 3e-4, "clip_ratio_high": 4e-4}
    mine, my_metrics = core_algos.get_policy_loss_fn(f"grlab/{ours}")(
        old, logp, adv, mask, mode, actor_config(f"grlab/{ours}", **fields))
    theirs, their_metrics = core_algos.get_policy_loss_fn("gspo")(
        old, logp, adv, mask, mode, actor_config("gspo", **fields))
    rtol = RTOL.get(mode, DEFAULT_RTOL)
    torch.testing.assert_close(mine, theirs, rtol=rtol, atol=1e-12)
    torch.testing.assert_close(grad_of(mine, logp), grad_of(theirs, logp), rtol=rtol, atol=1e-12)
    # verl's clip fraction is the mean of a float32 indicator: float32 round-off
    assert my_metrics["actor/pg_clipfrac"] == pytest.approx(their_metrics["actor/pg_clipfrac"],
                                                           rel=1e-6)
    assert 0 < their_metrics["actor/pg_clipfrac"] < 1


@pytest.mark.parametrize("mode", MODES)
def test_verl_cispo_equals_grlab_cispo_with_verls_clip_fraction(mode):
    """verl's ``cispo`` is grlab's (−sg(clip(ρ, 1−ε_low, 1+ε_high))·A·log π) in value and
    gradient, and grlab reports verl's ``pg_clipfrac`` (the share of truncated IS weights);
    grlab's own ``clipfrac`` (tokens whose gradient was removed) is 0: CISPO removes none."""
    logp, old, adv, mask = batch()
    fields = {"clip_ratio_low": 1.0, "clip_ratio_high": 0.28}
    mine, my_metrics = core_algos.get_policy_loss_fn("grlab/cispo")(
        old, logp, adv, mask, mode, actor_config("grlab/cispo", **fields))
    theirs, their_metrics = core_algos.get_policy_loss_fn("cispo")(
        old, logp, adv, mask, mode, actor_config("cispo", **fields))
    rtol = RTOL.get(mode, DEFAULT_RTOL)
    torch.testing.assert_close(mine, theirs, rtol=rtol, atol=1e-12)
    torch.testing.assert_close(grad_of(mine, logp), grad_of(theirs, logp), rtol=rtol, atol=1e-12)
    assert my_metrics["actor/pg_clipfrac"] == pytest.approx(
        their_metrics["actor/pg_clipfrac"], rel=1e-6)  # verl's: mean of a float32 indicator
    assert my_metrics["actor/grlab/clipfrac"] == 0.0 < their_metrics["actor/pg_clipfrac"]


def test_verls_own_call_site_runs_a_grlab_loss_with_the_global_batch_info():
    """``verl.workers.utils.losses.ppo_loss`` — what verl's engines call per micro-batch —
    fetches ``grlab/<name>`` by the config's ``loss_mode``, fills ``global_batch_info`` from the
    batch, and gets grlab's value: the loss of the micro-batch's rows over the global count."""
    logp, old, adv, mask = batch()
    prompt = 2
    lengths = mask.sum(dim=1)
    flat = torch.cat([torch.cat([logp.new_zeros(prompt - 1), logp[i, :n], logp.new_zeros(1)])
                      for i, n in enumerate(lengths.tolist())])  # verl's unpadded model output
    data = TensorDict({
        "prompts": torch.ones(len(lengths), prompt, dtype=torch.long),
        "responses": torch.ones(mask.shape, dtype=torch.long),
        "attention_mask": torch.cat([torch.ones(len(lengths), prompt, dtype=torch.long),
                                     mask.long()], dim=1),
        "response_mask": mask.long(), "old_log_probs": old, "advantages": adv,
    }, batch_size=[len(lengths)])
    tu.assign_non_tensor(data, dp_size=1, batch_num_tokens=3 * int(mask.sum()),
                         global_batch_size=None)
    config = actor_config("grlab/rec-oneside-nois", loss_agg_mode="token-mean")
    loss, metrics = ppo_loss(config, {"log_probs": flat}, data)
    expected = policy_loss("rec-oneside-nois", logp, old, adv, mask, agg="token-mean",
                           denominator=3 * int(mask.sum())).loss
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)
    assert metrics["actor/pg_loss"].aggregate() == pytest.approx(float(expected.detach()))


# --------------------------------------------------------------------------------------------
# The keyword rule
# --------------------------------------------------------------------------------------------


def test_verl_clip_fields_at_their_defaults_leave_the_preset_alone():
    assert grlab_verl.loss_keywords("dapo", actor_config("grlab/dapo")) == {}
    assert LOSSES["dapo"].resolve({})["eps_high"] == 0.28


def test_a_changed_verl_clip_field_becomes_the_grlab_keyword():
    config = actor_config("grlab/ppo", clip_ratio_low=0.1, clip_ratio_high=0.3, clip_ratio_c=5.0)
    assert grlab_verl.loss_keywords("ppo", config) == {"eps_low": 0.1, "eps_high": 0.3,
                                                       "dual_clip": 5.0}
    fallback = actor_config("grlab/ppo", clip_ratio=0.3, clip_ratio_low=None,
                            clip_ratio_high=None)
    assert grlab_verl.loss_keywords("ppo", fallback) == {"eps_low": 0.3, "eps_high": 0.3}


def test_grlab_kwargs_win_over_the_verl_fields():
    config = actor_config("grlab/ppo", {"eps_high": 0.4}, clip_ratio_high=0.3)
    assert grlab_verl.loss_keywords("ppo", config) == {"eps_high": 0.4}


def test_a_changed_verl_clip_field_the_loss_cannot_take_is_refused():
    with pytest.raises(ValueError, match=r"clip_ratio_high=0\.3 has no counterpart"):
        grlab_verl.loss_keywords("reinforce", actor_config("grlab/reinforce",
                                                           clip_ratio_high=0.3))


# verl's losses of the same meaning as grlab's, with verl fields changed from their defaults.
# verl's sapo and geo_mean ignore loss_agg_mode (sapo: seq-mean-token-mean; geo_mean: its own
# per-row geometric mean): those run in the one mode grlab's preset uses. geo_mean takes the
# mean over all B rows, a fully masked row counting as 0, where verl's agg_loss (and so
# grlab/gmpo under verl) divides by the rows with a token: the two agree on batches without an
# empty row, which is the batch gmpo is checked on (grlab's own gmpo gives geo_mean's reading
# with rows="all": tests/test_parity_trust_region.py).
VERL_TWINS = [
    ("sapo", "sapo", {}, MODES[-1:]),
    ("sapo", "sapo", {"tau_pos": 2.0, "tau_neg": 0.5}, MODES[-1:]),
    ("gmpo", "geo_mean", {}, MODES[-1:]),
    ("gmpo", "geo_mean", {"clip_ratio_low": 0.1, "clip_ratio_high": 0.4}, MODES[-1:]),
    ("dppo-tv", "dppo_tv", {}, MODES),
    ("dppo-tv", "dppo_tv", {"clip_ratio_c": 1.5, "clip_ratio_high": 0.3}, MODES),
    ("dppo-kl", "dppo_kl", {}, MODES),
    ("dppo-kl", "dppo_kl", {"clip_ratio_c": 10.0, "clip_ratio_low": 0.1}, MODES),
    ("kl-cov", "kl_cov", {}, MODES),
    ("kl-cov", "kl_cov", {"kl_cov_ratio": 0.3, "ppo_kl_coef": 2.0}, MODES),
    ("clip-cov", "clip_cov", {"clip_cov_ratio": 0.9, "clip_cov_lb": 0.1, "clip_cov_ub": 2.0},
     MODES),
    ("dro", "dro", {"dro_beta": 0.5}, MODES),
]


@pytest.mark.parametrize(("ours", "theirs", "fields", "modes"), VERL_TWINS,
                         ids=[f"{t[1]}-{i}" for i, t in enumerate(VERL_TWINS)])
def test_verls_own_loss_and_grlabs_twin_read_the_same_config(ours, theirs, fields, modes):
    """``grlab/<name>`` and verl's loss of the same meaning, called by verl's registry with one
    actor config (verl's fields at their defaults, then changed), agree in value and gradient.
    Clip-Cov draws its tokens from torch's global generator in verl: grlab's ``seed`` keyword
    (given by grlab_kwargs) makes the same draw after the same manual_seed."""
    logp, old, adv, mask = batch()
    if ours == "gmpo":
        assert not mask[-1].any()
        logp, old, adv, mask = (t[:-1] for t in (logp.detach(), old, adv, mask))
    policy_fields = {f for f in fields if f in {f.name for f in
                                               dataclasses.fields(PolicyLossConfig)}}
    extra = {"seed": 7} if ours == "clip-cov" else None
    for mode in modes:
        results = []
        for name, kwargs in ((f"grlab/{ours}", extra), (theirs, None)):
            policy = grlab_verl.GrlabPolicyLossConfig(
                loss_mode=name, grlab_kwargs=kwargs,
                **{f: fields[f] for f in policy_fields})
            config = ActorConfig(strategy="fsdp", rollout_n=2, ppo_micro_batch_size_per_gpu=2,
                                 policy_loss=policy,
                                 **{f: v for f, v in fields.items() if f not in policy_fields})
            leaf = logp.detach().clone().requires_grad_()
            torch.manual_seed(7)
            loss, _ = core_algos.get_policy_loss_fn(name)(
                old_log_prob=old, log_prob=leaf, advantages=adv, response_mask=mask,
                loss_agg_mode=mode, config=config, rollout_is_weights=None)
            results.append((loss, grad_of(loss, leaf)))
        (mine, my_grad), (verls, verl_grad) = results
        rtol = RTOL.get(mode, DEFAULT_RTOL)
        torch.testing.assert_close(mine, verls, rtol=rtol, atol=1e-12)
        torch.testing.assert_close(my_grad, verl_grad, rtol=rtol, atol=1e-12)


def test_a_changed_verl_field_the_loss_cannot_take_is_refused():
    config = ActorConfig(strategy="fsdp", rollout_n=2, ppo_micro_batch_size_per_gpu=2,
                         tau_pos=1.5, policy_loss=PolicyLossConfig(loss_mode="grlab/grpo"))
    with pytest.raises(ValueError, match=r"tau_pos=1\.5 has no counterpart in loss grlab/grpo"):
        grlab_verl.loss_keywords("grpo", config)
    assert grlab_verl.loss_keywords("sapo", config)["tau_pos"] == 1.5
    config = ActorConfig(strategy="fsdp", rollout_n=2, ppo_micro_batch_size_per_gpu=2,
                         clip_ratio_c=5.0, policy_loss=PolicyLossConfig(loss_mode="x"))
    assert grlab_verl.loss_keywords("dppo-tv", config)["clip_ratio_c"] == 5.0
    assert grlab_verl.loss_keywords("ppo", config)["dual_clip"] == 5.0


def test_an_unknown_grlab_keyword_is_a_type_error_naming_the_valid_ones():
    with pytest.raises(TypeError, match="eps_hihg"):
        grlab_verl.loss_keywords("ppo", actor_config("grlab/ppo", {"eps_hihg": 0.3}))


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean"])
def test_rollout_is_weights_weight_each_token_as_verls_vanilla_does(mode):
    """verl's rollout correction multiplies each token's loss by its weight before agg_loss;
    grlab/ppo with vanilla's settings gives vanilla's value and gradient with the weights on."""
    logp, old, adv, mask = batch(extreme=True)
    weights = torch.rand(old.shape, generator=torch.Generator().manual_seed(7),
                         dtype=old.dtype) * 2
    fields = {"clip_ratio_low": 0.2, "clip_ratio_high": 0.28}
    ours, _ = core_algos.get_policy_loss_fn("grlab/ppo")(
        old, logp, adv, mask, mode,
        actor_config("grlab/ppo", {"dual_clip": 3.0, "log_ratio_clamp": 20.0}, **fields),
        rollout_is_weights=weights)
    theirs, _ = core_algos.get_policy_loss_fn("vanilla")(
        old, logp, adv, mask, mode, actor_config("vanilla", **fields),
        rollout_is_weights=weights)
    rtol = RTOL.get(mode, DEFAULT_RTOL)
    torch.testing.assert_close(ours, theirs, rtol=rtol, atol=1e-12)
    torch.testing.assert_close(grad_of(ours, logp), grad_of(theirs, logp), rtol=rtol, atol=1e-12)
    unweighted, _ = core_algos.get_policy_loss_fn("vanilla")(
        old, logp, adv, mask, mode, actor_config("vanilla", **fields))
    assert not torch.allclose(unweighted, theirs)  # the weights matter on this batch


def test_data_parallel_without_global_counts_is_refused_as_verl_does():
    logp, old, adv, mask = batch()
    config = actor_config("grlab/grpo")
    config.global_batch_info.update({"dp_size": 2})
    with pytest.raises(ValueError, match="batch_num_tokens"):
        core_algos.get_policy_loss_fn("grlab/grpo")(old, logp, adv, mask, "token-mean", config)


def test_the_grlab_policy_loss_config_passes_through_verls_hydra_conversion():
    """The documented override: ``policy_loss._target_`` = ``GrlabPolicyLossConfig`` and a
    ``grlab_kwargs`` dict survive verl's ``omega_conf_to_dataclass`` (verl's own class would
    reject the unknown key)."""
    from omegaconf import OmegaConf
    from verl.utils.config import omega_conf_to_dataclass

    node = OmegaConf.create({"_target_": "llm_bridge.integrations.verl.GrlabPolicyLossConfig",
                             "loss_mode": "grlab/dapo", "grlab_kwargs": {"eps_high": 0.3}})
    converted = omega_conf_to_dataclass(node)
    assert isinstance(converted, grlab_verl.GrlabPolicyLossConfig)
    assert converted.grlab_kwargs == {"eps_high": 0.3}


# --------------------------------------------------------------------------------------------
# verl's rollout correction as grlab corrections (three policies)
# --------------------------------------------------------------------------------------------


def three_policies(seed: int = 3):
    """The ``batch`` with a sampler's log-probs μ apart from π_old (old), differing by noise."""
    logp, old, adv, mask = batch(seed=seed)
    noise = 0.25 * torch.randn(old.shape, generator=torch.Generator().manual_seed(seed + 1),
                               dtype=old.dtype)
    return logp, old, old + noise, adv, mask


ROLLOUT_CORRECTIONS = [
    {"rollout_is": "token", "rollout_is_threshold": 1.2},
    {"rollout_is": "sequence", "rollout_is_threshold": 2.0},
    {"rollout_is": "token", "rollout_is_threshold": "0.8_1.25"},
    {"rollout_is": "sequence", "rollout_is_threshold": "0.5_2.0"},
    {"rollout_is": "token", "rollout_is_threshold": 1.5, "rollout_is_batch_normalize": True},
    {"rollout_is": "sequence", "rollout_is_threshold": 3.0, "rollout_is_batch_normalize": True},
    {"rollout_is": None, "rollout_rs": "seq_mean_k3", "rollout_rs_threshold": 0.03},
    {"rollout_is": None, "rollout_rs": "token_k1", "rollout_rs_threshold": "0.7_1.4"},
    {"rollout_is": "token", "rollout_is_threshold": 2.0, "rollout_rs": "seq_sum_k1,seq_max_k2",
     "rollout_rs_threshold": "0.3_3.0,0.1"},
    {"rollout_is": "sequence", "rollout_is_threshold": 2.0, "rollout_is_batch_normalize": True,
     "rollout_rs": "token_k2", "rollout_rs_threshold": 0.05},
]


@pytest.mark.parametrize("fields", ROLLOUT_CORRECTIONS)
@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean"])
def test_verls_rollout_correction_is_grlabs_is_correction(fields, mode):
    """verl's decoupled rollout correction (its own ``compute_rollout_correction_and_add_to_
    batch`` on old_log_probs and rollout_log_probs, weights handed to the loss as
    ``rollout_is_weights``) and grlab's ``verl_corrections`` of the same config on π_old and μ
    apart give the same loss, value and gradient (TIS, IcePop, token and sequence level, batch
    normalisation; rejection by verl's rollout_rs, which edits the response mask: grlab's
    ``reject`` drops the tokens from the normaliser)."""
    from verl import DataProto
    from verl.trainer.config.algorithm import RolloutCorrectionConfig
    from verl.trainer.ppo.rollout_corr_helper import compute_rollout_correction_and_add_to_batch

    logp, old, rollout, adv, mask = three_policies()
    config = RolloutCorrectionConfig(**fields)
    data = DataProto.from_dict(tensors={"old_log_probs": old, "rollout_log_probs": rollout,
                                        "response_mask": mask.long()})
    data, _ = compute_rollout_correction_and_add_to_batch(data, config)
    weights = data.batch.get("rollout_is_weights")
    kept = data.batch["response_mask"].bool()
    if config.rollout_rs is None:
        assert torch.equal(kept, mask)
    else:  # the rejection removes part of the batch, not all of it
        assert 0 < int(kept.sum()) < int(mask.sum())
    theirs = policy_loss("grpo", logp, old, adv, kept, agg=mode, token_weights=weights)
    corrections = grlab_verl.verl_corrections(config)
    ours = policy_loss("grpo", logp, old, adv, mask, agg=mode, corrections=corrections,
                       logp_rollout=rollout)
    torch.testing.assert_close(ours.loss, theirs.loss, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad_of(ours.loss, logp), grad_of(theirs.loss, logp),
                               rtol=1e-10, atol=1e-12)
    plain = policy_loss("grpo", logp, old, adv, mask, agg=mode).loss
    assert not torch.allclose(ours.loss, plain)  # the correction matters on this batch


def test_verls_bypass_mode_anchors_the_ratio_on_the_current_policy_and_rs_maps_to_reject():
    from verl.trainer.config.algorithm import RolloutCorrectionConfig

    (bypass,) = grlab_verl.verl_corrections(RolloutCorrectionConfig.bypass_pg_is())
    assert bypass.hparams["ratio"] == "current" and bypass.hparams["level"] == "sequence"
    assert grlab_verl.verl_corrections(RolloutCorrectionConfig(rollout_is=None)) == ()
    assert grlab_verl.verl_corrections(None) == ()
    (rejection,) = grlab_verl.verl_corrections(RolloutCorrectionConfig.decoupled_k3_rs())
    assert rejection.name == "reject" and rejection.hparams["statistic"] == "k3"
    with pytest.raises(ValueError, match="rollout_rs option 'seq_max_k1'"):
        grlab_verl.verl_rejection("seq_max_k1", 2.0)
    with pytest.raises(ValueError, match="one threshold or one per rollout_rs option"):
        grlab_verl.verl_corrections({"rollout_rs": "token_k2,token_k3",
                                     "rollout_rs_threshold": "0.1,0.2,0.3"})


def test_grlab_corrections_in_the_loss_see_rollout_log_probs_apart_from_old_log_prob():
    """``policy_loss.grlab_corrections``: the registered loss applies them inside, on
    ``old_log_prob`` (π_old) and ``rollout_log_probs`` (μ) when verl passes them, and the
    config passes verl's hydra conversion."""
    from omegaconf import OmegaConf
    from verl.utils.config import omega_conf_to_dataclass

    logp, old, rollout, adv, mask = three_policies()
    config = ActorConfig(strategy="fsdp", rollout_n=2, ppo_micro_batch_size_per_gpu=2,
                         policy_loss=grlab_verl.GrlabPolicyLossConfig(
                             loss_mode="grlab/grpo",
                             grlab_corrections=["tis-token:high=1.2", "opsm:delta=0.01"]))
    fn = core_algos.get_policy_loss_fn("grlab/grpo")
    ours, metrics = fn(old, logp, adv, mask, "token-mean", config, rollout_log_probs=rollout)
    expected = policy_loss("grpo", logp, old, adv, mask, agg="token-mean",
                           corrections=["tis-token:high=1.2", "opsm:delta=0.01"],
                           logp_rollout=rollout).loss
    torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-12)
    assert metrics["actor/grlab/rejected_frac"] > 0
    plain, _ = fn(old, logp, adv, mask, "token-mean", actor_config("grlab/grpo", {}),
                  rollout_log_probs=rollout)
    assert not torch.allclose(plain, ours)  # without grlab_corrections μ changes nothing
    node = OmegaConf.create({"_target_": "llm_bridge.integrations.verl.GrlabPolicyLossConfig",
                             "loss_mode": "grlab/grpo", "grlab_corrections": ["icepop"]})
    assert omega_conf_to_dataclass(node).grlab_corrections == ["icepop"]


# --------------------------------------------------------------------------------------------
# Advantage estimators
# --------------------------------------------------------------------------------------------


def scores_and_index(seed: int = 0):
    """12 responses of 4 prompts, interleaved (verl's uid order is arbitrary), sizes 4/4/3/1."""
    gen = torch.Generator().manual_seed(seed)
    index = np.array(list("abcabcabcabd"), dtype=object)
    scores = torch.randint(0, 3, (12,), generator=gen).to(torch.float32)
    scores[[0, 3, 6, 9]] = torch.tensor([1.0, 0.0, 2.0, 1.0])
    width = 5
    lengths = torch.randint(1, width + 1, (12,), generator=gen)
    mask = (torch.arange(width)[None, :] < lengths[:, None]).float()
    token_rewards = torch.zeros(12, width)
    token_rewards[torch.arange(12), lengths - 1] = scores  # outcome reward on the last token
    return token_rewards, mask, index, scores


def estimate(name, token_rewards, mask, index, **algorithm):
    """Call a registered estimator as verl's ``compute_advantage`` does for non-GAE kinds."""
    config = {"adv_estimator": name, **algorithm}
    fn = core_algos.get_adv_estimator_fn(name)
    return fn(token_level_rewards=token_rewards, response_mask=mask, config=config, index=index)


def test_grlab_loo_equals_verls_rloo():
    token_rewards, mask, index, _ = scores_and_index()
    ours, _ = estimate("grlab/loo", token_rewards, mask, index)
    theirs, _ = core_algos.compute_rloo_outcome_advantage(token_rewards, mask, index)
    groups_of_two_or_more = torch.tensor([i != "d" for i in index])
    torch.testing.assert_close(ours[groups_of_two_or_more], theirs[groups_of_two_or_more])


@pytest.mark.parametrize("norm", [True, False])
def test_grlab_mean_std_with_sample_std_equals_verls_grpo(norm):
    """verl's ``grpo`` divides by torch.std (sample, ddof 1) + 1e-6; grlab's ``mean-std`` with
    ``std="sample", eps=1e-6`` is the same; ``mean`` is verl's grpo without std. A lone response
    differs by design: verl gives it r/(1 + 1e-6), grlab 0."""
    token_rewards, mask, index, _ = scores_and_index()
    name, options = (("grlab/mean-std", {"std": "sample", "eps": 1e-6}) if norm
                     else ("grlab/mean", {}))
    ours, _ = estimate(name, token_rewards, mask, index, grlab_advantage_kwargs=options)
    theirs, _ = core_algos.compute_grpo_outcome_advantage(token_rewards, mask, index,
                                                          norm_adv_by_std_in_grpo=norm)
    grouped = torch.tensor([i != "d" for i in index])
    torch.testing.assert_close(ours[grouped], theirs[grouped])
    assert torch.all(ours[~grouped] == 0)


def test_logavgexp_and_shift_follow_their_formulas_group_by_group():
    """τ·log mean e^{r/τ} baseline (OPMD) and the AsymRE shift, recomputed by hand per group."""
    token_rewards, mask, index, scores = scores_and_index()
    ours, _ = estimate("grlab/logavgexp", token_rewards, mask, index,
                       grlab_advantage_kwargs={"tau": 0.5})
    shifted, _ = estimate("grlab/mean", token_rewards, mask, index,
                          grlab_advantage_kwargs={"shift": 0.1})
    for group in "abc":
        rows = np.flatnonzero(index == group)
        r = scores[rows].double()
        baseline = 0.5 * torch.log(torch.exp(r / 0.5).mean())
        expected = (r - baseline) * mask[rows].double().T
        torch.testing.assert_close(ours[rows].double(), expected.T, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(shifted[rows].double(),
                                   ((r - r.mean() + 0.1) * mask[rows].double().T).T,
                                   rtol=1e-6, atol=1e-6)


def test_red_drop_balances_negatives_and_recentres_on_the_kept_samples():
    """Per group: as many negatives kept as there are non-negatives, the kept samples
    re-centred on their own mean, the dropped ones at A = 0."""
    token_rewards, mask, index, scores = scores_and_index()
    adv, _ = estimate("grlab/red-drop", token_rewards, mask, index,
                      grlab_advantage_kwargs={"seed": 3})
    per_response = adv.sum(dim=1) / mask.sum(dim=1)
    for group in "abc":
        rows = np.flatnonzero(index == group)
        r, a = scores[rows], per_response[rows]
        negative = r < r.mean()  # Trinity's rule: every other sample counts as positive
        kept = (a != 0) | ~negative
        assert int((negative & kept).sum()) == min(int((~negative).sum()), int(negative.sum()))
        if kept.any():
            torch.testing.assert_close(a[kept], r[kept] - r[kept].mean(), rtol=1e-6, atol=1e-6)


def test_a_loss_named_estimator_uses_that_presets_advantage():
    token_rewards, mask, index, scores = scores_and_index()
    adv, returns = estimate("grlab/rec-oneside-nois", token_rewards, mask, index)
    rows = np.flatnonzero(index == "a")
    expected = group_advantages(scores[rows].double()[None], LOSSES["rec-oneside-nois"].advantage)
    torch.testing.assert_close(adv[rows, 0].double(), expected[0], rtol=1e-6, atol=1e-6)
    assert torch.equal(adv, returns)


def test_an_estimator_without_index_is_refused():
    token_rewards, mask, _, _ = scores_and_index()
    with pytest.raises(ValueError, match="index"):
        core_algos.get_adv_estimator_fn("grlab/mean")(token_level_rewards=token_rewards,
                                                      response_mask=mask, config={})


def test_every_loss_and_kind_is_registered_under_the_grlab_prefix():
    assert {f"grlab/{n}" for n in LOSSES} <= set(core_algos.POLICY_LOSS_REGISTRY)
    kinds = {f"grlab/{n}" for n in (*LOSSES, *grlab_verl.ADVANTAGE_KINDS_VERL)}
    assert kinds <= set(core_algos.ADV_ESTIMATOR_REGISTRY)
    assert grlab_verl.register_all() == [f"grlab/{n}" for n in LOSSES]  # idempotent


def test_verls_external_module_hook_registers_the_grlab_names():
    """The documented hook: ``VERL_USE_EXTERNAL_MODULES=llm_bridge.integrations.verl`` makes
    ``import verl`` (in every process that inherits the variable) register grlab's names."""
    code = ("import verl\nfrom verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY as L, "
            "ADV_ESTIMATOR_REGISTRY as A\nprint('grlab/grpo' in L, 'grlab/red-drop' in A)")
    env = {**os.environ, "VERL_USE_EXTERNAL_MODULES": "llm_bridge.integrations.verl"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True).stdout.split()
    assert out[-2:] == ["True", "True"]


def test_the_documented_overrides_compose_into_verls_config_and_reach_grlab():
    """docs/engines.md's command-line overrides, composed by Hydra from verl's own
    ``ppo_trainer.yaml`` exactly as ``verl.trainer.main_ppo`` does: the actor config converts,
    its ``grlab_kwargs`` reach the loss's keywords, the algorithm section's options reach the
    estimator, and the Ray runtime env carries the import hook to the workers."""
    from pathlib import Path

    import verl
    from hydra import compose, initialize_config_dir
    from verl.utils.config import omega_conf_to_dataclass

    overrides = [
        "actor_rollout_ref.actor.policy_loss.loss_mode=grlab/rec-ring-nois",
        "actor_rollout_ref.actor.policy_loss._target_="
        "llm_bridge.integrations.verl.GrlabPolicyLossConfig",
        "+actor_rollout_ref.actor.policy_loss.grlab_kwargs={eps_high_prime: 3.0}",
        "actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-mean",
        "algorithm.adv_estimator=grlab/logavgexp",
        "+algorithm.grlab_advantage_kwargs={tau: 0.5}",
        "+ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES="
        "llm_bridge.integrations.verl",
        # fields verl requires of every run
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2", "actor_rollout_ref.rollout.n=4",
    ]
    config_dir = str(Path(verl.__file__).parent / "trainer" / "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        config = compose("ppo_trainer", overrides=overrides)
    actor = omega_conf_to_dataclass(config.actor_rollout_ref.actor)
    assert actor.loss_agg_mode == "seq-mean-token-mean"
    assert grlab_verl.loss_keywords("rec-ring-nois", actor) == {"eps_high_prime": 3.0}
    token_rewards, mask, index, scores = scores_and_index()
    adv, _ = core_algos.get_adv_estimator_fn(config.algorithm.adv_estimator)(
        token_level_rewards=token_rewards, response_mask=mask, index=index,
        config=config.algorithm)
    rows = np.flatnonzero(index == "a")
    expected = group_advantages(scores[rows].double()[None], "logavgexp", tau=0.5)[0]
    torch.testing.assert_close(adv[rows, 0].double(), expected, rtol=1e-6, atol=1e-6)
    hook = config.ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES
    assert hook == "llm_bridge.integrations.verl"
