"""Claims about the off-policy corrections with three policies (catalogue 16–20): which
importance weights make μ's samples π_old's, what decoupled PPO, MIS and OPSM compute and
remove, what truncation trades, and the ratio a top-p/top-k sampler leaves.

Every engine number comes from ``simulator.exact`` with ``anchor`` = π_old (the loss's and the
corrections' ratio anchor) and the groups drawn from μ. References are built apart from the
loss code: autograd of Σ_y c(y)·log π(y) (or Σ_y Σ_t c(y, t)·log π(y_t|y_<t)) with the
coefficients c written from the formula, per-token ratios from the policies' own logits.
Sign convention: every gradient is a *loss* gradient (REINFORCE's is −E[A·∇log π]).
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor

from simulator.bandit import SoftmaxBandit
from simulator.claims.instances import random_tree
from simulator.claims.instances import uniform as draw_uniform
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
from simulator.exact import (
    enumerate_groups,
    expected_gradient,
    gradient_covariance,
    group_gradients,
    sample_groups,
    sampled_gradient,
)
from simulator.losses import LOSSES
from simulator.policies import policy_behavior, random_logits, truncated_behavior
from simulator.tree import TreeMDP

UNTRUNCATED = "is:level={level},high=1e300"  # a cap no ratio of these instances reaches
SEQ_SUM = "seq-mean-token-sum"  # (1/K)·Σ_i Σ_t: each row's loss on its own


def _instance(generator: torch.Generator, prompts: int, vocab: int, depth: int,
              eos: bool | None = None, spread: float = 0.7
              ) -> tuple[TreeMDP, Tensor, Tensor, Tensor]:
    """(env, θ, logits of π_old, logits of μ): π_old = θ + spread·ξ, μ = π_old + spread·ξ'."""
    env = random_tree(generator, prompts, vocab, depth, eos)
    theta = random_logits(env, generator)
    old = theta + spread * random_logits(env, generator)
    return env, theta, old, old + spread * random_logits(env, generator)


def _rare_root_token(old: Tensor, mu: Tensor, drop: float) -> None:
    """In place: π_old's root logit of token 0 becomes its row's minimum (so π_old(0|root) ≤ 1/V
    ≤ 1/2) and μ's root row is π_old's with token 0 lowered by ``drop``. Then
    π_old(0)/μ(0) = e^drop·(1 − π_old(0)) + π_old(0) ≥ e^drop/2 at the root (a ratio above
    any cap c ≤ e^drop/2) while the other root tokens have ratios Z_μ/Z_old < 1 (node 0 is the
    root)."""
    old[:, 0, 0] = old[:, 0].min(dim=-1).values
    mu[:, 0] = old[:, 0]
    mu[:, 0, 0] -= drop


def _score_gradient(env: TreeMDP, theta: Tensor, coef: Tensor) -> Tensor:
    """−(1/P)·∇ Σ_p Σ_y coef[p, y]·log π(y) for coef [P, N]; per token for coef [P, N, H]:
    −(1/P)·∇ Σ_p Σ_y Σ_t coef[p, y, t]·log π(y_t|y_<t)."""

    def value(z: Tensor) -> Tensor:
        if coef.dim() == 2:
            logp = env.sequence_logprobs(z)
        else:
            logp = torch.where(env.mask, env.token_logprobs(z), 0.0)
        return -(coef * logp).sum() / env.num_prompts

    return torch.func.grad(value)(theta)


def _token_ratio(env: TreeMDP, num: Tensor, den: Tensor) -> Tensor:
    """π_num(y_t|y_<t)/π_den(y_t|y_<t) [P, N, H] from the two policies' logits (1 on padding)."""
    log = env.token_logprobs(num) - env.token_logprobs(den)
    return torch.where(env.mask, log, 0.0).exp()


def _options(b: float, agg: str = SEQ_SUM) -> dict:
    """REINFORCE with A = r − b per row (advantage 'none' shifted by −b): no coupling."""
    return {"advantage": "none", "advantage_kwargs": {"shift": -b}, "agg": agg,
            "method": "enumerate"}


# ------------------------------------------------------------------------------------------
# 16: sequence-level IS is unbiased where rows do not couple; token-level IS is not
# ------------------------------------------------------------------------------------------


@register_claim("16", "uncoupled_sequence_is_turns_mu_samples_into_pi_old_samples",
                "importance sampling (standard); the conditions: our derivation", instances=6,
                slow=4, prompts=(1, 2), depth=(1, 3), k=(1, 3))
