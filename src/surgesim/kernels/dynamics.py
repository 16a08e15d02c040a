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
- ``sgd``: u = g; with momentum b1 > 0, m = b1 m + (1 - b1) g and u = m / (1 - b1^t) (Adam's
  bias-corrected first moment without the denominator: heavy-ball SGD of learning rate
  lr (1 - b1) and momentum b1, as in Zhang et al. 2019, https://arxiv.org/abs/1907.04164, after the
  first few steps; b1 = 0 is plain SGD).
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

Per-step rules (``run_trajectories`` with a ``StepRule``): each step may set its own batch
size B_s (the noise scale becomes sigma / sqrt(B_s), and examples count sum_s B_s) and learning
rate: the exact one-step optimum at the state (eq 9; eq 1 for SGD), B_s = c B_noise (eq 14) at the
state, the same from running estimates made from the minibatch gradients, or geometric steps.
Each adds O(d k) per step (O(d^2) dense); with ``path`` the kernel also integrates ds = dL / dL_max
and B_noise ds along each path (eq 44-45). The GPU kernels run the constant rule only.

Hessians: ``DIAG_LOWRANK`` with H = diag(h) + U U' given as ``h`` (d,) and ``ut`` (k, d) (k = 0 for
a diagonal H; each product O(d k)), or ``DENSE`` with ``hd`` (d, d) (O(d^2)).

Speed (``python -m sims.bench_dynamics``): the kernel is bound by its random numbers, within about
2x of drawing the normals alone, and several times a vectorised NumPy implementation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
from numba import prange
from numpy.typing import ArrayLike

from .._jit import jit, jit_inline, jit_parallel
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
    "StepRule",
    "LR_RULES",
    "BATCH_RULES",
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
LR_CONSTANT, LR_OPTIMAL, LR_ESTIMATED, LR_GEOMETRIC = 0, 1, 2, 3
LR_RULES = {"constant": LR_CONSTANT, "optimal": LR_OPTIMAL, "estimated": LR_ESTIMATED, "geometric": LR_GEOMETRIC}
BATCH_CONSTANT, BATCH_NOISE, BATCH_NOISE_ESTIMATED, BATCH_CRIT_ESTIMATED, BATCH_GEOMETRIC = 0, 1, 2, 3, 4
BATCH_RULES = {
    "constant": BATCH_CONSTANT, "noise": BATCH_NOISE, "noise_estimated": BATCH_NOISE_ESTIMATED,
    "critical_estimated": BATCH_CRIT_ESTIMATED, "geometric": BATCH_GEOMETRIC,
}  # fmt: skip

_DYNAMICS_TAG = 0xD1A4  # separates these streams from the one-step kernels' streams


@dataclass(frozen=True)
class Optimizer:
    """An optimizer and its hyperparameters (see the module docstring for the update rules).

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


@dataclass(frozen=True)
class TrajectoryResult:
    """Per-trajectory outcomes of ``run_trajectories`` (T trajectories, m targets).

    steps: (T, m) int64, the first step count at which L <= target (-1: not reached).
    loss_at: (T, m), the loss at that step; loss_after: (T, m), the loss ``further_steps`` later
    (nan where not reached or where the run diverged first).
    delta_at: (T, m, d), theta - theta* at that step (nan where not reached).
    delta, m, v: (T, d), the final state and optimizer moments; n_steps: (T,) steps run.
    trace: (T, n_trace), the loss after 0, 1, ... steps (nan past n_steps).
    examples_at: (T, m), the examples sum_s B_s used to reach each target (nan: not reached).
    path_ds, path_bds: (T, m), the integrals of ds = dL / dL_max and of B_noise ds along the path
    to each target (eq 44-45; nan unless run with ``path=True``).
    batch_trace, lr_trace: (T, n_trace), the batch size and learning rate of step 0, 1, ...
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
    examples_at: np.ndarray
    path_ds: np.ndarray
    path_bds: np.ndarray
    batch_trace: np.ndarray
    lr_trace: np.ndarray


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


