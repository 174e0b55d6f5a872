"""What every benchmark shares: the machine it ran on, a timer, and one way to report.

Design decisions
----------------
* Every result records its environment (``environment``): Python, torch, transformers and TRL
  versions (read from the installed distributions, so recording them imports nothing), the CPU
  model from /proc/cpuinfo or the GPU's name, torch's thread count, the core count and the load
  average when the script started — a ratio measured on a busy machine says so in its own file.
* Results are JSON, written atomically (``simulator.files.atomic_write_text``) to
  ``OUT/NAME.json``; ``OUT`` defaults to benchmarks/results and every script takes ``--out``, so
  a smoke run (tests/test_benchmarks_smoke.py) writes to a temporary folder and never replaces
  measured numbers with smoke numbers.
* The headline figure is printed LAST, on one line starting ``headline:`` (``| tail -1`` gives
  it); the full JSON is printed before it.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from simulator.files import atomic_write_text, output_dir

RESULTS = Path(__file__).parent / "results"
LOAD_AT_START = os.getloadavg() if hasattr(os, "getloadavg") else None


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    """The first ``model name`` of /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: str = "cpu") -> dict[str, Any]:
    """The software and machine a measurement ran on (see the module docstring)."""
    import torch

    gpu = torch.cuda.get_device_name() if str(device).startswith("cuda") else None
    return {
        "python": platform.python_version(), "torch": torch.__version__,
        "transformers": _version("transformers"), "trl": _version("trl"),
        "grlab": _version("grlab"), "device": str(device), "cpu": cpu_model(), "gpu": gpu,
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "load_average_at_start": LOAD_AT_START,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def clear_simulator_caches() -> None:
    """Forget every cached table of the simulator (enumerations, sufficient statistics), so
    that the next exact computation pays for building them (cold)."""
    for name, module in list(sys.modules.items()):
        if name.startswith("simulator") and module is not None:
            for value in list(vars(module).values()):
                if callable(getattr(value, "cache_clear", None)):
                    value.cache_clear()


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` calls, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, repeats)):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


def report(name: str, result: dict[str, Any], headline: str, out: Path | str = RESULTS,
           device: str = "cpu") -> Path:
    """Write ``result`` (with its ``environment``) to OUT/``name``.json, print it, then print
    ``headline: ...`` as the last line. Returns the JSON's path."""
    result = {"benchmark": name, "environment": environment(device), **result,
              "headline": headline}
    text = json.dumps(result, indent=2, default=str)
    path = atomic_write_text(output_dir(out) / f"{name}.json", text + "\n")
    print(text)
    print(f"wrote {path}")
    print(f"headline: {headline}")
    return path