def sequence_is_unbiased(generator: torch.Generator, prompts: int, depth: int, k: int) -> Check:
    """Three policies, groups of K from μ, w = π_old(y)/μ(y) untruncated (``is:level=sequence``),
    REINFORCE with A = r − b (b drawn in [0, 1): each row's advantage is a function of its own
    response): E_μ[group gradient] = E_{π_old}[group gradient] = −E_{π_old}[(r − b)·∇log π(y)],
    for seq-mean-token-sum on EOS trees (unequal lengths) and for token-mean where every length
    is equal (EOS-free tree: token-mean = seq-sum/(K·H)). Routes: the enumeration under μ vs the
    enumeration under π_old, vs the ordered twin (a loop over ordered K-tuples), vs the closed
    form by autograd (all 1e-10), and Monte Carlo
    (``sampled_gradient``, S groups from μ with K·S·min μ ≥ 20, skipped where that needs more
    than 20,000 groups) within MC_Z = 5 exact standard errors (``exact_stderr``) of the
    enumeration: a response expected < 20 times would make the mean's error non-Gaussian."""
    b = draw_uniform(generator, 0.0, 1.0)
    checks = []
    for eos, agg in ((True, SEQ_SUM), (False, "token-mean")):
        env, theta, old_logits, mu_logits = _instance(generator, prompts, 2, depth, eos)
        old, mu = policy_behavior(env, old_logits), policy_behavior(env, mu_logits)
        options = _options(b, agg)
        is_seq = UNTRUNCATED.format(level="sequence")
        corrected = expected_gradient(env, theta, mu, "reinforce", k, anchor=old,
                                      corrections=is_seq, **options)
        from_old = expected_gradient(env, theta, old, "reinforce", k, **options)
        length = 1.0 if eos else float(env.horizon)
        closed = _score_gradient(env, theta, old * (env.rewards - b)) / length
        ordered = expected_gradient(env, theta, mu, "reinforce", k, anchor=old,
                                    corrections=is_seq, **{**options, "method": "ordered"})
        checks += [Check(relative_error(corrected, from_old), EXACT_TOL,
                         f"{agg}: E_μ[w·g] vs E_πold[g] (enumerations)"),
                   Check(relative_error(ordered, corrected), EXACT_TOL,
                         f"{agg}: ordered twin vs enumeration"),
                   Check(relative_error(corrected, closed), EXACT_TOL,
                         f"{agg}: E_μ[w·g] vs −Σ π_old(y)(r − b)∇log π(y)/L")]
        if eos:
            groups = math.ceil(20.0 / (k * float(mu.min())))
            if groups <= 20000:
                options = {key: v for key, v in options.items() if key != "method"}
                mean, _ = sampled_gradient(env, theta, mu, "reinforce", k, groups, generator,
                                           anchor=old, corrections=is_seq, **options)
                stderr = exact_stderr(env, theta, mu, "reinforce", k, groups, anchor=old,
                                      corrections=is_seq, **options)
                checks.append(Check(mc_z_error(mean, stderr, corrected), MC_Z,
                                    f"Monte Carlo ({groups} groups): max |z|, exact SE"))
    return worst(*checks)


@register_claim("16b", "untruncated_sequence_is_is_biased_where_the_group_couples_its_members",
                "our derivation (condition of claim 16)", instances=8, depth=(2, 3), k=(2, 3))
def sequence_is_coupled(generator: torch.Generator, depth: int, k: int) -> Check:
    """Condition of claim 16: where a row's loss depends on the other members of its group —
    token-mean over responses of unequal length (EOS tree, depth ≥ 2: the normaliser Σ_i L(y_i)
    is drawn from μ) or GRPO's group mean-std advantage (K ≥ 2) — the untruncated sequence
    weight does not turn E_μ into E_{π_old}: the enumerations under μ (weighted) and under
    π_old differ. Passes when both relative gaps exceed 1e-8, 100 × EXACT_TOL (the identities
    of claim 16 hold here to ~1e-15): a gap that round-off cannot make. The token-mean gap can
    be small: the smallest of 350 instances was 4.9e-7; if its density near 0 is flat, a true
    gap below 1e-8 — a false failure — comes about once in 10⁴ instances, MC_Z's budget;
    GRPO's smallest of 100 was 5.3e-5."""
    env, theta, old_logits, mu_logits = _instance(generator, 1, 2, depth, eos=True)
    old, mu = policy_behavior(env, old_logits), policy_behavior(env, mu_logits)
    gaps = {}
    for loss, options in (("reinforce", {"advantage": "none", "agg": "token-mean"}),
                          ("grpo", {"agg": SEQ_SUM})):
        corrected = expected_gradient(env, theta, mu, loss, k, anchor=old, method="enumerate",
                                      corrections=UNTRUNCATED.format(level="sequence"),
                                      **options)
        target = expected_gradient(env, theta, old, loss, k, method="enumerate", **options)
        gaps[loss] = relative_error(corrected, target)
    return Check(1e-8 / max(min(gaps.values()), 1e-300), 1.0,
                 "1e-8/min gap (token-mean: {reinforce:.2e}, grpo: {grpo:.2e})".format(**gaps))


@register_claim("16c", "token_level_is_is_mu_prefixes_with_pi_old_tokens_and_biased_on_deep_trees",
                "our derivation (per-token importance ratios, as claim 12b by the rec loss)",
                prompts=(1, 2), vocab=(2, 3), depth=(2, 3), k=(1, 3))
