"""Figures of batch-size and learning-rate schedules (``surgesim.schedules``).

Pure builders: data in, a matplotlib ``Figure`` out.

- ``schedules_front_figure``: examples E against steps S to each target (log-log), one panel per
  (optimizer, target): the constant-batch front and every schedule's median with its standard
  errors.
- ``schedule_traces_figure``: B_t and lr_t along each schedule, one column per optimizer.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.artist import Artist
from matplotlib.figure import Figure
from matplotlib.ticker import Formatter, FuncFormatter, LogLocator

from ._layout import legend_outside

__all__ = ["SCHEDULE_STYLE", "schedules_front_figure", "schedule_traces_figure"]

SCHEDULE_STYLE = {
    "constant": dict(color="0.3", marker="o"),
    "oracle": dict(color="C3", marker="*"),
    "online": dict(color="C0", marker="s"),
    "critical": dict(color="C2", marker="^"),
    "geometric": dict(color="C1", marker="D"),
    "probe": dict(color="C4", marker="P"),  # the Adam schedule (surgesim.probe_schedule)
}


_DASHES = ("-", "--", ":", "-.")  # the variants of one schedule, in order


def _val(x) -> float:
    return np.nan if x is None else float(x)


# The variants of one schedule (e.g. oracle c = 0.5, 1, 2) share its colour and marker and differ
# in the marker's fill, in sorted order of their names; each has its own legend entry.
_FILLS = ("full", "none", "left", "top", "bottom", "right")


class _Ticks(Formatter):
    """One format per axis: plain numbers (500, 2000, 50000) when every tick of the axis' range
    is in [1e-3, 1e5), else all of them as 5e3, 2e5, 1e6 (never "50000" beside "2e5")."""

    def __call__(self, v: float, pos=None) -> str:
        if self.axis is None:
            raise RuntimeError("_Ticks formats the ticks of an axis: set it on one (set_major_formatter)")
        lo, hi = sorted(self.axis.get_view_interval())
        if 1e-3 <= lo and hi < 1e5:
            return f"{v:g}"
        return f"{v:.0e}".replace("e+0", "e").replace("e-0", "e-").replace("e+", "e")


def schedules_front_figure(entries: Sequence[Mapping], title: str = "") -> Figure:
    """E against S per (optimizer, target) from ``surgesim.schedules.summarize`` entries (targets
    by their ``target_fraction`` of the initial loss where the entries have one, else by loss)."""
    key = "target_fraction" if all("target_fraction" in e for e in entries) else "target_loss"
    panels = sorted({(e["label"], e[key]) for e in entries}, key=lambda k: (k[0], -k[1]))
    labels = sorted({p[0] for p in panels})
    fracs = sorted({p[1] for p in panels}, reverse=True)
    variants = {name: sorted({e["variant"] for e in entries if e["schedule"] == name}) for name in SCHEDULE_STYLE}
    legend: set = set()
    fig = Figure(figsize=(4.2 * len(fracs) + 1.6, 3.6 * len(labels)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(labels), len(fracs), squeeze=False))
    for (label, frac), ax in ((p, axes[labels.index(p[0]), fracs.index(p[1])]) for p in panels):
        mine = [e for e in entries if e["label"] == label and e[key] == frac]
        const = sorted((e for e in mine if e["schedule"] == "constant"), key=lambda e: e["batch"])
        s = np.array([_val(e["median_steps"]) for e in const])
        x = np.array([_val(e["median_examples"]) for e in const])
        ax.plot(s, x, "-", color="0.6", lw=1, zorder=1, label="constant B (front)")
        for e, a, b in zip(const, s, x, strict=True):
            if np.isfinite(a):
                ax.annotate(
                    f"{e['batch']:g}", (a, b), fontsize=6, color="0.4", xytext=(2, 2), textcoords="offset points"
                )
        for e in mine:
            st = SCHEDULE_STYLE[e["schedule"]]
            a, b = _val(e["median_steps"]), _val(e["median_examples"])
            if not np.isfinite(a * b):
                continue
            if e["schedule"] == "constant":
                fill, lab = "full", "constant" if "constant" not in legend else None
            else:
                fill = _FILLS[variants[e["schedule"]].index(e["variant"]) % len(_FILLS)]
                lab = f"{e['schedule']} {e['variant']}"
            legend.add(lab)
            ax.errorbar(a, b, xerr=_val(e["median_steps_se"]), yerr=_val(e["median_examples_se"]), fmt=st["marker"],
                        color=st["color"], mec=st["color"], mfc="white" if fill == "none" else st["color"],
                        mfcalt="white", fillstyle="full" if fill == "none" else fill, label=lab, zorder=3,
                        ms=4 if e["schedule"] == "constant" else 9 if st["marker"] == "*" else 7,
                        ecolor=st["color"], elinewidth=0.7, alpha=0.95)  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):  # 20, 50, 100, 200: no crowded minor labels on short ranges
            axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter(_Ticks())
            axis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
        ax.set_xlabel("steps S (median over seeds)")
        ax.set_ylabel("examples E")
        ax.set_title(f"{label}, target {frac:g} L0" if key == "target_fraction" else f"{label}, target loss {frac:g}",
                     fontsize=9)  # fmt: skip
        ax.grid(True, which="both", alpha=0.2)
    # one legend entry per schedule variant, from every panel (a variant may miss a target)
    seen: dict[str, Artist] = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    order = ["constant B (front)", "constant"] + [f"{n} {v}" for n in SCHEDULE_STYLE for v in variants[n]]
    labs = [lab for lab in order if lab in seen]
    fig.legend([seen[lab] for lab in labs], labs, loc="outside right upper", fontsize=7.5, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def schedule_traces_figure(traces: Sequence[Mapping], title: str = "") -> Figure:
    """B_t (top) and lr_t (bottom) along each schedule (``surgesim.schedules.schedule_traces``)."""
    opts = sorted({t["optimizer"] for t in traces})
    # the legend sits right of the panels, in room of its own, under a title wrapped to the panels' width
    fig = Figure(figsize=(5.0 * len(opts) + 2.6, 6.4), layout="constrained")
    axes = np.atleast_2d(fig.subplots(2, len(opts), squeeze=False))
    for k, name in enumerate(opts):
        count: dict[str, int] = {}
        for t in (t for t in traces if t["optimizer"] == name):
            st = SCHEDULE_STYLE[t["schedule"]]
            steps = np.arange(len(t["batch"]))
            n = count[t["schedule"]] = count.get(t["schedule"], -1) + 1
            ls = "-" if t["schedule"] == "constant" else _DASHES[n % len(_DASHES)]
            lw, alpha = (0.8, 0.35) if t["schedule"] == "constant" else (1.3, 0.9)
            lab = f"{t['schedule']} {t['variant']}" if k == 0 else None
            axes[0, k].plot(steps, t["batch"], color=st["color"], ls=ls, lw=lw, alpha=alpha, label=lab)
            axes[1, k].plot(steps, t["lr"], color=st["color"], ls=ls, lw=lw, alpha=alpha)
        axes[0, k].set_yscale("log")
        axes[1, k].set_yscale("log")
        axes[0, k].set_title(f"{name}: batch size B_t", fontsize=9)
        axes[1, k].set_title(f"{name}: learning rate lr_t", fontsize=9)
        axes[1, k].set_xlabel("step t")
    legend_outside(fig, axes[0, 0], "right", fontsize=7)
    if title:
        fig.suptitle(textwrap.fill(title, 75 * len(opts)), fontsize=10)
    return fig
