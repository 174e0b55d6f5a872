"""The ``grlab`` command: one entry point that dispatches to the lab and to the bridge.

``compare``, ``experiment``, ``verify`` and ``losses`` live in ``simulator.cli``; ``train-llm``
in ``llm_bridge.cli``.

Design decisions
----------------
* Fast to start: before the arguments are parsed only tyro, rich and the two command modules
  load, and those import neither torch, scipy, matplotlib nor transformers (a test checks
  ``sys.modules``); each command imports what it needs when it runs, so ``grlab --help`` and a
  mistyped flag answer at once.
* A user error is one line on stderr, ``error: MESSAGE``, and exit status 2. Which errors are
  the user's: ``KeyError``/``ValueError``/``TypeError`` (a bad name or value, which every
  command checks before slow work), ``ImportError`` (a missing extra) and ``OSError`` (a folder
  that cannot be written, a missing file), the last shown as "reason: path", never as a bare
  errno. The message is printed as plain text — rich markup off, so "pip install
  'grlab[llm]'" arrives whole — and never wrapped. ``GRLAB_DEBUG=1`` re-raises instead, for a
  traceback.
* Ctrl-C: a subcommand may catch ``KeyboardInterrupt`` itself, print its own one-line hint
  (what was kept, how to resume) and raise ``SystemExit(130)``; any other interrupt ends here
  as one line and exit status 130 (128 + SIGINT, the shell's convention).
* A closed pipe (``grlab losses | head -1``) ends quietly.
* tyro's own parse errors (an unknown flag, a value of the wrong type, a missing subcommand)
  are boxes of several lines: what tyro prints before a subcommand starts is captured, and a
  parse error is reported as one line condensed from it (``parse_error``: the message and the
  flags tyro suggests, without their help texts).
* An error names the flag the user typed: a message that opens with a Python argument's name
  ("seeds must be >= 1") is reported with the flag ("--seeds must be >= 1"), so every command
  keeps one validation home (``simulator.validation``) that speaks Python to Python callers.
* ``--help`` is tyro's, made to read well at 80 columns in one place for every command
  (``_for_help``): a flag is a flag (``--fresh``, not ``--fresh, --no-fresh``), an optional
  value shows its type (``--seed INT``, not ``{None}|INT``), "(default: …)" appears only for a
  real value (not None, False or an empty list: the help text says what happens then), each
  docstring paragraph and argument is one line for tyro to wrap, and the lines tyro does not
  wrap (the description, a long usage line) are wrapped at spaces to the terminal's width.
"""

from __future__ import annotations

import functools
import inspect
import io
import os
import re
import shutil
import sys
import textwrap
import typing
from collections.abc import Callable, Iterable
from typing import Annotated, Any

import tyro
from rich.cells import cell_len
from rich.console import Console
from rich.text import Text

import grlab

USER_ERRORS = (KeyError, ValueError, TypeError, ImportError, OSError)
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# tyro's parse-error box: its edges, its rules, and the sections that only repeat help texts
BOX_EDGES = "│┃|╭╮╰╯├┤"
RULE = re.compile(r"^[─━\-\s]*$")
HELP_SECTIONS = ("Argument helptext", "For full helptext")
EMPTY_BOX_LINE = re.compile(r"│ *│")  # tyro's option boxes hold no blank line of their own


def _errors() -> Console:
    """stderr as it is now (built per use: a Console fixes its stream's kind when built)."""
    return Console(stderr=True, soft_wrap=True)


class _Capture:
    """stdout and stderr into a buffer until a subcommand starts (``release``): what tyro
    prints while parsing is kept, and a parse error can be reported as one line."""

    def __init__(self, enabled: bool, *, terminal: bool = False) -> None:
        self.enabled, self.buffer = enabled, _Buffer(terminal)
        self.streams = (sys.stdout, sys.stderr)
        self.command: str | None = None

    def __enter__(self) -> _Capture:
        if self.enabled:
            sys.stdout = sys.stderr = self.buffer
        return self

    def release(self) -> None:
        sys.stdout, sys.stderr = self.streams
        self.enabled = False

    def __exit__(self, *exc: object) -> None:
        self.release()


class _Buffer(io.StringIO):
    """A text buffer that answers ``isatty`` as told: while ``--help`` is captured to be
    wrapped, tyro still colours it when the real stdout is a terminal."""

    def __init__(self, terminal: bool) -> None:
        super().__init__()
        self.terminal = terminal

    def isatty(self) -> bool:
        return self.terminal

    @property
    def encoding(self) -> str:  # tyro draws its boxes with UTF-8 lines when stdout can
        return getattr(sys.__stdout__, "encoding", None) or "utf-8"


