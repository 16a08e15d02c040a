"""Batch-size and learning-rate schedules that follow the surge (Li et al. 2024, Section 2.3 and
Discussion), measured against the constant-batch steps-examples front on a noisy quadratic.

B_noise, the batch size where the optimal learning rate of sign-SGD peaks and the balance point of
steps and examples (eq 14, eq 20-21), grows as the loss falls. A schedule is a rule for (B_t, lr_t)
at each step t (``surgesim.kernels.dynamics.StepRule``):

- ``constant``: one batch size of a grid, its learning rate tuned per target (fewest steps): the
  points of the constant-batch front;
- ``oracle``: B_t = c B_noise(theta_t) from the exact theory at the state (eq 14, its off-diagonal
  sum averaged over the recent states because it fluctuates from step to step), lr_t = k * eq 9
  at B_t and the state, for a few c; k is tuned (1 is the one-step optimum of sign-SGD);
- ``online``: the same rule from running estimates made from the minibatch gradients the run
  computes (S, off, per-coordinate variances from the two half batches of each minibatch: no
  extra example, no access to the state), lr_t = k * eq 13 at B_t;
- ``critical``: B_t = c B_crit with McCandlish et al.'s B_crit = tr(H Sigma) / G'HG estimated the
  same way, lr_t as ``online``;
- ``geometric``: B_t = B_0 2^floor(t / K), lr_t = lr_0 gamma^floor(t / K) (the Umeda-Iiduka form),
  lr_0 tuned on a grid.

Protocol: each variant's learning rate (or multiplier k) is tuned per target on ``tune_seeds``
runs (fewest seed-mean steps; a run that misses the target counts as never), then evaluated on
``seeds`` fresh runs. Every evaluation run r uses the stream (seed, 0, r) whatever its schedule, so
the schedules are compared on common random numbers. From the runs, per (optimizer, schedule
variant, target): the median steps S and examples E over seeds, and against the front of the
constant batch sizes' medians (interpolated in log-log between its points): the saving in E at
equal S, 1 - E / E_front(S), and in S at equal E, with bootstrap standard errors over seeds
(resampled jointly, 200 times), and whether a constant batch size beats it in both S and E.

The work is two lists of independent deterministic tasks (``ScheduleExperiment.tune_tasks`` and
``eval_tasks``) for ``surgesim.sweep.run_sweep(run_task, tasks, shared=problem)``. ``choose``,
``summarize`` and ``front_savings`` also serve the schedules on a network
(``surgesim.workloads.schedules``), whose targets are training losses.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .dynamics import DEFAULT_OPTIMIZERS, default_lr_grid, initial_delta
from .kernels.dynamics import Optimizer, StepRule, run_trajectories, trajectory_key
from .probe_schedule import ProbeRule, run_probe_schedule
from .problem import QuadraticProblem

__all__ = [
    "SCHEDULES",
    "PROBE_SCHEDULE",
    "KNOWN_SCHEDULES",
    "ROW_COLUMNS",
    "Variant",
    "ScheduleExperiment",
    "default_variants",
    "run_task",
    "choose",
    "summarize",
    "front_savings",
    "schedule_traces",
]

SCHEDULES = ("constant", "oracle", "online", "critical", "geometric")
"""The schedules of the kernel's step rules (``StepRule``): the default of ``default_variants``."""
PROBE_SCHEDULE = "probe"
"""The Adam schedule: B_t and lr_t from the multi-step probe at the state (``surgesim.probe_schedule``)."""
KNOWN_SCHEDULES = SCHEDULES + (PROBE_SCHEDULE,)
ROW_COLUMNS = ("schedule", "variant", "optimizer", "target_loss", "seed", "steps", "examples", "batch_size", "lr")
"""Columns of schedules.csv: one row per evaluation run and target. batch_size: the constant B,
the multiplier c, or B_0 (geometric); lr: the learning rate, the multiplier k of eq 9 / eq 13, or
lr_0. steps and examples are empty where the target was not reached within max_steps."""

PROBE_MULTIPLIERS = tuple(2.0 ** (j / 2) for j in range(-2, 5))
"""k of the probe schedule, lr_t = k lr*_T(B_t): 0.5 .. 4 in half octaves (k = 1 is the probe's T-step optimum)."""
_TUNE_OFFSET = 1 << 20  # tuning runs use replicates from here on: never the evaluation streams
BOOTSTRAP = 200


