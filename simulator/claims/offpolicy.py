"""Claims about clipping, regularisers, importance sampling and KL estimators on exact trees
(catalogue 6, 7, 11, 12, 15).

Per-batch identities are checked group by group (``group_gradients`` on sampled groups: "for
any ratios, any group"); expectation claims on the exact enumeration.
"""

from __future__ import annotations

import torch
from torch import Tensor

from simulator import kl
from simulator.claims.instances import newton_minimise, random_bandit, random_behavior, random_tree
from simulator.claims.instances import uniform as draw_uniform
from simulator.claims.references import PAPER
from simulator.claims.registry import EXACT_TOL, Check, register_claim, relative_error, worst
from simulator.closed_forms import soft_bellman_policy
from simulator.exact import (
    GroupBatch,
    LossSetup,
    batch_loss,
    enumerate_groups,
    expected_gradient,
    expected_loss,
    group_gradients,
    sample_groups,
)
from simulator.losses import LOSSES
from simulator.policies import policy_behavior, random_logits
from simulator.tree import TreeMDP

REC_PRESETS = tuple(name for name in LOSSES if name.startswith("rec-"))


def _stale_tree(generator: torch.Generator, vocab: int, depth: int, spread: float
                ) -> tuple[object, Tensor, Tensor]:
    """A tree, current logits θ, and the behaviour μ = π_{θ_old} with θ_old = θ + spread·ξ."""
    env = random_tree(generator, 1, vocab, depth)
    theta = random_logits(env, generator)
    noise = torch.randn(theta.shape, generator=generator, dtype=torch.float64)
    return env, theta, policy_behavior(env, theta + spread * noise)


def _with_mixed_group(env: TreeMDP, batch: GroupBatch, k: int) -> GroupBatch:
    """``batch`` plus one group of K ≥ 2 responses 0, 1, …, K − 1 (mod N): at least two distinct
    responses, so (rewards being continuous draws) at least one nonzero advantage, whatever
    the sampled groups are (a concentrated μ can draw only uniform groups)."""
    extra = (torch.arange(k) % env.num_responses).unsqueeze(0)
    return GroupBatch(torch.cat([batch.prompt, batch.prompt.new_zeros(1)]),
                      torch.cat([batch.responses, extra]),
                      torch.cat([batch.weight, batch.weight.new_ones(1)]), batch.exact)


def _group_advantages(env: TreeMDP, batch: GroupBatch, preset: str) -> Tensor:
    """The advantages [G, K] that ``preset`` computes inside each group of ``batch``."""
    return LOSSES[preset].advantages(env.rewards[batch.prompt.unsqueeze(-1), batch.responses])[0]


def _signed_gradients(env: TreeMDP, theta: Tensor, batch: GroupBatch, mu: Tensor, loss: str,
                      adv: Tensor, **options: object) -> Tensor:
    """Per-group gradients [2G, ...] of ``loss`` under the advantages A and under −A.

    A one-side clip (PPO's, GSPO's on the sequence ratio) keeps every ratio for one of the two
    signs (ρ ≤ 1 + ε_high or ρ ≥ 1 − ε_low always holds), so with a nonzero A some group is
    live under A or −A: an identity checked on both is never vacuously 0 = 0."""
    return torch.cat([group_gradients(env, theta, batch, mu, loss, advantages=sign * adv,
                                      **options) for sign in (1.0, -1.0)])


def _live(grads: Tensor) -> Check:
    """Passes when some group's gradient is nonzero (an all-zero comparison proves nothing)."""
    share = float((grads.flatten(1).abs().amax(1) > 0).to(torch.float64).mean())
    return Check(0.0 if share > 0 else 1.0, 0.5, f"groups with a nonzero gradient: {share:.0%}")


@register_claim("6", "rec_oneside_is_has_the_gradient_of_ppo_clip",
                PAPER + " (the REC family)", vocab=(2, 3), depth=(1, 3), k=(2, 4))
