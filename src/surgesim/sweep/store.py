"""The resumable results store of a sweep: one SQLite file, bound to its sweep (parameters and
task list), where each finished task is committed in one transaction (its rows and its status
together), so that a crash loses only the tasks in flight. Tables: ``sweep(key, value)``,
``tasks(position, task_id, params, status, seconds, error)``, ``rows(task_id, row_index, data)``
(the package docstring says more)."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import StoreError, StoreMismatch, store_error
from .tasks import Task, dump_row, encode_params, prepare_tasks

__all__ = ["FORMAT", "check_store", "open_store", "finished_rows", "store_writes", "commit_done", "commit_failed",
           "load_rows", "task_row"]  # fmt: skip

FORMAT = "surgesim-sweep-1"

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


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: no implicit transactions; every write is in an explicit one.
    return sqlite3.connect(path, timeout=60, isolation_level=None)


def _read_header(conn: sqlite3.Connection, path: Path) -> tuple[str, list[tuple[str, str]]] | None:
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
        raise store_error(path, exc, writing=False) from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} has store format {meta.get('format')!r}, expected {FORMAT!r}")
    return meta["params"], tasks


def _brief(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_same(path: Path, header: tuple[str, list[tuple[str, str]]], params_json: str, tasks: list[Task]) -> None:
    stored_params, stored_tasks = header
    if stored_params != params_json or [tid for tid, _ in stored_tasks] != [t.task_id for t in tasks]:
        raise StoreMismatch(path, _describe_difference(stored_params, params_json, stored_tasks, tasks))


def check_store(store: str | os.PathLike, tasks: Iterable[Mapping[str, Any]], params: Mapping | None = None) -> None:
    """Refuse, before any work, a store that holds a different sweep than ``run_sweep(fn, tasks,
    params=params, store=store)`` would run (``StoreMismatch``); a missing store passes."""
    path = Path(store)
    if not path.is_file():
        return
    task_list = prepare_tasks(tasks)
    params_json = encode_params({} if params is None else params, "params")
    conn = _connect(path)
    try:
        header = _read_header(conn, path)
    finally:
        conn.close()
    if header is not None:
        _check_same(path, header, params_json, task_list)


def _describe_difference(
    stored_params: str, params: str, stored_tasks: list[tuple[str, str]], tasks: list[Task]
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


def open_store(path: Path, params_json: str, tasks: list[Task]) -> sqlite3.Connection:
    """Open (or create) the store bound to this sweep; refuse one written by a different sweep."""
    if path.is_dir():
        raise ValueError(f"store must be a file path, {path} is a directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = _connect(path)
    try:
        header = _read_header(conn, path)
        if header is None:
            with store_writes(path, None), _transaction(conn):
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.executemany("INSERT INTO sweep (key, value) VALUES (?, ?)",
                                 [("format", FORMAT), ("params", params_json)])  # fmt: skip
                conn.executemany("INSERT INTO tasks (position, task_id, params) VALUES (?, ?, ?)",
                                 [(t.position, t.task_id, t.params_json) for t in tasks])  # fmt: skip
        else:
            _check_same(path, header, params_json, tasks)
    except BaseException:
        conn.close()
        raise
    return conn


def finished_rows(conn: sqlite3.Connection, path: Path) -> dict[int, list[dict]]:
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
        raise store_error(path, exc, writing=False) from None
    return out


@contextmanager
def store_writes(path: Path, finished: int | None) -> Iterator[None]:
    """Turn a failed write (disk full, read-only, damaged file) into a StoreError naming the store."""
    try:
        yield
    except sqlite3.Error as exc:
        raise store_error(path, exc, writing=True, finished=finished) from None


def commit_done(conn: sqlite3.Connection, task: Task, rows: list[dict], seconds: float) -> None:
    """A finished task's rows and status, in one transaction."""
    with _transaction(conn):
        cur = conn.execute(
            "UPDATE tasks SET status = 'done', seconds = ?, error = NULL WHERE task_id = ? AND status != 'done'",
            (seconds, task.task_id),
        )
        if cur.rowcount:  # not already written by a concurrent run of the same sweep
            conn.executemany(
                "INSERT INTO rows (task_id, row_index, data) VALUES (?, ?, ?)",
                [(task.task_id, i, dump_row(r)) for i, r in enumerate(rows)],
            )


def commit_failed(conn: sqlite3.Connection, task: Task, error: str, tb: str) -> None:
    """A failed task's error and traceback (a finished task is never marked failed)."""
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
        if _read_header(conn, path) is None:
            raise ValueError(f"{path} is an empty SQLite file, not a sweep store")
        finished = finished_rows(conn, path)
    finally:
        conn.close()
    return [row for position in sorted(finished) for row in finished[position]]


def task_row(rows: list[dict], what: str, **expected: Any) -> dict:
    """The one row of a sweep task (``run_sweep(..., per_task=True)``), checked against the task's
    own parameters: a store that lost or mixed rows is reported, never paired with another task."""
    if len(rows) != 1 or any(rows[0].get(k) != v for k, v in expected.items()):
        raise StoreError(f"the store's result for {what} is missing or belongs to another task: the store is "
                         "damaged; move store.sqlite away and rerun")  # fmt: skip
    return rows[0]