@dataclass(frozen=True)
class Variant:
    """One schedule with its parameters: ``rule`` (a ``StepRule`` on the quadratic, or the probe
    schedule's ``ProbeRule``; a ``surgesim.workloads.schedules.ScheduleRule`` on a network), the
    batch value (B, c or B_0) and the grid of learning rates (or multipliers) it is tuned over."""

    schedule: str
    label: str
    rule: Any  # StepRule, ProbeRule or ScheduleRule
    batch: float
    lrs: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.schedule not in KNOWN_SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(KNOWN_SCHEDULES)}, got {self.schedule!r}")
        if not (np.isfinite(self.batch) and self.batch > 0):
            raise ValueError(f"{self.schedule}: batch value (B, c or B_0) must be finite and > 0, got {self.batch!r}")
        if not self.lrs or not all(np.isfinite(x) and x > 0 for x in self.lrs):
            raise ValueError(f"{self.schedule}: learning rates must be finite and > 0, got {self.lrs}")


_OCTAVES = tuple(2**k for k in range(3, 14))  # 8 .. 8192


def default_variants(
    problem: QuadraticProblem,
    optimizer: Optimizer,
    schedules: Sequence[str] = SCHEDULES,
    batch_sizes: Sequence[int] = _OCTAVES,
    multipliers: Sequence[float] = (0.5, 1.0, 2.0),
    lr_points: int = 12,
) -> tuple[Variant, ...]:
    """The variants of ``python -m sims.schedules``.

    constant: ``batch_sizes`` (8 .. 8192 in octaves) with ``default_lr_grid``; oracle and online:
    c in ``multipliers``; critical: c in 2 x ``multipliers`` (B_crit starts below B_noise on the
    default problem); all three with k in 2^(j/2), j = -6 .. 4 (sign, lion) or -4 .. 8 (adam, whose
    steps are shorter); geometric: B_0 = 32, the batch doubled every K in (100, 300) steps, gamma
    in (1, 1/sqrt 2), lr_0 on ``default_lr_grid`` at B_0; probe (only where named: each run
    probes): c in ``multipliers``, k in 2^(j/2), j = -2 .. 4, the probe over ``batch_sizes``.
    Schedules clip B_t to the grid's range (oracle and probe: [1, max B]).
    """
    for s in schedules:
        if s not in KNOWN_SCHEDULES:
            raise ValueError(f"unknown schedule {s!r}; choose from {', '.join(KNOWN_SCHEDULES)}")
    for c in multipliers:
        if not (np.isfinite(c) and c > 0):
            raise ValueError(f"multipliers c must be finite and > 0, got {c!r}")
    bs = sorted(int(b) for b in batch_sizes)
    lo, hi = float(max(bs[0], 2)), float(bs[-1])
    ks = tuple(2.0 ** (j / 2) for j in (range(-4, 9) if optimizer.name == "adam" else range(-6, 5)))
    out: list[Variant] = []
    if "constant" in schedules:
        grid = tuple(default_lr_grid(problem, optimizer, bs, lr_points))
        out += [Variant("constant", f"B={b}", StepRule(), float(b), grid) for b in bs]
    oracle = StepRule("optimal", "noise", batch_min=1.0, batch_max=hi)
    online = StepRule("estimated", "noise_estimated", batch_min=2.0, batch_max=hi, batch_start=lo, beta=0.98)
    critical = dataclasses.replace(online, batch="critical_estimated")
    for name, rule, cs in (("oracle", oracle, multipliers), ("online", online, multipliers),
                           ("critical", critical, [2 * c for c in multipliers])):  # fmt: skip
        if name in schedules:
            out += [Variant(name, f"c={c:g}", rule, float(c), ks) for c in cs]
    if "geometric" in schedules:
        grid = tuple(default_lr_grid(problem, optimizer, [32], lr_points))
        for K in (100, 300):
            for gamma in (1.0, 2**-0.5):
                rule = StepRule("geometric", "geometric", interval=K, batch_factor=2.0, lr_factor=gamma, batch_max=hi)
                out.append(Variant("geometric", f"B0=32,K={K},gamma={gamma:.2g}", rule, 32.0, grid))
    if PROBE_SCHEDULE in schedules:
        probe_rule = ProbeRule(batch_min=1.0, batch_max=hi, batch_sizes=tuple(bs))
        out += [Variant(PROBE_SCHEDULE, f"c={c:g}", probe_rule, float(c), PROBE_MULTIPLIERS) for c in multipliers]
    return tuple(out)


