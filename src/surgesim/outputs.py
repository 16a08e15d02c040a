"""Output files that are never half-written or mixed: atomic writes, strict JSON, and an output
directory owned by one run at a time.

- ``atomic_path(path)``: write to a temporary file beside ``path``, then rename it over ``path``
  (atomic on POSIX): a reader sees the old file or the new one, never a partial one, and a failed
  write leaves the old file byte-identical.
- ``dumps_json(obj)``: strict JSON (RFC 8259) for summary files: no ``NaN``/``Infinity`` tokens.
  A non-finite float is written as the string ``"inf"``, ``"-inf"`` or ``"nan"`` (``loads_json``
  reads them back as floats); NumPy scalars and arrays become numbers and lists.
- ``OutputDir(path)``: the output directory of one run. Entering it creates the directory and
  takes an exclusive lock on it (a second run into the same directory fails at once with a clear
  error). Files written through ``out / name`` go to a staging folder inside it and replace the
  directory's files only at ``commit()``, when the run has succeeded; ``discard()`` (a refused or
  failed run) deletes them, so every file already in the directory stays byte-identical. A file
  that must be written while the run goes on (a resumable store) is opened in place via
  ``out.final(name)``.

>>> import json, math
>>> dumps_json({"b_noise": math.inf, "n": 3})
'{\\n  "b_noise": "inf",\\n  "n": 3\\n}\\n'
>>> loads_json(dumps_json({"x": -math.inf}))["x"]
-inf
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["OutputDir", "OutputDirBusy", "atomic_path", "dumps_json", "loads_json"]

_STAGING = ".surgesim-staging-"
_NONFINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}

try:  # POSIX; elsewhere the directory is not locked
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]


class OutputDirBusy(ValueError):
    """Another run holds the output directory's lock."""


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed over ``path`` on success, deleted on
    any error (``path`` itself is then untouched)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


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

    >>> import tempfile
    >>> with OutputDir(tempfile.mkdtemp()) as out:
    ...     _ = (out / "a.txt").write_text("hello")
    ...     out.commit()
    ['a.txt']
    >>> (out.path / "a.txt").read_text()
    'hello'
    """

    def __init__(self, path: str | os.PathLike) -> None:
        if str(path).strip() == "":
            raise ValueError("the output directory must be a non-empty path")
        self.path = Path(path)
        self._fd: int | None = None
        self._staging: Path | None = None
        self._removed: set[str] = set()

    def __enter__(self) -> OutputDir:
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()

    def open(self) -> None:
        """Create the directory, lock it (``OutputDirBusy`` if another run holds it) and start a
        fresh staging folder (removing any left by a killed run)."""
        p = self.path
        if p.exists() and not p.is_dir():
            raise ValueError(f"output directory {str(p)!r} exists and is not a directory")
        p.mkdir(parents=True, exist_ok=True)
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
        for stale in p.glob(_STAGING + "*"):  # left by a killed run: we hold the lock, so nobody uses it
            shutil.rmtree(stale, ignore_errors=True)
        self._staging = Path(tempfile.mkdtemp(prefix=_STAGING, dir=p))

    def __truediv__(self, name: str) -> Path:
        """Where to write the output ``name``: a staging path, moved into place by ``commit()``."""
        if self._staging is None:
            raise RuntimeError("OutputDir is not open")
        if Path(name).name != name or name.startswith(_STAGING):
            raise ValueError(f"output file names must be plain names, got {name!r}")
        return self._staging / name

    def final(self, name: str) -> Path:
        """The real path of ``name`` in the directory, for files written in place during the run."""
        return self.path / name

    def __str__(self) -> str:
        return str(self.path)

    def remove(self, name: str) -> None:
        """Delete the directory's file ``name`` at ``commit()`` (before the staged files move in)."""
        self / name  # the same name check
        self._removed.add(name)

    def commit(self) -> list[str]:
        """Move every staged file into the directory (each rename atomic); returns their names."""
        if self._staging is None:
            return []
        for name in sorted(self._removed):
            (self.path / name).unlink(missing_ok=True)
        self._removed.clear()
        names = sorted(f.name for f in self._staging.iterdir())
        for name in names:
            staged = self._staging / name
            if staged.is_file():
                with open(staged, "rb") as f:
                    os.fsync(f.fileno())
            os.replace(staged, self.path / name)
        shutil.rmtree(self._staging, ignore_errors=True)
        self._staging = None
        return names

    def discard(self) -> None:
        """Delete every staged file: the directory keeps exactly the files it had."""
        self._removed.clear()
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None

    def close(self) -> None:
        """Discard what was not committed and release the lock."""
        self.discard()
        if self._fd is not None:
            os.close(self._fd)  # releases the flock
            self._fd = None
