"""Claims about the KL-regularised step and the pairwise surrogate (catalogue 1, 2, 3, 9).

Paper: Yao et al. 2025 (arXiv 2509.24203): the derivation of Sec. 2.2, its closed-form optimum
(Eq. 4) and pairwise square loss (Eq. 6, ``losses.pairwise_surrogate``); the weighted form is
its second principle (shaping the data). Expansions and conditions marked "our derivation" are
ours, checked here.
"""

from __future__ import annotations

import torch
from torch import Tensor

from simulator.claims.instances import (
    newton_minimise,
    random_bandit,
    random_behavior,
    random_tree,
    uniform,
)
from simulator.claims.references import PAPER
from simulator.claims.registry import EXACT_TOL, Check, register_claim, relative_error, worst
from simulator.closed_forms import kl_regularized_optimum, soft_bellman_policy
from simulator.exact import expected_pairwise_surrogate
from simulator.losses import pairwise_surrogate, policy_loss
from simulator.policies import random_logits
from simulator.tree import TreeMDP


def _kl_objective(logits: Tensor, pi_t: Tensor, r: Tensor, tau: float) -> Tensor:
    """J(θ) = E_π r − τ·KL(π‖π_t) for π = softmax(θ), written from the definition."""
    log_pi = torch.log_softmax(logits, dim=-1)
    return (log_pi.exp() * (r - tau * (log_pi - torch.log(pi_t)))).sum()


@register_claim("1", "kl_regularized_optimum_maximises_regularised_reward", PAPER + ", Eq. 4",
                instances=8, slow=10, n=(2, 6))
def kl_optimum(generator: torch.Generator, n: int) -> Check:
    """argmax_π E_π r − τ·KL(π‖π_t) = π_t·e^{r/τ}/Z: ∇J = 0 there, and damped Newton from π_t
    lands on it within 10‖∇J‖/λ_min."""
    pi_t = torch.softmax(torch.randn(n, generator=generator, dtype=torch.float64), dim=-1)
    r = torch.rand(n, generator=generator, dtype=torch.float64)
    tau = uniform(generator, 0.2, 2.0)
    star = kl_regularized_optimum(pi_t, r, tau)
    grad = torch.func.grad(_kl_objective)(torch.log(star), pi_t, r, tau)
    stationary = Check(float(grad.abs().max()), EXACT_TOL, "‖∇J(log π*)‖∞")

    def negative(x: Tensor) -> Tensor:  # reduced logits: the last one fixed at 0
        return -_kl_objective(torch.cat([x, x.new_zeros(1)]), pi_t, r, tau)

    x, grad_norm, lam = newton_minimise(negative, torch.log(pi_t[:-1] / pi_t[-1]))
    found = torch.softmax(torch.cat([x, x.new_zeros(1)]), dim=-1)
    tolerance = 10 * grad_norm / max(lam, 1e-300) + EXACT_TOL
    optimiser = Check(float((found - star).abs().max()), tolerance,
                      "|Newton argmax − π*|∞ (tolerance 10‖∇‖/λ_min)")
    return worst(stationary, optimiser)


def _group_instance(generator: torch.Generator, vocab: int, depth: int, k: int
                    ) -> tuple[TreeMDP, Tensor, Tensor, float]:
    """A tree, θ_t, and 3 groups of K responses drawn uniformly (not from π_t)."""
    env = random_tree(generator, 1, vocab, depth)
    theta_t = random_logits(env, generator)
    groups = torch.randint(0, env.num_responses, (3, k), generator=generator)
    return env, theta_t, groups, uniform(generator, 0.1, 2.0)


def _surrogate_grad(env: TreeMDP, theta: Tensor, theta_t: Tensor, groups: Tensor, tau: float,
                    weights: Tensor | None = None) -> Tensor:
    def value(z: Tensor) -> Tensor:
        seq, anchor = env.sequence_logprobs(z)[0], env.sequence_logprobs(theta_t)[0]
        return pairwise_surrogate(env.rewards[0, groups], seq[groups], anchor[groups], tau,
                                  weights)

    return torch.func.grad(value)(theta)


