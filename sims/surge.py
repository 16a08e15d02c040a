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

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sims import _cli


@dataclass(frozen=True)
class Options:
    dims: int
    problem: str | None
    hessian: str
    noise_batch_size: float | None
    batch_sizes: tuple[int, ...]
    trials: int | None
    rel_se: float | None
    max_trials: int
    sampler: str
    seed: int
    out: str
    backend: str
    scheduler: str | None
    plot: bool
    quiet: bool


COLUMNS = [
    "batch_size", "trials", "denominator_trials", "lr_mc", "lr_mc_se", "lr_mc_search", "lr_exact",
    "lr_erf_approx", "lr_surge", "lr_sgd", "z", "dl_mc", "dl_mc_se", "dl_exact", "dl_surge", "converged",
]  # fmt: skip


def build_parser() -> _cli.Parser:
    from surgesim.problem import FAMILIES

    p = _cli.parser("sims.surge", __doc__)
    g = p.add_argument_group("problem")
    g.add_argument(
        "--dims", type=_cli.integer(2, 2**40), default=1000, help="dimension d of a generated problem (default 1000)"
    )
    g.add_argument(
        "--problem", metavar="FILE.npz", help="load the problem (mu, sigma, H or h_diag[, h_factor]) instead"
    )
    g.add_argument("--hessian", choices=sorted(FAMILIES), default="lowrank",
                   help="family of a generated problem: lowrank (surges, default), dense (the same H as a "
                        "dense matrix), diagonal (no surge: B_noise = inf), "
                        "powerlaw (dense, power-law spectrum)")  # fmt: skip
    g.add_argument("--noise-batch-size", type=float, metavar="B",
                   help="B_noise (eq 14) of a generated lowrank or dense problem: its low-rank coupling is "
                        "scaled to give it (default: 86 for d > 1000; below, the d = 1000 coupling)")  # fmt: skip
    g = p.add_argument_group("batch sizes")
    g.add_argument("--batch-sizes", type=_cli.int_list, metavar="B1,B2,...", help="explicit list (overrides the grid)")
    g.add_argument(
        "--b-min", type=_cli.finite(1, 2**53), default=1, help="smallest batch size of the log grid (default 1)"
    )
    g.add_argument(
        "--b-max", type=_cli.finite(1, 2**53), default=2**20, help="largest batch size of the log grid (default 2^20)"
    )
    g.add_argument(
        "--b-num", type=_cli.integer(1, 10_000), default=25, help="points of the log grid before rounding (default 25)"
    )
    g = p.add_argument_group("Monte Carlo")
    m = g.add_mutually_exclusive_group()
    m.add_argument("--trials", type=_cli.integer(2, 2**53), help="fixed trials per batch size")
    m.add_argument("--rel-se", type=_cli.finite(), help="adaptive: trials until the learning rate's relative standard "
                   "error is at most this, at every batch size (default 0.01)")  # fmt: skip
    g.add_argument(
        "--max-trials",
        type=_cli.integer(2, 2**53),
        default=1 << 24,
        help="cap on adaptive trials per batch size (default 2^24)",
    )
    g.add_argument("--sampler", choices=["sign", "batch_mean", "per_example"], default="sign",
                   help="sign: one word per coordinate against Phi(sqrt(B) mu/sigma) (default, exact and "
                        "fastest); batch_mean: one normal per coordinate; per_example: B normals per "
                        "coordinate (B times slower)")  # fmt: skip
    g.add_argument(
        "--seed", type=_cli.seed, default=0, help="seed of the problem and of every random stream (default 0)"
    )
    g = p.add_argument_group("execution and output")
    g.add_argument("--out", default="runs/surge", help="output directory (default runs/surge)")
    g.add_argument("--backend", choices=["cpu", "gpu", "auto"], default="cpu", help="kernel backend (default cpu)")
    g.add_argument(
        "--scheduler",
        metavar="local:N|tcp://HOST:PORT",
        help="run the batch sizes as Dask tasks: local:N starts a LocalCluster of N workers, "
        "tcp://HOST:PORT uses a running cluster (also via DASK_SCHEDULER_ADDRESS); default: "
        "this process, whose kernels already use every core",
    )
    g.add_argument("--connect-timeout", **_cli.CONNECT_TIMEOUT)
    g.add_argument("--no-plot", action="store_true", help="skip the figure")
    g.add_argument("--quiet", action="store_true", help="no table, no progress bar")
    return p


