"""What a reviewer checks on each figure, checked on what is drawn (artists' data, text, positions,
colours), not on the file: issue 24, "Figures a reviewer would send back". Small made-up data."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from surgesim import limits as lim  # noqa: E402
from surgesim import theory as th  # noqa: E402
from surgesim.gridfit import BatchOptimum, GridFit, grid_cells, score_matrix  # noqa: E402
from surgesim.plots.grid import eq22_fit_quality, eq22_panel, heatmap_panel, peak_vs_target_figure  # noqa: E402
from surgesim.plots.limits import regime_maps_figure  # noqa: E402
from surgesim.plots.onestep import lr_vs_batch_figure  # noqa: E402
from surgesim.plots.probe import probe_figure  # noqa: E402
from surgesim.plots.schedules import schedules_front_figure  # noqa: E402
from surgesim.problem import surge_problem  # noqa: E402


def _bbox(fig, artist):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if hasattr(fig.canvas, "get_renderer") else FigureCanvasAgg(fig)
    canvas.draw()
    return artist.get_window_extent(canvas.get_renderer())


# --- fig1 and sims.surge's surge.png -------------------------------------------------------------


def _fig1():
    p = surge_problem(100, 0)
    B = np.array([1.0, 4.0, 64.0, 1024.0, 2.0**20])
    line = np.geomspace(1, 2**20, 50)
    curves = {k: v for k, v in th.curves(line, p.mu, p.sigma, p.hessian).items() if k.startswith("lr_")}
    lr = th.optimal_lr(B, p.mu, p.sigma, p.hessian)
    return lr_vs_batch_figure(line, curves, B, lr, 0.01 * lr, 86.0, th.large_batch_lr(p.mu, p.hessian), 1e4), B


def test_fig1_end_markers_are_whole_and_the_legend_sits_below_the_plot():
    fig, B = _fig1()
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    # the first and last Monte Carlo points are a marker's width inside the axes, not on the edge
    assert lo < B.min() / 1.2 and hi > B.max() * 1.2
    # markers are drawn whole: their window extent lies inside the axes' extent
    renderer = (fig.canvas.draw(), fig.canvas.get_renderer())[1]
    box = ax.get_window_extent(renderer)
    x_pix = ax.transData.transform(np.column_stack([B, np.ones_like(B) * 1e-4]))[:, 0]
    ms = 4 * fig.dpi / 72  # marker size in pixels (ms = 4 points)
    assert x_pix.min() - ms / 2 >= box.x0 and x_pix.max() + ms / 2 <= box.x1
    # the validity-bound shading reaches the right edge, now beyond the last point
    span = next(p for p in ax.patches if p.get_label() == "B > validity bound")
    assert span.get_window_extent(renderer).x1 == pytest.approx(box.x1, abs=1.0)
    # the legend is under the axes and spans most of the width: no empty column beside it
    leg = fig.legends[0]
    lb = leg.get_window_extent(renderer)
    assert lb.y1 <= box.y0 and lb.width > 0.6 * box.width
    assert box.width > 0.8 * fig.bbox.width


# --- fig7_limits_maps ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def maps():
    p = surge_problem(100, 0)
    B, sc = np.geomspace(1, 1e8, 25), np.geomspace(0.1, 30, 9)
    probs = [surge_problem(d, 0) for d in (4, 8, 16, 64, 256, 1024)]
    bound = lim.surge_bound_map(probs, np.geomspace(1e-5, 1e3, 25))
    return [lim.erf_error_map(p, B, sc), lim.surge_error_map(p, B, sc), bound]


def test_fig7_maps_titles_differ_labels_upright_inside_and_colorbar_close(maps):
    fig = regime_maps_figure(maps)
    panels, cbar = fig.axes[:3], fig.axes[3]
    titles = [ax.get_title() for ax in panels]
    assert len(set(titles)) == 3, titles  # two maps of eq 2 vs eq 9 are told apart
    renderer = (fig.canvas.draw(), fig.canvas.get_renderer())[1]
    n_labels = 0
    for ax in panels:
        box = ax.get_window_extent(renderer)
        for t in ax.texts:  # contour labels
            if not t.get_text().endswith("%"):
                continue
            n_labels += 1
            assert t.get_rotation() == 0  # upright, never upside down
            tb = t.get_window_extent(renderer)
            assert box.x0 <= tb.x0 and tb.x1 <= box.x1 and box.y0 <= tb.y0 and tb.y1 <= box.y1, t.get_text()
    assert n_labels >= 4
    gap = cbar.get_window_extent(renderer).x0 - panels[-1].get_window_extent(renderer).x1
    assert 0 <= gap < 0.05 * fig.bbox.width  # the colour bar beside the last panel, not far off


# --- fig8_schedules_front ------------------------------------------------------------------------


def _entries():
    out = []
    for label in ("sign", "adam"):
        for frac in (0.5, 0.25):
            for b, (s, e) in zip((8, 64, 512), ((400, 3200), (60, 3840), (20, 200000))):
                out.append(dict(label=label, target_fraction=frac, schedule="constant", variant=f"B={b}", batch=b,
                                median_steps=s, median_examples=e, median_steps_se=1, median_examples_se=10))
            for k, c in enumerate(("0.5", "1", "2")):
                out.append(dict(label=label, target_fraction=frac, schedule="oracle", variant=f"c={c}", batch=c,
                                median_steps=50 + 10 * k, median_examples=20000 + 5000 * k, median_steps_se=2,
                                median_examples_se=300))
    return out


def test_fig8_each_variant_has_its_own_look_and_label_and_ticks_share_one_format():
    fig = schedules_front_figure(_entries())
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    for c in ("0.5", "1", "2"):
        assert f"oracle c={c}" in labels  # "oracle c=2" can be found
    drawn = {c.get_label(): c.lines[0] for ax in fig.axes for c in ax.containers}  # each point's marker line
    oracle = [drawn[f"oracle c={c}"] for c in ("0.5", "1", "2")]
    assert len({(m.get_marker(), to_rgba(m.get_color())) for m in oracle}) == 1  # the schedule's marker, colour
    looks = {(m.get_fillstyle(), to_rgba(m.get_markerfacecolor())) for m in oracle}
    assert len(looks) == 3  # and a fill per variant
    fig.canvas.draw()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            texts = [t.get_text() for t in axis.get_ticklabels() if t.get_text()]
            assert texts
            assert len({"e" in t for t in texts}) == 1, texts  # never "50000" beside "2e5"


# --- fig9_probe ----------------------------------------------------------------------------------


def test_fig9_eq14_off_the_axis_is_marked_and_not_in_the_independent_green():
    rows = [dict(target_loss=t, batch_size=B, lr_probe=1e-4 * B**0.3, lr_probe_se=1e-5, lr_gaussian=8e-5 * B**0.3,
                 lr_gaussian_se=1e-5, lr_independent=3e-3 * B**-0.3) for t in (1.0, 0.4) for B in (1, 4, 16, 64)]
    summaries = [dict(target_loss=1.0, b_simple=24.0, b_crit=36.0, noise_batch_size_eq14=0.067),
                 dict(target_loss=0.4, b_simple=128.0, b_crit=30.0, noise_batch_size_eq14=4.08)]  # fmt: skip
    fig = probe_figure(rows, summaries)
    ax0, ax1 = fig.axes
    indep = next(line for line in ax0.lines if line.get_label().startswith("independent"))
    eq14 = [line for ax in (ax0, ax1) for line in ax.lines if "eq 14" in line.get_label()]
    assert eq14 and all(to_rgba(line.get_color()) != to_rgba(indep.get_color()) for line in eq14)
    # 0.067 < B = 1: no line on the axis, an arrow and the value at the left edge instead
    assert not any(len(line.get_xdata()) and line.get_xdata()[0] == 0.067 for line in ax0.lines)
    note = [t.get_text() for t in ax0.texts if "eq 14" in t.get_text()]
    assert note and "0.067" in note[0] and "\u2190" in note[0]
    # 128 > 64: B_simple is off to the right in the second panel; 4.08 is inside and drawn
    assert any("\u2192" in t.get_text() and "128" in t.get_text() for t in ax1.texts)
    assert any(list(line.get_xdata()) == [4.08, 4.08] for line in ax1.lines)


# --- fig5 grids: the eq 22 panel -----------------------------------------------------------------


def test_fig5_eq22_panel_states_fit_quality_and_draws_residuals():
    E = np.array([4e3, 8e3, 2e4, 5e4, 2e5])
    S_line = 1.0 / (1.0 / 50 - 40.0 / E)  # exactly on eq 22: B_noise 40, S_min 50
    r2, worst = eq22_fit_quality(1 / E, 1 / S_line, 40.0, 50.0)
    assert r2 == pytest.approx(1.0) and worst == pytest.approx(0.0, abs=1e-12)
    S = S_line * np.array([1.3, 0.9, 0.85, 0.95, 1.25])  # bent: the line misses them
    fig = Figure()
    ax = fig.subplots()
    eq22_panel(ax, S, E, 40.0, 50.0)
    r2, worst = eq22_fit_quality(1 / E, 1 / S, 40.0, 50.0)
    y, fit = 1 / S, 1 / 50 - 40.0 / E
    assert r2 == pytest.approx(1 - np.sum((y - fit) ** 2) / np.sum((y - y.mean()) ** 2))
    assert worst == pytest.approx(np.max(np.abs(y - fit) / y)) and worst > 0.1
    label = next(line.get_label() for line in ax.lines if line.get_label().startswith("eq 22"))
    assert f"$R^2$ = {r2:.3f}" in label and f"{worst:.0%}" in label
    assert len(ax.collections[0].get_segments()) == 5  # one residual bar per point


# --- fig6: error bars on the batch sizes ---------------------------------------------------------


def _opt(b, lr, se):
    return BatchOptimum(b, lr, se, 0.1, 2, False, 1.0)


def test_fig6_peak_range_and_predicted_error_bars():
    fit = GridFit(optima=(_opt(8, 1e-3, 0.1), _opt(16, 1.5e-3, 0.1), _opt(32, 1.4e-3, 0.1), _opt(64, 0.7e-3, 0.1)))
    # 1.5/1.4: log 0.069 < 2 * hypot(0.1, 0.1) = 0.28, tied; 1.5/1.0: 0.41 > 0.28; 1.5/0.7: 0.76
    assert fit.peak_batch_size_range() == (16.0, 32.0)
    assert np.isnan(GridFit(optima=()).peak_batch_size_range()).all()
    fig = peak_vs_target_figure([1.0, 0.6], {"adam": [16, 32]}, spread={"adam": ([16, 16], [32, 64])},
                                fitted={"adam": [25, 32]}, predicted={"adam": [0.03, 0.07]},
                                predicted_se={"adam": [0.003, 0.008]})  # fmt: skip
    ax = fig.axes[0]
    bars = {c.get_label(): c for c in ax.containers}
    pred = next(c for lab, c in bars.items() if "predicted" in lab)
    seg = pred.lines[2][0].get_segments()
    assert [s[1][1] - s[0][1] for s in seg] == pytest.approx([4 * 0.003, 4 * 0.008])  # +-2 s.e.
    peak = next(c for lab, c in bars.items() if "peak" in lab)
    assert [(s[0][1], s[1][1]) for s in peak.lines[2][0].get_segments()] == [(16, 32), (16, 64)]


# --- sims.fit: a grid whose learning rates differ per batch size ---------------------------------


def test_heatmap_draws_a_per_batch_size_grid_as_it_is_and_names_the_holes():
    lr, B, loss = [], [], []
    for b in (16, 64, 256):
        for k in range(4):
            lr.append(1e-4 * np.sqrt(b) * 2.0**k)
            B.append(b)
            loss.append(np.nan if (b, k) == (64, 3) else 1.0 + 0.1 * k)
    bs, lrs, ran = grid_cells(lr, B)
    assert ran.sum() == 12 and ran.shape == (3, 6)  # 12 runs in a 3 x 6 union of lrs
    _, _, z = score_matrix(lr, B, loss)
    fig = Figure()
    ax = fig.subplots()
    heatmap_panel(ax, bs, lrs, z, normalize=False, ran=ran, missing="no value: loss NaN in the grid")
    meshes = [c for c in ax.collections if c.get_array() is not None]
    assert sum(m.get_array().size for m in meshes) == 12  # every run one cell, no cell that was not run
    labels = ax.get_legend_handles_labels()[1]
    assert "no value: loss NaN in the grid" in labels and not any("target not reached" in lab for lab in labels)
    hatched = [p for p in ax.patches if isinstance(p, Rectangle) and p.get_hatch() and p.get_width() > 0]
    assert len(hatched) == 1  # the one run without a value, not the cells never run
    # a full grid keeps one mesh with every cell
    full = Figure().subplots()
    heatmap_panel(full, bs, lrs, np.ones((3, 6)), normalize=False, ran=np.ones((3, 6), bool))
    assert [c.get_array().size for c in full.collections if c.get_array() is not None] == [18]


def test_fig9_one_panel_legend_fits_in_the_figure():
    rows = [dict(target_loss=1.0, batch_size=B, lr_probe=1e-4 * B**0.3, lr_probe_se=1e-5, lr_gaussian=8e-5 * B**0.3,
                 lr_gaussian_se=1e-5, lr_independent=3e-3 * B**-0.3) for B in (1, 16)]  # fmt: skip
    fig = probe_figure(rows, [dict(target_loss=1.0, b_simple=35.0, b_crit=20.0)])
    legend = _bbox(fig, fig.legends[0])
    assert legend.x0 >= 0 and legend.x1 <= fig.bbox.width  # not cut at the figure's edges