def rec_is_ppo(generator: torch.Generator, vocab: int, depth: int, k: int) -> Check:
    """For every group and any ratios: ∇ rec-oneside-is = ∇ PPO-clip (no dual clip), both with
    ε = 0.2/0.2 and mean-baseline advantages A, and again with −A (θ_old = θ + 0.5·ξ so ratios
    straddle the clip; 32 sampled groups plus one mixed group, ``_with_mixed_group``). Passes
    only if some group's gradient is nonzero (``_signed_gradients``: guaranteed for K ≥ 2;
    with K = 1 every advantage is 0 and the identity would be 0 = 0)."""
    env, theta, mu = _stale_tree(generator, vocab, depth, 0.5)
    batch = _with_mixed_group(env, sample_groups(mu, k, 32, generator), k)
    adv = _group_advantages(env, batch, "rec-oneside-is")  # the mean baseline
    rec = _signed_gradients(env, theta, batch, mu, "rec-oneside-is", adv)
    ppo = _signed_gradients(env, theta, batch, mu, "ppo", adv, dual_clip=None)
    return worst(Check(relative_error(rec, ppo), EXACT_TOL,
                       "per-group ∇ rec-oneside-is vs ∇ ppo (advantages A and −A)"), _live(ppo))


@register_claim("6c", "with_dual_clip_ppo_is_no_longer_rec_oneside_is",
                "our derivation (condition of claim 6; dual clip: Ye et al. 2020)",
                vocab=(2, 3), depth=(1, 3), k=(2, 4))
def dual_clip_differs(generator: torch.Generator, vocab: int, depth: int, k: int) -> Check:
    """Condition of claim 6 (no dual clip): PPO with dual clip c = 3 zeroes the gradient of
    tokens with A < 0 and ρ > 3, which REC-OneSide-IS keeps. Built so such tokens exist:
    responses starting with token 1 get the lowest rewards (A < 0 in any mixed group) and θ
    raises the root logit of token 1 by 6 over a θ_old that makes it rare (ρ ≥ 20). The exact
    expected gradients then differ; passes when the relative difference exceeds 1e-6."""
    tree = random_tree(generator, 1, vocab, depth)
    first_is_one = (tree.tokens[:, 0] == 1).to(torch.float64)
    env = TreeMDP(tree.rewards - first_is_one, vocab, depth, tree.eos)
    theta_old = random_logits(env, generator)
    theta_old[0, 0, 1] = theta_old[0, 0].min() - 3.0
    theta = theta_old.clone()
    theta[0, 0, 1] += 6.0
    mu = policy_behavior(env, theta_old)
    rec = expected_gradient(env, theta, mu, "rec-oneside-is", k, method="enumerate")
    dual = expected_gradient(env, theta, mu, "ppo", k, advantage="mean", dual_clip=3.0,
                             method="enumerate")
    diff = relative_error(dual, rec)
    return Check(1e-6 / max(diff, 1e-300), 1.0, f"1e-6/difference (relative {diff:.3e})")


@register_claim("6b", "every_rec_variant_is_reinforce_at_theta_old",
                PAPER + " (the REC family)", vocab=(2, 3), depth=(1, 3), k=(1, 4))
def rec_at_theta_old(generator: torch.Generator, vocab: int, depth: int, k: int) -> Check:
    """θ = θ_old (ρ ≡ 1): every REC preset's per-group gradient equals REINFORCE's."""
    env, theta, _ = _stale_tree(generator, vocab, depth, 0.0)
    mu = policy_behavior(env, theta)
    batch = sample_groups(mu, k, 16, generator)
    reference = group_gradients(env, theta, batch, mu, "reinforce")
    return worst(*(Check(relative_error(group_gradients(env, theta, batch, mu, name), reference),
                         EXACT_TOL, f"{name} vs reinforce at θ = θ_old") for name in REC_PRESETS))


