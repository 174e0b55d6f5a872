"""Exact expectations: every fast path against its naive twin, the sampler against the exact
value within its own reported error, the public contract of ``simulator.exact``, and
``gradient_covariance`` against a brute-force loop over ordered groups."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.bandit import SoftmaxBandit
from simulator.claims.registry import MC_Z, mc_z_error
from simulator.exact import (
    GroupBatch,
    LossSetup,
    batch_loss,
    enumerate_groups,
    expected_gradient,
    expected_hessian,
    expected_loss,
    gradient_covariance,
    group_gradients,
    iterate_expected_update,
    multisets,
    ordered_tuples,
    sample_groups,
    sampled_gradient,
)
from simulator.losses import LOSSES, policy_loss
from simulator.policies import LogLinearPolicy, policy_behavior, random_logits
from simulator.tree import TreeMDP
from tests.loss_inputs import extra_inputs

SEEDS = st.integers(0, 2**31 - 1)
# every loss whose exact expectation is enumerable (red-drop draws at random)
# μ = π_old with one policy (a loss reading logp_rollout gets logp_old); a loss selecting
# tokens over the group (couples_rows) is not symmetric in the members under ties: the
# multiset enumeration refuses it (tested below) and it is left out where multisets are used
EXACT_LOSSES = sorted(name for name, spec in LOSSES.items() if spec.advantage != "red-drop"
                      and not spec.couples_rows)
COUPLED = sorted(name for name, spec in LOSSES.items() if spec.couples_rows)


def instance(seed: int, tree: bool, prompts: int = 2):
    g = torch.Generator().manual_seed(seed)
    if tree:
        env = TreeMDP.random(prompts, 2, 2, bool(seed % 2), g)
    else:
        env = SoftmaxBandit(torch.rand(prompts, 3, generator=g, dtype=torch.float64))
    theta = random_logits(env, g)
    mu = policy_behavior(env, theta + 0.5 * random_logits(env, g))
    return env, theta, mu, g


@settings(max_examples=3, deadline=None)
@given(seed=SEEDS, tree=st.booleans(), k=st.integers(1, 3))
def test_enumeration_agrees_with_ordered_tuples_and_looped_losses_for_every_loss(seed, tree, k):
    """multisets + ``group_losses`` (the fast path) vs ordered tuples + a validated loop."""
    env, theta, mu, _ = instance(seed, tree, prompts=1)
    for name in EXACT_LOSSES:
        fast = expected_gradient(env, theta, mu, name, k, method="enumerate")
        slow = expected_gradient(env, theta, mu, name, k, method="ordered")
        torch.testing.assert_close(fast, slow, rtol=1e-9, atol=1e-12, msg=name)


@given(seed=SEEDS, tree=st.booleans(), k=st.integers(1, 4),
       agg=st.sampled_from(["seq-mean-token-sum", "seq-mean-token-mean",
                            "seq-mean-token-sum-norm", "token-mean", "token-sum"]),
       name=st.sampled_from(["reinforce", "asymre", "rloo"]))
def test_closed_form_fast_path_agrees_with_enumeration(seed, tree, k, agg, name):
    env, theta, mu, _ = instance(seed, tree)
    if agg == "token-mean" and bool((env.lengths != env.lengths[0]).any()):
        with pytest.raises(ValueError, match="no closed form"):
            expected_loss(env, theta, mu, name, k, agg=agg, method="closed-form")
        return
    fast = expected_gradient(env, theta, mu, name, k, agg=agg, method="closed-form")
    slow = expected_gradient(env, theta, mu, name, k, agg=agg, method="enumerate")
    value_fast = expected_loss(env, theta, mu, name, k, agg=agg, method="closed-form")
    value_slow = expected_loss(env, theta, mu, name, k, agg=agg, method="enumerate")
    torch.testing.assert_close(fast, slow, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(value_fast, value_slow, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["grpo", "rec-oneside-is", "opmd-kimi", "gspo", "dr-grpo"])
def test_sampled_estimator_agrees_with_exact_within_its_reported_error(name):
    env, theta, mu, g = instance(7, tree=True)
    exact = expected_gradient(env, theta, mu, name, 3, method="enumerate")
    mean, stderr = sampled_gradient(env, theta, mu, name, 3, 3000, g)
    assert mc_z_error(mean, stderr, exact) <= MC_Z
    assert float(stderr.max()) < 0.05 * float(exact.abs().max()) + 1e-3  # the test has power


def test_sampled_batch_and_enumerated_batch_go_through_one_loss_function():
    env, theta, mu, g = instance(3, tree=True)
    setup = LossSetup("grpo")
    exact = batch_loss(env, theta, enumerate_groups(mu, 2), mu, setup)
    sampled = batch_loss(env, theta, sample_groups(mu, 2, 4000, g), mu, setup)
    assert abs(float(exact - sampled)) < 0.05 + 0.1 * abs(float(exact))
    torch.testing.assert_close(exact, expected_loss(env, theta, mu, "grpo", 2))


def test_red_drop_is_sampled_not_enumerated():
    env, theta, mu, g = instance(1, tree=False)
    with pytest.raises(ValueError, match="red-drop"):
        expected_gradient(env, theta, mu, "red-drop", 3)
    mean, stderr = sampled_gradient(env, theta, mu, "red-drop", 3, 50, g)
    assert mean.shape == theta.shape and bool(torch.isfinite(stderr).all())


def test_hessian_is_the_jacobian_of_the_exact_gradient():
    env, theta, mu, _ = instance(5, tree=False, prompts=1)
    hessian = expected_hessian(env, theta, mu, "grpo", 2)
    jacobian = torch.autograd.functional.jacobian(
        lambda z: torch.autograd.grad(expected_loss(env, z, mu, "grpo", 2), z,
                                      create_graph=True)[0], theta)
    torch.testing.assert_close(hessian, jacobian, rtol=1e-9, atol=1e-12)
    flat = hessian.reshape(theta.numel(), theta.numel())
    torch.testing.assert_close(flat, flat.T, rtol=1e-9, atol=1e-12)


def test_hessian_can_be_taken_twice_on_a_fresh_cache():
    """What the engine caches (multisets) is built outside the transforms: a second call
    used to find tensors of the first call's finished transform (a functorch assertion)."""
    from simulator.groups import _multisets

    env, theta, mu, _ = instance(5, tree=False, prompts=1)
    _multisets.cache_clear()
    first = expected_hessian(env, theta, mu, "grpo", 4, method="enumerate")
    second = expected_hessian(env, theta, mu, "grpo", 4, method="enumerate")
    torch.testing.assert_close(first, second, rtol=0, atol=0)


