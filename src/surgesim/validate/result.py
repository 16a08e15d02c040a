"""The result of a validation run and its outputs (docs/outputs.md): validate.csv, predictors.csv,
curves.csv, runs.csv, summary.json, options.json, fig11_validate.png (and problem.npz on a
quadratic), and the table printed at the end.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..outputs import OutputDir, atomic_path, dumps_json
from .optimal_lr import VALIDATE_COLUMNS, TargetValidation, finite_or_none
from .options import ValidationOptions
from .predictors import CURVE_COLUMNS, PREDICTOR_COLUMNS, PREDICTOR_NAMES, score_predictor
from .stages import load_average, minutes

if TYPE_CHECKING:
    from ..problem import QuadraticProblem

__all__ = ["RUN_COLUMNS", "ADAM_PREDICTED_NOTE", "ValidationResult", "format_table"]

RUN_COLUMNS = ("lr", "batch_size", "seed", "target_loss", "steps", "examples", "further_decrease")
"""runs.csv's columns: one row per run and target loss."""

ADAM_PREDICTED_NOTE = {
    "network": "probe_adam's value: the peak over B of the optimal lr of --probe-steps real Adam steps",
    "quadratic": "surgesim.momentum.adam_noise_batch_size: eq 2 fitted to the optimal lr of 4 real Adam steps "
    "from fresh buffers at the reference states (the probe's peak where the fit fails)",
}
"""summary.json's ``adam_predicted``: what the predictor of that name is on each kind of problem."""


@dataclass
class ValidationResult:
    """A validation run: its runs (rows of ``surgesim.dynamics.run_task`` or
    ``surgesim.workloads.protocol.run_task``), the statistics per target, the predictors measured
    per target (name -> (value, s.e.)), the predicted curves (curves.csv rows) and ``context``,
    summary.json's leading keys (the problem or workload, the reference run, the coarse grid)."""

    options: ValidationOptions
    rows: list[dict]
    results: list[TargetValidation]
    measured: dict[float, dict[str, tuple[float, float]]]
    curves: list[dict]
    context: dict[str, Any]
    wall_seconds: float
    problem: QuadraticProblem | None = field(default=None, repr=False)  # a quadratic's, saved as problem.npz

    def targets(self) -> list[dict]:
        """summary.json's ``targets``: per target the statistics and every predictor's score."""
        f = finite_or_none
        out = []
        for res in self.results:
            out.append({
                "target_loss": res.target_loss, "batch_sizes": res.batch_sizes.tolist(),
                "lr_opt": [f(x) for x in res.lr_opt], "lr_opt_se": [f(x) for x in res.lr_opt_se],
                "lr_opt_lo": [f(x) for x in res.lr_opt_lo], "lr_opt_hi": [f(x) for x in res.lr_opt_hi],
                "steps": [f(x) for x in res.steps], "surge_statistic": f(res.surge_statistic),
                "surge_p_value": f(res.surge_p_value), "surge_top": res.top, "peak_batch_size": f(res.peak_batch_size),
                "peak_batch_size_ci": [f(x) for x in res.peak_batch_size_ci], "peak_interior": res.peak_interior,
                "fitted_noise_batch_size": f(res.noise_batch_size),
                "fitted_noise_batch_size_se": f(res.noise_batch_size_se),
                "s_min": f(res.s_min), "s_min_se": f(res.s_min_se), "predictors": self.scores(res),
            })  # fmt: skip
        return out

    def scores(self, res: TargetValidation) -> dict[str, dict]:
        """Every predictor (``PREDICTOR_NAMES``) at one target, scored against its eq-22 fit."""
        measured = self.measured.get(res.target_loss, {})
        return {
            name: score_predictor(name, *measured.get(name, (math.nan, math.nan)), res.noise_batch_size,
                                  res.noise_batch_size_se).as_dict()
            for name in PREDICTOR_NAMES
        }  # fmt: skip

    def summary(self) -> dict:
        """summary.json (docs/outputs.md)."""
        o = self.options
        return {
            **self.context, "optimizer": "adam", "beta1": o.beta1, "beta2": o.beta2, "seeds": o.seeds,
            "replicates": o.replicates, "runs": self.runs(),
            "adam_predicted": ADAM_PREDICTED_NOTE["network" if o.workload else "quadratic"],
            "targets": self.targets(), "wall_seconds": self.wall_seconds, "load_average": load_average(),
        }  # fmt: skip

    def runs(self) -> int:
        """The number of distinct runs (learning rate, batch size, seed)."""
        return len({(r["lr"], r["batch_size"], r["seed"]) for r in self.rows})

    def write(self, out: OutputDir | Path) -> dict:
        """Write every output to ``out / NAME`` (an ``OutputDir`` or a folder); returns the summary."""
        from ..sweep import write_csv

        _write_json(dataclasses.asdict(self.options), out / "options.json")
        if self.problem is not None:
            self.problem.save(out / "problem.npz")
        write_csv([{c: r[c] for c in RUN_COLUMNS} for r in self.rows], out / "runs.csv", RUN_COLUMNS)
        vrows = [r for res in self.results for r in res.rows()]
        write_csv(vrows or [dict.fromkeys(VALIDATE_COLUMNS)], out / "validate.csv", VALIDATE_COLUMNS)
        summary = self.summary()
        prows = [{"target_loss": t["target_loss"], "predictor": name, **s}
                 for t in summary["targets"] for name, s in t["predictors"].items()]  # fmt: skip
        write_csv(prows or [dict.fromkeys(PREDICTOR_COLUMNS)], out / "predictors.csv", PREDICTOR_COLUMNS)
        write_csv(self.curves or [dict.fromkeys(CURVE_COLUMNS)], out / "curves.csv", CURVE_COLUMNS)
        _write_json(summary, out / "summary.json")
        if self.options.plot and self.results:
            from ..plots.validate import validate_figure

            o = self.options
            fig = validate_figure(self.rows, self.results, self.curves,
                                  title=f"{o.workload or 'quadratic'}: Adam({o.beta1:g}, {o.beta2:g})")  # fmt: skip
            fig.savefig(out / "fig11_validate.png", dpi=110)
        return summary

    def report(self, summary: dict, out: OutputDir | Path) -> str:
        """The table printed at the end of a run and the line naming what was written to ``out``."""
        return "\n".join([
            format_table(summary["targets"]),
            f"{summary['runs']} runs in {minutes(self.wall_seconds)}; wrote {out}/validate.csv, predictors.csv, "
            "curves.csv, runs.csv, summary.json" + (", fig11_validate.png" if self.options.plot else ""),
        ])  # fmt: skip