def _opmd_options(b: float, tau: float, anchor: Tensor | None = None) -> dict:
    """opmd-kimi fed A = r − b (kind 'none' shifted by −b), summed per sequence."""
    return {"advantage": "none", "advantage_kwargs": {"shift": -b}, "agg": "seq-mean-token-sum",
            "tau": tau, "level": "sequence", "anchor": anchor}


@register_claim("7", "opmd_gradient_is_tau_times_reinforce_plus_half_tau_delta_squared",
                "Kimi k1.5 (2025); " + PAPER + ", Sec. 4.2", vocab=(2, 3), depth=(1, 3),
                k=(1, 4))
def opmd_gradient(generator: torch.Generator, vocab: int, depth: int, k: int) -> Check:
    """∇ (1/K)·Σ_i ½(r_i − b − τδ_i)² = τ·∇ opmd-kimi with A = r − b, sequence δ, token-sum."""
    env, theta, mu = _stale_tree(generator, vocab, depth, 0.5)
    b, tau = draw_uniform(generator, -1.0, 1.0), draw_uniform(generator, 0.1, 2.0)
    batch = sample_groups(mu, k, 16, generator)
    loss = group_gradients(env, theta, batch, mu, "opmd-kimi", **_opmd_options(b, tau))
    rows = batch.responses

    def squares(z: Tensor) -> Tensor:
        delta = env.sequence_logprobs(z)[0, rows] - torch.log(mu[0, rows])
        return (0.5 * (env.rewards[0, rows] - b - tau * delta) ** 2).mean(-1)

    direct = torch.func.jacrev(squares)(theta)
    return Check(relative_error(tau * loss, direct), EXACT_TOL, "τ·∇ opmd-kimi vs ∇½(r−b−τδ)²")


def _opmd_population(generator: torch.Generator, vocab: int, depth: int
                     ) -> tuple[object, Tensor, Tensor, float]:
    env = random_tree(generator, 1, vocab, depth)
    return env, random_logits(env, generator), random_behavior(env, generator), draw_uniform(
        generator, 0.2, 2.0)


@register_claim("7b", "opmd_with_soft_baseline_is_minimised_at_kl_optimum_for_every_behavior",
                "Kimi k1.5 (2025); " + PAPER + ", Sec. 4.2", vocab=(2, 3), depth=(1, 3))
def opmd_soft_baseline(generator: torch.Generator, vocab: int, depth: int) -> Check:
    """b = τ·log Z (Z = E_{π_t} e^{r/τ}), any full-support μ: the exact population gradient of
    opmd-kimi (anchor π_t, K = 1) vanishes at the soft-Bellman π*, where ½E_μ(r − b − τδ)² = 0."""
    env, theta_t, mu, tau = _opmd_population(generator, vocab, depth)
    pi_t = env.sequence_probs(theta_t)
    b = float(tau * torch.log((pi_t * torch.exp(env.rewards / tau)).sum()))
    theta_star = soft_bellman_policy(env, theta_t, tau)
    options = _opmd_options(b, tau, anchor=pi_t)
    grad = expected_gradient(env, theta_star, mu, "opmd-kimi", 1, method="enumerate", **options)
    delta = env.sequence_logprobs(theta_star) - torch.log(pi_t)
    residual = (mu * (env.rewards - b - tau * delta) ** 2).sum()
    return worst(Check(float(grad.abs().max()), EXACT_TOL, "‖E_μ ∇ opmd-kimi (π*)‖∞"),
                 Check(float(residual), EXACT_TOL, "E_μ (r − b − τδ)² at π*"))


@register_claim("7c", "opmd_with_mean_baseline_has_a_behavior_dependent_minimiser",
                "our derivation (Kimi k1.5's mean baseline)", instances=3, slow=20,
                n=(3, 5))
