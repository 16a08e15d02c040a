"""The Adam schedule on the noisy quadratic (issue 22 item 3): B_t and lr_t set by the package's
Adam predictor, the multi-step probe (``surgesim.momentum.adam_noise_batch_size``), at the state.

At step 0, and at the first phase boundary (every ``interval`` steps) where the loss has fallen to
``loss_factor`` times the loss of the last probe or below, the probe runs at the current state
theta_t: T = ``steps`` real optimizer steps from fresh buffers per batch size B of
``batch_sizes``, ``trials`` minibatch sequences each, give lr*_T(B) = argmax_lr E[L(theta_t) -
L(theta_{t+T})] and the predictor B_adam (eq 2 fitted to lr*_T(B), or its peak where the fit
fails: ``momentum.probe_prediction``). Until the next probe the run steps with

    B_t = clip(round(c B_adam), batch_min, batch_max),   lr_t = k lr*_T(B_t),

lr*_T(B_t) interpolated linearly in (log B, log lr*_T) between the probed batch sizes (flat past
their ends; the optima at the edge of the probe's lr grid are used only where no other is finite).
c and k are the multipliers of the oracle's variants (``surgesim.schedules``): k = 1 is the
T-step optimum. Adam's buffers and bias corrections carry over from phase to phase; the probe
alone starts fresh ones (the predictor's protocol, fresh=True).

Random numbers: phase p of the run with stream key ``key`` (``trajectory_key``) draws its
minibatch noise from ``derive_key(key, PHASE_TAG + p)`` (the kernel restarts its stream at each
call), and probe q from the seed ``probe_seed(key, q)``; so a run is a pure function of (problem,
optimizer, rule, c, k, key), and runs that differ only in k or c share the noise of their phases
(common random numbers among the probe's variants; not with the kernel-rule schedules, whose steps
draw from ``key`` itself).

Cost: each probe runs len(batch_sizes) x 25 learning rates x ``trials`` trajectories of T steps;
about log(L0 / target) / log(1 / loss_factor) + 1 probes per run (8 to 1/8 of L0 at 0.75).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .kernels.dynamics import Optimizer, run_trajectories
from .momentum import PROBE_STEPS, RunState, adam_noise_batch_size
from .problem import QuadraticProblem
from .rng import derive_key

__all__ = [
    "PHASE_TAG",
    "PROBE_TAG",
    "ProbeRule",
    "PhaseSetting",
    "ProbeRun",
    "probe_seed",
    "phase_key",
    "lr_on_curve",
    "phase_setting",
    "run_probe_schedule",
]

PHASE_TAG = 0xAD000000  # derive_key(key, PHASE_TAG + p): the minibatch noise of phase p
PROBE_TAG = 0xAD100000  # derive_key(key, PROBE_TAG + q): the seed of probe q


@dataclass(frozen=True)
class ProbeRule:
    """The Adam schedule's rule (module docstring): phases of ``interval`` steps, a new probe
    after the loss fell by ``loss_factor``, B_t clipped to [batch_min, batch_max], the probe's
    ``batch_sizes``, ``steps`` T and ``trials``."""

    interval: int = 10
    loss_factor: float = 0.75
    batch_min: float = 2.0
    batch_max: float = 8192.0
    batch_sizes: tuple[int, ...] = tuple(2**j for j in range(3, 14))
    steps: int = PROBE_STEPS
    trials: int = 8

    def __post_init__(self) -> None:
        for name, lo in (("interval", 1), ("steps", 1), ("trials", 2)):
            v = getattr(self, name)
            if isinstance(v, bool) or int(v) != v or v < lo:
                raise ValueError(f"{name}={v!r} must be an integer >= {lo}")
        if not 0 < self.loss_factor <= 1:
            raise ValueError(f"loss_factor={self.loss_factor!r} must be in (0, 1]")
        if not 1 <= self.batch_min <= self.batch_max < math.inf:
            raise ValueError(f"need 1 <= batch_min <= batch_max < inf, got {self.batch_min!r}, {self.batch_max!r}")
        bs = tuple(int(b) for b in self.batch_sizes)
        if len(bs) < 3 or any(b < 1 for b in bs) or bs != tuple(self.batch_sizes) or len(set(bs)) != len(bs):
            raise ValueError(f"batch_sizes must be >= 3 distinct integers >= 1, got {self.batch_sizes!r}")
        object.__setattr__(self, "batch_sizes", tuple(sorted(bs)))

    def clip(self, b: float) -> float:
        """round(b) clipped to [batch_min, batch_max]."""
        return float(min(max(math.floor(b + 0.5), self.batch_min), self.batch_max))


@dataclass(frozen=True)
class PhaseSetting:
    """One probe's setting: B_t, lr_t, and the predictor B_adam with its source."""

    batch_size: float
    lr: float
    noise_batch_size: float
    source: str


@dataclass(frozen=True)
class ProbeRun:
    """``run_probe_schedule``: steps and examples to each target (-1 and nan where not reached),
    the steps run, the probes made and (with ``trace``) B_t, lr_t per step (nan past the end)."""

    steps: np.ndarray
    examples: np.ndarray
    n_steps: int
    probes: int
    batch_trace: np.ndarray
    lr_trace: np.ndarray


