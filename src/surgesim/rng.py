"""Counter-based random numbers: every number is a pure function of (seed, stream, counter).

The generator is SplitMix64 (Steele, Lea & Flood 2014, "Fast splittable pseudorandom number
generators", https://doi.org/10.1145/2714064.2660195) used as a keyed counter hash: the n-th
64-bit word of the stream with key k is ``mix64(k + (n + 1) * GAMMA)``, which is exactly the n-th
output of the reference SplitMix64 generator seeded with k, so the published reference vectors
test it. Stream keys are derived from the seed and any number of integer ids by the same mixer
(``derive_key``), never from global or per-thread state: results do not depend on the thread
count, the chunking, the worker count or the backend.

All functions here are Numba-compiled and callable from users' own ``@njit`` code; ``uniforms``
and ``normals`` are the array conveniences for Python callers and for reference implementations.
"""

from __future__ import annotations

import numpy as np
from numba import types
from numba.extending import intrinsic

from ._jit import jit, jit_inline

__all__ = [
    "GAMMA",
    "mix64",
    "derive_key",
    "stream_key",
    "random_bits",
    "bits_to_uniform",
    "uniform",
    "normal_pair",
    "probability_threshold",
    "uniforms",
    "normals",
]

GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)
_ONE = np.uint64(1)
_TWO_M53 = 2.0**-53
_TWO_PI = 2.0 * np.pi


