"""A tolerant console: stdout and stderr for the length of a command, where a write to a console
that has gone (a closed pipe, a hung-up terminal) is dropped instead of failing a run that may
have finished."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import sys
from collections.abc import Iterator
from typing import Any, TextIO

__all__ = ["Console", "tolerant_console"]

_GONE = (errno.EPIPE, errno.EIO, errno.EBADF)


class Console:
    """A text stream whose writes stop, silently, once the console behind it has gone."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.lost = False

    def write(self, text: str) -> int:
        if not self.lost:
            try:
                return self._stream.write(text)
            except (BrokenPipeError, ConnectionResetError) as exc:
                self._lose(exc)
            except OSError as exc:
                if exc.errno not in _GONE:
                    raise
                self._lose(exc)
        return len(text)

    def flush(self) -> None:
        if not self.lost:
            try:
                self._stream.flush()
            except OSError as exc:
                if exc.errno not in _GONE:
                    raise
                self._lose(exc)

    def _lose(self, exc: OSError) -> None:
        self.lost = True
        try:  # later writes by Python itself (at exit) go nowhere instead of failing
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def tolerant_console() -> Iterator[None]:
    """``sys.stdout`` and ``sys.stderr`` as ``Console`` streams while the block runs."""
    before = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = Console(sys.stdout), Console(sys.stderr)  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stdout, sys.stderr = before
