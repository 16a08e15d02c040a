"""Figures of learning-rate x batch-size grid searches (Li et al. 2024, Figs 2-4), for synthetic
dynamics (``surgesim.dynamics``) and real workloads alike.

Pure builders: arrays in, a matplotlib ``Figure`` out (no pyplot, nothing computed or saved here).

- ``heatmap_panel``: the score (e.g. the further loss decrease after the target) over (B, lr) on
  log axes, the optimal learning rate per batch size highlighted, fitted curves (the surge curve,
  eq 2, and the SGD curves, eq 24 form) and B_noise; the paper's left panels.
- ``eq22_panel``: 1/S against 1/E with the eq 22 line; the paper's right panels.
- ``grid_figure``: the two side by side.
- ``peak_vs_target_figure``: the peak batch size (with its spread over seeds), the fitted and the
  predicted B_noise against the target loss, for several optimizers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from numpy.typing import ArrayLike

from ._layout import hatch_holes, legend_below, legend_outside

__all__ = ["CURVE_STYLE", "heatmap_panel", "eq22_panel", "eq22_fit_quality", "grid_figure", "peak_vs_target_figure"]

# One style per fitted curve, shared by every figure (keys as in surgesim.fit.compare_curves).
CURVE_STYLE: dict[str, dict[str, Any]] = {  # Line2D keyword arguments (matplotlib types them Any)
    "surge": dict(color="C3", lw=2.0, ls="-", label="surge curve, eq 2 (Adam)"),
    "sgd_alpha_0.5": dict(color="C1", lw=1.5, ls="--", label=r"SGD curve, $\alpha$ = 0.5"),
    "sgd_alpha_1": dict(color="C0", lw=1.5, ls=":", label=r"SGD curve, $\alpha$ = 1"),
}
_MARKERS = ("o", "s", "^", "D")


def _log_edges(x: np.ndarray) -> np.ndarray:
    """Cell edges for centres x on a log axis: geometric midpoints, extended half a step out."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 1:
        return np.array([x[0] / 1.5, x[0] * 1.5])
    lx = np.log(x)
    mid = 0.5 * (lx[1:] + lx[:-1])
    return np.exp(np.concatenate([[lx[0] - (mid[0] - lx[0])], mid, [lx[-1] + (lx[-1] - mid[-1])]]))


