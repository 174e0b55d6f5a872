"""A fork server for the mutation runner: import torch, pytest and hypothesis once, then run
each mutant's tests in a forked child (``python -m tests.mutation.serve`` in a copy).

Why: a fresh interpreter per mutant spends most of its time importing torch (about 2.5 s of
CPU); a forked child starts with it imported. What makes this safe:

* nothing of the project (``simulator``, ``grlab``, ``llm_bridge``) is imported here, so every
  child imports the copy's files as they are on disk, mutant included (checked before each
  fork); the parent has run no torch operation, so no thread pool exists to be forked;
* each child writes its output to a file of its own and ends with ``os._exit``, so nothing
  of the parent's state is flushed twice; a child past its timeout is killed. The server runs
  in a session of its own, so the runner can end it and its child together.

Protocol: one JSON request per stdin line, ``{"args": [...pytest args], "timeout": s}``; one
JSON reply per stdout line, ``{"code": int | null, "output": str}`` (``null``: timed out).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time

import hypothesis  # noqa: F401  (imported once here; every child inherits it)
import pytest
import torch  # noqa: F401

PROJECT = ("simulator", "grlab", "llm_bridge")


def _child(args: list[str], log: int) -> None:
    """Run pytest with stdout and stderr in ``log``; never returns."""
    code = 99
    try:
        os.dup2(log, 1)
        os.dup2(log, 2)
        code = int(pytest.main(args))
    except BaseException as error:  # a crash of the child is reported, not raised here
        print(f"mutation serve: the child failed: {error!r}", file=sys.stderr)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def run_forked(args: list[str], timeout: float) -> dict:
    loaded = sorted(name for name in sys.modules if name.split(".")[0] in PROJECT)
    if loaded:
        raise RuntimeError(f"the fork server has project modules loaded: {loaded}")
    with tempfile.TemporaryFile(mode="w+", encoding="utf-8") as log:
        pid = os.fork()
        if pid == 0:
            _child(args, log.fileno())
        deadline, code = time.monotonic() + timeout, None
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                break
            time.sleep(0.02)
        log.seek(0)
        return {"code": code, "output": log.read()}


def main() -> None:
    for line in sys.stdin:
        request = json.loads(line)
        reply = run_forked(request["args"], float(request["timeout"]))
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
