"""The dynamics kernels' results do not depend on where their arrays lie in memory, nor on what the
process compiled before (DESIGN.md, Reproducibility).

With fastmath "reassoc", LLVM compiles a vectorised loop and its scalar fallback to different
association orders, and chooses between them at run time by comparing the arrays' start addresses
(the vectoriser's alias checks): SGD and SGD-with-momentum results at small d changed in their last
bits with the heap layout, hence with the process's history. The driver now hands the loop only
arrays far apart from each other (``surgesim.kernels.dynamics._apart``), so the vector loop always runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import types
import zlib

import numpy as np
import pytest

import surgesim.kernels.dynamics as kernel_dynamics
from surgesim.hessian import Dense, DiagonalPlusLowRank
from surgesim.kernels.dynamics import Optimizer, StepRule, TrajectoryLoop, run_trajectories, trajectory_key

_OPTIMIZERS = {"sgd": Optimizer("sgd"), "sgdm": Optimizer("sgd", 0.9), "adam": Optimizer("adam", 0.9, 0.999),
               "sign": Optimizer("sign")}  # fmt: skip
_RULES = {
    "constant": (StepRule(), np.array([0.01, 0.02, 0.005]), np.array([1.0, 4.0, 64.0])),
    "optimal": (StepRule("optimal"), 1.0, np.array([2.0, 4.0, 64.0])),
    "estimated": (StepRule("estimated", "constant", warmup=3), 1.0, np.array([4.0, 8.0, 64.0])),
    "noise_estimated": (StepRule("estimated", "noise_estimated", warmup=3, batch_min=2, batch_max=500), 1.0,
                        np.array([0.5, 1.0, 2.0])),
}  # fmt: skip


def _problem(d: int, k: int, dense: bool):
    g = np.random.default_rng(3 + d)
    h = g.uniform(0.5, 2.0, d)
    U = g.uniform(0.2, 0.6, (d, k)) * g.choice([-1.0, 1.0], d)[:, None]
    H = DiagonalPlusLowRank(h, U)
    return (Dense(H.to_dense()) if dense else H), np.linspace(0.5, 1.5, d), np.linspace(-1.0, 1.0, d) + 0.3


def _run(H, sigma, delta0, opt: str, rule: str, path: bool) -> dict[str, np.ndarray]:
    step_rule, lr, B = _RULES[rule]
    keys = np.array([trajectory_key(11, 4, r) for r in range(3)], dtype=np.uint64)
    start = 3 if path else 0
    r = run_trajectories(H, sigma, delta0, keys, lr, B, _OPTIMIZERS[opt], targets=(2.0, 0.5, 0.1, 1e-4),
                         further_steps=4, max_steps=150, min_steps=20, trace_steps=60, rule=step_rule, path=path,
                         start_step=start, m0=0.1 * delta0 if start else None,
                         v0=0.2 * delta0**2 if start else None)  # fmt: skip
    return {f: np.array(getattr(r, f)) for f in r.__dataclass_fields__}


class _Pool:
    """Arrays carved from one buffer: packed (each right after, or right before, the previous one,
    ``gap`` bytes apart, or a random 0-40 bytes) or 64 KiB apart."""

    def __init__(self) -> None:
        self.buf = np.zeros(1 << 21)
        self.used = 0

    def reset(self, layout: str, case: tuple) -> None:
        self.down = layout.startswith("down")
        self.gap = {"spread": 1 << 16}.get(layout, 0)
        seed = [int(layout[-1]), zlib.crc32(repr(case).encode())] if "random" in layout else None
        self.rng = None if seed is None else np.random.default_rng(seed)
        self.pos = self.buf.nbytes - (1 << 16) if self.down else 1 << 16

    def take(self, shape, dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        shape = (shape,) if np.isscalar(shape) else tuple(shape)
        n = -(-int(np.prod(shape)) * dtype.itemsize // 8) * 8
        gap = self.gap if self.rng is None else 8 * int(self.rng.integers(0, 6))
        if self.down:
            self.pos -= n + gap
            start = self.pos
        else:
            start = self.pos
            self.pos += n + gap
        self.used += 1
        return self.buf.view(np.uint8)[start : start + n].view(dtype).reshape(shape)


def _numpy_from(pool: _Pool) -> types.SimpleNamespace:
    """numpy, but with the allocating functions that run_trajectories uses taking from ``pool``."""
    shim = types.SimpleNamespace(**{name: getattr(np, name) for name in dir(np) if not name.startswith("__")})

    def filled(shape, value, dtype):
        a = pool.take(shape, dtype)
        a[...] = value
        return a

    shim.empty = lambda shape, dtype=np.float64: pool.take(shape, dtype)
    shim.zeros = lambda shape, dtype=np.float64: filled(shape, 0, dtype)
    shim.full = lambda shape, value, dtype=None: filled(shape, value, dtype or np.asarray(value).dtype)

    def repeat(x, repeats, axis=None):
        y = np.repeat(x, repeats, axis=axis)
        return filled(y.shape, y, y.dtype)

    shim.repeat = repeat
    return shim


_CASES = [(d, k, dense, opt, rule, path) for d, k in ((7, 2), (12, 5)) for dense in (False, True)
          for opt in _OPTIMIZERS for rule in _RULES for path in (False, True)]  # fmt: skip


def test_dynamics_do_not_depend_on_array_addresses(monkeypatch):
    # The same runs with every array the driver allocates (and sigma, delta0) adjacent in memory,
    # in both orders and with random small gaps, as a heap may place small arrays, and 64 KiB
    # apart: the same bits. Before the driver padded the loop's arrays (_apart): 32 (case, layout)
    # pairs differed (SGD with the estimated rules at d = 7 among them).
    pool = _Pool()
    monkeypatch.setattr(kernel_dynamics, "np", _numpy_from(pool))
    differing = []
    for case in _CASES:
        d, k, dense, opt, rule, path = case
        results = {}
        for layout in ("spread", "up", "down", "up-random1", "down-random2"):
            pool.reset(layout, case)
            H, sigma0, delta0 = _problem(d, k, dense)
            sigma, delta = pool.take(d, np.float64), pool.take(d, np.float64)
            sigma[:], delta[:] = sigma0, delta0
            results[layout] = _run(H, sigma, delta, opt, rule, path)
        ref = results["spread"]
        for layout, res in results.items():
            changed = [f for f in ref if ref[f].tobytes() != res[f].tobytes()]
            if changed:
                differing.append((case, layout, changed[:3]))
    assert pool.used > 10 * len(_CASES), "drive_trajectories no longer allocates through surgesim.kernels.dynamics.np"
    assert not differing, f"{len(differing)} (case, layout) pairs differ, e.g. {differing[:4]}"


@pytest.mark.parametrize("dense", [False, True])
def test_loop_arrays_lie_apart(dense):
    # Every array the loop takes starts at least _APART bytes after the end of any other (the
    # alias checks compare start addresses), whatever the heap did.
    arrays: list[np.ndarray] = []

    def run(*groups):
        arrays.extend(x for g in groups for x in g if isinstance(x, np.ndarray))
        kernel_dynamics.NUMBA_LOOP.run(*groups)

    H, sigma, delta0 = _problem(5, 2, dense)
    step_rule, lr, B = _RULES["noise_estimated"]
    keys = np.array([trajectory_key(11, 4, r) for r in range(3)], dtype=np.uint64)
    kernel_dynamics.drive_trajectories(TrajectoryLoop(run, general=True), H, sigma, delta0, keys, lr, B,
                                       _OPTIMIZERS["sgdm"], targets=(0.5, 0.1), max_steps=30, trace_steps=5,
                                       rule=step_rule, path=True)  # fmt: skip
    assert len(arrays) == 5 + 1 + 5 + 11 + 11
    spans = sorted((x.ctypes.data, x.ctypes.data + x.nbytes) for x in arrays)
    gaps = [b0 - a1 for (_, a1), (b0, _) in zip(spans, spans[1:])]
    assert min(gaps) >= kernel_dynamics._APART, gaps


_CHILD = """
import itertools, sys
import numba
import numpy as np
if sys.argv[2] == "perturbed":
    # another compile history: an unrelated function compiled first, and Numba's global counters
    # (block labels, variable names, function ids) advanced
    from numba.core import bytecode, ir_utils
    for _ in range(37):
        ir_utils.next_label()
        ir_utils.mk_unique_var("x")
    bytecode.FunctionIdentity._unique_ids = itertools.count(38)

    @numba.njit
    def unrelated(x):
        s = 0.0
        for i in range(10):
            s += (x + i) * (x - i)
        return s

    unrelated(1.0)
    junk = [np.empty(n) for n in range(1, 40)]  # and a different heap
