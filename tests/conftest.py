"""Shared fixtures for the engineering tests."""

from __future__ import annotations

import sys

import pytest

from grlab import cli


@pytest.fixture
def grlab(monkeypatch, capsys):
    """Run the real ``grlab`` entry point in-process: ``grlab("losses", "--name", "grpo")``
    returns (exit code, stdout + stderr), with a wide terminal so tables are not folded."""

    def run(*argv: str) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", ["grlab", *argv])
        monkeypatch.setenv("COLUMNS", "200")
        code = 0
        try:
            cli.main()
        except SystemExit as exit_:
            code = exit_.code or 0
        captured = capsys.readouterr()
        return code, captured.out + captured.err

    return run
