"""Parity with TRL 1.16 (trl/trainer/grpo_trainer.py ``GRPOTrainer._compute_loss`` and the
advantage computation in ``_generate_and_score_completions``).

``trl_loss`` below is a small reference written from TRL's own definition of every
``loss_type`` it shares with grlab (grpo, bnpo, dr_grpo, dapo, cispo, luspo) and both
``importance_sampling_level`` values, independent of grlab's code path; ``trl_advantages`` is
TRL's ``scale_rewards`` (group / batch / none, ``nanstd`` = the sample std, + 1e-4). The tests
check grlab's loss of the same meaning on the seeded batch of tests/parity_batch.py. TRL's own
``_compute_loss`` is compared with grlab end to end in tests/test_integrations_trl.py.

Single process, no gradient accumulation: TRL's ``num_items_in_batch`` (dapo, cispo) is then
the batch's number of valid tokens, and its accumulation normaliser is 1.
"""

from __future__ import annotations

import pytest
import torch

from simulator.advantages import group_advantages
from simulator.losses import policy_loss
from tests.parity_batch import T, check_regions, parity_batch

EXACT = {"rtol": 1e-12, "atol": 1e-15}


def trl_loss(logp, old, adv, mask, loss_type, *, eps_low=0.2, eps_high=0.2,
             level="token", max_completion_length=T):
    """GRPOTrainer._compute_loss (beta = 0, no vLLM correction, no entropy mask)."""
    m = mask.to(logp.dtype)
    a = adv.unsqueeze(1)
    log_ratio = torch.where(mask, logp - old, 0.0)
    if level == "sequence":
        log_weights = ((log_ratio * m).sum(-1) / m.sum(-1).clamp(min=1.0)).unsqueeze(-1)
    else:
        log_weights = log_ratio
    coef_1 = torch.exp(log_weights)
    if loss_type == "cispo":
        per_token = -torch.clamp(coef_1, max=eps_high).detach() * a * torch.where(mask, logp, 0.0)
    else:
        coef_2 = torch.clamp(coef_1, 1 - eps_low, 1 + eps_high)
        per_token = -torch.min(coef_1 * a, coef_2 * a)
    if loss_type == "grpo":
        loss = ((per_token * m).sum(-1) / m.sum(-1).clamp(min=1.0)).mean()
    elif loss_type == "bnpo":
        loss = (per_token * m).sum() / m.sum().clamp(min=1.0)
    elif loss_type == "dr_grpo":
        loss = (per_token * m).sum() / (per_token.size(0) * max_completion_length)
    elif loss_type in ("dapo", "cispo"):
        loss = (per_token * m).sum() / m.sum().clamp(min=1.0)  # num_items_in_batch
    else:  # luspo
        loss = (per_token * m).sum(-1).mean()
    low = (coef_1 < 1 - eps_low) & (a < 0)
    high = (coef_1 > 1 + eps_high) & (a > 0)
    region = (low | high).expand_as(logp).to(logp.dtype)
    return loss, {"region": (region * m).sum() / m.sum()}


def trl_advantages(rewards, scale_rewards):
    """scale_rewards: group mean; std of the group ("group"), of the whole batch ("batch"),
    or none; TRL's nanstd is the sample std; + 1e-4."""
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    if scale_rewards == "none":
        return centred
    std = rewards.std(dim=1, keepdim=True) if scale_rewards == "group" else rewards.std()
    return centred / (std + 1e-4)


# (TRL loss_type, importance_sampling_level, grlab name, grlab keywords)
CASES = [
    ("grpo", "token", "grpo", {}),
    ("bnpo", "token", "bnpo", {}),
    ("dr_grpo", "token", "dr-grpo", {"norm_len": float(T)}),
    ("dapo", "token", "ppo", {"agg": "token-mean", "eps_high": 0.28}),
    ("cispo", "token", "cispo", {"eps_low": 1.0, "eps_high": 4.0}),  # TRL's ε_max = 5
    ("grpo", "sequence", "gspo", {"eps_low": 0.2, "eps_high": 0.2}),
    ("luspo", "sequence", "luspo", {"eps_low": 0.2, "eps_high": 0.2}),
]


