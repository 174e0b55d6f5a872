"""A training run's files and display: checking ``--out``, writing checkpoints, finding one
to resume, showing progress.

Design decisions
----------------
* ``--out`` is checked before the model loads (``check_out``): a path that is a file or cannot
  be written (``simulator.files.output_dir``), a folder that already holds a run when neither
  ``--resume`` nor ``--overwrite`` is given (never overwritten silently), ``--resume`` with no
  checkpoint to continue. ``--overwrite`` removes the run's own files only (``RUN_FILES``).
* Every checkpoint is written atomically (``simulator.files.atomic_write``: a temporary file,
  fsync'ed, then renamed over ``checkpoint.pt``) and, by default, the one it replaces is kept as
  ``checkpoint.prev.pt``: the old file is renamed first, then the new one is written, so at
  every moment at least one complete checkpoint exists. ``find_checkpoint`` reads
  ``checkpoint.pt`` and falls back to ``checkpoint.prev.pt`` when the newer one is missing or
  cannot be read back (truncated, corrupt: ``CorruptFileError``), and says so in a notice.
  After such a fallback the unreadable file is not rotated over the good previous one.
* The previous checkpoint is a full copy, optimiser state included (``keep_previous``), and
  that is deliberate: it exists to continue the run *exactly* when ``checkpoint.pt`` cannot be
  read, and AdamW's two moments are part of that state (a copy without them would resume to
  other parameters — a silent change of the run). The price is disk: a checkpoint is about
  12 bytes per parameter (fp32 weights and two fp32 moments; 1.6 GB for SmolLM2-135M), two of
  them 3.2 GB. ``keep_previous=False`` (``--no-keep-previous``) keeps one at rest; while a
  checkpoint is written the old one and the new one coexist either way (the atomic write
  needs both), so the peak is two checkpoints in both modes.
* A write that fails in the run folder (a full disk, a quota, a lost mount) raises
  ``RunWriteError`` (an ``OSError``) naming the folder and the underlying reason — also when
  torch reports it only as "unexpected pos" (``save_checkpoint`` records the ``OSError`` its
  file raised). The files left behind are sound (the atomic writes), so the command turns it
  into one line that says how to resume.
* A checkpoint holds what every process needs to continue exactly: the shared state (model,
  optimiser, metric history, step) once, and per process (``ranks``) its generators and pending
  stale rollouts. It records the number of processes, since a run's data depend on it.
* What a resumed run must share with the run it continues is its fingerprint: the config's
  ``fingerprint`` (``steps`` is not part of it: a finished run can be extended) and the task's
  (``llm_bridge.tasks.task_fingerprint``: task, data file and its content hash, prompts,
  rewards). A refusal names each field that differs with both values; a checkpoint whose
  tensors do not fit the model loaded now (``check_tensors``) is refused the same way.
* Progress: a rich bar on a terminal; on a pipe or a file (a log, CI), where a bar prints
  nothing useful, plain lines: the first step, every ``steps // 20`` steps, every evaluation,
  the last step, and at least one a minute. A line shows the metrics that move
  (``progress_text``): the KL to the behaviour policy and the clip fraction are exactly 0
  on-policy, so they appear only when the run is off-policy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from simulator.files import (
    CorruptFileError,
    atomic_torch_save,
    load_torch,
    output_dir,
)

__all__ = ["CHECKPOINT", "METRICS", "PLOT", "PREVIOUS", "RUN_FILES", "Progress", "Resumed",
           "RunWriteError", "TrainingInterrupted", "check_out", "check_resumable",
           "check_tensors", "clear_run", "find_checkpoint", "jsonable", "load_model_state",
           "progress_text", "save_checkpoint", "writing"]

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


class RunWriteError(OSError):
    """A file of the run folder could not be written; ``folder`` and ``reason`` say where and
    why (the message is one line)."""

    def __init__(self, folder: Path, reason: str) -> None:
        super().__init__(f"cannot write to {folder}: {reason}")
        self.folder, self.reason = folder, reason


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped ``train`` after ``step`` steps; the run folder's checkpoint continues
    from ``checkpoint_step`` (None: no checkpoint was written)."""

    def __init__(self, step: int, checkpoint_step: int | None) -> None:
        super().__init__(f"interrupted at step {step}")
        self.step, self.checkpoint_step = step, checkpoint_step


