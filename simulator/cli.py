"""The lab's subcommands of ``grlab``: ``compare``, ``experiment``, ``verify``, ``losses``.

Each is a plain function whose keyword arguments (with their docstrings) become flags through
tyro. The command itself (``grlab.cli``) dispatches to these and to the bridge's
``train-llm``; this module never imports the bridge (the core does not depend on it).
"""

from __future__ import annotations

import dataclasses
import inspect
import shutil
from pathlib import Path
from typing import Literal

from rich.console import Console
from rich.markdown import Markdown
from rich.table import Table

from simulator.dynamics import SETTINGS
from simulator.experiments import (
    ARMS,
    DEFAULT_COMPARE_ARMS,
    EXPERIMENTS,
    FIGURES,
    LOG_LINEAR,
    TREE,
    Experiment,
    default_comparison,
    experiment_names,
)
from simulator.losses import LOSSES
from simulator.progress import progress_bar

console = Console()


def losses(name: str | None = None) -> None:
    """List the loss zoo: every registered loss and preset with its advantage kind, default
    aggregation and the keyword values a preset binds.

    Args:
        name: show one loss in full (all keyword defaults and its formula) instead of the table.
    """
    if name is not None:
        spec = LOSSES[name]
        console.print(f"[bold]{spec.name}[/bold] — {spec.summary}")
        console.print(f"base loss: {spec.base}   advantage: {spec.advantage}   "
                      f"aggregation: {spec.agg}   drop uniform groups: {spec.drop_uniform_groups}")
        console.print("keywords: " + ", ".join(f"{k}={v!r}" for k, v in spec.defaults().items()))
        console.print(inspect.cleandoc(spec.fn.__doc__ or ""), markup=False, highlight=False)
        return
    table = Table(title="grlab loss zoo — simulator.losses.LOSSES", show_lines=False)
    table.add_column("name", no_wrap=True)
    table.add_column("advantage", no_wrap=True)
    table.add_column("aggregation", no_wrap=True)
    table.add_column("what it is", overflow="fold", ratio=1)
    for spec in LOSSES.values():
        text = spec.summary
        if spec.hparams:
            binds = ", ".join(f"{k}={v}" for k, v in spec.hparams.items())
            text += f"\n[dim]= {spec.base}({binds})[/dim]"
        table.add_row(spec.name, spec.advantage, spec.agg, text)
    console.print(table)
    console.print("grlab losses --name NAME shows one loss's formula and every keyword.")


def _run_and_report(exp: Experiment, out: Path, fresh: bool) -> None:
    """Run an experiment with a progress bar, write its files, print the table and paths."""
    from simulator.experiments import pivot, run_experiment, write_report

    if fresh and (out / "runs").exists():
        shutil.rmtree(out / "runs")
    total = len(exp.arms) * exp.steps
    with progress_bar(console, transient=True) as progress:
        task = progress.add_task(f"{exp.key}: {len(exp.arms)} losses", total=total)
        done: dict[str, int] = {}

        def on_step(label: str, step: int) -> None:
            done[label] = step + 1
            progress.update(task, completed=sum(done.values()),
                            description=f"{exp.key}: {label}")

        report = run_experiment(exp, out, on_step)
    paths = write_report(report, out)
    settings, rows = pivot(report)
    table = Table(title=f"{exp.key}: {exp.title}", caption="final reward ± 95% CI · collapse "
                  "rate · steps to 90% of the best reward reached", show_lines=True)
    table.add_column("loss", no_wrap=True)
    for setting in settings:
        table.add_column(setting, overflow="fold")
    for arm, values in rows:
        table.add_row(arm, *values)
    console.print(table)
    for kind, path in paths.items():
        console.print(f"{kind:>8}: {path}")


