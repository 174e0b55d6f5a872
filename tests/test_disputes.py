"""The disputes of docs/disputes.md, settled exactly (``simulator.disputes``).

Every expected value here is derived independently of the loss code: −∇J by autograd of
Σ_y π_θ(y)·r(y), and the K = 1 expected updates by hand from the score function
∇_logits log π(a|s) = e_a − π(·|s) at node s (``hand``), with the weights and masks written
from each peer's definition. The engines' K = 3 numbers the docs quote come from
``simulator.disputes``; the tests pin the facts those numbers rest on (which reading is exact,
which are equal, which differ).
"""

from __future__ import annotations

import math

import pytest
import torch

from simulator.disputes import (
    DISPUTES,
    HEADLINE_PAIRS,
    compare,
    instance,
    kl_per_token,
    run,
)
from simulator.exact import expected_gradient
from simulator.policies import policy_behavior, sampling_logprobs, truncated_behavior
from simulator.tree import TreeMDP

REWARDS = ("binary", "graded")


def eg(env, theta, mu, loss, k, **options):
    return expected_gradient(env, theta, mu, loss, k, method="enumerate", **options)


def token_logp(env, probs_or_logits, logits=False):
    if logits:
        return env.token_logprobs_of(policy_behavior(env, probs_or_logits))
    return env.token_logprobs_of(probs_or_logits)


def hand(env, theta, mu, coef):
    """(1/P)·Σ_p Σ_y μ(y)·Σ_t coef[p, y, t]·∇_logits log π(a_t|s_t), by hand: the score of a
    token at node s is e_a − π(·|s) in that node's row of the logits."""
    pi = torch.softmax(theta, -1)  # [P, M, V]
    out = torch.zeros_like(theta)
    for p in range(env.num_prompts):
        for y in range(env.num_responses):
            for t in range(env.depth):
                if not env.mask[y, t]:
                    continue
                s, a = int(env.node_index[y, t]), int(env.tokens[y, t])
                score = -pi[p, s].clone()
                score[a] += 1.0
                out[p, s] += mu[p, y] * coef[p, y, t] * score
    return out / env.num_prompts


def valid(env):
    return env.mask.unsqueeze(0).to(torch.float64)


def eos_instance(rewards, **options):
    return instance(rewards, vocab=2, depth=3, eos=True, **options)


# ------------------------------------------------------------------------------------------
# 1. product or geometric mean
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rewards", REWARDS)
@pytest.mark.parametrize("make", [instance, eos_instance], ids=["depth2", "depth3-eos"])
def test_the_product_is_exactly_grad_j_and_the_geometric_mean_is_not(rewards, make):
    """π_old = π_θ, μ mismatched (KL ≈ 0.02 per token), REINFORCE advantage "none",
    seq-mean-token-sum, K = 3: E_μ[Π_t(π/μ)·r·∇log π(y)] = ∇J exactly. The geometric mean
    w_g = (π(y)/μ(y))^{1/L} gives Σ_y μ^{1−1/L}·π^{1/L}·r·∇log π(y) (derived by hand), which
    is Z·E_ν[r·∇log π] for ν ∝ μ^{1−1/L}·π^{1/L}, a geometric bridge between μ and π: biased."""
    env, theta, _, mu = make(rewards)
    d = DISPUTES["sequence-ratio"](env, theta, None, mu)
    target = -env.reward_gradient(theta)
    torch.testing.assert_close(d.reading("reinforce product").grad, target, rtol=0, atol=1e-12)
    pi = policy_behavior(env, theta)
    length = env.mask.sum(-1).to(torch.float64)
    w_geo = (pi / mu) ** (1.0 / length)  # [P, N]
    coef = -(w_geo * env.rewards).unsqueeze(-1) * valid(env)
    geometric = d.reading("reinforce geometric").grad
    torch.testing.assert_close(geometric, hand(env, theta, mu, coef), rtol=0, atol=1e-12)
    gap = compare(geometric, target)
    assert gap["rel_diff"] > 0.05 and gap["cos"] < 0.999, gap
    assert compare(d.reading("reinforce uncorrected").grad, target)["rel_diff"] > 0.05
    assert 0.01 < d.facts["kl_mu_pi_per_token"] < 0.1


