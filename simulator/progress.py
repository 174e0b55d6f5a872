"""Progress of every long job: a live bar on a terminal, plain lines everywhere else.

Design decisions
----------------
* ``progress_bar`` is the one rich bar (description · bar · done/total · elapsed · remaining),
  shared by the lab and the bridge's trainer.
* A live bar redraws one line with terminal control codes; written to a pipe, a log file or CI
  it shows nothing until the end. ``PartProgress`` is what the lab's commands use for a job made
  of named parts (an experiment's arms, the theory catalogue's claims): on a terminal it drives
  the bar; otherwise it prints one plain line when a part finishes and one every ``LINE_EVERY``
  (50) steps inside a long part — deterministic lines, so a log reads the same on every run.
* Progress goes to the console it is given; the lab passes its stderr console, so
  ``grlab compare > table.txt`` keeps the results clean and still shows the bar.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

__all__ = ["LINE_EVERY", "PartProgress", "progress_bar"]

LINE_EVERY = 50  # off a terminal, a line every this many steps inside a part


def progress_bar(console: Console | None = None, *, transient: bool = False) -> Progress:
    """description · bar · done/total · elapsed · remaining."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                    transient=transient)


class PartProgress:
    """Progress over ``parts`` of ``steps`` steps each: a live bar when ``console`` is a
    terminal, plain lines otherwise. Use as a context manager; call ``step(part, i)`` after
    step i (0-based) of a part and ``done(part, note)`` when a part is finished."""

    def __init__(self, console: Console, title: str, parts: Sequence[str], steps: int,
                 *, every: int | None = None) -> None:
        self.console, self.title, self.steps = console, title, steps
        self.every = every or LINE_EVERY
        self.index = {part: i for i, part in enumerate(parts)}
        self.completed: dict[str, int] = {}
        self.live = console.is_terminal and not console.is_dumb_terminal
        self.bar = progress_bar(console, transient=True) if self.live else None
        self.started = time.perf_counter()

    def __enter__(self) -> PartProgress:
        if self.bar is not None:
            self.bar.start()
            self.task = self.bar.add_task(self.title, total=len(self.index) * self.steps)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def step(self, part: str, step: int) -> None:
        self._advance(part, step + 1)
        if self.bar is None and (step + 1) % self.every == 0 and step + 1 < self.steps:
            self._line(part, f"step {step + 1}/{self.steps}")

    def done(self, part: str, note: str) -> None:
        self._advance(part, self.steps)
        if self.bar is None:
            self._line(part, note)

    def _advance(self, part: str, completed: int) -> None:
        self.completed[part] = completed
        if self.bar is not None:
            self.bar.update(self.task, completed=sum(self.completed.values()),
                            description=f"{self.title}: {part}")

    def _line(self, part: str, text: str) -> None:
        where = f"[{self.index.get(part, -1) + 1}/{len(self.index)}]"
        seconds = time.perf_counter() - self.started
        self.console.print(Text(f"{self.title} {where} {part}: {text} ({seconds:.0f} s)"),
                           soft_wrap=True)
