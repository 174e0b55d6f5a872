"""A training run's files and display: checking ``--out``, writing checkpoints, finding one
to resume, showing progress.

Design decisions
----------------
* ``--out`` is checked before the model loads (``check_out``): a path that is a file or cannot
  be written (``simulator.files.output_dir``), a folder that already holds a run when neither
  ``--resume`` nor ``--overwrite`` is given (never overwritten silently), ``--resume`` with no
  checkpoint to continue. ``--overwrite`` removes the run's own files only (``RUN_FILES``).
* Every checkpoint is written atomically (``atomic_torch_save``) and the one it replaces is kept
  as ``checkpoint.prev.pt``: the old file is renamed first, then the new one is written, so at
  every moment at least one complete checkpoint exists. ``find_checkpoint`` reads
  ``checkpoint.pt`` and falls back to ``checkpoint.prev.pt`` when the newer one is missing or
  cannot be read back (truncated, corrupt: ``CorruptFileError``), and says so in a notice.
  After such a fallback the unreadable file is not rotated over the good previous one.
* A checkpoint holds what every process needs to continue exactly: the shared state (model,
  optimiser, metric history, step) once, and per process (``ranks``) its generators and pending
  stale rollouts. It records the number of processes, since a run's data depend on it.
* What a resumed run must share with the run it continues is the config's ``fingerprint``
  (``steps`` is not part of it: a finished run can be extended).
* Progress: a rich bar on a terminal; on a pipe or a file (a log, CI), where a bar prints
  nothing useful, plain lines: the first step, every ``steps // 20`` steps, every evaluation,
  the last step, and at least one a minute.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from simulator.files import CorruptFileError, atomic_torch_save, load_torch, output_dir

__all__ = ["CHECKPOINT", "METRICS", "PLOT", "PREVIOUS", "RUN_FILES", "Progress", "Resumed",
           "check_out", "check_resumable", "clear_run", "find_checkpoint", "jsonable",
           "save_checkpoint"]

CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"
METRICS = "metrics.jsonl"
PLOT = "curves.png"
RUN_FILES = (METRICS, CHECKPOINT, PREVIOUS, PLOT)
LINE_EVERY_S = 60.0
STATE_KEYS = ("step", "model", "optimizer", "history", "ranks", "config", "world_size",
              "init_fingerprint")


@dataclasses.dataclass
class Resumed:
    """A checkpoint found in a run folder: its ``state``, its ``path``, and a one-line
    ``notice`` when it is the previous checkpoint because the newer one was unreadable."""

    state: dict[str, Any]
    path: Path
    notice: str | None = None


def check_out(out: str | os.PathLike[str], *, resume: bool, overwrite: bool) -> Path:
    """The run folder ``out``, created and writable, or a one-line ``ValueError`` /
    ``FileNotFoundError`` saying what to do (see the module docstring)."""
    if resume and overwrite:
        raise ValueError("--resume continues the run in --out and --overwrite replaces it: "
                         "pass one of them")
    folder = output_dir(out, what="--out")
    if resume:
        if not any((folder / name).is_file() for name in (CHECKPOINT, PREVIOUS)):
            raise FileNotFoundError(f"--resume: no checkpoint in {folder} (no {CHECKPOINT}); "
                                    f"drop --resume to start a new run there")
        return folder
    existing = [name for name in RUN_FILES if (folder / name).exists()]
    if existing and not overwrite:
        raise ValueError(f"--out {folder} already holds a run ({', '.join(existing)}): pass "
                         f"--resume to continue it, --overwrite to replace it, or another --out")
    return folder


def clear_run(folder: Path) -> None:
    """Remove the files of a previous run (``--overwrite``); nothing else in the folder."""
    for name in RUN_FILES:
        with contextlib.suppress(FileNotFoundError):
            (folder / name).unlink()


def save_checkpoint(folder: Path, state: dict[str, Any], *, keep_current: bool = True) -> Path:
    """Write ``folder/checkpoint.pt`` atomically; the checkpoint it replaces becomes
    ``checkpoint.prev.pt`` (unless ``keep_current`` is False: it was unreadable)."""
    current = folder / CHECKPOINT
    if keep_current and current.is_file():
        os.replace(current, folder / PREVIOUS)
    return atomic_torch_save(state, current)


def _check_keys(state: Any) -> None:
    missing = [key for key in STATE_KEYS if key not in state]
    if missing:
        raise KeyError(f"not a train-llm checkpoint: missing {', '.join(missing)}")


def find_checkpoint(folder: str | os.PathLike[str], *, warn: bool = False) -> Resumed:
    """The newest readable checkpoint in ``folder``: ``checkpoint.pt``, else
    ``checkpoint.prev.pt`` with a notice (also a ``warnings.warn`` with ``warn``).
    ``FileNotFoundError`` when there is none; ``CorruptFileError`` (a ``ValueError``) when
    neither can be read back."""
    folder = Path(folder)
    current, previous = folder / CHECKPOINT, folder / PREVIOUS
    try:
        return Resumed(load_torch(current, what="checkpoint", check=_check_keys), current)
    except (FileNotFoundError, CorruptFileError) as error:
        if not previous.is_file():
            if isinstance(error, FileNotFoundError):
                raise FileNotFoundError(f"--resume: no checkpoint in {folder} (no {CHECKPOINT})"
                                        ) from None
            raise
        try:
            state = load_torch(previous, what="previous checkpoint", check=_check_keys)
        except CorruptFileError as second:
            raise CorruptFileError(f"{error}; {second}") from None
        reason = "is missing" if isinstance(error, FileNotFoundError) else "cannot be read back"
        notice = (f"{current} {reason}; resuming from the previous checkpoint {previous} "
                  f"(step {state['step']})")
        if warn:
            warnings.warn(notice, stacklevel=2)
        return Resumed(state, previous, notice)


def check_resumable(state: dict[str, Any], fingerprint: dict[str, Any], *, world_size: int,
                    steps: int, path: Path) -> None:
    """A ``ValueError`` naming what differs when ``state`` cannot continue a run configured by
    ``fingerprint`` on ``world_size`` processes up to ``steps``."""
    wanted = jsonable(fingerprint)
    changed = sorted(k for k in set(state["config"]) | set(wanted)
                     if state["config"].get(k) != wanted.get(k))
    if changed:
        raise ValueError(f"--resume: the checkpoint at {path} was written with other settings "
                         f"({', '.join(changed)}); resume with the same ones")
    if state["world_size"] != world_size:
        raise ValueError(f"--resume: the checkpoint at {path} was written by "
                         f"{state['world_size']} process(es), this run has {world_size}; the "
                         f"data of a run depend on it: resume with the same number")
    if steps < state["step"]:
        raise ValueError(f"--steps {steps} is below the checkpoint's step {state['step']} "
                         f"({path}): pass --steps {state['step']} or more")


def jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}


class Progress:
    """The display of ``train(progress=True)`` on process 0 (see the module docstring); rows
    are the trainer's metric rows (step, reward, approx_kl, seconds, eval_reward)."""

    def __init__(self, label: str, steps: int, start: int, *, enabled: bool) -> None:
        self.enabled, self.label, self.steps = enabled, label, steps
        self.every, self.first, self.last_line = max(1, steps // 20), start + 1, 0.0
        self.bar: Any = None
        if enabled and sys.stdout.isatty():
            from simulator.progress import progress_bar

            self.bar = progress_bar()
            self.bar.start()
            self.task = self.bar.add_task(label, total=steps, completed=start)

    def update(self, row: dict[str, float]) -> None:
        if not self.enabled:
            return
        text = f"{self.label} reward {row['reward']:.2f} kl {row['approx_kl']:+.3f}"
        if "eval_reward" in row:
            text += f" eval {row['eval_reward']:.2f}"
        if self.bar is not None:
            self.bar.update(self.task, completed=row["step"], description=text)
        elif (row["step"] in (self.first, self.steps) or row["step"] % self.every == 0
              or "eval_reward" in row or time.monotonic() - self.last_line > LINE_EVERY_S):
            print(f"step {row['step']}/{self.steps} {text} ({row['seconds']:.1f} s)", flush=True)
            self.last_line = time.monotonic()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
