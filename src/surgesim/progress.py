"""Progress reporting for long runs: a ``progress(done, total)`` callback that shows a tqdm bar
(tasks done / total, rate, ETA) on a terminal and stays silent when quiet or not a terminal
(logs, pipes, CI), so the library itself never prints.

Example, with ``surgesim.sweep.run_sweep`` (which calls ``progress(done, total)`` once at the start,
with done = tasks already finished in its store, and after each task)::

    with progress_bar(quiet=opts.quiet, desc="batch sizes") as progress:
        rows = run_sweep(fn, tasks, store=path, progress=progress)

On a resumed sweep the bar starts at the tasks already done and its rate and ETA count only the
tasks run now.

Inside a task: a long computation calls ``report(fraction)`` (the fraction of the task done, 0 to
1); ``run_sweep`` running tasks in this process forwards it as ``progress(done + fraction,
total)``, so one long task does not show 0/1 for its whole life. Elsewhere ``report`` does
nothing. Off a terminal (a log, a pipe) and not quiet, the bar is a plain line every 30 s.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from types import TracebackType
from typing import IO

from tqdm import tqdm

__all__ = ["Progress", "ProgressBar", "part", "progress_bar", "report", "within_task"]

Progress = Callable[[str], AbstractContextManager[Callable[[int, int], None] | None]]
"""Progress bars by description, for a run of several sweeps: ``lambda desc: progress_bar(desc=desc)``
gives each a context holding its ``progress(done, total)`` callback (None: no bar)."""

_within: Callable[[float], None] | None = None
LINE_SECONDS = 30.0  # off a terminal: one plain progress line at most this often


def report(fraction: float) -> None:
    """Called inside a task by a long computation: ``fraction`` (0 to 1) of the task is done."""
    if _within is not None:
        _within(min(max(float(fraction), 0.0), 1.0))


@contextmanager
def within_task(callback: Callable[[float], None] | None) -> Iterator[None]:
    """Forward ``report(fraction)`` calls to ``callback`` while the block runs (one task)."""
    global _within
    before, _within = _within, callback
    try:
        yield
    finally:
        _within = before


@contextmanager
def part(lo: float, hi: float) -> Iterator[None]:
    """Inside the block, ``report(f)`` reports ``lo + f (hi - lo)`` of the enclosing task (a task
    made of steps of known shares)."""
    outer = _within
    with within_task(None if outer is None else (lambda f: outer(lo + (hi - lo) * f))):
        yield


class ProgressBar:
    """A ``progress(done, total)`` callback drawing one tqdm bar; see ``progress_bar``.

    The bar closes itself when done reaches total, on ``close()``, or on leaving a ``with`` block.
    """

    def __init__(self, quiet: bool = False, desc: str | None = None, file: IO[str] | None = None) -> None:
        self._file = sys.stderr if file is None else file
        isatty = getattr(self._file, "isatty", None)
        self.enabled = not quiet and callable(isatty) and bool(isatty())
        self._lines = not quiet and not self.enabled  # off a terminal: a plain line now and then
        self._desc = desc
        self._bar: tqdm | None = None
        self._start = self._last = time.monotonic()

    def __call__(self, done: float, total: int) -> None:
        if not 0 <= done <= total:
            raise ValueError(f"progress needs 0 <= done <= total, got done={done}, total={total}")
        if self._lines:
            now = time.monotonic()
            if now - self._last >= LINE_SECONDS:
                self._last = now
                print(f"{self._desc or 'progress'}: {done:.3g} of {total} done ({done / total:.0%}), "
                      f"{now - self._start:.0f} s", file=self._file, flush=True)  # fmt: skip
            return
        if not self.enabled:
            return
        if self._bar is None:
            # initial=done: tasks finished before this run (a resumed sweep) count toward done
            # but not toward the rate, so the ETA reflects this run's speed.
            self._bar = tqdm(
                total=total, initial=done, desc=self._desc, unit="task", file=self._file, dynamic_ncols=True
            )
        else:
            self._bar.update(done - self._bar.n)
        if done == total:
            self.close()

    def close(self) -> None:
        """Close the bar (leaving its last state on screen); later calls are ignored."""
        if self._bar is not None:
            self._bar.close()
        self._bar = None
        self.enabled = self._lines = False

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def progress_bar(quiet: bool = False, desc: str | None = None, file: IO[str] | None = None) -> ProgressBar:
    """A ``progress(done, total)`` callback: a tqdm bar on ``file`` (default stderr) if it is a
    terminal and not ``quiet``; otherwise a silent no-op.

    >>> import io
    >>> progress = progress_bar(file=io.StringIO())  # not a terminal: silent
    >>> progress(0, 3); progress(3, 3)
    """
    return ProgressBar(quiet=quiet, desc=desc, file=file)
