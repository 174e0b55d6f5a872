"""Figures for the off-policy lab: a grid of learning curves, one column per setting.

Design decisions
----------------
* The figure must carry the message the tables and the README state, so what a mean curve
  hides is drawn: each seed's run is a thin line behind the mean (reward row), and a run that
  collapsed by the tables' definition (``reports.collapsed_runs``: final reward more than
  ``COLLAPSE_DROP`` below its own peak, or diverged) is marked × at its end. The KL row keeps
  the 95% band: it carries no collapse claim and 40 thin lines there would hide the means.
* Curves that are identical in a panel (every seed, every step, reward and KL, to 1e-9:
  ``coinciding_groups``) would otherwise merge into one colour with no word said — on-policy
  most losses have the same gradient (ρ = 1). They are drawn once, in black, the panel is
  tagged, and a note under the panels names them (adding "ρ = 1" on-policy). A loss that is
  not identical but whose mean reward stays within ``NEAR`` of a line drawn over it is named
  too ("lies under it", with the gap): otherwise it would seem to be missing.
* Rows share their y axis, so columns compare by eye; steps are integer ticks; every line the
  legend does not name (the dotted optimum) is named.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import matplotlib

from simulator.files import atomic_savefig

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt
import torch
from matplotlib import patheffects
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from scipy import stats

from simulator.schedule import SETTINGS, Schedule

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from simulator.reports import Report

ROWS = (("reward", "expected reward"), ("kl_init", "KL(π_θ ‖ π_0)"))
MAX_BANDS = 8  # with more curves than this the 95% bands hide the means: lines only
IDENTICAL_TOL = 1e-9  # curves closer than this (relative, every point) are one curve
SAME = "black"  # the colour of a line that stands for several identical losses
# A loss whose mean reward stays this close to an identical group's line is hidden under it
# (rewards lie in [0, 1]: 0.02 is a few pixels, about a line's width): the note names it.
NEAR = 0.02
CLIPFRAC_FLOOR = 1e-6  # plot_clipfrac: lower values sit on the bottom edge
LEGEND_WIDTH = 3.0  # inches to the right of the panels
# matplotlib's tab10, in words: a note says "the brown line", not "the line of arm 6"
TAB10_NAMES = ("blue", "orange", "green", "red", "purple", "brown", "pink", "grey", "olive",
               "cyan")


def coinciding_groups(curves: Mapping[str, torch.Tensor], tol: float = IDENTICAL_TOL
                      ) -> list[list[str]]:
    """Groups (of two or more labels, in the order given) whose curves are equal at every point
    to ``tol`` (|a − b| ≤ tol·(1 + |b|); equal infinities and NaNs count as equal). Each
    label is compared with the first member of each earlier group."""
    groups: list[list[str]] = []
    for label, curve in curves.items():
        for group in groups:
            ref = curves[group[0]]
            if ref.shape == curve.shape and bool(torch.isclose(
                    curve, ref, rtol=tol, atol=tol, equal_nan=True).all()):
                group.append(label)
                break
        else:
            groups.append([label])
    return [group for group in groups if len(group) > 1]


def coincidence_note(group: Sequence[str], labels: Sequence[str], setting: str, *,
                     colour: str = "black", near: Mapping[str, float] | None = None) -> str:
    """What one line standing for the identical losses ``group`` is, in words: "black: all 8
    losses (identical here)", "black: 6 of 8 losses, all but GRPO, RED-Weight (identical
    here)" or the members by name; "on-policy, ρ = 1" where ``setting`` is on-policy; and the
    other losses hidden under it, ``near`` (label ↦ largest gap in mean reward)."""
    n, k = len(labels), len(group)
    rest = [label for label in labels if label not in group]
    if k == n:
        text = f"{colour}: all {n} losses (identical here"
    elif len(rest) < k:
        text = f"{colour}: {k} of {n} losses, all but {', '.join(rest)} (identical here"
    else:
        text = f"{colour}: {', '.join(group)} (identical here"
    text += ", on-policy: ρ = 1)" if SETTINGS.get(setting) == Schedule() else ")"
    return text + ("; " + under_note(near) if near else "")


def under_note(near: Mapping[str, float]) -> str:
    """"GRPO and RED-Weight lie under it (mean reward within 0.0024 and 0.016)"."""
    verb = "lies" if len(near) == 1 else "lie"
    return (f"{' and '.join(near)} {verb} under it (mean reward within "
            f"{' and '.join(f'{gap:.2g}' for gap in near.values())})")


def hidden_under(means: Mapping[str, torch.Tensor], order: Sequence[str], near: float = NEAR
                 ) -> dict[str, dict[str, float]]:
    """top ↦ {label: gap}: each curve of ``order`` (drawn in that order, later on top) whose
    largest gap to a curve drawn after it is at most ``near`` lies under the closest such
    curve, and through it under whatever covers that one (the visible "top"); the gap is the
    largest |difference| between the label's mean curve and the top's."""
    under: dict[str, str] = {}
    for i, label in enumerate(order):
        gaps = [(float((means[label] - means[top]).abs().max()), top) for top in order[i + 1:]]
        close = [(gap, top) for gap, top in gaps if gap <= near]
        if close:
            under[label] = min(close)[1]
    hidden: dict[str, dict[str, float]] = {}
    for label in under:
        top = under[label]
        while top in under:  # drawn later, so this ends
            top = under[top]
        hidden.setdefault(top, {})[label] = float((means[label] - means[top]).abs().max())
    return hidden


def plot_curves(report: Report, path: Path) -> None:
    """``curves_figure`` saved atomically as a PNG."""
    fig = curves_figure(report)
    try:
        atomic_savefig(fig, path, dpi=110)
    finally:
        plt.close(fig)


class _Column(NamedTuple):
    """How one column is drawn: curves in drawing order with their colour (a label, or ``SAME``)
    and z-order, the short tag of each identical group for the panel, and the notes."""

    order: list[tuple[str, str, int]]
    tags: list[str]
    notes: list[str]


def _plan_column(per_seed: Mapping[str, Mapping[str, torch.Tensor]], labels: Sequence[str],
                 setting: str, j: int) -> _Column:
    """Find the identical groups of column ``j`` and decide how each curve is drawn: losses of
    their own first, then each group once on top (the largest in black, others in the colour
    of their first member). Notes name each group and every loss whose mean reward lies
    within ``NEAR`` of a line drawn over it."""
    column = {label: torch.cat([per_seed[label][m][:, :, j] for m, _ in ROWS])
              for label in labels}
    groups = sorted(coinciding_groups(column), key=len, reverse=True)
    in_group = {member for group in groups for member in group}
    order = [(label, label, 3) for label in labels if label not in in_group]
    order += [(group[0], SAME if g == 0 else group[0], 4) for g, group in enumerate(groups)]
    means = {label: reward_mean(per_seed, label, j) for label, _, _ in order}
    hidden = hidden_under(means, [label for label, _, _ in order])
    tags, notes = [], []
    for g, group in enumerate(groups):
        name = "black" if g == 0 else TAB10_NAMES[labels.index(group[0]) % 10]
        tags.append(name)
        notes.append(coincidence_note(group, labels, setting, colour=name,
                                      near=hidden.pop(group[0], None)))
    notes += [f"{TAB10_NAMES[labels.index(top) % 10]} ({top}): {under_note(near)}"
              for top, near in hidden.items()]
    if tags:
        tags = [f"{', '.join(tags)}: identical losses (named below)"]
    return _Column(order, tags, notes)


def curves_figure(report: Report) -> Figure:
    """Rows: reward and KL to the initial policy; columns: settings; per curve the mean over
    seeds (thick), each seed (thin, reward row) and the 95% Student-t band (KL row, at most
    ``MAX_BANDS`` curves); identical curves drawn once, tagged in the panel and named in notes
    under the panels."""
    exp = report.experiment
    n_cols = len(exp.settings)
    labels = list(report.trajectories)
    colours = {label: plt.get_cmap("tab10")(a % 10) for a, label in enumerate(labels)}
    colours[SAME] = SAME
    per_seed = {label: {m: t.metrics[m].reshape(-1, exp.seeds, n_cols) for m, _ in ROWS}
                for label, t in report.trajectories.items()}
    collapsed = {label: report.collapsed(label) for label in labels}  # [S, X], the tables'
    plans = [_plan_column(per_seed, labels, setting, j)
             for j, setting in enumerate(exp.settings)]
    width = 3.6 * n_cols + LEGEND_WIDTH
    notes = "\n".join(textwrap.fill(f"{setting} — {note}", int(width * 14),
                                    subsequent_indent="    ")
                       for setting, plan in zip(exp.settings, plans, strict=True)
                       for note in plan.notes)
    notes_height = 0.16 * (notes.count("\n") + 1) + 0.1 if notes else 0.0
    fig, axes = plt.subplots(len(ROWS), n_cols, figsize=(width, 6.0 + notes_height),
                             sharex=True, sharey="row", squeeze=False)
    shown: set[str] = set()
    for j, plan in enumerate(plans):
        for label, colour, zorder in plan.order:
            _draw_curve(axes[:, j], exp, label, colours[colour], per_seed[label],
                        collapsed[label][:, j], j, shown, zorder=zorder,
                        slot=labels.index(label))
        _tag_panel(axes[0][j], plan.tags)
        shown.update({"same"} if plan.tags else set())
    if _draw_on_policy_reference(axes, exp, per_seed, labels):
        shown.add("reference")
    if notes:
        fig.text(0.01, 0.01, notes, fontsize=8, va="bottom", ha="left")
    _decorate(fig, axes, report, colours, shown, bottom=notes_height / (6.0 + notes_height))
    return fig


def _draw_on_policy_reference(axes: Any, exp: Any,
                              per_seed: Mapping[str, Mapping[str, torch.Tensor]],
                              labels: Sequence[str]) -> bool:
    """Where the settings include on-policy, its mean reward (of the first curve: on-policy
    every REC variant has REINFORCE's gradient, ρ = 1) is drawn grey in every other column, as
    the reference the stale curves are read against. True when something was drawn."""
    if "on-policy" not in exp.settings or len(exp.settings) < 2:
        return False
    ref = reward_mean(per_seed, labels[0], list(exp.settings).index("on-policy"))
    for j, setting in enumerate(exp.settings):
        if setting != "on-policy":
            axes[0][j].plot(torch.arange(ref.shape[0]), ref, "-.", color="0.45", lw=1.2,
                            zorder=2)
    return True


def reward_mean(per_seed: Mapping[str, Mapping[str, torch.Tensor]], label: str, j: int
                ) -> torch.Tensor:
    """Mean reward over seeds [T+1] of ``label`` in column ``j``."""
    return per_seed[label]["reward"][:, :, j].mean(1)



def line_style(label: str) -> str:
    """A curve's line style: dashed for the wide clip (0.6, 2.0), whose curve often lies on
    clip 0.2's, solid for every other curve (every figure of the lab, and the transformer's)."""
    return "--" if "(0.6, 2.0)" in label else "-"
def _draw_curve(column: Sequence[Axes], exp: Any, label: str, colour: Any,
                metrics: Mapping[str, torch.Tensor], fell: torch.Tensor, j: int,
                shown: set[str], zorder: int = 3, slot: int = 0) -> None:
    """One curve in one column: mean, per-seed lines and collapse marks (reward), band (KL).
    ``fell`` [S] marks the runs that collapsed (``Report.collapsed``). ``slot`` (the curve's
    index) shifts its × marks left by 1.5% of the steps per curve, so the marks of runs that
    end at the same reward do not hide each other."""
    style = line_style(label)
    t_factor = (stats.t.ppf(0.975, exp.seeds - 1) / math.sqrt(exp.seeds)
                if exp.seeds > 1 else 0.0)
    for ax, (metric, _) in zip(column, ROWS, strict=True):
        curve = metrics[metric][:, :, j]  # [T+1, S]
        steps = torch.arange(curve.shape[0])
        mean = curve.mean(1)
        ax.plot(steps, mean, style, color=colour, lw=1.7, zorder=zorder)
        if metric == "reward" and exp.seeds > 1:
            ax.plot(steps, curve[:, ~fell], "-", color=colour, lw=0.5, alpha=0.2,
                    zorder=zorder - 1)
            shown.add("seeds")
            if bool(fell.any()):
                ax.plot(steps, curve[:, fell], "-", color=colour, lw=0.9, alpha=0.9,
                        zorder=zorder - 1)
                end = float(steps[-1]) * (1 - 0.015 * slot)
                ax.plot([end] * int(fell.sum()), curve[-1, fell], "x", color=colour, ms=6,
                        mew=1.6, zorder=5, clip_on=False,  # a white rim: visible on any line
                        path_effects=[patheffects.withStroke(linewidth=3.2, foreground="white")])
                shown.add("collapse")
        elif metric != "reward" and exp.seeds > 1 and len(exp.arms) <= MAX_BANDS:
            band = curve.std(1, correction=1) * t_factor
            # a KL is ≥ 0, and so is its mean: the interval is cut at 0
            ax.fill_between(steps, (mean - band).clamp(min=0), mean + band, color=colour,
                            alpha=0.10, lw=0)
            shown.add("band")


def _tag_panel(ax: Axes, tags: Sequence[str]) -> None:
    """The tag goes between the panel's title and its frame, where it covers no curve."""
    if tags:
        ax.text(0.5, 1.015, "\n".join(tags), transform=ax.transAxes, va="bottom", ha="center",
                fontsize=7, color="0.2")