def token_is_biased(generator: torch.Generator, prompts: int, vocab: int, depth: int, k: int
                    ) -> Check:
    """Token-level untruncated IS (``is:level=token``), REINFORCE, A = r − b, seq-sum: the
    engine's expected gradient is −Σ_y μ(y)·Σ_t ρ_t(y)·(r − b)·∇log π(y_t|y_<t) with
    ρ_t = π_old(y_t|y_<t)/μ(y_t|y_<t) (checked to 1e-10: μ's prefixes, π_old only at the
    reweighted token), which is not −E_{π_old}[(r − b)·∇log π] at depth ≥ 2: passes when that
    relative bias also exceeds 1e-8, 100 × EXACT_TOL (smallest of 400 instances: 2.0e-4)."""
    env, theta, old_logits, mu_logits = _instance(generator, prompts, vocab, depth)
    old, mu = policy_behavior(env, old_logits), policy_behavior(env, mu_logits)
    b = draw_uniform(generator, 0.0, 1.0)
    token = expected_gradient(env, theta, mu, "reinforce", k, anchor=old,
                              corrections=UNTRUNCATED.format(level="token"), **_options(b))
    advantage = (mu * (env.rewards - b)).unsqueeze(-1)
    closed = _score_gradient(env, theta, advantage * _token_ratio(env, old_logits, mu_logits))
    target = _score_gradient(env, theta, old * (env.rewards - b))
    bias = relative_error(token, target)
    return worst(Check(relative_error(token, closed), EXACT_TOL,
                       "token IS vs −Σ μ(y)Σ_t ρ_t A ∇log π_t"),
                 Check(1e-8 / max(bias, 1e-300), 1.0, f"1e-8/bias (relative bias {bias:.3e})"))


@register_claim("16d", "with_the_group_mean_baseline_sequence_is_uses_mu_s_mean_reward",
                "our derivation (condition of claim 16)", prompts=(1, 2), vocab=(2, 3),
                depth=(1, 3), k=(2, 3))
def sequence_is_mean_baseline(generator: torch.Generator, prompts: int, vocab: int, depth: int,
                              k: int) -> Check:
    """The group-mean baseline couples the members, but linearly: with untruncated sequence IS,
    A_i = r_i − r̄ and seq-sum, E_μ[group gradient] = −(1 − 1/K)·(E_{π_old}[r·∇log π]
    − E_μ[r]·E_{π_old}[∇log π]) (the baseline's expectation is μ's mean reward, not π_old's),
    so it differs from E_{π_old}[group gradient] by (1 − 1/K)·(E_μ r − E_{π_old} r)·
    E_{π_old}[∇log π] (loss gradient): zero iff that product is, e.g. at π_old = π_θ (where
    E_{π_θ}[∇log π_θ] = 0; ``tests/test_exact_three_policies.py``). Checked: the engine vs the
    closed form (1e-10), the gap vs its closed form (1e-10), and the gap exceeds 1e-8 (100 ×
    EXACT_TOL) at π_old ≠ π_θ."""
    env, theta, old_logits, mu_logits = _instance(generator, prompts, vocab, depth)
    old, mu = policy_behavior(env, old_logits), policy_behavior(env, mu_logits)
    options = {"advantage": "mean", "agg": SEQ_SUM, "method": "enumerate"}
    corrected = expected_gradient(env, theta, mu, "reinforce", k, anchor=old,
                                  corrections=UNTRUNCATED.format(level="sequence"), **options)
    from_old = expected_gradient(env, theta, old, "reinforce", k, **options)
    mean_mu = (mu * env.rewards).sum(-1, keepdim=True)
    mean_old = (old * env.rewards).sum(-1, keepdim=True)
    closed = (1 - 1 / k) * _score_gradient(env, theta, old * (env.rewards - mean_mu))
    gap = (1 - 1 / k) * _score_gradient(env, theta, old * (mean_old - mean_mu))
    size = relative_error(corrected, from_old)
    return worst(Check(relative_error(corrected, closed), EXACT_TOL,
                       "E_μ[w·g] vs −(1 − 1/K)(E_πold[r∇log π] − E_μ r·E_πold[∇log π])"),
                 Check(relative_error(corrected - from_old, gap), EXACT_TOL,
                       "gap vs (1 − 1/K)(E_μ r − E_πold r)E_πold[∇log π]"),
                 Check(1e-8 / max(size, 1e-300), 1.0, f"1e-8/gap (relative {size:.2e})"))


# ------------------------------------------------------------------------------------------
# 17, 18: decoupled PPO at θ_prox; what MIS and OPSM remove
# ------------------------------------------------------------------------------------------


def _per_group_reference(env: TreeMDP, theta: Tensor, responses: Tensor, coef: Tensor
                         ) -> Tensor:
    """[G, *θ]: −(1/K)·∇ Σ_i Σ_t coef[g, i, t]·log π(y_{g,i,t}|·) per group (seq-mean-token-sum,
    one prompt), by autograd of the token log-probs."""

    def losses(z: Tensor) -> Tensor:
        logp = torch.where(env.mask[responses], env.token_logprobs(z)[0, responses], 0.0)
        return -(coef * logp).sum(dim=(-1, -2)) / responses.shape[-1]

    return torch.func.jacrev(losses)(theta)


@register_claim("17", "decoupled_ppo_at_the_proximal_policy_is_capped_token_is_reinforce",
                "Fu et al. 2025 (AReaL decoupled PPO); our derivation", prompts=(1, 2),
                vocab=(2, 3), depth=(1, 3), k=(2, 3))
