"""``grlab train-llm`` when something outside the run goes wrong: a full disk, a checkpoint of
another run, a peer that never comes, Ctrl-C during a long step; and the run's files as it goes
(curves.png at every checkpoint, one or two checkpoints), its console line, its flags.

Through the real entry point (``grlab.cli.main`` in-process, the ``grlab``/``grlab_split``
fixtures), or a subprocess where a real signal or a real rendezvous is needed. The tiny model
on the tree task keeps runs to a fraction of a second per step.
"""

from __future__ import annotations

import errno
import inspect
import json
import os
import queue
import shlex
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("transformers")

import torch

from llm_bridge import cli, distributed, runs
from llm_bridge.models import char_tokenizer, tiny_model
from llm_bridge.tasks import TreeTask
from llm_bridge.trainer import TrainConfig, train
from tests.full_disk import FullDisk

TINY = ("--model", "tiny", "--task", "tree", "--device", "cpu", "--eval-every", "100",
        "--eval-prompts", "2")
GSM8K = os.path.join(os.path.dirname(__file__), "data", "gsm8k_tiny.jsonl")


def _error_line(code: int, err: str) -> str:
    """stderr is one line ``error: ...`` and the exit code 2."""
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def _model_state(path):
    return torch.load(path, weights_only=True)["model"]


