"""The peers' disputes about off-policy corrections, settled exactly on a small tree.

Each entry of ``DISPUTES`` maps a name to a function ``(env, theta, old, mu) -> Dispute``:
the exact expected update (``expected_gradient``, a loss gradient: descent direction) of every
reading of the dispute on the same problem, the target it should be compared with (−∇J, J the
expected reward under π_θ averaged over prompts, so an unbiased reading is a positive multiple
of it) and the gaps between readings. ``Dispute.rows()`` gives one row of plain numbers per
reading, ``Dispute.headline()`` one row per dispute (its two main readings, ``HEADLINE_PAIRS``)
for an atlas; ``run(name, rewards, seed)`` builds the standard instance.

The standard instance (``instance``): a TreeMDP (vocab 3, depth 2; or vocab 2, depth 3 with
EOS for unequal lengths), binary or graded rewards, π_θ random logits, π_old a few steps stale
(π_θ's logits minus a perturbation) and μ a perturbed π_old (the inference engine's mismatch)
with KL(μ‖π_old) ≈ 0.01–0.1 per token. K ≤ 4. See docs/disputes.md for the answers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from simulator.exact import expected_gradient, gradient_covariance
from simulator.policies import policy_behavior, truncated_behavior
from simulator.responses import ResponseSpace
from simulator.tree import TreeMDP

__all__ = ["DISPUTES", "HEADLINE_PAIRS", "Dispute", "Reading", "compare", "headline_markdown",
           "instance", "kl_per_token", "run"]


class Call(NamedTuple):
    """An exact engine call of one reading: its expected update and its covariance come from
    the same arguments (``expected_gradient``, ``gradient_covariance``)."""

    env: TreeMDP
    theta: Tensor
    behavior: Tensor | str
    loss: str
    K: int
    method: str
    options: dict[str, Any]

    def gradient(self) -> Tensor:
        return expected_gradient(self.env, self.theta, self.behavior, self.loss, self.K,
                                 method=self.method, **self.options)

    def covariance(self) -> Tensor:
        """The exact covariance of one batch of one group per prompt, [P·D, P·D]: the
        expected update is the prompts' mean, so prompt p's block is Cov_p/P² (the
        prompts' groups are independent; ``gradient_covariance`` gives Cov_p)."""
        cov = gradient_covariance(self.env, self.theta, self.behavior, self.loss, self.K,
                                  method="ordered" if self.method == "ordered" else "auto",
                                  **self.options)
        blocks = cov.reshape(-1, *cov.shape[-2:])
        return torch.block_diag(*blocks) / len(blocks) ** 2


@dataclasses.dataclass(frozen=True)
class Reading:
    """One reading of a dispute: its label, the grlab keywords and its exact expected update
    (given, or computed from a ``Call``, which also gives ``cov``)."""

    label: str
    keywords: str
    grad: Tensor
    call: Call | None = dataclasses.field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.grad, Call):
            object.__setattr__(self, "call", self.grad)
            object.__setattr__(self, "grad", self.grad.gradient())

    def cov(self) -> Tensor:
        """The exact covariance of the reading's one-batch gradient (``Call.covariance``)."""
        if self.call is None:
            raise ValueError(f"reading {self.label!r} was given its update without the call "
                             "that made it, so it has no covariance")
        return self.call.covariance()


