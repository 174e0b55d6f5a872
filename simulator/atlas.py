"""The off-policy atlas: every loss × correction × off-policyness level, exactly.

For each testbed (a bandit and a tree, binary and graded rewards, one prompt each) and each
off-policyness level — a triple (θ, π_old, μ) taken from a real exact training trajectory —
every cell (loss, correction) gets its exact expected update m = E[∇ loss] (``expected_gradient``)
and the exact covariance C of one group's gradient (``gradient_covariance``). From them:

* against the true gradient ∇J(π_θ), J = E_{π_θ} r: cos(−m, ∇J) and |m|/|∇J|;
* against the loss's own fresh-data update m_on (the same loss and correction at the
  on-policy level, same θ): the bias b = m − m_on, rel_bias = |b|/|m_on|;
* the spread: tr C, rel_std = √tr C/|m_on|, the MSE of a batch of B groups,
  |b|² + tr C/B, and ess = tr C_on/tr C (how many fresh groups one group is worth in
  variance), with the importance-sampling ESS of the level, 1/E_μ[(π_θ/μ)²] per response;
* "groups needed to see a difference" between two cells a, b: with n independent groups each,
  the difference of the two means has covariance (C_a + C_b)/n; along the gap
  Δ = m_a − m_b a two-sided z-test at level α with power 1 − β needs
  n = (z_{1−α/2} + z_{1−β})²·uᵀ(C_a + C_b)u/|Δ|², u = Δ/|Δ| (α = 0.05, power 0.8:
  the factor is 7.85). Reported against the cell's on-policy twin (is the off-policyness
  visible?) and against the uncorrected cell of the same loss and level (is the correction?).
* "runs needed": a run is S = ``steps`` steps of B = ``batch`` groups at the level's fixed
  state, its statistic the mean of its S·B group gradients (mean m, covariance C/(S·B)), so
  runs = groups/(S·B) per arm (``runs_needed``). ``level_comparisons`` gives groups and runs
  between two levels (``comparison_pairs``: on-policy vs each stale-D, consecutive stale-D,
  stale-D vs stale-D+SAMPLER).
* ``instances`` = N: the whole atlas at seeds seed … seed + N − 1 (rewards, start,
  trajectory, noise draw); the table gives medians and [min, max], the plots medians.

The KL-regularised target of the paper, J(π) − τ·KL(π‖π_t), is anchored at π_t = the level's
π_old (the policy whose log-probs the loss's ratio uses): cos_T and ratio_T compare the update
with its gradient ∇J − τ·∇KL(π_θ‖π_old) at θ (``ResponseSpace.reward_gradient``). Where
π_old = π_θ (the mismatched samplers) the KL term's gradient vanishes and cos_T = cos_J; at
the stale levels the two differ (τ = ``--tau``, 1 by default).

Design decisions
----------------
* The levels come from one trajectory per testbed: ``TRAJECTORY_STEPS`` Adam steps (lr
  ``TRAJECTORY_LR``) of GRPO's exact on-policy expected update from random logits; θ = θ_T, the
  last. ``stale-d``: μ = π_old = π_{θ_{T−d}} (d updates old, as an asynchronous trainer sees
  them). The mismatched samplers keep π_old = π_θ (the trainer's recomputed log-probs) and
  change μ: ``temp-T`` (another temperature), ``noise-s`` (logits + s·ε, ε a fixed N(0, 1)
  draw), ``bf16`` (logits rounded to bfloat16), ``top-p-p`` / ``top-k-k``
  (``truncated_behavior``), ``mix-a`` (a·π_{θ_{T−4}} + (1 − a)·π_θ: part of the batch 4
  updates old). ``stale-D+SAMPLER``: π_old = π_{θ_{T−D}} and μ = SAMPLER applied to θ_{T−D}
  (a stale policy served by a mismatched engine: μ ≠ π_old ≠ π_θ).
* A cache entry is one (testbed, loss, correction) with all its levels, a JSON file under
  OUT/cells keyed by everything that determines it (``cell_key``): the configuration, the
  loss's and the engine's code (``provenance.code_digest``) and this file. The table and the
  plots are derived from the entries.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import io
import itertools
import json
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from simulator.bandit import SoftmaxBandit
from simulator.detect import NEEDED_FACTOR, groups_needed, runs_needed
from simulator.exact import expected_gradient, gradient_covariance
from simulator.files import atomic_write_text, output_dir
from simulator.policies import (
    mixture_behavior,
    policy_behavior,
    tempered_behavior,
    truncated_behavior,
)
from simulator.provenance import code_digest
from simulator.tree import TreeMDP

__all__ = ["CACHE_FORMAT", "DEFAULT_CORRECTIONS", "DEFAULT_LEVELS", "DEFAULT_LOSSES",
           "NEEDED_FACTOR", "TESTBEDS", "AtlasConfig", "Row", "groups_needed", "level_policies",
           "make_testbed", "run_atlas", "trajectory", "write_atlas"]

CACHE_FORMAT = 1
TESTBEDS = ("bandit-binary", "bandit-graded", "tree-binary", "tree-graded")
DEFAULT_LOSSES = ("reinforce", "grpo", "rec-oneside-nois")
DEFAULT_CORRECTIONS = ("none", "tis-token", "tis-seq", "mis-seq", "icepop",
                       "tis-seq:ratio=current")
DEFAULT_LEVELS = ("on-policy", "stale-1", "stale-4", "stale-16", "temp-0.7", "noise-0.3",
                  "bf16", "top-p-0.9", "top-k-2", "mix-0.5", "stale-4+noise-0.3",
                  "stale-4+bf16")
TRAJECTORY_STEPS = 24
TRAJECTORY_LR = 0.1
_LEVEL = re.compile(r"^(on-policy|bf16|stale-(\d+)|temp-([0-9.]+)|noise-([0-9.]+)|"
                    r"top-p-([0-9.]+)|top-k-(\d+)|mix-([0-9.]+))$")
_IN_RANGE: dict[str, Callable[[float], bool]] = {
    "stale": lambda x: x >= 1, "temp": lambda x: x > 0, "noise": lambda x: x >= 0,
    "top-p": lambda x: 0 < x <= 1, "top-k": lambda x: x >= 1, "mix": lambda x: 0 <= x <= 1}
LEVEL_FORMS = ("on-policy", "stale-D", "temp-T", "noise-S", "bf16", "top-p-P", "top-k-K",
               "mix-A", "stale-D+SAMPLER")
SAMPLERS = ("temp", "noise", "bf16", "top-p", "top-k", "mix")  # what may follow "stale-D+"
MIX_AGE = 4  # mix-A's old share is this many updates older than the level's π_old


@dataclasses.dataclass(frozen=True)
class AtlasConfig:
    testbeds: tuple[str, ...] = TESTBEDS
    losses: tuple[str, ...] = DEFAULT_LOSSES
    corrections: tuple[str, ...] = DEFAULT_CORRECTIONS
    levels: tuple[str, ...] = DEFAULT_LEVELS
    group_size: int = 4
    batch: int = 8
    seed: int = 0
    instances: int = 3        # seeds seed, seed + 1, …: rewards, start, trajectory, noise
    steps: int = 100          # S: a run's steps (B = batch groups each) for runs_needed
    tau: float = 1.0          # the KL-regularised target's τ
    answers: int = 6          # bandit
    vocab: int = 3            # tree
    depth: int = 2            # tree

    def __post_init__(self) -> None:
        for name in self.testbeds:
            if name not in TESTBEDS:
                raise ValueError(f"testbeds has unknown {name!r}; known: {', '.join(TESTBEDS)}")
        for level in self.levels:
            level_age(level)
        if "on-policy" not in self.levels:  # every cell's reference
            object.__setattr__(self, "levels", ("on-policy", *self.levels))
        if "none" not in self.corrections:
            object.__setattr__(self, "corrections", ("none", *self.corrections))
        for field in ("group_size", "batch", "answers", "vocab", "depth", "instances",
                      "steps"):
            value, least = (getattr(self, field),
                            1 if field in ("batch", "instances", "steps") else 2)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{field} must be an int >= {least}, got {value!r}")
        if isinstance(self.tau, bool) or not isinstance(self.tau, int | float) or not (
                math.isfinite(self.tau) and self.tau > 0):
            raise ValueError(f"tau must be a number > 0, got {self.tau!r}")
        if max(map(level_age, self.levels), default=0) > TRAJECTORY_STEPS:
            raise ValueError(f"levels cannot reach back more than {TRAJECTORY_STEPS} updates "
                             f"(the trajectory's length; mix-A adds {MIX_AGE})")


def level_age(level: str) -> int:
    """How many updates back in the trajectory a level reaches (stale-D: D, mix-A: 4,
    stale-D+mix-A: D + 4); a bad name is a ``ValueError`` naming the flag."""
    if "+" in level:
        (_, depth), (kind, _) = split_level(level)
        return int(depth) + (MIX_AGE if kind == "mix" else 0)
    kind, x = parse_level(level)
    return int(x) if kind == "stale" else MIX_AGE if kind == "mix" else 0


def split_level(level: str) -> tuple[tuple[str, float], tuple[str, float]]:
    """The two parts of a combined level stale-D+SAMPLER, each as ``parse_level`` gives it."""
    head, _, tail = level.partition("+")
    first, second = parse_level(head), parse_level(tail)
    if first[0] != "stale" or second[0] not in SAMPLERS:
        raise ValueError(f"levels has {level!r}: a combined level is stale-D+SAMPLER, "
                         "SAMPLER one of temp-T, noise-S, bf16, top-p-P, top-k-K, mix-A "
                         "(e.g. stale-4+noise-0.3)")
    return first, second


def parse_level(level: str) -> tuple[str, float]:
    """(kind, parameter) of a simple level name (no "+"); ``ValueError`` naming the flag for
    a bad one."""
    match = _LEVEL.match(level)
    if match is None:
        raise ValueError(f"levels has unknown {level!r}; the forms are "
                         f"{', '.join(LEVEL_FORMS)} (e.g. stale-4, temp-0.7, top-p-0.9)")
    kind = match.group(1)
    if kind in ("on-policy", "bf16"):
        return kind, 0.0
    kind, _, value = kind.rpartition("-")
    number = float(value)
    if not _IN_RANGE[kind](number):
        raise ValueError(f"levels has {level!r} out of range (stale-D: D >= 1, temp-T: T > 0, "
                         "noise-S: S >= 0, top-p-P: 0 < P <= 1, top-k-K: K >= 1, "
                         "mix-A: 0 <= A <= 1)")
    return kind, number


def make_testbed(name: str, config: AtlasConfig) -> SoftmaxBandit | TreeMDP:
    """One prompt; binary: one right answer (bandit) or two right responses (tree); graded:
    rewards U[0, 1). Drawn from ``config.seed``."""
    g = torch.Generator().manual_seed(len(TESTBEDS) * config.seed + TESTBEDS.index(name))
    kind, reward = name.split("-")
    n = (config.answers if kind == "bandit"
         else TreeMDP.count(config.vocab, config.depth, eos=True))
    if reward == "graded":
        r = torch.rand(1, n, generator=g, dtype=torch.float64)
    else:
        r = torch.zeros(1, n, dtype=torch.float64)
        r[0, torch.randperm(n, generator=g)[: 1 if kind == "bandit" else 2]] = 1.0
    return SoftmaxBandit(r) if kind == "bandit" else TreeMDP(r, config.vocab, config.depth,
                                                            eos=True)


def trajectory(env: SoftmaxBandit | TreeMDP, config: AtlasConfig) -> Tensor:
    """[T + 1, *logits_shape]: θ_0 … θ_T of Adam on GRPO's exact on-policy expected update."""
    g = torch.Generator().manual_seed(10_000 + config.seed)
    theta = torch.randn(env.logits_shape, generator=g, dtype=torch.float64).requires_grad_()
    adam = torch.optim.Adam([theta], lr=TRAJECTORY_LR)
    history = [theta.detach().clone()]
    for _ in range(TRAJECTORY_STEPS):
        theta.grad = expected_gradient(env, theta.detach(), "on-policy", "grpo",
                                       config.group_size)
        adam.step()
        history.append(theta.detach().clone())
    return torch.stack(history)


