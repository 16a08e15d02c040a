"""Fault injection: every way a run can be refused or fail gives exit status 2 (1 only for an
internal bug), exactly one ``error:`` line on stderr, within 60 s, and leaves every file already
in --out byte-identical (issue 14). Commands run in-process through ``main(argv)``; a subprocess
only where another process is the point (a concurrent run)."""

from __future__ import annotations

import errno
import gc
import io
import json
import math
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from sims import __main__ as dispatcher
from sims import _cli, bench, dynamics, figures, fit, surge
from surgesim.outputs import OutputDir, atomic_path, dumps_json, loads_json

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--dims", "40", "--batch-sizes", "1,16,256", "--trials", "2000", "--quiet", "--no-plot"]


def snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def call(main, args: list[str]) -> int:
    try:
        return main([str(a) for a in args])
    except SystemExit as e:  # argparse
        return int(e.code)


def refused(capsys, main, args: list[str], out: Path | None = None, code: int = 2) -> str:
    """Run ``main(args)``: it must fail with ``code`` and one ``error:`` line within 60 s, and
    leave ``out`` byte-identical. Returns the error line."""
    before = snapshot(out) if out is not None and out.exists() else None
    capsys.readouterr()
    t = time.monotonic()
    status = call(main, args)
    elapsed = time.monotonic() - t
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert status == code, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert elapsed < 60
    if before is not None:
        assert snapshot(out) == before
    return lines[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished sims.surge run, copied by each test that changes it."""
    out = tmp_path_factory.mktemp("finished") / "out"
    assert surge.main([*SMALL, "--out", str(out)]) == 0
    return out


@pytest.fixture
def out(finished, tmp_path) -> Path:
    copy = tmp_path / "out"
    shutil.copytree(finished, copy)
    return copy


# --- outputs only by an accepted run; one run per --out ----------------------------------------


def test_refused_rerun_keeps_every_file(capsys, out):
    line = refused(capsys, surge.main, [*SMALL, "--seed", "1", "--out", out], out)
    assert "different sweep" in line
    assert (out / "store.sqlite").exists() and (out / "problem.npz").exists()


def test_rerun_of_the_same_run_is_accepted_and_identical(out):
    before = snapshot(out)
    assert surge.main([*SMALL, "--out", str(out)]) == 0
    after = snapshot(out)
    assert after.keys() == before.keys()
    assert after["results.csv"] == before["results.csv"] and after["problem.npz"] == before["problem.npz"]


def test_failed_run_writes_nothing_into_a_fresh_out(capsys, tmp_path, monkeypatch):
    from surgesim import problem

    def full_disk(self, path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(problem.QuadraticProblem, "save", full_disk)
    line = refused(capsys, surge.main, [*SMALL, "--out", tmp_path / "o"])
    assert "disk full" in line and "No space left on device" in line and "unchanged" in line
    assert snapshot(tmp_path / "o") == {}  # nothing staged is left behind


def test_a_second_run_into_a_locked_out_is_refused(capsys, out):
    holder = subprocess.Popen(  # another process holds --out, as a concurrent run would
        [sys.executable, "-c", "import sys, time; from surgesim.outputs import OutputDir; "
         "d = OutputDir(sys.argv[1]); d.open(); print('locked', flush=True); time.sleep(60)", str(out)],
        stdout=subprocess.PIPE, text=True, cwd=ROOT, env={"PYTHONPATH": f"{ROOT / 'src'}:{ROOT}", "PATH": ""},
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        line = refused(capsys, surge.main, [*SMALL, "--out", out], out)
        assert "in use by another run" in line
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert surge.main([*SMALL, "--out", str(out)]) == 0  # released with its process


def test_two_concurrent_runs_into_one_fresh_out(tmp_path):
    """Two processes started at once into one new --out: one writes, the other is refused (or,
    if it starts after the first finished, resumes the same sweep); never mixed files."""
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "sims.surge", *SMALL, "--out", str(out)]
    procs = [subprocess.Popen([*cmd, "--seed", str(s)], cwd=ROOT, stderr=subprocess.PIPE, text=True) for s in (1, 2)]
    results = []
    for p in procs:
        with p:
            results.append((p.wait(timeout=120), p.stderr.read()))
    codes = sorted(c for c, _ in results)
    assert codes == [0, 2], results
    err = next(e for c, e in results if c == 2)
    assert len(err.strip().splitlines()) == 1 and ("in use by another run" in err or "different sweep" in err)
    seed = json.loads((out / "options.json").read_text())["seed"]
    winner = [s for s, (c, _) in zip((1, 2), results) if c == 0][0]
    assert seed == winner  # options.json, problem.npz and the store all come from the accepted run


# --- the handler ----------------------------------------------------------------------------------


def test_internal_bug_is_exit_1_with_a_hint(capsys):
    assert _cli.run(lambda: 1 / 0) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "internal error (ZeroDivisionError" in lines[0] and "report" in lines[0]


def test_no_warning_before_an_error_line(capsys):
    def body():
        warnings.warn("an early warning", RuntimeWarning, stacklevel=1)
        np.log(np.zeros(1))  # a NumPy RuntimeWarning too
        raise ValueError("bad input")

    assert _cli.run(body) == 2
    assert capsys.readouterr().err == "error: bad input\n"


def test_warnings_of_a_successful_run_are_shown_after_it():
    def body():
        warnings.warn("shown once", UserWarning, stacklevel=1)
        warnings.warn("shown once", UserWarning, stacklevel=1)
        return 0

    with pytest.warns(UserWarning, match="shown once") as record:
        assert _cli.run(body) == 0
    assert len(record) == 1


def test_version_and_dispatch(capsys, monkeypatch):
    version = _cli.version()
    with pytest.raises(SystemExit) as info:
        surge.main(["--version"])
    assert info.value.code == 0 and version in capsys.readouterr().out
    assert dispatcher.main(["--version"]) == 0 and capsys.readouterr().out.strip() == f"surgesim {version}"
    monkeypatch.setitem(dispatcher.COMMANDS, "nosuch", "a command whose module is missing")
    line = refused(capsys, dispatcher.main, ["nosuch"])
    assert "not available" in line and "sims.nosuch" in line
    assert "unknown command" in refused(capsys, dispatcher.main, ["frobnicate"])


def test_dispatcher_runs_a_command(tmp_path, capsys):
    assert dispatcher.main(["fit", str(write_grid(tmp_path / "g.csv")), "--out", str(tmp_path / "o"), "--quiet",
                            "--no-plot"]) == 0  # fmt: skip
    assert (tmp_path / "o" / "fits.csv").exists()


# --- network: a scheduler that is not one ---------------------------------------------------------


@contextmanager
def _peer(banner: bytes | None) -> Iterator[int]:
    """A TCP server on loopback that accepts and then stays silent, or sends ``banner``; yields its
    port. distributed leaves the stream of a failed handshake to the garbage collector, whose
    ResourceWarning would surface in whichever test runs next: it is ignored inside this block, and
    the block collects before it ends; every socket of the server is closed."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    conns = []

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conns.append(conn)
            if banner:
                conn.sendall(banner)

    threading.Thread(target=serve, daemon=True).start()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            yield server.getsockname()[1]
        finally:
            server.close()
            for conn in conns:
                conn.close()
            gc.collect()


@pytest.mark.parametrize(
    ("banner", "message"),
    [(None, "no Dask scheduler answered"), (b"SSH-2.0-OpenSSH_9.6\r\n", "is not a Dask scheduler"),
     (b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n<html>", "is not a Dask scheduler")],
)  # fmt: skip
def test_scheduler_peer_that_is_not_dask(capsys, tmp_path, banner, message):
    pytest.importorskip("distributed")
    with _peer(banner) as port:
        args = [*SMALL, "--out", tmp_path / "o", "--scheduler", f"tcp://127.0.0.1:{port}", "--connect-timeout", "1"]
        line = refused(capsys, surge.main, args)
    assert message in line and f"127.0.0.1:{port}" in line
    assert not (tmp_path / "o" / "store.sqlite").exists()  # probed before the store is touched


# --- the store: damage and a full disk ---------------------------------------------------------------


def test_corrupted_store_pages(capsys, out):
    store = out / "store.sqlite"
    data = bytearray(store.read_bytes())
    page = 4096
    assert len(data) > 2 * page
    data[page:] = np.random.default_rng(0).integers(0, 256, len(data) - page, dtype=np.uint8).tobytes()
    store.write_bytes(bytes(data))
    line = refused(capsys, surge.main, [*SMALL, "--out", out], out)
    assert str(store) in line and "damaged" in line


def test_done_task_without_rows_is_not_paired_with_another(capsys, out):
    with sqlite3.connect(out / "store.sqlite") as conn:
        conn.execute("DELETE FROM rows WHERE task_id = (SELECT task_id FROM tasks WHERE position = 1)")
    conn.close()
    line = refused(capsys, surge.main, [*SMALL, "--out", out], out)
    assert "batch size 16" in line and "damaged" in line


def test_full_disk_while_storing_a_task(capsys, tmp_path, monkeypatch):
    from surgesim import sweep

    calls = []

    def commit(conn, task, rows, seconds):
        if calls:
            raise sqlite3.OperationalError("database or disk is full")
        calls.append(task)
        original(conn, task, rows, seconds)

    original = sweep._commit_done
    monkeypatch.setattr(sweep, "_commit_done", commit)
    line = refused(capsys, surge.main, [*SMALL, "--out", tmp_path / "o"])
    assert (
        "store.sqlite" in line and "database or disk is full" in line and "1 task(s) finished before are intact" in line
    )
    monkeypatch.undo()
    assert surge.main([*SMALL, "--out", str(tmp_path / "o")]) == 0  # resumes from the intact store


def test_full_disk_while_writing_outputs(capsys, out, monkeypatch):
    import surgesim.outputs as outputs

    def no_space(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(outputs.os, "fsync", no_space)
    line = refused(capsys, surge.main, [*SMALL, "--out", out], out)
    assert "disk full" in line and "No space left on device" in line


# --- absurd sizes and bad values ------------------------------------------------------------------


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def _declares_huge(path: Path) -> Path:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (10**12,)})
    with zipfile.ZipFile(path, "w") as z:
        for name in ("mu", "sigma", "h_diag"):
            z.writestr(f"{name}.npy", header.getvalue() + bytes(64))
    return path


PROBLEMS = {
    "huge header": (_declares_huge, "declares shape (1000000000000,)"),
    "near 1e300": (lambda p: _npz(p, mu=np.full(4, 1e300), sigma=np.ones(4), h_diag=np.full(4, 1e300)), "not finite"),
    "complex mu": (lambda p: _npz(p, mu=np.ones(4) * (1 + 1j), sigma=np.ones(4), h_diag=np.ones(4)), "must be real"),
    "H = 0": (lambda p: _npz(p, mu=np.ones(4), sigma=np.ones(4), h_diag=np.zeros(4)), "H must not vanish"),
    "text file": (lambda p: (p.write_text("mu,sigma\n1,2\n"), p)[1], "not an .npz archive"),
    "2-byte PK": (lambda p: (p.write_bytes(b"PK"), p)[1], "not an .npz archive"),
    "mu = 0": (lambda p: _npz(p, mu=np.zeros(4), sigma=np.ones(4), h_diag=np.ones(4)), "mu is zero in every"),
}


@pytest.mark.parametrize("case", sorted(PROBLEMS))
def test_bad_problem_files(capsys, out, case):
    make, message = PROBLEMS[case]
    path = make(out.parent / "p.npz")
    line = refused(capsys, surge.main, [*SMALL, "--problem", path, "--out", out], out)
    assert message in line and "pickled" not in line


SURGE_ARGS = {
    "--dims 1e12": (["--dims", "1e12"], "--dims"),
    "--dims 1e11 (memory)": (["--dims", "100000000000"], "memory"),
    "--b-max inf": (["--batch-sizes", "1", "--b-max", "inf"], "--b-max"),
    "--b-num 1e10": (["--b-num", "1e10"], "--b-num"),
    "--batch-sizes 2^63-1": (["--batch-sizes", "9223372036854775807"], "up to 2^53"),
    "--seed 2^63": (["--seed", str(2**63)], "[0, 2^63)"),
    "--seed -1": (["--seed", "-1"], "[0, 2^63)"),
    "--out empty": (["--out", ""], "--out must be a non-empty path"),
    "--connect-timeout 0": (["--connect-timeout", "0"], "--connect-timeout"),
}


@pytest.mark.parametrize("case", sorted(SURGE_ARGS))
def test_absurd_surge_options(capsys, out, case):
    args, message = SURGE_ARGS[case]
    line = refused(capsys, surge.main, ["--out", out, *SMALL, *args], out)
    assert message in line


def test_seed_at_the_limit_runs(tmp_path):
    assert surge.main([*SMALL, "--seed", str(2**63 - 1), "--out", str(tmp_path / "o")]) == 0


DYNAMICS_ARGS = {
    "--lr-points 1e11": (["--lr-points", "1e11"], "--lr-points"),
    "--seeds 1e14": (["--seeds", "1e14"], "--seeds"),
    "--max-steps 1e20": (["--max-steps", "1e20"], "--max-steps"),
    "--max-steps 10^20": (["--max-steps", str(10**20)], "--max-steps must be <= 1000000000"),
    "--lr-points 10^11": (["--lr-points", str(10**11)], "--lr-points must be <= 10000"),
    "--seeds 2^31 (memory)": (["--seeds", str(2**31), "--dims", "100000"], "memory"),
    "--seed 2^63": (["--seed", str(2**63)], "--seed must be <= 9223372036854775807"),
}


@pytest.mark.parametrize("case", sorted(DYNAMICS_ARGS))
def test_absurd_dynamics_options(capsys, out, case):
    args, message = DYNAMICS_ARGS[case]
    line = refused(capsys, dynamics.main, ["--out", out, "--quiet", "--no-plot", *args], out)
    assert message in line


def write_grid(path: Path, groups=("x",), bom: bool = False, bad: str | None = None) -> Path:
    """A grid whose optimal lr rises with B: score = (log lr - log lr*(B))^2."""
    lines = ["group,lr,batch_size,loss"]
    for g in groups:
        for b in (8, 32, 128, 512):
            for lr in (1e-4, 3e-4, 1e-3, 3e-3, 1e-2):
                lines.append(f"{g},{lr},{b},{(math.log(lr) - math.log(1e-3 * (b / 32) ** 0.5)) ** 2 + 1}")
    if bad is not None:
        lines[3] = lines[3].replace(lines[3].split(",")[1], bad, 1)
    path.write_text(("\ufeff" if bom else "") + "\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_fit_groups_differing_in_slash_or_space_get_their_own_figures(tmp_path):
    grid = write_grid(tmp_path / "g.csv", groups=("a/b", "a b"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # this test is about file names, not fit quality
        assert fit.main([str(grid), "--group-cols", "group", "--out", str(tmp_path / "o"), "--quiet"]) == 0
    assert len(list((tmp_path / "o").glob("fit_*.png"))) == 2


def test_fit_reads_a_byte_order_mark(tmp_path):
    grid = write_grid(tmp_path / "g.csv", bom=True)
    assert fit.main([str(grid), "--out", str(tmp_path / "o"), "--quiet", "--no-plot"]) == 0


def test_fit_quotes_the_bad_value(capsys, out):
    line = refused(capsys, fit.main, [write_grid(out.parent / "g.csv", bad="oops"), "--out", out, "--quiet"], out)
    assert "'oops'" in line


def test_fit_long_csv_field(capsys, out):
    grid = out.parent / "g.csv"
    grid.write_text("lr,batch_size,loss\n" + "1" * 200_000 + ",1,1\n")
    line = refused(capsys, fit.main, [grid, "--out", out, "--quiet"], out)
    assert "g.csv" in line and "field" in line


def test_figures_checks_torch_before_any_work(capsys, tmp_path, monkeypatch):
    import importlib.util

    find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else find(name, *a))
    line = refused(capsys, figures.main, ["--out", tmp_path / "f", "--quiet"])
    assert "need torch" in line and not (tmp_path / "f").exists()


def test_bench_checks_out_before_benchmarking(capsys, tmp_path):
    line = refused(capsys, bench.main, ["--out", tmp_path / "missing" / "b.json", "--skip-end-to-end"])
    assert "does not exist" in line


def test_workloads_bad_device_and_workers(capsys, out):
    pytest.importorskip("torch")
    from sims import workloads

    line = refused(capsys, workloads.main, ["--demo", "--device", "garbage", "--out", out], out)
    assert "--device 'garbage'" in line
    assert "--workers" in refused(capsys, workloads.main, ["--demo", "--workers", "-1", "--out", out], out)


# --- strict JSON and atomic files -----------------------------------------------------------------


def _strict_load(text: str):
    def bad(token):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=bad)


def test_summaries_are_strict_json(tmp_path):
    out = tmp_path / "o"
    assert surge.main([*SMALL, "--hessian", "diagonal", "--out", str(out)]) == 0  # B_noise = inf
    summary = _strict_load((out / "summary.json").read_text())
    assert summary["noise_batch_size"] == "inf"
    assert loads_json((out / "summary.json").read_text())["noise_batch_size"] == math.inf
    _strict_load((out / "options.json").read_text())


def test_dumps_json_round_trip():
    obj = {"a": [math.inf, -math.inf, 1.5], "b": np.float64(math.nan), "c": np.arange(2)}
    back = loads_json(dumps_json(obj))
    assert back["a"] == [math.inf, -math.inf, 1.5] and math.isnan(back["b"]) and back["c"] == [0, 1]
    _strict_load(dumps_json(obj))


def test_atomic_path_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_output_dir_discards_and_cleans_stale_staging(tmp_path):
    with OutputDir(tmp_path) as d:
        (d / "a.txt").write_text("never committed")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / ".surgesim-staging-dead").mkdir()  # left by a killed run
    with OutputDir(tmp_path) as d:
        (d / "a.txt").write_text("kept")
        d.commit()
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


# --- the commit of a run's outputs is atomic as a whole (issue 24) ---------------------------------

OUTPUTS_PY = ROOT / "src" / "surgesim" / "outputs.py"
OLD = {"a.txt": "old a", "b.txt": "old b", "c.txt": "old c"}
NEW = {"a.txt": "new a", "b.txt": "new b", "d.txt": "new d"}  # and c.txt removed


def _results(d: Path) -> dict[str, str]:
    """The directory as a reader sees it after the next run's recovery: its non-hidden files."""
    with OutputDir(d, command="test"):  # open() finishes or deletes what a killed run left
        pass
    leftovers = [p.name for p in d.iterdir() if p.name.startswith((".surgesim-staging-", ".surgesim-commit-"))]
    assert not leftovers
    return {p.name: p.read_text() for p in d.iterdir() if not p.name.startswith(".")}


def _new_run(d: Path):
    """A command body (for ``_cli.run``) that writes NEW into ``d`` and removes c.txt."""

    def body() -> int:
        o = _cli.out_dir(str(d), command="test")
        for name, text in NEW.items():
            (o / name).write_text(text)
        o.remove("c.txt")
        return 0

    return body


def _commit_run(outputs, d: Path, files: dict[str, str], removed=()) -> None:
    with outputs.OutputDir(d, command="test") as out:
        for name, text in files.items():
            (out / name).write_text(text)
        for name in removed:
            out.remove(name)
        out.commit()


_KILLER = """
import importlib.util, os, sys
spec = importlib.util.spec_from_file_location("outputs_under_test", sys.argv[1])
outputs = importlib.util.module_from_spec(spec); spec.loader.exec_module(outputs)
steps = []
def step(what):
    steps.append(what)
    if len(steps) == int(sys.argv[3]):
        print(what, flush=True)
        os._exit(9)  # killed: no clean-up, no finally
outputs._step = step
from pathlib import Path
with outputs.OutputDir(Path(sys.argv[2]), command="test") as out:
    for name, text in {new!r}.items():
        (out / name).write_text(text)
    out.remove("c.txt")
    out.commit()
print("finished", flush=True)
"""


def test_commit_killed_at_every_step_leaves_old_or_new_results(tmp_path):
    """Killed (os._exit, in a subprocess) at each step of the commit, the output directory holds
    the old complete results or the new complete results once the next run opens it; the old
    ones before the commit point, the new ones after."""
    import surgesim.outputs as outputs

    script = _KILLER.format(new=NEW)
    seen = []
    for k in range(1, 30):
        d = tmp_path / f"run{k}"
        _commit_run(outputs, d, OLD)
        r = subprocess.run([sys.executable, "-c", script, str(OUTPUTS_PY), str(d), str(k)], capture_output=True,
                           text=True, timeout=60)  # fmt: skip
        step = r.stdout.strip()
        after = _results(d)
        if step == "finished":
            assert r.returncode == 0 and after == NEW, r.stderr
            break
        assert r.returncode == 9, r.stderr
        seen.append(step)
        committed = "committed" in seen
        assert after == (NEW if committed else OLD), (step, after)
    else:
        pytest.fail("the commit never finished")
    assert seen[:3] == ["staged", "journal written", "committed"] and "journal deleted" in seen
    assert {"removed c.txt", "moved a.txt", "moved d.txt"} <= set(seen)


@pytest.mark.parametrize("at", ["staged", "journal written", "committed", "moved b.txt", "journal deleted"])
def test_commit_failing_at_a_step_leaves_old_or_new_results(tmp_path, monkeypatch, at):
    """An exception at a step: before the commit point the directory keeps its old files and the
    error is raised; after it, the next run finishes moving the new ones in."""
    import surgesim.outputs as outputs

    d = tmp_path / "o"
    _commit_run(outputs, d, OLD)

    def step(what):
        if what == at:
            raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(outputs, "_step", step)
    with pytest.raises(OSError):
        _commit_run(outputs, d, NEW, removed=["c.txt"])
    monkeypatch.undo()
    assert _results(d) == (OLD if at in ("staged", "journal written") else NEW)


def test_a_directory_in_the_way_fails_the_commit_before_anything_is_replaced(capsys, tmp_path):
    """A commit that cannot finish is found before its commit point: exit 2, every file unchanged."""
    grid = write_grid(tmp_path / "g.csv")
    out = tmp_path / "o"
    assert fit.main([str(grid), "--out", str(out), "--quiet", "--no-plot"]) == 0
    (out / "optimal_lr.csv").unlink()
    (out / "optimal_lr.csv").mkdir()  # a directory where a result goes (fits.csv, sorted first, would pass)
    line = refused(capsys, fit.main, [grid, "--out", out, "--quiet", "--no-plot"], out)
    assert "a directory is in the way" in line and "optimal_lr.csv" in line
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".surgesim-")) == [".surgesim-run.json"]


