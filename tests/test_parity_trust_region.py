"""Parity of the 2025–26 losses (simulator/losses/trust_region.py and their presets) with the
peers' own code: verl 0.9.1's ``core_algos`` policy-loss functions (called through
``get_policy_loss_fn`` with verl's ``ActorConfig``), TRL 1.16's ``GRPOTrainer._compute_loss``
(called on a stand-in trainer object holding only what that method reads), Trinity-RFT 0.6.0's
``SAPOPolicyLossFn``; and AReaL, which is not installable here, through a transcription of its
functions at commit 4aef98d8d818af55b43621aaadba047ae10f4e77 (areal/trainer/ppo/actor.py
``_apply_m2po_masking``/``_get_m2po_loss_mask``, areal/utils/functional/functional.py
``ppo_actor_loss_fn``).

Every peer case runs with the peer's defaults (and checks that grlab's defaults are the same,
or that the documented keyword restores the peer) and with non-default settings, on the seeded
batch of tests/parity_batch.py, in value, gradient and the peer's metrics. Each peer's block is
skipped only when that peer is not importable.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from simulator.losses import LOSSES, policy_loss
from tests.parity_batch import check_regions, parity_batch

EXACT = {"rtol": 1e-12, "atol": 1e-15}
VERL_MODES = ("token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean")


def _grlab(name, logp, old, adv, mask, **options):
    leaf = logp.clone().requires_grad_(True)
    out = policy_loss(name, leaf, old, adv, mask, **options)
    (grad,) = torch.autograd.grad(out.loss, leaf)
    return out.loss.detach(), grad, out.metrics


# --------------------------------------------------------------------------------------------
# verl 0.9.1
# --------------------------------------------------------------------------------------------


def _core():
    return pytest.importorskip("verl.trainer.ppo.core_algos",
                               reason="verl is not installed (pip install 'grlab[verl]')")


def _verl_config(low=0.2, high=0.2, **fields):
    """verl's ActorConfig; ``fields`` go to it, or to its PolicyLossConfig when they are that
    config's (clip_cov_ratio, dro_beta, ...)."""
    from verl.workers.config import ActorConfig
    from verl.workers.config.actor import PolicyLossConfig

    loss_fields = {f.name for f in dataclasses.fields(PolicyLossConfig)}
    loss = {k: v for k, v in fields.items() if k in loss_fields}
    actor = {k: v for k, v in fields.items() if k not in loss_fields}
    return ActorConfig(strategy="fsdp", clip_ratio=0.2, clip_ratio_low=low, clip_ratio_high=high,
                       rollout_n=1, ppo_micro_batch_size_per_gpu=1,
                       policy_loss=PolicyLossConfig(**loss), **actor)


def _verl(key, config, logp, old, adv, mask, mode="token-mean", seed=None):
    core = _core()
    leaf = logp.clone().requires_grad_(True)
    if seed is not None:
        torch.manual_seed(seed)
    a = adv.unsqueeze(-1).expand_as(logp)
    value, metrics = core.get_policy_loss_fn(key)(old, leaf, a, mask.to(logp.dtype), mode, config)
    (grad,) = torch.autograd.grad(value, leaf)
    return value.detach(), grad, metrics


def _same(ours, theirs, metrics=(), rel=1e-12):
    """Value, gradient and the peer's metrics. ``rel`` > 1e-12 where the peer adds 1e-8 to a
    denominator (a relative 1e-8 per row, so up to 1e-8 of the rows' absolute sum)."""
    value, grad, our_metrics = ours
    their_value, their_grad, their_metrics = theirs
    slack = 0.0 if rel <= 1e-12 else rel * float(grad.abs().sum() + 1.0)
    assert float(value) == pytest.approx(float(their_value), rel=rel, abs=1e-15 + slack)
    torch.testing.assert_close(grad, their_grad, rtol=max(rel, 1e-12), atol=1e-15)
    for name in metrics:
        assert float(our_metrics[name]) == pytest.approx(their_metrics[f"actor/{name}"],
                                                         rel=1e-9, abs=1e-12), name


def test_the_batch_populates_every_region():
    check_regions(*parity_batch())