def test_iterated_update_is_repeated_gradient_descent():
    env, theta, mu, _ = instance(2, tree=False)
    path = iterate_expected_update(env, theta, mu, "grpo", 2, lr=0.5, steps=3)
    step = theta - 0.5 * expected_gradient(env, theta, mu, "grpo", 2)
    assert path.shape == (4, *theta.shape)
    torch.testing.assert_close(path[1], step)


def test_log_linear_gradient_is_the_chain_rule_of_the_tabular_one():
    env, _theta, mu, g = instance(4, tree=True)
    policy = LogLinearPolicy.random(env, 3, g)
    w = torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True)
    (grad_w,) = torch.autograd.grad(expected_loss(env, policy.logits(w), mu, "grpo", 2), w)
    grad_logits = expected_gradient(env, policy.logits(w).detach(), mu, "grpo", 2)
    torch.testing.assert_close(grad_w, torch.einsum("...d,...->d", policy.features, grad_logits))


def test_on_policy_behaviour_is_the_detached_current_policy():
    env, theta, _, _ = instance(6, tree=True)
    on = expected_gradient(env, theta, "on-policy", "grpo", 2)
    fixed = expected_gradient(env, theta, policy_behavior(env, theta), "grpo", 2)
    torch.testing.assert_close(on, fixed)


def test_anchor_separates_logp_old_from_the_behaviour():
    env, theta, mu, g = instance(8, tree=True)
    anchor = policy_behavior(env, random_logits(env, g))
    with_anchor = expected_gradient(env, theta, mu, "opmd-kimi", 2, anchor=anchor)
    without = expected_gradient(env, theta, mu, "opmd-kimi", 2)
    assert not torch.allclose(with_anchor, without)


