"""Numba kernels for multi-step optimizer dynamics on a noisy quadratic.

Loss L(theta) = 1/2 delta'H delta with delta = theta - theta*; per-example gradients are
H delta + xi with xi ~ N(0, diag(sigma^2)), so the mean of a batch of B examples is exactly

    g = H delta + (sigma / sqrt(B)) * z,    z ~ N(0, I_d)

(batch-mean sampler: one standard normal per coordinate per step, whatever B). Many independent
trajectories run at once, in parallel over trajectories (``prange``); each is serial in its steps.

Optimizers (update delta <- delta - lr * u):

- ``sign``: u = sign(g) (sign-SGD; eq 29 of Li et al. 2024, Appendix A).
- ``adam``: m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2, u = m_hat / (sqrt(v_hat) + eps) with
  the bias corrections m_hat = m / (1 - b1^t), v_hat = v / (1 - b2^t) (Kingma & Ba 2015,
  https://arxiv.org/abs/1412.6980; eq 25-27, with eps outside the square root as in PyTorch).
  b1 = b2 = 0 gives u = g / (|g| + eps), sign-SGD up to eps (eq 29).
- ``sgd``: u = g.
- ``lion``: u = sign(b1 m + (1 - b1) g), then m = b2 m + (1 - b2) g (Chen et al. 2023,
  "Symbolic Discovery of Optimization Algorithms", https://arxiv.org/abs/2302.06675, no weight decay).

Random numbers. Trajectory t has its own stream key (``trajectory_key(seed, B, replicate)``); the
normal of coordinate i at step s (s = 0 for the first update) is element i % 2 of Box-Muller pair
``s * ceil(d / 2) + i // 2`` of that stream, so ``rng.normals(key, 2 * ceil(d / 2), s * ceil(d / 2))[:d]``
regenerates step s's z (up to rounding, 1e-14: this module's ``normal_pair`` is
``rng.normal_pair`` written without library calls, so that it vectorises). Every trajectory
is a pure function of its parameters: bit-identical whatever the thread count or the grouping of
trajectories into calls. The key does not depend on the learning rate or the optimizer, so runs
that differ only in those share their noise (common random numbers).

Hessians: ``DIAG_LOWRANK`` with H = diag(h) + U U' given as ``h`` (d,) and ``ut`` (k, d) (k = 0 for
a diagonal H; each product O(d k)), or ``DENSE`` with ``hd`` (d, d) (O(d^2)).

Speed (``python -m sims.bench_dynamics``): the kernel is bound by its random numbers, within about
2x of drawing the normals alone, and several times a vectorised NumPy implementation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from numba import prange

from .._jit import jit_inline, jit_parallel
from ..hessian import Dense, Diagonal, DiagonalPlusLowRank, Hessian
from ..rng import derive_key, normal_pair, stream_key

__all__ = [
    "SIGN",
    "ADAM",
    "SGD",
    "LION",
    "OPTIMIZER_CODES",
    "DIAG_LOWRANK",
    "DENSE",
    "Optimizer",
    "TrajectoryResult",
    "trajectory_key",
    "hessian_arrays",
    "run_trajectories",
    "step_normals",
    "normal_pair",
]

SIGN, ADAM, SGD, LION = 0, 1, 2, 3
OPTIMIZER_CODES = {"sign": SIGN, "adam": ADAM, "sgd": SGD, "lion": LION}
DIAG_LOWRANK, DENSE = 0, 1

_DYNAMICS_TAG = 0xD1A4  # separates these streams from the one-step kernels' streams


@dataclass(frozen=True)
class Optimizer:
    """An optimizer and its hyperparameters (see the module docstring for the update rules).

    ``beta1``, ``beta2`` and ``eps`` are used by ``adam`` (all three) and ``lion`` (the betas);
    the constructor checks them eagerly.

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

    @property
    def code(self) -> int:
        return OPTIMIZER_CODES[self.name]

    @property
    def label(self) -> str:
        if self.name in ("adam", "lion"):
            return f"{self.name}({self.beta1:g}, {self.beta2:g})"
        return self.name