@dataclasses.dataclass(frozen=True)
class Dispute:
    """The readings of one dispute on one problem, against ``target`` = −∇J."""

    name: str
    question: str
    target: Tensor
    readings: tuple[Reading, ...]
    facts: dict[str, float] = dataclasses.field(default_factory=dict)

    def reading(self, label: str) -> Reading:
        return next(r for r in self.readings if r.label == label)

    def headline(self) -> dict[str, float | str]:
        """One row for an atlas: the dispute's two main readings (``HEADLINE_PAIRS``), each
        against −∇J, the gap between them (b against a), each one's spread (the trace of the
        exact covariance of one batch of one group per prompt, and √trace/|∇J|), the batches
        per arm to tell them apart (``simulator.detect.groups_needed``: α = 0.05 two-sided,
        power 0.8) and the instance's facts."""
        from simulator.detect import groups_needed

        a, b = (self.reading(label) for label in HEADLINE_PAIRS[self.name])
        ta, tb, ab = compare(a.grad, self.target), compare(b.grad, self.target), compare(
            b.grad, a.grad)
        row: dict[str, float | str] = {"dispute": self.name, "a": a.label, "b": b.label,
                                       "cos_a_target": ta["cos"], "cos_b_target": tb["cos"],
                                       "norm_a_target": ta["norm_ratio"],
                                       "norm_b_target": tb["norm_ratio"], "cos_ab": ab["cos"],
                                       "norm_b_over_a": ab["norm_ratio"],
                                       "rel_diff_b_a": ab["rel_diff"]}
        cov_a, cov_b = a.cov(), b.cov()
        size = float(self.target.norm())
        row.update({"trace_cov_a": float(cov_a.trace()), "trace_cov_b": float(cov_b.trace()),
                    "std_a_target": math.sqrt(max(float(cov_a.trace()), 0.0)) / size,
                    "std_b_target": math.sqrt(max(float(cov_b.trace()), 0.0)) / size,
                    "batches_a_b": groups_needed(a.grad, cov_a, b.grad, cov_b)})
        row.update({key: float(value) for key, value in self.facts.items()})
        return row

    def rows(self) -> list[dict[str, float | str]]:
        """One row per reading: cosine, norm ratio and relative difference to the target and
        to the first reading."""
        first = self.readings[0].grad
        out = []
        for r in self.readings:
            row: dict[str, float | str] = {"dispute": self.name, "reading": r.label,
                                           "keywords": r.keywords}
            row.update({f"{k}_to_target": v for k, v in compare(r.grad, self.target).items()})
            row.update({f"{k}_to_first": v for k, v in compare(r.grad, first).items()})
            out.append(row)
        return out


def compare(a: Tensor, b: Tensor) -> dict[str, float]:
    """cos(a, b), |a|/|b| and |a − b|/|b| (NaN where |b| = 0)."""
    na, nb = float(a.norm()), float(b.norm())
    if nb == 0.0:
        return {"cos": math.nan, "norm_ratio": math.nan, "rel_diff": math.nan}
    cos = float((a * b).sum()) / (na * nb) if na > 0 else math.nan
    return {"cos": cos, "norm_ratio": na / nb, "rel_diff": float((a - b).norm()) / nb}


def kl_per_token(env: ResponseSpace, p: Tensor, q: Tensor) -> float:
    """KL(p‖q) of the response distributions divided by p's expected length (prompt mean)."""
    length = env.mask.sum(-1).to(torch.float64) if hasattr(env, "mask") else torch.ones(
        p.shape[-1], dtype=torch.float64)
    safe = p > 0
    kl = torch.where(safe, p * (p.clamp(min=1e-300).log() - q.clamp(min=1e-300).log()),
                     p.new_zeros(()))
    return float((kl.sum(-1) / (p * length).sum(-1)).mean())


def instance(rewards: str = "binary", seed: int = 0, *, vocab: int = 3, depth: int = 2,
             eos: bool = False, prompts: int = 2, staleness: float = 0.3,
             mismatch: float = 0.3) -> tuple[TreeMDP, Tensor, Tensor, Tensor]:
    """(env, θ, π_old, μ): θ ∼ N(0, 1) logits; π_old = softmax(θ − staleness·ε₁) (a stale
    policy); μ = softmax(θ_old + mismatch·ε₂) (the sampler's mismatch). Binary rewards are a
    Bernoulli(½) draw with at least one success and one failure per prompt; graded U[0, 1)."""
    g = torch.Generator().manual_seed(seed)
    n = TreeMDP.count(vocab, depth, eos)
    if rewards == "binary":
        r = (torch.rand(prompts, n, generator=g, dtype=torch.float64) < 0.5).to(torch.float64)
        r[:, 0], r[:, -1] = 1.0, 0.0
    elif rewards == "graded":
        r = torch.rand(prompts, n, generator=g, dtype=torch.float64)
    else:
        raise ValueError(f"rewards must be 'binary' or 'graded', got {rewards!r}")
    env = TreeMDP(r, vocab, depth, eos)
    theta = torch.randn(env.logits_shape, generator=g, dtype=torch.float64)
    old_logits = theta - staleness * torch.randn(env.logits_shape, generator=g,
                                                 dtype=torch.float64)
    mu_logits = old_logits + mismatch * torch.randn(env.logits_shape, generator=g,
                                                    dtype=torch.float64)
    return env, theta, policy_behavior(env, old_logits), policy_behavior(env, mu_logits)


def _eg(env, theta, mu, loss, K, *, method: str = "enumerate", **options) -> Call:
    return Call(env, theta, mu, loss, K, method, options)


# ------------------------------------------------------------------------------------------
# 1. A sequence ratio: product or geometric mean
# ------------------------------------------------------------------------------------------

