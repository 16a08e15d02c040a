"""The compiled loop of the dynamics kernels (``surgesim.kernels.dynamics``): ``_run`` advances every
trajectory, in parallel over trajectories, until its targets are reached."""

from __future__ import annotations

import numpy as np
from numba import prange

from .._jit import jit_inline, jit_parallel
from ..rng import normal_pair
from .hessian_products import _off_diagonal, _quad, _refresh
from .optimizers import SGD, _update
from .step_rules import (
    BATCH_CONSTANT,
    BATCH_CRIT_ESTIMATED,
    BATCH_GEOMETRIC,
    BATCH_NOISE,
    BATCH_NOISE_ESTIMATED,
    LR_CONSTANT,
    LR_ESTIMATED,
    LR_GEOMETRIC,
    LR_OPTIMAL,
    _batch,
    _estimate,
    _grad_products,
    _sgd_optimal_lr,
    _sign_optimal_lr,
    _signal,
)


@jit_inline
def _fill_normals(key, base, z):
    """z[i] for i < 2 * half: element i % 2 of pair base + i // 2."""
    for q in range(z.shape[0] // 2):
        a, b = normal_pair(key, base + q)
        z[2 * q] = a
        z[2 * q + 1] = b


@jit_parallel
def _run(  # noqa: C901, PLR0912, PLR0913, PLR0915
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


@jit_parallel
def _normals_only(keys, n_steps, z):
    half = z.shape[1] // 2
    for t in prange(keys.shape[0]):
        for s in range(n_steps):
            _fill_normals(keys[t], np.uint64(s) * np.uint64(half), z[t])
