"""mrcnn.atomic: whole files or nothing, unique temp names, fsync, modes from the umask."""

from __future__ import annotations

import os
import stat

import pytest

from mrcnn.atomic import atomic_folder, atomic_write, write_bytes_atomic


def test_writes_text_and_bytes_and_leaves_no_temp_file(tmp_path):
    write_bytes_atomic(tmp_path / "sub" / "a.txt", "héllo")
    write_bytes_atomic(tmp_path / "sub" / "b.bin", b"\x00\x01")
    assert (tmp_path / "sub" / "a.txt").read_text(encoding="utf-8") == "héllo"
    assert (tmp_path / "sub" / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["a.txt", "b.bin"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temp_file(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")

    def boom(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, boom)
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]


def test_the_temp_file_sits_beside_the_target_keeps_its_suffix_and_is_unique(tmp_path):
    seen = []

    def outer(tmp):
        seen.append(tmp)
        atomic_write(tmp_path / "x.nii.gz", lambda inner: (seen.append(inner),
                                                           inner.write_text("inner")))
        tmp.write_text("outer")

    atomic_write(tmp_path / "x.nii.gz", outer)
    assert len(seen) == 2 and seen[0] != seen[1]  # two writers never share a temp file
    assert all(p.parent == tmp_path and p.name.endswith(".nii.gz") for p in seen)
    assert (tmp_path / "x.nii.gz").read_text() == "outer"  # the last rename wins
    assert [p.name for p in tmp_path.iterdir()] == ["x.nii.gz"]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_the_file_mode_follows_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = write_bytes_atomic(tmp_path / "m.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_a_folder_replaces_the_old_one_whole_from_a_unique_temp_folder(tmp_path):
    target = tmp_path / "train"
    target.mkdir()
    (target / "old.png").write_text("old")
    with atomic_folder(target) as first, atomic_folder(target) as second:
        assert first != second and first.parent == second.parent == tmp_path
        assert (target / "old.png").is_file()  # untouched while the new set is written
        (first / "new.png").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.png"]  # the last to finish wins
    assert [p.name for p in tmp_path.iterdir()] == ["train"]  # no temp folder left


def test_a_failed_folder_keeps_the_old_one_and_removes_the_temp_folder(tmp_path):
    target = tmp_path / "train"
    target.mkdir()
    (target / "old.png").write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_folder(target) as tmp:
        (tmp / "half.png").write_text("half")
        raise KeyboardInterrupt
    assert [p.name for p in target.iterdir()] == ["old.png"]
    assert [p.name for p in tmp_path.iterdir()] == ["train"]


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_the_folder_mode_follows_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        with atomic_folder(tmp_path / "d") as tmp:
            (tmp / "f").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o777 & ~umask
