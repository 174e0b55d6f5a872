"""Exact covariance of one group's gradient: sufficient statistics vs enumeration vs Monte Carlo.

What is measured
----------------
At each point — environment (softmax bandit; binary tree MDP of depth log₂ N without EOS),
N responses, group size K, reward kind (binary: ⌈N/4⌉ correct answers; three grades
{0, ½, 1}) — one off-policy problem built as in ``exact_vs_mc.py`` (θ ∼ N(0, 1), μ = softmax
of θ plus N(0, ½²) noise, loss ``--loss``, default GRPO, one prompt):

1. *sufficient*: wall time of ``simulator.exact.gradient_covariance(..., method="sufficient")``
   (E[g gᵀ] − E[g]E[g]ᵀ summed over reward-count classes). ``cold``: the first call at this
   point after the simulator's caches are cleared (at the first point: the first call of the
   process; the engine uses no torch.func on the tabular testbeds, so it pays no one-time
   set-up); ``warm``: median of ``--repeats`` later calls.
2. *enumerate*: the same with ``method="enumerate"`` (every multiset's gradient, the naive
   twin), median of ``--enum-repeats`` calls after one untimed call (which pays torch.func's
   one-time set-up, seconds, at the first point: ``group_gradients`` is a vmap). The
   relative Frobenius difference between the two is recorded (they must agree to ~1e-12).
   Not run (recorded as not measured, no ratio) when C(N + K − 1, K) exceeds
   ``--max-multisets``.
3. *Monte Carlo to the same precision*: the sample covariance Ĉ_S of S sampled groups'
   gradients (``group_gradients`` on ``sample_groups``, in chunks of ``--chunk-groups``)
   reaches relative Frobenius error ε = ``--target`` (default 1e-3) in RMS at
   S* = (E‖g − m‖⁴ − ‖C‖²_F)/(ε‖C‖_F)² (the variance of a mean of the i.i.d. matrices
   (g − m)(g − m)ᵀ; the O(1/S²) term of using the sample mean is dropped). E‖g − m‖⁴ comes
   from a pilot of ``--pilot-groups`` groups (centred at the exact mean). Time: S* times the
   seconds per group of warm chunk calls — and at the ``--direct`` points S* groups are actually
   drawn and timed (when predicted under ``--direct-budget-s``) and the realised error recorded
   (it scatters around ε).

Ratios: enumeration time / sufficient time and Monte Carlo time / sufficient time, warm and
cold. Writes OUT/covariance.json; the headline is the worst (smallest) ratio of each kind.

    python benchmarks/covariance.py            # N = 16, K = 8 (a few minutes)
    python benchmarks/covariance.py --smoke    # tiny (seconds)
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import torch
import tyro
from _results import RESULTS, clear_simulator_caches, median_seconds, report
from exact_vs_mc import make_problem

from simulator import exact


@dataclasses.dataclass
class Args:
    responses: int = 16
    """N, responses per prompt (a tree needs a power of 2)."""
    group_size: int = 8
    """K, responses per group."""
    rewards: tuple[str, ...] = ("binary", "graded3")
    """reward kinds (few values: what the statistics engine is for)."""
    envs: tuple[str, ...] = ("bandit", "tree")
    """testbeds."""
    loss: str = "grpo"
    """any loss the statistics engine accepts."""
    target: float = 1e-3
    """relative Frobenius error that Monte Carlo must reach."""
    pilot_groups: int = 16384
    """groups of the Monte Carlo pilot that estimates E‖g − m‖⁴."""
    chunk_groups: int = 16384
    """groups per sampled chunk (the cost per group is measured on warm chunks)."""
    direct: tuple[str, ...] = ("bandit:binary", "bandit:graded3", "tree:binary", "tree:graded3")
    """points (env:reward) where S* groups are actually drawn and timed."""
    direct_budget_s: float = 240.0
    """a direct Monte Carlo measurement is skipped when its predicted time exceeds this."""
    max_multisets: int = 1_000_000
    """enumeration is timed up to this many multisets, extrapolated above."""
    repeats: int = 5
    """timed repeats of the sufficient-statistics call (median)."""
    enum_repeats: int = 2
    """timed repeats of the enumeration (median)."""
    threads: int = 1
    """torch threads (one: the numbers of this project's benchmarks are single-threaded)."""
    seed: int = 0
    """seed of every draw."""
    out: Path = RESULTS
    """output folder for covariance.json."""
    smoke: bool = False
    """tiny sizes for the smoke test: N 4, K 3, ε = 0.05, small pilot and chunks."""


SMOKE = {"responses": 4, "group_size": 3, "target": 0.05, "pilot_groups": 256,
         "chunk_groups": 512, "direct_budget_s": 10.0, "repeats": 1, "enum_repeats": 1}


def frobenius_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def sampled_moments(problem, loss: str, k: int, groups: int, chunk: int,
                    generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ g, Σ g gᵀ) over ``groups`` sampled groups, in chunks."""
    env, logits, mu = problem
    d = logits[0].numel()
    first = torch.zeros(d, dtype=torch.float64)
    second = torch.zeros(d, d, dtype=torch.float64)
    left = groups
    while left > 0:
        size = min(chunk, left)
        batch = exact.sample_groups(mu, k, size, generator)
        g = exact.group_gradients(env, logits, batch, mu, loss).reshape(size, d)
        first += g.sum(0)
        second += g.T @ g
        left -= size
    return first, second


def monte_carlo(problem, args: Args, cov: torch.Tensor, mean: torch.Tensor, direct: bool,
                seed: int) -> dict[str, object]:
    """S* from a pilot, the cost per group, and (``direct``) the measured draw of S* groups."""
    env, logits, mu = problem
    k, loss, d = args.group_size, args.loss, logits[0].numel()
    gen = torch.Generator().manual_seed(seed)
    batch = exact.sample_groups(mu, k, args.pilot_groups, gen)
    g = exact.group_gradients(env, logits, batch, mu, loss).reshape(-1, d)
    centred = g - mean
    fourth = float((centred.pow(2).sum(1) ** 2).mean())
    frob2 = float(cov.pow(2).sum())
    groups = max(2, math.ceil((fourth - frob2) / (args.target**2 * frob2)))
    per_chunk = median_seconds(lambda: sampled_moments(problem, loss, k, args.chunk_groups,
                                                       args.chunk_groups, gen), 3)
    per_group = per_chunk / args.chunk_groups
    row: dict[str, object] = {"pilot_groups": args.pilot_groups, "fourth_moment": fourth,
                              "groups_needed": groups, "seconds_per_group": per_group,
                              "predicted_s": groups * per_group, "measured_directly": False}
    if direct and groups * per_group <= args.direct_budget_s:
        tic = time.perf_counter()
        first, second = sampled_moments(problem, loss, k, groups, args.chunk_groups, gen)
        m = first / groups
        estimate = second / groups - torch.outer(m, m)
        row.update(measured_directly=True, measured_s=time.perf_counter() - tic,
                   realised_error=frobenius_error(estimate, cov))
    row["seconds"] = row.get("measured_s", row["predicted_s"])
    return row


def point(env_kind: str, reward: str, args: Args, seed: int) -> dict[str, object] | None:
    problem = make_problem(env_kind, args.responses, reward, 1, seed)
    if problem is None:
        return None
    env, logits, mu = problem
    k, loss = args.group_size, args.loss
    row: dict[str, object] = {"env": env_kind, "reward": reward, "N": args.responses, "K": k,
                              "D": logits[0].numel(), "loss": loss,
                              "auto_method": exact._covariance_method(
                                  env, exact.setup_of(loss, {}), k, "auto")}

    def suff() -> torch.Tensor:
        return exact.gradient_covariance(env, logits, mu, loss, k, method="sufficient")

    clear_simulator_caches()
    tic = time.perf_counter()
    cov = suff()
    row["sufficient_cold_s"] = time.perf_counter() - tic
    row["sufficient_warm_s"] = median_seconds(suff, args.repeats, warmup=0)
    multisets = math.comb(args.responses + k - 1, k)
    row["multisets"] = multisets
    if multisets <= args.max_multisets:
        def enum() -> torch.Tensor:
            return exact.gradient_covariance(env, logits, mu, loss, k, method="enumerate")

        slow = enum()
        row["enumerate_s"] = median_seconds(enum, args.enum_repeats, warmup=0)
        row["enumerate_measured"] = True
        row["max_method_difference"] = frobenius_error(cov, slow)
    else:
        row["enumerate_measured"] = False
        row["enumerate_s"] = None
    mean = exact.expected_gradient(env, logits, mu, loss, k).reshape(-1)  # one prompt: E[g]
    row["monte_carlo"] = monte_carlo(problem, args, cov, mean,
                                     f"{env_kind}:{reward}" in args.direct, seed + 1)
    mc = row["monte_carlo"]["seconds"]
    for kind in ("warm", "cold"):
        t = row[f"sufficient_{kind}_s"]
        if row["enumerate_s"] is not None:
            row[f"enumerate_over_sufficient_{kind}"] = row["enumerate_s"] / t
        row[f"monte_carlo_over_sufficient_{kind}"] = mc / t
    return row


def main(args: Args) -> None:
    if args.smoke:
        args = dataclasses.replace(args, **SMOKE)
    torch.set_num_threads(args.threads)
    rows = []
    for i, env_kind in enumerate(args.envs):
        for j, reward in enumerate(args.rewards):
            row = point(env_kind, reward, args, args.seed + 10 * i + j)
            if row is not None:
                rows.append(row)
                print({key: value for key, value in row.items() if key != "monte_carlo"},
                      flush=True)

    def worst(key: str) -> float | None:
        values = [row[key] for row in rows if key in row]
        return min(values) if values else None

    summary = {"slowest_sufficient_warm_s": max(r["sufficient_warm_s"] for r in rows),
               "slowest_sufficient_cold_s": max(r["sufficient_cold_s"] for r in rows),
               **{f"min_{key}": worst(key) for key in (
                   "enumerate_over_sufficient_warm", "enumerate_over_sufficient_cold",
                   "monte_carlo_over_sufficient_warm", "monte_carlo_over_sufficient_cold")},
               "points_monte_carlo_measured_directly": sum(
                   r["monte_carlo"]["measured_directly"] for r in rows)}
    headline = (f"covariance of one group's gradient, N = {args.responses}, K = "
                f"{args.group_size}, {'/'.join(args.rewards)} rewards: sufficient statistics "
                f"≤ {summary['slowest_sufficient_warm_s'] * 1e3:.1f} ms warm, "
                f"≤ {summary['slowest_sufficient_cold_s'] * 1e3:.1f} ms cold; enumeration ≥ "
                f"{summary['min_enumerate_over_sufficient_warm']:.0f}× (warm) / "
                f"{summary['min_enumerate_over_sufficient_cold']:.0f}× (cold) slower; Monte "
                f"Carlo to relative Frobenius error {args.target:g} ≥ "
                f"{summary['min_monte_carlo_over_sufficient_warm']:.0f}× (warm) / "
                f"{summary['min_monte_carlo_over_sufficient_cold']:.0f}× (cold) slower")
    report("covariance", {"args": dataclasses.asdict(args), "points": rows,
                          "summary": summary}, headline, args.out)


if __name__ == "__main__":
    main(tyro.cli(Args))