@pytest.mark.parametrize(("loss_type", "level", "name", "kwargs"), CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_grlab_gives_trls_loss_value_gradient_and_clip_fraction(loss_type, level, name, kwargs):
    logp, old, adv, mask = parity_batch()
    check_regions(logp, old, adv, mask)
    eps_high = {"dapo": 0.28, "cispo": 5.0}.get(loss_type, 0.2)
    leaf = logp.clone().requires_grad_(True)
    out = policy_loss(name, leaf, old, adv, mask, **kwargs)
    (grad,) = torch.autograd.grad(out.loss, leaf)
    ref_leaf = logp.clone().requires_grad_(True)
    value, metrics = trl_loss(ref_leaf, old, adv, mask, loss_type, eps_high=eps_high,
                              level=level)
    (ref_grad,) = torch.autograd.grad(value, ref_leaf)
    assert float(out.loss.detach()) == pytest.approx(float(value.detach()), rel=1e-12, abs=1e-15)
    torch.testing.assert_close(grad, ref_grad, **EXACT)
    if loss_type != "cispo":  # TRL's clip_ratio/region_mean is grlab's pg_clipfrac
        assert float(out.metrics["pg_clipfrac"]) == pytest.approx(float(metrics["region"]),
                                                                  rel=1e-12)


def test_trls_grpo_and_bnpo_differ_on_a_ragged_batch_as_grlabs_do():
    """A drift check: TRL's grpo (sequence mean first) and bnpo (token mean) are different
    numbers on the ragged parity batch, and grlab's presets of those names give each."""
    logp, old, adv, mask = parity_batch()
    grpo, _ = trl_loss(logp, old, adv, mask, "grpo")
    bnpo, _ = trl_loss(logp, old, adv, mask, "bnpo")
    assert abs(float(grpo) - float(bnpo)) > 1e-3
    for name, expected in (("grpo", grpo), ("bnpo", bnpo)):
        value = policy_loss(name, logp, old, adv, mask).loss.detach()
        assert float(value) == pytest.approx(float(expected))


@pytest.mark.parametrize("scale_rewards", ["group", "batch", "none"])
def test_trls_scale_rewards_are_grlab_advantage_kinds(scale_rewards):
    """group → mean-std (std="sample", eps=1e-4); batch → mean-batch-std (same); none → mean."""
    rewards = torch.rand(4, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    kind, kwargs = {"group": ("mean-std", {"std": "sample", "eps": 1e-4}),
                    "batch": ("mean-batch-std", {"std": "sample", "eps": 1e-4}),
                    "none": ("mean", {})}[scale_rewards]
    got = group_advantages(rewards, kind, **kwargs)
    torch.testing.assert_close(got, trl_advantages(rewards, scale_rewards), **EXACT)


def test_grlabs_default_std_is_not_trls():
    """grlab's mean-std default (population std + 1e-6, the paper's REC configs' convention) differs
    from TRL's (sample std + 1e-4): the keyword pair above is needed to match TRL."""
    rewards = torch.tensor([[0.0, 1.0, 1.0, 0.0]], dtype=torch.float64)
    assert not torch.allclose(group_advantages(rewards, "mean-std"),
                              trl_advantages(rewards, "group"))


def test_trls_dapo_clips_at_epsilon_unless_epsilon_high_is_set():
    """TRL 1.16's ``GRPOConfig`` leaves ``epsilon_high=None`` and the trainer then uses
    ``epsilon`` (0.2) for the upper clip (grpo_trainer.py: ``args.epsilon_high if ... is not
    None else args.epsilon``), whatever ``loss_type``; so TRL's default ``loss_type="dapo"``
    clips at 0.2/0.2. grlab's ``dapo`` follows the DAPO paper, ε_high = 0.28;
    ``eps_high=0.2`` gives TRL's default (docs/conventions.md). Fails if either default moves."""
    import dataclasses

    trl = pytest.importorskip("trl")
    from simulator.losses import LOSSES

    fields = {f.name: f.default for f in dataclasses.fields(trl.GRPOConfig)}
    assert (fields["epsilon"], fields["epsilon_high"]) == (0.2, None)
    assert LOSSES["dapo"].defaults()["eps_high"] == 0.28
    logp, old, adv, mask = parity_batch()
    trl_default = trl_loss(logp, old, adv, mask, "dapo", eps_low=0.2, eps_high=0.2)[0]
    restored = policy_loss("dapo", logp, old, adv, mask, eps_high=0.2).loss
    assert float(restored) == pytest.approx(float(trl_default), rel=1e-12)
    assert abs(float(policy_loss("dapo", logp, old, adv, mask).loss) - float(trl_default)) > 1e-4