@dataclass(frozen=True)
class TrajectoryResult:
    """Per-trajectory outcomes of ``run_trajectories`` (T trajectories, m targets).

    steps: (T, m) int64, the first step count at which L <= target (-1: not reached).
    loss_at: (T, m), the loss at that step; loss_after: (T, m), the loss ``further_steps`` later
    (nan where not reached or where the run diverged first).
    delta_at: (T, m, d), theta - theta* at that step (nan where not reached).
    delta, m, v: (T, d), the final state and optimizer moments; n_steps: (T,) steps run.
    trace: (T, n_trace), the loss after 0, 1, ... steps (nan past n_steps).
    """

    steps: np.ndarray
    loss_at: np.ndarray
    loss_after: np.ndarray
    delta_at: np.ndarray
    delta: np.ndarray
    m: np.ndarray
    v: np.ndarray
    n_steps: np.ndarray
    trace: np.ndarray


def trajectory_key(seed: int, batch_size: int, replicate: int) -> np.uint64:
    """Stream key of replicate ``replicate`` at batch size B under ``seed``."""
    key_b = np.uint64(stream_key(np.uint64(seed), np.uint64(_DYNAMICS_TAG), np.uint64(batch_size)))
    return np.uint64(derive_key(key_b, np.uint64(replicate)))


def hessian_arrays(H: Hessian) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """(kind, h, ut, hd) for the kernel: diag(h) + ut'ut, or hd dense (unused arrays are empty)."""
    empty1, empty2 = np.zeros(0), np.zeros((0, 0))
    if isinstance(H, Dense):
        return DENSE, empty1, empty2, np.ascontiguousarray(H.matrix)
    if isinstance(H, Diagonal):
        return DIAG_LOWRANK, H.h, np.zeros((0, H.dim)), empty2
    if isinstance(H, DiagonalPlusLowRank):
        return DIAG_LOWRANK, H.h, np.ascontiguousarray(H.factor.T), empty2
    raise TypeError(f"H must be Dense, Diagonal or DiagonalPlusLowRank, got {type(H).__name__}")


@jit_inline
def _refresh(kind, h, ut, hd, delta, gm, p):
    """gm = H delta (and p = U'delta for low rank); returns the loss 1/2 delta'H delta.

    Low-rank factors go four at a time (k = 4 costs one pass for U'delta and one for H delta
    instead of eight), the remaining k mod 4 one at a time.
    """
    d = delta.shape[0]
    if kind == DENSE:
        for i in range(d):
            s = 0.0
            for j in range(d):
                s += hd[i, j] * delta[j]
            gm[i] = s
    else:
        for i in range(d):
            gm[i] = h[i] * delta[i]
        k = ut.shape[0]
        for c in range(0, k - k % 4, 4):
            s0 = s1 = s2 = s3 = 0.0
            for i in range(d):
                x = delta[i]
                s0 += ut[c, i] * x
                s1 += ut[c + 1, i] * x
                s2 += ut[c + 2, i] * x
                s3 += ut[c + 3, i] * x
            p[c], p[c + 1], p[c + 2], p[c + 3] = s0, s1, s2, s3
            for i in range(d):
                gm[i] += ut[c, i] * s0 + ut[c + 1, i] * s1 + ut[c + 2, i] * s2 + ut[c + 3, i] * s3
        for c in range(k - k % 4, k):
            s0 = 0.0
            for i in range(d):
                s0 += ut[c, i] * delta[i]
            p[c] = s0
            for i in range(d):
                gm[i] += ut[c, i] * s0
    loss = 0.0
    for i in range(d):
        loss += delta[i] * gm[i]
    return 0.5 * loss


