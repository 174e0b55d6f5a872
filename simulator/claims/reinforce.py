"""Claims about expected REINFORCE-type gradients on softmax bandits (catalogue 4, 5, 8, 10, 14).

Every expectation goes through ``simulator.exact`` (the ordinary loss code on enumerated
groups) and is compared with ``simulator.closed_forms`` (derived on paper) and, where stated,
with the Monte Carlo estimator at 5 standard errors.
"""

from __future__ import annotations

import torch
from torch import Tensor

from simulator.bandit import SoftmaxBandit
from simulator.claims.instances import (
    newton_minimise,
    random_bandit,
    random_behavior,
    uniform,
    well_sampled,
)
from simulator.claims.registry import (
    EXACT_TOL,
    MC_Z,
    Check,
    exact_stderr,
    mc_z_error,
    register_claim,
    relative_error,
    worst,
)
from simulator.closed_forms import (
    asymre_effective_baseline,
    asymre_fixed_point,
    grpo_std_factor,
    mirror_descent_iterates,
    reinforce_expected_logit_gradient,
)
from simulator.exact import (
    expected_gradient,
    expected_pairwise_surrogate,
    iterate_expected_update,
    sampled_gradient,
)
from simulator.policies import random_logits

PAPER = "Yao et al. 2025"


@register_claim("4", "expected_group_reinforce_gradient_is_independent_of_theta",
                PAPER + ", §3 Pitfall 1", prompts=(1, 3), n=(2, 5), k=(1, 4))
def reinforce_gradient(generator: torch.Generator, prompts: int, n: int, k: int) -> Check:
    """E[(1/K)·Σ_i (r_i − r̄)·∇_θ log π(y_i)] = (1 − 1/K)·μ⊙(r − E_μ r) at two random θ
    (enumeration through the ``reinforce`` loss vs the closed form), and the Monte Carlo
    estimator from 400 groups per prompt agrees within 5 exact standard errors (from
    ``gradient_covariance``; on behaviours under which every response is expected ≥ 20 times,
    see ``well_sampled``, so the mean is close to normal)."""
    env = random_bandit(generator, prompts, n)
    mu = random_behavior(env, generator)
    while not well_sampled(mu, 400 * k):  # a near-normal mean needs every response drawn
        mu = random_behavior(env, generator)
    closed = -reinforce_expected_logit_gradient(mu, env.rewards, k) / prompts  # loss gradient
    checks = []
    for _ in range(2):
        theta = random_logits(env, generator, scale=2.0)
        exact = expected_gradient(env, theta, mu, "reinforce", k, method="enumerate")
        checks.append(Check(relative_error(exact, closed), EXACT_TOL, "enumerated vs closed form"))
    mean, _ = sampled_gradient(env, theta, mu, "reinforce", k, 400, generator)
    stderr = exact_stderr(env, theta, mu, "reinforce", k, 400)
    checks.append(Check(mc_z_error(mean, stderr, closed), MC_Z, "Monte Carlo |z| (400 groups)"))
    return worst(*checks)


PITFALL_MU = (0.3, 0.6, 0.1)
PITFALL_R = (0.0, 0.8, 1.0)
PITFALL_GRADIENT = (-0.174, 0.132, 0.042)  # μ⊙(r − E_μ r), by hand: E_μ r = 0.58


def _pitfall_env() -> tuple[SoftmaxBandit, Tensor]:
    env = SoftmaxBandit(torch.tensor([PITFALL_R], dtype=torch.float64))
    return env, torch.tensor([PITFALL_MU], dtype=torch.float64)


@register_claim("5", "off_policy_reinforce_on_fixed_behavior_converges_to_a_suboptimal_arm",
                PAPER + ", §3 Pitfall 1", instances=3, k=(2, 8))
def pitfall_off_policy(generator: torch.Generator, k: int) -> Check:
    """μ = [0.3, 0.6, 0.1], r = [0, 0.8, 1]: the expected update is the constant
    (1 − 1/K)·[−0.174, 0.132, 0.042], so θ_t = θ_0 + t·η·(1 − 1/K)·g exactly and π_t → e_2
    (arm 2, reward 0.8), not the optimal arm 3."""
    env, mu = _pitfall_env()
    theta0 = random_logits(env, generator)
    g = (1 - 1 / k) * torch.tensor([PITFALL_GRADIENT], dtype=torch.float64)
    steps, lr = 100, 8.0
    path = iterate_expected_update(env, theta0, mu, "reinforce", k, lr=lr, steps=steps,
                                   record_every=steps, method="enumerate")
    linear = Check(relative_error(path[-1], theta0 + steps * lr * g), EXACT_TOL,
                   "θ_T vs θ_0 + T·η·(1 − 1/K)·[−0.174, 0.132, 0.042]")
    final = torch.softmax(path[-1], dim=-1)[0]
    arm = Check(0.0 if int(final.argmax()) == 1 else 1.0, 0.5, f"argmax π_T = arm 2 (π_T = "
                f"{[round(x, 4) for x in final.tolist()]})")
    return worst(linear, arm)


