"""CuPy kernel for multi-step optimizer dynamics: the GPU twin of ``surgesim.kernels.dynamics``.

Same noisy quadratic, optimizers (sign-SGD, Adam, SGD, Lion; eq 25-29), stopping rule, records and
random numbers as the CPU module: the normal of coordinate i at step s is element i % 2 of
Box-Muller pair s * ceil(d / 2) + i // 2 of the trajectory's stream, so a trajectory on the GPU
follows the CPU's one up to float64 rounding (the sums in H delta and in the loss run in another
order; for sign-based updates the sign patterns, hence the trajectories, are the same unless a
gradient coordinate is within ~1e-15 of zero).

One CUDA block runs one trajectory: its threads own coordinate pairs (2q, 2q + 1), H delta is one
warp per row for dense H and block reductions of U'delta for diagonal + low-rank H, and the loss
is a block reduction; every thread follows the same control flow on the block-wide loss.

``run_trajectories`` has the CPU function's signature and does its host-side work (checks, array
set-up, target order) through ``surgesim.kernels.dynamics.drive_trajectories``, the host driver
that both backends share, with ``GPU_LOOP`` (this module's ``_run``) in place of the Numba loop.
Host-side helpers (``Optimizer``, ``trajectory_key``, ...) are the CPU module's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ..kernels.dynamics import (
    ADAM,
    DENSE,
    DIAG_LOWRANK,
    LION,
    OPTIMIZER_CODES,
    SGD,
    SIGN,
    Optimizer,
    StepRule,
    TrajectoryLoop,
    TrajectoryResult,
    drive_trajectories,
    hessian_arrays,
    trajectory_key,
)
from ..kernels.loop_arguments import (
    Horizon,
    OptimizerConstants,
    PerTrajectory,
    Quadratic,
    Records,
    RuleConstants,
    State,
)
from . import _runtime, _source

__all__ = [
    "SIGN",
    "ADAM",
    "SGD",
    "LION",
    "OPTIMIZER_CODES",
    "DIAG_LOWRANK",
    "DENSE",
    "Optimizer",
    "TrajectoryResult",
    "trajectory_key",
    "hessian_arrays",
    "run_trajectories",
    "GPU_LOOP",
]

_MAX_THREADS = 256
_SHARED_LIMIT = 48 * 1024  # bytes of dynamic shared memory available without opting in


def _run(
    quad: Quadratic, opt: OptimizerConstants, rule: RuleConstants, horizon: Horizon, per: PerTrajectory, state: State,
    records: Records,
) -> None:  # fmt: skip
    """The CPU ``_run``'s arguments and in-place results, computed on the GPU (module docstring).

    The constant rule only (``drive_trajectories`` checks it; ``rule`` is not read) and the
    records up to ``trace``; the state's scratch is not used. NumPy arrays are copied to the
    device and the results back into them. Checked before CuPy is needed. The CUDA kernel takes
    the groups' fields as flat arguments (a CuPy raw kernel takes scalars and arrays, not
    structures).
    """
    kind, h, ut, hd, sigma, _ = quad
    opt_code, b1, b2, eps = opt
    targets, further, min_steps, max_steps = horizon.targets, horizon.further, horizon.min_steps, horizon.max_steps
    keys, lr, inv_sqrt_b = per.keys, per.lr, per.inv_sqrt_b
    delta, m, v = state.delta, state.m, state.v
    steps, loss_at, loss_after, delta_at = records.steps, records.loss_at, records.loss_after, records.delta_at
    n_steps, trace = records.n_steps, records.trace
    T, d = int(delta.shape[0]), int(delta.shape[1])
    n_t, n_trace = int(targets.shape[0]), int(trace.shape[1])
    k = int(ut.shape[0]) if kind == DIAG_LOWRANK else 0
    if kind not in (DIAG_LOWRANK, DENSE) or opt_code not in OPTIMIZER_CODES.values():
        raise ValueError(f"unknown Hessian kind {kind} or optimizer code {opt_code}")
    inputs: dict[str, tuple[Any, tuple[int, ...]]] = {
        "sigma": (sigma, (d,)), "keys": (keys, (T,)), "lr": (lr, (T,)), "inv_sqrt_b": (inv_sqrt_b, (T,))
    }  # fmt: skip
    inputs |= {"hd": (hd, (d, d))} if kind == DENSE else {"h": (h, (d,)), "ut": (ut, (k, d))}
    for name, (x, shape) in inputs.items():
        if tuple(x.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(x.shape)}")
    in_out = {  # in and out: name -> (array, shape, dtype)
        "delta": (delta, (T, d), np.float64), "m": (m, (T, d), np.float64), "v": (v, (T, d), np.float64),
        "steps": (steps, (T, n_t), np.int64), "loss_at": (loss_at, (T, n_t), np.float64),
        "loss_after": (loss_after, (T, n_t), np.float64), "delta_at": (delta_at, (T, n_t, d), np.float64),
        "n_steps": (n_steps, (T,), np.int64), "trace": (trace, (T, n_trace), np.float64),
    }  # fmt: skip
    for x, shape, dtype in in_out.values():
        _runtime.check_output(x, shape, dtype)
    shared = (33 + max(k, 1)) * 8  # reduction scratch and U'delta
    if shared > _SHARED_LIMIT:
        raise ValueError(f"a low-rank factor of rank {k} is too large for the GPU kernel "
                         f"(at most {_SHARED_LIMIT // 8 - 33})")  # fmt: skip
    cp = _runtime.cupy()
    if T == 0:
        return
    f64, dummy = np.float64, cp.zeros(1, dtype=cp.float64)
    dev = {name: _runtime.to_device(x, dtype) for name, (x, _, dtype) in in_out.items()}
    args = (
        np.int32(kind), _runtime.to_device(h, f64) if kind == DIAG_LOWRANK else dummy,
        _runtime.to_device(ut, f64) if k > 0 else dummy, np.int32(k),
        _runtime.to_device(hd, f64) if kind == DENSE else dummy,
        _runtime.to_device(sigma, f64), _runtime.to_device(keys, np.uint64), _runtime.to_device(lr, f64),
        _runtime.to_device(inv_sqrt_b, f64), np.int32(opt_code), np.float64(b1), np.float64(b2), np.float64(eps),
        _runtime.to_device(targets, f64) if n_t > 0 else dummy, np.int32(n_t), np.int64(further),
        np.int64(min_steps), np.int64(max_steps), np.int32(d),
        dev["delta"], dev["m"], dev["v"], cp.empty((T, d), dtype=cp.float64), dev["steps"], dev["loss_at"],
        dev["loss_after"], dev["delta_at"], dev["n_steps"], dev["trace"], np.int64(n_trace),
    )  # fmt: skip
    threads = min(_MAX_THREADS, 32 * max(1, -(-((d + 1) // 2) // 32)))
    kernel = _runtime.module(_source.DYNAMICS).get_function("dynamics_run")
    kernel((T,), (threads,), args, shared_mem=shared)
    for name, (x, _, _) in in_out.items():
        _runtime.store(x, dev[name])


_CONSTANT = StepRule()  # the default rule: what the GPU kernels run
GPU_LOOP = TrajectoryLoop(_run, general=False)  # the loop that drive_trajectories runs on the GPU


def run_trajectories(
    H,
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
    rule: StepRule = _CONSTANT,
    path: bool = False,
    m0: np.ndarray | None = None,
    v0: np.ndarray | None = None,
    start_step: int = 0,
) -> TrajectoryResult:
    """``surgesim.kernels.dynamics.run_trajectories`` (same arguments, checks and results) on the GPU;
    a per-step ``rule`` other than constant, ``path``, given buffers (m0, v0, start_step) or SGD
    with momentum is a ValueError (CPU only)."""
    return drive_trajectories(
        GPU_LOOP, H, sigma, delta0, keys, lr, batch_size, optimizer, targets, further_steps, max_steps,
        min_steps, trace_steps, rule, path, m0, v0, start_step,
    )  # fmt: skip