def test_bad_inputs_raise_clear_errors():
    env, theta, mu, _g = instance(0, tree=False)
    with pytest.raises(KeyError, match="did you mean"):
        expected_gradient(env, theta, mu, "grpoo", 2)
    with pytest.raises(TypeError, match="keyword"):
        expected_gradient(env, theta, mu, "grpo", 2, eps_hihg=0.3)
    with pytest.raises(ValueError, match="K must be"):
        expected_gradient(env, theta, mu, "grpo", 0)
    with pytest.raises(ValueError, match="logits must have shape"):
        expected_gradient(env, theta[:, :2], mu, "grpo", 2)
    with pytest.raises(ValueError, match="sum to 1"):
        expected_gradient(env, theta, mu * 2, "grpo", 2)
    with pytest.raises(ValueError, match="method"):
        expected_gradient(env, theta, mu, "grpo", 2, method="fast")
    with pytest.raises(ValueError, match="behavior"):
        expected_gradient(env, theta, "off-policy", "grpo", 2)
    with pytest.raises(ValueError, match="MAX_GROUPS"):
        multisets(200, 6)
    with pytest.raises(ValueError, match="MAX_MATERIALISED"):
        ordered_tuples(20, 6)
    with pytest.raises(TypeError, match="Generator"):
        sample_groups(mu, 2, 10, 0)
    zero = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]], dtype=torch.float64)
    with pytest.raises(ValueError, match="anchor"):
        expected_gradient(env, theta, mu, "grpo", 2, anchor=zero)


def test_zero_probability_responses_are_left_out_not_nan():
    env, theta, _, _ = instance(9, tree=False)
    mu = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    for name in ("grpo", "rec-oneside-is", "opmd-kimi", "cispo"):
        assert bool(torch.isfinite(expected_gradient(env, theta, mu, name, 3)).all()), name


def test_group_gradients_agree_with_jacobian_of_group_losses():
    """Naive twin of ``group_gradients`` (vmap of grad): jacrev of the vector of group losses."""
    from simulator.groups import loss_setup, per_group_losses, prepare

    env, theta, mu, g = instance(11, tree=True)
    batch = sample_groups(mu, 3, 10, g)
    for name in ("grpo", "gspo", "opmd-kimi", "dapo"):
        setup = loss_setup(name, {})
        prepared = prepare(env, batch, mu, setup, None, None)
        naive = torch.func.jacrev(
            lambda z, s=setup, p=prepared: per_group_losses(env, z, p, s).loss)(theta)
        torch.testing.assert_close(group_gradients(env, theta, batch, mu, name), naive,
                                   rtol=1e-9, atol=1e-12, msg=name)


def test_population_surrogate_closed_form_agrees_with_enumeration():
    """closed_forms.pairwise_surrogate_closed_form ((K−1)/K·Var_μ a) vs the enumerated groups
    through losses.pairwise_surrogate."""
    from simulator.closed_forms import pairwise_surrogate_closed_form as closed_form
    from simulator.exact import expected_pairwise_surrogate

    env, theta, mu, g = instance(12, tree=True)
    anchor = random_logits(env, g)
    a = env.rewards - 0.7 * (env.sequence_logprobs(theta) - env.sequence_logprobs(anchor))
    for k in (1, 2, 3):
        torch.testing.assert_close(expected_pairwise_surrogate(env, theta, anchor, mu, k, 0.7),
                                   closed_form(mu, a, k).mean(), rtol=1e-10, atol=1e-13)


def test_a_callable_behaviour_is_checked_like_a_table():
    env, theta, _, _ = instance(13, tree=False)
    with pytest.raises(ValueError, match="sum to 1"):
        expected_gradient(env, theta, lambda z: torch.ones(2, 3, dtype=torch.float64), "grpo", 2)


@pytest.mark.parametrize("method,name", [("closed-form", "reinforce"), ("sufficient", "grpo"),
                                         ("enumerate", "grpo"), ("ordered", "rec-oneside-is")])
def test_a_callable_behaviour_is_held_fixed_while_the_gradient_is_taken(method, name):
    """Mutant callable-behaviour-differentiated. A callable behaviour is evaluated at the current
    logits and then held fixed: the gradient is E_{groups∼μ}[∇ loss] with μ = behavior(θ) a
    constant, i.e. the gradient with ``behavior`` = the same table computed beforehand. The
    callable here is differentiable (a tempered softmax of θ, no detach of its own); letting
    the gradient flow into μ adds Σ_g ∇w_g(θ)·loss(g) (and ∇ log π_old), which is not zero on
    this instance (checked below, so the test can fail)."""
    env, theta, _, _ = instance(14, tree=True)

    def tempered(z):
        return env.sequence_probs(z.to(torch.float64) / 2)

    fixed = tempered(theta).detach()
    held = expected_gradient(env, theta, tempered, name, 2, method=method)
    torch.testing.assert_close(held, expected_gradient(env, theta, fixed, name, 2,
                                                       method=method), rtol=1e-12, atol=1e-14)
    z = theta.clone().requires_grad_(True)
    (through_mu,) = torch.autograd.grad(expected_loss(env, z, tempered(z), name, 2,
                                                      method=method), z)
    assert float((through_mu - held).abs().max()) > 1e-3
    setup = LossSetup(name)
    batch = enumerate_groups(fixed, 2)
    (sampled_route,) = torch.autograd.grad(batch_loss(env, z, batch, tempered, setup), z)
    torch.testing.assert_close(sampled_route, held, rtol=1e-9, atol=1e-12)


