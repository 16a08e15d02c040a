"""Measure Lemma 1 on a network: the optimal learning rate of one update per batch size at a fixed
state, from real minibatches and exact Hessian-vector products, beside two theory predictions
made at the same state, so that each assumption of the paper's theory is tested on its own.

  probe        V = update of a real minibatch of B distinct examples; lr*(B) = E[G'V] / E[V'HV]
               (G the full-data gradient, V'HV by an exact Hessian-vector product): the truth.
  gaussian     V = sign(G + z / sqrt(B)), z Gaussian with the empirical per-example covariance:
               tests Gaussian minibatch noise, correlations kept.
  independent  eq 9 from the measured G, sigma and H: adds the paper's independent coordinates.

Beside them: McCandlish et al.'s B_simple = tr(Sigma)/|G|^2 and B_crit = tr(H Sigma)/G'HG, and
eq 14's B_noise, each with a standard error.

With --model FILE.py:FUNCTION (or package.module:FUNCTION) the state is your own network:
FUNCTION() returns (model, loss_fn, inputs, targets), an nn.Module at the weights to probe,
loss_fn(outputs, targets) the mean loss of a batch, and the data set as two tensors with the
example on the first axis. The model is evaluated in eval mode (BatchNorm with its running
statistics, no dropout), so a minibatch gradient is the mean of per-example gradients.

--update adam --steps T (T > 1): the multi-step probe, the optimal learning rate of T real Adam
steps from the state with fresh minibatches and the buffers evolving (the checkpoint's buffers,
zeros without one, or --warmup W steps at batch B): a 1-d search in log lr with common random
numbers, bootstrap errors. T = 1 (the default) is Lemma 1's one-step estimator.

With --problem FILE.npz the state is a torch quadratic whose per-example gradients are exactly
N(mu, diag sigma^2) and whose Hessian is H: the probe must then agree with eq 9 (lr_exact).
With --workload, the state is a checkpoint (--checkpoint FILE) or, without one, the reference run
of `sims.workloads` (same defaults: the grid's middle learning rate and batch size, seed 0),
trained and checkpointed at the first evaluation reaching each target loss.

Outputs in --out (columns and keys: docs/outputs.md): probe.csv, summary.json, probe.png,
options.json, checkpoints/ (the reference run's states), store.sqlite (resumable: rerun the same
command to continue).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sims import _cli

COLUMNS = [
    "target_loss", "batch_size", "lr_probe", "lr_probe_se", "dl_probe", "dl_probe_se", "draws_probe",
    "hessian_draws_probe", "converged_probe", "lr_gaussian", "lr_gaussian_se", "dl_gaussian",
    "hessian_draws_gaussian", "lr_independent", "dl_independent", "lr_exact", "z_probe", "seconds_probe",
    "seconds_gaussian",
]  # fmt: skip
SCALE_KEYS = (
    "noise_batch_size_eq14", "noise_batch_size_eq14_se", "b_simple", "b_simple_se", "b_crit", "b_crit_se",
    "validity_bound", "hessian_trace", "hessian_trace_se",
)  # fmt: skip
MULTI_COLUMNS = ("steps", "lr_points_probe", "gradient_examples_probe")  # --steps T > 1 only
DEFAULT_BATCH_SIZES = (1, 4, 16, 64, 256, 1024)
FULL_GRADIENT_EXAMPLES = 16384  # G exact on data sets up to this size, else a sample (error propagated)


@dataclass(frozen=True)
class Options:
    problem: str | None
    workload: str | None
    model: str | None
    data_dir: str
    checkpoint: str | None
    targets: tuple[float, ...] | None
    batch_sizes: tuple[int, ...]
    rel_se: float | None
    draws: int | None
    max_draws: int
    update: str
    steps: int
    warmup: int
    beta1: float
    beta2: float
    eps: float
    seed: int
    hessian_examples: int
    stats_examples: int
    stats_hessian_examples: int
    probes: int
    crit_examples: int
    full_gradient_examples: int
    threads: int
    workers: int
    scheduler: str | None
    out: str
    plot: bool
    quiet: bool


def build_parser() -> _cli.Parser:
    p = _cli.parser("sims.probe", __doc__)
    g = p.add_argument_group("state")
    s = g.add_mutually_exclusive_group(required=True)
    s.add_argument("--problem", metavar="FILE.npz", help="a quadratic problem (arrays mu, sigma, H or h_diag/h_factor)")
    s.add_argument("--workload", choices=("cnn", "resnet18", "gpt"), help="a network of sims.workloads")
    s.add_argument("--model", metavar="FILE.py:FUNCTION", help="your own network: FUNCTION() returns "
                   "(model, loss_fn, inputs, targets); also package.module:FUNCTION")  # fmt: skip
    d = g.add_mutually_exclusive_group()
    d.add_argument("--data-dir", "--data", dest="data_dir", metavar="DIR", help="the workload's real data")
    d.add_argument("--demo", action="store_true", help="the workload's shipped demo data")
    g.add_argument("--checkpoint", metavar="FILE", help="probe this saved state (a state_dict, or a dict with "
                   "'model' and optionally Adam's 'optimizer') instead of training the reference run")  # fmt: skip
    g.add_argument("--targets", type=_cli.float_list, metavar="L1,L2,...",
                   help="target training losses of the reference run (default: sims.workloads')")  # fmt: skip
    g = p.add_argument_group("measurement")
    g.add_argument("--batch-sizes", type=_cli.int_list, metavar="B1,B2,...",
                   help=f"batch sizes (default {','.join(map(str, DEFAULT_BATCH_SIZES))})")  # fmt: skip
    m = g.add_mutually_exclusive_group()
    m.add_argument("--rel-se", type=float, help="adaptive draws until lr*'s relative s.e. <= R (default 0.1)")
    m.add_argument("--draws", type=int, help="fixed draws per batch size and estimator")
    g.add_argument("--max-draws", type=int, default=1 << 18, help="cap on adaptive draws (default 262144)")
    g.add_argument("--update", choices=("sign", "adam"), default="sign",
                   help="the probed update: sign(minibatch gradient), or one Adam step from the state's "
                   "moment buffers (zeros if the state has none); gaussian/independent are sign theory")  # fmt: skip
    g.add_argument("--steps", type=int, default=1, help="T: the optimal lr of T real Adam steps (--update adam; "
                   "default 1, Lemma 1's one-step estimator)")  # fmt: skip
    g.add_argument("--warmup", type=int, default=0, help="with --steps T > 1: rebuild Adam's buffers from zeros by "
                   "W minibatch gradients at batch B at the state (default 0: the checkpoint's buffers)")  # fmt: skip
    g.add_argument("--beta1", type=float, default=0.9, help="Adam beta1 where the state has no optimizer (0.9)")
    g.add_argument("--beta2", type=float, default=0.999, help="Adam beta2 where the state has no optimizer (0.999)")
    g.add_argument("--eps", type=float, default=1e-8, help="Adam eps where the state has no optimizer (1e-8)")
    g.add_argument("--seed", type=_cli.seed, default=0, help="seed of every draw (default 0)")
    g.add_argument("--hessian-examples", type=int, default=32,
                   help="examples per Hessian-vector product (a fresh sample per probe draw; default 32)")  # fmt: skip
    g.add_argument("--stats-examples", type=int, default=256,
                   help="examples for the per-example gradient statistics (default 256)")  # fmt: skip
    g.add_argument("--stats-hessian-examples", type=int, default=32,
                   help="examples per Hessian sample of the statistics (B_crit, eq 14, gaussian, independent): "
                   "disjoint from the statistics' examples, a fresh sample per HVP (default 32)")  # fmt: skip
    g.add_argument("--probes", type=int, default=8, help="Hutchinson probes for tr(H), diag(H) (default 8)")
    g.add_argument("--crit-examples", type=int, default=32, help="HVPs for tr(H Sigma) in B_crit (default 32)")
    g.add_argument("--full-gradient-examples", type=int, default=FULL_GRADIENT_EXAMPLES,
                   help=f"examples for G: all (exact) if the data set has no more, else a uniform sample whose "
                   f"error is propagated (default {FULL_GRADIENT_EXAMPLES}; 0: all)")  # fmt: skip
    g = p.add_argument_group("execution and output")
    g.add_argument("--threads", type=int, default=0, help="torch threads (default 0: torch's choice)")
    g.add_argument("--workers", type=int, default=1, help="local worker processes (default 1: this process)")
    g.add_argument("--scheduler", metavar="local:N|tcp://HOST:PORT", help="run the tasks on Dask instead")
    g.add_argument("--connect-timeout", **_cli.CONNECT_TIMEOUT)
    g.add_argument("--out", help="output directory (default runs/probe)")
    g.add_argument("--no-plot", action="store_true", help="skip the figure")
    g.add_argument("--quiet", action="store_true", help="no table, no progress bar")
    return p


def resolve(args) -> Options:
    if args.workload and not (args.demo or args.data_dir):
        raise _cli.UsageError(f"pass --data-dir DIR (the real {args.workload} data) or --demo")
    if args.problem and (args.demo or args.data_dir or args.checkpoint or args.targets):
        raise _cli.UsageError("--demo, --data-dir, --checkpoint and --targets go with --workload, not --problem")
    if args.model and (args.demo or args.data_dir or args.checkpoint or args.targets):
        raise _cli.UsageError("--targets, --demo, --data-dir and --checkpoint do not apply with --model: "
                              "FUNCTION() gives the weights and the data")  # fmt: skip
    if args.steps < 1 or args.steps > 1 << 20:
        raise _cli.UsageError(f"--steps must be an integer >= 1, got {args.steps}")
    if args.steps > 1 and args.update != "adam":
        raise _cli.UsageError("--steps T > 1 is the multi-step Adam probe: add --update adam")
    if args.warmup < 0 or (args.warmup and args.steps == 1):
        raise _cli.UsageError(f"--warmup must be >= 0 and goes with --steps T > 1, got {args.warmup}")
    sizes = tuple(args.batch_sizes or DEFAULT_BATCH_SIZES)
    if any(b < 1 or b > 1 << 40 for b in sizes) or len(set(sizes)) != len(sizes):
        raise _cli.UsageError(f"batch sizes must be distinct integers in [1, 2^40], got {sizes}")
    rel_se = None if args.draws is not None else (0.1 if args.rel_se is None else args.rel_se)
    if rel_se is not None and not 0 < rel_se < 1:
        raise _cli.UsageError(f"--rel-se must be in (0, 1), got {rel_se}")
    if args.draws is not None and not 2 <= args.draws <= 1 << 30:
        raise _cli.UsageError(f"--draws must be in [2, 2^30], got {args.draws}")
    if not 32 <= args.max_draws <= 1 << 30:
        raise _cli.UsageError(f"--max-draws must be in [32, 2^30], got {args.max_draws}")
    for name in ("hessian_examples", "stats_hessian_examples", "probes", "crit_examples"):
        if getattr(args, name) < (2 if name in ("probes", "crit_examples") else 1):
            raise _cli.UsageError(f"--{name.replace('_', '-')} is too small: {getattr(args, name)}")
    if args.stats_examples < 4:
        raise _cli.UsageError(f"need --stats-examples >= 4, got {args.stats_examples}")
    if args.full_gradient_examples < 0 or args.threads < 0 or args.workers < 1:
        raise _cli.UsageError("--full-gradient-examples and --threads must be >= 0, --workers >= 1")
    if not (0 <= args.beta1 < 1 and 0 <= args.beta2 < 1 and args.eps >= 0):
        raise _cli.UsageError("need 0 <= --beta1, --beta2 < 1 and --eps >= 0")
    if args.targets and not all(math.isfinite(t) and t > 0 for t in args.targets):
        raise _cli.UsageError(f"targets must be finite losses > 0, got {args.targets}")
    return Options(
        problem=args.problem, workload=args.workload, model=args.model,
        data_dir="" if args.demo else (args.data_dir or ""),
        checkpoint=args.checkpoint, targets=tuple(sorted(args.targets, reverse=True)) if args.targets else None,
        batch_sizes=tuple(sorted(sizes)), rel_se=rel_se, draws=args.draws, max_draws=args.max_draws,
        update=args.update, steps=args.steps, warmup=args.warmup, beta1=args.beta1, beta2=args.beta2,
        eps=args.eps, seed=args.seed,
        hessian_examples=args.hessian_examples, stats_examples=args.stats_examples,
        stats_hessian_examples=args.stats_hessian_examples, probes=args.probes,
        crit_examples=args.crit_examples, full_gradient_examples=args.full_gradient_examples,
        threads=args.threads, workers=args.workers, scheduler=args.scheduler,
        out="runs/probe" if args.out is None else args.out, plot=not args.no_plot, quiet=args.quiet,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return _cli.run(lambda: _main(args))


def _say(opts: Options, text: str) -> None:
    if not opts.quiet:
        print(text, flush=True)


def _task_options(opts: Options) -> dict:
    return {
        "update": opts.update, "rel_se": opts.rel_se, "draws": opts.draws, "max_draws": opts.max_draws,
        "seed": opts.seed, "hessian_examples": opts.hessian_examples, "stats_examples": opts.stats_examples,
        "stats_hessian_examples": opts.stats_hessian_examples, "probes": opts.probes, "steps": opts.steps,
        "warmup": opts.warmup, "crit_examples": opts.crit_examples,
        "adam": {"beta1": opts.beta1, "beta2": opts.beta2, "eps": opts.eps},
    }  # fmt: skip


def _main(args) -> int:
    try:
        import torch

        from surgesim.workloads import probing, protocol
    except ImportError as exc:
        from surgesim._install import TORCH

        raise _cli.UsageError(f"{exc} (sims.probe needs PyTorch: {TORCH})") from None
    from surgesim.progress import progress_bar
    from surgesim.sweep import check_scheduler, run_sweep, write_csv

    opts = resolve(args)
    if opts.scheduler:  # (--workers runs local processes, whatever DASK_SCHEDULER_ADDRESS says)
        check_scheduler(opts.scheduler, args.connect_timeout)  # a bad one before any work
    if opts.threads:
        torch.set_num_threads(opts.threads)
    t_start = time.perf_counter()
    options = _task_options(opts)
    problem = None
    if opts.problem:
        from surgesim.problem import QuadraticProblem

        problem = QuadraticProblem.load(opts.problem)
        _cli.check_problem(problem, opts.batch_sizes)
        # a block of 16 minibatches of B examples of d float64 values: a lower bound of the need
        _cli.need_memory(16 * max(opts.batch_sizes) * problem.dim * 8,
                         f"--batch-sizes {max(opts.batch_sizes)} at d = {problem.dim}")  # fmt: skip
        out = _cli.out_dir(opts.out, command="sims.probe")
        states = [{}]
        fn, shared, identity = probing.problem_task, problem, {"problem_sha256": problem.digest()}
    elif opts.model:
        options.update(model=opts.model, model_sha256=probing.file_digest(opts.model),
                       full_gradient_examples=opts.full_gradient_examples)  # fmt: skip
        n = probing.check_model(options).n  # a bad file, tuple, loss or weights fail here, before any work
        too_big = [x for x in opts.batch_sizes if x > n]
        if too_big:
            raise _cli.UsageError(f"batch size {max(too_big)} is larger than the data set ({n} examples)")
        if opts.stats_examples + opts.stats_hessian_examples > n or opts.hessian_examples > n:
            raise _cli.UsageError(f"--stats-examples + --stats-hessian-examples and --hessian-examples must fit in "
                                  f"the data set ({n} examples)")  # fmt: skip
        out = _cli.out_dir(opts.out, command="sims.probe")
        states = [{}]
        fn, shared, identity = probing.model_task, None, {"model": opts.model}
    else:
        spec = reference_spec(opts)
        data = protocol.load_data(spec)  # a missing or malformed dataset fails here, before any work
        stats_n = opts.stats_examples + opts.stats_hessian_examples
        too_big = [x for x in (*opts.batch_sizes, opts.hessian_examples, stats_n) if x > data.n]
        if too_big:
            raise _cli.UsageError(f"{max(too_big)} is larger than the data set ({data.n} examples)")
        out = _cli.out_dir(opts.out, command="sims.probe")
        if opts.checkpoint:
            probing.load_checkpoint(opts.checkpoint, spec)  # a mismatch fails before any work
            states = [{"checkpoint": str(Path(opts.checkpoint).resolve()), "target_loss": None}]
        else:
            _say(opts, f"reference run: {opts.workload}, Adam lr {spec.lr:.3g}, B {spec.batch_size}, seed 0, "
                       f"targets {', '.join(f'{t:g}' for t in spec.targets)}")  # fmt: skip
            reached = probing.reference_checkpoints(spec, out.final("checkpoints"), lambda s: _say(opts, s))
            if not reached:
                raise _cli.UsageError(f"the reference run reached no target loss in {spec.max_steps} steps")
            states = [{"checkpoint": str(Path(r["checkpoint"]).resolve()), "target_loss": r["target_loss"]}
                      for r in reached]  # fmt: skip
        options.update(spec=spec.to_params(), full_gradient_examples=opts.full_gradient_examples)
        fn, shared, identity = probing.probe_task, None, {"workload": opts.workload}
    _cli.save_options(opts, out / "options.json")
    tasks = probing.task_list(states, opts.batch_sizes, options)
    with progress_bar(quiet=opts.quiet, desc="probe tasks") as progress:
        rows = run_sweep(
            fn, tasks, params={"fn": f"{fn.__module__}.{fn.__name__}", **identity},
            store=out.final("store.sqlite"), scheduler=opts.scheduler,
            workers=None if opts.scheduler else opts.workers, shared=shared, progress=progress,
            connect_timeout=args.connect_timeout,
        )  # fmt: skip
    curves, summaries = collect(tasks, rows, problem)
    skip = ("target_loss",) if problem is not None else ("lr_exact", "z_probe")
    if opts.model:
        skip = ("target_loss", "lr_exact", "z_probe")
    columns = [c for c in COLUMNS if c not in skip] + (list(MULTI_COLUMNS) if opts.steps > 1 else [])
    write_csv(curves, out / "probe.csv", columns)
    wall = time.perf_counter() - t_start
    state_name = opts.problem or opts.workload or opts.model
    summary = {"state": state_name, "update": opts.update, "steps": opts.steps, "wall_seconds": wall}
    if problem is not None or opts.model:
        summary.update({k: v for k, v in summaries[0].items() if k != "target_loss"})
        disagreement = validity_disagreement(summary)
        if disagreement:
            _cli.warn(disagreement)
    else:
        summary.update(data=opts.data_dir or "demo", results=summaries)
    _cli.write_json(summary, out / "summary.json")
    if opts.plot:
        from surgesim.plots.probe import probe_figure

        what = "one-step" if opts.steps == 1 else f"{opts.steps}-step"
        fig = probe_figure(curves, summaries, title=f"{state_name}: {what} optimal lr")
        fig.savefig(out / "probe.png", dpi=200)
        fig.savefig(out / "probe.pdf")
    if not opts.quiet:
        print_table(curves, summaries, label=opts.problem)
        print(f"{wall:.0f} s; wrote {out}/probe.csv, summary.json" + (", probe.png" if opts.plot else ""))
    return 0


def reference_spec(opts: Options):
    """The reference run of sims.workloads with the same defaults (its middle lr and batch size)."""
    from sims import workloads

    argv = ["--workload", opts.workload, *(["--demo"] if not opts.data_dir else ["--data-dir", opts.data_dir])]
    if opts.targets:
        argv += ["--targets", ",".join(map(repr, opts.targets))]
    return workloads.reference_spec(workloads.resolve(workloads.build_parser().parse_args(argv)))


def collect(tasks: list[dict], rows: list[dict], problem, peaks: bool = True) -> tuple[list[dict], list[dict]]:
    """probe.csv rows and one summary per state, joined to their tasks by position in the task
    list (``run_sweep`` returns rows in task order); ``peaks`` False: the scales alone."""
    from surgesim import theory
    from surgesim.workloads.probing import curve_summary

    curves, summaries = [], []
    by_state: dict = {}
    for task, row in zip(tasks, rows, strict=True):
        by_state.setdefault(task.get("checkpoint"), []).append((task, row))
    for items in by_state.values():
        scales = next(r for t, r in items if t["batch_size"] == 0)
        pts = [dict(r) for t, r in items if t["batch_size"] != 0]
        for r in pts:
            if problem is not None:
                exact = float(theory.optimal_lr(r["batch_size"], problem.mu, problem.sigma, problem.hessian))
                r["lr_exact"] = exact
                r["z_probe"] = (r["lr_probe"] - exact) / r["lr_probe_se"] if r["lr_probe_se"] > 0 else None
        curves += pts
        B = [r["batch_size"] for r in pts]
        s = {"target_loss": scales.get("target_loss")} if problem is None else {}
        s.update({k: scales.get(k) for k in SCALE_KEYS})
        summaries.append(s)
        if not peaks:
            continue
        s.update(curve_summary(pts))
        if problem is not None:
            s["validity_bound_exact"] = float(theory.validity_bound(problem.mu, problem.sigma))
            s["noise_batch_size_exact"] = float(theory.noise_batch_size(problem.mu, problem.sigma, problem.hessian))
            fine = np.geomspace(min(B), max(B), 400)
            s["peak_batch_size_exact"] = float(fine[np.argmax(theory.optimal_lr(fine, problem.mu, problem.sigma,
                                                                                problem.hessian))])  # fmt: skip
            s["max_abs_z"] = max(abs(r["z_probe"]) for r in pts if r["z_probe"] is not None)
    return curves, summaries


def _fmt(x) -> str:
    """A number for the table: 3 significant digits, batch-size-like values 1000 .. 1e7 in full."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:.0f}" if 1000 <= abs(x) < 1e7 else f"{x:.3g}"


