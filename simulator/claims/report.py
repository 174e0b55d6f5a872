"""Running the catalogue and reporting it: the engine behind ``grlab verify``.

``run_catalogue`` draws every instance from one ``torch.Generator`` seeded by ``seed`` (fresh
from the OS when not given, and always reported, so a failure can be replayed with
``--seed``). ``catalogue_table`` and ``catalogue_json`` render the same rows.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from rich.table import Table

from simulator.claims.registry import CLAIMS, ClaimReport, catalogue, run_claim

__all__ = ["CatalogueRun", "catalogue_json", "catalogue_table", "run_catalogue"]


@dataclasses.dataclass(frozen=True)
class CatalogueRun:
    seed: int
    reports: tuple[ClaimReport, ...]
    seconds: float

    @property
    def passed(self) -> bool:
        return all(report.passed for report in self.reports)


def run_catalogue(keys: Sequence[str], *, seed: int | None = None, instances: int | None = None,
                  on_claim: Callable[[ClaimReport], None] | None = None) -> CatalogueRun:
    """Run the claims ``keys`` (each on its own number of fresh instances unless ``instances``)."""
    unknown = [key for key in keys if key not in CLAIMS]
    if unknown:
        raise KeyError(f"unknown claim(s) {unknown}; valid: {', '.join(catalogue())}")
    if instances is not None and instances < 1:
        raise ValueError(f"instances must be >= 1, got {instances}")
    seed = int.from_bytes(os.urandom(4), "little") if seed is None else seed
    generator = torch.Generator().manual_seed(seed)
    start, reports = time.perf_counter(), []
    for key in keys:
        reports.append(run_claim(CLAIMS[key], generator, instances))
        if on_claim is not None:
            on_claim(reports[-1])
    return CatalogueRun(seed, tuple(reports), time.perf_counter() - start)


def catalogue_table(run: CatalogueRun) -> Table:
    verdicts = sum(report.passed for report in run.reports)
    table = Table(title=f"grlab verify — {verdicts}/{len(run.reports)} claims hold "
                        f"(seed {run.seed}, {run.seconds:.1f} s)")
    table.add_column("#", no_wrap=True)
    for column in ("claim", "source", "instances", "worst error", "tolerance", "measured"):
        table.add_column(column, overflow="fold")
    table.add_column("verdict", no_wrap=True)
    for report in run.reports:
        verdict = "[green]holds[/green]" if report.passed else "[bold red]FAILS[/bold red]"
        table.add_row(report.key, report.name.replace("_", " "), report.source,
                      str(report.instances),
                      f"{report.worst_error:.2e}", f"{report.tolerance:.1e}", report.what,
                      verdict)
    return table


def catalogue_json(run: CatalogueRun, path: str | Path) -> Path:
    """Write the table as JSON: {seed, seconds, passed, claims: [row, ...]}."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [dataclasses.asdict(report) for report in run.reports]
    for row in rows:  # JSON has no inf/nan: a crashed instance is reported as a string
        row["worst_error"] = _finite_or_text(row["worst_error"])
    payload = {"seed": run.seed, "seconds": run.seconds, "passed": run.passed, "claims": rows}
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    return path


def _finite_or_text(value: float) -> float | str:
    return value if value == value and abs(value) != float("inf") else str(value)