def _commands() -> dict[str, Callable[..., Any]]:
    from llm_bridge.cli import train_llm
    from llm_bridge.reproduce import reproduce
    from simulator.cli import atlas, compare, experiment, losses, verify

    return {"compare": compare, "experiment": experiment, "verify": verify,
            "train-llm": train_llm, "reproduce": reproduce, "losses": losses, "atlas": atlas}


def _subcommands(capture: _Capture) -> dict[str, Callable[..., Any]]:
    """The subcommands, each wrapped to end the capture when it starts (tyro reports a parse
    error before any of them runs) and to read well in ``--help`` (``_for_help``)."""

    def marked(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)  # tyro reads the name, signature, hints and docstring of ``run``
        def run(*args: Any, **kwargs: Any) -> Any:
            capture.release()
            capture.command = name
            return fn(*args, **kwargs)
        return _for_help(run, fn)

    return {name: marked(name, fn) for name, fn in _commands().items()}


def _for_help(run: Callable[..., Any], fn: Callable[..., Any]) -> Callable[..., Any]:
    """``run`` (a wrapper of ``fn``) with the docstring and hints tyro should read: every
    paragraph and ``Args:`` entry on one line, an off-by-default flag without its "--no-" twin,
    and a default shown only when it is a value."""
    run.__doc__ = _one_line_entries(fn.__doc__ or "")
    hints = typing.get_type_hints(fn, include_extras=True)
    signature = inspect.signature(fn)
    params = [param.replace(annotation=_annotation(hints[param.name], param.default))
              for param in signature.parameters.values()]
    run.__signature__ = signature.replace(parameters=params)
    run.__annotations__ = {**{p.name: p.annotation for p in params},
                           "return": hints.get("return")}
    del run.__wrapped__  # tyro would read ``fn``'s fields through it, not these
    return run


def _annotation(hint: Any, default: object) -> Any:
    extras: list[object] = []
    if default is False:
        extras.append(tyro.conf.FlagCreatePairsOff)  # --fresh, not --fresh, --no-fresh
    # tyro's "(default: …)" only for a value the user could type: not for None, False or an
    # empty list, where the help text says what happens (a repeatable flag keeps its hint)
    repeatable = tyro.conf.UseAppendAction in getattr(hint, "__metadata__", ())
    empty = isinstance(default, tuple) and not default
    if (default is None or default is False or empty) and not repeatable:
        extras.append(tyro.conf.arg(help_behavior_hint=""))
    return Annotated[(hint, *extras)] if extras else hint


def _one_line_entries(doc: str) -> str:
    """A Google-style docstring with each paragraph, and each ``Args:`` entry, on one line.
    tyro joins wrapped lines itself only when the next line starts with a letter; otherwise
    ("(default …", "'tiny'", an indented continuation) the break shows in ``--help``."""
    out: list[str] = []
    in_args, entry_indent = False, None
    for line in inspect.cleandoc(doc).splitlines():
        depth, text = len(line) - len(line.lstrip()), line.strip()
        if not text:
            in_args = False
            out.append("")
        elif text == "Args:":
            in_args, entry_indent = True, None
            out.append(text)
        elif in_args and (entry_indent is None or depth <= entry_indent):
            entry_indent = depth
            out.append(line)  # a new entry
        elif out and out[-1] and out[-1] != "Args:":
            out[-1] += " " + text  # a continuation of the entry or paragraph above
        else:
            out.append(line)
    return "\n".join(out)


def reflow_help(text: str, width: int) -> str:
    """tyro's help with every line wider than ``width`` wrapped at spaces (its boxes already
    fit; its description and a long usage line are printed unwrapped). A wrapped line loses
    its colours; its continuation lines keep its indent (four more after "usage:")."""
    lines = []
    for line in text.splitlines():
        plain = ANSI.sub("", line)
        if EMPTY_BOX_LINE.fullmatch(plain):  # an empty default hint wrapped onto a line
            continue
        if cell_len(plain) <= width:
            lines.append(line)
            continue
        indent = " " * (len(plain) - len(plain.lstrip()))
        more = indent + ("    " if plain.lstrip().startswith("usage:") else "")
        lines.extend(textwrap.wrap(plain, width, initial_indent="", subsequent_indent=more,
                                   break_long_words=False, break_on_hyphens=False))
    return "\n".join(lines) + "\n"


