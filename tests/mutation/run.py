"""Apply every mutant of ``tests/mutation/mutants.py`` to a copy of the tree and check that the
relevant tests kill it.

    python tests/mutation/run.py                     # every mutant, 2 workers
    python tests/mutation/run.py --only shift-sign exp-unclamped
    python tests/mutation/run.py --path simulator/exact.py --workers 1
    python tests/mutation/run.py --list

Design decisions
----------------
* The working tree is never touched: it is copied (without .git, virtual environments, caches
  and results) into one temporary folder per worker, and each mutant is written into a copy,
  tested and restored there. Other people may be editing the tree while this runs.
* The copy is what the tests import: ``PYTHONPATH`` puts it first, bytecode is neither read
  (``__pycache__`` is not copied) nor written, and the runner checks ``simulator.__file__`` in
  the copy before trusting any result.
* A mutant's ``old`` text must occur exactly once in its file; if any does not, nothing runs
  and the stale mutants are listed (exit 3): the list must follow the code, loudly.
* Each mutant runs ``pytest -x -q`` under the ``mutation`` hypothesis profile (the ``ci``
  profile's examples, no shrinking: see ``plugin.py``): first on its own ``tests`` (the tests
  expected to kill it), and if they all pass, on its module's whole selection
  (``mutants.selected_tests``). Killed means pytest reported a failing test; the first one
  is shown.
* Before the mutants, the union of their test selections runs once on the unmutated copy
  (``--no-baseline`` skips it when the suite has just passed, as in CI): a red suite would
  make every kill meaningless.
* Exit status: 0 when every mutant was killed; 1 when one survived, timed out or could not be
  run; 2 when the baseline failed; 3 when a mutant's text no longer matches its file.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import fnmatch
import json
import os
import queue
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Run as a script, ``tests.mutation`` must come from this tree, first: verl installs a top-level
# ``tests`` package of its own into site-packages, which would otherwise win.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT]

from tests.mutation.mutants import MUTANTS, Mutant, selected_tests  # noqa: E402

IGNORED = (".git", ".venv", ".ci-venv", "venv", "__pycache__", ".hypothesis", ".pytest_cache",
           ".ruff_cache", "results", "*.egg-info", "build", "dist", "*.pyc")
KILLER = re.compile(r"^(FAILED|ERROR) (\S+)")


@dataclasses.dataclass
class Result:
    mutant: Mutant
    status: str  # "killed", "SURVIVED", "TIMEOUT", "ERROR"
    detail: str  # the killing test, or what went wrong
    seconds: float
    output: str = ""

    @property
    def killed(self) -> bool:
        return self.status == "killed"


def stale_mutants(root: Path, mutants: tuple[Mutant, ...] | list[Mutant]) -> list[str]:
    """Why each mutant whose text does not apply cleanly to ``root`` is stale ([] when none)."""
    problems = []
    for mutant in mutants:
        path = root / mutant.path
        if not path.is_file():
            problems.append(f"{mutant.name}: {mutant.path} does not exist")
            continue
        text = path.read_text(encoding="utf-8")
        for old, new in mutant.edits:
            count = text.count(old)
            if count != 1:
                problems.append(f"{mutant.name}: {old!r} occurs {count} times in {mutant.path} "
                                "(must be exactly once)")
                break
            text = text.replace(old, new)
        else:
            try:
                compile(text, str(path), "exec")
            except SyntaxError as error:
                problems.append(f"{mutant.name}: the mutated {mutant.path} does not compile: "
                                f"{error}")
        problems.extend(f"{mutant.name}: {test} does not exist"
                        for test in selected_tests(mutant) if not _test_exists(root, test))
    return problems


def _test_exists(root: Path, test: str) -> bool:
    """A test file, or ``file::function`` whose function is defined in the file."""
    file, _, function = test.partition("::")
    if not (root / file).is_file():
        return False
    return not function or f"def {function}(" in (root / file).read_text(encoding="utf-8")


def mutated_text(root: Path, mutant: Mutant) -> str:
    text = (root / mutant.path).read_text(encoding="utf-8")
    for old, new in mutant.edits:
        text = text.replace(old, new)
    return text


def environment(copy: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(copy), *filter(None, [env.get("PYTHONPATH")])])
    env.update(PYTHONDONTWRITEBYTECODE="1", HYPOTHESIS_PROFILE="mutation", OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1")
    return env


def pytest_args(tests: tuple[str, ...]) -> list[str]:
    # --keep-duplicates: a node id (file::test) given before its file stays first; without it
    # pytest merges the two and runs the file in its own order
    return ["-x", "-q", "-p", "no:cacheprovider", "-p", "tests.mutation.plugin", "-rfE",
            "--keep-duplicates", "--no-header", "-o", "addopts=",
            "-W", "ignore::pytest.PytestAssertRewriteWarning", *tests]


def pytest_command(tests: tuple[str, ...]) -> list[str]:
    return [sys.executable, "-m", "pytest", *pytest_args(tests)]


class Copy:
    """One copy of the tree and how tests run in it: a fresh interpreter per run, or (POSIX,
    the default) a forked child of ``serve.py``, which has torch imported already."""

    def __init__(self, path: Path, fork: bool) -> None:
        self.path, self.server = path, None
        if fork:
            self.server = subprocess.Popen(
                [sys.executable, "-m", "tests.mutation.serve"], cwd=path,
                env=environment(path), text=True, stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, start_new_session=True)

    def pytest(self, tests: tuple[str, ...], timeout: float) -> tuple[int | None, str]:
        if self.server is None:
            return run_in(self.path, pytest_command(tests), timeout)
        request = {"args": pytest_args(tests), "timeout": timeout}
        self.server.stdin.write(json.dumps(request) + "\n")
        self.server.stdin.flush()
        line = self.server.stdout.readline()
        if not line:
            raise RuntimeError(f"the fork server of {self.path} died")
        reply = json.loads(line)
        return reply["code"], reply["output"]

    def close(self, wait: bool = True) -> None:
        """End the server and any child it is running (an interrupted run leaves nothing)."""
        if self.server is not None and self.server.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.server.pid, signal.SIGKILL)
            if wait:
                self.server.wait(timeout=30)


def run_in(copy: Path, command: list[str], timeout: float) -> tuple[int | None, str]:
    """(exit status or None on timeout, stdout + stderr) of ``command`` run in ``copy``."""
    process = subprocess.Popen(command, cwd=copy, env=environment(copy), text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
        return process.returncode, output
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        return None, output


def first_failure(output: str) -> str:
    for line in output.splitlines():
        match = KILLER.match(line)
        if match:
            return match.group(2) if match.group(1) == "FAILED" else f"ERROR {match.group(2)}"
    return ""


def make_copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(*IGNORED), symlinks=True)
    return target


def check_imports_copy(copy: Path) -> None:
    """Refuse to go on unless the tests in ``copy`` import the copy's ``simulator``."""
    code, output = run_in(copy, [sys.executable, "-c",
                                 "import simulator; print(simulator.__file__)"], 120)
    found = Path(output.strip().splitlines()[-1]).resolve() if output.strip() else None
    if code != 0 or found is None or copy.resolve() not in found.parents:
        raise SystemExit(f"mutation: the copy {copy} does not import its own simulator "
                         f"(got {output.strip()!r}); results would be meaningless")


