"""The covariance of one group's gradient by sufficient statistics against the enumeration.

Claim: for every loss the statistics engine accepts, every aggregation, testbed (bandit; tree
with unequal lengths), reward table (binary, three grades, generic, uniform), K (1 to 5) and a
behaviour with or without impossible responses, ``gradient_covariance(method="sufficient")``
— E[g gᵀ] − E[g]E[g]ᵀ summed over (own response, the other members' reward counts) and
(pair of members, the other K − 2's counts) classes — equals the sum over every multiset of
K responses (``method="enumerate"``) to 1e-10 relative, and its mean is the expected gradient.
What the engine cannot do exactly is refused with a ValueError naming the reason, and
``method="auto"`` then enumerates (or takes ordered tuples for a loss coupling its rows).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from simulator.aggregation import AGGREGATIONS
from simulator.bandit import SoftmaxBandit
from simulator.exact import (
    LossSetup,
    _covariance_method,
    expected_gradient,
    gradient_covariance,
)
from simulator.groups import old_table, resolve_behavior, rollout_table
from simulator.losses import LOSSES
from simulator.policies import policy_behavior, random_logits
from simulator.sufficient import SufficientStats
from simulator.tree import TreeMDP
from tests.test_sufficient import COUPLED, EXACT_LOSSES, REWARDS, instance, make_rewards
from theory_tests.strategies import SEEDS, examples


def assert_covariances_agree(env, theta, mu, setup: LossSetup, k: int) -> None:
    fast = gradient_covariance(env, theta, mu, setup, k, method="sufficient")
    slow = gradient_covariance(env, theta, mu, setup, k, method="enumerate")
    scale = float(slow.abs().max())
    torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-10 * scale + 1e-15,
                               msg=f"{setup.loss} {setup.agg} K={k}")


@pytest.mark.parametrize("loss", EXACT_LOSSES)
@settings(max_examples=examples(10), deadline=None)
@given(seed=SEEDS, testbed=st.sampled_from(["bandit", "tree"]),
       rewards=st.sampled_from(REWARDS), k=st.sampled_from([1, 2, 3, 5]),
       agg=st.sampled_from(AGGREGATIONS), zero=st.booleans())
@example(seed=1, testbed="tree", rewards="binary", k=2, agg="token-mean", zero=False)
@example(seed=2, testbed="tree", rewards="grades", k=5, agg="token-mean", zero=True)
@example(seed=3, testbed="bandit", rewards="grades", k=5, agg="seq-mean-token-mean", zero=True)
@example(seed=4, testbed="bandit", rewards="binary", k=3, agg="token-sum", zero=False)
def test_sufficient_covariance_equals_the_enumeration(loss, seed, testbed, rewards, k, agg,
                                                      zero):
    env, theta, mu = instance(seed, testbed, rewards, zero)
    assert_covariances_agree(env, theta, mu, LossSetup(loss, agg=agg), k)


@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("rewards", ["binary", "grades"])
def test_every_loss_and_aggregation_on_a_tree_of_unequal_lengths(rewards, k):
    """The grid the random draws may miss: every (loss, mode), K = 2 (no other members
    besides the pair), 3 and 4, on the tree with EOS (lengths 1, 2, 3, 3: N varies)."""
    env, theta, mu = instance(11, "tree", rewards, zero=False)
    assert bool((env.lengths != env.lengths[0]).any())
    for loss in EXACT_LOSSES:
        for agg in AGGREGATIONS:
            assert_covariances_agree(env, theta, mu, LossSetup(loss, agg=agg), k)


@pytest.mark.parametrize("kind", ["mean-std", "loo", "logavgexp", "none", "mean"])
def test_advantage_options_go_through_the_advantage_code(kind):
    env, theta, mu = instance(5, "tree", "grades", zero=False)
    options = {"mean-std": {"std": "sample", "eps": 1e-4, "shift": 0.1},
               "logavgexp": {"tau": 0.5}, "loo": {"shift": -0.2}}.get(kind, {})
    assert_covariances_agree(env, theta, mu, LossSetup("rec-oneside-is", advantage=kind,
                                                       advantage_kwargs=options), 4)


@pytest.mark.parametrize("correction", ["tis-token", "icepop", "opsm:delta=0.05"])
def test_three_policies_with_a_per_response_correction(correction):
    """μ samples, the ratio is against an anchor π_old, a per-response correction: the
    statistics engine's rows get both tables, as the enumeration's groups do."""
    g = torch.Generator().manual_seed(7)
    env = TreeMDP(make_rewards("grades", (2, TreeMDP.count(2, 3, True)), g), 2, 3, True)
    theta = random_logits(env, g)
    mu, old = (policy_behavior(env, theta + 0.7 * random_logits(env, g)) for _ in range(2))
    for loss in ("grpo", "gspo", "dr-grpo"):
        assert_covariances_agree(env, theta, mu, LossSetup(loss, corrections=(correction,),
                                                           anchor=old), 3)


def test_the_mean_is_the_expected_gradient_and_the_moments_are_consistent():
    """E[g] of the moments is P·∇E[loss] row by row (the expected loss averages prompts);
    the covariance is symmetric PSD and the softmax's all-ones direction has no variance."""
    env, theta, mu = instance(8, "tree", "grades", zero=False)
    setup = LossSetup("grpo")
    stats = SufficientStats(env, setup, 4)
    mu = resolve_behavior(env, mu, theta)
    mean, second = stats.gradient_moments(theta, mu, old_table(env, mu, setup),
                                          rollout_table(env, mu, setup))
    grad = expected_gradient(env, theta, mu, setup, 4, method="enumerate")
    torch.testing.assert_close(mean, env.num_prompts * grad.reshape(mean.shape), rtol=1e-10,
                               atol=1e-14)
    cov = second - mean.unsqueeze(-1) * mean.unsqueeze(-2)
    torch.testing.assert_close(cov, cov.transpose(1, 2), rtol=0, atol=1e-14)
    assert float(torch.linalg.eigvalsh(cov).min()) > -1e-12


