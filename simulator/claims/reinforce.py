"""Claims about expected REINFORCE-type gradients and their dynamics (catalogue 4, 4b, 5, 8,
8c, 8d, 10, 14): on softmax bandits, and on trees where claim 4 needs its condition (4b).

Every expectation goes through ``simulator.exact`` (the ordinary loss code on enumerated
groups) and is compared with ``simulator.closed_forms`` (derived on paper) and, where stated,
with the Monte Carlo estimator at 5 standard errors.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from simulator.bandit import SoftmaxBandit
from simulator.claims.instances import (
    newton_minimise,
    random_bandit,
    random_behavior,
    random_tree,
    uniform,
    well_sampled,
)
from simulator.claims.references import PAPER
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
    softmax_pg_rate_constant,
)
from simulator.exact import (
    GroupBatch,
    LossSetup,
    batch_loss,
    expected_gradient,
    expected_loss,
    expected_pairwise_surrogate,
    iterate_expected_update,
    sample_groups,
    sampled_gradient,
)
from simulator.policies import policy_behavior, random_logits


@register_claim("4", "expected_group_reinforce_gradient_is_independent_of_theta",
                PAPER + " (Pitfall 1); the factor 1 − 1/K: our derivation",
                prompts=(1, 3), n=(2, 5), k=(1, 4))
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


@register_claim("4b", "on_deep_trees_the_expected_reinforce_gradient_depends_on_theta",
                "our derivation (condition of claim 4: one softmax over whole responses)",
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


PITFALL_MU = (0.3, 0.6, 0.1)
PITFALL_R = (0.0, 0.8, 1.0)
PITFALL_GRADIENT = (-0.174, 0.132, 0.042)  # μ⊙(r − E_μ r), by hand: E_μ r = 0.58


def _pitfall_env() -> tuple[SoftmaxBandit, Tensor]:
    env = SoftmaxBandit(torch.tensor([PITFALL_R], dtype=torch.float64))
    return env, torch.tensor([PITFALL_MU], dtype=torch.float64)


@register_claim("5", "off_policy_reinforce_on_fixed_behavior_converges_to_a_suboptimal_arm",
                PAPER + " (Pitfall 1)", instances=3, slow=20, k=(2, 8))
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
                PAPER + " (Pitfall 1)", instances=3, slow=20, k=(2, 8))
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
                "our derivation (Eq. 4 and 6 of " + PAPER + ", on Pitfall 1's bandit)",
                instances=3, slow=20, k=(2, 3))
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
                "Arnal et al. 2025 (AsymRE); the fixed point: our derivation", instances=3, slow=20,
                prompts=(1, 4), n=(2, 5), k=(2, 4))
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
                "Arnal et al. 2025 (AsymRE); the collapse: our derivation", instances=3, slow=20,
                prompts=(1, 4), n=(2, 5), k=(2, 4))
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


def _beta_term(env: object, theta: Tensor, mu: Tensor, k: int, beta: float, agg: str,
               what: str) -> Tensor:
    """E_{groups of K ∼ μ}[asymre − reinforce] (the same group-mean A and ``agg``): the value
    (``what="value"``) or its gradient in θ, by enumeration through the loss code."""
    if what == "value":
        return (expected_loss(env, theta, mu, "asymre", k, beta=beta, agg=agg, method="enumerate")
                - expected_loss(env, theta, mu, "reinforce", k, agg=agg, method="enumerate"))
    return (expected_gradient(env, theta, mu, "asymre", k, beta=beta, agg=agg,
                              method="enumerate")
            - expected_gradient(env, theta, mu, "reinforce", k, agg=agg, method="enumerate"))


def _kl_from(mu: Tensor, env: object, theta: Tensor) -> Tensor:
    """(1/P)·Σ_p KL(μ_p ‖ π_θ,p) over whole responses, from the definition."""
    return (mu * (torch.log(mu) - env.sequence_logprobs(theta))).sum() / env.num_prompts


@register_claim("8c", "asymre_beta_term_is_beta_times_kl_from_the_sampler_for_every_group_size",
                PAPER + ", AsymRE as regularised REINFORCE; Arnal et al. 2025 (AsymRE); "
                "exact for every K and the per-group identity: our derivation",
                prompts=(1, 2), vocab=(2, 3), depth=(1, 3), k=(1, 4))
def asymre_beta_kl(generator: torch.Generator, prompts: int, vocab: int, depth: int, k: int
                   ) -> Check:
    """AsymRE's extra term (``asymre`` − ``reinforce``, same group-mean A, sequence
    log-probabilities: ``seq-mean-token-sum``) on any group of K responses from μ = π_old is
    −(β/K)·Σ_i log π_θ(y_i) = (β/K)·Σ_i log(π_old(y_i)/π_θ(y_i)) − (β/K)·Σ_i log π_old(y_i),
    the last sum free of θ. Its expectation over groups of K ∼ π_old is
    β·KL(π_old‖π_θ) + β·H(π_old) exactly, for every K ≥ 1 (a mean of K terms of the same
    expectation), so its expected gradient is β·∇KL(π_old‖π_θ) exactly: the KL appears without
    a large-K limit. Three routes: the identity group by group on sampled groups, the
    enumerated expectation of the value against the KL and entropy computed from their
    definitions, and the enumerated expected gradient against autograd of β·KL."""
    env = random_tree(generator, prompts, vocab, depth)
    theta, mu = random_logits(env, generator), random_behavior(env, generator)
    beta, agg = uniform(generator, 0.05, 1.0), "seq-mean-token-sum"
    batch = sample_groups(mu, k, 3, generator)
    setups = [LossSetup.from_keywords("asymre", beta=beta, agg=agg),
              LossSetup.from_keywords("reinforce", agg=agg)]
    seq = env.sequence_logprobs(theta)
    per_group = []
    for g in range(batch.prompt.shape[0]):  # each group alone: batch_loss = loss(g)/P
        one = GroupBatch(batch.prompt[g:g + 1], batch.responses[g:g + 1],
                         batch.weight.new_ones(1), exact=False)
        term = (batch_loss(env, theta, one, mu, setups[0])
                - batch_loss(env, theta, one, mu, setups[1])) * env.num_prompts
        rows = batch.responses[g]
        p = batch.prompt[g]
        log_old = torch.log(mu[p, rows])
        identity = beta * (log_old - seq[p, rows]).mean() - beta * log_old.mean()
        per_group.append(float((term - identity).abs()))
    entropy = -(mu * torch.log(mu)).sum() / env.num_prompts
    value = _beta_term(env, theta, mu, k, beta, agg, "value")
    grad = _beta_term(env, theta, mu, k, beta, agg, "gradient")
    kl_grad = torch.func.grad(lambda z: beta * _kl_from(mu, env, z))(theta)
    return worst(Check(max(per_group), EXACT_TOL,
                       "per group: β-term − (β/K)Σ log(π_old/π_θ) + (β/K)Σ log π_old"),
                 Check(relative_error(value, beta * (_kl_from(mu, env, theta) + entropy)),
                       EXACT_TOL, f"E[β-term] vs β·(KL + H), K = {k}"),
                 Check(relative_error(grad, kl_grad), EXACT_TOL, f"E[∇ β-term] vs β·∇KL, K = {k}"))


@register_claim("8d", "with_the_token_mean_the_asymre_beta_term_is_not_the_kl_gradient",
                "our derivation (condition of claim 8c: sequence log-probabilities)",
                vocab=(2, 3), depth=(2, 3), k=(1, 3))
def asymre_token_mean(generator: torch.Generator, vocab: int, depth: int, k: int) -> Check:
    """With the token mean (``asymre``'s default aggregation and the released config's), on a
    tree with EOS (responses of unequal length), the β-term is −β·Σ_i Σ_t log π_t / Σ_i L_i:
    a length-weighted cross-entropy, and its expected gradient is not β·∇KL(π_old‖π_θ). At
    π_θ = π_old, where ∇KL = 0 (and claim 8c's seq-sum β-term has expected gradient 0), the
    token-mean β-term's expected gradient is nonzero. Passes when its largest component is
    ≥ 1e-8 (100 × the identity tolerance) while the seq-sum one is 0 to rounding."""
    env = random_tree(generator, 1, vocab, depth, eos=True)
    theta = random_logits(env, generator)
    mu, beta = policy_behavior(env, theta), uniform(generator, 0.05, 1.0)
    sequence = _beta_term(env, theta, mu, k, beta, "seq-mean-token-sum", "gradient")
    token = float(_beta_term(env, theta, mu, k, beta, "token-mean", "gradient").abs().max())
    return worst(Check(float(sequence.abs().max()), EXACT_TOL, "seq-sum: E[∇ β-term] at π_old"),
                 Check(1e-8 / max(token, 1e-300), 1.0,
                       f"1e-8/‖E[∇ β-term]‖∞ with token-mean at π_old (= {token:.3e})"))


@register_claim("10", "grpo_std_normalisation_reweights_prompts_by_difficulty",
                "Shao et al. 2024 (GRPO's std); c_K(p): our derivation "
                "(closed_forms.grpo_std_factor)", n=(2, 5), k=(1, 5))
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
                "Mei et al. 2020, Thm 2 and 10; the constant: our derivation (closed_forms)",
                instances=2, slow=30, prompts=(2, 6), n=(2, 5), k=(2, 4))
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
