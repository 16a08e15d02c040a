"""The surge on real networks, measured with statistics, and every predictor scored against it:
the paper's protocol (Section 3.2-3.3) at a resolution that can decide.

  python -m sims.validate --workload cnn --demo          the 5-layer CNN on 5,000 MNIST digits
  python -m sims.validate --workload gpt --data-dir F    the byte-level transformer on ELI5
  python -m sims.validate                               the default quadratic (sims.dynamics')
  python -m sims.validate --problem FILE.npz            a quadratic problem file
  ... --quick                                           every output in seconds to a minute

Per batch size B (8 or more, spanning 100x or more by default) Adam runs a coarse grid of
learning rates x seeds, then a refinement stage adds learning rates around each target's best
(one run serves every target). Per target loss and B: the optimal learning rate (largest further
loss decrease after the target, a parabola in log lr) with its s.e. and 68% interval from a
bootstrap over seeds; S and E (eq 22's fit of B_noise and S_min, with bootstrap s.e.); the peak
batch size with a 68% interval; and the surge test, the one-sided p-value of "no fall": the
largest lr_opt against the mean of the largest batch sizes, the peak chosen inside each bootstrap
replicate (surgesim.validate's docstring states the test). Then the predictors at the reference
run's states at each target (the middle batch size and the grid's middle learning rate, seed 0):
B_simple, B_crit, eq 14, the probe's peak with sign and with Adam updates, and the best Adam
predictor, each with its s.e. and its log ratio to the fitted B_noise.

Data: --demo (shipped with installed packages) or --data-dir as in sims.workloads:
  cnn  DIR with train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz] (Fashion-MNIST)
  gpt  a JSON-lines file or a folder of train*.jsonl[.gz] (ELI5-Category)

Outputs in --out (columns and keys: docs/outputs.md): validate.csv, predictors.csv, curves.csv,
runs.csv, summary.json, fig11_validate.png, options.json; coarse.sqlite and refine.sqlite (the
resumable stores of the runs: rerun the same command to continue), probe.sqlite and checkpoints/
for the predictors on networks.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import numpy as np

from sims import _cli

# Full runs, sized for a 2-core CPU (about 45 minutes idle each; see the README) and the quick
# ones (seconds to a minute). Networks: 8 batch sizes spanning 128x around the demo's balance
# point (sims.workloads measured B_noise ~ 30-130 on the CNN demo), 6 coarse learning rates
# (factor 2) refined once per side, 4 seeds (the minimum), eval on a fixed 128-example sample.
DEFAULTS = {
    "cnn": dict(batch_sizes=(2, 4, 8, 16, 32, 64, 128, 256), lrs=(2e-4, 4e-4, 8e-4, 1.6e-3, 3.2e-3, 6.4e-3),
                targets=(1.0, 0.6, 0.4), real_targets=(1.0, 0.6, 0.4), seeds=4, further_steps=20, max_steps=800,
                eval_examples=128, probe_batch_sizes=(1, 4, 16, 64, 256), probe_rel_se=0.2),
    "gpt": dict(batch_sizes=(1, 2, 4, 8, 16, 32, 64, 128), lrs=(3e-4, 1e-3, 3e-3, 1e-2),
                targets=(3.0, 2.7, 2.5), real_targets=(3.0, 2.7, 2.5), seeds=4, further_steps=50, max_steps=1000,
                eval_examples=64, probe_batch_sizes=(1, 4, 16, 64), probe_rel_se=0.2),
}  # fmt: skip
QUICK = {
    "cnn": dict(batch_sizes=(4, 16, 64), lrs=(8e-4, 1.6e-3, 3.2e-3), targets=(1.4,), seeds=2, further_steps=5,
                max_steps=120, eval_examples=64, probe_batch_sizes=(64, 128, 256), probe_draws=8),
    "gpt": dict(batch_sizes=(2, 8, 32), lrs=(1e-3, 3e-3, 1e-2), targets=(4.5,), seeds=2, further_steps=5,
                max_steps=120, eval_examples=16, probe_batch_sizes=(8, 16, 32), probe_draws=8),
    "quadratic": dict(dims=32, batch_sizes=(8, 16, 32, 64, 128, 256, 512, 1024), lr_points=6, seeds=4,
                      further_steps=20, max_steps=1500),
}  # fmt: skip
# The quick network runs: one target (one probed state), 3 batch sizes, probe batch sizes >= 64
# (below that, the probe's random-number blocks hold up to 1024 draws whatever --probe-draws).
QUADRATIC = dict(dims=256, batch_sizes=tuple(2**k for k in range(3, 13)), lr_points=12, seeds=8, further_steps=50,
                 max_steps=3000, target_fractions=(0.5, 0.25, 0.125))  # fmt: skip
DATA_FILES = {
    "cnn": "a folder with train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz] (Fashion-MNIST)",
    "gpt": "a JSON-lines file or a folder of train*.jsonl[.gz] (ELI5-Category)",
}


@dataclass(frozen=True)
class Options:
    workload: str | None
    problem: str | None
    dims: int
    data_dir: str
    batch_sizes: tuple[int, ...]
    lrs: tuple[float, ...] | None
    lr_points: int
    seeds: int
    targets: tuple[float, ...]
    refine_points: int
    replicates: int
    top: int | None
    further_steps: int
    max_steps: int
    eval_examples: int
    probe_batch_sizes: tuple[int, ...]
    probe_rel_se: float | None
    probe_draws: int | None
    probe_steps: int
    predictors: bool
    beta1: float
    beta2: float
    eps: float
    seed: int
    device: str
    threads: int
    workers: int
    scheduler: str | None
    quick: bool
    out: str
    plot: bool
    quiet: bool


def build_parser() -> _cli.Parser:
    p = _cli.parser("sims.validate", __doc__)
    g = p.add_argument_group("what to validate")
    s = g.add_mutually_exclusive_group()
    s.add_argument("--workload", choices=sorted(DEFAULTS), help="a network of sims.workloads (default: a quadratic)")
    s.add_argument("--problem", metavar="FILE.npz", help="a quadratic problem file (default: sims.dynamics' problem)")
    d = g.add_mutually_exclusive_group()
    d.add_argument("--data-dir", help="the workload's real data (see below)")
    d.add_argument("--demo", action="store_true", help="the workload's shipped demo data")
    g.add_argument("--dims", type=_cli.integer(2, 10**6), help="the default quadratic's dimension (default 256)")
    g = p.add_argument_group("protocol")
    g.add_argument("--batch-sizes", type=_cli.int_list, metavar="B1,B2,...", help="batch sizes (default per workload)")
    g.add_argument("--lrs", type=_cli.float_list, metavar="LR1,...", help="the coarse learning-rate grid")
    g.add_argument("--lr-points", type=_cli.integer(3, 200), help="quadratic: coarse learning rates (default 12)")
    g.add_argument("--seeds", type=_cli.integer(2, 10**4), help="seeds per grid point (default 4; quadratic 8)")
    g.add_argument("--targets", type=_cli.float_list, metavar="L1,...",
                   help="target training losses (quadratic: fractions of the initial loss)")  # fmt: skip
    g.add_argument("--refine-points", type=_cli.integer(0, 8), default=1,
                   help="learning rates added on each side of each target's best (default 1; 0: none)")  # fmt: skip
    g.add_argument("--further-steps", type=_cli.integer(1, 10**6), help="steps after the target for the score")
    g.add_argument("--max-steps", type=_cli.integer(1, 10**8), help="cap on steps per run")
    g.add_argument("--eval-examples", type=_cli.integer(1, 10**7), help="networks: the fixed loss sample's size")
    g.add_argument("--beta1", type=_cli.finite(0, 0.999999), default=0.9, help="Adam beta1 (default 0.9)")
    g.add_argument("--beta2", type=_cli.finite(0, 0.999999), default=0.999, help="Adam beta2 (default 0.999)")
    g.add_argument("--eps", type=_cli.finite(0, 1), default=1e-8, help="Adam eps (default 1e-8)")
    g.add_argument("--seed", type=_cli.seed, default=0, help="seed of the quadratic and the bootstrap (default 0)")
    g = p.add_argument_group("statistics")
    g.add_argument("--replicates", type=_cli.integer(20, 10**6), default=400, help="bootstrap replicates (400)")
    g.add_argument("--top", type=_cli.integer(1, 100),
                   help="largest B in the surge test's top group (default 2 with >= 6 B, else 1)")  # fmt: skip
    g = p.add_argument_group("predictors")
    g.add_argument("--no-predictors", action="store_true", help="skip the predictors")
    g.add_argument("--probe-batch-sizes", type=_cli.int_list, metavar="B1,...", help="networks: the probe's B")
    m = g.add_mutually_exclusive_group()
    m.add_argument("--probe-rel-se", type=_cli.finite(1e-4, 0.99), help="networks: probe's relative s.e. (0.2)")
    m.add_argument("--probe-draws", type=_cli.integer(2, 1 << 30), help="networks: fixed probe draws per B")
    g.add_argument("--probe-steps", type=_cli.integer(1, 10**4), default=4,
                   help="networks: real Adam steps per probe draw (T, default 4: the T that held on quadratics, "
                   "README 'Which batch size and learning rate for Adam'; 1 = one step)")  # fmt: skip
    g = p.add_argument_group("execution and output")
    g.add_argument("--quick", action="store_true", help="tiny grids: every output in seconds to a minute")
    g.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="networks: torch device (default cpu)")
    g.add_argument("--threads", type=_cli.integer(0, 4096), default=1,
                   help="networks: torch threads per worker (default 1; 0: torch's choice)")  # fmt: skip
    g.add_argument("--workers", type=_cli.integer(0, 4096), default=0, help="local processes (default: cores)")
    g.add_argument("--scheduler", metavar="local:N|tcp://HOST:PORT", help="run the runs on Dask instead")
    g.add_argument("--connect-timeout", **_cli.CONNECT_TIMEOUT)
    g.add_argument("--out", help="output directory (default runs/validate-<workload or quadratic>)")
    g.add_argument("--no-plot", action="store_true", help="skip the figure")
    g.add_argument("--quiet", action="store_true", help="no table, no progress bar")
    return p


def resolve(args) -> Options:
    w = args.workload
    if w and not (args.demo or args.data_dir):
        raise _cli.UsageError(f"pass --data-dir (the real {w} data: {DATA_FILES[w]}) or --demo")
    if not w and (args.demo or args.data_dir):
        raise _cli.UsageError("--demo and --data-dir go with --workload")
    if w and (args.dims or args.lr_points):
        raise _cli.UsageError("--dims and --lr-points are for the quadratic, not --workload")
    if args.problem and args.dims:
        raise _cli.UsageError("--dims sets the default quadratic; --problem gives its own")
    kind = w or "quadratic"
    base = dict(DEFAULTS[w]) if w else dict(QUADRATIC)
    if args.quick:
        base.update(QUICK[kind])
    if w:
        base.setdefault("probe_draws", None)
        targets = base["targets"] if (args.demo or args.quick) else base["real_targets"]
    else:
        targets = base["target_fractions"]
    pick = lambda value, key: base[key] if value is None else value  # noqa: E731
    batch_sizes = tuple(sorted(pick(args.batch_sizes, "batch_sizes")))
    targets = tuple(sorted(pick(args.targets, "targets") if args.targets else targets, reverse=True))
    if len(batch_sizes) < 3 or len(set(batch_sizes)) != len(batch_sizes) or batch_sizes[0] < 1:
        raise _cli.UsageError(f"need 3 or more distinct batch sizes >= 1, got {batch_sizes}")
    if not all(math.isfinite(t) and t > 0 for t in targets) or len(set(targets)) != len(targets):
        raise _cli.UsageError(f"targets must be distinct, finite and > 0, got {targets}")
    if not w and not all(t < 1 for t in targets):
        raise _cli.UsageError(f"quadratic targets are fractions of the initial loss in (0, 1), got {targets}")
    lrs = tuple(sorted(args.lrs)) if args.lrs else (base.get("lrs") if w else None)
    if lrs is not None and (len(lrs) < 2 or len(set(lrs)) != len(lrs) or min(lrs) <= 0):
        raise _cli.UsageError(f"need 2 or more distinct learning rates > 0, got {lrs}")
    if args.top is not None and args.top >= len(batch_sizes):
        raise _cli.UsageError(f"--top {args.top} leaves no batch size below the top group of {len(batch_sizes)}")
    probe_draws = args.probe_draws if args.probe_draws is not None else (base.get("probe_draws") if w else None)
    probe_rel_se = None if probe_draws is not None else (args.probe_rel_se or (base.get("probe_rel_se") if w else None))
    if w == "gpt" and args.device == "cuda":
        pass
    return Options(
        workload=w, problem=args.problem, dims=args.dims or base.get("dims", 256), data_dir=args.data_dir or "",
        batch_sizes=batch_sizes, lrs=lrs, lr_points=args.lr_points or base.get("lr_points", 12),
        seeds=pick(args.seeds, "seeds"), targets=targets, refine_points=args.refine_points,
        replicates=args.replicates, top=args.top, further_steps=pick(args.further_steps, "further_steps"),
        max_steps=pick(args.max_steps, "max_steps"), eval_examples=args.eval_examples or base.get("eval_examples", 0),
        probe_batch_sizes=tuple(sorted(args.probe_batch_sizes or base.get("probe_batch_sizes", ()))),
        probe_rel_se=probe_rel_se, probe_draws=probe_draws, probe_steps=args.probe_steps,
        predictors=not args.no_predictors, beta1=args.beta1, beta2=args.beta2, eps=args.eps, seed=args.seed,
        device=args.device, threads=args.threads, workers=args.workers or os.cpu_count() or 1,
        scheduler=args.scheduler, quick=args.quick,
        out=args.out if args.out is not None else f"runs/validate-{kind}{'-quick' if args.quick else ''}",
        plot=not args.no_plot, quiet=args.quiet,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return _cli.run(lambda: _main(args))


def _say(opts: Options, text: str) -> None:
    if not opts.quiet:
        print(text, flush=True)


class _Runner:
    """The two stages of runs (coarse grid, refinement), each a resumable sweep."""

    def __init__(self, opts: Options, out, args, fn, params: dict, shared=None, workers: int | None = None) -> None:
        self.opts, self.out, self.args, self.fn, self.params, self.shared = opts, out, args, fn, params, shared
        self.workers = workers

    def __call__(self, tasks: list[dict], name: str) -> list[dict]:
        from surgesim.progress import progress_bar
        from surgesim.sweep import run_sweep

        if not tasks:
            return []
        sched = self.opts.scheduler
        with progress_bar(quiet=self.opts.quiet, desc=f"{name} runs") as bar:
            return run_sweep(
                self.fn, tasks, params={**self.params, "stage": name}, store=self.out.final(f"{name}.sqlite"),
                scheduler=sched, workers=None if sched else self.workers, shared=self.shared, progress=bar,
                connect_timeout=self.args.connect_timeout,
            )  # fmt: skip


def _main(args) -> int:
    opts = resolve(args)
    if opts.workload:
        return _main_network(opts, args)
    return _main_quadratic(opts, args)


# --- the quadratic -----------------------------------------------------------------------------


def _main_quadratic(opts: Options, args) -> int:
    from surgesim import dynamics, validate
    from surgesim.problem import QuadraticProblem

    t_start = time.perf_counter()
    problem = QuadraticProblem.load(opts.problem) if opts.problem else dynamics.default_problem(opts.dims, opts.seed)
    _cli.check_problem(problem, opts.batch_sizes)
    adam = dynamics.Optimizer("adam", opts.beta1, opts.beta2, opts.eps)
    exp = dynamics.Experiment(problem, (adam,), opts.batch_sizes, ((1.0,),), opts.targets, opts.further_steps,
                              opts.max_steps, opts.seeds, opts.seed, "cpu", False)  # fmt: skip
    targets = exp.targets
    lrs = opts.lrs or tuple(dynamics.default_lr_grid(problem, adam, opts.batch_sizes, opts.lr_points))
    out = _cli.out_dir(opts.out, command="sims.validate")
    _cli.save_options(opts, out / "options.json")
    problem.save(out / "problem.npz")
    run = _Runner(opts, out, args, dynamics.run_task, {"problem_sha256": problem.digest()}, shared=problem, workers=1)
    common = dict(further_steps=opts.further_steps, max_steps=opts.max_steps, seed=opts.seed)
    coarse = validate.quadratic_tasks(adam, {b: lrs for b in opts.batch_sizes}, targets, opts.seeds, **common)
    # The reference runs first (the predictors' states: the middle B and lr of the grid, every
    # seed): their time, per learning rate, scales to the estimate printed before the grid.
    b_ref, lr_ref = opts.batch_sizes[(len(opts.batch_sizes) - 1) // 2], lrs[(len(lrs) - 1) // 2]
    t0 = time.perf_counter()
    states = validate.quadratic_states(problem, adam, b_ref, lr_ref, targets, opts.seeds, max_steps=opts.max_steps,
                                       seed=opts.seed, batch_grid=opts.batch_sizes)  # fmt: skip
    per_lr = time.perf_counter() - t0
    n_tasks = len(opts.batch_sizes) * (len(lrs) + opts.refine_points * len(targets))  # (B, lr) pairs, about
    _say(opts, f"quadratic d = {problem.dim}, Adam({opts.beta1:g}, {opts.beta2:g}): {len(opts.batch_sizes)} batch "
               f"sizes x {len(lrs)} coarse lrs x {opts.seeds} seeds, refined by {opts.refine_points} per side; "
               f"targets {', '.join(f'{t:.4g}' for t in targets)}; estimated at most "
               f"{_minutes(per_lr * n_tasks)} from the reference runs ({per_lr:.1f} s, Numba's compilation "
               f"included; load {_load():.1f})")  # fmt: skip
    rows = run(coarse, "coarse")
    extra = validate.refinement(rows, targets, opts.refine_points) if opts.refine_points else {}
    rows = rows + run(validate.quadratic_tasks(adam, extra, targets, opts.seeds, **common), "refine")
    results = validate.validate_rows(rows, targets, replicates=opts.replicates, seed=opts.seed, top=opts.top)
    measured: dict = {}
    if opts.predictors:
        for t, st in zip(targets, states, strict=True):
            if st is not None:
                measured[t] = {name: fn(st) for name, fn in validate.QUADRATIC_PREDICTORS.items()}
    reference = {"batch_size": b_ref, "lr": lr_ref, "seeds": opts.seeds}
    curves: list[dict] = []
    if opts.predictors:
        for t, s in zip(targets, states, strict=True):
            if s is None:
                continue
            p = validate._q_parts(s)
            lr_curve = p["num"].mean(0) / p["den"].mean(0)
            res = next((r for r in results if r.target_loss == t), None)
            if res is not None:
                curves += _curve_rows(t, "probe_sign", s.batch_grid, lr_curve, res)
    return _finish(opts, out, rows, results, measured, curves, t_start,
                   {"problem": opts.problem or f"default d={problem.dim}", "initial_loss": exp.initial_loss,
                    "reference": reference, "coarse_lrs": list(lrs)})  # fmt: skip


# --- networks ----------------------------------------------------------------------------------


def _main_network(opts: Options, args) -> int:
    try:
        import torch

        from surgesim.workloads import probing, protocol, validation
    except ImportError as exc:
        from surgesim._install import TORCH

        raise _cli.UsageError(f"{exc} (networks need PyTorch: {TORCH})") from None
    from surgesim import validate

    if opts.device == "cuda" and not torch.cuda.is_available():
        raise _cli.UsageError("--device cuda: no CUDA device is usable here")
    torch.set_num_threads(opts.threads or torch.get_num_threads())  # this process: the timing and the probe
    t_start = time.perf_counter()
    lrs = opts.lrs
    mid = lambda xs: sorted(xs)[(len(xs) - 1) // 2]  # noqa: E731
    base = protocol.RunSpec(
        workload=opts.workload, lr=mid(lrs), batch_size=mid(opts.batch_sizes), seed=0, targets=opts.targets,
        data_dir=opts.data_dir, beta1=opts.beta1, beta2=opts.beta2, eps=opts.eps, further_steps=opts.further_steps,
        max_steps=opts.max_steps, eval_examples=opts.eval_examples, device=opts.device, threads=opts.threads,
        context=64 if opts.workload == "gpt" else 128,
    )  # fmt: skip
    try:
        data = protocol.load_data(base)  # a missing or malformed dataset fails here, before any training
    except FileNotFoundError as exc:
        raise _cli.UsageError(f"{exc} (--data-dir for {opts.workload}: {DATA_FILES[opts.workload]})") from None
    too_big = [b for b in (*opts.batch_sizes, *opts.probe_batch_sizes) if b > data.n]
    if too_big:
        raise _cli.UsageError(f"batch size {max(too_big)} is larger than the data set ({data.n} examples)")
    out = _cli.out_dir(opts.out, command="sims.validate")
    _cli.save_options(opts, out / "options.json")
    # The estimate first: a per-B step timing and the reference run (which also checkpoints the
    # predictors' states at each target).
    step_s, eval_s = protocol.measure_step_seconds(base, opts.batch_sizes, steps=2)
    t0 = time.perf_counter()
    reached = probing.reference_checkpoints(base, out.final("checkpoints"))
    ref_s = time.perf_counter() - t0
    steps_ref = max((r["steps"] for r in reached), default=None)
    est, upper = protocol.estimate_grid_seconds(base, step_s, eval_s, lrs, opts.seeds, steps_ref)
    workers = 1 if opts.scheduler else opts.workers
    refine = 1 + (2 * opts.refine_points * len(opts.targets)) / len(lrs) * 0.5 if opts.refine_points else 1.0
    _say(opts, f"{opts.workload} on {opts.data_dir or 'demo data'}, Adam({opts.beta1:g}, {opts.beta2:g}) on "
               f"{opts.device}: {len(opts.batch_sizes)} batch sizes x {len(lrs)} coarse lrs x {opts.seeds} seeds, "
               f"refined by {opts.refine_points} per side; targets {', '.join(f'{t:g}' for t in opts.targets)}; "
               f"reference run {ref_s:.0f} s; estimated {_minutes(est * refine / workers)} for the runs on "
               f"{workers} worker(s) (at most {_minutes(upper * refine / workers)}; load {_load():.1f})")  # fmt: skip
    run = _Runner(opts, out, args, protocol.run_task, {"fn": "surgesim.workloads.protocol.run_task"},
                  workers=opts.workers)  # fmt: skip
    rows = run(validation.network_tasks(base, {b: lrs for b in opts.batch_sizes}, opts.seeds), "coarse")
    extra = validate.refinement(rows, opts.targets, opts.refine_points) if opts.refine_points else {}
    rows = rows + run(validation.network_tasks(base, extra, opts.seeds), "refine")
    results = validate.validate_rows(rows, opts.targets, replicates=opts.replicates, seed=opts.seed, top=opts.top)
    measured, curves = {}, []
    if opts.predictors and reached:
        from sims import probe as sims_probe
        from surgesim.progress import progress_bar
        from surgesim.sweep import run_sweep

        options = {
            "rel_se": opts.probe_rel_se, "draws": opts.probe_draws, "max_draws": 1 << 16, "seed": 0,
            "hessian_examples": min(32, data.n), "stats_examples": min(256, data.n), "probes": 8,
            "crit_examples": min(32, data.n), "adam": {"beta1": opts.beta1, "beta2": opts.beta2, "eps": opts.eps},
            "spec": base.to_params(), "full_gradient_examples": sims_probe.FULL_GRADIENT_EXAMPLES,
        }  # fmt: skip
        if opts.quick:
            # G exact where the data set is small (the CNN demo: no sampling-error term, whose
            # per-example directional derivatives cost most of a probe task), else a small sample.
            full = data.n if data.n <= sims_probe.FULL_GRADIENT_EXAMPLES else 64
            options.update(stats_examples=min(32, data.n), hessian_examples=4, probes=2, crit_examples=4,
                           full_gradient_examples=full)  # fmt: skip
        states = [{"checkpoint": str(os.path.abspath(r["checkpoint"])), "target_loss": r["target_loss"]}
                  for r in reached]  # fmt: skip
        tasks = validation.predictor_tasks(states, opts.probe_batch_sizes, options, opts.probe_steps)
        with progress_bar(quiet=opts.quiet, desc="probe") as bar:
            prows = run_sweep(probing.probe_task, tasks, params={"fn": "surgesim.workloads.probing.probe_task"},
                              store=out.final("probe.sqlite"), workers=1, progress=bar)  # fmt: skip
        for t, m in validation.measured_states(tasks, prows).items():
            measured[t] = {name: fn(m) for name, fn in validation.NETWORK_PREDICTORS.items()}
            res = next((r for r in results if r.target_loss == t), None)
            for update in ("sign", "adam"):
                B, lr = validation.probe_curve(m, update)
                if res is not None and B.size:
                    curves += _curve_rows(t, f"probe_{update}", B, lr, res)
    return _finish(opts, out, rows, results, measured, curves, t_start,
                   {"workload": opts.workload, "data": opts.data_dir or "demo", "device": opts.device,
                    "reference": {"batch_size": base.batch_size, "lr": base.lr, "seed": 0,
                                  "steps": {f"{r['target_loss']:g}": r["steps"] for r in reached}},
                    "coarse_lrs": list(lrs)})  # fmt: skip


# --- outputs -----------------------------------------------------------------------------------


def _curve_rows(target: float, name: str, B, lr, res) -> list[dict]:
    from surgesim.validate import scaled_curve

    scaled, b_ref = scaled_curve(B, lr, res.batch_sizes, res.lr_opt)
    return [{"target_loss": target, "predictor": name, "batch_size": float(b), "lr_predicted": _none(x),
             "lr_scaled": _none(y), "reference_batch_size": _none(b_ref)}
            for b, x, y in zip(B, lr, scaled, strict=True)]  # fmt: skip


CURVE_COLUMNS = ("target_loss", "predictor", "batch_size", "lr_predicted", "lr_scaled", "reference_batch_size")


def _none(x) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None


def _finish(opts: Options, out, rows, results, measured, curves, t_start: float, extra: dict) -> int:
    from surgesim import validate
    from surgesim.sweep import write_csv

    run_columns = ("lr", "batch_size", "seed", "target_loss", "steps", "examples", "further_decrease")
    write_csv([{c: r[c] for c in run_columns} for r in rows], out / "runs.csv", run_columns)
    vrows = [r for res in results for r in res.rows()]
    write_csv(vrows or [dict.fromkeys(validate.VALIDATE_COLUMNS)], out / "validate.csv", validate.VALIDATE_COLUMNS)
    targets, prows = [], []
    for res in results:
        scores = {}
        for name in validate.PREDICTOR_NAMES:
            value, se = measured.get(res.target_loss, {}).get(name, (math.nan, math.nan))
            s = validate.score_predictor(name, value, se, res.noise_batch_size, res.noise_batch_size_se)
            scores[name] = s.as_dict()
            prows.append({"target_loss": res.target_loss, "predictor": name, **s.as_dict()})
        targets.append({
            "target_loss": res.target_loss, "batch_sizes": res.batch_sizes.tolist(),
            "lr_opt": [_none(x) for x in res.lr_opt], "lr_opt_se": [_none(x) for x in res.lr_opt_se],
            "lr_opt_lo": [_none(x) for x in res.lr_opt_lo], "lr_opt_hi": [_none(x) for x in res.lr_opt_hi],
            "steps": [_none(x) for x in res.steps], "surge_statistic": _none(res.surge_statistic),
            "surge_p_value": _none(res.surge_p_value), "surge_top": res.top,
            "peak_batch_size": _none(res.peak_batch_size),
            "peak_batch_size_ci": [_none(x) for x in res.peak_batch_size_ci], "peak_interior": res.peak_interior,
            "fitted_noise_batch_size": _none(res.noise_batch_size),
            "fitted_noise_batch_size_se": _none(res.noise_batch_size_se),
            "s_min": _none(res.s_min), "s_min_se": _none(res.s_min_se), "predictors": scores,
        })  # fmt: skip
    write_csv(prows or [dict.fromkeys(validate.PREDICTOR_COLUMNS)], out / "predictors.csv", validate.PREDICTOR_COLUMNS)
    write_csv(curves or [dict.fromkeys(CURVE_COLUMNS)], out / "curves.csv", CURVE_COLUMNS)
    wall = time.perf_counter() - t_start
    summary = {
        **extra, "optimizer": "adam", "beta1": opts.beta1, "beta2": opts.beta2, "seeds": opts.seeds,
        "replicates": opts.replicates, "runs": len({(r["lr"], r["batch_size"], r["seed"]) for r in rows}),
        "adam_predicted": ADAM_PREDICTED_NOTE["network" if opts.workload else "quadratic"],
        "targets": targets, "wall_seconds": wall, "load_average": _load(),
    }  # fmt: skip
    _cli.write_json(summary, out / "summary.json")
    if opts.plot and results:
        from surgesim.plots.validate import validate_figure

        label = opts.workload or "quadratic"
        fig = validate_figure(rows, results, curves, title=f"{label}: Adam({opts.beta1:g}, {opts.beta2:g})")
        fig.savefig(out / "fig11_validate.png", dpi=110)
    if not opts.quiet:
        print_table(targets)
        print(f"{summary['runs']} runs in {_minutes(wall)}; wrote {out}/validate.csv, predictors.csv, curves.csv, "
              "runs.csv, summary.json" + (", fig11_validate.png" if opts.plot else ""))  # fmt: skip
    return 0


ADAM_PREDICTED_NOTE = {
    "network": "probe_adam's value: the peak over B of the optimal lr of --probe-steps real Adam steps",
    "quadratic": "surgesim.momentum.adam_noise_batch_size: eq 2 fitted to the optimal lr of 4 real Adam steps "
    "from fresh buffers at the reference states (the probe's peak where the fit fails)",
}


def _load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3g}"


def print_table(targets: list[dict]) -> None:
    for t in targets:
        print(f"\ntarget loss {t['target_loss']:.4g}:")
        print(f"{'B':>7} {'lr_opt':>10} {'+- s.e.':>9} {'68% interval':>21} {'S':>9}")
        for b, lr, se, lo, hi, s in zip(t["batch_sizes"], t["lr_opt"], t["lr_opt_se"], t["lr_opt_lo"], t["lr_opt_hi"],
                                        t["steps"], strict=True):  # fmt: skip
            print(f"{b:>7g} {_fmt(lr):>10} {_fmt(se):>9} {_fmt(lo):>10}-{_fmt(hi):<10} {_fmt(s):>9}")
        lo, hi = t["peak_batch_size_ci"]
        print(f"peak batch size {_fmt(t['peak_batch_size'])} (68%: {_fmt(lo)}-{_fmt(hi)}"
              f"{'' if t['peak_interior'] else ', at the grid edge'}); surge p-value {_fmt(t['surge_p_value'])}; "
              f"B_noise (eq 22) {_fmt(t['fitted_noise_batch_size'])} "
              f"+- {_fmt(t['fitted_noise_batch_size_se'])}")  # fmt: skip
        print("  ".join(f"{k} {_fmt(v['value'])} (x{_fmt(math.exp(v['log_ratio_to_fit']))} of fit)"
                        if v["log_ratio_to_fit"] is not None else f"{k} {_fmt(v['value'])}"
                        for k, v in t["predictors"].items()))  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
