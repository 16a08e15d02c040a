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
``docs``), and every output column and key in ``docs/outputs.md``.
"""

from importlib.metadata import PackageNotFoundError, version

from . import backend, estimate, fit, hessian, kernels, problem, progress, rng, sweep, theory
from .hessian import Dense, Diagonal, DiagonalPlusLowRank, as_hessian
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