def _reason(error: OSError) -> str:
    """The underlying reason of a failed write, in words ("no space left on device")."""
    if error.strerror:
        return error.strerror[0].lower() + error.strerror[1:]
    return " ".join(str(error).split()) or type(error).__name__


@contextlib.contextmanager
def writing(folder: Path) -> Iterator[None]:
    """Turn an ``OSError`` raised by a write into the run folder into ``RunWriteError``."""
    try:
        yield
    except RunWriteError:
        raise
    except OSError as error:
        raise RunWriteError(folder, _reason(error)) from error


def save_checkpoint(folder: Path, state: dict[str, Any], *, keep_current: bool = True,
                    keep_previous: bool = True) -> Path:
    """Write ``folder/checkpoint.pt`` atomically; the checkpoint it replaces becomes
    ``checkpoint.prev.pt`` (unless ``keep_current`` is False: it was unreadable; or
    ``keep_previous`` is False: then an older ``checkpoint.prev.pt`` is removed once the new
    checkpoint is complete). A failed write is ``RunWriteError``."""
    current, previous = folder / CHECKPOINT, folder / PREVIOUS
    with writing(folder):
        if keep_previous and keep_current and current.is_file():
            os.replace(current, previous)
        atomic_torch_save(state, current)  # a failed write is the file's OSError
        if not keep_previous:
            with contextlib.suppress(FileNotFoundError):
                previous.unlink()
    return current


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


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:16] + "…" + text[-8:]


def check_resumable(state: dict[str, Any], fingerprint: dict[str, Any], *, world_size: int,
                    steps: int, path: Path) -> None:
    """A ``ValueError`` naming what differs (with both values) when ``state`` cannot continue
    a run configured by ``fingerprint`` on ``world_size`` processes up to ``steps``."""
    wanted = jsonable(fingerprint)
    changed = sorted((k for k in set(state["config"]) | set(wanted)
                      if state["config"].get(k) != wanted.get(k)), key=lambda k: (k != "task", k))
    if changed:
        shown = "; ".join(f"{k}: {_shown(state['config'].get(k))} there, "
                          f"{_shown(wanted.get(k))} now" for k in changed)
        raise ValueError(f"--resume: the checkpoint at {path} was written with other settings "
                         f"({shown}); resume with the same ones")
    if state["world_size"] != world_size:
        raise ValueError(f"--resume: the checkpoint at {path} was written by "
                         f"{state['world_size']} process(es), this run has {world_size}; the "
                         f"data of a run depend on it: resume with the same number")
    if steps < state["step"]:
        raise ValueError(f"--steps {steps} is below the checkpoint's step {state['step']} "
                         f"({path}): pass --steps {state['step']} or more")


def _shapes(tensors: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(getattr(v, "shape", ())) for k, v in tensors.items()}