sys.path.insert(0, sys.argv[3])
from test_compile_determinism import _CASES, _problem, _run
out = {}
for case in _CASES:
    d, k, dense, opt, rule, path = case
    if opt in ("sgd", "sgdm"):
        for f, a in _run(*_problem(d, k, dense), opt, rule, path).items():
            out[repr(case) + f] = a
np.savez(sys.argv[1], **out)
"""


@pytest.mark.slow
def test_dynamics_do_not_depend_on_compile_history(tmp_path):
    # Two fresh processes, each with an empty Numba cache (a cached kernel would hide the
    # compile), one after another compile history: the same bits for SGD and SGD with momentum.
    outputs = []
    for history in ("plain", "perturbed"):
        cache = tmp_path / f"numba-cache-{history}"
        out = tmp_path / f"{history}.npz"
        env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
        subprocess.run([sys.executable, "-c", _CHILD, str(out), history, os.path.dirname(__file__)], env=env,
                       check=True)  # fmt: skip
        outputs.append(np.load(out))
    a, b = outputs
    assert sorted(a.files) == sorted(b.files)
    differing = [k for k in a.files if a[k].tobytes() != b[k].tobytes()]
    assert not differing, f"{len(differing)} of {len(a.files)} arrays differ, e.g. {differing[:4]}"
