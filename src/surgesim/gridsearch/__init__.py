"""The paper's grid-search protocol (Li et al. 2024, Section 3.2-3.3) on a noisy quadratic.

For a grid of optimizers x batch sizes B x learning rates x seeds, every run starts from the same
theta0 and trains on L(theta) = 1/2 (theta - theta*)'H(theta - theta*) with batch-mean gradients
H(theta - theta*) + N(0, diag(sigma^2) / B) (``surgesim.kernels.dynamics``). For each target loss
it records the first step S at which L <= target, E = B S, and the further loss decrease
L(S) - L(S + further_steps) (the paper trains "the same number of steps" past the target and
colours that decrease, Figs 2-4). From these rows, per optimizer and target:

- the optimal learning rate per B, by two criteria: fewest steps to the target (seed-averaged S;
  the primary one, used for the peak and the curve fits) and largest further decrease, each with
  its spread over seeds (``surgesim.gridfit``);
- B_noise, S_min, E_min by eq 22 from the (S, E) pairs at the step-optimal learning rates, and
  eps_max by eq 23; the surge curve (eq 2) and the SGD curves (eq 24 form, alpha = 0.5, 1) fitted
  to the optima, compared by AIC (``surgesim.fit.compare_curves``);
- the empirical peak batch size (the B with the largest optimal learning rate), over all seeds
  and seed by seed;
- the theory's prediction at the states where the runs reached the target: each run's state gives
  mu = H(theta - theta*) and r = mu / sigma. The quantities the closed forms are built from (the
  off-diagonal sum of eq 14, S = sum mu_i^2 / sigma_i, and eq 9's numerator and denominator) are
  averaged over the runs at the step-optimal learning rates, then combined: B_noise by eq 14,
  eps_max by eq 16, eps_opt(B) by eq 9 (for SGD: eq 1 from mean G'G and G'HG). This is the
  theory of the ensemble of states at that loss; the mean state itself (theta averaged over runs)
  is not used because averaging cancels the fluctuating part of theta - theta*, which carries
  most of the off-diagonal sum, and its B_noise is then far too large (often infinite).

The problem's ``mu`` is the mean gradient at the start: theta0 - theta* = H^-1 mu, so the first
step of every run is exactly the one-step setting of ``surgesim.theory``.

The work is a list of independent deterministic tasks, one per (optimizer, batch size), each
running every learning rate and seed: ``Experiment.tasks()`` gives their JSON parameters and
``run_task(params, problem)`` their rows, so ``surgesim.sweep.run_sweep(run_task, tasks,
shared=problem)`` runs the same tasks on processes or Dask, resumably; ``run_experiment`` runs them
here, one after the other (each task is itself parallel over trajectories).

Modules: ``problem`` (the default problem, theta0 - theta*), ``spec`` (``Experiment``, its
learning-rate grids and tasks), ``options`` (``resolve_grid_options``: a command's options
checked), ``task`` (``run_task``, the rows), ``summary`` (``summarize``, the fits and the theory at
the states reached), ``run`` (``run_dynamics``: one run end to end, its outputs).
``surgesim.dynamics`` re-exports the names it held before this package.
"""

from __future__ import annotations

from ..kernels.dynamics import Optimizer
from .options import resolve_dynamics_options, resolve_grid_options
from .problem import default_problem, diag_trace_lmax, initial_delta
from .run import DynamicsResult, describe_start, run_dynamics, start_quantities
from .spec import (
    DEFAULT_BATCH_SIZES,
    DEFAULT_OPTIMIZERS,
    Experiment,
    OptimizerSpecError,
    default_experiment,
    default_lr_grid,
    optimizer_spec,
    options_experiment,
    parse_optimizer,
    parse_optimizers,
)
from .summary import (
    ADAM_PROBE_STATES,
    TargetResult,
    adam_prediction,
    path_noise_batch_size,
    summarize,
    summarize_arm,
)
from .task import PATH_NOTE, ROW_COLUMNS, finite_or_none, run_experiment, run_task

__all__ = [
    "Optimizer",
    "DEFAULT_OPTIMIZERS",
    "DEFAULT_BATCH_SIZES",
    "Experiment",
    "OptimizerSpecError",
    "TargetResult",
    "DynamicsResult",
    "initial_delta",
    "diag_trace_lmax",
    "default_lr_grid",
    "default_problem",
    "default_experiment",
    "options_experiment",
    "parse_optimizer",
    "parse_optimizers",
    "optimizer_spec",
    "resolve_grid_options",
    "resolve_dynamics_options",
    "run_task",
    "run_experiment",
    "run_dynamics",
    "start_quantities",
    "describe_start",
    "summarize",
    "summarize_arm",
    "path_noise_batch_size",
    "adam_prediction",
    "finite_or_none",
    "ADAM_PROBE_STATES",
    "ROW_COLUMNS",
    "PATH_NOTE",
]