def level_policies(env: SoftmaxBandit | TreeMDP, history: Tensor, level: str, seed: int = 0
                   ) -> tuple[Tensor, Tensor, Tensor]:
    """(θ, π_old, μ) of a level: θ = the trajectory's last logits, π_old and μ [1, N].
    ``stale-D+SAMPLER``: π_old = π_{θ_{T−D}} and μ = SAMPLER applied to θ_{T−D} (the stale
    policy served by a mismatched engine): three distinct policies."""
    if "+" in level:
        depth = int(split_level(level)[0][1])
        _, old, mu = level_policies(env, history[: len(history) - depth],
                                    level.partition("+")[2], seed)
        return history[-1], old, mu
    kind, x = parse_level(level)
    theta = history[-1]
    fresh = policy_behavior(env, theta)
    if kind == "stale":
        old = policy_behavior(env, history[-1 - int(x)])
        return theta, old, old
    if kind == "on-policy":
        mu = fresh
    elif kind == "temp":
        mu = tempered_behavior(env, theta, x)
    elif kind == "noise":
        g = torch.Generator().manual_seed(20_000 + seed)
        mu = policy_behavior(env, theta + x * torch.randn(theta.shape, generator=g,
                                                          dtype=torch.float64))
    elif kind == "bf16":
        mu = policy_behavior(env, theta.to(torch.bfloat16).to(torch.float64))
    elif kind == "top-p":
        mu = truncated_behavior(env, theta, top_p=x)
    elif kind == "top-k":
        mu = truncated_behavior(env, theta, top_k=int(x))
    else:  # mix
        mu = mixture_behavior((x, 1 - x), (policy_behavior(env, history[-1 - MIX_AGE]),
                                           fresh))
    return theta, fresh, mu


