"""``python -m sims.validate``: outputs against docs/outputs.md, bad input, reproducibility and
resumption, and fig11's plotted data."""

from __future__ import annotations

import csv
import importlib.util
import json
import math

import numpy as np
import pytest

from sims import validate as cli
from surgesim import validate as V
from tests.test_outputs_doc import DOC, documented, written_names

TINY_Q = ["--dims", "16", "--batch-sizes", "8,32,128,512", "--lr-points", "4", "--seeds", "3", "--targets", "0.5,0.25",
          "--further-steps", "5", "--max-steps", "400", "--replicates", "40", "--quiet"]  # fmt: skip
TINY_CNN = ["--workload", "cnn", "--demo", "--batch-sizes", "2,4,8", "--lrs", "1e-3,4e-3", "--seeds", "2",
            "--targets", "2.2", "--further-steps", "2", "--max-steps", "12", "--eval-examples", "8",
            "--probe-batch-sizes", "64,128,256", "--probe-draws", "2", "--refine-points", "0", "--workers", "1",
            "--replicates", "20", "--quiet"]  # fmt: skip


def _check_documented(out, command: str = "validate") -> None:
    sections = documented(DOC.read_text())
    files = sorted(p for p in out.rglob("*") if p.suffix in (".csv", ".json", ".npz"))
    missing = []
    for path in files:
        heading = next((h for h in (f"{command} {path.name}", path.name) if h in sections), None)
        if heading is None:
            missing.append(f"no section for {path.name}")
            continue
        for name in sorted(written_names(path)):
            parts = name.split(".")
            if not any(".".join(parts[:k]) in sections[heading] for k in range(1, len(parts) + 1)):
                missing.append(f"{heading}: {name}")
    assert not missing, "docs/outputs.md does not describe:\n" + "\n".join(missing)


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def quadratic_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("q") / "out"
    assert cli.main([*TINY_Q, "--out", str(out)]) == 0
    return out


def test_quadratic_outputs_are_complete_and_documented(quadratic_out):
    out = quadratic_out
    for name in ("validate.csv", "predictors.csv", "curves.csv", "runs.csv", "summary.json", "options.json",
                 "fig11_validate.png", "problem.npz"):  # fmt: skip
        assert (out / name).exists(), name
    _check_documented(out)
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["targets"]) == 2
    for t in summary["targets"]:
        assert set(t["predictors"]) == set(V.PREDICTOR_NAMES)
        for key in ("target_loss", "batch_sizes", "lr_opt", "lr_opt_se", "surge_p_value", "peak_batch_size",
                    "peak_batch_size_ci", "fitted_noise_batch_size", "fitted_noise_batch_size_se"):  # fmt: skip
            assert key in t
        assert len(t["lr_opt"]) == 4 and 0 < t["surge_p_value"] <= 1
    rows = _read(out / "validate.csv")
    assert list(rows[0]) == list(V.VALIDATE_COLUMNS) and len(rows) == 8
    preds = _read(out / "predictors.csv")
    assert {r["predictor"] for r in preds} == set(V.PREDICTOR_NAMES) and len(preds) == 12


def test_quadratic_is_reproducible_and_resumes(quadratic_out, tmp_path):
    again = tmp_path / "again"
    assert cli.main([*TINY_Q, "--out", str(again)]) == 0
    for name in ("validate.csv", "predictors.csv", "runs.csv"):
        assert (again / name).read_bytes() == (quadratic_out / name).read_bytes(), name
    # A rerun into the same folder takes every run from the stores and writes the same results.
    assert cli.main([*TINY_Q, "--out", str(again)]) == 0
    assert (again / "validate.csv").read_bytes() == (quadratic_out / "validate.csv").read_bytes()


@pytest.mark.slow  # about 25 s under load: 12 tiny CNN runs and the probe at 3 batch sizes
@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch")
def test_cnn_outputs_are_documented(tmp_path):
    out = tmp_path / "cnn"
    assert cli.main([*TINY_CNN, "--out", str(out)]) == 0
    _check_documented(out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["workload"] == "cnn" and summary["targets"]
    preds = {r["predictor"]: r for r in _read(out / "predictors.csv")}
    assert set(preds) == set(V.PREDICTOR_NAMES)
    # adam_predicted is probe_adam's value on networks (said in summary.json)
    assert preds["adam_predicted"]["value"] == preds["probe_adam"]["value"]
    assert "probe_adam" in summary["adam_predicted"]


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--workload", "cnn"], "--demo"),
        (["--workload", "cnn", "--data-dir", "/nonexistent-dir"], "train-images-idx3-ubyte"),
        (["--batch-sizes", "8,16"], "3 or more distinct batch sizes"),
        (["--targets", "1.5"], "fractions of the initial loss"),
        (["--workload", "cnn", "--demo", "--dims", "8"], "--dims"),
        (["--seeds", "1"], "must be >= 2"),
        (["--batch-sizes", "8,16,32", "--top", "3"], "--top 3"),
        (["--lrs", "1e-3"], "2 or more distinct learning rates"),
    ],
)
def test_bad_input_is_one_error_line(argv, words, tmp_path, capsys):
    with pytest.raises(SystemExit) if argv == ["--seeds", "1"] else _no_raise():
        status = cli.main([*argv, "--out", str(tmp_path / "x"), "--quiet"])
        assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and words in err[0], err


