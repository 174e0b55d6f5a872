"""Run an experiment's curves, keep each curve's runs on disk, and summarise them as tables.

Design decisions
----------------
* ``run_experiment`` trains every curve of an ``experiments.Experiment`` with
  ``dynamics.simulate`` (all seeds × settings of a curve in one batched call), keeps each
  curve's trajectory on disk so an interrupted run resumes where it stopped, and returns a
  ``Report`` whose table and plot ``write_report`` writes atomically. The loss is resolved
  once per curve (``Curve.setup``) and handed to ``simulate`` as a ``LossSetup``.
* The cache (``OUT/runs/LABEL-HASH.pt``, the hash covering everything that determines the
  trajectory, ``fingerprint``) is the lab's raw result; tables and plots are derived from it
  deterministically. An entry holds tensors and plain Python values only, so it is read with
  ``torch.load(weights_only=True)`` (``simulator.files.load_torch``) and checked against the
  curve it should hold (format, loss, runs, shapes); an entry that fails is reported in one
  line and recomputed — that entry only, never the whole folder. The key covers the code as
  well as the configuration: the loss function's code and registry entry and the simulator
  engine (``simulator.provenance``), so a loss whose body changed is recomputed.
* Summary statistics, per (curve, setting), over seeds:
  - final reward: mean ± the 95% Student-t half-width over seeds;
  - collapse rate: the share of runs that diverged or ended more than ``COLLAPSE_DROP`` below
    their own best reward (a rise, then a collapse: what the paper's figures show of stale
    REINFORCE). ``collapsed_runs`` is the one
    home of that rule: the figure marks the same runs (``Report.collapsed``);
  - steps to 90% of the optimum: the median over seeds of the first step at which the run
    closed 90% of the gap between its start J₀ and the optimum J* of its instance, the mean
    over prompts of the best reward (J − J₀ ≥ 0.9·(J* − J₀)); "never" when fewer than half
    did. J* depends on the instance alone, so a curve's number is the same in every experiment
    that runs it (it was once the best reward any curve of the run reached, which moved when a
    curve was added). Not the maximum over a log-linear policy class: multi-start exact
    gradient ascent found 0.75 on three of the five default instances with one budget and
    0.875 with a larger one, so that maximum could not be computed reliably. A policy class
    that cannot reach the optimum reads "never": no loss closes 90% of that gap.
* This module imports the catalogue's types only for annotations, so ``experiments`` can
  re-export the names below without an import cycle.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from scipy import stats

from simulator.dynamics import SETTINGS, Schedule, Trajectory, simulate
from simulator.files import (
    CorruptFileError,
    atomic_torch_save,
    atomic_write,
    atomic_write_text,
    load_torch,
    output_dir,
)
from simulator.provenance import code_digest

if TYPE_CHECKING:
    from simulator.curves import Curve, Experiment

__all__ = ["CACHE_FORMAT", "COLLAPSE_DROP", "NO_INTERVAL", "OFF_POLICY", "STEPS_TO_90", "Report",
           "Row", "collapsed_runs", "fingerprint", "half_width", "markdown_table",
           "off_policy_table", "pivot", "run_experiment", "slug", "summarise", "write_report"]

COLLAPSE_DROP = 0.1
STEPS_TO_90 = ("median steps to 90% of the optimum J* (the first step with J − J₀ ≥ "
               "0.9·(J* − J₀), J* the instance's mean best reward over prompts; 'never' when "
               "fewer than half the seeds got there)")
NO_INTERVAL = "± n/a: one seed, and a 95% interval over seeds needs at least two."
# Bump when a change to the simulator changes what a cached run holds. 3: tensors and plain
# values only (format 2 pickled Schedule objects and needed weights_only=False). 4: metric
# names take the lab's one spelling (kl_behavior). 5: the IS-ratio metrics (ratio_q05, ...).
CACHE_FORMAT = 5
# The off-policyness columns: each a Row field averaging the Trajectory metric of the same name
# over steps 1..T.
OFF_POLICY = ("kl_behavior", "clipfrac", "ratio_q05", "ratio_q50", "ratio_q95", "ratio_far")


def fingerprint(exp: Experiment, curve: Curve) -> str:
    """A hash of everything that determines a curve's trajectory (for resuming): the
    configuration, and the code of its loss and of the engine (``code_digest``)."""
    payload = json.dumps([CACHE_FORMAT, repr(exp.problem), repr(curve), exp.settings,
                          exp.seeds, exp.steps, exp.lr, exp.optimizer, exp.group_size,
                          exp.groups_per_prompt, code_digest(curve.loss)], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def collapsed_runs(reward: torch.Tensor, diverged: torch.Tensor, drop: float = COLLAPSE_DROP
                   ) -> torch.Tensor:
    """Bool, the shape of ``diverged``: runs (``reward`` is [T+1, ...]) that diverged or ended
    more than ``drop`` below their own peak — the lab's collapse, in tables and figures."""
    return diverged | (reward.max(0).values - reward[-1] > drop)


