"""A curve and an experiment, as data: what the lab runs, apart from the catalogue of them.

``simulator.experiments`` holds the catalogue (``EXPERIMENTS``, ``ARMS``) and re-exports these
classes; a module that builds its own experiments (``simulator.red_why``) imports them from
here, so it does not import the catalogue that imports it (the simulator's import graph has no
cycle: tests/test_experiments.py).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from simulator.dynamics import SETTINGS, BanditProblem, Problem
from simulator.reports import fingerprint

if TYPE_CHECKING:
    from simulator.groups import LossSetup

__all__ = ["Arm", "Curve", "Experiment"]


@dataclasses.dataclass(frozen=True)
class Curve:
    """One curve: a registered loss with keyword values, a command-line key and a label.

    ``groups``: "expected" (the exact expected update) or "sampled" (sampled groups), as
    ``simulate``'s argument of that name; ``lr_scale`` multiplies the experiment's lr."""

    key: str
    label: str
    loss: str
    hparams: tuple[tuple[str, Any], ...] = ()
    groups: str = "expected"
    lr_scale: float = 1.0

    @classmethod
    def of(cls, key: str, label: str, loss: str | None = None, *, groups: str = "expected",
           lr_scale: float = 1.0, **hparams: Any) -> Curve:
        return cls(key, label, loss or key, tuple(sorted(hparams.items())), groups, lr_scale)

    def setup(self) -> LossSetup:
        """The loss as ``simulate`` runs it; an unknown keyword is an error here."""
        from simulator.groups import loss_setup

        return loss_setup(self.loss, dict(self.hparams))


Arm = Curve  # the old name


@dataclasses.dataclass(frozen=True)
class Experiment:
    key: str
    title: str
    paper: str
    arms: tuple[Curve, ...]
    problem: Problem = dataclasses.field(default_factory=BanditProblem)
    settings: tuple[str, ...] = tuple(SETTINGS)
    seeds: int = 5
    steps: int = 150
    lr: float = 0.1
    optimizer: str = "adam"
    group_size: int = 4
    groups_per_prompt: int = 16  # sampled curves only
    # extra figures `grlab experiment` draws beside curves.png: "clipfrac" (clipfrac.png)
    figures: tuple[str, ...] = ()

    def fingerprint(self, curve: Curve) -> str:
        """``reports.fingerprint``: the cache key of one curve of this experiment."""
        return fingerprint(self, curve)
