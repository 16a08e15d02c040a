"""The momentum study (``python -m sims.momentum``): the grid search of ``surgesim.gridsearch`` for
Adam and SGD with momentum on problem families, the grid's fit with bootstrap errors over seeds,
and every predictor of the balance point scored against it.

Modules: ``families`` (the study's optimizers and problems), ``predictors`` (the stationary-buffer
model and the large-batch argument), ``grid`` (eq 22 and the peak from a cube of steps, bootstrap),
``table`` (the study's rows, ``study_table``), ``run`` (``run_momentum_study``: the study end to end;
``resolve_momentum_options``: its options).
The multi-step probe and the Adam predictor are in ``surgesim.multistep_probe``.
"""

from __future__ import annotations

from .families import FAMILIES, STUDY_OPTIMIZERS, family_problem
from .grid import bootstrap_grid_fit, grid_fit_from_cube, steps_cube
from .predictors import large_batch_lr_grid, large_batch_steps, momentum_noise_fraction, stationary_noise_batch_size
from .run import MOMENTUM_QUICK, MomentumStudyResult, resolve_momentum_options, run_momentum_study
from .table import PREDICTOR_COLUMNS, STUDY_COLUMNS, ratio_summary, study_table

__all__ = [
    "FAMILIES",
    "STUDY_OPTIMIZERS",
    "family_problem",
    "steps_cube",
    "grid_fit_from_cube",
    "bootstrap_grid_fit",
    "momentum_noise_fraction",
    "stationary_noise_batch_size",
    "large_batch_lr_grid",
    "large_batch_steps",
    "STUDY_COLUMNS",
    "PREDICTOR_COLUMNS",
    "study_table",
    "ratio_summary",
    "MomentumStudyResult",
    "run_momentum_study",
    "resolve_momentum_options",
    "MOMENTUM_QUICK",
]
