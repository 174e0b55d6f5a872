"""Identities between losses of the zoo, over random inputs (hypothesis).

Each test is one claim; its docstring states the claim and where it comes from. The two sides
are computed by different routes (a different loss, or a hand-written formula with autograd, or
an analytic gradient), so agreement is evidence, not tautology. Tolerances are float64 round-off
(1e-10 relative) because every claim here is an exact algebraic identity.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from simulator.advantages import group_advantages
from simulator.aggregation import AGGREGATIONS, aggregate
from simulator.losses import LOSSES, pairwise_surrogate, policy_loss
from theory_tests.strategies import (
    LossCase,
    boundary_examples,
    boundary_loss_cases,
    loss_cases,
)

EXACT = {"rtol": 1e-10, "atol": 1e-12}


def length(agg, case):
    """The constant length of seq-mean-token-sum-norm (the padded width T stands in for the
    maximum completion length here); nothing for the other modes."""
    return {"norm_len": float(case.mask.shape[1])} if agg == "seq-mean-token-sum-norm" else {}


def loss_and_grad(name: str, case: LossCase, *, adv=None, **kwargs):
    logp = case.leaf()
    kwargs = {**length(kwargs.get("agg", LOSSES[name].agg), case), **kwargs}
    out = policy_loss(name, logp, case.logp_old, case.adv if adv is None else adv, case.mask,
                      **kwargs)
    (grad,) = torch.autograd.grad(out.loss, logp)
    return out.loss.detach(), grad


@given(case=loss_cases(max_log_ratio=1.0))
@boundary_examples()
def test_rec_one_side_is_has_exactly_the_gradient_of_ppo_clip(case):
    """∇ REC-OneSide-IS = ∇ PPO-clip (no dual clip), for any ratios (paper §4).

    PPO: ℓ = max(−ρA, −clip(ρ)A); REC: ℓ = −M·sg(ρ)·A·log π with M the one-side mask.
    Ratios are drawn in e^{±1}, so many tokens fall outside the 0.2 band and both the clipped
    and the unclipped branch are exercised; the fixed boundary cases put ρ exactly on 1 ± ε
    (where PPO's max has a tie and its clamp is at its end) with A > 0, A < 0 and A = 0.
    """
    _, g_rec = loss_and_grad("rec-oneside-is", case)
    _, g_ppo = loss_and_grad("ppo", case, dual_clip=None)
    torch.testing.assert_close(g_rec, g_ppo, **EXACT)
    _, g_grpo = loss_and_grad("grpo", case, agg="token-mean")  # grpo's own is the seq-mean
    torch.testing.assert_close(g_grpo, g_ppo, **EXACT)


def test_rec_one_side_is_differs_from_ppo_once_dual_clip_is_active():
    """The REC = PPO identity needs 'no dual clip': with A < 0 and ρ > c, dual-clip PPO drops
    the gradient while REC-OneSide-IS keeps −ρA∇log π."""
    logp = torch.tensor([[-0.1]], dtype=torch.float64)
    case = LossCase(logp, logp - 2.0, torch.tensor([-1.0], dtype=torch.float64),
                    torch.ones(1, 1, dtype=torch.bool))  # ρ = e² ≈ 7.39 > c = 3
    _, g_rec = loss_and_grad("rec-oneside-is", case)
    _, g_dual = loss_and_grad("ppo", case, dual_clip=3.0)
    assert g_dual.abs().max() == 0
    assert torch.allclose(g_rec, torch.exp(torch.tensor(2.0, dtype=torch.float64)).reshape(1, 1))


ON_POLICY_SAME_AS_REINFORCE = [
    ("rec-oneside-nois", {}), ("rec-oneside-is", {}), ("rec-twoside-nois", {}),
    ("rec-twoside-is", {}), ("rec-ring-nois", {}), ("rec-ring-is", {}),
    ("rec", {"regularizer": "k2", "reg_coef": 0.7}),
    ("ppo", {}), ("grpo", {}), ("dapo", {}), ("ppo-dual-clip", {}),
    ("cispo", {}), ("topr", {}), ("topr", {"level": "token"}),
    ("opmd-kimi", {}), ("opmd-kimi", {"level": "token"}),
    ("gspo", {}), ("gspo-token", {}),
]


@pytest.mark.parametrize(("name", "kwargs"), ON_POLICY_SAME_AS_REINFORCE)
@given(case=loss_cases(on_policy=True, per_token_adv=False), agg=st.sampled_from(AGGREGATIONS))
@boundary_examples(on_policy=True, per_token_adv=False, agg=AGGREGATIONS)
def test_at_theta_old_every_clipped_variant_has_the_reinforce_gradient(name, kwargs, case, agg):
    """With log π = log π_old (ρ = 1, δ = 0), every REC variant, PPO/GRPO without the std
    (advantages are passed in, so the same A), CISPO, TOPR, OPMD's δ² penalty and GSPO have
    exactly REINFORCE's gradient −A·∇log π, under every aggregation (paper §4)."""
    _, expected = loss_and_grad("reinforce", case, agg=agg)
    _, got = loss_and_grad(name, case, agg=agg, **kwargs)
    torch.testing.assert_close(got, expected, **EXACT)


@given(case=loss_cases(on_policy=True, per_token_adv=False),
       eta=st.floats(0.1, 5.0), tau=st.floats(0.1, 5.0))
@boundary_examples(on_policy=True, per_token_adv=False, eta=[0.5], tau=[2.0])
def test_at_theta_old_sppo_and_opmd_trinity_are_rescaled_reinforce(case, eta, tau):
    """At δ = 0: ∇(δ − ηA)² = −2ηA·∇log π, so SPPO = 2η·REINFORCE; OPMD-Trinity = REINFORCE/(1+τ)
    (Trinity-RFT's opmd loss)."""
    _, g_reinforce = loss_and_grad("reinforce", case)
    _, g_sppo = loss_and_grad("sppo", case, eta=eta)
    _, g_opmd = loss_and_grad("opmd-trinity", case, tau=tau)
    torch.testing.assert_close(g_sppo, 2 * eta * g_reinforce, **EXACT)
    torch.testing.assert_close(g_opmd, g_reinforce / (1 + tau), **EXACT)


@given(case=loss_cases(max_log_ratio=1.0), beta=st.floats(-2.0, 2.0),
       agg=st.sampled_from(AGGREGATIONS))
@boundary_examples(beta=[-1.0, 0.7], agg=AGGREGATIONS)
def test_asymre_is_reinforce_minus_beta_times_log_pi(case, beta, agg):
    """AsymRE(β) = REINFORCE − β·Σ log π, value and gradient, under every aggregation (§5)."""
    loss_a, g_a = loss_and_grad("asymre", case, beta=beta, agg=agg)
    loss_r, g_r = loss_and_grad("reinforce", case, agg=agg)
    logp = case.leaf()
    penalty = aggregate(logp, case.mask, agg, **length(agg, case))
    (g_pen,) = torch.autograd.grad(penalty, logp)
    torch.testing.assert_close(loss_a, loss_r - beta * penalty.detach(), **EXACT)
    torch.testing.assert_close(g_a, g_r - beta * g_pen, **EXACT)


ONE_TOKEN = boundary_loss_cases(per_token_adv=False)[0]


@given(rewards=st.integers(0, 2**32 - 1), k=st.integers(1, 6), beta=st.floats(-1.0, 1.0),
       uniform=st.booleans(), case=loss_cases(max_b=1, max_log_ratio=1.0, per_token_adv=False))
@example(rewards=0, k=1, beta=0.5, uniform=False, case=ONE_TOKEN)
@example(rewards=1, k=4, beta=-0.3, uniform=True, case=ONE_TOKEN)
def test_asymre_equals_reinforce_on_shifted_advantages(rewards, k, beta, uniform, case):
    """The two homes of AsymRE agree: ``asymre(beta=β)`` on mean-baseline advantages equals
    ``reinforce`` on ``group_advantages(r, "mean", shift=β)`` — also for a lone response
    (K = 1: A = 0 + β) and a uniform group (A = β for every member)."""
    g = torch.Generator().manual_seed(rewards)
    r = torch.rand(1, k, generator=g, dtype=torch.float64)
    if uniform:
        r = r[:, :1].expand(1, k).contiguous()
    logp = case.logp[:, :1].expand(k, -1).contiguous()
    case = LossCase(logp, logp - 0.1, torch.zeros(k, dtype=torch.float64),
                    torch.ones(k, 1, dtype=torch.bool))
    adv_mean = group_advantages(r, "mean").flatten()
    adv_shift = group_advantages(r, "mean", shift=beta).flatten()
    loss_a, g_a = loss_and_grad("asymre", case, adv=adv_mean, beta=beta)
    loss_r, g_r = loss_and_grad("reinforce", case, adv=adv_shift)
    torch.testing.assert_close(loss_a, loss_r, **EXACT)
    torch.testing.assert_close(g_a, g_r, **EXACT)


@given(case=loss_cases(max_log_ratio=1.0), tau=st.floats(0.05, 5.0))
@boundary_examples(tau=[0.5])
def test_opmd_kimi_gradient_is_reinforce_plus_half_tau_grad_delta_squared(case, tau):
    """OPMD (Kimi): ∇ℓ = −A·∇log π(y) + (τ/2)·∇δ², δ = log π(y) − log π_old(y) over the whole
    sequence (level="sequence") or per token (level="token", Trinity's k2) (paper §5)."""
    agg = "seq-mean-token-sum"  # recovers Σ_i [−A_i·log π(y_i) + (τ/2)δ_i²] / B exactly
    for level in ("sequence", "token"):
        _, got = loss_and_grad("opmd-kimi", case, tau=tau, level=level, agg=agg)
        logp = case.leaf()
        m = case.mask.to(logp.dtype)
        delta = (logp - case.logp_old) * m
        adv = case.adv if case.adv.ndim == 2 else case.adv[:, None].expand_as(logp)
        reinforce = -(adv * logp * m).sum(1)
        penalty = delta.sum(1) ** 2 if level == "sequence" else (delta**2).sum(1)
        (expected,) = torch.autograd.grad((reinforce + tau / 2 * penalty).mean(), logp)
        torch.testing.assert_close(got, expected, **EXACT)


def test_opmd_kimi_sequence_and_token_penalties_differ_beyond_one_token():
    """Kimi's (Σ_t δ_t)² and Trinity's Σ_t δ_t² agree for one token and differ for two:
    δ = (0.5, −0.5) gives 0 against 0.5."""
    logp = torch.tensor([[-1.0, -1.0]], dtype=torch.float64)
    case = LossCase(logp, logp - torch.tensor([[0.5, -0.5]], dtype=torch.float64),
                    torch.zeros(1, dtype=torch.float64), torch.ones(1, 2, dtype=torch.bool))
    loss_seq, _ = loss_and_grad("opmd-kimi", case, tau=1.0, agg="seq-mean-token-sum")
    loss_tok, _ = loss_and_grad("opmd-kimi", case, tau=1.0, level="token",
                                agg="seq-mean-token-sum")
    assert float(loss_seq) == pytest.approx(0.0, abs=1e-15)
    assert float(loss_tok) == pytest.approx(0.5 * (0.25 + 0.25), rel=1e-12)


@given(case=loss_cases(per_token_adv=False, max_log_ratio=0.01),
       agg=st.sampled_from(AGGREGATIONS), eps=st.sampled_from([(3e-4, 4e-4), (0.2, 0.2)]))
@boundary_examples(per_token_adv=False, agg=AGGREGATIONS, eps=[(3e-4, 4e-4), (0.2, 0.2)])
def test_gspo_and_gspo_token_agree_when_advantages_are_constant_along_each_sequence(
        case, agg, eps):
    """GSPO-token with A_it = A_i has GSPO's value and gradient (Zheng et al. 2025, §4.3), under
    every aggregation; log-ratios up to 0.01 put some sequences inside and some outside the
    tiny 3e-4/4e-4 band."""
    loss_s, g_s = loss_and_grad("gspo", case, agg=agg, eps_low=eps[0], eps_high=eps[1])
    loss_t, g_t = loss_and_grad("gspo-token", case, agg=agg, eps_low=eps[0], eps_high=eps[1])
    torch.testing.assert_close(loss_s, loss_t, **EXACT)
    torch.testing.assert_close(g_s, g_t, **EXACT)


def test_gspo_and_gspo_token_differ_when_advantages_vary_along_a_sequence():
    """The condition matters: with A = (1, −1) on one two-token sequence at ρ = 1, GSPO's
    gradient is the row average (0, 0)/2 while GSPO-token's is −A per token."""
    logp = torch.tensor([[-1.0, -2.0]], dtype=torch.float64)
    case = LossCase(logp, logp.clone(), torch.tensor([[1.0, -1.0]], dtype=torch.float64),
                    torch.ones(1, 2, dtype=torch.bool))
    _, g_s = loss_and_grad("gspo", case, agg="seq-mean-token-sum")
    _, g_t = loss_and_grad("gspo-token", case, agg="seq-mean-token-sum")
    torch.testing.assert_close(g_s, torch.zeros(1, 2, dtype=torch.float64))
    torch.testing.assert_close(g_t, torch.tensor([[-1.0, 1.0]], dtype=torch.float64))


@given(seed=st.integers(0, 2**32 - 1), g=st.integers(1, 4), k=st.integers(2, 8),
       uniform=st.booleans())
@example(seed=0, g=3, k=2, uniform=True)
def test_rloo_is_k_over_k_minus_one_times_the_mean_baseline_advantage(seed, g, k, uniform):
    """RLOO: r_i − (Σ_{j≠i} r_j)/(K−1) = K/(K−1)·(r_i − r̄) (Kool et al. 2019; Ahmadian 2024);
    a uniform group gets exactly 0 from both."""
    rewards = torch.randn(g, k, generator=torch.Generator().manual_seed(seed),
                          dtype=torch.float64)
    if uniform:
        rewards = rewards[:, :1].expand(g, k).contiguous()
    torch.testing.assert_close(group_advantages(rewards, "loo"),
                               k / (k - 1) * group_advantages(rewards, "mean"), **EXACT)


def _softmax_grad_log_pi(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """∇_θ log softmax(θ)[y] = e_y − π, by hand (no autograd): [K, n]."""
    pi = torch.softmax(logits, -1)
    return torch.nn.functional.one_hot(y, logits.numel()).to(pi.dtype) - pi


@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 6), k=st.integers(1, 8),
       tau=st.floats(0.05, 10.0), uniform=st.booleans())
