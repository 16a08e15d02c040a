"""Tests of surgesim.sweep (executors, resumable store, failures) and surgesim.progress.

Task functions live in tests/_sweep_tasks.py: worker processes import them by name.
Results are compared with ``==`` on rows and on their JSON text: floats are compared bit for bit,
because every executor must return exactly the same numbers.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import _sweep_tasks as T
import numpy as np
import pytest

from surgesim.progress import progress_bar
from surgesim.sweep import StoreError, SweepError, load_rows, run_sweep, task_id, write_csv

TESTS_DIR = Path(__file__).resolve().parent

# Sleeps decreasing along the list, so that on 2 workers tasks complete out of list order.
TASKS = [{"seed": 11, "x": x, "sleep": 0.02 * (5 - i)} for i, x in enumerate([4, 0, 5, 2, 1, 3])]


def expected_rows(fn, tasks) -> list[dict]:
    """The rows computed directly, in task order, as JSON values (what the store keeps)."""
    return [json.loads(json.dumps(r, default=lambda v: v.item())) for t in tasks for r in _as_list(fn(t))]


def _as_list(result):
    return result if isinstance(result, list) else [result]


def as_json(rows) -> str:
    return json.dumps(rows)


@pytest.fixture(scope="module")
def cluster_address():
    """A real dask.distributed LocalCluster: 2 single-threaded in-process workers, scheduler on
    loopback, no dashboard."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=False,
        protocol="tcp",  # in-process workers default to inproc://, which a Client cannot reach by address
        host="127.0.0.1",
        dashboard_address=None,
    ) as cluster:
        yield cluster.scheduler_address


# ---------------------------------------------------------------------------------------------
# Executors agree


def test_serial_run_matches_direct_computation():
    rows = run_sweep(T.noisy_sum, TASKS, workers=1)
    assert rows == expected_rows(T.noisy_sum, TASKS)
    assert [r["x"] for r in rows] == [t["x"] for t in TASKS for _ in range(3)]  # task order
    assert all(type(r["n"]) is int for r in rows)  # a NumPy scalar comes back as a Python int


def test_process_pool_and_dask_cluster_match_serial(cluster_address, monkeypatch):
    serial = run_sweep(T.noisy_sum, TASKS, workers=1)
    pool = run_sweep(T.noisy_sum, TASKS, workers=2)
    dask = run_sweep(T.noisy_sum, TASKS, scheduler=cluster_address)
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", cluster_address)
    dask_env = run_sweep(T.noisy_sum, TASKS)
    assert as_json(pool) == as_json(serial)
    assert as_json(dask) == as_json(serial)
    assert as_json(dask_env) == as_json(serial)


def test_dask_schedulers_match_serial_with_shared_object(cluster_address):
    tasks = [{"x": x} for x in range(5)]
    shared = {"scale": 0.1}
    serial = run_sweep(T.scaled, tasks, shared=shared, workers=1)
    # Independent: 0.1 * x, computed here.
    assert serial == [{"x": x, "y": x * 0.1} for x in range(5)]
    assert run_sweep(T.scaled, tasks, shared=shared, scheduler=cluster_address) == serial
    assert run_sweep(T.scaled, tasks, shared=shared, scheduler="local:2") == serial


# ---------------------------------------------------------------------------------------------
# The store: kill -9 and resume, skip finished tasks, refuse another sweep

KILL_TASKS = [{"seed": 3, "x": x} for x in range(30)]
KILL_PARAMS = {"experiment": "kill-and-resume"}
KILL_SCRIPT = f"""
import sys
sys.path.insert(0, {str(TESTS_DIR)!r})
import _sweep_tasks as T
from surgesim.sweep import run_sweep
run_sweep(
    T.slow_noisy_sum, {KILL_TASKS!r}, params={KILL_PARAMS!r}, store=sys.argv[1], shared={{"sleep": 0.1}}, workers=2
)
"""


def _query(path: Path, sql: str) -> list[tuple]:
    # Read-only, so that polling never creates the file before the sweep does.
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as conn:
        return conn.execute(sql).fetchall()


def _done_count(path: Path) -> int:
    try:
        return _query(path, "SELECT COUNT(*) FROM tasks WHERE status = 'done'")[0][0]
    except sqlite3.OperationalError:  # the file or its tables are not created yet
        return 0


