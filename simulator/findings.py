"""The lab's findings as data: a statement and the predicate that decides it on a ``Report``.

A ``Finding`` is (key, statement, rule, check): ``check(report)`` returns a ``Verdict`` — holds
(True, False, or None when the report lacks the curves or settings it needs) and the evidence
in numbers. ``FINDINGS`` lists them; ``summary_markdown`` writes one section per finding with
a row per family (``grlab compare --suite`` writes it as OUT/summary.md).

Design decisions
----------------
* Rewards are compared **paired by seed**: every curve and setting of an experiment trains on
  the same instances, so a difference is judged by the 95% Student-t interval of the per-seed
  differences (``reports.half_width``), not by two overlapping intervals.
* Each rule says exactly what counts as holding (``Finding.rule``, also printed in the
  summary). One threshold is shared by all: a paired difference whose mean is within
  ``NEGLIGIBLE`` = 0.005 of 0 counts as none — half the last digit the tables print, so two
  runs that both end at 1.00 (a zero-width interval around a difference of 1e-7) do not
  count as one above the other.
* The collapse and tracking findings read every curve by its **loss** (``Curve.loss``: every
  REINFORCE curve, every clipped curve, whatever its key, clip or learning-rate multiple — so
  E3's "GRPO lr×10" counts); the paired comparisons (IS vs NoIS, wide vs narrow clip) find
  their two curves by key in ``experiments.ARMS`` (a retargeted experiment keeps its keys).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

from simulator.reports import half_width

if TYPE_CHECKING:
    from simulator.reports import Report

__all__ = ["CLIPPED", "FINDINGS", "NEGLIGIBLE", "Finding", "Verdict", "summary_markdown"]

# the clipped losses of the lab's curves (a curve of one of them with clip="none" is not clipped)
CLIPPED = ("grpo", "bnpo", "rec-oneside-is", "rec-oneside-nois", "rec-twoside-is",
           "rec-twoside-nois", "rec-ring-is", "rec-ring-nois")
ON_POLICY = "on-policy"
NEGLIGIBLE = 0.005  # a reward difference the tables (two decimals) cannot show


def _no_difference(mean: float, half: float) -> bool:
    """The paired difference is negligible, or its 95% interval contains 0."""
    return abs(mean) <= NEGLIGIBLE or (half == half and abs(mean) <= half)


@dataclasses.dataclass(frozen=True)
class Verdict:
    holds: bool | None  # None: the report cannot decide it (a curve or setting is missing)
    evidence: str


@dataclasses.dataclass(frozen=True)
class Finding:
    key: str
    statement: str
    rule: str
    check: Callable[[Report], Verdict]


def _label(report: Report, key: str) -> str | None:
    """The label of the curve ``key``, or None when the experiment does not run it."""
    return next((c.label for c in report.experiment.arms if c.key == key), None)


def _finals(report: Report, key: str) -> torch.Tensor | None:
    """[seeds, settings] final rewards of the curve ``key``, or None when it is not run."""
    exp, label = report.experiment, _label(report, key)
    if label is None:
        return None
    reward = report.trajectories[label].metrics["reward"][-1]
    return reward.reshape(exp.seeds, len(exp.settings))


def _collapse_counts(report: Report, key: str) -> dict[str, int] | None:
    label = _label(report, key)
    if label is None:
        return None
    collapsed = report.collapsed(label)
    return {s: int(collapsed[:, j].sum()) for j, s in enumerate(report.experiment.settings)}


def _curves_of(report: Report, losses: Sequence[str]) -> list[str]:
    """The keys of the curves whose loss is one of ``losses`` (and not unclipped by
    ``clip="none"``)."""
    return [c.key for c in report.experiment.arms
            if c.loss in losses and dict(c.hparams).get("clip") != "none"]


def _stale(report: Report) -> list[str]:
    return [s for s in report.experiment.settings if s != ON_POLICY]


def _diff(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Mean and 95% half-width of the paired per-seed difference a − b."""
    d = a - b
    return float(d.mean()), half_width(d)


