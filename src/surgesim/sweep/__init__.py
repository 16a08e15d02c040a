"""Sweeps: grids of independent deterministic tasks, run on local processes or a Dask cluster,
with a resumable results store.

A sweep is a list of tasks, each a dict of JSON-serialisable parameters, and a module-level
function ``fn(params) -> dict | list[dict]`` returning result rows (flat dicts of JSON values;
NumPy scalars are accepted and stored as Python numbers). Each task must be a pure function of
its parameters (put the seed and every stream id in them: see ``surgesim.rng``), so results do
not depend on the executor, the worker count, the completion order, or on whether the sweep was
interrupted and resumed. ``fn`` receives its parameters as decoded from their canonical JSON
(tuples arrive as lists), the same on every executor.

The public API: ``run_sweep`` (run, resume), ``load_rows`` (the finished rows of a store),
``write_csv`` (rows to CSV, floats exact, written atomically), ``task_id`` (a task's id),
``SweepError`` and ``TaskFailure`` (failed tasks), ``StoreError`` (a store that cannot be read or
written: damaged, disk full; the message names it and says whether its finished results are
intact). Example (``fn`` must be importable, not a lambda or a local
function, for worker processes)::

    from surgesim.progress import progress_bar
    from surgesim.sweep import run_sweep, write_csv
    from mypkg.tasks import one_batch_size          # def one_batch_size(params, problem): ...

    tasks = [{"batch_size": b, "trials": 10_000, "seed": 7} for b in (1, 4, 16, 64)]
    with progress_bar(quiet=False, desc="batch sizes") as progress:  # tqdm bar on a terminal
        rows = run_sweep(
            one_batch_size, tasks,
            params={"dims": 1000, "problem_sha256": digest},  # the sweep's identity, with the tasks
            shared=problem,             # sent once to each worker, passed as fn's 2nd argument
            store="out/sweep.sqlite",   # resumable: finished tasks are skipped on a rerun
            scheduler=None,             # local processes; "local:4"; "tcp://10.0.0.5:8786"
            progress=progress,
        )
    write_csv(rows, "out/results.csv")

Executors (``scheduler``):

- ``None``: the Dask scheduler named by the environment variable ``DASK_SCHEDULER_ADDRESS`` if it
  is set and not empty (dask's own convention) and ``workers`` is not given, otherwise local
  processes: a
  ``concurrent.futures.ProcessPoolExecutor`` (forkserver context where available, else spawn) with
  ``workers`` processes (default ``os.cpu_count()``). ``workers=1`` runs every task in this process,
  one after the other, for debugging. A ``fn`` that is itself multithreaded (Numba parallel, BLAS)
  should get fewer workers, or fewer threads each, to avoid oversubscribing the cores.
- ``"local:N"``: starts a ``dask.distributed.LocalCluster`` of N (1 .. 8 per CPU) single-threaded worker processes
  on 127.0.0.1, for users who want Dask's dashboard (its address is logged at INFO level by the
  ``surgesim.sweep`` logger; the dashboard needs ``bokeh``).
- ``"tcp://HOST:PORT"`` (or ``tls://``): connects a ``dask.distributed.Client`` to a running
  scheduler (``dask scheduler`` + ``dask worker ADDRESS``) and submits the tasks as futures.
  Workers must be able to import ``fn``'s module.

Dask is the optional extra ``dist`` (``pip install 'surgesim[dist]'``) and is imported only when
a Dask scheduler is used.

The store is one SQLite file (stdlib ``sqlite3``). SQLite because each finished task is committed
in one atomic transaction (its rows and its status together), so a crash or ``kill -9`` loses only
the tasks in flight and never leaves partial rows; it is a single file, needs no dependency beyond
the standard library, and every tool reads it (the ``sqlite3`` shell, pandas, R, DuckDB). Only the
process that calls ``run_sweep`` writes to it; workers just compute. Tables:

- ``sweep(key, value)``: ``format`` and ``params`` (the canonical JSON of the sweep parameters);
- ``tasks(position, task_id, params, status, seconds, error)``: every task of the sweep, in order,
  with status ``pending``, ``done`` or ``failed`` (and the error of its last attempt);
- ``rows(task_id, row_index, data)``: the rows of finished tasks, one JSON object each.

A rerun into the same store skips finished tasks and retries pending and failed ones; its result
is identical to an uninterrupted run's. The store is bound to its sweep: a rerun whose ``params``
or task list (ids and order) differ raises ``ValueError`` naming what differs, rather than
mixing results. ``fn`` is not part of the identity: name it in ``params`` if needed, together with
a digest of ``shared``.

A task that raises does not stop the sweep: the failure is logged (WARNING) as it happens and
recorded in the store, every other task runs and is kept, and at the end ``run_sweep`` raises
one ``SweepError`` whose ``failures`` give each failed task's parameters, error and traceback.
``load_rows(store)`` then returns the finished tasks' rows.

Modules: ``tasks`` (canonical parameters, task ids), ``executors`` (local: this process, a
process pool), ``scheduler`` (Dask), ``store`` (the SQLite store), ``csvfile`` (``write_csv``),
``errors``; this package runs a sweep over them (``run_sweep``) and re-exports their public names.

"""