def kl_mu_pi(mu: Tensor, pi: Tensor) -> float:
    """KL(μ‖π_θ) over responses (nats)."""
    keep = mu > 0
    return float((mu[keep] * (mu[keep].log() - pi[keep].log())).sum())


def is_ess(mu: Tensor, pi: Tensor) -> float:
    """Kish's ESS per response of sequence-level IS from μ to π_θ: 1/E_μ[(π/μ)²]; 0 when π
    has mass where μ has none (the weight is then unbounded)."""
    if bool(((mu == 0) & (pi > 0)).any()):
        return 0.0
    keep = mu > 0
    return float(1.0 / (pi[keep] ** 2 / mu[keep]).sum())




def _correction_args(correction: str) -> tuple[str, ...]:
    return () if correction == "none" else (correction,)


def cell_key(config: AtlasConfig, name: str, loss: str, correction: str) -> str:
    """Everything that determines a cache entry: the configuration of its testbed and levels,
    the loss's and engine's code (``code_digest``), and this module."""
    payload = json.dumps([CACHE_FORMAT, name, loss, correction, config.levels,
                          config.group_size, config.seed, config.answers, config.vocab,
                          config.depth, TRAJECTORY_STEPS, TRAJECTORY_LR, code_digest(loss),
                          code_digest("grpo"),
                          hashlib.sha256(Path(__file__).read_bytes()).hexdigest()])
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def compute_cell(env: SoftmaxBandit | TreeMDP, history: Tensor, levels: Sequence[str],
                 loss: str, correction: str, k: int, seed: int = 0) -> dict[str, Any]:
    """{level: {mean, cov, kl, ess_is}} for one (loss, correction): the engines' own numbers."""
    out = {}
    for level in levels:
        theta, old, mu = level_policies(env, history, level, seed)
        options = {"anchor": old, "corrections": _correction_args(correction)}
        mean = expected_gradient(env, theta, mu, loss, k, **options)
        cov = gradient_covariance(env, theta, mu, loss, k, **options)
        pi = policy_behavior(env, theta)
        out[level] = {"mean": mean.flatten().tolist(), "cov": cov.tolist(),
                      "kl": kl_mu_pi(mu, pi), "ess_is": is_ess(mu, pi)}
    return out


