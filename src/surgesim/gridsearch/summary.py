"""The grid search's summary: per optimizer and target, the optimal learning rates and the fits of
the grid (``surgesim.gridfit``), beside the theory at the states where the runs reached the target."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from ..fit import CurveFit
from ..gridfit import GridFit, fit_grid, optimal_lr_per_batch
from ..kernels.dynamics import Optimizer
from ..multistep_probe import adam_noise_batch_size
from ..problem import QuadraticProblem
from ..run_states import RunState, probe_states_of
from ..theory import fit_noise_batch_size
from .problem import diag_trace_lmax
from .spec import Experiment
from .task import finite_or_none as _none

__all__ = [
    "TargetResult",
    "summarize",
    "summarize_arm",
    "path_noise_batch_size",
    "adam_prediction",
    "ADAM_PROBE_STATES",
]


@dataclass(frozen=True)
class TargetResult:
    """Everything measured and predicted for one optimizer at one target loss.

    steps_fit / decrease_fit: ``surgesim.gridfit.GridFit`` of the grid with the fewest-steps and
    the largest-further-decrease criteria. decrease: (n_B, n_lr) seed-mean further decrease (nan
    where some seed did not reach the target), on ``batch_sizes`` x ``lrs``.
    seed_peaks: the peak batch size of each seed alone (nan where it has no optimum).
    predicted_*: the theory at the states where the runs at the step-optimal learning rates
    reached the target (module docstring); predicted_lr holds eq 9 (eq 1 for SGD) per batch size.
    path_noise_batch_size: eq 21's path average along those runs (``PATH_NOTE``).
    path_noise_batch_size_adam: for Adam, the package's predictor of its balance point along the
    run (``surgesim.multistep_probe.adam_noise_batch_size``: the multi-step probe at the states where runs
    at the grid's peak batch size are halfway, in log loss, to the target; at the start state if no
    run has an optimum); nan for the other optimizers. path_noise_batch_size_adam_source: its
    ``AdamPrediction.source`` ("eq2_fit" or "probe_peak", prefixed "start:" for the fallback).
    optimal_arm: ``summarize_arm`` of the per-step optimal-lr arm (None without it).
    """

    optimizer: Optimizer
    target_fraction: float
    target_loss: float
    batch_sizes: np.ndarray
    lrs: np.ndarray
    decrease: np.ndarray
    steps_fit: GridFit
    decrease_fit: GridFit
    seed_peaks: np.ndarray
    predicted_noise_batch_size: float
    predicted_peak_lr: float
    predicted_lr: np.ndarray
    path_noise_batch_size: float = math.nan
    optimal_arm: dict | None = None
    path_noise_batch_size_adam: float = math.nan
    path_noise_batch_size_adam_source: str = ""

    @property
    def optimal_lr(self) -> np.ndarray:
        """(B, lr) pairs: the step-optimal learning rate per batch size (nan: none reached)."""
        return np.array([[o.batch_size, o.optimal_lr] for o in self.steps_fit.optima]).reshape(-1, 2)

    @property
    def peak_batch_size(self) -> float:
        return self.steps_fit.peak_batch_size

    @property
    def predicted_peak_batch_size(self) -> float:
        """The batch size where ``predicted_lr`` peaks (nan if it is nowhere finite)."""
        ok = np.isfinite(self.predicted_lr)
        return float(self.batch_sizes[ok][np.argmax(self.predicted_lr[ok])]) if ok.any() else math.nan

    @property
    def fitted_noise_batch_size(self) -> float:
        """B_noise by eq 22 (nan with fewer than two batch sizes that reached the target)."""
        return self.steps_fit.eq22[0] if self.steps_fit.eq22 else math.nan

    def as_dict(self) -> dict:
        """A JSON-ready entry (non-finite numbers as None)."""
        fs, fd = self.steps_fit, self.decrease_fit
        eq22 = fs.eq22 or (math.nan,) * 3

        def pairs(optima, attr):
            return [[o.batch_size, _none(getattr(o, attr))] for o in optima]

        return {
            "optimizer": self.optimizer.name, "beta1": self.optimizer.beta1, "beta2": self.optimizer.beta2,
            "label": self.optimizer.label, "target_fraction": self.target_fraction, "target_loss": self.target_loss,
            "fitted_noise_batch_size": _none(eq22[0]), "s_min": _none(eq22[1]), "e_min": _none(eq22[2]),
            "predicted_noise_batch_size": _none(self.predicted_noise_batch_size),
            "path_noise_batch_size": _none(self.path_noise_batch_size),
            "path_noise_batch_size_adam": _none(self.path_noise_batch_size_adam),
            "path_noise_batch_size_adam_source": self.path_noise_batch_size_adam_source or None,
            "peak_batch_size": _none(self.peak_batch_size),
            "predicted_peak_batch_size": _none(self.predicted_peak_batch_size),
            "seed_peak_batch_sizes": [_none(x) for x in self.seed_peaks],
            "optimal_lr": pairs(fs.optima, "optimal_lr"),
            "optimal_lr_log_se": pairs(fs.optima, "log_lr_se"),
            "optimal_lr_at_edge": [[o.batch_size, o.at_edge] for o in fs.optima],
            "steps": pairs(fs.optima, "steps"),
            "optimal_lr_decrease": pairs(fd.optima, "optimal_lr"),
            "optimal_lr_decrease_log_se": pairs(fd.optima, "log_lr_se"),
            "peak_batch_size_decrease": _none(fd.peak_batch_size),
            "peak_lr_eq23": _none(fs.peak_lr) if fs.source == "eq22" else None,
            "predicted_peak_lr": _none(self.predicted_peak_lr),
            "predicted_lr": [[float(b), _none(x)] for b, x in zip(self.batch_sizes, self.predicted_lr, strict=True)],
            "curves": {name: _curve_dict(c) for name, c in fs.curves.items()},
            "best_curve": fs.best_model,
            "optimal_lr_arm": self.optimal_arm,
        }  # fmt: skip


def _curve_dict(c: CurveFit) -> dict:
    return {"noise_batch_size": _none(c.noise_batch_size), "peak_lr": _none(c.peak_lr), "rss": c.rss, "aic": c.aic}


def _column(rows: Sequence[Mapping], name: str) -> np.ndarray:
    return np.array([np.nan if r[name] is None else r[name] for r in rows], dtype=np.float64)


def _chosen(rows: Sequence[Mapping], fit: GridFit) -> np.ndarray:
    """Mask of the rows at each batch size's step-optimal learning rate (the grid point nearest
    to it in log lr) that reached the target."""
    lr, b = _column(rows, "lr"), _column(rows, "batch_size")
    chosen = np.zeros(len(rows), dtype=bool)
    for o in fit.optima:
        at_b = b == o.batch_size
        if np.isfinite(o.optimal_lr) and at_b.any():
            grid = np.unique(lr[at_b])
            nearest = grid[np.argmin(np.abs(np.log(grid / o.optimal_lr)))]
            chosen |= at_b & (lr == nearest)
    return chosen & np.isfinite(_column(rows, "steps"))


def path_noise_batch_size(rows: Sequence[Mapping]) -> float:
    """Eq 21's path average over an ensemble of runs: sum of their integrals of B_noise ds over
    the sum of their integrals of ds (``PATH_NOTE``); nan without path integrals."""
    e_min, s_min = _column(rows, "path_e_min"), _column(rows, "path_s_min")
    ok = np.isfinite(e_min) & np.isfinite(s_min)
    total = float(np.sum(s_min[ok]))
    return float(np.sum(e_min[ok])) / total if ok.any() and total > 0 else math.nan


def _predict(opt: Optimizer, problem: QuadraticProblem, rows: Sequence[Mapping], Bs: np.ndarray, chosen: np.ndarray):
    """Theory over the states of the ``chosen`` rows (module docstring): (B_noise, eps_max, eps_opt per B)."""
    H, sigma = problem.hessian, problem.sigma
    hdiag, trace, _ = diag_trace_lmax(H)
    b = _column(rows, "batch_size")
    predicted = np.full(Bs.size, np.nan)
    if not chosen.any():
        return math.nan, math.nan, predicted
    mean = {k: _column(rows, k)[chosen].mean() for k in ("off_diagonal", "signal", "grad_sq", "grad_hgrad")}
    if opt.name == "sgd":
        # eq 1 (McCandlish et al.): B_noise = tr(H Sigma) / G'HG, eps_max = G'G / G'HG
        bn = float(np.dot(hdiag, sigma**2)) / mean["grad_hgrad"]
        peak = mean["grad_sq"] / mean["grad_hgrad"]
    else:
        # eq 14 and eq 16 with the ensemble's off-diagonal sum and S
        off = mean["off_diagonal"]
        bn = math.pi * trace / (2.0 * off) if off > 0 else math.inf
        peak = mean["signal"] / (2.0 * math.sqrt(off * trace)) if off > 0 else math.inf
    for i, B in enumerate(Bs):
        sel = chosen & (b == B)
        if sel.any():
            if opt.name == "sgd":
                g2, ghg = _column(rows, "grad_sq")[sel].mean(), _column(rows, "grad_hgrad")[sel].mean()
                predicted[i] = g2 / (ghg + float(np.dot(hdiag, sigma**2)) / B)
            else:
                predicted[i] = _column(rows, "eq9_numerator")[sel].mean() / _column(rows, "eq9_denominator")[sel].mean()
    return bn, peak, predicted


def summarize(experiment: Experiment, rows: Sequence[Mapping], adam_predictor: bool = True) -> list[TargetResult]:
    """One ``TargetResult`` per (optimizer, target), in the experiment's order; with
    ``adam_predictor``, each Adam result's ``path_noise_batch_size_adam`` (``adam_prediction``)."""
    out = []
    Bs = np.asarray(experiment.batch_sizes, dtype=np.float64)
    for opt, grid in zip(experiment.optimizers, experiment.lrs, strict=True):
        ident = (opt.name, opt.beta1, opt.beta2, opt.eps)
        mine = [r for r in rows if (r["optimizer"], r["beta1"], r["beta2"], r["eps"]) == ident]
        arm = [r for r in mine if r.get("lr_rule", "constant") == "optimal"]
        mine = [r for r in mine if r.get("lr_rule", "constant") == "constant"]
        lrs = np.asarray(grid)
        for frac, target in zip(experiment.target_fractions, experiment.targets, strict=True):
            sel = [r for r in mine if math.isclose(r["target_loss"], target, rel_tol=1e-12)]
            if not sel:
                raise ValueError(f"no rows for {opt.label} at target {target:.6g}")
            arm_rows = [r for r in arm if math.isclose(r["target_loss"], target, rel_tol=1e-12)]
            lr, b, seed = _column(sel, "lr"), _column(sel, "batch_size"), _column(sel, "seed")
            steps, dec = _column(sel, "steps"), _column(sel, "further_decrease")
            fs = fit_grid(lr, b, steps, seed=seed, steps=steps, maximize=False)
            fd = fit_grid(lr, b, dec, seed=seed, maximize=True)
            peaks = []
            for s in np.unique(seed):
                one = seed == s
                optima = optimal_lr_per_batch(lr[one], b[one], steps[one], maximize=False)
                ok = [o for o in optima if np.isfinite(o.optimal_lr)]
                peaks.append(max(ok, key=lambda o: o.optimal_lr).batch_size if ok else math.nan)
            heat = np.full((Bs.size, lrs.size), np.nan)
            for i, B in enumerate(Bs):
                for k, x in enumerate(lrs):
                    cell = (b == B) & (lr == x)
                    if cell.any():
                        heat[i, k] = dec[cell].mean()  # nan if any seed missed the target
            chosen = _chosen(sel, fs)
            bn, peak, pred = _predict(opt, experiment.problem, sel, Bs, chosen)
            path = path_noise_batch_size([r for r, c in zip(sel, chosen, strict=True) if c])
            res = TargetResult(opt, frac, target, Bs, lrs, heat, fs, fd, np.array(peaks), bn, peak, pred, path,
                               summarize_arm(arm_rows, Bs) if arm_rows else None)  # fmt: skip
            if adam_predictor and opt.name == "adam":
                value, source = adam_prediction(experiment, res)
                res = replace(res, path_noise_batch_size_adam=value, path_noise_batch_size_adam_source=source)
            out.append(res)
    return out