def opmd_mean_baseline(generator: torch.Generator, n: int) -> Check:
    """b = E_μ r: the minimiser of E_μ[opmd-kimi] (Newton on the exact loss code) satisfies
    μ(k)·e(k) = π(k)·E_μ e, e = r − b − τδ; for two behaviours the minimisers differ (by far
    more than the Newton tolerance), so the fixed point depends on μ (and is not π*)."""
    env = random_bandit(generator, 1, n)
    theta_t, tau = random_logits(env, generator), draw_uniform(generator, 0.2, 2.0)
    pi_t = env.sequence_probs(theta_t)
    found, checks = [], []
    for _ in range(2):
        mu = random_behavior(env, generator)
        b = float((mu * env.rewards).sum())

        def objective(x: Tensor, mu: Tensor = mu, b: float = b) -> Tensor:
            z = torch.cat([x, x.new_zeros(1)]).unsqueeze(0)
            return expected_loss(env, z, mu, "opmd-kimi", 1, method="enumerate",
                                 **_opmd_options(b, tau, anchor=pi_t))

        x, grad_norm, lam = newton_minimise(objective, torch.zeros(n - 1, dtype=torch.float64))
        pi = torch.softmax(torch.cat([x, x.new_zeros(1)]), -1).unsqueeze(0)
        e = env.rewards - b - tau * (torch.log(pi) - torch.log(pi_t))
        stationarity = mu * e - pi * (mu * e).sum()
        tol = 10 * grad_norm / lam + EXACT_TOL
        checks.append(Check(float(stationarity.abs().max()), tol, "μ(k)e(k) − π(k)E_μ e"))
        found.append((pi, tol))
    gap = float((found[0][0] - found[1][0]).abs().max())
    checks.append(Check(1e4 * max(found[0][1], found[1][1]) / max(gap, 1e-300), 1.0,
                        f"1e4·tol/‖π₁ − π₂‖∞ (minimisers differ by {gap:.2e})"))
    return worst(*checks)


def _kl_instance(generator: torch.Generator, vocab: int, depth: int
                 ) -> tuple[object, Tensor, Tensor]:
    env = random_tree(generator, 1, vocab, depth)
    return env, random_logits(env, generator), random_logits(env, generator)


def _estimator_gradient(env: object, theta: Tensor, ref: Tensor, estimator: str,
                        per_token: bool) -> Tensor:
    """E_{y∼π_θ}[∇ k(y)] exactly: Σ_y sg(π(y))·∇ k, k on sequence or summed per-token log-probs."""
    weights = env.sequence_probs(theta).detach()

    def value(z: Tensor) -> Tensor:
        logp, logp_ref = env.token_logprobs(z), env.token_logprobs(ref)
        if per_token:
            k = torch.where(env.mask, kl.KL_ESTIMATORS[estimator](logp, logp_ref), 0.0).sum(-1)
        else:
            k = kl.KL_ESTIMATORS[estimator](logp.sum(-1), logp_ref.sum(-1))
        return (weights * k).sum()

    return torch.func.grad(value)(theta)


def _kl_gradients(env: object, theta: Tensor, ref: Tensor) -> tuple[Tensor, Tensor]:
    """(∇KL(π_θ‖π_ref), ∇KL(π_ref‖π_θ)) by autograd of the exact sums over responses."""
    log_ref = env.sequence_logprobs(ref)

    def forward(z: Tensor) -> Tensor:
        logp = env.sequence_logprobs(z)
        return (logp.exp() * (logp - log_ref)).sum()

    def reverse(z: Tensor) -> Tensor:
        return (log_ref.exp() * (log_ref - env.sequence_logprobs(z))).sum()

    return torch.func.grad(forward)(theta), torch.func.grad(reverse)(theta)


@register_claim("11", "kl_estimators_as_losses_k1_zero_k2_forward_k3_reverse",
                "Schulman 2020 (k1/k2/k3); their gradients as losses: our derivation",
                vocab=(2, 3), depth=(1, 3))