def test_verls_config_defaults_are_grlabs():
    """The defaults grlab binds are verl's config defaults (ActorConfig, PolicyLossConfig):
    SAPO τ = 1.0/1.05, clip_ratio 0.2, clip_ratio_c 3.0 (dppo; verl's code falls back to 20
    only when the key is missing), clip-cov 2e-4/1/5, kl-cov 2e-4 and ppo_kl_coef 0.1 (the code
    falls back to 1.0, its docstring says 1); dro_beta has no default in verl."""
    _core()
    config = _verl_config()
    pl = config.policy_loss
    assert (config.tau_pos, config.tau_neg) == (LOSSES["sapo"].defaults()["tau_pos"],
                                                LOSSES["sapo"].defaults()["tau_neg"])
    assert config.clip_ratio_c == 3.0
    for name in ("dppo-tv", "dppo-kl"):
        d = LOSSES[name].defaults()
        assert (d["eps_low"], d["eps_high"], d["clip_ratio_c"]) == (
            config.clip_ratio_low, config.clip_ratio_high, config.clip_ratio_c)
    for name in ("gmpo", "clip-cov"):
        d = LOSSES[name].defaults()
        assert (d["eps_low"], d["eps_high"]) == (config.clip_ratio_low, config.clip_ratio_high)
    d = LOSSES["clip-cov"].defaults()
    assert (d["clip_cov_ratio"], d["clip_cov_lb"], d["clip_cov_ub"]) == (
        pl.clip_cov_ratio, pl.clip_cov_lb, pl.clip_cov_ub)
    d = LOSSES["kl-cov"].defaults()
    assert (d["kl_cov_ratio"], d["ppo_kl_coef"]) == (pl.kl_cov_ratio, pl.ppo_kl_coef)
    assert pl.dro_beta is None


@pytest.mark.parametrize("temps", [{}, {"tau_pos": 2.0, "tau_neg": 3.0}])
def test_sapo_is_verls_sapo(temps):
    """verl's sapo forces seq-mean-token-mean whatever ``loss_agg_mode`` (single process: over
    rows with a valid token, L_i + 1e-8) and clamps δ at ±20 (inactive on this batch)."""
    logp, old, adv, mask = parity_batch()
    theirs = _verl("sapo", _verl_config(**temps), logp, old, adv, mask, mode="token-mean")
    ours = _grlab("sapo", logp, old, adv, mask, rows="valid", **temps)
    _same(ours, theirs, ("ppo_kl", "pg_clipfrac", "pg_clipfrac_lower"), rel=1e-8)
    clamped = _grlab("sapo", logp, old, adv, mask, rows="valid", log_ratio_clamp=20.0, **temps)
    _same(clamped, theirs, rel=1e-8)


@pytest.mark.parametrize("eps", [(0.2, 0.2), (0.4, 0.3)])
def test_gmpo_is_verls_geo_mean(eps):
    """verl's geo_mean ignores ``loss_agg_mode``: the mean over all B rows of −Ā_i·s_i (a fully
    masked row counts, with 0), L_i + 1e-8: grlab's default seq-mean-token-mean, rows="all"."""
    low, high = eps
    logp, old, adv, mask = parity_batch()
    theirs = _verl("geo_mean", _verl_config(low, high), logp, old, adv, mask, mode="token-sum")
    ours = _grlab("gmpo", logp, old, adv, mask, eps_low=low, eps_high=high)
    _same(ours, theirs, ("ppo_kl", "pg_clipfrac", "pg_clipfrac_lower"), rel=1e-8)


@pytest.mark.parametrize("key", ["dppo_tv", "dppo_kl"])
@pytest.mark.parametrize("settings", [{}, {"low": 0.1, "high": 0.05, "c": 20.0}])
@pytest.mark.parametrize("mode", VERL_MODES)
def test_dppo_is_verls_dppo(key, settings, mode):
    """Default: verl's config (ε = 0.2, clip_ratio_c = 3, which truncates ρ ≈ 3.7 and 4.5 on
    this batch); non-default: ε = 0.1/0.05 and c = 20 (verl's code fallback)."""
    logp, old, adv, mask = parity_batch()
    low, high, c = settings.get("low", 0.2), settings.get("high", 0.2), settings.get("c", 3.0)
    config = _verl_config(low, high, clip_ratio_c=c)
    theirs = _verl(key, config, logp, old, adv, mask, mode=mode)
    options = {"eps_low": low, "eps_high": high, "clip_ratio_c": c} if settings else {}
    ours = _grlab(key.replace("_", "-"), logp, old, adv, mask, agg=mode, rows="valid", **options)
    _same(ours, theirs, ("ppo_kl", "pg_clipfrac", "pg_clipfrac_lower"), rel=1e-8)


