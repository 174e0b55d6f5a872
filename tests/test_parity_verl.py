"""Parity with verl 0.9.1 (verl/trainer/ppo/core_algos.py).

Each ``verl_*`` function below is a small reference written from verl's own definition (the
function is named in its docstring), independent of grlab's code path; the tests check grlab's
loss of the same meaning against it on the seeded batch of tests/parity_batch.py (every
clipping region populated, a fully masked row) in value, gradient and metrics, under every
aggregation mode verl has. Where verl is installed (the ``[verl]`` extra), the references are
checked against verl's own functions too. The end-to-end adapter (``grlab/<name>`` inside
verl's registry) is tested in tests/test_integrations_verl.py.

verl's ``masked_mean`` divides by Σ mask exactly (no ε): tolerances are float64 round-off,
except for ``seq-mean-token-mean``, where verl divides each row's sum by L_i + 1e-8: a factor
L_i/(L_i + 1e-8) ≥ 1 − 1e-8 per row (L_i ≥ 1), hence a relative tolerance of 1e-8 there.
"""

from __future__ import annotations

import pytest
import torch

from simulator.advantages import group_advantages
from simulator.kl import kl_penalty
from simulator.losses import policy_loss
from tests.parity_batch import T, check_regions, parity_batch

EXACT = {"rtol": 1e-12, "atol": 1e-15}
VERL_MODES = ("token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean",
              "seq-mean-token-sum-norm")


def _mm(values, mask):
    m = mask.to(values.dtype)
    return (torch.where(mask, values, 0.0) * m).sum() / m.sum()


def verl_agg_loss(loss_mat, mask, mode, *, dp_size=1, batch_num_tokens=None,
                  global_batch_size=None, loss_scale_factor=None):
    """agg_loss: token-mean Σ/N_tokens·dp; token-sum Σ·dp; seq-mean-* Σ over rows with a valid
    token / (global_batch_size or that count)·dp; sum-norm then / (loss_scale_factor or T)."""
    m = mask.to(loss_mat.dtype)
    masked = torch.where(mask, loss_mat, 0.0)
    if mode == "token-mean":
        count = m.sum() if batch_num_tokens is None else batch_num_tokens
        return (masked * m).sum() / count * dp_size
    if mode == "token-sum":
        return (masked * m).sum() * dp_size
    lengths = m.sum(-1)
    rows = (lengths > 0).to(loss_mat.dtype)
    if mode == "seq-mean-token-mean":
        per_row = (masked * m).sum(-1) / (lengths + 1e-8)
    else:
        per_row = (masked * m).sum(-1)
    count = rows.sum() if global_batch_size is None else global_batch_size
    loss = (per_row * rows).sum() / count * dp_size
    if mode == "seq-mean-token-sum-norm":
        loss = loss / (loss_mat.shape[-1] if loss_scale_factor is None else loss_scale_factor)
    return loss


# Deliberately a twin of the other peer's transcription (test_parity_trinity/_verl): each
# parity test must stand on its own peer's code, so neither imports the other.
def verl_vanilla(logp, old, adv, mask, mode, *, low=0.2, high=0.2, c=3.0, **agg):
    """compute_policy_loss_vanilla: δ clamped to ±20, dual clip c always on."""
    a = adv.unsqueeze(-1).expand_as(logp)
    delta = (logp - old).clamp(-20.0, 20.0)
    ratio = torch.exp(delta)
    loss1, loss2 = -a * ratio, -a * ratio.clamp(1 - low, 1 + high)
    clip1 = torch.maximum(loss1, loss2)
    loss3 = -a * c
    losses = torch.where(a < 0, torch.minimum(loss3, clip1), clip1)
    return verl_agg_loss(losses, mask, mode, **agg), {
        "pg_clipfrac": _mm((loss2 > loss1).to(logp.dtype), mask),
        "pg_clipfrac_lower": _mm(((clip1 > loss3) & (a < 0)).to(logp.dtype), mask),
        "ppo_kl": _mm(-delta, mask)}


def verl_gspo(logp, old, adv, mask, mode, *, low=3e-4, high=4e-4):
    """compute_policy_loss_gspo: the token form, log s clamped at 10 (value)."""
    a = adv.unsqueeze(-1).expand_as(logp)
    m = mask.to(logp.dtype)
    seq = (torch.where(mask, logp - old, 0.0) * m).sum(-1) / m.sum(-1).clamp(min=1)
    log_s = (logp - logp.detach() + seq.detach().unsqueeze(-1)).clamp(max=10.0)
    s = torch.exp(log_s)
    loss1, loss2 = -a * s, -a * s.clamp(1 - low, 1 + high)
    return verl_agg_loss(torch.maximum(loss1, loss2), mask, mode), {
        "pg_clipfrac": _mm((loss2 > loss1).to(logp.dtype), mask)}


