"""Batch-size and learning-rate schedules that follow the surge, against the constant-batch front:
steps S and examples E to each target loss for sign-SGD and Adam on the noisy quadratic of
``sims.dynamics`` (``surgesim.schedules``).

Schedules: constant (B = 8 .. 8192 in octaves, lr tuned per target: the front), oracle (B_t = c
B_noise(theta_t) from eq 14 at the state, lr_t = k eq 9 at B_t), online (the same from running
estimates made from the minibatch gradients, lr_t = k eq 13), critical (B_t = c B_crit estimated
online, McCandlish et al.), geometric (B and lr multiplied every K steps). Each learning rate or
multiplier k is tuned per target on --tune-seeds runs (fewest mean steps), then evaluated on
--seeds fresh runs that share their random numbers across schedules.

Outputs in --out: schedules.csv (one row per schedule variant, optimizer, target and seed:
schedule, variant, optimizer, target_loss, seed, steps, examples, batch_size, lr; steps empty
where the target was not reached within --max-steps), summary.json (per optimizer, target and
variant: median S and E with bootstrap standard errors, the savings against the front in E at
equal S and in S at equal E with their standard errors, whether the front dominates it),
schedules_front.png (E against S), schedules_traces.png (B_t and lr_t along each schedule),
problem.npz, options.json, and the resumable stores tuning.sqlite and store.sqlite (rerunning the
same command into the same --out skips finished tasks). A few minutes on 2 cores.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sims import _cli

SCHEDULE_NAMES = ("constant", "oracle", "online", "critical", "geometric")


@dataclass(frozen=True)
class Options:
    dims: int
    problem: str | None
    optimizers: tuple[str, ...]
    schedules: tuple[str, ...]
    multipliers: tuple[float, ...]
    targets: tuple[float, ...]
    seeds: int
    tune_seeds: int
    max_steps: int
    seed: int
    out: str
    scheduler: str | None
    plot: bool
    quiet: bool


def build_parser() -> _cli.Parser:
    p = _cli.parser("sims.schedules", __doc__)
    g = p.add_argument_group("problem")
    g.add_argument("--dims", type=int, default=256, help="dimension d of the default problem (default 256)")
    g.add_argument("--problem", metavar="FILE.npz", help="load a problem (mu, sigma, H or h_diag[, h_factor]) instead")
    g.add_argument("--workload", metavar="NAME", help="a torch workload (not available yet: quadratics only)")
    g.add_argument("--demo", action="store_true", help="with --workload: its small demo data (not available yet)")
    g = p.add_argument_group("schedules")
    g.add_argument("--optimizers", default="sign,adam", help="comma-separated, from sign, adam (default sign,adam)")
    g.add_argument("--schedules", default=",".join(SCHEDULE_NAMES),
                   help=f"comma-separated, from {', '.join(SCHEDULE_NAMES)} (default all)")  # fmt: skip
    g.add_argument("--multipliers", type=_cli.float_list, default=[0.5, 1.0, 2.0], metavar="C1,C2,...",
                   help="c of the oracle and online rules, B_t = c B_noise (critical 2c; default 0.5,1,2)")  # fmt: skip
    g.add_argument("--targets", type=_cli.float_list, default=[0.5, 0.25, 0.125], metavar="F1,F2,...",
                   help="target losses as fractions of the initial loss (default 0.5,0.25,0.125)")  # fmt: skip
    g.add_argument("--seeds", type=int, default=16, help="evaluation runs per schedule (default 16)")
    g.add_argument("--tune-seeds", type=int, default=8, help="tuning runs per learning rate (default 8)")
    g.add_argument("--max-steps", type=int, default=3000, help="steps allowed to reach a target (default 3000)")
    g.add_argument("--seed", type=_cli.seed, default=0, help="seed of the problem and every random stream (default 0)")
    g = p.add_argument_group("execution and output")
    g.add_argument("--out", default="runs/schedules", help="output directory (default runs/schedules)")
    g.add_argument("--scheduler", metavar="local:N|tcp://HOST:PORT",
                   help="run the tasks on Dask (also via DASK_SCHEDULER_ADDRESS); default: this process")  # fmt: skip
    g.add_argument("--connect-timeout", **_cli.CONNECT_TIMEOUT)
    g.add_argument("--no-plot", action="store_true", help="skip the figures")
    g.add_argument("--quiet", action="store_true", help="no tables, no progress bar")
    return p


def _names(text: str, allowed: tuple[str, ...], flag: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    bad = [s for s in names if s not in allowed]
    if not names or bad or len(set(names)) != len(names):
        what = f"unknown {bad[0]!r}" if bad else "empty or repeated names"
        raise _cli.UsageError(f"{flag}: {what} in {text!r}; choose from {', '.join(allowed)}")
    return names


def resolve(args) -> Options:
    if args.workload is not None:
        raise _cli.UsageError(f"--workload {args.workload!r}: torch workloads are not available yet; "
                              "use the quadratic (default) or --problem FILE.npz")  # fmt: skip
    checks = {"--dims": (args.dims, 2, 1 << 24), "--seeds": (args.seeds, 2, 100_000),
              "--tune-seeds": (args.tune_seeds, 1, 100_000),
              "--max-steps": (args.max_steps, 1, 10_000_000)}  # fmt: skip
    for flag, (value, lo, hi) in checks.items():
        if value < lo:
            raise _cli.UsageError(f"{flag} must be >= {lo}, got {value}")
        if value > hi:
            raise _cli.UsageError(f"{flag} must be <= {hi}, got {value}")
    if any(not 0 < f < 1 for f in args.targets) or len(set(args.targets)) != len(args.targets):
        raise _cli.UsageError(f"--targets must be distinct fractions in (0, 1), got {args.targets}")
    if any(not (np.isfinite(c) and c > 0) for c in args.multipliers):
        raise _cli.UsageError(f"--multipliers must be finite and > 0, got {args.multipliers}")
    if args.problem is not None and not Path(args.problem).is_file():
        raise _cli.UsageError(f"--problem {args.problem!r}: no such file")
    schedules = _names(args.schedules, SCHEDULE_NAMES, "--schedules")
    if "constant" not in schedules:
        raise _cli.UsageError("--schedules must include constant: the front every schedule is measured against")
    return Options(
        dims=args.dims, problem=args.problem, optimizers=_names(args.optimizers, ("sign", "adam"), "--optimizers"),
        schedules=schedules, multipliers=tuple(args.multipliers), targets=tuple(sorted(args.targets, reverse=True)),
        seeds=args.seeds, tune_seeds=args.tune_seeds, max_steps=args.max_steps, seed=args.seed, out=args.out,
        scheduler=args.scheduler, plot=not args.no_plot, quiet=args.quiet,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return _cli.run(lambda: _main(args))


def _main(args) -> int:
    from surgesim import dynamics, schedules
    from surgesim.problem import QuadraticProblem
    from surgesim.progress import progress_bar
    from surgesim.sweep import run_sweep, write_csv

    opts = resolve(args)
    out = _cli.out_dir(opts.out)
    t_start = time.perf_counter()
    problem = QuadraticProblem.load(opts.problem) if opts.problem else dynamics.default_problem(opts.dims, opts.seed)
    optimizers = schedules.optimizers_by_name(opts.optimizers)
    variants = tuple(schedules.default_variants(problem, o, opts.schedules, multipliers=opts.multipliers)
                     for o in optimizers)  # fmt: skip
    exp = schedules.ScheduleExperiment(problem, optimizers, variants, opts.targets, opts.seeds, opts.tune_seeds,
                                       opts.seed, opts.max_steps)  # fmt: skip
    problem.save(out / "problem.npz")
    _cli.save_options(opts, out / "options.json")
    scheduler = opts.scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS") or None
    sweep = {"problem_sha256": problem.digest(), "scheduler": scheduler, "workers": None if scheduler else 1}

    def run(tasks, store, desc):
        with progress_bar(quiet=opts.quiet, desc=desc) as bar:
            return run_sweep(schedules.run_task, tasks, params={"problem_sha256": sweep["problem_sha256"]},
                             store=out.final(store), scheduler=scheduler, workers=sweep["workers"],
                             shared=problem, progress=bar, connect_timeout=args.connect_timeout)  # fmt: skip

    chosen = schedules.choose(exp, run(exp.tune_tasks(), "tuning.sqlite", "tuning"))
    rows = run(exp.eval_tasks(chosen), "store.sqlite", "evaluation")
    if rows:
        write_csv(rows, out / "schedules.csv", columns=schedules.ROW_COLUMNS)
    else:  # no variant reached any target when tuned: nothing evaluated, the header only
        (out / "schedules.csv").write_text(",".join(schedules.ROW_COLUMNS) + "\n")
    entries = schedules.summarize(exp, rows, chosen)
    summary = {
        "dims": problem.dim, "initial_loss": exp.initial_loss, "seed": opts.seed, "seeds": opts.seeds,
        "tune_seeds": opts.tune_seeds, "target_fractions": list(exp.target_fractions),
        "optimizers": [o.label for o in optimizers], "results": entries,
        "wall_seconds": time.perf_counter() - t_start,
    }  # fmt: skip
    _cli.write_json(summary, out / "summary.json")
    figures = []
    if opts.plot:
        from surgesim.plots.schedules import schedule_traces_figure, schedules_front_figure

        schedules_front_figure(entries, "examples E against steps S to each target").savefig(
            out / "schedules_front.png", dpi=110
        )
        traces = schedules.schedule_traces(exp, chosen)
        schedule_traces_figure(traces, f"B_t and lr_t along each schedule (tuned for target "
                                       f"{exp.target_fractions[-1]:g} L0, seed 0)").savefig(
            out / "schedules_traces.png", dpi=110
        )  # fmt: skip
        figures = ["schedules_front.png", "schedules_traces.png"]
    if not opts.quiet:
        print_table(entries)
        print(f"wrote {out}/schedules.csv, summary.json" + "".join(f", {f}" for f in figures)
              + f" in {time.perf_counter() - t_start:.1f} s")  # fmt: skip
    return 0


def _g(x, fmt: str = ".3g", width: int = 9) -> str:
    return f"{x:>{width}{fmt}}" if x is not None and np.isfinite(x) else f"{'-':>{width}}"


def _pm(x, se) -> str:
    if x is None:
        return f"{'-':>13}"
    return f"{100 * x:+6.0f}% +-{'-' if se is None else f'{100 * se:.0f}':>3}"


def print_table(entries) -> None:
    head = (f"  {'schedule':<10}{'variant':<24}{'k / lr':>9}{'S':>8}{'E':>11}  {'E saved at = S':>13}  "
            f"{'S saved at = E':>13}")  # fmt: skip
    last = None
    for e in entries:
        if (e["label"], e["target_fraction"]) != last:
            last = (e["label"], e["target_fraction"])
            print(f"\n{e['label']}, target {e['target_fraction']:g} of the initial loss")
            print(head)
        dom = " dominated by a constant B" + (" (>5% in both)" if e["front_dominates_5pct"] else "") if (
            e["front_dominates"] and e["schedule"] != "constant") else ""  # fmt: skip
        reached = "" if e["reached"] == e["seeds"] else f" ({e['reached']}/{e['seeds']} reached)"
        print(f"  {e['schedule']:<10}{e['variant']:<24}{_g(e['lr'])}{_g(e['median_steps'], '.0f', 8)}"
              f"{_g(e['median_examples'], '.0f', 11)}  {_pm(e['examples_saving'], e['examples_saving_se'])}  "
              f"{_pm(e['steps_saving'], e['steps_saving_se'])}{dom}{reached}")  # fmt: skip
    print(
        "\n(S, E: medians over seeds; savings against the constant-batch front, interpolated in log-log; "
        "+-: bootstrap s.e.)"
    )


if __name__ == "__main__":
    raise SystemExit(main())