def test_figures_replaces_old_files_in_the_same_atomic_step(tmp_path, monkeypatch):
    """sims.figures' removal of a figure's old files is part of the commit: killed before the
    commit point, the old files are all there."""
    import surgesim.outputs as outputs

    d = tmp_path / "f"
    _commit_run(outputs, d, {f"fig5_dynamics_{i}.png": "old" for i in range(21)})
    monkeypatch.setattr(outputs, "_step", lambda what: (_ for _ in ()).throw(KeyboardInterrupt) if what ==
                        "journal written" else None)  # fmt: skip
    with pytest.raises(KeyboardInterrupt), outputs.OutputDir(d, command="test") as out:
        for old in d.glob("fig5_*"):
            out.remove(old.name)
        (out / "fig5_dynamics_new.png").write_text("new")
        out.commit()
    monkeypatch.undo()
    assert len(_results(d)) == 21


# --- a rerun is checked before anything is done --------------------------------------------------


def test_out_of_another_command_is_refused(capsys, out, tmp_path):
    grid = write_grid(tmp_path / "g.csv")
    line = refused(capsys, fit.main, [grid, "--out", out, "--quiet"], out)
    assert "holds the outputs of sims.surge, not sims.fit" in line


def test_fit_rerun_with_other_inputs_is_refused(capsys, tmp_path):
    out = tmp_path / "o"
    assert fit.main([str(write_grid(tmp_path / "g.csv")), "--out", str(out), "--quiet", "--no-plot"]) == 0
    other = write_grid(tmp_path / "h.csv", groups=("y",))
    line = refused(capsys, fit.main, [other, "--out", out, "--quiet", "--no-plot"], out)
    assert "other inputs" in line and "grid_sha256" in line
    assert fit.main([str(write_grid(tmp_path / "g.csv")), "--out", str(out), "--quiet", "--no-plot"]) == 0


