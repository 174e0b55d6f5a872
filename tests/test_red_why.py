"""E5-why: the exact expected update of RED-Drop (simulator/red_why.py), checked by hand, by
its naive twin and by Monte Carlo through the lab's own ``advantages.red_drop``."""

from __future__ import annotations

import math

import pytest
import torch

from simulator.advantages import red_drop
from simulator.groups import sample_groups
from simulator.red_why import (
    _drop_advantages_by_subsets,
    expected_drop_advantages,
    expected_response_weights,
    update_direction,
)

F64 = torch.float64


@pytest.mark.parametrize(("rewards", "expected"), [
    # one positive, two negatives: one negative is kept (prob 1/2), kept pair re-centred at 1/2
    ((1.0, 0.0, 0.0), (0.5, -0.25, -0.25)),
    # two and two: nothing dropped, A = r − r̄
    ((1.0, 0.5, 0.0, 0.0), (0.625, 0.125, -0.375, -0.375)),
    # one positive, three negatives (0, 0, 0.2): the kept mean is 0.5, 0.5 or 0.6
    ((1.0, 0.0, 0.0, 0.2), (1 - 1.6 / 3, -1 / 6, -1 / 6, (0.2 - 0.6) / 3)),
    # a uniform group has no signal
    ((0.3, 0.3, 0.3), (0.0, 0.0, 0.0)),
])
def test_expected_drop_advantages_by_hand(rewards, expected):
    got = expected_drop_advantages(torch.tensor(rewards, dtype=F64))
    torch.testing.assert_close(got, torch.tensor(expected, dtype=F64), rtol=0, atol=1e-12)


def test_closed_form_drop_agrees_with_enumerating_every_kept_subset():
    g = torch.Generator().manual_seed(3)
    for trial in range(300):
        k = int(torch.randint(2, 9, (1,), generator=g))
        rewards = (torch.randint(0, 3, (k,), generator=g).to(F64) / 2 if trial % 2
                   else torch.rand(k, generator=g, dtype=F64))
        torch.testing.assert_close(expected_drop_advantages(rewards),
                                   _drop_advantages_by_subsets(rewards), rtol=0, atol=1e-12)


def test_red_drop_weights_by_hand_k3_two_answers():
    """r = (1, 0), μ = (p, q), K = 3: one correct in the group (prob 3pq²) keeps one wrong,
    A = ±1/2; two correct (3p²q) drop nothing, A = 1/3, 1/3, −2/3. So
    w(correct) = (1/3)·[3pq²·½ + 3p²q·⅔] = pq²/2 + 2p²q/3 = −w(wrong)."""
    p, q = 0.3, 0.7
    w = expected_response_weights(torch.tensor([[p, q]], dtype=F64),
                                  torch.tensor([[1.0, 0.0]], dtype=F64), 3)
    value = p * q * q / 2 + 2 * p * p * q / 3
    torch.testing.assert_close(w, torch.tensor([[value, -value]], dtype=F64), rtol=0,
                               atol=1e-15)


def test_mean_baseline_weights_are_reinforces_closed_form():
    """E[(1/K)·Σ_i (r_i − r̄)·1{y_i = y}] = (1 − 1/K)·μ(y)·(r(y) − E_μ r) (our notes §3)."""
    g = torch.Generator().manual_seed(1)
    mu = torch.softmax(torch.randn(3, 5, generator=g, dtype=F64), -1)
    rewards = torch.rand(3, 5, generator=g, dtype=F64)
    for k in (2, 4, 6):
        closed = (1 - 1 / k) * mu * (rewards - (mu * rewards).sum(-1, keepdim=True))
        torch.testing.assert_close(expected_response_weights(mu, rewards, k, "mean"), closed,
                                   rtol=0, atol=1e-14)


@pytest.mark.parametrize("reward", ["binary", "graded"])
def test_exact_red_drop_weights_match_monte_carlo_of_the_labs_red_drop(reward):
    """Monte Carlo through ``advantages.red_drop`` (the code E5 trains with): n groups from μ,
    each contributing (1/K)·Σ_i A_i·1{y_i = y}. Each coordinate's mean is within z = 5
    standard errors of the exact value; with 2·6 coordinates a false failure has probability
    below 12·5.7e-7 ≈ 7e-6 (two-sided normal tail, Bonferroni; n = 200,000 makes the CLT
    accurate for these bounded summands)."""
    g = torch.Generator().manual_seed(7)
    mu = torch.softmax(torch.randn(2, 6, generator=g, dtype=F64), -1)
    rewards = (torch.rand(2, 6, generator=g, dtype=F64) if reward == "graded"
               else (torch.rand(2, 6, generator=g) < 0.4).to(F64))
    rewards[:, 0] = 1.0  # a positive in every prompt
    k, n = 4, 200_000
    batch = sample_groups(mu, k, n, g)
    r = rewards[batch.prompt.unsqueeze(-1), batch.responses]
    adv, _ = red_drop(r, g)
    contrib = torch.zeros(r.shape[0], 6, dtype=F64).scatter_add_(1, batch.responses, adv / k)
    contrib = contrib.reshape(2, n, 6)
    mean, se = contrib.mean(1), contrib.std(1) / math.sqrt(n)
    exact = expected_response_weights(mu, rewards, k)
    z = ((mean - exact).abs() / se.clamp(min=1e-12))
    assert float(z.max()) < 5.0, z