def kl_estimators(generator: torch.Generator, vocab: int, depth: int) -> Check:
    """Samples y ∼ π_θ, estimator of the sequence log-ratio used as a loss:
    E[∇k1] = 0, E[∇k2] = ∇KL(π_θ‖π_ref), E[∇k3] = ∇KL(π_ref‖π_θ)."""
    env, theta, ref = _kl_instance(generator, vocab, depth)
    forward, reverse = _kl_gradients(env, theta, ref)
    return worst(
        Check(relative_error(_estimator_gradient(env, theta, ref, "k1", False), 0 * forward),
              EXACT_TOL, "E∇k1 vs 0"),
        Check(relative_error(_estimator_gradient(env, theta, ref, "k2", False), forward),
              EXACT_TOL, "E∇k2 vs ∇KL(π‖ref)"),
        Check(relative_error(_estimator_gradient(env, theta, ref, "k3", False), reverse),
              EXACT_TOL, "E∇k3 vs ∇KL(ref‖π)"))


@register_claim("11b", "per_token_k2_and_k3_are_not_sequence_kl_gradients_on_deep_trees",
                "our derivation (condition of claim 11: sequence-level log-ratio)", vocab=(2, 3),
                depth=(2, 3))
def kl_per_token(generator: torch.Generator, vocab: int, depth: int) -> Check:
    """On trees of depth ≥ 2, summing k2 (k3) per token gives an expected gradient that is NOT
    ∇KL(π‖ref) (∇KL(ref‖π)): per-token k2 drops the cross terms E[δ_l·∇log π_l'], l ≠ l', and
    per-token k3 weights states by π instead of π_ref. (k1 per token = k1 of the sequence.)
    Passes when both relative differences exceed 1e-8, 100 × the float64 identity tolerance
    EXACT_TOL (an identity holds here to ~1e-14): a difference that round-off cannot make. (A
    threshold of 1e-6 failed on a real difference: per-token k2 off by 6.05e-7 on a depth-2
    binary tree, ``grlab verify --seed 3287255356``.)"""
    env, theta, ref = _kl_instance(generator, vocab, depth)
    forward, reverse = _kl_gradients(env, theta, ref)
    k2 = relative_error(_estimator_gradient(env, theta, ref, "k2", True), forward)
    k3 = relative_error(_estimator_gradient(env, theta, ref, "k3", True), reverse)
    return Check(1e-8 / max(min(k2, k3), 1e-300), 1.0,
                 f"1e-8/min(difference) (per-token k2 off by {k2:.2e}, k3 by {k3:.2e})")


def _is_gradients(generator: torch.Generator, vocab: int, depth: int
                  ) -> tuple[Tensor, Tensor, Tensor]:
    """(∇E_π r, E_μ sequence-IS REINFORCE gradient, E_μ per-token-IS gradient) with A = r."""
    env = random_tree(generator, 1, vocab, depth)
    theta = random_logits(env, generator)
    mu = random_behavior(env, generator)
    on_policy = torch.func.grad(lambda z: (env.sequence_probs(z) * env.rewards).sum())(theta)
    batch = enumerate_groups(mu, 1)
    seq_ratio = (env.sequence_probs(theta) / mu)[0, batch.responses]
    adv = seq_ratio * env.rewards[0, batch.responses]
    setup = LossSetup("reinforce", agg="seq-mean-token-sum")
    z = theta.clone().requires_grad_(True)
    (seq_is,) = torch.autograd.grad(batch_loss(env, z, batch, mu, setup, advantages=adv), z)
    token_is = expected_gradient(env, theta, mu, "rec", 1, clip="none", weight="is",
                                 advantage="none", agg="seq-mean-token-sum", method="enumerate")
    return on_policy, -seq_is, -token_is


@register_claim("12", "sequence_level_importance_sampling_is_unbiased",
                "importance sampling (standard)", vocab=(2, 3), depth=(1, 3))
def sequence_is(generator: torch.Generator, vocab: int, depth: int) -> Check:
    """E_{y∼μ}[(π(y)/μ(y))·r(y)·∇log π(y)] = ∇E_π r (``reinforce`` with A = sg(π/μ)·r)."""
    on_policy, seq_is, _ = _is_gradients(generator, vocab, depth)
    return Check(relative_error(seq_is, on_policy), EXACT_TOL, "sequence-IS vs ∇E_π r")


