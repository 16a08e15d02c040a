"""Local executors of a sweep's tasks: one after the other in this process, or a process pool.
Each yields ``(position, outcome)`` as tasks complete; an outcome is ``("ok", rows_json,
seconds)`` or ``("error", "Type: message", traceback_text)`` (``run_task``)."""

from __future__ import annotations

import json
import multiprocessing
import time
import traceback
from collections.abc import Callable, Generator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import as_completed as _futures_as_completed
from typing import Any

from .tasks import Task, encode_rows

__all__ = ["Outcome", "run_task", "failure", "run_serial", "run_processes"]

Outcome = tuple[str, str, Any]


def failure(exc: BaseException, tb: str = "") -> Outcome:
    """The "error" outcome of an exception."""
    return ("error", f"{type(exc).__name__}: {exc}", tb)


def run_task(fn: Callable, params_json: str, *shared: Any) -> Outcome:
    """Call fn on one task and encode its rows; an exception becomes an "error" outcome."""
    start = time.perf_counter()
    try:
        text = encode_rows(fn(json.loads(params_json), *shared))
    except Exception as exc:
        return failure(exc, traceback.format_exc())
    return ("ok", text, time.perf_counter() - start)


# The shared object of a process pool, set once per worker by the pool's initializer so that it
# is pickled once per worker rather than once per task.
_pool_shared: tuple = ()


def _init_pool_worker(shared: tuple) -> None:
    global _pool_shared
    _pool_shared = shared


def _run_pooled_task(fn: Callable, params_json: str) -> Outcome:
    return run_task(fn, params_json, *_pool_shared)


def run_serial(
    fn: Callable, pending: list[Task], shared: tuple, within: Callable[[float], None] | None = None
) -> Generator[tuple[int, Outcome], None, None]:
    """The tasks in this process, in order; ``within`` receives their ``progress.report`` calls."""
    from ..progress import within_task

    for t in pending:
        with within_task(within):  # progress.report inside the task reaches the caller's progress
            outcome = run_task(fn, t.params_json, *shared)
        yield t.position, outcome


def run_processes(
    fn: Callable, pending: list[Task], shared: tuple, workers: int
) -> Generator[tuple[int, Outcome], None, None]:
    """The tasks on a pool of ``workers`` processes (forkserver where available, else spawn)."""
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context(method),
        initializer=_init_pool_worker,
        initargs=(shared,),
    )
    try:
        futures = {pool.submit(_run_pooled_task, fn, t.params_json): t.position for t in pending}
        for fut in _futures_as_completed(futures):
            try:
                outcome = fut.result()
            except Exception as exc:  # the pool itself failed: a worker died, or unpickling failed
                outcome = failure(exc)
            yield futures[fut], outcome
    except BaseException:
        # An early exit (Ctrl-C, SIGTERM, an error in the caller): stop the tasks in flight too, whose
        # results would be lost anyway, instead of waiting minutes for them (a signal sent to this
        # process alone does not reach the workers).
        for proc in list((getattr(pool, "_processes", None) or {}).values()):
            proc.terminate()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # drops the tasks not yet started