def resolve(args) -> Options:
    from surgesim.estimate import check_options
    from surgesim.hessian import check_dense_dim

    if args.dims < 2:
        raise _cli.UsageError(f"--dims must be >= 2, got {args.dims}")
    if args.batch_sizes is not None:
        sizes = tuple(args.batch_sizes)
    else:
        if not (1 <= args.b_min <= args.b_max) or args.b_num < 1:
            raise _cli.UsageError(f"need 1 <= --b-min <= --b-max and --b-num >= 1, got "
                                  f"{args.b_min:g}, {args.b_max:g}, {args.b_num}")  # fmt: skip
        grid = np.logspace(np.log10(args.b_min), np.log10(args.b_max), args.b_num)
        sizes = tuple(int(b) for b in np.unique(np.round(grid)))
    if any(b < 1 for b in sizes):
        raise _cli.UsageError(f"batch sizes must be >= 1, got {min(sizes)}")
    if args.trials is not None and args.trials < 2:
        raise _cli.UsageError(f"--trials must be >= 2, got {args.trials}")
    rel_se = None if args.trials is not None else (0.01 if args.rel_se is None else args.rel_se)
    if rel_se is not None and not 0 < rel_se < 1:
        raise _cli.UsageError(f"--rel-se must be in (0, 1), got {rel_se}")
    if args.problem is not None and not Path(args.problem).is_file():
        raise _cli.UsageError(f"--problem {args.problem!r}: no such file")
    if args.noise_batch_size is not None and (args.problem is not None or args.hessian not in ("lowrank", "dense")):
        raise _cli.UsageError("--noise-batch-size applies to a generated --hessian lowrank or dense problem")
    if args.problem is None and args.hessian in ("dense", "powerlaw"):
        check_dense_dim(args.dims)
    if args.problem is None:  # mu, sigma, the Hessian's factors (dense: d x d) and their temporaries
        _cli.need_memory(
            8 * args.dims * (args.dims if args.hessian in ("dense", "powerlaw") else 16), f"--dims {args.dims}"
        )
    check_options(sizes, trials=args.trials, rel_se=rel_se, max_trials=args.max_trials, sampler=args.sampler)
    return Options(
        dims=args.dims, problem=args.problem, hessian=args.hessian,
        noise_batch_size=args.noise_batch_size, batch_sizes=sizes,
        trials=args.trials, rel_se=rel_se, max_trials=args.max_trials, sampler=args.sampler,
        seed=args.seed, out=args.out, backend=args.backend, scheduler=args.scheduler,
        plot=not args.no_plot, quiet=args.quiet,
    )  # fmt: skip


def result_row(e, theory: dict[str, float]) -> dict:
    """One results.csv row: the estimate beside the theory at its batch size."""
    return {
        "batch_size": e.batch_size, "trials": e.trials, "denominator_trials": e.denominator_trials,
        "lr_mc": e.lr, "lr_mc_se": e.lr_se, "lr_mc_search": e.lr_search,
        **{k: v for k, v in theory.items() if k.startswith("lr_")},
        # z is undefined where the s.e. is below the estimator's rounding (every trial drew the
        # same update, as at very large B): a 1e-16 difference over a 0 s.e. is no test.
        "z": (e.lr - theory["lr_exact"]) / e.lr_se if e.lr_se > 1e-9 * abs(e.lr) else float("nan"),
        "dl_mc": e.loss_improvement, "dl_mc_se": e.loss_improvement_se,
        "dl_exact": theory["dl_exact"], "dl_surge": theory["dl_surge"], "converged": e.converged,
    }  # fmt: skip


def _small_pages() -> None:
    """Stop NumPy asking for transparent huge pages for its large arrays (it does on Linux >= 4.6).
    Where the kernel compacts memory to serve such a request (defrag = madvise, a common default),
    each fresh array costs more in page faults than the pass that fills it: at d = 10^7, problem
    generation and the npz save took 1.9 s and 1.0 s of system time with huge pages, 0.5 s and 0.3 s
    without (measured on 2 cores). Results are the same bit for bit."""
    set_madvise = getattr(getattr(np, "_core", None), "multiarray", None)
    set_madvise = getattr(set_madvise, "_set_madvise_hugepage", None)
    if set_madvise is not None:
        set_madvise(False)