@jit
def _quad(kind, h, ut, hd, x):
    """x'Hx: O(d k) for diag(h) + U U', O(d^2) dense."""
    d = x.shape[0]
    s = 0.0
    if kind == DENSE:
        for i in range(d):
            a = 0.0
            for j in range(d):
                a += hd[i, j] * x[j]
            s += a * x[i]
        return s
    for i in range(d):
        s += h[i] * x[i] * x[i]
    for c in range(ut.shape[0]):
        a = 0.0
        for i in range(d):
            a += ut[c, i] * x[i]
        s += a * a
    return s


@jit
def _off_diagonal(kind, ut, hd, x):
    """sum_{i != j} x_i x_j H_ij, eq 14's sum, summed without the diagonal (0 for a diagonal H)."""
    d = x.shape[0]
    s = 0.0
    if kind == DENSE:
        for i in range(d):
            a = 0.0
            for j in range(d):
                a += hd[i, j] * x[j]
            s += (a - hd[i, i] * x[i]) * x[i]
        return s
    for c in range(ut.shape[0]):
        a = 0.0
        b = 0.0
        for i in range(d):
            y = ut[c, i] * x[i]
            a += y
            b += y * y
        s += a * a - b
    return s


@jit
def _sign_optimal_lr(kind, h, ut, hd, hdiag, B, mu, sig, e):
    """Eq 9 at mean gradient mu, noise scale sig and batch size B: sum E mu / (sum (1 - E^2) H_ii
    + E'HE) with E_i = erf(sqrt(B/2) mu_i / sig_i) (eq 35); e receives E."""
    x = np.sqrt(0.5 * B)
    num = 0.0
    den = 0.0
    for i in range(mu.shape[0]):
        E = math.erf(x * mu[i] / sig[i])
        e[i] = E
        num += E * mu[i]
        den += (1.0 - E * E) * hdiag[i]
    return num / (den + _quad(kind, h, ut, hd, e))


@jit
def _sgd_optimal_lr(kind, h, ut, hd, hdiag, B, G, sig):
    """McCandlish et al.'s eq 1 as the exact one-step optimum of SGD on a quadratic:
    G'G / (G'HG + tr(H Sigma) / B), Sigma = diag(sig^2)."""
    gg = 0.0
    ths = 0.0
    for i in range(G.shape[0]):
        gg += G[i] * G[i]
        ths += hdiag[i] * sig[i] * sig[i]
    return gg / (_quad(kind, h, ut, hd, G) + ths / B)


@jit_inline
def _batch(x, b_min, b_max):
    """x clipped to [b_min, b_max] and rounded to an integer batch size."""
    return np.floor(min(max(x, b_min), b_max) + 0.5)


