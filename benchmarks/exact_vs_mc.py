"""Exact expected gradient vs Monte Carlo: how long each takes to the same answer.

What is measured
----------------
For every point of a grid — environment (softmax bandit; binary tree MDP of depth log₂ N
without EOS), N responses, group size K, reward kind (binary: ⌈N/4⌉ correct answers; three
grades {0, ½, 1}; continuous U[0, 1)) — one off-policy problem (logits θ ∼ N(0, 1), behavior
μ = softmax of θ plus N(0, ½²) noise, loss ``--loss``, default GRPO):

1. *exact*: wall time of ``simulator.exact.expected_gradient(..., method=M)``. ``cold`` is the
   first call in this process after the enumeration cache is cleared (what a one-off answer
   costs); ``warm`` is the median of ``--repeats`` later calls (what each step of a training
   loop costs, the multiset table being reused). M is "auto" (whatever the library picks: the
   sufficient-statistics engine for rewards with few distinct values, the closed form for
   REINFORCE-type losses, else the enumeration), and every other method the installed
   ``simulator.exact`` accepts ("enumerate", the naive baseline; "sufficient") for comparison.
   The largest relative L2 difference between methods is recorded: they must agree.
2. *Monte Carlo to relative error ε = ``--target``* (default 1e-3): ``sampled_gradient`` with S
   groups per prompt gives a mean ĝ_S and its standard error. The relative L2 error
   e(S) = ‖ĝ_S − g‖/‖g‖ obeys E‖ĝ_S − g‖² = tr Σ/S exactly for an i.i.d. mean, so one pilot
   of S₀ groups estimates tr Σ = S₀·Σ stderr² and S* = tr Σ/(ε‖g‖)² groups reach ε in RMS.
   The time is extrapolated as S*·(seconds per group), the seconds per group measured on warm
   calls of ``--chunk-groups`` groups (the size a direct draw uses; the pilot's own time would
   charge Monte Carlo for a small call's fixed cost) — EXCEPT at the ``--direct-points``
   cheapest points and at every point with (N, K) = ``--direct-at`` (16, 8 by default), where
   S* groups are actually drawn (in chunks) and timed, and the realised error is recorded (it
   should be near ε: the law is about the RMS, one draw scatters around it).
3. *the frontier*: for each environment, reward kind and K, N doubles from 2 while the exact
   gradient takes at most ``--frontier-s`` (1 s): the largest N solved within it.
4. *scaling*: warm exact time against N (per K) and against K (per N), bandit, each reward
   kind, on log-log axes with fitted exponents (least squares on log t) in exact_vs_mc.png.
   Enumeration visits C(N + K − 1, K) ≈ N^K/K! multisets, so its exponent in N tends to K; a
   sufficient-statistics engine's cost depends on the number of distinct reward values, so the
   reward kinds separate once it runs.

A grid series (environment, reward, K, method) stops at the first N the method refuses or that
takes more than ``--max-exact-s``. Writes OUT/exact_vs_mc.json and OUT/exact_vs_mc.png; the
headline is the median MC-time/exact-time ratio.

    python benchmarks/exact_vs_mc.py            # the real grid (minutes)
    python benchmarks/exact_vs_mc.py --smoke    # a tiny grid (seconds)
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import tyro
from _results import RESULTS, clear_simulator_caches, median_seconds, report

from simulator import exact
from simulator.bandit import ResponseSpace, SoftmaxBandit
from simulator.files import atomic_savefig, output_dir
from simulator.tree import TreeMDP

METHODS = ("auto", "enumerate", "sufficient")  # "sufficient": issue 12's engine, when present


@dataclasses.dataclass
class Args:
    responses: tuple[int, ...] = (4, 8, 16)
    """N, responses per prompt (bandit arms; tree leaves, N = 2^depth, powers of 2 only)."""
    group_sizes: tuple[int, ...] = (2, 4, 8)
    """K, responses per group."""
    rewards: tuple[str, ...] = ("binary", "graded3", "continuous")
    """reward kinds: binary (⌈N/4⌉ correct), graded3 ({0, 0.5, 1}), continuous (U[0, 1))."""
    envs: tuple[str, ...] = ("bandit", "tree")
    """testbeds: softmax bandit, binary tree MDP without EOS."""
    loss: str = "grpo"
    """any registered loss name (REINFORCE-type losses take the closed form under auto)."""
    prompts: int = 1
    """prompts per problem (the exact cost is linear in it)."""
    target: float = 1e-3
    """relative L2 error that Monte Carlo must reach."""
    pilot_groups: int = 4096
    """S₀, groups of the Monte Carlo pilot that estimates tr Σ."""
    chunk_groups: int = 16384
    """groups per sampled_gradient call when S* groups are drawn directly; warm calls of this
    size give the cost per group that the extrapolation uses."""
    direct_points: int = 1
    """how many grid points (the cheapest predicted) measure Monte Carlo directly."""
    direct_at: tuple[int, int] = (16, 8)
    """(N, K) measured directly at every environment and reward kind (issue 12's target point;
    within --direct-budget-s)."""
    direct_budget_s: float = 300.0
    """a direct measurement is skipped when its predicted time exceeds this."""
    max_exact_s: float = 10.0
    """a grid series stops after a point whose exact gradient takes longer than this."""
    frontier_s: float = 1.0
    """the frontier's time limit: the largest N solved exactly within it."""
    frontier_max_n: int = 1024
    """the frontier's N stops doubling here."""
    repeats: int = 3
    """timed repeats per measurement (median)."""
    seed: int = 0
    """seed of every draw (problems and Monte Carlo)."""
    out: Path = RESULTS
    """output folder for exact_vs_mc.json and exact_vs_mc.png."""
    smoke: bool = False
    """tiny sizes, for the smoke test (seconds): N 4, 8; K 2, 3; two reward kinds; ε = 0.05."""


