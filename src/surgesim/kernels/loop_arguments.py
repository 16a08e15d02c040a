"""The arguments of the dynamics loop (``surgesim.kernels.dynamics``), packed by concept.

A backend's loop (``TrajectoryLoop.run``) takes seven named tuples that the host driver
(``drive_trajectories``) builds once per call: the problem, the optimizer's constants, the
per-step rule's constants, the horizon (targets and step limits), the per-trajectory inputs, the
state with its scratch, and the records. Numba compiles a function of them as a function of
their fields (named tuples of arrays and scalars are native Numba types). Each field's dtype and
kind are fixed (Python int, float and bool scalars; C-contiguous arrays), so that one compiled
signature serves every call.

Per-trajectory arrays have T rows (trajectory t is row t); d is the dimension.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["Quadratic", "OptimizerConstants", "RuleConstants", "Horizon", "PerTrajectory", "State", "Records",
           "LoopArguments"]  # fmt: skip


class Quadratic(NamedTuple):
    """H as ``hessian_arrays`` gives it (kind, h, ut, hd), the per-example noise scale sigma (d,)
    and H's diagonal hdiag (d,)."""

    kind: int
    h: np.ndarray
    ut: np.ndarray
    hd: np.ndarray
    sigma: np.ndarray
    hdiag: np.ndarray


class OptimizerConstants(NamedTuple):
    """The optimizer's code (``OPTIMIZER_CODES``) and hyperparameters."""

    code: int
    b1: float
    b2: float
    eps: float


class RuleConstants(NamedTuple):
    """A ``StepRule`` as codes and numbers (``LR_RULES``, ``BATCH_RULES``); ``estimates``: whether it
    keeps running estimates (``StepRule.estimates``); ``path``: integrate ds and B_noise ds along
    each path (eq 44-45)."""

    lr: int
    batch: int
    interval: int
    batch_factor: float
    lr_factor: float
    b_min: float
    b_max: float
    b_start: float
    warmup: int
    beta: float
    estimates: bool
    path: bool


class Horizon(NamedTuple):
    """When a trajectory stops: targets (sorted in decreasing order), the steps run after each is
    reached (``further``), at least ``min_steps`` and at most ``max_steps``; ``start``: the steps the
    optimizer buffers already hold (Adam's bias corrections continue from there)."""

    targets: np.ndarray
    further: int
    min_steps: int
    max_steps: int
    start: int


class PerTrajectory(NamedTuple):
    """(T,) each: the stream keys, the half-batch streams' keys of the estimated rules, the
    learning rate (or multiplier), the batch size (or multiplier) and B^-1/2 of the constant rule."""

    keys: np.ndarray
    keys_w: np.ndarray
    lr: np.ndarray
    batch_size: np.ndarray
    inv_sqrt_b: np.ndarray


class State(NamedTuple):
    """(T, .) each. In and out: delta, and the optimizer buffers m and v. Scratch: gm = H delta,
    the step's normals z (d + d % 2), p = U'delta (max(k, 1)), e (d); for the estimated rules
    (else (T, 0)): the half-batch normals w (d + d % 2), sgh (sigma's estimate), es (its running
    sums) and em (the running average of the gradient)."""

    delta: np.ndarray
    m: np.ndarray
    v: np.ndarray
    gm: np.ndarray
    z: np.ndarray
    p: np.ndarray
    w: np.ndarray
    e: np.ndarray
    sgh: np.ndarray
    es: np.ndarray
    em: np.ndarray


class Records(NamedTuple):
    """The outputs, by their ``TrajectoryResult`` names, set to -1 and nan before the loop: per target
    (T, m) or (T, m, d); per trajectory n_steps (T,); per step (T, n_trace)."""

    steps: np.ndarray
    loss_at: np.ndarray
    loss_after: np.ndarray
    delta_at: np.ndarray
    examples_at: np.ndarray
    path_ds: np.ndarray
    path_bds: np.ndarray
    n_steps: np.ndarray
    trace: np.ndarray
    batch_trace: np.ndarray
    lr_trace: np.ndarray


class LoopArguments(NamedTuple):
    """The seven groups, in the order a loop takes them."""

    quadratic: Quadratic
    optimizer: OptimizerConstants
    rule: RuleConstants
    horizon: Horizon
    per_trajectory: PerTrajectory
    state: State
    records: Records
