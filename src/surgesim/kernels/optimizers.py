"""The optimizers of the dynamics kernels (``surgesim.kernels.dynamics``, whose docstring gives the
update rules): their codes, ``Optimizer`` and the in-place update of one step."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._jit import jit_inline

__all__ = ["SIGN", "ADAM", "SGD", "LION", "OPTIMIZER_CODES", "Optimizer"]

SIGN, ADAM, SGD, LION = 0, 1, 2, 3
OPTIMIZER_CODES = {"sign": SIGN, "adam": ADAM, "sgd": SGD, "lion": LION}


@dataclass(frozen=True)
class Optimizer:
    """An optimizer and its hyperparameters (``surgesim.kernels.dynamics`` gives the update rules).

    ``beta1``, ``beta2`` and ``eps`` are used by ``adam`` (all three) and ``lion`` (the betas);
    ``sgd`` uses ``beta1`` as its momentum (``beta2`` must be 0); the constructor checks them eagerly.

    >>> Optimizer("adam", 0.9, 0.999).label
    'adam(0.9, 0.999)'
    """

    name: str
    beta1: float = 0.0
    beta2: float = 0.0
    eps: float = 1e-8

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZER_CODES:
            raise ValueError(f"optimizer must be one of {sorted(OPTIMIZER_CODES)}, got {self.name!r}")
        for field in ("beta1", "beta2"):
            value = getattr(self, field)
            if not (0.0 <= value < 1.0):
                raise ValueError(f"{field}={value!r} must be in [0, 1)")
        if not (self.eps >= 0.0 and np.isfinite(self.eps)):
            raise ValueError(f"eps={self.eps!r} must be finite and >= 0")
        if self.name == "sgd" and self.beta2 != 0.0:
            raise ValueError(f"sgd takes one beta (its momentum beta1), got beta2={self.beta2!r}")

    @property
    def code(self) -> int:
        return OPTIMIZER_CODES[self.name]

    @property
    def label(self) -> str:
        if self.name in ("adam", "lion"):
            return f"{self.name}({self.beta1:g}, {self.beta2:g})"
        if self.name == "sgd" and self.beta1 > 0:
            return f"sgd({self.beta1:g})"
        return self.name


@jit_inline
def _update(opt, lr, c, b1, b2, eps, bc1, bc2, sigma, gm, z, delta, m, v):  # noqa: PLR0913
    """One optimizer step in place; g = gm + c * sigma * z is the batch-mean gradient."""
    d = delta.shape[0]
    if opt == SIGN:
        for i in range(d):
            g = gm[i] + c * sigma[i] * z[i]
            delta[i] -= lr * np.sign(g)
    elif opt == SGD:
        if b1 == 0.0:
            for i in range(d):
                delta[i] -= lr * (gm[i] + c * sigma[i] * z[i])
        else:  # momentum: Adam's bias-corrected first moment, no denominator
            a1 = 1.0 / bc1
            for i in range(d):
                mi = b1 * m[i] + (1.0 - b1) * (gm[i] + c * sigma[i] * z[i])
                m[i] = mi
                delta[i] -= lr * mi * a1
    elif opt == ADAM:
        a1 = 1.0 / bc1
        a2 = 1.0 / bc2
        for i in range(d):
            g = gm[i] + c * sigma[i] * z[i]
            mi = b1 * m[i] + (1.0 - b1) * g
            vi = b2 * v[i] + (1.0 - b2) * g * g
            m[i] = mi
            v[i] = vi
            delta[i] -= lr * (mi * a1) / (np.sqrt(vi * a2) + eps)
    else:  # LION
        for i in range(d):
            g = gm[i] + c * sigma[i] * z[i]
            u = b1 * m[i] + (1.0 - b1) * g
            m[i] = b2 * m[i] + (1.0 - b2) * g
            delta[i] -= lr * np.sign(u)
