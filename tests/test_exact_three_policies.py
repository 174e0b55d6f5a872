"""The exact engines with three policies: groups sampled by μ, the loss's ratio against π_old.

Claims checked here:

* one policy is unchanged: with no anchor the loss gets no ``logp_rollout``, and an anchor equal
  to the behavior gives bit for bit the one-policy numbers, corrections included;
* ``group_losses`` applies the corrections to each group on its own: a batch normalisation
  (``normalize=True``) normalises over one group's K rows, as ``policy_loss`` on that group;
* the enumeration is the expectation the sampler estimates: Monte Carlo means lie within a few
  standard errors of it (fixed seed), and the per-group gradients summed with their weights
  equal it; the ordered twin (a loop over the validated ``policy_loss``) equals it;
* untruncated sequence-level IS (w = π_old(y)/μ(y)) makes REINFORCE's expected gradient under
  μ-sampling equal its expected gradient under π_old-sampling (advantage "none", any π_old), and
  its on-policy expected gradient with the group-mean baseline when π_old = π_θ (the cross
  terms E_{π_θ}[∇log π_θ] vanish) — to 1e-10;
* truncated IS is biased by exactly Σ_y (π_old(y) − c·μ(y))₊·r(y)·∇log π(y) (loss gradient,
  advantage "none"), which is nonzero and positive on the logit of an under-sampled response;
* the statistics engine equals the enumeration for corrections that are functions of one
  response, and refuses (ValueError) those that are not; ``auto`` then enumerates;
* the lab's mismatched sampler: one step of ``simulate`` is the exact gradient with μ the
  tempered π_old, and untruncated sequence IS makes a mismatched run train like a matched one.
"""

from __future__ import annotations

import math

import pytest
import torch

from simulator.bandit import SoftmaxBandit
from simulator.corrections import CORRECTIONS, CorrectionSpec, Stage
from simulator.dynamics import Problem, Schedule, simulate
from simulator.exact import (
    ExpectedLoss,
    LossSetup,
    enumerate_groups,
    expected_gradient,
    group_gradients,
    sampled_gradient,
)
from simulator.groups import prepare
from simulator.losses import group_losses, policy_loss
from simulator.policies import policy_behavior, random_logits
from simulator.tree import TreeMDP

UNTRUNCATED = "is:level=sequence,high=1e300"
# corrections that are functions of one response (the statistics engine applies them)
PER_RESPONSE = ("tis-token", "tis-seq", "tis-geo", "mis-token", "mis-seq", "mis-geo", "icepop",
                "opsm:delta=0.05", "is:ratio=current,high=1.5,low=0.5",
                "is:level=geometric,action=mask,high=1.3")
LOSSES = ("grpo", "gspo", "rec-oneside-nois", "cispo", "dr-grpo", "reinforce")


def instance(seed: int, testbed: str, prompts: int = 2):
    """(env, θ, μ, π_old): three different softmax policies on a bandit of 4 answers or a tree
    with EOS (vocab 2, depth 3: lengths 1, 2, 3, 3), graded rewards."""
    g = torch.Generator().manual_seed(seed)
    if testbed == "bandit":
        env = SoftmaxBandit(torch.rand(prompts, 4, generator=g, dtype=torch.float64))
    else:
        count = TreeMDP.count(2, 3, True)
        env = TreeMDP(torch.rand(prompts, count, generator=g, dtype=torch.float64), 2, 3, True)
    theta = random_logits(env, g)
    old = theta + 0.7 * random_logits(env, g)
    mu = policy_behavior(env, old + 0.7 * random_logits(env, g))
    return env, theta, mu, policy_behavior(env, old)


# ------------------------------------------------------------------------------------------
# One policy is unchanged
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("testbed", ["bandit", "tree"])
@pytest.mark.parametrize("corrections", [(), ("tis-token",), ("mis-seq:denominator=drop",),
                                         ("icepop", "opsm"), ("tis-seq:normalize=true",)])
def test_an_anchor_equal_to_the_behavior_is_the_one_policy_call(testbed, corrections):
    env, theta, mu, _ = instance(0, testbed)
    for loss in ("grpo", "gspo", "rec-oneside-nois"):
        one = expected_gradient(env, theta, mu, loss, 3, method="enumerate",
                                corrections=corrections)
        three = expected_gradient(env, theta, mu, loss, 3, method="enumerate",
                                  corrections=corrections, anchor=mu.clone())
        assert torch.equal(one, three), loss


