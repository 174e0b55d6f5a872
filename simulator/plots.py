"""Figures for the off-policy lab: a grid of learning curves, one column per setting."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt
import torch
from scipy import stats

if TYPE_CHECKING:
    from simulator.experiments import Report

ROWS = (("reward", "expected reward"), ("kl_init", "KL(π_θ ‖ π_0)"))


def plot_curves(report: Report, path: Path) -> None:
    """Rows: reward and KL to the initial policy; columns: settings; one line per arm (mean
    over seeds, shaded 95% Student-t interval). Saved atomically as a PNG."""
    exp = report.experiment
    n_cols = len(exp.settings)
    fig, axes = plt.subplots(len(ROWS), n_cols, figsize=(3.6 * n_cols + 2.4, 5.6),
                             sharex=True, squeeze=False)
    colours = plt.get_cmap("tab10")
    t_factor = stats.t.ppf(0.975, exp.seeds - 1) / math.sqrt(exp.seeds) if exp.seeds > 1 else 0
    for a, (label, traj) in enumerate(report.trajectories.items()):
        for i, (metric, _) in enumerate(ROWS):
            values = traj.metrics[metric].reshape(-1, exp.seeds, n_cols)
            for j in range(n_cols):
                curve = values[:, :, j]
                mean = curve.mean(1)
                band = curve.std(1, correction=1) * t_factor if exp.seeds > 1 else 0 * mean
                steps = torch.arange(curve.shape[0])
                ax = axes[i][j]
                style = "--" if "(0.6, 2.0)" in label else "-"
                ax.plot(steps, mean, style, color=colours(a % 10), lw=1.6,
                        label=label if (i, j) == (0, 0) else None)
                ax.fill_between(steps, mean - band, mean + band, color=colours(a % 10),
                                alpha=0.10, lw=0)
    for j, setting in enumerate(exp.settings):
        axes[0][j].set_title(setting)
        axes[-1][j].set_xlabel("training step")
    for i, (_, name) in enumerate(ROWS):
        axes[i][0].set_ylabel(name)
    optimum = report.trajectories[next(iter(report.trajectories))].metrics["optimum"][0]
    for j in range(n_cols):
        axes[0][j].axhline(float(optimum.mean()), color="grey", lw=0.8, ls=":")
    fig.legend(loc="center right", fontsize=8, frameon=False)
    fig.suptitle(f"{exp.key}: {exp.title}", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1 - 2.4 / (3.6 * n_cols + 2.4), 0.95))
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
