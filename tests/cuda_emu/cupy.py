"""A stand-in for the part of CuPy that ``surgesim.gpu`` uses, running the kernels' CUDA source on the host.

Installed as ``sys.modules["cupy"]`` by the ``emulated`` GPU fixture (tests/conftest.py), so the
backend code runs unchanged:

- ``RawModule(code, options, name_expressions)`` and ``RawKernel``: the CUDA source itself,
  prefixed with ``emu.h`` (CUDA's keywords, thread indices, barriers, warp shuffles and atomics for
  the host) and compiled by g++ into a shared library (once per source and session, in
  ``BUILD_DIR``; ``emu.h`` is precompiled once). ``get_function`` gives a kernel whose call
  ``kernel(grid, block, args, shared_mem=)`` checks CuPy's launch limits and each argument against
  the kernel's C++ parameter types (device arrays of the pointee's dtype, NumPy scalars of the
  parameter's type: what real CuPy would pass as raw bytes), then runs it.
- ``ReductionKernel``: CuPy's map/reduce/post-map expressions compiled the same way (reductions
  over the last axis only).
- device arrays: ``ndarray``, a NumPy array subclass reported as a ``cupy`` type, with ``.get()``;
  ``asarray`` from host memory copies, as a transfer does. ``empty``, ``zeros``, ``empty_like``,
  ``ascontiguousarray``, ``asnumpy``, ``matmul``, ``cuda.Device``, ``cuda.runtime``.

``WORKERS`` host threads run the blocks; ``JITTER`` (a seed, or None) randomises the order of the
threads inside a block (see ``emu.h``), deterministically for a given seed.
"""

from __future__ import annotations

import ctypes
import hashlib
import re
import shutil
import subprocess
import types
from pathlib import Path

import numpy as np

BUILD_DIR: Path | None = None  # set by the fixture (a session temporary directory)
WORKERS = 2
JITTER: int | None = 0
HERE = Path(__file__).resolve().parent
CXXFLAGS = ("-std=c++20", "-O2", "-fPIC", "-shared", "-w")

float32, float64, int32, int64, uint64 = np.float32, np.float64, np.int32, np.int64, np.uint64
_OPTIONS = {"--fmad=false": "-ffp-contract=off"}  # NVRTC option -> g++ flag (no fused multiply-add)
_MAX_THREADS, _MAX_BLOCK, _MAX_GRID, _MAX_SHARED = 1024, (1024, 1024, 64), (2**31 - 1, 65535, 65535), 48 * 1024


class ndarray(np.ndarray):
    """A device array: host memory, typed as CuPy's so that ``surgesim.gpu`` treats it as on the device."""

    def get(self) -> np.ndarray:
        return np.array(self)


ndarray.__module__ = "cupy"


def _device(x: np.ndarray) -> ndarray:
    return x.view(ndarray)


def empty(shape, dtype=float64) -> ndarray:
    return _device(np.empty(shape, dtype))


def zeros(shape, dtype=float64) -> ndarray:
    return _device(np.zeros(shape, dtype))


def empty_like(x) -> ndarray:
    return _device(np.empty(x.shape, x.dtype))


def asarray(x, dtype=None) -> ndarray:
    """``x`` on the device: itself if it already is one of this dtype, else a copy (a transfer)."""
    if isinstance(x, ndarray) and (dtype is None or x.dtype == np.dtype(dtype)):
        return x
    return _device(np.array(x, dtype=dtype, copy=True))


def ascontiguousarray(x, dtype=None) -> ndarray:
    x = asarray(x, dtype)
    return x if x.flags.c_contiguous else _device(np.ascontiguousarray(x))


def asnumpy(x) -> np.ndarray:
    return np.array(x)


def matmul(a, b, out=None) -> ndarray:
    for x in (a, b, out):
        if x is not None and not isinstance(x, ndarray):
            raise TypeError(f"cupy.matmul takes device arrays, got {type(x).__name__}")
    return np.matmul(a, b, out=out)


class _Device:
    id = 0

    def synchronize(self) -> None:  # launches are synchronous here
        pass


class _Runtime:
    @staticmethod
    def getDeviceCount() -> int:
        return 1

    @staticmethod
    def getDeviceProperties(device: int) -> dict:
        return {"name": b"host emulation (tests/cuda_emu)"}


cuda = types.SimpleNamespace(Device=_Device, runtime=_Runtime)


