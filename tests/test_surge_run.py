"""surgesim.surge (issue 25: the library behind sims.surge) and theory.curves_and_constants
(issue 24: the closed forms and constants of a large-d run in one threaded set of passes)."""

from __future__ import annotations

import numpy as np
import pytest

from surgesim import theory as th
from surgesim.problem import FAMILIES
from surgesim.surge import checked_theory
from tests.test_faults import SMALL, refused, snapshot


@pytest.mark.parametrize("family", ["lowrank", "diagonal", "powerlaw"])
def test_curves_and_constants_equal_curves_and_constants_bit_for_bit(family):
    p = FAMILIES[family](300, 2)
    B = np.array([1.0, 7.0, 64.0, 1e5])
    lines, scalars = th.curves_and_constants(B, p.mu, p.sigma, p.hessian)
    want = th.curves(B, p.mu, p.sigma, p.hessian)
    assert list(lines) == list(want)
    for k in want:
        np.testing.assert_array_equal(lines[k], want[k])
    assert list(scalars.items()) == list(th.constants(p.mu, p.sigma, p.hessian).items())  # inf == inf


@pytest.mark.parametrize("family", ["lowrank", "diagonal", "dense"])
def test_shared_r_and_diagonal_give_the_closed_forms_bit_for_bit(family, monkeypatch):
    """curves_and_constants computes r = mu / sigma and the diagonal of H once for all its passes:
    over many coordinate blocks, with zero and negative-zero curvatures, the values are those of
    curves and constants, which compute their own in every block."""
    from surgesim.hessian import Diagonal, DiagonalPlusLowRank

    monkeypatch.setattr(th, "_COORDS", 37)
    p = FAMILIES[family](300, 3)
    if family != "dense":
        h = p.hessian.diagonal_part().copy()
        h[::7], h[3::7] = 0.0, -0.0
        U = p.hessian.low_rank_factor()
        H = DiagonalPlusLowRank(h, U) if U.shape[1] else Diagonal(h)
        p = type(p)(p.mu, p.sigma, H)
    B = np.array([1.0, 3.0, 64.0, 1e4, np.inf])
    lines, scalars = th.curves_and_constants(B, p.mu, p.sigma, p.hessian, strict=family != "diagonal")
    want = th.curves(B, p.mu, p.sigma, p.hessian)
    for k in want:
        np.testing.assert_array_equal(lines[k], want[k])
    assert list(scalars.items()) == list(th.constants(p.mu, p.sigma, p.hessian).items())


def test_a_shared_r_that_underflows_fails_as_each_pass_alone():
    p = FAMILIES["lowrank"](50, 0)
    tiny = type(p)(np.where(np.arange(50) == 7, 1e-310, p.mu), p.sigma, p.hessian)
    with pytest.raises(FloatingPointError, match="underflow encountered in divide"):
        th.curves_and_constants([1.0, 4.0], tiny.mu, tiny.sigma, tiny.hessian, strict=True)


def test_checked_theory_refuses_a_problem_without_gradient():
    p = FAMILIES["lowrank"](50, 0)
    zero = type(p)(np.zeros(50), p.sigma, p.hessian)
    with pytest.raises(ValueError, match="mu is zero"):
        checked_theory(zero, (1, 4))


def test_checked_theory_refuses_overflowing_closed_forms():
    p = FAMILIES["lowrank"](50, 0)
    huge = type(p)(p.mu * 1e200, p.sigma, p.hessian)
    with pytest.raises(ValueError, match="not finite"):
        checked_theory(huge, (1, 4))


# --- problem.npz is written beside the Monte Carlo (issue 24: d = 10^7 end to end) ----------------


@pytest.fixture
def sweep_started(monkeypatch):
    """An event set when the first Monte Carlo task of a sims.surge run starts."""
    import threading

    from surgesim import surge

    started = threading.Event()
    task = surge.estimate_task

    def estimate_task(params, problem):
        started.set()
        return task(params, problem)

    monkeypatch.setattr(surge, "estimate_task", estimate_task)
    return started