def test_dppo_clip_ratio_c_changes_the_loss_on_this_batch():
    """The default (3.0) and verl's code fallback (20) differ here, so the test above pins it."""
    logp, old, adv, mask = parity_batch()
    for name in ("dppo-tv", "dppo-kl"):
        three = policy_loss(name, logp, old, adv, mask).loss
        twenty = policy_loss(name, logp, old, adv, mask, clip_ratio_c=20.0).loss
        assert abs(float(three - twenty)) > 1e-3


@pytest.mark.parametrize("settings", [{}, {"kl_cov_ratio": 0.15, "ppo_kl_coef": 1.0}])
@pytest.mark.parametrize("mode", VERL_MODES)
def test_kl_cov_is_verls_kl_cov(settings, mode):
    logp, old, adv, mask = parity_batch()
    theirs = _verl("kl_cov", _verl_config(**settings), logp, old, adv, mask, mode=mode)
    ours = _grlab("kl-cov", logp, old, adv, mask, agg=mode, rows="valid", **settings)
    _same(ours, theirs, rel=1e-8)
    chosen = float(ours[2]["kl_cov_penalised"]) * int(mask.sum())
    expected = max(1, int(settings.get("kl_cov_ratio", 2e-4) * int(mask.sum())))
    assert round(chosen) == expected


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("settings", [{}, {"clip_cov_ratio": 0.1, "clip_cov_lb": 0.2,
                                           "clip_cov_ub": 3.0, "low": 0.1, "high": 0.3}])
def test_clip_cov_with_a_seed_is_verls_random_draw(seed, settings):
    """verl draws the clipped tokens with ``torch.randperm`` from the global generator;
    ``seed=s`` is the same draw as verl's after ``torch.manual_seed(s)``."""
    logp, old, adv, mask = parity_batch()
    settings = dict(settings)
    low, high = settings.pop("low", 0.2), settings.pop("high", 0.2)
    theirs = _verl("clip_cov", _verl_config(low, high, **settings), logp, old, adv, mask,
                   seed=seed)
    ours = _grlab("clip-cov", logp, old, adv, mask, seed=seed, eps_low=low, eps_high=high,
                  **settings)
    _same(ours, theirs, ("ppo_kl", "pg_clipfrac"), rel=1e-12)


def test_clip_cov_without_a_seed_is_verls_whenever_the_draw_takes_every_candidate():
    """With n ≥ the candidates in the band verl's random draw takes them all, whatever the
    seed; grlab's deterministic reading (the n of largest covariance) is then verl's too."""
    logp, old, adv, mask = parity_batch()
    settings = {"clip_cov_ratio": 0.9, "clip_cov_lb": 0.1, "clip_cov_ub": 2.0}
    theirs = _verl("clip_cov", _verl_config(**settings), logp, old, adv, mask, seed=5)
    ours = _grlab("clip-cov", logp, old, adv, mask, **settings)
    _same(ours, theirs, ("pg_clipfrac",))
    assert float(ours[2]["pg_clipfrac"]) > 0.1


@pytest.mark.parametrize("beta", [0.5, 2.0])
@pytest.mark.parametrize("mode", VERL_MODES)
def test_dro_is_verls_dro_with_tau_as_dro_beta(beta, mode):
    logp, old, adv, mask = parity_batch()
    theirs = _verl("dro", _verl_config(dro_beta=beta), logp, old, adv, mask, mode=mode)
    ours = _grlab("dro", logp, old, adv, mask, agg=mode, rows="valid", tau=beta)
    _same(ours, theirs, ("ppo_kl",), rel=1e-8)


def test_verls_dro_has_no_default_beta():
    logp, old, adv, mask = parity_batch()
    with pytest.raises(ValueError, match="dro_beta"):
        _verl("dro", _verl_config(), logp, old, adv, mask)
    assert LOSSES["dro"].defaults()["tau"] == 1.0 and LOSSES["dro"].defaults()["level"] == "token"


# --------------------------------------------------------------------------------------------
# TRL 1.16
# --------------------------------------------------------------------------------------------


