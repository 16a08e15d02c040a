"""Plain vectorised NumPy version of ``surgesim.kernels.dynamics``: the independent check of the
kernels in tests, and the NumPy baseline in ``sims.bench``.

All T trajectories advance together, one step at a time, as (T, d) arrays; the Hessian products
are the operators' own ``matvec`` (``surgesim.hessian``). With ``normals=None`` the noise is
regenerated from the same counter-based streams as the kernel (``surgesim.rng.normals``: step s of
trajectory t uses Box-Muller pairs s * ceil(d / 2) onwards of stream keys[t]; the kernel's own
Box-Muller agrees with it to 1e-14), so the trajectories agree with the kernel's step by step;
with a ``numpy.random.Generator`` they are the same process on NumPy's own (faster) normals, for
timing.
"""

from __future__ import annotations

import numpy as np

from ..hessian import Hessian
from ..kernels.dynamics import Optimizer
from ..rng import normals as counter_normals

__all__ = ["run_trajectories"]


def _step_normals(keys: np.ndarray, d: int, step: int, normals) -> np.ndarray:
    if normals is not None:
        return normals.standard_normal((keys.size, d))
    half = (d + 1) // 2
    return np.stack([counter_normals(int(k), 2 * half, step * half)[:d] for k in keys])


def run_trajectories(
    H: Hessian,
    sigma: np.ndarray,
    delta0: np.ndarray,
    keys: np.ndarray,
    lr,
    batch_size,
    optimizer: Optimizer,
    n_steps: int,
    normals: np.random.Generator | None = None,
) -> dict[str, np.ndarray]:
    """Run T = len(keys) trajectories for ``n_steps`` steps from theta - theta* = delta0.

    Returns a dict with the final ``delta``, ``m``, ``v`` (T, d) and ``trace`` (T, n_steps + 1),
    the loss 1/2 delta'H delta after 0 .. n_steps steps.
    """
    keys = np.asarray(keys, dtype=np.uint64).ravel()
    T, d = keys.size, np.asarray(delta0).size
    lr = np.broadcast_to(np.asarray(lr, dtype=np.float64), (T,))[:, None]
    noise_scale = (
        np.asarray(sigma, dtype=np.float64)[None, :]
        / np.sqrt(np.broadcast_to(np.asarray(batch_size, dtype=np.float64), (T,)))[:, None]
    )
    b1, b2, eps = optimizer.beta1, optimizer.beta2, optimizer.eps
    delta = np.tile(np.asarray(delta0, dtype=np.float64), (T, 1))
    m = np.zeros((T, d))
    v = np.zeros((T, d))
    trace = np.full((T, n_steps + 1), np.nan)
    G = H.matvec(delta)  # mean gradient H delta of each row
    trace[:, 0] = 0.5 * np.einsum("ti,ti->t", delta, G)
    with np.errstate(over="ignore", invalid="ignore"):
        for s in range(n_steps):
            g = G + noise_scale * _step_normals(keys, d, s, normals)  # batch-mean gradient
            t = s + 1
            if optimizer.name == "sign":
                u = np.sign(g)
            elif optimizer.name == "sgd":
                u = g
            elif optimizer.name == "adam":
                m = b1 * m + (1.0 - b1) * g
                v = b2 * v + (1.0 - b2) * g * g
                u = (m / (1.0 - b1**t)) / (np.sqrt(v / (1.0 - b2**t)) + eps)
            else:  # lion
                u = np.sign(b1 * m + (1.0 - b1) * g)
                m = b2 * m + (1.0 - b2) * g
            delta -= lr * u
            G = H.matvec(delta)
            trace[:, t] = 0.5 * np.einsum("ti,ti->t", delta, G)
    return {"delta": delta, "m": m, "v": v, "trace": trace}