SMOKE = {"responses": (4, 8), "group_sizes": (2, 3), "rewards": ("binary", "continuous"),
         "pilot_groups": 64, "chunk_groups": 256, "target": 0.05, "direct_budget_s": 5.0,
         "max_exact_s": 5.0, "frontier_s": 0.2, "frontier_max_n": 32, "repeats": 1}


# --------------------------------------------------------------------------------------------
# Problems
# --------------------------------------------------------------------------------------------


def draw_rewards(kind: str, shape: tuple[int, int], g: torch.Generator) -> torch.Tensor:
    """[P, N] rewards of one kind (see ``Args.rewards``)."""
    if kind == "binary":
        order = torch.rand(shape, generator=g).argsort(dim=1)
        return (order < math.ceil(shape[1] / 4)).double()
    if kind == "graded3":
        return torch.randint(0, 3, shape, generator=g).double() / 2
    if kind == "continuous":
        return torch.rand(shape, generator=g, dtype=torch.float64)
    raise ValueError(f"reward kind must be binary, graded3 or continuous, got {kind!r}")


def make_problem(env_kind: str, n: int, reward: str, prompts: int, seed: int
                 ) -> tuple[ResponseSpace, torch.Tensor, torch.Tensor] | None:
    """(testbed, logits θ, behavior μ [P, N]), or None when the shape does not exist (a tree
    needs N = 2^depth)."""
    g = torch.Generator().manual_seed(seed)
    rewards = draw_rewards(reward, (prompts, n), g)
    if env_kind == "bandit":
        env: ResponseSpace = SoftmaxBandit(rewards)
    elif env_kind == "tree":
        depth = round(math.log2(n))
        if n < 2 or 2**depth != n:
            return None
        env = TreeMDP(rewards, vocab=2, depth=depth, eos=False)
    else:
        raise ValueError(f"env must be bandit or tree, got {env_kind!r}")
    logits = torch.randn(env.logits_shape, generator=g, dtype=torch.float64)
    noisy = logits + 0.5 * torch.randn(env.logits_shape, generator=g, dtype=torch.float64)
    return env, logits, env.sequence_probs(noisy)


def available_methods(loss: str) -> list[str]:
    """The methods of ``METHODS`` that the installed ``simulator.exact`` accepts."""
    env = SoftmaxBandit(torch.tensor([[1.0, 0.0]], dtype=torch.float64))
    theta = torch.zeros(1, 2, dtype=torch.float64)
    found = []
    for method in METHODS:
        try:
            exact.expected_gradient(env, theta, "on-policy", loss, 2, method=method)
        except ValueError as error:
            if "method" in str(error):
                continue
            raise
        found.append(method)
    return found


# --------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------