def _write_json(obj: Any, path: os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(dumps_json(obj))


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def format_table(targets: Sequence[dict]) -> str:
    """summary.json's ``targets`` as the text table printed at the end of a run: per target the
    optimal lr per B with its s.e. and 68% interval and S, the peak, the surge p-value, the eq-22
    B_noise and each predictor as a multiple of it."""
    lines = []
    for t in targets:
        lines.append(f"\ntarget loss {t['target_loss']:.4g}:")
        lines.append(f"{'B':>7} {'lr_opt':>10} {'+- s.e.':>9} {'68% interval':>21} {'S':>9}")
        for b, lr, se, lo, hi, s in zip(t["batch_sizes"], t["lr_opt"], t["lr_opt_se"], t["lr_opt_lo"], t["lr_opt_hi"],
                                        t["steps"], strict=True):  # fmt: skip
            lines.append(f"{b:>7g} {_fmt(lr):>10} {_fmt(se):>9} {_fmt(lo):>10}-{_fmt(hi):<10} {_fmt(s):>9}")
        lo, hi = t["peak_batch_size_ci"]
        lines.append(f"peak batch size {_fmt(t['peak_batch_size'])} (68%: {_fmt(lo)}-{_fmt(hi)}"
                     f"{'' if t['peak_interior'] else ', at the grid edge'}); "
                     f"surge p-value {_fmt(t['surge_p_value'])}; "
                     f"B_noise (eq 22) {_fmt(t['fitted_noise_batch_size'])} "
                     f"+- {_fmt(t['fitted_noise_batch_size_se'])}")  # fmt: skip
        lines.append("  ".join(f"{k} {_fmt(v['value'])} (x{_fmt(math.exp(v['log_ratio_to_fit']))} of fit)"
                               if v["log_ratio_to_fit"] is not None else f"{k} {_fmt(v['value'])}"
                               for k, v in t["predictors"].items()))  # fmt: skip
    return "\n".join(lines)