@dataclasses.dataclass
class Row:
    testbed: str
    seed: int
    level: str
    loss: str
    correction: str
    kl_mu_pi: float
    cos_J: float
    ratio_J: float
    cos_T: float
    ratio_T: float
    rel_bias: float
    rel_std: float
    rel_mse: float
    ess: float
    ess_is: float
    n_vs_onpolicy: float
    n_vs_uncorrected: float
    runs_vs_onpolicy: float
    runs_vs_uncorrected: float

    @property
    def cell(self) -> str:
        return f"{self.loss} + {self.correction}"


@dataclasses.dataclass
class Comparison:
    """Two levels of one (testbed, seed, loss, correction): the gap between their expected
    updates relative to the fresh-data update, and groups / runs per arm to see it."""

    testbed: str
    seed: int
    loss: str
    correction: str
    a: str
    b: str
    rel_gap: float
    groups: float
    runs: float


def _load(path: Path, levels: Sequence[str]) -> dict[str, Any] | None:
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    cells = payload.get("levels") if isinstance(payload, dict) else None
    if not isinstance(cells, dict) or set(cells) != set(levels):
        return None
    return cells


def instance_configs(config: AtlasConfig) -> list[AtlasConfig]:
    """One configuration per instance: seeds seed, seed + 1, … (``--instances``)."""
    return [dataclasses.replace(config, seed=config.seed + i, instances=1)
            for i in range(config.instances)]


def part_names(config: AtlasConfig) -> list[str]:
    """The progress parts of a run: one per testbed (× instance when there are several)."""
    if config.instances == 1:
        return list(config.testbeds)
    return [f"{name} seed {c.seed}" for c in instance_configs(config) for name in config.testbeds]


def run_atlas(config: AtlasConfig, out: Path,
              on_cell: Callable[[str, int, str], None] | None = None,
              *, fresh: bool = False) -> list[Row]:
    """Compute (or load from OUT/cells) every cell of every instance; return the table's rows
    (one per instance × testbed × level × loss × correction). ``on_cell(part, index,
    source)`` after each (loss, correction), part one of ``part_names``, source
    "cache"/"run"."""
    rows: list[Row] = []
    for single, (name, part) in _parts(config):
        cells, targets = _testbed(single, name, out, fresh,
                                  None if on_cell is None else
                                  functools.partial(on_cell, part))
        rows += _rows(name, single, cells, targets)
    return rows


def _parts(config: AtlasConfig) -> list[tuple[AtlasConfig, tuple[str, str]]]:
    names = iter(part_names(config))
    return [(single, (name, next(names))) for single in instance_configs(config)
            for name in config.testbeds]


def _testbed(config: AtlasConfig, name: str, out: Path, fresh: bool,
             on_cell: Callable[[int, str], None] | None
             ) -> tuple[dict[tuple[str, str], dict[str, Any]], dict[str, Tensor]]:
    """The cells {(loss, correction): {level: …}} and the targets of one testbed of one
    instance, from the cache or computed (and cached)."""
    cache = output_dir(out, what="--out") / "cells"
    cache.mkdir(exist_ok=True)
    env = make_testbed(name, config)
    history: Tensor | None = None
    grad_path = cache / (f"targets-{name}-{cell_key(config, name, 'grpo', 'none')}"
                         f"-tau{config.tau:g}.json")
    cells: dict[tuple[str, str], dict[str, Any]] = {}
    for index, (loss, correction) in enumerate(
            (loss, correction) for loss in config.losses for correction in config.corrections):
        slug = re.sub(r"[^A-Za-z0-9.=-]+", "_", f"{name}-{loss}-{correction}")
        path = cache / f"{slug}-{cell_key(config, name, loss, correction)}.json"
        found = None if fresh else _load(path, config.levels)
        source = "cache" if found is not None else "run"
        if found is None:
            if history is None:
                history = trajectory(env, config)
            found = compute_cell(env, history, config.levels, loss, correction,
                                 config.group_size, config.seed)
            atomic_write_text(path, json.dumps({"format": CACHE_FORMAT, "levels": found}))
        if on_cell is not None:
            on_cell(index, source)
        cells[(loss, correction)] = found
    targets = None if fresh else _load_targets(grad_path, config.levels)
    if targets is None:
        history = trajectory(env, config) if history is None else history
        targets = {"J": env.reward_gradient(history[-1]).flatten()}
        for level in config.levels:  # ∇[J − τ·KL(π_θ ‖ π_old)]: the paper's step target
            theta, old, _ = level_policies(env, history, level, config.seed)
            targets[level] = env.reward_gradient(theta, anchor=old, tau=config.tau).flatten()
        atomic_write_text(grad_path, json.dumps({k: v.tolist() for k, v in targets.items()}))
    return cells, targets


def _load_targets(path: Path, levels: Sequence[str]) -> dict[str, Tensor] | None:
    """The cached ∇J and per-level KL-regularised targets, or None (missing, corrupt, other)."""
    try:
        payload = json.loads(path.read_text())
        if not isinstance(payload, dict) or set(payload) != {"J", *levels}:
            return None
        return {k: torch.tensor(v, dtype=torch.float64) for k, v in payload.items()}
    except (OSError, ValueError, TypeError):
        return None


