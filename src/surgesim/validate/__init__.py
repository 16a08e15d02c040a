"""The surge measured with statistics: the paper's protocol (Section 3.2-3.3, Li et al. 2024) at a
resolution that can decide, and the predictors scored against it (``python -m sims.validate``).

The data are runs, one row per (learning rate, batch size B, seed, target loss) with the further
loss decrease after the target (the score, larger is better) and the steps S to the target. Per
target loss and B, ``Table`` holds the scores as a matrix (learning rates x seeds). Everything is
estimated from the seed-mean score and its uncertainty from one bootstrap over seeds:

- **Replicates.** ``replicates`` resamples of the seed indices, drawn once per target and used
  jointly at every B (the seed fixes a run's initial weights at every B, so runs at different B
  are correlated through it; resampling the same seeds everywhere keeps that correlation). Each
  estimate below is recomputed in every replicate. With n seeds the bootstrap's spread is that of
  a sample of n with variance divided by n instead of n - 1: every replicate's deviation from the
  point estimate is multiplied by ``sqrt(n / (n - 1))`` (``inflation``) before it is used.
- **lr_opt(B)** is ``surgesim.fit.grid_optimum`` of the seed-mean score (a parabola in log lr
  through the best grid point and its neighbours); its s.e. is the standard deviation of
  log lr_opt over the replicates (``lr_opt_se`` = lr_opt x that, in learning-rate units) and its
  68% interval the 16% and 84% quantiles of the replicates in log lr.
- **The peak batch size** is the vertex of the parabola in (log B, log lr_opt) through the largest
  lr_opt and its two neighbours (at an end of the grid: that end, ``peak_interior`` False); its 68%
  interval the 16%/84% quantiles of the peak found, the same way, inside each replicate (so the
  interval includes the uncertainty of which B is the largest).
- **The surge test.** H0: no fall, lr_opt at the largest batch sizes is at least the lr_opt at any
  smaller B: D_B = log lr_opt(B) - mean of log lr_opt over the ``top`` largest batch sizes is
  <= 0 for every B outside that group. Statistic: T = max_B D_B, the fall in log lr from the peak
  (chosen as the maximum) to the top group. Its null law at the least favourable point of H0
  (D_B = 0 for every B) is that of max_B (D*_B - D_B) over the replicates (the peak chosen inside
  each replicate, so the selection of the maximum is in the null law); the one-sided p-value is
  (1 + #{replicates with that >= T}) / (1 + replicates). Small p: the optimal lr falls after its
  peak (the surge). Measured on synthetic curves with a plateau (tests/test_validate.py): with 4
  and 8 seeds it rejects less often than its level (conservative); a studentised max was liberal
  with 4 seeds (10% at 5%) and is not used. Under H0 with a strictly rising curve it is more
  conservative still.
- **Eq 22.** S(B) = the fewest seed-mean steps over learning rates, E = B S;
  ``surgesim.theory.fit_noise_batch_size`` gives B_noise and S_min, recomputed in each replicate
  for their s.e.

Predictors (B_simple, B_crit, eq 14, the probe's peaks, ...) are scored by ``score_predictor``:
the log ratio to the fitted B_noise with its s.e. by the delta method (independent errors).

The modules, in the order of the protocol: ``options`` (the configuration of a run),
``stages`` (the coarse and refinement sweeps), ``refinement``, ``optimal_lr`` (lr_opt, its
bootstrap, the peak and the surge test), ``eq22`` (the fit of B_noise and S_min),
``predictors`` (scores and scaled curves), ``result`` (the outputs), and ``quadratic`` (the
protocol on a quadratic problem; on networks: ``surgesim.workloads.validation``). Every public
name of these modules is importable from here.
"""

from __future__ import annotations

from .eq22 import eq22_with_se, fit_eq22, min_steps
from .optimal_lr import (
    QUANTILES,
    VALIDATE_COLUMNS,
    Table,
    TargetValidation,
    bootstrap_indices,
    finite_or_none,
    log_optima,
    refined_peak,
    surge_test,
    tables_from_rows,
    validate_rows,
    validate_target,
)
from .options import DATA_FILES, DEFAULTS, QUADRATIC, QUICK, ValidationOptions, resolve_options
from .predictors import (
    CURVE_COLUMNS,
    PREDICTOR_COLUMNS,
    PREDICTOR_NAMES,
    PredictorFn,
    PredictorScore,
    curve_rows,
    scaled_curve,
    score_predictor,
)
from .quadratic import (
    QUADRATIC_PREDICTORS,
    QuadraticStates,
    QuadraticValidation,
    probe_rule_se,
    probe_sign_curve,
    q_adam_predicted,
    q_b_crit,
    q_b_simple,
    q_eq14,
    q_probe_adam,
    q_probe_sign,
    quadratic_states,
    quadratic_tasks,
)
from .refinement import refine_lrs, refinement
from .result import ADAM_PREDICTED_NOTE, RUN_COLUMNS, ValidationResult, format_table
from .stages import SweepStages, load_average, minutes

__all__ = [
    "QUANTILES",
    "Table",
    "TargetValidation",
    "PredictorScore",
    "tables_from_rows",
    "bootstrap_indices",
    "validate_target",
    "refined_peak",
    "surge_test",
    "refine_lrs",
    "score_predictor",
    "scaled_curve",
    "VALIDATE_COLUMNS",
    "PREDICTOR_COLUMNS",
    "PREDICTOR_NAMES",
    "refinement",
    "validate_rows",
    "quadratic_tasks",
    "QuadraticStates",
    "quadratic_states",
    "QUADRATIC_PREDICTORS",
    # the names of the modules above not listed before the split
    "PredictorFn",
    "q_b_simple",
    "q_b_crit",
    "q_eq14",
    "q_probe_sign",
    "q_probe_adam",
    "q_adam_predicted",
    "probe_rule_se",
    "probe_sign_curve",
    "log_optima",
    "finite_or_none",
    "min_steps",
    "fit_eq22",
    "eq22_with_se",
    "CURVE_COLUMNS",
    "curve_rows",
    "DEFAULTS",
    "QUICK",
    "QUADRATIC",
    "DATA_FILES",
    "ValidationOptions",
    "resolve_options",
    "SweepStages",
    "minutes",
    "load_average",
    "RUN_COLUMNS",
    "ADAM_PREDICTED_NOTE",
    "ValidationResult",
    "format_table",
    "QuadraticValidation",
]