def _decorate(fig: Figure, axes: Any, report: Report, colours: Mapping[str, Any],
              shown: set[str], bottom: float = 0.0) -> None:
    """Titles, labels, integer step ticks, the optimum line, the legend and the title."""
    exp = report.experiment
    for j, setting in enumerate(exp.settings):
        # room for a panel's tag under the titles (the same in every column, so they align)
        axes[0][j].set_title(setting, pad=14 if "same" in shown else 6)
        axes[-1][j].set_xlabel("training step")
        _integer_steps(axes[-1][j])
    for i, (_, name) in enumerate(ROWS):
        axes[i][0].set_ylabel(name)
    first = report.trajectories[next(iter(report.trajectories))]
    optimum = float(first.metrics["optimum"][0].mean())
    for ax in axes[0]:
        ax.axhline(optimum, color="grey", lw=0.8, ls=":")
    handles = [Line2D([], [], color=colours[label], lw=1.7,
                      ls=line_style(label), label=label)
               for label in report.trajectories]
    extra = [("same", Line2D([], [], color=SAME, lw=1.7,
                             label="black: identical losses\n  (named under the panels)")),
             ("seeds", Line2D([], [], color="grey", lw=0.5, alpha=0.4,
                              label="faint: one seed's run")),
             ("collapse", Line2D([], [], color="grey", lw=0.9, marker="x", mew=1.6,
                                 label="thin, ×: a run that collapsed (final\n  reward "
                                       "> 0.1 below its own peak,\n  or diverged)"))]
    if "reference" in shown:
        extra.append(("reference", Line2D([], [], color="0.45", lw=1.2, ls="-.",
                                          label=f"grey dash-dot: on-policy reference\n  "
                                                f"({next(iter(report.trajectories))}, "
                                                "on-policy)")))
    handles += [line for key, line in extra if key in shown]
    handles.append(Line2D([], [], color="grey", lw=0.8, ls=":",
                          label="dotted: best reward possible\n  (mean over prompts of max r)"))
    fig.legend(handles=handles, loc="center right", fontsize=8, frameon=False)
    band = ("; KL shaded: 95% interval over seeds" if "band" in shown
            else "; bands omitted (too many curves): see table.md" if exp.seeds > 1 else "")
    fig.suptitle(f"{exp.key}: {exp.title}\nthick: mean over {exp.seeds} seed"
                 f"{'s' if exp.seeds > 1 else ''}{band}", fontsize=10)
    top = 1 - 0.3 / fig.get_figheight()  # the two-line title
    fig.tight_layout(rect=(0, bottom, 1 - LEGEND_WIDTH / fig.get_figwidth(), top))


