"""The limits figure builders draw their data: the regime maps' colours are the errors given,
undefined cells are marked (not blank), coinciding curves stay distinguishable."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.collections import QuadMesh

from surgesim.limits import RegimeMap
from surgesim.plots.limits import adam_figure, regime_maps_figure


@pytest.fixture(autouse=True)
def _close_figures():
    """The builders draw through pyplot, which keeps every figure open: close them after each test."""
    yield
    plt.close("all")


def test_regime_map_colours_are_the_errors_and_undefined_cells_are_hatched():
    x, y = np.geomspace(1e-3, 1e3, 7), np.geomspace(1e-2, 1.0, 4)
    z = np.outer(y, x) * 1e-2
    z[0, :2] = np.nan  # e.g. B < 1 example
    m = RegimeMap("surge_vs_eq9_by_bound", x, y, z, "B_noise / validity bound", "eq 2 vs eq 9", {"B = B_noise": y})
    fig = regime_maps_figure([m])
    ax = fig.axes[0]
    (mesh,) = [c for c in ax.collections if isinstance(c, QuadMesh)]
    got = np.ma.filled(mesh.get_array().reshape(z.shape), np.nan)
    np.testing.assert_allclose(got, np.clip(np.abs(z), 1e-4, 10.0))
    hatched = [p for p in ax.patches if p.get_hatch()]
    assert hatched and ax.get_facecolor()[:3] != (1.0, 1.0, 1.0)  # no white holes
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["B = B_noise", "undefined (B < 1 example)"]
    (line,) = ax.get_lines()
    np.testing.assert_allclose(line.get_xdata(), y)
    assert fig.axes[-1].get_ylabel().startswith("|relative error|")  # the colour bar says what it shows
    full = RegimeMap("erf_in_eq9", x, y, np.nan_to_num(z) + 1e-3, "mu/sigma", "eq 10", {})
    assert not [p for p in regime_maps_figure([full]).axes[0].patches if p.get_hatch()]


def test_adam_curves_that_coincide_are_distinguishable():
    B = np.geomspace(1, 1e4, 9)
    same = (1 / np.sqrt(B), 0.01 / np.sqrt(B))
    fig = adam_figure(B, 0.5 / np.sqrt(B), {"Adam(0.9, 0.999)": same, "Adam(0.9, 0.95)": same})
    left = [ln for ln in fig.axes[0].get_lines() if ln.get_label().startswith("Adam")]
    np.testing.assert_allclose(left[0].get_ydata(), same[0])
    np.testing.assert_allclose(left[1].get_ydata(), same[0])
    styles = {(ln.get_linestyle(), ln.get_marker()) for ln in left}
    assert len(styles) == 2
    ratio = [ln for ln in fig.axes[1].get_lines() if ln.get_label().startswith("Adam")]
    np.testing.assert_allclose(ratio[0].get_ydata(), 2.0)
