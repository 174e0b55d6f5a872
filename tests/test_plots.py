"""simulator.plots: what the learning-curve figure must show (hand-made trajectories)."""

from __future__ import annotations

import math

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from simulator.dynamics import Problem, Schedule, Trajectory
from simulator.experiments import Curve, Experiment
from simulator.plots import (
    SAME,
    coincidence_note,
    coinciding_groups,
    curves_figure,
    hidden_under,
    plot_curves,
)
from simulator.reports import COLLAPSE_DROP, Report, collapsed_runs

SETTINGS = ("on-policy", "offline")
SEEDS = 2
# reward per arm, setting, seed over 4 steps (0..3): A and B identical on-policy, all three
# different offline, where A's second seed rises to 0.8 and falls to 0.3 (a collapse)
REWARD = {
    "A": {"on-policy": [[0.2, 0.4, 0.5, 0.5], [0.3, 0.5, 0.6, 0.6]],
          "offline": [[0.2, 0.3, 0.4, 0.4], [0.3, 0.8, 0.5, 0.3]]},
    "B": {"on-policy": [[0.2, 0.4, 0.5, 0.5], [0.3, 0.5, 0.6, 0.6]],
          "offline": [[0.2, 0.3, 0.5, 0.6], [0.3, 0.4, 0.5, 0.6]]},
    "C": {"on-policy": [[0.2, 0.3, 0.4, 0.5], [0.3, 0.4, 0.5, 0.6]],
          "offline": [[0.2, 0.2, 0.3, 0.3], [0.3, 0.3, 0.3, 0.4]]},
}


def _trajectory(label: str, kl_scale: float) -> Trajectory:
    # runs are seed-major, then setting: column r = seed·len(SETTINGS) + setting
    reward = torch.tensor([[REWARD[label][setting][seed][t] for seed in range(SEEDS)
                            for setting in SETTINGS] for t in range(4)], dtype=torch.float64)
    kl = torch.arange(4, dtype=torch.float64).unsqueeze(1) * torch.tensor(
        [1.0, kl_scale] * SEEDS, dtype=torch.float64)
    runs = [(seed, Schedule(), 0.1) for seed in range(SEEDS) for _ in SETTINGS]
    return Trajectory(label, runs, {"reward": reward, "kl_init": kl,
                                    "optimum": torch.ones_like(reward)},
                      torch.full((len(runs),), -1), torch.zeros(len(runs), 1))


def _report() -> Report:
    exp = Experiment("T", "test", "none", tuple(Curve.of(k, k, "reinforce") for k in REWARD),
                     problem=Problem(), settings=SETTINGS, seeds=SEEDS, steps=3)
    # offline KL grows 10× faster than on-policy: a shared y axis must show both
    trajectories = {"A": _trajectory("A", 10.0), "B": _trajectory("B", 9.0),
                    "C": _trajectory("C", 0.5)}
    trajectories["C"].metrics["kl_init"][:, [0, 2]] *= 0.5  # C differs on-policy in KL too
    return Report(exp, trajectories, [])


@pytest.fixture
def figure():
    fig = curves_figure(_report())
    yield fig
    plt.close(fig)


def _texts(ax) -> str:
    return " ".join(" ".join(text.get_text().split()) for text in ax.texts)  # unwrapped


def test_identical_curves_are_grouped_and_near_ones_are_not():
    base = torch.linspace(0, 1, 11)
    curves = {"a": base, "b": base.clone(), "c": base + 1e-6, "d": base + 1e-6, "e": -base}
    assert coinciding_groups(curves) == [["a", "b"], ["c", "d"]]
    assert coinciding_groups({"a": base, "e": -base}) == []


def test_equal_infinities_and_nans_count_as_identical():
    curve = torch.tensor([0.0, math.inf, math.nan])
    assert coinciding_groups({"a": curve, "b": curve.clone()}) == [["a", "b"]]
    assert coinciding_groups({"a": curve, "b": torch.tensor([0.0, math.inf, 1.0])}) == []


