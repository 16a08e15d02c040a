"""CuPy kernels for one sign-SGD step: the GPU twin of ``surgesim.kernels.onestep``.

Same functions, signatures and semantics as the CPU module (a_t = mu'V_t, b_t = V_t'HV_t, the
one-step loss improvement dL_t(eps) = eps a_t - eps^2/2 b_t, eq 30-31), and the same random
numbers: trial t of batch size B uses the stream ``derive_key(batch_key(seed, B), t0 + t)`` with
the CPU's counter layout (SIGN: word i; BATCH_MEAN: element i % 2 of Box-Muller pair i // 2;
PER_EXAMPLE: normal j = i * B + e from pair j // 2), so for the same seed the sign patterns V are
the CPU's exactly for the SIGN sampler, and for the normal samplers up to the device's libm
rounding of the normals (a V_i can differ only if the batch mean is within ~1e-15 of zero).
a and b are float64 sums over the same V in a different order (CPU: vectorised loop; GPU: a warp
tree), so they agree to float64 rounding.

One CUDA warp computes one trial: the 32 lanes draw coordinates i = lane, lane + 32, ... and the
partial sums (mu'V, sum h V^2 and Ut V for diagonal + low-rank H, the factor passed transposed
as on the CPU, Ut (k, d)) are reduced by warp shuffles. The rank k is a template parameter (one
compiled kernel per k). For dense H, ``trial_signs`` writes V and ``quad_rows_f32`` is float32
cuBLAS GEMMs in blocks of ``DENSE_BLOCK`` rows (no TF32 unless CuPy's ``CUPY_TF32=1`` is set),
the row dot products accumulated in float64.

Arrays: every function accepts NumPy or CuPy arrays. Outputs are filled in place; a NumPy output
is filled by a device-to-host copy after the kernel, a C-contiguous CuPy output is written
directly on the device (keep inputs and outputs on the device to avoid transfers).
``quad_rows_f32`` returns an array of the same kind as ``V``. ``work`` (CPU scratch) is accepted
for signature compatibility and not used. ``batch_key`` and ``sign_thresholds`` are host
computations shared with the CPU module.
"""

from __future__ import annotations

import functools

import numpy as np

from ..kernels.onestep import (
    BATCH_MEAN,
    DENSE_BLOCK,
    PER_EXAMPLE,
    SAMPLERS,
    SIGN,
    batch_key,
    sign_thresholds,
)
from . import _runtime, _source

__all__ = [
    "SIGN",
    "BATCH_MEAN",
    "PER_EXAMPLE",
    "SAMPLERS",
    "batch_key",
    "sign_thresholds",
    "sample_signs",
    "trial_moments",
    "trial_signs",
    "quad_rows_f32",
    "DENSE_BLOCK",
]

_MOMENTS, _SIGNS = 0, 1  # kernel modes (SURGESIM_MOMENTS, SURGESIM_SIGNS in the source)
_WARPS = _source.WARPS_PER_BLOCK


@functools.cache
def _kernel(k: int):
    name = f"onestep_trials<{k}>"
    return _runtime.module(_source.ONESTEP, (name,)).get_function(name)


@functools.cache
def _row_dot():
    cp = _runtime.cupy()
    return cp.ReductionKernel(
        "float32 x, float32 y", "float64 z", "(double)x * (double)y", "a + b", "z = a", "0",
        "surgesim_row_dot",
    )  # fmt: skip


