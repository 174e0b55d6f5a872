"""Parity with the paper's code, Trinity-RFT 0.6.0 (trinity/algorithm/, read from the wheel).

Each ``trinity_*`` function below is a small reference written from Trinity-RFT's own
definition (the file is named in its docstring), independent of grlab's code path. The tests
check grlab's loss of the same name against it on a seeded batch with every clipping region
populated (tests/parity_batch.py), in value, gradient and metrics — so they fail when a
convention drifts. Where Trinity-RFT is importable (CI installs ``trinity-rft==0.6.0
--no-deps``), the references are themselves checked against Trinity's classes.

Trinity's ``masked_mean`` divides by Σ mask + 1e-8: relative to grlab's exact token mean over
N valid tokens that is a factor N/(N + 1e-8), i.e. a relative difference below 1e-8/N, which
is the tolerance TRINITY_RTOL allows (N ≥ 1).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from simulator.advantages import group_advantages, red_drop
from simulator.losses import policy_loss
from tests.parity_batch import check_regions, parity_batch

TRINITY_RTOL = 1e-8  # ≥ 1e-8/N, see the module docstring
EPS = 1e-8


def _mm(values, mask, axis=None):
    """trinity/algorithm/utils.py masked_mean: Σ(x·m) / (Σ m + 1e-8)."""
    m = mask.to(values.dtype)
    return (torch.where(mask, values, 0.0) * m).sum(axis) / (m.sum(axis) + EPS)


def trinity_rec(logp, old, adv, mask, *, clip_mode, weight, regularizer="none", coef=0.0,
                eps_low=0.2, eps_high=0.2, eps_low_prime=0.6, eps_high_prime=2.0, temp=1.0):
    """rec_policy_loss.py RECPolicyLossFn.__call__ (masked_mean aggregation, no agg mode)."""
    a = adv.unsqueeze(-1).expand_as(logp)
    ratio = torch.exp(logp - old).detach()
    if clip_mode == "one-side":
        keep = ((ratio <= 1 + eps_high) & (a >= 0)) | ((a <= 0) & (ratio >= 1 - eps_low))
    elif clip_mode == "two-side":
        keep = (ratio >= 1 - eps_low) & (ratio <= 1 + eps_high)
    elif clip_mode == "ring":
        keep = (((ratio >= 1 - eps_low) & (ratio <= 1 + eps_high))
                | ((a >= 0) & (ratio <= 1 - eps_low_prime))
                | ((a <= 0) & (ratio >= 1 + eps_high_prime)))
    else:
        keep = torch.ones_like(ratio, dtype=torch.bool)
    if weight == "importance_sampling":
        a = a * ratio
    elif weight == "advantage":
        a = a * torch.exp(a / temp)
    losses = -a * logp * keep.to(logp.dtype)
    if regularizer == "forward-kl":
        losses = losses - coef * logp
    elif regularizer == "k2":
        losses = losses + coef * (logp - old) ** 2
    return _mm(losses, mask), {"pg_clipfrac": _mm((~keep).to(logp.dtype), mask)}


# Deliberately a twin of the other peer's transcription (test_parity_trinity/_verl): each
# parity test must stand on its own peer's code, so neither imports the other.
def trinity_ppo(logp, old, adv, mask, *, low=0.2, high=0.2, c=3.0):
    """ppo_policy_loss.py PPOPolicyLossFn: δ clamped to ±20, dual clip c always on."""
    a = adv.unsqueeze(-1).expand_as(logp)
    delta = (logp - old).clamp(-20.0, 20.0)
    ratio = torch.exp(delta)
    loss1, loss2 = -a * ratio, -a * ratio.clamp(1 - low, 1 + high)
    clip1 = torch.maximum(loss1, loss2)
    loss3 = -a * c
    losses = torch.where(a < 0, torch.minimum(loss3, clip1), clip1)
    return _mm(losses, mask), {
        "pg_clipfrac": _mm((loss2 > loss1).to(logp.dtype), mask),
        "pg_clipfrac_lower": _mm(((clip1 > loss3) & (a < 0)).to(logp.dtype), mask),
        "ppo_kl": _mm(-delta, mask)}


def trinity_gspo(logp, old, adv, mask, *, low=3e-4, high=4e-4):
    """gspo_policy_loss.py GSPOLossFn (the token form), seq-mean-token-mean of aggregate_loss:
    the mean over ALL rows of per-row masked means."""
    a = adv.unsqueeze(-1).expand_as(logp)
    seq = _mm(logp - old, mask, axis=-1)
    ratio = torch.exp(logp - logp.detach() + seq.detach().unsqueeze(-1))
    loss1, loss2 = -a * ratio, -a * ratio.clamp(1 - low, 1 + high)
    value = _mm(torch.maximum(loss1, loss2), mask, axis=-1).mean()
    return value, {"pg_clipfrac": _mm((loss2 > loss1).to(logp.dtype), mask)}


def trinity_cispo(logp, old, adv, mask, *, low=1.0, high=0.28, mask_clip=False,
                  mask_low=1.0, mask_high=0.28):
    """cispo_policy_loss.py CISPOPolicyLossFn (token-mean)."""
    a = adv.unsqueeze(-1).expand_as(logp)
    ratio = torch.exp(logp - old)
    keep = torch.ones_like(ratio)
    if mask_clip:
        keep = torch.where((ratio > 1 + mask_high) & (a > 0), 0.0, keep)
        keep = torch.where((ratio < 1 - mask_low) & (a < 0), 0.0, keep)
    losses = -a * ratio.clamp(1 - low, 1 + high).detach() * keep * logp
    return _mm(losses, mask), {}


def trinity_opmd(logp, old, adv, mask, *, tau=1.0):
    """opmd_policy_loss.py OPMDPolicyLossFn: token-mean of −A·log π, divided by 1 + τ."""
    return _mm(-adv.unsqueeze(-1) * logp, mask) / (1 + tau), {}


def trinity_topr(logp, old, adv, mask, *, threshold=0.0):
    """topr_policy_loss.py TOPRPolicyLossFn: per-token α = clamp(ρ, 0, 1) where A ≤ threshold."""
    a = adv.unsqueeze(-1).expand_as(logp)
    ratio = torch.exp(logp - old)
    alpha = torch.where(a <= threshold, ratio.clamp(0.0, 1.0), torch.ones_like(ratio))
    return _mm(-alpha.detach() * a * logp, mask), {"avg_alpha": _mm(alpha, mask)}


def trinity_sppo(logp, old, adv, mask, *, eps=0.3):
    """sppo_loss_fn.py sPPOPolicyLossFn: −A·δ inside 1/(1+ε) ≤ ρ ≤ 1+ε (token-mean)."""
    a = adv.unsqueeze(-1).expand_as(logp)
    ratio = torch.exp(logp - old).detach()
    keep = (ratio >= 1 / (1 + eps)) & (ratio <= 1 + eps)
    return _mm(-a * (logp - old) * keep.to(logp.dtype), mask), {
        "pg_clipfrac": _mm((~keep).to(logp.dtype), mask)}


# (grlab name, grlab keywords, reference, reference keywords)
CASES = [
    ("reinforce", {}, trinity_rec, {"clip_mode": "none", "weight": "none"}),
    *[(f"rec-{tag}-{w}", {}, trinity_rec,
       {"clip_mode": clip, "weight": "importance_sampling" if w == "is" else "none"})
      for clip, tag in (("one-side", "oneside"), ("two-side", "twoside"), ("ring", "ring"))
      for w in ("nois", "is")],
    ("rec", {"clip": "one-side", "eps_low": 0.6, "eps_high": 2.0}, trinity_rec,
     {"clip_mode": "one-side", "weight": "none", "eps_low": 0.6, "eps_high": 2.0}),
    ("red-weight", {}, trinity_rec, {"clip_mode": "none", "weight": "advantage"}),
    ("rec", {"clip": "none", "regularizer": "k2", "reg_coef": 0.1}, trinity_rec,
     {"clip_mode": "none", "weight": "none", "regularizer": "k2", "coef": 0.1}),
    ("rec", {"clip": "none", "regularizer": "forward-kl", "reg_coef": 0.1}, trinity_rec,
     {"clip_mode": "none", "weight": "none", "regularizer": "forward-kl", "coef": 0.1}),
    ("asymre", {"beta": 0.1}, trinity_rec,
     {"clip_mode": "none", "weight": "none", "regularizer": "forward-kl", "coef": 0.1}),
    ("opmd-kimi", {"level": "token", "tau": 0.2}, trinity_rec,
     {"clip_mode": "none", "weight": "none", "regularizer": "k2", "coef": 0.1}),
    ("ppo-dual-clip", {"log_ratio_clamp": 20.0}, trinity_ppo, {}),
    ("gspo-token", {}, trinity_gspo, {}),
    ("gspo-token", {"eps_low": 0.2, "eps_high": 0.2}, trinity_gspo, {"low": 0.2, "high": 0.2}),
    ("cispo", {}, trinity_cispo, {}),
    ("cispo", {"mask_clip": True}, trinity_cispo, {"mask_clip": True}),
    ("opmd-trinity", {"tau": 1.0}, trinity_opmd, {"tau": 1.0}),
    ("topr", {"level": "token"}, trinity_topr, {}),
    ("sppo-trinity", {}, trinity_sppo, {}),
]


def _ids(case):
    return f"{case[0]}{sorted(case[1].items()) if case[1] else ''}"


@pytest.mark.parametrize(("name", "kwargs", "reference", "ref_kwargs"), CASES,
                         ids=[_ids(c) for c in CASES])
def test_grlab_gives_the_seeds_value_gradient_and_metrics(name, kwargs, reference, ref_kwargs):
    logp, old, adv, mask = parity_batch()
    check_regions(logp, old, adv, mask)
    leaf = logp.clone().requires_grad_(True)
    out = policy_loss(name, leaf, old, adv, mask, **kwargs)
    (grad,) = torch.autograd.grad(out.loss, leaf)
    ref_leaf = logp.clone().requires_grad_(True)
    value, metrics = reference(ref_leaf, old, adv, mask, **ref_kwargs)
    (ref_grad,) = torch.autograd.grad(value, ref_leaf)
    assert float(out.loss.detach()) == pytest.approx(float(value.detach()), rel=TRINITY_RTOL,
                                                     abs=1e-15)
    torch.testing.assert_close(grad, ref_grad, rtol=TRINITY_RTOL, atol=1e-15)
    for key, expected in metrics.items():
        expected = float(expected.detach())
        assert float(out.metrics[key]) == pytest.approx(expected, rel=TRINITY_RTOL), key


def test_the_token_mean_of_the_seeds_rec_is_not_the_sequence_mean():
    """A drift check the value test cannot miss: Trinity's REC always takes the token mean;
    grlab's ``rec`` under seq-mean-token-mean on this ragged batch gives another number."""
    logp, old, adv, mask = parity_batch()
    ref, _ = trinity_rec(logp, old, adv, mask, clip_mode="one-side", weight="none")
    other = policy_loss("rec-oneside-nois", logp, old, adv, mask, agg="seq-mean-token-mean")
    assert abs(float(other.loss) - float(ref)) > 1e-3