def run_mutant(mutant: Mutant, copy: Copy, timeout: float) -> Result:
    path = copy.path / mutant.path
    original = path.read_text(encoding="utf-8")
    start = time.perf_counter()
    try:
        path.write_text(mutated_text(copy.path, mutant), encoding="utf-8")
        code = None if not mutant.tests else 0
        if mutant.tests:  # its expected killers alone first: collecting one file is cheap
            code, output = copy.pytest(mutant.tests, timeout)
        if code == 0:  # not killed there: the module's whole selection decides
            code, output = copy.pytest(selected_tests(mutant), timeout)
    finally:
        path.write_text(original, encoding="utf-8")
    seconds = time.perf_counter() - start
    if code is None:
        return Result(mutant, "TIMEOUT", f"no verdict within {timeout:.0f} s", seconds, output)
    if code == 0:
        return Result(mutant, "SURVIVED", "every selected test passed", seconds, output)
    killer = first_failure(output)
    if code in (1, 2) and killer:
        return Result(mutant, "killed", killer, seconds, output)
    return Result(mutant, "ERROR", f"pytest exit {code} without a failing test", seconds, output)


def select(args: argparse.Namespace) -> list[Mutant]:
    chosen = list(MUTANTS)
    if args.only:
        unknown = [p for p in args.only if not any(fnmatch.fnmatch(m.name, p) for m in MUTANTS)]
        if unknown:
            raise SystemExit(f"mutation: no mutant matches {unknown}; see --list")
        chosen = [m for m in chosen if any(fnmatch.fnmatch(m.name, p) for p in args.only)]
    if args.path:
        chosen = [m for m in chosen if m.path in args.path]
    if not chosen:
        raise SystemExit("mutation: no mutant selected")
    return chosen


