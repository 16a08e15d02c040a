"""One probe run (``python -m sims.probe``): the state (a quadratic problem, your model, or a
workload checkpoint or reference run), the sweep of ``probing``'s tasks over the batch sizes, and
the result that writes probe.csv, summary.json and the figure (docs/outputs.md) and prints the
table. ``prepare_probe`` checks and loads everything before any output is written;
``ProbePlan.run`` runs the sweep; ``ProbeRun.write`` writes the outputs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..outputs import OutputDir, atomic_path, dumps_json
from . import probing, protocol
from .grid import reference_spec
from .probing import DEFAULT_BATCH_SIZES, FULL_GRADIENT_EXAMPLES

__all__ = [
    "COLUMNS",
    "SCALE_KEYS",
    "MULTI_COLUMNS",
    "DEFAULT_BATCH_SIZES",
    "FULL_GRADIENT_EXAMPLES",
    "ProbeOptions",
    "resolve_probe_options",
    "ProbePlan",
    "ProbeRun",
    "prepare_probe",
    "run_probe",
    "collect",
    "validity_disagreement",
    "format_number",
    "print_table",
]

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
MULTI_COLUMNS = ("steps", "lr_points_probe", "gradient_examples_probe")  # steps T > 1 only


@dataclass(frozen=True)
class ProbeOptions:
    """Everything a probe run depends on (options.json): the state (exactly one of ``problem``,
    ``workload``, ``model``), the measurement and the execution."""

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

    def task_options(self) -> dict[str, Any]:
        """The options every task of the run carries (``probing.task_list``)."""
        return {
            "update": self.update, "rel_se": self.rel_se, "draws": self.draws, "max_draws": self.max_draws,
            "seed": self.seed, "hessian_examples": self.hessian_examples, "stats_examples": self.stats_examples,
            "stats_hessian_examples": self.stats_hessian_examples, "probes": self.probes, "steps": self.steps,
            "warmup": self.warmup, "crit_examples": self.crit_examples,
            "adam": {"beta1": self.beta1, "beta2": self.beta2, "eps": self.eps},
        }  # fmt: skip


_DEFAULTS: dict[str, Any] = dict(
    max_draws=1 << 18, update="sign", steps=1, warmup=0, beta1=0.9, beta2=0.999, eps=1e-8, seed=0, hessian_examples=32,
    stats_examples=256, stats_hessian_examples=32, probes=8, crit_examples=32,
    full_gradient_examples=FULL_GRADIENT_EXAMPLES, threads=0, workers=1, out="runs/probe", plot=True, quiet=False,
)  # fmt: skip
_KEPT = ("problem", "workload", "model", "checkpoint", "draws", "max_draws", "update", "steps", "warmup", "beta1",
         "beta2", "eps", "seed", "hessian_examples", "stats_examples", "stats_hessian_examples", "probes",
         "crit_examples", "full_gradient_examples", "threads", "workers", "scheduler", "out", "plot",
         "quiet")  # fmt: skip


def resolve_probe_options(given: Mapping[str, Any]) -> ProbeOptions:
    """The options of a probe run from the values given by ``ProbeOptions`` field name (and
    ``demo``: the workload's demo data); a value None or absent takes its default (``rel_se`` 0.1
    unless ``draws`` is given, ``DEFAULT_BATCH_SIZES``, ...). Other names are ignored. Raises
    ValueError, naming the option as `key`, for a value or combination that cannot run."""
    v: dict[str, Any] = {**_DEFAULTS, **{k: x for k, x in given.items() if x is not None}}

    def g(key: str, default: Any = None) -> Any:
        return v.get(key, default)

    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ValueError(message)

    state_opts = g("demo") or g("data_dir") or g("checkpoint") or g("targets")
    need(not g("workload") or g("demo") or g("data_dir"),
         f"pass `data_dir` DIR (the real {g('workload')} data) or `demo`")  # fmt: skip
    need(not (g("problem") and state_opts), "`demo`, `data_dir`, `checkpoint` and `targets` go with `workload`, not "
         "`problem`")  # fmt: skip
    need(not (g("model") and state_opts), "`targets`, `demo`, `data_dir` and `checkpoint` do not apply with `model`: "
         "FUNCTION() gives the weights and the data")  # fmt: skip
    steps, warmup = v["steps"], v["warmup"]
    need(1 <= steps <= 1 << 20, f"`steps` must be an integer >= 1, got {steps}")
    need(steps == 1 or v["update"] == "adam", "`steps` T > 1 is the multi-step Adam probe: add `update` adam")
    need(warmup >= 0 and not (warmup and steps == 1),
         f"`warmup` must be >= 0 and goes with `steps` T > 1, got {warmup}")  # fmt: skip
    sizes = tuple(g("batch_sizes") or DEFAULT_BATCH_SIZES)
    need(all(1 <= b <= 1 << 40 for b in sizes) and len(set(sizes)) == len(sizes),
         f"batch sizes must be distinct integers in [1, 2^40], got {sizes}")  # fmt: skip
    rel_se = None if g("draws") is not None else g("rel_se", 0.1)
    need(rel_se is None or 0 < rel_se < 1, f"`rel_se` must be in (0, 1), got {rel_se}")
    need(g("draws") is None or 2 <= v["draws"] <= 1 << 30, f"`draws` must be in [2, 2^30], got {g('draws')}")
    need(32 <= v["max_draws"] <= 1 << 30, f"`max_draws` must be in [32, 2^30], got {v['max_draws']}")
    for name in ("hessian_examples", "stats_hessian_examples", "probes", "crit_examples"):
        need(v[name] >= (2 if name in ("probes", "crit_examples") else 1), f"`{name}` is too small: {v[name]}")
    need(v["stats_examples"] >= 4, f"need `stats_examples` >= 4, got {v['stats_examples']}")
    need(v["full_gradient_examples"] >= 0 and v["threads"] >= 0 and v["workers"] >= 1,
         "`full_gradient_examples` and `threads` must be >= 0, `workers` >= 1")  # fmt: skip
    need(0 <= v["beta1"] < 1 and 0 <= v["beta2"] < 1 and v["eps"] >= 0, "need 0 <= `beta1`, `beta2` < 1 and `eps` >= 0")
    targets = g("targets")
    need(not targets or all(math.isfinite(t) and t > 0 for t in targets),
         f"targets must be finite losses > 0, got {targets}")  # fmt: skip
    return ProbeOptions(
        data_dir="" if g("demo") else (g("data_dir") or ""), batch_sizes=tuple(sorted(sizes)), rel_se=rel_se,
        targets=tuple(sorted(targets, reverse=True)) if targets else None, **{k: g(k) for k in _KEPT},
    )  # fmt: skip


@dataclass
class ProbePlan:
    """A checked probe run, before any output: the task function, its shared argument, the
    store's identity and the task options; ``problem`` the quadratic (None for a network) and
    ``spec`` the workload's reference run (None without a workload)."""

    opts: ProbeOptions
    fn: Callable[..., dict]
    shared: Any
    identity: dict[str, Any]
    options: dict[str, Any]
    problem: Any = None
    spec: protocol.RunSpec | None = None
    started: float = field(default_factory=time.perf_counter)

    def states(self, out: OutputDir, say: Callable[[str], None]) -> list[dict]:
        """The states to probe: the checkpoint, or the reference run's (trained here, resumably)."""
        opts, spec = self.opts, self.spec
        if spec is None:
            return [{}]
        if opts.checkpoint:
            return [{"checkpoint": str(Path(opts.checkpoint).resolve()), "target_loss": None}]
        say(f"reference run: {opts.workload}, Adam lr {spec.lr:.3g}, B {spec.batch_size}, seed 0, "
            f"targets {', '.join(f'{t:g}' for t in spec.targets)}")  # fmt: skip
        reached = probing.reference_checkpoints(spec, out.final("checkpoints"), say)
        if not reached:
            raise ValueError(f"the reference run reached no target loss in {spec.max_steps} steps")
        return [{"checkpoint": str(Path(r["checkpoint"]).resolve()), "target_loss": r["target_loss"]}
                for r in reached]  # fmt: skip

    def run(self, out: OutputDir, say: Callable[[str], None], connect_timeout: float) -> ProbeRun:
        """Run the sweep (store ``out.final('store.sqlite')``, resumable) and collect its rows."""
        from ..progress import progress_bar
        from ..sweep import run_sweep

        opts, fn = self.opts, self.fn
        tasks = probing.task_list(self.states(out, say), opts.batch_sizes, self.options)
        with progress_bar(quiet=opts.quiet, desc="probe tasks") as progress:
            rows = run_sweep(
                fn, tasks, params={"fn": f"{fn.__module__}.{fn.__name__}", **self.identity},
                store=out.final("store.sqlite"), scheduler=opts.scheduler,
                workers=None if opts.scheduler else opts.workers, shared=self.shared, progress=progress,
                connect_timeout=connect_timeout,
            )  # fmt: skip
        curves, summaries = collect(tasks, rows, self.problem)
        return ProbeRun(opts, curves, summaries, self.problem is not None, time.perf_counter() - self.started)