PRODUCT = "is:level=sequence,high=None"
GEOMETRIC = "is:level=geometric,high=None"


def sequence_ratio(env, theta, old, mu, K: int = 3) -> Dispute:
    """π_old = π_θ (the first minibatch after a fresh recompute), μ the mismatched sampler.
    REINFORCE with advantage "none" and seq-mean-token-sum (no coupling inside the group):
    the product reading is exactly −∇J; the geometric mean is not. GRPO (std advantage,
    seq-mean-token-mean) couples the group: neither reading is exact there."""
    del old
    pi = policy_behavior(env, theta)
    plain = {"advantage": "none", "agg": "seq-mean-token-sum", "anchor": pi}
    readings = [Reading(f"reinforce {label}", f"reinforce advantage=none "
                        f"agg=seq-mean-token-sum {c or '(none)'}",
                        _eg(env, theta, mu, "reinforce", K, corrections=c, **plain))
                for label, c in (("product", PRODUCT), ("geometric", GEOMETRIC),
                                 ("uncorrected", None),
                                 ("product C_max=3 mask (TRL default)", "vllm-is-sequence-mask"))]
    readings += [Reading(f"grpo {label}", f"grpo {c}",
                         _eg(env, theta, mu, "grpo", K, anchor=pi, corrections=c))
                 for label, c in (("product", PRODUCT), ("geometric", GEOMETRIC))]
    return Dispute("sequence-ratio", "product or geometric mean as the sequence IS ratio",
                   -env.reward_gradient(theta), tuple(readings),
                   {"kl_mu_pi_per_token": kl_per_token(env, mu, pi), "K": K})


# ------------------------------------------------------------------------------------------
# 2. Masked tokens in the token-mean denominator
# ------------------------------------------------------------------------------------------


def denominator(env, theta, old, mu, K: int = 3) -> Dispute:
    """token-mean (DAPO-style) REINFORCE with group-mean advantage and GRPO: each mask with the
    masked tokens kept in the denominator (AReaL, TRL, OpenRLHF, verl IcePop) or dropped
    (slime MIS, verl rejection sampling)."""
    readings = []
    for loss, agg in (("grpo", "token-mean"), ("reinforce", "token-mean")):
        for corr in ("mis-token:high=1.5", "icepop:low=0.8,high=1.25", "mis-seq:low=0.5"):
            for den in ("keep", "drop"):
                c = f"{corr},denominator={den}"
                readings.append(Reading(f"{loss} {corr} {den}", f"{loss} agg={agg} {c}",
                                        _eg(env, theta, mu, loss, K, agg=agg, anchor=old,
                                            corrections=c)))
    masked = _masked_share(env, old, mu, 1.5)
    return Dispute("denominator", "masked tokens kept in or dropped from the token-mean "
                   "denominator", -env.reward_gradient(theta), tuple(readings),
                   {"kl_mu_old_per_token": kl_per_token(env, mu, old), "K": K,
                    "masked_token_share_mis_1.5": masked})


def _masked_share(env, old, mu, high) -> float:
    """E_μ[#tokens with π_old/μ > high] / E_μ[#tokens] (prompt mean)."""
    lo, lm = env.token_logprobs_of(old), env.token_logprobs_of(mu)
    over = ((lo - lm) > math.log(high)) & env.mask
    return float(((mu * over.sum(-1)).sum(-1) / (mu * env.mask.sum(-1)).sum(-1)).mean())


# ------------------------------------------------------------------------------------------
# 3. OPSM per sequence; geometric sequence masking
# ------------------------------------------------------------------------------------------


def sequence_masking(env, theta, old, mu, K: int = 3) -> Dispute:
    """OPSM per sequence (DeepSeek-V3.2, TRL, Trinity) at δ = 0.05 against the anchor π_old,
    OPSM per token (``opsm:level=token``), and a sequence mask on the
    geometric mean of π_old/μ (length-invariant, TRL PR 4891) and on the product (not)."""
    readings = [Reading(label, f"grpo {c or '(none)'}",
                        _eg(env, theta, mu, "grpo", K, anchor=old, corrections=c))
                for label, c in (("none", None),
                                 ("opsm per sequence", "opsm:delta=0.05,ratio=old"),
                                 ("opsm per token", "opsm:delta=0.05,ratio=old,level=token"),
                                 ("geometric mask [0.9, 1.1]",
                                  "reject:statistic=ratio,aggregate=seq_mean,low=0.9,"
                                  "high=1.1,direction=mu-pi,denominator=keep"),
                                 ("product mask [0.9, 1.1]",
                                  "reject:statistic=ratio,aggregate=seq_sum,low=0.9,"
                                  "high=1.1,direction=mu-pi,denominator=keep"))]
    facts: dict[str, float] = {"kl_mu_old_per_token": kl_per_token(env, mu, old), "K": K}
    facts.update(_rejected_by_length(env, old, mu, 0.9, 1.1))
    return Dispute("sequence-masking", "OPSM per sequence or per token; geometric sequence "
                   "masking", -env.reward_gradient(theta), tuple(readings), facts)


