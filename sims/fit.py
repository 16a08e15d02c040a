"""Fit any learning-rate x batch-size grid (Section 3.2-3.3): the optimal learning rate per batch
size (interpolated in log lr, with its uncertainty), the surge curve (eq 2) against the SGD curves
(eq 24 form, alpha 0.5 and 1) compared by residuals and AIC, and B_noise from steps and examples
(eq 22) with eps_max by eq 23 when a steps column is given.

GRID.csv has one row per run. The score column (--loss-col) is a loss to minimise, or with
--maximize a gain such as the further loss decrease after a target (sims.workloads' runs.csv).
GRID.csv "steplaw" is the StepLaw grid shipped with the package (surgesim/data/steplaw: 1,911
dense LM runs, Li et al. 2025; fixed token budget per (N, D) group; final smoothed loss):

  python -m sims.fit steplaw --lr-col lr --batch-col bs --loss-col "smooth loss" --group-cols N,D \\
      --out runs/steplaw

and on a sims.workloads grid (steps to each target loss give eq 22):

  python -m sims.fit runs/cnn/runs.csv --loss-col further_decrease --maximize \\
      --steps-col steps --seed-col seed --group-cols target_loss --out runs/cnn-fit

A group whose fitted surge peak lies outside its batch sizes gets no B_noise (empty cells,
noise_batch_size_source no_peak_in_range) and a group with fewer than 3 usable optima is "not
fitted"; each prints one warning line. A grid where no group can be fitted is an error.

Outputs in --out: optimal_lr.csv (one row per group and batch size), fits.csv (one row per group),
fit_<group>.png and .pdf per group, options.json. Every column: docs/outputs.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
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
    p = _cli.parser("sims.fit", __doc__)
    p.add_argument("grid", metavar="GRID.csv", help="the grid: one row per run; steplaw: the shipped StepLaw grid")
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
    if args.grid == "steplaw":
        from surgesim.data import steplaw_grid

        args.grid = str(steplaw_grid())
    if not Path(args.grid).is_file():
        raise _cli.UsageError(f"{args.grid!r}: no such file")
    groups = tuple(c.strip() for c in args.group_cols.split(",") if c.strip())
    return Options(
        grid=args.grid, lr_col=args.lr_col, batch_col=args.batch_col, loss_col=args.loss_col,
        maximize=args.maximize, group_cols=groups, steps_col=args.steps_col, seed_col=args.seed_col,
        include_edges=args.include_edges, out=args.out, plot=not args.no_plot, quiet=args.quiet,
    )  # fmt: skip


def _inputs(opts: Options) -> dict:
    """What a rerun into the same --out must share with the run there (else it is refused, so that
    no figure of one grid stays beside the CSVs of another): the grid's content and the options
    that change the results."""
    digest = hashlib.sha256(Path(opts.grid).read_bytes()).hexdigest()
    keep = {k: v for k, v in dataclasses.asdict(opts).items() if k not in ("grid", "out", "plot", "quiet")}
    return {"grid_sha256": digest, **keep}


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
    if all(fit.source == "not_fitted" for _, fit in groups):
        why = groups[0][1].note if len(groups) == 1 else "no group has 3 usable optima or steps at 2 batch sizes"
        raise _cli.UsageError(f"{opts.grid}: {why}")
    out = _cli.out_dir(opts.out, command="sims.fit", inputs=_inputs(opts))
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
            label = ", ".join(f"{c} = {_readable(v)}" for c, v in key.items())
            fig = figure(
                fit, table[opts.lr_col][sel], table[opts.batch_col][sel], table[opts.loss_col][sel],
                maximize=opts.maximize, score_label=opts.loss_col,
                title=f"{Path(opts.grid).name}" + (f": {label}" if label else ""),
            )  # fmt: skip
            name = "fit_" + (_slug(key) if key else "all")
            if name in figures:  # groups whose names differ only in characters the slug drops
                name += "_" + hashlib.sha256(repr(sorted(key.items())).encode()).hexdigest()[:8]
            fig.savefig(out / f"{name}.png", dpi=200)
            fig.savefig(out / f"{name}.pdf", metadata={"CreationDate": None})
            figures.append(name)
    for key, fit in groups:
        if fit.note:
            label = ", ".join(f"{c} = {_readable(v)}" for c, v in key.items()) or "the grid"
            _cli.warn(f"{label}: {fit.note}; B_noise and peak lr left empty")
    if not opts.quiet:
        print_fits(groups, opts.group_cols)
        print(f"wrote {out}/optimal_lr.csv, fits.csv" + (f" and {len(figures)} figures" if figures else ""))
    return 0


def _finite(rows: list[dict]) -> list[dict]:
    """NaN and inf cells as empty (None) in the CSV files; batch sizes that are whole numbers
    (as in the grid) as integers, 4 not 4.0."""

    def cell(k, v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if k in ("batch_size", "peak_batch_size") and isinstance(v, float) and v.is_integer():
            return int(v)
        return v

    return [{k: cell(k, v) for k, v in r.items()} for r in rows]


def _readable(v) -> str:
    """A group value for titles: 429260800 -> 429M, 2.27e10 -> 22.7B; others as they are."""
    if isinstance(v, (int, float)) and abs(v) >= 1e4:
        for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
            if abs(v) >= scale:
                return f"{v / scale:.3g}{suffix}"
    return str(v)


def _slug(key: dict) -> str:
    """A file-name part for a group: at most 100 characters (a long value is cut and a hash of the
    whole key added, so that file names stay under every file system's 255-byte limit)."""
    slug = re.sub(r"[^A-Za-z0-9.=-]+", "_", "_".join(f"{c}={v}" for c, v in key.items())).strip("_")
    if len(slug) > 100:
        slug = slug[:91] + "_" + hashlib.sha256(repr(sorted(key.items())).encode()).hexdigest()[:8]
    return slug


def _g(x: float, fmt: str, width: int) -> str:
    return f"{x:>{width}{fmt}}" if math.isfinite(x) else f"{'-':>{width}}"


def print_fits(groups, group_cols) -> None:
    head = " ".join(f"{c:>8}" for c in group_cols)
    print(f"{head} {'B_noise':>9} {'source':>16} {'peak lr':>9} {'surge rss':>9} {'sgd.5 rss':>9} "
          f"{'sgd1 rss':>9} {'best (AIC)':>13} {'peak B':>7}")  # fmt: skip
    for key, fit in groups:
        c = fit.curves
        rss = [c[m].rss if m in c else math.nan for m in ("surge", "sgd_alpha_0.5", "sgd_alpha_1")]
        vals = " ".join(f"{_readable(v):>8}" for v in key.values())
        print(f"{vals} {_g(fit.noise_batch_size, '.4g', 9)} {fit.source:>16} {_g(fit.peak_lr, '.3e', 9)} "
              f"{_g(rss[0], '.3f', 9)} {_g(rss[1], '.3f', 9)} {_g(rss[2], '.3f', 9)} {fit.best_model or '-':>13} "
              f"{_g(fit.peak_batch_size, '.0f', 7)}")  # fmt: skip
    print(
        "(B_noise, peak lr: eq 22/23 (source eq22) or the surge fit eq 2 (surge_fit), '-' when the fitted peak "
        "lies outside the batch sizes;\n rss: residual sum of squares in log lr of each curve; best: lowest AIC; "
        "peak B: the batch size with the largest optimal lr on the grid; columns: docs/outputs.md)"
    )


def figure(fit, lr, B, score, *, maximize: bool, score_label: str, title: str = "", missing: str | None = None):
    """The paper's Fig 2-4 panels for one grid through ``surgesim.plots.grid``: the heat map with
    the optimal lr per B (+-2 s.e. in log lr: bootstrap over seeds, else half the grid spacing),
    the fitted curves and B_noise; and the eq 22 panel when steps are known. A grid whose
    learning rates differ per batch size is drawn as it is (each B over its own lrs); cells run
    without a value are labelled ``missing`` (default: an empty or NaN score in the grid)."""
    from surgesim.gridfit import grid_cells, score_matrix
    from surgesim.plots.grid import grid_figure

    bs, lrs, z = score_matrix(lr, B, score, maximize=maximize)
    ran = grid_cells(lr, B)[2]
    opt = [o for o in fit.optima if math.isfinite(o.optimal_lr)]
    optima = {}
    for label, pts in (("optimal lr", [o for o in opt if not o.at_edge]),
                       ("optimum at the lr-grid edge (a bound)", [o for o in opt if o.at_edge])):  # fmt: skip
        if pts:
            err = [o.log_lr_se if math.isfinite(o.log_lr_se) else o.log_lr_halfwidth for o in pts]
            optima[label] = ([o.batch_size for o in pts], [o.optimal_lr for o in pts], err)
    steps = [o.steps for o in fit.optima] if fit.eq22 else None
    return grid_figure(
        bs, lrs, z, optima=optima, curves=fit.curves, noise_batch_size=fit.noise_batch_size, steps=steps,
        examples=[o.examples for o in fit.optima] if fit.eq22 else None,
        s_min=fit.eq22[1] if fit.eq22 else None, title=title, normalize=maximize,
        score_label=score_label if maximize else f"closeness of {score_label} to the best at this B",
        missing=missing or f"no value: {score_label} empty or NaN in the grid", ran=ran,
    )  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
