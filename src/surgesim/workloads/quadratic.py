"""A ``QuadraticProblem`` as a torch workload, so that the probe (``probe.py``) runs its real
machinery (``torch.func`` gradients of minibatch losses, Hessian-vector products) on a problem
whose answer is known in closed form.

The model has parameters theta (d,), at the state theta = 0, and an example is a noise vector n:

    loss(theta; n) = (mu + n)'theta + theta'H theta / 2,     n ~ N(0, Sigma)

so each per-example gradient at the state is mu + n ~ N(mu, Sigma), the full-data (population)
gradient is mu and the Hessian is H, exactly. With Sigma = diag(sigma^2) (the problem's own noise)
the probe's sign optimum is eq 9 (``theory.optimal_lr``); with Sigma = diag(D) + F F' it is
``correlated.optimal_lr_correlated``. Examples are an endless i.i.d. stream (``n = None``), so
minibatch means are exactly N(mu, Sigma / B).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from ..problem import QuadraticProblem
from .probe import AdamState, ProbeState

__all__ = ["QuadraticModel", "GaussianExamples", "quadratic_state", "mean_loss"]


class QuadraticModel(nn.Module):
    """Per-example losses (mu + n)'theta + theta'H theta / 2 of a batch of noise vectors (N, d)."""

    mu: torch.Tensor  # buffers (register_buffer in __init__)
    h: torch.Tensor
    dense: torch.Tensor
    factor: torch.Tensor

    def __init__(self, problem: QuadraticProblem) -> None:
        super().__init__()
        H = problem.hessian
        d = problem.dim
        self.theta = nn.Parameter(torch.zeros(d, dtype=torch.float64))
        self.register_buffer("mu", torch.from_numpy(problem.mu.copy()))
        # H = diag(h) + U U' + D, unused parts zero or empty (HessianOperator)
        self.register_buffer("h", torch.from_numpy(np.array(H.diagonal_part(), dtype=np.float64)))
        self.register_buffer("dense", torch.from_numpy(np.array(H.dense_part(), dtype=np.float64)))
        self.register_buffer("factor", torch.from_numpy(np.array(H.low_rank_factor(), dtype=np.float64)))

    def hessian_matvec(self, v: torch.Tensor) -> torch.Tensor:
        out = self.h * v + self.factor @ (self.factor.T @ v)
        return out + self.dense @ v if self.dense.numel() else out

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        th = self.theta
        return (self.mu + noise) @ th + 0.5 * (th @ self.hessian_matvec(th))


def mean_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The batch-mean loss (the model already returns per-example losses)."""
    return output.mean()


class GaussianExamples:
    """An endless stream of noise vectors n = sqrt(D) * xi + F zeta, xi ~ N(0, I_d),
    zeta ~ N(0, I_k): covariance Sigma = diag(D) + F F'."""

    n = None

    def __init__(self, variances: np.ndarray, factor: np.ndarray | None = None) -> None:
        self.std = torch.from_numpy(np.sqrt(np.asarray(variances, dtype=np.float64)))
        d = self.std.numel()
        f = np.zeros((d, 0)) if factor is None else np.asarray(factor, dtype=np.float64)
        if f.ndim != 2 or f.shape[0] != d:
            raise ValueError(f"noise factor must have shape ({d}, k), got {f.shape}")
        self.factor = torch.from_numpy(f)

    def draw(self, gen: torch.Generator, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(count, self.std.numel(), generator=gen, dtype=torch.float64) * self.std
        if self.factor.shape[1]:
            x += torch.randn(count, self.factor.shape[1], generator=gen, dtype=torch.float64) @ self.factor.T
        return x, torch.zeros(count, dtype=torch.float64)


def quadratic_state(
    problem: QuadraticProblem,
    noise_factor: np.ndarray | None = None,
    adam: AdamState | None = None,
    chunk: int = 4096,
) -> ProbeState:
    """The probe's state for ``problem``: per-example gradients N(mu, Sigma), Hessian H, G = mu.

    Sigma = diag(sigma^2) (the problem's independent noise), or with F = ``noise_factor`` (d, k)
    Sigma = diag(sigma^2 - rowsum(F^2)) + F F': the same marginal sigma_i, correlated coordinates.
    """
    variances = problem.sigma**2
    if noise_factor is not None:
        variances = variances - np.sum(np.asarray(noise_factor, dtype=np.float64) ** 2, axis=1)
        if np.any(variances < 0):
            raise ValueError("noise_factor has a row with sum of squares above sigma_i^2")
    model = QuadraticModel(problem)
    data = GaussianExamples(variances, noise_factor)
    zero = torch.zeros(1, problem.dim, dtype=torch.float64)
    buffers = dict(model.named_buffers())

    def population_loss(params: dict) -> torch.Tensor:  # mu'theta + theta'H theta / 2: E over the noise
        return functional_call(model, (params, buffers), (zero,)).mean()

    return ProbeState(model, mean_loss, data, torch.from_numpy(problem.mu.copy()), adam=adam, chunk=chunk,
                      population_loss=population_loss)  # fmt: skip