@dataclass(frozen=True, eq=False)
class ScheduleExperiment:
    """Schedules x optimizers x targets on one problem (module docstring).

    variants: per optimizer (same order as ``optimizers``), its ``Variant`` tuple.
    """

    problem: QuadraticProblem
    optimizers: tuple[Optimizer, ...]
    variants: tuple[tuple[Variant, ...], ...]
    target_fractions: tuple[float, ...] = (0.5, 0.25, 0.125)
    seeds: int = 16
    tune_seeds: int = 8
    seed: int = 0
    max_steps: int = 3000
    _initial_loss: float = dataclasses.field(init=False, repr=False)  # set by __post_init__

    def __post_init__(self) -> None:
        if not isinstance(self.problem, QuadraticProblem):
            raise TypeError(f"problem must be a QuadraticProblem, got {type(self.problem).__name__}")
        if len(self.variants) != len(self.optimizers) or not self.optimizers:
            raise ValueError("need one variant tuple per optimizer, and at least one optimizer")
        fr = np.asarray(self.target_fractions, dtype=np.float64).ravel()
        if fr.size < 1 or np.any(~(fr > 0)) or np.any(~(fr < 1)) or np.unique(fr).size != fr.size:
            raise ValueError(f"target fractions must be distinct and in (0, 1), got {fr}")
        for name in ("seeds", "tune_seeds", "max_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or int(v) != v or v < 1:
                raise ValueError(f"{name}={v!r} must be an integer >= 1")
        if isinstance(self.seed, bool) or int(self.seed) != self.seed or self.seed < 0:
            raise ValueError(f"seed={self.seed!r} must be an integer >= 0")
        object.__setattr__(self, "target_fractions", tuple(float(x) for x in np.sort(fr)[::-1]))
        delta0 = initial_delta(self.problem)
        object.__setattr__(self, "_initial_loss", 0.5 * float(delta0 @ self.problem.mu))

    @property
    def initial_loss(self) -> float:
        return self._initial_loss

    @property
    def targets(self) -> tuple[float, ...]:
        return tuple(f * self._initial_loss for f in self.target_fractions)

    def _task(self, opt: Optimizer, v: Variant, lrs, phase: str) -> dict:
        return {
            "optimizer": opt.name, "beta1": opt.beta1, "beta2": opt.beta2, "eps": opt.eps,
            "schedule": v.schedule, "variant": v.label, "rule": dataclasses.asdict(v.rule), "batch": v.batch,
            "lrs": [float(x) for x in lrs], "phase": phase, "seeds": self.tune_seeds if phase == "tune" else self.seeds,
            "seed": self.seed, "targets": list(self.targets), "max_steps": self.max_steps,
        }  # fmt: skip

    def tune_tasks(self) -> list[dict]:
        """One task per (optimizer, variant): its learning-rate grid on the tuning seeds."""
        pairs = zip(self.optimizers, self.variants, strict=True)
        return [self._task(o, v, v.lrs, "tune") for o, vs in pairs for v in vs]

    def eval_tasks(self, chosen: Mapping[tuple, float | None]) -> list[dict]:
        """One task per (optimizer, variant, chosen learning rate) on the evaluation seeds; ``chosen``
        maps (optimizer name, schedule, variant label, target fraction) to the tuned lr (``choose``)."""
        tasks = []
        for o, vs in zip(self.optimizers, self.variants, strict=True):
            for v in vs:
                tuned = {chosen[(o.name, v.schedule, v.label, f)] for f in self.target_fractions}
                lrs = sorted(x for x in tuned if x is not None)
                tasks += [self._task(o, v, [x], "eval") for x in lrs]
        return tasks


def run_task(params: Mapping, problem: QuadraticProblem) -> list[dict]:
    """Run one task: every learning rate and seed of one (optimizer, variant). One row per
    (lr, seed, target), ``ROW_COLUMNS``; a pure function of (params, problem)."""
    opt = Optimizer(str(params["optimizer"]), float(params["beta1"]), float(params["beta2"]), float(params["eps"]))
    lrs = np.asarray(params["lrs"], dtype=np.float64)
    n = int(params["seeds"])
    offset = _TUNE_OFFSET if params["phase"] == "tune" else 0
    keys = np.array([trajectory_key(int(params["seed"]), 0, offset + r) for r in range(n)], dtype=np.uint64)
    targets = np.asarray(params["targets"], dtype=np.float64)
    if params["schedule"] == PROBE_SCHEDULE:
        res = _probe_runs(problem, opt, ProbeRule(**params["rule"]), float(params["batch"]), np.repeat(lrs, n),
                          np.tile(keys, lrs.size), targets, int(params["max_steps"]))  # fmt: skip
    else:
        res = run_trajectories(
            problem.hessian, problem.sigma, initial_delta(problem), np.tile(keys, lrs.size), np.repeat(lrs, n),
            float(params["batch"]), opt, targets, 0, int(params["max_steps"]), rule=StepRule(**params["rule"]),
        )  # fmt: skip
    rows = []
    for t in range(lrs.size * n):
        for j, target in enumerate(targets):
            ok = res.steps[t, j] >= 0
            rows.append({
                "schedule": params["schedule"], "variant": params["variant"], "optimizer": opt.name,
                "target_loss": float(target), "seed": t % n, "steps": int(res.steps[t, j]) if ok else None,
                "examples": float(res.examples_at[t, j]) if ok else None, "batch_size": float(params["batch"]),
                "lr": float(lrs[t // n]),
            })  # fmt: skip
    return rows


@dataclass(frozen=True)
class _Runs:
    """The part of a ``TrajectoryResult`` that ``run_task`` and ``schedule_traces`` read."""

    steps: np.ndarray
    examples_at: np.ndarray
    batch_trace: np.ndarray
    lr_trace: np.ndarray


def _probe_runs(problem, opt, rule: ProbeRule, c: float, ks, keys, targets, max_steps: int, trace_steps: int = 0):
    """The probe schedule's runs (``probe_schedule.run_probe_schedule``), one per (k, key)."""
    runs = [run_probe_schedule(problem, opt, rule, c, float(k), int(key), initial_delta(problem), targets,
                               max_steps, trace_steps) for k, key in zip(ks, keys, strict=True)]  # fmt: skip
    return _Runs(np.array([r.steps for r in runs]), np.array([r.examples for r in runs]),
                 np.array([r.batch_trace for r in runs]), np.array([r.lr_trace for r in runs]))  # fmt: skip


def _steps(rows: Sequence[Mapping]) -> np.ndarray:
    return np.array([math.inf if r["steps"] is None else r["steps"] for r in rows], dtype=np.float64)


def _targets(experiment) -> list[tuple[float, float, dict]]:
    """(key, target loss, summary keys) per target: a quadratic experiment's targets are keyed by
    their fraction of the initial loss, a network's (no ``target_fractions``) by the loss itself."""
    fractions = getattr(experiment, "target_fractions", None)
    if fractions is None:
        return [(t, t, {}) for t in experiment.targets]
    return [(f, t, {"target_fraction": f}) for f, t in zip(fractions, experiment.targets, strict=True)]


def choose(experiment, tune_rows: Sequence[Mapping]) -> dict[tuple, float | None]:
    """The tuned lr per (optimizer, schedule, variant label, target key): fewest seed-mean steps over
    the tuning runs (a missed target counts as never; None where every lr missed it).

    ``experiment``: a ``ScheduleExperiment`` or any object with ``optimizers``, ``variants``,
    ``targets`` and ``seeds`` (``surgesim.workloads.schedules.ScheduleExperiment``); the target
    key is the target fraction where it has ``target_fractions``, else the target loss."""
    groups: dict[tuple, list] = {}
    for r in tune_rows:
        groups.setdefault((r["optimizer"], r["schedule"], r["variant"], r["target_loss"]), []).append(r)
    out = {}
    for o, vs in zip(experiment.optimizers, experiment.variants, strict=True):
        for v in vs:
            for f, target, _ in _targets(experiment):
                rows = [r for key, g in groups.items() if key[:3] == (o.name, v.schedule, v.label)
                        and math.isclose(key[3], target, rel_tol=1e-12) for r in g]  # fmt: skip
                lr, steps = np.array([r["lr"] for r in rows]), _steps(rows)
                best, best_mean = None, math.inf
                for x in np.unique(lr):
                    mean = float(np.mean(steps[lr == x]))
                    if mean < best_mean:
                        best, best_mean = float(x), mean
                out[(o.name, v.schedule, v.label, f)] = best
    return out


def _median(x: np.ndarray) -> float:
    m = float(np.median(x))
    return m if np.isfinite(m) else math.nan


def front_savings(front_s, front_e, s: float, e: float) -> dict[str, float]:
    """The saving of a point (S, E) against the front of constant-batch points (front_s, front_e).

    The front is the Pareto-efficient subset, interpolated linearly in (log S, log E) and flat past
    its ends (E_front(S) for S beyond the front's largest S is its smallest E: reaching the target
    in fewer steps also counts). Returns ``examples_saving`` = 1 - E / E_front(S) and
    ``steps_saving`` = 1 - S / S_front(E) (nan below the front's smallest S, resp. E),
    ``dominated`` (some constant point has S' <= S and E' <= E, one strictly) and
    ``dominated_5pct`` (some constant point has S' <= 0.95 S and E' <= 0.95 E).
    """
    fs, fe = np.asarray(front_s, dtype=np.float64), np.asarray(front_e, dtype=np.float64)
    ok = np.isfinite(fs) & np.isfinite(fe)
    fs, fe = fs[ok], fe[ok]
    nan = math.nan
    if not (np.isfinite(s) and np.isfinite(e)) or fs.size == 0:
        return {"examples_saving": nan, "steps_saving": nan, "dominated": False, "dominated_5pct": False}
    dominated = bool(np.any((fs <= s) & (fe <= e) & ((fs < s) | (fe < e))))
    dominated_5 = bool(np.any((fs <= 0.95 * s) & (fe <= 0.95 * e)))
    eff = np.array([not np.any((fs <= a) & (fe <= b) & ((fs < a) | (fe < b))) for a, b in zip(fs, fe, strict=True)])
    order = np.argsort(fs[eff])
    ls, le = np.log(fs[eff][order]), np.log(fe[eff][order])  # S ascending, E descending
    es = ss = nan
    if ls.size and ls[0] <= math.log(s):  # past the last point, the front is flat (fewer steps also count)
        es = 1.0 - e / math.exp(float(np.interp(math.log(s), ls, le)))
    if le.size and le[-1] <= math.log(e):
        ss = 1.0 - s / math.exp(float(np.interp(math.log(e), le[::-1], ls[::-1])))
    return {"examples_saving": es, "steps_saving": ss, "dominated": dominated, "dominated_5pct": dominated_5}


def _none(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def summarize(experiment, rows: Sequence[Mapping], chosen: Mapping[tuple, float | None]) -> list:
    """One entry per (optimizer, target, variant): median S and E over seeds with bootstrap
    standard errors, the tuned lr, and ``front_savings`` against the constant variants' front
    with bootstrap standard errors (module docstring). JSON-ready (non-finite numbers as None).
    ``experiment`` as in ``choose`` (entries have ``target_fraction`` only where it has fractions)."""
    out = []
    gen = np.random.default_rng(0)
    n = experiment.seeds
    boot = gen.integers(0, n, (BOOTSTRAP, n))
    for o, vs in zip(experiment.optimizers, experiment.variants, strict=True):
        for f, target, extra in _targets(experiment):
            table = {}  # (schedule, label) -> (S, E) per seed, inf where not reached
            for v in vs:
                lr = chosen[(o.name, v.schedule, v.label, f)]
                mine = sorted(
                    (r for r in rows if r["optimizer"] == o.name and r["schedule"] == v.schedule
                     and r["variant"] == v.label and r["lr"] == lr
                     and math.isclose(r["target_loss"], target, rel_tol=1e-12)),
                    key=lambda r: r["seed"],
                )  # fmt: skip
                S = np.full(n, math.inf)
                E = np.full(n, math.inf)
                for r in mine:
                    if r["steps"] is not None:
                        S[r["seed"]], E[r["seed"]] = r["steps"], r["examples"]
                table[(v.schedule, v.label)] = (S, E)
            const = [(v.schedule, v.label) for v in vs if v.schedule == "constant"]

            def point(label, idx, table=table):
                S, E = table[label]
                return _median(S[idx]), _median(E[idx])

            full = np.arange(n)
            front_full = np.array([point(label, full) for label in const]).reshape(-1, 2)
            front_boot = [np.array([point(label, b) for label in const]).reshape(-1, 2) for b in boot]
            for v in vs:
                s, e = point((v.schedule, v.label), full)
                pts = [point((v.schedule, v.label), b) for b in boot]
                sav = front_savings(front_full[:, 0], front_full[:, 1], s, e)
                bs = [front_savings(fb[:, 0], fb[:, 1], *p) for fb, p in zip(front_boot, pts, strict=True)]

                def se(values):
                    x = np.array([a for a in values if np.isfinite(a)])
                    return float(np.std(x, ddof=1)) if x.size >= BOOTSTRAP // 2 else math.nan

                S, E = table[(v.schedule, v.label)]
                out.append({
                    "optimizer": o.name, "label": o.label, **extra, "target_loss": target,
                    "schedule": v.schedule, "variant": v.label, "batch": v.batch,
                    "lr": chosen[(o.name, v.schedule, v.label, f)],
                    "reached": int(np.sum(np.isfinite(S))), "seeds": n,
                    "median_steps": _none(s), "median_steps_se": _none(se([p[0] for p in pts])),
                    "median_examples": _none(e), "median_examples_se": _none(se([p[1] for p in pts])),
                    "examples_saving": _none(sav["examples_saving"]),
                    "examples_saving_se": _none(se([b["examples_saving"] for b in bs])),
                    "steps_saving": _none(sav["steps_saving"]),
                    "steps_saving_se": _none(se([b["steps_saving"] for b in bs])),
                    "front_dominates": sav["dominated"], "front_dominates_5pct": sav["dominated_5pct"],
                })  # fmt: skip
    return out


def schedule_traces(
    experiment: ScheduleExperiment, chosen: Mapping[tuple, float | None], steps: int | None = None
) -> list[dict]:
    """B_t and lr_t along each variant that reached the lowest target, evaluation seed 0, at the
    lr tuned for that target: dicts with optimizer, schedule, variant, batch (steps,), lr (steps,)
    (nan past the end of the run)."""
    f, target = experiment.target_fractions[-1], experiment.targets[-1]
    n = steps or experiment.max_steps
    key = np.array([trajectory_key(experiment.seed, 0, 0)], dtype=np.uint64)
    delta0 = initial_delta(experiment.problem)
    out = []
    for o, vs in zip(experiment.optimizers, experiment.variants, strict=True):
        for v in vs:
            lr = chosen[(o.name, v.schedule, v.label, f)]
            if lr is None:
                continue
            if v.schedule == PROBE_SCHEDULE:
                res = _probe_runs(experiment.problem, o, v.rule, v.batch, [lr], key, [target], experiment.max_steps, n)
            else:
                res = run_trajectories(
                    experiment.problem.hessian, experiment.problem.sigma, delta0, key, lr, v.batch, o, [target], 0,
                    experiment.max_steps, trace_steps=n, rule=v.rule,
                )  # fmt: skip
            out.append({"optimizer": o.name, "schedule": v.schedule, "variant": v.label,
                        "batch": res.batch_trace[0], "lr": res.lr_trace[0]})  # fmt: skip
    return out


def optimizers_by_name(names: Sequence[str]) -> tuple[Optimizer, ...]:
    """``DEFAULT_OPTIMIZERS`` by name (ValueError naming an unknown one)."""
    out = []
    for name in names:
        if name not in DEFAULT_OPTIMIZERS:
            raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(DEFAULT_OPTIMIZERS)}")
        out.append(DEFAULT_OPTIMIZERS[name])
    return tuple(out)
