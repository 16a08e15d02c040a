"""Shared layout rules of the figure builders: legends off the data, and what marks a line."""

from __future__ import annotations

from typing import Any, Literal

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

# Lines that can coincide (e.g. eq 9, eq 10 and eq 2 below B_noise) stay distinguishable: each
# carries its own marker, placed at staggered fractions of the axes so markers do not overlap.
MARKERS = ("o", "s", "^", "D", "v", "P")


def marks(k: int, n: int = 4, every: float = 0.12) -> dict[str, Any]:
    """Line keywords: marker k, at every ``every`` of the axes diagonal, offset by k / n of that.

    Line k = 1 of n = 4 starts a quarter of the way along: 0.12 / 4 = 0.03.

    >>> marks(1)["marker"], marks(1)["markevery"]
    ('s', (0.03, 0.12))
    """
    return dict(marker=MARKERS[k % len(MARKERS)], ms=4.5, markevery=(every * (k % n) / n, every), mfc="white")


def hatch_holes(ax: Axes, label: str) -> Rectangle:
    """Hatch the axes' background grey, so cells without a value (NaN or masked in a colour mesh
    drawn over it) are marked rather than blank; returns the hatched patch, labelled, for a legend."""
    ax.set_facecolor("0.8")
    patch = Rectangle((0, 0), 1, 1, facecolor="0.8", edgecolor="0.55", hatch="///", lw=0, transform=ax.transAxes,
                      zorder=0.5, label=label)  # fmt: skip
    ax.add_patch(patch)
    return patch


def legend_below(ax: Axes, ncol: int = 2, fontsize: float = 7.5) -> None:
    """The axes' legend under its x label, outside the data."""
    handles, labels = ax.get_legend_handles_labels()
    if labels:
        ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=ncol, fontsize=fontsize,
                  frameon=False)  # fmt: skip


def legend_outside(fig: Figure, ax: Axes, where: str = "right", ncol: int = 1, fontsize: float = 8) -> None:
    """One figure-level legend of ``ax``'s lines, outside every axes ("right" or "lower")."""
    handles, labels = ax.get_legend_handles_labels()
    if labels:
        loc: Literal["outside right upper", "outside lower center"] = (
            "outside right upper" if where == "right" else "outside lower center"
        )
        fig.legend(handles, labels, loc=loc, ncol=ncol, fontsize=fontsize, frameon=False)