def test_without_an_anchor_the_loss_gets_no_rollout_log_probs():
    env, _, mu, old = instance(1, "tree")
    batch = enumerate_groups(mu, 2)
    assert prepare(env, batch, mu, LossSetup("grpo"), None, None).logp_rollout is None
    three = prepare(env, batch, mu, LossSetup("grpo"), None, None, anchor=old)
    rows = (batch.prompt.unsqueeze(-1), batch.responses)
    assert torch.equal(three.logp_rollout, env.token_logprobs_of(mu)[rows])
    assert torch.equal(three.logp_old, env.token_logprobs_of(old)[rows])


def test_the_closed_form_steps_aside_for_corrections():
    """REINFORCE's closed form has no IS weight: with a correction the engine enumerates or
    uses the statistics, and asking for the closed form is an error."""
    env, theta, mu, old = instance(2, "bandit")
    setup = LossSetup("reinforce", corrections=("tis-seq",), anchor=old)
    assert ExpectedLoss(env, setup, 3).method != "closed-form"
    assert ExpectedLoss(env, LossSetup("reinforce"), 3).method == "closed-form"
    with pytest.raises(ValueError, match="no closed form"):
        expected_gradient(env, theta, mu, setup, 3, method="closed-form")


# ------------------------------------------------------------------------------------------
# group_losses: each group its own batch
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("corrections", ["tis-token:normalize=true", "tis-seq:normalize=true",
                                         "mis-geo:normalize=true,denominator=drop", "icepop",
                                         "opsm", ("mis-token:denominator=drop", "tis-seq")])
@pytest.mark.parametrize("loss", ["grpo", "gspo", "reinforce", "cispo"])
def test_group_losses_applies_the_corrections_per_group(loss, corrections):
    g = torch.Generator().manual_seed(3)
    G, K, T = 5, 4, 3
    logp = (-torch.rand(G, K, T, generator=g, dtype=torch.float64)).requires_grad_()
    old = logp.detach() + 0.3 * torch.randn(G, K, T, generator=g, dtype=torch.float64)
    mu = old + 0.6 * torch.randn(G, K, T, generator=g, dtype=torch.float64)
    adv = torch.randn(G, K, generator=g, dtype=torch.float64)
    mask = torch.rand(G, K, T, generator=g) < 0.7
    mask[..., 0] = True
    out = group_losses(loss, logp, old, adv, mask, logp_rollout=mu, corrections=corrections)
    each = torch.stack([policy_loss(loss, logp[i], old[i], adv[i], mask[i], logp_rollout=mu[i],
                                    corrections=corrections, validate=False).loss
                        for i in range(G)])
    torch.testing.assert_close(out.loss, each, rtol=1e-14, atol=1e-14)
    (a,) = torch.autograd.grad(out.loss.sum(), logp)
    (b,) = torch.autograd.grad(each.sum(), logp)
    torch.testing.assert_close(a, b, rtol=1e-14, atol=1e-14)