def parse_error(text: str, command: str | None = None) -> str:
    """tyro's report of a parse error (a titled box of several lines) as one line: the
    message, and the flags tyro suggests (those of ``command`` when it names some) without
    their help texts."""
    sections: list[list[str]] = [[]]
    lines = [raw.strip().strip(BOX_EDGES).strip() for raw in text.splitlines()]
    lines = [line for line in lines if not line.startswith("usage:")]
    titled = len([line for line in lines if not RULE.match(line)]) > 1
    for line in lines[1:] if titled and lines else lines:  # the box's title: "Value error"
        if RULE.match(line):
            sections.append([])
        else:
            sections[-1].append(" ".join(line.strip("─━ ").split()))
    message, suggested = [], []
    for lines in (section for section in sections if section):
        if lines[0].startswith(HELP_SECTIONS):
            continue
        if lines[0].startswith("Perhaps you meant"):
            suggested = _suggested_flags(lines[1:], command)
            continue
        message.extend(lines)
    body = " ".join(message).replace(" .", ".") or "the command line could not be parsed"
    if suggested:
        body = f"{body.rstrip('.')}; did you mean {' or '.join(suggested)}?"
    where = f"grlab {command} --help" if command else "grlab --help"
    return f"{body} ({where} lists the options)"


def _suggested_flags(lines: list[str], command: str | None) -> list[str]:
    """The flags of a "Perhaps you meant" section, each with the subcommand it belongs to
    unless that is ``command``; only ``command``'s when it has any."""
    found: list[tuple[str, str]] = []
    for line in lines:
        if line.startswith("-"):
            found.append((line.split()[0], ""))
        elif line.startswith("in grlab ") and found and not found[-1][1]:
            found[-1] = (found[-1][0], line.split()[2])
    own = [flag for flag, where in found if where == command]
    shown = own or [f"{flag} (grlab {where})" if where else flag for flag, where in found]
    return list(dict.fromkeys(shown))


def flag_names(message: str, parameters: Iterable[str]) -> str:
    """``message`` with a leading Python argument name ("group_size must be >= 2") replaced by
    its flag ("--group-size must be >= 2"); anything else unchanged."""
    match = re.match(r"(\w+) (must|names|needs|cannot|has|is) ", message)
    if match is None or match.group(1) not in set(parameters):
        return message
    return "--" + match.group(1).replace("_", "-") + message[len(match.group(1)):]


def main() -> None:
    argv = sys.argv[1:]
    wants_help = any(arg in ("-h", "--help") for arg in argv)
    typed = argv[0] if argv and not argv[0].startswith("-") else None
    capture = _Capture(enabled=True, terminal=wants_help and sys.stdout.isatty())
    try:
        grlab.check_packages()
        with capture:
            try:
                tyro.extras.subcommand_cli_from_dict(
                    _subcommands(capture), prog="grlab", args=argv,
                    description="grlab: an exact laboratory for GRPO-family policy-gradient "
                                "losses.",
                    config=(tyro.conf.DisallowNone,))  # --seed INT, not {None}|INT
            except SystemExit as exit_:
                if capture.enabled:  # tyro's own output: help, or an error; no command ran
                    capture.release()
                    _report_parse(exit_.code, capture.buffer.getvalue(), typed)
                raise
    except KeyboardInterrupt:
        if os.environ.get("GRLAB_DEBUG"):
            raise
        _errors().print(Text("interrupted"))
        sys.exit(130)
    except BrokenPipeError:  # the reader went away: nothing left to say, and no traceback
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(1)
    except USER_ERRORS as error:
        if os.environ.get("GRLAB_DEBUG"):
            raise
        message = flag_names(error_message(error), _parameters(capture.command))
        _errors().print(Text.assemble(("error:", "red"), " ", message))
        sys.exit(2)


def _report_parse(code: object, text: str, command: str | None) -> None:
    """What tyro printed before any command ran: help (wrapped to the terminal, exit 0), or a
    parse error (one line, exit 2)."""
    if not code:
        sys.stdout.write(reflow_help(text, shutil.get_terminal_size().columns))
        return
    _errors().print(Text.assemble(("error:", "red"), " ", parse_error(text, command)))
    sys.exit(2)


def _parameters(command: str | None) -> tuple[str, ...]:
    """The names of the flags of the subcommand that ran, as Python spells them (none before
    one ran; a positional argument has no flag)."""
    if command is None:
        return ()
    params = inspect.signature(_commands()[command]).parameters.values()
    return tuple(p.name for p in params if p.kind is not inspect.Parameter.POSITIONAL_ONLY)


def error_message(error: BaseException) -> str:
    """The one line a user sees for ``error``: its message, whitespace folded.

    ``KeyError`` shows its text without the quotes ``str`` adds; an ``OSError`` shows its reason
    and file ("Permission denied: out/runs"), not the errno that ``args[0]`` holds."""
    if isinstance(error, OSError) and error.strerror:
        files = [str(f) for f in (error.filename, error.filename2) if f is not None]
        text = f"{error.strerror}: {' -> '.join(files)}" if files else error.strerror
    elif isinstance(error, KeyError) and error.args:
        text = str(error.args[0])
    else:
        text = str(error)
    return " ".join(text.split()) or type(error).__name__


if __name__ == "__main__":
    main()
