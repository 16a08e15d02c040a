"""The surge on a synthetic quadratic: Monte Carlo optimal learning rate of sign-SGD per batch
size, beside the exact theory (eq 9), the erf approximation (eq 10), the closed-form surge
(eq 2 / 13) and the SGD rule (eq 1).

Default problem (--hessian lowrank): d coordinates with per-example gradients N(mu_i, sigma_i^2),
|mu_i|/sigma_i log-uniform in [0.004, 0.0125] and H = diag(h) + U U' with rank-4 factors positive
along sign(mu) (``surgesim.surge_problem``). The positive off-diagonal curvature makes eq 14's
B_noise finite and small (about 90 at d = 1000) while Theorem 3's validity bound
pi sigma^2 / (2 mu^2) stays about 10^4, so the peak sits well inside the theorem's regime; the
default batch sizes (25 log-spaced values from 1 to 2^20) cover the rise, the peak, the fall and
the large-batch plateau of eq 17.

Outputs in --out: results.csv, summary.json, problem.npz, options.json, surge.png, and
store.sqlite, the resumable store of finished batch sizes: an interrupted run keeps them, and the
same command resumes (a different problem or options into the same --out is refused).
Every column and key, with its unit and equation: docs/outputs.md.
"""

from __future__ import annotations

from sims import _cli
from surgesim.surge import SurgeOptions as Options
from surgesim.surge import resolve_surge_options


def build_parser() -> _cli.Parser:
    from surgesim.problem import FAMILIES

    p = _cli.parser("sims.surge", __doc__)
    g = p.add_argument_group("problem")
    g.add_argument("--dims", type=_cli.integer(2, 2**40), default=1000, help="dimension d of a generated problem "
                   "(default 1000)")  # fmt: skip
    g.add_argument("--problem", metavar="FILE.npz", help="load the problem (mu, sigma, H or h_diag[, h_factor])")
    g.add_argument("--hessian", choices=sorted(FAMILIES), default="lowrank", help="family of a generated problem: "
                   "lowrank (surges, default), dense (the same H as a dense matrix), diagonal (no surge: B_noise = "
                   "inf), powerlaw (dense, power-law spectrum)")  # fmt: skip
    g.add_argument("--noise-batch-size", type=float, metavar="B", help="B_noise (eq 14) of a generated lowrank or "
                   "dense problem (default: 86 for d > 1000; below, the d = 1000 coupling)")  # fmt: skip
    g = p.add_argument_group("batch sizes")
    g.add_argument("--batch-sizes", type=_cli.int_list, metavar="B1,B2,...", help="explicit list (overrides the grid)")
    g.add_argument("--b-min", type=_cli.finite(1, 2**53), default=1, help="smallest of the log grid (default 1)")
    g.add_argument("--b-max", type=_cli.finite(1, 2**53), default=2**20, help="largest of the log grid (default 2^20)")
    g.add_argument("--b-num", type=_cli.integer(1, 10_000), default=25, help="points of the log grid (default 25)")
    g = p.add_argument_group("Monte Carlo")
    m = g.add_mutually_exclusive_group()
    m.add_argument("--trials", type=_cli.integer(2, 2**53), help="fixed trials per batch size")
    m.add_argument("--rel-se", type=_cli.finite(), help="adaptive: trials until the learning rate's relative standard "
                   "error is at most this, at every batch size (default 0.01)")  # fmt: skip
    g.add_argument("--max-trials", type=_cli.integer(2, 2**53), default=1 << 24, help="cap on adaptive trials per "
                   "batch size (default 2^24)")  # fmt: skip
    g.add_argument("--sampler", choices=["sign", "batch_mean", "per_example"], default="sign", help="sign: one word "
                   "per coordinate (default, exact, fastest); batch_mean: one normal per coordinate; per_example: B "
                   "normals per coordinate (B times slower)")  # fmt: skip
    g.add_argument("--seed", type=_cli.seed, default=0, help="seed of the problem and every random stream (default 0)")
    g = p.add_argument_group("execution and output")
    _cli.output_options(g, "runs/surge", plot="skip the figure")
    g.add_argument("--backend", choices=["cpu", "gpu", "auto"], default="cpu", help="kernel backend (default cpu)")
    _cli.dask_options(g, default="this process, whose kernels already use every core")
    return p


def resolve(args) -> Options:
    """The options, checked (``resolve_surge_options``; a refusal: UsageError naming the flag)."""
    return _cli.flag_checked(resolve_surge_options, {**vars(args), "plot": not args.no_plot})


main = _cli.main_of(__name__)


def _main(args) -> int:
    from surgesim import backend, rng
    from surgesim.kernels import onestep
    from surgesim.progress import progress_bar
    from surgesim.surge import reuse_freed_memory, run_surge, small_pages, surge_warnings

    opts = resolve(args)
    backend.resolve(opts.backend)  # clear error before any work when the GPU is unusable
    scheduler = _cli.checked_scheduler(opts.scheduler, args.connect_timeout)  # a bad one before any work
    small_pages()
    reuse_freed_memory()
    out = _cli.out_opener(opts.out, "sims.surge", opts)  # opened after every check
    if not scheduler:
        _cli.say_if_compiling(rng, onestep, quiet=opts.quiet)
    with progress_bar(quiet=opts.quiet, desc="batch sizes") as bar:
        result = run_surge(opts, out, scheduler=scheduler, progress=bar, connect_timeout=args.connect_timeout,
                           announce=None if opts.quiet else print)  # fmt: skip
    result.write(out())
    for note in surge_warnings(result):
        _cli.warn(note)
    if not opts.quiet:
        print(result.report())
        print(f"wrote {out()}/results.csv, summary.json, problem.npz" + (", surge.png" if opts.plot else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