def verl_cispo(logp, old, adv, mask, mode, *, low=1.0, high=0.28):
    """compute_policy_loss_cispo: δ clamped to ±20; pg_clipfrac = share of truncated weights."""
    a = adv.unsqueeze(-1).expand_as(logp)
    ratio = torch.exp((logp - old).clamp(-20.0, 20.0))
    clipped = ratio.clamp(1 - low, 1 + high)
    losses = -clipped.detach() * a * logp
    return verl_agg_loss(losses, mask, mode), {
        "pg_clipfrac": _mm((ratio != clipped).to(logp.dtype), mask)}


def _length(mode):
    return {"norm_len": float(T)} if mode == "seq-mean-token-sum-norm" else {}


def _run(name, logp, old, adv, mask, **kwargs):
    leaf = logp.clone().requires_grad_(True)
    out = policy_loss(name, leaf, old, adv, mask, **kwargs)
    (grad,) = torch.autograd.grad(out.loss, leaf)
    return out, grad


def _reference(fn, logp, old, adv, mask, *args, **kwargs):
    leaf = logp.clone().requires_grad_(True)
    value, metrics = fn(leaf, old, adv, mask, *args, **kwargs)
    (grad,) = torch.autograd.grad(value, leaf)
    return value, metrics, grad


def _rtol(mode):
    return 1e-8 if mode == "seq-mean-token-mean" else 1e-12  # see the module docstring


def _assert_same(mode, out, grad, value, metrics, ref_grad):
    expected = float(value.detach())
    assert float(out.loss.detach()) == pytest.approx(expected, rel=_rtol(mode), abs=1e-15)
    torch.testing.assert_close(grad, ref_grad, rtol=_rtol(mode), atol=1e-15)
    for key, expected in metrics.items():
        assert float(out.metrics[key]) == pytest.approx(float(expected.detach()), rel=1e-12), key


@pytest.mark.parametrize("mode", VERL_MODES)
def test_ppo_dual_clip_is_verls_vanilla_under_every_aggregation(mode):
    """verl's vanilla = grlab ``ppo-dual-clip`` with log_ratio_clamp=20; single-process verl
    divides per-sequence modes by the rows with a valid token (rows="valid") and sum-norm by
    the padded width T unless loss_scale_factor is set (norm_len=T)."""
    batch = parity_batch()
    check_regions(*batch)
    out, grad = _run("ppo-dual-clip", *batch, agg=mode, rows="valid", log_ratio_clamp=20.0,
                     **_length(mode))
    _assert_same(mode, out, grad, *_reference(verl_vanilla, *batch, mode))


@pytest.mark.parametrize("mode", VERL_MODES)
def test_verls_global_batch_normalisation_is_grlabs_denominator(mode):
    """Under data parallelism verl divides by the global count (batch_num_tokens or
    global_batch_size = all rows) and multiplies by dp_size to undo DDP's averaging: grlab's
    ``denominator=`` with the same count, times dp_size."""
    batch = parity_batch()
    mask = batch[3]
    dp, count = 4, (float(mask.sum()) * 3 if mode == "token-mean" else mask.shape[0] * 3.0)
    agg = {"dp_size": dp, "batch_num_tokens": count, "global_batch_size": count}
    value, _, ref_grad = _reference(verl_vanilla, *batch, mode, **agg)
    out, grad = _run("ppo-dual-clip", *batch, agg=mode, log_ratio_clamp=20.0,
                     denominator=None if mode == "token-sum" else count, **_length(mode))
    assert float(out.loss.detach()) * dp == pytest.approx(float(value.detach()), rel=_rtol(mode))
    torch.testing.assert_close(grad * dp, ref_grad, rtol=_rtol(mode), atol=1e-15)


def test_grlab_ppo_without_the_clamp_keeps_the_gradient_verl_clamps_away():
    """The one deliberate difference: a token with A < 0 and δ = 25 beyond a dual clip of
    c = 1e12 (so the clip does not remove it) has gradient e^{25}·|A|/N in grlab, 0 in verl."""
    logp = torch.tensor([[-0.1, -0.2]], dtype=torch.float64)
    old = logp - torch.tensor([[25.0, 0.0]], dtype=torch.float64)
    adv = torch.tensor([-1.0], dtype=torch.float64)
    mask = torch.ones(1, 2, dtype=torch.bool)
    _, grad = _run("ppo", logp, old, adv, mask, dual_clip=1e12)
    _, _, ref_grad = _reference(verl_vanilla, logp, old, adv, mask, "token-mean", c=1e12)
    assert float(grad[0, 0]) == pytest.approx(torch.e**25 / 2, rel=1e-12)
    assert float(ref_grad[0, 0]) == 0.0


