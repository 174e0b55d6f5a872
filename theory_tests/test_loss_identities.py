"""Loss-level identities between losses of the zoo, on raw token batches (hypothesis): not
catalogue claims.

The catalogue (``simulator.claims``, tested in ``test_<family>.py`` and by ``grlab verify``)
checks its claims on exact bandits and trees. The tests here check identities of the loss
functions themselves, on batches of per-token log-probs: where one touches a claim, its name
and docstring say what it checks beyond the claim (ratios exactly on the clip edges, ragged and
fully masked rows, per-token advantages, every aggregation, loss values by hand). The two sides
are computed by different routes (a different loss, or a hand-written formula with autograd, or
an analytic gradient), so agreement is evidence, not tautology. Tolerances are float64 round-off
(1e-10 relative) because every identity here is exact algebra.
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
def test_rec_oneside_is_and_token_mean_grpo_equal_ppo_on_token_batches_at_the_clip_edges(case):
    """∇ REC-OneSide-IS = ∇ PPO-clip (no dual clip) = ∇ GRPO with token-mean aggregation, on raw
    token batches (claim 6 checks the first equality per group on exact trees; this adds
    per-token advantages, ragged and fully masked rows, ratios exactly on 1 ± ε, and GRPO).

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


def test_dual_clip_zeroes_a_negative_token_above_c_that_rec_oneside_is_keeps_at_weight_rho():
    """The REC = PPO identity needs 'no dual clip', by hand on one token (claim 6c checks that
    the expected gradients differ): with A = −1 and ρ = e² > c = 3, dual-clip PPO's gradient is
    exactly 0 while REC-OneSide-IS keeps −ρA∇log π = e²."""
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
def test_at_theta_old_every_clipped_or_penalised_loss_is_reinforce_under_every_aggregation(
        name, kwargs, case, agg):
    """With log π = log π_old (ρ = 1, δ = 0), every REC variant, PPO/GRPO without the std
    (advantages are passed in, so the same A), DAPO, dual clip, CISPO, TOPR, OPMD's δ² penalty
    and GSPO have exactly REINFORCE's gradient −A·∇log π, under every aggregation, on raw token
    batches (claim 6b checks the rec-* presets with their own aggregation on exact trees)."""
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
    """AsymRE(β) = REINFORCE − β·Σ log π, value and gradient, under every aggregation
    (Arnal et al. 2025)."""
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
def test_opmd_kimi_gradient_by_hand_for_sequence_and_per_token_delta_on_token_batches(case, tau):
    """OPMD (Kimi): ∇ℓ = −A·∇log π(y) + (τ/2)·∇δ², δ = log π(y) − log π_old(y) over the whole
    sequence (level="sequence") or per token (level="token", Trinity's k2), against the formula
    written out with autograd (claim 7 checks the sequence δ on exact trees; this adds the
    per-token δ and per-token advantages)."""
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


def test_opmd_kimi_penalty_values_by_hand_on_two_tokens_with_opposite_deltas():
    """Kimi's (Σ_t δ_t)² and Trinity's Σ_t δ_t² differ on two tokens, by hand (claim 15b compares
    their expected gradients on trees): δ = (0.5, −0.5), A = 0 and τ = 1 give the loss 0
    against (τ/2)·(0.25 + 0.25)."""
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
def test_gspo_and_gspo_token_have_equal_values_and_gradients_under_every_aggregation(
        case, agg, eps):
    """GSPO-token with A_it = A_i has GSPO's value and gradient (Zheng et al. 2025), under every
    aggregation and for two clip bands (claim 15 checks per-group gradients with the preset's
    aggregation on exact trees); log-ratios up to 0.01 put some sequences inside and some
    outside the tiny 3e-4/4e-4 band."""
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


def test_away_from_the_anchor_the_surrogate_gradient_by_hand_departs_from_reinforce():
    """The REINFORCE form needs θ = θ_t, by hand on a two-response tabular softmax (claim 2b
    checks the expansion by autograd on trees): with δ = (0.5, 0) the gradient is
    −(2τ/K)·Σ_i (a_i − ā)·(e_{y_i} − π), a = r − τδ (analytic score), and differs from the
    REINFORCE part by more than 0.1."""
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