def test_a_problem_enumeration_cannot_reach_is_psd_and_matches_its_mean():
    """Binary rewards, N = 64 responses, K = 16: C(79, 16) ≈ 10^16 multisets, 64·16 rows for
    the statistics. Exact mean against the statistics engine's expected gradient; PSD; the
    all-ones direction null (a softmax's gradient sums to 0)."""
    g = torch.Generator().manual_seed(12)
    env = SoftmaxBandit(make_rewards("binary", (1, 64), g))
    theta = random_logits(env, g)
    assert _covariance_method(env, LossSetup("grpo"), 16, "auto") == "sufficient"
    cov = gradient_covariance(env, theta, "on-policy", "grpo", 16)
    assert cov.shape == (64, 64)
    eig = torch.linalg.eigvalsh(cov)
    assert float(eig.min()) > -1e-12 * float(eig.max()) and float(eig.max()) > 0
    ones = torch.ones(64, dtype=torch.float64)
    assert abs(float(ones @ cov @ ones)) < 1e-12 * float(eig.max())


def test_the_covariance_of_k_groups_scales_like_the_sample_covariance():
    """20,000 sampled groups of 8 from 16 responses (binary): each entry of the sample
    covariance within 5 standard errors of the statistics engine's."""
    from simulator.exact import group_gradients, sample_groups

    g = torch.Generator().manual_seed(1)
    env = SoftmaxBandit(make_rewards("grades", (1, 16), g))
    theta = random_logits(env, g)
    mu = policy_behavior(env, theta + 0.5 * random_logits(env, g))
    exact = gradient_covariance(env, theta, mu, "grpo", 8, method="sufficient")
    batch = sample_groups(mu, 8, 20_000, torch.Generator().manual_seed(2))
    grads = group_gradients(env, theta, batch, mu, "grpo").reshape(-1, 16)
    centred = grads - grads.mean(0)
    products = centred.unsqueeze(2) * centred.unsqueeze(1)
    stderr = products.std(0) / len(grads) ** 0.5
    assert ((products.mean(0) - exact).abs() <= 5 * stderr + 1e-12).all()


# --------------------------------------------------------------------------------------------
# method="auto" and the refusals
# --------------------------------------------------------------------------------------------


def test_auto_takes_the_statistics_where_they_are_cheaper_and_enumerates_otherwise():
    g = torch.Generator().manual_seed(0)
    big = SoftmaxBandit(make_rewards("binary", (1, 16), g))
    assert _covariance_method(big, LossSetup("grpo"), 8, "auto") == "sufficient"
    tiny = SoftmaxBandit(make_rewards("generic", (1, 3), g))
    assert _covariance_method(tiny, LossSetup("grpo"), 2, "auto") == "enumerate"
    theta = random_logits(big, g)
    torch.testing.assert_close(gradient_covariance(big, theta, "on-policy", "grpo", 8),
                               gradient_covariance(big, theta, "on-policy", "grpo", 8,
                                                   method="sufficient"), rtol=0, atol=0)


def test_red_drop_is_refused_by_every_method():
    env, theta, mu = instance(0, "bandit", "binary", zero=False)
    for method in ("auto", "sufficient", "enumerate"):
        with pytest.raises(ValueError, match="red-drop"):
            gradient_covariance(env, theta, mu, "red-drop", 3, method=method)