# ------------------------------------------------------------------------------- advantages


def trinity_grpo_advantage(rewards, eps=1e-6):
    """advantage_fn/grpo_advantage.py GRPOGroupedAdvantage: torch.std (sample) + ε; a lone
    response gets mean 0 and std 1."""
    if rewards.numel() == 1:
        return rewards / (1.0 + eps)
    return (rewards - rewards.mean()) / (rewards.std() + eps)


def trinity_rec_advantage(rewards, std_normalize, eps=1e-6):
    """advantage_fn/rec_advantage.py RECGroupedAdvantage without drop: the kept samples'
    (= all) mean and population std (std(unbiased=False))."""
    centred = rewards - rewards.mean()
    return centred / (rewards.std(unbiased=False) + eps) if std_normalize else centred


@pytest.mark.parametrize("k", [2, 3, 5])
def test_advantages_follow_the_seeds_group_functions(k):
    g = torch.Generator().manual_seed(k)
    rewards = torch.rand(4, k, generator=g, dtype=torch.float64)
    for row in rewards:
        ref = trinity_rec_advantage(row, std_normalize=True)
        assert torch.allclose(group_advantages(row[None], "mean-std")[0], ref, rtol=1e-12)
        ref = trinity_rec_advantage(row, std_normalize=False)
        assert torch.allclose(group_advantages(row[None], "mean")[0], ref, rtol=1e-12)
        ref = trinity_grpo_advantage(row)
        got = group_advantages(row[None], "mean-std", std="sample")[0]
        assert torch.allclose(got, ref, rtol=1e-12)
        # OPMD's logavgexp baseline τ·(logsumexp(r/τ) − log K) and AsymRE's mean + shift
        tau = 0.7
        baseline = tau * (torch.logsumexp(row / tau, 0) - math.log(k))
        got = group_advantages(row[None], "logavgexp", tau=tau)[0]
        assert torch.allclose(got, row - baseline, rtol=1e-12)
        got = group_advantages(row[None], "mean", shift=0.1)[0]  # baseline_shift = −0.1
        assert torch.allclose(got, row - (row.mean() - 0.1), rtol=1e-12)