def _launch(mode, sampler, key_b, t0, keys, B, mu, sigma, thr, rare, h, Ut, out_a, out_b, out_v):
    """Run the one-step kernel for n = out_a.shape[0] trials; see the module docstring.

    Arguments are checked before CuPy is needed, so bad input is a ValueError on any machine.
    """
    sampler = int(sampler)
    if sampler not in (SIGN, BATCH_MEAN, PER_EXAMPLE):
        raise ValueError(f"sampler must be one of {SIGN}, {BATCH_MEAN}, {PER_EXAMPLE}, got {sampler}")
    if int(B) != B or B < 1:
        raise ValueError(f"batch size must be an integer >= 1, got {B}")
    d = int(mu.shape[0])
    n = int(out_a.shape[0])
    for name, x in (("sigma", sigma), ("thr", thr), ("rare", rare)):
        if tuple(x.shape) != (d,):
            raise ValueError(f"{name} must have shape ({d},) like mu, got {tuple(x.shape)}")
    if mode == _MOMENTS:
        if tuple(h.shape) != (d,) or len(Ut.shape) != 2 or Ut.shape[1] != d:
            raise ValueError(f"h must be ({d},) and Ut (k, {d}), got {tuple(h.shape)} and {tuple(Ut.shape)}")
        k = int(Ut.shape[0])
    else:
        k = 0
    _runtime.check_output(out_a, (n,), np.float64)
    if mode == _MOMENTS:
        _runtime.check_output(out_b, (n,), np.float64)
    else:
        _runtime.check_output(out_v, (n, d), np.float32)
    cp = _runtime.cupy()
    dummy_f64 = cp.zeros(1, dtype=cp.float64)
    a = _runtime.output(out_a, (n,), np.float64)
    b = _runtime.output(out_b, (n,), np.float64) if mode == _MOMENTS else dummy_f64
    v = _runtime.output(out_v, (n, d), np.float32) if mode == _SIGNS else cp.zeros(1, dtype=cp.float32)
    if n == 0:
        return
    use_keys = keys is not None
    args = (
        np.int32(mode), np.int32(sampler), np.uint64(key_b), np.uint64(t0),
        _runtime.to_device(keys, np.uint64) if use_keys else cp.zeros(1, dtype=cp.uint64),
        np.int32(use_keys), np.int64(B), np.int32(d), np.int64(n),
        _runtime.to_device(mu, np.float64), _runtime.to_device(sigma, np.float64),
        _runtime.to_device(thr, np.uint64), _runtime.to_device(rare, np.float32),
        _runtime.to_device(h, np.float64) if mode == _MOMENTS else dummy_f64,
        _runtime.to_device(Ut, np.float64) if k > 0 else dummy_f64,
        a, b, v,
    )  # fmt: skip
    _kernel(k)(((n + _WARPS - 1) // _WARPS,), (32 * _WARPS,), args)
    _runtime.store(out_a, a)
    if mode == _MOMENTS:
        _runtime.store(out_b, b)
    else:
        _runtime.store(out_v, v)


def sample_signs(sampler, key, B, mu, sigma, thr, rare, row) -> None:
    """Fill ``row`` (d,) with V = sign(batch mean) for the trial whose stream key is ``key``."""
    d = int(mu.shape[0])
    _runtime.check_output(row, (d,), np.float32)
    cp = _runtime.cupy()
    keys = np.array([key], dtype=np.uint64)
    v = _runtime.output(row, (d,), np.float32)
    _launch(_SIGNS, sampler, 0, 0, keys, B, mu, sigma, thr, rare, None, None,
            cp.empty(1, dtype=cp.float64), None, v.reshape(1, d))  # fmt: skip
    _runtime.store(row, v)


def trial_moments(sampler, key_b, t0, B, mu, sigma, thr, rare, h, Ut, out_a, out_b, work=None) -> None:
    """a_t = mu'V_t and b_t = V_t'HV_t for trials t0 .. t0 + n - 1 (n = out_a.shape[0]).

    H = diag(h) + Ut' Ut with the low-rank factor given transposed, Ut of shape (k, d) (k may be
    0). ``work`` is not used (CPU scratch).
    """
    _launch(_MOMENTS, sampler, key_b, t0, None, B, mu, sigma, thr, rare, h, Ut, out_a, out_b, None)


def trial_signs(sampler, key_b, t0, B, mu, sigma, thr, rare, out_a, out_v) -> None:
    """a_t = mu'V_t and V_t itself (rows of ``out_v``, float32) for trials t0 .. t0 + n - 1."""
    _launch(_SIGNS, sampler, key_b, t0, None, B, mu, sigma, thr, rare, None, None, out_a, None, out_v)


def quad_rows_f32(V, H32):
    """V_t'HV_t for each row of V (float32, entries in {-1, 0, 1}) by float32 cuBLAS GEMMs.

    As on the CPU, the rows are cut into blocks of ``DENSE_BLOCK`` and each block is one GEMM of
    a fixed shape, so the rounding of a row depends only on the block it is in (callers align
    blocks to trial indices). Each entry of VH is rounded to float32 (relative error ~1e-7, far
    below any Monte Carlo standard error); the row dot products are accumulated in float64.
    Returns NumPy for a NumPy ``V``, CuPy for a CuPy ``V``.
    """
    if len(V.shape) != 2 or tuple(H32.shape) != (V.shape[1], V.shape[1]):
        raise ValueError(f"V must be (n, d) and H32 (d, d), got {tuple(V.shape)} and {tuple(H32.shape)}")
    Vd = _runtime.to_device(V, np.float32)
    Hd = _runtime.to_device(H32, np.float32)
    VH = _runtime.cupy().empty_like(Vd)
    for s in range(0, Vd.shape[0], DENSE_BLOCK):
        _runtime.cupy().matmul(Vd[s : s + DENSE_BLOCK], Hd, out=VH[s : s + DENSE_BLOCK])
    out = _row_dot()(VH, Vd, axis=1)
    return out if _runtime.is_device(V) else out.get()