@register_claim("5b", "on_policy_reinforce_and_mirror_descent_converge_to_the_optimal_arm",
                PAPER + ", §3 Pitfall 1", instances=3, k=(2, 8))
def pitfall_on_policy(generator: torch.Generator, k: int) -> Check:
    """Same bandit: on-policy exact REINFORCE (μ = π_θ) and mirror descent π_t ∝ π_0·e^{t·r/τ}
    both put their mass on arm 3. Checked: argmax π_T = arm 3 for both after T = 1500 steps
    of η·(1 − 1/K) = 2/5, and the on-policy sub-optimality r* − E_{π_t} r decreases between
    T/2 and T. Started near uniform (θ_0 ∼ 0.3·N(0, 1)): from a θ_0 that gives arm 3 little
    mass, exact PG first plateaus near arm 2 for longer than any fixed T (Mei et al. 2020)."""
    env, _ = _pitfall_env()
    theta0 = random_logits(env, generator, scale=0.3)
    # η·(1 − 1/K) = 2/5: Mei et al.'s step for exact softmax PG (smoothness 5/2)
    path = iterate_expected_update(env, theta0, "on-policy", "reinforce", k, lr=0.4 / (1 - 1 / k),
                                   steps=1500, record_every=750)
    probs = torch.softmax(path, dim=-1)[:, 0]
    gaps = 1.0 - probs @ env.rewards[0]
    mirror = mirror_descent_iterates(torch.softmax(theta0[0], -1), env.rewards[0],
                                     uniform(generator, 0.05, 1.0), 200)[-1]
    arms = (int(probs[-1].argmax()), int(mirror.argmax()))
    return worst(Check(0.0 if arms == (2, 2) else 1.0, 0.5, f"best arm of (on-policy, mirror) "
                       f"= ({arms[0] + 1}, {arms[1] + 1}), must be (3, 3)"),
                 Check(float(gaps[-1] / gaps[-2]), 1.0, "gap(T)/gap(T/2) < 1"))


@register_claim("5c", "iterated_surrogate_minimisation_off_policy_is_mirror_descent",
                PAPER + ", §2–§3", instances=3, k=(2, 3))
def pitfall_surrogate(generator: torch.Generator, k: int) -> Check:
    """Same bandit, fixed off-policy μ = [0.3, 0.6, 0.1]: minimising the exact population
    surrogate E_μ[L̂(θ; π_t)] (Newton) and re-anchoring, three times, reproduces mirror
    descent π_t ∝ π_0·e^{t·r/τ} — which goes to arm 3, unlike off-policy REINFORCE (claim 5).
    Tolerance: the sum of the three Newton tolerances 10‖∇‖/λ_min."""
    env, mu = _pitfall_env()
    theta0, tau = random_logits(env, generator), uniform(generator, 0.2, 1.0)
    mirror = mirror_descent_iterates(torch.softmax(theta0, -1), env.rewards, tau, 3)
    anchor, tolerance, errors = theta0, EXACT_TOL, []
    for t in range(1, 4):
        def population(x: Tensor, anchor: Tensor = anchor) -> Tensor:
            z = torch.cat([x, x.new_zeros(1)]).unsqueeze(0)
            return expected_pairwise_surrogate(env, z, anchor, mu, k, tau)

        x, grad_norm, lam = newton_minimise(population, torch.zeros(2, dtype=torch.float64))
        anchor = torch.cat([x, x.new_zeros(1)]).unsqueeze(0)
        tolerance += 10 * grad_norm / lam
        errors.append(float((torch.softmax(anchor, -1) - mirror[t]).abs().max()))
    return Check(max(errors), tolerance, f"|π_t − mirror descent π_t|∞, t = 1..3 (π_3 = "
                 f"{[round(p, 3) for p in torch.softmax(anchor, -1)[0].tolist()]})")


def _asymre_instance(generator: torch.Generator, prompts: int, n: int, k: int, beta: float
                     ) -> tuple[SoftmaxBandit, Tensor, Tensor]:
    env = random_bandit(generator, prompts, n)
    mu = random_behavior(env, generator)
    return env, mu, asymre_effective_baseline(mu, env.rewards, beta, k)


