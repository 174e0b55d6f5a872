"""``grlab train-llm`` under misuse and accidents: every user error is one line on stderr and
exit 2 before the model loads; a run is never overwritten silently; a damaged checkpoint is one
clear line, or a resume from the previous one; ``--resume`` extends ``--steps`` exactly;
Ctrl-C says at once that it stops after the step, writes a checkpoint and prints one line to
resume; progress shows on a pipe. (A full disk, foreign checkpoints, a missing peer:
test_llm_recovery.py.)

Through the real entry point: ``grlab.cli.main`` in-process (the ``grlab`` fixture of
conftest.py: exit code and output), or a subprocess where a real signal is needed. The tiny
model on the tree task keeps runs to a fraction of a second per step.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("transformers")

import torch

import llm_bridge.models
from llm_bridge.cli import interrupted_line
from llm_bridge.models import char_tokenizer, tiny_model
from llm_bridge.tasks import TreeTask
from llm_bridge.trainer import TrainConfig, TrainingInterrupted, train

TINY = ("--model", "tiny", "--task", "tree", "--device", "cpu", "--eval-every", "100",
        "--eval-prompts", "2")


@pytest.fixture
def no_model(monkeypatch):
    """Loading the model fails the test: a user error must be reported before it."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the user error was reported")

    monkeypatch.setattr(llm_bridge.models, "load_model", refuse)


def _one_error_line(code: int, out: str) -> str:
    """The whole output (stdout and stderr) is one line ``error: ...`` and the exit code 2;
    the model never started loading."""
    assert code == 2, out
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), out
    return lines[0]


def _model_state(path):
    return torch.load(path, weights_only=True)["model"]


def _same_parameters(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------------------------
# --out, --resume, --overwrite: refused before the model loads
# --------------------------------------------------------------------------------------------


def test_out_that_is_a_file_is_one_line(grlab, no_model, tmp_path):
    (tmp_path / "file").write_text("x")
    line = _one_error_line(*grlab("train-llm", *TINY, "--out", str(tmp_path / "file")))
    assert "is a file" in line and str(tmp_path / "file") in line


def test_out_that_cannot_be_written_is_one_line(grlab, no_model):
    line = _one_error_line(*grlab("train-llm", *TINY, "--out", "/proc/grlab-out"))
    assert "cannot write" in line and "/proc/grlab-out" in line


def test_resume_without_a_checkpoint_is_one_line(grlab, no_model, tmp_path):
    line = _one_error_line(*grlab("train-llm", *TINY, "--out", str(tmp_path), "--resume"))
    assert "no checkpoint" in line and str(tmp_path) in line


def test_resume_and_overwrite_together_are_one_line(grlab, no_model, tmp_path):
    line = _one_error_line(*grlab("train-llm", *TINY, "--out", str(tmp_path), "--resume",
                                  "--overwrite"))
    assert "--resume" in line and "--overwrite" in line


def test_a_second_run_into_the_same_out_is_refused_unless_overwrite(grlab, tmp_path,
                                                                   monkeypatch):
    """A rerun without --resume would silently replace the first run: refused in one line
    that says what to do, the first run's files untouched; --overwrite replaces it."""
    code, err = grlab("train-llm", *TINY, "--steps", "3", "--out", str(tmp_path))
    assert code == 0, err
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the user error was reported")

    with monkeypatch.context() as patch:
        patch.setattr(llm_bridge.models, "load_model", refuse)
        line = _one_error_line(*grlab("train-llm", *TINY, "--steps", "2", "--out",
                                      str(tmp_path)))
    assert "already holds a run" in line and "--resume" in line and "--overwrite" in line
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before

    code, err = grlab("train-llm", *TINY, "--steps", "2", "--out", str(tmp_path),
                         "--overwrite")
    assert code == 0, err
    rows = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in rows] == [0, 1, 2]
    assert not (tmp_path / "checkpoint.prev.pt").exists()  # the old run's files are gone


