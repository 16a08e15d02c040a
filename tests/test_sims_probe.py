"""python -m sims.probe end to end: a torch quadratic with a known answer (eq 9), a CNN checkpoint
on the shipped demo data, resumption, and bad input (one error line, exit status 2)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sims import probe as sims_probe  # noqa: E402
from surgesim import theory  # noqa: E402
from surgesim.hessian import DiagonalPlusLowRank  # noqa: E402
from surgesim.problem import QuadraticProblem  # noqa: E402
from surgesim.workloads import protocol  # noqa: E402


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def problem_file(tmp_path_factory):
    rng = np.random.default_rng(11)
    d = 12
    s = rng.choice([-1.0, 1.0], d)
    sigma = rng.uniform(0.7, 1.4, d)
    mu = s * sigma * rng.uniform(0.03, 0.1, d)
    p = QuadraticProblem(
        mu, sigma, DiagonalPlusLowRank(rng.uniform(0.5, 2, d), s[:, None] * rng.uniform(0.5, 1, (d, 2)))
    )
    path = tmp_path_factory.mktemp("p") / "p.npz"
    p.save(path)
    return path


def test_problem_end_to_end_and_resume(problem_file, tmp_path):
    out = tmp_path / "q"
    argv = ["--problem", str(problem_file), "--batch-sizes", "1,16,256", "--draws", "512",
            "--hessian-examples", "1", "--stats-examples", "64", "--probes", "2", "--crit-examples", "8",
            "--out", str(out), "--quiet"]  # fmt: skip
    assert sims_probe.main(argv) == 0
    rows = read_csv(out / "probe.csv")
    assert list(rows[0]) == [c for c in sims_probe.COLUMNS if c != "target_loss"]
    assert [int(r["batch_size"]) for r in rows] == [1, 16, 256]
    for r in rows:  # the probe agrees with eq 9 (4 of its standard errors)
        assert abs(float(r["lr_probe"]) - float(r["lr_exact"])) < 4 * float(r["lr_probe_se"])
    summary = json.loads((out / "summary.json").read_text())
    for key in ("peak_batch_size_probe", "peak_batch_size_gaussian", "peak_batch_size_independent",
                "noise_batch_size_eq14", "b_simple", "b_simple_se", "b_crit", "b_crit_se", "max_abs_z"):  # fmt: skip
        assert key in summary
    assert summary["max_abs_z"] < 4
    # the values, against independent computations from the problem file (not only their keys)
    q = QuadraticProblem.load(problem_file)
    mu, sigma, H = q.mu, q.sigma, q.hessian
    z = []
    for r in rows:
        B = int(r["batch_size"])
        assert float(r["lr_exact"]) == pytest.approx(float(theory.optimal_lr(B, mu, sigma, H)), rel=1e-12)
        dl = float(theory.optimal_loss_improvement(B, mu, sigma, H))
        assert abs(float(r["dl_probe"]) - dl) < 4 * float(r["dl_probe_se"])
        z.append((float(r["lr_probe"]) - float(r["lr_exact"])) / float(r["lr_probe_se"]))
        assert float(r["z_probe"]) == pytest.approx(z[-1], rel=1e-9)
    assert summary["max_abs_z"] == pytest.approx(max(abs(x) for x in z), rel=1e-9)
    assert summary["noise_batch_size_exact"] == pytest.approx(theory.noise_batch_size(mu, sigma, H), rel=1e-12)
    fine = np.logspace(0, 4, 4001)
    assert summary["peak_batch_size_exact"] == pytest.approx(fine[np.argmax(theory.optimal_lr(fine, mu, sigma, H))],
                                                             rel=5e-3)  # fmt: skip
    assert abs(summary["b_simple"] - sigma @ sigma / (mu @ mu)) < 4 * summary["b_simple_se"]
    b_crit = float(np.sum(H.diag() * sigma**2) / (mu @ H.matvec(mu)))
    assert abs(summary["b_crit"] - b_crit) < 4 * summary["b_crit_se"]
    best = max(rows, key=lambda r: float(r["lr_probe"]))  # the probe's peak: the grid's largest lr (refined)
    assert summary["peak_interior_probe"] == (best is not rows[0] and best is not rows[-1])
    assert {"probe.png", "probe.pdf", "options.json", "store.sqlite"} <= {p.name for p in out.iterdir()}
    before = (out / "probe.csv").read_bytes()
    assert sims_probe.main(argv) == 0  # resumes from the store: nothing recomputed, the same table
    assert (out / "probe.csv").read_bytes() == before


def test_cnn_checkpoint_on_demo_data(tmp_path):
    spec = protocol.RunSpec(workload="cnn", lr=1e-3, batch_size=8, seed=0, targets=(1.0,))
    ckpt = tmp_path / "cnn.pt"
    torch.save({"model": protocol.build_model(spec).state_dict()}, ckpt)
    out = tmp_path / "cnn"
    argv = ["--workload", "cnn", "--demo", "--checkpoint", str(ckpt), "--batch-sizes", "1,4", "--draws", "16",
            "--hessian-examples", "4", "--stats-examples", "8", "--probes", "2", "--crit-examples", "2",
            "--full-gradient-examples", "64", "--threads", "1", "--no-plot", "--out", str(out), "--quiet"]  # fmt: skip
    assert sims_probe.main(argv) == 0
    rows = read_csv(out / "probe.csv")
    assert [int(r["batch_size"]) for r in rows] == [1, 4]
    assert all(float(r["lr_probe_se"]) > 0 and r["lr_gaussian"] and r["lr_independent"] for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["results"]) == 1 and "b_crit" in summary["results"][0]


def test_bad_input(tmp_path, capsys, problem_file):
    def fails(*argv):
        assert sims_probe.main([*argv, "--out", str(tmp_path / "o"), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and err.count("\n") == 1, err
        return err

    assert "--demo" in fails("--workload", "cnn")
    assert "train-images" in fails("--workload", "cnn", "--data-dir", str(tmp_path))
    bad = tmp_path / "bad.pt"
    torch.save({"conv1.weight": torch.zeros(3)}, bad)
    assert "does not match" in fails("--workload", "cnn", "--demo", "--checkpoint", str(bad))
    assert "larger than the data set" in fails("--workload", "cnn", "--demo", "--batch-sizes", "1,100000")
    with pytest.raises(SystemExit) as e:
        sims_probe.main(["--workload", "vgg", "--demo"])
    assert e.value.code == 2 and capsys.readouterr().err.count("\n") == 1
    fails("--problem", str(problem_file), "--rel-se", "1.5")
    assert not (tmp_path / "o" / "probe.csv").exists()
