"""python -m sims.fit: a synthetic eq 2 grid (known B_noise and eps_max), the shipped StepLaw grid,
groups with no peak or too little data, errors."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from sims import fit as sims_fit
from surgesim import gridfit
from surgesim.data import steplaw_grid

BN, PEAK, S_MIN = 48.0, 2e-3, 200.0


def surge(B):
    return PEAK / (0.5 * (np.sqrt(BN / B) + np.sqrt(B / BN)))


def write_grid(path: Path) -> None:
    """Two groups (beta1 0 and 0.9) x 2 seeds of a grid whose loss is a parabola in log lr around
    eq 2's optimum, and whose steps to target follow eq 20 (S = S_min (1 + B_noise / B))."""
    rng = np.random.default_rng(3)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["beta1", "seed", "lr", "batch_size", "further_decrease", "steps"])
        for beta1 in (0.0, 0.9):
            for seed in (0, 1):
                for B in (4, 8, 16, 32, 64, 128, 256, 512):
                    for lr in np.geomspace(1e-4, 3e-2, 25):
                        gain = 0.3 - 0.2 * (math.log(lr) - math.log(surge(B))) ** 2 + 1e-4 * rng.standard_normal()
                        steps = S_MIN * (1 + BN / B)
                        w.writerow([beta1, seed, repr(float(lr)), B, repr(gain), "" if gain < 0 else repr(steps)])