class _no_raise:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_validate_figure_plots_what_was_measured():
    from surgesim.plots.validate import validate_figure

    gen = np.random.default_rng(0)
    rows, curves = [], []
    for seed in range(3):
        for B in (4, 16, 64, 256):
            for lr in (1e-3, 3e-3, 1e-2, 3e-2):
                best = 1e-2 * math.sqrt(B / 16) / (1 + B / 64)
                rows.append(
                    {
                        "lr": lr,
                        "batch_size": B,
                        "seed": seed,
                        "target_loss": 1.0,
                        "steps": 10.0 * (1 + 32 / B),
                        "further_decrease": 1 - math.log(lr / best) ** 2 + 0.01 * gen.standard_normal(),
                    }
                )
    res = V.validate_rows(rows, [1.0], replicates=50)
    curves = [{"target_loss": 1.0, "predictor": "probe_sign", "batch_size": b, "lr_scaled": 1e-3 * b} for b in (4, 64)]
    fig = validate_figure(rows, res, curves)
    ax = fig.axes[0]
    r = res[0]
    # the optimal lr per B, with the 68% interval as error bars
    line = next(ln for ln in ax.get_lines() if "optimal lr" in ln.get_label())
    assert np.allclose(line.get_xdata(), r.batch_sizes) and np.allclose(line.get_ydata(), r.lr_opt)
    bars = next(c for c in ax.collections if "68% interval" in c.get_label())
    segs = bars.get_segments()
    assert np.allclose([s[0][0] for s in segs], r.batch_sizes)
    assert np.allclose([s[0][1] for s in segs], r.lr_opt_lo) and np.allclose([s[1][1] for s in segs], r.lr_opt_hi)
    # the predicted curve and the peak with its interval
    curve = next(ln for ln in ax.get_lines() if "probe curve, sign" in ln.get_label())
    assert np.allclose(curve.get_xdata(), [4, 64]) and np.allclose(curve.get_ydata(), [4e-3, 64e-3])
    peak = next(ln for ln in ax.get_lines() if ln.get_label().startswith("peak B"))
    assert np.allclose(peak.get_xdata(), r.peak_batch_size)
    band = next(p for p in ax.patches if "peak batch size, 68%" in p.get_label())
    x0, x1 = band.get_x(), band.get_x() + band.get_width()
    assert np.allclose([x0, x1], r.peak_batch_size_ci)
    assert f"p = {r.surge_p_value:.2g}" in ax.get_title()


def test_validate_figure_leaves_cells_never_run_blank():
    """Refinement adds learning rates per B: a cell that was never run is not "target not reached"."""
    from surgesim.plots.validate import validate_figure

    rows = [
        {"lr": lr, "batch_size": B, "seed": s, "target_loss": 1.0, "steps": 10.0,
         "further_decrease": 1 - math.log(lr / 3e-3) ** 2 + 0.01 * s}
        for s in range(2) for B in (4, 16, 64) for lr in ((1e-3, 3e-3, 1e-2) if B != 16 else (2e-3, 3e-3, 5e-3))
    ]  # fmt: skip
    res = V.validate_rows(rows, [1.0], replicates=20)
    labels = [t.get_text() for t in validate_figure(rows, res).legends[0].get_texts()]
    assert any(t.startswith("blank: not in the grid") for t in labels), labels
    assert not any("target not reached" in t for t in labels), labels  # every run has a value


@pytest.mark.parametrize("workload", ["cnn", "gpt"])
def test_committed_full_run_summaries_meet_the_validation_bar(workload):
    """figures/fig11_validate_<w>.json, the full run's summary, holds what issue 22 asks of it: >= 3
    targets, each with >= 8 batch sizes of finite lr_opt_se, a surge p-value in [0, 1], the peak
    inside its 68% interval and within the grid, eq 22's B_noise with a finite s.e., and all six
    predictors with a positive value whose log ratio to the fit is ln(value / fit)."""
    from pathlib import Path

    from surgesim.outputs import loads_json

    summary = loads_json((Path(__file__).parents[1] / "figures" / f"fig11_validate_{workload}.json").read_text())
    assert len(summary["targets"]) >= 3
    for t in summary["targets"]:
        pairs = zip(t["batch_sizes"], t["lr_opt_se"], strict=True)
        finite = [b for b, se in pairs if se is not None and math.isfinite(se)]
        assert len(finite) >= 8, (t["target_loss"], finite)
        assert 0.0 <= t["surge_p_value"] <= 1.0
        lo, hi = t["peak_batch_size_ci"]
        assert min(t["batch_sizes"]) <= lo <= t["peak_batch_size"] <= hi <= max(t["batch_sizes"])
        fit, fit_se = t["fitted_noise_batch_size"], t["fitted_noise_batch_size_se"]
        assert fit > 0 and math.isfinite(fit_se) and fit_se > 0
        assert set(t["predictors"]) == {"b_simple", "b_crit", "eq14", "adam_predicted", "probe_sign", "probe_adam"}
        for name, p in t["predictors"].items():
            assert p["value"] > 0, name
            assert p["log_ratio_to_fit"] == pytest.approx(math.log(p["value"] / fit), rel=1e-9, abs=1e-12), name