def save_after(monkeypatch, started, then=None):
    """Make QuadraticProblem.save wait (up to 10 s) for ``started``, record whether it came, then
    save, or call ``then(path)`` instead."""
    from surgesim.problem import QuadraticProblem

    save, seen = QuadraticProblem.save, []

    def slow_save(self, path):
        seen.append(started.wait(timeout=10))
        return save(self, path) if then is None else then(path)

    monkeypatch.setattr(QuadraticProblem, "save", slow_save)
    return seen


def test_the_problem_file_is_written_beside_the_monte_carlo(tmp_path, monkeypatch, sweep_started):
    from sims import surge as command
    from surgesim.problem import QuadraticProblem

    seen = save_after(monkeypatch, sweep_started)
    out = tmp_path / "o"
    assert command.main([*SMALL, "--out", str(out)]) == 0
    assert seen == [True]  # the Monte Carlo had started while the save was still to come
    p = QuadraticProblem.load(out / "problem.npz")  # complete, and committed with the results
    np.testing.assert_array_equal(p.mu, FAMILIES["lowrank"](40, 0).mu)


def full_disk(path):
    import errno

    raise OSError(errno.ENOSPC, "No space left on device", str(path))


def test_a_save_that_fails_during_the_monte_carlo_leaves_a_fresh_out_empty(capsys, tmp_path, monkeypatch,
                                                                          sweep_started):  # fmt: skip
    from sims import surge as command

    seen = save_after(monkeypatch, sweep_started, then=full_disk)
    line = refused(capsys, command.main, [*SMALL, "--out", tmp_path / "o"])
    assert seen == [True]
    assert "disk full" in line and "problem.npz" in line and "unchanged" in line
    assert snapshot(tmp_path / "o") == {}  # the store this run created is gone with the staged files


def test_a_full_disk_reports_the_save_not_the_store(capsys, tmp_path, monkeypatch, sweep_started):
    """The store fails too on a full disk: the error is the save's, and a fresh --out stays empty."""
    import sqlite3

    from sims import surge as command
    from surgesim import sweep

    def store_full(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(sweep, "_commit_done", store_full)
    save_after(monkeypatch, sweep_started, then=full_disk)
    line = refused(capsys, command.main, [*SMALL, "--out", tmp_path / "o"])
    assert "problem.npz" in line and "No space left on device" in line and "store" not in line
    assert snapshot(tmp_path / "o") == {}


def test_a_failed_save_keeps_a_store_the_run_did_not_create(capsys, tmp_path, monkeypatch, sweep_started):
    from sims import surge as command

    out = tmp_path / "o"
    assert command.main([*SMALL, "--out", str(out)]) == 0  # (sets sweep_started: the rerun runs no task)
    save_after(monkeypatch, sweep_started, then=full_disk)
    line = refused(capsys, command.main, [*SMALL, "--out", out], out)  # every file byte-identical
    assert "disk full" in line and (out / "store.sqlite").exists()


@pytest.mark.skipif(not hasattr(__import__("os"), "confstr") or not __import__("sys").platform.startswith("linux"),
                    reason="glibc on Linux")  # fmt: skip
def test_reuse_freed_memory_serves_large_arrays_from_the_heap():
    """After reuse_freed_memory (sims.surge calls it), a 128 MiB array lies in the process's heap,
    not in a mapping of its own (whose pages would be faulted in afresh for every temporary)."""
    import os
    import subprocess
    import sys

    if not os.confstr("CS_GNU_LIBC_VERSION"):
        pytest.skip("not glibc")
    code = (
        "import numpy as np, sys\n"
        "from surgesim.surge import reuse_freed_memory\n"
        "if sys.argv[1] == 'on': reuse_freed_memory()\n"
        "a = np.ones(2**24); b = a * 2.0; del a; c = np.empty(2**24)\n"
        "heap = [[int(x, 16) for x in line.split()[0].split('-')] for line in open('/proc/self/maps') "
        "if line.rstrip().endswith('[heap]')]\n"
        "print(any(lo <= c.ctypes.data < hi for lo, hi in heap))\n"
    )
    on, off = (subprocess.run([sys.executable, "-c", code, arg], capture_output=True, text=True, check=True).stdout
               for arg in ("on", "off"))  # fmt: skip
    assert (on.strip(), off.strip()) == ("True", "False")