def _tensors(entry: dict[str, Any]) -> tuple[Tensor, Tensor]:
    return (torch.tensor(entry["mean"], dtype=torch.float64),
            torch.tensor(entry["cov"], dtype=torch.float64))


def _rows(name: str, config: AtlasConfig, cells: dict[tuple[str, str], dict[str, Any]],
          targets: dict[str, Tensor]) -> list[Row]:
    rows = []
    per_run = functools.partial(runs_needed, steps=config.steps, batch=config.batch)
    for level in config.levels:
        for (loss, correction), cell in cells.items():
            mean, cov = _tensors(cell[level])
            on_mean, on_cov = _tensors(cell["on-policy"])
            bare_mean, bare_cov = _tensors(cells[(loss, "none")][level])
            scale = float(on_mean.norm())
            bias2 = float((mean - on_mean).norm() ** 2)
            trace = float(cov.trace())
            grad_j, target = targets["J"], targets[level]
            cos = float(-mean @ grad_j / (mean.norm() * grad_j.norm()))
            cos_t = float(-mean @ target / (mean.norm() * target.norm()))
            n_on = groups_needed(mean, cov, on_mean, on_cov)
            n_bare = groups_needed(mean, cov, bare_mean, bare_cov)
            rows.append(Row(
                name, config.seed, level, loss, correction, cell[level]["kl"], cos,
                float(mean.norm() / grad_j.norm()), cos_t, float(mean.norm() / target.norm()),
                math.sqrt(bias2) / scale,
                math.sqrt(trace) / scale, (bias2 + trace / config.batch) / scale ** 2,
                float(on_cov.trace()) / trace if trace > 0 else math.inf,
                cell[level]["ess_is"], n_on, n_bare, per_run(n_on), per_run(n_bare)))
    return rows


def comparison_pairs(levels: Sequence[str]) -> list[tuple[str, str]]:
    """The level pairs a practitioner compares: on-policy against each stale-D, each stale-D
    against the next larger D, and stale-D against each stale-D+SAMPLER (is the sampler's
    mismatch visible on top of the staleness?)."""
    stale = sorted((lv for lv in levels if "+" not in lv and parse_level(lv)[0] == "stale"),
                   key=level_age)
    pairs = [("on-policy", lv) for lv in stale] + list(itertools.pairwise(stale))
    pairs += [(lv.partition("+")[0], lv) for lv in levels
              if "+" in lv and lv.partition("+")[0] in levels]
    return pairs


def level_comparisons(config: AtlasConfig, out: Path, corrections: Sequence[str] = ("none",)
                      ) -> list[Comparison]:
    """Groups and runs per arm to tell the levels of each ``comparison_pairs`` pair apart, per
    instance × testbed × loss × correction (the cells from OUT/cells, computed if missing)."""
    found: list[Comparison] = []
    pairs = comparison_pairs(config.levels)
    for single, (name, _) in _parts(config):
        cells, _ = _testbed(single, name, out, False, None)
        for (loss, correction), cell in cells.items():
            if correction not in corrections:
                continue
            scale = float(_tensors(cell["on-policy"])[0].norm())
            for a, b in pairs:
                (ma, ca), (mb, cb) = _tensors(cell[a]), _tensors(cell[b])
                n = groups_needed(ma, ca, mb, cb)
                found.append(Comparison(name, single.seed, loss, correction, a, b,
                                        float((ma - mb).norm()) / scale, n,
                                        runs_needed(n, config.steps, config.batch)))
    return found


COLUMNS = ("testbed", "seed", "level", "loss", "correction", "kl_mu_pi", "cos_J", "ratio_J",
           "cos_T", "ratio_T", "rel_bias", "rel_std", "rel_mse", "ess", "ess_is",
           "n_vs_onpolicy", "n_vs_uncorrected", "runs_vs_onpolicy", "runs_vs_uncorrected")
NUMERIC = COLUMNS[5:]


def _fmt(value: Any) -> str:
    if isinstance(value, str):
        return value
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "inf"
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.2e}"
    return f"{value:.4g}"


