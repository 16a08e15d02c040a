"""The momentum study end to end (``python -m sims.momentum``): per problem family the grid search
(``surgesim.gridsearch``, resumable on ``surgesim.sweep``), its summary and the study's rows
(``study_table``); the outputs momentum.csv, predictors.csv, summary.json, momentum.png and the
printed table (``MomentumStudyResult``); the study's options checked (``resolve_momentum_options``)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from ..gridsearch.options import resolve_grid_options
from ..gridsearch.spec import default_experiment, optimizer_spec
from ..gridsearch.summary import summarize
from ..gridsearch.task import run_task
from ..kernels.dynamics import Optimizer
from ..outputs import OutputDir, atomic_path, dumps_json
from ..progress import Progress
from ..sweep import run_sweep, write_csv
from .families import FAMILIES, STUDY_OPTIMIZERS, family_problem
from .table import PREDICTOR_COLUMNS, STUDY_COLUMNS, ratio_summary, study_table

__all__ = ["MomentumStudyResult", "run_momentum_study", "resolve_momentum_options", "MOMENTUM_QUICK",
           "MOMENTUM_LIMITS", "MOMENTUM_OPTIONS"]  # fmt: skip

MOMENTUM_QUICK = {  # --quick: a smoke run of a few seconds; options given explicitly win
    "optimizers": "sign,sgd:0.9,adam:0:0.999,adam:0.9:0.999", "batch_sizes": [16, 64, 256, 1024],
    "lr_points": 6, "seeds": 3, "targets": [0.5], "max_steps": 1500, "bootstrap": 20, "probe_steps": [1, 4],
    "probe_states": 2, "probe_trials": 4,
}  # fmt: skip
"""The options of the study's quick form (``quick``), where they were left at their defaults."""
MOMENTUM_LIMITS = {"lr_points": (3, 10**4), "max_steps": (1, 10**9), "seeds": (2, 2**31), "seed": (0, 2**63 - 1),
                   "bootstrap": (2, 10**6), "probe_states": (1, 10**4), "probe_trials": (2, 10**6)}  # fmt: skip
"""The [lo, hi] of each integer option of the study."""
MOMENTUM_OPTIONS = ("families", "optimizers", "batch_sizes", "lr_points", "targets", "max_steps", "seeds", "seed",
                    "bootstrap", "probe_steps", "probe_states", "probe_trials", "out", "scheduler", "quick", "plot",
                    "quiet")  # fmt: skip
"""The keys of the resolved options (the study's options.json), in order."""


def resolve_momentum_options(
    given: Mapping[str, Any], defaults: Mapping[str, Any]
) -> tuple[SimpleNamespace, tuple[Optimizer, ...]]:
    """The study's options (``python -m sims.momentum``), given by name, ``defaults`` the value of
    each option when not given: with ``quick``, ``MOMENTUM_QUICK``'s values where an option was
    left at its default; ``optimizers`` None: ``STUDY_OPTIMIZERS``; checked by
    ``resolve_grid_options`` within ``MOMENTUM_LIMITS`` (at least 3 batch sizes, default 8 ..
    8192 in octaves), ``families`` distinct names of ``FAMILIES``, ``probe_steps`` distinct
    integers >= 1. Returns the ``MOMENTUM_OPTIONS`` of the result, in order, and the parsed
    optimizers. Raises ValueError naming the option as `key`."""
    given = dict(given)
    if given["quick"]:
        given |= {k: v for k, v in MOMENTUM_QUICK.items() if given[k] == defaults[k]}
    if given["optimizers"] is None:
        given["optimizers"] = ",".join(optimizer_spec(o) for o in STUDY_OPTIMIZERS)
    chosen, optimizers = resolve_grid_options(given, MOMENTUM_LIMITS, min_batch_sizes=3,
                                              default_batch_sizes=tuple(2**k for k in range(3, 14)))  # fmt: skip
    fams = tuple(f.strip() for f in given["families"].split(",") if f.strip())
    if not fams or any(f not in FAMILIES for f in fams) or len(set(fams)) != len(fams):
        raise ValueError(f"`families`: choose distinct names from {', '.join(FAMILIES)}, got {given['families']!r}")
    steps = given["probe_steps"]
    if any(t < 1 for t in steps) or len(set(steps)) != len(steps):
        raise ValueError(f"`probe_steps` must be distinct integers >= 1, got {steps}")
    chosen |= {"families": fams, "probe_steps": tuple(sorted(steps))}
    return SimpleNamespace(**{k: chosen[k] for k in MOMENTUM_OPTIONS}), optimizers


