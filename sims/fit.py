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

from sims import _cli
from surgesim.fitrun import FitOptions as Options
from surgesim.fitrun import fit_figure as figure  # noqa: F401  (its old place)


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
    _cli.output_options(p, "runs/fit", quiet="no table")
    return p


def resolve(args) -> Options:
    """The options, checked (``resolve_fit_options``: a grid file that does not exist is refused)."""
    from surgesim.fitrun import resolve_fit_options

    return resolve_fit_options({**vars(args), "plot": not args.no_plot})


main = _cli.main_of(__name__)


def _main(args) -> int:
    from surgesim.fitrun import run_fit

    opts = resolve(args)
    result = run_fit(opts)
    out = _cli.out_dir(opts.out, command="sims.fit", inputs=opts.inputs(), options=opts)
    figures = result.write(out)
    for note in result.notes():
        _cli.warn(note)
    if not opts.quiet:
        print(result.report())
        print(f"wrote {out}/optimal_lr.csv, fits.csv" + (f" and {len(figures)} figures" if figures else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
