"""The momentum study's rows: per (optimizer, target) of a grid search, the fitted eq-22 B_noise and
the peak batch size with bootstrap standard errors (``STUDY_COLUMNS``), and every predictor of the
balance point scored against that fit (``PREDICTOR_COLUMNS``); ``ratio_summary`` pools the scores."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..gridsearch.spec import Experiment
from ..gridsearch.summary import TargetResult
from ..gridsearch.task import finite_or_none
from ..kernels.dynamics import Optimizer
from ..multistep_probe import multistep_probe, probe_decrease_noise_batch_size, probe_noise_batch_size
from ..run_states import RunState, probe_states_of
from .grid import bootstrap_grid_fit, steps_cube
from .predictors import large_batch_lr_grid, large_batch_steps, momentum_noise_fraction

__all__ = ["STUDY_COLUMNS", "PREDICTOR_COLUMNS", "study_table", "ratio_summary"]

STUDY_COLUMNS = (
    "family", "optimizer", "label", "beta1", "beta2", "target_fraction", "target_loss",
    "fitted_noise_batch_size", "fitted_noise_batch_size_se", "peak_batch_size", "peak_batch_size_se",
    "peak_batch_size_log_se", "eq14_noise_batch_size", "path_noise_batch_size", "stationary_noise_batch_size",
    "probe_source_batch_size", "probe_source_lr",
)  # fmt: skip
"""Columns of ``study_table``'s rows (momentum.csv; docs/outputs.md)."""

PREDICTOR_COLUMNS = (
    "family", "optimizer", "label", "beta1", "beta2", "target_fraction", "predictor", "steps", "value",
    "fitted_noise_batch_size", "ratio_to_fit", "ratio_to_fit_se", "peak_batch_size", "ratio_to_peak",
)  # fmt: skip
"""Columns of ``study_table``'s predictor rows (predictors.csv; docs/outputs.md)."""


@dataclass(frozen=True)
class _Fit:
    """One result's grid fit: eq-22 B_noise, its s.e., the peak batch size and the rows' common keys."""

    bn: float
    bn_se: float
    peak: float
    base: dict


class _LargeBatchSteps:
    """S_inf per optimizer and target (``large_batch_steps``), each optimizer computed once."""

    def __init__(self, experiment: Experiment) -> None:
        self.experiment = experiment
        self.cache: dict[Optimizer, np.ndarray] = {}

    def __call__(self, o: Optimizer) -> np.ndarray:
        exp = self.experiment
        if o not in self.cache:
            grid = large_batch_lr_grid(exp.problem, o)
            self.cache[o] = large_batch_steps(exp.problem, o, exp.targets, grid, max_steps=exp.max_steps)
        return self.cache[o]


def study_table(
    experiment: Experiment, rows: Sequence[Mapping], results: Sequence[TargetResult], family: str,
    bootstrap: int = 200, probe_steps: Sequence[int] = (1, 4, 16), probe_states: int = 4, probe_trials: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[dict], list[dict]]:  # fmt: skip
    """The momentum study's rows for one family: (``STUDY_COLUMNS`` rows, ``PREDICTOR_COLUMNS`` rows).

    Per (optimizer, target) of ``results`` (``surgesim.gridsearch.summarize``): the fitted eq-22
    B_noise and the peak batch size with bootstrap standard errors over seeds
    (``bootstrap_grid_fit``); eq 14 at the target states and eq 21's path average (from
    ``results``); for Adam the stationary-buffer model (``stationary_noise_batch_size``'s formula
    on eq 14's ensemble value); for sign and Adam the multi-step probe at each T of ``probe_steps``
    from ``probe_states_of``'s states (fresh buffers): its eq-2 B_noise (``probe``), its peak
    batch size (``probe_peak``) and its decrease-based B_noise (``probe_decrease``); for SGD and
    Adam with momentum the large-batch argument (``large_batch``: the fit without momentum times
    S_inf(without) / S_inf(with), ``large_batch_steps``), and for Adam (2 / pi) sign-SGD's fitted
    E_min / S_inf (``sign_emin``).
    """
    Bs = np.asarray(experiment.batch_sizes, dtype=np.float64)
    table, preds = [], []
    sinf = _LargeBatchSteps(experiment)
    if progress is not None:
        progress(0, len(results))
    for i, r in enumerate(results):
        row, fit, states = _study_row(experiment, rows, r, family, bootstrap, bool(probe_steps), probe_states)
        table.append(row)
        preds += _closed_form_predictors(experiment, results, r, fit, sinf)
        for T in probe_steps if states else ():
            res = multistep_probe(experiment.problem, r.optimizer, states, Bs, int(T), None,
                                  probe_trials, experiment.seed, bootstrap=2)  # fmt: skip
            preds.append(_predictor_row("probe", int(T), probe_noise_batch_size(res), fit))
            preds.append(_predictor_row("probe_peak", int(T), res.peak_batch_size, fit))
            preds.append(_predictor_row("probe_decrease", int(T), probe_decrease_noise_batch_size(res), fit))
        if progress is not None:
            progress(i + 1, len(results))
    return table, preds