def prepare_probe(opts: ProbeOptions) -> ProbePlan:
    """Check and load the state of ``opts`` before any output (ValueError on a fault): the
    problem, the model (its tuple, loss and weights) or the workload's data and checkpoint."""
    if opts.threads:
        torch.set_num_threads(opts.threads)
    options = opts.task_options()
    if opts.problem:
        from ..problem import QuadraticProblem

        problem = QuadraticProblem.load(opts.problem)
        identity = {"problem_sha256": problem.digest()}
        return ProbePlan(opts, probing.problem_task, problem, identity, options, problem=problem)
    if opts.model:
        options.update(model=opts.model, model_sha256=probing.file_digest(opts.model),
                       full_gradient_examples=opts.full_gradient_examples)  # fmt: skip
        n = probing.check_model(options).n  # a bad file, tuple, loss or weights fail here
        if n is None:  # model_state holds the model's examples: a finite data set
            raise ValueError(f"{opts.model}: the model's data has no size")
        _check_sizes(opts, n, model=True)
        return ProbePlan(opts, probing.model_task, None, {"model": opts.model}, options)
    if opts.workload is None:
        raise ValueError("give a problem, a model or a workload to probe")
    spec = reference_spec(opts.workload, opts.data_dir, targets=opts.targets)
    data = protocol.load_data(spec)  # a missing or malformed dataset fails here
    _check_sizes(opts, data.n, model=False)
    if opts.checkpoint:
        probing.load_checkpoint(opts.checkpoint, spec)  # a mismatch fails before any work
    options.update(spec=spec.to_params(), full_gradient_examples=opts.full_gradient_examples)
    return ProbePlan(opts, probing.probe_task, None, {"workload": opts.workload}, options, spec=spec)


