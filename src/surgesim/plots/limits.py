"""Figures of the theory's limits (``surgesim.limits``): regime maps with contour lines at the
tolerances, errors per problem family, the peak against B_noise, non-Gaussian and Adam departures.

Pure builders: data in, a matplotlib Figure out (nothing is computed or saved here).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # figures are files; never open a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ._layout import hatch_holes, legend_below, legend_outside, marks  # noqa: E402

__all__ = ["regime_maps_figure", "family_errors_figure", "peak_figure", "departure_figure", "adam_figure"]

TOLS = (0.05, 0.2)
_TOL_STYLE = {0.05: dict(color="k", ls="-", lw=1.2), 0.2: dict(color="k", ls="--", lw=1.2)}
_LINE_COLORS = ("C1", "C3", "C4", "C2")


def _tol_style(tol: float) -> dict:
    return _TOL_STYLE.get(tol, dict(color="k", ls=":", lw=1.0))


def _tol_bands(ax, tols: Sequence[float], center: float = 0.0, relative: bool = False) -> None:
    """Horizontal lines at center +- tol (or center * (1 +- tol) when ``relative``)."""
    for tol in tols:
        st = _tol_style(tol)
        for sgn in (1.0, -1.0):
            y = center * (1.0 + sgn * tol) if relative else center + sgn * tol
            ax.axhline(y, lw=0.8, color="0.4", ls=st["ls"], label=f"±{tol:.0%}" if sgn > 0 else None)


def _label_position(ax, cs) -> tuple[float, float] | None:
    """The point of contour set ``cs`` nearest the axes' centre (in axes coordinates, so on log
    axes too), kept at least 12% away from every edge: a label placed there is never clipped."""
    best, best_d = None, np.inf
    to_axes = ax.transData + ax.transAxes.inverted()
    for path in cs.get_paths():
        if len(path.vertices) == 0:
            continue
        xy = to_axes.transform(path.vertices)
        inside = np.all((xy > 0.12) & (xy < 0.88), axis=1)
        if not inside.any():
            continue
        d = np.hypot(xy[:, 0] - 0.5, xy[:, 1] - 0.5)
        d[~inside] = np.inf
        k = int(np.argmin(d))
        if d[k] < best_d:
            best, best_d = tuple(path.vertices[k]), d[k]
    return best


def regime_maps_figure(maps: Sequence, tols: Sequence[float] = TOLS, floor: float = 1e-4) -> Figure:
    """One panel per ``RegimeMap``: |relative error| in colour (log scale, clipped at ``floor``),
    contour lines at each tolerance (solid 5%, dashed 20%) labelled upright inside the axes, and
    the map's overlay lines. Two maps of the same comparison get titles that say over what."""
    n = len(maps)
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n + 0.8, 4.3), layout="constrained", squeeze=False)
    norm = LogNorm(vmin=floor, vmax=10.0)
    mesh = None
    zlabels = [m.zlabel for m in maps]
    for ax, m in zip(axes[0], maps):
        z = np.clip(np.abs(np.asarray(m.z, dtype=np.float64)), floor, 10.0)
        X, Y = np.meshgrid(m.x, m.y)
        undefined = ~np.isfinite(z)
        mesh = ax.pcolormesh(X, Y, np.ma.masked_invalid(z), norm=norm, cmap="viridis", shading="nearest")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(np.min(m.x), np.max(m.x))
        ax.set_ylim(np.min(m.y), np.max(m.y))
        if z.shape[0] > 1 and z.shape[1] > 1:
            for tol in tols:
                st = _tol_style(tol)
                cs = ax.contour(X, Y, np.ma.masked_invalid(z), levels=[tol], colors=st["color"],
                                linewidths=st["lw"], linestyles=st["ls"])  # fmt: skip
                where = _label_position(ax, cs)
                if where is not None:  # one upright label per tolerance, away from the edges
                    for text in ax.clabel(cs, fmt={tol: f"{tol:.0%}"}, fontsize=8, manual=[where], inline=False):
                        text.set_rotation(0)
                        text.set_bbox(dict(facecolor="white", alpha=0.75, lw=0, pad=1.0))
        for (label, xs), color in zip(m.lines.items(), _LINE_COLORS):
            xs = np.asarray(xs, dtype=np.float64)
            ok = np.isfinite(xs)
            ax.plot(xs[ok], np.asarray(m.y)[ok], color=color, lw=1.8, label=label)
        ax.set_xlabel("B / validity bound" if "bound" in m.name else "batch size B (examples)")
        ax.set_ylabel(m.ylabel)
        title = m.zlabel if zlabels.count(m.zlabel) == 1 else f"{m.zlabel}\nover {m.ylabel}"  # two lines: fits
        ax.set_title(title, fontsize=9)
        if undefined.any():  # cells without a value (e.g. B < 1 example) are hatched grey, not blank
            hatch_holes(ax, "undefined (B < 1 example)" if "bound" in m.name else "no value")
        legend_below(ax, ncol=2)
    if mesh is None:
        raise ValueError("regime_maps_figure needs at least one map")
    fig.colorbar(mesh, ax=axes[0].tolist(), label="|relative error| (contours: 5% solid, 20% dashed)",
                 shrink=0.9, pad=0.01, fraction=0.025, aspect=25)  # fmt: skip
    return fig