def test_refused_rerun_names_out_and_keeps_its_fix(capsys, out):
    line = refused(capsys, surge.main, [*SMALL, "--seed", "1", "--out", out], out)
    assert f"--out {out} holds the results of a different sweep: choose another --out" in line
    assert "store path" not in line


def test_long_messages_keep_their_end():
    text = "x" * 1000 + " the fix"
    assert _cli._one_line(text).endswith(" the fix") and len(_cli._one_line(text)) < 420


def test_refused_run_leaves_no_empty_out(capsys, tmp_path):
    bad = tmp_path / "p.npz"
    bad.write_text("not a problem")
    refused(capsys, surge.main, [*SMALL, "--problem", bad, "--out", tmp_path / "new" / "o"])
    assert not (tmp_path / "new").exists()


def test_workloads_checks_its_store_before_the_reference_run(capsys, tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from sims import workloads
    from surgesim.workloads import protocol

    out = tmp_path / "w"
    args = ["--demo", "--quiet", "--no-plot", "--out", out]
    with OutputDir(out, command="sims.workloads"):  # a store of another grid
        sqlite3.connect(out / "sweep.sqlite").close()
    from surgesim import sweep

    sweep.run_sweep(lambda p: {"x": 1}, [{"other": 1}], params={"fn": "other"}, store=out / "sweep.sqlite", workers=1)

    def no_training(*a, **k):
        raise AssertionError("trained before refusing")

    monkeypatch.setattr(protocol, "gradient_task", no_training)
    monkeypatch.setattr(protocol, "measure_step_seconds", no_training)
    line = refused(capsys, workloads.main, args, out)
    assert "different sweep" in line


def test_result_files_follow_the_umask(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        target = tmp_path / "r.csv"
        with atomic_path(target) as tmp:
            tmp.write_text("x")
    finally:
        os.umask(old)
    assert target.stat().st_mode & 0o777 == 0o644


# --- signals: SIGTERM and SIGHUP as Ctrl-C, also during imports and the commit ----------------------


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_a_signal_during_a_run_is_one_line_and_cleans_staging(capsys, tmp_path, name):
    import os
    import signal

    sig = getattr(signal, name)
    out = tmp_path / "o"

    def body():
        o = _cli.out_dir(str(out), command="test")
        (o / "partial.csv").write_text("x")
        o.final("store.sqlite").write_text("finished results")
        os.kill(os.getpid(), sig)
        time.sleep(5)
        return 0

    assert _cli.run(body) == 128 + sig
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("interrupted") and "finished results are kept" in err[0]
    assert sorted(p.name for p in out.iterdir()) == ["store.sqlite"]


@pytest.mark.parametrize("at", ["journal written", "committed"])
def test_ctrl_c_during_the_commit(capsys, tmp_path, monkeypatch, at):
    """Ctrl-C before the commit point: old files, exit 130; after it: the commit finishes first."""
    import os
    import signal

    import surgesim.outputs as outputs

    d = tmp_path / "o"
    _commit_run(outputs, d, OLD)
    monkeypatch.setattr(outputs, "_step", lambda what: os.kill(os.getpid(), signal.SIGINT) if what == at else None)

    assert _cli.run(_new_run(d)) == 130
    assert capsys.readouterr().err.startswith("interrupted")
    monkeypatch.undo()
    assert _results(d) == (OLD if at == "journal written" else NEW)


def test_ctrl_c_during_imports_is_one_line():
    code = ("import sys; sys.argv[0] = '-m'; import sims, os, signal, time; os.kill(os.getpid(), signal.SIGTERM); "
            "time.sleep(10)")  # fmt: skip
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT,
                       env={"PYTHONPATH": f"{ROOT / 'src'}:{ROOT}", "PATH": ""})  # fmt: skip
    assert r.returncode == 143 and r.stderr == "interrupted: finished results are kept\n"


# --- exit codes and messages (issue 24) ------------------------------------------------------------


def test_no_command_is_a_usage_error(capsys):
    assert dispatcher.main([]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "usage: surgesim" in captured.err
    assert captured.err.strip().splitlines()[-1].startswith("error: no command given")


def test_empty_lists_do_not_mean_everything(capsys, tmp_path):
    from sims import schedules

    assert "--only" in refused(capsys, figures.main, ["--only", "", "--out", tmp_path / "f"])
    assert "--schedules is empty" in refused(capsys, schedules.main, ["--schedules", " ,", "--out", tmp_path / "s"])
    assert not (tmp_path / "f").exists() and not (tmp_path / "s").exists()


@pytest.mark.parametrize("value", ["0", "abc"])
def test_bad_numba_num_threads(value):
    r = subprocess.run([sys.executable, "-m", "sims.fit", "grid.csv"], capture_output=True, text=True, timeout=60,
                       cwd=ROOT, env={"PYTHONPATH": f"{ROOT / 'src'}:{ROOT}", "PATH": "", "NUMBA_NUM_THREADS": value})
    assert r.returncode == 2 and r.stderr == (f"error: the environment variable NUMBA_NUM_THREADS={value!r} must be a "
                                              "positive integer (or unset: every core)\n")  # fmt: skip


def test_symlink_loop_as_out(capsys, tmp_path):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    line = refused(capsys, fit.main, [write_grid(tmp_path / "g.csv"), "--out", tmp_path / "loop", "--quiet"])
    assert "symbolic link loop" in line


def test_bad_dask_scheduler_address_is_named_before_the_problem_is_built(capsys, tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    from surgesim import problem

    for kind in list(problem.FAMILIES):
        monkeypatch.setitem(problem.FAMILIES, kind, lambda *a, **k: pytest.fail("problem built before the check"))
    with _peer(None) as port:  # accepts and stays silent
        monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", f"tcp://127.0.0.1:{port}")
        line = refused(capsys, surge.main, [*SMALL, "--out", tmp_path / "o", "--connect-timeout", "0.5"])
    assert f"DASK_SCHEDULER_ADDRESS='tcp://127.0.0.1:{port}'" in line and not (tmp_path / "o").exists()


@pytest.mark.parametrize(("content", "message"), [(b"", "an empty file"), (b"hello\n", "starts with b'hell'"),
                                                  (b"PK", "starts with b'PK'")])  # fmt: skip
def test_bad_checkpoint_files(tmp_path, content, message):
    pytest.importorskip("torch")
    from surgesim.workloads import probing

    path = tmp_path / "c.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        probing.load_checkpoint(path, None)


def test_unreached_rel_se_is_a_warning(capsys, tmp_path):
    args = ["--dims", "40", "--batch-sizes", "1,64", "--rel-se", "1e-6", "--max-trials", "4096", "--quiet",
            "--no-plot", "--out", str(tmp_path / "o")]  # fmt: skip
    assert surge.main(args) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: --rel-se 1e-06 was not reached at 2 of 2 batch sizes (B = 1, 64)")
    assert "--max-trials 4096" in err and err.count("\n") == 1


def test_an_undefined_z_is_an_empty_cell(tmp_path):
    """Every trial draws the same update (mu = 5 sigma at B = 64): z is undefined, and results.csv
    has an empty cell, as docs/outputs.md says, not "nan"."""
    import csv

    path = _npz(tmp_path / "p.npz", mu=np.full(4, 5.0), sigma=np.ones(4), h_diag=np.ones(4))
    out = tmp_path / "o"
    assert surge.main(["--problem", str(path), "--batch-sizes", "64", "--trials", "4096", "--quiet", "--no-plot",
                       "--out", str(out)]) == 0  # fmt: skip
    with open(out / "results.csv", newline="") as f:
        row = next(csv.DictReader(f))
    assert row["z"] == "" and "nan" not in (out / "results.csv").read_text()


def test_fit_long_group_value_and_integer_batch_sizes(tmp_path):
    grid = write_grid(tmp_path / "g.csv", groups=("v" * 300,))
    out = tmp_path / "o"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert fit.main([str(grid), "--group-cols", "group", "--out", str(out), "--quiet"]) == 0
    assert all(len(p.name) < 120 for p in out.iterdir()) and len(list(out.glob("fit_*.png"))) == 1
    lines = (out / "optimal_lr.csv").read_text().splitlines()
    assert [line.split(",")[1] for line in lines[1:]] == ["8", "32", "128", "512"]


def test_probe_validity_bounds_that_disagree_are_flagged():
    from sims import probe

    assert probe.validity_disagreement({"validity_bound": 25.0, "validity_bound_exact": 10122.0}) is not None
    assert probe.validity_disagreement({"validity_bound": 9000.0, "validity_bound_exact": 10122.0}) is None
    assert probe.validity_disagreement({"validity_bound": 25.0}) is None  # a network: no exact bound
    assert probe._fmt(1024.0) == "1024" and probe._fmt(0.0123456) == "0.0123"


# --- progress inside a task (issue 24) ---------------------------------------------------------------


def test_progress_inside_a_long_task():
    """One adaptive batch size reports fractions of its task, rising, before the task's 1/1."""
    from surgesim import sweep
    from surgesim.estimate import estimate_task
    from surgesim.problem import FAMILIES

    calls = []
    task = {"batch_size": 16, "seed": 0, "trials": None, "rel_se": 0.004, "max_trials": 1 << 20, "sampler": "sign",
            "backend": "cpu"}  # fmt: skip
    sweep.run_sweep(estimate_task, [task], shared=FAMILIES["lowrank"](40, 0), workers=1,
                    progress=lambda done, total: calls.append(done))  # fmt: skip
    inside = calls[1:-1]
    assert calls[0] == 0 and calls[-1] == 1 and inside and all(0 < f < 1 for f in inside)
    assert inside == sorted(inside)


def test_progress_off_a_terminal_is_a_line_now_and_then(monkeypatch):
    from surgesim import progress

    monkeypatch.setattr(progress, "LINE_SECONDS", 0.0)
    text = io.StringIO()
    with progress.progress_bar(desc="batch sizes", file=text) as bar:
        bar(0, 4)
        bar(2.5, 4)
    assert "batch sizes: 2.5 of 4 done (62%)" in text.getvalue()
    quiet = io.StringIO()
    with progress.progress_bar(quiet=True, file=quiet) as bar:
        bar(2, 4)
    assert quiet.getvalue() == ""


def test_compiling_is_said(capsys, tmp_path):
    import types

    kernel = types.SimpleNamespace(signatures=[], _cache=types.SimpleNamespace(
        _cache_file=types.SimpleNamespace(_index_path=str(tmp_path / "missing.nbi"))))  # fmt: skip
    module = types.SimpleNamespace(kernel=kernel, other=1)
    _cli.say_if_compiling(module)
    assert capsys.readouterr().err.startswith("compiling 1 kernels")
    _cli.say_if_compiling(module, quiet=True)
    (tmp_path / "missing.nbi").write_bytes(b"")
    _cli.say_if_compiling(module)
    assert capsys.readouterr().err == ""


def test_absurd_sizes_are_memory_errors_up_front(capsys, tmp_path, monkeypatch):
    assert "memory" in refused(capsys, bench.main, ["--scaling", "--scaling-dims", "1000000000000"])
    pytest.importorskip("torch")
    from sims import probe

    path = _npz(tmp_path / "p.npz", mu=np.full(4, 0.1), sigma=np.ones(4), h_diag=np.ones(4))
    monkeypatch.setattr(_cli, "available_memory", lambda: 10**9)
    line = refused(capsys, probe.main, ["--problem", path, "--batch-sizes", "100000000", "--out", tmp_path / "o"])
    assert "--batch-sizes 100000000 at d = 4 needs about" in line and not (tmp_path / "o").exists()


def test_a_scaling_child_out_of_memory_is_exit_2(capsys, monkeypatch):
    def child(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, "", "Traceback (most recent call last):\nMemoryError\n")

    monkeypatch.setattr(subprocess, "run", child)
    line = refused(capsys, bench.main, ["--scaling", "--scaling-dims", "1000"])
    assert line.startswith("error: not enough memory: --scaling at d = 1000: MemoryError")


def test_disk_full_names_the_file(capsys, tmp_path, monkeypatch):
    def no_space(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", no_space)
    assert _cli.run(lambda: _cli.write_json({"a": 1}, tmp_path / "summary.json")) == 2
    line = capsys.readouterr().err
    assert line.startswith(f"error: disk full writing {tmp_path / 'summary.json'} (No space left on device)")


def test_a_commit_failing_after_its_commit_point_says_so(capsys, tmp_path, monkeypatch):
    import surgesim.outputs as outputs

    d = tmp_path / "o"
    _commit_run(outputs, d, OLD)

    def step(what):
        if what == "moved a.txt":
            raise OSError(errno.EIO, "Input/output error", str(d / "a.txt"))

    monkeypatch.setattr(outputs, "_step", step)

    assert _cli.run(_new_run(d)) == 2
    assert "committed but not all moved into place" in capsys.readouterr().err
    monkeypatch.undo()
    assert _results(d) == NEW


def test_a_finished_run_is_a_success_whatever_happens_to_its_console(capsys, tmp_path, monkeypatch):
    class Gone(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", Gone())
    out = tmp_path / "o"

    def body():
        o = _cli.out_dir(str(out), command="test")
        (o / "results.csv").write_text("x\n")
        print("the table of a finished run")  # the reader of stdout has gone
        return 0

    assert _cli.run(body) == 0
    assert (out / "results.csv").read_text() == "x\n"


def test_sigterm_stops_the_tasks_in_flight_at_once(tmp_path):
    """SIGTERM to a sweep on worker processes ends it in seconds, its workers too: before, it waited
    for every task in flight (minutes for a probe task), since the signal does not reach them."""
    import os
    import signal

    (tmp_path / "slow_task.py").write_text(
        "import os, time\n"
        "def task(params):\n"
        "    open(os.path.join(params['dir'], f'pid-{os.getpid()}'), 'w').close()\n"
        "    time.sleep(300)\n"
        "    return {'x': 1}\n"
    )  # fmt: skip
    code = (
        "import sys; from sims import _cli; from surgesim.sweep import run_sweep; import slow_task\n"
        f"tasks = [{{'i': i, 'dir': {str(tmp_path)!r}}} for i in range(4)]\n"
        f"sys.exit(_cli.run(lambda: run_sweep(slow_task.task, tasks, store={str(tmp_path / 's.sqlite')!r}, "
        "workers=2) and 0))\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}:{ROOT / 'src'}:{ROOT}"}
    with subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True) as p:
        try:
            deadline = time.monotonic() + 120
            while len(list(tmp_path.glob("pid-*"))) < 2 and time.monotonic() < deadline:
                time.sleep(0.2)
            workers = [int(f.name[4:]) for f in tmp_path.glob("pid-*")]
            assert len(workers) == 2, "the workers did not start"
            t0 = time.monotonic()
            p.send_signal(signal.SIGTERM)
            assert p.wait(timeout=60) == 128 + signal.SIGTERM
            assert time.monotonic() - t0 < 30
            assert "finished results are kept" in p.stderr.read()
        finally:
            p.kill()
    time.sleep(1)
    def running(pid: int) -> bool:  # alive and not a zombie
        try:
            return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
        except FileNotFoundError:
            return False

    assert not [w for w in workers if running(w)], "workers still running"


@pytest.mark.parametrize("argv", [["sims", "--help"], ["sims", "--version"], ["sims.validate", "--help"]])
def test_help_into_a_pipe_that_has_gone_is_exit_0_without_a_traceback(argv):
    # `surgesim --help | head -1`: the reader may close the pipe before the usage is written;
    # the dispatcher's --help printed a BrokenPipeError traceback with exit status 1
    with subprocess.Popen([sys.executable, "-m", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        proc.stdout.close()  # before the child has written (it is still importing)
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=120) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err
