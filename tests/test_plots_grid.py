"""The grid-search figure builders draw what they claim, on small made-up data."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.collections import QuadMesh
from matplotlib.figure import Figure

from surgesim.fit import compare_curves, surge_curve
from surgesim.plots.grid import CURVE_STYLE, eq22_panel, grid_figure, heatmap_panel, peak_vs_target_figure

B = np.array([4.0, 16.0, 64.0, 256.0, 1024.0])
LR = np.geomspace(1e-4, 1e-2, 6)
OPT = surge_curve(B, 64.0, 3e-3)  # an exact surge: fits recover it


def _score():
    # a ridge along the optimal lr of each batch size, one missing cell
    s = -np.abs(np.log(LR)[None, :] - np.log(OPT)[:, None]) + 3.0
    s[0, 0] = np.nan
    return s


def test_heatmap_panel_draws_mesh_optima_curves_and_noise_batch_size():
    fig = Figure()
    ax = fig.subplots()
    curves = compare_curves(B, OPT)
    mesh = heatmap_panel(
        ax, B, LR, _score(), optima={"fewest steps": (B, OPT, np.full(5, 0.1))}, curves=curves, noise_batch_size=64.0
    )
    assert isinstance(mesh, QuadMesh)
    assert mesh.get_array().shape == (LR.size, B.size)  # lr on the vertical axis
    assert np.nanmax(mesh.get_array()) == pytest.approx(1.0)  # normalised per batch size
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert ax.get_xlabel() == "batch size B" and ax.get_ylabel() == "learning rate"
    labels = [h.get_label() for h in ax.get_legend_handles_labels()[0]]
    for name in ("surge", "sgd_alpha_0.5", "sgd_alpha_1"):
        assert CURVE_STYLE[name]["label"] in labels
    assert "fewest steps" in labels and any("B_{noise}" in lab for lab in labels)
    vline = [ln for ln in ax.get_lines() if np.all(np.asarray(ln.get_xdata()) == 64.0)]
    assert len(vline) == 1
    surge = next(ln for ln in ax.get_lines() if ln.get_label() == CURVE_STYLE["surge"]["label"])
    x, y = surge.get_data()
    np.testing.assert_allclose(y, surge_curve(x, 64.0, 3e-3), rtol=1e-4)  # the fit is the exact curve
    assert x.min() == B.min() and x.max() == B.max()


def test_heatmap_panel_raw_scores_and_shape_check():
    fig = Figure()
    ax = fig.subplots()
    mesh = heatmap_panel(ax, B, LR, _score(), normalize=False)
    np.testing.assert_array_equal(mesh.get_array(), _score().T)  # raw, transposed: lr vertical
    with pytest.raises(ValueError, match=r"shape \(n_B, n_lr\)"):
        heatmap_panel(ax, B, LR, _score().T)


def test_eq22_panel_draws_points_and_the_fitted_line():
    fig = Figure()
    ax = fig.subplots()
    S = 40.0 * (1 + 150.0 / B)
    eq22_panel(ax, S, B * S, 150.0, 40.0)
    points, line = ax.get_lines()
    np.testing.assert_allclose(points.get_xdata(), 1 / (B * S))
    np.testing.assert_allclose(points.get_ydata(), 1 / S)
    x, y = line.get_data()
    np.testing.assert_allclose(y, -150.0 * x + 1 / 40.0)  # eq 22 passes through the exact points
    assert ax.get_xlabel().startswith("1 / E") and ax.get_ylabel().startswith("1 / S")


def test_grid_figure_has_both_panels_and_a_colour_bar():
    S = 40.0 * (1 + 150.0 / B)
    fig = grid_figure(B, LR, _score(), optima={"opt": (B, OPT)}, steps=S, examples=B * S, noise_batch_size=150.0,
                      s_min=40.0, title="t")  # fmt: skip
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 3  # heat map, eq 22 panel, colour bar
    assert fig.axes[-1].get_ylabel().endswith("/ best at this B")
    assert fig.get_suptitle() == "t"
    assert len(grid_figure(B, LR, _score()).axes) == 2  # without steps: heat map and colour bar


def test_peak_vs_target_figure_lines_spread_and_reversed_log_axis():
    targets = np.array([0.5, 0.25, 0.125])
    fig = peak_vs_target_figure(
        targets, {"sign": [64, 128, 256], "adam": [128, 256, 512]},
        spread={"sign": ([32, 64, 128], [128, 256, 256])},
        fitted={"sign": [100, 200, 400]}, predicted={"sign": [90, 180, 300], "adam": [1, 2, 3]},
    )  # fmt: skip
    (ax,) = fig.axes
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    lo, hi = ax.get_xlim()
    assert lo > hi  # the loss decreases to the right
    labels = ax.get_legend_handles_labels()[1]
    assert labels.count("sign: peak batch size") == 1
    assert "sign: fitted $B_{noise}$ (eq 22)" in labels and "adam: predicted $B_{noise}$ (theory)" in labels
    assert len([lab for lab in labels if "fitted" in lab]) == 1  # adam had no fitted values
    sign = next(c for c in ax.containers if c.get_label() == "sign: peak batch size")
    assert sign.has_yerr and not next(c for c in ax.containers if c.get_label() == "adam: peak batch size").has_yerr


def test_noise_batch_size_outside_the_grid_is_not_drawn_and_legends_are_off_the_data():
    # A B_noise far beyond the batch sizes (an extrapolated fit) or NaN gets no line and no
    # legend entry; the legend sits below the heat map, outside its axes.
    for bn in (2.4e23, float("nan")):
        fig = grid_figure(B, LR, _score(), optima={"opt": (B, OPT)}, noise_batch_size=bn)
        ax = fig.axes[0]
        assert not any("B_{noise}" in lab for lab in ax.get_legend_handles_labels()[1])
        legend = ax.get_legend()
        fig.canvas.draw()
        box, axes_box = legend.get_window_extent(), ax.get_window_extent()
        assert box.y1 <= axes_box.y0 + 1  # entirely below the axes


def test_heatmap_cells_without_a_value_are_hatched_and_in_the_legend():
    fig = Figure()
    ax, bx = fig.subplots(1, 2)
    score = _score()
    score[1, 2] = np.nan  # a run that did not reach the target
    heatmap_panel(ax, B, LR, score)
    hatched = [p for p in ax.patches if p.get_hatch()]
    assert len(hatched) == 1 and hatched[0].get_label() == "no value (target not reached)"
    assert hatched[0] in ax.get_legend_handles_labels()[0]
    assert np.ma.is_masked(ax.collections[0].get_array()[2, 1]) or np.isnan(ax.collections[0].get_array()[2, 1])
    full = _score()
    full[0, 0] = 1.0
    heatmap_panel(bx, B, LR, full)  # every cell has a value: nothing hatched
    assert not [p for p in bx.patches if p.get_hatch()]