def decoupled_ppo(generator: torch.Generator, prompts: int, vocab: int, depth: int, k: int
                  ) -> Check:
    """At θ = θ_prox (anchor π_prox = π_θ, so PPO's ratio π_θ/π_prox is 1 and unclipped), the
    ``decoupled-ppo`` preset (PPO-clip × π_prox/μ per token, tokens with π_prox/μ > 5 dropped,
    mean-std advantage, token-mean) has the gradient of REINFORCE with the same advantage and
    the token weight w_t = (π_prox/μ)(y_t)·1[π_prox/μ ≤ 5] (``mis-token:high=5``): checked per
    group (16 groups from μ) and in expectation (enumeration), to 1e-10. With A = r − b and
    seq-sum its expected gradient is −Σ_y μ(y)Σ_t w_t·A·∇log π_t, and the cap removes exactly
    −Σ_y μ(y)Σ_t 1[ρ_t > 5]·ρ_t·A·∇log π_t (closed forms, 1e-10). μ's root token 0 is made
    rare (ratio ≥ e⁶/2 > 5) so the cap always bites; passes only if it removes a nonzero part."""
    env, theta, _, mu_logits = _instance(generator, prompts, vocab, depth)
    _rare_root_token(theta, mu_logits, 6.0)  # π_prox = π_θ: θ's root row changes
    prox, mu = policy_behavior(env, theta), policy_behavior(env, mu_logits)
    capped = {"advantage": "mean-std", "agg": "token-mean", "corrections": "mis-token:high=5.0",
              "anchor": prox}
    batch = sample_groups(mu, k, 16, generator)
    per_group = relative_error(group_gradients(env, theta, batch, mu, "decoupled-ppo",
                                               anchor=prox),
                               group_gradients(env, theta, batch, mu, "reinforce", **capped))
    expected = expected_gradient(env, theta, mu, "decoupled-ppo", k, anchor=prox,
                                 method="enumerate")
    reference = expected_gradient(env, theta, mu, "reinforce", k, method="enumerate", **capped)
    b = draw_uniform(generator, 0.0, 1.0)
    rho = _token_ratio(env, theta, mu_logits)
    advantage = (mu * (env.rewards - b)).unsqueeze(-1)
    plain = {"anchor": prox, **_options(b)}
    seq = expected_gradient(env, theta, mu, "decoupled-ppo", k, **plain)
    uncapped = expected_gradient(env, theta, mu, "ppo", k, **plain,
                                 corrections=UNTRUNCATED.format(level="token"))
    removed = _score_gradient(env, theta, advantage * rho * (rho > 5.0))
    size = float(removed.abs().max())
    return worst(
        Check(per_group, EXACT_TOL, "per group: decoupled-ppo vs REINFORCE × mis-token:5"),
        Check(relative_error(expected, reference), EXACT_TOL, "expected: the same"),
        Check(relative_error(seq, _score_gradient(env, theta, advantage * rho * (rho <= 5.0))),
              EXACT_TOL, "A = r − b, seq-sum: vs −Σ μ Σ_t ρ_t 1[ρ_t ≤ 5] A ∇log π_t"),
        Check(relative_error(uncapped - seq, removed), EXACT_TOL,
              "uncapped − capped vs −Σ μ Σ_t 1[ρ_t > 5] ρ_t A ∇log π_t"),
        Check(1e-8 / max(size, 1e-300), 1.0, f"1e-8/‖removed‖∞ (removed {size:.2e})"))


def _group_advantages(env: TreeMDP, responses: Tensor) -> Tensor:
    """GRPO's mean-std advantages of the groups [G, K] (one prompt)."""
    return LOSSES["grpo"].advantages(env.rewards[0, responses])[0]


@register_claim("18", "mis_removes_exactly_the_over_weighted_tokens_or_sequences",
                "Liu et al. 2025 (MIS); our derivation", vocab=(2, 3), depth=(1, 3), k=(1, 2))
def mis_removes(generator: torch.Generator, vocab: int, depth: int, k: int) -> Check:
    """MIS with cap c ∈ [1.2, 3] (``is`` mask, denominator keep), REINFORCE, anchor π_old, μ
    samples, seq-sum. Token level: untruncated IS minus MIS is exactly
    −Σ_y μ(y)·Σ_t 1[ρ_t > c]·ρ_t·A·∇log π(y_t|y_<t); sequence level (W = π_old(y)/μ(y)):
    −Σ_y π_old(y)·1[W(y) > c]·A·∇log π(y), so mis-seq's expected update is E_{π_old}[A·∇log π]
    restricted to {y: π_old(y) ≤ c·μ(y)}. Closed forms with A = r − b (1e-10), and per group
    on every enumerated group with GRPO's mean-std advantages (the removed rows' −(1/K)·w·A·∇log π
    by autograd, 1e-10). π_old's root token 0 is made rare under μ (ratio ≥ e⁴/2 > 3 ≥ c) so
    something is removed; passes only if it is."""
    env, theta, old_logits, mu_logits = _instance(generator, 1, vocab, depth)
    _rare_root_token(old_logits, mu_logits, 4.0)
    old, mu = policy_behavior(env, old_logits), policy_behavior(env, mu_logits)
    c, b = draw_uniform(generator, 1.2, 3.0), draw_uniform(generator, 0.0, 1.0)
    rho = _token_ratio(env, old_logits, mu_logits)
    seq_w = (env.token_logprobs(old_logits) - env.token_logprobs(mu_logits)).where(
        env.mask, 0.0).sum(-1).exp()  # [P, N]
    adv = env.rewards - b
    checks, sizes = [], []
    batch = enumerate_groups(mu, k)
    rows = batch.responses
    group_adv = _group_advantages(env, rows)
    for level in ("token", "sequence"):
        weight = rho if level == "token" else seq_w.unsqueeze(-1).expand_as(rho)
        over = weight > c
        full = expected_gradient(env, theta, mu, "reinforce", k, anchor=old,
                                 corrections=UNTRUNCATED.format(level=level), **_options(b))
        mis = expected_gradient(env, theta, mu, "reinforce", k, anchor=old,
                                corrections=f"is:level={level},action=mask,high={c}",
                                **_options(b))
        if level == "token":
            removed = _score_gradient(env, theta, (mu * adv).unsqueeze(-1) * rho * over)
        else:
            removed = _score_gradient(env, theta, old * adv * (seq_w > c))
        checks.append(Check(relative_error(full - mis, removed), EXACT_TOL,
                            f"{level}: IS − MIS vs the removed part's closed form"))
        sizes.append(float(removed.abs().max()))
        options = {"advantages": group_adv, "agg": SEQ_SUM, "anchor": old}
        diff = (group_gradients(env, theta, batch, mu, "reinforce",
                                corrections=UNTRUNCATED.format(level=level), **options)
                - group_gradients(env, theta, batch, mu, "reinforce",
                                  corrections=f"is:level={level},action=mask,high={c}",
                                  **options))
        coef = (weight * over)[0, rows] * group_adv.unsqueeze(-1)
        checks.append(Check(relative_error(diff, _per_group_reference(env, theta, rows, coef)),
                            EXACT_TOL, f"{level}: per group, mean-std advantages"))
    checks.append(Check(1e-8 / max(min(sizes), 1e-300), 1.0,
                        f"1e-8/min ‖removed‖∞ (token {sizes[0]:.2e}, sequence {sizes[1]:.2e})"))
    return worst(*checks)


