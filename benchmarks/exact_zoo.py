"""Issue 12's exact-engine targets, for every loss of the zoo.

What is measured
----------------
The time of one exact expected gradient (value and gradient, ``simulator.exact.ExpectedLoss``
then autograd, float64) on a softmax bandit with one prompt and an off-policy behavior, for
every registered loss (RED-Drop is refused: its drops are random, its expectation is sampled):

* binary rewards (⌈N/4⌉ correct answers), N = 1,024 responses, K = 64 — far beyond
  enumeration (C(1087, 64) ≈ 10^105 groups): the sufficient-statistics engine. Target < 1 s.
* continuous rewards U[0, 1), N = 16, K = 8 — every reward distinct, so no statistic is small:
  the enumeration of C(23, 8) = 490,314 multisets (what ``MAX_GROUPS`` used to refuse), in
  pieces. Target < 1 s.

Each time is the median of ``--repeats`` calls of a fresh ``ExpectedLoss``, cold (the
simulator's caches cleared first: the multiset table and every other table the engine builds
are rebuilt) and warm (those tables kept, as in a training loop), after one warm-up; the
method ``auto`` chose is recorded. The headline is the slowest loss of each case, cold and
warm, against its target.

    python benchmarks/exact_zoo.py
    python benchmarks/exact_zoo.py --smoke     # N = 64 / 8, K = 8 / 4
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import tyro
from _results import RESULTS, clear_simulator_caches, median_seconds, report
from exact_vs_mc import draw_rewards

from simulator.bandit import SoftmaxBandit
from simulator.exact import ExpectedLoss
from simulator.groups import LossSetup
from simulator.losses import LOSSES


@dataclasses.dataclass
class Args:
    binary_n: int = 1024
    """responses of the binary-reward case."""
    binary_k: int = 64
    """group size of the binary-reward case."""
    generic_n: int = 16
    """responses of the continuous-reward case."""
    generic_k: int = 8
    """group size of the continuous-reward case."""
    repeats: int = 3
    """timed repeats per loss (median)."""
    target_s: float = 1.0
    """the target time per exact gradient."""
    seed: int = 0
    """seed of the rewards, logits and behavior."""
    out: Path = RESULTS
    """output folder for exact_zoo.json."""
    smoke: bool = False
    """tiny sizes for the smoke test (seconds)."""


SMOKE = {"binary_n": 64, "binary_k": 8, "generic_n": 8, "generic_k": 4, "repeats": 1}


def problem(n: int, rewards: str, seed: int) -> tuple[SoftmaxBandit, torch.Tensor, torch.Tensor]:
    """(testbed, logits, behavior) with one prompt; the behavior is another softmax."""
    g = torch.Generator().manual_seed(seed)
    r = draw_rewards(rewards, (1, n), g)
    logits = torch.randn(1, n, generator=g, dtype=torch.float64)
    mu = torch.softmax(torch.randn(1, n, generator=g, dtype=torch.float64), dim=1)
    return SoftmaxBandit(r), logits, mu


def time_loss(env, logits, mu, name: str, k: int, repeats: int
              ) -> tuple[float, float, str]:
    """Median seconds of value + gradient with a fresh ExpectedLoss — cold (the simulator's
    caches cleared first) and warm (its tables kept, as in a training loop) — and the method
    auto chose."""
    agg = LOSSES[name].agg
    setup = LossSetup(name, norm_len=float(env.horizon) if agg.endswith("norm") else None)
    chosen = []

    def once() -> None:
        value = ExpectedLoss(env, setup, k)
        chosen.append(value.method)
        leaf = logits.clone().requires_grad_(True)
        torch.autograd.grad(value(leaf, mu), leaf)

    def cold() -> None:
        clear_simulator_caches()
        once()

    return median_seconds(cold, repeats), median_seconds(once, repeats), chosen[-1]


def main(args: Args) -> None:
    if args.smoke:
        args = dataclasses.replace(args, **SMOKE)
    cases = {"binary": (args.binary_n, args.binary_k), "continuous": (args.generic_n,
                                                                    args.generic_k)}
    rows, slowest = [], {}
    for rewards, (n, k) in cases.items():
        env, logits, mu = problem(n, rewards, args.seed)
        for name in LOSSES:
            if LOSSES[name].advantage == "red-drop":
                continue  # random drops: no exact expectation (refused by the engine)
            if LOSSES[name].couples_rows:
                continue  # selects tokens group-wide: enumeration only, group by group (slow)
            seconds, warm, method = time_loss(env, logits, mu, name, k, args.repeats)
            rows.append({"rewards": rewards, "N": n, "K": k, "loss": name, "method": method,
                         "seconds": seconds, "warm_seconds": warm,
                         "target_met": seconds < args.target_s})
            print(f"{rewards:>10} N={n} K={k} {name:>17}: cold {seconds * 1e3:8.1f} ms, warm "
                  f"{warm * 1e3:8.1f} ms ({method})", flush=True)
        case = [r for r in rows if r["rewards"] == rewards]
        slowest[rewards] = (max(case, key=lambda r: r["seconds"]),
                            max(case, key=lambda r: r["warm_seconds"]),
                            sum(not r["target_met"] for r in case), len(case))
    headline = "; ".join(
        f"{rewards} N={cold['N']} K={cold['K']}: slowest loss cold {cold['loss']} "
        f"{cold['seconds']:.3f} s, warm {warm['loss']} {warm['warm_seconds']:.3f} s "
        f"({missed} of {total} losses at or over the {args.target_s:g} s target cold)"
        for rewards, (cold, warm, missed, total) in slowest.items())
    report("exact_zoo", {"args": dataclasses.asdict(args), "results": rows}, headline,
           out=args.out)


if __name__ == "__main__":
    main(tyro.cli(Args))
