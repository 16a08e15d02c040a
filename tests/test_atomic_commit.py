"""Atomicity made observable (``surgesim.outputs``): the final commit flushes every file to disk
(fsync) *before* it renames it into place, and renames (the same inode moves in, nothing is
copied); a fault at the rename leaves the old file whole.

Written against the commit functions as they are now (``OutputDir.commit`` and ``atomic_path``);
tests/test_faults.py covers killed runs and the directory lock."""

from __future__ import annotations

import os
import shutil

import numpy as np
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


# --- uncached_file: large outputs written around the page cache (issue 24: d = 10^7) -------------

_O_DIRECT = getattr(os, "O_DIRECT", 0)


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 2 alignment units, so that a few KiB cross several of them; every os.write logged
    as (its length, whether the file was in O_DIRECT mode then)."""
    import fcntl

    monkeypatch.setattr(outputs._UncachedFile, "_CHUNK", 2 * outputs._UncachedFile._ALIGN)
    writes, real_write = [], os.write

    def write(fd, data):
        writes.append((len(data), bool(fcntl.fcntl(fd, fcntl.F_GETFL) & _O_DIRECT)))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    return writes


def pieces(seed=0):
    """Bytes in pieces of awkward sizes (empty, one byte, a chunk and a bit), 33 KiB in all."""
    rng = np.random.default_rng(seed)
    return [rng.bytes(n) for n in (0, 1, 4095, 4097, 8192, 3, 12289, 5000)]


def test_uncached_file_writes_exactly_the_bytes_given(tmp_path, small_chunks):
    path, data = tmp_path / "big.bin", pieces()
    with outputs.uncached_file(path) as f:
        for piece in data:
            assert f.write(piece) == len(piece)
        assert f.tell() == sum(map(len, data))
    assert path.read_bytes() == b"".join(data)  # the padding of the last chunk is cut
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~outputs._umask()
    direct = [n for n, d in small_chunks if d]
    if takes_o_direct(tmp_path):  # every write around the page cache: whole aligned blocks, the last padded
        assert len(direct) == len(small_chunks) == -(-sum(map(len, data)) // outputs._UncachedFile._CHUNK)
        assert all(n % outputs._UncachedFile._ALIGN == 0 for n in direct)


def takes_o_direct(folder):
    """Whether the file system of ``folder`` opens files with O_DIRECT (tmpfs does not)."""
    try:
        os.close(os.open(folder / ".probe", os.O_WRONLY | os.O_CREAT | _O_DIRECT, 0o600))
    except OSError:
        return False
    return _O_DIRECT != 0


def test_uncached_file_falls_back_where_o_direct_is_refused(tmp_path, monkeypatch, small_chunks):
    """A file system that refuses O_DIRECT at open (tmpfs), or accepts it at open and refuses
    the writes: the same bytes, through the page cache."""
    import errno

    data = pieces(1)
    real_open, real_write = os.open, os.write

    def refusing_open(path, flags, *a):
        if flags & _O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *a)

    monkeypatch.setattr(os, "open", refusing_open)
    with outputs.uncached_file(tmp_path / "a.bin") as f:
        for piece in data:
            f.write(piece)
    assert (tmp_path / "a.bin").read_bytes() == b"".join(data)
    monkeypatch.setattr(os, "open", real_open)

    def refusing_write(fd, buf):
        import fcntl

        if fcntl.fcntl(fd, fcntl.F_GETFL) & _O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, buf)

    monkeypatch.setattr(os, "write", refusing_write)
    with outputs.uncached_file(tmp_path / "b.bin") as f:
        for piece in data:
            f.write(piece)
    assert (tmp_path / "b.bin").read_bytes() == b"".join(data)


def test_uncached_file_names_itself_in_a_full_disk_error_and_closes(tmp_path, monkeypatch):
    import errno

    def full(fd, buf):
        raise OSError(errno.ENOSPC, "No space left on device")

    open_fds = len(os.listdir("/proc/self/fd"))
    monkeypatch.setattr(os, "write", full)
    path = tmp_path / "big.bin"
    with pytest.raises(OSError, match="No space left") as caught, outputs.uncached_file(path) as f:
        f.write(b"x" * (3 * outputs._UncachedFile._CHUNK // 2))
    assert caught.value.filename == str(path)
    assert len(os.listdir("/proc/self/fd")) == open_fds  # its descriptor is closed


def test_a_problem_saved_around_the_page_cache_loads_back(tmp_path, small_chunks):
    """problem.npz through uncached_file (zip members with data descriptors: not seekable) is an
    ordinary .npz: np.load and QuadraticProblem.load read the same arrays."""
    from surgesim.problem import QuadraticProblem, surge_problem

    p = surge_problem(1500, 3)
    p.save(tmp_path / "p.npz")
    q = QuadraticProblem.load(tmp_path / "p.npz")
    assert q.digest() == p.digest()
    with np.load(tmp_path / "p.npz") as z:
        np.testing.assert_array_equal(z["h_factor"], p.hessian.low_rank_factor())
