"""Numba kernels for multi-step optimizer dynamics on a noisy quadratic.

Loss L(theta) = 1/2 delta'H delta with delta = theta - theta*; per-example gradients are
H delta + xi with xi ~ N(0, diag(sigma^2)), so the mean of a batch of B examples is exactly

    g = H delta + (sigma / sqrt(B)) * z,    z ~ N(0, I_d)

(batch-mean sampler: one standard normal per coordinate per step, whatever B). Many independent
trajectories run at once, in parallel over trajectories (``prange``); each is serial in its steps.

Optimizers (update delta <- delta - lr * u):

- ``sign``: u = sign(g) (sign-SGD; eq 29 of Li et al. 2024, Appendix A).
- ``adam``: m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2, u = m_hat / (sqrt(v_hat) + eps) with
  the bias corrections m_hat = m / (1 - b1^t), v_hat = v / (1 - b2^t) (Kingma & Ba 2015,
  https://arxiv.org/abs/1412.6980; eq 25-27, with eps outside the square root as in PyTorch).
  b1 = b2 = 0 gives u = g / (|g| + eps), sign-SGD up to eps (eq 29).
- ``sgd``: u = g; with momentum b1 > 0, m = b1 m + (1 - b1) g and u = m / (1 - b1^t) (Adam's
  bias-corrected first moment without the denominator: heavy-ball SGD of learning rate
  lr (1 - b1) and momentum b1, as in Zhang et al. 2019, https://arxiv.org/abs/1907.04164, after the
  first few steps; b1 = 0 is plain SGD).
- ``lion``: u = sign(b1 m + (1 - b1) g), then m = b2 m + (1 - b2) g (Chen et al. 2023,
  "Symbolic Discovery of Optimization Algorithms", https://arxiv.org/abs/2302.06675, no weight decay).

Random numbers. Trajectory t has its own stream key (``trajectory_key(seed, B, replicate)``); the
normal of coordinate i at step s (s = 0 for the first update) is element i % 2 of Box-Muller pair
``s * ceil(d / 2) + i // 2`` of that stream, so ``rng.normals(key, 2 * ceil(d / 2), s * ceil(d / 2))[:d]``
regenerates step s's z (up to rounding, 1e-14: this module's ``normal_pair`` is
``rng.normal_pair`` written without library calls, so that it vectorises). Every trajectory
is a pure function of its parameters: bit-identical whatever the thread count or the grouping of
trajectories into calls. The key does not depend on the learning rate or the optimizer, so runs
that differ only in those share their noise (common random numbers).

Per-step rules (``run_trajectories`` with a ``StepRule``): each step may set its own batch
size B_s (the noise scale becomes sigma / sqrt(B_s), and examples count sum_s B_s) and learning
rate: the exact one-step optimum at the state (eq 9; eq 1 for SGD), B_s = c B_noise (eq 14) at the
state, the same from running estimates made from the minibatch gradients, or geometric steps.
Each adds O(d k) per step (O(d^2) dense); with ``path`` the kernel also integrates ds = dL / dL_max
and B_noise ds along each path (eq 44-45). The GPU kernels run the constant rule only.

Hessians: ``DIAG_LOWRANK`` with H = diag(h) + U U' given as ``h`` (d,) and ``ut`` (k, d) (k = 0 for
a diagonal H; each product O(d k)), or ``DENSE`` with ``hd`` (d, d) (O(d^2)).

Speed (``python -m sims.bench_dynamics``): the kernel is bound by its random numbers, within about
2x of drawing the normals alone, and several times a vectorised NumPy implementation.

Layout: this module holds the host side (checks, buffers, results: ``drive_trajectories``, which
the CPU and GPU backends share, each with its ``TrajectoryLoop``) and every public name; the
compiled parts live in ``optimizers`` (``Optimizer`` and the update of one step), ``step_rules``
(``StepRule`` and its compiled pieces), ``hessian_products`` (the products with H) and
``trajectory_loop`` (``_run``, the loop over trajectories and steps); ``loop_arguments`` names the
seven groups of arguments that a loop takes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numba
import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from ..hessian import Hessian
from ..rng import derive_key, normal_pair, stream_key
from .hessian_products import DENSE, DIAG_LOWRANK, hessian_arrays
from .loop_arguments import (
    Horizon,
    LoopArguments,
    OptimizerConstants,
    PerTrajectory,
    Quadratic,
    Records,
    RuleConstants,
    State,
)
from .optimizers import ADAM, LION, OPTIMIZER_CODES, SGD, SIGN, Optimizer
from .step_rules import BATCH_CONSTANT as BATCH_CONSTANT
from .step_rules import BATCH_CRIT_ESTIMATED as BATCH_CRIT_ESTIMATED
from .step_rules import BATCH_GEOMETRIC as BATCH_GEOMETRIC
from .step_rules import BATCH_NOISE as BATCH_NOISE
from .step_rules import BATCH_NOISE_ESTIMATED as BATCH_NOISE_ESTIMATED
from .step_rules import BATCH_RULES, LR_RULES, StepRule
from .step_rules import LR_CONSTANT as LR_CONSTANT
from .step_rules import LR_ESTIMATED as LR_ESTIMATED
from .step_rules import LR_GEOMETRIC as LR_GEOMETRIC
from .step_rules import LR_OPTIMAL as LR_OPTIMAL
from .trajectory_loop import _normals_only, _run

__all__ = [
    "SIGN",
    "ADAM",
    "SGD",
    "LION",
    "OPTIMIZER_CODES",
    "DIAG_LOWRANK",
    "DENSE",
    "Optimizer",
    "StepRule",
    "LR_RULES",
    "BATCH_RULES",
    "TrajectoryResult",
    "trajectory_key",
    "hessian_arrays",
    "run_trajectories",
    "TrajectoryLoop",
    "NUMBA_LOOP",
    "drive_trajectories",
    "LoopArguments",
    "step_normals",
    "normal_pair",
]

_CONSTANT_RULE = StepRule()  # the default rule: both constant
_DYNAMICS_TAG = 0xD1A4  # separates these streams from the one-step kernels' streams


@dataclass(frozen=True)
class TrajectoryResult:
    """Per-trajectory outcomes of ``run_trajectories`` (T trajectories, m targets).

    steps: (T, m) int64, the first step count at which L <= target (-1: not reached).
    loss_at: (T, m), the loss at that step; loss_after: (T, m), the loss ``further_steps`` later
    (nan where not reached or where the run diverged first).
    delta_at: (T, m, d), theta - theta* at that step (nan where not reached).
    delta, m, v: (T, d), the final state and optimizer moments; n_steps: (T,) steps run.
    trace: (T, n_trace), the loss after 0, 1, ... steps (nan past n_steps).
    examples_at: (T, m), the examples sum_s B_s used to reach each target (nan: not reached).
    path_ds, path_bds: (T, m), the integrals of ds = dL / dL_max and of B_noise ds along the path
    to each target (eq 44-45; nan unless run with ``path=True``).
    batch_trace, lr_trace: (T, n_trace), the batch size and learning rate of step 0, 1, ...
    """

    steps: np.ndarray
    loss_at: np.ndarray
    loss_after: np.ndarray
    delta_at: np.ndarray
    delta: np.ndarray
    m: np.ndarray
    v: np.ndarray
    n_steps: np.ndarray
    trace: np.ndarray
    examples_at: np.ndarray
    path_ds: np.ndarray
    path_bds: np.ndarray
    batch_trace: np.ndarray
    lr_trace: np.ndarray


def trajectory_key(seed: int, batch_size: int, replicate: int) -> np.uint64:
    """Stream key of replicate ``replicate`` at batch size B under ``seed``."""
    key_b = np.uint64(stream_key(np.uint64(seed), np.uint64(_DYNAMICS_TAG), np.uint64(batch_size)))
    return np.uint64(derive_key(key_b, np.uint64(replicate)))


def _check_int(name: str, value, lo: int) -> int:
    if int(value) != value or value < lo:
        raise ValueError(f"{name}={value!r} must be an integer >= {lo}")
    return int(value)


def run_trajectories(
    H: Hessian,
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
    rule: StepRule = _CONSTANT_RULE,
    path: bool = False,
    m0: np.ndarray | None = None,
    v0: np.ndarray | None = None,
    start_step: int = 0,
) -> TrajectoryResult:
    """Run T trajectories from theta - theta* = delta0 on the noisy quadratic (module docstring).

    Args:
        H: the Hessian operator; sigma: (d,) per-example gradient noise scale (> 0).
        delta0: (d,) start, the same for every trajectory.
        keys: (T,) uint64 stream keys (``trajectory_key``); lr, batch_size: (T,) or scalars.
        optimizer: the update rule and its hyperparameters.
        targets: target losses; each trajectory records the first step at which L <= target
            (step counts up to ``max_steps``) and the loss ``further_steps`` steps later.
        max_steps: give up on unreached targets after this many steps.
        min_steps: run at least this many steps (e.g. to compare whole trajectories).
        trace_steps: record the loss after 0 .. trace_steps - 1 steps (with a per-step rule also
            B_s and lr_s: ``TrajectoryResult.batch_trace``, ``lr_trace``).
        rule: how each step sets its batch size and learning rate (``StepRule``; with a rule
            other than constant, lr and batch_size are its values or multipliers).
        path: also integrate ds and B_noise ds to each target (eq 44-45).
        m0, v0: (d,) or (T, d) optimizer buffers to start from (default zeros: a fresh optimizer);
            start_step: the steps they already hold (Adam's bias corrections 1 - b^t continue from
            t = start_step). The noise of step s is still the stream's step s.

    Returns:
        A ``TrajectoryResult``; targets are reported in the order given.
    """
    return drive_trajectories(
        NUMBA_LOOP, H, sigma, delta0, keys, lr, batch_size, optimizer, targets, further_steps, max_steps,
        min_steps, trace_steps, rule, path, m0, v0, start_step,
    )  # fmt: skip


@dataclass(frozen=True)
class TrajectoryLoop:
    """A backend's loop over trajectories, as ``drive_trajectories`` runs it.

    run: a function of the seven groups of ``LoopArguments`` (``loop_arguments``) that advances
    every trajectory and fills ``state`` and ``records`` in place. general: whether it runs
    per-step rules, path integrals, SGD with momentum and given optimizer buffers; a loop that
    does not runs the constant rule only, and the driver fills its per-step records (examples,
    batch sizes, learning rates) from the constants.
    """

    run: Callable[..., None]
    general: bool


def _run_numba(*args: object) -> None:
    # Trajectories differ in length (a large lr reaches the targets sooner, a failing one runs to
    # max_steps): hand them to the threads one at a time so that both stay busy.
    previous = numba.set_parallel_chunksize(1)
    try:
        _run(*args)
    finally:
        numba.set_parallel_chunksize(previous)


NUMBA_LOOP = TrajectoryLoop(_run_numba, general=True)  # the CPU loop (trajectory_loop._run)

_W_TAG = 0x57  # the sub-stream of the half-batch difference normals of estimated rules


_PER_TARGET = ("steps", "loss_at", "loss_after", "delta_at", "examples_at", "path_ds", "path_bds")


def drive_trajectories(
    loop: TrajectoryLoop,
    H: Hessian,
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
    rule: StepRule = _CONSTANT_RULE,
    path: bool = False,
    m0: np.ndarray | None = None,
    v0: np.ndarray | None = None,
    start_step: int = 0,
) -> TrajectoryResult:
    """``run_trajectories`` (same arguments after ``loop``, checks and results) on a backend's loop:
    the host side that the CPU and GPU backends share. It checks the arguments (what a loop that
    is not ``general`` cannot run is a ValueError), packs them into ``LoopArguments`` once, runs
    ``loop.run`` on them and returns the records in the order of the targets given."""
    _check_backend(loop, optimizer, rule, path)
    sigma, delta0, keys, lr, bs = _checked_arrays(H, sigma, delta0, keys, lr, batch_size, rule)
    further = _check_int("further_steps", further_steps, 0)
    max_steps = _check_int("max_steps", max_steps, 0)
    min_steps = _check_int("min_steps", min_steps, 0)
    n_trace = _check_int("trace_steps", trace_steps, 0)
    tg = np.asarray(targets, dtype=np.float64).ravel()
    if not np.all(np.isfinite(tg)):
        raise ValueError(f"targets must be finite, got {tg}")
    order = np.argsort(-tg, kind="stable")
    kind, *parts = hessian_arrays(H)
    quad = Quadratic(kind, *map(_copy_apart, (*parts, sigma, np.ascontiguousarray(H.diag(), dtype=np.float64))))
    start_step = _check_int("start_step", start_step, 0)
    state = _state(quad, delta0, keys.shape[0], rule.estimates, m0, v0)
    if not loop.general and (m0 is not None or v0 is not None or start_step):
        raise ValueError("starting from given optimizer buffers runs on the CPU backend only")
    args = LoopArguments(
        quad,
        OptimizerConstants(optimizer.code, float(optimizer.beta1), float(optimizer.beta2), float(optimizer.eps)),
        _rule_constants(rule, path),
        Horizon(_copy_apart(tg[order]), further, min_steps, max_steps, start_step),
        _per_trajectory(keys, lr, bs, rule.estimates),
        state,
        _records(keys.shape[0], tg.size, n_trace, delta0.shape[0]),
    )
    loop.run(*args)
    o = args.records._asdict()
    if not loop.general:  # the constant rule without path (checked above): its per-step records
        reached = o["steps"] >= 0
        o["examples_at"][reached] = (o["steps"] * bs[:, None])[reached]
        o["batch_trace"][:] = np.where(np.isfinite(o["trace"]), bs[:, None], np.nan)
        o["lr_trace"][:] = np.where(np.isfinite(o["trace"]), lr[:, None], np.nan)
    inv = np.argsort(order)
    o = {name: a[:, inv] if name in _PER_TARGET else a for name, a in o.items()}
    return TrajectoryResult(delta=state.delta, m=state.m, v=state.v, **o)


_APART = 1024  # bytes of slack on each side of every array the loop takes (_apart)


def _apart(shape: int | tuple[int, ...], fill: object = None, dtype: DTypeLike = np.float64) -> np.ndarray:
    """A C-contiguous array (filled with ``fill`` unless None), 64-byte aligned, alone in a buffer
    with ``_APART`` bytes of slack before and after it: every array that ``drive_trajectories`` hands
    to the loop is one, so any two of them start at least ``_APART`` bytes apart.

    Why: LLVM's loop vectoriser guards its vector loops with run-time alias checks on the arrays'
    start addresses, and one array starting less than VF * UF * 8 bytes (256 with AVX-512) after
    another sends the loop to its scalar fallback; under fastmath "reassoc" (``surgesim._jit``) the
    two versions round differently. Heap arrays shorter than that (d < 32) could lie that close,
    so the results' last bits depended on where the heap put them (tests/test_compile_determinism.py).
    Arrays this far apart always take the vector loop, as arrays of d >= 32 doubles always did: used
    at every d, it changes no result at d >= 32, and costs 2 KiB per array and one copy of the inputs.
    """
    dtype = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    n = int(np.prod(shape)) * dtype.itemsize
    buf = np.empty(n + 2 * _APART + 64, dtype=np.uint8)
    start = _APART + -(buf.ctypes.data + _APART) % 64
    a = buf[start : start + n].view(dtype).reshape(shape)
    if fill is not None:
        a[...] = fill
    return a


def _copy_apart(x: np.ndarray) -> np.ndarray:
    """A copy of ``x`` made by ``_apart``."""
    return _apart(x.shape, x, x.dtype)


def _check_backend(loop: TrajectoryLoop, optimizer: Optimizer, rule: StepRule, path: bool) -> None:
    """What only a general loop runs: SGD with momentum, per-step rules and path integrals."""
    if not isinstance(rule, StepRule):
        raise TypeError(f"rule must be a StepRule, got {type(rule).__name__}")
    general = not rule.is_constant or bool(path)
    if not loop.general and optimizer.name == "sgd" and optimizer.beta1 > 0:
        raise ValueError("SGD with momentum runs on the CPU backend only")
    if general and not loop.general:
        raise ValueError("per-step rules (optimal lr, batch-size schedules) and path integrals run on the CPU "
                         "backend only")  # fmt: skip


def _checked_arrays(
    H: Hessian, sigma, delta0, keys, lr, batch_size, rule: StepRule
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(sigma, delta0, keys, lr, batch sizes) as contiguous float64 (uint64 keys; lr and batch sizes
    broadcast to (T,)), checked."""
    sigma = np.ascontiguousarray(sigma, dtype=np.float64)
    delta0 = np.ascontiguousarray(delta0, dtype=np.float64)
    d = delta0.shape[0]
    if delta0.ndim != 1 or sigma.shape != (d,) or H.dim != d:
        raise ValueError(f"delta0 {delta0.shape}, sigma {sigma.shape} and H (dim {H.dim}) must agree")
    if np.any(sigma <= 0) or not np.all(np.isfinite(sigma)) or not np.all(np.isfinite(delta0)):
        raise ValueError("sigma must be finite and > 0, delta0 finite")
    keys = np.ascontiguousarray(keys, dtype=np.uint64).ravel()
    T = keys.shape[0]
    lr = np.broadcast_to(np.asarray(lr, dtype=np.float64), (T,)).copy()
    bs = np.broadcast_to(np.asarray(batch_size, dtype=np.float64), (T,)).copy()
    if not (np.all(np.isfinite(lr)) and np.all(lr > 0)):
        raise ValueError(f"learning rates must be finite and > 0, got min {lr.min() if T else None}")
    b_lo = 1.0 if rule.batch in ("constant", "geometric") else 0.0
    if np.any(~(bs >= b_lo)) or np.any(bs == 0) or not np.all(np.isfinite(bs)):
        what = "batch sizes must be finite and >= 1" if b_lo else "batch-size multipliers must be finite and > 0"
        raise ValueError(f"{what}, got min {bs.min() if T else None}")
    if rule.estimates and rule.batch == "constant" and np.any(bs < 2):
        raise ValueError(f"estimated rules split each batch in two halves: batch sizes must be >= 2, got {bs.min()}")
    return sigma, delta0, keys, lr, bs


