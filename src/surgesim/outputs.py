"""Output files that are never half-written or mixed: atomic writes, strict JSON, and an output
directory owned by one run at a time.

- ``atomic_path(path)``: write to a temporary file beside ``path``, then rename it over ``path``
  (atomic on POSIX): a reader sees the old file or the new one, never a partial one, and a failed
  write leaves the old file byte-identical.
- ``dumps_json(obj)``: strict JSON (RFC 8259) for summary files: no ``NaN``/``Infinity`` tokens.
  A non-finite float is written as the string ``"inf"``, ``"-inf"`` or ``"nan"`` (``loads_json``
  reads them back as floats); NumPy scalars and arrays become numbers and lists; ``write_json``
  writes it atomically.
- ``OutputDir(path)``: the output directory of one run. Entering it creates the directory and
  takes an exclusive lock on it (a second run into the same directory fails at once with a clear
  error). Files written through ``out / name`` go to a staging folder inside it and replace the
  directory's files only at ``commit()``, when the run has succeeded; ``discard()`` (a refused or
  failed run) deletes them, so every file already in the directory stays byte-identical. A file
  that must be written while the run goes on (a resumable store) is opened in place via
  ``out.final(name)``.
- ``uncached_file(path)``: a write-only file for large outputs that bypasses the page cache
  (O_DIRECT) where the file system allows it.

>>> import json, math
>>> dumps_json({"b_noise": math.inf, "n": 3})
'{\\n  "b_noise": "inf",\\n  "n": 3\\n}\\n'
>>> loads_json(dumps_json({"x": -math.inf}))["x"]
-inf
"""

from __future__ import annotations

import errno
import io
import json
import math
import mmap
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "MANIFEST", "CommitIncomplete", "OutputDir", "OutputDirBusy", "atomic_path", "dumps_json", "loads_json", "recover",
    "uncached_file", "write_json",
]  # fmt: skip

_STAGING = ".surgesim-staging-"
_JOURNAL = ".surgesim-commit-"
_LIST = ".surgesim-commit.json"  # a journal's list of files, written last before the commit point
MANIFEST = ".surgesim-run.json"  # which command's outputs the directory holds, and their names
_NONFINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}

try:  # POSIX; elsewhere the directory is not locked
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]


class OutputDirBusy(ValueError):
    """Another run holds the output directory's lock."""


class CommitIncomplete(OSError):
    """A commit failed after its commit point: the new outputs are committed and the next
    ``OutputDir.open`` of the directory moves the rest into place."""


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed over ``path`` on success, deleted on
    any error (``path`` itself is then untouched)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 -> what open() would give
    finally:
        os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException as exc:
        tmp_path.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None and exc.errno is not None:
            exc.filename = str(path)  # a full disk's error names the file it was writing
        raise