def _integer_steps(ax: Axes) -> None:
    """Whole training steps on the x axis (never 2.5): multiples of 1, 2, 5 or 10 × 10^k."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))


def plot_clipfrac(report: Report, path: Path) -> Path:
    """The expected clipping fraction per step (Trajectory metric ``clipfrac``: the share of
    tokens whose gradient the clip switched off), mean over seeds, log scale, one panel per
    setting — the paper's clip-fraction rows. Step 0 (no update yet) and zeros are not drawn
    (log scale); values below ``CLIPFRAC_FLOOR`` sit on the bottom edge (an exact expectation
    can fall to 1e-30 once the policy is nearly deterministic, which would flatten the rest);
    a curve that never clips is named in the legend as such. Saved atomically."""
    exp = report.experiment
    n_cols = len(exp.settings)
    fig, axes = plt.subplots(1, n_cols, figsize=(3.6 * n_cols + LEGEND_WIDTH, 3.6),
                             sharey=True, squeeze=False)
    handles = []
    for a, (label, trajectory) in enumerate(report.trajectories.items()):
        colour = plt.get_cmap("tab10")(a % 10)
        frac = trajectory.metrics["clipfrac"].reshape(-1, exp.seeds, n_cols).mean(1)
        style = line_style(label)
        never = not bool((frac[1:] > 0).any())
        for j in range(n_cols):
            steps = torch.arange(1, frac.shape[0])
            values = frac[1:, j].clamp(min=CLIPFRAC_FLOOR)
            shown = frac[1:, j] > 0
            axes[0][j].plot(steps[shown], values[shown], style, color=colour, lw=1.4)
        handles.append(Line2D([], [], color=colour, ls=style, lw=1.4,
                              label=label + (" (never clips)" if never else "")))
    for j, setting in enumerate(exp.settings):
        if not any(bool((t.metrics["clipfrac"].reshape(-1, exp.seeds, n_cols)[1:, :, j] > 0)
                        .any()) for t in report.trajectories.values()):
            axes[0][j].text(0.5, 0.5, "no token clipped\n(every ratio inside the clip)",
                            transform=axes[0][j].transAxes, ha="center", va="center",
                            fontsize=9, color="0.3")
        axes[0][j].set_xlim(0, exp.steps)
        axes[0][j].set_yscale("log")
        axes[0][j].set_ylim(CLIPFRAC_FLOOR / 2, 1.5)
        axes[0][j].set_title(setting)
        axes[0][j].set_xlabel("training step")
        _integer_steps(axes[0][j])
    axes[0][0].set_ylabel("clipping fraction (expected)")
    fig.legend(handles=handles, loc="center right", fontsize=8, frameon=False)
    fig.suptitle(f"{exp.key}: clipping fraction, mean over {exp.seeds} seeds\n"
                 f"(values below {CLIPFRAC_FLOOR:g} drawn at {CLIPFRAC_FLOOR:g})", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1 - LEGEND_WIDTH / fig.get_figwidth(), 0.93))
    try:
        atomic_savefig(fig, path, dpi=110)
    finally:
        plt.close(fig)
    return path


def simplex_xy(pi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Barycentric → 2-D: arm 1 at (0, 0), arm 2 at (1, 0), arm 3 at (½, √3/2)."""
    return pi[..., 1] + 0.5 * pi[..., 2], pi[..., 2] * math.sqrt(3) / 2


def plot_pitfall(paths: dict[str, torch.Tensor], rewards: torch.Tensor, path: Path,
                 title: str) -> None:
    """Left: each method's π_t on the probability simplex of three arms; right: E_π r."""
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
    tri.plot(float(x0), float(y0), "k*", ms=10)
    tri.annotate("start π_0 = μ", (float(x0), float(y0)), xytext=(-8, 0),
                 textcoords="offset points", ha="right", va="center", fontsize=8)
    tri.set_aspect("equal")
    tri.axis("off")
    tri.set_ylim(-0.12, 1.0)
    curve.axhline(float(rewards.max()), color="grey", lw=0.8, ls=":",
                  label=f"best reward possible (max r = {float(rewards.max()):g})")
    curve.set_xlabel("exact update step")
    curve.set_ylabel("expected reward E_π r")
    _integer_steps(curve)
    curve.legend(fontsize=8, frameon=False, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)