def time_exact(problem, loss: str, k: int, method: str, repeats: int) -> dict[str, object]:
    """Cold and warm seconds of the exact gradient (and the gradient), or why it was refused."""
    env, logits, mu = problem
    clear_simulator_caches()
    tic = time.perf_counter()
    try:
        grad = exact.expected_gradient(env, logits, mu, loss, k, method=method)
    except ValueError as error:  # too many groups, or a method that does not apply
        return {"refused": str(error)[:160]}
    cold = time.perf_counter() - tic
    if repeats < 1:
        return {"cold_s": cold, "grad": grad}
    warm = median_seconds(lambda: exact.expected_gradient(env, logits, mu, loss, k,
                                                          method=method), repeats, warmup=0)
    return {"cold_s": cold, "warm_s": warm, "grad": grad}


def mc_pilot(problem, loss: str, k: int, grad: torch.Tensor, args: Args, seed: int
             ) -> dict[str, float]:
    """Pilot of S₀ groups (the realised error, the predicted S*), then the time per group
    measured on warm calls of ``chunk_groups`` groups — the size a direct draw uses. (Timing
    the pilot itself would not do: a small call's fixed cost, and the first call's setup of
    several seconds, would be charged to Monte Carlo; measured here at N = 16, K = 8: 10 µs a
    group at 2,048 groups, 3.3 µs at 65,536.)"""
    env, logits, mu = problem
    g = torch.Generator().manual_seed(seed)
    exact.sampled_gradient(env, logits, mu, loss, k, 8, g)  # warm-up: the first call's setup
    mean, stderr = exact.sampled_gradient(env, logits, mu, loss, k, args.pilot_groups, g)
    norm = float(grad.norm())
    predicted = float((stderr**2).sum().sqrt()) / norm
    needed = max(1, math.ceil(args.pilot_groups * (predicted / args.target) ** 2))
    chunk = min(args.chunk_groups, needed)
    seconds = median_seconds(lambda: exact.sampled_gradient(env, logits, mu, loss, k, chunk, g),
                             max(1, args.repeats), warmup=0)
    return {"pilot_groups": args.pilot_groups, "timed_groups": chunk,
            "seconds_per_group": seconds / chunk,
            "pilot_error": float((mean - grad).norm()) / norm,
            "pilot_predicted_error": predicted, "groups_needed": needed,
            "mc_s": needed * seconds / chunk, "mc_source": "extrapolated"}


def mc_direct(problem, loss: str, k: int, grad: torch.Tensor, groups: int, chunk: int,
              seed: int) -> dict[str, float]:
    """Draw ``groups`` groups per prompt in chunks, time it, and the realised relative error."""
    env, logits, mu = problem
    g = torch.Generator().manual_seed(seed + 1)
    total, drawn = torch.zeros_like(grad), 0
    tic = time.perf_counter()
    while drawn < groups:
        size = min(chunk, groups - drawn)
        mean, _ = exact.sampled_gradient(env, logits, mu, loss, k, size, g)
        total += mean * size
        drawn += size
    seconds = time.perf_counter() - tic
    return {"mc_s": seconds, "mc_source": "measured",
            "mc_error": float((total / drawn - grad).norm() / grad.norm())}


# --------------------------------------------------------------------------------------------
# The grid, the frontier, the fits
# --------------------------------------------------------------------------------------------


def grid(args: Args, methods: list[str]) -> list[dict[str, object]]:
    """One row per (env, reward, K, N) with every method's times and the MC pilot."""
    rows = []
    for env_kind in args.envs:
        for reward in args.rewards:
            for k in args.group_sizes:
                rows += _series(args, methods, env_kind, reward, k)
    return rows


def _series(args: Args, methods: list[str], env_kind: str, reward: str, k: int
            ) -> list[dict[str, object]]:
    rows, stopped = [], set()
    for n in sorted(args.responses):
        problem = make_problem(env_kind, n, reward, args.prompts, args.seed + n)
        if problem is None:
            continue
        row: dict[str, object] = {"env": env_kind, "reward": reward, "K": k, "N": n,
                                  "multisets": math.comb(n + k - 1, k)}
        grads = {}
        for method in methods:
            if method in stopped:
                row[method] = {"skipped": f"a smaller N took > {args.max_exact_s} s or was refused"}
                continue
            timing = time_exact(problem, args.loss, k, method, args.repeats)
            if "grad" in timing:
                grads[method] = timing.pop("grad")
            if "refused" in timing or timing["cold_s"] > args.max_exact_s:
                stopped.add(method)
            row[method] = timing
        if len(grads) > 1:
            ref = next(iter(grads.values()))
            row["max_method_difference"] = max(float((g - ref).norm() / ref.norm())
                                               for g in grads.values())
        if "auto" in grads and float(grads["auto"].norm()) > 0:
            row["mc"] = mc_pilot(problem, args.loss, k, grads["auto"], args, args.seed + n)
        rows.append(row)
        _note(row)
    return rows


