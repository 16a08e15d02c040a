"""The momentum study's figure (``sims.momentum``): fitted eq-22 B_noise against Adam's beta1."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from ._layout import legend_below

__all__ = ["momentum_figure"]


def momentum_figure(rows: Sequence[Mapping], value: str = "fitted_noise_batch_size", title: str = "") -> Figure:
    """One panel per target fraction: ``value`` (with ``value + '_se'`` error bars) against Adam's
    beta1 on a symlog-free axis, one line per (family, beta2); sign-SGD and SGD with momentum as
    reference marks (sign at the left, SGD with momentum 0, 0.5, 0.9 at the right).

    ``rows``: ``sims.momentum``'s momentum.csv rows (family, optimizer, beta1, beta2,
    target_fraction, value, value_se).
    """
    fracs = sorted({float(r["target_fraction"]) for r in rows}, reverse=True)
    families = sorted({r["family"] for r in rows})
    fig = Figure(figsize=(4.2 * len(fracs), 4.2), layout="constrained")
    axes = fig.subplots(1, len(fracs), squeeze=False)[0]
    colors = dict(zip(families, ("tab:blue", "tab:orange", "tab:green", "tab:red"), strict=False))
    styles = {0.999: "-", 0.9: "--"}

    def val(r: Mapping, key: str) -> float:
        x = r.get(key)
        return np.nan if x is None or x == "" else float(x)

    for ax, frac in zip(axes, fracs, strict=True):
        mine = [r for r in rows if float(r["target_fraction"]) == frac]
        for fam in families:
            for b2, ls in styles.items():
                pts = sorted(
                    (float(r["beta1"]), val(r, value), val(r, value + "_se")) for r in mine
                    if r["family"] == fam and r["optimizer"] == "adam" and float(r["beta2"]) == b2
                )  # fmt: skip
                if pts:
                    x, y, e = map(np.asarray, zip(*pts, strict=True))
                    ax.errorbar(x, y, yerr=e, ls=ls, marker="o", ms=4, capsize=2, color=colors[fam],
                                label=f"{fam}: adam, beta2 = {b2:g}")  # fmt: skip
            ref = {"sign": ("s", "sign-SGD"), "sgd": ("^", "SGD (momentum 0 / 0.5 / 0.9)")}
            for name, (mk, lab) in ref.items():
                marks = [r for r in mine if r["family"] == fam and r["optimizer"] == name]
                for k, r in enumerate(sorted(marks, key=lambda r: float(r["beta1"]))):
                    xk = 1.02 + 0.02 * k if name == "sgd" else -0.05
                    ax.errorbar([xk], [val(r, value)], yerr=[val(r, value + "_se")], marker=mk, ms=6, mfc="none",
                                ls="none", color=colors[fam], capsize=2,
                                label=f"{fam}: {lab}" if k == 0 else None)  # fmt: skip
        ax.set_yscale("log")
        ax.set_xlabel("Adam's beta1 (left: sign-SGD; right: SGD, momentum 0 / 0.5 / 0.9)", fontsize=8)
        ax.set_title(f"target {frac:g} of the initial loss", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel(value.replace("_", " ") + " (examples)")
    legend_below(axes[0], ncol=1)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
