"""The scripts in examples/ run, at tiny sizes, and print what they promise."""

from __future__ import annotations

import re
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest

from surgesim import QuadraticProblem, optimal_lr

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str, argv: list[str], monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [name, *argv])
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")


def test_own_problem(monkeypatch, tmp_path, capsys):
    run_example("own_problem.py", ["--dims", "60", "--out", "p", "--rel-se", "0.1"], monkeypatch, tmp_path)
    out = capsys.readouterr().out
    p = QuadraticProblem.load(tmp_path / "p" / "problem.npz")
    assert p.dim == 60 and out.startswith(repr(p))
    rows = [r.split() for r in out.splitlines() if re.match(r"^\s+\d+\s", r)]
    B = np.array([float(r[0]) for r in rows])
    lr, se, exact = (np.array([float(r[k]) for r in rows]) for k in (1, 2, 3))
    np.testing.assert_allclose(exact, optimal_lr(B, p.mu, p.sigma, p.hessian), rtol=1e-4)  # printed to 5 digits
    assert np.all(np.abs(lr - exact) <= 4.5 * se)


def test_own_grid(monkeypatch, tmp_path, capsys):
    run_example("own_grid.py", ["--out", "."], monkeypatch, tmp_path)
    out = capsys.readouterr().out
    # the synthetic grid's optima follow eq 2 with B_noise 64 (small) and 256 (large)
    assert "B_noise = 256 (surge_fit)" in out and "B_noise = 64 (surge_fit)" in out
    assert (tmp_path / "synthetic_grid.csv").is_file()


def test_dask_sweep(monkeypatch, tmp_path, capsys, caplog):
    pytest.importorskip("distributed")
    argv = ["--dims", "20", "--trials", "1000", "--batch-sizes", "1,64", "--workers", "1", "--out", "s"]
    run_example("dask_sweep.py", argv, monkeypatch, tmp_path)
    assert re.findall(r"^B = +(\d+):", capsys.readouterr().out, re.M) == ["1", "64"]
    # the library logs the LocalCluster's dashboard address (sims prints it: the next test)
    assert re.search(r"dashboard http://127\.0\.0\.1:\d+/status", caplog.text), caplog.text
    assert (tmp_path / "s" / "store.sqlite").is_file()


def test_commands_print_the_dashboard_address(capsys):
    # sims prints the library's log record of a LocalCluster's dashboard (the record itself is
    # checked in test_dask_sweep) as one stderr line, and nothing else from the sweep's log.
    import logging

    from sims import _cli

    def main():
        log = logging.getLogger("surgesim.sweep")
        log.info("sweep: %d tasks, %d already finished", 3, 0)
        log.info("Dask LocalCluster at %s, dashboard %s", "tcp://127.0.0.1:1", "http://127.0.0.1:2/status")

    assert _cli.run(main) == 0
    assert capsys.readouterr().err == "Dask LocalCluster at tcp://127.0.0.1:1, dashboard http://127.0.0.1:2/status\n"


def test_oracle_variants(monkeypatch, tmp_path, capsys):
    argv = ["--optimizer", "sign", "--dims", "16", "--betas", "0.9,0.98", "--multipliers", "1",
            "--seeds", "3", "--tune-seeds", "2", "--max-steps", "400"]  # fmt: skip
    run_example("oracle_variants.py", argv, monkeypatch, tmp_path)
    lines = [ln.split() for ln in capsys.readouterr().out.splitlines()]
    fields = [{k: v for k, _, v in (w.partition("=") for w in ln if "=" in w)} for ln in lines]
    targets = sorted({f["target"] for f in fields})
    oracles = [f for f in fields if "dominated>5%" in f]
    assert len(targets) == 3 and len(oracles) == 3 * 2 * 2  # (optimal, constant lr) x 2 betas per target
    for target in targets:
        front = [(float(f["S"]), float(f["E"])) for f in fields
                 if f["target"] == target and "dominated>5%" not in f and f["S"] != "-"]  # fmt: skip
        assert front
        for f in (f for f in oracles if f["target"] == target and f["S"] != "-"):
            s, e = float(f["S"]), float(f["E"])
            beaten = any(fs <= 0.95 * s and fe <= 0.95 * e for fs, fe in front)  # independent of the library
            assert f["dominated>5%"] == str(beaten)