@pytest.mark.parametrize("mode", VERL_MODES)
def test_gspo_token_is_verls_gspo(mode):
    batch = parity_batch()
    out, grad = _run("gspo-token", *batch, agg=mode, rows="valid", **_length(mode))
    _assert_same(mode, out, grad, *_reference(verl_gspo, *batch, mode))


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean"])
def test_cispo_is_verls_cispo_and_reports_verls_clip_fraction(mode):
    """verl's cispo calls the share of truncated IS weights pg_clipfrac; grlab reports the same
    number under that name (and as is_clipfrac), while clipfrac — tokens whose gradient was
    removed — is 0."""
    batch = parity_batch()
    out, grad = _run("cispo", *batch, agg=mode, rows="valid")
    _assert_same(mode, out, grad, *_reference(verl_cispo, *batch, mode))
    assert float(out.metrics["clipfrac"]) == 0.0 and float(out.metrics["pg_clipfrac"]) > 0


def verl_grpo_advantage(scores, eps=1e-6, norm_adv_by_std_in_grpo=True):
    """compute_grpo_outcome_advantage: torch.std (sample) + ε; a lone response: mean 0, std 1."""
    if scores.numel() == 1:
        return scores / (1.0 + eps) if norm_adv_by_std_in_grpo else scores
    centred = scores - scores.mean()
    return centred / (scores.std() + eps) if norm_adv_by_std_in_grpo else centred


@pytest.mark.parametrize("k", [2, 4, 7])
def test_grpo_advantages_are_verls_with_the_sample_std(k):
    rewards = torch.rand(3, k, generator=torch.Generator().manual_seed(k), dtype=torch.float64)
    for row in rewards:
        got = group_advantages(row[None], "mean-std", std="sample")[0]
        torch.testing.assert_close(got, verl_grpo_advantage(row), **EXACT)
        got = group_advantages(row[None], "mean")[0]  # Dr.GRPO: norm_adv_by_std_in_grpo=False
        torch.testing.assert_close(got, verl_grpo_advantage(row, norm_adv_by_std_in_grpo=False),
                                   **EXACT)


def test_kl_estimator_names_map_onto_verls():
    """verl's kl_penalty_forward: kl/k1 = δ; mse/k2 = ½δ²; low_var_kl AND k3 = the clamped k3.
    grlab's k3 is the unclamped estimator (Trinity-RFT's k3); verl's k3 is grlab's k3-clamped."""
    logp = torch.tensor([[-0.5, -3.0, -40.0]], dtype=torch.float64)
    ref = torch.tensor([[-1.0, -0.2, -0.1]], dtype=torch.float64)
    delta = logp - ref
    torch.testing.assert_close(kl_penalty(logp, ref, "k1"), delta, **EXACT)
    torch.testing.assert_close(kl_penalty(logp, ref, "k2"), 0.5 * delta**2, **EXACT)
    kl = (ref - logp).clamp(-20, 20)
    verl_k3 = (torch.exp(kl) - kl - 1).clamp(-10, 10)
    torch.testing.assert_close(kl_penalty(logp, ref, "k3-clamped"), verl_k3, **EXACT)
    assert not torch.allclose(kl_penalty(logp, ref, "k3"), verl_k3)  # differs at δ = −39.9


# ------------------------------------------------------- the references against verl's own code


def _core():
    return pytest.importorskip("verl.trainer.ppo.core_algos",
                               reason="verl is not installed (pip install 'grlab[verl]')")


def _config(low=0.2, high=0.2, c=3.0):
    from verl.workers.config import ActorConfig

    return ActorConfig(strategy="fsdp", clip_ratio=0.2, clip_ratio_low=low,
                       clip_ratio_high=high, clip_ratio_c=c, rollout_n=1,
                       ppo_micro_batch_size_per_gpu=1)


@pytest.mark.parametrize("mode", VERL_MODES)
def test_the_references_are_verls_own_functions(mode):
    core = _core()
    logp, old, adv, mask = parity_batch()
    a = adv.unsqueeze(-1).expand_as(logp)
    m = mask.to(logp.dtype)
    cases = [("vanilla", verl_vanilla, _config()),
             ("gspo", verl_gspo, _config(3e-4, 4e-4)),
             ("cispo", verl_cispo, _config(1.0, 0.28))]
    for key, reference, config in cases:
        leaf = logp.clone().requires_grad_(True)
        value, metrics = core.get_policy_loss_fn(key)(old, leaf, a, m, mode, config)
        (grad,) = torch.autograd.grad(value, leaf)
        ref_value, ref_metrics, ref_grad = _reference(reference, logp, old, adv, mask, mode)
        assert float(value.detach()) == pytest.approx(float(ref_value.detach()), rel=1e-12), key
        torch.testing.assert_close(grad, ref_grad, rtol=1e-12, atol=1e-15)
        for name, expected in ref_metrics.items():
            assert metrics[f"actor/{name}"] == pytest.approx(float(expected.detach()), rel=1e-9)
    for agg in ({}, {"dp_size": 2, "batch_num_tokens": 100.0, "global_batch_size": 16.0}):
        loss_mat = torch.randn(logp.shape, generator=torch.Generator().manual_seed(1),
                               dtype=torch.float64)
        got = core.agg_loss(loss_mat, m, mode, **agg)
        assert float(got) == pytest.approx(float(verl_agg_loss(loss_mat, mask, mode, **agg)),
                                           rel=1e-12)