def _csv(columns: Sequence[str], records: Sequence[Any]) -> str:
    """One line per record: its ``columns`` attributes, strings and ints as they are, every
    other number in full (``repr`` of the float)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for record in records:
        writer.writerow([getattr(record, c) if isinstance(getattr(record, c), str | int)
                         else repr(float(getattr(record, c))) for c in columns])
    return buffer.getvalue()


def table_csv(rows: Sequence[Row]) -> str:
    """One line per row (per instance: the ``seed`` column), every number in full."""
    return _csv(COLUMNS, rows)


def _median(values: Sequence[float]) -> float:
    """The median of the values that are not NaN (NaN if none); inf counts as large."""
    import statistics

    kept = [v for v in values if not math.isnan(v)]
    return statistics.median(kept) if kept else math.nan


def _spread(values: Sequence[float]) -> tuple[float, float]:
    kept = [v for v in values if not math.isnan(v)]
    return (min(kept), max(kept)) if kept else (math.nan, math.nan)


def median_rows(rows: Sequence[Row]) -> list[Row]:
    """One row per (testbed, level, loss, correction): each number the median over the
    instances (``seed`` -1 where there are several); the rows unchanged for one instance."""
    groups: dict[tuple[str, str, str, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.testbed, row.level, row.loss, row.correction), []).append(row)
    if all(len(g) == 1 for g in groups.values()):
        return list(rows)
    return [Row(*key[:1], -1, *key[1:],
                *(_median([getattr(r, c) for r in group]) for c in NUMERIC))
            for key, group in groups.items()]


LEGEND = (
    "kl_mu_pi: KL(μ‖π_θ) over responses. cos_J: cos(−E[∇loss], ∇J). ratio_J: |E[∇loss]|/|∇J|. "
    "cos_T, ratio_T: the same against ∇[J − τ·KL(π_θ‖π_old)], τ = {tau}. "
    "rel_bias: |m − m_on|/|m_on|, m_on the same loss and correction on fresh data at the same "
    "θ. rel_std: √tr Cov/|m_on|, Cov one group's. rel_mse: (|m − m_on|² + tr Cov/B)/|m_on|² at "
    "B = {batch} groups. ess: tr Cov_on/tr Cov (fresh groups one group is worth in variance). "
    "ess_is: 1/E_μ[(π_θ/μ)²] per response (0: μ misses responses π_θ has). n_vs_onpolicy, "
    "n_vs_uncorrected: groups per arm to tell this cell's expected update from its on-policy "
    "twin / from the same loss without a correction (α = 0.05 two-sided, power 0.8; inf: "
    "identical). runs_vs_*: the same in runs of S = {steps} steps of B = {batch} groups "
    "(n/(S·B); a run's statistic is the mean of its S·B group gradients at this state).")


def table_markdown(rows: Sequence[Row], config: AtlasConfig,
                   comparisons: Sequence[Comparison] = ()) -> str:
    """The summary, the level comparisons and one table per testbed; with several instances
    every number is the median over them with [min, max]."""
    seeds = list(dict.fromkeys(row.seed for row in rows))
    several = len(seeds) > 1
    which = (f"{len(seeds)} instances per testbed (seeds {seeds[0]}–{seeds[-1]}: rewards, start, "
             "trajectory and noise); every number is the median over them, [min, max] after it"
             if several else f"seed {seeds[0] if seeds else config.seed}; one prompt per "
             "testbed (one instance: examples, not averages; --instances N gives medians and "
             "ranges)")
    lines = ["# grlab atlas", "",
             f"K = {config.group_size}, B = {config.batch}, S = {config.steps}; {which}; θ "
             f"after {TRAJECTORY_STEPS} Adam steps of exact on-policy GRPO (lr "
             f"{TRAJECTORY_LR}).", "",
             LEGEND.format(batch=config.batch, tau=config.tau, steps=config.steps), ""]
    lines += _summary(rows)
    lines += _comparison_markdown(comparisons, config)
    columns = [c for c in COLUMNS[1:] if c != "seed"]
    groups: dict[tuple[str, str, str, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.testbed, row.level, row.loss, row.correction), []).append(row)

    def cell(group: list[Row], column: str) -> str:
        values = [getattr(r, column) for r in group]
        if isinstance(values[0], str) or len(values) == 1:
            return _fmt(values[0])
        low, high = _spread(values)
        return f"{_fmt(_median(values))} [{_fmt(low)}, {_fmt(high)}]"

    for name in dict.fromkeys(row.testbed for row in rows):
        lines += [f"## {name}", "", "| " + " | ".join(columns) + " |",
                  "|" + " --- |" * len(columns)]
        lines += ["| " + " | ".join(cell(group, c) for c in columns) + " |"
                  for key, group in groups.items() if key[0] == name]
        lines.append("")
    return "\n".join(lines)


def _summary(rows: Sequence[Row]) -> list[str]:
    """Median rel_bias (and rel_std) of each level × correction over testbeds, losses and
    instances."""
    levels = [lv for lv in dict.fromkeys(r.level for r in rows) if lv != "on-policy"]
    corrections = list(dict.fromkeys(r.correction for r in rows))
    if not levels:
        return []
    lines = ["## At a glance", "",
             "Median over testbeds, losses and instances of rel_bias (rel_std in brackets), "
             "per level and correction.", "",
             "| level | " + " | ".join(corrections) + " |",
             "|" + " --- |" * (len(corrections) + 1)]
    for level in levels:
        cells = []
        for correction in corrections:
            picked = [r for r in rows if r.level == level and r.correction == correction]
            cells.append(f"{_fmt(_median([r.rel_bias for r in picked]))} "
                         f"({_fmt(_median([r.rel_std for r in picked]))})")
        lines.append(f"| {level} | " + " | ".join(cells) + " |")
    return [*lines, ""]


COMPARISON_COLUMNS = ("testbed", "seed", "loss", "correction", "a", "b", "rel_gap", "groups",
                      "runs")


def comparisons_csv(comparisons: Sequence[Comparison]) -> str:
    """One line per comparison of two levels, every number in full."""
    return _csv(COMPARISON_COLUMNS, comparisons)


def _comparison_markdown(comparisons: Sequence[Comparison], config: AtlasConfig) -> list[str]:
    if not comparisons:
        return []
    testbeds = list(dict.fromkeys(c.testbed for c in comparisons))
    groups: dict[tuple[str, str, str, str], dict[str, list[Comparison]]] = {}
    for c in comparisons:
        groups.setdefault((c.a, c.b, c.loss, c.correction), {}).setdefault(
            c.testbed, []).append(c)
    several = any(len(v) > 1 for by in groups.values() for v in by.values())

    def cell(found: list[Comparison]) -> str:
        runs = [c.runs for c in found]
        text = (f"{_fmt(_median([c.groups for c in found]))} / **{_fmt(_median(runs))}** "
                f"(gap {_fmt(_median([c.rel_gap for c in found]))})")
        if several:
            low, high = _spread(runs)
            text += f" runs [{_fmt(low)}, {_fmt(high)}]"
        return text

    lines = ["## Telling two levels apart: groups and runs", "",
             "Groups / **runs** per arm for a z-test along the gap between the two levels' "
             "expected updates to detect it (α = 0.05 two-sided, power 0.8), the loss "
             f"uncorrected; a run = S = {config.steps} steps of B = {config.batch} groups at "
             "the level's fixed state, its statistic the mean of its S·B group gradients; "
             "gap = |m_a − m_b|/|m_on|"
             + ("; medians over the instances, [min, max] of the runs" if several else "")
             + ". Below 1 run: one run per arm shows the difference when the spread is known "
             "(estimating it needs at least 2).", "",
             "| a | b | loss | " + " | ".join(testbeds) + " |",
             "|" + " --- |" * (3 + len(testbeds))]
    for (a, b, loss, _), by in groups.items():
        lines.append(f"| {a} | {b} | {loss} | "
                     + " | ".join(cell(by[t]) if t in by else "" for t in testbeds) + " |")
    return [*lines, ""]


def write_atlas(rows: Sequence[Row], config: AtlasConfig, out: Path) -> dict[str, Path]:
    """table.md, table.csv, comparisons.csv (``level_comparisons``), the plots
    (``atlas_figures``, of the instances' medians) and disputes.md (every dispute of
    ``simulator.disputes``, exactly, on its fixed instance)."""
    from simulator.disputes import headline_markdown

    comparisons = level_comparisons(config, out)
    paths = {"markdown": atomic_write_text(out / "table.md",
                                           table_markdown(rows, config, comparisons)),
             "csv": atomic_write_text(out / "table.csv", table_csv(rows)),
             "comparisons": atomic_write_text(out / "comparisons.csv",
                                              comparisons_csv(comparisons)),
             "disputes": atomic_write_text(out / "disputes.md", headline_markdown())}
    paths.update(atlas_figures(median_rows(rows), config, out))
    return paths


__all__ += ["COLUMNS", "LEGEND", "Comparison", "atlas_figures", "cell_key", "comparison_pairs",
            "compute_cell", "instance_configs", "is_ess", "kl_mu_pi", "level_age",
            "level_comparisons", "median_rows", "parse_level", "part_names", "runs_needed",
            "split_level", "table_csv", "table_markdown"]


_MARKERS = "osD^vP*Xh<>p"


def _style(config: AtlasConfig) -> tuple[dict[str, str], dict[str, str]]:
    import matplotlib

    colors = matplotlib.colormaps["tab10"].colors
    return ({loss: colors[i % 10] for i, loss in enumerate(config.losses)},
            {c: _MARKERS[i % len(_MARKERS)] for i, c in enumerate(config.corrections)})


def _legend(fig: Any, config: AtlasConfig) -> None:
    from matplotlib.lines import Line2D

    color, marker = _style(config)
    handles = [Line2D([], [], color=color[loss], marker="o", ls="", label=loss)
               for loss in config.losses]
    handles += [Line2D([], [], color="0.3", marker=marker[c], ls="",
                       mfc="0.3" if c == "none" else "none", label=f"+ {c}")
                for c in config.corrections]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), frameon=False,
               fontsize=9)


def atlas_figures(rows: Sequence[Row], config: AtlasConfig, out: Path) -> dict[str, Path]:
    """map-TESTBED.png (bias–variance per level), bias_vs_kl.png, mse_vs_batch.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    color, marker = _style(config)
    paths: dict[str, Path] = {}
    levels = [lv for lv in config.levels if lv != "on-policy"]
    testbeds = list(dict.fromkeys(row.testbed for row in rows))

    def point(ax: Any, row: Row, x: Sequence[float], y: Sequence[float], size: float = 7
              ) -> None:  # Line2D markers: far cheaper to draw than one scatter per point
        # the first loss drawn largest: cells that coincide show as concentric markers
        grow = 1 + 0.45 * (len(config.losses) - 1 - config.losses.index(row.loss))
        ax.plot(x, y, ls="", marker=marker[row.correction], color=color[row.loss],
                ms=size * grow,
                mfc="none" if row.correction != "none" else color[row.loss], mew=1.4,
                zorder=3, clip_on=False)

    for name in testbeds:
        paths[f"map {name}"] = _map_figure(plt, rows, config, out, name, levels, point)
    paths["bias vs KL"] = _kl_figure(plt, rows, config, out, testbeds, point)
    paths["MSE vs B"] = _mse_figure(plt, rows, config, out, testbeds, levels)
    return paths