def _score(env: TreeMDP, theta: Tensor) -> Tensor:
    """∇_θ log π(y) for every response: [N, *θ.shape] (autograd of the sequence log-prob)."""
    return torch.func.jacrev(lambda z: env.sequence_logprobs(z)[0])(theta)


def _weighted_reinforce_direction(env: TreeMDP, theta: Tensor, groups: Tensor,
                                  weights: Tensor) -> Tensor:
    """(1/G)·Σ_g W_g·Σ_i w_i·(r_i − r̄_w)·∇log π(y_i)."""
    r, score = env.rewards[0, groups], _score(env, theta)[groups]
    total = weights.sum(-1, keepdim=True)
    centred = r - (weights * r).sum(-1, keepdim=True) / total.clamp(min=1e-300)
    coef = total * weights * centred
    return torch.einsum("gk,gk...->...", coef, score) / groups.shape[0]


def _tabular_route(generator: torch.Generator, env: TreeMDP, groups: Tensor, tau: float
                   ) -> Check:
    """Claim 2 by a second, independent route, group by group: a tabular softmax θ over the same
    N responses, the same groups plus one whose rewards are all equal (both sides exactly 0),
    and the analytic score ∇_θ log softmax(θ)[y] = e_y − π on the right (no autograd there)."""
    k = groups.shape[1]
    groups = torch.cat([groups, groups[:1]])
    r = env.rewards[0, groups]
    r[-1] = r[-1, 0]  # a uniform group of distinct responses
    theta = torch.randn(env.num_responses, generator=generator, dtype=torch.float64)
    grads = torch.stack([
        torch.func.grad(lambda z, g=g: pairwise_surrogate(
            r[g:g + 1], torch.log_softmax(z, -1)[groups[g]].unsqueeze(0),
            torch.log_softmax(theta, -1)[groups[g]].unsqueeze(0), tau))(theta)
        for g in range(groups.shape[0])])
    score = torch.nn.functional.one_hot(groups, env.num_responses) - torch.softmax(theta, -1)
    centred = r - r.mean(-1, keepdim=True)
    analytic = -(2 * tau / k) * (centred.unsqueeze(-1) * score).sum(1)
    return Check(relative_error(grads, analytic), EXACT_TOL,
                 "per-group ∇L̂ vs −(2τ/K)Σ(r−r̄)(e_y − π), tabular, analytic score")


@register_claim("2", "one_step_of_pairwise_surrogate_is_group_relative_reinforce",
                PAPER + ", Sec. 2.2 (the loss of Eq. 6)", vocab=(2, 3), depth=(1, 3), k=(1, 5))
def one_step_is_reinforce(generator: torch.Generator, vocab: int, depth: int, k: int) -> Check:
    """∇L̂(θ_t) = −(2τ/K)·Σ_i (r_i − r̄)·∇log π(y_i) = 2τ·∇(REINFORCE loss) for any group: groups
    drawn uniformly (not from π_t) on trees with and without EOS, the score by autograd of the
    sequence log-probs and through the ``reinforce`` loss; and, by an analytic score, per group
    on a tabular softmax over the same responses, a group of equal rewards included."""
    env, theta_t, groups, tau = _group_instance(generator, vocab, depth, k)
    grad = _surrogate_grad(env, theta_t, theta_t, groups, tau)
    r, score = env.rewards[0, groups], _score(env, theta_t)[groups]
    centred = r - r.mean(-1, keepdim=True)
    direct = -(2 * tau / k) * torch.einsum("gk,gk...->...", centred, score) / groups.shape[0]

    def reinforce(z: Tensor) -> Tensor:
        logp = env.token_logprobs(z)[0, groups]
        adv = env.rewards[0, groups] - env.rewards[0, groups].mean(-1, keepdim=True)
        losses = [policy_loss("reinforce", lp, lp.detach(), a, env.mask[g],
                              agg="seq-mean-token-sum").loss
                  for lp, a, g in zip(logp, adv, groups, strict=True)]
        return torch.stack(losses).mean()

    via_loss = 2 * tau * torch.func.grad(reinforce)(theta_t)
    return worst(Check(relative_error(grad, direct), EXACT_TOL, "∇L̂ vs −(2τ/K)Σ(r−r̄)∇log π"),
                 Check(relative_error(grad, via_loss), EXACT_TOL, "∇L̂ vs 2τ·∇ reinforce loss"),
                 _tabular_route(generator, env, groups, tau))


