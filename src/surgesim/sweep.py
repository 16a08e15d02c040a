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
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import multiprocessing
import os
import pickle
import re
import sqlite3
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import as_completed as _futures_as_completed
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .outputs import atomic_path

__all__ = [
    "run_sweep", "check_scheduler", "check_store", "task_id", "load_rows", "write_csv", "SweepError", "StoreError",
    "StoreMismatch", "TaskFailure",
]  # fmt: skip

_log = logging.getLogger(__name__)

_FORMAT = "surgesim-sweep-1"
_ENV_SCHEDULER = "DASK_SCHEDULER_ADDRESS"
_DASK_URL = re.compile(r"^(tcp|tls)://(\[[0-9A-Fa-f:.]+\]|[^\s/:\[\]]+):(\d{1,5})$")
_DIST_HINT = "pip install 'surgesim[dist]'"
_FAILURES_SHOWN = 10
CONNECT_TIMEOUT = 10.0  # seconds to reach a Dask scheduler and complete its handshake
MAX_LOCAL_WORKERS_PER_CPU = 8  # "local:N" beyond this would start more processes than help

# An outcome travels from a worker back to the caller: ("ok", rows_json, seconds) or
# ("error", "Type: message", traceback_text).
_Outcome = tuple[str, str, Any]


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
        for f in self.failures[:_FAILURES_SHOWN]:
            lines.append(f"  task {f.position} {json.dumps(f.params)}: {f.error}")
        if len(self.failures) > _FAILURES_SHOWN:
            lines.append(f"  ... and {len(self.failures) - _FAILURES_SHOWN} more")
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


def _store_error(path: Path, exc: BaseException, writing: bool, finished: int | None = None) -> StoreError:
    damaged = isinstance(exc, ValueError) or "malformed" in str(exc) or "not a database" in str(exc)
    if damaged:
        state = "the store is damaged: finished results in it may be lost; move it away and rerun to start over"
    elif finished is not None:
        state = f"the {finished} task(s) finished before are intact in it; fix the cause and rerun to resume"
    else:
        state = "finished results in it are intact; fix the cause and rerun to resume"
    verb = "write to" if writing else "read"
    return StoreError(f"cannot {verb} sweep store {path} ({type(exc).__name__}: {exc}); {state}")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable: {obj!r}")


def _canonical(obj: Any) -> str:
    """Canonical JSON: sorted keys, no spaces, no NaN/inf, NumPy scalars as Python numbers."""
    return json.dumps(
        obj,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
        default=_json_default,
    )


def _encode_params(params: Any, what: str) -> str:
    if not isinstance(params, Mapping):
        raise TypeError(f"{what} must be a dict of JSON-serialisable values, got {type(params).__name__}: {params!r}")
    bad = [k for k in params if not isinstance(k, str)]
    if bad:
        raise TypeError(f"{what} keys must be strings, got {bad!r}")
    try:
        return _canonical(dict(params))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} is not JSON-serialisable ({exc}): {params!r}") from None


def task_id(params: Mapping[str, Any]) -> str:
    """The stable id of a task: the sha256 hex digest of its parameters' canonical JSON.

    >>> task_id({"b": 2, "a": 1}) == task_id({"a": 1, "b": 2})
    True
    """
    return hashlib.sha256(_encode_params(params, "task parameters").encode()).hexdigest()


@dataclass(frozen=True)
class _Task:
    position: int
    task_id: str
    params_json: str


def _prepare_tasks(tasks: Iterable[Mapping[str, Any]]) -> list[_Task]:
    out: list[_Task] = []
    seen: dict[str, int] = {}
    for i, params in enumerate(tasks):
        text = _encode_params(params, f"task {i}")
        tid = hashlib.sha256(text.encode()).hexdigest()
        if tid in seen:
            raise ValueError(f"tasks {seen[tid]} and {i} have the same parameters {text}: tasks must be distinct")
        seen[tid] = i
        out.append(_Task(i, tid, text))
    return out