@register_claim("12b", "per_token_importance_ratios_are_biased_on_deep_trees",
                "our derivation (per-token importance ratios)", vocab=(2, 3), depth=(1, 3))
def token_is(generator: torch.Generator, vocab: int, depth: int) -> Check:
    """E_μ[Σ_l ρ_l·r·∇log π(y^l|y^<l)] (``rec`` clip none, weight is) equals ∇E_π r when
    depth = 1 and is biased when depth ≥ 2 (it uses μ's state distribution). Passes when the
    depth-1 error is ≤ 1e-10 and otherwise the relative bias exceeds 1e-6."""
    on_policy, _, token = _is_gradients(generator, vocab, depth)
    bias = relative_error(token, on_policy)
    if depth == 1:
        return Check(bias, EXACT_TOL, "per-token IS vs ∇E_π r at depth 1")
    return Check(1e-6 / max(bias, 1e-300), 1.0, f"1e-6/bias (relative bias {bias:.3e})")


@register_claim("15", "gspo_equals_gspo_token_with_sequence_constant_advantages",
                "Zheng et al. 2025 (GSPO)", vocab=(2, 3), depth=(1, 3), k=(2, 4))
def gspo_token(generator: torch.Generator, vocab: int, depth: int, k: int) -> Check:
    """Per group, ∇ gspo = ∇ gspo-token when A is constant along each sequence (ε = 3e-4/4e-4,
    θ_old = θ + 1e-3·ξ so that some sequences are clipped and some are not), for the preset's
    std-normalised A and for −A; 16 sampled groups plus one mixed group. Passes only if some
    group's gradient is nonzero (guaranteed for K ≥ 2, see ``_signed_gradients``)."""
    env, theta, mu = _stale_tree(generator, vocab, depth, 1e-3)
    batch = _with_mixed_group(env, sample_groups(mu, k, 16, generator), k)
    adv = _group_advantages(env, batch, "gspo")  # std-normalised
    a = _signed_gradients(env, theta, batch, mu, "gspo", adv)
    b = _signed_gradients(env, theta, batch, mu, "gspo-token", adv)
    return worst(Check(relative_error(a, b), EXACT_TOL, "per-group ∇ gspo vs ∇ gspo-token "
                       "(advantages A and −A)"), _live(a))


@register_claim("15b", "kimi_sequence_penalty_and_token_k2_differ_on_deep_trees",
                "Kimi k1.5 (2025); Trinity-RFT (k2); " + PAPER + ", Sec. 4.2", vocab=(2, 3),
                depth=(1, 3),
                k=(1, 3))
def kimi_vs_token(generator: torch.Generator, vocab: int, depth: int, k: int) -> Check:
    """opmd-kimi level=sequence ((τ/2)(Σ_l δ_l)²) vs level=token ((τ/2)Σ_l δ_l²): equal
    expected gradients at depth 1, different at depth ≥ 2 (cross terms 2δ_lδ_l'). Passes when
    depth 1 agrees to 1e-10 and otherwise the relative difference exceeds 1e-6."""
    env, theta, mu = _stale_tree(generator, vocab, depth, 0.5)
    options = {"agg": "seq-mean-token-sum", "tau": draw_uniform(generator, 0.2, 2.0),
               "method": "enumerate"}
    seq = expected_gradient(env, theta, mu, "opmd-kimi", k, level="sequence", **options)
    tok = expected_gradient(env, theta, mu, "opmd-kimi", k, level="token", **options)
    diff = relative_error(tok, seq)
    if depth == 1:
        return Check(diff, EXACT_TOL, "sequence vs token penalty at depth 1")
    return Check(1e-6 / max(diff, 1e-300), 1.0, f"1e-6/difference (relative {diff:.3e})")