@jit_inline
def _fill_normals(key, base, z):
    """z[i] for i < 2 * half: element i % 2 of pair base + i // 2."""
    for q in range(z.shape[0] // 2):
        a, b = normal_pair(key, base + q)
        z[2 * q] = a
        z[2 * q + 1] = b


@jit_inline
def _update(opt, lr, c, b1, b2, eps, bc1, bc2, sigma, gm, z, delta, m, v):
    """One optimizer step in place; g = gm + c * sigma * z is the batch-mean gradient."""
    d = delta.shape[0]
    if opt == SIGN:
        for i in range(d):
            g = gm[i] + c * sigma[i] * z[i]
            delta[i] -= lr * np.sign(g)
    elif opt == SGD:
        for i in range(d):
            delta[i] -= lr * (gm[i] + c * sigma[i] * z[i])
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


@jit_parallel
def _run(
    kind, h, ut, hd, sigma, keys, lr, inv_sqrt_b, opt, b1, b2, eps,
    targets, further, min_steps, max_steps,
    delta, m, v, gm, z, p,
    steps, loss_at, loss_after, delta_at, n_steps, trace,
):  # fmt: skip
    """Run trajectory t = 0 .. T-1 from delta[t] (m[t], v[t]: optimizer state, updated in place).

    Stops at the first step count s with s >= min_steps, every reached target measured
    ``further`` steps later, and every target reached or s >= max_steps; or when the loss is
    no longer finite. Targets must be sorted in decreasing order. All arrays are preallocated.
    """
    T = delta.shape[0]
    d = delta.shape[1]
    n_t = targets.shape[0]
    n_trace = trace.shape[1]
    half = z.shape[1] // 2
    for t in prange(T):
        dt, mt, vt, gmt, zt, pt = delta[t], m[t], v[t], gm[t], z[t], p[t]
        key = keys[t]
        c = inv_sqrt_b[t]
        step_lr = lr[t]
        loss = _refresh(kind, h, ut, hd, dt, gmt, pt)
        if n_trace > 0:
            trace[t, 0] = loss
        j = 0  # next target to reach
        jf = 0  # next reached target waiting for its further-steps loss
        s = 0
        pw1 = 1.0
        pw2 = 1.0
        while True:
            while j < n_t and s <= max_steps and loss <= targets[j]:
                steps[t, j] = s
                loss_at[t, j] = loss
                for i in range(d):
                    delta_at[t, j, i] = dt[i]
                j += 1
            while jf < j and steps[t, jf] + further == s:
                loss_after[t, jf] = loss
                jf += 1
            if not np.isfinite(loss):
                break
            if s >= min_steps and jf == j and (j == n_t or s >= max_steps):
                break
            _fill_normals(key, np.uint64(s) * np.uint64(half), zt)
            pw1 *= b1
            pw2 *= b2
            _update(opt, step_lr, c, b1, b2, eps, 1.0 - pw1, 1.0 - pw2, sigma, gmt, zt, dt, mt, vt)
            s += 1
            loss = _refresh(kind, h, ut, hd, dt, gmt, pt)
            if s < n_trace:
                trace[t, s] = loss
        n_steps[t] = s


def _check_int(name: str, value, lo: int) -> int:
    if int(value) != value or value < lo:
        raise ValueError(f"{name}={value!r} must be an integer >= {lo}")
    return int(value)


def run_trajectories(
    H: Hessian,
    sigma: np.ndarray,
    delta0: np.ndarray,
    keys: np.ndarray,
    lr: np.ndarray,
    batch_size: np.ndarray,
    optimizer: Optimizer,
    targets: np.ndarray = (),
    further_steps: int = 0,
    max_steps: int = 1000,
    min_steps: int = 0,
    trace_steps: int = 0,
) -> TrajectoryResult:
    """Run T trajectories from theta - theta* = delta0 on the noisy quadratic (module docstring).

    Args:
        H: the Hessian operator; sigma: (d,) per-example gradient noise scale (> 0).
        delta0: (d,) start, the same for every trajectory.
        keys: (T,) uint64 stream keys (``trajectory_key``); lr, batch_size: (T,) or scalars.
        optimizer: the update rule and its hyperparameters.
        targets: target losses; each trajectory records the first step at which L <= target
            (step counts up to ``max_steps``) and the loss ``further_steps`` steps later.
        max_steps: give up on unreached targets after this many steps.
        min_steps: run at least this many steps (e.g. to compare whole trajectories).
        trace_steps: record the loss after 0 .. trace_steps - 1 steps.

    Returns:
        A ``TrajectoryResult``; targets are reported in the order given.
    """
    return _trajectories(
        _run_numba, H, sigma, delta0, keys, lr, batch_size, optimizer, targets, further_steps, max_steps,
        min_steps, trace_steps,
    )  # fmt: skip


def _run_numba(*args) -> None:
    # Trajectories differ in length (a large lr reaches the targets sooner, a failing one runs to
    # max_steps): hand them to the threads one at a time so that both stay busy.
    previous = numba.set_parallel_chunksize(1)
    try:
        _run(*args)
    finally:
        numba.set_parallel_chunksize(previous)


def _trajectories(
    run, H, sigma, delta0, keys, lr, batch_size, optimizer, targets, further_steps, max_steps, min_steps, trace_steps
) -> TrajectoryResult:
    """``run_trajectories``'s checks, set-up and results around ``run``, a function with ``_run``'s
    arguments and in-place outputs (the Numba loop here; ``surgesim.gpu.dynamics`` passes its own)."""
    sigma = np.ascontiguousarray(sigma, dtype=np.float64)
    delta0 = np.ascontiguousarray(delta0, dtype=np.float64)
    d = delta0.shape[0]
    if delta0.ndim != 1 or sigma.shape != (d,) or H.dim != d:
        raise ValueError(f"delta0 {delta0.shape}, sigma {sigma.shape} and H (dim {H.dim}) must agree")
    if np.any(sigma <= 0) or not np.all(np.isfinite(sigma)) or not np.all(np.isfinite(delta0)):
        raise ValueError("sigma must be finite and > 0, delta0 finite")
    keys = np.ascontiguousarray(keys, dtype=np.uint64).ravel()
    T = keys.shape[0]
    lr = np.broadcast_to(np.asarray(lr, dtype=np.float64), (T,)).copy()
    bs = np.broadcast_to(np.asarray(batch_size, dtype=np.float64), (T,)).copy()
    if not (np.all(np.isfinite(lr)) and np.all(lr > 0)):
        raise ValueError(f"learning rates must be finite and > 0, got min {lr.min() if T else None}")
    if np.any(bs < 1) or not np.all(np.isfinite(bs)):
        raise ValueError(f"batch sizes must be finite and >= 1, got min {bs.min() if T else None}")
    further = _check_int("further_steps", further_steps, 0)
    max_steps = _check_int("max_steps", max_steps, 0)
    min_steps = _check_int("min_steps", min_steps, 0)
    n_trace = _check_int("trace_steps", trace_steps, 0)
    tg = np.asarray(targets, dtype=np.float64).ravel()
    if not np.all(np.isfinite(tg)):
        raise ValueError(f"targets must be finite, got {tg}")
    order = np.argsort(-tg, kind="stable")
    kind, h, ut, hd = hessian_arrays(H)
    k = ut.shape[0]
    n_t = tg.size
    delta = np.repeat(delta0[None, :], T, axis=0)
    mom = np.zeros((T, d))
    vel = np.zeros((T, d))
    gm = np.empty((T, d))
    z = np.empty((T, d + (d & 1)))
    p = np.empty((T, max(k, 1)))
    steps = np.full((T, n_t), -1, dtype=np.int64)
    loss_at = np.full((T, n_t), np.nan)
    loss_after = np.full((T, n_t), np.nan)
    delta_at = np.full((T, n_t, d), np.nan)
    n_steps = np.zeros(T, dtype=np.int64)
    trace = np.full((T, n_trace), np.nan)
    run(
        kind, h, ut, hd, sigma, keys, lr, 1.0 / np.sqrt(bs), optimizer.code,
        float(optimizer.beta1), float(optimizer.beta2), float(optimizer.eps),
        np.ascontiguousarray(tg[order]), further, min_steps, max_steps,
        delta, mom, vel, gm, z, p, steps, loss_at, loss_after, delta_at, n_steps, trace,
    )  # fmt: skip
    inv = np.argsort(order)
    return TrajectoryResult(
        steps[:, inv], loss_at[:, inv], loss_after[:, inv], delta_at[:, inv], delta, mom, vel, n_steps, trace
    )


@jit_parallel
def _normals_only(keys, n_steps, z):
    half = z.shape[1] // 2
    for t in prange(keys.shape[0]):
        for s in range(n_steps):
            _fill_normals(keys[t], np.uint64(s) * np.uint64(half), z[t])


def step_normals(keys: np.ndarray, n_steps: int, d: int) -> np.ndarray:
    """Draw every normal that ``n_steps`` steps of each trajectory use, as ``_run`` draws them, and
    nothing else (the random-number floor of ``run_trajectories``, for benchmarks).

    Returns the last step's normals, (T, d): row t is ``rng.normals(keys[t], 2 h, (n_steps - 1) h)[:d]``
    with h = ceil(d / 2).
    """
    keys = np.ascontiguousarray(keys, dtype=np.uint64).ravel()
    n_steps = _check_int("n_steps", n_steps, 1)
    d = _check_int("d", d, 1)
    z = np.empty((keys.size, d + (d & 1)))
    _normals_only(keys, n_steps, z)
    return z[:, :d]
