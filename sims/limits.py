"""The limits of the paper's theory: where eq 10, eq 2 and eq 14 hold, and how far correlated
noise, non-Gaussian per-example gradients and Adam move the optimal learning rate of sign-SGD.

Computes (``surgesim.limits``): regime maps over (B, mu/sigma) of eq 10 within eq 9 and of the
closed-form surge eq 2 against exact eq 9; eq 2's error over (B, B_noise) in units of Theorem 3's
validity bound (lowrank problems of many dimensions); per problem family, the B ranges where
each approximation stays within 5% and 20%; the peak of exact eq 9 against eq 14's B_noise and
eq 16's height; the independence assumption against the exact correlated theory over
(B, correlation); Monte Carlo departures of Student-t, Laplace and sparse two-point per-example
gradients from Gaussian eq 9; one Adam step (frozen-gradient model) against sign.

Outputs in --out: summary.csv (the table printed), summary.json, maps.csv, families.csv,
peaks.csv, correlation.csv, nongaussian.csv, adam.csv, options.json and the figures
limits_maps.png, limits_correlation.png, limits_families.png, limits_peak.png,
limits_nongaussian.png, limits_adam.png. --quick runs coarse grids and few trials.

Every output column and key (meaning, unit, equation): docs/outputs.md.
"""

from __future__ import annotations

from sims import _cli
from surgesim.limits_study import TOLS  # noqa: F401  (kept importable from here)
from surgesim.limits_study import LimitsOptions as Options


def build_parser() -> _cli.Parser:
    p = _cli.parser("sims.limits", __doc__)
    p.add_argument("--quick", action="store_true", help="coarse grids, few trials (fast)")
    p.add_argument("--dims", type=int, default=1000, help="dimension of the family problems (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the problems and every random stream (default 0)")
    _cli.output_options(p, "runs/limits")
    return p


def resolve(args) -> Options:
    """The options, checked (``limits_options``; a refusal: UsageError naming the flag)."""
    from surgesim.limits_study import limits_options

    return _cli.flag_checked(limits_options, out=args.out, quick=args.quick, dims=args.dims, seed=args.seed,
                             plot=not args.no_plot, quiet=args.quiet)  # fmt: skip


main = _cli.main_of(__name__)


def _main(args) -> int:
    from surgesim.limits_study import run_limits
    from surgesim.progress import progress_bar

    opts = resolve(args)
    _cli.need_memory(8 * opts.dims * opts.dims * 4, f"--dims {opts.dims} (dense and power-law families)")
    out = _cli.out_dir(opts.out, command="sims.limits", options=opts)
    with progress_bar(quiet=opts.quiet, desc="limits") as bar:
        result = run_limits(opts, progress=bar)
    result.write(out)
    if not opts.quiet:
        print(result.report())
        print(f"wrote {out} ({result.scalars['wall_seconds']:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
