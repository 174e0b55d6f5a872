"""The ``grlab`` command as a user runs it (in-process, through its real entry point)."""

from __future__ import annotations

import sys

import pytest

from simulator import cli
from simulator.losses import LOSSES


def run(monkeypatch, capsys, *argv):
    monkeypatch.setattr(sys, "argv", ["grlab", *argv])
    monkeypatch.setenv("COLUMNS", "160")
    code = 0
    try:
        cli.main()
    except SystemExit as exit_:
        code = exit_.code or 0
    return code, capsys.readouterr().out


def test_help_lists_the_subcommands(monkeypatch, capsys):
    code, out = run(monkeypatch, capsys, "--help")
    assert code == 0
    for sub in ("compare", "verify", "train-llm", "losses"):
        assert sub in out


def test_losses_lists_every_registered_name(monkeypatch, capsys):
    code, out = run(monkeypatch, capsys, "losses")
    assert code == 0
    for name in LOSSES:
        assert name in out


def test_losses_name_shows_the_formula_and_keywords(monkeypatch, capsys):
    code, out = run(monkeypatch, capsys, "losses", "--name", "grpo")
    assert code == 0
    assert "eps_high=0.2" in out and "mean-std" in out and "max(−ρ·A" in out


def test_an_unknown_loss_is_a_clear_error_not_a_traceback(monkeypatch, capsys):
    code, out = run(monkeypatch, capsys, "losses", "--name", "grpoo")
    assert code == 2
    assert "did you mean 'grpo'" in out and "Traceback" not in out


@pytest.mark.parametrize("sub", ["compare", "train-llm"])
def test_announced_subcommands_say_what_they_will_do(monkeypatch, capsys, sub):
    code, out = run(monkeypatch, capsys, sub)
    assert code == 0
    assert "issue" in out