def _trl():
    return pytest.importorskip("trl", reason="the [trl] extra is not installed")


def _trl_loss(loss_type, logp, old, adv, mask, **args):
    """TRL's own ``GRPOTrainer._compute_loss`` on a stand-in trainer: the log-probs come from
    a stubbed ``_get_per_token_logps_and_entropies``; beta = 0, no vLLM, no entropy mask, one
    process, one accumulation step and one step per generation (GRPOConfig fills
    ``steps_per_generation`` in ``__post_init__``), ``num_items_in_batch`` = the batch's
    tokens."""
    trl = _trl()
    from trl import GRPOTrainer

    defaults = {f.name: f.default for f in dataclasses.fields(trl.GRPOConfig)}
    config = SimpleNamespace(**{**defaults, "steps_per_generation": 1, **args})
    leaf = logp.clone().requires_grad_(True)
    rows, width = logp.shape
    ids = torch.zeros(rows, width, dtype=torch.long)
    accelerator = SimpleNamespace(num_processes=1, gather=lambda x: x, sync_gradients=True,
                                  gather_for_metrics=lambda x: x,
                                  reduce=lambda x, reduction="sum": x)
    epsilon_high = config.epsilon_high if config.epsilon_high is not None else config.epsilon
    trainer = SimpleNamespace(
        args=config, loss_type=loss_type, beta=0.0, epsilon_low=config.epsilon,
        epsilon_high=epsilon_high, importance_sampling_level=config.importance_sampling_level,
        off_policy_mask_threshold=None, top_entropy_quantile=1.0, use_vllm=False,
        vllm_importance_sampling_correction=False, aux_loss_enabled=False,
        _entropy_bonus_enabled=False, accelerator=accelerator, model=SimpleNamespace(
            training=True), current_gradient_accumulation_steps=1,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        get_gamma_weights=GRPOTrainer.get_gamma_weights,
        _get_per_token_logps_and_entropies=lambda *a, **k: (leaf, torch.zeros_like(leaf), None))
    inputs = {"prompt_ids": ids, "prompt_mask": torch.ones_like(ids), "completion_ids": ids,
              "completion_mask": mask.long(), "advantages": adv, "old_per_token_logps": old,
              "num_items_in_batch": mask.sum().to(logp.dtype)}
    value = GRPOTrainer._compute_loss(trainer, trainer.model, inputs)
    (grad,) = torch.autograd.grad(value, leaf)
    return value.detach(), grad, trainer._metrics["train"]


def test_trls_defaults_are_grlabs():
    """TRL 1.16's GRPOConfig: sapo temperatures 1.0/1.05, vespo (k, λ) = (2, 3)/(3, 2) — as
    grlab's; ScaleRL's ε_max = 5 is TRL's documented recommendation for cispo (its default
    epsilon_high is None → epsilon = 0.2), which grlab's cispo-scalerl binds as ε_high = 4."""
    trl = _trl()
    fields = {f.name: f.default for f in dataclasses.fields(trl.GRPOConfig)}
    sapo, vespo = LOSSES["sapo"].defaults(), LOSSES["vespo"].defaults()
    assert (fields["sapo_temperature_pos"], fields["sapo_temperature_neg"]) == (
        sapo["tau_pos"], sapo["tau_neg"])
    assert (fields["vespo_k_pos"], fields["vespo_lambda_pos"], fields["vespo_k_neg"],
            fields["vespo_lambda_neg"]) == (vespo["k_pos"], vespo["lambda_pos"],
                                            vespo["k_neg"], vespo["lambda_neg"])
    assert "recommended value is `5.0`" in trl.GRPOConfig.__doc__
    # TRL's own default cispo caps ρ at epsilon = 0.2 (epsilon_high None): no grlab keyword
    assert (fields["epsilon"], fields["epsilon_high"]) == (0.2, None)
    scalerl = LOSSES["cispo-scalerl"].defaults()
    assert (scalerl["eps_low"], scalerl["eps_high"]) == (1.0, 4.0)