def print_table(results: list[Result], root: Path) -> None:
    width = max(len(r.mutant.name) for r in results)
    print(f"\n{'mutant':<{width}}  {'file':<24}  {'seconds':>7}  result")
    for r in results:
        verdict = f"killed by {r.detail}" if r.killed else f"{r.status}: {r.detail}"
        print(f"{r.mutant.name:<{width}}  {r.mutant.path:<24}  {r.seconds:7.1f}  {verdict}")
    killed = sum(r.killed for r in results)
    print(f"\nscore: {killed}/{len(results)} mutants killed")
    for r in results:
        if not r.killed:
            tail = "\n".join(r.output.strip().splitlines()[-15:])
            print(f"\n--- {r.status} {r.mutant.name} ({r.mutant.why}); last output lines:\n{tail}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", metavar="NAME",
                        help="mutants to run (names or shell patterns, e.g. 'closed-form-*')")
    parser.add_argument("--path", nargs="+", metavar="FILE",
                        help="only the mutants of these source files (e.g. simulator/exact.py)")
    parser.add_argument("--workers", type=int, default=2, help="parallel copies (default 2)")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds one mutant's tests may take (default 600)")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the run of the unmutated tests (when the suite just passed)")
    parser.add_argument("--source", type=Path, default=ROOT,
                        help="the tree to copy (default: this checkout)")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--no-fork", action="store_true",
                        help="a fresh interpreter per mutant instead of the fork server")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    return args


def run_all(mutants: list[Mutant], copies: list[Copy], timeout: float) -> list[Result]:
    """Every mutant on the first free copy, ``len(copies)`` at a time; progress as they end."""
    free: queue.Queue[Copy] = queue.Queue()
    for copy in copies:
        free.put(copy)
    lock, done = threading.Lock(), [0]

    def task(mutant: Mutant) -> Result:
        if _STOPPED.is_set():
            return Result(mutant, "ERROR", "interrupted", 0.0)
        copy = free.get()
        try:
            result = run_mutant(mutant, copy, timeout)
        finally:
            free.put(copy)
        with lock:
            done[0] += 1
            print(f"[{done[0]:>3}/{len(mutants)}] {result.status:<8} {mutant.name} "
                  f"({result.detail}, {result.seconds:.1f} s)", flush=True)
        return result

    pool = concurrent.futures.ThreadPoolExecutor(len(copies))
    try:
        futures = [pool.submit(task, mutant) for mutant in mutants]
        return [future.result() for future in futures]
    finally:  # interrupted: drop what has not started, do not wait for what has
        pool.shutdown(wait=not _STOPPED.is_set(), cancel_futures=True)


_RUNNING: list[Copy] = []  # the copies of this run, ended by ``_stop``
_STOPPED = threading.Event()


def _stop(signum: int, _frame: object) -> None:
    """Ctrl-C or SIGTERM (a CI timeout): end every fork server and its child now (a worker
    thread waiting on one then returns), then unwind, which removes the copies."""
    _STOPPED.set()
    for copy in _RUNNING:
        copy.close(wait=False)  # a signal handler must not block on a lock
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    mutants = select(args)
    if args.list:
        for m in mutants:
            print(f"{m.name:<40} {m.path:<26} {m.why}")
        return 0
    source = args.source.resolve()
    stale = stale_mutants(source, mutants)
    if stale:
        print("mutation: STALE MUTANTS — the list no longer matches the source; update "
              "tests/mutation/mutants.py:\n  " + "\n  ".join(stale), file=sys.stderr)
        return 3
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="grlab-mutation-") as tmp:
        workers = min(args.workers, len(mutants))
        paths = [make_copy(source, Path(tmp) / f"copy-{i}") for i in range(workers)]
        check_imports_copy(paths[0])
        fork = hasattr(os, "fork") and not args.no_fork
        copies = [Copy(path, fork) for path in paths]
        _RUNNING[:] = copies
        try:
            if not args.no_baseline:
                union = tuple(dict.fromkeys(t.partition("::")[0] for m in mutants
                                            for t in selected_tests(m)))
                print(f"baseline: {len(union)} test files on the unmutated copy ...", flush=True)
                code, output = copies[0].pytest(union, args.timeout * 2)
                if code != 0:
                    print(output[-4000:], file=sys.stderr)
                    print("mutation: the unmutated tests fail; fix them first", file=sys.stderr)
                    return 2
            results = run_all(mutants, copies, args.timeout)
        finally:
            for copy in copies:
                copy.close()
    print_table(results, source)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"time: {time.perf_counter() - start:.0f} s wall, "
          f"{usage.ru_utime + usage.ru_stime:.0f} s CPU, {workers} workers")
    if args.json:
        from simulator.files import atomic_write_text  # only here: see serve.py

        rows = [{"mutant": r.mutant.name, "file": r.mutant.path, "status": r.status,
                 "detail": r.detail, "seconds": round(r.seconds, 2)} for r in results]
        atomic_write_text(args.json, json.dumps(rows, indent=2) + "\n")
    return 0 if all(r.killed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