def checked_theory(problem, batch_sizes) -> tuple[dict, dict]:
    """The closed forms at every batch size and the problem's constants (``theory.curves_and_constants``);
    a problem whose closed forms overflow or divide by zero is refused before any work (as
    ``_cli.check_problem``)."""
    from surgesim import theory as th

    if not np.any(problem.mu):
        raise _cli.UsageError("mu is zero in every coordinate: the expected gradient vanishes, so no learning "
                              "rate improves the loss and there is nothing to optimise; give a problem with "
                              "mu != 0")  # fmt: skip
    B = np.asarray(batch_sizes, dtype=np.float64)
    try:
        values, scalars = th.curves_and_constants(B, problem.mu, problem.sigma, problem.hessian, strict=True)
    except (FloatingPointError, OverflowError, ZeroDivisionError) as exc:
        raise _cli.UsageError(f"the problem's closed forms are not finite ({exc}): mu, sigma and H must be of "
                              "moderate magnitude, and H must not vanish along mu") from None  # fmt: skip
    bad = sorted(k for k, v in values.items() if not np.all(np.isfinite(v)))
    if bad:
        raise _cli.UsageError(f"the problem's closed forms {', '.join(bad)} are not finite: mu, sigma and H must be "
                              "of moderate magnitude, and H must not vanish along mu")  # fmt: skip
    return values, scalars


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _small_pages()
    return _cli.run(lambda: _main(args))


def _main(args) -> int:
    from surgesim import backend as backends
    from surgesim.problem import FAMILIES, QuadraticProblem
    from surgesim.sweep import check_scheduler

    opts = resolve(args)
    backends.resolve(opts.backend)  # clear error before any work when the GPU is unusable
    check_scheduler(opts.scheduler, args.connect_timeout)  # a bad one (or DASK_SCHEDULER_ADDRESS) before any work
    t_start = time.perf_counter()
    family = {} if opts.noise_batch_size is None else {"noise_batch_size": opts.noise_batch_size}
    if opts.problem:
        problem = QuadraticProblem.load(opts.problem)
    else:
        problem = FAMILIES[opts.hessian](opts.dims, opts.seed, **family)
    # O(d) passes at large d: the digest (for the store) runs beside the closed forms, and the
    # problem file is written beside the Monte Carlo (hashlib, zlib and file writes release the GIL)
    with ThreadPoolExecutor(max_workers=1) as pool:  # on an error, waits for the thread
        return _run(opts, problem, pool, args.connect_timeout, t_start)


