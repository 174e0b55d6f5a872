"""simulator.files: atomic writes, checked loads and checked output folders."""

from __future__ import annotations

import os
import stat

import matplotlib
import pytest
import torch

from simulator import files
from simulator.files import (
    CorruptFileError,
    atomic_savefig,
    atomic_torch_save,
    atomic_write,
    atomic_write_text,
    current_umask,
    load_torch,
    output_dir,
)
from tests.full_disk import FullDisk

matplotlib.use("Agg")


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


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it afterwards."""
    saved = os.umask(0o022)
    os.umask(saved)
    yield os.umask
    os.umask(saved)


def _save_figure(path):
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(1, 1))
    try:
        return atomic_savefig(fig, path)
    finally:
        plt.close(fig)


WRITERS = {
    "text": lambda path: atomic_write_text(path, "x"),
    "torch": lambda path: atomic_torch_save({"x": torch.zeros(2)}, path),
    "savefig": _save_figure,
}


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("writer", sorted(WRITERS))
@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)],
                         ids=["umask022", "umask077", "umask002"])
def test_an_atomic_write_gets_the_mode_a_plain_open_would(tmp_path, umask, writer, mask,
                                                          expected):
    umask(mask)
    with open(tmp_path / "plain", "w"):
        pass
    path = WRITERS[writer](tmp_path / ("out.png" if writer == "savefig" else "out.bin"))
    assert _mode(path) == expected == _mode(tmp_path / "plain")


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_an_atomic_write_keeps_the_mode_of_the_file_it_replaces(tmp_path, umask, writer):
    umask(0o022)
    path = tmp_path / ("out.png" if writer == "savefig" else "out.bin")
    path.write_text("old")
    path.chmod(0o640)
    WRITERS[writer](path)
    assert _mode(path) == 0o640


def test_current_umask_reads_without_changing_it(umask):
    umask(0o027)
    assert current_umask() == 0o027
    assert os.umask(0o027) == 0o027  # still what the test set


def test_current_umask_falls_back_where_proc_cannot_tell(monkeypatch, umask):
    umask(0o037)
    monkeypatch.setattr(files, "_umask_from_proc", lambda: None)
    monkeypatch.setattr(files, "_IMPORT_UMASK", None)
    assert current_umask() == 0o037
    monkeypatch.setattr(files, "_IMPORT_UMASK", 0o077)  # as read at import off Linux
    assert current_umask() == 0o077


def test_a_torch_save_on_a_full_disk_is_the_files_oserror_and_leaves_nothing(
        tmp_path, monkeypatch):
    """torch's zip writer swallows the file's OSError and raises "unexpected pos ...";
    ``atomic_torch_save`` reports the file's own error (ENOSPC, naming the path) — what the
    lab's cache and the bridge's checkpoints both write through — and leaves no file."""
    import errno

    real = os.fdopen
    def fdopen(fd, mode="r", *args, **kwargs):
        return FullDisk(real(fd, mode, *args, **kwargs), room=10_000)

    monkeypatch.setattr(os, "fdopen", fdopen)
    target = tmp_path / "big.pt"
    with pytest.raises(OSError) as caught:
        files.atomic_torch_save({"x": torch.zeros(100_000)}, target)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(target)
    assert list(tmp_path.iterdir()) == []
