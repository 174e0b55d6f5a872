"""Closed forms: independent references for the exact simulators and the theory catalogue.

Nothing here imports the loss zoo: each formula is derived on paper from the definitions and
written directly, so that agreement with ``simulator.exact`` (which goes through the ordinary
loss code) is evidence, not tautology. Conventions: distributions are tensors [..., N] over the
responses of one prompt (leading dims batch over prompts); "gradient" means the ascent
direction of the objective the loss descends, unless the name says "loss".

Derivations (tabular softmax, ∇_θ log π(y) = e_y − π):
* KL-regularised optimum: max_π E_π r − τ·KL(π‖π_t) is strictly concave on the simplex; the
  Lagrange condition r − τ·(log π − log π_t) = const gives π* = π_t·e^{r/τ}/Z.
* Group-relative REINFORCE: E[(r_i − r̄)·1{y_i = a}] = μ(a)·(r(a) − (r(a) + (K−1)·E_μ r)/K),
  so E[(1/K)·Σ_i (r_i − r̄)·∇log π(y_i)] = (1 − 1/K)·μ ⊙ (r − E_μ r) (the π term cancels
  because Σ_i (r_i − r̄) = 0): independent of θ.
* AsymRE with a fixed baseline V: θ̇ = μ⊙(r − V) − π·(E_μ r − V). With c = E_μ r − V > 0 the
  stationary points on an active set S satisfy μ(a)(r(a) − V) − c·π(a) = λ for a ∈ S and
  μ(a)(r(a) − V) ≤ λ off S, i.e. π = Proj_Δ(μ⊙(r − V)/c) (Euclidean projection onto the
  simplex; λ = 0 when every r(a) > V).
* Soft Bellman: V(s) = τ·log Σ_a π_t(a|s)·e^{Q(s,a)/τ}, Q(s,a) = r(y) at a leaf, V(s·a)
  otherwise; π*(a|s) = π_t(a|s)·e^{(Q(s,a) − V(s))/τ}.
* GRPO std normalisation, binary r, on-policy, m ∼ Bin(K, p) successes: given m,
  E[Σ_i (r_i − r̄)/σ·∇log π(y_i) | m] = √(m(K−m))/(p(1−p))·∇p (σ the population std), since
  E[∇log π(y) | success] = ∇p/p and E[∇log π(y) | failure] = −∇p/(1−p).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from simulator.validation import require_float_tensor, require_int, require_positive

__all__ = [
    "asymre_effective_baseline",
    "asymre_fixed_point",
    "grpo_std_factor",
    "kl_regularized_optimum",
    "mirror_descent_iterates",
    "pairwise_surrogate_closed_form",
    "reinforce_expected_logit_gradient",
    "simplex_projection",
    "soft_bellman_policy",
    "softmax_pg_rate_constant",
]


def _pair(name_a: str, a: object, name_b: str, b: object) -> tuple[Tensor, Tensor]:
    a = require_float_tensor(name_a, a)
    b = require_float_tensor(name_b, b)
    if a.shape != b.shape:
        raise ValueError(f"{name_b} must have the shape of {name_a} {tuple(a.shape)}, "
                         f"got {tuple(b.shape)}")
    return a, b


def kl_regularized_optimum(pi_t: Tensor, r: Tensor, tau: float) -> Tensor:
    """π* = π_t·e^{r/τ}/Z, Z = Σ_y π_t(y)·e^{r(y)/τ}: argmax_π E_π r − τ·KL(π‖π_t).

    Computed in log space (stable for small τ). Shapes [..., N].
    """
    pi_t, r = _pair("pi_t", pi_t, "r", r)
    tau = require_positive("tau", tau)
    return torch.softmax(torch.log(pi_t) + r / tau, dim=-1)


def reinforce_expected_logit_gradient(mu: Tensor, r: Tensor, K: int) -> Tensor:
    """E_{y_1..y_K ∼ μ}[(1/K)·Σ_i (r_i − r̄)·∇_θ log π_θ(y_i)] = (1 − 1/K)·μ ⊙ (r − E_μ r).

    The ascent direction of group-relative REINFORCE on a tabular softmax (the loss's gradient
    is its negative), for any θ: it does not depend on θ. Shapes [..., N].
    """
    mu, r = _pair("mu", mu, "r", r)
    if isinstance(K, bool) or not isinstance(K, int) or K < 1:
        raise ValueError(f"K must be an int >= 1, got {K!r}")
    mean = (mu * r).sum(dim=-1, keepdim=True)
    return (1.0 - 1.0 / K) * mu * (r - mean)


def simplex_projection(u: Tensor) -> Tensor:
    """argmin_{π ∈ Δ} ‖π − u‖₂ along the last dim (sort-based, Held et al. 1974)."""
    u = require_float_tensor("u", u)
    s, _ = torch.sort(u, dim=-1, descending=True)
    cumulative = s.cumsum(dim=-1) - 1.0
    index = torch.arange(1, u.shape[-1] + 1, dtype=u.dtype)
    active = s - cumulative / index > 0
    rho = active.to(torch.long).cumsum(dim=-1).argmax(dim=-1, keepdim=True)  # last True
    shift = cumulative.gather(-1, rho) / (rho + 1).to(u.dtype)
    return (u - shift).clamp(min=0.0)


def asymre_fixed_point(mu: Tensor, r: Tensor, V: float | Tensor) -> Tensor:
    """Limit of AsymRE's expected dynamics under a fixed μ with baseline V < E_μ r:

    π(a) = max(0, μ(a)(r(a) − V) − λ)/(E_μ r − V), λ ≥ 0 fixing Σ π = 1 — the simplex
    projection of μ⊙(r − V)/(E_μ r − V). For V ≥ E_μ r there is no interior limit (the support
    collapses to one response) and this raises ``ValueError``. Shapes [..., N]; V scalar or [...].
    """
    mu, r = _pair("mu", mu, "r", r)
    V = torch.as_tensor(V, dtype=mu.dtype)
    gap = (mu * r).sum(dim=-1) - V
    if bool((gap <= 0).any()):
        raise ValueError("asymre_fixed_point needs V < E_μ r; for V ≥ E_μ r the support "
                         "collapses and there is no interior fixed point")
    return simplex_projection(mu * (r - V.unsqueeze(-1)) / gap.unsqueeze(-1))


def asymre_effective_baseline(mu: Tensor, r: Tensor, beta: float, K: int) -> Tensor:
    """V such that AsymRE with group-mean advantages, shift β and group size K ≥ 2 follows the
    fixed-baseline dynamics of ``asymre_fixed_point`` (up to a positive time scale):

    E[(1/K)·Σ_i (r_i − r̄ + β)·∇log π(y_i)] = (1 − 1/K)·μ⊙(r − E_μ r) + β·(μ − π)
    = (1 − 1/K)·[μ⊙(r − V) − π·(E_μ r − V)] with V = E_μ r − β·K/(K − 1).
    """
    mu, r = _pair("mu", mu, "r", r)
    K = require_int("K", K, 2)
    return (mu * r).sum(dim=-1) - beta * K / (K - 1)


def _bellman_backup(q: Tensor, ref_logp: Tensor, tau: float) -> tuple[Tensor, Tensor]:
    """(V(s), log π*(·|s)) from Q(s, ·) [P, b] and log π_t(·|s) [P, b]."""
    value = tau * torch.logsumexp(ref_logp + q / tau, dim=-1)
    return value, ref_logp + (q - value.unsqueeze(-1)) / tau


def soft_bellman_policy(tree: object, pi_t: Tensor, tau: float) -> Tensor:
    """Token-level optimum of max_π E_π r − τ·KL(π‖π_t) on a tree: log π*(a|s) [P, M, b].

    ``tree``: a ``TreeMDP`` (uses its ``children`` table and ``rewards``); ``pi_t``: the
    reference policy's logits [P, M, b] (normalised per node here). Backward induction over
    nodes, deepest first (node ids are depth-first, so children have larger ids).
    """
    pi_t = require_float_tensor("pi_t", pi_t)
    tau = require_positive("tau", tau)
    children, rewards = tree.children, tree.rewards  # type: ignore[attr-defined]
    if tuple(pi_t.shape) != (rewards.shape[0], *children.shape):
        raise ValueError(f"pi_t must have shape {(rewards.shape[0], *children.shape)}, "
                         f"got {tuple(pi_t.shape)}")
    ref_logp = torch.log_softmax(pi_t.to(torch.float64), dim=-1)
    values = torch.zeros(rewards.shape[0], children.shape[0], dtype=torch.float64)
    log_policy = torch.zeros_like(ref_logp)
    for node in range(children.shape[0] - 1, -1, -1):
        child = children[node]
        leaf = child < 0
        q = torch.where(leaf, rewards[:, (-1 - child).clamp(min=0)], values[:, child.clamp(min=0)])
        values[:, node], log_policy[:, node] = _bellman_backup(q, ref_logp[:, node], tau)
    return log_policy


def grpo_std_factor(p: float, K: int) -> float:
    """c_K(p) = E_{m∼Bin(K,p)}[√(m(K−m))]/(p(1−p)), 0 < p < 1.

    On-policy with binary rewards, E[Σ_i (r_i − r̄)/σ·∇log π(y_i)] = c_K(p)·∇p (σ = population
    std of the group; groups with σ = 0 contribute 0). The mean baseline alone gives (K − 1)·∇p.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if isinstance(K, bool) or not isinstance(K, int) or K < 1:
        raise ValueError(f"K must be an int >= 1, got {K!r}")
    total = sum(math.comb(K, m) * p**m * (1 - p) ** (K - m) * math.sqrt(m * (K - m))
                for m in range(K + 1))
    return total / (p * (1 - p))


