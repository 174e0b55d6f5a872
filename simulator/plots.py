"""Figures for the off-policy lab: a grid of learning curves, one column per setting."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

from simulator.files import atomic_savefig

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt
import torch
from scipy import stats

if TYPE_CHECKING:
    from simulator.experiments import Report

ROWS = (("reward", "expected reward"), ("kl_init", "KL(π_θ ‖ π_0)"))
MAX_BANDS = 8  # with more curves than this the 95% bands hide the means: lines only


def plot_curves(report: Report, path: Path) -> None:
    """Rows: reward and KL to the initial policy; columns: settings; one line per arm (mean
    over seeds, shaded 95% Student-t interval when there are at most ``MAX_BANDS`` arms).
    Saved atomically as a PNG."""
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
                if len(report.trajectories) <= MAX_BANDS:
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
    bands = ("shaded: 95% interval over seeds" if len(report.trajectories) <= MAX_BANDS
             else "bands omitted (too many curves); see table.md for intervals")
    fig.suptitle(f"{exp.key}: {exp.title}\nmean over {exp.seeds} seeds; {bands}", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1 - 2.4 / (3.6 * n_cols + 2.4), 0.95))
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)


def plot_pitfall(paths: dict[str, torch.Tensor], rewards: torch.Tensor, path: Path,
                 title: str) -> None:
    """Left: each method's π_t on the probability simplex of three arms; right: E_π r."""
    from simulator.pitfall import simplex_xy

    fig, (tri, curve) = plt.subplots(1, 2, figsize=(11, 4.6),
                                     gridspec_kw={"width_ratios": [1.0, 1.25]})
    corners = torch.eye(3, dtype=torch.float64)
    cx, cy = simplex_xy(corners)
    tri.plot([*cx.tolist(), float(cx[0])], [*cy.tolist(), float(cy[0])], color="black", lw=0.8)
    for i, (x, y) in enumerate(zip(cx.tolist(), cy.tolist(), strict=True)):
        tri.annotate(f"arm {i + 1} (r = {float(rewards[i]):g})", (x, y), ha="center",
                     va="top" if y == 0 else "bottom", xytext=(0, -6 if y == 0 else 6),
                     textcoords="offset points", fontsize=8)
    colours = plt.get_cmap("tab10")
    for a, (label, pi) in enumerate(paths.items()):
        x, y = simplex_xy(pi)
        tri.plot(x, y, color=colours(a), lw=1.8)
        tri.plot(float(x[-1]), float(y[-1]), "o", color=colours(a), ms=5)
        curve.plot(torch.arange(len(pi)), pi @ rewards, color=colours(a), lw=1.8, label=label)
    x0, y0 = simplex_xy(next(iter(paths.values()))[0])
    tri.plot(float(x0), float(y0), "k*", ms=10, label="start π_0 = μ")
    tri.set_aspect("equal")
    tri.axis("off")
    tri.set_ylim(-0.12, 1.0)
    curve.axhline(float(rewards.max()), color="grey", lw=0.8, ls=":")
    curve.set_xlabel("exact update step")
    curve.set_ylabel("expected reward E_π r")
    curve.legend(fontsize=8, frameon=False, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)
