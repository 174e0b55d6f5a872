"""Simulated RL training under staleness: many runs at once, exact or sampled updates.

Design decisions
----------------
* A *run* is (seed, schedule, learning rate) for one loss. Runs that share the loss advance
  together: R runs × P prompts become one testbed of R·P prompts, so a single call of
  ``exact.ExpectedLoss`` (exact mode) or ``exact.batch_terms`` (sampled mode) computes every
  run's update — no Python loop over runs. Prompts never interact inside a loss (each group is
  its own batch), so run r's gradient is exactly R·∂(mean loss)/∂θ_r.
* The schedule says which parameters produced the data trained on at step t (``Schedule``):
  the paper's ``sync_interval`` m (the rollout model is refreshed every m steps),
  ``sync_offset`` d (rollouts run d steps ahead, so data are about d updates old) and
  ``offline`` (always the initial policy). Snapshots of θ are kept only while some run may
  still need them.
* Optimisers (SGD, Adam) are written out on [R, ...] tensors so each run has its own learning
  rate; Adam is elementwise, so this is exactly one ``torch.optim.Adam`` per run (tested).
* A run whose gradient or parameters become non-finite is *diverged*: it is frozen at its last
  finite parameters, its step is recorded, and it stays in every average (never dropped).
* Policies: ``tabular`` (θ = logits) or ``log-linear`` (logits = Φ·w with random features
  shared across prompts and responses, so an update for one prompt moves the others — the
  generalisation an LLM has and a table lacks).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from simulator.bandit import ResponseSpace, SoftmaxBandit
from simulator.exact import ExpectedLoss, LossSetup, batch_terms, sample_groups
from simulator.groups import loss_setup
from simulator.schedule import SETTINGS, Schedule
from simulator.tree import TreeMDP
from simulator.validation import require_choice, require_int, require_positive

__all__ = ["SETTINGS", "Problem", "Schedule", "Trajectory", "simulate"]


@dataclasses.dataclass(frozen=True)
class Problem:
    """A family of testbeds; ``instantiate(seeds)`` draws one instance per seed.

    env: "bandit" (``responses`` one-token answers) or "tree" (``vocab``, ``depth``, ``eos``).
    reward: "binary" (``correct`` right answers per prompt, the rest 0) or "graded" (U[0, 1)).
    policy: "tabular" or "log-linear" (``features`` shared features, N(0, 1)).
    init_scale: the initial logits (tabular) or weights (log-linear) are init_scale·N(0, 1).
    """

    env: str = "bandit"
    prompts: int = 8
    responses: int = 8
    vocab: int = 3
    depth: int = 3
    eos: bool = True
    reward: str = "binary"
    correct: int = 1
    policy: str = "tabular"
    features: int = 6
    init_scale: float = 1.0

    def __post_init__(self) -> None:
        require_choice("env", self.env, ("bandit", "tree"))
        require_choice("reward", self.reward, ("binary", "graded"))
        require_choice("policy", self.policy, ("tabular", "log-linear"))
        require_int("prompts", self.prompts, 1)
        require_int("features", self.features, 1)
        require_int("correct", self.correct, 1)
        require_positive("init_scale", self.init_scale)
        if self.env == "bandit":
            require_int("responses", self.responses, 2)
        if self.correct >= self.num_responses:
            raise ValueError(f"correct must be < the number of responses "
                             f"{self.num_responses}, got {self.correct}")

    @property
    def num_responses(self) -> int:
        return self.responses if self.env == "bandit" else TreeMDP.count(
            self.vocab, self.depth, self.eos)

    def make_env(self, rewards: Tensor) -> ResponseSpace:
        if self.env == "bandit":
            return SoftmaxBandit(rewards)
        return TreeMDP(rewards, self.vocab, self.depth, self.eos)

    def draw_rewards(self, generator: torch.Generator) -> Tensor:
        """[P, N] rewards for one instance."""
        shape = (self.prompts, self.num_responses)
        if self.reward == "graded":
            return torch.rand(shape, generator=generator, dtype=torch.float64)
        order = torch.rand(shape, generator=generator).argsort(dim=1)
        return (order < self.correct).to(torch.float64)


@dataclasses.dataclass
class Trajectory:
    """Per-step metrics of R runs: ``metrics[name]`` is [steps + 1, R] (step 0 = initial).

    ``runs`` lists (seed, schedule, lr) per run; ``diverged_at`` [R] is the step at which a run
    diverged (−1 if never); ``params`` [R, ...] the final parameters (logits or weights).
    Metric names: reward, optimum, subopt, entropy, kl_behaviour, kl_init, best_share,
    grad_norm, staleness, clipfrac (the expected share of tokens whose gradient clipping
    switched off, averaged over the step's updates; 0 at step 0).
    """

    loss: str
    runs: list[tuple[int, Schedule, float]]
    metrics: dict[str, Tensor]
    diverged_at: Tensor
    params: Tensor


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


class _Runs:
    """R runs tiled into one testbed of R·P prompts, with their parametrisation."""

    def __init__(self, problem: Problem, seeds: Sequence[int], run_seed: Tensor) -> None:
        rewards, theta0, features = [], [], []
        for seed in seeds:
            g = torch.Generator().manual_seed(int(seed))
            rewards.append(problem.draw_rewards(g))
            env = problem.make_env(rewards[-1])
            if problem.policy == "tabular":
                theta0.append(problem.init_scale * torch.randn(
                    env.logits_shape, generator=g, dtype=torch.float64))
            else:
                shape = (*env.logits_shape, problem.features)
                features.append(torch.randn(shape, generator=g, dtype=torch.float64))
                theta0.append(problem.init_scale * torch.randn(
                    problem.features, generator=g, dtype=torch.float64))
        self.problem, self.r = problem, len(run_seed)
        self.rewards = torch.stack(rewards)[run_seed]  # [R, P, N]
        self.env = problem.make_env(self.rewards.reshape(-1, self.rewards.shape[-1]))
        self.theta0 = torch.stack(theta0)[run_seed]
        self.features = torch.stack(features)[run_seed] if features else None

    def logits(self, theta: Tensor) -> Tensor:
        """[R·P, ...] logits of the tiled testbed from θ [R, ...]."""
        logits = theta if self.features is None else torch.einsum(
            "r...d,rd->r...", self.features, theta)
        return logits.reshape(self.env.logits_shape)

    def response_probs(self, theta: Tensor) -> Tensor:
        """π(y | x) [R, P, N]."""
        return self.env.sequence_probs(self.logits(theta)).reshape(self.rewards.shape)


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
        "kl_behaviour": _kl(pi, mu).mean(-1),
        "kl_init": _kl(pi, pi0).mean(-1),
        "best_share": (pi * best).sum(-1).mean(-1),
    }


def simulate(
    problem: Problem,
    loss: str | LossSetup,
    *,
    seeds: Sequence[int],
    schedules: Sequence[Schedule] = (Schedule(),),
    lrs: Sequence[float] = (0.1,),
    steps: int = 200,
    group_size: int = 4,
    mode: str = "expected",
    groups_per_prompt: int = 1,
    optimizer: str = "sgd",
    updates_per_batch: int = 1,
    sample_seed: int = 0,
    on_step: Callable[[int], None] | None = None,
    **hparams: Any,
) -> Trajectory:
    """Train every (seed × schedule × lr) run of one loss for ``steps`` batches.

    Args:
        problem: the testbed family; each seed draws its own rewards and initial parameters.
        loss: a registered loss name or a full ``exact.LossSetup``; ``hparams`` are the loss's
            keywords, plus LossSetup's own fields by name (``advantage``, ``advantage_kwargs``,
            ``agg``, ``norm_len``) to override how the loss is fed.
        mode: "expected" (the exact expected update over groups of ``group_size`` drawn from
            the behaviour policy) or "sampled" (``groups_per_prompt`` groups per prompt and
            step, drawn with a generator seeded by ``sample_seed``).
        optimizer: "sgd" or "adam"; ``updates_per_batch`` optimiser steps on each batch.
        on_step: called with the step index after each step (progress bars).
    Returns:
        a ``Trajectory`` with metrics [steps + 1, R]; runs ordered seed-major, then schedule,
        then learning rate.
    """
    require_choice("mode", mode, ("expected", "sampled"))
    require_int("steps", steps, 1)
    require_int("group_size", group_size, 1)
    require_int("groups_per_prompt", groups_per_prompt, 1)
    require_int("updates_per_batch", updates_per_batch, 1)
    if not seeds or not schedules or not lrs:
        raise ValueError("seeds, schedules and lrs must each hold at least one value")
    for lr in lrs:
        require_positive("lr", lr)
    setup = loss if isinstance(loss, LossSetup) else loss_setup(loss, hparams)
    grid = [(s, sch, lr) for s in range(len(seeds)) for sch in schedules for lr in lrs]
    runs = _Runs(problem, seeds, torch.tensor([g[0] for g in grid]))
    lr = torch.tensor([g[2] for g in grid], dtype=torch.float64)
    opt = _Optimizer(optimizer, lr)
    generator = torch.Generator().manual_seed(sample_seed)
    expected = ExpectedLoss(runs.env, setup, group_size)

    theta = runs.theta0.clone()
    pi0 = runs.response_probs(theta)
    history = {0: theta}
    diverged_at = torch.full((runs.r,), -1, dtype=torch.long)
    records: dict[str, list[Tensor]] = {}

    def record(pi: Tensor, mu: Tensor, grad_norm: Tensor, staleness: Tensor, clipfrac: Tensor
               ) -> None:
        row = _metrics(runs, pi, mu, pi0)
        row.update(grad_norm=grad_norm, staleness=staleness.to(torch.float64),
                   clipfrac=clipfrac)
        for key, value in row.items():
            records.setdefault(key, []).append(value.detach())

    zero = torch.zeros(runs.r, dtype=torch.float64)
    record(pi0, pi0, zero, zero, zero)
    for step in range(steps):
        behaviour = [sch.behaviour_step(step) for _, sch, _ in grid]
        theta_b = torch.stack([history[b][i] for i, b in enumerate(behaviour)])
        mu = runs.response_probs(theta_b).detach()
        mu_flat = mu.reshape(runs.env.rewards.shape)
        batch = (sample_groups(mu_flat, group_size, groups_per_prompt, generator)
                 if mode == "sampled" else None)
        clipfrac = torch.zeros(runs.r, dtype=torch.float64)
        for _ in range(updates_per_batch):
            leaf = theta.detach().requires_grad_(True)
            logits = runs.logits(leaf)
            if batch is None:
                value, clipped = expected.terms(logits, mu_flat)
            else:
                value, clipped = batch_terms(runs.env, logits, batch, mu_flat, setup,
                                             generator=generator)
            clipfrac += clipped.reshape(runs.r, -1).mean(1) / updates_per_batch
            (grad,) = torch.autograd.grad(value * runs.r, leaf)
            theta = _guarded_step(opt, theta, grad, diverged_at, step + 1)
        grad_norm = grad.flatten(1).norm(dim=1)
        record(runs.response_probs(theta), mu,
               torch.where(torch.isfinite(grad_norm), grad_norm, torch.full_like(grad_norm,
                                                                               math.inf)),
               torch.tensor([step - b for b in behaviour]), clipfrac)
        history[step + 1] = theta.detach()
        needed = min(sch.behaviour_step(step + 1) for _, sch, _ in grid)
        for old in [key for key in history if key < needed]:
            del history[old]
        if on_step is not None:
            on_step(step)
    metrics = {key: torch.stack(values) for key, values in records.items()}
    return Trajectory(setup.loss, [(seeds[s], sch, lr) for s, sch, lr in grid], metrics,
                      diverged_at, theta.detach())


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