@pytest.mark.parametrize("name", COUPLED)
def test_a_loss_coupling_its_rows_is_refused_and_auto_takes_ordered_tuples(name):
    env, theta, mu = instance(3, "bandit", "generic", False)
    with pytest.raises(ValueError, match="selects its tokens over the whole group"):
        gradient_covariance(env, theta, mu, name, 3, method="sufficient")
    with pytest.raises(ValueError, match="method='ordered'"):
        gradient_covariance(env, theta, mu, name, 3, method="enumerate")
    torch.testing.assert_close(gradient_covariance(env, theta, mu, name, 3),
                               gradient_covariance(env, theta, mu, name, 3, method="ordered"),
                               rtol=0, atol=0)


@pytest.mark.parametrize("correction, reason", [
    ("tis-token:normalize=true", "normalize"),
    ("mis-seq:denominator=drop", "drop"),
])
def test_corrections_of_the_whole_group_are_refused_and_auto_enumerates(correction, reason):
    g = torch.Generator().manual_seed(11)
    env = SoftmaxBandit(torch.randint(0, 2, (2, 6), generator=g).to(torch.float64))
    theta = random_logits(env, g)
    mu, old = (policy_behavior(env, theta + random_logits(env, g)) for _ in range(2))
    setup = LossSetup("grpo", corrections=(correction,), anchor=old)
    assert _covariance_method(env, LossSetup("grpo", anchor=old), 4, "auto") == "sufficient"
    with pytest.raises(ValueError, match=reason):
        gradient_covariance(env, theta, mu, setup, 4, method="sufficient")
    assert _covariance_method(env, setup, 4, "auto") == "enumerate"
    torch.testing.assert_close(gradient_covariance(env, theta, mu, setup, 4),
                               gradient_covariance(env, theta, mu, setup, 4,
                                                   method="enumerate"), rtol=0, atol=0)


def test_an_advantage_that_couples_groups_is_refused(monkeypatch):
    import simulator.sufficient as sufficient

    env, theta, mu = instance(0, "bandit", "grades", zero=False)

    def batch_std(rewards, kind, **_):
        adv = (rewards - rewards.mean()) / rewards.std().clamp(min=1e-6)
        return adv, torch.ones_like(adv, dtype=torch.bool)

    monkeypatch.setattr(sufficient, "shaped_advantages", batch_std)
    with pytest.raises(ValueError, match="couples prompts"):
        gradient_covariance(env, theta, mu, "grpo", 2, method="sufficient")


@pytest.mark.parametrize("method, match", [("closed-form", "no closed form"),
                                           ("bogus", "method")])
def test_no_closed_form_and_unknown_methods_are_clear_errors(method, match):
    env, theta, mu = instance(0, "bandit", "binary", zero=False)
    with pytest.raises(ValueError, match=match):
        gradient_covariance(env, theta, mu, "grpo", 3, method=method)


def test_every_registered_loss_is_covered():
    assert set(EXACT_LOSSES) | set(COUPLED) | {"red-drop"} == set(LOSSES)


def test_an_environment_with_its_own_token_logprobs_goes_through_autograd():
    """The tabular softmax's Jacobian is applied in closed form; a subclass that overrides
    ``token_logprobs`` takes ``torch.func.jacrev`` of it instead — same covariance."""

    class Own(TreeMDP):
        def token_logprobs(self, logits):
            return super().token_logprobs(logits)

    g = torch.Generator().manual_seed(4)
    rewards = make_rewards("grades", (2, TreeMDP.count(2, 3, True)), g)
    plain, own = TreeMDP(rewards, 2, 3, True), Own(rewards, 2, 3, True)
    theta = random_logits(plain, g)
    mu = policy_behavior(plain, theta + 0.5 * random_logits(plain, g))
    fast = gradient_covariance(plain, theta, mu, "grpo", 3, method="sufficient")
    torch.testing.assert_close(gradient_covariance(own, theta, mu, "grpo", 3,
                                                   method="sufficient"), fast,
                               rtol=1e-12, atol=1e-15)
    assert_covariances_agree(own, theta, mu, LossSetup("grpo"), 3)


def test_too_many_row_gradients_is_a_clear_error(monkeypatch):
    import simulator.sufficient as sufficient

    env, theta, mu = instance(0, "bandit", "binary", zero=False)
    monkeypatch.setattr(sufficient, "MAX_GRADIENT_ELEMENTS", 10)
    with pytest.raises(ValueError, match="row-gradient entries"):
        gradient_covariance(env, theta, mu, "grpo", 3, method="sufficient")