@jit_parallel
def _run(
    kind, h, ut, hd, sigma, keys, lr, inv_sqrt_b, opt, b1, b2, eps,
    targets, further, min_steps, max_steps,
    delta, m, v, gm, z, p,
    steps, loss_at, loss_after, delta_at, n_steps, trace,
    lr_rule, batch_rule, batch_size, interval, batch_factor, lr_factor, b_min, b_max, b_start, warmup,
    beta, keys_w, hdiag, path, step0,
    w, e, sgh, es, em,
    examples_at, path_ds, path_bds, batch_trace, lr_trace,
):  # fmt: skip
    """Run trajectory t = 0 .. T-1 from delta[t] (m[t], v[t]: optimizer state, updated in place).

    Stops at the first step count s with s >= min_steps, every reached target measured
    ``further`` steps later, and every target reached or s >= max_steps; or when the loss is
    no longer finite. Targets must be sorted in decreasing order. All arrays are preallocated.

    Each step sets its batch size B_s and learning rate by ``batch_rule`` and ``lr_rule``
    (``StepRule``; with both constant: batch_size[t] and lr[t], and inv_sqrt_b[t] = B^-1/2).
    examples_at: the examples sum_s B_s at each target; with ``path``, path_ds and path_bds: the
    integrals of ds and of B_noise ds to each target (eq 44-45); batch_trace, lr_trace: B_s and
    the learning rate of step s. Scratch: e (T, d); for estimated rules w (T, d + d % 2),
    sgh, es and em (T, d).
    """
    T = delta.shape[0]
    d = delta.shape[1]
    n_t = targets.shape[0]
    n_trace = trace.shape[1]
    half = z.shape[1] // 2
    trace_h = 0.0
    ths = 0.0
    for i in range(d):
        trace_h += hdiag[i]
        ths += hdiag[i] * sigma[i] * sigma[i]
    estimate = lr_rule == LR_ESTIMATED or batch_rule == BATCH_NOISE_ESTIMATED or batch_rule == BATCH_CRIT_ESTIMATED
    for t in prange(T):
        dt, mt, vt, gmt, zt, pt = delta[t], m[t], v[t], gm[t], z[t], p[t]
        wt, et, sgt = w[t], e[t], sgh[t]
        key = keys[t]
        loss = _refresh(kind, h, ut, hd, dt, gmt, pt)
        if n_trace > 0:
            trace[t, 0] = loss
        j = 0  # next target to reach
        jf = 0  # next reached target waiting for its further-steps loss
        s = 0
        pw1 = b1**step0  # b^t of the bias corrections: the buffers m, v already hold step0 steps
        pw2 = b2**step0
        pwa = 1.0  # beta^n: bias correction of the running averages
        a_off = 0.0  # running averages: off (oracle: exact; estimated: per-step unbiased estimates),
        a_s = 0.0  # S = sum mu^2 / sigma (from the averaged gradient em), G'G and G'HG (estimated)
        q = 0.0  # sum of the squared weights / B_s of the average em: its noise variance / sigma^2
        a_gg = 0.0
        a_ghg = 0.0
        ex = 0.0
        ids = 0.0
        ibds = 0.0
        bt = b_start  # a running average that is not positive (yet) keeps the previous batch size
        while True:
            while j < n_t and s <= max_steps and loss <= targets[j]:
                steps[t, j] = s
                loss_at[t, j] = loss
                examples_at[t, j] = ex
                path_ds[t, j] = ids
                path_bds[t, j] = ibds
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
            # the state's scalars: off = eq 14's sum and S = sum mu^2 / sigma at r = mu / sigma
            off = 0.0
            sig_s = 0.0
            if path or batch_rule == BATCH_NOISE:
                for i in range(d):
                    et[i] = gmt[i] / sigma[i]
                    sig_s += gmt[i] * et[i]
                off = _off_diagonal(kind, ut, hd, et)
            k_geo = s // interval
            if batch_rule == BATCH_CONSTANT:
                bt = batch_size[t]
                c = inv_sqrt_b[t]
            else:
                if batch_rule == BATCH_NOISE:
                    # eq 14 with off averaged over the recent states (the state's own off-diagonal
                    # sum fluctuates from step to step, often through 0)
                    pwa *= beta
                    a_off = beta * a_off + (1.0 - beta) * off
                    o = a_off / (1.0 - pwa)
                    x = batch_size[t] * np.pi * trace_h / (2.0 * o) if o > 0 else bt
                elif batch_rule == BATCH_GEOMETRIC:
                    x = batch_size[t] * batch_factor**k_geo
                elif s < warmup:
                    x = b_start
                elif batch_rule == BATCH_NOISE_ESTIMATED:
                    o = a_off / (1.0 - pwa)
                    x = batch_size[t] * np.pi * trace_h / (2.0 * o) if o > 0 else bt
                else:  # BATCH_CRIT_ESTIMATED: tr(H Sigma) / G'HG (McCandlish et al. 2018)
                    num = 0.0
                    for i in range(d):
                        num += hdiag[i] * sgt[i] * sgt[i]
                    den = a_ghg / (1.0 - pwa)
                    x = batch_size[t] * num / den if den > 0 else bt
                bt = _batch(x, b_min, b_max)
                c = 1.0 / np.sqrt(bt)
            base = np.uint64(s) * np.uint64(half)
            _fill_normals(key, base, zt)
            if estimate:
                _fill_normals(keys_w[t], base, wt)
                _estimate(kind, h, ut, hd, hdiag, s, bt, c, sigma, gmt, zt, wt, es, sgt, et, t)
                pwa *= beta
                q = beta * beta * q + (1.0 - beta) * (1.0 - beta) / bt
                bc = 1.0 / (1.0 - pwa)
                a_s = _signal(em[t], gmt, c, sigma, zt, sgt, beta, bc, q * bc * bc) / bc
                a_off = beta * a_off + (1.0 - beta) * _off_diagonal(kind, ut, hd, et)
                gg, ghg = _grad_products(kind, h, ut, hd, hdiag, bt, gmt, c, sigma, zt, sgt, et)
                a_gg = beta * a_gg + (1.0 - beta) * gg
                a_ghg = beta * a_ghg + (1.0 - beta) * ghg
            if lr_rule == LR_CONSTANT:
                step_lr = lr[t]
            elif lr_rule == LR_GEOMETRIC:
                step_lr = lr[t] * lr_factor**k_geo
            elif lr_rule == LR_OPTIMAL:
                if opt == SGD:
                    step_lr = lr[t] * _sgd_optimal_lr(kind, h, ut, hd, hdiag, bt, gmt, sigma)
                else:
                    step_lr = lr[t] * _sign_optimal_lr(kind, h, ut, hd, hdiag, bt, gmt, sigma, et)
            else:  # LR_ESTIMATED: eq 13 (sign-like) or eq 1 (sgd) from the running estimates
                bc = 1.0 / (1.0 - pwa)
                if opt == SGD:
                    num = 0.0
                    for i in range(d):
                        num += hdiag[i] * sgt[i] * sgt[i]
                    step_lr = lr[t] * a_gg * bc / (a_ghg * bc + num / bt)
                else:
                    step_lr = lr[t] * (
                        np.sqrt(2.0 * bt / np.pi) * a_s * bc / (trace_h + 2.0 * bt / np.pi * max(a_off * bc, 0.0))
                    )
            if not (step_lr > 0.0):  # no signal estimated (yet): no step
                step_lr = 0.0
            if s < n_trace:
                batch_trace[t, s] = bt
                lr_trace[t, s] = step_lr
            pw1 *= b1
            pw2 *= b2
            _update(opt, step_lr, c, b1, b2, eps, 1.0 - pw1, 1.0 - pw2, sigma, gmt, zt, dt, mt, vt)
            ex += bt
            g2 = 0.0
            ghg = 0.0
            if path and opt == SGD:
                for i in range(d):
                    g2 += gmt[i] * gmt[i]
                ghg = _quad(kind, h, ut, hd, gmt)
            s += 1
            new = _refresh(kind, h, ut, hd, dt, gmt, pt)
            if path:
                dl = loss - new
                if opt == SGD:
                    # McCandlish: dL_max = (G'G)^2 / (2 G'HG), B_noise = tr(H Sigma) / G'HG
                    if g2 > 0:
                        ids += 2.0 * ghg * dl / (g2 * g2)
                        ibds += 2.0 * ths * dl / (g2 * g2)
                elif sig_s > 0:
                    # eq 19: dL_max = S^2 / (2 off); eq 14: B_noise ds = pi tr(H) dL / S^2
                    ids += 2.0 * off * dl / (sig_s * sig_s)
                    ibds += np.pi * trace_h * dl / (sig_s * sig_s)
            loss = new
            if s < n_trace:
                trace[t, s] = loss
        n_steps[t] = s


