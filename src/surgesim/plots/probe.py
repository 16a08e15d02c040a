"""Figure of the probe (``surgesim.workloads.probe``): lr*(B) measured with real minibatches
beside the Gaussian-noise and independent-coordinate (eq 9) predictions, one panel per state.

Pure builder: rows in (``sims.probe``'s probe.csv rows and summaries), a ``Figure`` out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

__all__ = ["PROBE_STYLE", "probe_figure"]

# Drawn in this order, widest first, so that coinciding curves stay visible.
PROBE_STYLE = {
    "exact": dict(color="0.3", lw=3.0, ls="-", label="eq 9 (exact for the quadratic)", zorder=1),
    "independent": dict(
        color="C2", lw=1.6, ls="--", marker="s", ms=4, label="independent (eq 9 from statistics)", zorder=2
    ),  # fmt: skip
    "gaussian": dict(
        color="C0", lw=1.4, ls="-", marker="^", ms=5, capsize=2, label="gaussian (empirical covariance)", zorder=3
    ),  # fmt: skip
    "probe": dict(color="C3", lw=1.2, ls="-", marker="o", ms=5, capsize=3, label="probe (real minibatches)", zorder=4),
}


# B_simple, B_crit and eq 14's B_noise: vertical lines, each its own colour (eq 14 not in the
# green of the "independent" curve, which it comes from but is not).
SCALE_STYLE = (
    ("b_simple", ":", "0.35", r"$B_{simple}$"),
    ("b_crit", "-.", "0.35", r"$B_{crit}$"),
    ("noise_batch_size_eq14", "--", "C4", r"$B_{noise}$ eq 14"),
)


def _column(rows: Sequence[dict], key: str) -> np.ndarray:
    return np.array([np.nan if r.get(key) is None else float(r[key]) for r in rows])


def probe_figure(curves: Sequence[dict], summaries: Sequence[dict], title: str = "") -> Figure:
    """One panel per state (target loss): the three lr*(B) curves on log axes, the probe's and the
    Gaussian model's with 2-standard-error bars, and vertical lines at B_simple, B_crit and eq
    14's B_noise where they fall inside the plotted range; one outside it is an arrow with its value
    at the edge it lies beyond."""
    n = len(summaries)
    fig = Figure(figsize=(4.6 * n + 1.0, 4.2), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, s in zip(axes, summaries, strict=True):
        t = s.get("target_loss")
        rows = [r for r in curves if r.get("target_loss") == t]
        B = _column(rows, "batch_size")
        for name, style in PROBE_STYLE.items():
            y = _column(rows, f"lr_{name}")
            if not np.isfinite(y).any():
                continue
            se = _column(rows, f"lr_{name}_se")
            if np.isfinite(se).any():
                ax.errorbar(B, y, yerr=2 * se, **style)
            else:
                ax.plot(B, y, **{k: v for k, v in style.items() if k != "capsize"})
        lo, hi = np.nanmin(B), np.nanmax(B)
        scales = []
        outside = 0
        for key, ls, color, label in SCALE_STYLE:
            v = s.get(key)
            if isinstance(v, (int, float)) and np.isfinite(v):
                scales.append(f"{label} {v:.3g}")
                if lo <= v <= hi:  # a line where it falls inside the grid; its value is in the title
                    ax.axvline(v, color=color, ls=ls, lw=1.2, label=label)
                else:  # off the axis: an arrow at the edge it lies beyond, with its value
                    ax.plot([], [], color=color, ls=ls, lw=1.2, label=label)  # its legend entry
                    left = v < lo
                    ax.annotate(("\u2190 " if left else "") + f"{label} = {v:.3g}" + ("" if left else " \u2192"),
                                xy=(0.02 if left else 0.98, 0.04 + 0.08 * outside), xycoords="axes fraction",
                                ha="left" if left else "right", va="bottom", fontsize=7.5, color=color,
                                bbox=dict(facecolor="white", alpha=0.8, lw=0, pad=1.0))  # fmt: skip
                    outside += 1
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size B")
        ax.set_ylabel("one-step optimal learning rate")
        ax.set_title(("state" if t is None else f"target loss {t:g}") + "\n" + ", ".join(scales), fontsize=9)
        ax.grid(True, which="major", alpha=0.3)
    seen: dict = {}  # one legend for all panels, off the data
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(lab, h)
    ncol = max(1, min(4, 2 * n, len(seen)))  # a one-panel figure is too narrow for 4 columns
    fig.legend(list(seen.values()), list(seen.keys()), loc="outside lower center", ncol=ncol, fontsize=8)
    if title:
        fig.suptitle(title)
    return fig