# ---------------------------------------------------------------------------------------------
# Running one task (in a worker, or in this process)


def _dump_row(row: Mapping[str, Any]) -> str:
    # Rows are not key-sorted: their key order is the CSV column order. NaN and inf are allowed
    # (Python's json writes and reads them back exactly).
    return json.dumps(dict(row), separators=(",", ":"), ensure_ascii=False, default=_json_default)


def _encode_rows(result: Any) -> str:
    """fn's result (a row or a list of rows) as a JSON list, after checking its shape."""
    rows = [result] if isinstance(result, Mapping) else result
    if not isinstance(rows, list) or not all(isinstance(r, Mapping) for r in rows):
        raise TypeError(f"fn must return a dict or a list of dicts, got {type(result).__name__}")
    for r in rows:
        bad = [k for k in r if not isinstance(k, str)]
        if bad:
            raise TypeError(f"row keys must be strings, got {bad!r}")
    return "[" + ",".join(_dump_row(r) for r in rows) + "]"


def _failure(exc: BaseException, tb: str = "") -> _Outcome:
    return ("error", f"{type(exc).__name__}: {exc}", tb)


def _run_task(fn: Callable, params_json: str, *shared: Any) -> _Outcome:
    """Call fn on one task and encode its rows; an exception becomes an "error" outcome."""
    start = time.perf_counter()
    try:
        text = _encode_rows(fn(json.loads(params_json), *shared))
    except Exception as exc:
        return _failure(exc, traceback.format_exc())
    return ("ok", text, time.perf_counter() - start)


# The shared object of a process pool, set once per worker by the pool's initializer so that it
# is pickled once per worker rather than once per task.
_pool_shared: tuple = ()


def _init_pool_worker(shared: tuple) -> None:
    global _pool_shared
    _pool_shared = shared


def _run_pooled_task(fn: Callable, params_json: str) -> _Outcome:
    return _run_task(fn, params_json, *_pool_shared)


# ---------------------------------------------------------------------------------------------
# Executors: each yields (position, outcome) as tasks complete


def _run_serial(
    fn: Callable, pending: list[_Task], shared: tuple, within: Callable[[float], None] | None = None
) -> Iterator[tuple[int, _Outcome]]:
    from .progress import within_task

    for t in pending:
        with within_task(within):  # progress.report inside the task reaches the caller's progress
            outcome = _run_task(fn, t.params_json, *shared)
        yield t.position, outcome


def _run_processes(fn: Callable, pending: list[_Task], shared: tuple, workers: int) -> Iterator[tuple[int, _Outcome]]:
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
                outcome = _failure(exc)
            yield futures[fut], outcome
    finally:
        # On an early exit (an error in the caller, Ctrl-C) drop the tasks not yet started.
        pool.shutdown(wait=True, cancel_futures=True)


def _import_distributed(scheduler: str):
    try:
        import distributed
    except ImportError:
        raise ValueError(f"scheduler {scheduler!r} needs Dask distributed: {_DIST_HINT}") from None
    return distributed