_PRIOR = 4.0  # weight, in steps, of the coordinates' mean variance in each coordinate's estimate


@jit
def _estimate(kind, h, ut, hd, hdiag, s, bt, c, sigma, gm, z, w, es, sgh, u, t):
    """Update the per-coordinate variance estimates from step s's two half batches, and set
    u = g / sigma_hat for the batch-mean gradient g = gm + c sigma z.

    The half-batch means are g +- sigma w / sqrt(B) (w ~ N(0, 1) independent of z), so their
    squared difference times B / 4 is sigma^2 w^2, one degree of freedom per step and no extra
    example. es[t] holds the running sums; each estimate is shrunk towards the coordinates' mean
    with the weight of ``_PRIOR`` steps, so that no sigma_hat is near 0 after a few steps.
    """
    d = gm.shape[0]
    mean = 0.0
    for i in range(d):
        es[t, i] += (sigma[i] * w[i]) ** 2
        mean += es[t, i]
    mean /= d
    n = s + 1.0
    for i in range(d):
        sgh[i] = np.sqrt((es[t, i] + _PRIOR * mean / n) / (n + _PRIOR))
        u[i] = (gm[i] + c * sigma[i] * z[i]) / sgh[i]


@jit
def _signal(em, gm, c, sigma, z, sgh, beta, debias, var):
    """Update em, the running average (factor beta) of the batch-mean gradient g = gm + c sigma z,
    and return sum_i (m_i^2 - sigma_hat_i^2 var) / sigma_hat_i with m = debias * em: an estimate of
    S = sum mu_i^2 / sigma_i, m^2 made unbiased by its noise variance sigma_hat^2 var (var: the
    sum of the average's squared weights over B_s, debiased)."""
    s = 0.0
    for i in range(gm.shape[0]):
        em[i] = beta * em[i] + (1.0 - beta) * (gm[i] + c * sigma[i] * z[i])
        m = em[i] * debias
        s += (m * m - sgh[i] * sgh[i] * var) / sgh[i]
    return s