def _run(opts: Options, problem, pool: ThreadPoolExecutor, connect_timeout: float, t_start: float) -> int:
    from surgesim import theory as th
    from surgesim.estimate import Estimate, estimate_task
    from surgesim.progress import progress_bar
    from surgesim.sweep import run_sweep, write_csv

    digest = pool.submit(problem.digest)
    theory, scalars = checked_theory(problem, opts.batch_sizes)  # eq 1-19 at every B, computed once
    out = _cli.out_dir(opts.out, command="sims.surge")  # after every check
    saved = pool.submit(problem.save, out / "problem.npz")
    _cli.save_options(opts, out / "options.json")
    B = np.asarray(opts.batch_sizes, dtype=np.float64)
    mu, sigma, H = problem.mu, problem.sigma, problem.hessian
    if not opts.quiet:
        each = f"{opts.trials} trials each" if opts.trials else f"target rel. s.e. {opts.rel_se:g}"
        print(
            f"problem: {problem.describe()}; B_noise = {scalars['noise_batch_size']:.4g}, "
            f"validity bound = {scalars['validity_bound']:.4g}; {len(B)} batch sizes, {each}"
        )

    # One sweep task per batch size, stored as it finishes: an interrupted run keeps its results
    # and a rerun into the same --out resumes. Default: this process (its kernels use every core).
    options = {"seed": opts.seed, "trials": opts.trials, "rel_se": opts.rel_se, "max_trials": opts.max_trials,
               "sampler": opts.sampler, "backend": opts.backend}  # fmt: skip
    scheduler = _cli.scheduler_address(opts.scheduler)
    if not scheduler:
        from surgesim import rng
        from surgesim.kernels import onestep

        _cli.say_if_compiling(rng, onestep, quiet=opts.quiet)
    with progress_bar(quiet=opts.quiet, desc="batch sizes") as bar:
        stored = run_sweep(
            estimate_task, [{"batch_size": b, **options} for b in opts.batch_sizes],
            params={"problem_sha256": digest.result(), **options}, store=out.final("store.sqlite"),
            scheduler=scheduler, workers=None if scheduler else 1, shared=problem, progress=bar,
            connect_timeout=connect_timeout, per_task=True,
        )  # fmt: skip
    rows = [result_row(Estimate(**_cli.task_row(r, f"batch size {b}", batch_size=b)),
                       {k: float(v[i]) for k, v in theory.items()})
            for i, (b, r) in enumerate(zip(opts.batch_sizes, stored, strict=True))]  # fmt: skip
    saved.result()
    write_csv(rows, out / "results.csv", COLUMNS)
    wall = time.perf_counter() - t_start

    lr_mc = np.array([r["lr_mc"] for r in rows])
    z = np.array([r["z"] for r in rows])
    summary = {
        "dims": problem.dim,
        "seed": opts.seed,
        "trials": int(sum(r["trials"] for r in rows)),
        "sampler": opts.sampler,
        **scalars,
        "exact_peak_batch_size": int(B[int(np.argmax(theory["lr_exact"]))]),
        "mc_peak_batch_size": int(B[int(np.argmax(lr_mc))]),
        "max_abs_z": float(np.abs(z[np.isfinite(z)]).max()) if np.isfinite(z).any() else math.nan,
        "max_rel_se": float(max(r["lr_mc_se"] / abs(r["lr_mc"]) for r in rows)),
        "all_converged": bool(all(r["converged"] for r in rows)),
        "wall_seconds": wall,
    }
    short = [r for r in rows if not r["converged"]]
    if opts.rel_se is not None and short:
        _cli.warn(f"--rel-se {opts.rel_se:g} was not reached at {len(short)} of {len(rows)} batch sizes (B = "
                  f"{', '.join(str(r['batch_size']) for r in short[:6])}{', ...' if len(short) > 6 else ''}): they "
                  f"stopped at --max-trials {opts.max_trials} with rel. s.e. up to "
                  f"{max(r['lr_mc_se'] / abs(r['lr_mc']) for r in short):.2g} (converged = False in results.csv)")
    bn, bound = summary["noise_batch_size"], summary["validity_bound"]
    summary["noise_batch_size_beyond_validity"] = bool(np.isfinite(bn) and bn > bound)
    _cli.write_json(summary, out / "summary.json")
    if summary["noise_batch_size_beyond_validity"]:
        _cli.warn(f"B_noise (eq 14) = {bn:.4g} exceeds the validity bound {bound:.4g}: the peak lies outside "
              "Theorem 3's regime (B << bound), where eq 2 and eq 14 need not hold")  # fmt: skip

    if opts.plot:
        from surgesim.plots import lr_vs_batch_figure

        # the lines on 400 points, fewer at large d (each point is a pass over the coordinates)
        points = int(np.clip(4e8 / problem.dim, 60, 400))
        B_line = np.unique(np.logspace(np.log10(B.min()), np.log10(B.max()), points))
        lines = theory if np.array_equal(B_line, B) else th.curves(B_line, mu, sigma, H)
        curves = {k: v for k, v in lines.items() if k.startswith("lr_")}
        fig = lr_vs_batch_figure(
            B_line, curves, B, lr_mc, np.array([r["lr_mc_se"] for r in rows]),
            summary["noise_batch_size"], summary["large_batch_lr"], summary["validity_bound"],
            title=f"sign-SGD on a quadratic, {problem.describe()}",
        )  # fmt: skip
        fig.savefig(out / "surge.png", dpi=130)

    if not opts.quiet:
        print_table(rows, summary)
        print(f"wrote {out}/results.csv, summary.json, problem.npz" + (", surge.png" if opts.plot else ""))
    return 0


def print_table(rows: list[dict], summary: dict) -> None:
    print(f"{'B':>9} {'trials':>9} {'lr_mc':>11} {'rel.se':>7} {'lr_exact':>11} {'z':>6} "
          f"{'lr_erf':>11} {'lr_surge':>11} {'lr_sgd':>11}")  # fmt: skip
    for r in rows:
        print(f"{r['batch_size']:>9d} {r['trials']:>9d} {r['lr_mc']:>11.4e} {r['lr_mc_se'] / abs(r['lr_mc']):>7.2%} "
              f"{r['lr_exact']:>11.4e} {r['z']:>6.2f} {r['lr_erf_approx']:>11.4e} {r['lr_surge']:>11.4e} "
              f"{r['lr_sgd']:>11.4e}")  # fmt: skip
    print(
        f"B_noise (eq 14) = {summary['noise_batch_size']:.4g}, peak lr (eq 16) = {summary['peak_lr']:.4g}, "
        f"large-batch lr (eq 17) = {summary['large_batch_lr']:.4g}, validity bound = {summary['validity_bound']:.4g}"
    )
    print(
        f"peak batch size: exact {summary['exact_peak_batch_size']}, Monte Carlo {summary['mc_peak_batch_size']}; "
        f"max |z| = {summary['max_abs_z']:.2f}; max rel. s.e. = {summary['max_rel_se']:.2%}; "
        f"{summary['wall_seconds']:.1f} s"
    )


if __name__ == "__main__":
    raise SystemExit(main())