def _study_row(
    experiment: Experiment, rows: Sequence[Mapping], r: TargetResult, family: str, bootstrap: int, probe: bool,
    probe_states: int,
) -> tuple[dict, _Fit, list[RunState]]:  # fmt: skip
    """One ``STUDY_COLUMNS`` row, its fit and the states the probe starts from (none unless ``probe``
    and the optimizer is sign or Adam)."""
    Bs = np.asarray(experiment.batch_sizes, dtype=np.float64)
    o = r.optimizer
    ident = (o.name, o.beta1, o.beta2, o.eps)
    mine = [x for x in rows if (x["optimizer"], x["beta1"], x["beta2"], x["eps"]) == ident
            and math.isclose(x["target_loss"], r.target_loss, rel_tol=1e-12)]  # fmt: skip
    cube = steps_cube(mine, np.asarray(r.lrs), Bs, experiment.seeds)
    bn, bn_se, peak, peak_se, log_peak_se = bootstrap_grid_fit(cube, np.asarray(r.lrs), Bs, bootstrap,
                                                               experiment.seed)  # fmt: skip
    eq14 = r.predicted_noise_batch_size
    stat = 2.0 / math.pi * momentum_noise_fraction(o.beta1) * eq14 if o.name == "adam" else math.nan
    base = {"family": family, "optimizer": o.name, "label": o.label, "beta1": o.beta1, "beta2": o.beta2,
            "target_fraction": r.target_fraction}  # fmt: skip
    states: list[RunState] = []
    src_b, src_lr = 0, math.nan
    if o.name in ("sign", "adam") and probe:
        states, src_b, src_lr = probe_states_of(experiment, r, mine, probe_states, experiment.seed)
    row = base | {
        "target_loss": r.target_loss, "fitted_noise_batch_size": finite_or_none(bn),
        "fitted_noise_batch_size_se": finite_or_none(bn_se), "peak_batch_size": finite_or_none(peak),
        "peak_batch_size_se": finite_or_none(peak_se), "peak_batch_size_log_se": finite_or_none(log_peak_se),
        "eq14_noise_batch_size": finite_or_none(eq14), "path_noise_batch_size": finite_or_none(r.path_noise_batch_size),
        "stationary_noise_batch_size": finite_or_none(stat), "probe_source_batch_size": src_b or None,
        "probe_source_lr": finite_or_none(src_lr),
    }  # fmt: skip
    return row, _Fit(bn, bn_se, peak, base), states


