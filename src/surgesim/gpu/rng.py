"""The ``surgesim.rng`` streams drawn on the GPU, as arrays: for checking the device generator.

``words`` and ``uniforms`` equal the CPU's values exactly (integer arithmetic and an exact
conversion); ``normals`` agree with ``surgesim.rng.normals`` to the device libm's rounding
(~1e-15 relative). Results are NumPy arrays.
"""

from __future__ import annotations

import numpy as np

from . import _runtime, _source

__all__ = ["words", "uniforms", "normals"]

_WORDS, _UNIFORMS, _NORMALS = 0, 1, 2  # ``kind`` of the rng_fill kernel
_THREADS = 256


def _fill(kind: int, key: int, n: int, start: int) -> np.ndarray:
    if int(n) != n or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n}")
    cp = _runtime.cupy()
    n = int(n)
    out = cp.empty(max(n, 1), dtype=cp.uint64 if kind == _WORDS else cp.float64)
    dummy = cp.empty(1, dtype=cp.float64 if kind == _WORDS else cp.uint64)
    if n > 0:
        words, values = (out, dummy) if kind == _WORDS else (dummy, out)
        kernel = _runtime.module(_source.STREAMS).get_function("rng_fill")
        args = (np.int32(kind), np.uint64(key), np.uint64(start), np.int64(n), words, values)
        kernel(((n + _THREADS - 1) // _THREADS,), (_THREADS,), args)
    return out[:n].get()


def words(key: int, n: int, start: int = 0) -> np.ndarray:
    """Words start .. start + n - 1 of stream ``key`` (uint64; = ``surgesim.rng.random_bits``)."""
    return _fill(_WORDS, key, n, start)


def uniforms(key: int, n: int, start: int = 0) -> np.ndarray:
    """``n`` uniforms in [0, 1) from words start .. start + n - 1 (= ``surgesim.rng.uniforms``)."""
    return _fill(_UNIFORMS, key, n, start)


def normals(key: int, n: int, start_pair: int = 0) -> np.ndarray:
    """``n`` standard normals, normal j from pair start_pair + j // 2 (~ ``surgesim.rng.normals``)."""
    return _fill(_NORMALS, key, n, start_pair)