def _same_parameters(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------------------------
# A full disk
# --------------------------------------------------------------------------------------------


def _fill_disk_after(monkeypatch, checkpoints: int) -> None:
    """The disk is full from the ``checkpoints + 1``-th checkpoint on: its temporary file gets
    10 kB (torch then reports "unexpected pos", not the OSError)."""
    real, seen = os.fdopen, []

    def fdopen(fd, mode="r", *args, **kwargs):
        handle = real(fd, mode, *args, **kwargs)
        name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        if name.startswith(".checkpoint.pt."):
            seen.append(name)
            if len(seen) > checkpoints:
                return FullDisk(handle, room=10_000)
        return handle

    monkeypatch.setattr(os, "fdopen", fdopen)


def test_a_full_disk_is_one_line_with_the_folder_the_reason_and_the_resume_command(
        grlab_split, grlab, tmp_path, monkeypatch):
    """The second checkpoint (step 4) meets a full disk: one line on stderr, exit 2, naming the
    folder, "no space left on device", the intact checkpoint's step and the exact command that
    resumes; that command (with room again) ends with the parameters of an uninterrupted run."""
    straight, full = tmp_path / "straight", tmp_path / "full"
    args = (*TINY, "--steps", "6", "--checkpoint-every", "2")
    code, err = grlab("train-llm", *args, "--out", str(straight))
    assert code == 0, err
    with monkeypatch.context() as patch:
        _fill_disk_after(patch, checkpoints=1)
        code, out, err = grlab_split("train-llm", *args, "--out", str(full))
    line = _error_line(code, err)
    assert line.startswith(f"error: cannot write to {full}: no space left on device; the "
                           f"checkpoint of step 2 is intact: free space and resume with: "
                           f"grlab train-llm "), line
    assert line.endswith(" --resume") and "step 4/6" in out
    assert not list(full.glob(".*.tmp"))  # the cut temporary file is gone
    command = shlex.split(line.split("resume with: ", 1)[1])
    code, err = grlab(*command[1:])
    assert code == 0, err
    assert _same_parameters(_model_state(full / "checkpoint.pt"),
                            _model_state(straight / "checkpoint.pt"))
    rows = (full / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in rows] == list(range(7))


def test_a_full_disk_before_the_first_checkpoint_says_to_start_again(grlab_split, tmp_path,
                                                                     monkeypatch):
    _fill_disk_after(monkeypatch, checkpoints=0)
    line = _error_line(*grlab_split("train-llm", *TINY, "--steps", "2", "--out",
                                    str(tmp_path))[::2])
    assert f"cannot write to {tmp_path}: no space left on device; no checkpoint" in line
    assert line.endswith(" --overwrite")


def test_a_metrics_line_on_a_full_disk_is_the_same_one_line(tmp_path, monkeypatch):
    """The per-step append to metrics.jsonl goes through the same conversion: the folder and
    the reason, and the step of the last complete checkpoint for the command's line."""
    cfg, tok, model, task = _tree_run(tmp_path)
    real_open = type(tmp_path).open

    def full(self, mode="r", *args, **kwargs):
        if self.name == "metrics.jsonl" and mode == "a":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return real_open(self, mode, *args, **kwargs)

    train(cfg, model, tok, task, stop_after=2)
    cfg, tok, model, task = _tree_run(tmp_path, resume=True)
    monkeypatch.setattr(type(tmp_path), "open", full)
    with pytest.raises(runs.RunWriteError) as failed:
        train(cfg, model, tok, task)
    assert str(failed.value) == f"cannot write to {tmp_path}: no space left on device"
    assert failed.value.checkpoint_step == 2
    line = cli.write_failed_line(failed.value, {"model": "tiny", "out": tmp_path})
    assert line.endswith(f"the checkpoint of step 2 is intact: free space and resume with: "
                         f"grlab train-llm --model tiny --out {tmp_path} --resume")


def test_a_torch_error_that_is_not_a_failed_write_is_not_called_a_full_disk(tmp_path,
                                                                            monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("something else")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(RuntimeError, match="something else"):
        runs.save_checkpoint(tmp_path, {"step": 1})


# --------------------------------------------------------------------------------------------
# A checkpoint of another run
# --------------------------------------------------------------------------------------------


def test_resume_with_another_task_is_one_line_naming_it(grlab, grlab_split, tmp_path):
    """A run started on arithmetic, resumed with --task gsm8k (same tiny model and sizes):
    refused, naming the task and its problems and reward."""
    code, err = grlab("train-llm", "--model", "tiny", "--task", "arithmetic", "--steps", "1",
                      "--eval-prompts", "2", "--device", "cpu", "--out", str(tmp_path))
    assert code == 0, err
    line = _error_line(*grlab_split("train-llm", "--model", "tiny", "--task", "gsm8k", "--data",
                                    GSM8K, "--steps", "2", "--eval-prompts", "2", "--device",
                                    "cpu", "--out", str(tmp_path), "--resume")[::2])
    assert "other settings (" in line and "task: 'arithmetic' there, 'gsm8k' now" in line
    assert "problems:" in line


def test_resume_with_a_data_file_of_other_content_is_one_line_naming_it(grlab, grlab_split,
                                                                       tmp_path):
    data = tmp_path / "data.jsonl"
    lines = Path(GSM8K).read_text().splitlines()
    data.write_text("\n".join(lines) + "\n")
    options = ("--model", "tiny", "--task", "gsm8k", "--data", str(data), "--eval-prompts", "1",
               "--max-new-tokens", "2", "--device", "cpu", "--out", str(tmp_path / "run"))
    code, err = grlab("train-llm", *options, "--steps", "1")
    assert code == 0, err
    record = json.loads(lines[0])
    record["answer"] = record["answer"].rsplit("####", 1)[0] + "#### 999999"
    data.write_text("\n".join([json.dumps(record), *lines[1:]]) + "\n")
    line = _error_line(*grlab_split("train-llm", *options, "--steps", "2", "--resume")[::2])
    assert "data_sha256:" in line and "problems:" in line and "task:" not in line


def test_a_checkpoint_with_tensors_of_other_shapes_is_the_same_one_line_refusal(
        grlab, grlab_split, tmp_path):
    code, err = grlab("train-llm", *TINY, "--steps", "1", "--out", str(tmp_path))
    assert code == 0, err
    path = tmp_path / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    name = next(iter(state["model"]))
    state["model"][name] = torch.zeros(7, 5)
    torch.save(state, path)
    line = _error_line(*grlab_split("train-llm", *TINY, "--steps", "2", "--out", str(tmp_path),
                                    "--resume")[::2])
    assert line.startswith(f"error: --resume: the checkpoint at {path} was written with other "
                           "settings (its tensors do not fit this model: ")
    assert f"{name}: (7, 5) there, " in line


# --------------------------------------------------------------------------------------------
# A peer that never comes
# --------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(("rank", "expected"), [
    ("0", "rank(s) 1 never joined"),
    ("1", "could not reach process 0"),
])
def test_a_peer_that_never_comes_is_one_line_after_the_rendezvous_timeout(tmp_path, rank,
                                                                          expected):
    port = _free_port()
    env = {**os.environ, "WORLD_SIZE": "2", "RANK": rank, "LOCAL_RANK": rank,
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "PYTHONWARNINGS": "ignore"}
    tic = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "grlab.cli", "train-llm", *TINY, "--steps", "1",
                           "--rendezvous-timeout", "3", "--out", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=120)
    seconds = time.monotonic() - tic
    line = _error_line(done.returncode, done.stderr)
    assert expected in line and f"127.0.0.1:{port}" in line and "of 2" in line, line
    assert "--rendezvous-timeout 3 s" in line or "waited 3 s" in line
    assert 3 <= seconds < 60


