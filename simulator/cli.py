"""The ``grlab`` command.

Subcommands are plain functions whose keyword arguments (with their docstrings) become flags,
through tyro. ``losses`` works today; ``compare``, ``verify`` and ``train-llm`` are announced
here and filled in by the simulator's dynamics (issue 4), the theory catalogue (issue 3) and
the bridge (issue 5): until then they say what they will do and exit 0.
"""

from __future__ import annotations

import inspect
import sys

import tyro
from rich.console import Console
from rich.table import Table

from simulator.losses import LOSSES

console = Console()


def losses(name: str | None = None) -> None:
    """List the loss zoo: every registered loss and preset with its advantage kind, default
    aggregation and the keyword values a preset binds.

    Args:
        name: show one loss in full (all keyword defaults and its formula) instead of the table.
    """
    if name is not None:
        spec = LOSSES[name]
        console.print(f"[bold]{spec.name}[/bold] — {spec.summary}")
        console.print(f"base loss: {spec.base}   advantage: {spec.advantage}   "
                      f"aggregation: {spec.agg}   drop uniform groups: {spec.drop_uniform_groups}")
        console.print("keywords: " + ", ".join(f"{k}={v!r}" for k, v in spec.defaults().items()))
        console.print(inspect.cleandoc(spec.fn.__doc__ or ""), markup=False, highlight=False)
        return
    table = Table(title="grlab loss zoo — simulator.losses.LOSSES", show_lines=False)
    table.add_column("name", no_wrap=True)
    table.add_column("advantage", no_wrap=True)
    table.add_column("aggregation", no_wrap=True)
    table.add_column("what it is", overflow="fold", ratio=1)
    for spec in LOSSES.values():
        text = spec.summary
        if spec.hparams:
            binds = ", ".join(f"{k}={v}" for k, v in spec.hparams.items())
            text += f"\n[dim]= {spec.base}({binds})[/dim]"
        table.add_row(spec.name, spec.advantage, spec.agg, text)
    console.print(table)
    console.print("grlab losses --name NAME shows one loss's formula and every keyword.")


def compare() -> None:
    """The main job: the default off-policy comparison of losses on CPU (plot + table)."""
    console.print(
        "[bold]grlab compare[/bold] is not built yet (issue 4). It will train REINFORCE, GRPO, "
        "REC-OneSide-IS/NoIS, OPMD, AsymRE and RED on exact softmax-bandit and tree testbeds in "
        "four settings (on-policy, sync_interval=20, sync_offset=10, offline), several seeds at "
        "once, and write results/compare/ with a PNG of reward and KL curves and a table.\n"
        "Available now: [bold]grlab losses[/bold] lists the loss zoo it will compare."
    )


def verify() -> None:
    """Check every theory claim numerically and print a table (claim, error, verdict)."""
    console.print(
        "[bold]grlab verify[/bold] is not built yet (issue 3). It will run the theory catalogue "
        "on fresh random instances and exit non-zero if any claim fails. The loss-level "
        "identities are already checked by the test suite: pytest theory_tests."
    )


def train_llm() -> None:
    """Train a Hugging Face causal LM with any loss of the zoo (the llm_bridge)."""
    console.print(
        "[bold]grlab train-llm[/bold] is not built yet (issue 5). It will train a transformer "
        "with any registered loss under the same sync_interval / sync_offset knobs."
    )


def main() -> None:
    try:
        tyro.extras.subcommand_cli_from_dict(
            {"compare": compare, "verify": verify, "train-llm": train_llm, "losses": losses},
            prog="grlab",
            description="grlab: an exact laboratory for GRPO-family policy-gradient losses.",
        )
    except (KeyError, ValueError, TypeError) as error:  # bad input: a message, not a traceback
        message = error.args[0] if error.args else repr(error)
        console.print(f"[red]error:[/red] {message}", highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