def test_a_normalised_sequence_weight_averages_to_one_in_each_group():
    """Hand-derived: REINFORCE with seq-mean-token-sum is −(1/K)·Σ_i w_i·A_i·Σ_t log π, so
    ∂/∂log π_{i,t} = −w_i·A_i/K; with ``normalize=True`` the weights min(π_old/μ, 2) of a group
    are divided by their mean over that group's K rows (never the whole batch's)."""
    g = torch.Generator().manual_seed(4)
    G, K, T = 3, 4, 2
    logp = (-torch.rand(G, K, T, generator=g, dtype=torch.float64)).requires_grad_()
    old = -torch.rand(G, K, T, generator=g, dtype=torch.float64)
    shift = torch.tensor([0.0, 1.0, -1.0], dtype=torch.float64).view(G, 1, 1)  # groups differ
    mu = old + shift + 0.4 * torch.randn(G, K, T, generator=g, dtype=torch.float64)
    adv = torch.rand(G, K, generator=g, dtype=torch.float64) + 0.5
    mask = torch.ones(G, K, T, dtype=torch.bool)
    out = group_losses("reinforce", logp, old, adv, mask, agg="seq-mean-token-sum",
                       logp_rollout=mu, corrections="tis-seq:normalize=true")
    (grad,) = torch.autograd.grad(out.loss.sum(), logp)
    weights = -K * grad[..., 0] / adv  # [G, K]
    raw = torch.exp((old - mu).sum(-1)).clamp(max=2.0)
    torch.testing.assert_close(weights, raw / raw.mean(dim=1, keepdim=True),
                               rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(weights.mean(dim=1), torch.ones(G, dtype=torch.float64))


# ------------------------------------------------------------------------------------------
# Enumeration: against the sampler and the naive twins
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("testbed", ["bandit", "tree"])
@pytest.mark.parametrize("corrections", [("tis-token",), ("icepop", "opsm:delta=0.05"),
                                         ("mis-seq:normalize=true",)])
def test_monte_carlo_lies_within_its_standard_error_of_the_enumeration(testbed, corrections):
    """S groups per prompt from μ: each coordinate of the mean is within 5 standard errors
    of the exact value (fixed seed; P(|z| > 5) ≈ 6e-7 per coordinate), and the standard
    error is small enough for the check to mean something."""
    env, theta, mu, old = instance(5, testbed)
    setup = LossSetup("grpo", corrections=corrections, anchor=old)
    exact = expected_gradient(env, theta, mu, setup, 3, method="enumerate")
    mean, stderr = sampled_gradient(env, theta, mu, setup, 3, 4000,
                                    torch.Generator().manual_seed(0))
    assert float(stderr.max()) < 0.1 * float(exact.abs().max())
    z = (mean - exact).abs() / stderr.clamp(min=1e-300)
    assert float(z[stderr > 0].max()) < 5.0
    assert torch.equal(mean[stderr == 0], exact[stderr == 0])


@pytest.mark.parametrize("testbed", ["bandit", "tree"])
@pytest.mark.parametrize("corrections", [("tis-token",), ("mis-seq:denominator=drop",),
                                         ("tis-geo:normalize=true", "icepop")])
def test_per_group_gradients_and_the_ordered_twin_equal_the_enumeration(testbed, corrections):
    env, theta, mu, old = instance(6, testbed)
    for loss in ("grpo", "gspo", "dr-grpo"):
        setup = LossSetup(loss, corrections=corrections, anchor=old)
        exact = expected_gradient(env, theta, mu, setup, 3, method="enumerate")
        ordered = expected_gradient(env, theta, mu, setup, 3, method="ordered")
        torch.testing.assert_close(ordered, exact, rtol=1e-12, atol=1e-12)
        batch = enumerate_groups(mu, 3)
        grads = group_gradients(env, theta, batch, mu, setup)
        summed = (batch.weight.view(-1, *[1] * theta.ndim) * grads).sum(0) / env.num_prompts
        torch.testing.assert_close(summed, exact, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------------
# Importance sampling: the unbiasedness theorem and the bias of truncation
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("testbed", ["bandit", "tree"])
@pytest.mark.parametrize("k", [1, 2, 4])
def test_untruncated_sequence_is_turns_mu_samples_into_pi_old_samples(testbed, k):
    """Advantage "none": every row is on its own, E_μ[(π_old/μ)·r·∇log π] = E_{π_old}[r·∇log π]
    (seq-mean-token-sum on the tree: a constant normaliser, K)."""
    env, theta, mu, old = instance(7, testbed)
    agg = "seq-mean-token-sum" if testbed == "tree" else None
    corrected = expected_gradient(env, theta, mu, "reinforce", k, method="enumerate", agg=agg,
                                  advantage="none", anchor=old, corrections=UNTRUNCATED)
    sampled_from_old = expected_gradient(env, theta, old, "reinforce", k, method="enumerate",
                                         agg=agg, advantage="none")
    torch.testing.assert_close(corrected, sampled_from_old, rtol=0, atol=1e-10)
    uncorrected = expected_gradient(env, theta, mu, "reinforce", k, method="enumerate",
                                    agg=agg, advantage="none")
    assert float((uncorrected - sampled_from_old).abs().max()) > 1e-3  # the test can fail


@pytest.mark.parametrize("testbed", ["bandit", "tree"])
@pytest.mark.parametrize("k", [2, 3])
def test_untruncated_sequence_is_gives_reinforce_its_on_policy_gradient(testbed, k):
    """Group-mean baseline A_i = r_i − r̄, π_old = π_θ: the cross terms are
    E_μ[w_i·r_j·∇log π(y_i)] = E_{π_θ}[∇log π]·E_μ[r] = 0, so the expected gradient under
    μ-sampling with w = π_θ(y)/μ(y) is the on-policy one, (1 − 1/K)·E_{π_θ}[r·∇log π]·K/N."""
    env, theta, mu, _ = instance(8, testbed)
    agg = "seq-mean-token-sum" if testbed == "tree" else None
    on_policy = expected_gradient(env, theta, "on-policy", "reinforce", k, method="enumerate",
                                  agg=agg)
    corrected = expected_gradient(env, theta, mu, "reinforce", k, method="enumerate", agg=agg,
                                  anchor=policy_behavior(env, theta), corrections=UNTRUNCATED)
    torch.testing.assert_close(corrected, on_policy, rtol=0, atol=1e-10)
    statistics = expected_gradient(env, theta, mu, "reinforce", k, method="sufficient", agg=agg,
                                   anchor=policy_behavior(env, theta), corrections=UNTRUNCATED)
    torch.testing.assert_close(statistics, on_policy, rtol=0, atol=1e-10)


def test_untruncated_sequence_is_is_not_exact_where_the_group_couples_its_members():
    """The theorem's conditions are needed: with token-mean over responses of unequal length
    (the tree) the group's normaliser N = Σ_i L(y_i) depends on the other members, drawn from
    μ, and with GRPO's std the advantage does; REINFORCE with the sequence weight then misses
    its on-policy gradient by more than rounding (an honest limit, not a tolerance)."""
    env, theta, mu, _ = instance(8, "tree")
    anchor = policy_behavior(env, theta)
    for loss, agg in (("reinforce", "token-mean"), ("grpo", "seq-mean-token-sum")):
        on_policy = expected_gradient(env, theta, "on-policy", loss, 3, method="enumerate",
                                      agg=agg)
        corrected = expected_gradient(env, theta, mu, loss, 3, method="enumerate", agg=agg,
                                      anchor=anchor, corrections=UNTRUNCATED)
        gap = float((corrected - on_policy).norm() / on_policy.norm())
        assert gap > 1e-3, (loss, gap)


@pytest.mark.parametrize("cap", [1.0, 1.5, 2.0])
@pytest.mark.parametrize("level", ["token", "sequence"])
def test_truncated_is_has_the_bias_theory_predicts(cap, level):
    """Bandit, advantage "none", token-mean over K one-token rows: the loss gradient is
    −Σ_y μ(y)·min(π_old(y)/μ(y), c)·r(y)·(e_y − π) per prompt (averaged over prompts), so
    the truncated minus the untruncated gradient is (1/P)·Σ_y (π_old(y) − c·μ(y))₊·r(y)·(e_y − π).
    Response 0 is under-sampled (π_old(0) > c·μ(0)) and the others are not, so the bias on
    its logit is (π_old(0) − c·μ(0))·r(0)·(1 − π(0)) > 0: truncation pushes it up less."""
    env = SoftmaxBandit(torch.tensor([[1.0, 0.5, 0.0, 0.25], [0.3, 1.0, 0.6, 0.0]],
                                     dtype=torch.float64))
    theta = torch.tensor([[0.2, -0.4, 0.1, 0.0], [0.5, 0.0, -0.3, 0.2]], dtype=torch.float64)
    old = torch.tensor([[0.40, 0.20, 0.20, 0.20], [0.55, 0.15, 0.15, 0.15]], dtype=torch.float64)
    mu = torch.tensor([[0.10, 0.30, 0.30, 0.30], [0.05, 0.35, 0.30, 0.30]], dtype=torch.float64)
    options = {"advantage": "none", "anchor": old, "method": "enumerate"}
    truncated = expected_gradient(env, theta, mu, "reinforce", 3,
                                  corrections=f"is:level={level},high={cap}", **options)
    exact = expected_gradient(env, theta, mu, "reinforce", 3, corrections=UNTRUNCATED,
                              **options)
    pi = torch.softmax(theta, -1)
    excess = (old - cap * mu).clamp(min=0) * env.rewards  # [P, N]
    predicted = (excess.unsqueeze(-1) * (torch.eye(4, dtype=torch.float64) - pi.unsqueeze(1))
                 ).sum(1) / env.num_prompts
    bias = truncated - exact
    torch.testing.assert_close(bias, predicted, rtol=1e-12, atol=1e-14)
    assert float(bias.abs().max()) > 1e-3
    under = (old - cap * mu)[:, 0]
    assert bool((under > 0).all()) and bool((old[:, 1:] <= cap * mu[:, 1:]).all())
    torch.testing.assert_close(bias[:, 0], under * env.rewards[:, 0] * (1 - pi[:, 0])
                               / env.num_prompts + 0.0, rtol=1e-12, atol=1e-14)
    assert bool((bias[:, 0] > 0).all())


# ------------------------------------------------------------------------------------------
# The statistics engine
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("testbed", ["bandit", "tree"])
@pytest.mark.parametrize("correction", PER_RESPONSE)
def test_statistics_equal_enumeration_for_per_response_corrections(testbed, correction):
    env, theta, mu, old = instance(9, testbed)
    theta = theta.clone().requires_grad_(True)
    for loss in LOSSES:
        setup = LossSetup(loss, corrections=(correction,), anchor=old)
        values = {}
        for method in ("sufficient", "enumerate"):
            engine = ExpectedLoss(env, setup, 3, method)
            value, clip = engine.terms(theta, mu)
            (grad,) = torch.autograd.grad(value, theta)
            values[method] = (value.detach(), grad, clip)
        for got, want in zip(values["sufficient"], values["enumerate"], strict=True):
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_statistics_take_a_per_call_anchor_like_the_enumeration():
    env, theta, mu, old = instance(10, "tree")
    setup = LossSetup("grpo", corrections=("tis-token", "icepop"))
    got = [ExpectedLoss(env, setup, 4, method).terms(theta, mu, old)[0]
           for method in ("sufficient", "enumerate")]
    torch.testing.assert_close(got[0], got[1], rtol=1e-12, atol=1e-12)
    one = ExpectedLoss(env, setup, 4, "sufficient").terms(theta, mu)[0]
    assert abs(float(one - got[0])) > 1e-6  # the anchor changes the value


@pytest.mark.parametrize("correction, reason", [
    ("tis-token:normalize=true", "normalize"),
    ("mis-seq:denominator=drop", "drop"),
    ("icepop:denominator=drop", "drop"),
])
def test_statistics_refuse_corrections_of_the_whole_group(correction, reason):
    """Binary rewards, 6 answers, K = 4: ``auto`` would pick the statistics (48 rows against
    1,008 enumerated); with a correction they refuse, it enumerates."""
    g = torch.Generator().manual_seed(11)
    env = SoftmaxBandit(torch.randint(0, 2, (2, 6), generator=g).to(torch.float64))
    theta = random_logits(env, g)
    mu, old = (policy_behavior(env, theta + random_logits(env, g)) for _ in range(2))
    assert ExpectedLoss(env, LossSetup("grpo", anchor=old), 4).method == "sufficient"
    setup = LossSetup("grpo", corrections=(correction,), anchor=old)
    with pytest.raises(ValueError, match=reason):
        ExpectedLoss(env, setup, 4, "sufficient").terms(theta, mu)
    auto = ExpectedLoss(env, setup, 4)
    assert auto.method == "enumerate"
    torch.testing.assert_close(auto.terms(theta, mu)[0],
                               ExpectedLoss(env, setup, 4, "enumerate").terms(theta, mu)[0],
                               rtol=0, atol=0)


def test_statistics_probe_refuses_a_correction_that_couples_rows(monkeypatch):
    """A correction without the known keywords whose weight is a batch statistic (each row's
    weight divided by the batch's largest ratio) is caught by the probe."""

    def coupled(inputs, *, scale: float = 1.0) -> Stage:
        w = torch.exp(inputs.mismatch("old"))
        return Stage(weight=scale * w / w.max())

    monkeypatch.setitem(CORRECTIONS, "test-coupled",
                        CorrectionSpec(name="test-coupled", fn=coupled))
    env, theta, mu, old = instance(12, "bandit")
    setup = LossSetup("grpo", corrections=("test-coupled",), anchor=old)
    with pytest.raises(ValueError, match="not a function of one response"):
        ExpectedLoss(env, setup, 3, "sufficient").terms(theta, mu)
    assert ExpectedLoss(env, setup, 3).method == "enumerate"


# ------------------------------------------------------------------------------------------
# The lab's mismatched sampler
# ------------------------------------------------------------------------------------------


def test_schedule_sampler_knobs_default_to_one_policy():
    assert Schedule(rollout_temperature=1.0, rollout_noise=0.0) == Schedule()
    assert not Schedule().mismatched and Schedule(rollout_noise=0.1).mismatched
    assert repr(Schedule(sync_interval=20)) == (
        "Schedule(sync_interval=20, sync_offset=0, offline=False)")
    assert Schedule(rollout_temperature=2.0).label == "rollout_temperature=2"
    with pytest.raises(ValueError, match="rollout_temperature"):
        Schedule(rollout_temperature=0.0)
    with pytest.raises(ValueError, match="rollout_noise"):
        Schedule(rollout_noise=-1.0)
    trajectory = simulate(Problem(prompts=2), "grpo", seeds=[0], steps=2)
    assert "kl_rollout" not in trajectory.metrics


@pytest.mark.parametrize("corrections", [(), ("tis-token",), ("icepop", "opsm")])
def test_one_lab_step_is_the_exact_gradient_under_the_tempered_sampler(corrections):
    """SGD, one step, two learning rates: θ_1 = θ_0 − lr·g recovers θ_0 and g; g must be
    expected_gradient with μ = softmax(θ_0/T) sampling and π_old = softmax(θ_0) anchoring."""
    problem, temperature, k = Problem(prompts=3, responses=4), 2.0, 3
    schedule = Schedule(rollout_temperature=temperature)
    lrs = (0.1, 0.3)
    trajectory = simulate(problem, "grpo", seeds=[5], schedules=(schedule,), lrs=lrs, steps=1,
                          group_size=k, corrections=corrections)
    first, second = trajectory.params
    grad = (first - second) / (lrs[1] - lrs[0])
    theta0 = first + lrs[0] * grad
    env = problem.make_env(problem.draw_rewards(torch.Generator().manual_seed(5)))
    want = expected_gradient(env, theta0, torch.softmax(theta0 / temperature, -1), "grpo", k,
                             anchor=torch.softmax(theta0, -1), corrections=corrections)
    torch.testing.assert_close(grad, want, rtol=1e-9, atol=1e-11)
    kl = (torch.softmax(theta0, -1) * (torch.log_softmax(theta0, -1)
                                       - torch.log_softmax(theta0 / temperature, -1))).sum(-1)
    torch.testing.assert_close(trajectory.metrics["kl_rollout"][0, 0], kl.mean(),
                               rtol=1e-9, atol=1e-12)


def test_untruncated_sequence_is_trains_a_mismatched_run_like_a_matched_one():
    """Advantage "none" (each row on its own): with w = π_old/μ untruncated, every step's
    exact update equals the matched run's, whatever the sampler; without it they differ."""
    schedules = (Schedule(), Schedule(rollout_temperature=1.7), Schedule(rollout_noise=0.8),
                 Schedule(sync_interval=3, rollout_temperature=0.6, rollout_noise=0.5),
                 Schedule(sync_interval=3))
    options = {"seeds": [0, 1], "schedules": schedules, "steps": 25, "lrs": (0.3,),
               "optimizer": "adam", "advantage": "none"}
    corrected = simulate(Problem(prompts=3), "reinforce", corrections=UNTRUNCATED, **options)
    reward = corrected.metrics["reward"].reshape(26, 2, 5)
    torch.testing.assert_close(reward[..., 1], reward[..., 0], rtol=0, atol=1e-10)
    torch.testing.assert_close(reward[..., 2], reward[..., 0], rtol=0, atol=1e-10)
    torch.testing.assert_close(reward[..., 3], reward[..., 4], rtol=0, atol=1e-10)
    plain = simulate(Problem(prompts=3), "reinforce", **options)
    gap = plain.metrics["reward"].reshape(26, 2, 5)
    assert float((gap[..., 1] - gap[..., 0]).abs().max()) > 1e-3
    assert math.isfinite(float(corrected.metrics["kl_rollout"].max()))
