"""Batched vs one-by-one simulation of many runs (issue 4's ≥10× target, issue 12's R ≤ 256).

What is measured
----------------
The capacity-limited problem (``simulator.experiments.LOG_LINEAR``, the default comparison until
it moved to the representable family; 8 prompts × 6 answers,
log-linear policy, exact expected updates, Adam) for one clipped loss. R runs — R/4 seeds × the
four off-policy settings of ``SETTINGS`` — are trained for ``--steps`` steps (a) in ONE
``simulate`` call, where the runs are one tiled tensor computation, and (b) one ``simulate``
call per run. Both arms use the same torch thread count (by default once with 1 thread and
once with every core). Each arm is timed ``--repeats`` times (median); the ratio (b)/(a) is the
speedup. The two arms must give the same trajectories (checked, recorded).

Why it is faster: one run's step is a few hundred small tensor ops (interpreter-bound, too
small for a second core to help); batched, the same ops act on R times more data, so the cost
per run falls until the float64 arithmetic over every enumerated group dominates — which is
also what lets torch use every core.

Writes OUT/batched_runs.json; the headline is the speedup at the largest R.

    python benchmarks/batched_runs.py                # R = 4, 16, 64, 256
    python benchmarks/batched_runs.py --smoke        # R = 4, 2 steps (seconds)
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path

import torch
import tyro
from _results import RESULTS, report

from simulator.dynamics import SETTINGS, simulate
from simulator.experiments import LOG_LINEAR


@dataclasses.dataclass
class Args:
    runs: tuple[int, ...] = (4, 16, 64, 256)
    """R, runs per measurement; each a multiple of the 4 settings (R/4 seeds)."""
    steps: int = 20
    """training steps per run."""
    loss: str = "rec-oneside-nois"
    """the loss every run trains with."""
    threads: tuple[int, ...] = tuple(sorted({1, torch.get_num_threads()}))
    """torch thread counts to measure (both arms use the same one)."""
    repeats: int = 3
    """timed repeats per arm (median)."""
    out: Path = RESULTS
    """output folder for batched_runs.json."""
    smoke: bool = False
    """tiny sizes for the smoke test: R = 4, 2 steps, 1 thread, 1 repeat."""


SMOKE = {"runs": (4,), "steps": 2, "threads": (1,), "repeats": 1}


def _timed(fn) -> tuple[float, object]:
    tic = time.perf_counter()
    value = fn()
    return time.perf_counter() - tic, value


def measure(runs: int, args: Args, threads: int) -> dict[str, object]:
    """Median seconds of the batched and the one-by-one arm for R = ``runs``, and their ratio."""
    if runs % len(SETTINGS):
        raise ValueError(f"runs must be multiples of {len(SETTINGS)} (the settings), got {runs}")
    torch.set_num_threads(threads)
    schedules, seeds = list(SETTINGS.values()), range(runs // len(SETTINGS))
    common = {"steps": args.steps, "lrs": [0.1], "optimizer": "adam"}

    def batched():
        return simulate(LOG_LINEAR, args.loss, seeds=list(seeds), schedules=schedules, **common)

    def one_by_one():
        return [simulate(LOG_LINEAR, args.loss, seeds=[s], schedules=[sch], **common)
                for s in seeds for sch in schedules]

    t_batched, t_single = [], []
    for _ in range(args.repeats):  # interleaved, so that a load change hits both arms
        seconds, together = _timed(batched)
        t_batched.append(seconds)
        seconds, singles = _timed(one_by_one)
        t_single.append(seconds)
    same = all(torch.allclose(together.metrics["reward"][:, i], one.metrics["reward"][:, 0])
               for i, one in enumerate(singles))
    batched_s, single_s = statistics.median(t_batched), statistics.median(t_single)
    return {"runs": runs, "threads": threads, "steps": args.steps, "loss": args.loss,
            "batched_s": batched_s, "one_by_one_s": single_s,
            "batched_s_all": t_batched, "one_by_one_s_all": t_single,
            "speedup": single_s / batched_s, "same_trajectories": same}


def main(args: Args) -> None:
    if args.smoke:
        args = dataclasses.replace(args, **SMOKE)
    rows = [measure(runs, args, threads) for threads in args.threads for runs in args.runs]
    largest = max(args.runs)
    best = {row["threads"]: row for row in rows if row["runs"] == largest}
    speedups = ", ".join(f"{row['speedup']:.3g}x faster with {threads} thread"
                         f"{'s' * (threads > 1)}" for threads, row in sorted(best.items()))
    headline = f"{largest} runs as one computation vs one by one ({args.steps} steps): {speedups}"
    if not all(row["same_trajectories"] for row in rows):
        headline += " (TRAJECTORIES DIFFER)"
    report("batched_runs", {"args": dataclasses.asdict(args), "results": rows}, headline,
           args.out)


if __name__ == "__main__":
    main(tyro.cli(Args, description=__doc__.splitlines()[0]))