def family_errors_figure(rows: Sequence[Mapping], tols: Sequence[float] = TOLS) -> Figure:
    """|relative error| of eq 9 with eq 10 (left) and of eq 2 (right) against exact eq 9, per
    problem family, against B / validity bound; a marker at each family's B_noise."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.3), layout="constrained", sharey=True)
    for ax, key, title in zip(
        axes, ("err_erf", "err_surge"), ("eq 9 with eq 10 vs exact eq 9", "closed-form surge eq 2 vs exact eq 9")
    ):
        for i, r in enumerate(rows):
            x = np.asarray(r["batch_sizes"]) / r["validity_bound"]
            e = np.abs(np.asarray(r[key]))
            line = ax.plot(x, np.maximum(e, 1e-8), color=f"C{i}", label=f"{r['problem']} (d = {r['dims']})",
                           **marks(i, len(rows)))[0]  # fmt: skip
            bn = r["noise_batch_size"]
            if np.isfinite(bn):
                k = int(np.argmin(np.abs(np.log(np.asarray(r["batch_sizes"]) / bn))))
                ax.plot(x[k], max(e[k], 1e-8), "o", color=line.get_color(), ms=5)
        for tol in tols:
            ax.axhline(tol, **_tol_style(tol), label=f"{tol:.0%}")
        ax.axvline(1.0, color="0.5", lw=1, ls=":", label="validity bound")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylim(1e-6, 20)
        ax.set_xlabel("B / validity bound  (dots: B = B_noise)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("|relative error|")
    legend_outside(fig, axes[0], "right", fontsize=7)
    return fig


def peak_figure(rows: Sequence[Mapping], tols: Sequence[float] = TOLS) -> Figure:
    """Peak of exact eq 9 against eq 14 / eq 16: B_peak / B_noise (left) and lr_peak / eps_max
    (right) against B_noise / validity bound, one series per problem family."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    families = sorted({str(r["problem"]).split(" ")[0] for r in rows})
    for i, fam in enumerate(families):
        sel = [r for r in rows if str(r["problem"]).split(" ")[0] == fam]
        x = np.array([r["bnoise_over_bound"] for r in sel])
        for ax, key in zip(axes, ("peak_over_bnoise", "peak_lr_over_eps_max")):
            y = np.array([r[key] for r in sel], dtype=np.float64)
            ax.plot(x, y, "o-", color=f"C{i}", ms=4, label=fam)
    for ax, ylabel in zip(axes, ("B_peak (exact eq 9) / B_noise (eq 14)", "peak lr (exact eq 9) / eps_max (eq 16)")):
        _tol_bands(ax, tols, center=1.0, relative=True)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("B_noise / validity bound")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
    legend_below(axes[0], ncol=3)
    axes[0].set_title("Where eq 9 peaks (no marker: no peak at B >= 1)", fontsize=10)
    axes[1].set_title("How high it peaks", fontsize=10)
    return fig