def test_the_rendezvous_timeout_must_be_positive(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="--rendezvous-timeout"):
        distributed.start("cpu", rendezvous_timeout=0)


# --------------------------------------------------------------------------------------------
# Ctrl-C
# --------------------------------------------------------------------------------------------


def test_the_first_ctrl_c_says_so_at_once_and_the_second_aborts(capsys, monkeypatch):
    handler = distributed.StopOnInterrupt()
    handler._handle(signal.SIGINT, None)
    assert handler.requested
    assert capsys.readouterr().err == "stopping after this step (Ctrl-C again to abort)\n"
    handler._handle(signal.SIGINT, None)  # torchrun's forwarded copy, at once: ignored
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(handler, "_first", time.monotonic() - distributed.ABORT_AFTER_S)
    with pytest.raises(KeyboardInterrupt):
        handler._handle(signal.SIGINT, None)
    quiet = distributed.StopOnInterrupt(announce=False)  # processes other than 0
    quiet._handle(signal.SIGINT, None)
    assert quiet.requested and capsys.readouterr().err == ""


CHILD = textwrap.dedent("""
    import sys, time
    from llm_bridge.models import char_tokenizer, tiny_model
    from llm_bridge.tasks import TreeTask
    from llm_bridge.trainer import TrainConfig, TrainingInterrupted, train

    def slow(row, batch):
        if row["step"] == 2:
            print("slow step", flush=True)
            time.sleep(6)  # a step of a large model

    tok = char_tokenizer()
    cfg = TrainConfig(steps=50, group_size=3, max_new_tokens=2, eval_every=100,
                      eval_prompts=2, checkpoint_every=100, out=sys.argv[1], plot=False)
    try:
        train(cfg, tiny_model(tok), tok, TreeTask.random(), on_step=slow)
    except TrainingInterrupted as stop:
        print(f"stopped at {stop.step}", flush=True)
""")


def test_a_real_ctrl_c_during_a_long_step_is_answered_at_once(tmp_path):
    """SIGINT while a step is running: the line comes within a second, while the step goes
    on; the run then stops at the end of that step with a checkpoint there."""
    process = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONWARNINGS": "ignore"})
    errors: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [errors.put(x) for x in process.stderr], daemon=True).start()
    try:
        assert process.stdout.readline() == "slow step\n", process.communicate()
        process.send_signal(signal.SIGINT)
        assert errors.get(timeout=3) == "stopping after this step (Ctrl-C again to abort)\n"
        assert process.poll() is None  # the step is still running
        out, _ = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0 and out == "stopped at 2\n"
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 2


# --------------------------------------------------------------------------------------------
# The run's files as it goes, its console line, its flags
# --------------------------------------------------------------------------------------------


def _tree_run(tmp_path, **kwargs):
    tok = char_tokenizer()
    cfg = TrainConfig(**{"steps": 6, "group_size": 3, "max_new_tokens": 2, "eval_every": 100,
                         "eval_prompts": 2, "checkpoint_every": 2, "out": tmp_path, **kwargs})
    return cfg, tok, tiny_model(tok), TreeTask.random()


