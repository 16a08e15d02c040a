"""``python -m sims.surge`` end to end: files and columns, errors, reproducibility."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sims import surge
from surgesim import QuadraticProblem, optimal_lr, surge_problem

REQUIRED_COLUMNS = {"batch_size", "trials", "lr_mc", "lr_mc_se", "lr_exact", "lr_erf_approx", "lr_surge", "lr_sgd"}
REQUIRED_SUMMARY = {"dims", "seed", "trials", "noise_batch_size", "peak_lr", "large_batch_lr", "validity_bound",
                    "exact_peak_batch_size", "mc_peak_batch_size", "max_abs_z", "wall_seconds"}  # fmt: skip


ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sims.surge", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})})  # fmt: skip


def read_csv(path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_small_run_writes_every_output(tmp_path):
    assert surge.main(["--dims", "200", "--b-max", "100000", "--b-num", "12", "--rel-se", "0.03",
                       "--out", str(tmp_path), "--quiet"]) == 0  # fmt: skip
    rows = read_csv(tmp_path / "results.csv")
    assert REQUIRED_COLUMNS <= set(rows[0])
    assert len(rows) == 12
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert REQUIRED_SUMMARY <= set(summary)
    assert summary["max_abs_z"] <= 4.5
    p = QuadraticProblem.load(tmp_path / "problem.npz")
    B = np.array([float(r["batch_size"]) for r in rows])
    # lr_exact in the file is eq 9 of the saved problem (computed here afresh)
    np.testing.assert_allclose(
        [float(r["lr_exact"]) for r in rows], optimal_lr(B, p.mu, p.sigma, p.hessian), rtol=1e-12
    )
    assert (tmp_path / "surge.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "options.json").read_text())["dims"] == 200


def test_one_batch_size_runs_without_warnings(tmp_path):
    """A single --batch-sizes value: no warning line (its figure once drew a 1-ulp x range)."""
    r = run_cli("--dims", "300", "--batch-sizes", "64", "--trials", "256", "--out", str(tmp_path), "--quiet")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert (tmp_path / "surge.png").stat().st_size > 10_000


def test_one_batch_size_figure_reuses_the_closed_forms(tmp_path, monkeypatch):
    """The figure of a one-batch-size run draws the closed forms already computed at that B: no
    second pass over the coordinates (1.2 s at d = 10^7 when logspace gave B twice, 1 ulp apart)."""
    from surgesim import theory

    calls = []
    real = theory.curves
    monkeypatch.setattr(theory, "curves", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    assert surge.main(["--dims", "300", "--batch-sizes", "64", "--trials", "256", "--out", str(tmp_path),
                       "--quiet"]) == 0  # fmt: skip
    assert calls == [] and (tmp_path / "surge.png").stat().st_size > 10_000


def test_problem_file_round_trip(tmp_path):
    path = tmp_path / "p.npz"
    surge_problem(60, 9, dense=True).save(path)
    assert surge.main(["--problem", str(path), "--batch-sizes", "1,8,64", "--trials", "2000",
                       "--out", str(tmp_path / "o"), "--quiet", "--no-plot"]) == 0  # fmt: skip
    rows = read_csv(tmp_path / "o" / "results.csv")
    assert [int(r["batch_size"]) for r in rows] == [1, 8, 64]
    assert all(int(r["trials"]) == 2000 for r in rows)
    assert not (tmp_path / "o" / "surge.png").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dims", "1"], "--dims: must be >= 2, got 1"),
        (["--batch-sizes", "0,4"], "batch sizes must be >= 1"),
        (["--batch-sizes", "1,x"], "expected comma-separated integers"),
        (["--trials", "1"], "--trials: must be >= 2, got 1"),
        (["--rel-se", "2"], "--rel-se must be in (0, 1)"),
        (["--trials", "10", "--rel-se", "0.1"], "not allowed with argument"),
        (["--problem", "/nonexistent.npz"], "no such file"),
        (["--hessian", "weird"], "invalid choice"),
        (["--scheduler", "local:0"], "local:0"),
        (["--unknown"], "unrecognized arguments"),
    ],
)
def test_bad_input_is_one_error_line_and_exit_2(tmp_path, args, message):
    r = run_cli(*args, "--out", str(tmp_path / "o"), "--quiet", "--no-plot", "--b-num", "3", "--b-max", "10")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr


def test_malformed_problem_file_is_rejected(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, mu=np.ones(3), sigma=np.ones(3))  # no Hessian
    r = run_cli("--problem", str(bad), "--out", str(tmp_path / "o"), "--quiet")
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "expected mu, sigma" in r.stderr


def test_results_bit_identical_across_thread_counts(tmp_path):
    outputs = []
    for n in ("1", "2"):
        out = tmp_path / f"t{n}"
        env = {"NUMBA_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n}
        r = run_cli("--dims", "300", "--hessian", "dense", "--b-num", "6", "--b-max", "50000", "--rel-se", "0.05",
                    "--out", str(out), "--quiet", "--no-plot", env=env)  # fmt: skip
        assert r.returncode == 0, r.stderr
        outputs.append((out / "results.csv").read_bytes())
    assert outputs[0] == outputs[1]


def test_rerun_resumes_and_mismatch_is_refused(tmp_path):
    args = ["--dims", "100", "--b-num", "4", "--b-max", "1000", "--trials", "3000", "--out", str(tmp_path), "--quiet"]
    assert surge.main(args + ["--no-plot"]) == 0
    first = (tmp_path / "results.csv").read_bytes()
    assert surge.main(args + ["--no-plot"]) == 0  # resumed from the store: nothing recomputed
    assert (tmp_path / "results.csv").read_bytes() == first
    r = run_cli(*args, "--seed", "1")
    assert r.returncode == 2 and "different sweep" in r.stderr


def test_noise_batch_size_beyond_validity_is_said_and_json_is_strict(tmp_path, capsys):
    # mu/sigma = 0.5 gives a validity bound pi/(2 * 0.25) = 6.28; weak off-diagonal curvature
    # (0.01) puts eq 14's B_noise far above it (about 317).
    path = tmp_path / "p.npz"
    np.savez(path, mu=np.full(3, 0.5), sigma=np.ones(3), H=np.eye(3) + 0.01 * np.ones((3, 3)))
    out = tmp_path / "o"
    assert surge.main(["--problem", str(path), "--batch-sizes", "1,8", "--trials", "100", "--out", str(out),
                       "--quiet", "--no-plot"]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert err.startswith("warning: B_noise (eq 14) = 317.3 exceeds the validity bound 6.283") and err.count("\n") == 1
    summary = json.loads((out / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert summary["noise_batch_size_beyond_validity"] is True
    # diagonal H: B_noise is infinite, written as "inf" (strict JSON), and not "beyond validity"
    np.savez(path, mu=np.full(3, 0.5), sigma=np.ones(3), H=np.eye(3))
    assert surge.main(["--problem", str(path), "--batch-sizes", "1,8", "--trials", "100", "--out", str(out / "d"),
                       "--quiet", "--no-plot"]) == 0  # fmt: skip
    summary = json.loads((out / "d" / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert summary["noise_batch_size"] == "inf" and summary["noise_batch_size_beyond_validity"] is False
    assert capsys.readouterr().err == ""