ADAM_PROBE_STATES = 4
"""Runs whose halfway states ``adam_prediction`` probes (8 minibatch sequences each)."""


def adam_prediction(experiment: Experiment, result: TargetResult) -> tuple[float, str]:
    """(path_noise_batch_size_adam, source) of one Adam result: ``surgesim.multistep_probe.adam_noise_batch_size``
    at the states of ``ADAM_PROBE_STATES`` runs at the grid's peak batch size, halfway in log loss
    to the target (``surgesim.run_states.probe_states_of``), over the experiment's batch sizes; at the
    start state (fresh buffers) when the grid has no optimum (source prefixed "start:")."""
    states, _, _ = probe_states_of(experiment, result, (), ADAM_PROBE_STATES, experiment.seed)
    prefix = ""
    if not states:
        d0 = experiment.delta0
        zero = np.zeros_like(d0)
        states, prefix = [RunState(d0, zero, zero, 0, experiment.initial_loss)], "start:"
    pred = adam_noise_batch_size(experiment.problem, result.optimizer, states, experiment.batch_sizes,
                                 seed=experiment.seed)  # fmt: skip
    return pred.noise_batch_size, prefix + pred.source


def summarize_arm(rows: Sequence[Mapping], Bs: np.ndarray) -> dict:
    """The per-step optimal-lr arm at one target: seed-mean steps S per batch size (nan where a
    seed missed the target), E = B S, eq 22 on them, and the path average of its runs (eq 21)."""
    b, steps = _column(rows, "batch_size"), _column(rows, "steps")
    S = np.array([steps[b == B].mean() if np.any(b == B) else math.nan for B in Bs])
    ok = np.isfinite(S) & (S > 0)
    eq22 = fit_noise_batch_size(S[ok], Bs[ok] * S[ok]) if ok.sum() >= 2 else (math.nan,) * 3
    return {
        "fitted_noise_batch_size": _none(eq22[0]), "s_min": _none(eq22[1]), "e_min": _none(eq22[2]),
        "path_noise_batch_size": _none(path_noise_batch_size(rows)),
        "steps": [[float(B), _none(x)] for B, x in zip(Bs, S, strict=True)],
        "examples": [[float(B), _none(B * x)] for B, x in zip(Bs, S, strict=True)],
    }  # fmt: skip