def heatmap_panel(
    ax: Axes,
    batch_sizes,
    lrs,
    score,
    *,
    optima: Mapping[str, tuple] | None = None,
    curves: Mapping[str, Callable[[np.ndarray], np.ndarray]] | None = None,
    noise_batch_size: float | None = None,
    normalize: bool = True,
    missing: str = "no value (target not reached)",
    ran=None,
):
    """Draw ``score`` (n_B, n_lr) as a colour map over (B, lr), both axes log.

    Args:
        optima: label -> (B, lr) or (B, lr, log_lr_se): the optimal learning rate per batch
            size, drawn as markers joined by a line, with +-2 s.e. bars (in log lr) when given.
        curves: name -> callable B -> lr (e.g. ``surgesim.fit.CurveFit``), drawn across the grid;
            names of ``CURVE_STYLE`` get its style and label, others their name as label.
        noise_batch_size: a vertical dashed line (the paper's red dashed line); not drawn (and
            not in the legend) when it is not finite or lies far outside the batch sizes.
        normalize: colour each batch size's column relative to its best score (1 = best), so the
            optimum is visible at every B whatever the scale (a column without a positive score
            has no value); else the raw score.
        missing: the legend label of the cells without a value (say why they have none).
        ran: (n_B, n_lr) bool, True where the grid has a run (``surgesim.gridfit.grid_cells``).
            When some cells were never run (learning rates that differ per batch size), each
            batch size's column is drawn over its own learning rates only, as the grid is, and
            only the runs without a value are hatched; cells never run stay blank.

    Returns:
        The colour mesh (for a colour bar, see ``grid_figure``). Cells without a score (NaN: the
        target was not reached) are hatched grey, labelled ``missing``.
    """
    b = np.asarray(batch_sizes, dtype=np.float64)
    lr = np.asarray(lrs, dtype=np.float64)
    z = np.asarray(score, dtype=np.float64)
    if z.shape != (b.size, lr.size):
        raise ValueError(f"score must have shape (n_B, n_lr) = {(b.size, lr.size)}, got {z.shape}")
    if normalize:
        with np.errstate(invalid="ignore", divide="ignore"):
            best = np.nanmax(np.where(np.isfinite(z), z, -np.inf), axis=1, keepdims=True)
            z = np.where(best > 0, z / best, np.nan)
    vmin, vmax = (0.0, 1.0) if normalize else (float(np.nanmin(z)), float(np.nanmax(z)))
    ran = None if ran is None else np.asarray(ran, dtype=bool)
    scattered = ran is not None and not ran.all()
    if scattered:  # per batch size, a column over its own learning rates
        be = _log_edges(b)
        mesh = None
        for i in np.flatnonzero(ran.any(axis=1)):
            j = np.flatnonzero(ran[i])
            mesh = ax.pcolormesh(be[i : i + 2], _log_edges(lr[j]), z[i, j][:, None], cmap="viridis", vmin=vmin,
                                 vmax=vmax)  # fmt: skip
            edges = _log_edges(lr[j])
            for k in np.flatnonzero(~np.isfinite(z[i, j])):  # run, but without a value
                ax.add_patch(Rectangle((be[i], edges[k]), be[i + 1] - be[i], edges[k + 1] - edges[k], facecolor="0.8",
                                       edgecolor="0.55", hatch="///", lw=0, zorder=1.5))  # fmt: skip
    else:
        mesh = ax.pcolormesh(_log_edges(b), _log_edges(lr), z.T, cmap="viridis", vmin=vmin, vmax=vmax)
    line_b = np.geomspace(b.min(), b.max(), 200)
    for name, curve in (curves or {}).items():
        style = CURVE_STYLE.get(name, dict(label=name))
        ax.plot(line_b, curve(line_b), **style)
    for n, (label, pts) in enumerate((optima or {}).items()):
        pb, plr = np.asarray(pts[0], dtype=np.float64), np.asarray(pts[1], dtype=np.float64)
        yerr = None
        if len(pts) > 2 and pts[2] is not None:
            se = np.nan_to_num(np.asarray(pts[2], dtype=np.float64))
            yerr = np.vstack([plr * (1 - np.exp(-2 * se)), plr * (np.exp(2 * se) - 1)])
        ax.errorbar(
            pb, plr, yerr=yerr, fmt=_MARKERS[n % len(_MARKERS)] + "-", ms=5, lw=1, color="w", mec="k",
            ecolor="k", capsize=2, label=label, zorder=5,
        )  # fmt: skip
    if noise_batch_size is not None and b.min() / 2 <= noise_batch_size <= 2 * b.max():  # False for NaN
        ax.axvline(noise_batch_size, color="r", ls="--", lw=1.2, label=f"$B_{{noise}}$ = {noise_batch_size:.3g}")
    if scattered:
        if (ran & ~np.isfinite(z)).any():
            ax.add_patch(Rectangle((0, 0), 0, 0, facecolor="0.8", edgecolor="0.55", hatch="///", lw=0, label=missing))
        ax.add_patch(Rectangle((0, 0), 0, 0, facecolor="white", edgecolor="0.6", lw=0.5,
                               label="blank: not in the grid (lrs differ per B)"))  # fmt: skip
    elif not np.isfinite(z).all():  # last in the legend, beneath the mesh
        hatch_holes(ax, missing)
    ax.set_xscale("log")
    ax.set_yscale("log")
    b_edges, lr_edges = _log_edges(b), _log_edges(lr)
    ax.set_xlim(b_edges[0], b_edges[-1])
    ax.set_ylim(lr_edges[0], lr_edges[-1])
    ax.set_xlabel("batch size B")
    ax.set_ylabel("learning rate")
    return mesh


def eq22_panel(ax: Axes, steps, examples, noise_batch_size: float | None, s_min: float | None) -> None:
    """1/S against 1/E at the optimal learning rates, in order of B (a thin line shows whether the
    points bend), with eq 22's line 1/S = -B_noise/E + 1/S_min and its fit quality: R^2 of the line
    over these points and the largest residual relative to 1/S."""
    S = np.asarray(steps, dtype=np.float64)
    E = np.asarray(examples, dtype=np.float64)
    ok = np.isfinite(S) & np.isfinite(E) & (S > 0) & (E > 0)
    x, y = 1.0 / E[ok], 1.0 / S[ok]
    ax.plot(x, y, "o-", color="k", lw=0.6, mfc="w", label="runs at the optimal lr (joined in order of B)", zorder=3)
    if noise_batch_size is not None and s_min is not None and np.isfinite(noise_batch_size) and x.size:
        fit = -noise_batch_size * x + 1.0 / s_min
        r2, worst = eq22_fit_quality(x, y, noise_batch_size, s_min)
        xs = np.linspace(0.0, x.max() * 1.05, 50)
        ax.plot(
            xs, -noise_batch_size * xs + 1.0 / s_min, color="r", ls="--", zorder=2,
            label=f"eq 22: $B_{{noise}}$ = {noise_batch_size:.3g}, $S_{{min}}$ = {s_min:.3g}\n"
                  f"fit quality: $R^2$ = {r2:.3f}, largest residual {worst:.0%} of 1/S ({x.size} points)",
        )  # fmt: skip
        ax.vlines(x, np.minimum(y, fit), np.maximum(y, fit), color="r", lw=0.6, alpha=0.6, zorder=2)
    ax.set_xlabel("1 / E (1 / examples)")
    ax.set_ylabel("1 / S (1 / steps)")
    ax.ticklabel_format(axis="both", style="sci", scilimits=(-2, 2))