def test_the_note_names_the_losses_and_says_rho_is_one_only_on_policy():
    labels = ["REINFORCE", "GRPO", "REC", "OPMD"]
    assert coincidence_note(labels, labels, "on-policy") == (
        "black: all 4 losses (identical here, on-policy: ρ = 1)")
    assert coincidence_note(["REINFORCE", "REC", "OPMD"], labels, "offline",
                            near={"GRPO": 0.0123}) == (
        "black: 3 of 4 losses, all but GRPO (identical here); GRPO lies under it (mean reward "
        "within 0.012)")
    assert coincidence_note(["GRPO", "OPMD"], labels, "sync-interval-20",
                            colour="the GRPO line") == (
        "the GRPO line: GRPO, OPMD (identical here)")


def test_a_curve_within_near_of_one_drawn_later_is_named_under_the_visible_top():
    base = torch.linspace(0, 1, 5, dtype=torch.float64)
    means = {"a": base, "b": base + 0.006, "c": base + 0.012, "d": base + 0.5, "e": base + 0.03}
    # a lies under b, b under c: a and b are both hidden by c, with their own gaps to c
    hidden = hidden_under(means, ["a", "b", "c", "d", "e"], near=0.01)
    assert {top: {k: round(v, 6) for k, v in under.items()} for top, under in hidden.items()} \
        == {"c": {"a": 0.012, "b": 0.006}}
    assert hidden_under(means, ["c", "b", "a"], near=0.01) == {
        "a": pytest.approx({"c": 0.012, "b": 0.006})}
    assert hidden_under(means, ["a", "d"], near=0.01) == {}


def test_a_run_collapses_when_it_ends_more_than_the_drop_below_its_peak_or_diverged():
    reward = torch.tensor([[0.2, 0.2, 0.2], [0.8, 0.5, 0.3], [0.3, 0.45, 0.3]])
    diverged = torch.tensor([False, False, True])
    assert collapsed_runs(reward, diverged, COLLAPSE_DROP).tolist() == [True, False, True]


def test_identical_curves_are_one_black_line_with_a_note_only_where_they_coincide(figure):
    reward_on, reward_off = figure.axes[0], figure.axes[1]
    assert _texts(reward_on) == "black: identical losses (named below)"
    assert _texts(reward_off) == ""
    assert _texts(figure).startswith("on-policy — black: 2 of 3 losses, all but C (identical "
                                     "here, on-policy: ρ = 1) T: test")  # then the title
    means = [matplotlib.colors.to_hex(line.get_color()) for line in reward_on.lines
             if line.get_linewidth() > 1.5]
    tab10 = [matplotlib.colors.to_hex(plt.get_cmap("tab10")(i)) for i in range(3)]
    assert sorted(means) == sorted([matplotlib.colors.to_hex(SAME), tab10[2]])  # A=B, C
    offline = [matplotlib.colors.to_hex(line.get_color()) for line in reward_off.lines
               if line.get_linewidth() > 1.5]
    assert sorted(offline) == sorted(tab10)  # each in its own colour


def test_rows_share_their_y_axis_and_steps_are_integers(figure):
    axes = figure.axes
    kl_on, kl_off = axes[2], axes[3]
    assert kl_on.get_ylim() == kl_off.get_ylim()
    assert kl_on.get_ylim()[1] >= 30  # the offline KL (3 steps × 10) fits on-policy's axis
    figure.canvas.draw()
    ticks = [t for t in kl_on.get_xticks() if kl_on.get_xlim()[0] <= t <= kl_on.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)


def test_each_collapsed_run_is_marked_and_every_line_style_is_in_the_legend(figure):
    marks = [line for line in figure.axes[1].lines if line.get_marker() == "x"]
    assert len(marks) == 1 and list(marks[0].get_ydata()) == [0.3]  # A's second seed
    assert not [line for line in figure.axes[0].lines if line.get_marker() == "x"]
    legend = " ".join(t.get_text() for t in figure.legends[0].get_texts())
    for words in ("A", "B", "C", "black: identical losses", "one seed's run",
                  "collapsed", "dotted: best reward possible"):
        assert words in legend


def test_plot_curves_writes_a_png(tmp_path):
    path = tmp_path / "curves.png"
    plot_curves(_report(), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