def test_with_the_group_mean_baseline_the_product_is_exact_up_to_one_minus_one_over_k():
    """Advantage "mean" (r_i − r̄, no std): the cross terms vanish under the product weight,
    E = (1 − 1/K)·(−∇J); the geometric mean has no such identity."""
    env, theta, _, mu = instance("graded")
    pi = policy_behavior(env, theta)
    for k in (2, 3):
        got = eg(env, theta, mu, "reinforce", k, advantage="mean", agg="seq-mean-token-sum",
                 anchor=pi, corrections="is:level=sequence,high=None")
        torch.testing.assert_close(got, -(1 - 1 / k) * env.reward_gradient(theta), rtol=0,
                                   atol=1e-12)


def test_grpo_with_the_product_is_exact_for_binary_rewards_and_k_3_only():
    """Binary rewards, K = 3: every mixed group has population std √2/3 (one or two
    successes) and a uniform group has A = 0 whatever its std, so GRPO's std is a constant and
    the product-weighted GRPO update (π_old = π_θ, depth 2: L = 2, seq-mean-token-mean) is
    exactly −∇J·(1 − 1/K)/((√2/3 + 1e-6)·L). At K = 4 the mixed groups' std is √3/4 or 1/2:
    not a constant, and the identity fails."""
    env, theta, _, mu = instance("binary")
    pi = policy_behavior(env, theta)
    product = "is:level=sequence,high=None"
    got = eg(env, theta, mu, "grpo", 3, anchor=pi, corrections=product)
    want = -env.reward_gradient(theta) * (2 / 3) / ((math.sqrt(2) / 3 + 1e-6) * 2)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    four = eg(env, theta, mu, "grpo", 4, anchor=pi, corrections=product)
    assert compare(four, -env.reward_gradient(theta))["cos"] < 1 - 1e-6


# ------------------------------------------------------------------------------------------
# 2. the denominator
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rewards", REWARDS)
@pytest.mark.parametrize("denominator", ["keep", "drop"])
def test_the_two_denominators_by_hand(rewards, denominator):
    """K = 1, REINFORCE advantage "none", token-mean, token MIS (w = π_old/μ, removed when
    w > 1.5): ℓ = −(r/N)·Σ_{t kept} w_t·log π_t with N = L (keep: AReaL, TRL, OpenRLHF,
    verl IcePop) or N = #kept (drop: slime MIS, verl RS); a row with nothing kept adds 0."""
    env, theta, old, mu = instance(rewards, mismatch=0.45)
    w = torch.exp(token_logp(env, old) - token_logp(env, mu))
    kept = (w <= 1.5) & env.mask
    n = env.mask.sum(-1) if denominator == "keep" else kept.sum(-1)
    n = n.clamp(min=1).to(torch.float64)
    coef = -(env.rewards / n).unsqueeze(-1) * w * kept
    got = eg(env, theta, mu, "reinforce", 1, advantage="none", agg="token-mean", anchor=old,
             corrections=f"mis-token:high=1.5,denominator={denominator}")
    torch.testing.assert_close(got, hand(env, theta, mu, coef), rtol=0, atol=1e-12)
    assert bool((~kept & env.mask).any())  # something is masked: the readings differ