@register_claim("2b", "away_from_theta_t_the_surrogate_adds_a_log_ratio_variance_term",
                "our derivation (expanding Eq. 6 of " + PAPER + ")", vocab=(2, 3), depth=(1, 3),
                k=(2, 5))
def expansion_away_from_anchor(generator: torch.Generator, vocab: int, depth: int, k: int
                               ) -> Check:
    """L̂ = const + 2τ·[REINFORCE loss + (τ/2K)·Σ_i (δ_i − δ̄)²]: at θ ≠ θ_t the one-step
    identity of claim 2 fails by the gradient of the variance term (checked exactly)."""
    env, theta_t, groups, tau = _group_instance(generator, vocab, depth, k)
    theta = theta_t + torch.randn(theta_t.shape, generator=generator, dtype=torch.float64)
    grad = _surrogate_grad(env, theta, theta_t, groups, tau)

    def expanded(z: Tensor) -> Tensor:
        r = env.rewards[0, groups]
        logp = env.sequence_logprobs(z)[0, groups]
        delta = logp - env.sequence_logprobs(theta_t)[0, groups]
        reinforce = -((r - r.mean(-1, keepdim=True)) * logp).mean(-1)
        variance = (tau / (2 * k)) * ((delta - delta.mean(-1, keepdim=True)) ** 2).sum(-1)
        return (2 * tau * (reinforce + variance)).mean()

    return Check(relative_error(grad, torch.func.grad(expanded)(theta)), EXACT_TOL,
                 "∇L̂ vs 2τ·∇[REINFORCE + (τ/2K)Σ(δ−δ̄)²] at θ ≠ θ_t")


def _population_instance(generator: torch.Generator, n: int, k: int, cover: bool
                         ) -> tuple[object, Tensor, Tensor, float]:
    env = random_bandit(generator, 1, n)
    theta_t = random_logits(env, generator)
    mu = random_behavior(env, generator)
    if not cover:  # the behaviour never samples the last response
        mu = torch.cat([mu[:, :-1], mu.new_zeros(1, 1)], dim=-1)
        mu = mu / mu.sum(-1, keepdim=True)
    return env, theta_t, mu, uniform(generator, 0.2, 2.0)


@register_claim("3", "population_pairwise_surrogate_is_minimised_at_kl_optimum_under_coverage",
                PAPER + ", Eq. 4 and the coverage condition after Eq. 6", n=(2, 5), k=(2, 3))
def minimised_at_optimum(generator: torch.Generator, n: int, k: int) -> Check:
    """Full-support μ: E_μ[L̂] has the unique minimiser π* = π_t·e^{r/τ}/Z (Newton on the
    exact enumerated expectation, from a random start)."""
    env, theta_t, mu, tau = _population_instance(generator, n, k, cover=True)
    star = kl_regularized_optimum(env.sequence_probs(theta_t), env.rewards, tau)[0]

    def population(x: Tensor) -> Tensor:
        z = torch.cat([x, x.new_zeros(1)]).unsqueeze(0)
        return expected_pairwise_surrogate(env, z, theta_t, mu, k, tau)

    start = torch.randn(n - 1, generator=generator, dtype=torch.float64)
    x, grad_norm, lam = newton_minimise(population, start)
    found = torch.softmax(torch.cat([x, x.new_zeros(1)]), dim=-1)
    at_star = population(torch.log(star[:-1] / star[-1]))
    return worst(Check(float((found - star).abs().max()), 10 * grad_norm / lam + EXACT_TOL,
                       "|argmin E_μ L̂ − π*|∞ (tolerance 10‖∇‖/λ_min)"),
                 Check(float(at_star.abs()), EXACT_TOL, "E_μ L̂(π*)"))