def test_curves_png_is_written_at_every_checkpoint_not_only_at_the_end(tmp_path):
    """A run cut short after 3 of 6 steps (checkpoints at 2 and 3) already has its figure."""
    cfg, tok, model, task = _tree_run(tmp_path)
    result = train(cfg, model, tok, task, stop_after=3)
    png = tmp_path / "curves.png"
    assert png.read_bytes()[:4] == b"\x89PNG" and result.files["plot"] == png
    assert not list(tmp_path.glob(".*.tmp"))


def test_no_keep_previous_keeps_one_checkpoint_and_still_resumes(tmp_path):
    cfg, tok, model, task = _tree_run(tmp_path)
    train(cfg, model, tok, task, stop_after=4)
    assert (tmp_path / "checkpoint.prev.pt").is_file()
    cfg, tok, model, task = _tree_run(tmp_path, keep_previous=False, resume=True)
    train(cfg, model, tok, task)
    assert not (tmp_path / "checkpoint.prev.pt").exists()  # the older one is removed, too
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 6


def test_the_help_states_the_checkpoint_size_and_the_thread_choice(grlab):
    code, out = grlab("train-llm", "--help")
    assert code == 0
    text = " ".join(out.split())
    assert "--no-keep-previous" in text and "1.6 GB for SmolLM2-135M" in text
    assert "--threads" in text and "--rendezvous-timeout" in text


def _line(behavior: bool, row: dict, capsys) -> str:
    progress = runs.Progress("grpo", 10, 0, enabled=True, behavior=behavior)
    progress.update(row)
    return capsys.readouterr().out


ROW = {"step": 1, "reward": 0.5, "entropy": 1.2, "clipfrac": 0.0, "approx_kl": 0.0,
       "seconds": 0.1}


def test_the_console_shows_the_metrics_that_move(capsys):
    """On-policy, approx_kl and clipfrac are exactly 0: not shown; the KL to the initial
    model is shown when it is computed, never as a column of zeros when it is not."""
    line = _line(False, {**ROW, "kl_ref": 0.0123}, capsys)
    assert "reward 0.50" in line and "ent 1.200" in line and "kl_ref 0.0123" in line
    assert "kl +" not in line and "kl_behav" not in line and "clip" not in line
    line = _line(True, {**ROW, "clipfrac": 0.25, "approx_kl": 0.002}, capsys)
    assert "clip 0.250" in line and "kl_behav +0.0020" in line and "kl_ref" not in line


def test_the_off_policy_settings_decide_the_behavior_columns():
    assert not TrainConfig().behavior_gap
    assert TrainConfig(sync_interval=2).behavior_gap and TrainConfig(offline=True).behavior_gap
    assert TrainConfig(sync_offset=1).behavior_gap
    # top-p with μ as π_old (--no-recompute-old) shows in the loss's ratio; with π_old
    # recomputed it is 1 on-policy, and the gap shows as kl_sampler instead
    assert TrainConfig(top_p=0.9, recompute_old=False).behavior_gap
    assert not TrainConfig(top_p=0.9).behavior_gap


def test_threads_sets_torchs_thread_count(grlab, tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        code, out = grlab("train-llm", *TINY, "--steps", "1", "--threads", "2", "--out",
                          str(tmp_path / "a"))
        assert code == 0 and torch.get_num_threads() == 2, out
        code, out = grlab("train-llm", *TINY, "--steps", "1", "--out", str(tmp_path / "b"))
        assert code == 0 and torch.get_num_threads() == cli.DEFAULT_THREADS == 1, out
    finally:
        torch.set_num_threads(before)


def test_the_commands_defaults_are_the_train_configs():
    """One experiment whether it is started from the command line or from Python."""
    fields = {f.name: f.default for f in TrainConfig.__dataclass_fields__.values()}
    flags = inspect.signature(cli.train_llm).parameters
    shared = sorted(set(fields) & set(flags) - {"device", "out"})
    assert len(shared) >= 18
    assert {k: flags[k].default for k in shared} == {k: fields[k] for k in shared}