@pytest.mark.parametrize("rewards", REWARDS)
def test_the_denominator_matters_only_where_the_loss_counts_tokens(rewards):
    """seq-mean-token-sum divides by the rows, not the tokens: keep = drop bit for bit for a
    token mask; under token-mean (GRPO K = 3) they differ, drop being the larger step."""
    env, theta, old, mu = instance(rewards)
    for corr in ("mis-token:high=1.5", "icepop:low=0.8,high=1.25"):
        a, b = (eg(env, theta, mu, "grpo", 3, agg="seq-mean-token-sum", anchor=old,
                   corrections=f"{corr},denominator={den}") for den in ("keep", "drop"))
        assert torch.equal(a, b)
    d = DISPUTES["denominator"](env, theta, old, mu)
    for corr in ("mis-token:high=1.5", "icepop:low=0.8,high=1.25"):
        keep, drop = (d.reading(f"grpo {corr} {den}").grad for den in ("keep", "drop"))
        gap = compare(drop, keep)
        assert gap["rel_diff"] > 0.05 and gap["norm_ratio"] > 1.0, (corr, gap)


# ------------------------------------------------------------------------------------------
# 3. sequence masking
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rewards", REWARDS)
def test_opsm_never_touches_a_nonnegative_advantage(rewards):
    """OPSM drops only rows with A < 0: with advantage "none" and r ≥ 0 it is the identity;
    with GRPO's advantages it is not."""
    env, theta, old, mu = instance(rewards, mismatch=0.45)
    options = {"advantage": "none", "agg": "seq-mean-token-sum", "anchor": old}
    plain = eg(env, theta, mu, "grpo", 3, **options)
    opsm = eg(env, theta, mu, "grpo", 3, corrections="opsm:delta=0.05,ratio=old", **options)
    assert torch.equal(plain, opsm)
    d = DISPUTES["sequence-masking"](env, theta, old, mu)
    assert compare(d.reading("opsm per sequence").grad, d.reading("none").grad)["rel_diff"] > 0.01


@pytest.mark.parametrize("level", ["sequence", "token"])
def test_opsm_per_sequence_and_per_token_by_hand(level):
    """Rewards shifted by −0.5 so that A = r − 0.5 < 0 happens (advantage "none"), K = 1,
    seq-mean-token-sum, δ = 0.05, drift d_t = log(μ/π_old): per sequence a row with A < 0 and
    mean_t d_t > δ is dropped whole; per token each token with A < 0 and d_t > δ."""
    env0, theta, old, mu = instance("graded", mismatch=0.45)
    env = TreeMDP(env0.rewards - 0.5, env0.vocab, env0.depth, env0.eos)
    drift = (token_logp(env, mu) - token_logp(env, old)) * env.mask
    negative = (env.rewards < 0).unsqueeze(-1)
    if level == "sequence":
        mean = drift.sum(-1) / env.mask.sum(-1)
        drop = negative & (mean > 0.05).unsqueeze(-1)
        correction = "opsm:delta=0.05,ratio=old"
    else:
        drop = negative & (drift > 0.05)
        correction = "opsm:delta=0.05,ratio=old,level=token"
    keep = (~drop & env.mask).to(torch.float64)
    coef = -env.rewards.unsqueeze(-1) * keep
    options = {"advantage": "none", "agg": "seq-mean-token-sum", "anchor": old}
    got = eg(env, theta, mu, "reinforce", 1, corrections=correction, **options)
    torch.testing.assert_close(got, hand(env, theta, mu, coef), rtol=0, atol=1e-12)
    assert bool((drop & env.mask).any()) and bool((~drop & negative & env.mask).any())


def test_per_token_and_per_sequence_opsm_differ():
    d = run("sequence-masking", "graded")
    gap = compare(d.reading("opsm per token").grad, d.reading("opsm per sequence").grad)
    assert gap["rel_diff"] > 0.1, gap