def _rejected_by_length(env, old, mu, low: float, high: float) -> dict[str, float]:
    """μ(rejected | length L), prompt mean, for the product and the geometric-mean masks
    keeping π_old/μ in [low, high]: the product's window in geometric terms is
    [low^{1/L}, high^{1/L}], narrower for longer responses."""
    log_w = ((env.token_logprobs_of(old) - env.token_logprobs_of(mu)) * env.mask).sum(-1)
    length = env.mask.sum(-1)
    out = {}
    for name, stat in (("product", log_w), ("geometric", log_w / length)):
        rejected = (stat < math.log(low)) | (stat > math.log(high))
        for ell in sorted(set(length.tolist())):
            at = length == ell
            mass = (mu * at).sum(-1)
            out[f"{name}_rejected_given_L{ell}"] = float(((mu * (rejected & at)).sum(-1)
                                                          / mass).mean())
    return out


# ------------------------------------------------------------------------------------------
# 4. top-k / top-p sampling
# ------------------------------------------------------------------------------------------


def kept_mass(logits: Tensor, top_p: float = 1.0, top_k: int | None = None) -> Tensor:
    """S per node: the softmax mass of the tokens the sampler keeps (by hand: sort, count)."""
    p = torch.softmax(logits.to(torch.float64), -1)
    s, _ = p.sort(-1, descending=True)
    if top_k is not None:
        s = s[..., :top_k]
    keep = torch.ones_like(s, dtype=torch.bool)
    if top_p < 1.0:
        q = s / s.sum(-1, keepdim=True)
        keep = (q.cumsum(-1) - q) < top_p
    return (s * keep).sum(-1)


def top_k_top_p(env, theta, old, mu, K: int = 3, top_k: int = 2) -> Dispute:
    """μ = the top-k sampler of π_θ (on-policy but truncated). At each node the sampler's
    renormalised log-prob is log π(a) − log S, so the ratio of the untruncated recompute to
    the sampler's log-prob is S ≤ 1 per kept token (TRL issue 6789). Readings: GRPO with
    π_old = the untruncated recompute (ratio 1) or = the sampler's log-probs (PPO ratio
    π_θ/π_old = S); TRL's way, π_old untruncated and its vLLM IS weight π_old/μ = Π S_t
    (default ``vllm-is-sequence-mask``, never above 1 so never masked) or per token."""
    del old, mu
    mu_k = truncated_behavior(env, theta, top_k=top_k)
    pi = policy_behavior(env, theta)
    readings = [Reading(f"grpo, pi_old = {label}", f"grpo anchor={label} {c or ''}".strip(),
                        _eg(env, theta, mu_k, "grpo", K, anchor=anchor, corrections=c))
                for label, anchor, c in (("untruncated pi", pi, None),
                                         ("truncated sampler", mu_k, None),
                                         ("untruncated pi + TRL sequence IS", pi,
                                          "vllm-is-sequence-mask"),
                                         ("untruncated pi + TRL token IS", pi,
                                          "vllm-is-token-truncate"))]
    readings.append(Reading("grpo on-policy untruncated", "grpo behavior=on-policy",
                            _eg(env, theta, "on-policy", "grpo", K)))
    s = kept_mass(theta.reshape(env.num_prompts, env.num_nodes, env.vocab), top_k=top_k)
    return Dispute("top-k", "ratio against the untruncated policy; renormalised log-probs",
                   -env.reward_gradient(theta), tuple(readings),
                   {"top_k": top_k, "K": K, "kept_mass_min": float(s.min()),
                    "kept_mass_mean": float(s.mean()),
                    "truncated_response_mass": float((pi * (mu_k == 0)).sum(-1).mean())})


# ------------------------------------------------------------------------------------------
# 5. CISPO with a mismatch IS weight
# ------------------------------------------------------------------------------------------