@register_claim("3b", "without_coverage_the_population_minimiser_is_not_unique",
                PAPER + ", the coverage condition after Eq. 6; the counter-example: our "
                "derivation", n=(3, 5), k=(2, 3))
def not_unique_without_coverage(generator: torch.Generator, n: int, k: int) -> Check:
    """μ(y_N) = 0: every π with π(y) ∝ π*(y) on the support (any mass on y_N) has E_μ L̂ = 0.

    Builds π' ≠ π* by changing y_N's mass to 0.9 or 0.1, and passes when both are exact
    minimisers (value 0, up to rounding) while ‖π' − π*‖∞ ≥ 0.1: the minimiser is not unique."""
    env, theta_t, mu, tau = _population_instance(generator, n, k, cover=False)
    star = kl_regularized_optimum(env.sequence_probs(theta_t), env.rewards, tau)
    other = star.clone()
    other[:, -1] = torch.where(star[:, -1] < 0.5, 0.9, 0.1)  # moves y_N's mass by ≥ 0.4
    other[:, :-1] = star[:, :-1] * (1 - other[:, -1:]) / star[:, :-1].sum(-1, keepdim=True)
    values = [expected_pairwise_surrogate(env, torch.log(p), theta_t, mu, k, tau)
              for p in (star, other)]
    moved = float((other - star).abs().max())
    return worst(Check(max(float(v.abs()) for v in values), EXACT_TOL,
                       f"E_μ L̂ at π* and at π' (‖π' − π*‖∞ = {moved:.3f})"),
                 Check(0.1 / moved, 1.0, "0.1/‖π' − π*‖∞ (π' must differ from π*)"))


@register_claim("3c", "with_groups_of_one_the_surrogate_is_zero_for_every_policy",
                "our derivation (condition K ≥ 2 of claim 3)", n=(2, 5))
def groups_of_one(generator: torch.Generator, n: int) -> Check:
    """K = 1: L̂ has no pairs, so E_μ L̂ = 0 at every θ and every θ is a minimiser — claim 3
    needs K ≥ 2 (checked on a random θ far from π*)."""
    env, theta_t, mu, tau = _population_instance(generator, n, 2, cover=True)
    theta = random_logits(env, generator, scale=3.0)
    value = expected_pairwise_surrogate(env, theta, theta_t, mu, 1, tau)
    return Check(float(value.abs()), EXACT_TOL, "E_μ L̂ with K = 1 at a random θ")


@register_claim("9a", "one_step_of_weighted_surrogate_is_weighted_reinforce",
                PAPER + " (Principle 2); the 1/K² factor: our derivation "
                "(losses.pairwise_surrogate)",
                vocab=(2, 3), depth=(1, 3), k=(1, 5))
def weighted_one_step(generator: torch.Generator, vocab: int, depth: int, k: int) -> Check:
    """∇[(1/K²)·Σ_{i<j} w_i w_j (a_i − a_j)²] at θ_t = −(2τ/K²)·W·Σ_i w_i (r_i − r̄_w)·∇log π(y_i),
    W = Σ_i w_i, r̄_w the w-weighted mean of the rewards.

    The factor is 2τ/K², not 2τ (as −2τ·W·Σ … is sometimes written): the surrogate's own 1/K²
    prefactor carries through.
    """
    env, theta_t, groups, tau = _group_instance(generator, vocab, depth, k)
    weights = torch.rand(groups.shape, generator=generator, dtype=torch.float64)
    weights[0, 0] = 0.0  # a dropped sample (RED-Drop's w = 0) is allowed
    grad = _surrogate_grad(env, theta_t, theta_t, groups, tau, weights)
    direct = -(2 * tau / k**2) * _weighted_reinforce_direction(env, theta_t, groups, weights)
    return Check(relative_error(grad, direct), EXACT_TOL, "∇L̂_w vs −(2τ/K²)W Σ w(r−r̄_w)∇log π")