def _note(row: dict[str, object]) -> None:
    """One progress line per grid point, on stderr (the grid takes minutes)."""
    exact_s = row.get("auto", {}).get("cold_s")
    mc_s = row.get("mc", {}).get("mc_s")
    print(f"  {row['env']} {row['reward']} K={row['K']} N={row['N']}: exact "
          f"{'-' if exact_s is None else f'{exact_s:.3g} s'}, Monte Carlo to "
          f"{'-' if mc_s is None else f'{mc_s:.3g} s'}", file=sys.stderr, flush=True)


def measure_direct(rows: list[dict[str, object]], args: Args) -> None:
    """Replace the extrapolated MC time by a measured one at the ``--direct-points`` cheapest
    points and at every point of ``--direct-at`` (N, K), within ``--direct-budget-s``."""
    with_mc = [r for r in rows if "mc" in r]
    chosen = sorted(with_mc, key=lambda r: r["mc"]["mc_s"])[: args.direct_points]
    chosen += [r for r in with_mc if (r["N"], r["K"]) == tuple(args.direct_at)
               and r not in chosen]
    for row in chosen:
        if row["mc"]["mc_s"] > args.direct_budget_s:
            row["mc"]["direct_skipped"] = f"predicted {row['mc']['mc_s']:.0f} s > budget"
            continue
        problem = make_problem(row["env"], row["N"], row["reward"], args.prompts,
                               args.seed + row["N"])
        grad = exact.expected_gradient(*problem, args.loss, row["K"], method="auto")
        row["mc"]["mc_s_extrapolated"] = row["mc"]["mc_s"]
        row["mc"].update(mc_direct(problem, args.loss, row["K"], grad,
                                   row["mc"]["groups_needed"], args.chunk_groups, args.seed))
        print(f"  measured: {row['env']} {row['reward']} K={row['K']} N={row['N']}: Monte "
              f"Carlo {row['mc']['mc_s']:.3g} s (extrapolated {row['mc']['mc_s_extrapolated']:.3g}"
              f" s), error {row['mc']['mc_error']:.2g}", file=sys.stderr, flush=True)


def frontier(args: Args) -> list[dict[str, object]]:
    """Per (env, reward, K): the largest N (doubling from 2) whose cold exact gradient with
    method "auto" takes at most ``frontier_s``."""
    rows = []
    for env_kind in args.envs:
        for reward in args.rewards:
            for k in args.group_sizes:
                best: dict[str, object] = {"env": env_kind, "reward": reward, "K": k, "N": None,
                                           "stopped_by": f"frontier_max_n={args.frontier_max_n}"}
                n = 2
                while n <= args.frontier_max_n:
                    timing = time_exact(make_problem(env_kind, n, reward, args.prompts,
                                                     args.seed), args.loss, k, "auto", 0)
                    if "refused" in timing or timing["cold_s"] > args.frontier_s:
                        best["stopped_by"] = timing.get("refused", f"N={n}: "
                                                        f"{timing.get('cold_s', 0):.3g} s")
                        break
                    best.update(N=n, seconds=timing["cold_s"], multisets=math.comb(n + k - 1, k))
                    n *= 2
                rows.append(best)
                print(f"  frontier {env_kind} {reward} K={k}: N={best['N']} within "
                      f"{args.frontier_s} s",
                      file=sys.stderr, flush=True)
    return rows