@pytest.mark.parametrize("temps", [{}, {"sapo_temperature_pos": 2.0, "sapo_temperature_neg": 3.0}])
def test_sapo_is_trls_sapo(temps):
    """TRL's sapo: −f(ρ)·A, the mean over each row's tokens then over all B rows (grlab's
    default seq-mean-token-mean, rows="all"); TRL builds τ as a float32 tensor, so 1.05 is
    1.05 to float32 precision (rel 1e-6 on the gradient)."""
    logp, old, adv, mask = parity_batch()
    theirs = _trl_loss("sapo", logp, old, adv, mask, **temps)
    options = {"tau_pos": temps["sapo_temperature_pos"],
               "tau_neg": temps["sapo_temperature_neg"]} if temps else {}
    ours = _grlab("sapo", logp, old, adv, mask, **options)
    _same(ours, theirs, rel=1e-12 if temps else 1e-6)


@pytest.mark.parametrize("params", [{}, {"vespo_k_pos": 1.5, "vespo_lambda_pos": 0.5,
                                          "vespo_k_neg": 0.5, "vespo_lambda_neg": 4.0}])
@pytest.mark.parametrize("peer_clamp", [False, True])
def test_vespo_is_trls_vespo(params, peer_clamp):
    """TRL's vespo: −sg(φ(w))·A·log π, w the sequence ratio; aggregated like dapo (Σ over the
    batch / num_items_in_batch = grlab's token-mean)."""
    logp, old, adv, mask = parity_batch()
    theirs = _trl_loss("vespo", logp, old, adv, mask, **params)
    options = {key.removeprefix("vespo_"): value for key, value in params.items()}
    ours = _grlab("vespo", logp, old, adv, mask, peer_clamp=peer_clamp, **options)
    _same(ours, theirs)
    # TRL's vespo/phi_seq_mean is over rows (one φ per row), grlab's phi_seq over valid tokens
    assert 0 < float(ours[2]["phi_seq"]) < 1 and theirs[2]["vespo/phi_seq_mean"]


def test_cispo_scalerl_is_trls_cispo_with_scalerls_epsilon_max():
    logp, old, adv, mask = parity_batch()
    theirs = _trl_loss("cispo", logp, old, adv, mask, epsilon_high=5.0)
    _same(_grlab("cispo-scalerl", logp, old, adv, mask), theirs)
    logp_far = logp.clone()
    logp_far[0, 0] += 1.0  # ρ ≈ 12 > 5: the cap acts
    theirs = _trl_loss("cispo", logp_far, old, adv, mask, epsilon_high=5.0)
    ours = _grlab("cispo-scalerl", logp_far, old, adv, mask)
    _same(ours, theirs)
    assert float(ours[2]["is_clipfrac"]) > 0


# --------------------------------------------------------------------------------------------
# Trinity-RFT 0.6.0
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("settings", [{}, {"tau_pos": 1.5, "tau_neg": 2.5,
                                           "loss_agg_mode": "seq-mean-token-mean"}])
def test_sapo_form_weight_is_trinitys_sapo(settings):
    """Trinity's SAPOPolicyLossFn: −A·sg(f(ρ))·log π (the gate as a weight; a different
    gradient from verl's and TRL's surrogate), default aggregation token-mean (grlab's sapo
    defaults to seq-mean-token-mean, TRL's and verl's); Trinity adds 1e-8 to denominators."""
    module = pytest.importorskip("trinity.algorithm.policy_loss_fn.sapo_policy_loss",
                                 reason="Trinity-RFT is not installed")
    assert module.SAPOPolicyLossFn.default_args() == {"tau_pos": 1.0, "tau_neg": 1.05,
                                                       "loss_agg_mode": "token-mean"}
    logp, old, adv, mask = parity_batch()
    fn = module.SAPOPolicyLossFn(**settings)
    leaf = logp.clone().requires_grad_(True)
    a = adv.unsqueeze(-1).expand_as(logp)
    value, metrics = fn(logprob=leaf, old_logprob=old, action_mask=mask.to(logp.dtype),
                        advantages=a)
    (grad,) = torch.autograd.grad(value, leaf)
    agg = settings.get("loss_agg_mode", "token-mean")
    temps = {k: v for k, v in settings.items() if k.startswith("tau")}
    ours = _grlab("sapo", logp, old, adv, mask, form="weight", agg=agg, **temps)
    _same(ours, (value.detach(), grad, {}), rel=1e-7)
    assert float(ours[2]["soft_gate"]) == pytest.approx(metrics["avg_soft_gate"], rel=1e-7)
    surrogate = _grlab("sapo", logp, old, adv, mask, agg=agg, **temps)
    assert not torch.allclose(surrogate[1], grad)  # the two forms differ in gradient


