"""Atomic writes are durable: the file and its directory are fsynced; killed writes are cleared."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from palsyseg.atomic import (
    atomic_directory,
    atomic_path,
    atomic_write_text,
    remove_stale_temporaries,
)


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths os.fsync is called on, in order (read back from /proc/self/fd)."""
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to name file descriptors")
    calls: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        calls.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return calls


def test_a_file_is_fsynced_before_the_rename_and_its_directory_after(
    tmp_path: Path, synced: list[str]
) -> None:
    atomic_write_text(tmp_path / "report.json", "{}\n")
    assert len(synced) == 2
    temp, directory = synced
    assert Path(temp).parent == tmp_path and Path(temp).name.startswith(".report.")
    assert temp.endswith(".tmp.json")  # the data, before it gets its name
    assert directory == str(tmp_path)  # the rename itself
    assert (tmp_path / "report.json").read_text() == "{}\n"


def test_a_directory_is_fsynced_file_by_file_then_its_parent(
    tmp_path: Path, synced: list[str]
) -> None:
    with atomic_directory(tmp_path / "dataset") as staging:
        (staging / "images").mkdir()
        (staging / "images" / "a.png").write_bytes(b"png")
        (staging / "manifest.csv").write_text("image\n")
    names = [Path(p).name for p in synced]
    assert "a.png" in names and "manifest.csv" in names and "images" in names
    assert synced[-1] == str(tmp_path)  # the parent, after the rename
    assert sorted(p.name for p in (tmp_path / "dataset").iterdir()) == ["images", "manifest.csv"]


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "last.pt", "old")
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "last.pt") as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert (tmp_path / "last.pt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_stale_temporaries_of_the_named_files_only_are_removed(tmp_path: Path) -> None:
    keep = [
        "last.pt",
        "best.pt",
        ".best.pt",
        "notes.tmp.pt",
        ".other.abc.tmp.pt",
        ".last.x.tmp.json",
    ]
    stale = [".last.a1b2c3.tmp.pt", ".best.zz_9.tmp.pt", ".history.q.tmp.json"]
    for name in keep + stale:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / ".last.dir.tmp.pt").mkdir()  # not a file: not ours to delete
    removed = remove_stale_temporaries(tmp_path, ["last.pt", "best.pt", "history.json"])
    assert sorted(p.name for p in removed) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*keep, ".last.dir.tmp.pt"])
