"""Simulated RL training under staleness: many runs at once, exact or sampled updates.

Design decisions
----------------
* A *run* is (seed, schedule, learning rate) for one loss. Runs that share the loss advance
  together: R runs × P prompts become one testbed of R·P prompts, so a single call of
  ``exact.ExpectedLoss`` (``groups="expected"``) or ``exact.batch_terms`` (``"sampled"``)
  computes every run's update — no Python loop over runs. Prompts never interact inside a
  loss (each group is its own batch), so run r's gradient is exactly R·∂(mean loss)/∂θ_r.
* The schedule says which parameters produced the data trained on at step t (``Schedule``):
  the paper's ``sync_interval`` m (the rollout model is refreshed every m steps),
  ``sync_offset`` d (rollouts run d steps ahead, so data are about d updates old) and
  ``offline`` (always the initial policy). Snapshots of θ are kept only while some run may
  still need them.
* Three policies: a schedule with a mismatched sampler (``rollout_temperature``,
  ``rollout_noise``) samples the groups from μ, a known perturbation of π_old = π_{θ_b},
  while the loss's ratio is taken against π_old (the engines' ``anchor``) and the setup's
  corrections see both. ε, the noise direction, is one N(0, 1) draw of the instance's logits
  per seed (the same for every schedule and learning rate of that seed, so settings compare
  on the same perturbation). Without a mismatched schedule nothing of this runs.
* Optimisers (SGD, Adam) are written out on [R, ...] tensors so each run has its own learning
  rate; Adam is elementwise, so this is exactly one ``torch.optim.Adam`` per run (tested).
* A run whose gradient or parameters become non-finite is *diverged*: it is frozen at its last
  finite parameters, its step is recorded, and it stays in every average (never dropped).
* A testbed family is a ``BanditProblem`` (one-token answers) or a ``TreeProblem`` (token
  sequences), each holding only its own fields; ``Problem(env=...)`` builds either.
* Policies: ``tabular`` (θ = logits) or ``log-linear`` (logits = Φ·w with random features
  shared across prompts and responses, so an update for one prompt moves the others — the
  generalisation an LLM has and a table lacks).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from simulator.bandit import ResponseSpace, SoftmaxBandit
from simulator.exact import ExpectedLoss, batch_terms, sample_groups
from simulator.groups import LossSetup, loss_setup
from simulator.schedule import SETTINGS, Schedule
from simulator.tree import TreeMDP
from simulator.validation import require_choice, require_int, require_positive

__all__ = ["RATIO_FAR", "RATIO_QUANTILES", "SETTINGS", "BanditProblem", "Instance", "Problem",
           "Schedule", "Trajectory", "TreeProblem", "draw_instance", "simulate",
           "weighted_quantiles"]


@dataclasses.dataclass(frozen=True)
class Problem:
    """A family of testbeds; ``instantiate(seeds)`` draws one instance per seed. The fields
    every testbed has; ``BanditProblem`` and ``TreeProblem`` add their own.

    reward: "binary" (``correct`` right answers per prompt, the rest 0) or "graded" (U[0, 1)).
    policy: "tabular" or "log-linear" (``features`` shared features, N(0, 1)).
    init_scale: the initial logits (tabular) or weights (log-linear) are init_scale·N(0, 1).
    ``Problem(env=..., ...)`` builds the pair's member that ``env`` names ("bandit" or "tree").
    """

    env: str = "bandit"
    prompts: int = 8
    reward: str = "binary"
    correct: int = 1
    policy: str = "tabular"
    features: int = 6
    init_scale: float = 1.0

    def __new__(cls, *args: Any, **fields: Any) -> Problem:
        if cls is Problem:  # the old single class: dispatch on env
            cls = _ENVS[require_choice("env", fields.get("env", "bandit"), tuple(_ENVS))]
        return super().__new__(cls)

    def __post_init__(self) -> None:
        require_choice("env", self.env, (_KINDS[type(self)],))
        require_choice("reward", self.reward, ("binary", "graded"))
        require_choice("policy", self.policy, ("tabular", "log-linear"))
        require_int("prompts", self.prompts, 1)
        require_int("features", self.features, 1)
        require_int("correct", self.correct, 1)
        require_positive("init_scale", self.init_scale)
        if self.correct >= self.num_responses:
            raise ValueError(f"correct must be < the number of responses "
                             f"{self.num_responses}, got {self.correct}")

    @property
    def num_responses(self) -> int:
        raise NotImplementedError

    def make_env(self, rewards: Tensor) -> ResponseSpace:
        raise NotImplementedError

    def draw_rewards(self, generator: torch.Generator) -> Tensor:
        """[P, N] rewards for one instance."""
        shape = (self.prompts, self.num_responses)
        if self.reward == "graded":
            return torch.rand(shape, generator=generator, dtype=torch.float64)
        order = torch.rand(shape, generator=generator).argsort(dim=1)
        return (order < self.correct).to(torch.float64)


@dataclasses.dataclass(frozen=True)
class BanditProblem(Problem):
    """One-token answers: ``responses`` per prompt (a ``SoftmaxBandit``)."""

    responses: int = 8

    def __post_init__(self) -> None:
        require_int("responses", self.responses, 2)
        super().__post_init__()

    @property
    def num_responses(self) -> int:
        return self.responses

    def make_env(self, rewards: Tensor) -> ResponseSpace:
        return SoftmaxBandit(rewards)


@dataclasses.dataclass(frozen=True)
class TreeProblem(Problem):
    """Token sequences: a tree of ``vocab`` tokens, ``depth`` deep, token 0 ending a response
    when ``eos`` (a ``TreeMDP``)."""

    env: str = "tree"
    vocab: int = 3
    depth: int = 3
    eos: bool = True

    @property
    def num_responses(self) -> int:
        return TreeMDP.count(self.vocab, self.depth, self.eos)

    def make_env(self, rewards: Tensor) -> ResponseSpace:
        return TreeMDP(rewards, self.vocab, self.depth, self.eos)


_ENVS: dict[str, type[Problem]] = {"bandit": BanditProblem, "tree": TreeProblem}
_KINDS = {cls: env for env, cls in _ENVS.items()}


@dataclasses.dataclass
class Trajectory:
    """Per-step metrics of R runs: ``metrics[name]`` is [steps + 1, R] (step 0 = initial).

    ``runs`` lists (seed, schedule, lr) per run; ``diverged_at`` [R] is the step at which a run
    diverged (−1 if never); ``params`` [R, ...] the final parameters (logits or weights);
    ``snapshots[t]`` [R, ...] the parameters after step t (0: the start) for each t of
    ``simulate``'s ``snapshot_steps``. Metric names: reward, optimum, subopt, entropy,
    kl_behavior, kl_init, best_share, grad_norm, staleness, clipfrac (the expected share of
    tokens whose gradient clipping switched off, averaged over the step's updates; 0 at step
    0); kl_behavior is KL(π ‖ π_old), π_old the schedule's behavior policy π_{θ_b}; with a
    mismatched sampler, kl_rollout,
    KL(π_old ‖ μ) of the step's data (at step 0, of π_0's sampler). ratio_q05, ratio_q50,
    ratio_q95: the π_old-weighted 5%, 50%, 95% quantiles of the sequence ratio
    ρ = π(y)/π_old(y) over every (prompt, response), prompts weighted equally; ratio_far: the
    π_old-mass with |ρ − 1| > 0.2. Like kl_behavior, they compare the policy after step t's
    update with step t's behaviour policy (ρ ≡ 1 at step 0).
    """

    loss: str
    runs: list[tuple[int, Schedule, float]]
    metrics: dict[str, Tensor]
    diverged_at: Tensor
    params: Tensor
    snapshots: dict[int, Tensor] = dataclasses.field(default_factory=dict)


class _Optimizer:
    """SGD or Adam on an [R, ...] tensor with a learning rate per run."""

    def __init__(self, kind: str, lr: Tensor, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.kind = require_choice("optimizer", kind, ("sgd", "adam"))
        self.lr, self.betas, self.eps = lr, betas, eps
        self.m: Tensor | None = None
        self.v: Tensor | None = None
        self.t = 0

    def step(self, theta: Tensor, grad: Tensor) -> Tensor:
        lr = self.lr.reshape(-1, *([1] * (theta.ndim - 1)))
        if self.kind == "sgd":
            return theta - lr * grad
        b1, b2 = self.betas
        self.t += 1
        self.m = grad * (1 - b1) if self.m is None else self.m * b1 + grad * (1 - b1)
        self.v = grad**2 * (1 - b2) if self.v is None else self.v * b2 + grad**2 * (1 - b2)
        m_hat = self.m / (1 - b1**self.t)
        v_hat = self.v / (1 - b2**self.t)
        return theta - lr * m_hat / (v_hat.sqrt() + self.eps)


def _kl(p: Tensor, q: Tensor) -> Tensor:
    """KL(p‖q) over the last dim, 0·log 0 = 0; q = 0 where p > 0 gives inf."""
    ratio = torch.where(p > 0, torch.log(p) - torch.log(q), torch.zeros_like(p))
    return (p * ratio).sum(-1)


class Instance(NamedTuple):
    """One seed's draw of a ``Problem``: rewards [P, N], the initial parameters θ₀ (logits, or
    weights [features] of a log-linear policy) and the features Φ [P, ..., features] (None for
    a tabular policy); logits = Φ·w."""

    rewards: Tensor
    theta0: Tensor
    features: Tensor | None

    def logits(self, theta: Tensor) -> Tensor:
        """The logits [P, ...] of parameters ``theta`` (shaped as θ₀): θ itself, or Φ·θ."""
        return theta if self.features is None else self.features @ theta


def draw_instance(problem: Problem, seed: int) -> Instance:
    """The instance ``seed`` draws (the one home of that draw: ``simulate`` uses it per seed).
    One generator seeded with ``seed`` draws, in order, the rewards, then the features Φ
    (log-linear) and θ₀ = init_scale·N(0, 1)."""
    g = torch.Generator().manual_seed(int(seed))
    rewards = problem.draw_rewards(g)
    env = problem.make_env(rewards)
    if problem.policy == "tabular":
        return Instance(rewards, problem.init_scale * torch.randn(
            env.logits_shape, generator=g, dtype=torch.float64), None)
    features = torch.randn((*env.logits_shape, problem.features), generator=g,
                           dtype=torch.float64)
    return Instance(rewards, problem.init_scale * torch.randn(
        problem.features, generator=g, dtype=torch.float64), features)


class _Runs:
    """R runs tiled into one testbed of R·P prompts, with their parametrisation."""

    def __init__(self, problem: Problem, seeds: Sequence[int], run_seed: Tensor) -> None:
        rewards, theta0, features = [], [], []
        for seed in seeds:
            instance = draw_instance(problem, seed)
            rewards.append(instance.rewards)
            theta0.append(instance.theta0)
            if instance.features is not None:
                features.append(instance.features)
        self.problem, self.r = problem, len(run_seed)
        self.rewards = torch.stack(rewards)[run_seed]  # [R, P, N]
        self.env = problem.make_env(self.rewards.reshape(-1, self.rewards.shape[-1]))
        self.theta0 = torch.stack(theta0)[run_seed]
        self.features = torch.stack(features)[run_seed] if features else None
        self.seeds, self.run_seed = list(seeds), run_seed
        self.sampler: tuple[Tensor, Tensor, Tensor] | None = None  # (1/T [R], σ [R], ε)

    def mismatch(self, schedules: Sequence[Schedule]) -> None:
        """Give every run the sampler its schedule names (``Schedule.rollout_temperature``,
        ``rollout_noise``); ε is drawn per seed, from a generator seeded with 1,000,003·seed + 17
        (apart from the instance's own draws)."""
        if not any(sch.mismatched for sch in schedules):
            return
        shape = self.env.logits_shape[1:]
        eps = []
        for seed in self.seeds:
            g = torch.Generator().manual_seed((1_000_003 * int(seed) + 17) % 2**63)
            eps.append(torch.randn((self.problem.prompts, *shape), generator=g,
                                   dtype=torch.float64))
        self.sampler = (
            torch.tensor([1.0 / sch.rollout_temperature for sch in schedules],
                         dtype=torch.float64),
            torch.tensor([sch.rollout_noise for sch in schedules], dtype=torch.float64),
            torch.stack(eps)[self.run_seed])

    def rollout_probs(self, theta: Tensor) -> Tensor:
        """μ(y | x) [R, P, N] of each run's sampler at θ [R, ...] (π itself when matched)."""
        if self.sampler is None:
            return self.response_probs(theta)
        inv_t, sigma, eps = self.sampler
        logits = self.logits(theta).reshape(self.r, *eps.shape[1:])
        view = (-1, *([1] * (logits.ndim - 1)))
        logits = logits * inv_t.view(view) + sigma.view(view) * eps
        return self.env.sequence_probs(logits.reshape(self.env.logits_shape)).reshape(
            self.rewards.shape)

    def logits(self, theta: Tensor) -> Tensor:
        """[R·P, ...] logits of the tiled testbed from θ [R, ...]."""
        logits = theta if self.features is None else torch.einsum(
            "r...d,rd->r...", self.features, theta)
        return logits.reshape(self.env.logits_shape)

    def response_probs(self, theta: Tensor) -> Tensor:
        """π(y | x) [R, P, N]."""
        return self.env.sequence_probs(self.logits(theta)).reshape(self.rewards.shape)


# The distribution of the IS ratio ρ = π_θ(y)/π_old(y) under the behaviour policy: these
# μ-weighted quantiles, and the μ-mass with |ρ − 1| > RATIO_FAR.
RATIO_QUANTILES = {"ratio_q05": 0.05, "ratio_q50": 0.5, "ratio_q95": 0.95}
RATIO_FAR = 0.2


def weighted_quantiles(values: Tensor, weights: Tensor, qs: Sequence[float]) -> Tensor:
    """[len(qs), R]: for each row r of ``values`` [R, M] with ``weights`` [R, M] (≥ 0, summing to
    1 per row), the lower q-quantile min{v : Σ_{values ≤ v} weight ≥ q}. Entries of weight 0
    never count (a response the behaviour never samples has no ratio under it)."""
    order = values.argsort(dim=-1)
    sorted_values = values.gather(-1, order)
    cumulative = weights.gather(-1, order).cumsum(-1)
    out = []
    for q in qs:
        # the first sorted entry whose cumulative weight reaches q (1e-12: rounding of the sum)
        index = (cumulative < q - 1e-12).sum(-1, keepdim=True).clamp(max=values.shape[-1] - 1)
        out.append(sorted_values.gather(-1, index).squeeze(-1))
    return torch.stack(out)


def _ratio_metrics(pi: Tensor, mu: Tensor) -> dict[str, Tensor]:
    """ρ = π/μ per response [R, P, N] under the behaviour μ, prompts weighted equally: the
    ``RATIO_QUANTILES`` and ``ratio_far``, the μ-mass of |ρ − 1| > ``RATIO_FAR``."""
    r, p = pi.shape[0], pi.shape[1]
    weights = (mu / p).reshape(r, -1)
    ratio = torch.where(mu > 0, pi / mu.clamp_min(1e-300), torch.ones_like(pi)).reshape(r, -1)
    quantiles = weighted_quantiles(ratio, weights, list(RATIO_QUANTILES.values()))
    row = dict(zip(RATIO_QUANTILES, quantiles, strict=True))
    row["ratio_far"] = (weights * ((ratio - 1).abs() > RATIO_FAR)).sum(-1)
    return row


def _metrics(runs: _Runs, pi: Tensor, mu: Tensor, pi0: Tensor) -> dict[str, Tensor]:
    """Per-run metrics [R] of the current response distributions π, μ, π_0 [R, P, N]."""
    rewards = runs.rewards
    best = rewards == rewards.max(dim=-1, keepdim=True).values
    reward = (pi * rewards).sum(-1).mean(-1)
    optimum = rewards.max(-1).values.mean(-1)
    entropy = -(torch.where(pi > 0, pi * torch.log(pi), torch.zeros_like(pi))).sum(-1)
    return {
        "reward": reward,
        "optimum": optimum,
        "subopt": optimum - reward,
        "entropy": entropy.mean(-1),
        "kl_behavior": _kl(pi, mu).mean(-1),
        "kl_init": _kl(pi, pi0).mean(-1),
        "best_share": (pi * best).sum(-1).mean(-1),
        **_ratio_metrics(pi, mu),
    }


def simulate(
    problem: Problem,
    setup: LossSetup | str,
    *,
    seeds: Sequence[int],
    schedules: Sequence[Schedule] = (Schedule(),),
    lrs: Sequence[float] = (0.1,),
    steps: int = 200,
    group_size: int = 4,
    groups: str = "expected",
    groups_per_prompt: int = 1,
    optimizer: str = "sgd",
    updates_per_batch: int = 1,
    sample_seed: int = 0,
    on_step: Callable[[int], None] | None = None,
    snapshot_steps: Sequence[int] = (),
    **hparams: Any,
) -> Trajectory:
    """Train every (seed × schedule × lr) run of one loss for ``steps`` batches.

    Args:
        problem: the testbed family; each seed draws its own rewards and initial parameters.
        setup: a full ``LossSetup``, or a registered loss name; then ``hparams`` are the loss's
            keywords, plus LossSetup's own fields by name (``advantage``, ``advantage_kwargs``,
            ``agg``, ``norm_len``) to override how the loss is fed.
        schedules: which policy produced each step's data (``Schedule``); one with a
            mismatched sampler (``rollout_temperature``, ``rollout_noise``) draws the groups
            from μ and takes the loss's ratio against π_old = the schedule's policy.
        groups: "expected" (the exact expected update over groups of ``group_size`` drawn from
            the behavior policy) or "sampled" (``groups_per_prompt`` groups per prompt and
            step, drawn with a generator seeded by ``sample_seed``).
        optimizer: "sgd" or "adam"; ``updates_per_batch`` optimiser steps on each batch.
        on_step: called with the step index after each step (progress bars).
        snapshot_steps: steps t (0 ≤ t ≤ ``steps``) whose parameters the trajectory keeps in
            ``snapshots`` (one run instead of one per step wanted).
    Returns:
        a ``Trajectory`` with metrics [steps + 1, R]; runs ordered seed-major, then schedule,
        then learning rate.
    """
    require_choice("groups", groups, ("expected", "sampled"))
    require_int("steps", steps, 1)
    require_int("group_size", group_size, 1)
    require_int("groups_per_prompt", groups_per_prompt, 1)
    require_int("updates_per_batch", updates_per_batch, 1)
    if not seeds or not schedules or not lrs:
        raise ValueError("seeds, schedules and lrs must each hold at least one value")
    for lr in lrs:
        require_positive("lr", lr)
    setup = setup if isinstance(setup, LossSetup) else loss_setup(setup, hparams)
    grid = [(s, sch, lr) for s in range(len(seeds)) for sch in schedules for lr in lrs]
    runs = _Runs(problem, seeds, torch.tensor([g[0] for g in grid]))
    lab = _Training(
        runs, setup, [sch for _, sch, _ in grid], group_size,
        groups_per_prompt if groups == "sampled" else None, updates_per_batch,
        _Optimizer(optimizer, torch.tensor([g[2] for g in grid], dtype=torch.float64)),
        torch.Generator().manual_seed(sample_seed))
    wanted = set(snapshot_steps)
    for t in wanted:
        require_int("snapshot_steps", t, 0)
        if t > steps:
            raise ValueError(f"snapshot_steps must be <= steps={steps}, got {t}")
    snapshots = {0: lab.theta.detach().clone()} if 0 in wanted else {}
    for step in range(steps):
        _train_step(lab, step)
        if step + 1 in wanted:
            snapshots[step + 1] = lab.theta.detach().clone()
        if on_step is not None:
            on_step(step)
    metrics = {key: torch.stack(values) for key, values in lab.records.items()}
    return Trajectory(setup.loss, [(seeds[s], sch, lr) for s, sch, lr in grid], metrics,
                      lab.diverged_at, lab.theta.detach(), snapshots)


class _Training:
    """What the steps of one ``simulate`` call share: the runs, how each update is computed,
    the optimiser, θ, the snapshots of θ some run's schedule may still sample from, and the
    metrics recorded so far (step 0's at construction)."""

    def __init__(self, runs: _Runs, setup: LossSetup, schedules: list[Schedule],
                 group_size: int, sampled_groups: int | None, updates_per_batch: int,
                 opt: _Optimizer, generator: torch.Generator) -> None:
        self.runs, self.setup, self.schedules = runs, setup, schedules
        self.group_size, self.sampled_groups = group_size, sampled_groups
        self.updates_per_batch, self.opt, self.generator = updates_per_batch, opt, generator
        self.expected = ExpectedLoss(runs.env, setup, group_size)
        self.theta = runs.theta0.clone()
        self.pi0 = runs.response_probs(self.theta)
        runs.mismatch(schedules)
        self.history = {0: self.theta}
        self.diverged_at = torch.full((runs.r,), -1, dtype=torch.long)
        self.records: dict[str, list[Tensor]] = {}
        zero = torch.zeros(runs.r, dtype=torch.float64)
        rollout = None if runs.sampler is None else runs.rollout_probs(self.theta)
        self.record(self.pi0, self.pi0, zero, zero, zero, rollout)

    def record(self, pi: Tensor, mu: Tensor, grad_norm: Tensor, staleness: Tensor,
               clipfrac: Tensor, rollout: Tensor | None = None) -> None:
        row = _metrics(self.runs, pi, mu, self.pi0)
        row.update(grad_norm=grad_norm, staleness=staleness.to(torch.float64),
                   clipfrac=clipfrac)
        if rollout is not None:
            row["kl_rollout"] = _kl(mu, rollout).mean(-1)
        for key, value in row.items():
            self.records.setdefault(key, []).append(value.detach())

    def update_value(self, logits: Tensor, mu_flat: Tensor, batch: Any,
                     anchor: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(loss, clipfrac) of one update: exact over all groups, or on the sampled batch;
        groups drawn from ``mu_flat``, the loss's ratio against ``anchor`` (π_old) when the
        sampler is mismatched, else against ``mu_flat`` itself."""
        if batch is None:
            return self.expected.terms(logits, mu_flat, anchor)
        return batch_terms(self.runs.env, logits, batch, mu_flat, self.setup,
                           generator=self.generator, anchor=anchor)


def _train_step(lab: _Training, step: int) -> None:
    """One step of every run: the data of each run's behavior policy θ_{b(step)}, then
    ``updates_per_batch`` guarded optimiser steps on them, then the step's metrics."""
    runs = lab.runs
    behavior = [sch.behavior_step(step) for sch in lab.schedules]
    theta_b = torch.stack([lab.history[b][i] for i, b in enumerate(behavior)])
    mu = runs.response_probs(theta_b).detach()  # π_old; the sampler too unless mismatched
    rollout, anchor = None, None
    if runs.sampler is not None:
        rollout = runs.rollout_probs(theta_b).detach()
        anchor = mu.reshape(runs.env.rewards.shape)
    mu_flat = (mu if rollout is None else rollout).reshape(runs.env.rewards.shape)
    batch = (None if lab.sampled_groups is None else sample_groups(
        mu_flat, lab.group_size, lab.sampled_groups, lab.generator))
    clipfrac = torch.zeros(runs.r, dtype=torch.float64)
    for _ in range(lab.updates_per_batch):
        leaf = lab.theta.detach().requires_grad_(True)
        value, clipped = lab.update_value(runs.logits(leaf), mu_flat, batch, anchor)
        clipfrac += clipped.reshape(runs.r, -1).mean(1) / lab.updates_per_batch
        (grad,) = torch.autograd.grad(value * runs.r, leaf)
        lab.theta = _guarded_step(lab.opt, lab.theta, grad, lab.diverged_at, step + 1)
    grad_norm = grad.flatten(1).norm(dim=1)
    lab.record(runs.response_probs(lab.theta), mu,
               torch.where(torch.isfinite(grad_norm), grad_norm,
                           torch.full_like(grad_norm, math.inf)),
               torch.tensor([step - b for b in behavior]), clipfrac, rollout)
    lab.history[step + 1] = lab.theta.detach()
    needed = min(sch.behavior_step(step + 1) for sch in lab.schedules)
    for old in [key for key in lab.history if key < needed]:
        del lab.history[old]


def _guarded_step(opt: _Optimizer, theta: Tensor, grad: Tensor, diverged_at: Tensor,
                  step: int) -> Tensor:
    """One optimiser step; runs that produce a non-finite gradient or θ are frozen."""
    alive = diverged_at < 0
    safe_grad = torch.where(torch.isfinite(grad), grad, torch.zeros_like(grad))
    new = opt.step(theta.detach(), safe_grad)
    finite = torch.isfinite(grad).flatten(1).all(1) & torch.isfinite(new).flatten(1).all(1)
    newly = alive & ~finite
    diverged_at[newly] = step
    keep = (alive & finite).reshape(-1, *([1] * (theta.ndim - 1)))
    return torch.where(keep, new, theta.detach())
