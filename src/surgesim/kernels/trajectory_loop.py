"""The compiled loop of the dynamics kernels (``surgesim.kernels.dynamics``): ``_run`` advances every
trajectory, in parallel over trajectories, until its targets are reached."""

from __future__ import annotations

import numpy as np
from numba import prange

from .._jit import jit, jit_inline, jit_parallel
from ..rng import normal_pair
from .hessian_products import _refresh
from .optimizers import SGD, _update
from .step_rules import (
    BATCH_NOISE,
    _choose_batch,
    _choose_lr,
    _path_step,
    _sgd_path_terms,
    _state_scalars,
    _update_estimates,
)


@jit_inline
def _fill_normals(key, base, z):
    """z[i] for i < 2 * half: element i % 2 of pair base + i // 2."""
    for q in range(z.shape[0] // 2):
        a, b = normal_pair(key, base + q)
        z[2 * q] = a
        z[2 * q + 1] = b


@jit_parallel
def _run(quadratic, optimizer, rule, horizon, per_trajectory, state, records):
    """Run trajectory t = 0 .. T-1 from state.delta[t], in place, in parallel over t (the groups:
    ``loop_arguments``): each step sets B_s and the learning rate by the rule, then updates; a
    trajectory stops at s >= min_steps with every reached target measured ``further`` steps later
    and every target reached or s >= max_steps, or at a loss that is not finite."""
    # Unpacked outside the prange, under the names the loop has always had: Numba drops writes to
    # a tuple's arrays in a prange (numba/numba#5872; n_steps too, hence _store), and the names of
    # the variables the prange uses order the arguments of its compiled body, which set how LLVM
    # reassociates under fastmath: the last bits of the results.
    kind, h, ut, hd, sigma, hdiag = quadratic
    opt, b1, b2, eps = optimizer
    lr_rule, batch_rule, interval, batch_factor, lr_factor, b_min, b_max, b_start, warmup, beta, estimate, path = rule
    targets, further, min_steps, max_steps, step0 = horizon
    keys, keys_w, lr, batch_size, inv_sqrt_b = per_trajectory
    delta, m, v, gm, z, p, w, e, sgh, es, em = state
    steps, loss_at, loss_after, delta_at, examples_at, path_ds, path_bds, n_steps, trace, batch_trace, lr_trace = (
        records
    )
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
    for t in prange(T):
        dt, mt, vt, gmt, zt, pt = delta[t], m[t], v[t], gm[t], z[t], p[t]
        wt, et, sgt = w[t], e[t], sgh[t]
        key = keys[t]
        loss = _refresh(kind, h, ut, hd, dt, gmt, pt)
        if n_trace > 0:
            trace[t, 0] = loss
        j = jf = s = 0  # j: the next target to reach; jf: the next reached one awaiting its further loss
        pw1 = b1**step0  # b^t of the bias corrections: the buffers m, v already hold step0 steps
        pw2 = b2**step0
        # pwa = beta^n, the bias correction of the running averages of off (oracle: exact; estimated:
        # per-step unbiased estimates), S = sum mu^2 / sigma (from the averaged gradient em), G'G and
        # G'HG (estimated); q: sum of the squared weights / B_s of em (its noise variance / sigma^2)
        pwa, a_off, a_s, q, a_gg, a_ghg = 1.0, 0.0, 0.0, 0.0, 0.0, 0.0
        ex, ids, ibds = 0.0, 0.0, 0.0  # examples, and the path integrals of ds and B_noise ds
        bt = b_start  # a running average that is not positive (yet) keeps the previous batch size
        while True:
            j, jf = _record_targets(t, s, loss, ex, ids, ibds, dt, j, jf, n_t, targets, further, max_steps, steps,
                                    loss_at, loss_after, delta_at, examples_at, path_ds, path_bds)  # fmt: skip
            if not np.isfinite(loss):
                break
            if s >= min_steps and jf == j and (j == n_t or s >= max_steps):
                break
            off, sig_s = _state_scalars(kind, ut, hd, sigma, gmt, et, path or batch_rule == BATCH_NOISE)
            k_geo = s // interval
            bt, c, pwa, a_off = _choose_batch(
                batch_rule, batch_size[t], inv_sqrt_b[t], s, k_geo, bt, off, pwa, a_off, a_ghg, beta, trace_h, hdiag,
                sgt, batch_factor, warmup, b_start, b_min, b_max,
            )  # fmt: skip
            base = np.uint64(s) * np.uint64(half)
            _fill_normals(key, base, zt)
            if estimate:
                _fill_normals(keys_w[t], base, wt)
                pwa, q, a_s, a_off, a_gg, a_ghg = _update_estimates(
                    kind, h, ut, hd, hdiag, s, bt, c, sigma, gmt, zt, wt, es, sgt, et, em[t], t, beta,
                    pwa, q, a_off, a_gg, a_ghg,
                )  # fmt: skip
            step_lr = _choose_lr(
                lr_rule, opt, lr[t], lr_factor, k_geo, kind, h, ut, hd, hdiag, bt, gmt, sigma, et, sgt, trace_h,
                pwa, a_s, a_off, a_gg, a_ghg,
            )  # fmt: skip
            if s < n_trace:
                batch_trace[t, s] = bt
                lr_trace[t, s] = step_lr
            pw1 *= b1
            pw2 *= b2
            _update(opt, step_lr, c, b1, b2, eps, 1.0 - pw1, 1.0 - pw2, sigma, gmt, zt, dt, mt, vt)
            ex += bt
            g2, ghg = _sgd_path_terms(path and opt == SGD, kind, h, ut, hd, gmt)
            s += 1
            new = _refresh(kind, h, ut, hd, dt, gmt, pt)
            if path:
                ids, ibds = _path_step(opt == SGD, loss - new, g2, ghg, off, sig_s, ths, trace_h, ids, ibds)
            loss = new
            if s < n_trace:
                trace[t, s] = loss
        _store(n_steps, t, s)  # a compiled call, not n_steps[t] = s: see above


@jit
def _store(a, i, x):
    """a[i] = x, compiled on its own (not inlined into a prange body)."""
    a[i] = x


@jit_inline
def _record_targets(  # noqa: PLR0913
    t, s, loss, ex, ids, ibds, dt, j, jf, n_t, targets, further, max_steps, steps, loss_at, loss_after, delta_at,
    examples_at, path_ds, path_bds,
):  # fmt: skip
    """Record the targets that step s reaches (from target j on) and the losses ``further`` steps
    after a target (from target jf on); returns the new (j, jf)."""
    d = dt.shape[0]
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
    return j, jf


@jit_parallel
def _normals_only(keys, n_steps, z):
    half = z.shape[1] // 2
    for t in prange(keys.shape[0]):
        for s in range(n_steps):
            _fill_normals(keys[t], np.uint64(s) * np.uint64(half), z[t])
