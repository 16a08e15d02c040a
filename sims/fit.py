"""Fit any learning-rate x batch-size grid (Section 3.2-3.3): the optimal learning rate per batch
size (interpolated in log lr, with its uncertainty), the surge curve (eq 2) against the SGD curves
(eq 24 form, alpha 0.5 and 1) compared by residuals and AIC, and B_noise from steps and examples
(eq 22) with eps_max by eq 23 when a steps column is given.

GRID.csv has one row per run. The score column (--loss-col) is a loss to minimise, or with
--maximize a gain such as the further loss decrease after a target (sims.workloads' runs.csv).
Example on the StepLaw grid (fixed token budget per (N, D) group; final smoothed loss):

  python -m sims.fit ../shared/data/steplaw/dense_lr_bs_loss.csv --lr-col lr --batch-col bs \\
      --loss-col "smooth loss" --group-cols N,D --out runs/steplaw

and on a sims.workloads grid (steps to each target loss give eq 22):

  python -m sims.fit runs/cnn/runs.csv --loss-col further_decrease --maximize \\
      --steps-col steps --seed-col seed --group-cols target_loss --out runs/cnn-fit

Outputs in --out: optimal_lr.csv (group columns, batch_size, optimal_lr, log_lr_se,
log_lr_halfwidth, n_seeds, at_edge, best_score, steps, examples), fits.csv (group columns,
noise_batch_size, peak_lr, surge_rss, sgd_rss_alpha_0.5, sgd_rss_alpha_1, best_model, ...),
fit_<group>.png per group, options.json.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sims import _cli


@dataclass(frozen=True)
class Options:
    grid: str
    lr_col: str
    batch_col: str
    loss_col: str
    maximize: bool
    group_cols: tuple[str, ...]
    steps_col: str | None
    seed_col: str | None
    include_edges: bool
    out: str
    plot: bool
    quiet: bool


def build_parser() -> _cli.Parser:
    p = _cli.Parser(
        prog="python -m sims.fit",
        description=__doc__.split("\n\n")[0],
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=_cli.argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("grid", metavar="GRID.csv", help="the grid: one row per run")
    p.add_argument("--lr-col", default="lr", help="learning-rate column (default lr)")
    p.add_argument("--batch-col", default="batch_size", help="batch-size column (default batch_size)")
    p.add_argument("--loss-col", default="loss", help="score column: a loss, lower is better (default loss)")
    p.add_argument("--maximize", action="store_true", help="the score column is a gain: higher is better")
    p.add_argument("--group-cols", default="", metavar="C1,C2", help="fit each group of rows sharing these columns")
    p.add_argument("--steps-col", help="steps to the target (empty when not reached): gives B_noise by eq 22")
    p.add_argument("--seed-col", help="seed / round column: the optimum's standard error over seeds")
    p.add_argument("--include-edges", action="store_true",
                   help="keep optima at the edge of their lr grid in the curve fits (default: left out)")  # fmt: skip
    p.add_argument("--out", default="runs/fit", help="output directory (default runs/fit)")
    p.add_argument("--no-plot", action="store_true", help="skip the figures")
    p.add_argument("--quiet", action="store_true", help="no table")
    return p


def resolve(args) -> Options:
    if not Path(args.grid).is_file():
        raise _cli.UsageError(f"{args.grid!r}: no such file")
    groups = tuple(c.strip() for c in args.group_cols.split(",") if c.strip())
    return Options(
        grid=args.grid, lr_col=args.lr_col, batch_col=args.batch_col, loss_col=args.loss_col,
        maximize=args.maximize, group_cols=groups, steps_col=args.steps_col, seed_col=args.seed_col,
        include_edges=args.include_edges, out=args.out, plot=not args.no_plot, quiet=args.quiet,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return _cli.run(lambda: _main(args))


def _main(args) -> int:
    from surgesim import gridfit
    from surgesim.sweep import write_csv

    opts = resolve(args)
    table = gridfit.read_table(opts.grid)
    groups = gridfit.fit_groups(
        table, opts.lr_col, opts.batch_col, opts.loss_col, opts.group_cols, seed_col=opts.seed_col,
        steps_col=opts.steps_col, maximize=opts.maximize, include_edges=opts.include_edges,
    )  # fmt: skip
    out = _cli.out_dir(opts.out)
    _cli.save_options(opts, out / "options.json")
    write_csv(_finite(gridfit.optimal_lr_rows(groups)), out / "optimal_lr.csv",
              [*opts.group_cols, *gridfit.OPTIMUM_COLUMNS])  # fmt: skip
    write_csv(_finite(gridfit.fit_rows(groups)), out / "fits.csv", [*opts.group_cols, *gridfit.FIT_COLUMNS])
    figures = []
    if opts.plot:
        for key, fit in groups:
            sel = np.ones(len(table[opts.lr_col]), dtype=bool)
            for c, v in key.items():
                sel &= table[c] == (v if isinstance(v, str) else float(v))
            label = ", ".join(f"{c}={v}" for c, v in key.items())
            fig = grid_figure(
                fit, table[opts.lr_col][sel], table[opts.batch_col][sel], table[opts.loss_col][sel],
                maximize=opts.maximize, score_label=opts.loss_col,
                title=f"{Path(opts.grid).name}" + (f": {label}" if label else ""),
            )  # fmt: skip
            name = "fit_" + (_slug(key) if key else "all") + ".png"
            fig.savefig(out / name, dpi=110)
            _close(fig)
            figures.append(name)
    if not opts.quiet:
        print_fits(groups, opts.group_cols)
        print(f"wrote {out}/optimal_lr.csv, fits.csv" + (f" and {len(figures)} figures" if figures else ""))
    return 0


def _finite(rows: list[dict]) -> list[dict]:
    """NaN and inf cells as empty (None) in the CSV files."""
    return [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()} for r in rows]


def _slug(key: dict) -> str:
    return re.sub(r"[^A-Za-z0-9.=-]+", "_", "_".join(f"{c}={v}" for c, v in key.items())).strip("_")


def print_fits(groups, group_cols) -> None:
    head = " ".join(f"{c:>12}" for c in group_cols)
    print(f"{head} {'B_noise':>10} {'source':>9} {'peak lr':>10} {'surge rss':>9} {'sgd.5 rss':>9} "
          f"{'sgd1 rss':>9} {'best (AIC)':>13} {'argmax B':>8}")  # fmt: skip
    for key, fit in groups:
        c = fit.curves
        rss = [c[m].rss if m in c else math.nan for m in ("surge", "sgd_alpha_0.5", "sgd_alpha_1")]
        vals = " ".join(f"{v!s:>12}" for v in key.values())
        print(f"{vals} {fit.noise_batch_size:>10.4g} {fit.source:>9} {fit.peak_lr:>10.3e} {rss[0]:>9.3f} "
              f"{rss[1]:>9.3f} {rss[2]:>9.3f} {fit.best_model:>13} {fit.peak_batch_size:>8.0f}")  # fmt: skip


# --- figures (generic over any grid; candidates for surgesim.plots.grid) ---------------------------

_CURVE_STYLE = {
    "surge": dict(color="C3", lw=2.0, label="Adam / surge, eq 2"),
    "sgd_alpha_0.5": dict(color="C0", lw=1.3, ls="--", label="SGD form, alpha = 0.5"),
    "sgd_alpha_1": dict(color="C7", lw=1.3, ls="-.", label="SGD form, alpha = 1"),
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _close(fig) -> None:
    _pyplot().close(fig)


def heatmap_panel(ax, fit, lr, B, score, *, maximize: bool, score_label: str) -> None:
    """Seed-averaged score over (B, lr) as coloured squares on log axes, the optimal lr per B
    (error bars: seeds, else grid resolution; hollow at a grid edge), the fitted curves and B_noise."""
    lr, B, score = (np.asarray(a, dtype=np.float64) for a in (lr, B, score))
    cells: dict[tuple[float, float], list[float]] = {}
    for x, b, s in zip(lr, B, score, strict=True):
        cells.setdefault((b, x), []).append(s)
    keys = sorted(cells)
    cb, cl = np.array([k[0] for k in keys]), np.array([k[1] for k in keys])
    cs = np.array([np.mean(cells[k]) for k in keys])  # NaN if any seed missed the target
    ok = np.isfinite(cs)
    # Colour range from the 10th to 100th percentile of the better end, so that a few diverged
    # runs do not wash out the differences near the optimum (worse values are clipped).
    lo, hi = np.percentile(cs[ok], [10, 100] if maximize else [0, 90]) if ok.any() else (0.0, 1.0)
    sc = ax.scatter(cb[ok], cl[ok], c=cs[ok], marker="s", s=90, cmap="viridis" if maximize else "viridis_r",
                    vmin=lo, vmax=hi)  # fmt: skip
    ax.scatter(cb[~ok], cl[~ok], marker="x", s=25, color="0.6", label="target not reached / missing")
    ax.figure.colorbar(sc, ax=ax, label=score_label + (" (higher is better)" if maximize else " (lower is better)"))
    opt = [o for o in fit.optima if np.isfinite(o.optimal_lr)]
    ob = np.array([o.batch_size for o in opt])
    oy = np.array([o.optimal_lr for o in opt])
    err = np.array([o.log_lr_se if np.isfinite(o.log_lr_se) else o.log_lr_halfwidth for o in opt])
    edge = np.array([o.at_edge for o in opt], dtype=bool)
    if opt:
        yerr = np.vstack([oy - oy * np.exp(-err), oy * np.exp(err) - oy])
        ax.errorbar(ob[~edge], oy[~edge], yerr=yerr[:, ~edge], fmt="o", color="red", ms=5, capsize=2,
                    label="optimal lr per B")  # fmt: skip
        ax.plot(ob[edge], oy[edge], "o", mfc="none", mec="red", ms=6, label="optimum at lr-grid edge")
        line = np.geomspace(ob.min(), ob.max(), 200)
        for name, c in fit.curves.items():
            ax.plot(line, c(line), **_CURVE_STYLE[name])
    if math.isfinite(fit.noise_batch_size) and fit.noise_batch_size > 0 and opt and ob.min() <= fit.noise_batch_size <= ob.max():
        ax.axvline(fit.noise_batch_size, color="red", ls="--", lw=1,
                   label=f"B_noise = {fit.noise_batch_size:.3g} ({fit.source})")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("batch size B")
    ax.set_ylabel("learning rate")
    ax.legend(fontsize=7, loc="best")


def efficiency_panel(ax, fit) -> None:
    """Eq 22: 1/S against 1/E at each batch size, with the fitted line (slope -B_noise)."""
    pts = [o for o in fit.optima if np.isfinite(o.steps) and o.steps > 0]
    inv_e = np.array([1 / o.examples for o in pts])
    inv_s = np.array([1 / o.steps for o in pts])
    ax.plot(inv_e, inv_s, "o", color="C0", label="fewest steps per B")
    for o, x, y in zip(pts, inv_e, inv_s, strict=True):
        ax.annotate(f"{o.batch_size:g}", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if fit.eq22 is not None and pts:
        bn, s_min, _ = fit.eq22
        xs = np.linspace(0, inv_e.max() * 1.05, 50)
        ax.plot(xs, 1 / s_min - bn * xs, color="red",
                label=f"eq 22: B_noise = {bn:.3g}, S_min = {s_min:.3g}")  # fmt: skip
    ax.set_xlabel("1 / E (examples)")
    ax.set_ylabel("1 / S (steps)")
    ax.legend(fontsize=7, loc="best")


def grid_figure(fit, lr, B, score, *, maximize: bool, score_label: str, title: str = ""):
    """Fig 2-4 of the paper for one grid: heat map with optimal lr and fitted curves, and (when
    steps are known) the eq 22 panel."""
    plt = _pyplot()
    with_steps = fit.eq22 is not None
    fig, axes = plt.subplots(1, 2 if with_steps else 1, figsize=(13 if with_steps else 7.5, 5), layout="constrained",
                             squeeze=False)  # fmt: skip
    heatmap_panel(axes[0, 0], fit, lr, B, score, maximize=maximize, score_label=score_label)
    if with_steps:
        efficiency_panel(axes[0, 1], fit)
    fig.suptitle(title)
    return fig


def peak_figure(targets, fitted, predicted, predicted_se, peak_batch):
    """Batch sizes against target loss: eq 22 fit, eq 14 prediction (error bars), argmax of lr."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5), layout="constrained")
    t = np.asarray(targets, dtype=np.float64)
    for y, style in ((fitted, dict(marker="o", color="C3", label="fitted B_noise, eq 22")),
                     (peak_batch, dict(marker="s", color="C2", label="peak batch size (argmax of optimal lr)"))):  # fmt: skip
        y = np.asarray(y, dtype=np.float64)
        ok = np.isfinite(y) & (y > 0)
        ax.plot(t[ok], y[ok], ls="-", **style)
    p, se = np.asarray(predicted, dtype=np.float64), np.asarray(predicted_se, dtype=np.float64)
    ok = np.isfinite(p) & (p > 0)
    ax.errorbar(t[ok], p[ok], yerr=np.where(np.isfinite(se[ok]), se[ok], 0), fmt="^-", color="C0", capsize=3,
                label="predicted B_noise, eq 14 (gradient statistics)")  # fmt: skip
    ax.set_yscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("target training loss (training progresses to the right)")
    ax.set_ylabel("batch size")
    ax.legend(fontsize=8)
    return fig


if __name__ == "__main__":
    raise SystemExit(main())