def _check_sizes(opts: ProbeOptions, n: int, model: bool) -> None:
    if model:
        too_big = [x for x in opts.batch_sizes if x > n]
        if too_big:
            raise ValueError(f"batch size {max(too_big)} is larger than the data set ({n} examples)")
        if opts.stats_examples + opts.stats_hessian_examples > n or opts.hessian_examples > n:
            raise ValueError(f"stats_examples + stats_hessian_examples and hessian_examples must fit in the data "
                             f"set ({n} examples)")  # fmt: skip
        return
    stats_n = opts.stats_examples + opts.stats_hessian_examples
    too_big = [x for x in (*opts.batch_sizes, opts.hessian_examples, stats_n) if x > n]
    if too_big:
        raise ValueError(f"{max(too_big)} is larger than the data set ({n} examples)")


def run_probe(
    opts: ProbeOptions, out: OutputDir, say: Callable[[str], None] = lambda s: None, connect_timeout: float = 10.0
) -> ProbeRun:
    """``prepare_probe`` then ``ProbePlan.run``: a probe run from Python (no command line)."""
    return prepare_probe(opts).run(out, say, connect_timeout)


@dataclass
class ProbeRun:
    """A finished probe: probe.csv's rows (``curves``), one summary per state, and the run's
    summary.json; ``write`` writes them (and the figure), ``report`` prints the table."""

    opts: ProbeOptions
    curves: list[dict]
    summaries: list[dict]
    quadratic: bool
    wall_seconds: float

    @property
    def columns(self) -> list[str]:
        skip: tuple[str, ...] = ("target_loss",) if self.quadratic else ("lr_exact", "z_probe")
        if self.opts.model:
            skip = ("target_loss", "lr_exact", "z_probe")
        return [c for c in COLUMNS if c not in skip] + (list(MULTI_COLUMNS) if self.opts.steps > 1 else [])

    @property
    def state_name(self) -> str | None:
        return self.opts.problem or self.opts.workload or self.opts.model

    def summary(self) -> dict[str, Any]:
        """summary.json: the state, the update, and its scales and peaks (docs/outputs.md)."""
        opts = self.opts
        summary: dict[str, Any] = {
            "state": self.state_name,
            "update": opts.update,
            "steps": opts.steps,
            "wall_seconds": self.wall_seconds,
        }
        if self.quadratic or opts.model:
            summary.update({k: v for k, v in self.summaries[0].items() if k != "target_loss"})
        else:
            summary.update(data=opts.data_dir or "demo", results=self.summaries)
        return summary

    def warnings(self) -> list[str]:
        """Warnings for the user: a sample validity bound off the problem's own."""
        if not (self.quadratic or self.opts.model):
            return []
        disagreement = validity_disagreement(self.summary())
        return [disagreement] if disagreement else []

    def write(self, out: OutputDir) -> None:
        """probe.csv, summary.json and (unless ``plot`` is off) probe.png and probe.pdf."""
        from ..sweep import write_csv

        write_csv(self.curves, out / "probe.csv", self.columns)
        with atomic_path(out / "summary.json") as tmp:
            tmp.write_text(dumps_json(self.summary()))
        if self.opts.plot:
            from ..plots.probe import probe_figure

            what = "one-step" if self.opts.steps == 1 else f"{self.opts.steps}-step"
            fig = probe_figure(self.curves, self.summaries, title=f"{self.state_name}: {what} optimal lr")
            fig.savefig(out / "probe.png", dpi=200)
            fig.savefig(out / "probe.pdf")

    def report(self, out: object) -> None:
        """The table, and what was written."""
        print_table(self.curves, self.summaries, label=self.opts.problem)
        print(
            f"{self.wall_seconds:.0f} s; wrote {out}/probe.csv, summary.json"
            + (", probe.png" if self.opts.plot else "")
        )