@dataclasses.dataclass
class Row:
    arm: str
    setting: str
    final_reward: float
    ci95: float
    collapse_rate: float
    steps_to_90: str
    diverged: int
    seeds: int
    # off-policyness, each the mean over training steps 1..T and over seeds (``OFF_POLICY``):
    # KL(π‖π_old), the clipped share of tokens, the π_old-weighted 5/50/95% quantiles of
    # ρ = π/π_old and the π_old-mass with |ρ − 1| > 0.2
    kl_behavior: float = float("nan")
    clipfrac: float = float("nan")
    ratio_q05: float = float("nan")
    ratio_q50: float = float("nan")
    ratio_q95: float = float("nan")
    ratio_far: float = float("nan")


@dataclasses.dataclass
class Report:
    experiment: Experiment
    trajectories: dict[str, Trajectory]
    rows: list[Row]

    def collapsed(self, label: str) -> torch.Tensor:
        """[seeds, settings] bool: which of ``label``'s runs collapsed (``collapsed_runs``)."""
        exp, trajectory = self.experiment, self.trajectories[label]
        shape = (exp.seeds, len(exp.settings))
        return collapsed_runs(trajectory.metrics["reward"].reshape(-1, *shape),
                              (trajectory.diverged_at >= 0).reshape(shape))


def run_experiment(exp: Experiment, out_dir: Path | None = None,
                   on_step: Callable[[str, int], None] | None = None, *, fresh: bool = False,
                   on_arm: Callable[[str, str], None] | None = None,
                   on_notice: Callable[[str], None] | None = None) -> Report:
    """Train every curve of ``exp``; trajectories cached under ``out_dir/runs`` (resumable).

    ``on_step(label, step)`` follows the training (called once, with the last step, for a
    curve loaded from the cache); ``on_arm(label, source)`` says where each curve came from
    ("cache" or "run"). A cache entry that cannot be read back (truncated, corrupt, or not what
    this curve should hold) is recomputed, and only that entry; ``on_notice`` gets the one-line
    report (a ``RuntimeWarning`` without it). ``fresh`` recomputes every curve.
    """
    cache_dir = None if out_dir is None else output_dir(Path(out_dir) / "runs", what="cache")
    trajectories = {}
    for curve in exp.arms:
        cache = None if cache_dir is None else cache_dir / (
            f"{slug(curve.label)}-{fingerprint(exp, curve)}.pt")
        trajectory, source = None, "cache"
        if cache is not None and cache.exists() and not fresh:
            trajectory = _load_cached(exp, curve, cache, on_notice)
        if trajectory is not None:
            if on_step is not None:
                on_step(curve.label, exp.steps - 1)
        else:
            trajectory, source = _simulate_curve(exp, curve, on_step), "run"
            if cache is not None:
                atomic_torch_save(_cache_payload(trajectory), cache)
        if on_arm is not None:
            on_arm(curve.label, source)
        trajectories[curve.label] = trajectory
    rows = [row for curve in exp.arms
            for row in summarise(exp, curve.label, trajectories[curve.label])]
    return Report(exp, trajectories, rows)


def _simulate_curve(exp: Experiment, curve: Curve,
                    on_step: Callable[[str, int], None] | None) -> Trajectory:
    """Every seed × setting of one curve as one batched ``simulate`` call."""
    return simulate(
        exp.problem, curve.setup(), seeds=list(range(exp.seeds)),
        schedules=[SETTINGS[s] for s in exp.settings], lrs=[exp.lr * curve.lr_scale],
        steps=exp.steps, group_size=exp.group_size, groups=curve.groups,
        groups_per_prompt=exp.groups_per_prompt, optimizer=exp.optimizer,
        on_step=None if on_step is None else (lambda step: on_step(curve.label, step)),
    )


# A cache entry holds tensors and plain Python values only, so it loads with
# torch.load(weights_only=True): no pickled classes, no code run at load time.
def _plain_runs(runs: list[tuple[int, Schedule, float]]) -> list[list[Any]]:
    return [[seed, sch.sync_interval, sch.sync_offset, sch.offline, sch.rollout_temperature,
             sch.rollout_noise, lr] for seed, sch, lr in runs]


def _cache_payload(trajectory: Trajectory) -> dict[str, Any]:
    return {"format": CACHE_FORMAT, "loss": trajectory.loss,
            "runs": _plain_runs(trajectory.runs), "metrics": dict(trajectory.metrics),
            "diverged_at": trajectory.diverged_at, "params": trajectory.params}