def check_tensors(state: dict[str, Any], model: Any, optimizer: Any, path: Path) -> None:
    """The same one-line refusal as ``check_resumable`` when the checkpoint's model or
    optimiser tensors do not fit ``model`` (other names or shapes): a foreign checkpoint,
    refused before ``load_state_dict`` would fail in a traceback (or load half of it)."""
    there, here = _shapes(state["model"]), _shapes(model.state_dict())
    differ = sorted(k for k in set(there) | set(here) if there.get(k) != here.get(k))
    params = [p for group in optimizer.param_groups for p in group["params"]]
    saved = state["optimizer"].get("state", {}) if isinstance(state["optimizer"], dict) else {}
    for index, moments in saved.items():
        size = tuple(params[index].shape) if isinstance(index, int) and index < len(params) \
            else None
        if any(getattr(m, "ndim", 0) and tuple(m.shape) != size for m in moments.values()):
            differ.append(f"optimizer state {index}")
    if differ:
        first = differ[0]
        shown = f"{first}: {there.get(first, 'absent')} there, {here.get(first, 'absent')} now" \
            if first in there or first in here else first
        more = f" and {len(differ) - 1} more" if len(differ) > 1 else ""
        raise ValueError(f"--resume: the checkpoint at {path} was written with other settings "
                         f"(its tensors do not fit this model: {shown}{more}); resume with the "
                         "same --model and settings")


def load_model_state(state: dict[str, Any], model: Any, optimizer: Any, path: Path, *,
                     init_fingerprint: float) -> None:
    """Load the checkpoint's model and optimiser state after ``check_tensors`` and a check that
    the run started from the model loaded now (``init_fingerprint``); every refusal is the
    one-line ``ValueError`` of a foreign checkpoint."""
    check_tensors(state, model, optimizer, path)
    if not math.isclose(state["init_fingerprint"], init_fingerprint, rel_tol=1e-12):
        raise ValueError(f"--resume: the checkpoint at {path} was written with other settings "
                         "(its run started from other initial parameters than the model "
                         "loaded now); resume with the same --model and --seed")
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as error:  # what check_tensors cannot see
        raise ValueError(f"--resume: the checkpoint at {path} was written with other settings "
                         f"({' '.join(str(error).split())[:200]}); resume with the same "
                         "--model and settings") from None


def jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}


def progress_text(row: dict[str, float], *, behavior: bool) -> str:
    """What a progress line shows of a metric row: the metrics that move. The batch reward
    and entropy always; the KL to the initial model (``kl_ref``) when it is computed; the clip
    fraction and approx. KL to the behaviour policy only when they can differ from 0
    (``behavior``: stale data, or a mismatched sampler whose μ is π_old — on-policy at
    θ = θ_old they are exactly 0); with a mismatched sampler whose π_old is recomputed, the
    sampler's KL to π_old (``kl_samp``); with corrections, the mean IS weight (``w``) and the
    share of tokens they removed (``rej``)."""
    text = f"reward {row['reward']:.2f} ent {row['entropy']:.3f}"
    if behavior:
        text += f" clip {row['clipfrac']:.3f} kl_behav {row['approx_kl']:+.4f}"
    if "kl_sampler" in row:
        text += f" kl_samp {row['kl_sampler']:+.4f}"
    if "is_weight_mean" in row:
        text += f" w {row['is_weight_mean']:.3f} rej {row['rejected_frac']:.3f}"
    if "kl_ref" in row:
        text += f" kl_ref {row['kl_ref']:.4f}"
    if "eval_reward" in row:
        text += f" eval {row['eval_reward']:.2f}"
    return text


class Progress:
    """The display of ``train(progress=True)`` on process 0 (see the module docstring); rows
    are the trainer's metric rows (``progress_text``). ``behavior``: show the clip fraction
    and KL to the behaviour policy (off-policy runs)."""

    def __init__(self, label: str, steps: int, start: int, *, enabled: bool,
                 behavior: bool = True) -> None:
        self.enabled, self.label, self.steps, self.behavior = enabled, label, steps, behavior
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
        text = f"{self.label} {progress_text(row, behavior=self.behavior)}"
        if self.bar is not None:
            self.bar.update(self.task, completed=row["step"], description=text)
        elif (row["step"] in (self.first, self.steps) or row["step"] % self.every == 0
              or "eval_reward" in row or time.monotonic() - self.last_line > LINE_EVERY_S):
            print(f"step {row['step']}/{self.steps} {text} ({row['seconds']:.1f} s)", flush=True)
            self.last_line = time.monotonic()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
