"""Claims about token-level trees and long-run dynamics (catalogue 13, 14).

Sequence-level references are built by autograd of sequence log-probabilities (the score
∇log π(y) = Σ_l ∇log π(y^l|y^<l)), never through the loss code they are compared with.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from simulator.bandit import SoftmaxBandit
from simulator.claims.instances import random_behavior, random_tree
from simulator.claims.registry import EXACT_TOL, Check, register_claim, relative_error, worst
from simulator.closed_forms import (
    kl_regularized_optimum,
    soft_bellman_policy,
    softmax_pg_rate_constant,
)
from simulator.exact import expected_gradient
from simulator.policies import policy_behavior, random_logits
from simulator.tree import TreeMDP

PAPER = "Yao et al. 2025"


@register_claim("13", "sequence_kl_optimum_is_the_product_of_soft_bellman_token_policies",
                "soft Q-learning (Haarnoja et al. 2017); " + PAPER + ", §2", prompts=(1, 2),
                vocab=(2, 3), depth=(1, 4))
def soft_bellman(generator: torch.Generator, prompts: int, vocab: int, depth: int) -> Check:
    """Π_l π*(y^l|y^<l) = π_t(y)·e^{r(y)/τ}/Z for every response (backward induction vs the
    sequence-level closed form)."""
    env = random_tree(generator, prompts, vocab, depth)
    theta_t = random_logits(env, generator)
    tau = 0.1 + 1.9 * float(torch.rand((), generator=generator, dtype=torch.float64))
    product = env.sequence_probs(soft_bellman_policy(env, theta_t, tau))
    return Check(relative_error(product, kl_regularized_optimum(env.sequence_probs(theta_t),
                                                                env.rewards, tau)),
                 EXACT_TOL, "Π_l π*_token vs π_t·e^{r/τ}/Z")


def _sequence_reinforce(env: TreeMDP, theta: Tensor, mu: Tensor, k: int,
                        per_response: Tensor) -> Tensor:
    """Loss gradient −(1 − 1/K)/P·Σ_p Σ_y μ(y)·(r(y) − E_μ r)·w(y)·∇log π(y)."""
    centred = env.rewards - (mu * env.rewards).sum(-1, keepdim=True)
    coef = (1 - 1 / k) * mu * centred * per_response / env.num_prompts
    return -torch.func.grad(lambda z: (coef * env.sequence_logprobs(z)).sum())(theta)


def _tree_instance(generator: torch.Generator, prompts: int, vocab: int, depth: int,
                   eos: bool | None = None) -> tuple[TreeMDP, Tensor, Tensor]:
    env = random_tree(generator, prompts, vocab, depth, eos)
    return env, random_logits(env, generator), random_behavior(env, generator)


@register_claim("13b", "token_level_reinforce_with_token_sum_is_sequence_level_reinforce",
                PAPER + ", §1 (token level)", prompts=(1, 2), vocab=(2, 3), depth=(1, 3),
                k=(1, 3))
def token_sum(generator: torch.Generator, prompts: int, vocab: int, depth: int, k: int) -> Check:
    """E[∇ reinforce, seq-mean-token-sum] = −(1 − 1/K)·E_μ[(r − E_μ r)·∇log π(y)]: the
    per-token loss −A·log π(y^l|y^<l) summed over tokens is sequence-level REINFORCE."""
    env, theta, mu = _tree_instance(generator, prompts, vocab, depth)
    exact = expected_gradient(env, theta, mu, "reinforce", k, agg="seq-mean-token-sum",
                              method="enumerate")
    reference = _sequence_reinforce(env, theta, mu, k, torch.ones_like(env.rewards))
    return Check(relative_error(exact, reference), EXACT_TOL, "token-sum vs sequence REINFORCE")


@register_claim("13c", "dr_grpo_is_sequence_reinforce_divided_by_a_constant_length",
                "Liu et al. 2025 (Dr.GRPO); " + PAPER + ", §8", prompts=(1, 2), vocab=(2, 3),
                depth=(1, 3), k=(1, 3))
def dr_grpo(generator: torch.Generator, prompts: int, vocab: int, depth: int, k: int) -> Check:
    """On-policy at θ = θ_old, ``dr-grpo`` (PPO-clip, mean baseline, seq-mean-token-sum-norm)
    has expected gradient (1/H)·(sequence-level REINFORCE), H = norm_len = the padded width."""
    env, theta, _ = _tree_instance(generator, prompts, vocab, depth, eos=True)
    mu = policy_behavior(env, theta)
    exact = expected_gradient(env, theta, mu, "dr-grpo", k)
    reference = _sequence_reinforce(env, theta, mu, k, torch.ones_like(env.rewards))
    return Check(relative_error(exact, reference / env.horizon), EXACT_TOL,
                 "dr-grpo vs sequence REINFORCE / H")


@register_claim("13d", "seq_mean_token_mean_weights_each_response_by_inverse_length",
                "Liu et al. 2025 (Dr.GRPO length bias)", prompts=(1, 2), vocab=(2, 3),
                depth=(2, 3), k=(1, 3))
def length_bias(generator: torch.Generator, prompts: int, vocab: int, depth: int, k: int
                ) -> Check:
    """E[∇ reinforce, seq-mean-token-mean] = −(1 − 1/K)·E_μ[(r − E_μ r)·∇log π(y)/L(y)]
    (EOS trees, so lengths differ): the per-response weight 1/L(y) is a length bias."""
    env, theta, mu = _tree_instance(generator, prompts, vocab, depth, eos=True)
    exact = expected_gradient(env, theta, mu, "reinforce", k, agg="seq-mean-token-mean",
                              method="enumerate")
    weights = (1.0 / env.lengths.to(torch.float64)).expand_as(env.rewards)
    reference = _sequence_reinforce(env, theta, mu, k, weights)
    return Check(relative_error(exact, reference), EXACT_TOL, "token-mean per row vs Σ μ(..)/L")


@register_claim("13e", "seq_mean_token_mean_is_not_parallel_to_sequence_reinforce_on_eos_trees",
                "Liu et al. 2025 (Dr.GRPO length bias)", prompts=(1, 1), vocab=(2, 3),
                depth=(2, 3), k=(2, 3))
def length_bias_direction(generator: torch.Generator, prompts: int, vocab: int, depth: int,
                          k: int) -> Check:
    """With unequal lengths, seq-mean-token-mean's expected gradient is not proportional to
    sequence-level REINFORCE (while Dr.GRPO's is, claim 13c). Measured: 1 − cos between them;
    passes when it exceeds 1e-8 (far above float64 rounding of a cosine, ~1e-15)."""
    env, theta, mu = _tree_instance(generator, prompts, vocab, depth, eos=True)
    biased = expected_gradient(env, theta, mu, "reinforce", k, agg="seq-mean-token-mean")
    plain = expected_gradient(env, theta, mu, "reinforce", k, agg="seq-mean-token-sum")
    cosine = float((biased * plain).sum() / (biased.norm() * plain.norm()))
    return Check(1e-8 / max(1 - cosine, 1e-300), 1.0, f"1e-8/(1 − cos) (1 − cos = "
                 f"{1 - cosine:.3e})")


@register_claim("4b", "on_deep_trees_the_expected_reinforce_gradient_depends_on_theta",
                "derived here (condition of claim 4: one softmax over whole responses)",
                vocab=(2, 3), depth=(2, 3), k=(2, 3))
def tree_theta_dependence(generator: torch.Generator, vocab: int, depth: int, k: int) -> Check:
    """Claim 4's θ-independence needs a single softmax over responses. With per-node softmaxes
    (depth ≥ 2), ∇_{θ_s} log π(y) = e_{y^l} − π(·|s) keeps its π(·|s) term, weighted by
    Σ_{y through s} μ(y)(r(y) − E_μ r) ≠ 0: the expected gradient moves with θ. Passes when
    two random θ give expected gradients differing by more than 1e-6 (relative)."""
    env = random_tree(generator, 1, vocab, depth)
    mu = random_behavior(env, generator)
    first, second = (expected_gradient(env, random_logits(env, generator), mu, "reinforce", k,
                                       agg="seq-mean-token-sum") for _ in range(2))
    diff = relative_error(first, second)
    return Check(1e-6 / max(diff, 1e-300), 1.0, f"1e-6/difference (relative {diff:.3e})")


def _on_policy_gaps(r: Tensor, theta: Tensor, lr: float, k: int, checkpoints: list[int]
                    ) -> Tensor:
    """r* − E_{π_t} r at the checkpoints [C, P], iterating θ ← θ + η(1 − 1/K)·π⊙(r − E_π r)."""
    out, step_size = [], lr * (1 - 1 / k)
    for t in range(1, checkpoints[-1] + 1):
        pi = torch.softmax(theta, -1)
        theta = theta + step_size * pi * (r - (pi * r).sum(-1, keepdim=True))
        if t in checkpoints:
            pi = torch.softmax(theta, -1)
            out.append(r.max(-1).values - (pi * r).sum(-1))
    return torch.stack(out)


def rate_correction(r: Tensor, lr: float, k: int, t: float) -> Tensor:
    """ε(t) = 2·A₁·log(η't)/(η't) per prompt, η' = η(1 − 1/K), A₁ = Σ_a 1/((m + 1)·Δ_a) over
    the m sub-optimal arms (Δ_a = r* − r(a)): the first correction of t·gap(t)/G − 1.

    Derivation (continuous time s = η't, u_a = π*/π_a): du_a/ds = π*·(g·u_a − g + Δ_a) with
    g = Σ_a π_a·Δ_a. Expanding u_a = α_a·s + β_a·log s + γ_a + o(1): the O(s) terms give
    α_a = (m + 1)·Δ_a and G = m/((m + 1)η') (``closed_forms.softmax_pg_rate_constant``); the
    O(log s) and O(1) terms force β_a = −2·A₁·α_a; then s·g/G = 1 + 2A₁·log(s)/s + c/s, where
    the constant c depends on θ_0 through the γ_a. With two arms this is the exact solution
    u + 2·log u − 1/u = 2η'Δt + const. The discrete iteration changes only c (its per-step
    error is O(1/t²)).
    """
    best = r.max(dim=-1, keepdim=True).values
    m = (r < best).sum(dim=-1).to(r.dtype)
    a1 = torch.where(r < best, 1.0 / (best - r).clamp(min=1e-300), 0.0).sum(dim=-1) / (m + 1)
    s = lr * (1 - 1 / k) * t
    return 2 * a1 * math.log(s) / s


def rate_checks(gaps: Tensor, horizon: int, constant: Tensor, correction: Tensor
                ) -> tuple[Check, Check]:
    """(exponent, constant) of a measured gap(t) against gap = G/t·(1 + a(t)), |a| ≤ 2ε(t).

    ``gaps`` [2, P]: gap(T/2), gap(T); ``correction`` [2, P]: ε(T/2), ε(T) (``rate_correction``).
    The tolerance is twice the leading correction: the O(1/t) term c/s it leaves out depends on
    θ_0 (seen up to 1.6·ε on 60 instances). Exponent p = log₂(gap(T/2)/gap(T)) must be 1 within
    (−log(1 − 2ε(T/2)) − log(1 − 2ε(T)))/log 2, the most that two factors 1 + a can move it;
    and T·gap(T)/G within 2ε(T) of 1. A t^{−½} law has p = ½; G off by 25% misses by 0.25.
    """
    bound = 2 * correction
    if bool((bound >= 1).any()):
        raise ValueError("the horizon is too short for the asymptotic bound (2ε(T) ≥ 1)")
    exponent = torch.log(gaps[0] / gaps[1]) / math.log(2)
    exponent_tol = -(torch.log1p(-bound[0]) + torch.log1p(-bound[1])) / math.log(2)
    scaled = horizon * gaps[1] / constant - 1
    return (Check(float(((exponent - 1).abs() / exponent_tol).max()), 1.0,
                  f"|p − 1|/tolerance, p = log₂(gap(T/2)/gap(T)) "
                  f"(p = {[round(x, 4) for x in exponent.tolist()]})"),
            Check(float((scaled.abs() / bound[1]).max()), 1.0,
                  f"|T·gap/G − 1|/2ε(T) (T·gap/G − 1 = {[f'{x:.2e}' for x in scaled.tolist()]},"
                  f" 2ε(T) = {[f'{x:.2e}' for x in bound[1].tolist()]})"))


@register_claim("14", "on_policy_softmax_policy_gradient_converges_at_rate_one_over_t",
                "Mei et al. 2020, Thm 2 and 10; constant derived in closed_forms", instances=2,
                prompts=(2, 6), n=(2, 5), k=(2, 4))
def mei_rate(generator: torch.Generator, prompts: int, n: int, k: int) -> Check:
    """Exact on-policy REINFORCE (mean baseline; its expected update is the closed form of
    claim 4, re-checked here) has gap(t) = r* − E_{π_t} r = G/t·(1 + a(t)) with
    G = m/((m+1)·η·(1 − 1/K)) and a(t) = O(log t/t) (``rate_correction``): the rate is exactly
    1/t. Checked at T/2 and T, T = 20000, η = 0.4: the exponent of the decay is 1 and T·gap/G
    is 1, each within the derived correction (``rate_checks``; at most a few percent here,
    where a t^{−½} law would be off by ½ in the exponent).
    Condition: T ≫ the transient, which grows as 1/(η'·Δ_min²) and as the initial mass of
    the best arm shrinks (Mei et al.'s constant has inf_t π_t(a*)); so rewards are drawn with
    gaps ≥ 0.5/n (levels (perm(n) + U[0, ½))/n) and θ_0 ∼ 0.3·N(0, 1). With near-tied arms or
    a near-zero π_0(a*), t·gap is still far above G at T = 20000 (seen: 972·G).
    """
    levels = torch.randperm(n, generator=generator).unsqueeze(0).expand(prompts, n)
    jitter = 0.5 * torch.rand(prompts, n, generator=generator, dtype=torch.float64)
    env = SoftmaxBandit((levels + jitter) / n)
    theta = random_logits(env, generator, scale=0.3)
    lr, horizon = 0.4, 20000
    loss_code = expected_gradient(env, theta, "on-policy", "reinforce", k, method="enumerate")
    pi = torch.softmax(theta, -1)
    same = relative_error(-loss_code * prompts, pi * (env.rewards - (pi * env.rewards).sum(
        -1, keepdim=True)) * (1 - 1 / k))
    gaps = _on_policy_gaps(env.rewards, theta, lr, k, [horizon // 2, horizon])
    correction = torch.stack([rate_correction(env.rewards, lr, k, t)
                              for t in (horizon // 2, horizon)])
    exponent, constant = rate_checks(gaps, horizon, softmax_pg_rate_constant(env.rewards, lr, k),
                                     correction)
    return worst(Check(same, EXACT_TOL, "loss-code on-policy update vs closed form"),
                 exponent, constant)