def _run_cxx(argv: list[str], out: Path) -> None:
    tmp = out.with_name(out.name + ".tmp")
    r = subprocess.run([*argv, "-o", str(tmp)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"cuda_emu: g++ failed ({' '.join(argv[-1:])}):\n{r.stderr[-4000:]}")
    tmp.rename(out)


def _compile(source: str, flags: tuple[str, ...] = (), header: bool = False) -> ctypes.CDLL:
    """``source`` built by g++ as a shared library in BUILD_DIR (reused when the same source was built).

    header: the source includes emu.h, read from a precompiled header built once per set of flags.
    """
    if BUILD_DIR is None:
        raise RuntimeError("cuda_emu: BUILD_DIR is not set (use the cuda_emulator fixture)")
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        raise RuntimeError("cuda_emu needs a C++20 compiler (g++)")
    argv = [cxx, *CXXFLAGS, *flags]
    emu_h = (HERE / "emu.h").read_text()
    if header:
        pch = Path(BUILD_DIR) / ("pch" + hashlib.sha256(("\0".join(argv) + emu_h).encode()).hexdigest()[:12])
        if not (pch / "emu.h.gch").exists():
            pch.mkdir(exist_ok=True)
            (pch / "emu.h").write_text(emu_h)
            _run_cxx([*argv, "-x", "c++-header", str(pch / "emu.h")], pch / "emu.h.gch")
        argv += [f"-I{pch}"]
    digest = hashlib.sha256(("\0".join(argv) + emu_h + source).encode()).hexdigest()[:20]
    lib = Path(BUILD_DIR) / f"k{digest}.so"
    if not lib.exists():
        src = lib.with_suffix(".cpp")
        src.write_text(source)
        _run_cxx([*argv, str(src)], lib)
    return ctypes.CDLL(str(lib))


def _host_source(code: str) -> str:
    """The CUDA source as host C++: dynamic shared memory becomes a pointer to the block's buffer."""
    pattern = r"extern\s+__shared__\s+([\w\s]+?)\s+(\w+)\s*\[\s*\]\s*;"
    return re.sub(pattern, r"\1* \2 = (\1*)emu::dynamic_shared();", code)


def _dims(x) -> tuple[int, int, int]:
    x = (x,) if np.ndim(x) == 0 else tuple(x)
    if not 1 <= len(x) <= 3 or any(int(v) != v or v < 1 for v in x):
        raise ValueError(f"grid and block sizes must be 1 to 3 integers >= 1, got {x}")
    return tuple(int(v) for v in x) + (1,) * (3 - len(x))


class RawModule:
    """CuPy's ``RawModule`` on the host: the CUDA source compiled with ``emu.h``."""

    def __init__(self, code: str, options=(), name_expressions=None, **kwargs):
        if kwargs:
            raise TypeError(f"cuda_emu.RawModule does not support {sorted(kwargs)}")
        unknown = [o for o in options if o not in _OPTIONS]
        if unknown:
            raise ValueError(f"cuda_emu: no host equivalent for NVRTC options {unknown}")
        names = re.findall(r'extern\s+"C"\s+__global__\s+void\s+(\w+)', code) + list(name_expressions or ())
        wrappers = "".join(
            f'extern "C" const char* emu_sig_{i}() {{ return emu::signature(&{n}); }}\n'
            f'extern "C" int emu_launch_{i}(const unsigned* g, const unsigned* b, long long sh, void** a, int w, '
            f"long long seed, char* err, int n) {{ return emu::launch(&{n}, g, b, sh, a, w, seed, err, n); }}\n"
            for i, n in enumerate(names)
        )  # fmt: skip
        source = f'#include "emu.h"\n#line 1 "cuda_source"\n{_host_source(code)}\n#line 1 "emu_wrappers"\n{wrappers}'
        self._lib = _compile(source, tuple(_OPTIONS[o] for o in options), header=True)
        self._index = {n: i for i, n in enumerate(names)}

    def get_function(self, name: str) -> _Kernel:
        if name not in self._index:
            raise KeyError(f"no kernel {name!r} in the module (kernels: {sorted(self._index)})")
        return _Kernel(self._lib, self._index[name], name)


def RawKernel(code: str, name: str, options=(), **kwargs) -> _Kernel:
    """CuPy's ``RawKernel(code, name, options)``: the ``extern "C"`` kernel ``name`` of ``code``."""
    return RawModule(code=code, options=options, **kwargs).get_function(name)


class _Kernel:
    """A compiled kernel; ``kernel(grid, block, args, shared_mem=0)`` launches it synchronously."""

    def __init__(self, lib: ctypes.CDLL, i: int, name: str):
        self.name = name
        sig = getattr(lib, f"emu_sig_{i}")
        sig.restype = ctypes.c_char_p
        self.params = sig().decode().rstrip(",").split(",")
        self._launch = getattr(lib, f"emu_launch_{i}")
        self._launch.restype = ctypes.c_int

    def _arg(self, j: int, x, code: str):
        """A pointer to argument j's value (and the object that keeps it alive)."""
        where = f"{self.name} argument {j}"
        if code.startswith("p"):
            if not isinstance(x, ndarray):
                raise TypeError(f"{where}: expected a device array of {code[1:]}, got {type(x).__name__}")
            if x.dtype.kind + str(x.dtype.itemsize) != code[1:] or not x.flags.c_contiguous:
                raise TypeError(f"{where}: expected a C-contiguous {code[1:]} array, got {x.dtype} "
                                f"(contiguous: {x.flags.c_contiguous})")  # fmt: skip
            value = ctypes.c_void_p(x.ctypes.data)
            return ctypes.addressof(value), value
        if not isinstance(x, np.generic):
            raise TypeError(f"{where}: expected a NumPy scalar of {code}, got {type(x).__name__} {x!r}")
        if x.dtype.kind + str(x.dtype.itemsize) != code:
            raise TypeError(f"{where}: expected a {code} scalar, got {x.dtype}")
        value = np.array(x)
        return value.ctypes.data, value

    def __call__(self, grid, block, args, *, shared_mem: int = 0) -> None:
        grid, block = _dims(grid), _dims(block)
        if np.prod(block) > _MAX_THREADS or any(b > m for b, m in zip(block, _MAX_BLOCK)):
            raise ValueError(f"{self.name}: block {block} exceeds CUDA's limits")
        if any(g > m for g, m in zip(grid, _MAX_GRID)):
            raise ValueError(f"{self.name}: grid {grid} exceeds CUDA's limits")
        if not 0 <= shared_mem <= _MAX_SHARED:
            raise ValueError(f"{self.name}: {shared_mem} bytes of dynamic shared memory (at most {_MAX_SHARED})")
        if len(args) != len(self.params):
            raise TypeError(f"{self.name} takes {len(self.params)} arguments, got {len(args)}")
        ptrs, keep = zip(*(self._arg(j, x, c) for j, (x, c) in enumerate(zip(args, self.params))))
        argv = (ctypes.c_void_p * len(ptrs))(*ptrs)
        err = ctypes.create_string_buffer(1024)
        rc = self._launch(
            (ctypes.c_uint * 3)(*grid), (ctypes.c_uint * 3)(*block), ctypes.c_longlong(shared_mem), argv,
            ctypes.c_int(WORKERS), ctypes.c_longlong(-1 if JITTER is None else JITTER), err, ctypes.c_int(len(err)),
        )  # fmt: skip
        del keep
        if rc != 0:
            raise RuntimeError(f"{self.name}: {err.value.decode()}")


_C_TYPES = {
    "float32": "float", "float64": "double", "int32": "int", "int64": "long long", "uint64": "unsigned long long"
}  # fmt: skip


class ReductionKernel:
    """CuPy's ``ReductionKernel`` (map, reduce, post-map expressions) for reductions over the last axis."""

    def __init__(self, in_params, out_params, map_expr, reduce_expr, post_map_expr, identity, name="reduce",
                 reduce_type=None, **kwargs):  # fmt: skip
        if kwargs:
            raise TypeError(f"cuda_emu.ReductionKernel does not support {sorted(kwargs)}")
        ins = [p.split() for p in in_params.split(",")]
        (out_t, out_n), *more = [p.split() for p in out_params.split(",")]
        if more:
            raise NotImplementedError("cuda_emu.ReductionKernel: one output only")
        red_t = _C_TYPES[reduce_type or out_t]
        loads = "".join(f"const {_C_TYPES[t]} {n} = {n}_[o * m + r]; " for t, n in ins)
        params = ", ".join(f"const {_C_TYPES[t]}* {n}_" for t, n in ins)
        source = (
            f'extern "C" void {name}({params}, {_C_TYPES[out_t]}* {out_n}_, long long n_out, long long m) {{\n'
            f"  typedef {red_t} type_reduce;\n"
            f"  for (long long o = 0; o < n_out; ++o) {{\n"
            f"    {red_t} a = ({identity});\n"
            f"    for (long long r = 0; r < m; ++r) {{ {loads}const {red_t} b = ({map_expr}); a = ({reduce_expr}); }}\n"
            f"    {_C_TYPES[out_t]}& {out_n} = {out_n}_[o];\n    {post_map_expr};\n  }}\n}}\n"
        )  # fmt: skip
        self._fn = getattr(_compile(source), name)
        self._ins = [np.dtype(t) for t, _ in ins]
        self._out = np.dtype(out_t)

    def __call__(self, *args, axis=None):
        if len(args) != len(self._ins):
            raise TypeError(f"expected {len(self._ins)} inputs, got {len(args)}")
        shape = args[0].shape
        if axis not in (len(shape) - 1, -1) or any(x.shape != shape for x in args):
            raise NotImplementedError("cuda_emu.ReductionKernel: inputs of one shape, reduced over the last axis")
        for x, t in zip(args, self._ins):
            if not isinstance(x, ndarray) or x.dtype != t or not x.flags.c_contiguous:
                raise TypeError(f"expected a C-contiguous device array of {t}, got {type(x).__name__} {x.dtype}")
        out = empty(shape[:-1], self._out)
        self._fn(*(ctypes.c_void_p(x.ctypes.data) for x in (*args, out)),
                 ctypes.c_longlong(out.size), ctypes.c_longlong(shape[-1]))  # fmt: skip
        return out
