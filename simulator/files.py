"""Every file grlab writes or reads back: atomic writes, checked loads, checked output folders.

Design decisions
----------------
* One atomic-write primitive, ``atomic_write``: the content goes to a temporary file in the
  destination's folder (same file system), is flushed and fsync'ed, and then ``os.replace``d
  over the destination. A crash, a kill or a full disk at any moment leaves either the old file
  or the new one, never a half-written one. Tables, plots, caches and checkpoints all go
  through it (``atomic_write_text``, ``atomic_torch_save``, ``atomic_savefig`` are two-line
  wrappers).
* An atomic write gets the permissions a plain ``open(path, "w")`` would give it: an existing
  destination's mode is kept, a new file gets 0o666 & ~umask (``mkstemp`` alone creates 0600,
  which left tables and plots unreadable to the group under the usual umask 022). The umask is
  read from ``/proc/self/status`` (Linux ≥ 4.7) on every write: ``os.umask`` can only be read by
  setting it, which is process-global and races with other threads creating files. Where
  ``/proc`` is missing, the umask is read once, by setting and restoring it at import, before
  grlab starts any thread.
* A file that cannot be read back (truncated, corrupt, not a torch file, or holding objects
  that ``weights_only`` loading refuses) raises ``CorruptFileError`` — a ``ValueError`` whose one
  line names the file. Callers decide what that means: a cache entry is recomputed, a
  checkpoint is reported (and the previous good one is kept).
* ``output_dir`` checks an output folder before any slow work: a path that is a file, or a
  folder that cannot be created or written, is a ``ValueError`` naming the path.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "CorruptFileError",
    "atomic_savefig",
    "atomic_torch_save",
    "atomic_write",
    "atomic_write_text",
    "current_umask",
    "load_torch",
    "output_dir",
]


class CorruptFileError(ValueError):
    """A file grlab wrote earlier cannot be read back (truncated, corrupt or foreign)."""


def _umask_from_proc() -> int | None:
    """The process's umask from ``/proc/self/status`` ("Umask:\t0022"), or None off Linux."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _umask_by_setting() -> int:
    """Read the umask the only portable way: set it and put it back (not thread-safe)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Only where /proc cannot tell: read once, at import, before grlab starts any thread.
_IMPORT_UMASK: int | None = None if _umask_from_proc() is not None else _umask_by_setting()


def current_umask() -> int:
    """The process's umask, read without changing it (``/proc``; else its value at import)."""
    found = _umask_from_proc()
    if found is not None:
        return found
    return _IMPORT_UMASK if _IMPORT_UMASK is not None else _umask_by_setting()


def _plain_open_mode(path: Path) -> int:
    """The permission bits ``open(path, "w")`` would leave: an existing file keeps its own,
    a new one gets 0o666 & ~umask."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return 0o666 & ~current_umask()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path`` for writing; on success it replaces ``path``.

    If the body raises (or the process dies), ``path`` is left as it was and the temporary file
    is removed (or, after a hard kill, left as ``.NAME.*.tmp``, never under ``path``'s name).
    The result has the permissions a plain ``open(path, "w")`` would give it.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, _plain_open_mode(path))  # mkstemp creates 0600 whatever the umask
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    with atomic_write(path, "w") as handle:
        handle.write(text)
    return Path(path)


class _Recording:
    """A binary file that remembers the ``OSError`` its writes raised: torch's zip writer
    swallows it and reports "unexpected pos ..." instead."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle, self.error = handle, None

    def write(self, data: Any) -> int:
        try:
            return self.handle.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        self.handle.flush()


def atomic_torch_save(obj: object, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` through ``atomic_write``. A write that fails (a full disk) is the
    ``OSError`` of the file, with ``path`` as its filename, not torch's RuntimeError."""
    import torch

    with atomic_write(path, "wb") as handle:
        recording = _Recording(handle)
        try:
            torch.save(obj, recording)
        except RuntimeError:
            if recording.error is None:
                raise
            error = recording.error
            raise OSError(error.errno, error.strerror, str(path)) from error
    return Path(path)


def atomic_savefig(fig: Any, path: str | os.PathLike[str], **savefig_kwargs: Any) -> Path:
    """``fig.savefig`` through ``atomic_write`` (the format follows ``path``'s suffix)."""
    fmt = Path(path).suffix.lstrip(".") or "png"
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format=fmt, **savefig_kwargs)
    return Path(path)


def load_torch(path: str | os.PathLike[str], *, what: str = "file",
               map_location: str | None = "cpu",
               check: Callable[[Any], None] | None = None) -> Any:
    """``torch.load(path, weights_only=True)``, or ``CorruptFileError`` naming ``what`` and the
    path when the file cannot be read back. ``check(obj)`` may raise ``KeyError``/``TypeError``/
    ``ValueError`` for a file that loads but lacks what the caller needs; that is reported the
    same way. A missing file is ``FileNotFoundError``."""
    import pickle
    import zipfile

    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what} at {path}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
        if check is not None:
            check(obj)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile,
            KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
        raise CorruptFileError(f"the {what} at {path} cannot be read back "
                               f"({_first_sentence(error)})") from None
    return obj


def _first_sentence(error: BaseException) -> str:
    """The first sentence of an exception's message (torch's run on for paragraphs)."""
    text = " ".join(str(error).split()) or type(error).__name__
    end = text.find(". ")
    return text if end < 0 else text[: end + 1]


def output_dir(path: str | os.PathLike[str], *, what: str = "out") -> Path:
    """Create the output folder ``path`` (and its parents) and check that it can be written.

    Raises ``ValueError`` naming ``what`` when ``path`` is an existing file, cannot be created,
    or is not writable — before the caller starts any slow work.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{what} must be a folder, but {path} is a file")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise ValueError(f"{what}: cannot write to {path} ({error.strerror or error})") from None
    return path
