"""surgesim: the optimal learning rate of sign-based (Adam-style) optimizers against batch size.

Closed forms (``surgesim.theory``), problems (``surgesim.problem``), Hessian operators
(``surgesim.hessian``), counter-based random numbers (``surgesim.rng``), Numba kernels
(``surgesim.kernels``), the Monte Carlo estimator (``surgesim.estimate``), curve fits
(``surgesim.fit``), resumable sweeps (``surgesim.sweep``) and the backend choice
(``surgesim.backend``). Imported on demand: ``surgesim.dynamics`` (multi-step protocol),
``surgesim.momentum`` (Adam's balance point with momentum: the multi-step probe, the predictors),
``surgesim.correlated`` and ``surgesim.limits`` (beyond the paper), ``surgesim.gridfit`` (any
grid), ``surgesim.plots`` (matplotlib), ``surgesim.workloads`` (torch), ``surgesim.gpu`` (CuPy).

Documentation that comes with the installed package:

- every public function's docstring, which names the paper's equation it implements:
  ``help(surgesim.theory)``, ``help(surgesim.estimate.estimate_batch_size)``, ...;
- the README (the commands, their run times, the measured results), installed as the package's
  description: ``python -c "import importlib.metadata as m; print(m.metadata('surgesim')['Description'])"``;
- ``surgesim COMMAND --help`` for each command (``surgesim --help`` lists them).

In a source tree: the API reference built from these docstrings (``scripts/build-docs``, extra
``docs``), with worked examples checked by hand (``docs/examples.rst``), and every output column
and key in ``docs/outputs.md``.

A problem whose B_noise (eq 14) is 100 by construction, and its surge (eq 2): the optimal learning
rate peaks at B_noise and is symmetric in log B, a factor 4 either side giving
eps_max / (1/2 (2 + 1/2)) = 0.8 eps_max (eq 16: eps_max):

>>> import surgesim
>>> p = surgesim.surge_problem(2000, noise_batch_size=100.0)
>>> round(surgesim.noise_batch_size(p.mu, p.sigma, p.hessian), 6)
100.0
>>> lr = surgesim.surge_lr([25.0, 100.0, 400.0], p.mu, p.sigma, p.hessian)
>>> [round(float(x / surgesim.peak_lr(p.mu, p.sigma, p.hessian)), 6) for x in lr]
[0.8, 1.0, 0.8]
"""

from importlib.metadata import PackageNotFoundError, version

from . import backend, estimate, fit, hessian, kernels, problem, progress, rng, sweep, theory
from .hessian import Dense, Diagonal, DiagonalPlusLowRank, HessianOperator, as_hessian
from .problem import QuadraticProblem, diagonal_problem, power_law_problem, surge_problem
from .theory import (
    estimate_peak_lr,
    fit_noise_batch_size,
    large_batch_lr,
    max_loss_improvement,
    noise_batch_size,
    optimal_loss_improvement,
    optimal_lr,
    peak_lr,
    sgd_optimal_lr,
    sign_mean,
    sign_mean_approx,
    surge_loss_improvement,
    surge_lr,
    validity_bound,
)

try:
    __version__ = version("surgesim")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "sweep",
    "progress",
    "kernels",
    "fit",
    "estimate",
    "backend",
    "Dense",
    "Diagonal",
    "DiagonalPlusLowRank",
    "HessianOperator",
    "QuadraticProblem",
    "as_hessian",
    "diagonal_problem",
    "estimate_peak_lr",
    "fit_noise_batch_size",
    "hessian",
    "large_batch_lr",
    "max_loss_improvement",
    "noise_batch_size",
    "optimal_loss_improvement",
    "optimal_lr",
    "peak_lr",
    "power_law_problem",
    "problem",
    "rng",
    "sgd_optimal_lr",
    "sign_mean",
    "sign_mean_approx",
    "surge_loss_improvement",
    "surge_lr",
    "surge_problem",
    "theory",
    "validity_bound",
]