def validity_disagreement(summary: dict) -> str | None:
    """A warning when the sample's validity bound (pi / (2 max_i r_i^2) from estimated r_i =
    mu_i / sigma_i) is off the problem's own (``theory.validity_bound``) by more than 2x: the
    sample maximum over many coordinates with mu_i near 0 is dominated by estimation noise
    (biased low), so the sample bound is no statement about the problem."""
    sample, exact = summary.get("validity_bound"), summary.get("validity_bound_exact")
    if sample is None or exact is None or not (math.isfinite(sample) and math.isfinite(exact)) or exact <= 0:
        return None
    if 0.5 <= sample / exact <= 2:
        return None
    return (f"validity_bound {sample:.4g} (pi / (2 max r_i^2) from the sampled gradients) differs from the "
            f"problem's own validity bound {exact:.4g} (validity_bound_exact, theory.validity_bound) by "
            f"{max(sample / exact, exact / sample):.3g}x: the sample maximum is dominated by estimation noise "
            "in coordinates with small mu_i; trust validity_bound_exact")


def print_table(curves: list[dict], summaries: list[dict], label: str | None = None) -> None:
    for s in summaries:
        t = s.get("target_loss")
        rows = [r for r in curves if r.get("target_loss") == t]
        print(f"\n{label or 'the checkpoint' if t is None else f'target loss {t:g}'}:")
        exact = "lr_exact" in rows[0]
        print(f"{'B':>7} {'lr probe':>11} {'+- s.e.':>9} {'gaussian':>11} {'+- s.e.':>9} {'independent':>11}"
              + (f" {'eq 9':>11} {'z':>6}" if exact else "") + f" {'draws':>8} {'seconds':>8}")  # fmt: skip
        for r in rows:
            print(f"{r['batch_size']:>7} {r['lr_probe']:>11.4g} {r['lr_probe_se']:>9.2g} {r['lr_gaussian']:>11.4g} "
                  f"{r['lr_gaussian_se']:>9.2g} {r['lr_independent']:>11.4g}"
                  + (f" {r['lr_exact']:>11.4g} {_fmt(r['z_probe']):>6}" if exact else "")
                  + f" {r['draws_probe']:>8} {r['seconds_probe'] + r['seconds_gaussian']:>8.1f}")  # fmt: skip
        peaks = ", ".join(
            f"{n} {_fmt(s[f'peak_batch_size_{n}'])}" + ("" if s[f"peak_interior_{n}"] else " (grid edge)")
            for n in ("probe", "gaussian", "independent")
        )
        print(f"peak batch size: {peaks}")
        print(f"B_simple {_fmt(s['b_simple'])} +- {_fmt(s['b_simple_se'])}, B_crit {_fmt(s['b_crit'])} +- "
              f"{_fmt(s['b_crit_se'])}, eq 14 B_noise {_fmt(s['noise_batch_size_eq14'])} +- "
              f"{_fmt(s['noise_batch_size_eq14_se'])}")  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