def cispo_is(env, theta, old, mu, K: int = 3) -> Dispute:
    """CISPO's weight sg(clip(π_θ/π_old)) times the mismatch weight π_old/μ: the product is
    π_θ/μ (telescopes), not counted twice. Readings: with and without tis-token, and CISPO
    against μ itself (no recompute)."""
    wide = {"eps_low": 1.0, "eps_high": 1e6}
    readings = [
        Reading("cispo", "cispo", _eg(env, theta, mu, "cispo", K, anchor=old)),
        Reading("cispo + tis-token", "cispo tis-token",
                _eg(env, theta, mu, "cispo", K, anchor=old, corrections="tis-token")),
        Reading("cispo unclipped + token IS", "cispo eps_high=1e6 is:high=None",
                _eg(env, theta, mu, "cispo", K, anchor=old, corrections="is:high=None",
                    **wide)),
        Reading("cispo unclipped against mu", "cispo eps_high=1e6 anchor=mu",
                _eg(env, theta, mu, "cispo", K, anchor=mu, **wide)),
    ]
    return Dispute("cispo-is", "CISPO stacked on a mismatch IS weight", -env.reward_gradient(theta),
                   tuple(readings), {"kl_mu_old_per_token": kl_per_token(env, mu, old),
                                     "K": K})


# ------------------------------------------------------------------------------------------
# 6. verl's DPPO truncation; M2PO's two masks; OpenRLHF's sequence filter
# ------------------------------------------------------------------------------------------


def _token_share(env, mu, log_ratio: Tensor, above: float) -> float:
    """E_μ[#tokens with log_ratio > log(above)] / E_μ[#tokens] (prompt mean)."""
    over = (log_ratio > math.log(above)) & env.mask
    return float(((mu * over.sum(-1)).sum(-1) / (mu * env.mask.sum(-1)).sum(-1)).mean())


def dppo_truncation(env, theta, old, mu, K: int = 3) -> Dispute:
    """dppo-tv/-kl at clip_ratio_c = 3 (verl's config default) and 20 (verl's code fallback):
    the two differ only through tokens with π_θ/π_old > 3."""
    readings = [Reading(f"{loss} c={c:g}", f"{loss} clip_ratio_c={c:g}",
                        _eg(env, theta, mu, loss, K, anchor=old, clip_ratio_c=c))
                for loss in ("dppo-tv", "dppo-kl") for c in (3.0, 20.0)]
    log_ratio = env.token_logprobs_of(policy_behavior(env, theta)) - env.token_logprobs_of(old)
    return Dispute("dppo-truncation", "verl's DPPO truncation clip_ratio_c 3 or 20",
                   -env.reward_gradient(theta), tuple(readings),
                   {"K": K, "max_token_ratio_pi_over_old":
                    float(log_ratio.masked_fill(~env.mask, -math.inf).max().exp()),
                    "token_share_ratio_above_3": _token_share(env, mu, log_ratio, 3.0),
                    "kl_old_pi_per_token": kl_per_token(env, old, policy_behavior(env, theta))})


def m2po_mask(env, theta, old, mu, K: int = 2) -> Dispute:
    """m2po with AReaL's mask ((log μ − log π_old)² over every token) and the paper's
    ((log π_θ − log μ)² over PPO's active quadrants); batch-coupled: ordered tuples."""
    readings = [Reading(f"m2po {v}", f"m2po variant={v}",
                        _eg(env, theta, mu, "m2po", K, method="auto", anchor=old, variant=v))
                for v in ("areal", "paper")]
    readings.append(Reading("m2po nothing dropped", "m2po threshold=1e9",
                            _eg(env, theta, mu, "m2po", K, method="auto", anchor=old,
                                threshold=1e9)))
    return Dispute("m2po-mask", "M2PO's second-moment mask: AReaL's or the paper's",
                   -env.reward_gradient(theta), tuple(readings),
                   {"K": K, "kl_mu_old_per_token": kl_per_token(env, mu, old)})


OPENRLHF_FILTER = ("reject:statistic=ratio,aggregate=seq_mean,low=0.5,high=5.0,"
                   "denominator=keep")


