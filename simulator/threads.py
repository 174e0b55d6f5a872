"""How many CPU threads torch uses: one policy for every command.

Design decisions
----------------
* The lab's steps (``grlab compare``, ``experiment``, ``verify``) are hundreds of tiny tensor
  ops each: a second intra-op thread cannot speed them up, and on a machine where anything else
  runs it makes them several times slower (on a loaded 2-core machine ``grlab compare`` took
  98–124 s with torch's default of two threads against 18–20 s with one). So the lab runs with
  one thread unless the user asks otherwise.
* What the user asks wins: ``--threads N`` first, then ``OMP_NUM_THREADS`` when it is set (the
  variable every numerical library reads), then the command's own default.
* Only the intra-op count is set (``torch.set_num_threads`` may be called at any time);
  torch's inter-op pool is left alone because it can be sized only before any parallel work.
"""

from __future__ import annotations

import os

__all__ = ["resolve_threads", "use_threads"]


def resolve_threads(threads: int | None, *, default: int, flag: str = "--threads"
                    ) -> tuple[int, str]:
    """The thread count to use and why: ``threads`` (the flag) if given, else
    ``OMP_NUM_THREADS`` if set, else ``default``. Raises ``ValueError`` naming ``flag`` (or the
    variable) for a count below 1 or a variable that is not an integer."""
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"{flag} must be an integer ≥ 1, got {threads!r}")
        return threads, flag
    raw = os.environ.get("OMP_NUM_THREADS", "").strip()
    if raw:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"OMP_NUM_THREADS must be an integer ≥ 1, got {raw!r}") from None
        if value < 1:
            raise ValueError(f"OMP_NUM_THREADS must be an integer ≥ 1, got {raw!r}")
        return value, "OMP_NUM_THREADS"
    return default, "default"


def use_threads(threads: int | None, *, default: int = 1, flag: str = "--threads") -> int:
    """Set torch's intra-op thread count by ``resolve_threads`` and return it."""
    count, _ = resolve_threads(threads, default=default, flag=flag)
    import torch

    torch.set_num_threads(count)
    return count
