"""simulator.exact.gradient_covariance: the exact covariance of one group's gradient, against a
brute-force loop over ordered groups (autograd on log_softmax written out, no enumeration code),
prompt by prompt when there are several, and against the sample covariance of sampled groups."""

from __future__ import annotations

import itertools

import pytest
import torch

from simulator.bandit import SoftmaxBandit
from simulator.exact import expected_gradient, gradient_covariance, group_gradients, sample_groups
from simulator.losses import LOSSES, policy_loss
from simulator.policies import random_logits
from simulator.tree import TreeMDP


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