@example(seed=0, n=2, k=1, tau=1.0, uniform=False)
@example(seed=1, n=3, k=4, tau=0.5, uniform=True)
def test_one_step_of_pairwise_surrogate_is_group_relative_reinforce(seed, n, k, tau, uniform):
    """At θ = θ_t: ∇L̂ = −(2τ/K)·Σ_i (r_i − r̄)·∇log π(y_i), for any group however sampled
    (paper §2, step 5). Tabular softmax, responses y_i drawn from an arbitrary other policy;
    the right side uses the analytic ∇log π = e_y − π."""
    gen = torch.Generator().manual_seed(seed)
    theta = torch.randn(n, generator=gen, dtype=torch.float64).requires_grad_(True)
    behaviour = torch.softmax(3 * torch.randn(n, generator=gen, dtype=torch.float64), -1)
    y = torch.multinomial(behaviour, k, replacement=True, generator=gen)
    r = torch.rand(1, k, generator=gen, dtype=torch.float64)
    if uniform:  # a uniform group: both sides are exactly 0
        r = r[:, :1].expand(1, k).contiguous()
    seq_logp = torch.log_softmax(theta, -1)[y].unsqueeze(0)
    (grad,) = torch.autograd.grad(
        pairwise_surrogate(r, seq_logp, seq_logp.detach(), tau), theta)
    expected = -(2 * tau / k) * ((r[0] - r.mean()).unsqueeze(1)
                                 * _softmax_grad_log_pi(theta.detach(), y)).sum(0)
    torch.testing.assert_close(grad, expected, **EXACT)