def _slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log y against log x (None with fewer than two points)."""
    if len(xs) < 2:
        return None
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    var = sum((a - mx) ** 2 for a in lx)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / var if var else None


def scaling(rows: list[dict[str, object]], reward: str) -> dict[str, dict[int, tuple]]:
    """Warm "auto" times of the bandit with ``reward`` rewards, by K (against N) and by N."""
    series: dict[str, dict[int, tuple[list, list]]] = {"by_K": {}, "by_N": {}}
    for row in rows:
        timing = row.get("auto", {})
        if row["env"] != "bandit" or row["reward"] != reward or "warm_s" not in timing:
            continue
        for key, group, x in (("by_K", row["K"], row["N"]), ("by_N", row["N"], row["K"])):
            xs, ys = series[key].setdefault(group, ([], []))
            xs.append(x)
            ys.append(timing["warm_s"])
    return series


def plot(rows: list[dict[str, object]], rewards: tuple[str, ...], path: Path
         ) -> dict[str, object]:
    """Two log-log panels (time vs N per K, time vs K per N; one line style per reward kind);
    returns the fitted exponents, by reward kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fits: dict[str, dict[str, dict[int, float | None]]] = {}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for reward, style in zip(rewards, ("o-", "s--", "^:"), strict=False):
        series = scaling(rows, reward)
        fits[reward] = {"exponent_in_N_by_K": {}, "exponent_in_K_by_N": {}}
        for ax, key, fit_key, label in ((axes[0], "by_K", "exponent_in_N_by_K", "K"),
                                        (axes[1], "by_N", "exponent_in_K_by_N", "N")):
            for value, (xs, ys) in sorted(series[key].items()):
                slope = fits[reward][fit_key][value] = _slope(xs, ys)
                text = "" if slope is None else f", slope {slope:.2f}"
                ax.loglog(xs, ys, style, label=f"{reward} {label}={value}{text}")
    for ax, xlabel in zip(axes, ("N (responses)", "K (group size)"), strict=True):
        ax.set_xlabel(xlabel)
        ax.set_ylabel("exact gradient, warm (s)")
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle("exact expected gradient cost (bandit, method auto)")
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=120)
    plt.close(fig)
    return fits


def main(args: Args) -> None:
    if args.smoke:
        args = dataclasses.replace(args, **SMOKE)
    out = output_dir(args.out)
    methods = available_methods(args.loss)
    rows = grid(args, methods)
    measure_direct(rows, args)
    fits = plot(rows, args.rewards, out / "exact_vs_mc.png")
    edge = frontier(args)
    ratios = [r["mc"]["mc_s"] / r["auto"]["cold_s"] for r in rows if "mc" in r]
    direct = [r for r in rows if r.get("mc", {}).get("mc_source") == "measured"]
    k_max = max(args.group_sizes)
    edge_bandit = {f["reward"]: f for f in edge if f["env"] == "bandit" and f["K"] == k_max}
    summary = {
        "mc_over_exact_cold_median": statistics.median(ratios) if ratios else None,
        "mc_over_exact_cold_range": [min(ratios), max(ratios)] if ratios else None,
        "points": len(ratios), "points_measured_directly": len(direct),
        "largest_bandit_N_within_frontier_s_at_largest_K": {
            reward: f["N"] for reward, f in edge_bandit.items()},
        "at_direct_at": [{"env": r["env"], "reward": r["reward"],
                          "exact_cold_s": r["auto"]["cold_s"],
                          "exact_warm_s": r["auto"].get("warm_s"), "mc_s": r["mc"]["mc_s"],
                          "mc_source": r["mc"]["mc_source"],
                          "mc_over_exact_cold": r["mc"]["mc_s"] / r["auto"]["cold_s"]}
                         for r in rows if "mc" in r and (r["N"], r["K"]) == tuple(args.direct_at)],
    }
    where = ", ".join(f"N={f['N'] or 'none'}{'+' if 'frontier_max_n' in f['stopped_by'] else ''}"
                      f" {reward}" for reward, f in edge_bandit.items())
    headline = ("n/a" if not ratios else
                f"exact gradient {summary['mc_over_exact_cold_median']:.3g}x faster than Monte "
                f"Carlo to relative error {args.target:g} (median of {len(ratios)} points, "
                f"range {min(ratios):.3g}-{max(ratios):.3g}x, {len(direct)} measured directly); "
                f"largest bandit solved exactly in {args.frontier_s:g} s at K={k_max}: {where} "
                f"('+': the cap --frontier-max-n)")
    target = summary["at_direct_at"]
    if target:
        headline += (f"; at N={args.direct_at[0]}, K={args.direct_at[1]}: " + ", ".join(
            f"{t['env']} {t['reward']} {t['mc_over_exact_cold']:.3g}x" for t in target))
    report("exact_vs_mc", {"args": dataclasses.asdict(args), "methods": methods,
                           "summary": summary, "fits": fits, "frontier": edge, "grid": rows},
           headline, out)


if __name__ == "__main__":
    main(tyro.cli(Args, description=__doc__.splitlines()[0]))
