"""The errors of a sweep: failed tasks (``SweepError``, ``TaskFailure``), a store that cannot be
used (``StoreError``) or holds another sweep (``StoreMismatch``), a scheduler that does not
answer (``SchedulerTimeout``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TaskFailure", "SweepError", "StoreMismatch", "StoreError", "SchedulerTimeout", "store_error"]

FAILURES_SHOWN = 10


@dataclass(frozen=True)
class TaskFailure:
    """One failed task: its position in the task list, id, parameters, error and traceback."""

    position: int
    task_id: str
    params: dict
    error: str
    traceback: str


class SweepError(RuntimeError):
    """Raised at the end of a sweep in which some tasks failed; ``failures`` lists them."""

    def __init__(self, failures: Sequence[TaskFailure], total: int, store: Path | None) -> None:
        self.failures = list(failures)
        lines = [f"{len(self.failures)} of {total} tasks failed:"]
        for f in self.failures[:FAILURES_SHOWN]:
            lines.append(f"  task {f.position} {json.dumps(f.params)}: {f.error}")
        if len(self.failures) > FAILURES_SHOWN:
            lines.append(f"  ... and {len(self.failures) - FAILURES_SHOWN} more")
        if store is not None:
            lines.append(f"The other tasks' results are kept in {store}; a rerun retries only the failed tasks.")
        super().__init__("\n".join(lines))


class StoreMismatch(ValueError):
    """The store holds a different sweep (``path``, ``difference``: what differs, briefly)."""

    def __init__(self, path: Path, difference: str) -> None:
        super().__init__(
            f"store {path} holds a different sweep; use another store path, or delete this one to start over "
            f"({difference})"
        )
        self.path, self.difference = path, difference


class StoreError(ValueError):
    """The store cannot be read or written (damaged, disk full, read-only); the message names the
    file and says whether the finished results in it are intact."""


class SchedulerTimeout(ConnectionError):
    """A peer accepted the connection but completed no Dask handshake within the time given."""


def store_error(path: Path, exc: BaseException, writing: bool, finished: int | None = None) -> StoreError:
    """The ``StoreError`` of a failed read or write of the store at ``path``."""
    damaged = isinstance(exc, ValueError) or "malformed" in str(exc) or "not a database" in str(exc)
    if damaged:
        state = "the store is damaged: finished results in it may be lost; move it away and rerun to start over"
    elif finished is not None:
        state = f"the {finished} task(s) finished before are intact in it; fix the cause and rerun to resume"
    else:
        state = "finished results in it are intact; fix the cause and rerun to resume"
    verb = "write to" if writing else "read"
    return StoreError(f"cannot {verb} sweep store {path} ({type(exc).__name__}: {exc}); {state}")
