"""Shared fixtures for the engineering tests."""

from __future__ import annotations

import sys

import pytest

from grlab import cli


@pytest.fixture
def grlab_columns(monkeypatch, capsys):
    """Run the real ``grlab`` entry point in-process on a terminal ``columns`` wide (COLUMNS,
    which rich and tyro read): ``grlab_columns(80, "losses")`` returns (exit code, stdout,
    stderr), with GRLAB_DEBUG unset (errors are the user's one line, not a traceback)."""

    def run(columns: int, *argv: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["grlab", *argv])
        monkeypatch.setenv("COLUMNS", str(columns))
        monkeypatch.delenv("GRLAB_DEBUG", raising=False)
        code = 0
        try:
            cli.main()
        except SystemExit as exit_:
            code = exit_.code or 0
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture
def grlab_split(grlab_columns):
    """``grlab_split("losses", "--name", "grpo")``: (exit code, stdout, stderr) on a wide
    terminal (200 columns), so tables are not folded."""
    return lambda *argv: grlab_columns(200, *argv)


@pytest.fixture
def grlab(grlab_split):
    """As ``grlab_split``, with stdout and stderr together: (exit code, stdout + stderr)."""

    def run(*argv: str) -> tuple[int, str]:
        code, out, err = grlab_split(*argv)
        return code, out + err

    return run
