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


@jit_inline
def normal_pair(key, pair):
    """Two independent standard normals (Box-Muller) from words 2*pair and 2*pair + 1."""
    c = np.uint64(pair) * np.uint64(2)
    u1 = 1.0 - uniform(key, c)  # (0, 1]: log is finite
    u2 = uniform(key, c + _ONE)
    r = np.sqrt(-2.0 * np.log(u1))
    t = _TWO_PI * u2
    return r * np.cos(t), r * np.sin(t)


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
