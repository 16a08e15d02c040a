"""The one-step figure builders draw what they claim, on small data."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402

from surgesim.plots import erf_figure, families_figure, lr_vs_batch_figure  # noqa: E402

B = np.logspace(0, 4, 50)
SURGE = 1 / (np.sqrt(10 / B) + np.sqrt(B / 10))
CURVES = {"lr_exact": SURGE, "lr_surge": SURGE * 1.01}


def labels(ax) -> list[str]:
    return ax.get_legend_handles_labels()[1]


def test_lr_vs_batch_figure_has_curves_points_markers_and_log_axes():
    pts = np.array([1.0, 10.0, 100.0])
    fig = lr_vs_batch_figure(B, CURVES, pts, np.array([0.1, 0.5, 0.2]), np.array([0.01, 0.02, 0.01]),
                             noise_batch_size=10.0, plateau=0.05, validity_bound=1000.0)  # fmt: skip
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    names = labels(ax)
    assert "exact, eq 9" in names and "closed-form surge, eq 2" in names
    assert any(n.startswith("$B_{noise}$") for n in names) and any("eq 17" in n for n in names)
    assert "Monte Carlo (2 s.e.)" in names and "B > validity bound" in names
    assert ax.get_xlabel().startswith("batch size") and "learning rate" in ax.get_ylabel()
    # the Monte Carlo points are the data given
    (line,) = [c for c in ax.containers][0].lines[:1]
    np.testing.assert_allclose(line.get_xdata(), pts)


def test_infinite_noise_batch_size_and_bound_are_not_drawn():
    fig = lr_vs_batch_figure(B, CURVES, B[:3], B[:3] * 0 + 0.1, B[:3] * 0 + 0.01,
                             noise_batch_size=np.inf, plateau=0.05, validity_bound=np.inf)  # fmt: skip
    names = labels(fig.axes[0])
    assert not any("B_{noise}" in n for n in names) and "B > validity bound" not in names


def test_one_batch_size_gets_a_readable_x_range_and_no_warning(tmp_path):
    """One batch size, given twice 1 ulp apart as logspace(log10(64), log10(64)) does: the x axis
    spans 64/1.5 .. 64*1.5 (not 1 ulp, which made matplotlib divide by zero)."""
    import warnings

    B1 = np.unique(np.logspace(np.log10(64.0), np.log10(64.0), 60))
    curves = {"lr_exact": np.full(B1.size, 2e-4)}
    fig = lr_vs_batch_figure(B1, curves, np.array([64.0]), np.array([2e-4]), np.array([1e-6]),
                             noise_batch_size=86.0, plateau=2e-5, validity_bound=1e4)  # fmt: skip
    lo, hi = fig.axes[0].get_xlim()
    np.testing.assert_allclose([lo, hi], [64 / 1.5, 64 * 1.5], rtol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig.savefig(tmp_path / "one.png")


def test_erf_figure_shows_both_functions_and_the_maximum_error():
    x = np.linspace(0, 4, 401)
    fig = erf_figure(x, B, {"p": 0.01 * np.ones_like(B)})
    left, right = fig.axes[0], fig.axes[1]
    assert "erf(x)" in labels(left)
    texts = [t.get_text() for t in fig.axes[2].texts]  # the twin axis carries the annotation
    assert any("-0.107" in t and "1.33" in t for t in texts)
    assert right.get_xscale() == "log" and labels(right) == ["p"]


def test_families_figure_one_panel_per_family():
    panels = [dict(title=t, B_line=B, curves=CURVES) for t in ("a", "b", "c")]
    fig = families_figure(panels)
    assert [ax.get_title() for ax in fig.axes] == ["a", "b", "c"]