def departure_figure(
    rows: Sequence[Mapping], tols: Sequence[float] = TOLS, noise_batch_size: float | None = None
) -> Figure:
    """Monte Carlo optimal learning rate with non-Gaussian per-example gradients against
    Gaussian eq 9: departure = lr_mc / lr_eq9 - 1 with 2 s.e. bars, per law, against B."""
    fig, ax = plt.subplots(figsize=(7.5, 4.8), layout="constrained")
    laws = list(dict.fromkeys(r["law"] for r in rows))
    for i, law in enumerate(laws):
        sel = [r for r in rows if r["law"] == law]
        B = np.array([r["batch_size"] for r in sel], dtype=np.float64) * (1.0 + 0.03 * (i - len(laws) / 2))
        y = np.array([r["departure"] for r in sel])
        ax.errorbar(
            B,
            y,
            yerr=2 * np.array([r["departure_se"] for r in sel]),
            fmt="o-",
            ms=4,
            capsize=2,
            color=f"C{i}",
            label=law,
        )
    _tol_bands(ax, tols)
    ax.axhline(0.0, color="k", lw=0.8)
    if noise_batch_size is not None and np.isfinite(noise_batch_size):
        ax.axvline(noise_batch_size, color="C1", lw=1, ls=":", label=f"B_noise = {noise_batch_size:.3g}")
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=0.05)
    ax.set_xlabel("batch size B (examples)")
    ax.set_ylabel("lr_mc / lr_eq9 - 1 (2 s.e. bars)")
    ax.set_title("Non-Gaussian per-example gradients: departure from Gaussian eq 9", fontsize=10)
    ax.grid(True, alpha=0.3)
    legend_outside(fig, ax, "right", fontsize=7)
    return fig


def adam_figure(
    B: np.ndarray,
    sign_lr: np.ndarray,
    adam: Mapping[str, tuple[np.ndarray, np.ndarray]],
    tols: Sequence[float] = TOLS,
    noise_batch_size: float | None = None,
) -> Figure:
    """One-step optimal learning rate of Adam (frozen-gradient model; ``adam`` maps a label to
    (lr, its s.e.)) beside sign-SGD's eq 9: the curves (left) and their ratio (right)."""
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 4.6), layout="constrained")
    ax0.plot(B, sign_lr, color="k", lw=2, label="sign, eq 9")
    for i, (label, (lr, se)) in enumerate(adam.items()):
        style = dict(color=f"C{i}", ls=("-", "--", ":", "-.")[i % 4], **marks(i, len(adam)))  # curves may coincide
        ax0.plot(B, lr, label=label, **style)
        r, rse = lr / sign_lr, se / sign_lr
        ax1.plot(B, r, label=label, **style)
        ax1.fill_between(B, r - 2 * rse, r + 2 * rse, color=f"C{i}", alpha=0.2, lw=0)
    _tol_bands(ax1, tols, center=1.0, relative=True)
    ax1.axhline(1.0, color="k", lw=0.8)
    for ax in (ax0, ax1):
        if noise_batch_size is not None and np.isfinite(noise_batch_size):
            ax.axvline(noise_batch_size, color="C1", lw=1, ls=":", label=f"B_noise = {noise_batch_size:.3g}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("batch size B (examples)")
        ax.grid(True, alpha=0.3, which="both")
        legend_below(ax, ncol=3)
    ax0.set_ylabel("one-step optimal learning rate")
    ax0.set_title("Adam (frozen-gradient state) and sign", fontsize=10)
    ax1.set_ylabel("eps_opt(Adam) / eps_opt(sign, eq 9)")
    ax1.set_title("Ratio (2 s.e. bands): Appendix A's approximation", fontsize=10)
    return fig