def _fmt(mean: float, half: float) -> str:
    return f"{mean:+.3f} ± {half:.3f}" if half == half else f"{mean:+.3f} ± n/a"


def _missing(what: str) -> Verdict:
    return Verdict(None, f"n/a: needs {what}")


def stale_reinforce_collapses(report: Report) -> Verdict:
    keys, stale = _curves_of(report, ("reinforce",)), _stale(report)
    if not keys or not stale:
        return _missing("REINFORCE and a stale setting")
    n, parts, holds = report.experiment.seeds, [], False
    for key in keys:
        counts = _collapse_counts(report, key)
        holds |= any(counts[s] > 0 for s in stale)
        parts.append((f"{key}: " if len(keys) > 1 else "")
                     + ", ".join(f"{s} {counts[s]}/{n}" for s in stale))
    return Verdict(holds, "collapsed runs: " + "; ".join(parts))


def clipped_never_collapse(report: Report) -> Verdict:
    keys = _curves_of(report, CLIPPED)
    if not keys:
        return _missing("a clipped curve")
    n, worst = report.experiment.seeds, []
    for key in keys:
        for setting, count in _collapse_counts(report, key).items():
            if count:
                worst.append(f"{key} {setting} {count}/{n}")
    if worst:
        return Verdict(False, "collapsed: " + ", ".join(worst))
    return Verdict(True, f"0/{n} collapsed in every setting, for {len(keys)} clipped curves")


def is_equals_nois(report: Report) -> Verdict:
    is_, nois, stale = (_finals(report, "rec-oneside-is"), _finals(report, "rec-oneside-nois"),
                        _stale(report))
    if is_ is None or nois is None or not stale:
        return _missing("REC-OneSide-IS, REC-OneSide-NoIS and a stale setting")
    settings, parts, holds = list(report.experiment.settings), [], True
    for s in stale:
        mean, half = _diff(is_[:, settings.index(s)], nois[:, settings.index(s)])
        holds &= _no_difference(mean, half)
        parts.append(f"{s} {_fmt(mean, half)}")
    return Verdict(holds, "IS − NoIS: " + ", ".join(parts))


def wide_beats_narrow_offline(report: Report) -> Verdict:
    wide, narrow = (_finals(report, "rec-oneside-nois-wide"),
                    _finals(report, "rec-oneside-nois"))
    if wide is None or narrow is None or "offline" not in report.experiment.settings:
        return _missing("REC-OneSide-NoIS at clip 0.2 and (0.6, 2.0), offline")
    j = list(report.experiment.settings).index("offline")
    mean, half = _diff(wide[:, j], narrow[:, j])
    clear = "the interval excludes 0" if half == half and mean - half > 0 else (
        "within noise" if mean >= 0 else "below")
    return Verdict(mean >= 0, f"(0.6, 2.0) − 0.2 offline: {_fmt(mean, half)} ({clear})")


def clipped_track_on_policy(report: Report) -> Verdict:
    keys = _curves_of(report, CLIPPED)
    if not keys or ON_POLICY not in report.experiment.settings or not _stale(report):
        return _missing("a clipped curve, on-policy and a stale setting")
    settings, gaps = list(report.experiment.settings), []
    for key in keys:
        finals = _finals(report, key)
        on = finals[:, settings.index(ON_POLICY)]
        on_half = half_width(on)
        for s in _stale(report):
            mean, half = _diff(finals[:, settings.index(s)], on)
            within = _no_difference(mean, half) or (on_half == on_half and abs(mean) <= on_half)
            gaps.append((within, -abs(mean), f"{key} {s} {_fmt(mean, half)}"))
    outside = sorted(gap for gap in gaps if not gap[0])
    if outside:
        return Verdict(False, "stale − on-policy outside: " + ", ".join(
            text for _, _, text in outside[:3]) + (" …" if len(outside) > 3 else ""))
    return Verdict(True, f"largest gap, stale − on-policy: {min(gaps)[2]}")


