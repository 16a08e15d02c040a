"""Predictors of Adam's and momentum SGD's balance point that need no probe: the stationary-buffer
one-step model (``stationary_noise_batch_size``) and the large-batch argument (``large_batch_steps``:
momentum leaves E_min and moves S_min to the noise-free steps S_inf; Zhang et al. 2019)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..gridsearch.problem import diag_trace_lmax, initial_delta
from ..hessian import Hessian
from ..kernels.dynamics import Optimizer, run_trajectories
from ..problem import QuadraticProblem
from ..theory import noise_batch_size, optimal_lr

__all__ = ["momentum_noise_fraction", "stationary_noise_batch_size", "large_batch_lr_grid", "large_batch_steps"]


def momentum_noise_fraction(beta1: float) -> float:
    """k = (1 - beta1) / (1 + beta1): the variance of a stationary EMA of independent noises, in
    units of one noise's variance (sum_j (1 - b)^2 b^(2j))."""
    if not 0.0 <= beta1 < 1.0:
        raise ValueError(f"beta1={beta1!r} must be in [0, 1)")
    return (1.0 - beta1) / (1.0 + beta1)


def stationary_noise_batch_size(mu: np.ndarray, sigma: np.ndarray, H: Hessian, beta1: float) -> float:
    """Peak batch size of one Adam step with buffers stationary at one state (model (b)).

    Take m = mu + noise of variance k sigma^2 / B per coordinate (an EMA over many fresh minibatches
    of size B at a fixed state, k = (1 - beta1) / (1 + beta1)) and v = mu^2 + sigma^2 / B (beta2 -> 1),
    u = m / sqrt(v). Then E u_i = mu_i / s_i, Var u_i = k sigma_i^2 / (B s_i^2), s_i^2 = mu_i^2 + sigma_i^2 / B,
    and the one-step optimum E[mu'u] / E[u'Hu] is, for B << 1 / r_i^2 (s_i ~ sigma_i / sqrt(B)),

        eps(B) = sqrt(B) S / (k tr H + B off),   S = sum mu_i^2 / sigma_i, off of eq 14,

    which peaks at B = k tr(H) / off = (2 / pi) k B_noise(eq 14). With beta1 = 0 it is (2 / pi) eq 14
    (RMS-normalised SGD); with beta1 = 0.9, k = 0.053: 30x below sign-SGD's eq 14.

    Why it fails with momentum: the EMA is a linear filter of unit gain at zero frequency. The
    displacement summed over many steps carries the minibatch noise with the same variance as
    without momentum, because consecutive momentum steps reuse the same minibatches; one step
    sees only the per-step variance k, which the steps that follow do not average away.
    """
    return 2.0 / math.pi * momentum_noise_fraction(beta1) * float(noise_batch_size(mu, sigma, H))



def large_batch_lr_grid(problem: QuadraticProblem, optimizer: Optimizer, n: int = 60) -> np.ndarray:
    """Learning rates for ``large_batch_steps``: for SGD a log grid of 4 decades up to its stability
    limit 2 (1 + b1) / ((1 - b1) lambda_max); otherwise 4 decades around eq 9 at B = 10^6."""
    if optimizer.name == "sgd":
        hi = 2.0 * (1.0 + optimizer.beta1) / ((1.0 - optimizer.beta1) * diag_trace_lmax(problem.hessian)[2])
        return np.geomspace(hi / 1e4, hi, int(n))
    e9 = float(optimal_lr(1e6, problem.mu, problem.sigma, problem.hessian))
    return np.geomspace(e9 / 100.0, e9 * 100.0, int(n))


def large_batch_steps(
    problem: QuadraticProblem, optimizer: Optimizer, target_losses: Sequence[float], lrs: Sequence[float] | np.ndarray,
    batch_size: float = 1e14, max_steps: int = 20_000,
) -> np.ndarray:  # fmt: skip
    """S_inf: the fewest steps to each target loss at batch size ``batch_size`` (default 1e14: the
    gradient noise is sigma * 1e-7, negligible) over the learning rates ``lrs``, from the problem's
    start (theta0 - theta* = H^-1 mu, fresh buffers); nan where no lr reaches a target.

    The large-batch side of eq 20: S(B) -> S_min as B -> inf, so with E_min unchanged the ratio
    S_inf(a) / S_inf(b) of two optimizers is the ratio of their critical batch sizes E_min / S_min
    (the NQM argument of Zhang et al. 2019, https://arxiv.org/abs/1907.04164, for momentum).
    """
    lrs = np.asarray(lrs, dtype=np.float64)
    keys = np.zeros(lrs.size, dtype=np.uint64)
    tg = np.asarray(target_losses, dtype=np.float64)
    res = run_trajectories(problem.hessian, problem.sigma, initial_delta(problem), keys, lrs, float(batch_size),
                           optimizer, targets=tg, max_steps=max_steps)  # fmt: skip
    steps = np.where(res.steps >= 0, res.steps, np.iinfo(np.int64).max).min(axis=0).astype(np.float64)
    steps[steps == np.iinfo(np.int64).max] = np.nan
    return steps