@pytest.mark.parametrize("statistic", ["geometric", "product"])
def test_sequence_masks_by_hand_on_unequal_lengths(statistic):
    """Depth 3 with EOS (lengths 1–3), K = 1, REINFORCE advantage "none",
    seq-mean-token-sum: keep y iff s(y) ∈ [0.9, 1.1], s the geometric mean (length-invariant)
    or the product of π_old/μ; both readings derived by hand."""
    env, theta, old, mu = eos_instance("graded", mismatch=0.45)
    log_w = (token_logp(env, old) - token_logp(env, mu)) * env.mask
    length = env.mask.sum(-1).to(torch.float64)
    s = torch.exp(log_w.sum(-1) / length) if statistic == "geometric" else torch.exp(
        log_w.sum(-1))
    keep = ((s >= 0.9) & (s <= 1.1)).to(torch.float64)
    coef = -(keep * env.rewards).unsqueeze(-1) * valid(env)
    aggregate = "seq_mean" if statistic == "geometric" else "seq_sum"
    got = eg(env, theta, mu, "reinforce", 1, advantage="none", agg="seq-mean-token-sum",
             anchor=old, corrections=f"reject:statistic=ratio,aggregate={aggregate},"
             "low=0.9,high=1.1,denominator=keep")
    torch.testing.assert_close(got, hand(env, theta, mu, coef), rtol=0, atol=1e-12)
    assert 0 < float(keep.mean()) < 1


def test_on_equal_lengths_a_product_mask_is_a_narrower_geometric_mask():
    """All responses of depth 2 (no EOS) have L = 2: keeping Π_t r_t ∈ [a, b] is keeping the
    geometric mean in [a^{1/2}, b^{1/2}]: the product mask is harsher there through its window,
    not through length. Only unequal lengths make it length-dependent (``_rejected_by_length``:
    the window [a^{1/L}, b^{1/L}] narrows with L)."""
    env, theta, old, mu = instance("graded")
    assert bool((env.mask.sum(-1) == 2).all())
    a, b = 0.9, 1.1
    product = eg(env, theta, mu, "grpo", 3, anchor=old,
                 corrections=f"reject:statistic=ratio,aggregate=seq_sum,low={a},high={b},"
                 "denominator=keep")
    geometric = eg(env, theta, mu, "grpo", 3, anchor=old,
                   corrections=f"reject:statistic=ratio,aggregate=seq_mean,low={a ** 0.5},"
                   f"high={b ** 0.5},denominator=keep")
    torch.testing.assert_close(product, geometric, rtol=0, atol=1e-14)
    d = run("sequence-masking", "graded", vocab=2, depth=3, eos=True)
    assert d.facts["product_rejected_given_L2"] > d.facts["geometric_rejected_given_L2"]


# ------------------------------------------------------------------------------------------
# 4. top-k / top-p
# ------------------------------------------------------------------------------------------


def kept_mass_by_hand(z, top_k=None, top_p=1.0):
    """S: sort the softmax, keep the top k, renormalise, keep the shortest prefix reaching
    top_p; S is the original mass of what is kept, and the kept set."""
    p = torch.softmax(z, -1)
    order = torch.argsort(p, descending=True).tolist()
    kept = order[:top_k] if top_k is not None else order
    mass = sum(float(p[i]) for i in kept)
    if top_p < 1.0:
        acc, prefix = 0.0, []
        for i in kept:
            prefix.append(i)
            acc += float(p[i]) / mass
            if acc >= top_p:
                break
        kept = prefix
    return sum(float(p[i]) for i in kept), set(kept)


@pytest.mark.parametrize("top_k, top_p", [(2, 1.0), (3, 1.0), (None, 0.7), (None, 0.9),
                                          (3, 0.8)])
def test_a_kept_tokens_ratio_to_the_untruncated_policy_is_one_over_s(top_k, top_p):
    """At temperature 1: π_trunc(a)/π(a) = 1/S for every kept token (S the kept mass),
    0 for the others; over a response, μ_trunc(y)/π(y) = Π_t 1/S(s_t) or 0."""
    g = torch.Generator().manual_seed(3)
    z = torch.randn(20, 5, generator=g, dtype=torch.float64)
    got = sampling_logprobs(z, top_p=top_p, top_k=top_k) - torch.log_softmax(z, -1)
    for row in range(20):
        s, kept = kept_mass_by_hand(z[row], top_k, top_p)
        for a in range(5):
            if a in kept:
                assert abs(float(got[row, a]) + math.log(s)) < 1e-12
            else:
                assert float(got[row, a]) == -math.inf