def _probe_scheduler(distributed, address: str, timeout: float) -> None:
    """Connect to ``address`` and complete Dask's handshake within ``timeout`` seconds, or raise a
    ConnectionError saying what answered: Dask's own client would wait forever on a peer that
    accepts and stays silent, and misread a peer that talks another protocol."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    async def handshake() -> None:
        comm = await asyncio.wait_for(distributed.comm.connect(address, timeout=timeout), timeout)
        await comm.close()

    with ThreadPoolExecutor(1) as pool:  # its own event loop, whatever the caller runs
        try:
            pool.submit(asyncio.run, handshake()).result()
        except (asyncio.TimeoutError, TimeoutError):  # ours: connected, but no Dask handshake came back
            raise ConnectionError(
                f"no Dask scheduler answered at {address} within {timeout:g} s (a peer that accepts and stays "
                "silent, e.g. Dask's dashboard or a web server, is not a scheduler; schedulers listen on 8786 by "
                "default; connect_timeout / --connect-timeout sets the wait)"
            ) from None
        except OSError as exc:
            raise ConnectionError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
        except Exception as exc:  # a reply that is not Dask's protocol (a banner, an HTTP page)
            raise ConnectionError(
                f"the peer at {address} is not a Dask scheduler: its reply is not Dask's protocol "
                f"({type(exc).__name__})"
            ) from None


def _run_dask(
    fn: Callable, pending: list[_Task], shared: tuple, scheduler: str, connect_timeout: float = CONNECT_TIMEOUT
) -> Iterator[tuple[int, _Outcome]]:
    distributed = _import_distributed(scheduler)
    with ExitStack() as stack:
        if scheduler.startswith("local:"):
            cluster = stack.enter_context(
                distributed.LocalCluster(
                    n_workers=int(scheduler[6:]),
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address="127.0.0.1:0",
                )
            )
            _log.info(
                "Dask LocalCluster at %s, dashboard %s",
                cluster.scheduler_address,
                cluster.dashboard_link,
            )
            client = stack.enter_context(distributed.Client(cluster))
        else:  # reachable and a Dask scheduler: probed by run_sweep
            client = stack.enter_context(distributed.Client(scheduler, timeout=connect_timeout))
        # Scattered once (to every worker) and passed as a future: dask resolves it on the worker.
        shared_futures = [client.scatter([s], broadcast=True)[0] for s in shared]
        name = getattr(fn, "__name__", "task")
        futures = {
            client.submit(_run_task, fn, t.params_json, *shared_futures, key=f"{name}-{uuid.uuid4().hex}"): t.position
            for t in pending
        }
        try:
            for fut in distributed.as_completed(list(futures)):
                try:
                    outcome = fut.result()
                except Exception as exc:  # the cluster failed the task: KilledWorker, lost connection
                    outcome = _failure(exc)
                position = futures.pop(fut)
                fut.release()
                yield position, outcome
        finally:
            if futures:  # an early exit: cancel what is left rather than leave it on the cluster
                client.cancel(list(futures))


def _check_scheduler(scheduler: str, source: str) -> str:
    if not isinstance(scheduler, str):
        raise TypeError(f"{source} must be a string or None, got {type(scheduler).__name__}: {scheduler!r}")
    if scheduler.startswith("local:"):
        n, most = scheduler[6:], MAX_LOCAL_WORKERS_PER_CPU * (os.cpu_count() or 1)
        if n.isdigit() and 1 <= int(n) <= most:
            return scheduler
        raise ValueError(f"{source} {scheduler!r}: 'local:N' needs a worker count N >= 1 and <= {most} "
                         f"({MAX_LOCAL_WORKERS_PER_CPU} per CPU of this machine)")  # fmt: skip
    m = _DASK_URL.match(scheduler)
    if m and 1 <= int(m.group(3)) <= 65535:
        return scheduler
    raise ValueError(f"{source} must be 'local:N' (N >= 1) or 'tcp://HOST:PORT', got {scheduler!r}")


def check_scheduler(scheduler: str | None, connect_timeout: float = 10.0) -> str | None:
    """Check, before any work, the scheduler that ``run_sweep(scheduler=scheduler)`` would use
    (None: ``DASK_SCHEDULER_ADDRESS`` if set): its form, and for ``tcp://`` / ``tls://`` that a Dask
    scheduler answers within ``connect_timeout`` seconds. Returns the resolved address (None:
    local processes); an error names the environment variable when the address came from it."""
    resolved = _resolve_scheduler(scheduler)
    if resolved is not None and not resolved.startswith("local:"):
        try:
            _probe_scheduler(_import_distributed(resolved), resolved, connect_timeout)
        except (ConnectionError, ValueError) as exc:
            if scheduler is None:
                raise type(exc)(f"environment variable {_ENV_SCHEDULER}={resolved!r}: {exc}") from None
            raise
    return resolved


def _resolve_scheduler(scheduler: str | None) -> str | None:
    if scheduler is not None:
        return _check_scheduler(scheduler, "scheduler")
    env = os.environ.get(_ENV_SCHEDULER, "").strip()
    return _check_scheduler(env, f"environment variable {_ENV_SCHEDULER}") if env else None


# ---------------------------------------------------------------------------------------------
# The store


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


_SCHEMA = """
CREATE TABLE sweep (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE tasks (
    position INTEGER PRIMARY KEY,
    task_id TEXT NOT NULL UNIQUE,
    params TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'failed')),
    seconds REAL,
    error TEXT
);
CREATE TABLE rows (
    task_id TEXT NOT NULL REFERENCES tasks (task_id),
    row_index INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (task_id, row_index)
);
"""


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: no implicit transactions; every write is in an explicit one.
    return sqlite3.connect(path, timeout=60, isolation_level=None)


def _read_store_header(conn: sqlite3.Connection, path: Path) -> tuple[str, list[tuple[str, str]]] | None:
    """(params_json, [(task_id, params_json)] in order) of an existing store, None if it is empty."""
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            return None
        if not {"sweep", "tasks", "rows"} <= tables:
            raise ValueError(f"{path} is an SQLite file but not a surgesim sweep store (tables {sorted(tables)})")
        meta = dict(conn.execute("SELECT key, value FROM sweep"))
        tasks = conn.execute("SELECT task_id, params FROM tasks ORDER BY position").fetchall()
    except sqlite3.DatabaseError as exc:
        raise _store_error(path, exc, writing=False) from None
    if meta.get("format") != _FORMAT:
        raise ValueError(f"{path} has store format {meta.get('format')!r}, expected {_FORMAT!r}")
    return meta["params"], tasks


def _brief(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_store(store: str | os.PathLike, tasks: Iterable[Mapping[str, Any]], params: Mapping | None = None) -> None:
    """Refuse, before any work, a store that holds a different sweep than ``run_sweep(fn, tasks,
    params=params, store=store)`` would run (``StoreMismatch``); a missing store passes."""
    path = Path(store)
    if not path.is_file():
        return
    task_list = _prepare_tasks(tasks)
    params_json = _encode_params({} if params is None else params, "params")
    conn = _connect(path)
    try:
        header = _read_store_header(conn, path)
    finally:
        conn.close()
    if header is not None:
        stored_params, stored_tasks = header
        if stored_params != params_json or [tid for tid, _ in stored_tasks] != [t.task_id for t in task_list]:
            raise StoreMismatch(path, _describe_difference(stored_params, params_json, stored_tasks, task_list))


def _describe_difference(
    stored_params: str, params: str, stored_tasks: list[tuple[str, str]], tasks: list[_Task]
) -> str:
    parts = []
    old, new = json.loads(stored_params), json.loads(params)
    for key in sorted(old.keys() | new.keys()):
        if key not in new:
            parts.append(f"parameter {key!r} was {_brief(old[key])}, now absent")
        elif key not in old:
            parts.append(f"parameter {key!r} is new ({_brief(new[key])})")
        elif old[key] != new[key]:
            parts.append(f"parameter {key!r} was {_brief(old[key])}, now {_brief(new[key])}")
    old_ids = {tid: p for tid, p in stored_tasks}
    new_ids = {t.task_id: t.params_json for t in tasks}
    gone = [p for tid, p in stored_tasks if tid not in new_ids]
    added = [t.params_json for t in tasks if t.task_id not in old_ids]
    if gone:
        parts.append(f"{len(gone)} stored task(s) are not in this sweep, e.g. {_brief(gone[0])}")
    if added:
        parts.append(f"{len(added)} task(s) are new, e.g. {_brief(added[0])}")
    if not gone and not added and [tid for tid, _ in stored_tasks] != [t.task_id for t in tasks]:
        parts.append("the same tasks are in a different order")
    return "; ".join(parts)


def _open_store(path: Path, params_json: str, tasks: list[_Task]) -> sqlite3.Connection:
    """Open (or create) the store bound to this sweep; refuse one written by a different sweep."""
    if path.is_dir():
        raise ValueError(f"store must be a file path, {path} is a directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = _connect(path)
    try:
        header = _read_store_header(conn, path)
        if header is None:
            with _store_writes(path, None), _transaction(conn):
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.executemany(
                    "INSERT INTO sweep (key, value) VALUES (?, ?)",
                    [("format", _FORMAT), ("params", params_json)],
                )
                conn.executemany(
                    "INSERT INTO tasks (position, task_id, params) VALUES (?, ?, ?)",
                    [(t.position, t.task_id, t.params_json) for t in tasks],
                )
        else:
            stored_params, stored_tasks = header
            if stored_params != params_json or [tid for tid, _ in stored_tasks] != [t.task_id for t in tasks]:
                raise StoreMismatch(path, _describe_difference(stored_params, params_json, stored_tasks, tasks))
    except BaseException:
        conn.close()
        raise
    return conn


def _finished_rows(conn: sqlite3.Connection, path: Path) -> dict[int, list[dict]]:
    """Rows of every finished task, by task position (joined to their task by its id)."""
    out: dict[int, list[dict]] = {}
    try:
        for position, index, data in conn.execute(
            "SELECT t.position, r.row_index, r.data FROM tasks t LEFT JOIN rows r ON r.task_id = t.task_id "
            "WHERE t.status = 'done' ORDER BY t.position, r.row_index"
        ):
            rows = out.setdefault(position, [])
            if data is None:  # a finished task with no rows has one NULL line in the join
                continue
            if index != len(rows):
                raise ValueError(f"task {position} lacks its row {len(rows)}")
            rows.append(json.loads(data))
    except (sqlite3.DatabaseError, ValueError) as exc:
        raise _store_error(path, exc, writing=False) from None
    return out


@contextmanager
def _store_writes(path: Path, finished: int | None) -> Iterator[None]:
    """Turn a failed write (disk full, read-only, damaged file) into a StoreError naming the store."""
    try:
        yield
    except sqlite3.Error as exc:
        raise _store_error(path, exc, writing=True, finished=finished) from None


def _commit_done(conn: sqlite3.Connection, task: _Task, rows: list[dict], seconds: float) -> None:
    with _transaction(conn):
        cur = conn.execute(
            "UPDATE tasks SET status = 'done', seconds = ?, error = NULL WHERE task_id = ? AND status != 'done'",
            (seconds, task.task_id),
        )
        if cur.rowcount:  # not already written by a concurrent run of the same sweep
            conn.executemany(
                "INSERT INTO rows (task_id, row_index, data) VALUES (?, ?, ?)",
                [(task.task_id, i, _dump_row(r)) for i, r in enumerate(rows)],
            )


def _commit_failed(conn: sqlite3.Connection, task: _Task, error: str, tb: str) -> None:
    with _transaction(conn):
        conn.execute(
            "UPDATE tasks SET status = 'failed', error = ? WHERE task_id = ? AND status != 'done'",
            (f"{error}\n{tb}".rstrip(), task.task_id),
        )


def load_rows(store: str | os.PathLike) -> list[dict]:
    """The rows of a store's finished tasks, in task order (all rows once the sweep is complete)."""
    path = Path(store)
    if not path.is_file():
        raise ValueError(f"no sweep store at {path}")
    conn = _connect(path)
    try:
        if _read_store_header(conn, path) is None:
            raise ValueError(f"{path} is an empty SQLite file, not a sweep store")
        finished = _finished_rows(conn, path)
    finally:
        conn.close()
    return [row for position in sorted(finished) for row in finished[position]]