def openrlhf_seq_mask(env, theta, old, mu, K: int = 3) -> Dispute:
    """OpenRLHF v0.11.0 ``seq-mask-tis``: keep a row iff the geometric mean of π_old/μ lies in
    [0.5, 5] (its default ``is_correction_threshold``), then weight each kept token by the
    *unclamped* π_old/μ; the removed rows stay in the token-mean denominator. Against its
    ``tis`` (token weight clamped to [0.5, 5]) and the filter with clamped weights."""
    readings = [Reading(label, f"grpo agg=token-mean {' + '.join(c) or '(none)'}",
                        _eg(env, theta, mu, "grpo", K, agg="token-mean", anchor=old,
                            corrections=c))
                for label, c in (("seq-mask-tis (unclamped tokens)",
                                  (OPENRLHF_FILTER, "is:level=token,high=None")),
                                 ("seq-mask + clamped tokens",
                                  (OPENRLHF_FILTER, "is:level=token,low=0.5,high=5.0")),
                                 ("tis [0.5, 5]", ("is:level=token,low=0.5,high=5.0",)),
                                 ("none", ()))]
    log_ratio = env.token_logprobs_of(old) - env.token_logprobs_of(mu)
    return Dispute("openrlhf-seq-mask", "OpenRLHF's sequence filter with unclamped token "
                   "weights", -env.reward_gradient(theta), tuple(readings),
                   {"K": K, "max_token_weight_old_over_mu":
                    float(log_ratio.masked_fill(~env.mask, -math.inf).max().exp()),
                    "kl_mu_old_per_token": kl_per_token(env, mu, old)})


HEADLINE_PAIRS: dict[str, tuple[str, str]] = {
    "sequence-ratio": ("reinforce product", "reinforce geometric"),
    "denominator": ("grpo mis-token:high=1.5 keep", "grpo mis-token:high=1.5 drop"),
    "sequence-masking": ("opsm per sequence", "opsm per token"),
    "top-k": ("grpo, pi_old = untruncated pi", "grpo, pi_old = truncated sampler"),
    "cispo-is": ("cispo", "cispo + tis-token"),
    "dppo-truncation": ("dppo-tv c=3", "dppo-tv c=20"),
    "m2po-mask": ("m2po areal", "m2po paper"),
    "openrlhf-seq-mask": ("seq-mask-tis (unclamped tokens)", "seq-mask + clamped tokens"),
}

DISPUTES: dict[str, Callable[..., Dispute]] = {
    "sequence-ratio": sequence_ratio,
    "denominator": denominator,
    "sequence-masking": sequence_masking,
    "top-k": top_k_top_p,
    "cispo-is": cispo_is,
    "dppo-truncation": dppo_truncation,
    "m2po-mask": m2po_mask,
    "openrlhf-seq-mask": openrlhf_seq_mask,
}


def run(name: str, rewards: str = "binary", seed: int = 0, **options) -> Dispute:
    """DISPUTES[name] on ``instance(rewards, seed, **options)``."""
    env, theta, old, mu = instance(rewards, seed, **options)
    return DISPUTES[name](env, theta, old, mu)


def headline_markdown(rewards: Sequence[str] = ("binary", "graded"), seed: int = 0) -> str:
    """Every dispute's headline row (its two main readings against −∇J and against each
    other) on ``instance(rewards, seed)``, as a markdown table: the atlas's disputes.md."""
    lines = ["# The disputes, exactly (docs/disputes.md explains each)", "",
             "cos and norm ratio of each reading's expected update to −∇J, and of b to a, on a "
             f"tree of vocab 3, depth 2 (seed {seed}; `simulator.disputes.instance`); the "
             "spread √tr C/‖∇J‖ of each reading's gradient from one batch of one group per "
             "prompt (C its exact covariance); and the batches per arm a z-test along b − a "
             "needs to tell the two readings apart (α = 0.05 two-sided, power 0.8; inf: the "
             "same update).", "",
             "| dispute | rewards | a | b | cos(a, −∇J) | cos(b, −∇J) | ‖a‖/‖∇J‖ | ‖b‖/‖∇J‖ "
             "| cos(a, b) | ‖b − a‖/‖a‖ | √tr C_a/‖∇J‖ | √tr C_b/‖∇J‖ | batches to tell |",
             "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
             "| ---: |"]
    for kind in rewards:
        for name in DISPUTES:
            row = run(name, kind, seed).headline()
            numbers = (row["cos_a_target"], row["cos_b_target"], row["norm_a_target"],
                       row["norm_b_target"], row["cos_ab"], row["rel_diff_b_a"],
                       row["std_a_target"], row["std_b_target"], row["batches_a_b"])
            lines.append(f"| {name} | {kind} | {row['a']} | {row['b']} | "
                         + " | ".join(f"{float(x):.4g}" for x in numbers) + " |")
    return "\n".join(lines) + "\n"
