"""The ``grlab`` command: one entry point that dispatches to the lab and to the bridge.

``compare``, ``experiment``, ``verify`` and ``losses`` live in ``simulator.cli``; ``train-llm``
in ``llm_bridge.cli`` (it imports transformers only when it runs, so ``grlab --help`` works on a
base install). User errors end as one line on stderr and exit status 2.
"""

from __future__ import annotations

import sys

import tyro
from rich.console import Console

import grlab

console = Console(stderr=True)


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
    # bad input, a missing [llm] extra or model file: a message, not a traceback
    except (KeyError, ValueError, TypeError, ImportError, FileNotFoundError) as error:
        message = error.args[0] if error.args else repr(error)
        console.print(f"[red]error:[/red] {message}", highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
