"""What the lab's commands draw on a terminal: progress of every long job (a live bar on a
terminal, plain lines everywhere else), and tables that fit the terminal's width.

Design decisions
----------------
* ``progress_bar`` is the one rich bar (description · bar · done/total · elapsed · remaining),
  shared by the lab and the bridge's trainer.
* A live bar redraws one line with terminal control codes; written to a pipe, a log file or CI
  it shows nothing until the end. ``PartProgress`` is what the lab's commands use for a job made
  of named parts (an experiment's curves, the theory catalogue's claims): on a terminal it drives
  the bar; otherwise it prints one plain line when a part finishes and one every ``LINE_EVERY``
  (50) steps inside a long part — deterministic lines, so a log reads the same on every run.
* Progress goes to the console it is given; the lab passes its stderr console, so
  ``grlab compare > table.txt`` keeps the results clean and still shows the bar. This module
  is the one home of progress: a single long job (the bridge's ``train-llm``) is a
  ``PartProgress`` of one part, whose ``step(part, i, text)`` carries the job's own words (its
  metrics) into the bar and the lines, and ``note(part, text)`` forces a line (an
  evaluation).
* A table is never squeezed until words break: rich's own shrinking ignores word lengths, and
  ``overflow="fold"`` cuts "instances" into "instanc"/"es". ``fit_table`` fixes every
  column's width at least at its longest word (header included) and shares the room left
  toward each column's longest line; when even the longest words cannot stand side by side,
  ``table_or_list`` prints the rows as a list instead (the heading cells on one line, every
  other cell as "header: value" below, wrapped at spaces), so nothing is dropped at 80 columns.
  ``Wrapped`` wraps such text without the space rich leaves at the end of each wrapped line.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.padding import Padding
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

__all__ = ["LINE_EVERY", "PartProgress", "Wrapped", "fit_table", "progress_bar",
           "table_as_list", "table_or_list"]

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

    def step(self, part: str, step: int, text: str = "") -> None:
        """Step ``step`` (0-based) of ``part`` is done; ``text`` (the job's metrics, say)
        follows the part's name in the bar and in the line printed every ``every`` steps."""
        self._advance(part, step + 1, text)
        if self.bar is None and (step + 1) % self.every == 0 and step + 1 < self.steps:
            self._line(part, " ".join(filter(None, (f"step {step + 1}/{self.steps}", text))))

    def done(self, part: str, note: str) -> None:
        self._advance(part, self.steps)
        if self.bar is None:
            self._line(part, note)

    def note(self, part: str, text: str) -> None:
        """A line now, off a terminal (an evaluation's result); on a terminal, the bar's text."""
        if self.bar is None:
            self._line(part, text)
        else:
            self._advance(part, self.completed.get(part, 0), text)

    def _advance(self, part: str, completed: int, text: str = "") -> None:
        self.completed[part] = completed
        if self.bar is not None:
            self.bar.update(self.task, completed=sum(self.completed.values()),
                            description=" ".join(filter(None, (f"{self.title}: {part}", text))))

    def _line(self, part: str, text: str) -> None:
        where = f"[{self.index.get(part, -1) + 1}/{len(self.index)}]"
        seconds = time.perf_counter() - self.started
        self.console.print(Text(f"{self.title} {where} {part}: {text} ({seconds:.0f} s)"),
                           soft_wrap=True)


def table_or_list(table: Table, width: int, *, heading: Sequence[int] = (0,),
                  per_line: bool = False) -> RenderableType:
    """``table`` if it fits in ``width`` columns without breaking a word (``fit_table``),
    else its rows as a list (``table_as_list``)."""
    fitted = fit_table(table, width)
    return fitted if fitted is not None else table_as_list(table, heading=heading,
                                                           per_line=per_line)


def fit_table(table: Table, width: int) -> Table | None:
    """Fix the width of every column of ``table`` so that it fits in ``width`` columns and
    wraps only at spaces; ``None`` when the longest words alone are too wide. Cells must be
    text (``str`` with rich markup, or ``Text``). Changes and returns ``table``."""
    _, right, _, left = Padding.unpack(table.padding)
    borders = 0 if table.box is None else len(table.columns) - 1 + 2 * table.show_edge
    room = width - borders - (left + right) * len(table.columns)
    lows, highs = [], []
    for column in table.columns:
        texts = [_plain(column.header), *(_plain(cell) for cell in column.cells)]
        high = max((cell_len(line) for text in texts for line in text.splitlines()), default=1)
        low = high if column.no_wrap else max(
            (cell_len(word) for text in texts for word in text.split()), default=1)
        low = min(max(low, column.min_width or 0), max(high, low))  # min_width: a wish
        lows.append(low)
        highs.append(high)
    if sum(lows) > room:
        return None
    widths = _share(lows, highs, room)
    for column, column_width in zip(table.columns, widths, strict=True):
        column.width, column.overflow = column_width, "ellipsis"  # never reached: words fit
    return table


def _share(lows: list[int], highs: list[int], room: int) -> list[int]:
    """Widths from ``lows`` up: each spare column goes to the column furthest from its
    ``highs`` (so the longest texts wrap least), until every column is at its high or the
    room is used."""
    widths = list(lows)
    for _ in range(max(room - sum(lows), 0)):
        short = [high - w for w, high in zip(widths, highs, strict=True)]
        if max(short) <= 0:
            break
        widths[short.index(max(short))] += 1
    return widths


def table_as_list(table: Table, *, heading: Sequence[int] = (0,), per_line: bool = False
                  ) -> Group:
    """The rows of ``table`` one after another: the cells of the ``heading`` columns on the
    first line, then every other cell as "header: value" indented by two, one per line when
    ``per_line``, else joined by " · " into a paragraph; rich wraps both at spaces."""
    columns = table.columns
    cells = [list(column.cells) for column in columns]
    parts: list[RenderableType] = []
    if table.title:
        parts.append(Wrapped(_styled(table.title, "bold")))
    for row in range(table.row_count):
        head = Text("  ").join(_text(cells[i][row]) for i in heading)
        fields = [Text.assemble((f"{_plain(columns[i].header)}: ", "dim"), _text(cells[i][row]))
                  for i in range(len(columns)) if i not in heading]
        body = Text("\n").join(fields) if per_line else Text(" · ").join(fields)
        head.stylize("bold")
        parts.extend([Wrapped(head), Wrapped(body, indent=2)])
    if table.caption:
        parts.append(Wrapped(_styled(table.caption, "dim")))
    return Group(*parts)


class Wrapped:
    """``text`` wrapped at spaces to the width left after ``indent`` spaces, with no space at
    the end of a line (rich leaves one where it wraps; ``Padding`` pads lines to the width)."""

    def __init__(self, text: Text, indent: int = 0) -> None:
        self.text, self.indent = text, indent

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        for line in self.text.wrap(console, max(options.max_width - self.indent, 1)):
            line.rstrip()
            yield Text(" " * self.indent) + line


def _styled(cell: object, style: str) -> Text:
    text = _text(cell).copy()
    text.stylize(style)
    return text


def _text(cell: object) -> Text:
    return cell if isinstance(cell, Text) else Text.from_markup(str(cell))


def _plain(cell: object) -> str:
    return _text(cell).plain
