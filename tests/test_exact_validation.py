"""Bad input on every public path of ``simulator.exact`` (closed form included) is a clear
error naming the public argument, and three guards of the closed form each have a test that a
mutant removing them fails: unequal lengths under token-mean, the advantage shift, and the
sample-variance convention (ddof 1) of the sampled gradient's standard error."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import pytest
import torch

from simulator.bandit import SoftmaxBandit
from simulator.exact import (
    ExpectedLoss,
    LossSetup,
    batch_loss,
    enumerate_groups,
    expected_gradient,
    expected_hessian,
    expected_loss,
    expected_pairwise_surrogate,
    group_gradients,
    iterate_expected_update,
    multiset_chunks,
    multisets,
    ordered_tuples,
    sample_groups,
    sampled_gradient,
)
from simulator.policies import policy_behavior, random_logits
from simulator.tree import TreeMDP

TOL = {"rtol": 1e-12, "atol": 1e-12}


@dataclasses.dataclass
class Case:
    env: SoftmaxBandit
    logits: object
    behavior: object
    K: object


def case() -> Case:
    g = torch.Generator().manual_seed(0)
    env = SoftmaxBandit(torch.randint(0, 2, (2, 3), generator=g).to(torch.float64))
    theta = random_logits(env, g)
    return Case(env, theta, policy_behavior(env, theta + random_logits(env, g)), 2)


def _batch(c: Case):
    return enumerate_groups(policy_behavior(c.env, case().logits), 2)


# every public path that takes logits / a behaviour / K, with a loss it routes to the engine
PATHS: dict[str, Callable[[Case], object]] = {
    "closed form": lambda c: expected_gradient(c.env, c.logits, c.behavior, "reinforce", c.K,
                                               method="closed-form"),
    "auto": lambda c: expected_gradient(c.env, c.logits, c.behavior, "rloo", c.K),
    "sufficient": lambda c: expected_gradient(c.env, c.logits, c.behavior, "grpo", c.K,
                                              method="sufficient"),
    "enumerate": lambda c: expected_gradient(c.env, c.logits, c.behavior, "grpo", c.K,
                                             method="enumerate"),
    "ordered": lambda c: expected_gradient(c.env, c.logits, c.behavior, "grpo", c.K,
                                           method="ordered"),
    "expected_loss": lambda c: expected_loss(c.env, c.logits, c.behavior, "grpo", c.K),
    "ExpectedLoss": lambda c: ExpectedLoss(c.env, LossSetup("dapo"), c.K)(c.logits,
                                                                          c.behavior),
    "expected_hessian": lambda c: expected_hessian(c.env, c.logits, c.behavior, "reinforce",
                                                   c.K),
    "sampled_gradient": lambda c: sampled_gradient(c.env, c.logits, c.behavior, "grpo", c.K, 3,
                                                   torch.Generator().manual_seed(0)),
    "iterate_expected_update": lambda c: iterate_expected_update(
        c.env, c.logits, c.behavior, "asymre", c.K, lr=0.1, steps=1),
    "expected_pairwise_surrogate": lambda c: expected_pairwise_surrogate(
        c.env, c.logits, case().logits, c.behavior, c.K, 0.5),
}
NO_K_PATHS: dict[str, Callable[[Case], object]] = {
    "batch_loss": lambda c: batch_loss(c.env, c.logits, _batch(c), c.behavior, LossSetup("grpo")),
    "group_gradients": lambda c: group_gradients(c.env, c.logits, _batch(c), c.behavior, "grpo"),
}


@pytest.mark.parametrize("path", sorted(PATHS))
def test_every_path_runs_on_good_input(path):
    assert PATHS[path](case()) is not None


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize(("bad", "error", "message"), [
    (0, ValueError, "K must be >= 1"), (-1, ValueError, "K must be >= 1"),
    (2.5, TypeError, "K must be an int"), (True, TypeError, "K must be an int"),
    ("2", TypeError, "K must be an int"),
])
def test_a_bad_group_size_is_refused_on_every_path(path, bad, error, message):
    """K = −1 or 2.5 used to return a wrong closed-form gradient, K = 0 a ZeroDivisionError."""
    with pytest.raises(error, match=message):
        PATHS[path](dataclasses.replace(case(), K=bad))


@pytest.mark.parametrize("path", sorted(PATHS | NO_K_PATHS))
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_logits_are_refused_on_every_path(path, value):
    c = case()
    c.logits = c.logits.clone()
    c.logits[1, 2] = value
    with pytest.raises(ValueError, match="logits contains 1 NaN or infinite"):
        (PATHS | NO_K_PATHS)[path](c)


@pytest.mark.parametrize("path", sorted(PATHS | NO_K_PATHS))
def test_a_float32_behaviour_is_refused_naming_behavior(path):
    """It used to fail inside the loss with 'dtypes must match, got logp ... logp_old'."""
    c = case()
    table = c.behavior.float()
    for behavior in (table, lambda z: table):
        with pytest.raises(TypeError, match="behavior must be a float64 table"):
            (PATHS | NO_K_PATHS)[path](dataclasses.replace(c, behavior=behavior))


def test_a_float32_table_is_refused_by_the_group_builders():
    c = case()
    with pytest.raises(TypeError, match="behavior must be a float64 table"):
        enumerate_groups(c.behavior.float(), 2)
    with pytest.raises(TypeError, match="behavior must be a float64 table"):
        sample_groups(c.behavior.float(), 2, 3, torch.Generator())


def test_float32_logits_are_computed_in_float64():
    c = case()
    low = expected_gradient(c.env, c.logits.float(), c.behavior, "grpo", 2)
    assert low.dtype == torch.float64
    torch.testing.assert_close(low, expected_gradient(c.env, c.logits.float().double(),
                                                      c.behavior, "grpo", 2), **TOL)


def test_the_anchor_is_checked_under_its_own_name():
    c = case()
    for method in ("sufficient", "enumerate"):
        with pytest.raises(TypeError, match="anchor must be a float64 table"):
            expected_gradient(c.env, c.logits, c.behavior, "grpo", 2, method=method,
                              anchor=c.behavior.float())
        with pytest.raises(ValueError, match="anchor must have shape"):
            expected_gradient(c.env, c.logits, c.behavior, "grpo", 2, method=method,
                              anchor=c.behavior[:1])
        zero = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]], dtype=torch.float64)
        with pytest.raises(ValueError, match="logp_old = −inf"):
            expected_gradient(c.env, c.logits, c.behavior, "grpo", 2, method=method,
                              anchor=zero)


def test_bool_sizes_are_refused_even_after_the_int_was_cached():
    """lru_cache keys compare True == 1: the check must run before the cache is consulted."""
    multisets(3, 1)
    multisets(1, 2)
    with pytest.raises(TypeError, match="K must be an int"):
        multisets(3, True)
    with pytest.raises(TypeError, match="n must be an int"):
        multisets(True, 2)
    with pytest.raises(TypeError, match="K must be an int"):
        ordered_tuples(3, True)
    with pytest.raises(TypeError, match="K must be an int"):
        multiset_chunks(3, True, 4)  # eager: not at the first next()
    with pytest.raises(ValueError, match="size must be >= 1"):
        multiset_chunks(3, 2, 0)


def test_other_arguments_are_named_in_their_errors():
    c = case()
    with pytest.raises(ValueError, match="method must be one of"):
        expected_gradient(c.env, c.logits, c.behavior, "grpo", 2, method="fast")
    with pytest.raises(KeyError, match="unknown loss 'grpoo'"):
        expected_gradient(c.env, c.logits, c.behavior, "grpoo", 2)
    with pytest.raises(ValueError, match="advantage must be one of"):
        expected_gradient(c.env, c.logits, c.behavior, "grpo", 2, advantage="meen")
    with pytest.raises(ValueError, match="agg must be one of"):
        expected_gradient(c.env, c.logits, c.behavior, "grpo", 2, agg="token")
    with pytest.raises(ValueError, match="num_groups must be >= 1"):
        sampled_gradient(c.env, c.logits, c.behavior, "grpo", 2, 0, torch.Generator())
    with pytest.raises(TypeError, match="batch must be a GroupBatch"):
        batch_loss(c.env, c.logits, (1, 2), c.behavior, LossSetup("grpo"))
    with pytest.raises(ValueError, match="steps must be >= 0"):
        iterate_expected_update(c.env, c.logits, c.behavior, "grpo", 2, lr=0.1, steps=-1)
    with pytest.raises(TypeError, match="lr must be a number"):
        iterate_expected_update(c.env, c.logits, c.behavior, "grpo", 2, lr="0.1", steps=1)
    with pytest.raises(ValueError, match="anchor_logits must have shape"):
        expected_pairwise_surrogate(c.env, c.logits, c.logits[:1], c.behavior, 2, 0.5)
    with pytest.raises(ValueError, match="tau must be > 0"):
        expected_pairwise_surrogate(c.env, c.logits, c.logits, c.behavior, 2, 0.0)
    with pytest.raises(ValueError, match="MAX_GROUPS"):
        multisets(200, 6)
    with pytest.raises(ValueError, match="MAX_MATERIALISED"):
        ordered_tuples(20, 6)


def test_enumeration_beyond_max_groups_is_refused_with_a_clear_message():
    g = torch.Generator().manual_seed(0)
    env = SoftmaxBandit(torch.rand(1, 200, generator=g, dtype=torch.float64))
    theta = random_logits(env, g)
    with pytest.raises(ValueError, match="exceed MAX_GROUPS"):
        expected_gradient(env, theta, policy_behavior(env, theta), "grpo", 6)


def unequal_tree() -> tuple[TreeMDP, torch.Tensor, torch.Tensor]:
    """An explicit instance (not a random draw): vocab 2, depth 3, EOS → lengths 1, 2, 3, 3."""
    rewards = torch.tensor([[1.0, 0.0, 0.5, 0.2]], dtype=torch.float64)
    env = TreeMDP(rewards, 2, 3, eos=True)
    theta = torch.tensor([[[0.3, -0.2], [1.0, 0.1], [-0.5, 0.4]]], dtype=torch.float64)
    mu = torch.tensor([[0.4, 0.3, 0.2, 0.1]], dtype=torch.float64)
    return env, theta, mu


def test_closed_form_is_not_used_for_token_mean_over_unequal_lengths():
    """token-mean divides by the group's token count, which varies with the group: the loss is
    not linear per response. "closed-form" must refuse, "auto" must equal the enumeration —
    and on this instance the per-response linear formula is far from the truth, so a mutant
    without the guard fails."""
    env, theta, mu = unequal_tree()
    assert env.lengths.tolist() == [1, 2, 3, 3]
    with pytest.raises(ValueError, match="no closed form"):
        expected_gradient(env, theta, mu, "reinforce", 3, method="closed-form")
    assert ExpectedLoss(env, LossSetup("reinforce"), 3).method != "closed-form"
    truth = expected_loss(env, theta, mu, "reinforce", 3, method="enumerate")
    torch.testing.assert_close(expected_loss(env, theta, mu, "reinforce", 3), truth, **TOL)
    torch.testing.assert_close(expected_gradient(env, theta, mu, "reinforce", 3),
                               expected_gradient(env, theta, mu, "reinforce", 3,
                                                 method="enumerate"), **TOL)
    # the linear formula, by hand: −(1 − 1/K)·Σ_y μ(y)·(r(y) − E_μ r)·(Σ_t log π_t(y))/L(y)
    per_token = env.token_logprobs(theta).sum(-1) / env.lengths
    centred = env.rewards - (mu * env.rewards).sum()
    linear = -(1 - 1 / 3) * (mu * centred * per_token).sum()
    assert abs(float(linear - truth)) > 1e-3


@pytest.mark.parametrize("loss", ["reinforce", "rloo", "asymre"])
@pytest.mark.parametrize("agg", ["seq-mean-token-mean", "seq-mean-token-sum", "token-sum"])
def test_closed_form_keeps_the_advantage_shift(loss, agg):
    """A = r − r̄ + shift: the closed form's β + shift term. The shifted and unshifted values
    differ by far more than the tolerance, so dropping the shift fails."""
    env, theta, mu = unequal_tree()
    options = {"advantage_kwargs": {"shift": 0.3}, "agg": agg}
    closed = expected_gradient(env, theta, mu, loss, 3, method="closed-form", **options)
    enumerated = expected_gradient(env, theta, mu, loss, 3, method="enumerate", **options)
    torch.testing.assert_close(closed, enumerated, **TOL)
    unshifted = expected_gradient(env, theta, mu, loss, 3, method="enumerate", agg=agg)
    assert float((unshifted - enumerated).abs().max()) > 1e-3


def test_sampled_standard_error_uses_the_sample_variance():
    """stderr = √(Σ_p s_p²/S)/P with s_p² = Σ_g (x_g − x̄)²/(S − 1), by hand from the same
    groups (same seed); with S = 3 the population variance (ddof 0) is 2/3 of it."""
    c = case()
    s = 3
    mean, stderr = sampled_gradient(c.env, c.logits, c.behavior, "grpo", 2, s,
                                    torch.Generator().manual_seed(5))
    batch = sample_groups(c.behavior, 2, s, torch.Generator().manual_seed(5))
    grads = group_gradients(c.env, c.logits, batch, c.behavior, "grpo").reshape(
        c.env.num_prompts, s, *c.logits.shape)
    p = c.env.num_prompts
    var = torch.zeros_like(c.logits)
    for prompt in range(p):
        centre = sum(grads[prompt, j] for j in range(s)) / s
        var += sum((grads[prompt, j] - centre) ** 2 for j in range(s)) / (s - 1)
    torch.testing.assert_close(stderr, (var / s).sqrt() / p, **TOL)
    torch.testing.assert_close(mean, grads.mean(1).sum(0) / p, **TOL)
    assert float(stderr.max()) > 1e-3  # the check has something to compare


def test_a_loss_setup_and_the_same_keywords_give_the_same_expectations():
    """Every exact path takes a loss as name + keywords or as one LossSetup (K by keyword
    too); a LossSetup with keywords beside it is ambiguous and refused."""
    c = case()
    setup = LossSetup.from_keywords("rec", clip="two-side", advantage="loo")
    args = (c.env, c.logits, c.behavior)
    pairs = [
        (expected_loss(*args, "rec", K=3, clip="two-side", advantage="loo"),
         expected_loss(*args, setup, K=3)),
        (expected_gradient(*args, "rec", 3, method="enumerate", clip="two-side",
                           advantage="loo"),
         expected_gradient(*args, setup, 3, method="enumerate")),
        (expected_hessian(*args, "rec", K=2, clip="two-side", advantage="loo"),
         expected_hessian(*args, setup, K=2)),
        (ExpectedLoss(c.env, setup, K=2)(c.logits, c.behavior),
         expected_loss(*args, setup, 2)),
    ]
    for by_name, by_setup in pairs:
        torch.testing.assert_close(by_name, by_setup, **TOL)
    with pytest.raises(TypeError, match="loss is a LossSetup"):
        expected_gradient(*args, setup, 2, clip="one-side")


def test_method_is_an_option_of_the_call_never_a_loss_keyword():
    c = case()
    with pytest.raises(ValueError, match="method must be one of"):
        expected_gradient(c.env, c.logits, c.behavior, "grpo", 2, method="exact")