def _slow_modes(mu: Tensor, r: Tensor, v: Tensor, target: Tensor) -> bool:
    """Whether the fixed point has a mode that 3000 steps of η = 1/β cannot resolve to 1e-6:
    an active π(a) < 0.03, or an inactive a with relative drift (λ − w_a)/c < 0.03 (w_a =
    μ(a)(r(a) − V), c = E_μ r − V; with η = 1/β = 1/((1 − 1/K)·c) the per-step linear rates
    are about the eigenvalues of diag π − ππᵀ and (λ − w_a)/c)."""
    c = (mu * r).sum(-1, keepdim=True) - v.unsqueeze(-1)
    w = mu * (r - v.unsqueeze(-1))
    lam = torch.where(target > 0, w - c * target, -torch.inf).max(-1, keepdim=True).values
    small_active = (target > 0) & (target < 3e-2)
    slow_inactive = (target == 0) & ((lam - w) / c < 3e-2)
    return bool((small_active | slow_inactive).any())


def asymre_kkt_checks(env: SoftmaxBandit, mu: Tensor, k: int, beta: float, pi: Tensor
                      ) -> tuple[Check, Check, Check]:
    """Whether π [P, N] is where AsymRE's exact expected dynamics under μ come to rest.

    g = −P·∇_θ E[asymre loss] at π (the loss code's exact expected logit update, fast path;
    tabular, so it depends on π alone) is (1 − 1/K)·(μ⊙(r − V) − π·(E_μ r − V)). A limit π of
    θ ← θ + η·g needs the logits of its support to drift together and every other logit to
    drift no faster (so its share keeps shrinking): with λ the common drift of the support,
    stationarity g_a = λ where π_a > 0, dual feasibility g_a ≤ λ where π_a = 0 (complementary
    slackness is this split: π_a·(λ − g_a) = 0), and π ∈ Δ. These are the KKT conditions of
    π = Proj_Δ(μ⊙(r − V)/(E_μ r − V)). Inactive logits are log 1e-300 (π_a = 0 to float64).
    """
    logits = torch.log(pi.clamp(min=1e-300))
    g = -expected_gradient(env, logits, mu, "asymre", k, beta=beta) * env.num_prompts
    active = pi > 0
    drift = (g * active).sum(-1, keepdim=True) / active.sum(-1, keepdim=True)
    scale = float(g.abs().max().clamp(min=1.0))
    stationarity = float(torch.where(active, (g - drift).abs(), 0.0).max()) / scale
    dual = float(torch.where(active, 0.0, (g - drift).clamp(min=0.0)).max()) / scale
    primal = max(float((-pi).clamp(min=0.0).max()), float((pi.sum(-1) - 1).abs().max()))
    return (Check(stationarity, EXACT_TOL, "KKT stationarity: max |g_a − λ| on the support"),
            Check(dual, EXACT_TOL, "KKT dual feasibility: max (g_a − λ)₊ off the support"),
            Check(primal, EXACT_TOL, "KKT primal feasibility: π ≥ 0, Σ π = 1"))


@register_claim("8", "asymre_dynamics_converge_to_the_projected_fixed_point_when_v_below_mean",
                "Arnal et al. 2025; " + PAPER + ", §5", instances=3, prompts=(1, 4), n=(2, 5),
                k=(2, 4))
def asymre_fixed_point_claim(generator: torch.Generator, prompts: int, n: int, k: int) -> Check:
    """AsymRE (β > 0 ⇔ V = E_μ r − β·K/(K−1) < E_μ r) under fixed μ: the exact expected
    dynamics (``asymre`` loss, fast path, checked against enumeration here) come to rest at
    π = Proj_Δ(μ⊙(r − V)/(E_μ r − V)). On every instance: the KKT conditions of that point for
    the loss code's expected update (``asymre_kkt_checks``), to float64 rounding. Where the
    slowest linear rate resolves it in T = 3000 steps of η = 1/β (``_slow_modes``), also
    |π_T − π_fp|∞ ≤ 1e-6 for the iterated dynamics from a random θ; elsewhere convergence is
    too slow to observe (an arm at the edge of the active set converges arbitrarily slowly)
    and only the KKT conditions are checked — the instance is kept, never redrawn. Step size
    matters: the discrete map is stable only for η·β·‖diag π − ππᵀ‖ < 2 (η = 10 was seen to
    lock into a 2-cycle far from π_fp)."""
    beta = uniform(generator, 0.1, 0.6)
    env, mu, v = _asymre_instance(generator, prompts, n, k, beta)
    target = asymre_fixed_point(mu, env.rewards, v)
    theta = random_logits(env, generator)
    fast = expected_gradient(env, theta, mu, "asymre", k, beta=beta)
    slow = expected_gradient(env, theta, mu, "asymre", k, beta=beta, method="enumerate")
    checks = [Check(relative_error(fast, slow), EXACT_TOL, "fast path vs enumeration"),
              *asymre_kkt_checks(env, mu, k, beta, target)]
    if not _slow_modes(mu, env.rewards, v, target):
        path = iterate_expected_update(env, theta, mu, "asymre", k, lr=1 / beta, steps=3000,
                                       record_every=3000, beta=beta)
        final = torch.softmax(path[-1], dim=-1)
        checks.append(Check(float((final - target).abs().max()), 1e-6,
                            "|π_T − Proj_Δ(...)|∞ after 3000 steps"))
    return worst(*checks)