def test_the_truncated_response_distribution_is_the_product_of_one_over_s():
    env, theta, _, _ = instance("graded")
    nodes = theta.reshape(env.num_prompts, env.num_nodes, env.vocab)
    mu_k, pi = truncated_behavior(env, theta, top_k=2), policy_behavior(env, theta)
    for p in range(env.num_prompts):
        for y in range(env.num_responses):
            factor = 1.0
            for t in range(env.depth):
                if env.mask[y, t]:
                    s, kept = kept_mass_by_hand(nodes[p, int(env.node_index[y, t])], 2)
                    factor = factor / s if int(env.tokens[y, t]) in kept else 0.0
            assert abs(float(mu_k[p, y]) - factor * float(pi[p, y])) < 1e-13


def test_with_temperature_the_ratio_is_one_over_s_of_the_tempered_policy_only():
    """TRL's trainer recomputes log_softmax(z/T) over the full vocabulary: against that the
    kept tokens' ratio is 1/S_T (S_T the tempered kept mass) at any T; against the untempered
    π it is not one constant per node."""
    z = torch.tensor([1.0, 0.3, -0.2, -1.0], dtype=torch.float64)
    t = 0.7
    processed = sampling_logprobs(z, temperature=t, top_k=3)
    s_t, kept = kept_mass_by_hand(z / t, 3)
    tempered = processed - torch.log_softmax(z / t, -1)
    assert kept == {0, 1, 2}
    torch.testing.assert_close(tempered[:3], torch.full((3,), -math.log(s_t),
                                                        dtype=torch.float64), rtol=0, atol=1e-14)
    untempered = processed - torch.log_softmax(z, -1)
    assert float(untempered[:3].max() - untempered[:3].min()) > 0.1


@pytest.mark.parametrize("rewards", REWARDS)
def test_no_weight_recovers_the_truncated_responses(rewards):
    """μ_k(y) = 0 where a token is cut: the untruncated product weight π/μ_k = Π_t S_t gives
    E_{μ_k}[w·r·∇log π] = Σ_{y: μ_k(y) > 0} π(y)·r(y)·∇log π(y), ∇J without the cut responses
    (by hand) — unbiased for that, never for ∇J."""
    env, theta, _, _ = instance(rewards)
    mu_k, pi = truncated_behavior(env, theta, top_k=2), policy_behavior(env, theta)
    got = eg(env, theta, mu_k, "reinforce", 3, advantage="none", agg="seq-mean-token-sum",
             anchor=pi, corrections="is:level=sequence,high=None")
    support = (mu_k > 0).to(torch.float64)
    weight = torch.where(mu_k > 0, pi / mu_k.clamp(min=1e-300), torch.zeros_like(pi))
    coef = -(weight * env.rewards).unsqueeze(-1) * valid(env)
    torch.testing.assert_close(got, hand(env, theta, mu_k, coef), rtol=0, atol=1e-12)
    cut = -(1 - support) * pi * env.rewards  # the cut responses' part of −∇J, by hand
    missing = hand(env, theta, torch.ones_like(pi), cut.unsqueeze(-1) * valid(env))
    torch.testing.assert_close(got + missing, -env.reward_gradient(theta), rtol=0, atol=1e-12)
    assert float(missing.norm()) > 1e-3