def test_a_lone_response_is_where_grlab_deliberately_differs():
    """Trinity (and verl) give a group of one baseline 0 and scale 1, so A = r/(1 + ε); grlab
    gives 0 (there is no group to be relative to; docs/conventions.md)."""
    row = torch.tensor([0.8], dtype=torch.float64)
    assert float(trinity_grpo_advantage(row)) == pytest.approx(0.8 / (1 + 1e-6))
    assert float(group_advantages(row[None], "mean-std", std="sample")[0, 0]) == 0.0


def test_red_drop_gives_the_seeds_balance_on_binary_groups():
    """With binary rewards every negative is a 0, so which negatives Trinity drops does not
    change the numbers: #pos = #(r ≥ r̄), the surplus negatives get A = 0, the kept samples
    r − r̄_kept, and every token stays in the loss's count (action_mask untouched)."""
    rewards = torch.tensor([[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [0, 0, 0, 0, 0]],
                           dtype=torch.float64)
    adv, keep = red_drop(rewards, torch.Generator().manual_seed(0))
    assert keep.all()
    for row, got in zip(rewards, adv, strict=True):
        pos = int((row >= row.mean()).sum())
        neg = len(row) - pos
        if neg == 0:  # a uniform group: nothing to balance, A = 0
            expected = [0.0] * len(row)
        else:
            kept_neg = min(pos, neg)
            kept_mean = pos / (pos + kept_neg)
            expected = [1 - kept_mean] * pos + [-kept_mean] * kept_neg + [0.0] * (neg - kept_neg)
        assert sorted(got.tolist()) == pytest.approx(sorted(expected), abs=1e-12)


# --------------------------------------------------- the references against Trinity's own code

def _trinity():
    return pytest.importorskip("trinity.algorithm.policy_loss_fn",
                               reason="Trinity-RFT is not installed (pip install --no-deps "
                                      "trinity-rft==0.6.0 next to the [verl] extra)")


TRINITY_CLASSES = [
    ("rec", {"clip_mode": "ring", "weight": "importance_sampling", "regularizer": "k2",
             "regularizer_coef": 0.1, "epsilon_low_prime": 0.6, "epsilon_high_prime": 2.0},
     trinity_rec, {"clip_mode": "ring", "weight": "importance_sampling", "regularizer": "k2",
                   "coef": 0.1}),
    ("rec", {"clip_mode": "one-side", "weight": "advantage", "regularizer": "forward-kl",
             "regularizer_coef": 0.1}, trinity_rec,
     {"clip_mode": "one-side", "weight": "advantage", "regularizer": "forward-kl", "coef": 0.1}),
    ("rec", {"clip_mode": "two-side", "weight": "none"}, trinity_rec,
     {"clip_mode": "two-side", "weight": "none"}),
    ("ppo", {"clip_range": 0.2}, trinity_ppo, {}),
    ("gspo", {"clip_range_low": 3e-4, "clip_range_high": 4e-4}, trinity_gspo, {}),
    ("cispo", {"enable_mask_clip": True}, trinity_cispo, {"mask_clip": True}),
    ("opmd", {"tau": 1.0}, trinity_opmd, {"tau": 1.0}),
    ("topr", {}, trinity_topr, {}),
    ("sppo", {}, trinity_sppo, {}),
]


@pytest.mark.parametrize(("key", "init", "reference", "ref_kwargs"), TRINITY_CLASSES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(TRINITY_CLASSES)])
def test_each_reference_is_trinitys_own_loss(key, init, reference, ref_kwargs):
    module = _trinity()
    fn = module.POLICY_LOSS_FN.get(key)(**init)
    logp, old, adv, mask = parity_batch()
    leaf = logp.clone().requires_grad_(True)
    value, metrics = fn(logprob=leaf, old_logprob=old, action_mask=mask.to(logp.dtype),
                        advantages=adv.unsqueeze(-1).expand_as(logp))
    (grad,) = torch.autograd.grad(value, leaf)
    ref_leaf = logp.clone().requires_grad_(True)
    ref_value, ref_metrics = reference(ref_leaf, old, adv, mask, **ref_kwargs)
    (ref_grad,) = torch.autograd.grad(ref_value, ref_leaf)
    assert float(value.detach()) == pytest.approx(float(ref_value.detach()), rel=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-12, atol=1e-15)
    for name, expected in ref_metrics.items():
        assert metrics[name] == pytest.approx(float(expected.detach()), rel=1e-9), name