# --------------------------------------------------------------------------------------------
# AReaL (transcribed: not installable here) at 4aef98d8d818af55b43621aaadba047ae10f4e77
# --------------------------------------------------------------------------------------------


def areal_m2po_keep(old_logp, prox_logp, loss_mask, m2_threshold):
    """areal/trainer/ppo/actor.py ``_apply_m2po_masking`` + ``_get_m2po_loss_mask``: sort
    (μ − π_prox)² of the valid tokens descending, mask the first k, k the first index whose
    suffix mean is below the threshold (n − 1 when none is)."""
    delta = old_logp - prox_logp
    m2 = delta * delta
    flat_mask = loss_mask.reshape(-1)
    selected = m2.reshape(-1)[flat_mask]
    sorted_m2, indices = torch.sort(selected, descending=True)
    restored = torch.argsort(indices)
    n = sorted_m2.numel()
    suffix = sorted_m2.flip(0).cumsum(0).flip(0)
    counts = torch.arange(n, 0, -1, dtype=sorted_m2.dtype)
    below = torch.where(suffix / counts < m2_threshold)[0]
    k = int(below[0]) if len(below) else n - 1
    keep_sorted = torch.ones(n, dtype=torch.bool)
    keep_sorted[:k] = False
    out = torch.zeros_like(flat_mask)
    out[flat_mask] = keep_sorted[restored]
    return out.view_as(loss_mask)


@pytest.mark.parametrize("threshold", [0.04, 0.2, 1e-6, 10.0])
def test_m2po_areal_variant_masks_as_areal(threshold):
    logp, old, adv, mask = parity_batch()
    rollout = old + torch.empty_like(old).uniform_(-0.8, 0.8,
                                                   generator=torch.Generator().manual_seed(3))
    keep = areal_m2po_keep(rollout, old, mask, threshold)
    out = policy_loss("m2po", logp, old, adv, mask, logp_rollout=rollout, variant="areal",
                      threshold=threshold)
    dropped = float(out.metrics["m2_dropped"]) * int(mask.sum())
    assert round(dropped) == int((mask & ~keep).sum())
    # the kept tokens are AReaL's: the loss is −ρ·A over them, divided by all valid tokens
    ratio = torch.exp(logp - old)
    a = adv.unsqueeze(-1).expand_as(logp)
    expected = torch.where(keep, -a * ratio, 0.0).sum() / mask.sum()
    assert float(out.loss) == pytest.approx(float(expected), rel=1e-12)


def areal_decoupled_ppo(logp, prox, behave, adv, mask, eps_clip=0.2, cap=5.0):
    """functional.py ``ppo_actor_loss_fn`` with rejection sampling (level token, action mask,
    metric ratio, upper = cap: the former behave_imp_weight_cap=5 with token_mask): PPO-clip
    on π/π_prox times w = π_prox/μ, tokens with w > cap removed, Σ / (the original count)."""
    a = adv.unsqueeze(-1).expand_as(logp)
    w = torch.exp(prox - behave)
    keep = mask & (w <= cap)
    ratio = torch.exp(logp - prox)
    loss = torch.max(-a * ratio, -a * ratio.clamp(1 - eps_clip, 1 + eps_clip)) * w
    return torch.where(keep, loss, 0.0).sum() / mask.sum()


def test_decoupled_ppo_is_areals_decoupled_loss():
    logp, old, adv, mask = parity_batch()
    behave = old + torch.empty_like(old).uniform_(-2.0, 2.0,
                                                  generator=torch.Generator().manual_seed(4))
    assert bool(((torch.exp(old - behave) > 5.0) & mask).any())  # the cap acts
    leaf = logp.clone().requires_grad_(True)
    expected = areal_decoupled_ppo(leaf, old, behave, adv, mask)
    (their_grad,) = torch.autograd.grad(expected, leaf)
    ours = _grlab("decoupled-ppo", logp, old, adv, mask, logp_rollout=behave)
    assert float(ours[0]) == pytest.approx(float(expected.detach()), rel=1e-12)
    torch.testing.assert_close(ours[1], their_grad, **EXACT)
