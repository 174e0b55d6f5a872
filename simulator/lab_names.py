"""The lab's command-line names (experiment keys, the default comparison's curves) and ``lookup``.

What it holds: the names ``grlab --help`` shows, which must load before torch does, and the one
way a user-typed name is resolved. (It was ``simulator.names``, which still re-exports it.)

Design decisions
----------------
* ``grlab --help`` must be fast, so the defaults it shows cannot come from
  ``simulator.experiments`` (which imports torch and scipy to build its catalogue). The names
  live here, in a module that imports nothing heavy: the experiment keys, the curves of
  ``grlab compare``'s default comparison and the problem families (``simulator.suite``). The
  setting names have their torch-free home in ``simulator.schedule.SETTINGS``.
  ``tests/test_cli.py`` and ``tests/test_suite.py`` check that these tuples agree with the
  catalogue (``EXPERIMENTS``, ``FIGURES``, ``DEFAULT_COMPARE_ARMS``, ``FAMILIES``), so a key
  added there and forgotten here fails a test instead of silently hiding from ``--help``.
* ``lookup`` is the one way a user-typed name is resolved (settings, experiments, arms, claim
  keys): an exact match, else a ``KeyError`` whose one line is
  ``simulator.validation.unknown_name_message`` — the valid names and, when one is close, a
  "did you mean" — the same answer the loss registry gives.
"""

from __future__ import annotations

from collections.abc import Iterable

from simulator.validation import unknown_name_message

__all__ = ["DEFAULT_COMPARE_ARMS", "DEFAULT_FAMILY", "EXPERIMENT_KEYS", "FAMILY_NAMES", "lookup"]

# every key of simulator.experiments.EXPERIMENTS and FIGURES, in `experiment_names()` order
EXPERIMENT_KEYS: tuple[str, ...] = (
    "E1", "E1-lr", "E1-tabular", "E1-tabular-graded", "E1-tree",
    "E2", "E3", "E3-base-lr", "E4", "E5", "E5-why", "E6", "E7", "E8",
)

# `grlab compare`'s losses: E1's curves plus OPMD, AsymRE and RED-Weight (keys of ARMS)
DEFAULT_COMPARE_ARMS: tuple[str, ...] = (
    "reinforce", "grpo", "rec-oneside-is", "rec-oneside-nois", "rec-oneside-nois-wide",
    "opmd-kimi", "asymre", "red-weight",
)


# every key of simulator.suite.FAMILIES, in its order; the first is `grlab compare`'s default
FAMILY_NAMES: tuple[str, ...] = (
    "representable", "capacity-limited", "tabular", "graded", "sampled", "tree-depth-1",
    "tree-depth-2", "tree-depth-2-binary", "tree-depth-3",
)
DEFAULT_FAMILY = "representable"


def lookup(kind: str, name: str, valid: Iterable[str]) -> str:
    """``name`` if it is one of ``valid``; else ``KeyError`` naming ``kind``, the valid names and
    the closest one ("unknown setting 'offlin'; did you mean 'offline'? Valid: ...")."""
    options = tuple(valid)
    if name in options:
        return name
    raise KeyError(unknown_name_message(kind, name, options))