def test_group_losses_is_policy_loss_of_each_group_for_every_loss_and_aggregation():
    """``losses.group_losses`` on [G, K, T] vs ``policy_loss`` called on each [K, T] group
    (loss and clip fraction), with ragged masks (one group has an empty row)."""
    from simulator.aggregation import AGGREGATIONS
    from simulator.losses import LOSSES, group_losses, policy_loss

    g = torch.Generator().manual_seed(5)
    shape = (3, 4, 5)
    logp = -torch.rand(shape, generator=g, dtype=torch.float64) * 2
    logp_old = logp + 0.3 * torch.randn(shape, generator=g, dtype=torch.float64)
    adv = torch.randn(shape[:2], generator=g, dtype=torch.float64)
    mask = torch.rand(shape, generator=g) < 0.7
    mask[0, 0] = False
    mask[:, :, 0] = mask[:, :, 0] | (torch.arange(4) > 0)
    for name in LOSSES:  # couples_rows losses too: group_losses runs them group by group
        extra = extra_inputs(name, logp_old)
        for agg in AGGREGATIONS:
            norm_len = 5.0 if agg == "seq-mean-token-sum-norm" else None
            together = group_losses(name, logp, logp_old, adv, mask, agg=agg, norm_len=norm_len,
                                    **extra)
            outs = [policy_loss(name, *group, agg=agg, norm_len=norm_len,
                                **{key: value[i] for key, value in extra.items()})
                    for i, group in enumerate(zip(logp, logp_old, adv, mask, strict=True))]
            torch.testing.assert_close(together.loss, torch.stack([o.loss for o in outs]),
                                       rtol=1e-12, atol=1e-14, msg=f"{name} {agg}")
            torch.testing.assert_close(together.clipfrac,
                                       torch.stack([o.metrics["clipfrac"] for o in outs]),
                                       rtol=1e-12, atol=1e-14, msg=f"{name} {agg} clipfrac")


def test_expected_loss_reused_across_behaviours_matches_a_fresh_enumeration():
    """``ExpectedLoss`` caches the enumeration's static parts: calling one object with new
    behaviours (including one with exact zeros, which falls back) must equal fresh calls."""
    from simulator.exact import ExpectedLoss

    env, theta, _, g = instance(13, tree=True)
    for name in ("grpo", "rec-oneside-is", "opmd-kimi"):
        reused = ExpectedLoss(env, LossSetup(name), 3, "enumerate")
        for trial in range(3):
            mu = torch.softmax(torch.randn(env.rewards.shape, generator=g,
                                           dtype=torch.float64), -1)
            if trial == 1:
                mu[:, 0] = 0.0
                mu = mu / mu.sum(-1, keepdim=True)
            fresh = expected_loss(env, theta, mu, name, 3, method="enumerate")
            torch.testing.assert_close(reused(theta, mu), fresh, rtol=1e-12, atol=1e-14,
                                       msg=f"{name} trial {trial}")


def test_a_batch_holding_a_response_of_behaviour_probability_zero_is_an_error_not_nan():
    """logp_old would be −inf: the check must fire (on the gathered batch, after the cheap
    check on the [P, N, H] table found a zero), and a batch without that response is fine."""
    env, theta, _, _ = instance(9, tree=False)
    mu = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]], dtype=torch.float64)
    setup = LossSetup("grpo")
    bad = GroupBatch(torch.tensor([0]), torch.tensor([[0, 2]]), torch.ones(1, dtype=torch.float64),
                     exact=False)
    with pytest.raises(ValueError, match="probability 0"):
        batch_loss(env, theta, bad, mu, setup)
    good = GroupBatch(torch.tensor([0, 1]), torch.tensor([[0, 1], [0, 2]]),
                      torch.ones(2, dtype=torch.float64), exact=False)
    assert bool(torch.isfinite(batch_loss(env, theta, good, mu, setup)))