def _state(quad: Quadratic, delta0: np.ndarray, T: int, estimates: bool, m0, v0) -> State:
    """The loop's state: delta0 and the optimizer buffers m0, v0 broadcast to (T, d) (zeros where
    not given; checked), and the scratch (the estimated rules' empty without estimates)."""
    d = delta0.shape[0]
    mom = _apart((T, d), 0.0)
    vel = _apart((T, d), 0.0)
    for name, given, buf in (("m0", m0, mom), ("v0", v0, vel)):
        if given is not None:
            arr = np.asarray(given, dtype=np.float64)
            if arr.shape not in ((d,), (T, d)) or not np.all(np.isfinite(arr)):
                raise ValueError(f"{name} must be finite with shape ({d},) or ({T}, {d}), got {arr.shape}")
            if name == "v0" and np.any(arr < 0):
                raise ValueError("v0 must be >= 0 (a second moment)")
            buf[:] = arr
    n_z = d + (d & 1)

    def scratch(n: int) -> np.ndarray:
        return _apart((T, n) if estimates else (T, 0), 0.0)

    return State(
        _apart((T, d), delta0), mom, vel, _apart((T, d)), _apart((T, n_z)), _apart((T, max(quad.ut.shape[0], 1))),
        scratch(n_z), _apart((T, d), 0.0), scratch(d), scratch(d), scratch(d),
    )  # fmt: skip


