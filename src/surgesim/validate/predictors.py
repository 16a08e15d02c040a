"""The predictors of the noise batch size scored against the validation (``surgesim.validate``):
each predictor's value (a batch size) with its s.e. and its log ratio to eq 22's fitted B_noise,
and the predicted lr*(B) curves scaled to the measured optimal learning rate at one batch size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .optimal_lr import TargetValidation, finite_or_none

__all__ = [
    "PREDICTOR_COLUMNS",
    "PREDICTOR_NAMES",
    "CURVE_COLUMNS",
    "PredictorScore",
    "score_predictor",
    "scaled_curve",
    "curve_rows",
    "PredictorFn",
]

PREDICTOR_COLUMNS = ("target_loss", "predictor", "value", "se", "log_ratio_to_fit", "log_ratio_se")
PREDICTOR_NAMES = ("b_simple", "b_crit", "eq14", "adam_predicted", "probe_sign", "probe_adam")


@dataclass(frozen=True)
class PredictorScore:
    """One predictor at one target: its value (a batch size) with s.e., and
    log(value / fitted B_noise) with its s.e. (delta method, independent errors)."""

    name: str
    value: float
    se: float
    log_ratio_to_fit: float
    log_ratio_se: float

    def as_dict(self) -> dict:
        return {k: finite_or_none(getattr(self, k)) for k in ("value", "se", "log_ratio_to_fit", "log_ratio_se")}


def score_predictor(name: str, value: float, se: float, fit: float, fit_se: float) -> PredictorScore:
    """Var(log(v / f)) = (se_v / v)^2 + (se_f / f)^2; NaN where either is not finite and > 0."""
    if value is None or fit is None or not (np.isfinite(value) and value > 0 and np.isfinite(fit) and fit > 0):
        return PredictorScore(name, _nan(value), _nan(se), math.nan, math.nan)
    ratio = math.log(value / fit)
    rse = math.sqrt((_nan(se) / value) ** 2 + (_nan(fit_se) / fit) ** 2)
    return PredictorScore(name, float(value), _nan(se), ratio, rse)


def _nan(x) -> float:
    return math.nan if x is None else float(x)


def scaled_curve(
    curve_b: Sequence[float], curve_lr: Sequence[float], grid_b: Sequence[float], grid_lr: Sequence[float]
) -> tuple[np.ndarray, float]:
    """A predicted lr*(B) curve scaled to the measured optimum at one batch size: the grid batch
    size nearest (in log B) to the middle of the range both cover, where the curve is interpolated
    linearly in (log B, log lr). Returns (the curve x factor at ``curve_b``, the reference B)."""
    cb, cl = np.asarray(curve_b, float), np.asarray(curve_lr, float)
    gb, gl = np.asarray(grid_b, float), np.asarray(grid_lr, float)
    ok_c = np.isfinite(cl) & (cl > 0)
    ok_g = np.isfinite(gl) & (gl > 0) & (gb >= cb[ok_c].min(initial=np.inf)) & (gb <= cb[ok_c].max(initial=-np.inf))
    if ok_c.sum() < 2 or not ok_g.any():
        return np.full(cb.shape, np.nan), math.nan
    order = np.argsort(cb[ok_c])
    xs, ys = np.log(cb[ok_c][order]), np.log(cl[ok_c][order])
    cand = gb[ok_g]
    mid = 0.5 * (math.log(cand.min()) + math.log(cand.max()))
    j = int(np.argmin(np.abs(np.log(cand) - mid)))
    b_ref = float(cand[j])
    factor = float(gl[ok_g][j]) / float(np.exp(np.interp(math.log(b_ref), xs, ys)))
    return cl * factor, b_ref


PredictorFn = Callable[..., tuple[float, float]]
"""A predictor: called with keyword arguments of its context, returns (value, s.e.)."""


CURVE_COLUMNS = ("target_loss", "predictor", "batch_size", "lr_predicted", "lr_scaled", "reference_batch_size")


def curve_rows(
    target: float, name: str, curve_b: Sequence[float], curve_lr: Sequence[float], result: TargetValidation
) -> list[dict]:
    """curves.csv rows (``CURVE_COLUMNS``) of one predicted lr*(B) curve at one target, scaled to
    the measured optimum of ``result`` (``scaled_curve``)."""
    scaled, b_ref = scaled_curve(curve_b, curve_lr, result.batch_sizes, result.lr_opt)
    return [{"target_loss": target, "predictor": name, "batch_size": float(b), "lr_predicted": finite_or_none(x),
             "lr_scaled": finite_or_none(y), "reference_batch_size": finite_or_none(b_ref)}
            for b, x, y in zip(curve_b, curve_lr, scaled, strict=True)]  # fmt: skip