# --------------------------------------------------------------------------------------------
# gradient_covariance: the exact covariance of one group's gradient, against a brute-force
# loop over ordered groups (autograd on log_softmax written out, no enumeration code), prompt by
# prompt when there are several, and against the sample covariance of sampled groups.
# --------------------------------------------------------------------------------------------


def brute_force(rewards, logits, mu, loss, k, prompt=0):
    """Σ over the N^K ordered groups of ``prompt`` (weight Π μ): E[g gᵀ] − E[g] E[g]ᵀ, g the
    gradient of the group's loss with respect to that prompt's logits."""
    n = rewards.shape[1]
    second = torch.zeros(n, n, dtype=torch.float64)
    first = torch.zeros(n, dtype=torch.float64)
    for group in itertools.product(range(n), repeat=k):
        weight = float(torch.prod(mu[prompt, list(group)]))
        theta = logits[prompt].clone().requires_grad_(True)
        logp = torch.log_softmax(theta, dim=0)[list(group)].unsqueeze(-1)  # [K, 1]
        old = torch.log(mu[prompt, list(group)]).unsqueeze(-1)
        adv, _ = LOSSES[loss].advantages(rewards[prompt, list(group)].unsqueeze(0))
        value = policy_loss(loss, logp, old, adv[0], torch.ones(k, 1, dtype=torch.bool)).loss
        (g,) = torch.autograd.grad(value, theta)
        first += weight * g
        second += weight * torch.outer(g, g)
    return second - torch.outer(first, first), first