@register_claim("18b", "opsm_removes_exactly_the_negative_drifted_sequences",
                "DeepSeek-V3.2 (OPSM); our derivation", vocab=(2, 3), depth=(1, 3), k=(1, 2))
def opsm_removes(generator: torch.Generator, vocab: int, depth: int, k: int) -> Check:
    """OPSM (``opsm``, ratio current: drift(y) = mean_t log(μ/π_θ)(y_t|y_<t), denominator keep)
    removes from REINFORCE's expected update exactly −Σ_y μ(y)·1[A(y) < 0 ∧ drift(y) > δ]·A·
    ∇log π(y) (A = r − b, b = E_μ r, seq-sum; closed form, 1e-10), and per group with GRPO's
    mean-std advantages exactly the rows with A_i < 0 and drift > δ (autograd, 1e-10). δ is
    set 1e-3 below the largest drift of a response with A < 0, so something is removed; passes
    only if it is."""
    env, theta, old_logits, mu_logits = _instance(generator, 1, vocab, depth)
    old, mu = policy_behavior(env, old_logits), policy_behavior(env, mu_logits)
    b = float((mu * env.rewards).sum())
    adv = env.rewards - b
    log_ratio = (env.token_logprobs(mu_logits) - env.token_logprobs(theta)).where(env.mask, 0.0)
    drift = log_ratio.sum(-1) / env.mask.sum(-1)  # [P, N]
    delta = float(drift[adv < 0].max()) - 1e-3
    correction = f"opsm:delta={delta!r}"
    full = expected_gradient(env, theta, mu, "reinforce", k, anchor=old, **_options(b))
    masked = expected_gradient(env, theta, mu, "reinforce", k, anchor=old,
                               corrections=correction, **_options(b))
    removed = _score_gradient(env, theta, mu * adv * ((adv < 0) & (drift > delta)))
    batch = enumerate_groups(mu, k)
    rows = batch.responses
    group_adv = _group_advantages(env, rows)
    options = {"advantages": group_adv, "agg": SEQ_SUM, "anchor": old}
    diff = (group_gradients(env, theta, batch, mu, "reinforce", **options)
            - group_gradients(env, theta, batch, mu, "reinforce", corrections=correction,
                              **options))
    gone = (group_adv < 0) & (drift[0, rows] > delta)
    coef = (gone * group_adv).unsqueeze(-1).expand(*rows.shape, env.horizon)
    size = float(removed.abs().max())
    return worst(Check(relative_error(full - masked, removed), EXACT_TOL,
                       "expected: no OPSM − OPSM vs the removed sequences' closed form"),
                 Check(relative_error(diff, _per_group_reference(env, theta, rows, coef)),
                       EXACT_TOL, "per group, mean-std advantages"),
                 Check(1e-8 / max(size, 1e-300), 1.0, f"1e-8/‖removed‖∞ ({size:.2e})"))


# ------------------------------------------------------------------------------------------
# 19: truncation trades bias for variance — and what is not monotone
# ------------------------------------------------------------------------------------------


def _truncated(env: TreeMDP, theta: Tensor, mu: Tensor, old: Tensor, k: int, b: float,
               level: str, cap: float) -> tuple[Tensor, Tensor]:
    """(expected gradient, trace of the group gradient's covariance) of truncated IS."""
    options = {"anchor": old, "corrections": f"is:level={level},high={cap!r}", **_options(b)}
    grad = expected_gradient(env, theta, mu, "reinforce", k, **options)
    return grad, torch.diagonal(gradient_covariance(env, theta, mu, "reinforce", k, **options)
                                ).sum()


