"""Atomicity made observable (``surgesim.outputs``): the final commit flushes every file to disk
(fsync) *before* it renames it into place, and renames (the same inode moves in, nothing is
copied); a fault at the rename leaves the old file whole.

Written against the commit functions as they are now (``OutputDir.commit`` and ``atomic_path``);
tests/test_faults.py covers killed runs and the directory lock."""

from __future__ import annotations

import os
import shutil

import pytest

from surgesim import outputs


@pytest.fixture
def syscalls(monkeypatch):
    """Every fsync (the inode of the file it flushes) and os.replace, in order; copying is an error."""
    calls = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        calls.append(("fsync", os.fstat(fd).st_ino))
        return real_fsync(fd)

    def replace(src, dst, *a, **k):
        calls.append(("replace", os.stat(src).st_ino, os.fspath(dst)))
        return real_replace(src, dst, *a, **k)

    def no_copy(*a, **k):
        raise AssertionError("the commit copied a file instead of renaming it")

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    for name in ("copy", "copy2", "copyfile", "move"):
        monkeypatch.setattr(shutil, name, no_copy)
    return calls


def test_commit_fsyncs_each_file_then_renames_it(tmp_path, syscalls):
    with outputs.OutputDir(tmp_path / "o") as out:
        staged = {}
        for name in ("a.csv", "b.json"):
            (out / name).write_text(name)
            staged[name] = os.stat(out / name).st_ino
        assert out.commit() == ["a.csv", "b.json"]
    for name, ino in staged.items():
        final = tmp_path / "o" / name
        assert final.read_text() == name
        assert os.stat(final).st_ino == ino  # the staged file itself moved in: renamed, not copied
        i = syscalls.index(("replace", ino, str(final)))
        assert ("fsync", ino) in syscalls[:i], f"{name} renamed into place before it was flushed to disk"


def test_atomic_path_fsyncs_then_renames(tmp_path, syscalls):
    target = tmp_path / "t.txt"
    target.write_text("old")
    with outputs.atomic_path(target) as tmp:
        tmp.write_text("new")
        ino = os.stat(tmp).st_ino
    assert target.read_text() == "new" and os.stat(target).st_ino == ino
    i = syscalls.index(("replace", ino, str(target)))
    assert ("fsync", ino) in syscalls[:i]


def test_a_fault_at_the_rename_leaves_the_old_file_whole(tmp_path, monkeypatch):
    (tmp_path / "o").mkdir()
    old = tmp_path / "o" / "a.csv"
    old.write_text("old, complete\n")

    def broken(src, dst, *a, **k):
        raise OSError("planted: disk gone at the rename")

    real_replace = os.replace
    with outputs.OutputDir(tmp_path / "o") as out:
        (out / "a.csv").write_text("new, complete\n")
        monkeypatch.setattr(os, "replace", broken)
        # the moves into place come after the commit point (the journal's rename): the run says so
        with pytest.raises(outputs.CommitIncomplete, match="planted"):
            out.commit()
    assert old.read_text() == "old, complete\n"  # not half-written: the old file, whole
    target = tmp_path / "t.txt"
    target.write_text("old")
    with pytest.raises(OSError, match="planted"), outputs.atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["o", "t.txt"]
    monkeypatch.setattr(os, "replace", real_replace)
    with outputs.OutputDir(tmp_path / "o"):  # the next run into the directory finishes the move
        pass
    assert old.read_text() == "new, complete\n"
    assert not [p for p in (tmp_path / "o").iterdir() if p.name.startswith(".surgesim-commit")]