def stale_below_on_policy(report: Report) -> Verdict:
    if ON_POLICY not in report.experiment.settings or not _stale(report):
        return _missing("on-policy and a stale setting")
    settings, above, highest = list(report.experiment.settings), [], None
    for curve in report.experiment.arms:
        finals = _finals(report, curve.key)
        on = finals[:, settings.index(ON_POLICY)]
        for s in _stale(report):
            mean, half = _diff(finals[:, settings.index(s)], on)
            text = f"{curve.key} {s} {_fmt(mean, half)}"
            if mean > 0 and not _no_difference(mean, half):
                above.append((-mean, text))
            if highest is None or mean > highest[0]:
                highest = (mean, text)
    if above:
        return Verdict(False, "clearly above on-policy: " + ", ".join(
            text for _, text in sorted(above)[:3]) + (" …" if len(above) > 3 else ""))
    return Verdict(True, f"highest stale − on-policy: {highest[1]}")


FINDINGS: tuple[Finding, ...] = (
    Finding("stale-reinforce-collapses", "stale REINFORCE collapses",
            "holds when a REINFORCE curve collapses (ends more than 0.1 below its own peak, "
            "or diverges) in at least one run of at least one stale setting",
            stale_reinforce_collapses),
    Finding("clipped-never-collapse", "clipped losses never collapse",
            "holds when no run of a clipped curve (GRPO, REC-OneSide/TwoSide/Ring, IS or NoIS, "
            "any clip) collapses in any setting", clipped_never_collapse),
    Finding("is-equals-nois", "IS ≈ NoIS",
            "holds when, in every stale setting, the per-seed difference REC-OneSide-IS − "
            "REC-OneSide-NoIS of final rewards has a 95% interval containing 0 or a mean "
            "within 0.005 of 0", is_equals_nois),
    Finding("wide-clip-offline", "wide clip (0.6, 2.0) ≥ clip 0.2 offline",
            "holds when REC-OneSide-NoIS (0.6, 2.0)'s mean final reward offline is at least "
            "clip 0.2's (the evidence says whether the paired interval excludes 0)",
            wide_beats_narrow_offline),
    Finding("clipped-track-on-policy", "clipped losses track on-policy when stale",
            "holds when every clipped curve's final reward in every stale setting is within "
            "the 95% interval of on-policy's (over seeds), or the paired difference's interval "
            "contains 0, or it is within 0.005 of 0; the evidence is the largest gap, or those "
            "outside", clipped_track_on_policy),
    Finding("stale-below-on-policy", "stale runs end below on-policy",
            "holds when no curve ends, in any stale setting, clearly above its on-policy run: "
            "the paired difference stale − on-policy is ≤ 0.005, or its interval contains 0; "
            "the evidence is the highest difference, or those clearly above",
            stale_below_on_policy),
)


def summary_markdown(reports: Sequence[tuple[str, Report]]) -> str:
    """Each finding, then a row per (family, report): verdict and evidence."""
    words = {True: "holds", False: "does not hold", None: "n/a"}
    lines = ["# Findings per family", "",
             "Each finding is checked on every family's runs (final rewards paired by seed; "
             "intervals are 95% Student-t over seeds). What counts as holding is stated under "
             "each finding.", ""]
    for finding in FINDINGS:
        lines += [f"## {finding.statement}", "", f"Rule: {finding.rule}.", "",
                  "| family | verdict | evidence |", "| --- | --- | --- |"]
        for name, report in reports:
            verdict = finding.check(report)
            lines.append(f"| {name} | {words[verdict.holds]} | {verdict.evidence} |")
        lines.append("")
    return "\n".join(lines)