@register_claim("19", "truncated_is_bias_is_a_closed_form_bounded_by_a_decreasing_mass",
                "Espeholt et al. 2018 (V-trace truncation); our derivation", instances=8,
                vocab=(2, 3), depth=(1, 3), k=(1, 2))
def truncation(generator: torch.Generator, vocab: int, depth: int, k: int) -> Check:
    """Truncated IS w_c = min(W, c), REINFORCE, A = r − b, seq-sum, one prompt, caps c on a
    grid of 6 in [0.3, c*·1.1], c* = max_y π_old(y)/μ(y). (i) Sequence level, the bias (truncated
    − untruncated loss gradient) is Σ_y (π_old(y) − c·μ(y))₊·A(y)·∇log π(y); token level,
    −Σ_y μ(y)Σ_t (min(ρ_t, c) − ρ_t)·A·∇log π_t (closed forms, 1e-10). (ii) The bias is 0 for
    c ≥ c* (sequence level) and ‖bias(c)‖₂ ≤ B(c) = Σ_y (π_old − cμ)₊|A|‖∇log π(y)‖₂, which is
    nonincreasing in c: the bias → 0 as c grows. (iii) The group gradient's covariance equals
    the closed form tr Cov = (Σ_y μ w_c² A²‖∇log π‖² − ‖Σ_y μ w_c A ∇log π‖²)/K (1e-10), and one
    row's second moment E‖g_y‖² = K·tr Cov + ‖E g‖² is nondecreasing in c (w_c² grows
    pointwise). Not monotone in general: ‖bias(c)‖ (claim 19b), tr Cov (claim 19c), and the
    group's second moment tr Cov + ‖E g‖² for K ≥ 2 (seen falling by 7.4e-4 along the grid on
    a depth-1 tree with K = 2: its ‖E g‖² term is not divided by K)."""
    env, theta, old_logits, mu_logits = _instance(generator, 1, vocab, depth)
    old, mu = policy_behavior(env, old_logits), policy_behavior(env, mu_logits)
    b = draw_uniform(generator, 0.0, 1.0)
    adv = env.rewards - b
    ratio = old / mu
    c_star = float(ratio.max())
    rho = _token_ratio(env, old_logits, mu_logits)
    scores = torch.func.jacrev(lambda z: env.sequence_logprobs(z)[0])(theta).reshape(
        env.num_responses, -1)  # ∇log π(y) [N, D]
    norms = scores.norm(dim=-1)
    checks = []
    untruncated = {level: _truncated(env, theta, mu, old, k, b, level, 1e300)[0]
                   for level in ("token", "sequence")}
    bounds, moments = [], []
    for cap in torch.linspace(0.3, 1.1 * c_star, 6).tolist():
        for level in ("token", "sequence"):
            grad, trace = _truncated(env, theta, mu, old, k, b, level, cap)
            bias = grad - untruncated[level]
            if level == "token":
                coef = (mu * adv).unsqueeze(-1) * (rho.clamp(max=cap) - rho)
                checks.append(Check(relative_error(bias, _score_gradient(env, theta, coef)),
                                    EXACT_TOL, f"token bias at c = {cap:.3g} vs closed form"))
                continue
            excess = (old - cap * mu).clamp(min=0)
            closed = -_score_gradient(env, theta, excess * adv)
            bound = float((excess * adv.abs())[0] @ norms)
            checks += [Check(relative_error(bias, closed), EXACT_TOL,
                             f"sequence bias at c = {cap:.3g} vs Σ(π_old − cμ)₊A∇log π"),
                       Check(float(bias.norm()) - bound, EXACT_TOL, f"‖bias‖ − B at c = {cap:.3g}")]
            if cap >= c_star:
                checks.append(Check(float(bias.abs().max()), EXACT_TOL, "bias for c ≥ c*"))
            m = (mu * ratio.clamp(max=cap) * adv)[0]  # per-response coefficient of ∇log π
            cov_closed = ((mu[0] * (ratio[0].clamp(max=cap) * adv[0]) ** 2) @ norms ** 2
                          - (m @ scores).norm() ** 2) / k
            checks.append(Check(abs(float(trace - cov_closed)) / max(1.0, float(cov_closed)),
                                EXACT_TOL, f"tr Cov at c = {cap:.3g} vs closed form"))
            bounds.append(bound)
            moments.append(k * float(trace) + float(grad.norm()) ** 2)
    rises = max(later - earlier for earlier, later in itertools.pairwise(bounds))
    falls = max(earlier - later for earlier, later in itertools.pairwise(moments))
    checks += [Check(rises, EXACT_TOL, "largest rise of B(c) along the grid"),
               Check(falls / max(1.0, max(moments)), EXACT_TOL,
                     "largest fall of E‖g‖² along the grid")]
    return worst(*checks)


def _bandit_counter_example(generator: torch.Generator, rewards: list[float], old: list[float],
                            mu: list[float]) -> tuple[SoftmaxBandit, Tensor, Tensor, Tensor]:
    """A 3-armed bandit with these rewards, π_old and μ, and θ = 0.02·ξ (π_θ ≈ uniform)."""
    env = SoftmaxBandit(torch.tensor([rewards], dtype=torch.float64))
    theta = random_logits(env, generator, scale=0.02)
    as_tensor = (torch.tensor([p], dtype=torch.float64) for p in (old, mu))
    return env, theta, *as_tensor