@register_claim("8b", "asymre_support_collapses_when_v_at_or_above_mean",
                "Arnal et al. 2025; " + PAPER + ", §5", instances=3, prompts=(1, 4), n=(2, 5),
                k=(2, 4))
def asymre_collapse(generator: torch.Generator, prompts: int, n: int, k: int) -> Check:
    """β ≤ 0 (V ≥ E_μ r): θ̇ = (1−1/K)·μ⊙(r − E_μ r) + β·(μ − π) has no interior limit and
    the policy collapses onto one response. Error: 1 − max_a π_T(a) after T = 3000 steps
    (β ∈ [−0.5, 0]); tolerance 1e-3 (the leading logit gap grows linearly in t)."""
    beta = -uniform(generator, 0.0, 0.5)
    env, mu, _ = _asymre_instance(generator, prompts, n, k, beta)
    theta = random_logits(env, generator)
    path = iterate_expected_update(env, theta, mu, "asymre", k, lr=10.0, steps=3000,
                                   record_every=3000, beta=beta)
    final = torch.softmax(path[-1], dim=-1)
    return Check(float((1 - final.max(dim=-1).values).max()), 1e-3, "1 − max_a π_T(a)")


@register_claim("10", "grpo_std_normalisation_reweights_prompts_by_difficulty",
                "Yao et al. 2025, §8 (GRPO); derived in closed_forms.grpo_std_factor",
                n=(2, 5), k=(1, 5))
def grpo_std(generator: torch.Generator, n: int, k: int) -> Check:
    """Binary rewards, on-policy, θ = θ_old: E[Σ_i (r_i − r̄)/σ·∇log π(y_i)] = c_K(p)·∇p with
    c_K(p) = E_{m∼Bin(K,p)}[√(m(K−m))]/(p(1−p)); mean baseline: (K − 1)·∇p. Checked through
    ``grpo`` (eps = 0; token-mean gives the 1/K) and ``reinforce``, plus Monte Carlo (on
    policies with 0.1 ≤ p ≤ 0.9 and every response expected ≥ 20 times)."""
    rewards = torch.zeros(1, n, dtype=torch.float64)
    winners = torch.randperm(n, generator=generator)[: 1 + int(torch.randint(0, n - 1, (),
                                                                               generator=generator))]
    rewards[0, winners] = 1.0
    env = SoftmaxBandit(rewards)
    theta = random_logits(env, generator)
    # the sample SE needs every response drawn often and mixed groups (0.1 ≤ p ≤ 0.9)
    while not (well_sampled(torch.softmax(theta, -1), 400 * k)
               and 0.1 <= float((torch.softmax(theta, -1) * rewards).sum()) <= 0.9):
        theta = random_logits(env, generator)
    pi = torch.softmax(theta, dim=-1)
    p = float((pi * rewards).sum())
    grad_p = pi * (rewards - p)  # ∇_θ p for p = Σ_{winners} π
    std = expected_gradient(env, theta, "on-policy", "grpo", k, advantage_kwargs={"eps": 0.0})
    mean = expected_gradient(env, theta, "on-policy", "reinforce", k, method="enumerate")
    est, _ = sampled_gradient(env, theta, "on-policy", "grpo", k, 400, generator,
                              advantage_kwargs={"eps": 0.0})
    stderr = exact_stderr(env, theta, "on-policy", "grpo", k, 400, advantage_kwargs={"eps": 0.0})
    expected_std = -grpo_std_factor(p, k) / k * grad_p
    return worst(Check(relative_error(std, expected_std), EXACT_TOL, "grpo vs −c_K(p)/K·∇p"),
                 Check(relative_error(mean, -(k - 1) / k * grad_p), EXACT_TOL,
                       "reinforce vs −(K−1)/K·∇p"),
                 Check(mc_z_error(est, stderr, expected_std), MC_Z, "Monte Carlo |z|"))