def _map_figure(plt: Any, rows: Sequence[Row], config: AtlasConfig, out: Path, name: str,
                levels: Sequence[str], point: Callable[..., None]) -> Path:
    from simulator.files import atomic_savefig

    cols = min(len(levels), 3) or 1
    nrows = max(math.ceil(len(levels) / cols), 1)
    fig, axes = plt.subplots(nrows, cols, figsize=(max(4.1 * cols, 10.0), 3.3 * nrows + 1.2),
                             squeeze=False)
    for ax, level in zip(axes.flat, levels, strict=False):
        cells = [r for r in rows if r.testbed == name and r.level == level]
        for row in cells:
            point(ax, row, [row.rel_bias], [row.rel_std])
        ax.set_title(f"{level}  (KL(μ‖π) = {cells[0].kl_mu_pi:.3g})", fontsize=10)
        ax.set_xlabel("bias |m − m_on| / |m_on|", fontsize=9)
        ax.set_ylabel("std √tr Cov / |m_on|", fontsize=9)
        # both axes from 0, so a panel's distances read as sizes, with room for markers
        ax.set_xlim(0, 1.12 * max((r.rel_bias for r in cells), default=0) or 1)
        ax.set_ylim(0, 1.12 * max((r.rel_std for r in cells), default=0) or 1)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
    for ax in list(axes.flat)[len(levels):]:
        ax.axis("off")
    several = f", medians of {config.instances} instances" if config.instances > 1 else ""
    fig.suptitle(f"{name}: bias against spread of one group's gradient, per off-policy "
                 f"level (K = {config.group_size}{several}); filled = no correction;\ncoinciding "
                 "cells show as concentric markers; bias 1 with std 0: the update is 0",
                 fontsize=11)
    _legend(fig, config)
    fig.tight_layout(rect=(0, 0.07 if nrows > 1 else 0.12, 1, 0.95))
    path = atomic_savefig(fig, out / f"map-{name}.png", dpi=100)
    plt.close(fig)
    return path


