"""Momentum and Adam's balance point on noisy quadratics: the paper's grid search (Li et al. 2024,
Section 3.2-3.3, as ``sims.dynamics``) for Adam with beta1 in {0, 0.5, 0.8, 0.9, 0.95} x beta2 in
{0.9, 0.999}, beside sign-SGD and SGD with momentum 0, 0.5, 0.9, on two problem families
(``lowrank``: the default problem of sims.dynamics, d = 256; ``powerlaw``: dense H with eigenvalues
k^-1, d = 64; ``--families diagonal``: lowrank's diag(h) alone, the NQM). Per (family, optimizer,
target): the fitted eq-22 B_noise and the grid's peak batch size, each with a bootstrap standard
error over seeds, and the predictors of the balance point scored against the fit
(``surgesim.momentum``): eq 14 at the target states and its eq-21 path average, the
stationary-buffer one-step model, the multi-step probe (T real optimizer steps from the run's
states, fresh minibatches) for each T of --probe-steps, and the large-batch argument (momentum
leaves E_min and shortens S_min to the noise-free steps S_inf; Zhang et al. 2019).

Outputs in --out: momentum.csv (one row per family, optimizer and target), predictors.csv (one
row per predictor, with its ratio to the fit), summary.json, momentum.png (fitted B_noise against
beta1), options.json, store_<family>.sqlite (resumable: rerunning the same command into the same
--out skips the finished grid tasks). Every column and key: docs/outputs.md.

Default: 8 seeds, 12 learning rates, batch sizes 8 .. 8192 in octaves, 3 targets, probe T = 1, 4, 8
from 4 states per result: 15-30 minutes on 2 loaded cores. --quick: a smoke run of a few seconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from sims import _cli

QUICK = {  # --quick: a smoke run of a few seconds; options given explicitly win
    "optimizers": "sign,sgd:0.9,adam:0:0.999,adam:0.9:0.999", "batch_sizes": [16, 64, 256, 1024],
    "lr_points": 6, "seeds": 3, "targets": [0.5], "max_steps": 1500, "bootstrap": 20, "probe_steps": [1, 4],
    "probe_states": 2, "probe_trials": 4,
}  # fmt: skip


@dataclass(frozen=True)
class Options:
    families: tuple[str, ...]
    optimizers: tuple[str, ...]
    batch_sizes: tuple[int, ...]
    lr_points: int
    targets: tuple[float, ...]
    max_steps: int
    seeds: int
    seed: int
    bootstrap: int
    probe_steps: tuple[int, ...]
    probe_states: int
    probe_trials: int
    out: str
    scheduler: str | None
    quick: bool
    plot: bool
    quiet: bool


def build_parser() -> _cli.Parser:
    p = _cli.parser("sims.momentum", __doc__)
    g = p.add_argument_group("study")
    g.add_argument("--families", default="lowrank,powerlaw",
                   help="problem families, from lowrank, powerlaw, diagonal (default lowrank,powerlaw)")
    g.add_argument("--optimizers", metavar="NAME[:B1[:B2]],...",
                   help="default: sign, sgd, sgd:0.5, sgd:0.9, adam:B1:B2 for B1 in 0,0.5,0.8,0.9,0.95 and "
                        "B2 in 0.9,0.999 (sgd:B1 is SGD with momentum B1)")  # fmt: skip
    g.add_argument("--batch-sizes", type=_cli.int_list, metavar="B1,B2,...", help="default 8,16,...,8192")
    g.add_argument("--lr-points", type=int, default=12, help="learning rates per optimizer (default 12)")
    g.add_argument("--targets", type=_cli.float_list, default=[0.5, 0.25, 0.125], metavar="F1,F2,...",
                   help="target losses as fractions of the initial loss (default 0.5,0.25,0.125)")  # fmt: skip
    g.add_argument("--max-steps", type=int, default=3000, help="steps allowed to reach a target (default 3000)")
    g.add_argument("--seeds", type=int, default=8, help="runs per grid point (default 8)")
    g.add_argument("--seed", type=int, default=0, help="seed of the problems and of every stream (default 0)")
    g.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples over seeds (default 200)")
    g.add_argument("--probe-steps", type=_cli.int_list, default=[1, 4, 8], metavar="T1,T2,...",
                   help="T of the multi-step probe (default 1,4,8)")  # fmt: skip
    g.add_argument("--probe-states", type=int, default=4, help="run states probed per result (default 4)")
    g.add_argument("--probe-trials", type=int, default=8, help="probe trials per state (default 8)")
    g.add_argument("--quick", action="store_true", help="a smoke run of a few seconds (tests)")
    g = p.add_argument_group("execution and output")
    g.add_argument("--out", default="runs/momentum", help="output directory (default runs/momentum)")
    g.add_argument("--scheduler", metavar="local:N|tcp://HOST:PORT",
                   help="run the grid tasks on Dask (also via DASK_SCHEDULER_ADDRESS); default: this process")
    g.add_argument("--connect-timeout", **_cli.CONNECT_TIMEOUT)
    g.add_argument("--no-plot", action="store_true", help="skip the figure")
    g.add_argument("--quiet", action="store_true", help="no table, no progress bar")
    return p


def parse_optimizer(spec: str):
    """sign | sgd[:B1] | adam[:B1:B2] | lion[:B1:B2] -> an Optimizer (``sims.dynamics.parse_optimizer``)."""
    from sims.dynamics import parse_optimizer as parse

    return parse(spec)


def resolve(args) -> Options:
    from surgesim.momentum import FAMILIES, STUDY_OPTIMIZERS

    if args.quick:  # the quick values, where the option was left at its default
        defaults = build_parser()
        for k, v in QUICK.items():
            if getattr(args, k) == defaults.get_default(k):
                setattr(args, k, v)
    checks = {
        "--lr-points": (args.lr_points, 3, 10**4), "--max-steps": (args.max_steps, 1, 10**9),
        "--seeds": (args.seeds, 2, 2**31), "--seed": (args.seed, 0, _cli.SEED_LIMIT - 1),
        "--bootstrap": (args.bootstrap, 2, 10**6), "--probe-states": (args.probe_states, 1, 10**4),
        "--probe-trials": (args.probe_trials, 2, 10**6),
    }  # fmt: skip
    for flag, (value, lo, hi) in checks.items():
        _cli.check_int(flag, value, lo, hi)
    fams = tuple(f.strip() for f in args.families.split(",") if f.strip())
    if not fams or any(f not in FAMILIES for f in fams) or len(set(fams)) != len(fams):
        raise _cli.UsageError(f"--families: choose distinct names from {', '.join(FAMILIES)}, got {args.families!r}")
    if args.optimizers is None:
        specs = tuple(_spec(o) for o in STUDY_OPTIMIZERS)
    else:
        specs = tuple(s.strip() for s in args.optimizers.split(",") if s.strip())
    if not specs:
        raise _cli.UsageError(f"--optimizers: no optimizer in {args.optimizers!r}")
    labels = [parse_optimizer(s).label for s in specs]
    if len(set(labels)) != len(labels):
        raise _cli.UsageError(f"--optimizers: repeated optimizer in {args.optimizers!r}")
    sizes = tuple(args.batch_sizes) if args.batch_sizes is not None else tuple(2**k for k in range(3, 14))
    if min(sizes) < 1 or len(set(sizes)) != len(sizes) or len(sizes) < 3:
        raise _cli.UsageError(f"--batch-sizes must be at least 3 distinct integers >= 1, got {list(sizes)}")
    if any(not 0 < f < 1 for f in args.targets) or len(set(args.targets)) != len(args.targets):
        raise _cli.UsageError(f"--targets must be distinct fractions in (0, 1), got {args.targets}")
    if any(t < 1 for t in args.probe_steps) or len(set(args.probe_steps)) != len(args.probe_steps):
        raise _cli.UsageError(f"--probe-steps must be distinct integers >= 1, got {args.probe_steps}")
    return Options(
        families=fams, optimizers=specs, batch_sizes=tuple(sorted(sizes)), lr_points=args.lr_points,
        targets=tuple(sorted(args.targets, reverse=True)), max_steps=args.max_steps, seeds=args.seeds, seed=args.seed,
        bootstrap=args.bootstrap, probe_steps=tuple(sorted(args.probe_steps)), probe_states=args.probe_states,
        probe_trials=args.probe_trials, out=args.out, scheduler=args.scheduler, quick=args.quick,
        plot=not args.no_plot, quiet=args.quiet,
    )  # fmt: skip


def _spec(o) -> str:
    if o.name == "adam":
        return f"adam:{o.beta1:g}:{o.beta2:g}"
    return f"sgd:{o.beta1:g}" if o.name == "sgd" and o.beta1 > 0 else o.name


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return _cli.run(lambda: _main(args))


def _main(args) -> int:
    from surgesim import dynamics, momentum
    from surgesim.progress import progress_bar
    from surgesim.sweep import run_sweep, write_csv

    opts = resolve(args)
    out = _cli.out_dir(opts.out, command="sims.momentum")
    t_start = time.perf_counter()
    _cli.save_options(opts, out / "options.json")
    optimizers = [parse_optimizer(s) for s in opts.optimizers]
    scheduler = _cli.scheduler_address(opts.scheduler)
    table, predictors, families = [], [], {}
    for fam in opts.families:
        problem = momentum.family_problem(fam, opts.seed)
        exp = dynamics.default_experiment(
            problem, optimizers, opts.batch_sizes, opts.lr_points, opts.targets, 50, opts.max_steps, opts.seeds,
            opts.seed, "cpu", False,
        )  # fmt: skip
        with progress_bar(quiet=opts.quiet, desc=f"{fam} grid") as bar:
            rows = run_sweep(
                dynamics.run_task, exp.tasks(), params={"problem_sha256": problem.digest()},
                store=out.final(f"store_{fam}.sqlite"), scheduler=scheduler, workers=None if scheduler else 1,
                shared=problem, progress=bar, connect_timeout=args.connect_timeout,
            )  # fmt: skip
        results = dynamics.summarize(exp, rows)
        with progress_bar(quiet=opts.quiet, desc=f"{fam} predictors") as bar:
            rows_f, preds_f = momentum.study_table(
                exp, rows, results, fam, opts.bootstrap, opts.probe_steps, opts.probe_states, opts.probe_trials,
                progress=bar,
            )  # fmt: skip
        table += rows_f
        predictors += preds_f
        families[fam] = {"dims": problem.dim, "initial_loss": exp.initial_loss, "describe": problem.describe()}
    write_csv(table, out / "momentum.csv", columns=momentum.STUDY_COLUMNS)
    write_csv(predictors, out / "predictors.csv", columns=momentum.PREDICTOR_COLUMNS)
    summary = {
        "families": families, "optimizers": [o.label for o in optimizers], "batch_sizes": list(opts.batch_sizes),
        "target_fractions": list(opts.targets), "seeds": opts.seeds, "seed": opts.seed,
        "results": table, "predictor_ratios": momentum.ratio_summary(predictors),
        "wall_seconds": time.perf_counter() - t_start,
    }  # fmt: skip
    _cli.write_json(summary, out / "summary.json")
    figures = []
    if opts.plot:
        from surgesim.plots.momentum import momentum_figure

        title = "fitted eq-22 B_noise against Adam's beta1 (bars: bootstrap s.e. over seeds)"
        fig = momentum_figure(table, title=title)
        fig.savefig(out / "momentum.png", dpi=110)
        figures.append("momentum.png")
    if not opts.quiet:
        print_table(table, predictors)
        print(f"wrote {out}/momentum.csv, predictors.csv, summary.json, options.json"
              + "".join(f", {f}" for f in figures) + f" in {summary['wall_seconds']:.1f} s")  # fmt: skip
    return 0


def _g(x, fmt: str = ".3g") -> str:
    return format(x, fmt) if x is not None and np.isfinite(x) else "-"


def print_table(table, predictors) -> None:
    print(f"{'family':<9} {'optimizer':<18} {'target':>6} {'B_noise fit':>16} {'peak B':>14} {'eq14':>7} "
          f"{'path':>7} {'stationary':>10}")  # fmt: skip
    for r in table:
        print(f"{r['family']:<9} {r['label']:<18} {r['target_fraction']:>6g} "
              f"{_g(r['fitted_noise_batch_size']):>7} +- {_g(r['fitted_noise_batch_size_se']):<6}"
              f"{_g(r['peak_batch_size']):>6} +- {_g(r['peak_batch_size_se']):<5}"
              f"{_g(r['eq14_noise_batch_size']):>7} {_g(r['path_noise_batch_size']):>7} "
              f"{_g(r['stationary_noise_batch_size']):>10}")  # fmt: skip
    from surgesim.momentum import ratio_summary

    print("\npredicted / fitted B_noise, geometric mean over families, beta2 and targets (x/: s.e. factor)")
    for g in ratio_summary(predictors):
        t = f"T={g['steps']}" if g["steps"] is not None else ""
        print(f"  {g['predictor']:<15} {t:<5} {g['optimizer']:<5} beta1 {g['beta1']:<5g} {_g(g['ratio']):>7} "
              f"x/ {_g(g['ratio_se_factor'])}  (n {g['n']}, missing {g['missing']})")
    print("\n(B_noise fit: eq 22 at the step-optimal learning rates; +-: bootstrap s.e. over seeds; eq14: eq 14 "
          "at the target states (ensemble);\n path: eq 21's path average; stationary: the one-step model with "
          "stationary buffers, (2/pi) k eq14)")  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
