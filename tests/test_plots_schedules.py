"""The schedule figures plot the data they are given: medians at (S, E), the front through the
constant batch sizes in order of B, a legend off the data, and distinguishable variants."""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg

from surgesim.plots.schedules import SCHEDULE_STYLE, schedule_traces_figure, schedules_front_figure


def _entry(schedule, variant, batch, s, e, target=1.0):
    return {"label": "adam", "target_loss": target, "schedule": schedule, "variant": variant, "batch": batch,
            "median_steps": s, "median_steps_se": 1.0, "median_examples": e, "median_examples_se": 10.0}  # fmt: skip


def test_front_figure_plots_medians_and_the_front_in_batch_order():
    entries = [_entry("constant", "B=64", 64, 12.0, 768.0), _entry("constant", "B=8", 8, 50.0, 400.0),
               _entry("constant", "B=16", 16, 25.0, 400.0), _entry("online", "c=1", 1.0, 30.0, 900.0),
               _entry("geometric", "B0=8", 8.0, None, None)]  # fmt: skip
    fig = schedules_front_figure(entries, "t")
    (ax,) = fig.axes
    front = next(ln for ln in ax.get_lines() if ln.get_label() == "constant B (front)")
    np.testing.assert_array_equal(front.get_xdata(), [50.0, 25.0, 12.0])  # B = 8, 16, 64
    np.testing.assert_array_equal(front.get_ydata(), [400.0, 400.0, 768.0])
    online = [c for c in ax.containers if c.get_label() == "online c=1"]  # each variant labelled
    assert len(online) == 1
    assert tuple(np.ravel(online[0].lines[0].get_data())) == (30.0, 900.0)
    assert not [c for c in ax.containers if c.get_label().startswith("geometric")]  # no median: not drawn
    assert ax.get_legend() is None and len(fig.legends) == 1  # the legend is the figure's, off the data
    assert ax.get_title() == "adam, target loss 1"


def test_traces_figure_tells_variants_of_one_schedule_apart():
    steps = np.arange(5.0)
    traces = [{"optimizer": "adam", "schedule": "online", "variant": f"c={c}", "batch": c * (steps + 2),
               "lr": np.full(5, 1e-3)} for c in (1, 2)]  # fmt: skip
    fig = schedule_traces_figure(traces)
    top = fig.axes[0]
    lines = top.get_lines()
    assert [ln.get_label() for ln in lines] == ["online c=1", "online c=2"]
    assert lines[0].get_linestyle() != lines[1].get_linestyle()
    assert all(ln.get_color() == SCHEDULE_STYLE["online"]["color"] for ln in lines)
    np.testing.assert_array_equal(lines[1].get_ydata(), 2 * (steps + 2))
    assert top.get_legend() is None and len(fig.legends) == 1


def test_traces_figure_of_one_optimizer_keeps_title_legend_and_panels_apart():
    steps = np.arange(5.0)
    traces = [{"optimizer": "adam", "schedule": s, "variant": v, "batch": b * (steps + 2), "lr": np.full(5, 1e-3)}
              for s, v, b in (("constant", "B=4", 4), ("constant", "B=128", 128), ("probe", "c=1", 8))]  # fmt: skip
    fig = schedule_traces_figure(traces, "B_t and lr_t along each schedule (lr chosen for loss 0.4, seed 0)")
    FigureCanvasAgg(fig).draw()  # the constrained layout, as savefig runs it
    renderer = fig.canvas.get_renderer()
    title, legend = fig._suptitle.get_window_extent(renderer), fig.legends[0].get_window_extent(renderer)
    panels = [ax.get_window_extent(renderer) for ax in fig.axes]
    assert not title.overlaps(legend)  # the one-column figure had its title run into the legend
    assert not any(legend.overlaps(p) for p in panels)
    assert min(p.width for p in panels) > 0.5 * fig.bbox.width  # the panels, not the legend, get the width
