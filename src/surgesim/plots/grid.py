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

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ._layout import hatch_holes, legend_below, legend_outside

__all__ = ["CURVE_STYLE", "heatmap_panel", "eq22_panel", "grid_figure", "peak_vs_target_figure"]

# One style per fitted curve, shared by every figure (keys as in surgesim.fit.compare_curves).
CURVE_STYLE = {
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
        missing: the legend label of the cells without a value.

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
        mesh = ax.pcolormesh(_log_edges(b), _log_edges(lr), z.T, cmap="viridis", vmin=0.0, vmax=1.0)
    else:
        mesh = ax.pcolormesh(_log_edges(b), _log_edges(lr), z.T, cmap="viridis")
    line_b = np.geomspace(b.min(), b.max(), 200)
    for name, curve in (curves or {}).items():
        style = CURVE_STYLE.get(name, dict(label=name))
        ax.plot(line_b, curve(line_b), **style)
    for k, (label, pts) in enumerate((optima or {}).items()):
        pb, plr = np.asarray(pts[0], dtype=np.float64), np.asarray(pts[1], dtype=np.float64)
        yerr = None
        if len(pts) > 2 and pts[2] is not None:
            se = np.nan_to_num(np.asarray(pts[2], dtype=np.float64))
            yerr = np.vstack([plr * (1 - np.exp(-2 * se)), plr * (np.exp(2 * se) - 1)])
        ax.errorbar(
            pb, plr, yerr=yerr, fmt=_MARKERS[k % len(_MARKERS)] + "-", ms=5, lw=1, color="w", mec="k",
            ecolor="k", capsize=2, label=label, zorder=5,
        )  # fmt: skip
    in_range = noise_batch_size is not None and b.min() / 2 <= noise_batch_size <= 2 * b.max()  # False for NaN
    if in_range:
        ax.axvline(noise_batch_size, color="r", ls="--", lw=1.2, label=f"$B_{{noise}}$ = {noise_batch_size:.3g}")
    if not np.isfinite(z).all():  # last in the legend, beneath the mesh
        hatch_holes(ax, missing)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(_log_edges(b)[[0, -1]])
    ax.set_ylim(_log_edges(lr)[[0, -1]])
    ax.set_xlabel("batch size B")
    ax.set_ylabel("learning rate")
    return mesh


def eq22_panel(ax: Axes, steps, examples, noise_batch_size: float | None, s_min: float | None) -> None:
    """1/S against 1/E at the optimal learning rates, with eq 22's line 1/S = -B_noise/E + 1/S_min."""
    S = np.asarray(steps, dtype=np.float64)
    E = np.asarray(examples, dtype=np.float64)
    ok = np.isfinite(S) & np.isfinite(E) & (S > 0) & (E > 0)
    x, y = 1.0 / E[ok], 1.0 / S[ok]
    ax.plot(x, y, "o", color="k", mfc="w", label="runs at the optimal lr")
    if noise_batch_size is not None and s_min is not None and np.isfinite(noise_batch_size) and x.size:
        xs = np.linspace(0.0, x.max() * 1.05, 50)
        ax.plot(
            xs, -noise_batch_size * xs + 1.0 / s_min, color="r", ls="--",
            label=f"eq 22: $B_{{noise}}$ = {noise_batch_size:.3g}, $S_{{min}}$ = {s_min:.3g}",
        )  # fmt: skip
    ax.set_xlabel("1 / E (1 / examples)")
    ax.set_ylabel("1 / S (1 / steps)")
    ax.ticklabel_format(axis="both", style="sci", scilimits=(-2, 2))


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
) -> Figure:
    """Left: ``heatmap_panel``; right: ``eq22_panel`` (when steps and examples are given)."""
    with_eq22 = steps is not None and examples is not None
    fig = Figure(figsize=(12.5, 6.0) if with_eq22 else (7.5, 6.0), layout="constrained")
    axes = fig.subplots(1, 2 if with_eq22 else 1, squeeze=False)[0]
    mesh = heatmap_panel(
        axes[0], batch_sizes, lrs, score, optima=optima, curves=curves, noise_batch_size=noise_batch_size,
        normalize=normalize,
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
    peaks: Mapping[str, np.ndarray],
    *,
    spread: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    fitted: Mapping[str, np.ndarray] | None = None,
    predicted: Mapping[str, np.ndarray] | None = None,
    title: str = "",
) -> Figure:
    """Peak batch size against target loss (x decreasing: training progresses to the right).

    Args:
        peaks: label -> peak batch size per target (solid line, markers).
        spread: label -> (low, high) per target, e.g. the range over seeds (error bars).
        fitted: label -> B_noise by eq 22 per target (dashed); predicted: label -> the theory's
            B_noise per target (dotted).
    """
    x = np.asarray(target_loss, dtype=np.float64)
    fig = Figure(figsize=(9.0, 4.5), layout="constrained")
    ax = fig.subplots()
    for k, (label, y) in enumerate(peaks.items()):
        color = f"C{k}"
        y = np.asarray(y, dtype=np.float64)
        yerr = None
        if spread and label in spread:
            lo, hi = (np.asarray(v, dtype=np.float64) for v in spread[label])
            yerr = np.vstack([np.clip(y - lo, 0, None), np.clip(hi - y, 0, None)])
        ax.errorbar(x, y, yerr=yerr, fmt=_MARKERS[k % len(_MARKERS)] + "-", color=color, capsize=3,
                    label=f"{label}: peak batch size")  # fmt: skip
        if fitted and label in fitted:
            ax.plot(x, fitted[label], ls="--", marker="x", color=color, label=f"{label}: fitted $B_{{noise}}$ (eq 22)")
        if predicted and label in predicted:
            ax.plot(x, predicted[label], ls=":", marker="+", color=color,
                    label=f"{label}: predicted $B_{{noise}}$ (theory)")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("target loss (training progresses to the right)")
    ax.set_ylabel("batch size")
    legend_outside(fig, ax, "right", fontsize=7)
    if title:
        ax.set_title(title)
    return fig