def test_killed_sweep_resumes_to_the_uninterrupted_result(tmp_path):
    store = tmp_path / "sweep.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(store)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: SIGKILL reaches the pool's workers too
    )
    try:
        deadline = time.monotonic() + 60  # generous: a loaded machine starts the pool slowly
        while _done_count(store) < 3:
            assert proc.poll() is None, proc.communicate()[0].decode()
            assert time.monotonic() < deadline, "the sweep did not commit 3 tasks within 60 s"
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL

    # Interrupted, the store holds whole tasks only: 3 rows per finished task, none for the others.
    status = dict(_query(store, "SELECT task_id, status FROM tasks"))
    counts = dict(_query(store, "SELECT task_id, COUNT(*) FROM rows GROUP BY task_id"))
    done = {tid for tid, s in status.items() if s == "done"}
    assert 3 <= len(done) < len(KILL_TASKS)
    assert counts == {tid: 3 for tid in done}

    # Resumed without the delay, in this process: the same sweep, whichever executor runs it.
    fast = {"sleep": 0.0}
    resumed = run_sweep(T.slow_noisy_sum, KILL_TASKS, params=KILL_PARAMS, store=store, shared=fast, workers=1)
    uninterrupted = run_sweep(T.slow_noisy_sum, KILL_TASKS, params=KILL_PARAMS, shared=fast, workers=1)
    assert uninterrupted == expected_rows(T.noisy_sum, KILL_TASKS)
    assert as_json(resumed) == as_json(uninterrupted)
    assert as_json(load_rows(store)) == as_json(uninterrupted)
    write_csv(resumed, tmp_path / "resumed.csv")
    write_csv(uninterrupted, tmp_path / "uninterrupted.csv")
    assert (tmp_path / "resumed.csv").read_bytes() == (tmp_path / "uninterrupted.csv").read_bytes()


def test_rerun_skips_finished_tasks(tmp_path):
    store = tmp_path / "s.sqlite"
    tasks = [{"x": x} for x in range(4)]
    first = run_sweep(T.scaled, tasks, shared={"scale": 2}, store=store, workers=1)
    calls = []
    progress_calls = []

    def must_not_run(params, shared):
        calls.append(params)
        return {}

    again = run_sweep(
        must_not_run, tasks, shared={"scale": 2}, store=store, workers=1, progress=lambda *a: progress_calls.append(a)
    )
    assert again == first and calls == []
    assert progress_calls == [(4, 4)]


def test_per_task_rows_and_a_lost_row_is_reported(tmp_path):
    store = tmp_path / "s.sqlite"
    tasks = [{"x": x, "seed": 5} for x in range(3)]
    flat = run_sweep(T.noisy_sum, tasks, store=store, workers=1)
    grouped = run_sweep(T.noisy_sum, tasks, store=store, workers=1, per_task=True)
    assert [len(g) for g in grouped] == [3, 3, 3] and [r for g in grouped for r in g] == flat
    assert all(r["x"] == t["x"] for t, g in zip(tasks, grouped) for r in g)  # each task's own rows
    with closing(sqlite3.connect(store)) as conn, conn:
        conn.execute("DELETE FROM rows WHERE row_index = 1 AND task_id = ?", (task_id(tasks[1]),))
    with pytest.raises(StoreError, match=r"cannot read sweep store .*s\.sqlite.*task 1 lacks its row 1.*damaged"):
        run_sweep(T.noisy_sum, tasks, store=store, workers=1)


def test_store_write_error_names_the_store_and_what_is_intact(tmp_path, monkeypatch):
    from surgesim import sweep

    def full(conn, task, rows, seconds):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(sweep, "_commit_done", full)
    with pytest.raises(StoreError, match=r"cannot write to sweep store .*s\.sqlite.*disk is full.*0 task\(s\)"):
        run_sweep(T.scaled, [{"x": 1}], shared={"scale": 1}, store=tmp_path / "s.sqlite", workers=1)


