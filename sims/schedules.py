"""Batch-size and learning-rate schedules that follow the surge, against the constant-batch front:
steps S and examples E to each target loss for sign-SGD and Adam on the noisy quadratic of
``sims.dynamics`` (``surgesim.schedules``), or on a real network with --workload cnn
(``surgesim.workloads.schedules``).

Quadratic schedules: constant (B = 8 .. 8192 in octaves, lr tuned per target: the front), oracle
(B_t = c B_noise(theta_t) from eq 14 at the state, lr_t = k eq 9 at B_t), online (the same from
running estimates made from the minibatch gradients, lr_t = k eq 13), critical (B_t = c B_crit
estimated online, McCandlish et al.), geometric (B and lr multiplied every K steps). Each learning
rate or multiplier k is tuned per target on --tune-seeds runs (fewest mean steps), then evaluated
on --seeds fresh runs that share their random numbers across schedules.

On a network (--workload cnn --demo, or --data-dir DIR with Fashion-MNIST's
train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz]): sign is Adam(beta1 = 0, beta2 = 0),
adam Adam(0.9, 0.999); constant (B = 4 .. 128 in octaves), online (B_t = c B_simple, McCandlish's
simple noise scale tr(Sigma)/|G|^2 estimated from the two halves of each minibatch; eq 14 from the
network's own statistics is 0.07-4.1 where the fitted B_noise is 25-40: README, section "Predicting
the surge on a real network: Lemma 1 measured"), critical (B_t = c B_crit, tr(H Sigma)/G'HG with
Hessian-vector products every 4 steps), geometric (B_0 = 8 doubled every 20 steps); each over the
lrs 4e-4 .. 3.2e-3 on seeds 0 .. --seeds - 1, the lr chosen per target by fewest seed-mean steps;
targets are training losses (default 1.0, 0.6, 0.4, as sims.workloads). There is no oracle: the
state's B_noise is not known. Demo defaults: adam only, 4 seeds, c = 1, 2; 176 runs (measured run
time: README, section "Schedules that follow the surge"); --optimizers sign,adam doubles it. lr
6.4e-3 is left out: Adam diverges or stalls there on some seeds (B = 4 and B = 128 did not reach
loss 1.0).

Outputs in --out: schedules.csv (one row per schedule variant, optimizer, target and seed:
schedule, variant, optimizer, target_loss, seed, steps, examples, batch_size, lr; steps empty
where the target was not reached within --max-steps), summary.json (per optimizer, target and
variant: median S and E with bootstrap standard errors, the savings against the front in E at
equal S and in S at equal E with their standard errors, whether the front dominates it),
schedules_front.png (E against S), schedules_traces.png (B_t and lr_t along each schedule),
options.json, and the resumable stores (rerunning the same command into the same --out skips
finished tasks): quadratic problem.npz, tuning.sqlite and store.sqlite; network store.sqlite.
Measured run times: README, section "Schedules that follow the surge".

Every output column and key (meaning, unit, equation): docs/outputs.md.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sims import _cli

SCHEDULE_NAMES = ("constant", "oracle", "online", "critical", "geometric")
NETWORK_SCHEDULES = ("constant", "online", "critical", "geometric")
PROBE = "probe"  # the Adam schedule (the multi-step probe at the state): only where --schedules names it
WORKLOADS = ("cnn",)

# Defaults of the quadratic (fractions of the initial loss) and of the CNN, sized for 2 idle cores
# (measured: 6.1 s of a worker per run on 2 workers; 6 B x 4 lrs x 3 seeds for the front and 4 x 3
# runs per schedule variant took 6 min 40 s; with 4 seeds, 176 runs, 8 min 33 s). The lrs are the
# middle four of sims.workloads' grid, where the grid's optimal lrs lie at every B and target; B_start 8 and
# B_0 = 8 doubled every 20 steps span the front's 4 .. 128 within the runs' 15-150 steps.
QUADRATIC = dict(optimizers="sign,adam", multipliers=(0.5, 1.0, 2.0), targets=(0.5, 0.25, 0.125), seeds=16,
                 tune_seeds=8, max_steps=3000, dims=256, seed=0)  # fmt: skip
NETWORK = {
    "cnn": dict(optimizers="adam", multipliers=(1.0, 2.0), targets=(1.0, 0.6, 0.4), seeds=4, max_steps=800,
                lrs=(4e-4, 8e-4, 1.6e-3, 3.2e-3), batch_sizes=(4, 8, 16, 32, 64, 128), eval_examples=128,
                geometric=((8, 20, 1.0),), batch_start=8),
}  # fmt: skip


@dataclass(frozen=True)
class Options:
    dims: int | None
    problem: str | None
    workload: str | None
    data_dir: str | None
    optimizers: tuple[str, ...]
    schedules: tuple[str, ...]
    multipliers: tuple[float, ...]
    targets: tuple[float, ...]
    lrs: tuple[float, ...] | None
    batch_sizes: tuple[int, ...] | None
    seeds: int
    tune_seeds: int | None
    max_steps: int
    seed: int | None
    workers: int | None
    out: str
    scheduler: str | None
    plot: bool
    quiet: bool


def build_parser() -> _cli.Parser:
    p = _cli.parser("sims.schedules", __doc__)
    g = p.add_argument_group("problem (quadratic) or workload (network)")
    g.add_argument("--dims", type=int, help="quadratic: dimension d of the default problem (default 256)")
    g.add_argument("--problem", metavar="FILE.npz",
                   help="quadratic: load a problem (mu, sigma, H or h_diag[, h_factor]) instead")  # fmt: skip
    g.add_argument(
        "--workload", metavar="NAME", help=f"a torch workload instead of the quadratic: {', '.join(WORKLOADS)}"
    )
    d = g.add_mutually_exclusive_group()
    d.add_argument("--demo", action="store_true", help="with --workload: its shipped demo data (5,000 MNIST digits)")
    d.add_argument("--data-dir", metavar="DIR", help="with --workload: the real dataset (Fashion-MNIST for cnn)")
    g = p.add_argument_group("schedules")
    g.add_argument("--optimizers",
                   help="comma-separated, from sign, adam (default sign,adam; with --workload: adam, as sign doubles "
                   "the time)")  # fmt: skip
    g.add_argument(
        "--schedules",
        help=f"comma-separated, from {', '.join(SCHEDULE_NAMES + (PROBE,))} (default all but probe, "
        "the Adam schedule that follows the multi-step probe at the state, which costs a probe per loss decrease; "
        "oracle is quadratic-only)",
    )
    g.add_argument("--multipliers", type=_cli.float_list, metavar="C1,C2,...",
                   help="c of the adaptive rules: quadratic B_t = c B_noise, critical 2c (default 0.5,1,2); "
                   "network B_t = c B_simple or c B_crit (default 1,2)")  # fmt: skip
    g.add_argument("--targets", type=_cli.float_list, metavar="T1,T2,...",
                   help="quadratic: fractions of the initial loss (default 0.5,0.25,0.125); network: training "
                   "losses (default 1,0.6,0.4)")  # fmt: skip
    g.add_argument(
        "--lrs",
        type=_cli.float_list,
        metavar="LR1,LR2,...",
        help="network: the learning rates every variant runs (default 4e-4,8e-4,1.6e-3,3.2e-3)",
    )
    g.add_argument(
        "--batch-sizes",
        type=_cli.int_list,
        metavar="B1,B2,...",
        help="network: the constant batch sizes, whose largest caps B_t (default 4,8,16,32,64,128)",
    )
    g.add_argument("--seeds", type=int, help="evaluation runs per schedule (default 16; network: seeds 0..N-1 per lr, "
                   "default 4)")  # fmt: skip
    g.add_argument("--tune-seeds", type=int, help="quadratic: tuning runs per learning rate (default 8)")
    g.add_argument("--max-steps", type=int, help="steps allowed to reach a target (default 3000; network 800)")
    g.add_argument("--seed", type=_cli.seed,
                   help="quadratic: seed of the problem and every random stream (default 0)")  # fmt: skip
    g = p.add_argument_group("execution and output")
    g.add_argument("--out", default="runs/schedules", help="output directory (default runs/schedules)")
    g.add_argument(
        "--workers",
        type=_cli.integer(1, 4096),
        help="network: local worker processes, one torch thread each (default: the number of cores)",
    )
    g.add_argument("--scheduler", metavar="local:N|tcp://HOST:PORT",
                   help="run the tasks on Dask (also via DASK_SCHEDULER_ADDRESS); default: this process "
                   "(network: local processes)")  # fmt: skip
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


def _check_range(flag: str, value: int, lo: int, hi: int) -> None:
    if value < lo:
        raise _cli.UsageError(f"{flag} must be >= {lo}, got {value}")
    if value > hi:
        raise _cli.UsageError(f"{flag} must be <= {hi}, got {value}")


def resolve(args) -> Options:
    network = args.workload is not None
    wrong = ([("--dims", args.dims), ("--problem", args.problem), ("--tune-seeds", args.tune_seeds),
              ("--seed", args.seed)] if network else
             [("--demo", args.demo or None), ("--data-dir", args.data_dir), ("--lrs", args.lrs),
              ("--batch-sizes", args.batch_sizes), ("--workers", args.workers)])  # fmt: skip
    for flag, value in wrong:
        if value is not None:
            raise _cli.UsageError(f"{flag} is for the quadratic, not --workload" if network else
                                  f"{flag} needs --workload (a torch workload)")  # fmt: skip
    if network:
        if args.workload not in WORKLOADS:
            raise _cli.UsageError(f"--workload {args.workload!r}: schedules are sized for {', '.join(WORKLOADS)} "
                                  "only (sims.workloads runs the grid on resnet18 and gpt)")  # fmt: skip
        if not args.demo and not args.data_dir:
            raise _cli.UsageError(f"pass --data-dir DIR (the real {args.workload} data) or --demo")
        dflt = NETWORK[args.workload]
    else:
        dflt = QUADRATIC
    pick = lambda value, key: dflt[key] if value is None else value  # noqa: E731
    seeds, max_steps = pick(args.seeds, "seeds"), pick(args.max_steps, "max_steps")
    _check_range("--seeds", seeds, 1 if network else 2, 100_000)
    _check_range("--max-steps", max_steps, 1, 10_000_000)
    targets, multipliers = tuple(pick(args.targets, "targets")), tuple(pick(args.multipliers, "multipliers"))
    if len(set(targets)) != len(targets):
        raise _cli.UsageError(f"--targets must be distinct, got {list(targets)}")
    if network and any(not t > 0 for t in targets):
        raise _cli.UsageError(f"--targets must be training losses > 0, got {list(targets)}")
    if not network and any(not 0 < f < 1 for f in targets):
        raise _cli.UsageError(f"--targets must be distinct fractions in (0, 1), got {list(targets)}")
    if any(not (np.isfinite(c) and c > 0) for c in multipliers):
        raise _cli.UsageError(f"--multipliers must be finite and > 0, got {list(multipliers)}")
    defaults = NETWORK_SCHEDULES if network else SCHEDULE_NAMES
    allowed = defaults + (PROBE,)
    if network and args.schedules is not None and "oracle" in args.schedules.split(","):
        raise _cli.UsageError("--schedules oracle needs the exact state: quadratic only (drop it or --workload)")
    if args.schedules is not None and not args.schedules.strip(" ,"):
        raise _cli.UsageError(f"--schedules is empty: name one or more of {', '.join(allowed)}, or leave it out "
                              "for all")  # fmt: skip
    schedules = _names(args.schedules or ",".join(defaults), allowed, "--schedules")
    if "constant" not in schedules:
        raise _cli.UsageError("--schedules must include constant: the front every schedule is measured against")
    lrs = batch_sizes = tune_seeds = dims = seed = None
    if network:
        lrs, batch_sizes = tuple(pick(args.lrs, "lrs")), tuple(pick(args.batch_sizes, "batch_sizes"))
        if any(not (math.isfinite(x) and x > 0) for x in lrs) or len(set(lrs)) != len(lrs):
            raise _cli.UsageError(f"--lrs must be distinct, finite and > 0, got {list(lrs)}")
        if any(b < 1 for b in batch_sizes) or len(set(batch_sizes)) != len(batch_sizes):
            raise _cli.UsageError(f"--batch-sizes must be distinct integers >= 1, got {list(batch_sizes)}")
        if max(batch_sizes) < 2:
            raise _cli.UsageError("--batch-sizes: the largest caps B_t and must be >= 2 (two half batches)")
    else:
        tune_seeds, dims, seed = pick(args.tune_seeds, "tune_seeds"), pick(args.dims, "dims"), pick(args.seed, "seed")
        _check_range("--dims", dims, 2, 1 << 24)
        _check_range("--tune-seeds", tune_seeds, 1, 100_000)
        if args.problem is not None and not Path(args.problem).is_file():
            raise _cli.UsageError(f"--problem {args.problem!r}: no such file")
    return Options(
        dims=dims, problem=args.problem, workload=args.workload,
        data_dir=("" if args.demo else args.data_dir) if network else None,
        optimizers=_names(pick(args.optimizers, "optimizers"), ("sign", "adam"), "--optimizers"),
        schedules=schedules, multipliers=multipliers, targets=tuple(sorted(targets, reverse=True)), lrs=lrs,
        batch_sizes=batch_sizes, seeds=seeds, tune_seeds=tune_seeds, max_steps=max_steps, seed=seed,
        workers=(args.workers or os.cpu_count() or 1) if network else None, out=args.out,
        scheduler=args.scheduler, plot=not args.no_plot, quiet=args.quiet,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return _cli.run(lambda: _main(args))


def _main(args) -> int:
    from surgesim.sweep import check_scheduler

    opts = resolve(args)
    check_scheduler(opts.scheduler, args.connect_timeout)  # a bad one (or DASK_SCHEDULER_ADDRESS) before any work
    return _network(opts, args) if opts.workload else _quadratic(opts, args)


def _quadratic(opts: Options, args) -> int:
    from surgesim import dynamics, schedules
    from surgesim.problem import QuadraticProblem
    from surgesim.progress import progress_bar
    from surgesim.sweep import run_sweep

    out = _cli.out_dir(opts.out, command="sims.schedules")
    t_start = time.perf_counter()
    problem = QuadraticProblem.load(opts.problem) if opts.problem else dynamics.default_problem(opts.dims, opts.seed)
    optimizers = schedules.optimizers_by_name(opts.optimizers)
    variants = tuple(schedules.default_variants(problem, o, opts.schedules, multipliers=opts.multipliers)
                     for o in optimizers)  # fmt: skip
    exp = schedules.ScheduleExperiment(problem, optimizers, variants, opts.targets, opts.seeds, opts.tune_seeds,
                                       opts.seed, opts.max_steps)  # fmt: skip
    problem.save(out / "problem.npz")
    _cli.save_options(opts, out / "options.json")
    scheduler = _cli.scheduler_address(opts.scheduler)
    sweep = {"problem_sha256": problem.digest(), "scheduler": scheduler, "workers": None if scheduler else 1}

    def run(tasks, store, desc):
        with progress_bar(quiet=opts.quiet, desc=desc) as bar:
            return run_sweep(schedules.run_task, tasks, params={"problem_sha256": sweep["problem_sha256"]},
                             store=out.final(store), scheduler=scheduler, workers=sweep["workers"],
                             shared=problem, progress=bar, connect_timeout=args.connect_timeout)  # fmt: skip

    chosen = schedules.choose(exp, run(exp.tune_tasks(), "tuning.sqlite", "tuning"))
    rows = run(exp.eval_tasks(chosen), "store.sqlite", "evaluation")
    _write_rows(rows, out)
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
        traces = schedules.schedule_traces(exp, chosen)
        figures = _figures(entries, traces, out, f"tuned for target {exp.target_fractions[-1]:g} L0")
    if not opts.quiet:
        print_table(entries)
        print(f"wrote {out}/schedules.csv, summary.json" + "".join(f", {f}" for f in figures)
              + f" in {time.perf_counter() - t_start:.1f} s")  # fmt: skip
    return 0


def _write_rows(rows, out) -> None:
    from surgesim import schedules
    from surgesim.sweep import write_csv

    if rows:
        write_csv(rows, out / "schedules.csv", columns=schedules.ROW_COLUMNS)
    else:  # no variant reached any target when tuned: nothing evaluated, the header only
        (out / "schedules.csv").write_text(",".join(schedules.ROW_COLUMNS) + "\n")


def _figures(entries, traces, out, tuned: str) -> list[str]:
    from surgesim.plots.schedules import schedule_traces_figure, schedules_front_figure

    schedules_front_figure(entries, "examples E against steps S to each target").savefig(
        out / "schedules_front.png", dpi=110
    )
    schedule_traces_figure(traces, f"B_t and lr_t along each schedule ({tuned}, seed 0)").savefig(
        out / "schedules_traces.png", dpi=110
    )
    return ["schedules_front.png", "schedules_traces.png"]


def _network(opts: Options, args) -> int:
    try:
        from surgesim.workloads import protocol
        from surgesim.workloads import schedules as ws
    except ImportError as exc:
        raise _cli.UsageError(str(exc)) from None
    from surgesim import schedules
    from surgesim.progress import progress_bar
    from surgesim.sweep import run_sweep

    dflt = NETWORK[opts.workload]
    base = protocol.RunSpec(workload=opts.workload, lr=1e-3, batch_size=8, seed=0, targets=opts.targets,
                            data_dir=opts.data_dir, max_steps=opts.max_steps, further_steps=0,
                            eval_examples=dflt["eval_examples"], threads=1)  # fmt: skip
    protocol.load_data(base)  # a missing or malformed dataset fails here, before any training
    variants = ws.default_variants(opts.schedules, opts.lrs, opts.batch_sizes, opts.multipliers,
                                   dflt["geometric"], batch_start=dflt["batch_start"])  # fmt: skip
    optimizers = schedules.optimizers_by_name(opts.optimizers)
    exp = ws.ScheduleExperiment(base, optimizers, tuple(variants for _ in optimizers), opts.seeds)
    out = _cli.out_dir(opts.out, command="sims.schedules")
    t_start = time.perf_counter()
    _cli.save_options(opts, out / "options.json")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    tasks = exp.tasks()
    if not opts.quiet:
        print(f"{opts.workload} on {opts.data_dir or 'demo data'}: {len(tasks)} runs ({', '.join(opts.optimizers)}; "
              f"{sum(len(v.lrs) for v in variants) * opts.seeds} per optimizer), load average {load:.1f}",
              flush=True)  # fmt: skip
    scheduler = _cli.scheduler_address(opts.scheduler)
    with progress_bar(quiet=opts.quiet, desc="runs") as bar:
        rows = run_sweep(ws.run_task, tasks, params={"fn": "surgesim.workloads.schedules.run_task"},
                         store=out.final("store.sqlite"), scheduler=scheduler,
                         workers=None if scheduler else opts.workers, progress=bar,
                         connect_timeout=args.connect_timeout)  # fmt: skip
    _write_rows(ws.csv_rows(rows), out)
    chosen = schedules.choose(exp, rows)
    entries = schedules.summarize(exp, rows, chosen)
    summary = {
        "workload": opts.workload, "data": opts.data_dir or "demo", "seeds": opts.seeds,
        "targets": list(exp.targets), "optimizers": [o.label for o in optimizers], "runs": len(tasks),
        "results": entries, "wall_seconds": time.perf_counter() - t_start, "load_average_at_start": load,
    }  # fmt: skip
    _cli.write_json(summary, out / "summary.json")
    figures = []
    if opts.plot:
        figures = _figures(entries, ws.traces(exp, rows, chosen), out, f"lr chosen for loss {exp.targets[-1]:g}")
    if not opts.quiet:
        print_table(entries)
        print(f"{len(tasks)} runs; wrote {out}/schedules.csv, summary.json" + "".join(f", {f}" for f in figures)
              + f" in {(time.perf_counter() - t_start) / 60:.1f} min")  # fmt: skip
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
        if (e["label"], e["target_loss"]) != last:
            last = (e["label"], e["target_loss"])
            target = (f"target {e['target_fraction']:g} of the initial loss" if "target_fraction" in e
                      else f"target loss {e['target_loss']:g}")  # fmt: skip
            print(f"\n{e['label']}, {target}")
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