def _expected_runs(exp: Experiment, curve: Curve) -> list[tuple[int, Schedule, float]]:
    """(seed, schedule, lr) of every run, in ``simulate``'s order (seed-major)."""
    return [(seed, SETTINGS[name], exp.lr * curve.lr_scale)
            for seed in range(exp.seeds) for name in exp.settings]


def _check_cache(payload: Any, exp: Experiment, curve: Curve) -> None:
    """Raise ``ValueError`` unless ``payload`` is this curve's trajectory: format, loss, runs,
    and every tensor of the shape the experiment implies ([steps + 1, R] metrics)."""
    if not isinstance(payload, dict) or payload.get("format") != CACHE_FORMAT:
        raise ValueError(f"not a cache entry of format {CACHE_FORMAT}")
    runs = _expected_runs(exp, curve)
    if payload.get("loss") != curve.loss or payload.get("runs") != _plain_runs(runs):
        raise ValueError("it holds another configuration")
    metrics, n = payload.get("metrics"), len(runs)
    if not isinstance(metrics, dict) or not {"reward", "optimum", "kl_init",
                                             *OFF_POLICY} <= set(metrics):
        raise ValueError("metrics are missing")
    for name, value in metrics.items():
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != (exp.steps + 1, n):
            raise ValueError(f"metric {name!r} is not a [{exp.steps + 1}, {n}] tensor")
    diverged, params = payload.get("diverged_at"), payload.get("params")
    if not isinstance(diverged, torch.Tensor) or tuple(diverged.shape) != (n,) or (
            diverged.dtype != torch.long):
        raise ValueError("diverged_at is not an integer [runs] tensor")
    if not isinstance(params, torch.Tensor) or params.ndim < 1 or params.shape[0] != n:
        raise ValueError("params is not a [runs, ...] tensor")


def _load_cached(exp: Experiment, curve: Curve, cache: Path,
                 on_notice: Callable[[str], None] | None) -> Trajectory | None:
    """The cached trajectory, or None (after a one-line notice) when the entry is unreadable."""
    try:
        payload = load_torch(cache, what="cached run",
                             check=lambda obj: _check_cache(obj, exp, curve))
    except CorruptFileError as error:
        message = f"{error}; recomputing {curve.label}"
        if on_notice is None:
            warnings.warn(message, RuntimeWarning, stacklevel=3)
        else:
            on_notice(message)
        return None
    return Trajectory(payload["loss"], _expected_runs(exp, curve), payload["metrics"],
                      payload["diverged_at"], payload["params"])


def summarise(exp: Experiment, label: str, trajectory: Trajectory) -> list[Row]:
    """One ``Row`` per setting (runs are seed-major, then setting; one lr per curve), from this
    curve's trajectory alone: no other curve of the experiment enters its row."""
    n_settings = len(exp.settings)
    reward = trajectory.metrics["reward"].reshape(-1, exp.seeds, n_settings)  # [T+1, S, X]
    optimum = trajectory.metrics["optimum"][0].reshape(exp.seeds, n_settings)  # J* [S, X]
    diverged = (trajectory.diverged_at >= 0).reshape(exp.seeds, n_settings)
    collapsed = collapsed_runs(reward, diverged)
    # the mean over training steps 1..T of each off-policyness metric, per run [S, X]
    off_policy = {name: trajectory.metrics[name][1:].mean(0).reshape(exp.seeds, n_settings)
                  for name in OFF_POLICY}
    rows = []
    for j, setting in enumerate(exp.settings):
        curve = reward[:, :, j]
        rows.append(Row(
            arm=label, setting=setting, final_reward=float(curve[-1].mean()),
            ci95=half_width(curve[-1]), collapse_rate=float(collapsed[:, j].double().mean()),
            steps_to_90=_steps_to_90(curve, curve[0], optimum[:, j]),
            diverged=int(diverged[:, j].sum()), seeds=exp.seeds,
            **{field: float(values[:, j].mean()) for field, values in off_policy.items()},
        ))
    return rows


def half_width(values: torch.Tensor) -> float:
    """The 95% Student-t half-width t₀.₉₇₅(n − 1)·s/√n; NaN (undefined) for n < 2."""
    n = values.numel()
    if n < 2:
        return float("nan")
    sd = float(values.std(correction=1))
    return float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)


def _interval(half_width: float) -> str:
    return f"{half_width:.2f}" if math.isfinite(half_width) else "n/a"


