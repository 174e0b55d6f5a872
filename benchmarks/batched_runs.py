"""Batched vs one-by-one simulation of many runs (issue 4's ≥10× target).

Runs the default comparison problem for one clipped loss (exact expected updates): R runs
(seeds × settings) in one ``simulate`` call, against the same R runs one call each, both with
the same torch thread count (by default once with 1 thread and once with every core). Prints
the wall-clock times and their ratio and writes them to benchmarks/results/batched_runs.json.

One run's step is a few hundred small tensor ops (interpreter-bound, and too small for a second
core to help); batching turns them into the same few hundred ops on R times more data, which
is also what lets torch use every core.

    python benchmarks/batched_runs.py --seeds 20 --steps 20
"""

from __future__ import annotations

import argparse
import time

import torch
from _results import report

from simulator.dynamics import SETTINGS, simulate
from simulator.experiments import LOG_LINEAR


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--loss", default="rec-oneside-nois")
    parser.add_argument("--threads", type=int, nargs="+",
                        default=sorted({1, torch.get_num_threads()}))
    args = parser.parse_args()
    results = [_measure(args.seeds, args.steps, args.loss, threads) for threads in args.threads]
    report("batched_runs", results)


def _measure(seeds: int, steps: int, loss: str, threads: int) -> dict[str, object]:
    torch.set_num_threads(threads)
    schedules = list(SETTINGS.values())
    common = {"steps": steps, "lrs": [0.1], "optimizer": "adam"}

    start = time.perf_counter()
    batched = simulate(LOG_LINEAR, loss, seeds=list(range(seeds)),
                       schedules=schedules, **common)
    t_batched = time.perf_counter() - start

    start = time.perf_counter()
    singles = [simulate(LOG_LINEAR, loss, seeds=[s], schedules=[sch], **common)
               for s in range(seeds) for sch in schedules]
    t_single = time.perf_counter() - start

    same = all(torch.allclose(batched.metrics["reward"][:, i], one.metrics["reward"][:, 0])
               for i, one in enumerate(singles))
    return {"runs": len(singles), "steps": steps, "loss": loss, "threads": threads,
            "batched_s": round(t_batched, 3), "one_by_one_s": round(t_single, 3),
            "speedup": round(t_single / t_batched, 2), "same_trajectories": same}

if __name__ == "__main__":
    main()
