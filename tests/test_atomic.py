"""Atomic writes: whole files and whole folders, with the mode the umask gives."""

import os
import stat

import pytest

from lego_inversion.atomic import atomic_dir, atomic_write_text


def test_files_and_folders_respect_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        path = atomic_write_text(tmp_path / "a.txt", "x")
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "f").write_text("y")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # 0o666 & ~0o027, not mkstemp's 0o600
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o750


def test_atomic_dir_swaps_whole_folders_and_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "set"
    with atomic_dir(target) as tmp:
        (tmp / "old.txt").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "new.txt").write_text("2")
            raise RuntimeError("crash while building")
    assert sorted(p.name for p in target.iterdir()) == ["old.txt"]  # the old folder, untouched
    with atomic_dir(target) as tmp:
        (tmp / "new.txt").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    with atomic_dir(target, replace=False) as tmp:  # someone else built it first: theirs stays
        (tmp / "other.txt").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]  # no temporary folders left behind
