"""One grid run on a real network (``python -m sims.workloads``): the reference run with its
gradient statistics (eq 14, 16) and the time estimate (``GridPlan.estimate``), the grid of Adam
runs through ``surgesim.sweep`` (``GridPlan.run``), the fits of the optimal learning rate per
batch size (eq 22, 23, ``surgesim.gridfit``) and the probe's scales at the reference run's
states; ``GridRun.write`` writes runs.csv, results.csv, probe.csv, summary.json and the figures
(docs/outputs.md).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..outputs import OutputDir, atomic_path, dumps_json
from . import probing, protocol
from .grid import GridOptions
from .run_spec import RunSpec

__all__ = ["PROBE_KEYS", "GridPlan", "GridEstimate", "GridRun", "print_results"]

PROBE_KEYS = (
    "b_simple", "b_simple_se", "b_crit", "b_crit_se", "peak_batch_size_probe", "peak_batch_size_probe_low",
    "peak_batch_size_probe_high", "peak_interior_probe", "peak_batch_size_gaussian", "peak_batch_size_independent",
)  # fmt: skip
SWEEP_PARAMS = {"fn": "surgesim.workloads.protocol.run_task"}


@dataclass
class GridEstimate:
    """The reference run's gradient statistics (gradient.csv rows) and the grid's time estimate."""

    grad_rows: list[dict]
    text: str
    wall: float
    workers: int
    load: float


@dataclass
class GridPlan:
    """A checked grid: the reference run ``base`` (its data loaded) and the grid's tasks."""

    opts: GridOptions
    base: RunSpec = field(init=False)
    tasks: list[dict] = field(init=False)
    started: float = field(default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        opts = self.opts
        self.base = opts.reference()
        protocol.load_data(self.base)  # a missing or malformed dataset fails here, before any training
        self.tasks = protocol.grid_tasks(self.base, opts.lrs, opts.batch_sizes, range(opts.seeds))

    def estimate(self, out: OutputDir, say: Callable[[str], None]) -> GridEstimate:
        """Step timing and the reference run (the grid's middle lr and B, seed 0): its gradient
        statistics at each target (eq 14, 16; gradient.csv) unless ``gradstats`` is off, and in any
        case the steps that scale the grid's estimated time (``protocol.estimate_grid_seconds``)."""
        from ..sweep import write_csv

        opts, base = self.opts, self.base
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
        say(f"{opts.workload} on {'demo data' if not opts.data_dir else opts.data_dir}: "
            f"{len(opts.lrs)} lrs x {len(opts.batch_sizes)} batch sizes x {opts.seeds} seeds, "
            f"targets {', '.join(f'{t:g}' for t in opts.targets)}; load average {load:.1f}")  # fmt: skip
        step_s, eval_s = protocol.measure_step_seconds(base, opts.batch_sizes)
        say("seconds per step: " + ", ".join(f"B={b}: {s * 1e3:.1f} ms" for b, s in step_s.items())
            + f"; per loss evaluation: {eval_s * 1e3:.0f} ms")  # fmt: skip
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
        say(f"reference run (lr {base.lr:.3g}, B {base.batch_size}, seed 0), "
            f"{time.perf_counter() - t0:.0f} s: {detail or 'no target reached'}")  # fmt: skip
        est, upper = protocol.estimate_grid_seconds(base, step_s, eval_s, opts.lrs, opts.seeds,
                                                    max(reached) if reached else None)  # fmt: skip
        workers = 1 if opts.scheduler else opts.workers
        # Local workers share the cores with whatever else runs (the load average, less this process).
        cores = os.cpu_count() or 1
        slowdown = 1.0 if opts.scheduler else max(1.0, (max(load - 1.0, 0.0) + workers) / cores)
        est_wall, upper_wall = est / workers * slowdown, upper / workers * slowdown
        text = (f"estimated time for {len(self.tasks)} runs: {est_wall / 60:.1f} min on {workers} worker(s) at "
                f"the current load (upper bound, all runs to {opts.max_steps} steps: "
                f"{upper_wall / 60:.1f} min)")  # fmt: skip
        return GridEstimate(grad_rows, text, est_wall, workers, load)

    def run(self, out: OutputDir, estimate: GridEstimate, connect_timeout: float) -> GridRun:
        """The grid (store ``out.final('sweep.sqlite')``, resumable), its fits per target loss, and
        the probe's measurements at the reference run's states (``probe_states``)."""
        from .. import gridfit
        from ..progress import progress_bar
        from ..sweep import run_sweep

        opts = self.opts
        with progress_bar(quiet=opts.quiet, desc="runs") as progress:
            rows = run_sweep(
                protocol.run_task, self.tasks, params=SWEEP_PARAMS,
                store=out.final("sweep.sqlite"), scheduler=opts.scheduler,
                workers=None if opts.scheduler else opts.workers, progress=progress, connect_timeout=connect_timeout,
            )  # fmt: skip
        table = {c: np.array([np.nan if r[c] is None else r[c] for r in rows], dtype=float)
                 for c in ("lr", "batch_size", "seed", "target_loss", "steps", "further_decrease")}  # fmt: skip
        groups = gridfit.fit_groups(table, "lr", "batch_size", "further_decrease", ["target_loss"],
                                    seed_col="seed", steps_col="steps", maximize=True)  # fmt: skip
        groups = groups[::-1]  # from the first target reached to the last
        probed = probe_states(opts, self.base, estimate.grad_rows, out)
        return GridRun(opts, rows, table, groups, probed, estimate, self.started)


def probe_states(opts: GridOptions, base: RunSpec, grad_rows: list[dict], out: OutputDir) -> dict[float, dict]:
    """sims.probe's measurements at the reference run's target states, per target loss: B_simple and
    B_crit always (with the gradient statistics), the three lr*(B) curves and their peaks with
    ``probe`` (probe.csv beside the other outputs; its own resumable store)."""
    if not grad_rows:
        return {}
    from ..progress import progress_bar
    from ..sweep import run_sweep, write_csv
    from .probe_run import COLUMNS, collect

    n = protocol.load_data(base).n
    sizes = [b for b in probing.DEFAULT_BATCH_SIZES if b <= n] if opts.probe else []
    h = min(128, opts.grad_examples)
    options = {
        "update": "sign", "rel_se": opts.probe_rel_se, "draws": None, "max_draws": 1 << 18, "seed": 0,
        "hessian_examples": h, "stats_examples": opts.grad_examples, "probes": opts.probes,
        "crit_examples": min(32, opts.grad_examples),
        "adam": {"beta1": opts.beta1, "beta2": opts.beta2, "eps": opts.eps},
        "spec": base.to_params(), "full_gradient_examples": probing.FULL_GRADIENT_EXAMPLES,
    }  # fmt: skip
    states = [{"checkpoint": str(protocol.checkpoint_path(out.final("checkpoints"), r["target_loss"]).resolve()),
               "target_loss": r["target_loss"]} for r in grad_rows]  # fmt: skip
    tasks = probing.task_list(states, sizes, options)
    with progress_bar(quiet=opts.quiet, desc="probe") as progress:
        rows = run_sweep(probing.probe_task, tasks, params={"fn": "surgesim.workloads.probing.probe_task"},
                         store=out.final("probe.sqlite"), workers=1, progress=progress)  # fmt: skip
    curves, summaries = collect(tasks, rows, None, peaks=opts.probe)
    if curves:
        write_csv(curves, out / "probe.csv", [c for c in COLUMNS if c not in ("lr_exact", "z_probe")])
    return {s["target_loss"]: s for s in summaries}


@dataclass
class GridRun:
    """A finished grid: its rows (runs.csv), the fits per target loss, the probe's scales, and
    ``write`` for results.csv, summary.json and the figures."""

    opts: GridOptions
    rows: list[dict]
    table: dict[str, np.ndarray]
    groups: list
    probed: dict[float, dict]
    estimate: GridEstimate
    started: float
    results: list[dict] = field(init=False)
    summary_rows: list[dict] = field(init=False)

    def __post_init__(self) -> None:
        from .. import gridfit

        predicted = {r["target_loss"]: r for r in self.estimate.grad_rows}
        self.results, self.summary_rows = [], []
        for key, fit in self.groups:
            t = float(key["target_loss"])
            for o in fit.optima:
                self.results.append({"target_loss": t, **{c: getattr(o, c) for c in gridfit.OPTIMUM_COLUMNS}})
            self.summary_rows.append(_summary_row(t, fit, predicted.get(t, {}), self.probed.get(t, {})))

    @property
    def n_tasks(self) -> int:
        return len(self.opts.lrs) * self.opts.seeds * len(self.opts.batch_sizes)

    def write(self, out: OutputDir, fit_figure: Callable[..., Any] | None = None) -> None:
        """runs.csv, results.csv, summary.json, and with ``fit_figure`` (the grid's panel builder,
        ``sims.fit.figure``) and ``plot`` the figures fit_target_<loss>.png and peak.png."""
        from .. import gridfit
        from ..sweep import write_csv

        opts, est = self.opts, self.estimate
        write_csv(self.rows, out / "runs.csv", protocol.ROW_COLUMNS)
        write_csv(gridfit.csv_cells(self.results), out / "results.csv", ["target_loss", *gridfit.OPTIMUM_COLUMNS])
        self.wall = time.perf_counter() - self.started
        summary = {
            "workload": opts.workload, "data": opts.data_dir or "demo", "optimizer": "adam",
            "beta1": opts.beta1, "beta2": opts.beta2, "runs": self.n_tasks,
            "results": gridfit.csv_cells(self.summary_rows),
            "estimated_seconds": est.wall, "wall_seconds": self.wall, "workers": est.workers,
            "load_average_at_start": est.load,
        }  # fmt: skip
        with atomic_path(out / "summary.json") as tmp:
            tmp.write_text(dumps_json(summary))
        if opts.plot and fit_figure is not None:
            self._figures(out, fit_figure)

    def _figures(self, out: OutputDir, fit_figure: Callable[..., Any]) -> None:
        from ..plots.grid import peak_vs_target_figure

        opts, table = self.opts, self.table
        for key, fit in self.groups:
            sel = table["target_loss"] == key["target_loss"]
            fig = fit_figure(
                fit, table["lr"][sel], table["batch_size"][sel], table["further_decrease"][sel], maximize=True,
                score_label=f"loss decrease in {opts.further_steps} further steps",
                missing="no value (target not reached)",
                title=f"{opts.workload}, Adam({opts.beta1:g}, {opts.beta2:g}), target loss {key['target_loss']:g}",
            )  # fmt: skip
            fig.savefig(out / f"fit_target_{key['target_loss']:g}.png", dpi=110)
        col = lambda k: np.array([_nan(r[k]) for r in self.summary_rows])  # noqa: E731
        label = f"Adam({opts.beta1:g}, {opts.beta2:g})"
        tied = np.array([fit.peak_batch_size_range() for _, fit in self.groups]).reshape(-1, 2)
        fig = peak_vs_target_figure(
            col("target_loss"), {label: col("peak_batch_size")}, fitted={label: col("fitted_noise_batch_size")},
            spread={label: (tied[:, 0], tied[:, 1])}, predicted={label: col("predicted_noise_batch_size")},
            predicted_se={label: col("predicted_noise_batch_size_se")},
            title=f"{opts.workload}: batch sizes vs loss\n(bars: the batch sizes within 2 s.e. of the peak lr; "
                  "eq 14's 2 s.e.)",
        )  # fmt: skip
        fig.savefig(out / "peak.png", dpi=110)

    def report(self, out: object) -> None:
        """The fits per target loss, and what was written."""
        print_results(self.groups, self.summary_rows)
        est = self.estimate.wall
        print(f"{self.n_tasks} runs in {self.wall / 60:.1f} min (estimated {est / 60:.1f}); wrote {out}/runs.csv, "
              "results.csv, summary.json" + (", figures" if self.opts.plot else ""))  # fmt: skip


def _summary_row(t: float, fit: Any, p: dict, probed: dict) -> dict:
    """summary.json's entry of one target loss: fitted (eq 22, 23) beside predicted (eq 14, 16)."""
    return {
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
        **{k: probed.get(k) for k in PROBE_KEYS if k in probed},
    }  # fmt: skip


def _nan(x: float | None) -> float:
    return math.nan if x is None else float(x)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def print_results(groups: list, summary_rows: list[dict]) -> None:
    """The optimal lr per batch size and the fitted and predicted B_noise, per target loss."""
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