@pytest.mark.parametrize("rewards", REWARDS)
def test_the_renormalised_log_probs_scale_each_token_by_s(rewards):
    """On-policy top-2 sampler μ_k, K = 1, advantage "none", seq-mean-token-sum, CISPO
    unclipped (weight sg(π_θ/π_old)): with π_old = the sampler's renormalised log-probs the
    token weight is π/μ_k = S(s_t) ≤ 1; with π_old = the recomputed untruncated π it is 1.
    Both by hand; the renormalised reading is the smaller step."""
    env, theta, _, _ = instance(rewards)
    mu_k, pi = truncated_behavior(env, theta, top_k=2), policy_behavior(env, theta)
    nodes = theta.reshape(env.num_prompts, env.num_nodes, env.vocab)
    s = torch.tensor([[kept_mass_by_hand(nodes[p, m], 2)[0] for m in range(env.num_nodes)]
                      for p in range(env.num_prompts)], dtype=torch.float64)
    s_tok = s[:, env.node_index] * env.mask  # [P, N, T]
    options = {"advantage": "none", "agg": "seq-mean-token-sum", "eps_low": 1.0,
               "eps_high": 1e6}
    renorm = eg(env, theta, mu_k, "cispo", 1, anchor=mu_k, **options)
    untrunc = eg(env, theta, mu_k, "cispo", 1, anchor=pi, **options)
    base = -env.rewards.unsqueeze(-1) * valid(env)
    torch.testing.assert_close(renorm, hand(env, theta, mu_k, base * s_tok), rtol=0, atol=1e-12)
    torch.testing.assert_close(untrunc, hand(env, theta, mu_k, base), rtol=0, atol=1e-12)
    assert compare(renorm, untrunc)["norm_ratio"] < 1.0


# ------------------------------------------------------------------------------------------
# 5. CISPO and a mismatch IS weight
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rewards", REWARDS)
def test_cispo_and_the_token_is_weight_telescope_not_double_count(rewards):
    """sg(π_θ/π_old)·(π_old/μ) = π_θ/μ: CISPO against π_old with the untruncated token IS
    weight equals CISPO against μ itself (nothing clipped), and by hand (K = 1) the weight is
    π_θ/μ per token, not (π_θ/μ)·(π_old/μ) (what feeding μ as old_log_prob and still
    multiplying by π_old/μ would give)."""
    env, theta, old, mu = instance(rewards, mismatch=0.45)
    wide = {"eps_low": 1.0, "eps_high": 1e6}
    for k in (1, 3):
        stacked = eg(env, theta, mu, "cispo", k, anchor=old, corrections="is:high=None", **wide)
        against_mu = eg(env, theta, mu, "cispo", k, anchor=mu, **wide)
        torch.testing.assert_close(stacked, against_mu, rtol=0, atol=1e-12)
    lp, lo, lm = token_logp(env, theta, logits=True), token_logp(env, old), token_logp(env, mu)
    base = -env.rewards.unsqueeze(-1) * valid(env)
    got = eg(env, theta, mu, "cispo", 1, anchor=old, corrections="is:high=None",
             advantage="none", agg="seq-mean-token-sum", **wide)
    torch.testing.assert_close(got, hand(env, theta, mu, base * torch.exp(lp - lm)),
                               rtol=0, atol=1e-12)
    double = hand(env, theta, mu, base * torch.exp(lp - lm) * torch.exp(lo - lm))
    assert compare(got, double)["rel_diff"] > 0.01


def test_tis_token_at_two_is_the_untruncated_weight_when_no_token_exceeds_two():
    env, theta, old, mu = instance("graded")
    assert float((token_logp(env, old) - token_logp(env, mu))[:, env.mask].max()) < math.log(2)
    d = DISPUTES["cispo-is"](env, theta, old, mu)
    torch.testing.assert_close(d.reading("cispo + tis-token").grad,
                               eg(env, theta, mu, "cispo", 3, anchor=old,
                                  corrections="is:high=None"), rtol=0, atol=1e-14)
    assert compare(d.reading("cispo + tis-token").grad, d.reading("cispo").grad)["rel_diff"] > 0.05


