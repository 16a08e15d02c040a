"""Fig 11: the validation of the surge on one workload (``python -m sims.validate``), in the style
of the paper's Figs 2-4: per target loss, the heat map of the seed-mean further loss decrease over
(B, lr), the optimal learning rate per batch size with its 68% bootstrap interval, the predicted
lr*(B) curves scaled to the measured optimum at one batch size, the peak batch size with its 68%
interval (a shaded band) and the fitted B_noise (eq 22, dashed). Pure builder: data in, Figure out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.artist import Artist
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from ..gridfit import grid_cells, score_matrix
from .grid import heatmap_panel

__all__ = ["validate_figure", "CURVE_LABELS"]

CURVE_LABELS = {
    "probe_sign": dict(color="C2", ls="--", lw=1.5, label="probe curve, sign (scaled)"),
    "probe_adam": dict(color="C1", ls="-.", lw=1.5, label="probe curve, Adam (scaled)"),
}


def validate_figure(
    rows: Sequence[Mapping], results: Sequence, curves: Sequence[Mapping] = (), *, title: str = ""
) -> Figure:
    """One panel per target (``results``: ``surgesim.validate.TargetValidation``), from the run rows
    (lr, batch_size, target_loss, further_decrease) and the scaled predicted curves (curves.csv rows)."""
    n = len(results)
    if n == 0:
        raise ValueError("nothing to plot: no target has results")
    fig = Figure(figsize=(4.6 * n, 5.0), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, res in zip(axes, results, strict=True):
        sel = [r for r in rows if r["target_loss"] == res.target_loss]
        score = [np.nan if r["further_decrease"] is None else r["further_decrease"] for r in sel]
        lr_b = [r["lr"] for r in sel], [r["batch_size"] for r in sel]
        bs, lrs, z = score_matrix(*lr_b, score, maximize=True)
        # Refinement adds learning rates per B: cells never run stay blank, only runs without a
        # value are hatched.
        heatmap_panel(ax, bs, lrs, z, normalize=True, noise_batch_size=res.noise_batch_size, ran=grid_cells(*lr_b)[2],
                      missing="no value (target not reached, or no decrease after it)")  # fmt: skip
        ok = np.isfinite(res.lr_opt)
        b, lr = res.batch_sizes[ok], res.lr_opt[ok]
        ax.plot(b, lr, "o-", color="k", ms=4, lw=1.2, label="optimal lr (largest further decrease)", zorder=5)
        # The 68% interval as drawn bars from its ends (a percentile interval need not contain the
        # estimate, so it is not an error bar about it).
        ax.vlines(b, res.lr_opt_lo[ok], res.lr_opt_hi[ok], color="k", lw=2.2, alpha=0.7,
                  label="its 68% interval (bootstrap over seeds)", zorder=5)  # fmt: skip
        for name, style in CURVE_LABELS.items():
            c = [r for r in curves if r["target_loss"] == res.target_loss and r["predictor"] == name
                 and r["lr_scaled"] is not None]  # fmt: skip
            if c:
                ax.plot([r["batch_size"] for r in c], [r["lr_scaled"] for r in c], zorder=4, **style)
        if np.isfinite(res.peak_batch_size):
            lo, hi = res.peak_batch_size_ci
            ax.axvspan(lo, hi, color="C3", alpha=0.18, lw=0, label="peak batch size, 68% interval", zorder=3)
            ax.axvline(res.peak_batch_size, color="C3", lw=1.5, label="peak B (its value: the title)", zorder=3)
        ax.set_title(_panel_title(res), fontsize=9)
        ax.set_xlim(bs.min() / 1.5, bs.max() * 1.5)
        ax.set_xticks(bs, [f"{b:g}" for b in bs])
        ax.xaxis.set_minor_formatter(NullFormatter())
    seen: dict[str, Artist] = {}  # one legend for every panel, its entries from all of them
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault("$B_{noise}$ (eq 22 fit; its value: the title)" if "B_{noise}" in label else label, h)
    fig.legend(list(seen.values()), list(seen), loc="outside lower center", ncol=4, fontsize=7.5, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def _panel_title(res) -> str:
    """Target, surge p-value, peak B with its 68% interval and eq 22's B_noise with its s.e."""
    head = f"target loss {res.target_loss:.3g}"
    if np.isfinite(res.surge_p_value):
        head += f": surge p = {res.surge_p_value:.2g}"
    parts = []
    if np.isfinite(res.peak_batch_size):
        lo, hi = res.peak_batch_size_ci
        parts.append(f"peak B {res.peak_batch_size:.3g} (68%: {lo:.3g}-{hi:.3g})")
    if np.isfinite(res.noise_batch_size):
        parts.append(f"$B_{{noise}}$ {res.noise_batch_size:.3g} $\\pm$ {res.noise_batch_size_se:.2g}")
    return head + ("\n" + ", ".join(parts) if parts else "")
