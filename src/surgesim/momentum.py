"""Adam's balance point on a noisy quadratic: predictors of the fitted eq-22 B_noise with momentum.

Li et al. 2024's theory is sign-SGD (Adam with beta1 = beta2 = 0): the one-step optimal learning
rate (Lemma 1, eq 9) peaks at B_noise of eq 14, and the grid's fitted B_noise (eq 22) is eq 14's
path average (eq 21). With momentum the balance point moves; these modules hold what was tried
against the grid (``sims.momentum``; the scores are in the README, "Which batch size and learning
rate for Adam on my network"):

- ``stationary_noise_batch_size``: the one-step optimum of an Adam step whose buffers are
  stationary at one state, (2 / pi) k B_noise(eq 14) with k = (1 - beta1) / (1 + beta1); wrong with
  momentum (30-100x low at beta1 = 0.9-0.95; its docstring says why).
- ``multistep_probe``: the optimal learning rate of T real optimizer steps from states of a run,
  per batch size, on fresh minibatches with the buffers evolving (T = 1 from fresh buffers is
  Lemma 1); ``probe_noise_batch_size``: eq 2 fitted to it. ``adam_noise_batch_size`` (T = 4) is
  the package's Adam predictor, ``sims.dynamics``' ``path_noise_batch_size_adam`` (1.1-1.6x the fit).
- ``large_batch_steps``: S_inf, the noise-free steps to a target. Momentum leaves E_min (the
  noise-dominated examples) unchanged and moves S_min to S_inf, so B_noise(beta1) =
  B_noise(0) S_inf(0) / S_inf(beta1) (the NQM argument, Zhang et al. 2019): 0.9-1.06x the fit.
- ``run_states``, ``probe_states_of``: the states (theta - theta*, m, v, step) where runs cross a loss.
- ``study_table``, ``bootstrap_grid_fit``: the study's rows, with bootstrap s.e. over seeds.

This module re-exports the names of ``surgesim.run_states`` (the states of runs),
``surgesim.multistep_probe`` (the probe and the Adam predictor) and ``surgesim.momentum_study``
(predictors without a probe, the grid fit with bootstrap errors, the study's rows and run), where
they lived before the split; new code imports from those modules.
"""

from __future__ import annotations

from .momentum_study import (
    FAMILIES,
    PREDICTOR_COLUMNS,
    STUDY_COLUMNS,
    STUDY_OPTIMIZERS,
    bootstrap_grid_fit,
    family_problem,
    grid_fit_from_cube,
    large_batch_lr_grid,
    large_batch_steps,
    momentum_noise_fraction,
    ratio_summary,
    stationary_noise_batch_size,
    steps_cube,  # noqa: F401  (was _steps_cube here)
    study_table,
)
from .multistep_probe import (
    PROBE_STEPS,
    AdamPrediction,
    ProbeResult,
    adam_noise_batch_size,
    multistep_probe,
    probe_decrease_noise_batch_size,
    probe_key,
    probe_lr_grid,
    probe_noise_batch_size,
    probe_prediction,  # noqa: F401  (public, importable from here as before)
)
from .run_states import RunState, probe_states_of, run_states

__all__ = [
    "ProbeResult",
    "RunState",
    "AdamPrediction",
    "stationary_noise_batch_size",
    "momentum_noise_fraction",
    "probe_key",
    "probe_lr_grid",
    "multistep_probe",
    "probe_noise_batch_size",
    "probe_decrease_noise_batch_size",
    "run_states",
    "adam_noise_batch_size",
    "PROBE_STEPS",
    "STUDY_OPTIMIZERS",
    "FAMILIES",
    "family_problem",
    "grid_fit_from_cube",
    "bootstrap_grid_fit",
    "probe_states_of",
    "study_table",
    "ratio_summary",
    "large_batch_steps",
    "large_batch_lr_grid",
    "STUDY_COLUMNS",
    "PREDICTOR_COLUMNS",
]