def probe_seed(key: int, probe: int) -> int:
    """The seed of probe ``probe`` of the run with stream key ``key`` (an integer < 2^62)."""
    return int(derive_key(np.uint64(key), np.uint64(PROBE_TAG + probe))) & ((1 << 62) - 1)


def phase_key(key: int, phase: int) -> np.uint64:
    """The stream key of the minibatch noise of phase ``phase``."""
    return np.uint64(derive_key(np.uint64(key), np.uint64(PHASE_TAG + phase)))


def lr_on_curve(batch_sizes, lr_opt, at_edge, b: float) -> float:
    """lr*_T at batch size b: linear in (log B, log lr) between the probed optima inside the lr
    grid (all finite ones where none is inside), flat past the ends; nan where none is finite."""
    bs, lr = np.asarray(batch_sizes, dtype=np.float64), np.asarray(lr_opt, dtype=np.float64)
    ok = np.isfinite(lr) & (lr > 0)
    inside = ok & ~np.asarray(at_edge, dtype=bool)
    use = inside if inside.any() else ok
    if not use.any():
        return math.nan
    return float(np.exp(np.interp(math.log(b), np.log(bs[use]), np.log(lr[use]))))


def phase_setting(
    problem: QuadraticProblem, optimizer: Optimizer, state: RunState, rule: ProbeRule, c: float, k: float, seed: int
) -> PhaseSetting | None:
    """The probe's setting at ``state``: B_t = clip(round(c B_adam)) and lr_t = k lr*_T(B_t)
    (module docstring); None where the probe finds no finite B_adam or lr*_T."""
    pred = adam_noise_batch_size(problem, optimizer, [state], rule.batch_sizes, rule.steps, rule.trials, seed)
    if not (np.isfinite(pred.noise_batch_size) and pred.noise_batch_size > 0):
        return None
    b = rule.clip(c * pred.noise_batch_size)
    lr = k * lr_on_curve(pred.probe.batch_sizes, pred.probe.lr_opt, pred.probe.at_edge, b)
    if not (np.isfinite(lr) and lr > 0):
        return None
    return PhaseSetting(b, lr, float(pred.noise_batch_size), pred.source)


def run_probe_schedule(
    problem: QuadraticProblem,
    optimizer: Optimizer,
    rule: ProbeRule,
    c: float,
    k: float,
    key: int,
    delta0: np.ndarray,
    targets: Sequence[float],
    max_steps: int,
    trace_steps: int = 0,
) -> ProbeRun:
    """One run of the Adam schedule from delta0 (module docstring): phases of ``rule.interval``
    steps of ``run_trajectories`` at the phase's (B_t, lr_t), buffers carried over, until every
    target is reached, the loss is not finite, or ``max_steps``. Targets in decreasing order."""
    H, sigma = problem.hessian, problem.sigma
    tg = np.asarray(targets, dtype=np.float64)
    steps = np.full(tg.size, -1, dtype=np.int64)
    examples = np.full(tg.size, np.nan)
    b_trace, lr_trace = np.full(trace_steps, np.nan), np.full(trace_steps, np.nan)
    delta = np.asarray(delta0, dtype=np.float64).copy()
    m, v = np.zeros_like(delta), np.zeros_like(delta)
    s, ex, j, probes, phase = 0, 0.0, 0, 0, 0
    loss, probe_loss = 0.5 * float(delta @ H.matvec(delta)), math.inf
    setting: PhaseSetting | None = None
    while j < tg.size and loss <= tg[j]:  # reached before any step
        steps[j], examples[j], j = 0, 0.0, j + 1
    while j < tg.size and s < max_steps and np.isfinite(loss):
        if setting is None or loss <= rule.loss_factor * probe_loss:
            new = phase_setting(problem, optimizer, RunState(delta, m, v, s, loss), rule, c, k, probe_seed(key, probes))
            probes += 1
            if new is not None:
                setting = new
            elif setting is None:
                break
            probe_loss = loss
        n = min(rule.interval, max_steps - s)
        res = run_trajectories(H, sigma, delta, np.array([phase_key(key, phase)]), setting.lr, setting.batch_size,
                               optimizer, tg[j:], 0, n, n, m0=m, v0=v, start_step=s)  # fmt: skip
        for jj, st in enumerate(res.steps[0]):
            if st >= 0:
                steps[j + jj], examples[j + jj] = s + st, ex + st * setting.batch_size
        lo, hi = min(s, trace_steps), min(s + int(res.n_steps[0]), trace_steps)
        b_trace[lo:hi], lr_trace[lo:hi] = setting.batch_size, setting.lr
        j += int(np.sum(res.steps[0] >= 0))
        delta, m, v = res.delta[0], res.m[0], res.v[0]
        s += int(res.n_steps[0])
        ex += int(res.n_steps[0]) * setting.batch_size
        loss = 0.5 * float(delta @ H.matvec(delta))
        phase += 1
        if res.n_steps[0] < n:  # the loss was no longer finite
            break
    return ProbeRun(steps, examples, s, probes, b_trace, lr_trace)