def test_store_refuses_a_different_sweep(tmp_path):
    store = tmp_path / "s.sqlite"
    tasks = [{"x": x} for x in range(4)]
    first = run_sweep(T.fail_on_three, tasks[:3], params={"seed": 1}, store=store, workers=1)
    with pytest.raises(ValueError, match="parameter 'seed' was 1, now 2"):
        run_sweep(T.fail_on_three, tasks[:3], params={"seed": 2}, store=store, workers=1)
    with pytest.raises(ValueError, match="parameter 'trials' is new"):
        run_sweep(T.fail_on_three, tasks[:3], params={"seed": 1, "trials": 5}, store=store, workers=1)
    with pytest.raises(ValueError, match=r'1 task\(s\) are new, e\.g\. \{"x":3\}'):
        run_sweep(T.fail_on_three, tasks, params={"seed": 1}, store=store, workers=1)
    with pytest.raises(ValueError, match="different order"):
        run_sweep(T.fail_on_three, tasks[2::-1], params={"seed": 1}, store=store, workers=1)
    assert load_rows(store) == first  # the refusals left the store as it was


def test_store_rejects_foreign_files(tmp_path):
    other = tmp_path / "other.sqlite"
    with closing(sqlite3.connect(other)) as conn:
        conn.execute("CREATE TABLE t (a)")
        conn.commit()
    with pytest.raises(ValueError, match="not a surgesim sweep store"):
        run_sweep(T.scaled, [{"x": 1}], shared={"scale": 1}, store=other, workers=1)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ValueError, match="cannot read sweep store"):
        run_sweep(T.scaled, [{"x": 1}], shared={"scale": 1}, store=junk, workers=1)
    with pytest.raises(ValueError, match="is a directory"):
        run_sweep(T.scaled, [{"x": 1}], shared={"scale": 1}, store=tmp_path, workers=1)
    with pytest.raises(ValueError, match="no sweep store"):
        load_rows(tmp_path / "missing.sqlite")


# ---------------------------------------------------------------------------------------------
# Failures


@pytest.mark.parametrize("workers", [1, 2])
def test_failing_task_is_reported_and_the_others_kept(tmp_path, workers, caplog):
    store = tmp_path / "s.sqlite"
    tasks = [{"x": x} for x in range(6)]
    with pytest.raises(SweepError) as info:
        run_sweep(T.fail_on_three, tasks, store=store, workers=workers)
    message = str(info.value)
    assert "1 of 6 tasks failed" in message
    assert 'task 3 {"x": 3}: ValueError: x = 3 is not allowed' in message
    (failure,) = info.value.failures
    assert failure.params == {"x": 3} and failure.position == 3
    assert "fail_on_three" in failure.traceback
    assert "x = 3 is not allowed" in caplog.text  # logged when it happened, not only at the end
    others = [{"x": x, "square": x * x} for x in (0, 1, 2, 4, 5)]
    assert load_rows(store) == others
    ((status, error),) = _query(store, "SELECT status, error FROM tasks WHERE position = 3")
    assert status == "failed" and error.startswith("ValueError: x = 3 is not allowed")
    # A rerun retries only the failed task (which fails again), and keeps the others.
    with pytest.raises(SweepError, match="1 of 6 tasks failed"):
        run_sweep(T.fail_on_three, tasks, store=store, workers=1)
    assert load_rows(store) == others


def test_bad_return_value_is_a_task_failure():
    with pytest.raises(SweepError, match="fn must return a dict or a list of dicts, got int"):
        run_sweep(lambda p: 5, [{"x": 1}], workers=1)


# ---------------------------------------------------------------------------------------------
# Input validation


@pytest.mark.parametrize(
    ("scheduler", "match"),
    [
        ("local:0", "N >= 1"),
        ("local:x", "N >= 1"),
        ("local:100000000", "per CPU"),
        ("foo", "got 'foo'"),
        ("tcp://127.0.0.1", "tcp://HOST:PORT"),
        ("tcp://127.0.0.1:99999", "tcp://HOST:PORT"),
    ],
)
def test_bad_scheduler(scheduler, match):
    with pytest.raises(ValueError, match=match):
        run_sweep(T.scaled, [{"x": 1}], scheduler=scheduler)


def test_scheduler_from_environment(monkeypatch):
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "localhost")
    with pytest.raises(ValueError, match="environment variable DASK_SCHEDULER_ADDRESS"):
        run_sweep(T.scaled, [{"x": 1}], shared={"scale": 1})
    # An explicit worker count means local processes: the variable is not even read.
    assert run_sweep(T.scaled, [{"x": 1}], shared={"scale": 1}, workers=1) == [{"x": 1, "y": 1}]