def _kl_figure(plt: Any, rows: Sequence[Row], config: AtlasConfig, out: Path,
               testbeds: Sequence[str], point: Callable[..., None]) -> Path:
    from simulator.files import atomic_savefig

    cols = min(len(testbeds), 2)
    nrows = math.ceil(len(testbeds) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(max(5.6 * cols, 10.0), 3.9 * nrows + 1.2),
                             squeeze=False)
    floor = 1e-6
    for ax, name in zip(axes.flat, testbeds, strict=False):
        for loss in config.losses:
            for correction in config.corrections:
                cell = [r for r in rows if r.testbed == name and r.loss == loss
                        and r.correction == correction and r.level != "on-policy"]
                if cell:
                    point(ax, cell[0], [max(r.kl_mu_pi, floor) for r in cell],
                          [max(r.rel_bias, floor) for r in cell], 5.5)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("KL(μ‖π_θ) (nats)", fontsize=9)
        ax.set_ylabel("bias |m − m_on| / |m_on|", fontsize=9)
        ax.grid(alpha=0.3, which="both")
    for ax in list(axes.flat)[len(testbeds):]:
        ax.axis("off")
    several = f"; medians of {config.instances} instances" if config.instances > 1 else ""
    fig.suptitle(f"bias of the expected update against how far μ is from π_θ{several}\n"
                 f"(every off-policy level; values below {floor:g} drawn at {floor:g})",
                 fontsize=11)
    _legend(fig, config)
    fig.tight_layout(rect=(0, 0.1 if nrows > 1 else 0.16, 1, 0.93))
    path = atomic_savefig(fig, out / "bias_vs_kl.png", dpi=100)
    plt.close(fig)
    return path


def _mse_figure(plt: Any, rows: Sequence[Row], config: AtlasConfig, out: Path,
                testbeds: Sequence[str], levels: Sequence[str]) -> Path:
    from simulator.files import atomic_savefig

    color, marker = _style(config)
    worst = max(levels, key=lambda lv: max(r.kl_mu_pi for r in rows if r.level == lv),
                default="on-policy")
    sizes = [2 ** i for i in range(0, 11)]
    fig, axes = plt.subplots(len(testbeds), len(config.losses),
                             figsize=(max(3.8 * len(config.losses), 10.0),
                                      2.9 * len(testbeds) + 1.2),
                             squeeze=False, sharex=True)
    for i, name in enumerate(testbeds):
        for j, loss in enumerate(config.losses):
            ax = axes[i, j]
            for row in rows:
                if row.testbed == name and row.loss == loss and row.level == worst:
                    mse = [row.rel_bias ** 2 + row.rel_std ** 2 / b for b in sizes]
                    ax.plot(sizes, mse, marker=marker[row.correction], color=color[loss],
                            mfc="none" if row.correction != "none" else color[loss],
                            ms=4, lw=1)
                if row.testbed == name and row.loss == loss and row.level == "on-policy" \
                        and row.correction == "none":
                    ax.plot(sizes, [row.rel_std ** 2 / b for b in sizes], color="0.5", ls=":",
                            lw=1.2)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.grid(alpha=0.3, which="both")
            ax.tick_params(labelsize=8)
            if i == 0:
                ax.set_title(loss, fontsize=10)
            if j == 0:
                ax.set_ylabel(f"{name}\nrelative MSE", fontsize=9)
            if i == len(testbeds) - 1:
                ax.set_xlabel("batch B (groups)", fontsize=9)
    several = f"; medians of {config.instances} instances" if config.instances > 1 else ""
    fig.suptitle(f"MSE of the mean of B groups against the fresh-data update, level {worst} "
                 f"(the largest KL); dotted: on-policy{several}", fontsize=11)
    _legend(fig, config)
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    path = atomic_savefig(fig, out / "mse_vs_batch.png", dpi=100)
    plt.close(fig)
    return path
