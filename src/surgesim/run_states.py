"""States of runs on a noisy quadratic: theta - theta*, the optimizer's buffers m, v and the steps
taken where a run first reaches a loss (``run_states``), and the states the Adam predictor probes
(``probe_states_of``: halfway in log loss to a grid search's target)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import ArrayLike

from .gridfit import GridFit
from .kernels.dynamics import Optimizer, run_trajectories, trajectory_key
from .problem import QuadraticProblem

__all__ = ["RunState", "run_states", "probe_states_of", "ExperimentLike", "ResultLike"]


class ExperimentLike(Protocol):
    """What ``probe_states_of`` reads of a grid search (``surgesim.gridsearch.Experiment``)."""

    @property
    def problem(self) -> QuadraticProblem: ...
    @property
    def initial_loss(self) -> float: ...
    @property
    def delta0(self) -> np.ndarray: ...
    @property
    def max_steps(self) -> int: ...


class ResultLike(Protocol):
    """What ``probe_states_of`` reads of one of its results (``surgesim.gridsearch.TargetResult``)."""

    @property
    def optimizer(self) -> Optimizer: ...
    @property
    def lrs(self) -> np.ndarray: ...
    @property
    def target_loss(self) -> float: ...
    @property
    def steps_fit(self) -> GridFit: ...


@dataclass(frozen=True)
class RunState:
    """A state of a run: theta - theta*, the optimizer's buffers, the steps taken, the loss."""

    delta: np.ndarray
    m: np.ndarray
    v: np.ndarray
    step: int
    loss: float


def run_states(
    problem: QuadraticProblem,
    optimizer: Optimizer,
    lr: float,
    batch_size: int,
    losses: Sequence[float],
    keys: ArrayLike,
    delta0: np.ndarray,
    max_steps: int = 100_000,
) -> list[list[RunState | None]]:
    """The states where each run (stream ``keys[r]``, the grid's ``trajectory_key``) first reaches
    each loss in ``losses``: [run][loss] -> RunState, None where not reached within ``max_steps``.

    Two passes of the same runs: one finds the step counts, the second stops there and returns the
    state with its buffers (bit-identical trajectories: same streams).
    """
    streams = np.asarray(keys, dtype=np.uint64)
    H, sigma = problem.hessian, problem.sigma
    first = run_trajectories(H, sigma, delta0, streams, lr, float(batch_size), optimizer, targets=np.asarray(losses),
                             max_steps=max_steps)  # fmt: skip
    out: list[list[RunState | None]] = []
    for r, key in enumerate(streams):
        row: list[RunState | None] = []
        for j in range(len(losses)):
            s = int(first.steps[r, j])
            if s < 0:
                row.append(None)
                continue
            res = run_trajectories(H, sigma, delta0, key[None], lr, float(batch_size), optimizer, max_steps=s,
                                   min_steps=s)  # fmt: skip
            d = res.delta[0]
            row.append(RunState(d, res.m[0], res.v[0], s, 0.5 * float(d @ H.matvec(d))))
        out.append(row)
    return out


def probe_states_of(
    experiment: ExperimentLike, result: ResultLike, rows: Sequence, n_states: int, seed: int = 0
) -> tuple[list[RunState], int, float]:
    """The states a result's runs pass, for the probe: ``n_states`` runs (seeds 0 ..) at the grid's
    peak batch size and the grid learning rate nearest its step-optimal one, stopped where their
    loss first reaches sqrt(L0 L_target) (halfway in log loss from the start to the target).
    Returns (states, B, lr); no state when the grid has no finite optimum."""
    optima = [o for o in result.steps_fit.optima if np.isfinite(o.optimal_lr)]
    if not optima:
        return [], 0, math.nan
    best = max(optima, key=lambda o: o.optimal_lr)
    lrs = np.asarray(result.lrs)
    lr = float(lrs[np.argmin(np.abs(np.log(lrs / best.optimal_lr)))])
    B = int(best.batch_size)
    loss = math.sqrt(experiment.initial_loss * result.target_loss)
    keys = [trajectory_key(seed, B, k) for k in range(n_states)]
    got = run_states(experiment.problem, result.optimizer, lr, B, [loss], keys, experiment.delta0,
                     max_steps=experiment.max_steps)  # fmt: skip
    return [s[0] for s in got if s[0] is not None], B, lr