def mirror_descent_iterates(pi_0: Tensor, r: Tensor, tau: float, steps: int) -> Tensor:
    """π_t ∝ π_0·e^{t·r/τ} for t = 0..steps: [steps + 1, ..., N].

    Iterating the KL-regularised step π_{t+1} = π_t·e^{r/τ}/Z_t from π_0 (mirror descent with
    the KL geometry); converges to the uniform distribution over argmax r.
    """
    pi_0, r = _pair("pi_0", pi_0, "r", r)
    tau = require_positive("tau", tau)
    t = torch.arange(steps + 1, dtype=r.dtype).reshape(-1, *([1] * r.ndim))
    return torch.softmax(torch.log(pi_0) + t * r / tau, dim=-1)


def pairwise_surrogate_closed_form(mu: Tensor, a: Tensor, K: int) -> Tensor:
    """E over K i.i.d. draws from μ of (1/K²)·Σ_{i<j} (a_i − a_j)² = ((K − 1)/K)·Var_μ(a).

    a(y) = r(y) − τ·(log π(y) − log π_t(y)) per response; shapes [..., N]. Zero exactly when a
    is constant on the support of μ.
    """
    mu, a = _pair("mu", mu, "a", a)
    mean = (mu * a).sum(dim=-1, keepdim=True)
    return (K - 1) / K * (mu * (a - mean) ** 2).sum(dim=-1)


def softmax_pg_rate_constant(r: Tensor, lr: float, K: int) -> Tensor:
    """lim_{t→∞} t·(max r − E_{π_t} r) for exact on-policy softmax PG on a bandit with a
    unique best arm: m/((m + 1)·η·(1 − 1/K)), m = the number of sub-optimal arms.

    Derivation (continuous-time limit of θ ← θ + η'·π⊙(r − E_π r), η' = η·(1 − 1/K)): near
    the optimum π_a ≈ c_a/t for every sub-optimal a, so d/dt log(π_a/π*) = −1/t must equal
    −η'·(Δ_a·π_a + gap); hence Δ_a·c_a = 1/η' − G for all a and G = Σ_a Δ_a·c_a = m/((m+1)η').
    The rate is Θ(1/t) (Mei et al. 2020) and, to leading order, independent of the gaps Δ_a.
    """
    r = require_float_tensor("r", r)
    lr = require_positive("lr", lr)
    K = require_int("K", K, 2)
    best = r.max(dim=-1, keepdim=True).values
    m = (r < best).sum(dim=-1).to(r.dtype)
    return m / ((m + 1) * lr * (1 - 1 / K))