@pytest.mark.parametrize("loss", ["grpo", "rec-oneside-is", "reinforce", "opmd-kimi"])
def test_the_covariance_is_the_brute_force_sum_over_ordered_groups(loss):
    g = torch.Generator().manual_seed(3)
    rewards = torch.rand(1, 4, generator=g, dtype=torch.float64)
    logits = torch.randn(1, 4, generator=g, dtype=torch.float64)
    mu = torch.softmax(torch.randn(1, 4, generator=g, dtype=torch.float64), dim=1)
    env = SoftmaxBandit(rewards)
    cov = gradient_covariance(env, logits, mu, loss, 3)
    expected, mean = brute_force(rewards, logits, mu, loss, 3)
    torch.testing.assert_close(cov, expected, rtol=1e-10, atol=1e-14)
    # its mean is the expected gradient (of the one-prompt mean loss)
    torch.testing.assert_close(expected_gradient(env, logits, mu, loss, 3)[0], mean,
                               rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("loss", ["grpo", "rec-oneside-is"])
def test_each_prompts_covariance_is_the_brute_force_sum_over_its_own_ordered_groups(loss):
    """Mutants covariance-weights-normalised-over-prompts, covariance-sums-every-prompts-groups,
    covariance-gradient-of-prompt-0. With P = 3 prompts, Cov_p = Σ_{ordered groups of p} Π μ_p ·
    g gᵀ − m_p m_pᵀ, g = ∇_{θ_p} loss(group): prompt p's groups only, their weights summing to 1
    within p (not over all prompts), each gradient taken with respect to p's own logits. The
    prompts differ (rewards, logits, behaviour), so any mixing shows; one prompt could not."""
    g = torch.Generator().manual_seed(5)
    rewards = torch.rand(3, 3, generator=g, dtype=torch.float64)
    logits = torch.randn(3, 3, generator=g, dtype=torch.float64)
    mu = torch.softmax(torch.randn(3, 3, generator=g, dtype=torch.float64), dim=1)
    cov = gradient_covariance(SoftmaxBandit(rewards), logits, mu, loss, 3)
    expected = torch.stack([brute_force(rewards, logits, mu, loss, 3, p)[0] for p in range(3)])
    assert cov.shape == (3, 3, 3)
    torch.testing.assert_close(cov, expected, rtol=1e-10, atol=1e-14)
    # the prompts' covariances differ, so the comparison above can tell them apart
    assert float((expected[0] - expected[1]).abs().max()) > 1e-3


def test_a_prompts_covariance_does_not_depend_on_the_other_prompts():
    """Cov_p of a P-prompt testbed equals the covariance of the one-prompt testbed holding only
    prompt p (a group moves only its own prompt's logits, and its loss is its own batch), on a
    tree of unequal lengths with an on-policy behaviour."""
    g = torch.Generator().manual_seed(6)
    env = TreeMDP.random(3, 2, 2, True, g)
    logits = random_logits(env, g)
    cov = gradient_covariance(env, logits, "on-policy", "grpo", 2)
    for p in range(3):
        alone = TreeMDP(env.rewards[p:p + 1], 2, 2, True)
        torch.testing.assert_close(
            cov[p], gradient_covariance(alone, logits[p:p + 1], "on-policy", "grpo", 2),
            rtol=1e-12, atol=1e-14)
    assert float((cov[0] - cov[1]).abs().max()) > 1e-3


def test_the_covariance_is_positive_semidefinite_with_the_softmax_null_direction():
    """Cov is symmetric PSD, and every gradient of a softmax's logits sums to 0, so the all-ones
    direction has zero variance; with P prompts the result is [P, D, D]."""
    env = SoftmaxBandit(torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, 0.2]], dtype=torch.float64))
    logits = torch.randn(2, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    cov = gradient_covariance(env, logits, "on-policy", "grpo", 3)
    assert cov.shape == (2, 3, 3)
    torch.testing.assert_close(cov, cov.transpose(1, 2), rtol=0, atol=1e-15)
    eig = torch.linalg.eigvalsh(cov)
    assert (eig > -1e-14).all() and (eig[:, -1] > 1e-3).all()
    ones = torch.ones(3, dtype=torch.float64)
    assert float((ones @ cov @ ones).abs().max()) < 1e-14


def test_the_covariance_matches_the_sample_covariance_of_sampled_groups():
    """20,000 sampled groups: each entry of the sample covariance within 5 standard errors of
    the exact one (the standard error of a covariance entry estimated from the fourth moments
    of the same samples)."""
    g = torch.Generator().manual_seed(1)
    env = SoftmaxBandit(torch.tensor([[1.0, 0.0, 0.3, 0.0]], dtype=torch.float64))
    logits = torch.randn(1, 4, generator=g, dtype=torch.float64)
    mu = torch.softmax(torch.randn(1, 4, generator=g, dtype=torch.float64), dim=1)
    exact = gradient_covariance(env, logits, mu, "rec-oneside-nois", 4)
    batch = sample_groups(mu, 4, 20_000, torch.Generator().manual_seed(2))
    grads = group_gradients(env, logits, batch, mu, "rec-oneside-nois").reshape(-1, 4)
    centred = grads - grads.mean(0)
    products = centred.unsqueeze(2) * centred.unsqueeze(1)  # [S, D, D]
    sample = products.mean(0)
    stderr = products.std(0) / len(grads) ** 0.5
    assert ((sample - exact).abs() <= 5 * stderr + 1e-12).all()


def test_bad_group_size_is_a_clear_error():
    env = SoftmaxBandit(torch.tensor([[1.0, 0.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match="K must be"):
        gradient_covariance(env, torch.zeros(1, 2, dtype=torch.float64), "on-policy", "grpo", 0)


def test_a_batch_wide_token_selection_is_not_symmetric_in_the_group_so_multisets_refuse_it():
    """KL-Cov and Clip-Cov rank tokens by cov_t = (log π_t − mean)(A_t − mean): with K = 2 one
    token per row the two scores are always equal, (d)(a) = (−d)(−a), and the tie goes to the
    first row, so swapping the rows changes the loss (and where the scores are equal only up to
    round-off, the order decides through the bits). The multiset enumeration, which counts
    one order per multiset, refuses such losses; ``auto`` takes the ordered tuples."""
    logp = torch.tensor([[-0.25], [-1.25]], dtype=torch.float64)  # centred: ±0.5, exact
    old = logp + torch.tensor([[0.2], [-0.1]], dtype=torch.float64)
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64)
    mask = torch.ones(2, 1, dtype=torch.bool)
    for name, keywords in (("kl-cov", {"kl_cov_ratio": 0.5}), ("clip-cov", {
            "clip_cov_ratio": 0.5, "clip_cov_lb": -10.0, "clip_cov_ub": 10.0,
            "eps_low": 0.01, "eps_high": 0.01})):
        first = policy_loss(name, logp, old, adv, mask, **keywords).loss
        swapped = policy_loss(name, logp.flip(0), old.flip(0), adv.flip(0), mask,
                              **keywords).loss
        assert not torch.isclose(first, swapped), name
    env, theta, mu, _ = instance(0, False, prompts=1)
    for name in COUPLED:
        with pytest.raises(ValueError, match="method='ordered'"):
            expected_gradient(env, theta, mu, name, 2, method="enumerate")
        auto = expected_gradient(env, theta, mu, name, 2)
        ordered = expected_gradient(env, theta, mu, name, 2, method="ordered")
        torch.testing.assert_close(auto, ordered, rtol=0, atol=0)
