"""What the project's own checks cost here: ``grlab verify``, the tests, ``grlab compare``.

What is measured
----------------
Each command runs in a subprocess of this interpreter (``python -m grlab.cli ...``,
``python -m pytest ...``), one after the other; recorded per command: wall-clock seconds, the
CPU seconds the subprocess used (user + system, from ``getrusage(RUSAGE_CHILDREN)``; CPU/wall
above 1 means it used more than one core), its exit status (a red test is recorded, not
hidden), and the thread count it ran with — ``--threads N`` sets OMP_NUM_THREADS and
MKL_NUM_THREADS for the subprocesses (torch's default otherwise: one thread per core).

* ``grlab verify``: every theory claim on fresh random instances (fixed ``--seed``);
* the test suite: ``pytest -q -p no:cacheprovider`` from the repository root (README's test
  command; the hypothesis profile follows the environment, ``dev`` unless CI is set);
* ``grlab compare``: the default comparison into a temporary folder with ``--fresh`` (no
  cached runs).

``--smoke`` runs the smallest honest version of each (one claim, one test file, one loss on
one setting for 2 steps). Writes OUT/suite_cost.json; the headline lists the three wall times.

    python benchmarks/suite_cost.py             # minutes: the full suite runs once
    python benchmarks/suite_cost.py --smoke
"""

from __future__ import annotations

import dataclasses
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tyro
from _results import RESULTS, report

ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass
class Args:
    threads: int | None = None
    """OMP/MKL threads of the subprocesses; None: torch's default (one per core)."""
    seed: int = 0
    """``grlab verify --seed``."""
    out: Path = RESULTS
    """output folder for suite_cost.json."""
    smoke: bool = False
    """the smallest version of each command (seconds)."""


def commands(args: Args, tmp: Path) -> dict[str, list[str]]:
    """name ↦ argv of each measured command (full or smoke)."""
    grlab, pytest = [sys.executable, "-m", "grlab.cli"], [sys.executable, "-m", "pytest"]
    verify = [*grlab, "verify", "--seed", str(args.seed)]
    tests = [*pytest, "-q", "-p", "no:cacheprovider"]
    compare = [*grlab, "compare", "--out", str(tmp / "compare"), "--fresh"]
    if args.smoke:
        verify += ["--only", "4", "--instances", "2"]
        tests += ["tests/test_files.py"]
        compare += ["--losses", "grpo", "--settings", "on-policy", "--seeds", "1",
                    "--steps", "2"]
    return {"grlab verify": verify, "test suite": tests, "grlab compare": compare}


def run(argv: list[str], env: dict[str, str]) -> dict[str, object]:
    """Wall and CPU seconds, exit status and output tail of one subprocess."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    tic = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - tic
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    lines = (done.stdout + done.stderr).strip().splitlines()
    return {"argv": argv[1:], "wall_s": wall, "cpu_s": cpu, "cpu_over_wall": cpu / wall,
            "returncode": done.returncode, "tail": lines[-3:]}


def main(args: Args) -> None:
    env = dict(os.environ)
    if args.threads is not None:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.threads)
    threads = args.threads or os.cpu_count()
    with tempfile.TemporaryDirectory() as tmp:
        rows = {name: run(argv, env) for name, argv in commands(args, Path(tmp)).items()}
    failed = [name for name, row in rows.items() if row["returncode"] != 0]
    headline = " · ".join(f"{name} {row['wall_s']:.3g} s" for name, row in rows.items())
    headline += f" (wall, {threads} threads{', smoke sizes' if args.smoke else ''})"
    if failed:
        headline += f"; NON-ZERO EXIT: {', '.join(failed)}"
    report("suite_cost", {"args": dataclasses.asdict(args), "threads": threads,
                          "commands": rows}, headline, args.out)


if __name__ == "__main__":
    main(tyro.cli(Args, description=__doc__.splitlines()[0]))