# ------------------------------------------------------------------------------------------
# 6. DPPO's truncation, M2PO's masks, OpenRLHF's filter
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rewards", REWARDS)
def test_dppos_truncation_3_or_20_matters_only_above_a_ratio_of_3(rewards):
    """min(ρ, 3) and min(ρ, 20) differ only where ρ = π_θ/π_old > 3: at a few steps of
    staleness (KL(π_old‖π_θ) < 0.01 per token) no token gets there and the updates are equal
    bit for bit; at staleness 1.5 (KL ≈ 0.15) some do and the updates differ."""
    env, theta, old, mu = instance(rewards)
    log_rho = token_logp(env, theta, logits=True) - token_logp(env, old)
    assert float(log_rho[:, env.mask].max()) < math.log(3)
    d = DISPUTES["dppo-truncation"](env, theta, old, mu)
    for loss in ("dppo-tv", "dppo-kl"):
        assert torch.equal(d.reading(f"{loss} c=3").grad, d.reading(f"{loss} c=20").grad)
    env, theta, old, mu = instance(rewards, staleness=1.5)
    log_rho = token_logp(env, theta, logits=True) - token_logp(env, old)
    assert float(log_rho[:, env.mask].max()) > math.log(3)
    d = DISPUTES["dppo-truncation"](env, theta, old, mu)
    assert d.facts["token_share_ratio_above_3"] > 0
    for loss in ("dppo-tv", "dppo-kl"):
        assert not torch.equal(d.reading(f"{loss} c=3").grad, d.reading(f"{loss} c=20").grad)


def test_m2pos_two_masks_agree_only_when_nothing_is_dropped():
    env, theta, old, mu = instance("binary")
    same = [expected_gradient(env, theta, mu, "m2po", 2, anchor=old, variant=v,
                              threshold=1e9) for v in ("areal", "paper")]
    assert torch.equal(same[0], same[1])
    d = DISPUTES["m2po-mask"](env, theta, old, mu)
    assert compare(d.reading("m2po paper").grad, d.reading("m2po areal").grad)["rel_diff"] > 0.05


def test_openrlhfs_filter_by_hand():
    """OpenRLHF v0.11.0 seq-mask-tis, K = 1, REINFORCE advantage "none", token-mean: keep y
    iff exp(mean_t log(π_old/μ)) ∈ [0.5, 5], weight kept tokens by the unclamped π_old/μ,
    divide by L (removed rows stay counted)."""
    env, theta, old, mu = instance("graded", mismatch=1.0)
    log_w = (token_logp(env, old) - token_logp(env, mu)) * env.mask
    length = env.mask.sum(-1).to(torch.float64)
    geo = torch.exp(log_w.sum(-1) / length)
    keep = ((geo >= 0.5) & (geo <= 5.0)).to(torch.float64)
    coef = -(keep * env.rewards / length).unsqueeze(-1) * torch.exp(log_w) * valid(env)
    got = eg(env, theta, mu, "reinforce", 1, advantage="none", agg="token-mean", anchor=old,
             corrections=("reject:statistic=ratio,aggregate=seq_mean,low=0.5,high=5.0,"
                          "denominator=keep", "is:level=token,high=None"))
    torch.testing.assert_close(got, hand(env, theta, mu, coef), rtol=0, atol=1e-12)


def test_openrlhfs_unclamped_weights_matter_only_beyond_the_clamp():
    """At KL ≈ 0.03 every token weight is inside [0.5, 5] and every geometric mean too: the
    filter, the clamp and TIS coincide bit for bit; at KL ≈ 0.2 (a weight of 8.4) they part."""
    env, theta, old, mu = instance("binary")
    d = DISPUTES["openrlhf-seq-mask"](env, theta, old, mu)
    first = d.readings[0].grad
    for r in d.readings[1:3]:
        torch.testing.assert_close(r.grad, first, rtol=0, atol=1e-15)
    env, theta, old, mu = instance("binary", mismatch=1.0)
    assert kl_per_token(env, mu, old) > 0.1
    d = DISPUTES["openrlhf-seq-mask"](env, theta, old, mu)
    assert compare(d.readings[1].grad, d.readings[0].grad)["rel_diff"] > 0.05


