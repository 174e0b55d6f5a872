"""Running the catalogue and reporting it: the engine behind ``grlab verify``.

``run_catalogue`` draws every instance from one ``torch.Generator`` seeded by ``seed`` (fresh
from the OS when not given, and always reported, so a failure can be replayed with
``--seed``). ``catalogue_table`` and ``catalogue_json`` render the same rows. Everything a
caller asks for is checked before the first claim runs (``check_request``, ``json_target``),
and the JSON is written atomically.
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
from rich.text import Text

from simulator.claims.registry import CLAIMS, ClaimReport, run_claim
from simulator.files import atomic_write_text, output_dir
from simulator.validation import require_int

__all__ = ["CatalogueRun", "catalogue_json", "catalogue_table", "check_request", "json_target",
           "run_catalogue"]


@dataclasses.dataclass(frozen=True)
class CatalogueRun:
    seed: int
    reports: tuple[ClaimReport, ...]
    seconds: float

    @property
    def passed(self) -> bool:
        return all(report.passed for report in self.reports)


def check_request(keys: Sequence[str], *, seed: int | None = None,
                  instances: int | None = None) -> None:
    """Raise before any claim runs: an unknown key (``KeyError`` with the valid keys and a
    "did you mean"), ``instances`` < 1, or a seed outside [0, 2⁶⁴)."""
    for key in keys:
        CLAIMS.lookup(key)
    if instances is not None:
        require_int("instances", instances, 1)
    if seed is not None and require_int("seed", seed, 0) >= 2**64:
        raise ValueError(f"seed must be < 2**64, got {seed}")


def run_catalogue(keys: Sequence[str], *, seed: int | None = None, instances: int | None = None,
                  on_claim: Callable[[ClaimReport], None] | None = None) -> CatalogueRun:
    """Run the claims ``keys`` (each on its own number of fresh instances unless ``instances``)."""
    check_request(keys, seed=seed, instances=instances)
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
        table.add_column(column)  # wrapped at spaces (a narrow terminal: progress.fit_table)
    table.add_column("verdict", no_wrap=True)
    for report in run.reports:
        verdict = "[green]holds[/green]" if report.passed else "[bold red]FAILS[/bold red]"
        # free text as Text, never markup: "[−0.174, 0.132]" or an error message stays whole
        table.add_row(Text(report.key), Text(report.name.replace("_", " ")),
                      Text(report.source), str(report.instances),
                      f"{report.worst_error:.2e}", f"{report.tolerance:.1e}", Text(report.what),
                      verdict)
    return table


def json_target(path: str | Path) -> Path:
    """Check, before the catalogue runs, that the JSON table can be written to ``path``: not a
    folder, and its folder creatable and writable (``ValueError`` naming the path)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"--json must be a file path, but {path} is a folder")
    if path.parent.exists() and not path.parent.is_dir():
        raise ValueError(f"--json: cannot write {path}, because {path.parent} is a file")
    output_dir(path.parent, what="--json's folder")
    return path


def catalogue_json(run: CatalogueRun, path: str | Path) -> Path:
    """Write the table as JSON, atomically: {seed, seconds, passed, claims: [row, ...]}."""
    path = json_target(path)
    rows = [dataclasses.asdict(report) for report in run.reports]
    for row in rows:  # JSON has no inf/nan: a crashed instance is reported as a string
        row["worst_error"] = _finite_or_text(row["worst_error"])
    payload = {"seed": run.seed, "seconds": run.seconds, "passed": run.passed, "claims": rows}
    return atomic_write_text(path, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


def _finite_or_text(value: float) -> float | str:
    return value if value == value and abs(value) != float("inf") else str(value)