def test_missing_dask_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # makes `import distributed` fail
    with pytest.raises(ValueError, match=r"pip install 'surgesim\[dist\]'"):
        run_sweep(T.scaled, [{"x": 1}], shared={"scale": 1}, scheduler="local:2")


def test_bad_arguments():
    with pytest.raises(ValueError, match="workers must be an integer >= 1, got 0"):
        run_sweep(T.scaled, [{"x": 1}], workers=0)
    with pytest.raises(ValueError, match="applies to local processes"):
        run_sweep(T.scaled, [{"x": 1}], workers=2, scheduler="local:2")
    with pytest.raises(ValueError, match="tasks 0 and 1 have the same parameters"):
        run_sweep(T.scaled, [{"x": 1}, {"x": 1}], workers=1)
    with pytest.raises(TypeError, match="task 0 is not JSON-serialisable"):
        run_sweep(T.scaled, [{"x": object()}], workers=1)
    with pytest.raises(TypeError, match="task 0 must be a dict"):
        run_sweep(T.scaled, [[1, 2]], workers=1)
    with pytest.raises(TypeError, match="workers=1"):
        run_sweep(lambda p: {}, [{"x": 1}], workers=2)


def test_task_id_is_sha256_of_canonical_json():
    # Computed independently: sorted keys, no spaces, tuples as lists, NumPy scalars as numbers.
    expected = hashlib.sha256(b'{"a":1,"b":[1,2.5]}').hexdigest()
    assert task_id({"b": (1, 2.5), "a": np.int64(1)}) == expected


def test_write_csv_round_trips_floats(tmp_path):
    rows = [{"a": 0.1, "b": 1 / 3}, {"a": float("nan"), "c": None, "b": -2.0}]
    path = tmp_path / "r.csv"
    write_csv(rows, path)
    with open(path, newline="") as f:
        header, *lines = list(csv.reader(f))
    assert header == ["a", "b", "c"]
    assert float(lines[0][1]) == 1 / 3 and lines[1][2] == "" and lines[1][0] == ""  # NaN: empty (docs/outputs.md)
    write_csv(rows, path, columns=["b", "a", "c"])
    assert path.read_text().splitlines()[0] == "b,a,c"
    with pytest.raises(ValueError, match=r"row 1 has keys \['c'\]"):
        write_csv(rows, path, columns=["a", "b"])


# ---------------------------------------------------------------------------------------------
# Progress


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_reports_done_and_total_from_the_store(tmp_path):
    calls = []
    tasks = [{"x": x} for x in range(6)]
    with pytest.raises(SweepError):
        run_sweep(T.fail_on_three, tasks, store=tmp_path / "s.sqlite", workers=1, progress=lambda *a: calls.append(a))
    assert calls == [(i, 6) for i in range(7)]  # failed tasks count as done: the bar reaches the end
    calls.clear()
    with pytest.raises(SweepError):
        run_sweep(T.fail_on_three, tasks, store=tmp_path / "s.sqlite", workers=1, progress=lambda *a: calls.append(a))
    assert calls == [(5, 6), (6, 6)]


@pytest.mark.parametrize(("quiet", "file"), [(True, FakeTerminal()), (False, io.StringIO())])
def test_progress_bar_silent_when_quiet_or_not_a_terminal(quiet, file):
    with progress_bar(quiet=quiet, file=file) as progress:
        run_sweep(T.scaled, [{"x": x} for x in range(3)], shared={"scale": 1}, workers=1, progress=progress)
    assert file.getvalue() == ""


def test_progress_bar_draws_on_a_terminal():
    file = FakeTerminal()
    with progress_bar(desc="sweep", file=file) as progress:
        run_sweep(T.scaled, [{"x": x} for x in range(3)], shared={"scale": 1}, workers=1, progress=progress)
    out = file.getvalue()
    assert "sweep" in out and "3/3" in out and "task/s" in out
    with pytest.raises(ValueError, match="done=4, total=3"):
        progress_bar(file=FakeTerminal())(4, 3)