def run_momentum_study(
    families: Sequence[str], optimizers: Sequence[Optimizer], batch_sizes: Sequence[int], lr_points: int,
    targets: Sequence[float], max_steps: int, seeds: int, seed: int, bootstrap: int, probe_steps: Sequence[int],
    probe_states: int, probe_trials: int, *, store: Callable[[str], Path | str] | None = None,
    scheduler: str | None = None, connect_timeout: float = 10.0, progress: Progress | None = None,
    started: float | None = None,
) -> MomentumStudyResult:  # fmt: skip
    """The study on each family (``family_problem``): ``default_experiment`` (50 further steps, no
    optimal-lr arm, CPU kernels), its tasks on ``run_sweep`` (``store(name)`` the resumable store
    store_<family>.sqlite, ``scheduler`` a Dask address or None), ``summarize`` and ``study_table``.
    ``progress(description)``: a progress bar per family's grid and predictors."""
    started = time.perf_counter() if started is None else started
    bar = progress or (lambda desc: contextlib.nullcontext(None))
    table: list[dict] = []
    predictors: list[dict] = []
    described: dict[str, dict] = {}
    for fam in families:
        problem = family_problem(fam, seed)
        exp = default_experiment(problem, list(optimizers), batch_sizes, lr_points, targets, 50, max_steps, seeds,
                                 seed, "cpu", False)  # fmt: skip
        with bar(f"{fam} grid") as tick:
            rows = run_sweep(
                run_task, exp.tasks(), params={"problem_sha256": problem.digest()},
                store=None if store is None else store(f"store_{fam}.sqlite"), scheduler=scheduler,
                workers=None if scheduler else 1, shared=problem, progress=tick, connect_timeout=connect_timeout,
            )  # fmt: skip
        results = summarize(exp, rows)
        with bar(f"{fam} predictors") as tick:
            rows_f, preds_f = study_table(exp, rows, results, fam, bootstrap, probe_steps, probe_states, probe_trials,
                                          progress=tick)  # fmt: skip
        table += rows_f
        predictors += preds_f
        described[fam] = {"dims": problem.dim, "initial_loss": exp.initial_loss, "describe": problem.describe()}
    return MomentumStudyResult(described, [o.label for o in optimizers], list(batch_sizes), list(targets), seeds,
                               seed, table, predictors, started)  # fmt: skip


@dataclass
class MomentumStudyResult:
    """The study's rows (``STUDY_COLUMNS``), predictor rows (``PREDICTOR_COLUMNS``) and setting."""

    families: dict[str, dict]
    optimizers: list[str]
    batch_sizes: list[int]
    target_fractions: list[float]
    seeds: int
    seed: int
    table: list[dict]
    predictors: list[dict]
    started: float
    wall_seconds: float = float("nan")

    def summary(self) -> dict:
        """summary.json (docs/outputs.md): the setting, the rows, the pooled ratios, the wall time."""
        self.wall_seconds = time.perf_counter() - self.started
        return {
            "families": self.families, "optimizers": self.optimizers, "batch_sizes": self.batch_sizes,
            "target_fractions": self.target_fractions, "seeds": self.seeds, "seed": self.seed,
            "results": self.table, "predictor_ratios": ratio_summary(self.predictors),
            "wall_seconds": self.wall_seconds,
        }  # fmt: skip

    def write(self, out: Path | OutputDir, plot: bool = True) -> list[str]:
        """Write momentum.csv, predictors.csv, summary.json and (with ``plot``) momentum.png; their names."""
        write_csv(self.table, out / "momentum.csv", columns=STUDY_COLUMNS)
        write_csv(self.predictors, out / "predictors.csv", columns=PREDICTOR_COLUMNS)
        with atomic_path(out / "summary.json") as tmp:
            tmp.write_text(dumps_json(self.summary()))
        if not plot:
            return ["momentum.csv", "predictors.csv", "summary.json"]
        from ..plots.momentum import momentum_figure

        title = "fitted eq-22 B_noise against Adam's beta1 (bars: bootstrap s.e. over seeds)"
        momentum_figure(self.table, title=title).savefig(out / "momentum.png", dpi=110)
        return ["momentum.csv", "predictors.csv", "summary.json", "momentum.png"]

    def report(self, out: Path | OutputDir, written: Sequence[str]) -> None:
        """Print the table, the pooled ratios and the files written (``written``: what ``write`` returned)."""
        print_table(self.table, self.predictors)
        figures = [f for f in written if f.endswith(".png")]
        print(f"wrote {out}/momentum.csv, predictors.csv, summary.json, options.json"
              + "".join(f", {f}" for f in figures) + f" in {self.wall_seconds:.1f} s")  # fmt: skip


def _g(x: float | None, fmt: str = ".3g") -> str:
    return format(x, fmt) if x is not None and np.isfinite(x) else "-"


def print_table(table: Sequence[dict], predictors: Sequence[dict]) -> None:
    """The study's rows, then each predictor's ratio to the fit pooled by ``ratio_summary``."""
    print(f"{'family':<9} {'optimizer':<18} {'target':>6} {'B_noise fit':>16} {'peak B':>14} {'eq14':>7} "
          f"{'path':>7} {'stationary':>10}")  # fmt: skip
    for r in table:
        print(f"{r['family']:<9} {r['label']:<18} {r['target_fraction']:>6g} "
              f"{_g(r['fitted_noise_batch_size']):>7} +- {_g(r['fitted_noise_batch_size_se']):<6}"
              f"{_g(r['peak_batch_size']):>6} +- {_g(r['peak_batch_size_se']):<5}"
              f"{_g(r['eq14_noise_batch_size']):>7} {_g(r['path_noise_batch_size']):>7} "
              f"{_g(r['stationary_noise_batch_size']):>10}")  # fmt: skip
    print("\npredicted / fitted B_noise, geometric mean over families, beta2 and targets (x/: s.e. factor)")
    for g in ratio_summary(predictors):
        t = f"T={g['steps']}" if g["steps"] is not None else ""
        print(f"  {g['predictor']:<15} {t:<5} {g['optimizer']:<5} beta1 {g['beta1']:<5g} {_g(g['ratio']):>7} "
              f"x/ {_g(g['ratio_se_factor'])}  (n {g['n']}, missing {g['missing']})")
    print("\n(B_noise fit: eq 22 at the step-optimal learning rates; +-: bootstrap s.e. over seeds; eq14: eq 14 "
          "at the target states (ensemble);\n path: eq 21's path average; stationary: the one-step model with "
          "stationary buffers, (2/pi) k eq14)")  # fmt: skip