def test_the_missing_llm_extra_prints_the_install_command_literally(grlab, monkeypatch):
    """``pip install 'grlab[llm]'`` whole (rich markup would eat "[llm]")."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "transformers" else real(name, *a))
    line = _one_error_line(*grlab("train-llm", "--model", "tiny", "--steps", "1"))
    assert "pip install 'grlab[llm]'" in line


# --------------------------------------------------------------------------------------------
# Checkpoints: damaged files, the previous checkpoint, extending a run
# --------------------------------------------------------------------------------------------


def _truncate(path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_truncated_checkpoint_without_a_previous_one_is_one_line(grlab, tmp_path):
    code, err = grlab("train-llm", *TINY, "--steps", "2", "--checkpoint-every", "5",
                         "--out", str(tmp_path))
    assert code == 0, err
    assert not (tmp_path / "checkpoint.prev.pt").exists()
    _truncate(tmp_path / "checkpoint.pt")
    line = _one_error_line(*grlab("train-llm", *TINY, "--steps", "2", "--out", str(tmp_path),
                                  "--resume"))
    assert "checkpoint.pt cannot be read back" in line


def test_a_truncated_checkpoint_falls_back_to_the_previous_one_and_says_so(grlab, tmp_path):
    """4 steps, a checkpoint every 2: checkpoint.pt (step 4) and checkpoint.prev.pt (step 2).
    With checkpoint.pt truncated, --resume says so in one line, continues from step 2, and ends
    with the parameters of an uninterrupted 4-step run; the good file is not rotated away."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    for folder in (straight, split):
        code, err = grlab("train-llm", *TINY, "--steps", "4", "--checkpoint-every", "2",
                             "--out", str(folder))
        assert code == 0, err
    assert torch.load(split / "checkpoint.prev.pt", weights_only=True)["step"] == 2
    _truncate(split / "checkpoint.pt")
    code, err = grlab("train-llm", *TINY, "--steps", "4", "--checkpoint-every", "2",
                         "--out", str(split), "--resume")
    assert code == 0, err
    warning = [line for line in err.splitlines() if line.startswith("warning")]
    assert len(warning) == 1 and "cannot be read back" in warning[0]
    assert "resuming from the previous checkpoint" in warning[0] and "(step 2)" in warning[0]
    assert _same_parameters(_model_state(split / "checkpoint.pt"),
                            _model_state(straight / "checkpoint.pt"))
    assert torch.load(split / "checkpoint.prev.pt", weights_only=True)["step"] == 2


def test_resume_extends_a_finished_run_to_the_uninterrupted_parameters(grlab, tmp_path):
    """A finished 4-step run resumed with --steps 7 equals a 7-step run. With sync_interval 3
    and sync_offset 1, b(4) = b(5) = b(6) = 3: the 4-step run had already sampled the batches
    of steps 5–7 (beyond its end) from θ_3 and checkpointed them; resampling them from θ_4
    would give other parameters."""
    stale = ("--sync-interval", "3", "--sync-offset", "1")
    code, err = grlab("train-llm", *TINY, *stale, "--steps", "7", "--out",
                         str(tmp_path / "straight"))
    assert code == 0, err
    code, err = grlab("train-llm", *TINY, *stale, "--steps", "4", "--out",
                         str(tmp_path / "split"))
    assert code == 0, err
    assert sorted(torch.load(tmp_path / "split" / "checkpoint.pt",
                             weights_only=True)["ranks"][0]["pending"]) == [4, 5, 6]
    code, err = grlab("train-llm", *TINY, *stale, "--steps", "7", "--out",
                         str(tmp_path / "split"), "--resume")
    assert code == 0, err
    assert _same_parameters(_model_state(tmp_path / "split" / "checkpoint.pt"),
                            _model_state(tmp_path / "straight" / "checkpoint.pt"))
    rows = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in rows] == list(range(8))
    # and fewer steps than the checkpoint holds is one line
    line = _one_error_line(*grlab("train-llm", *TINY, *stale, "--steps", "5", "--out",
                                  str(tmp_path / "split"), "--resume"))
    assert "--steps 5 is below the checkpoint's step 7" in line


