"""The sufficient-statistics engine against its naive twin, the multiset enumeration.

Claim: for every registered loss, aggregation, testbed (bandit; tree with unequal lengths),
reward table (binary, three grades, generic, uniform) and K, E[loss], its gradient and the
expected clip fraction computed from the counts of each reward value (``method="sufficient"``)
equal the enumeration over every multiset of K responses to 1e-12 in float64. RED-Drop and
advantage kinds that couple groups are refused; chunked evaluation changes nothing.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from simulator.aggregation import AGGREGATIONS
from simulator.bandit import SoftmaxBandit
from simulator.exact import ExpectedLoss, LossSetup, expected_gradient, expected_hessian
from simulator.groups import accumulate
from simulator.losses import LOSSES
from simulator.policies import LogLinearPolicy, policy_behavior, random_logits
from simulator.sufficient import SufficientStats, compositions, reward_classes
from simulator.tree import TreeMDP
from theory_tests.strategies import SEEDS, examples

# a loss selecting its tokens over the group (couples_rows) is refused by the statistics engine
# (tested below); every other loss is evaluated response by response
EXACT_LOSSES = sorted(name for name, spec in LOSSES.items() if spec.advantage != "red-drop"
                      and not spec.couples_rows)
COUPLED = sorted(name for name, spec in LOSSES.items() if spec.couples_rows)
REWARDS = ("binary", "grades", "generic", "uniform")
TOL = {"rtol": 1e-12, "atol": 1e-12}


def make_rewards(kind: str, shape: tuple[int, int], g: torch.Generator) -> torch.Tensor:
    if kind == "binary":
        return torch.randint(0, 2, shape, generator=g).to(torch.float64)
    if kind == "grades":
        return torch.randint(0, 3, shape, generator=g).to(torch.float64) / 2
    if kind == "generic":
        return torch.rand(shape, generator=g, dtype=torch.float64)
    return torch.full(shape, 0.7, dtype=torch.float64)


def instance(seed: int, testbed: str, rewards: str, zero: bool):
    """(env, θ, μ): a 2-prompt bandit of 3 responses or a 2-prompt tree with EOS (vocab 2,
    depth 3: lengths 1, 2, 3, 3); μ is another softmax policy, with response 0 made
    impossible when ``zero``."""
    g = torch.Generator().manual_seed(seed)
    if testbed == "bandit":
        env = SoftmaxBandit(make_rewards(rewards, (2, 3), g))
    else:
        env = TreeMDP(make_rewards(rewards, (2, TreeMDP.count(2, 3, True)), g), 2, 3, True)
    theta = random_logits(env, g)
    mu = policy_behavior(env, theta + 0.8 * random_logits(env, g))
    if zero:
        mu[:, 0] = 0.0
        mu = mu / mu.sum(-1, keepdim=True)
    return env, theta, mu


def engine_terms(env, theta, mu, setup: LossSetup, k: int, method: str):
    """(E[loss], ∇ E[loss], E[clip fraction] [P]) of one engine."""
    expected = ExpectedLoss(env, setup, k, method)
    assert expected.method == method
    z = theta.clone().requires_grad_(True)
    value, clip = expected.terms(z, mu)
    (grad,) = torch.autograd.grad(value, z)
    return value.detach(), grad, clip


def assert_engines_agree(env, theta, mu, setup: LossSetup, k: int) -> None:
    fast = engine_terms(env, theta, mu, setup, k, "sufficient")
    slow = engine_terms(env, theta, mu, setup, k, "enumerate")
    for what, a, b in zip(("value", "gradient", "clip fraction"), fast, slow, strict=True):
        torch.testing.assert_close(a, b, **TOL, msg=f"{setup.loss} {setup.agg} K={k}: {what}")


@pytest.mark.parametrize("loss", EXACT_LOSSES)
@settings(max_examples=examples(10), deadline=None)
@given(seed=SEEDS, testbed=st.sampled_from(["bandit", "tree"]),
       rewards=st.sampled_from(REWARDS), k=st.sampled_from([1, 2, 3, 5]),
       agg=st.sampled_from(AGGREGATIONS), zero=st.booleans())
@example(seed=1, testbed="tree", rewards="binary", k=1, agg="token-mean", zero=False)
@example(seed=2, testbed="tree", rewards="uniform", k=3, agg="token-mean", zero=False)
@example(seed=3, testbed="bandit", rewards="grades", k=5, agg="seq-mean-token-mean", zero=True)
@example(seed=4, testbed="tree", rewards="grades", k=5, agg="token-mean", zero=True)
def test_sufficient_statistics_equal_the_enumeration(loss, seed, testbed, rewards, k, agg, zero):
    env, theta, mu = instance(seed, testbed, rewards, zero)
    assert_engines_agree(env, theta, mu, LossSetup(loss, agg=agg), k)


def test_every_loss_under_every_aggregation_on_a_tree_of_unequal_lengths():
    """The grid the random draws may miss: every (loss, mode) once, three grades, K = 3."""
    env, theta, mu = instance(11, "tree", "grades", zero=False)
    assert bool((env.lengths != env.lengths[0]).any())
    for loss in EXACT_LOSSES:
        for agg in AGGREGATIONS:
            assert_engines_agree(env, theta, mu, LossSetup(loss, agg=agg), 3)


def test_clipping_is_exercised_so_the_clip_fractions_compared_are_not_all_zero():
    env, theta, mu = instance(11, "tree", "grades", zero=False)
    clip = engine_terms(env, theta, mu, LossSetup("grpo"), 3, "sufficient")[2]
    assert float(clip.max()) > 0.05


@pytest.mark.parametrize("kind", ["mean-std", "loo", "logavgexp", "none", "mean"])
def test_advantage_options_go_through_the_advantage_code(kind):
    """Sample std with TRL's eps, a shift, a logavgexp temperature: the engine never
    re-implements them, so each must agree with the enumeration."""
    env, theta, mu = instance(5, "tree", "grades", zero=False)
    options = {"mean-std": {"std": "sample", "eps": 1e-4, "shift": 0.1},
               "logavgexp": {"tau": 0.5}, "loo": {"shift": -0.2}}.get(kind, {})
    assert_engines_agree(env, theta, mu, LossSetup("rec-oneside-is", advantage=kind,
                                                   advantage_kwargs=options), 4)


def test_dapo_filter_zeroes_a_table_of_uniform_groups():
    """Every group of a prompt whose rewards are all equal is dropped: E[loss·1{kept}] = 0."""
    env, theta, mu = instance(6, "tree", "uniform", zero=False)
    value, grad, clip = engine_terms(env, theta, mu, LossSetup("dapo"), 4, "sufficient")
    assert float(value) == 0.0 and not bool(grad.any()) and not bool(clip.any())
    grpo = engine_terms(env, theta, mu, LossSetup("opmd-kimi"), 4, "sufficient")
    assert bool(grpo[1].any())  # a loss without the filter still has a gradient here


def test_red_drop_is_refused_by_both_exact_engines():
    env, theta, mu = instance(0, "bandit", "binary", zero=False)
    for method in ("sufficient", "enumerate"):
        with pytest.raises(ValueError, match="red-drop"):
            expected_gradient(env, theta, mu, "red-drop", 3, method=method)


def test_an_advantage_that_couples_groups_is_refused(monkeypatch):
    """A batch statistic (std over every group at once) and an order-dependent baseline
    (the first member's reward) fail the probe; a per-group one passes."""
    import simulator.sufficient as sufficient

    env, theta, mu = instance(0, "bandit", "grades", zero=False)

    def batch_std(rewards, kind, **_):
        adv = (rewards - rewards.mean()) / rewards.std().clamp(min=1e-6)
        return adv, torch.ones_like(adv, dtype=torch.bool)

    def first_member(rewards, kind, **_):
        adv = rewards - rewards[:, :1]
        return adv, torch.ones_like(adv, dtype=torch.bool)

    for fake in (batch_std, first_member):
        monkeypatch.setattr(sufficient, "shaped_advantages", fake)
        for method in ("sufficient", "enumerate"):
            with pytest.raises(ValueError, match="couples prompts"):
                ExpectedLoss(env, LossSetup("grpo"), 2, method)(theta, mu)


def test_a_filter_that_keeps_part_of_a_group_is_refused(monkeypatch):
    import simulator.sufficient as sufficient

    env, theta, mu = instance(0, "bandit", "grades", zero=False)
    real = sufficient.shaped_advantages

    def keep_above_mean(rewards, kind, **kwargs):
        adv, _ = real(rewards, kind, **kwargs)
        return adv, rewards > rewards.mean(dim=1, keepdim=True)

    monkeypatch.setattr(sufficient, "shaped_advantages", keep_above_mean)
    with pytest.raises(ValueError, match="keeps part of a group"):
        ExpectedLoss(env, LossSetup("grpo"), 3, "sufficient")(theta, mu)


def test_law_of_the_other_members_matches_brute_force_over_ordered_tuples():
    """P(c, S) of the K − 1 others against Σ over all N^{K−1} ordered tuples of Π μ."""
    env, _theta, mu = instance(7, "tree", "grades", zero=False)
    k = 4
    stats = SufficientStats(env, LossSetup("grpo"), k)
    law = stats.rest_law(mu)  # [P, C, D]
    index = {tuple(c): i for i, c in enumerate(stats.comps.tolist())}
    brute = torch.zeros_like(law)
    v = stats.classes.values.shape[1]
    for p in range(env.num_prompts):
        for rest in itertools.product(range(env.num_responses), repeat=k - 1):
            counts = [0] * v
            for y in rest:
                counts[int(stats.classes.index[p, y])] += 1
            length = sum(int(env.lengths[y]) for y in rest) - (k - 1) * stats.lmin
            brute[p, index[tuple(counts)], length] += math.prod(float(mu[p, y]) for y in rest)
    torch.testing.assert_close(law, brute, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(law.sum((1, 2)), torch.ones(env.num_prompts, dtype=torch.float64))


def test_reward_classes_and_compositions_by_hand():
    classes = reward_classes(torch.tensor([[0.5, 0.0, 0.5, 1.0], [2.0, 2.0, 2.0, 2.0]],
                                          dtype=torch.float64))
    assert classes.index.tolist() == [[1, 0, 1, 2], [0, 0, 0, 0]]
    assert classes.values.tolist() == [[0.0, 0.5, 1.0], [2.0, 2.0, 2.0]]
    comps = compositions(3, 3)
    assert len(comps) == math.comb(5, 2) == len({tuple(c) for c in comps.tolist()})
    assert bool((comps >= 0).all()) and comps.sum(1).tolist() == [3] * len(comps)
    assert compositions(0, 4).tolist() == [[0, 0, 0, 0]]
    assert compositions(5, 1).tolist() == [[5]]


@pytest.mark.parametrize("method", ["sufficient", "enumerate"])
def test_evaluation_in_pieces_equals_one_piece(monkeypatch, method):
    """A tiny piece size forces many pieces (``groups.accumulate``): same value, clip
    fraction and gradient, also through a log-linear policy upstream of the logits."""
    import simulator.exact as exact
    import simulator.sufficient as sufficient

    env, _theta, mu = instance(8, "tree", "grades", zero=True)
    g = torch.Generator().manual_seed(0)
    policy = LogLinearPolicy.random(env, 3, g)
    w = torch.randn(3, generator=g, dtype=torch.float64)

    def run():
        expected = ExpectedLoss(env, LossSetup("grpo"), 3, method)
        leaf = w.clone().requires_grad_(True)
        value, clip = expected.terms(policy.logits(leaf), mu)
        return value.detach(), torch.autograd.grad(value, leaf)[0], clip

    whole = run()
    monkeypatch.setattr(sufficient, "CHUNK_ELEMENTS", 7)
    monkeypatch.setattr(exact, "CHUNK_ELEMENTS", 7)
    pieces = run()
    for a, b in zip(whole, pieces, strict=True):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("method", ["sufficient", "enumerate"])
def test_a_function_of_the_expectation_in_pieces_follows_the_chain_rule(monkeypatch, method):
    """Mutant accumulate-ignores-upstream-gradient. ``accumulate`` is a differentiable scalar,
    so a function of it back-propagates by the chain rule: ∇_θ h(E(θ)) = h′(E)·∇E(θ) with
    h(E) = 3E + E², h′(E) = 3 + 2E. E and ∇E come from one piece (an ordinary autograd graph,
    no ``accumulate``); h(E) is differentiated through many pieces. h′(E) ≠ 1 and ∇E ≠ 0
    here, so a backward that ignores its upstream gradient (treats it as 1) is caught."""
    import simulator.exact as exact
    import simulator.sufficient as sufficient

    env, theta, mu = instance(8, "tree", "grades", zero=True)
    calls = []

    def spy(logits, pieces, *, single):
        calls.append(single)
        return accumulate(logits, pieces, single=single)

    def value_and_gradient(h):
        z = theta.clone().requires_grad_(True)
        value = ExpectedLoss(env, LossSetup("grpo"), 3, method)(z, mu)
        return value.detach(), torch.autograd.grad(h(value), z)[0]

    value, grad = value_and_gradient(lambda e: e)
    assert calls in ([], [True])  # one piece: no ``_Accumulated`` in the graph
    monkeypatch.setattr(sufficient, "CHUNK_ELEMENTS", 7)
    monkeypatch.setattr(exact, "CHUNK_ELEMENTS", 7)
    monkeypatch.setattr(sufficient, "accumulate", spy)
    monkeypatch.setattr(exact, "accumulate", spy)
    pieced, scaled = value_and_gradient(lambda e: 3 * e + e**2)
    assert calls[-1] is False  # many pieces
    torch.testing.assert_close(pieced, value, **TOL)
    torch.testing.assert_close(scaled, (3 + 2 * value) * grad, **TOL)
    assert abs(float(3 + 2 * value) - 1) > 0.1 and float(grad.abs().max()) > 1e-3


def test_hessian_through_the_sufficient_engine_equals_the_enumeration():
    env, theta, mu = instance(9, "bandit", "binary", zero=False)
    fast = expected_hessian(env, theta, mu, "grpo", 3, method="sufficient")
    slow = expected_hessian(env, theta, mu, "grpo", 3, method="enumerate")
    torch.testing.assert_close(fast, slow, **TOL)


def test_auto_picks_the_closed_form_then_the_cheaper_engine():
    g = torch.Generator().manual_seed(0)
    binary = SoftmaxBandit(make_rewards("binary", (1, 64), g))
    generic_tree = TreeMDP.random(1, 3, 2, True, g)
    assert ExpectedLoss(binary, LossSetup("reinforce"), 8).method == "closed-form"
    assert ExpectedLoss(binary, LossSetup("grpo"), 8).method == "sufficient"
    assert ExpectedLoss(generic_tree, LossSetup("grpo"), 3).method == "enumerate"


def test_large_binary_problem_is_exact_where_enumeration_is_impossible():
    """N = 64, K = 16 (C(79, 16) ≈ 10^16 groups): the clip-free on-policy identity
    E[∇ REC-OneSide-NoIS] = E[∇ REINFORCE] (ρ = 1, nothing clipped) and the closed form."""
    g = torch.Generator().manual_seed(1)
    env = SoftmaxBandit(make_rewards("binary", (1, 64), g))
    theta = random_logits(env, g)
    rec = expected_gradient(env, theta, "on-policy", "rec-oneside-nois", 16, method="sufficient")
    closed = expected_gradient(env, theta, "on-policy", "reinforce", 16, method="closed-form")
    torch.testing.assert_close(rec, closed, rtol=1e-10, atol=1e-13)


def test_groups_so_large_that_the_multinomial_coefficient_overflows_stay_finite_and_exact():
    """K = 1,200: (K − 1)!/(c!(K−1−c)!) reaches 10^359 > float64's max, and p^c underflows;
    the engine never forms either alone. Same identity as above."""
    g = torch.Generator().manual_seed(2)
    env = SoftmaxBandit(make_rewards("binary", (1, 8), g))
    theta = random_logits(env, g)
    rec = expected_gradient(env, theta, "on-policy", "rec-oneside-nois", 1200,
                            method="sufficient")
    closed = expected_gradient(env, theta, "on-policy", "reinforce", 1200, method="closed-form")
    torch.testing.assert_close(rec, closed, rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("name", COUPLED)
def test_a_loss_selecting_tokens_over_the_group_is_refused_and_auto_takes_ordered_tuples(name):
    """M2PO, Clip-Cov and KL-Cov pick tokens by a statistic of the whole batch (here: the
    group): no function of one response, so the statistics engine refuses them by name, and
    ``auto`` takes the ordered tuples (ties go by row order: tests/test_exact.py)."""
    env, theta, mu = instance(3, "bandit", "generic", False)
    with pytest.raises(ValueError, match=f"loss '{name}' selects its tokens over the whole"):
        SufficientStats(env, LossSetup(name), 3)
    auto = expected_gradient(env, theta, mu, name, 3)
    ordered = expected_gradient(env, theta, mu, name, 3, method="ordered")
    torch.testing.assert_close(auto, ordered, **TOL)
