"""CuPy access for the GPU kernels: imported at first use, compiled modules cached, array moves.

Nothing here imports CuPy at module import time, so ``import surgesim.gpu.onestep`` works on any
machine; the first kernel call raises ImportError (no CuPy) or RuntimeError (no usable GPU) with
the reason.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from . import _source

# --fmad=false: no fused multiply-adds, so every expression is rounded as written (as IEEE
# arithmetic in the source order), e.g. mu + sigma * scale * z in the batch-mean sampler.
NVRTC_OPTIONS = ("--fmad=false",)


def available() -> tuple[bool, str]:
    """(usable, reason): whether CuPy imports and sees a CUDA device (``surgesim.backend`` asks here)."""
    try:
        import cupy as cp
    except ImportError:
        return False, "CuPy is not installed (pip install 'surgesim[gpu]')"
    try:
        n = cp.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDA driver missing or broken: CuPy raises its own error types
        return False, f"CuPy cannot reach a GPU ({type(e).__name__}: {e})"
    if n < 1:
        return False, "no CUDA GPU is visible"
    return True, f"{n} CUDA device(s)"


@functools.cache
def cupy():
    """The ``cupy`` module once a CUDA device is usable (errors are not cached: retried per call)."""
    try:
        import cupy as cp
    except ImportError as e:
        raise ImportError("the surgesim GPU backend needs CuPy (pip install 'surgesim[gpu]')") from e
    ok, why = available()
    if not ok:
        raise RuntimeError(f"the surgesim GPU backend cannot run: {why}")
    return cp


@functools.cache
def module(code: str, name_expressions: tuple[str, ...] = ()):
    """A compiled CuPy RawModule (NVRTC) of ``_source.RNG + code``; CuPy also caches it on disk."""
    cp = cupy()
    return cp.RawModule(code=_source.RNG + code, options=NVRTC_OPTIONS, name_expressions=name_expressions or None)


def is_device(x) -> bool:
    """Whether ``x`` is a CuPy array (without importing CuPy when it is not)."""
    return type(x).__module__.split(".")[0] == "cupy"


def to_device(x, dtype) -> object:
    """A C-contiguous CuPy array of ``dtype`` holding ``x`` (NumPy or CuPy; no copy if it already is)."""
    cp = cupy()
    return cp.ascontiguousarray(cp.asarray(x, dtype=dtype))


def check_output(out, shape: tuple[int, ...], dtype) -> None:
    """ValueError unless ``out`` (NumPy or CuPy) has this shape and dtype."""
    if tuple(out.shape) != shape or out.dtype != np.dtype(dtype):
        raise ValueError(f"output must have shape {shape} and dtype {np.dtype(dtype)}, "
                         f"got {tuple(out.shape)} {out.dtype}")  # fmt: skip


def output(out, shape: tuple[int, ...], dtype) -> Any:
    """A device buffer for ``out``: ``out`` itself when it is a C-contiguous CuPy array of the right
    dtype, else a new one (``store`` then copies it into ``out``)."""
    check_output(out, shape, dtype)
    if is_device(out) and out.flags.c_contiguous:
        return out
    return cupy().empty(shape, dtype=dtype)


def store(out, buf) -> None:
    """Copy the device buffer ``buf`` into ``out`` (NumPy: device to host) unless they are one."""
    if buf is out:
        return
    out[...] = buf if is_device(out) else buf.get()
