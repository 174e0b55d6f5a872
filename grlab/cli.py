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
"""

from __future__ import annotations

import os
import sys

import tyro
from rich.console import Console
from rich.text import Text

import grlab

console = Console(stderr=True, soft_wrap=True)

USER_ERRORS = (KeyError, ValueError, TypeError, ImportError, OSError)


def main() -> None:
    try:
        grlab.check_packages()
        from llm_bridge.cli import train_llm
        from simulator.cli import compare, experiment, losses, verify

        tyro.extras.subcommand_cli_from_dict(
            {"compare": compare, "experiment": experiment, "verify": verify,
             "train-llm": train_llm, "losses": losses},
            prog="grlab",
            description="grlab: an exact laboratory for GRPO-family policy-gradient losses.",
        )
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