@register_claim("19b", "truncation_bias_norm_is_not_monotone_in_the_cap",
                "our derivation (condition of claim 19: the bound is monotone, the norm not)")
def bias_not_monotone(generator: torch.Generator) -> Check:
    """Counter-example: ‖bias(c)‖₂ can grow with c. Bandit, r ≡ 1 (advantage 'none'),
    π_old = [0.6, 0.3, 0.1], μ = [0.5, 0.1, 0.4] (ratios 1.2, 3, 0.25), θ ≈ 0: arms 0 and 1
    are truncated for c < 1.2, and their bias terms a_y(e_y − π) partly cancel
    (⟨e_0 − π, e_1 − π⟩ < 0); raising c from 1.1 to 1.2 removes arm 0's term, and the norm rises
    (by 5% at θ = 0: ‖bias‖² 0.0194 → 0.0216). The engine's bias (sequence TIS, K = 2) equals
    the closed form Σ_y (π_old(y) − cμ(y))₊(e_y − π) (1e-10); passes when also
    ‖bias(1.2)‖ − ‖bias(1.1)‖ exceeds 1e-4 (measured 0.139 → 0.147, a rise of ~8e-3;
    θ = 0.02·ξ moves each norm by ~1e-3)."""
    env, theta, old, mu = _bandit_counter_example(generator, [1.0, 1.0, 1.0], [0.6, 0.3, 0.1],
                                                  [0.5, 0.1, 0.4])
    options = {"advantage": "none", "anchor": old, "method": "enumerate"}
    norms, checks = [], []
    exact = expected_gradient(env, theta, mu, "reinforce", 2, corrections=UNTRUNCATED.format(
        level="sequence"), **options)
    scores = torch.eye(3, dtype=torch.float64) - torch.softmax(theta[0], -1)  # ∇log π(y), rows
    for cap in (1.1, 1.2):
        grad = expected_gradient(env, theta, mu, "reinforce", 2,
                                 corrections=f"is:level=sequence,high={cap}", **options)
        closed = ((old - cap * mu).clamp(min=0)[0] @ scores).unsqueeze(0)  # r ≡ 1
        checks.append(Check(relative_error(grad - exact, closed), EXACT_TOL,
                            f"bias at c = {cap} vs Σ(π_old − cμ)₊(e_y − π)"))
        norms.append(float((grad - exact).norm()))
    rise = norms[1] - norms[0]
    return worst(*checks, Check(1e-4 / max(rise, 1e-300), 1.0, f"1e-4/rise (‖bias‖ "
                                f"{norms[0]:.4f} at c = 1.1, {norms[1]:.4f} at c = 1.2)"))


@register_claim("19c", "truncated_is_variance_is_not_monotone_in_the_cap",
                "our derivation (condition of claim 19: the second moment is monotone, the "
                "covariance not)")
def variance_not_monotone(generator: torch.Generator) -> Check:
    """Counter-example: tr Cov of the truncated-IS gradient can fall as c grows. Bandit,
    r = [0.55, 0, 0], A = r − 0.5 = [0.05, −0.5, −0.5], π_old = [0.2, 0.4, 0.4],
    μ = [0.04, 0.48, 0.48] (ratios 5, 0.83, 0.83), θ ≈ 0, K = 1. For c ∈ (0.83, 5) only arm 0
    is truncated, E g = (0.2 + 0.002c)·v₀ (v₀ = e₀ − π), and d tr Cov/dc =
    2μ₀A₀‖v₀‖²(cA₀ − 0.2 − 0.002c) < 0 for c < 4.17: the variance falls while the bias falls.
    Engine (``gradient_covariance``) at c = 1 and c = 3, equal to the closed form
    Σ_y μ m²‖e_y − π‖² − ‖Σ_y μ m (e_y − π)‖², m = min(W, c)·A (1e-10); passes when the fall
    exceeds 1e-5 (predicted at θ = 0: 0.08398 → 0.08342, a fall of 5.6e-4; measured the same to
    ~1e-5)."""
    env, theta, old, mu = _bandit_counter_example(generator, [0.55, 0.0, 0.0], [0.2, 0.4, 0.4],
                                                  [0.04, 0.48, 0.48])
    traces, checks = [], []
    scores = torch.eye(3, dtype=torch.float64) - torch.softmax(theta[0], -1)  # ∇log π(y), rows
    for cap in (1.0, 3.0):
        cov = gradient_covariance(env, theta, mu, "reinforce", 1, advantage="none",
                                  advantage_kwargs={"shift": -0.5}, anchor=old,
                                  corrections=f"is:level=sequence,high={cap}")
        traces.append(float(torch.diagonal(cov).sum()))
        m = ((old / mu).clamp(max=cap) * (env.rewards - 0.5))[0]  # g(y) = −m(y)·∇log π(y)
        closed = float((mu[0] * m ** 2) @ (scores ** 2).sum(-1)
                       - ((mu[0] * m) @ scores).norm() ** 2)
        checks.append(Check(abs(traces[-1] - closed), EXACT_TOL,
                            f"tr Cov at c = {cap} vs Σμm²‖∇log π‖² − ‖Σμm∇log π‖²"))
    fall = traces[0] - traces[1]
    return worst(*checks, Check(1e-5 / max(fall, 1e-300), 1.0, f"1e-5/fall (tr Cov "
                                f"{traces[0]:.3e} at c = 1, {traces[1]:.3e} at c = 3)"))