@jit_inline
def mix64(z):
    """SplitMix64's finaliser (Stafford's variant 13): a bijection of uint64."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@jit_inline
def random_bits(key, counter):
    """The counter-th 64-bit word of stream ``key`` (= SplitMix64 seeded with key, output n)."""
    return mix64(np.uint64(key) + (np.uint64(counter) + _ONE) * GAMMA)


@jit_inline
def derive_key(key, x):
    """Key of the sub-stream numbered ``x`` (any integer, cast to uint64) of stream ``key``."""
    return mix64(np.uint64(key) ^ mix64(np.uint64(x) + GAMMA))


@jit
def stream_key(seed, a, b):
    """Key for the stream (seed, a, b), e.g. (seed, batch size, trial)."""
    return derive_key(derive_key(mix64(np.uint64(seed)), a), b)


@jit_inline
def bits_to_uniform(bits):
    """Top 53 bits of a word as a double in [0, 1)."""
    return np.float64(bits >> _S11) * _TWO_M53


@jit_inline
def uniform(key, counter):
    """Uniform double in [0, 1) from word ``counter`` of stream ``key``."""
    return bits_to_uniform(random_bits(key, counter))


# --- Box-Muller without library calls -------------------------------------------------------------
# libm's log, cos and sin cannot be vectorised by LLVM (no SVML here): about 85M normals/s per
# thread. The same transform written with fdlibm's polynomials (Sun Microsystems, e_log.c,
# k_sin.c, k_cos.c; each within about 1 ulp) and exact range reductions vectorises, about 10x
# faster, and equals the libm transform to rounding (|difference| < 1e-14; the CUDA twin in
# surgesim.gpu uses the device's libm and agrees to that rounding).


@intrinsic
def _f64_as_u64(typingctx, x):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.uint64))

    return types.uint64(types.float64), codegen


@intrinsic
def _u64_as_f64(typingctx, x):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float64))

    return types.float64(types.uint64), codegen


_LN2_HI, _LN2_LO = 6.93147180369123816490e-01, 1.90821492927058770002e-10
_LG = (6.666666666666735130e-01, 3.999999999940941908e-01, 2.857142874366239149e-01, 2.222219843214978396e-01,
       1.818357216161805012e-01, 1.531383769920937332e-01, 1.479819860511658591e-01)  # fmt: skip
_S = (-1.66666666666666324348e-01, 8.33333333332248946124e-03, -1.98412698298579493134e-04,
      2.75573137070700676789e-06, -2.50507602534068634195e-08, 1.58969099521155010221e-10)  # fmt: skip
_C = (4.16666666666666019037e-02, -1.38888888888741095749e-03, 2.48015872894767294178e-05,
      -2.75573143513906633035e-07, 2.08757232129817482790e-09, -1.13596475577881948265e-11)  # fmt: skip
_MANTISSA = np.uint64(0x000FFFFFFFFFFFFF)
_EXP_ONE = np.uint64(0x3FF0000000000000)
_SQRT2 = 1.4142135623730951


@jit_inline
def _log(x):
    """ln x for a normal double x > 0 (fdlibm e_log.c: x = 2^k m, m in [sqrt(2)/2, sqrt(2)))."""
    bits = _f64_as_u64(x)
    m = _u64_as_f64((bits & _MANTISSA) | _EXP_ONE)  # in [1, 2)
    k = np.float64(np.int64(bits >> np.uint64(52)) - 1023)
    if m > _SQRT2:
        m *= 0.5
        k += 1.0
    f = m - 1.0
    s = f / (2.0 + f)
    hfsq = 0.5 * f * f
    z = s * s
    w = z * z
    r = w * (_LG[1] + w * (_LG[3] + w * _LG[5])) + z * (_LG[0] + w * (_LG[2] + w * (_LG[4] + w * _LG[6])))
    return k * _LN2_HI - ((hfsq - (s * (hfsq + r) + k * _LN2_LO)) - f)


@jit_inline
def _sincos_2pi(u):
    """(sin 2 pi u, cos 2 pi u) for u in [0, 1): exact reduction to |x| <= pi/4 by quarter turns."""
    q = np.floor(4.0 * u + 0.5)
    x = _TWO_PI * (u - 0.25 * q)
    z = x * x
    s = x + x * z * (_S[0] + z * (_S[1] + z * (_S[2] + z * (_S[3] + z * (_S[4] + z * _S[5])))))
    c = 1.0 - 0.5 * z + z * z * (_C[0] + z * (_C[1] + z * (_C[2] + z * (_C[3] + z * (_C[4] + z * _C[5])))))
    k = np.int64(q) & 3
    sn = c if k & 1 else s
    cs = s if k & 1 else c
    return (-sn if k & 2 else sn), (-cs if (k + 1) & 2 else cs)


@jit_inline
def normal_pair(key, pair):
    """Two independent standard normals (Box-Muller) from words 2*pair and 2*pair + 1:
    z0 = sqrt(-2 ln u1) cos(2 pi u2), z1 = sqrt(-2 ln u1) sin(2 pi u2), u1 in (0, 1], u2 in [0, 1)."""
    c = np.uint64(pair) * np.uint64(2)
    u1 = 1.0 - uniform(key, c)  # (0, 1]: log is finite
    u2 = uniform(key, c + _ONE)
    r = np.sqrt(-2.0 * _log(u1))
    sn, cs = _sincos_2pi(u2)
    return r * cs, r * sn


@jit_inline
def probability_threshold(p):
    """uint64 threshold T with P(word < T) = p to within 2^-64 (p clipped to [0, 1])."""
    if p <= 0.0:
        return np.uint64(0)
    if p >= 1.0:
        return np.uint64(0xFFFFFFFFFFFFFFFF)
    # p * 2^64 in two exact 32-bit halves (a double has 53 bits: the low half is rounded).
    hi = np.floor(p * 4294967296.0)
    lo = np.floor((p * 4294967296.0 - hi) * 4294967296.0)
    return (np.uint64(hi) << np.uint64(32)) + np.uint64(lo)


@jit
def _fill_uniforms(key, start, out):
    for i in range(out.shape[0]):
        out[i] = uniform(key, start + i)


@jit
def _fill_normals(key, start_pair, out):
    n = out.shape[0]
    for j in range(0, n, 2):
        z0, z1 = normal_pair(key, start_pair + j // 2)
        out[j] = z0
        if j + 1 < n:
            out[j + 1] = z1


def uniforms(key: int, n: int, start: int = 0) -> np.ndarray:
    """``n`` uniforms in [0, 1) from words start .. start + n - 1 of stream ``key``."""
    out = np.empty(int(n), dtype=np.float64)
    _fill_uniforms(np.uint64(key), np.uint64(start), out)
    return out


def normals(key: int, n: int, start_pair: int = 0) -> np.ndarray:
    """``n`` standard normals: normal j comes from Box-Muller pair start_pair + j // 2."""
    out = np.empty(int(n), dtype=np.float64)
    _fill_normals(np.uint64(key), np.uint64(start_pair), out)
    return out