def _rule_constants(rule: StepRule, path: bool) -> RuleConstants:
    return RuleConstants(
        LR_RULES[rule.lr], BATCH_RULES[rule.batch], int(rule.interval), float(rule.batch_factor),
        float(rule.lr_factor), float(rule.batch_min), float(rule.batch_max), float(rule.batch_start),
        int(rule.warmup), float(rule.beta), bool(rule.estimates), bool(path),
    )  # fmt: skip


def _per_trajectory(keys: np.ndarray, lr: np.ndarray, bs: np.ndarray, estimates: bool) -> PerTrajectory:
    """The per-trajectory inputs; the half-batch streams' keys only with estimates (else empty)."""
    keys_w = [derive_key(kk, np.uint64(_W_TAG)) for kk in keys] if estimates else []
    return PerTrajectory(*map(_copy_apart, (keys, np.array(keys_w, dtype=np.uint64), lr, bs,
                                            1.0 / np.sqrt(np.maximum(bs, 1.0)))))  # fmt: skip


def _records(T: int, n_t: int, n_trace: int, d: int) -> Records:
    """The loop's outputs before any step: -1 and nan (``_apart`` arrays)."""
    return Records(
        steps=_apart((T, n_t), -1, dtype=np.int64),
        loss_at=_apart((T, n_t), np.nan),
        loss_after=_apart((T, n_t), np.nan),
        delta_at=_apart((T, n_t, d), np.nan),
        examples_at=_apart((T, n_t), np.nan),
        path_ds=_apart((T, n_t), np.nan),
        path_bds=_apart((T, n_t), np.nan),
        n_steps=_apart(T, 0, np.int64),
        trace=_apart((T, n_trace), np.nan),
        batch_trace=_apart((T, n_trace), np.nan),
        lr_trace=_apart((T, n_trace), np.nan),
    )


def step_normals(keys: np.ndarray, n_steps: int, d: int) -> np.ndarray:
    """Draw every normal that ``n_steps`` steps of each trajectory use, as ``_run`` draws them, and
    nothing else (the random-number floor of ``run_trajectories``, for benchmarks).

    Returns the last step's normals, (T, d): row t is ``rng.normals(keys[t], 2 h, (n_steps - 1) h)[:d]``
    with h = ceil(d / 2).
    """
    keys = np.ascontiguousarray(keys, dtype=np.uint64).ravel()
    n_steps = _check_int("n_steps", n_steps, 1)
    d = _check_int("d", d, 1)
    z = np.empty((keys.size, d + (d & 1)))
    _normals_only(keys, n_steps, z)
    return z[:, :d]