from __future__ import annotations

import json
import logging
import os
import pickle
from collections.abc import Callable, Iterable, Mapping
from contextlib import closing
from pathlib import Path
from typing import Any, Literal, overload

from .csvfile import write_csv
from .errors import SchedulerTimeout, StoreError, StoreMismatch, SweepError, TaskFailure
from .executors import Outcome, run_processes, run_serial
from .scheduler import (
    CONNECT_TIMEOUT,
    MAX_LOCAL_WORKERS_PER_CPU,
    check_scheduler,
    import_distributed,
    probe_scheduler,
    resolve_scheduler,
    run_dask,
)
from .store import check_store, finished_rows, load_rows, open_store, store_writes, task_row
from .store import commit_done as _commit_done  # looked up here at each call (tests replace it)
from .store import commit_failed as _commit_failed
from .tasks import Task, encode_params, prepare_tasks, task_id

__all__ = [
    "run_sweep", "check_scheduler", "check_store", "task_id", "load_rows", "write_csv", "SweepError", "StoreError",
    "StoreMismatch", "TaskFailure", "SchedulerTimeout", "task_row", "CONNECT_TIMEOUT", "MAX_LOCAL_WORKERS_PER_CPU",
]  # fmt: skip

_log = logging.getLogger(__name__)


def _check_arguments(fn: Callable, workers: int | None, scheduler: str | None, connect_timeout: float) -> str | None:
    """Refuse bad arguments before the store is touched; the Dask scheduler's address (probed),
    or None for local processes."""
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}: {fn!r}")
    if workers is not None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
        if scheduler is not None:
            raise ValueError(
                f"workers={workers} applies to local processes; the Dask scheduler {scheduler!r} has its own"
            )
    # An explicit worker count selects local processes, whatever DASK_SCHEDULER_ADDRESS says.
    resolved = resolve_scheduler(scheduler) if workers is None else None
    if not (isinstance(connect_timeout, (int, float)) and 0 < connect_timeout < float("inf")):
        raise ValueError(f"connect_timeout must be a positive number of seconds, got {connect_timeout!r}")
    if resolved is not None and not resolved.startswith("local:"):  # before the store is touched
        probe_scheduler(import_distributed(resolved), resolved, connect_timeout)
    return resolved


def _check_picklable(fn: Callable, shared_args: tuple) -> None:
    try:
        pickle.dumps(fn)
        pickle.dumps(shared_args)
    except Exception as exc:
        raise TypeError(
            f"fn and shared must be picklable to reach worker processes ({exc}): define fn at module "
            "level, or pass workers=1 to run in this process"
        ) from None


@overload
def run_sweep(
    fn: Callable[..., dict | list[dict]],
    tasks: Iterable[Mapping[str, Any]],
    *,
    params: Mapping[str, Any] | None = None,
    store: str | os.PathLike | None = None,
    scheduler: str | None = None,
    workers: int | None = None,
    shared: Any = None,
    progress: Callable[[int, int], None] | None = None,
    connect_timeout: float = CONNECT_TIMEOUT,
    per_task: Literal[False] = False,
) -> list[dict]: ...


@overload
def run_sweep(
    fn: Callable[..., dict | list[dict]],
    tasks: Iterable[Mapping[str, Any]],
    *,
    params: Mapping[str, Any] | None = None,
    store: str | os.PathLike | None = None,
    scheduler: str | None = None,
    workers: int | None = None,
    shared: Any = None,
    progress: Callable[[int, int], None] | None = None,
    connect_timeout: float = CONNECT_TIMEOUT,
    per_task: Literal[True],
) -> list[list[dict]]: ...


@overload
def run_sweep(
    fn: Callable[..., dict | list[dict]],
    tasks: Iterable[Mapping[str, Any]],
    *,
    params: Mapping[str, Any] | None = None,
    store: str | os.PathLike | None = None,
    scheduler: str | None = None,
    workers: int | None = None,
    shared: Any = None,
    progress: Callable[[int, int], None] | None = None,
    connect_timeout: float = CONNECT_TIMEOUT,
    per_task: bool = False,
) -> list[dict] | list[list[dict]]: ...