# ---------------------------------------------------------------------------------------------
# The sweep


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
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}: {fn!r}")
    task_list = _prepare_tasks(tasks)
    params_json = _encode_params({} if params is None else params, "params")
    if workers is not None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
        if scheduler is not None:
            raise ValueError(
                f"workers={workers} applies to local processes; the Dask scheduler {scheduler!r} has its own"
            )
    # An explicit worker count selects local processes, whatever DASK_SCHEDULER_ADDRESS says.
    resolved = _resolve_scheduler(scheduler) if workers is None else None
    if not (isinstance(connect_timeout, (int, float)) and 0 < connect_timeout < float("inf")):
        raise ValueError(f"connect_timeout must be a positive number of seconds, got {connect_timeout!r}")
    if resolved is not None and not resolved.startswith("local:"):  # before the store is touched
        _probe_scheduler(_import_distributed(resolved), resolved, connect_timeout)
    n_workers = workers if workers is not None else (os.cpu_count() or 1)
    shared_args = () if shared is None else (shared,)
    if resolved is None and n_workers > 1:
        try:
            pickle.dumps(fn)
            pickle.dumps(shared_args)
        except Exception as exc:
            raise TypeError(
                f"fn and shared must be picklable to reach worker processes ({exc}): define fn at module "
                "level, or pass workers=1 to run in this process"
            ) from None

    store_path = None if store is None else Path(store)
    conn = None if store_path is None else _open_store(store_path, params_json, task_list)
    try:
        results = {} if conn is None else _finished_rows(conn, store_path)
        pending = [t for t in task_list if t.position not in results]
        total = len(task_list)
        _log.info(
            "sweep: %d tasks, %d already finished%s",
            total,
            len(results),
            f" in {store_path}" if conn else "",
        )
        if progress is not None:
            progress(len(results), total)
        if resolved is not None and pending:
            outcomes = _run_dask(fn, pending, shared_args, resolved, connect_timeout)
        elif n_workers == 1 or not pending:
            within = None if progress is None else (lambda f: progress(min(done + f, total), total))
            outcomes = _run_serial(fn, pending, shared_args, within)
        else:
            outcomes = _run_processes(fn, pending, shared_args, min(n_workers, len(pending)))

        failures: list[TaskFailure] = []
        done = len(results)
        with closing(outcomes):  # shuts a pool or cluster down on any exit
            for position, (status, text, extra) in outcomes:
                task = task_list[position]
                if status == "ok":
                    rows = json.loads(text)
                    if conn is not None:
                        with _store_writes(store_path, len(results)):
                            _commit_done(conn, task, rows, extra)
                    results[position] = rows
                else:
                    failure = TaskFailure(position, task.task_id, json.loads(task.params_json), text, extra)
                    _log.warning("task %d %s failed: %s", position, json.dumps(failure.params), text)
                    if conn is not None:
                        with _store_writes(store_path, len(results)):
                            _commit_failed(conn, task, text, extra)
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


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike, columns: Sequence[str] | None = None) -> None:
    """Write rows to a CSV file: floats in their exact shortest form (repr), None and NaN as empty.
    The one CSV writer of every command (docs/outputs.md's conventions).

    Columns are ``columns`` if given (a row with another key is an error), else every key in
    order of first appearance. Lists and dicts are written as JSON.
    """
    if not rows:
        raise ValueError("no rows to write")
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
    else:
        columns = list(columns)
        known = set(columns)
        for i, r in enumerate(rows):
            extra = [k for k in r if k not in known]
            if extra:
                raise ValueError(f"row {i} has keys {extra} not in columns {columns}")

    def cell(value: Any) -> Any:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""  # not defined (docs/outputs.md: an empty cell)
        if isinstance(value, (list, dict)):
            return json.dumps(value, separators=(",", ":"))
        return value

    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for r in rows:
            writer.writerow([cell(r.get(c)) for c in columns])