# ------------------------------------------------------------------------------------------
# The registry
# ------------------------------------------------------------------------------------------


def test_every_dispute_gives_rows_of_plain_numbers():
    assert set(HEADLINE_PAIRS) == set(DISPUTES)
    for name in DISPUTES:
        d = run(name, "binary")
        assert d.name == name and d.readings
        head = d.headline()
        assert (head["a"], head["b"]) == HEADLINE_PAIRS[name]
        assert all(isinstance(v, float) and math.isfinite(v) for k, v in head.items()
                   if k not in ("dispute", "a", "b", "batches_a_b"))
        # no number of batches tells apart two readings with the same expected update
        assert math.isinf(head["batches_a_b"]) == (head["rel_diff_b_a"] == 0.0)
        for row in d.rows():
            assert isinstance(row["reading"], str)
            assert all(isinstance(v, float) and math.isfinite(v)
                       for k, v in row.items() if k.endswith(("_target", "_first")))


def test_the_instance_is_realistically_off_policy():
    for rewards in REWARDS:
        env, theta, old, mu = instance(rewards)
        assert isinstance(env, TreeMDP) and env.depth >= 2
        assert 0.01 < kl_per_token(env, mu, old) < 0.1
        assert kl_per_token(env, old, policy_behavior(env, theta)) < 0.05


def test_the_atlas_table_of_disputes_has_a_row_per_dispute_and_reward_kind():
    """``grlab atlas`` writes disputes.md from ``headline_markdown``: one row per dispute and
    reward kind, thirteen columns each, the sequence-ratio product exactly −∇J (cos 1,
    ratio 1)."""
    from simulator.disputes import DISPUTES, headline_markdown

    rows = [line for line in headline_markdown().splitlines() if line.startswith("| ")
            and not line.startswith("| dispute") and not line.startswith("| ---")]
    assert len(rows) == 2 * len(DISPUTES)
    assert all(line.count("|") == 14 for line in rows)
    product = next(line for line in rows if line.startswith("| sequence-ratio | binary"))
    assert product.split("|")[5].strip() == "1" and product.split("|")[7].strip() == "1"


def test_a_readings_covariance_is_that_of_one_batch_of_one_group_per_prompt():
    """Monte Carlo: draw S batches of one group per prompt of the CISPO reading, each batch's
    gradient the prompts' mean of its groups' gradients (as ``sampled_gradient`` averages);
    their mean must be the reading's update and their total variance tr Cov within 4
    standard errors of the sample's own spread. Forgetting the 1/P² (P = 2) would be 4×."""
    from simulator.exact import group_gradients, resolve_behavior, sample_groups

    d = run("cispo-is", "binary")
    reading = d.reading("cispo")
    cov = reading.cov()
    assert cov.shape == (reading.grad.numel(),) * 2
    env, theta, behavior, loss, k, _, options = reading.call
    g = torch.Generator().manual_seed(1)
    count = 4000
    batch = sample_groups(resolve_behavior(env, behavior, theta), k, count, g)
    grads = group_gradients(env, theta, batch, behavior, loss, generator=g, **options)
    draws = grads.reshape(env.num_prompts, count, -1).sum(0) / env.num_prompts
    centred = ((draws - reading.grad.flatten()) ** 2).sum(-1)
    trace = float(cov.trace())
    assert abs(float(centred.mean()) - trace) < 4 * float(centred.std()) / len(draws) ** 0.5
    gap = draws.mean(0) - reading.grad.flatten()
    assert float(gap.norm()) < 4 * (trace / len(draws)) ** 0.5
    head = d.headline()
    assert head["trace_cov_a"] == pytest.approx(trace, rel=1e-12)
    assert head["std_a_target"] == pytest.approx(trace ** 0.5 / float(d.target.norm()),
                                                 rel=1e-12)