@jit
def _grad_products(kind, h, ut, hd, hdiag, bt, gm, c, sigma, z, sgh, g):
    """Unbiased estimates of G'G and G'HG from one batch mean g (overwritten into ``g``):
    g'g - tr(Sigma_hat) / B and g'Hg - tr(H Sigma_hat) / B."""
    gg = 0.0
    tr = 0.0
    trh = 0.0
    for i in range(gm.shape[0]):
        g[i] = gm[i] + c * sigma[i] * z[i]
        gg += g[i] * g[i]
        tr += sgh[i] * sgh[i]
        trh += hdiag[i] * sgh[i] * sgh[i]
    return gg - tr / bt, _quad(kind, h, ut, hd, g) - trh / bt


@dataclass(frozen=True)
class StepRule:
    """How each step sets its batch size B_s and learning rate (``run_trajectories``).

    lr: ``constant`` (lr[t]); ``optimal``: lr[t] times the exact one-step optimum at the state
    (eq 9 at B_s for sign, adam and lion; McCandlish's eq 1 for sgd, G'G / (G'HG + tr(H Sigma) / B));
    ``estimated``: eq 13 at B_s (eq 1 for sgd) from running estimates made from the minibatch
    gradients (no access to the state; per-coordinate variances from the two half batches);
    ``geometric``: lr[t] * lr_factor^floor(s / interval).
    batch: ``constant`` (batch_size[t]); ``noise``: batch_size[t] * B_noise (eq 14) at the state,
    its off-diagonal sum averaged over the recent states;
    ``noise_estimated``: the same from the running estimates; ``critical_estimated``:
    batch_size[t] * tr(H Sigma) / G'HG from the estimates (McCandlish et al.'s B_crit);
    ``geometric``: batch_size[t] * batch_factor^floor(s / interval). Every rule but ``constant``
    clips to [batch_min, batch_max] and rounds; the estimated ones use batch_start for their
    first ``warmup`` steps; where a running average is not positive, the batch size stays as it
    was. beta: the averaging factor of the running averages over steps (the oracle's off-diagonal
    sum of eq 14; the estimated rules' S, off, G'G and G'HG).
    """

    lr: str = "constant"
    batch: str = "constant"
    interval: int = 1
    batch_factor: float = 1.0
    lr_factor: float = 1.0
    batch_min: float = 1.0
    batch_max: float = 2.0**20
    batch_start: float = 16.0
    warmup: int = 10
    beta: float = 0.9

    def __post_init__(self) -> None:
        if self.lr not in LR_RULES:
            raise ValueError(f"lr rule must be one of {sorted(LR_RULES)}, got {self.lr!r}")
        if self.batch not in BATCH_RULES:
            raise ValueError(f"batch rule must be one of {sorted(BATCH_RULES)}, got {self.batch!r}")
        if isinstance(self.interval, bool) or int(self.interval) != self.interval or self.interval < 1:
            raise ValueError(f"interval={self.interval!r} must be an integer >= 1")
        if isinstance(self.warmup, bool) or int(self.warmup) != self.warmup or self.warmup < 0:
            raise ValueError(f"warmup={self.warmup!r} must be an integer >= 0")
        for name in ("batch_factor", "lr_factor"):
            if not (0 < getattr(self, name) < np.inf):
                raise ValueError(f"{name}={getattr(self, name)!r} must be finite and > 0")
        if not (1.0 <= self.batch_min <= self.batch_max < np.inf):
            raise ValueError(f"need 1 <= batch_min <= batch_max < inf, got {self.batch_min!r}, {self.batch_max!r}")
        if not (2.0 <= self.batch_start < np.inf) and self.estimates:
            raise ValueError(f"batch_start={self.batch_start!r} must be >= 2 (two half batches)")
        if self.estimates and self.batch != "constant" and self.batch_min < 2:
            raise ValueError(f"estimated rules split each batch in two: batch_min={self.batch_min!r} must be >= 2")
        if self.estimates and self.batch == "noise":
            raise ValueError("the batch rule 'noise' (exact state) cannot be combined with the lr rule 'estimated'")
        if not (0.0 <= self.beta < 1.0):
            raise ValueError(f"beta={self.beta!r} must be in [0, 1)")

    @property
    def estimates(self) -> bool:
        """Whether the rule keeps running estimates of mu and sigma."""
        return self.lr == "estimated" or self.batch in ("noise_estimated", "critical_estimated")

    @property
    def is_constant(self) -> bool:
        return self.lr == "constant" and self.batch == "constant"