def test_the_advantage_references_are_trinitys_own():
    _trinity()
    from trinity.algorithm.advantage_fn.grpo_advantage import GRPOGroupedAdvantage
    from trinity.algorithm.advantage_fn.rec_advantage import RECGroupedAdvantage

    rewards = torch.tensor([0.2, 1.0, 0.0, 0.7], dtype=torch.float32)

    def run(fn):
        exps = [SimpleNamespace(reward=float(r), action_mask=torch.ones(1)) for r in rewards]
        out, _ = fn.calculate_group_advantage("g", exps)
        return torch.tensor([float(e.advantages[0]) for e in out], dtype=torch.float64)

    torch.testing.assert_close(run(GRPOGroupedAdvantage()), trinity_grpo_advantage(
        rewards.double()), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(run(RECGroupedAdvantage(std_normalize=True)),
                               trinity_rec_advantage(rewards.double(), True), rtol=1e-6,
                               atol=1e-7)


# ------------------------------------------------ defaults of the same name that differ from grlab


def _trinity_rec_default(clip_mode: str | None = None):
    """Trinity's own RECPolicyLossFn with its defaults (only ``clip_mode`` given, if any):
    value and gradient on the parity batch."""
    module = _trinity()
    fn = module.POLICY_LOSS_FN.get("rec")(**({} if clip_mode is None else
                                              {"clip_mode": clip_mode}))
    logp, old, adv, mask = parity_batch()
    leaf = logp.clone().requires_grad_(True)
    value, _ = fn(logprob=leaf, old_logprob=old, action_mask=mask.to(logp.dtype),
                  advantages=adv.unsqueeze(-1).expand_as(logp))
    return value.detach(), torch.autograd.grad(value, leaf)[0]


def _grlab_rec(**keywords):
    logp, old, adv, mask = parity_batch()
    leaf = logp.clone().requires_grad_(True)
    value = policy_loss("rec", leaf, old, adv, mask, agg="token-mean", **keywords).loss
    return value.detach(), torch.autograd.grad(value, leaf)[0]


def test_trinitys_rec_defaults_to_no_clip_and_a_narrow_ring_grlab_keywords_restore_both():
    """Trinity-RFT 0.6.0 ``RECPolicyLossFn()`` (rec_policy_loss.py) defaults to
    ``clip_mode="none"`` and ring ε′ = (0.4, 0.4); grlab's ``rec`` defaults to the one-side
    clip and ring ε′ = (0.6, 2.0) (the paper's widened values). ``clip="none"`` and
    ``eps_low_prime=0.4, eps_high_prime=0.4`` give Trinity's defaults (docs/conventions.md).
    The test fails if either side's default changes. Trinity's masked_mean adds 1e-8 to the
    token count N ≥ 1, so values and gradients agree to a relative 1e-8, not to rounding."""
    trinity_value, trinity_grad = _trinity_rec_default()
    ours_value, _ = _grlab_rec()
    restored_value, restored_grad = _grlab_rec(clip="none")
    assert float(restored_value) == pytest.approx(float(trinity_value), rel=1e-8)
    torch.testing.assert_close(restored_grad, trinity_grad, rtol=1e-8, atol=1e-15)
    assert abs(float(ours_value) - float(trinity_value)) > 1e-3  # the defaults differ

    ring_value, ring_grad = _trinity_rec_default("ring")
    ours_ring, _ = _grlab_rec(clip="ring")
    restored_ring, restored_ring_grad = _grlab_rec(clip="ring", eps_low_prime=0.4,
                                                   eps_high_prime=0.4)
    assert float(restored_ring) == pytest.approx(float(ring_value), rel=1e-8)
    torch.testing.assert_close(restored_ring_grad, ring_grad, rtol=1e-8, atol=1e-15)
    assert abs(float(ours_ring) - float(ring_value)) > 1e-6
