"""simulator.files: atomic writes, checked loads and checked output folders."""

from __future__ import annotations

import os

import pytest
import torch

from simulator.files import (
    CorruptFileError,
    atomic_torch_save,
    atomic_write,
    atomic_write_text,
    load_torch,
    output_dir,
)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = atomic_write_text(tmp_path / "table.md", "old")
    with pytest.raises(RuntimeError), atomic_write(path, "w") as handle:
        handle.write("half of the new")
        raise RuntimeError("killed")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.md"]


def test_a_torch_file_round_trips(tmp_path):
    path = atomic_torch_save({"step": 3, "x": torch.arange(4)}, tmp_path / "state.pt")
    state = load_torch(path)
    assert state["step"] == 3 and torch.equal(state["x"], torch.arange(4))


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_a_damaged_torch_file_is_one_clear_error_naming_it(tmp_path, damage):
    path = atomic_torch_save({"x": torch.randn(100)}, tmp_path / "checkpoint.pt")
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": os.urandom(64),
                      "empty": b""}[damage])
    with pytest.raises(CorruptFileError, match=r"checkpoint at .*checkpoint.pt cannot be read"):
        load_torch(path, what="checkpoint")


def test_a_file_that_loads_but_fails_the_callers_check_is_corrupt_too(tmp_path):
    path = atomic_torch_save({"x": 1}, tmp_path / "cache.pt")
    with pytest.raises(CorruptFileError, match="cache"):
        load_torch(path, what="cache", check=lambda obj: obj["metrics"])


def test_a_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_torch(tmp_path / "nothing.pt", what="checkpoint")


def test_output_dir_creates_and_rejects_a_file(tmp_path):
    assert output_dir(tmp_path / "a" / "b").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"out must be a folder, but .* is a file"):
        output_dir(tmp_path / "file")


def test_output_dir_rejects_a_folder_that_cannot_be_created():
    # /proc refuses new folders even to root, so this holds wherever the suite runs
    with pytest.raises(ValueError, match="out: cannot write to /proc/grlab-out"):
        output_dir("/proc/grlab-out")
