"""One grid search run end to end (``python -m sims.dynamics``): its tasks on ``surgesim.sweep``
(resumable, local or on Dask), the summary, and the outputs: runs.csv, summary.json, the figures
and the printed tables (``DynamicsResult``)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import theory
from ..outputs import OutputDir, atomic_path, dumps_json
from ..sweep import run_sweep, write_csv
from .spec import Experiment
from .summary import TargetResult, summarize
from .task import ROW_COLUMNS, run_task

__all__ = ["DynamicsResult", "run_dynamics", "start_quantities", "describe_start"]


def start_quantities(experiment: Experiment) -> dict:
    """The problem at the start: d, L(theta0), B_noise (eq 14) and the validity bound of eq 14."""
    problem = experiment.problem
    mu, sigma, H = problem.mu, problem.sigma, problem.hessian
    return {
        "dims": problem.dim, "initial_loss": experiment.initial_loss,
        "initial_noise_batch_size": theory.noise_batch_size(mu, sigma, H),
        "initial_validity_bound": theory.validity_bound(mu, sigma),
    }  # fmt: skip


def describe_start(experiment: Experiment, lr_points: int) -> str:
    """One line on the problem and the work: the start's loss, B_noise (eq 14), validity bound, tasks."""
    start = start_quantities(experiment)
    return (f"problem: {experiment.problem.describe()}; initial loss {experiment.initial_loss:.4g}, B_noise at the "
            f"start (eq 14) {start['initial_noise_batch_size']:.4g}, validity bound "
            f"{start['initial_validity_bound']:.4g}; {len(experiment.tasks())} tasks of {lr_points} lr x "
            f"{experiment.seeds} seeds")  # fmt: skip


def run_dynamics(
    experiment: Experiment, store: str | Path | None = None, scheduler: str | None = None,
    connect_timeout: float = 10.0, progress: Callable[[int, int], None] | None = None,
    started: float | None = None,
) -> DynamicsResult:  # fmt: skip
    """Run every task of ``experiment`` (``run_task``; ``surgesim.sweep.run_sweep`` with the resumable
    ``store``, here or on the Dask ``scheduler``) and summarize them (``summarize``).
    ``started``: the ``time.perf_counter()`` the run's wall time counts from (default: now)."""
    started = time.perf_counter() if started is None else started
    problem = experiment.problem
    rows = run_sweep(
        run_task, experiment.tasks(), params={"problem_sha256": problem.digest()}, store=store,
        scheduler=scheduler, workers=None if scheduler else 1, shared=problem, progress=progress,
        connect_timeout=connect_timeout,
    )  # fmt: skip
    return DynamicsResult(experiment, rows, summarize(experiment, rows), started)


@dataclass
class DynamicsResult:
    """A grid search's rows (``ROW_COLUMNS``) and summary (``TargetResult`` per optimizer and target)."""

    experiment: Experiment
    rows: list[dict]
    results: list[TargetResult]
    started: float
    wall_seconds: float = float("nan")

    def summary(self) -> dict:
        """summary.json (docs/outputs.md): the start, the grid, one entry per result, the wall time."""
        exp = self.experiment
        self.wall_seconds = time.perf_counter() - self.started
        return {
            **start_quantities(exp), "seed": exp.seed, "seeds": exp.seeds,
            "optimizers": [o.label for o in exp.optimizers], "batch_sizes": list(exp.batch_sizes),
            "target_fractions": list(exp.target_fractions), "results": [r.as_dict() for r in self.results],
            "wall_seconds": self.wall_seconds,
        }  # fmt: skip

    def write(self, out: Path | OutputDir, plot: bool = True) -> list[str]:
        """Write runs.csv, summary.json and (with ``plot``) the figures into ``out``; the names written."""
        write_csv(self.rows, out / "runs.csv", columns=ROW_COLUMNS)
        with atomic_path(out / "summary.json") as tmp:
            tmp.write_text(dumps_json(self.summary()))
        return ["runs.csv", "summary.json", *(write_figures(self.results, out) if plot else [])]

    def report(self, out: Path | OutputDir, written: list[str]) -> None:
        """Print the tables and the files written (``written``: what ``write`` returned)."""
        print_tables(self.results, self.experiment)
        figures = [f for f in written if f.endswith(".png")]
        print(f"wrote {out}/runs.csv, summary.json, problem.npz" + "".join(f", {f}" for f in figures)
              + f" in {self.wall_seconds:.1f} s")  # fmt: skip


def _file_label(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", label).strip("-")


def _points(optima) -> tuple:
    """(B, lr, log_lr_se) arrays of a list of ``surgesim.gridfit.BatchOptimum``."""
    return tuple(np.array([[o.batch_size, o.optimal_lr, o.log_lr_se] for o in optima]).T)


def write_figures(results: list[TargetResult], out: Path | OutputDir) -> list[str]:
    """grid_<optimizer>_<k>.png per optimizer and target k, and peak_vs_target.png; their names."""
    from ..plots.grid import grid_figure, peak_vs_target_figure

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


def _g(x: float | None, fmt: str = ".3g", width: int = 9) -> str:
    return f"{x:>{width}{fmt}}" if x is not None and np.isfinite(x) else f"{'-':>{width}}"


def print_tables(results: list[TargetResult], exp: Experiment) -> None:
    """Per target: each optimizer's fits and predictions, then its optimal lr per batch size."""
    for frac, target in zip(exp.target_fractions, exp.targets, strict=True):
        print(f"\ntarget loss {target:.4g} ({frac:g} of the initial loss {exp.initial_loss:.4g})")
        for r in (r for r in results if r.target_fraction == frac):
            _print_result(r)
    print("\n(optimal lr: fewest seed-averaged steps to the target; *: at the edge of the learning-rate grid, a bound "
          "only;\n se factor: the seeds' standard error of the optimal lr as a factor; lr (decr.): largest further "
          "decrease;\n lr theory: eq 9, eq 1 for SGD, at the states where the runs reached the target)")  # fmt: skip


def _print_result(r: TargetResult) -> None:
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
