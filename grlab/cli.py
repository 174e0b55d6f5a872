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
  parse error is reported as one line condensed from it (``parse_error``). ``--help`` keeps
  tyro's output.
"""

from __future__ import annotations

import functools
import io
import os
import sys
from collections.abc import Callable
from typing import Any

import tyro
from rich.console import Console
from rich.text import Text

import grlab

console = Console(stderr=True, soft_wrap=True)

USER_ERRORS = (KeyError, ValueError, TypeError, ImportError, OSError)


class _Capture:
    """stdout and stderr into a buffer until a subcommand starts (``release``): what tyro
    prints while parsing is kept, and a parse error can be reported as one line."""

    def __init__(self, enabled: bool) -> None:
        self.enabled, self.buffer = enabled, io.StringIO()
        self.streams = (sys.stdout, sys.stderr)

    def __enter__(self) -> _Capture:
        if self.enabled:
            sys.stdout = sys.stderr = self.buffer
        return self

    def release(self) -> None:
        sys.stdout, sys.stderr = self.streams
        self.enabled = False

    def __exit__(self, *exc: object) -> None:
        self.release()


def _subcommands(capture: _Capture) -> dict[str, Callable[..., Any]]:
    """The subcommands, each wrapped to end the capture when it starts (tyro reports a parse
    error before any of them runs)."""
    from llm_bridge.cli import train_llm
    from simulator.cli import compare, experiment, losses, verify

    def marked(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)  # tyro reads the signature, hints and docstring through this
        def run(*args: Any, **kwargs: Any) -> Any:
            capture.release()
            return fn(*args, **kwargs)
        return run

    return {name: marked(fn) for name, fn in (
        ("compare", compare), ("experiment", experiment), ("verify", verify),
        ("train-llm", train_llm), ("losses", losses))}


def parse_error(text: str) -> str:
    """tyro's report of a parse error (a titled box of several lines) as one line."""
    lines = []
    for raw in text.splitlines():
        line = " ".join(raw.strip(" │╭╮╰╯─┃━-|").split())
        if line.startswith(("Argument helptext", "For full helptext")):
            break
        if line and not line.startswith("usage:"):
            lines.append(line)
    body = " ".join(lines[1:] if len(lines) > 1 else lines).replace(" .", ".")
    return f"{body or 'the command line could not be parsed'} (grlab --help lists the options)"


def main() -> None:
    argv = sys.argv[1:]
    wants_help = any(arg in ("-h", "--help") for arg in argv)
    try:
        grlab.check_packages()
        with _Capture(enabled=not wants_help) as capture:
            try:
                tyro.extras.subcommand_cli_from_dict(
                    _subcommands(capture), prog="grlab", args=argv,
                    description="grlab: an exact laboratory for GRPO-family policy-gradient "
                                "losses.")
            except SystemExit as exit_:
                if capture.enabled:  # tyro's own error: no subcommand started
                    capture.release()
                    if exit_.code:
                        console.print(Text.assemble(("error:", "red"), " ",
                                                    parse_error(capture.buffer.getvalue())))
                        sys.exit(2)
                raise
    except KeyboardInterrupt:
        if os.environ.get("GRLAB_DEBUG"):
            raise
        console.print(Text("interrupted"))
        sys.exit(130)
    except BrokenPipeError:  # the reader went away: nothing left to say, and no traceback
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(1)
    except USER_ERRORS as error:
        if os.environ.get("GRLAB_DEBUG"):
            raise
        console.print(Text.assemble(("error:", "red"), " ", error_message(error)))
        sys.exit(2)


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