def compare(
    losses: tuple[str, ...] = DEFAULT_COMPARE_ARMS,
    settings: tuple[str, ...] = tuple(SETTINGS),
    env: Literal["bandit", "tree"] = "bandit",
    policy: Literal["tabular", "log-linear"] = "log-linear",
    seeds: int = 5,
    steps: int = 150,
    lr: float = 0.1,
    group_size: int | None = None,
    out: Path = Path("results/compare"),
    list: bool = False,
    fresh: bool = False,
) -> None:
    """The main job: train several losses under four off-policy settings, exactly, on CPU, and
    write a plot (curves.png) and a table (table.md, table.csv).

    Args:
        losses: arm keys or any registered loss name (see --list).
        settings: off-policy settings (see --list).
        env: the testbed: a multi-prompt softmax bandit (8 prompts × 6 answers, one correct)
            or a token-level tree MDP (4 prompts, 15 responses of 1–3 tokens, graded rewards).
        policy: tabular logits, or a log-linear policy with shared features.
        seeds: problem instances per (loss, setting); each draws rewards and a start point.
        steps: training steps (one optimiser step per batch).
        lr: Adam's learning rate.
        group_size: responses per prompt K (default 4 on a bandit, 3 on a tree).
        out: output folder; finished losses are cached under out/runs and reused.
        list: print the loss keys, settings and experiments, then exit.
        fresh: ignore cached runs under out/runs.
    """
    if list:
        console.print("losses (arm keys): " + ", ".join(ARMS) + ", or any name of `grlab losses`")
        console.print("settings: " + ", ".join(f"{k} ({v.label})" for k, v in SETTINGS.items()))
        console.print("experiments: " + ", ".join(experiment_names()) + " (grlab experiment KEY)")
        return
    problem = dataclasses.replace(LOG_LINEAR if env == "bandit" else TREE, policy=policy)
    exp = default_comparison(losses, settings, seeds=seeds, steps=steps, problem=problem,
                             group_size=group_size, lr=lr)
    _run_and_report(exp, out, fresh)


ExperimentKey = Literal[tuple(experiment_names())]  # type: ignore[valid-type]


def experiment(key: ExperimentKey, /, out: Path | None = None, fresh: bool = False) -> None:
    """Run one named experiment of the paper's findings and write its plot and table
    (E1–E5, E7: learning curves under the four off-policy settings; E1-lr, E1-tabular,
    E1-tabular-graded, E1-tree: E1 across learning rates and testbeds; E6: Pitfall 1 on a
    three-armed bandit).

    Args:
        key: the experiment's key.
        out: output folder (default results/KEY).
        fresh: ignore cached runs.
    """
    out = out or Path("results") / key
    if key in FIGURES:
        title, run = FIGURES[key]
        with console.status(f"{key}: {title}"):
            text, paths = run(out)
        console.print(Markdown(text))
        for kind, path in paths.items():
            console.print(f"{kind:>8}: {path}")
        return
    if key not in EXPERIMENTS:
        raise KeyError(f"unknown experiment {key!r}; valid: {', '.join(experiment_names())}")
    _run_and_report(EXPERIMENTS[key], out, fresh)


def verify(only: tuple[str, ...] = (), instances: int | None = None, seed: int | None = None,
           json: str | None = None) -> None:
    """Check every claim of the theory catalogue on fresh random instances and print a table of
    claim, source, instances tried, worst error, tolerance and verdict; exit 1 if one fails.

    Args:
        only: run only these claim keys (e.g. --only 4 13b); default: the whole catalogue.
        instances: instances per claim; default: each claim's own count (the full run then
            takes well under a minute on 2 cores).
        seed: seed of the generator that draws every instance; default: fresh from the OS
            (printed, so a failure can be replayed).
        json: also write the table to this path as JSON.
    """
    from simulator.claims import CATALOGUE
    from simulator.claims.report import catalogue_json, catalogue_table, run_catalogue

    keys = tuple(only) or CATALOGUE
    try:
        with console.status("running the theory catalogue") as status:
            run = run_catalogue(keys, seed=seed, instances=instances, on_claim=lambda report:
                                status.update(f"claim {report.key} done ({report.seconds:.1f} s)"))
    except (KeyError, ValueError) as error:
        console.print(f"[bold red]error:[/bold red] {error}")
        raise SystemExit(2) from None
    console.print(catalogue_table(run))
    if json is not None:
        console.print(f"table written to {catalogue_json(run, json)}")
    if not run.passed:
        failed = ", ".join(report.key for report in run.reports if not report.passed)
        console.print(f"[bold red]claims failing: {failed}[/bold red] (replay: --seed {run.seed})")
        raise SystemExit(1)
