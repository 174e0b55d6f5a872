"""Shared fixtures for the engineering tests."""

from __future__ import annotations

import sys

import pytest

from grlab import cli


@pytest.fixture
def grlab_split(monkeypatch, capsys):
    """Run the real ``grlab`` entry point in-process: ``grlab_split("losses", "--name", "grpo")``
    returns (exit code, stdout, stderr), with a wide terminal so tables are not folded and
    GRLAB_DEBUG unset (errors are the user's one line, not a traceback)."""

    def run(*argv: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["grlab", *argv])
        monkeypatch.setenv("COLUMNS", "200")
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
def grlab(grlab_split):
    """As ``grlab_split``, with stdout and stderr together: (exit code, stdout + stderr)."""

    def run(*argv: str) -> tuple[int, str]:
        code, out, err = grlab_split(*argv)
        return code, out + err

    return run