def _check_int(name: str, value, lo: int) -> int:
    if int(value) != value or value < lo:
        raise ValueError(f"{name}={value!r} must be an integer >= {lo}")
    return int(value)


def run_trajectories(
    H: Hessian,
    sigma: np.ndarray,
    delta0: np.ndarray,
    keys: np.ndarray,
    lr: ArrayLike,
    batch_size: ArrayLike,
    optimizer: Optimizer,
    targets: ArrayLike = (),
    further_steps: int = 0,
    max_steps: int = 1000,
    min_steps: int = 0,
    trace_steps: int = 0,
    rule: StepRule = StepRule(),
    path: bool = False,
    m0: np.ndarray | None = None,
    v0: np.ndarray | None = None,
    start_step: int = 0,
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
        trace_steps: record the loss after 0 .. trace_steps - 1 steps (with a per-step rule also
            B_s and lr_s: ``TrajectoryResult.batch_trace``, ``lr_trace``).
        rule: how each step sets its batch size and learning rate (``StepRule``; with a rule
            other than constant, lr and batch_size are its values or multipliers).
        path: also integrate ds and B_noise ds to each target (eq 44-45).
        m0, v0: (d,) or (T, d) optimizer buffers to start from (default zeros: a fresh optimizer);
            start_step: the steps they already hold (Adam's bias corrections 1 - b^t continue from
            t = start_step). The noise of step s is still the stream's step s.

    Returns:
        A ``TrajectoryResult``; targets are reported in the order given.
    """
    return _trajectories(
        _run_numba, H, sigma, delta0, keys, lr, batch_size, optimizer, targets, further_steps, max_steps,
        min_steps, trace_steps, rule, path, m0, v0, start_step,
    )  # fmt: skip


def _run_numba(*args) -> None:
    # Trajectories differ in length (a large lr reaches the targets sooner, a failing one runs to
    # max_steps): hand them to the threads one at a time so that both stay busy.
    previous = numba.set_parallel_chunksize(1)
    try:
        _run(*args)
    finally:
        numba.set_parallel_chunksize(previous)


_W_TAG = 0x57  # the sub-stream of the half-batch difference normals of estimated rules


def _trajectories(
    run, H, sigma, delta0, keys, lr, batch_size, optimizer, targets, further_steps, max_steps, min_steps, trace_steps,
    rule: StepRule = StepRule(), path: bool = False, m0=None, v0=None, start_step: int = 0,
) -> TrajectoryResult:  # fmt: skip
    """``run_trajectories``'s checks, set-up and results around ``run``, a function with ``_run``'s
    arguments and in-place outputs (the Numba loop here; ``surgesim.gpu.dynamics`` passes its own,
    which takes the arguments up to ``trace`` and supports only the constant rule without path)."""
    if not isinstance(rule, StepRule):
        raise TypeError(f"rule must be a StepRule, got {type(rule).__name__}")
    general = not rule.is_constant or bool(path)
    if run is not _run_numba and optimizer.name == "sgd" and optimizer.beta1 > 0:
        raise ValueError("SGD with momentum runs on the CPU backend only")
    if general and run is not _run_numba:
        raise ValueError("per-step rules (optimal lr, batch-size schedules) and path integrals run on the CPU "
                         "backend only")  # fmt: skip
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
    b_lo = 1.0 if rule.batch in ("constant", "geometric") else 0.0
    if np.any(~(bs >= b_lo)) or np.any(bs == 0) or not np.all(np.isfinite(bs)):
        what = "batch sizes must be finite and >= 1" if b_lo else "batch-size multipliers must be finite and > 0"
        raise ValueError(f"{what}, got min {bs.min() if T else None}")
    if rule.estimates and rule.batch == "constant" and np.any(bs < 2):
        raise ValueError(f"estimated rules split each batch in two halves: batch sizes must be >= 2, got {bs.min()}")
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
    start_step = _check_int("start_step", start_step, 0)
    for name, given, buf in (("m0", m0, mom), ("v0", v0, vel)):
        if given is not None:
            arr = np.asarray(given, dtype=np.float64)
            if arr.shape not in ((d,), (T, d)) or not np.all(np.isfinite(arr)):
                raise ValueError(f"{name} must be finite with shape ({d},) or ({T}, {d}), got {arr.shape}")
            if name == "v0" and np.any(arr < 0):
                raise ValueError("v0 must be >= 0 (a second moment)")
            buf[:] = arr
    if run is not _run_numba and (m0 is not None or v0 is not None or start_step):
        raise ValueError("starting from given optimizer buffers runs on the CPU backend only")
    gm = np.empty((T, d))
    z = np.empty((T, d + (d & 1)))
    p = np.empty((T, max(k, 1)))
    steps = np.full((T, n_t), -1, dtype=np.int64)
    loss_at = np.full((T, n_t), np.nan)
    loss_after = np.full((T, n_t), np.nan)
    delta_at = np.full((T, n_t, d), np.nan)
    n_steps = np.zeros(T, dtype=np.int64)
    trace = np.full((T, n_trace), np.nan)
    examples_at = np.full((T, n_t), np.nan)
    path_ds = np.full((T, n_t), np.nan)
    path_bds = np.full((T, n_t), np.nan)
    batch_trace = np.full((T, n_trace), np.nan)
    lr_trace = np.full((T, n_trace), np.nan)
    common = (
        kind, h, ut, hd, sigma, keys, lr, 1.0 / np.sqrt(np.maximum(bs, 1.0)), optimizer.code,
        float(optimizer.beta1), float(optimizer.beta2), float(optimizer.eps),
        np.ascontiguousarray(tg[order]), further, min_steps, max_steps,
        delta, mom, vel, gm, z, p, steps, loss_at, loss_after, delta_at, n_steps, trace,
    )  # fmt: skip
    if run is not _run_numba:  # another backend's loop: constant rule, no path (checked above)
        run(*common)
        reached = steps >= 0
        examples_at[reached] = (steps * bs[:, None])[reached]
        batch_trace[:] = np.where(np.isfinite(trace), bs[:, None], np.nan)
        lr_trace[:] = np.where(np.isfinite(trace), lr[:, None], np.nan)
    else:
        est = rule.estimates
        keys_w = np.array([derive_key(kk, np.uint64(_W_TAG)) for kk in keys], dtype=np.uint64)

        def scratch(n: int) -> np.ndarray:
            return np.zeros((T, n) if est else (T, 0))

        run(
            *common, LR_RULES[rule.lr], BATCH_RULES[rule.batch], bs, int(rule.interval), float(rule.batch_factor),
            float(rule.lr_factor), float(rule.batch_min), float(rule.batch_max), float(rule.batch_start),
            int(rule.warmup), float(rule.beta), keys_w, np.ascontiguousarray(H.diag(), dtype=np.float64),
            bool(path), start_step, scratch(z.shape[1]), np.zeros((T, d)), scratch(d), scratch(d), scratch(d),
            examples_at, path_ds, path_bds, batch_trace, lr_trace,
        )  # fmt: skip
    inv = np.argsort(order)
    return TrajectoryResult(
        steps[:, inv], loss_at[:, inv], loss_after[:, inv], delta_at[:, inv], delta, mom, vel, n_steps, trace,
        examples_at[:, inv], path_ds[:, inv], path_bds[:, inv], batch_trace, lr_trace,
    )  # fmt: skip


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
