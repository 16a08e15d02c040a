"""Figures of the one-step theory: optimal learning rate and loss improvement against batch size.

Pure builders: arrays in, a matplotlib Figure out (nothing is computed or saved here).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # figures are files; never open a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ._layout import legend_below, legend_outside, marks  # noqa: E402

__all__ = ["lr_vs_batch_figure", "curves_panel", "erf_figure", "families_figure"]

# One style per curve kind (the keys of ``surgesim.theory.curves``), shared by every figure. The
# exact curve is wide and pale, drawn first; the approximations, which coincide with it over most
# of the range, are drawn over it, thinner, each with its own staggered markers.
STYLE = {
    "lr_exact": dict(color="C0", lw=4.0, alpha=0.45, zorder=2, label="exact, eq 9"),
    "lr_erf_approx": dict(color="C2", lw=1.4, ls="--", zorder=3, label="erf approx., eq 9 + eq 10", **marks(4, 3)),
    "lr_surge": dict(color="C3", lw=1.6, ls=":", zorder=4, label="closed-form surge, eq 2", **marks(2, 3)),
    "lr_sgd": dict(color="C7", lw=1.3, ls="-.", zorder=3, label="SGD rule, eq 1"),
    "dl_exact": dict(color="C0", lw=4.0, alpha=0.45, zorder=2, label="exact, eq 8"),
    "dl_surge": dict(color="C3", lw=1.6, ls=":", zorder=4, label="closed form, eq 18", **marks(2, 3)),
}


X_PAD = 0.025  # fraction of the log range of B added at each end of the x axis


def curves_panel(
    ax,
    B_line: np.ndarray,
    curves: Mapping[str, np.ndarray],
    B_points: np.ndarray | None = None,
    points: np.ndarray | None = None,
    points_se: np.ndarray | None = None,
    noise_batch_size: float | None = None,
    plateau: float | None = None,
    validity_bound: float | None = None,
    ylabel: str = "optimal learning rate",
) -> None:
    """Draw theory curves (keys of ``STYLE``) on log axes, Monte Carlo points with 2-SE bars,
    B_noise (vertical line), the large-batch limit eq 17 (horizontal line), and shade B >
    validity_bound where Theorems 3 and 5 do not apply."""
    for name, y in curves.items():
        style = dict(STYLE[name])
        if np.size(B_line) < 2:  # one batch size: no line to space markers along (markevery divides by 0)
            style.pop("markevery", None)
        ax.plot(B_line, y, **style)
    if points is not None:
        ax.errorbar(
            B_points, points, yerr=None if points_se is None else 2.0 * np.asarray(points_se),
            fmt="o", ms=4, color="k", mfc="white", capsize=2, label="Monte Carlo (2 s.e.)", zorder=5,
        )  # fmt: skip
    if noise_batch_size is not None and np.isfinite(noise_batch_size):
        ax.axvline(noise_batch_size, color="C1", lw=1, ls="--", label=f"$B_{{noise}}$ = {noise_batch_size:.3g}")
    if plateau is not None:
        ax.axhline(plateau, color="C4", lw=1, ls="--", label=f"large-batch limit, eq 17 = {plateau:.3g}")
    # x limits a little beyond the data, so the markers at both ends are whole, not cut by the axes
    lo, hi = B_line.min(), B_line.max()
    if B_points is not None and len(B_points):
        lo, hi = min(lo, np.min(B_points)), max(hi, np.max(B_points))
    pad = (hi / lo) ** X_PAD if hi > 1.01 * lo else 1.5  # one B (or rounding apart): a factor 1.5 each side
    if validity_bound is not None and np.isfinite(validity_bound) and validity_bound < hi:
        ax.axvspan(validity_bound, hi * pad, color="0.9", zorder=0, label="B > validity bound")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo / pad, hi * pad)
    ax.set_xlabel("batch size B (examples)")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.3)


def lr_vs_batch_figure(
    B_line: np.ndarray,
    curves: Mapping[str, np.ndarray],
    B_points: np.ndarray,
    lr_mc: np.ndarray,
    lr_mc_se: np.ndarray,
    noise_batch_size: float,
    plateau: float,
    validity_bound: float,
    title: str = "",
) -> Figure:
    """The paper's Figure 1: optimal learning rate vs batch size, theory and Monte Carlo."""
    fig, ax = plt.subplots(figsize=(9.0, 5.6), layout="constrained")
    curves_panel(ax, B_line, curves, B_points, lr_mc, lr_mc_se, noise_batch_size, plateau, validity_bound)
    ax.set_title(title or "Optimal learning rate of sign-SGD vs batch size", fontsize=10)
    legend_outside(fig, ax, "lower", ncol=4)  # below the axes: the plot keeps the figure's width
    return fig