@register_claim("9b", "kl_optimum_still_minimises_weighted_surrogate",
                PAPER + " (Principle 2)", vocab=(2, 3), depth=(1, 3), k=(2, 5))
def weighted_minimiser(generator: torch.Generator, vocab: int, depth: int, k: int) -> Check:
    """For any w ≥ 0 and any group, L̂_w(π*) = 0 = min L̂_w and ∇L̂_w(π*) = 0, with π* the
    token-level soft-Bellman policy (so π*(y) = π_t(y)·e^{r(y)/τ}/Z, claim 13a)."""
    env, theta_t, groups, tau = _group_instance(generator, vocab, depth, k)
    weights = torch.rand(groups.shape, generator=generator, dtype=torch.float64)
    theta_star = soft_bellman_policy(env, theta_t, tau)
    seq = env.sequence_logprobs(theta_star)[0, groups]
    anchor = env.sequence_logprobs(theta_t)[0, groups]
    value = pairwise_surrogate(env.rewards[0, groups], seq, anchor, tau, weights)
    grad = _surrogate_grad(env, theta_star, theta_t, groups, tau, weights)
    return worst(Check(float(value.abs()), EXACT_TOL, "L̂_w(π*)"),
                 Check(float(grad.abs().max()), EXACT_TOL, "‖∇L̂_w(π*)‖∞"))


def _centred(generator: torch.Generator, k: int) -> tuple[Tensor, float]:
    a = torch.randn(k, generator=generator, dtype=torch.float64) * uniform(generator, 0.1, 5.0)
    return a - a.mean(), uniform(generator, 0.1, 3.0)


@register_claim("9c", "red_weight_pull_is_nonnegative_for_centred_advantages",
                PAPER + " (RED-Weight)", k=(1, 16))
def red_weight_nonnegative(generator: torch.Generator, k: int) -> Check:
    """Σ_i A_i = 0 ⇒ Σ_i A_i·e^{A_i/T} = Σ_i A_i·(e^{A_i/T} − 1) ≥ 0 (A_i and e^{A_i/T} − 1
    share their sign). Error: how far below 0 the sum goes, relative to Σ|A_i|·e^{|A_i|/T}."""
    a, temp = _centred(generator, k)
    total = (a * torch.exp(a / temp)).sum()
    scale = (a.abs() * torch.exp(a.abs() / temp)).sum().clamp(min=1.0)
    return Check(float((-total).clamp(min=0) / scale), EXACT_TOL, "−min(0, Σ A·e^{A/T})")


@register_claim("9d", "red_weight_pull_can_be_negative_without_centring",
                "our derivation (condition Σ A = 0 of claim 9c)", k=(1, 16))
def red_weight_needs_centring(generator: torch.Generator, k: int) -> Check:
    """Without Σ A_i = 0 the sum can be negative: A shifted down by its largest value plus a
    positive margin (all A_i < 0) gives Σ A_i·e^{A_i/T} < 0 (an existence demonstration).
    Passes when −Σ/scale exceeds 1e-6 (10⁴ × the identity tolerance), scale = Σ|A_i·e^{A_i/T}|."""
    a, temp = _centred(generator, k)
    a = a - a.max() - uniform(generator, 0.01, 1.0)
    total = (a * torch.exp(a / temp)).sum()
    scale = (a * torch.exp(a / temp)).abs().sum()
    below = float(-total / scale)
    return Check(1e-6 / max(below, 1e-300), 1.0, f"1e-6/(−Σ A·e^{{A/T}}/scale) (= {below:.3e})")