def collect(tasks: list[dict], rows: list[dict], problem: Any, peaks: bool = True) -> tuple[list[dict], list[dict]]:
    """probe.csv rows and one summary per state, joined to their tasks by position in the task
    list (``run_sweep`` returns rows in task order); ``peaks`` False: the scales alone. With a
    quadratic ``problem``: eq 9's exact lr* (``theory.optimal_lr``) and the probe's z beside it."""
    from .. import theory

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
        s.update(probing.curve_summary(pts))
        if problem is not None:
            s["validity_bound_exact"] = float(theory.validity_bound(problem.mu, problem.sigma))
            s["noise_batch_size_exact"] = float(theory.noise_batch_size(problem.mu, problem.sigma, problem.hessian))
            fine = np.geomspace(min(B), max(B), 400)
            s["peak_batch_size_exact"] = float(fine[np.argmax(theory.optimal_lr(fine, problem.mu, problem.sigma,
                                                                                problem.hessian))])  # fmt: skip
            s["max_abs_z"] = max(abs(r["z_probe"]) for r in pts if r["z_probe"] is not None)
    return curves, summaries


def format_number(x: float | None) -> str:
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
            "in coordinates with small mu_i; trust validity_bound_exact")  # fmt: skip


def print_table(curves: Sequence[dict], summaries: Sequence[dict], label: str | None = None) -> None:
    """The three lr*(B) curves per state, their peaks and the batch-size scales, on stdout."""
    _f = format_number
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
                  + (f" {r['lr_exact']:>11.4g} {_f(r['z_probe']):>6}" if exact else "")
                  + f" {r['draws_probe']:>8} {r['seconds_probe'] + r['seconds_gaussian']:>8.1f}")  # fmt: skip
        peaks = ", ".join(
            f"{n} {_f(s[f'peak_batch_size_{n}'])}" + ("" if s[f"peak_interior_{n}"] else " (grid edge)")
            for n in ("probe", "gaussian", "independent")
        )
        print(f"peak batch size: {peaks}")
        print(f"B_simple {_f(s['b_simple'])} +- {_f(s['b_simple_se'])}, B_crit {_f(s['b_crit'])} +- "
              f"{_f(s['b_crit_se'])}, eq 14 B_noise {_f(s['noise_batch_size_eq14'])} +- "
              f"{_f(s['noise_batch_size_eq14_se'])}")  # fmt: skip
