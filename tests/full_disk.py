"""A file of a full disk, for the tests of atomic writes and of the bridge's checkpoints."""

from __future__ import annotations

import errno
import os


class FullDisk:
    """A file of a full disk: writes succeed up to ``room`` bytes, then raise ENOSPC (as the
    kernel does); everything else is the real file's."""

    def __init__(self, handle, room: int) -> None:
        self.handle, self.room = handle, room

    def write(self, data) -> int:
        size = memoryview(data).nbytes
        if size > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= size
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self.handle.__exit__(*exc)