def test_pairwise_surrogate_gradient_is_not_reinforce_away_from_the_anchor():
    """The REINFORCE form needs θ = θ_t: away from the anchor the gradient also carries the
    τ²-term −(2τ/K)·Σ_i (−τ)(δ_i − δ̄)·∇log π(y_i) of §2 step 7 (here δ = (0.5, 0))."""
    theta = torch.tensor([0.3, -0.2], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1])
    r = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    seq_logp = torch.log_softmax(theta, -1)[y].unsqueeze(0)
    anchor = seq_logp.detach() - torch.tensor([[0.5, 0.0]], dtype=torch.float64)
    (grad,) = torch.autograd.grad(pairwise_surrogate(r, seq_logp, anchor, 1.0), theta)
    grad_log_pi = _softmax_grad_log_pi(theta.detach(), y)
    reinforce = -(2 / 2) * ((r[0] - r.mean()).unsqueeze(1) * grad_log_pi).sum(0)
    a = r[0] - torch.tensor([0.5, 0.0], dtype=torch.float64)  # a_i = r_i − τδ_i
    full = -(2 / 2) * ((a - a.mean()).unsqueeze(1) * grad_log_pi).sum(0)
    torch.testing.assert_close(grad, full, **EXACT)
    assert (grad - reinforce).abs().max() > 0.1
