"""Claims about token-level trees: soft Bellman, token sums, length normalisation (catalogue 13).

Sequence-level references are built by autograd of sequence log-probabilities (the score
∇log π(y) = Σ_l ∇log π(y^l|y^<l)), never through the loss code they are compared with.
"""

from __future__ import annotations

import torch
from torch import Tensor

from simulator.claims.instances import random_behavior, random_tree
from simulator.claims.references import PAPER
from simulator.claims.registry import EXACT_TOL, Check, register_claim, relative_error
from simulator.closed_forms import (
    kl_regularized_optimum,
    soft_bellman_policy,
)
from simulator.exact import expected_gradient
from simulator.policies import policy_behavior, random_logits
from simulator.tree import TreeMDP


@register_claim("13", "sequence_kl_optimum_is_the_product_of_soft_bellman_token_policies",
                "soft Q-learning (Haarnoja et al. 2017); " + PAPER + ", Eq. 4", prompts=(1, 2),
                vocab=(2, 3), depth=(1, 4))
def soft_bellman(generator: torch.Generator, prompts: int, vocab: int, depth: int) -> Check:
    """Π_l π*(y^l|y^<l) = π_t(y)·e^{r(y)/τ}/Z for every response, with the soft-Bellman token
    policy π*(a|s) = π_t(a|s)·e^{(Q(s,a) − V(s))/τ} (backward induction vs the sequence-level
    closed form)."""
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
                "our derivation (token level)", prompts=(1, 2), vocab=(2, 3), depth=(1, 3),
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
                "Liu et al. 2025 (Dr.GRPO)", prompts=(1, 2), vocab=(2, 3),
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
                "Liu et al. 2025 (Dr.GRPO): its length bias", prompts=(1, 2), vocab=(2, 3),
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
                "Liu et al. 2025 (Dr.GRPO): its length bias", prompts=(1, 1), vocab=(2, 3),
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