def test_binary_rewards_red_drop_is_a_positive_multiple_of_reinforce_per_prompt():
    """With two reward values, w(y) = μ(y)·h(r(y)) (exchangeability) and Σ_y w(y) = 0 (kept
    advantages sum to 0), so the drop only rescales each prompt's REINFORCE weights."""
    g = torch.Generator().manual_seed(5)
    mu = torch.softmax(torch.randn(4, 6, generator=g, dtype=F64), -1)
    rewards = torch.zeros(4, 6, dtype=F64)
    rewards[:, :2] = 1.0
    for k in (3, 4, 8):
        red = expected_response_weights(mu, rewards, k)
        rf = expected_response_weights(mu, rewards, k, "mean")
        scale = red[:, :1] / rf[:, :1]
        assert bool((scale > 0).all())
        torch.testing.assert_close(red, scale * rf, rtol=1e-10, atol=1e-15)
        # ... and the scale differs across prompts once K > 2 (it depends on μ(correct))
        assert float(scale.max() - scale.min()) > 1e-3


def test_graded_rewards_red_drop_turns_the_direction_within_a_prompt():
    """The rescaling above needs two reward values: with graded rewards it fails."""
    g = torch.Generator().manual_seed(5)
    mu = torch.softmax(torch.randn(1, 6, generator=g, dtype=F64), -1)
    rewards = torch.rand(1, 6, generator=g, dtype=F64)
    red = expected_response_weights(mu, rewards, 4)
    rf = expected_response_weights(mu, rewards, 4, "mean")
    cos = float((red @ rf.T) / (red.norm() * rf.norm()))
    assert cos < 1 - 1e-6


def test_update_direction_of_reinforce_weights_is_grad_j_on_policy():
    """At μ = π_θ (tabular), Σ_y w(y)∇log π(y) with REINFORCE's weights is (1 − 1/K)·∇J."""
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 5, generator=g, dtype=F64)
    rewards = torch.rand(3, 5, generator=g, dtype=F64)
    pi = torch.softmax(logits, -1)

    def log_probs(theta):
        return torch.log_softmax(theta, -1)

    rf = update_direction(log_probs, logits, expected_response_weights(pi, rewards, 4, "mean"))
    grad_j = update_direction(log_probs, logits, pi * rewards)
    torch.testing.assert_close(rf, 0.75 * grad_j, rtol=1e-10, atol=1e-14)


def test_expected_response_weights_rejects_bad_input():
    mu = torch.full((1, 3), 1 / 3, dtype=F64)
    with pytest.raises(ValueError, match="advantage"):
        expected_response_weights(mu, mu, 4, "std")
    with pytest.raises(ValueError, match="k"):
        expected_response_weights(mu, mu, 1)
    with pytest.raises(ValueError, match="mu and rewards"):
        expected_response_weights(mu, mu[0], 4)


def test_mechanism_rows_run_on_a_small_family_and_compare_like_with_like():
    """A smoke test with teeth: on a tabular bandit with binary rewards and one correct answer
    per prompt, RED-Drop's expected update is a positive multiple of REINFORCE's per prompt,
    so it raises J wherever REINFORCE does, and every cosine is finite."""
    from simulator.dynamics import BanditProblem
    from simulator.red_why import mechanism_rows

    tiny = BanditProblem(prompts=1, responses=3, reward="binary", correct=1, policy="tabular")
    rows = mechanism_rows(tiny, 3, seeds=2, steps=40)
    assert all(math.isfinite(v) for v in rows.values())
    assert rows["cos_red_rf_min"] > 1 - 1e-9  # one prompt: the same direction exactly
    assert rows["red_up"] == rows["rf_up"]


def test_mechanism_rows_on_a_tree_follow_the_binary_reward_theorem():
    """On token sequences the expected weights are still per response: with binary rewards
    and one prompt RED-Drop's expected update is a positive multiple of REINFORCE's (token-sum
    form), exactly as on a bandit."""
    from simulator.dynamics import TreeProblem
    from simulator.red_why import mechanism_rows

    tree = TreeProblem(prompts=1, vocab=2, depth=2, eos=True, reward="binary", correct=1,
                       policy="tabular")
    rows = mechanism_rows(tree, 3, seeds=2, steps=40)
    assert all(math.isfinite(v) for v in rows.values())
    assert rows["cos_red_rf_min"] > 1 - 1e-9
    assert rows["red_up"] == rows["rf_up"]