def read(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_synthetic_grid_recovers_noise_batch_size_and_peak(tmp_path, capsys):
    grid = tmp_path / "grid.csv"
    write_grid(grid)
    out = tmp_path / "out"
    rc = sims_fit.main([str(grid), "--loss-col", "further_decrease", "--maximize", "--steps-col", "steps",
                        "--seed-col", "seed", "--group-cols", "beta1", "--out", str(out)])  # fmt: skip
    assert rc == 0
    fits = read(out / "fits.csv")
    assert [r["beta1"] for r in fits] == ["0", "0.9"]
    assert list(fits[0])[:7] == ["beta1", "noise_batch_size", "peak_lr", "surge_rss", "sgd_rss_alpha_0.5",
                                 "sgd_rss_alpha_1", "best_model"]  # fmt: skip
    for r in fits:
        assert r["noise_batch_size_source"] == "eq22"
        # Steps follow eq 20 exactly: eq 22 is exact up to round-off.
        assert float(r["noise_batch_size"]) == pytest.approx(BN, rel=1e-9)
        # Eq 23 averages eps_opt / 2 (sqrt(Bn/B) + sqrt(B/Bn)) over the grid's optima, which the
        # parabola interpolation finds to within the 1e-4 score noise: 1% on eps_max.
        assert float(r["peak_lr"]) == pytest.approx(PEAK, rel=0.01)
        assert float(r["surge_noise_batch_size"]) == pytest.approx(BN, rel=0.05)
        assert r["best_model"] == "surge"
        assert float(r["surge_rss"]) < min(float(r["sgd_rss_alpha_0.5"]), float(r["sgd_rss_alpha_1"]))
    opt = read(out / "optimal_lr.csv")
    assert len(opt) == 2 * 8
    assert list(opt[0])[:3] == ["beta1", "batch_size", "optimal_lr"]
    for r in opt:
        assert float(r["optimal_lr"]) == pytest.approx(surge(float(r["batch_size"])), rel=0.01)
    assert sorted(p.name for p in out.glob("*.png")) == ["fit_beta1=0.9.png", "fit_beta1=0.png"]
    assert sorted(p.name for p in out.glob("*.pdf")) == ["fit_beta1=0.9.pdf", "fit_beta1=0.pdf"]
    assert (out / "options.json").is_file()
    assert "eq22" in capsys.readouterr().out


def test_steplaw_grid_runs_per_group(tmp_path, capsys):
    assert steplaw_grid().is_file()  # shipped as package data, so this runs in any clone or install
    out = tmp_path / "steplaw"
    rc = sims_fit.main(["steplaw", "--lr-col", "lr", "--batch-col", "bs", "--loss-col", "smooth loss",
                        "--group-cols", "N,D", "--out", str(out), "--no-plot", "--quiet"])  # fmt: skip
    assert rc == 0
    fits = read(out / "fits.csv")
    assert len(fits) == 17  # the README's 17 (N, D) groups
    # No steps-to-target column: B_noise comes from the surge fit where its peak lies inside the
    # batch sizes, and is left empty (with a note and a warning line) where it does not.
    sources = [r["noise_batch_size_source"] for r in fits]
    assert set(sources) == {"surge_fit", "no_peak_in_range"}
    for r in fits:
        fitted = r["noise_batch_size_source"] == "surge_fit"
        assert (r["noise_batch_size"] != "") == fitted and (r["note"] == "") == fitted
        if fitted:
            assert 16 <= float(r["noise_batch_size"]) <= 2048  # inside the batch sizes (16 or 32 .. 1024 or 2048)
    err = capsys.readouterr().err
    assert err.count("warning: ") == sources.count("no_peak_in_range") and "N = 215M, D = 100B" in err
    assert all(r["best_model"] in ("surge", "sgd_alpha_0.5", "sgd_alpha_1") for r in fits)
    # Optimal learning rates sit inside the grid's range (2.4e-4 to 2.2e-2) and rise with the
    # batch size at small B, the pattern the README describes.
    opt = read(out / "optimal_lr.csv")
    lrs = np.array([float(r["optimal_lr"]) for r in opt])
    assert lrs.min() >= 2.4e-4 and lrs.max() <= 2.3e-2


def test_rising_grid_has_no_absurd_numbers_anywhere(tmp_path, capsys):
    # Optima that only rise with B: the surge fit's B_noise runs to about 1e23; the table, the CSV
    # files and the figure's legend must show no such number, and one warning line says why.
    grid = tmp_path / "rising.csv"
    with open(grid, "w") as f:
        f.write("lr,batch_size,loss\n")
        for B in (4, 8, 16, 32, 64, 128):
            for lr in map(float, np.geomspace(1e-4, 1e-1, 19)):
                f.write(f"{lr!r},{B},{1 + 0.5 * (math.log(lr) - math.log(1e-3 * math.sqrt(B))) ** 2!r}\n")
    out = tmp_path / "o"
    assert sims_fit.main([str(grid), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith("warning: the grid: no surge peak in range")
    row = read(out / "fits.csv")[0]
    assert row["noise_batch_size"] == row["peak_lr"] == row["surge_noise_batch_size"] == ""
    assert row["noise_batch_size_source"] == "no_peak_in_range"
    numbers = []
    for v in row.values():
        try:
            numbers.append(abs(float(v)))
        except ValueError:
            pass
    assert numbers and max(numbers) < 1e6
    assert "e+" not in captured.out
    table = gridfit.read_table(grid)
    fit = gridfit.fit_grid(table["lr"], table["batch_size"], table["loss"])
    fig = sims_fit.figure(fit, table["lr"], table["batch_size"], table["loss"], maximize=False, score_label="loss")
    labels = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert labels and not any("B_{noise}" in t for t in labels)


def test_grid_too_small_to_fit_is_an_error(tmp_path, capsys):
    grid = tmp_path / "one.csv"
    grid.write_text("lr,bs,loss\n0.001,4,1.0\n")
    assert sims_fit.main([str(grid), "--batch-col", "bs", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "not fitted: 1 usable optima of 1 batch sizes" in err
    assert not (tmp_path / "o").exists()


def test_errors_are_one_line_exit_2(tmp_path, capsys):
    assert sims_fit.main([str(tmp_path / "missing.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1 and "missing.csv" in err
    grid = tmp_path / "g.csv"
    grid.write_text("lr,bs,loss\n0.001,4,1.0\n")
    assert sims_fit.main([str(grid), "--batch-col", "batch", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no column 'batch'" in err and err.count("\n") == 1
    with pytest.raises(SystemExit) as exc:
        sims_fit.main([str(grid), "--bogus"])
    assert exc.value.code == 2
