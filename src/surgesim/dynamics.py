"""The paper's grid-search protocol (Li et al. 2024, Section 3.2-3.3) on a noisy quadratic: the
names of ``surgesim.gridsearch``, re-exported where they lived before that package.

New code imports from ``surgesim.gridsearch`` (``problem``, ``spec``, ``task``, ``summary``, ``run``).
"""

from __future__ import annotations

from .fit import CurveFit as CurveFit
from .gridfit import GridFit as GridFit
from .gridfit import fit_grid as fit_grid
from .gridfit import optimal_lr_per_batch as optimal_lr_per_batch
from .gridsearch import ADAM_PROBE_STATES as ADAM_PROBE_STATES
from .gridsearch import (
    DEFAULT_BATCH_SIZES,
    DEFAULT_OPTIMIZERS,
    PATH_NOTE,
    ROW_COLUMNS,
    Experiment,
    Optimizer,
    TargetResult,
    adam_prediction,
    default_experiment,
    default_lr_grid,
    default_problem,
    initial_delta,
    path_noise_batch_size,
    run_experiment,
    run_task,
    summarize,
    summarize_arm,
)
from .hessian import Dense as Dense
from .hessian import Diagonal as Diagonal
from .hessian import Hessian as Hessian
from .kernels.dynamics import StepRule as StepRule
from .kernels.dynamics import trajectory_key as trajectory_key
from .problem import QuadraticProblem as QuadraticProblem
from .problem import surge_problem as surge_problem
from .theory import fit_noise_batch_size as fit_noise_batch_size
from .theory import optimal_lr as optimal_lr
from .theory import sgd_optimal_lr as sgd_optimal_lr

__all__ = [
    "Optimizer",
    "DEFAULT_OPTIMIZERS",
    "Experiment",
    "TargetResult",
    "initial_delta",
    "default_lr_grid",
    "default_problem",
    "default_experiment",
    "DEFAULT_BATCH_SIZES",
    "run_task",
    "run_experiment",
    "summarize",
    "summarize_arm",
    "path_noise_batch_size",
    "adam_prediction",
    "ROW_COLUMNS",
    "PATH_NOTE",
]