def eq22_fit_quality(x, y, noise_batch_size: float, s_min: float) -> tuple[float, float]:
    """(R^2, largest |residual| / y) of eq 22's line y = 1/S_min - B_noise x at points (x, y) =
    (1/E, 1/S). R^2 is 1 - SS_res / SS_tot (NaN with fewer than 3 points or no spread in y)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    res = y - (1.0 / s_min - noise_batch_size * x)
    tot = float(np.sum((y - y.mean()) ** 2)) if y.size else 0.0
    r2 = 1.0 - float(np.sum(res**2)) / tot if y.size >= 3 and tot > 0 else float("nan")
    worst = float(np.max(np.abs(res) / y)) if y.size else float("nan")
    return r2, worst


def grid_figure(
    batch_sizes,
    lrs,
    score,
    *,
    optima: Mapping[str, tuple] | None = None,
    curves: Mapping[str, Callable[[np.ndarray], np.ndarray]] | None = None,
    noise_batch_size: float | None = None,
    steps=None,
    examples=None,
    s_min: float | None = None,
    title: str = "",
    normalize: bool = True,
    score_label: str = "further loss decrease",
    missing: str = "no value (target not reached)",
    ran=None,
) -> Figure:
    """Left: ``heatmap_panel``; right: ``eq22_panel`` (when steps and examples are given)."""
    with_eq22 = steps is not None and examples is not None
    fig = Figure(figsize=(12.5, 6.0) if with_eq22 else (7.5, 6.0), layout="constrained")
    axes = fig.subplots(1, 2 if with_eq22 else 1, squeeze=False)[0]
    mesh = heatmap_panel(
        axes[0], batch_sizes, lrs, score, optima=optima, curves=curves, noise_batch_size=noise_batch_size,
        normalize=normalize, missing=missing, ran=ran,
    )  # fmt: skip
    fig.colorbar(mesh, ax=axes[0], label=f"{score_label} / best at this B" if normalize else score_label)
    legend_below(axes[0], ncol=2)
    if with_eq22:
        eq22_panel(axes[1], steps, examples, noise_batch_size, s_min)
        legend_below(axes[1], ncol=1)
    if title:
        fig.suptitle(title)
    return fig


def peak_vs_target_figure(
    target_loss,
    peaks: Mapping[str, ArrayLike],
    *,
    spread: Mapping[str, tuple[ArrayLike, ArrayLike]] | None = None,
    fitted: Mapping[str, ArrayLike] | None = None,
    predicted: Mapping[str, ArrayLike] | None = None,
    predicted_se: Mapping[str, ArrayLike] | None = None,
    title: str = "",
) -> Figure:
    """Peak batch size against target loss (x decreasing: training progresses to the right).

    Args:
        peaks: label -> peak batch size per target (solid line, markers).
        spread: label -> (low, high) per target, e.g. the range over seeds (error bars).
        fitted: label -> B_noise by eq 22 per target (dashed); predicted: label -> the theory's
            B_noise per target (dotted), with 2-standard-error bars from ``predicted_se``.
    """
    x = np.asarray(target_loss, dtype=np.float64)
    fig = Figure(figsize=(9.0, 4.5), layout="constrained")
    ax = fig.subplots()
    for k, (label, peak) in enumerate(peaks.items()):
        color = f"C{k}"
        y = np.asarray(peak, dtype=np.float64)
        yerr = None
        if spread and label in spread:
            lo, hi = (np.asarray(v, dtype=np.float64) for v in spread[label])
            yerr = np.vstack([np.clip(y - lo, 0, None), np.clip(hi - y, 0, None)])
        ax.errorbar(x, y, yerr=yerr, fmt=_MARKERS[k % len(_MARKERS)] + "-", color=color, capsize=3,
                    label=f"{label}: peak batch size")  # fmt: skip
        if fitted and label in fitted:
            ax.plot(x, fitted[label], ls="--", marker="x", color=color, label=f"{label}: fitted $B_{{noise}}$ (eq 22)")
        if predicted and label in predicted:
            se = None if not predicted_se or label not in predicted_se else 2 * np.asarray(predicted_se[label], float)
            ax.errorbar(x, predicted[label], yerr=se, ls=":", marker="+", color=color, capsize=3,
                        label=f"{label}: predicted $B_{{noise}}$ (theory)" + (", 2 s.e." if se is not None else ""))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("target loss (training progresses to the right)")
    ax.set_ylabel("batch size")
    legend_outside(fig, ax, "right", fontsize=7)
    if title:
        ax.set_title(title, fontsize=10)
    return fig