def test_resume_with_other_settings_is_one_line_before_the_model_loads(grlab, tmp_path,
                                                                       monkeypatch):
    code, err = grlab("train-llm", *TINY, "--steps", "1", "--out", str(tmp_path))
    assert code == 0, err

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the user error was reported")

    monkeypatch.setattr(llm_bridge.models, "load_model", refuse)
    line = _one_error_line(*grlab("train-llm", *TINY, "--steps", "2", "--lr", "0.1", "--out",
                                  str(tmp_path), "--resume"))
    assert "other settings (lr: 2e-05 there, 0.1 now)" in line


# --------------------------------------------------------------------------------------------
# Ctrl-C and progress
# --------------------------------------------------------------------------------------------


def test_a_real_ctrl_c_checkpoints_and_prints_one_line_to_resume(tmp_path, grlab):
    """SIGINT to a running ``grlab train-llm`` (stdout a pipe): it finishes the step, writes
    checkpoint.pt there, prints one line "interrupted at step N; resume with: ... --resume" and
    exits 130; progress lines appeared on the pipe; the printed command resumes the run."""
    command = [sys.executable, "-m", "grlab.cli", "train-llm", *TINY, "--steps", "100000",
               "--checkpoint-every", "100000", "--out", str(tmp_path)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    metrics, deadline = tmp_path / "metrics.jsonl", time.monotonic() + 240
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 4):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 2 and lines[0] == "stopping after this step (Ctrl-C again to abort)", err
    lines = lines[1:]
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    step = state["step"]
    assert lines[0].startswith(f"interrupted at step {step}; resume with: grlab train-llm ")
    assert lines[0].endswith(" --resume") and step >= 3
    assert len(metrics.read_text().splitlines()) == step + 1
    assert "step 1/100000 " in out  # a plain progress line: stdout is not a terminal
    # the printed command, with fewer steps, continues the run
    argv = shlex.split(lines[0].split("resume with: ", 1)[1])[1:]
    argv[argv.index("--steps") + 1] = str(step + 1)
    code, err = grlab(*argv)
    assert code == 0, err
    assert len(metrics.read_text().splitlines()) == step + 2


def test_a_second_ctrl_c_keeps_the_last_checkpoint_and_says_where_it_continues(tmp_path):
    """A KeyboardInterrupt inside a step (a second Ctrl-C) leaves the state mid-step: nothing
    is written, checkpoint.pt stays at the last checkpoint, and the line says so."""
    tok = char_tokenizer()
    task = TreeTask.random(prompts=2, vocab=3, depth=3, eos=True, seed=4)
    cfg = TrainConfig(steps=10, group_size=3, max_new_tokens=3, eval_every=100,
                      eval_prompts=2, checkpoint_every=2, out=tmp_path, plot=False)

    def hit(row, batch):
        if row["step"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted) as stop:
        train(cfg, tiny_model(tok, init_std=0.3, seed=4), tok, task, on_step=hit)
    assert (stop.value.step, stop.value.checkpoint_step) == (2, 2)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 2
    line = interrupted_line(stop.value, {"model": "tiny", "steps": 10, "out": tmp_path})
    assert line == (f"interrupted at step 2; resume with: grlab train-llm --model tiny "
                    f"--steps 10 --out {tmp_path} --resume")


def test_progress_is_plain_lines_off_a_terminal(grlab, tmp_path):
    code, out = grlab("train-llm", *TINY, "--steps", "3", "--out", str(tmp_path))
    assert code == 0, out
    assert [line.split()[1] for line in out.splitlines() if line.startswith("step ")] == \
        ["1/3", "2/3", "3/3"]
