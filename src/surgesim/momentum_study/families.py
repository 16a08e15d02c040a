"""The momentum study's optimizers and problem families."""

from __future__ import annotations

from ..gridsearch.problem import default_problem
from ..kernels.dynamics import Optimizer
from ..problem import QuadraticProblem, diagonal_problem, power_law_problem

__all__ = ["STUDY_OPTIMIZERS", "FAMILIES", "family_problem"]

STUDY_OPTIMIZERS = (
    Optimizer("sign"), Optimizer("sgd"), Optimizer("sgd", 0.5), Optimizer("sgd", 0.9),
    *(Optimizer("adam", b1, b2, 1e-8) for b2 in (0.9, 0.999) for b1 in (0.0, 0.5, 0.8, 0.9, 0.95)),
)  # fmt: skip
"""The study's optimizers: sign-SGD, SGD with momentum 0, 0.5, 0.9, Adam with beta1 in
{0, 0.5, 0.8, 0.9, 0.95} x beta2 in {0.9, 0.999}."""

FAMILIES = ("lowrank", "powerlaw", "diagonal")


def family_problem(family: str, seed: int = 0) -> QuadraticProblem:
    """The study's problem families: ``lowrank``, the default problem of ``sims.dynamics`` (d = 256,
    H = diag + rank 4 positive along sign(mu)); ``powerlaw``, a dense H with eigenvalues k^-1
    in a random basis and mu = H (theta - theta*) for a random theta (d = 64, |mu| / sigma = 0.05
    on average: B_noise at the start about 40, like the low-rank family's 22); ``diagonal``, the
    low-rank family's diag(h) alone (d = 256: the Noisy Quadratic Model of Zhang et al. 2019; no
    surge for sign-SGD, eq 14 infinite)."""
    if family == "lowrank":
        return default_problem(256, seed)
    if family == "powerlaw":
        return power_law_problem(64, seed, snr=0.05)
    if family == "diagonal":
        return diagonal_problem(256, seed, snr=(0.016, 0.05))
    raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