def _steps_to_90(curve: torch.Tensor, start: torch.Tensor, optimum: torch.Tensor) -> str:
    """Median first step with J − J₀ ≥ 0.9·(J* − J₀) over seeds; "never" unless most did."""
    reached = curve - start >= 0.9 * (optimum - start)  # [T+1, S]
    first = [int(col.nonzero()[0]) if bool(col.any()) else None for col in reached.T]
    steps = torch.tensor([math.inf if s is None else s for s in first], dtype=torch.float64)
    if 2 * int(torch.isfinite(steps).sum()) <= len(first):
        return "never"
    return str(int(steps.median()))


def write_report(report: Report, out_dir: Path) -> dict[str, Path]:
    """Write table.md, table.csv and curves.png under ``out_dir`` (each atomically)."""
    from simulator.plots import plot_curves  # matplotlib only when a report is written

    out_dir = output_dir(out_dir)
    paths = {"markdown": out_dir / "table.md", "csv": out_dir / "table.csv",
             "plot": out_dir / "curves.png"}
    atomic_write_text(paths["markdown"], markdown_table(report))
    fields = [f.name for f in dataclasses.fields(Row)]
    with atomic_write(paths["csv"], "w") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(_csv_row(row) for row in report.rows)
    plot_curves(report, paths["plot"])
    return paths


def _csv_row(row: Row) -> dict[str, Any]:
    """A row as CSV fields; an undefined interval (one seed) is an empty field, not "nan"."""
    fields = dataclasses.asdict(row)
    if not math.isfinite(row.ci95):
        fields["ci95"] = ""
    return fields


def pivot(report: Report) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """(settings, [(curve, cells)]): one row per curve, one cell per setting, each cell
    "final ± CI · collapse% · steps-to-90%" — how a reader compares losses across settings.
    With one seed there is no interval: the cell says "± n/a" (``NO_INTERVAL`` says why)."""
    settings = list(report.experiment.settings)
    cells: dict[str, dict[str, str]] = {}
    for row in report.rows:
        cells.setdefault(row.arm, {})[row.setting] = (
            f"{row.final_reward:.2f} ± {_interval(row.ci95)} · {row.collapse_rate:.0%} · "
            f"{row.steps_to_90}" + (f" · {row.diverged} diverged" if row.diverged else ""))
    return settings, [(label, [by[s] for s in settings]) for label, by in cells.items()]


def markdown_table(report: Report) -> str:
    exp = report.experiment
    settings, rows = pivot(report)
    lines = [
        f"# {exp.key}: {exp.title}", "",
        f"Paper: {exp.paper}", "",
        f"Problem: {exp.problem}; optimiser {exp.optimizer}, lr {exp.lr}, group size "
        f"{exp.group_size}, {exp.steps} steps, {exp.seeds} seeds, exact expected updates "
        "unless a curve says 'sampled'.", "",
        "Each cell: final expected reward (mean ± 95% CI over seeds) · collapse rate (diverged, "
        f"or final reward more than {COLLAPSE_DROP} below the run's peak) · {STEPS_TO_90}."
        + ("" if exp.seeds > 1 else f" {NO_INTERVAL}"), "",
        "| loss | " + " | ".join(settings) + " |",
        "| --- |" + " --- |" * len(settings),
    ]
    lines += [f"| {label} | " + " | ".join(values) + " |" for label, values in rows]
    return "\n".join([*lines, "", *off_policy_table(report)]) + "\n"


def off_policy_table(report: Report) -> list[str]:
    """The second table of table.md: how far each curve's policy moved from the data's
    behaviour policy π_old, per setting (``OFF_POLICY``; means over steps 1..T and seeds)."""
    settings = list(report.experiment.settings)
    cells: dict[str, dict[str, str]] = {}
    for row in report.rows:
        cells.setdefault(row.arm, {})[row.setting] = (
            f"KL {row.kl_behavior:.3f} · clip {row.clipfrac:.0%} · ρ {row.ratio_q05:.2f}/"
            f"{row.ratio_q50:.2f}/{row.ratio_q95:.2f} · {row.ratio_far:.0%} far")
    lines = [
        "Off-policyness, each the mean over training steps and seeds: KL(π‖π_old) of the "
        "updated policy to the step's behaviour policy · clip: the share of tokens whose "
        "gradient clipping switched off · ρ: the π_old-weighted 5%/50%/95% quantiles of the "
        "ratio ρ = π(y)/π_old(y) · far: the π_old-mass with |ρ − 1| > 0.2.", "",
        "| loss | " + " | ".join(settings) + " |",
        "| --- |" + " --- |" * len(settings),
    ]
    return lines + [f"| {label} | " + " | ".join(by[s] for s in settings) + " |"
                    for label, by in cells.items()]


def slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text.lower()).strip("-")