def erf_figure(x: np.ndarray, B: np.ndarray, lr_rel_error: Mapping[str, np.ndarray]) -> Figure:
    """Left: erf(x) and x / sqrt(x^2 + pi/4) (eq 10) and their difference.
    Right: relative error of eq 9 with eq 10 against eq 9 with exact erf, per problem."""
    from scipy import special

    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    approx = x / np.sqrt(x * x + np.pi / 4)
    ax0.plot(x, special.erf(x), color="C0", lw=2, label="erf(x)")
    ax0.plot(x, approx, color="C2", ls="--", label=r"$x/\sqrt{x^2+\pi/4}$ (eq 10)")
    ax0.set_xlabel(r"$x = \sqrt{B/2}\,\mu_i/\sigma_i$")
    ax0.set_ylabel("E[sign]")
    twin = ax0.twinx()
    twin.plot(x, approx - special.erf(x), color="C3", lw=1, label="difference (right axis)")
    twin.set_ylabel("eq 10 - erf")
    k = int(np.argmin(approx - special.erf(x)))
    twin.annotate(f"{(approx - special.erf(x))[k]:.4f} at x = {x[k]:.2f}", (x[k], (approx - special.erf(x))[k]),
                  textcoords="offset points", xytext=(12, 8), fontsize=8, color="C3")  # fmt: skip
    h0, l0 = ax0.get_legend_handles_labels()
    h1, l1 = twin.get_legend_handles_labels()
    ax0.legend(h0 + h1, l0 + l1, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, fontsize=7.5,
               frameon=False)  # fmt: skip
    ax0.set_title("Eq 10 against erf")
    for k, (name, err) in enumerate(lr_rel_error.items()):
        ax1.plot(B, np.abs(err), label=name, **marks(k, len(lr_rel_error)))
    ax1.set_xscale("log")
    ax1.set_yscale("log")
    ax1.set_xlabel("batch size B (examples)")
    ax1.set_ylabel("|eq 9 with eq 10 / eq 9 exact - 1|")
    ax1.set_title("Learning-rate error of the erf approximation")
    ax1.grid(True, alpha=0.3)
    legend_below(ax1, ncol=3)
    return fig


def families_figure(panels: Sequence[Mapping], ylabel: str = "optimal learning rate") -> Figure:
    """One ``curves_panel`` per problem family; each mapping holds curves_panel's arguments
    plus a ``title``."""
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 4.8), layout="constrained", squeeze=False)
    for ax, panel in zip(axes[0], panels):
        kw = dict(panel)
        title = kw.pop("title", "")
        curves_panel(ax, ylabel=ylabel, **kw)
        bn = kw.get("noise_batch_size")
        ax.set_title(title + (f", $B_{{noise}}$ = {bn:.3g}" if bn is not None and np.isfinite(bn) else ""), fontsize=10)
    # One legend for all panels: the lines' kinds, without the first panel's values.
    handles, labels = [], []
    for ax in axes[0]:
        for h, label in zip(*ax.get_legend_handles_labels()):
            label = "$B_{noise}$, eq 14" if label.startswith("$B_{noise}$") else label.split(" = ")[0]
            if label not in labels:
                handles.append(h)
                labels.append(label)
    fig.legend(handles, labels, loc="outside lower center", ncol=4, fontsize=8, frameon=False)
    return fig