def _closed_form_predictors(
    experiment: Experiment, results: Sequence[TargetResult], r: TargetResult, fit: _Fit, sinf: _LargeBatchSteps
) -> list[dict]:
    """The predictor rows that need no probe: eq 14, eq 21's path average, the stationary model
    (Adam), the large-batch argument and sign's E_min over S_inf (SGD, Adam)."""
    o = r.optimizer
    out = [_predictor_row("eq14", None, r.predicted_noise_batch_size, fit),
           _predictor_row("path_eq21", None, r.path_noise_batch_size, fit)]  # fmt: skip
    if o.name == "adam":
        stationary = 2.0 / math.pi * momentum_noise_fraction(o.beta1) * r.predicted_noise_batch_size
        out.append(_predictor_row("stationary", 1, stationary, fit))
    # (d) E_min is not changed by momentum, S_min falls to the large-batch steps S_inf:
    # B(o) = B(anchor) S_inf(anchor) / S_inf(o), anchor = the same optimizer without momentum
    # (the NQM argument); for Adam also (2 / pi) E_min(sign) / S_inf(o), with sign's fitted E_min
    # (RMS-normalised steps at small B: E_min is 2 / pi of sign's, see README)
    if o.name in ("adam", "sgd"):
        tj = experiment.target_fractions.index(r.target_fraction)
        s_inf = sinf(o)[tj]
        anchor = next((x for x in results if x.optimizer.name == o.name and x.optimizer.beta1 == 0
                       and x.optimizer.beta2 == o.beta2 and x.target_fraction == r.target_fraction),
                      None)  # fmt: skip
        if anchor is not None and o.beta1 > 0:
            value = anchor.fitted_noise_batch_size * sinf(anchor.optimizer)[tj] / s_inf
            out.append(_predictor_row("large_batch", None, value, fit))
        sign = next((x for x in results if x.optimizer.name == "sign" and x.target_fraction == r.target_fraction),
                    None)  # fmt: skip
        if o.name == "adam" and sign is not None and sign.steps_fit.eq22:
            out.append(_predictor_row("sign_emin", None, 2.0 / math.pi * sign.steps_fit.eq22[2] / s_inf, fit))
    return out


def _predictor_row(name: str, steps: int | None, value: float, fit: _Fit) -> dict:
    """One ``PREDICTOR_COLUMNS`` row: ``value`` scored against the fit (B_noise, its s.e.) and the peak."""
    bn, bn_se, peak = fit.bn, fit.bn_se, fit.peak
    ok = np.isfinite(value) and value > 0 and np.isfinite(bn) and bn > 0
    ratio = value / bn if ok else math.nan
    return fit.base | {
        "predictor": name, "steps": steps, "value": finite_or_none(value),
        "fitted_noise_batch_size": finite_or_none(bn),
        "ratio_to_fit": finite_or_none(ratio), "ratio_to_fit_se": finite_or_none(ratio * bn_se / bn) if ok else None,
        "peak_batch_size": finite_or_none(peak),
        "ratio_to_peak": finite_or_none(value / peak) if np.isfinite(value) and peak > 0 else None,
    }  # fmt: skip


def ratio_summary(preds: Sequence[dict]) -> list[dict]:
    """Per (predictor, T, optimizer name, beta1): the geometric mean of ratio_to_fit over families,
    beta2 values and targets, with the standard error of that mean (in log, as a factor), and the
    number of ratios (non-finite ones are counted apart as ``missing``)."""
    groups: dict[tuple, list] = {}
    for p in preds:
        key = (p["predictor"], p["steps"], p["optimizer"], p["beta1"])
        groups.setdefault(key, []).append(p["ratio_to_fit"])
    out = []
    for (name, steps, opt, b1), vals in sorted(groups.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        v = np.array([x for x in vals if x is not None and x > 0], dtype=np.float64)
        logs = np.log(v)
        out.append({
            "predictor": name, "steps": steps, "optimizer": opt, "beta1": b1, "n": int(v.size),
            "missing": len(vals) - int(v.size), "ratio": finite_or_none(np.exp(logs.mean())) if v.size else None,
            "ratio_se_factor": finite_or_none(np.exp(logs.std(ddof=1) / math.sqrt(v.size))) if v.size >= 2 else None,
        })  # fmt: skip
    return out