# ------------------------------------------------------------------------------------------
# 20: the top-p / top-k ratio identity
# ------------------------------------------------------------------------------------------


def _kept_mass(probs: Tensor, top_p: float, top_k: int | None) -> tuple[Tensor, Tensor]:
    """Per node [..., V]: (kept set, π-mass S of the kept set) of top-k then top-p, written
    with a Python loop over sorted probabilities (apart from ``sampling_logprobs``)."""
    kept = torch.zeros_like(probs, dtype=torch.bool)
    flat_p, flat_k = probs.reshape(-1, probs.shape[-1]), kept.view(-1, probs.shape[-1])
    for row in range(flat_p.shape[0]):
        order = sorted(range(flat_p.shape[1]), key=lambda a, r=row: -float(flat_p[r, a]))
        if top_k is not None:
            order = order[:top_k]
        total = sum(float(flat_p[row, a]) for a in order)
        before = 0.0
        for a in order:
            if before >= top_p:
                break
            flat_k[row, a] = True
            before += float(flat_p[row, a]) / total
    return kept, (probs * kept).sum(-1)


@register_claim("20", "top_p_top_k_sampling_makes_pi_over_mu_the_product_of_kept_masses",
                "our derivation (nucleus sampling: Holtzman et al. 2020)", prompts=(1, 2),
                vocab=(2, 4), depth=(1, 3))
def top_p_ratio(generator: torch.Generator, prompts: int, vocab: int, depth: int) -> Check:
    """Temperature 1, top-k (None or 1..V) then top-p ∈ [0.3, 0.95] at every node (kept set
    and its π-mass S(s) computed apart from the sampler): μ(a|s) = π(a|s)/S(s) on the kept
    set, so for every response with μ(y) > 0, π(y)/μ(y) = Π_t S(y_<t) ≤ 1, and μ(y) = 0 exactly
    when some token of y is outside its node's kept set (``truncated_behavior``, 1e-10). The
    sequence IS ratio never exceeds 1, so a cap c ≥ 1 never truncates it."""
    env = random_tree(generator, prompts, vocab, depth)
    theta = random_logits(env, generator)
    top_p = draw_uniform(generator, 0.3, 0.95)
    top_k = int(torch.randint(0, vocab + 1, (), generator=generator)) or None
    mu = truncated_behavior(env, theta, top_p=top_p, top_k=top_k)
    pi = env.sequence_probs(theta)
    kept, mass = _kept_mass(torch.softmax(theta, -1), top_p, top_k)  # [P, M, V], [P, M]
    nodes, tokens = env.node_index, env.tokens
    token_kept = torch.where(env.mask, kept[:, nodes, tokens], True).all(-1)  # [P, N]
    product = torch.where(env.mask, mass[:, nodes], 1.0).prod(-1)
    live = mu > 0
    return worst(Check(float((live != token_kept).sum()), 0.5,
                       "responses where μ(y) > 0 ⇔ every token kept fails (a count)"),
                 Check(relative_error(torch.where(live, pi / mu.clamp(min=1e-300), 0.0),
                                      torch.where(live, product, 0.0)), EXACT_TOL,
                       f"π/μ vs Π_t S (top_p {top_p:.2f}, top_k {top_k})"),
                 Check(float((torch.where(live, pi / mu.clamp(min=1e-300), 0.0) - 1.0).max()),
                       EXACT_TOL, "max π/μ − 1 ≤ 0"))


@register_claim("20b", "sequence_is_under_a_top_p_sampler_misses_exactly_the_unsampled_responses",
                "our derivation", prompts=(1, 2), vocab=(2, 3), depth=(1, 3), k=(1, 2))
def top_p_is(generator: torch.Generator, prompts: int, vocab: int, depth: int, k: int
             ) -> Check:
    """μ the top-p sampler of π_θ (top-p ∈ [0.3, 0.9], temperature 1), anchor π_θ, untruncated
    sequence IS, REINFORCE with A = r − b, seq-sum: the expected gradient is the on-policy
    −E_π[A·∇log π] minus the part of the responses μ never samples:
    −Σ_{y: μ(y)>0} π(y)·A(y)·∇log π(y); its bias is Σ_{y: μ(y)=0} π(y)·A(y)·∇log π(y) (loss
    gradient; closed form, 1e-10) — no IS weight can recover a response of μ-probability 0."""
    env = random_tree(generator, prompts, vocab, depth)
    theta = random_logits(env, generator)
    mu = truncated_behavior(env, theta, top_p=draw_uniform(generator, 0.3, 0.9))
    pi = env.sequence_probs(theta)
    b = draw_uniform(generator, 0.0, 1.0)
    grad = expected_gradient(env, theta, mu, "reinforce", k, anchor=pi,
                             corrections=UNTRUNCATED.format(level="sequence"), **_options(b))
    adv = env.rewards - b
    on_policy = _score_gradient(env, theta, pi * adv)
    missing = _score_gradient(env, theta, pi * adv * (mu == 0))
    return Check(relative_error(grad, on_policy - missing), EXACT_TOL,
                 f"vs on-policy − the unsampled part ({int((mu == 0).sum())} responses unsampled)")