def run_sweep(
    fn: Callable[..., dict | list[dict]],
    tasks: Iterable[Mapping[str, Any]],
    *,
    params: Mapping[str, Any] | None = None,
    store: str | os.PathLike | None = None,
    scheduler: str | None = None,
    workers: int | None = None,
    shared: Any = None,
    progress: Callable[[int, int], None] | None = None,
    connect_timeout: float = CONNECT_TIMEOUT,
    per_task: bool = False,
) -> list[dict] | list[list[dict]]:
    """Run ``fn`` on every task and return all rows in task order (see the module docstring).

    Args:
        fn: module-level function ``fn(params)`` (or ``fn(params, shared)`` when ``shared`` is
            given) returning a row (dict) or a list of rows.
        tasks: distinct dicts of JSON-serialisable parameters, one per task.
        params: the sweep's own parameters (a JSON-serialisable dict), recorded in the store
            with the task list as the sweep's identity.
        store: path of the SQLite results store (created with its parent directories), or None
            to keep results in memory only.
        scheduler: None (``DASK_SCHEDULER_ADDRESS`` if set, else local processes),
            ``"local:N"`` or ``"tcp://HOST:PORT"``.
        workers: local processes (default ``os.cpu_count()``); 1 runs in this process. Giving
            it selects local processes even if ``DASK_SCHEDULER_ADDRESS`` is set; it is an error
            with an explicit Dask ``scheduler``, whose cluster has its own workers.
        shared: an optional picklable object (e.g. a QuadraticProblem) sent once to each
            worker and passed as fn's second argument.
        progress: called as ``progress(done, total)`` at the start (done = tasks already in the
            store) and after each task finishes or fails; for tasks run in this process
            (workers=1) also with a fractional done as the task calls ``surgesim.progress.report``.
        connect_timeout: seconds to reach a ``tcp://`` / ``tls://`` scheduler and complete Dask's
            handshake; a peer that stays silent or answers in another protocol is a
            ``ConnectionError`` saying so.
        per_task: return one list of rows per task (in task order) instead of all rows in one
            list, so that callers join rows to their task by the task, not by position.

    Returns:
        The rows of all tasks, in task order and, within a task, in fn's order, each decoded
        from its stored JSON: identical for every executor, worker count and resumption.

    Raises:
        ValueError / TypeError: bad arguments, or a store written by a different sweep.
        StoreError: the store cannot be read or written (the message says whether the finished
            results in it are intact).
        ConnectionError: the scheduler cannot be reached or is not a Dask scheduler.
        SweepError: after all tasks ran, if some failed (their parameters and errors listed).
    """
    task_list = prepare_tasks(tasks)
    params_json = encode_params({} if params is None else params, "params")
    resolved = _check_arguments(fn, workers, scheduler, connect_timeout)
    n_workers = workers if workers is not None else (os.cpu_count() or 1)
    shared_args = () if shared is None else (shared,)
    if resolved is None and n_workers > 1:
        _check_picklable(fn, shared_args)
    store_path = None if store is None else Path(store)
    conn = None if store_path is None else open_store(store_path, params_json, task_list)
    try:
        results = {} if conn is None or store_path is None else finished_rows(conn, store_path)
        pending = [t for t in task_list if t.position not in results]
        total = len(task_list)
        _log.info("sweep: %d tasks, %d already finished%s", total, len(results), f" in {store_path}" if conn else "")
        if progress is not None:
            progress(len(results), total)
        done = len(results)
        if resolved is not None and pending:
            outcomes = run_dask(fn, pending, shared_args, resolved, connect_timeout)
        elif n_workers == 1 or not pending:
            within = None if progress is None else (lambda f: progress(min(done + f, total), total))
            outcomes = run_serial(fn, pending, shared_args, within)
        else:
            outcomes = run_processes(fn, pending, shared_args, min(n_workers, len(pending)))
        failures: list[TaskFailure] = []
        with closing(outcomes):  # shuts a pool or cluster down on any exit
            for position, outcome in outcomes:
                failure = _record(conn, store_path, task_list[position], outcome, results)
                if failure is not None:
                    failures.append(failure)
                done += 1
                if progress is not None:
                    progress(done, total)
    finally:
        if conn is not None:
            conn.close()
    if failures:
        raise SweepError(sorted(failures, key=lambda f: f.position), total, store_path)
    if per_task:
        return [results[t.position] for t in task_list]
    return [row for t in task_list for row in results[t.position]]


def _record(conn: Any, store_path: Path | None, task: Task, outcome: Outcome, results: dict) -> TaskFailure | None:
    """One task's outcome: its rows into ``results`` (and the store), or its failure (logged and
    stored)."""
    status, text, extra = outcome
    if status == "ok":
        rows = json.loads(text)
        if conn is not None and store_path is not None:
            with store_writes(store_path, len(results)):
                _commit_done(conn, task, rows, extra)
        results[task.position] = rows
        return None
    failure = TaskFailure(task.position, task.task_id, json.loads(task.params_json), text, extra)
    _log.warning("task %d %s failed: %s", task.position, json.dumps(failure.params), text)
    if conn is not None and store_path is not None:
        with store_writes(store_path, len(results)):
            _commit_failed(conn, task, text, extra)
    return failure
