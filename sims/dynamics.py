"""The paper's grid search (Li et al. 2024, Section 3.2-3.3) on a noisy quadratic: sign-SGD,
Adam(0.9, 0.999) and SGD trained at every learning rate x batch size x seed until the loss reaches
each target, the optimal learning rate per batch size, B_noise from steps and examples (eq 22)
beside the theory's prediction at the states reached, and the peak batch size as the loss falls.

Default problem: d = 256 coordinates, H = diag(h) + U U' with rank-4 factors positive along
sign(mu), |mu_i| / sigma_i log-uniform in (0.016, 0.05) at the start (``surgesim.dynamics.
default_problem``); targets 1/2, 1/4, 1/8 of the initial loss; batch sizes 8 .. 8192 in half octaves; 16 learning
rates per optimizer around the theory's optimum at the start; 16 seeds; 50 further steps past each
target; at most 3000 steps to reach one. Measured run time: README, section "Multi-step dynamics".

Optimizers: sign, adam (0.9, 0.999), sgd, lion (0.9, 0.99); NAME:BETA1:BETA2 sets the betas of
adam or lion (adam:0:0 is sign-SGD up to eps, Appendix A).

Every Adam result also reports path_noise_batch_size_adam, the package's predictor of Adam's balance
point (``surgesim.momentum.adam_noise_batch_size``: the optimal learning rate of 4 real Adam steps
from the runs' states, per batch size, with eq 2 fitted to it).

Optimizers also take sgd:BETA1 (SGD with momentum BETA1).

Outputs in --out: runs.csv (one row per run and target: optimizer, lr, batch_size, seed,
target_loss, steps, examples, further_decrease, ...; steps empty when the target was not reached),
summary.json (under "results", one entry per optimizer and target), problem.npz, options.json,
grid_<optimizer>_<k>.png per optimizer and target k (heat map of the further decrease with the
optimal learning rates and the fitted curves; 1/S against 1/E with eq 22), peak_vs_target.png,
and store.sqlite, the resumable store of finished tasks (rerunning the same command into the
same --out skips them).

Every output column and key (meaning, unit, equation): docs/outputs.md.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sims import _cli


@dataclass(frozen=True)
class Options:
    dims: int
    problem: str | None
    optimizers: tuple[str, ...]
    batch_sizes: tuple[int, ...]
    lr_points: int
    targets: tuple[float, ...]
    further_steps: int
    max_steps: int
    seeds: int
    seed: int
    out: str
    scheduler: str | None
    backend: str
    optimal_arm: bool
    plot: bool
    quiet: bool


def build_parser() -> _cli.Parser:
    p = _cli.parser("sims.dynamics", __doc__)
    g = p.add_argument_group("problem")
    g.add_argument("--dims", type=int, default=256, help="dimension d of the default problem (default 256)")
    g.add_argument("--problem", metavar="FILE.npz",
                   help="load a problem (mu, sigma, H or h_diag[, h_factor]) instead; mu is the mean "
                        "gradient at the start, theta0 - theta* = H^-1 mu")  # fmt: skip
    g = p.add_argument_group("grid")
    g.add_argument("--optimizers", default="sign,adam,sgd", metavar="NAME[:B1[:B2]],...",
                   help="comma-separated, from sign, adam, sgd, lion; adam:B1:B2, lion:B1:B2, sgd:B1 (momentum) "
                        "(default sign,adam,sgd)")  # fmt: skip
    g.add_argument("--batch-sizes", type=_cli.int_list, metavar="B1,B2,...", help="default 8,11,16,23,...,8192")
    g.add_argument("--lr-points", type=int, default=16, help="learning rates per optimizer (default 16)")
    g.add_argument("--targets", type=_cli.float_list, default=[0.5, 0.25, 0.125], metavar="F1,F2,...",
                   help="target losses as fractions of the initial loss (default 0.5,0.25,0.125)")  # fmt: skip
    g.add_argument("--further-steps", type=int, default=50, help="steps past each target (default 50)")
    g.add_argument("--max-steps", type=int, default=3000, help="steps allowed to reach a target (default 3000)")
    g.add_argument("--seeds", type=int, default=16, help="runs per grid point (default 16)")
    g.add_argument("--seed", type=int, default=0, help="seed of the problem and of every random stream (default 0)")
    g.add_argument("--no-optimal-arm", action="store_true",
                   help="skip the per-step optimal-lr arm of sign and sgd (each step's lr the exact one-step "
                        "optimum at its state: eq 9, eq 1 for sgd; CPU only)")  # fmt: skip
    g = p.add_argument_group("execution and output")
    g.add_argument("--out", default="runs/dynamics", help="output directory (default runs/dynamics)")
    g.add_argument("--scheduler", metavar="local:N|tcp://HOST:PORT",
                   help="run the tasks on Dask (also via DASK_SCHEDULER_ADDRESS); default: this process, "
                        "whose kernels already use every core")  # fmt: skip
    g.add_argument("--connect-timeout", **_cli.CONNECT_TIMEOUT)
    g.add_argument(
        "--backend",
        choices=["cpu", "gpu", "auto"],
        default="cpu",
        help="kernel backend: cpu (Numba, default), gpu (CuPy), auto (the GPU when usable)",
    )
    g.add_argument("--no-plot", action="store_true", help="skip the figures")
    g.add_argument("--quiet", action="store_true", help="no tables, no progress bar")
    return p


def parse_optimizer(spec: str):
    """NAME, NAME:BETA1:BETA2 (adam, lion) or sgd:BETA1 -> an Optimizer (``DEFAULT_OPTIMIZERS``'s
    defaults otherwise)."""
    from surgesim.dynamics import DEFAULT_OPTIMIZERS, Optimizer

    name, *betas = spec.strip().split(":")
    if name not in DEFAULT_OPTIMIZERS:
        raise _cli.UsageError(f"--optimizers: unknown optimizer {name!r}; choose from {', '.join(DEFAULT_OPTIMIZERS)}")
    base = DEFAULT_OPTIMIZERS[name]
    if not betas:
        return base
    if name == "sgd" and len(betas) == 1:  # SGD with momentum BETA1
        betas = [betas[0], "0"]
    elif len(betas) != 2 or name not in ("adam", "lion"):
        raise _cli.UsageError(f"--optimizers: {spec!r}: only adam and lion take betas, as NAME:BETA1:BETA2, "
                              "and sgd a momentum, as sgd:BETA1")  # fmt: skip
    try:
        b1, b2 = float(betas[0]), float(betas[1])
    except ValueError:
        raise _cli.UsageError(f"--optimizers: {spec!r}: betas must be numbers") from None
    return Optimizer(name, b1, b2, base.eps)


def resolve(args) -> Options:
    from surgesim.dynamics import DEFAULT_BATCH_SIZES

    checks = {
        "--dims": (args.dims, 2, 2**40), "--lr-points": (args.lr_points, 3, 10**4),
        "--further-steps": (args.further_steps, 0, 10**9), "--max-steps": (args.max_steps, 1, 10**9),
        "--seeds": (args.seeds, 1, 2**31), "--seed": (args.seed, 0, _cli.SEED_LIMIT - 1),
    }  # fmt: skip
    for flag, (value, lo, hi) in checks.items():
        _cli.check_int(flag, value, lo, hi)
    specs = tuple(s.strip() for s in args.optimizers.split(",") if s.strip())
    if not specs:
        raise _cli.UsageError(f"--optimizers: no optimizer in {args.optimizers!r}")
    labels = [parse_optimizer(s).label for s in specs]
    if len(set(labels)) != len(labels):
        raise _cli.UsageError(f"--optimizers: repeated optimizer in {args.optimizers!r}")
    sizes = tuple(args.batch_sizes) if args.batch_sizes is not None else DEFAULT_BATCH_SIZES
    if min(sizes) < 1 or len(set(sizes)) != len(sizes) or len(sizes) < 2:
        raise _cli.UsageError(f"--batch-sizes must be at least 2 distinct integers >= 1, got {list(sizes)}")
    if any(not 0 < f < 1 for f in args.targets) or len(set(args.targets)) != len(args.targets):
        raise _cli.UsageError(f"--targets must be distinct fractions in (0, 1), got {args.targets}")
    if args.problem is not None and not Path(args.problem).is_file():
        raise _cli.UsageError(f"--problem {args.problem!r}: no such file")
    runs = args.lr_points * args.seeds  # trajectories per task, each with a few d-vectors of state
    rows = runs * len(args.targets) * len(sizes) * len(specs)
    need = 8 * args.dims * runs * (6 + len(args.targets)) + 200 * rows
    _cli.need_memory(need, f"--dims {args.dims} x --lr-points {args.lr_points} x --seeds {args.seeds}")
    return Options(
        dims=args.dims, problem=args.problem, optimizers=specs, batch_sizes=tuple(sorted(sizes)),
        lr_points=args.lr_points, targets=tuple(sorted(args.targets, reverse=True)),
        further_steps=args.further_steps, max_steps=args.max_steps, seeds=args.seeds, seed=args.seed,
        out=args.out, scheduler=args.scheduler, backend=args.backend, optimal_arm=not args.no_optimal_arm,
        plot=not args.no_plot, quiet=args.quiet,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return _cli.run(lambda: _main(args))


def _main(args) -> int:
    from surgesim import backend as backends
    from surgesim import dynamics, theory
    from surgesim.problem import QuadraticProblem
    from surgesim.progress import progress_bar
    from surgesim.sweep import check_scheduler, run_sweep, write_csv

    opts = resolve(args)
    backend = backends.resolve(opts.backend)  # clear error before any work when the GPU is unusable
    check_scheduler(opts.scheduler, args.connect_timeout)  # a bad one (or DASK_SCHEDULER_ADDRESS) before any work
    t_start = time.perf_counter()
    problem = QuadraticProblem.load(opts.problem) if opts.problem else dynamics.default_problem(opts.dims, opts.seed)
    _cli.check_problem(problem, opts.batch_sizes)  # before the experiment's lr grids, built from its theory
    exp = dynamics.default_experiment(
        problem, [parse_optimizer(s) for s in opts.optimizers], opts.batch_sizes, opts.lr_points, opts.targets,
        opts.further_steps, opts.max_steps, opts.seeds, opts.seed, backend, opts.optimal_arm,
    )  # fmt: skip
    out = _cli.out_dir(opts.out, command="sims.dynamics")  # after every check
    problem.save(out / "problem.npz")
    _cli.save_options(opts, out / "options.json")
    mu, sigma, H = problem.mu, problem.sigma, problem.hessian
    start = {
        "dims": problem.dim, "initial_loss": exp.initial_loss,
        "initial_noise_batch_size": theory.noise_batch_size(mu, sigma, H),
        "initial_validity_bound": theory.validity_bound(mu, sigma),
    }  # fmt: skip
    if not opts.quiet:
        print(f"problem: {problem.describe()}; initial loss {exp.initial_loss:.4g}, B_noise at the start (eq 14) "
              f"{start['initial_noise_batch_size']:.4g}, validity bound {start['initial_validity_bound']:.4g}; "
              f"{len(exp.tasks())} tasks of {opts.lr_points} lr x {opts.seeds} seeds")  # fmt: skip

    scheduler = _cli.scheduler_address(opts.scheduler)
    if not scheduler:
        from surgesim import rng
        from surgesim.kernels import dynamics as kernels

        _cli.say_if_compiling(rng, kernels, quiet=opts.quiet)
    with progress_bar(quiet=opts.quiet, desc="tasks") as bar:
        rows = run_sweep(
            dynamics.run_task, exp.tasks(), params={"problem_sha256": problem.digest()},
            store=out.final("store.sqlite"),
            scheduler=scheduler, workers=None if scheduler else 1, shared=problem, progress=bar,
            connect_timeout=args.connect_timeout,
        )  # fmt: skip
    write_csv(rows, out / "runs.csv", columns=dynamics.ROW_COLUMNS)
    results = dynamics.summarize(exp, rows)
    summary = {
        **start, "seed": opts.seed, "seeds": opts.seeds, "optimizers": [o.label for o in exp.optimizers],
        "batch_sizes": list(exp.batch_sizes), "target_fractions": list(exp.target_fractions),
        "results": [r.as_dict() for r in results], "wall_seconds": time.perf_counter() - t_start,
    }  # fmt: skip
    _cli.write_json(summary, out / "summary.json")
    figures = write_figures(results, out) if opts.plot else []
    if not opts.quiet:
        print_tables(results, exp)
        print(f"wrote {out}/runs.csv, summary.json, problem.npz" + "".join(f", {f}" for f in figures)
              + f" in {summary['wall_seconds']:.1f} s")  # fmt: skip
    return 0


def _file_label(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", label).strip("-")


def _points(optima) -> tuple:
    """(B, lr, log_lr_se) arrays of a list of ``surgesim.gridfit.BatchOptimum``."""
    return tuple(np.array([[o.batch_size, o.optimal_lr, o.log_lr_se] for o in optima]).T)


def write_figures(results, out: Path) -> list[str]:
    from surgesim.plots.grid import grid_figure, peak_vs_target_figure

    names = []
    by_opt: dict[str, list] = {}
    for r in results:
        by_opt.setdefault(r.optimizer.label, []).append(r)
    for label, mine in by_opt.items():
        for k, r in enumerate(mine):
            fs, fd = r.steps_fit, r.decrease_fit
            eq22 = fs.eq22 or (None, None, None)
            fig = grid_figure(
                r.batch_sizes, r.lrs, r.decrease,
                optima={"optimal lr: fewest steps": _points(fs.optima),
                        "optimal lr: largest decrease": _points(fd.optima)},
                curves=fs.curves, noise_batch_size=eq22[0],
                steps=[o.steps for o in fs.optima], examples=[o.examples for o in fs.optima], s_min=eq22[1],
                title=f"{label}: target loss {r.target_loss:.4g} ({r.target_fraction:g} of the initial loss)",
            )  # fmt: skip
            name = f"grid_{_file_label(label)}_{k}.png"
            fig.savefig(out / name, dpi=110)
            names.append(name)
    x = [r.target_loss for r in next(iter(by_opt.values()))]
    fig = peak_vs_target_figure(
        x,
        {label: [r.peak_batch_size for r in mine] for label, mine in by_opt.items()},
        spread={label: ([np.nanmin(r.seed_peaks) for r in mine], [np.nanmax(r.seed_peaks) for r in mine])
                for label, mine in by_opt.items()},
        fitted={label: [r.fitted_noise_batch_size for r in mine] for label, mine in by_opt.items()},
        predicted={label: [r.predicted_noise_batch_size for r in mine] for label, mine in by_opt.items()},
        title="peak batch size as the loss falls (bars: range over seeds)",
    )  # fmt: skip
    fig.savefig(out / "peak_vs_target.png", dpi=110)
    return [*names, "peak_vs_target.png"]


def _g(x, fmt: str = ".3g", width: int = 9) -> str:
    return f"{x:>{width}{fmt}}" if x is not None and np.isfinite(x) else f"{'-':>{width}}"


def print_tables(results, exp) -> None:
    for frac, target in zip(exp.target_fractions, exp.targets, strict=True):
        print(f"\ntarget loss {target:.4g} ({frac:g} of the initial loss {exp.initial_loss:.4g})")
        for r in (r for r in results if r.target_fraction == frac):
            seeds = r.seed_peaks[np.isfinite(r.seed_peaks)]
            span = f"{seeds.min():g}-{seeds.max():g}" if seeds.size else "-"
            print(f"  {r.optimizer.label}: fitted B_noise (eq 22) {_g(r.fitted_noise_batch_size, width=0)}, "
                  f"path average (eq 21) {_g(r.path_noise_batch_size, width=0)}, "
                  + (f"Adam predictor (T-step probe) {_g(r.path_noise_batch_size_adam, width=0)}, "
                     if r.optimizer.name == "adam" else "") +
                  f"predicted B_noise {_g(r.predicted_noise_batch_size, width=0)}, peak batch size "
                  f"{_g(r.peak_batch_size, 'g', 0)} (seeds {span}; theory {_g(r.predicted_peak_batch_size, 'g', 0)}), "
                  f"best curve {r.steps_fit.best_model or '-'}")  # fmt: skip
            if r.optimal_arm is not None:
                a = r.optimal_arm
                print(f"  {r.optimizer.label} with the per-step optimal lr: fitted B_noise (eq 22) "
                      f"{_g(a['fitted_noise_batch_size'], width=0)}, path average (eq 21) "
                      f"{_g(a['path_noise_batch_size'], width=0)}")  # fmt: skip
            head = ("B", "optimal lr", "se factor", "S", "E", "lr (decr.)", "lr theory")
            print("  " + " ".join(f"{h:>{w}}" for h, w in zip(head, (7, 10, 9, 7, 10, 10, 10), strict=True)))
            for o, od, pred in zip(r.steps_fit.optima, r.decrease_fit.optima, r.predicted_lr, strict=True):
                spread = np.exp(o.log_lr_se) if np.isfinite(o.log_lr_se * o.optimal_lr) else np.nan
                edge = "*" if o.at_edge else " "
                print(f"  {o.batch_size:>7g} {_g(o.optimal_lr, '.3e', 10)}{edge}{_g(spread, '.3f', 8)} "
                      f"{_g(o.steps, '.0f', 7)} {_g(o.examples, '.0f', 10)} {_g(od.optimal_lr, '.3e', 10)} "
                      f"{_g(pred, '.3e', 10)}")  # fmt: skip
    print("\n(optimal lr: fewest seed-averaged steps to the target; *: at the edge of the learning-rate grid, a bound "
          "only;\n se factor: the seeds' standard error of the optimal lr as a factor; lr (decr.): largest further "
          "decrease;\n lr theory: eq 9, eq 1 for SGD, at the states where the runs reached the target)")  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
