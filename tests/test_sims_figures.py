"""``python -m sims.figures``: the data that goes into each figure, and --quick writing the same
files as the committed full run."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from sims import figures
from surgesim import large_batch_lr, noise_batch_size, optimal_loss_improvement, optimal_lr, surge_lr
from surgesim.problem import FAMILIES

ROOT = Path(__file__).resolve().parents[1]
QUICK = figures.Options(out="", quick=True, seed=0, only=(), quiet=True)


@pytest.fixture(scope="module", autouse=True)
def _one_surge_problem():
    """fig1's problem built once for the module: figures._estimates caches its Monte Carlo per
    problem, so test_fig1 and the quick run share it (it is the same problem, computed once)."""
    import surgesim

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(surgesim, "surge_problem", functools.cache(surgesim.surge_problem))
        yield


@pytest.fixture(autouse=True)
def _close_figures():
    """The builders draw through pyplot, which keeps every figure open: close them after each test."""
    yield
    plt.close("all")


def lines(ax) -> dict:
    """Label -> (x, y) of every labelled Line2D of an axes."""
    return {ln.get_label(): (np.asarray(ln.get_xdata()), np.asarray(ln.get_ydata())) for ln in ax.get_lines()}


def mc_points(ax):
    """(x, y, half-height of the error bar) of the Monte Carlo points (the errorbar container)."""
    (c,) = [c for c in ax.containers if c.get_label().startswith("Monte Carlo")]
    x, y = (np.asarray(v) for v in c.lines[0].get_data())
    seg = c.lines[2][0].get_segments()
    return x, y, np.array([abs(s[1, 1] - s[0, 1]) / 2 for s in seg])


def test_fig1_plots_the_theory_and_monte_carlo_of_its_problem():
    fig = figures.fig1_figure(QUICK)
    ax = fig.axes[0]
    p = FAMILIES["lowrank"](300, 0)
    got = lines(ax)
    B, y = got["exact, eq 9"]
    np.testing.assert_allclose(y, optimal_lr(B, p.mu, p.sigma, p.hessian), rtol=1e-12)
    np.testing.assert_allclose(got["closed-form surge, eq 2"][1], surge_lr(B, p.mu, p.sigma, p.hessian), rtol=1e-12)
    np.testing.assert_allclose(got["erf approx., eq 9 + eq 10"][1],
                               optimal_lr(B, p.mu, p.sigma, p.hessian, approx=True), rtol=1e-12)  # fmt: skip
    assert {"SGD rule, eq 1"} <= set(got)
    # Monte Carlo points: 12 batch sizes, bars of 2 s.e. (zero at B = 2^20, where every sign is
    # certain in every trial drawn, while eq 9 still counts the rare flips: 1e-5 relative slack)
    x, y, bar = mc_points(ax)
    assert x.size == 12 and np.all(bar >= 0) and np.count_nonzero(bar) >= 10
    exact = optimal_lr(x, p.mu, p.sigma, p.hessian)
    assert np.all(np.abs(y - exact) <= 2 * bar + 1e-5 * exact)
    (bn,) = [ln for ln in ax.get_lines() if ln.get_label().startswith("$B_{noise}$")]
    assert bn.get_xdata()[0] == pytest.approx(noise_batch_size(p.mu, p.sigma, p.hessian))
    (plateau,) = [ln for ln in ax.get_lines() if "eq 17" in ln.get_label()]
    assert plateau.get_ydata()[0] == pytest.approx(large_batch_lr(p.mu, p.hessian))
    # the legend sits outside the axes (a figure legend), not on the data
    assert ax.get_legend() is None and len(fig.legends) == 1


def test_fig2_plots_eq10_errors_per_family():
    fig = figures.fig2_figure(QUICK)
    right = lines(fig.axes[1])
    assert set(right) == {"lowrank", "diagonal", "powerlaw"}
    for name, (B, err) in right.items():
        p = FAMILIES[name](300, 0)
        exact = optimal_lr(B, p.mu, p.sigma, p.hessian)
        np.testing.assert_allclose(err, np.abs(optimal_lr(B, p.mu, p.sigma, p.hessian, approx=True) / exact - 1),
                                   rtol=1e-9, atol=1e-15)  # fmt: skip


@pytest.mark.parametrize("which", ["fig3", "fig4"])
def test_families_panels_plot_their_problems(which):
    fig = getattr(figures, f"{which}_figure")(QUICK)
    axes = [ax for ax in fig.axes if ax.get_lines()]
    assert [ax.get_title().split(",")[0] for ax in axes] == [
        "diagonal + rank 4 (surge)", "dense power-law spectrum", "diagonal H (no surge)"]  # fmt: skip
    for ax, family in zip(axes, ("lowrank", "powerlaw", "diagonal")):
        p = FAMILIES[family](200, 0)
        label = "exact, eq 9" if which == "fig3" else "exact, eq 8"
        B, y = lines(ax)[label]
        f = optimal_lr if which == "fig3" else optimal_loss_improvement
        np.testing.assert_allclose(y, f(B, p.mu, p.sigma, p.hessian), rtol=1e-12)
        x, pts, bar = mc_points(ax)
        exact = f(x, p.mu, p.sigma, p.hessian)
        assert np.all(np.abs(pts - exact) <= 2 * bar + 1e-5 * exact)
        has_bn = any(ln.get_label().startswith("$B_{noise}$") for ln in ax.get_lines())
        assert has_bn == (family != "diagonal")  # diagonal H: B_noise infinite, no line
    assert len(fig.legends) == 1


@pytest.mark.slow  # about 2 minutes: every figure's command end to end (CI runs the slow tier)
def test_quick_mode_writes_the_committed_files(tmp_path):
    # A quick run writes exactly the files of the committed full run (fig6 trains a network).
    pytest.importorskip("torch")
    pytest.importorskip("PIL")
    # fig11 (two quick network validations, 11 min idle) is left to `sims.figures --only fig11 --quick`.
    only = ",".join(f for f in figures.FIGURES if f != "fig11")
    assert figures.main(["--quick", "--only", only, "--out", str(tmp_path), "--quiet"]) == 0
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted(p.name for p in (ROOT / "figures").iterdir() if not p.name.startswith("fig11_"))
    pngs = [n for n in written if n.endswith(".png")]
    assert sorted(n[:-4] + ".pdf" for n in pngs) == sorted(n for n in written if n.endswith(".pdf"))
    from PIL import Image

    for n in pngs:
        with Image.open(tmp_path / n) as im:
            assert round(im.info["dpi"][0]) >= 200, n


def test_only_makes_the_subset(tmp_path):
    assert figures.main(["--quick", "--only", "fig2", "--out", str(tmp_path), "--quiet"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig2_erf.pdf", "fig2_erf.png"]


def test_unknown_figure_is_an_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "sims.figures", "--only", "fig99", "--out", str(tmp_path)],
                       capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "fig99" in r.stderr


def test_a_failing_sub_command_is_one_error_line_naming_the_figure(tmp_path, monkeypatch, capsys):
    from sims import limits

    def broken(args):
        raise ValueError("a planted failure")

    monkeypatch.setattr(limits, "_main", broken)
    (tmp_path / "fig7_old.png").write_text("kept")
    assert figures.main(["--quick", "--only", "fig7", "--out", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: fig7 (python -m sims.limits") and "a planted failure" in err[0]
    assert (tmp_path / "fig7_old.png").read_text() == "kept"  # nothing committed by a failed run