class _UncachedFile(io.RawIOBase):
    """Write-only, sequential (``tell`` but no ``seek``: zipfile then writes data descriptors).
    Bytes gather in a page-aligned buffer written out ``_ALIGN``-aligned with O_DIRECT; where the
    file system refuses that (EINVAL), the file continues through the page cache."""

    _ALIGN = 4096  # the largest logical block size O_DIRECT asks of offsets and lengths
    _CHUNK = 1 << 23

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__()
        self.name = os.fspath(path)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o666)
        self._view = memoryview(mmap.mmap(-1, self._CHUNK))  # anonymous: page-aligned
        self._filled = self._written = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]  # any buffer, as RawIOBase's
        data = memoryview(data).cast("B")
        done = 0
        while done < len(data):
            n = min(len(data) - done, self._CHUNK - self._filled)
            self._view[self._filled : self._filled + n] = data[done : done + n]
            self._filled += n
            done += n
            if self._filled == self._CHUNK:
                self._drain(self._CHUNK)
        return done

    def tell(self) -> int:
        return self._written + self._filled

    def _drain(self, length: int) -> None:
        """Write the buffer's first ``length`` bytes (the data, and past it padding to cut at close)."""
        view, at = self._view[:length], 0
        try:
            while at < length:
                try:
                    at += os.write(self._fd, view[at:])
                except OSError as e:  # O_DIRECT refused here (or a short write left the offset unaligned)
                    flags = fcntl.fcntl(self._fd, fcntl.F_GETFL)
                    if e.errno != errno.EINVAL or not flags & os.O_DIRECT:
                        raise
                    fcntl.fcntl(self._fd, fcntl.F_SETFL, flags & ~os.O_DIRECT)
        except OSError as e:
            if e.filename is None:
                e.filename = self.name  # a full disk's error names the file
            raise
        finally:
            view.release()
        self._written += self._filled
        self._filled = 0

    def close(self, complete: bool = True) -> None:
        """Write the tail (``complete``) and close; idempotent."""
        if self._fd < 0:
            return
        try:
            if complete and self._filled:
                size = self.tell()
                self._drain(-(-self._filled // self._ALIGN) * self._ALIGN)
                os.ftruncate(self._fd, size)
        finally:
            os.close(self._fd)
            self._fd = -1
            self._view = memoryview(b"")  # the buffer is unmapped with its last view
            super().close()


@contextmanager
def uncached_file(path: str | os.PathLike) -> Iterator[Any]:
    """``path`` opened for writing from its start, for a large output (an .npz of 10^8 values):
    written around the page cache (O_DIRECT) where the file system allows it, so that its bytes
    cost no system time to copy into kernel pages or to write back and evict nothing; otherwise
    ``open(path, "wb")``. Permissions follow the umask, as ``open``'s. Not seekable."""
    f = None
    if fcntl is not None and hasattr(os, "O_DIRECT"):
        try:
            f = _UncachedFile(path)
        except OSError as e:  # a file system without O_DIRECT (tmpfs) refuses it at open
            if e.errno != errno.EINVAL:
                raise
    if f is None:
        with open(path, "wb") as plain:
            yield plain
        return
    try:
        yield f
    except BaseException:
        f.close(complete=False)
        raise
    f.close()


def _umask() -> int:
    """The process's umask (read from /proc where possible, so that it is never changed)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _strict(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _strict(obj.tolist())
    if isinstance(obj, np.generic):
        return _strict(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    return obj


def dumps_json(obj: Any) -> str:
    """Strict, indented JSON text ending in a newline; non-finite floats as "inf", "-inf", "nan"."""
    return json.dumps(_strict(obj), indent=2, allow_nan=False, default=str) + "\n"


def write_json(obj: Any, path: str | os.PathLike) -> None:
    """Strict JSON (``dumps_json``) written atomically (``atomic_path``): docs/outputs.md."""
    with atomic_path(path) as tmp:
        tmp.write_text(dumps_json(obj))


def loads_json(text: str) -> Any:
    """Read ``dumps_json``'s output, turning "inf", "-inf" and "nan" strings back into floats."""

    def back(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: back(x) for k, x in v.items()}
        if isinstance(v, list):
            return [back(x) for x in v]
        return _NONFINITE.get(v, v) if isinstance(v, str) else v

    return back(json.loads(text))


class OutputDir:
    """The output directory of one run: locked while the run lasts, written all at once at the end.

    ``commit()`` is atomic for the run as a whole, not just per file: every output is staged in
    a folder inside the directory, checked (a directory in a file's way, a full disk: found
    before anything is replaced) and synced; then one rename turns the staging folder into a
    commit journal (``.surgesim-commit-*``, with its list of files), and only then are the files
    moved into place and the journal deleted. Killed before that rename, the directory keeps
    its old files and the next run deletes the staging folder; killed after it, the next run
    into the directory (``open()``, or ``recover(path)``) finishes moving the files in. Either
    way the directory ends with the old complete results or the new complete results.

    >>> import tempfile
    >>> with OutputDir(tempfile.mkdtemp()) as out:
    ...     _ = (out / "a.txt").write_text("hello")
    ...     out.commit()
    ['a.txt']
    >>> (out.path / "a.txt").read_text()
    'hello'
    """

    def __init__(self, path: str | os.PathLike, command: str | None = None, inputs: dict | None = None) -> None:
        if str(path).strip() == "":
            raise ValueError("the output directory must be a non-empty path")
        self.path = Path(path)
        self.command = command
        self.inputs = None if inputs is None else loads_json(dumps_json(inputs))
        self._fd: int | None = None
        self._staging: Path | None = None
        self._removed: set[str] = set()
        self._created: list[Path] = []

    def __enter__(self) -> OutputDir:
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()

    def open(self) -> None:
        """Create the directory, lock it (``OutputDirBusy`` if another run holds it), finish or
        delete what a killed run left (``recover``), refuse a directory that holds another
        command's outputs, and start a fresh staging folder."""
        p = self.path
        try:
            if p.is_symlink() and not p.exists():
                os.stat(p)  # a dangling link or a loop: the OSError below says which
            if p.exists() and not p.is_dir():
                raise ValueError(f"output directory {str(p)!r} exists and is not a directory")
            created = [a for a in (p, *p.parents) if not a.exists() and not a.is_symlink()]
            p.mkdir(parents=True, exist_ok=True)
            self._created = created  # deleted again by a run that commits nothing, if still empty
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ValueError(f"output directory {str(p)!r} is a symbolic link loop") from None
            if exc.errno == errno.ENOENT and p.is_symlink():
                target = os.readlink(p)
                raise ValueError(f"output directory {str(p)!r} is a symbolic link to a missing {target!r}") from None
            raise
        if not os.access(p, os.W_OK | os.X_OK):
            raise ValueError(f"output directory {str(p)!r} is not writable")
        fd = os.open(p, os.O_RDONLY)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise OutputDirBusy(
                    f"output directory {str(p)!r} is in use by another run; wait for it to finish or choose "
                    "another output directory"
                ) from None
        self._fd = fd
        try:
            _recover(p)
            manifest = self.manifest()
            owner = manifest.get("command")
            if self.command is not None and owner is not None and owner != self.command:
                raise ValueError(
                    f"output directory {str(p)!r} holds the outputs of {owner}, not {self.command}: choose "
                    "another output directory"
                )
            old = manifest.get("inputs")
            if self.inputs is not None and old is not None and old != self.inputs:
                keys = sorted(k for k in {*old, *self.inputs} if old.get(k) != self.inputs.get(k))
                raise ValueError(
                    f"output directory {str(p)!r} holds a {owner} run of other inputs (differing in "
                    f"{', '.join(keys)}): choose another output directory, or delete it to start over"
                )
            self._staging = Path(tempfile.mkdtemp(prefix=_STAGING, dir=p))
        except BaseException:
            self.close()
            raise

    def manifest(self) -> dict:
        """The directory's manifest (``.surgesim-run.json``: the command whose outputs it holds,
        its inputs and its files), or {} when there is none or it is unreadable."""
        try:
            found = loads_json((self.path / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return found if isinstance(found, dict) else {}

    def __truediv__(self, name: str) -> Path:
        """Where to write the output ``name``: a staging path, moved into place by ``commit()``."""
        if self._staging is None:
            raise RuntimeError("OutputDir is not open")
        if Path(name).name != name or name.startswith((_STAGING, _JOURNAL)) or name in (MANIFEST, _LIST):
            raise ValueError(f"output file names must be plain names, got {name!r}")
        return self._staging / name

    def final(self, name: str) -> Path:
        """The real path of ``name`` in the directory, for files written in place during the run."""
        return self.path / name

    def __str__(self) -> str:
        return str(self.path)

    def remove(self, name: str) -> None:
        """Delete the directory's file ``name`` at ``commit()`` (in the same atomic step as the
        staged files move in)."""
        self / name  # the same name check
        self._removed.add(name)

    def commit(self) -> list[str]:
        """Move every staged file into the directory, atomically as a whole (see the class
        docstring); returns their names. Everything that can fail is checked before the commit
        point: an ``OSError`` raised then leaves the directory's files as they were."""
        if self._staging is None:
            return []
        staging, p = self._staging, self.path
        names = sorted(f.name for f in staging.iterdir())
        removed = sorted(self._removed - set(names))
        for name in names:  # what would make a rename fail, found before anything is replaced
            target = p / name
            if target.is_dir() and not target.is_symlink() and not (staging / name).is_dir():
                raise IsADirectoryError(errno.EISDIR, "a directory is in the way of an output file; nothing in the "
                                        "output directory was replaced", str(target))  # fmt: skip
            if (staging / name).is_dir() and (target.is_file() or target.is_symlink()):
                raise NotADirectoryError(errno.ENOTDIR, "a file is in the way of an output folder; nothing in the "
                                         "output directory was replaced", str(target))  # fmt: skip
        if self.command is not None:
            manifest = {"command": self.command, "files": names}
            if self.inputs is not None:
                manifest["inputs"] = self.inputs
            (staging / MANIFEST).write_text(dumps_json(manifest), encoding="utf-8")
            names.append(MANIFEST)
        for name in names:
            _fsync_tree(staging / name)
        _step("staged")
        with open(staging / _LIST, "w", encoding="utf-8") as f:
            f.write(dumps_json({"files": names, "removed": removed}))
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(staging)
        _step("journal written")
        with _signals_deferred():
            journal = p / (_JOURNAL + staging.name[len(_STAGING):])
            os.rename(staging, journal)  # the commit point
            self._staging = None
            self._created = []
            self._removed.clear()
            try:
                _fsync_dir(p)
                _step("committed")
                _roll_forward(p, journal)
            except OSError as exc:  # after the commit point: the journal stays, the next open() finishes
                raise CommitIncomplete(exc.errno, f"the outputs are committed but not all moved into place "
                                       f"({exc.strerror or exc}); the next run into this directory finishes the "
                                       "move", exc.filename) from exc  # fmt: skip
        return [n for n in names if n != MANIFEST]

    def discard(self) -> None:
        """Delete every staged file: the directory keeps exactly the files it had."""
        self._removed.clear()
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None

    def close(self) -> None:
        """Discard what was not committed and release the lock."""
        self.discard()
        for created in self._created:  # a refused run leaves no empty --out behind (lock still held)
            try:
                created.rmdir()
            except OSError:  # not empty (a store of finished results) or gone: kept
                break
        self._created = []
        if self._fd is not None:
            os.close(self._fd)  # releases the flock
            self._fd = None


def _step(what: str) -> None:
    """A named step of the commit: fault-injection tests replace this to stop a run there."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    """Flush a staged file (or every file of a staged folder) to disk; a full disk shows here."""
    if path.is_dir() and not path.is_symlink():
        for child in path.iterdir():
            _fsync_tree(child)
        _fsync_dir(path)
    elif path.is_file():
        try:
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        except OSError as exc:
            if exc.filename is None:
                exc.filename = str(path)
            raise


def _roll_forward(directory: Path, journal: Path) -> None:
    """Finish a committed journal: move its files into ``directory`` (each step idempotent, so a
    run killed half-way is finished by the next), delete the removed names, delete the journal."""
    listing = loads_json((journal / _LIST).read_text(encoding="utf-8"))
    for name in listing["removed"]:
        target = directory / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)
        _step(f"removed {name}")
    for name in listing["files"]:
        staged, target = journal / name, directory / name
        if not staged.exists() and not staged.is_symlink():
            continue  # moved in before a kill
        if staged.is_dir() and target.is_dir() and not target.is_symlink():
            old = journal / (".old-" + name)
            shutil.rmtree(old, ignore_errors=True)
            os.rename(target, old)
        os.replace(staged, target)
        _step(f"moved {name}")
    _fsync_dir(directory)
    shutil.rmtree(journal, ignore_errors=True)
    _step("journal deleted")


def recover(path: str | os.PathLike) -> None:
    """Finish the commit of a run killed after its commit point and delete the staging folders
    of runs killed before it. Call only while holding the directory's lock (``OutputDir.open``
    does)."""
    _recover(Path(path))


def _recover(p: Path) -> None:
    for journal in sorted(p.glob(_JOURNAL + "*")):
        if (journal / _LIST).is_file():
            _roll_forward(p, journal)
        else:  # pragma: no cover - a journal is renamed into place complete
            shutil.rmtree(journal, ignore_errors=True)
    for stale in p.glob(_STAGING + "*"):  # left by a killed run: we hold the lock, so nobody uses it
        shutil.rmtree(stale, ignore_errors=True)


_DEFERRED = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C, SIGTERM and SIGHUP back while the files move in: the commit finishes, then
    the signal is delivered."""
    block = hasattr(signal, "pthread_sigmask") and threading.current_thread() is threading.main_thread()
    if block:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED)
    try:
        yield
    finally:
        if block:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
