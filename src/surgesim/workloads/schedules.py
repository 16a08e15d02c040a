"""Batch-size and learning-rate schedules on a real network (issue 15): the torch side of
``surgesim.schedules``, measured with the grid protocol of ``protocol`` (same minibatch sampling,
same training-loss evaluations, S interpolated between evaluations).

A schedule sets (B_t, lr_t) before step t: the step draws B_t examples, writes lr_t into the
optimizer's parameter groups and steps. Optimizers: ``adam`` = Adam(0.9, 0.999, eps 1e-8), the
``protocol.Trainer``'s, and ``sign`` = Adam(beta1 = 0, beta2 = 0), whose update g / (|g| + eps)
is sign-SGD up to eps. Schedules (``ScheduleRule.batch``):

- ``constant``: B_t = B, lr_t = lr (a point of the grid; the constant-batch front);
- ``simple`` (the ``online`` schedule): B_t = c B_simple_hat, McCandlish et al.'s simple noise
  scale tr(Sigma) / |G|^2 (their eq 2.9) estimated during training from the gradients the run
  computes anyway: each minibatch is split into two halves of n1, n2 examples whose gradients g1,
  g2 are backpropagated separately (their weighted mean is the minibatch gradient, so no example
  is drawn beyond B_t). g1'g2 estimates |G|^2 without bias and |g1 - g2|^2 / (1/n1 + 1/n2)
  estimates tr(Sigma); their bias-corrected running averages (factor ``beta`` per step) give the
  ratio. lr_t = lr (tuned on the lr grid);
- ``critical``: B_t = c B_crit_hat, McCandlish's B_crit = tr(H Sigma) / G'HG (eq 2.8), from the
  same halves and two Hessian-vector products of the minibatch loss every ``hvp_every`` steps:
  d'Hd / (1/n1 + 1/n2) with d = g1 - g2, and g1'Hg2 (the minibatch Hessian shares the examples
  of g1, g2, so these are unbiased only where H does not depend on the examples, as on a
  quadratic); lr_t = lr;
- ``geometric``: B_t = B_0 batch_factor^floor(t / K), lr_t = lr_0 lr_factor^floor(t / K);
- ``probe`` (the Adam schedule, only where named): every K = ``interval`` steps the multi-step
  probe (T = 4 Adam steps) at the run's weights and buffers sets B_t = c B_peak and lr_t = k
  lr*_T(B_t), k the task's lr (``probe_schedule``).

The adaptive rules hold B_t at ``batch_start`` for the first ``warmup`` steps, then round c times
the estimate and clip it to [``batch_min``, ``batch_max``] (B_t stays where it was while a
running average is not positive).

Why B_simple and not eq 14: on the CNN demo, eq 14 from the network's own per-coordinate statistics
is 0.07-4.1, while the B_noise fitted from the grid (eq 22) is 25-40 and B_simple (24-128) tracks
it (``python -m sims.probe --workload cnn --demo``, README section "Predicting the surge on a real
network: Lemma 1 measured", figures/fig9): the independent-coordinate model behind eq 14 fails
there, so the quadratic's ``online`` rule (eq 14 and eq 13 from running estimates) has nothing to
follow.

Protocol: every (optimizer, variant, lr, seed) is one task (``ScheduleExperiment.tasks``,
``run_task``); the initial weights depend on the seed alone and the minibatch stream on (seed,
B_start, lr) as in ``protocol``, so schedules meet common random numbers. S to a target is the
interpolated step of ``protocol.follow_targets`` and E the cumulative examples at S (sum of B_t,
linear between steps): E = B S for a constant B. The lr of each variant is chosen per target by
fewest seed-mean steps and the medians are compared with the constant-batch front by
``surgesim.schedules.choose``, ``summarize`` and ``front_savings``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..kernels.dynamics import Optimizer
from ..schedules import Variant
from .probe_schedule import PROBE_LR0, probe_setting, probe_trainer, probe_window
from .protocol import RunSpec, Trainer, follow_targets

__all__ = [
    "BATCH_RULES",
    "TRACE_COLUMNS",
    "ScheduleRule",
    "NoiseScaleEstimator",
    "half_batch_estimates",
    "ScheduleTrainer",
    "ScheduleExperiment",
    "default_variants",
    "run_task",
    "csv_rows",
    "traces",
]

BATCH_RULES = ("constant", "simple", "critical", "geometric", "probe")
SCHEDULE_OF_RULE = {"constant": "constant", "simple": "online", "critical": "critical", "geometric": "geometric",
                    "probe": "probe"}  # fmt: skip
TRACE_COLUMNS = ("batch_trace", "lr_trace")
"""Extra keys of the first row of a seed-0 run: B_t and lr_t along the run (not in schedules.csv)."""


@dataclass(frozen=True)
class ScheduleRule:
    """How step t sets B_t and lr_t (module docstring); ``batch`` one of ``BATCH_RULES``."""

    batch: str = "constant"
    interval: int = 1
    batch_factor: float = 1.0
    lr_factor: float = 1.0
    batch_min: int = 2
    batch_max: int = 1 << 20
    batch_start: int = 8
    warmup: int = 5
    beta: float = 0.98
    hvp_every: int = 4

    def __post_init__(self) -> None:
        if self.batch not in BATCH_RULES:
            raise ValueError(f"batch rule must be one of {', '.join(BATCH_RULES)}, got {self.batch!r}")
        for name, lo in (("interval", 1), ("warmup", 0), ("hvp_every", 1), ("batch_min", 2), ("batch_start", 2)):
            v = getattr(self, name)
            if isinstance(v, bool) or int(v) != v or v < lo:
                raise ValueError(f"{name}={v!r} must be an integer >= {lo}")
        if not (self.batch_min <= self.batch_max) or int(self.batch_max) != self.batch_max:
            raise ValueError(f"need batch_min <= batch_max (integers), got {self.batch_min!r}, {self.batch_max!r}")
        for name in ("batch_factor", "lr_factor"):
            if not (0 < getattr(self, name) < math.inf):
                raise ValueError(f"{name}={getattr(self, name)!r} must be finite and > 0")
        if not 0 <= self.beta < 1:
            raise ValueError(f"beta={self.beta!r} must be in [0, 1)")

    @property
    def adaptive(self) -> bool:
        return self.batch in ("simple", "critical")

    def clip(self, b: float) -> int:
        return int(min(max(math.floor(b + 0.5), self.batch_min), self.batch_max))

    def lr_at(self, t: int, lr: float) -> float:
        """lr_t: ``lr`` times lr_factor^floor(t / interval) (geometric), else ``lr``."""
        return lr * self.lr_factor ** (t // self.interval) if self.batch == "geometric" else lr

    def start_batch(self, batch: float) -> int:
        """B_0, the batch size of the stream key: B (constant), B_0 (geometric), batch_start."""
        if self.adaptive or self.batch == "probe":
            return self.batch_start
        return self.clip(batch) if self.batch == "geometric" else int(batch)


class NoiseScaleEstimator:
    """Running, bias-corrected averages of the half-batch estimates of tr(Sigma), |G|^2 and (with
    curvature) tr(H Sigma), G'HG; the estimates are ratios of averages (module docstring).

    The averages of curvature terms are updated every ``hvp_every`` steps with factor
    beta^hvp_every, so both kinds forget at the same rate per step.
    """

    KEYS = ("trace_sigma", "g_squared", "trace_h_sigma", "g_h_g")

    def __init__(self, beta: float) -> None:
        self.beta = beta
        self.sums = dict.fromkeys(self.KEYS, 0.0)
        self.weights = dict.fromkeys(self.KEYS, 0.0)

    def update(self, estimates: dict[str, float], beta: float | None = None) -> None:
        b = self.beta if beta is None else beta
        for k, v in estimates.items():
            self.sums[k] = b * self.sums[k] + (1 - b) * v
            self.weights[k] = b * self.weights[k] + (1 - b)

    def average(self, key: str) -> float:
        """The bias-corrected running average (nan before the first update)."""
        w = self.weights[key]
        return self.sums[key] / w if w > 0 else math.nan

    def ratio(self, num: str, den: str) -> float:
        """average(num) / average(den); nan where the denominator's average is not positive."""
        d = self.average(den)
        return self.average(num) / d if d > 0 else math.nan

    @property
    def b_simple(self) -> float:
        return self.ratio("trace_sigma", "g_squared")

    @property
    def b_crit(self) -> float:
        return self.ratio("trace_h_sigma", "g_h_g")


def _dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
    total = sum((x.double() * y.double()).sum() for x, y in zip(a, b, strict=True))
    if not isinstance(total, torch.Tensor):  # sum() of nothing is the int 0
        raise ValueError("a dot product of no tensors: the model has no trainable parameters")
    return total


def half_batch_estimates(model, loss_fn, x, y, curvature: bool = False) -> dict[str, float]:
    """Backpropagate the minibatch (x, y) in two halves and leave its mean-loss gradient in each
    parameter's ``.grad`` (accumulated, as ``loss.backward()`` would); return the per-step
    estimates ``trace_sigma`` = |g1 - g2|^2 / (1/n1 + 1/n2) and ``g_squared`` = g1'g2 (unbiased
    for tr(Sigma) and |G|^2), and with ``curvature`` ``trace_h_sigma`` = d'Hd / (1/n1 + 1/n2) and
    ``g_h_g`` = g1'Hg2 with H the Hessian of the minibatch's mean loss (two double backwards)."""
    b = x.shape[0]
    if b < 2:
        raise ValueError(f"two half batches need B >= 2, got {b}")
    params = [p for p in model.parameters() if p.requires_grad]
    n1 = b // 2
    n2 = b - n1
    g1 = torch.autograd.grad(loss_fn(model(x[:n1]), y[:n1]), params, create_graph=curvature)
    g2 = torch.autograd.grad(loss_fn(model(x[n1:]), y[n1:]), params, create_graph=curvature)
    w = 1.0 / n1 + 1.0 / n2
    d = [a.detach() - c.detach() for a, c in zip(g1, g2, strict=True)]
    out = {"trace_sigma": float(_dot(d, d)) / w, "g_squared": float(_dot([a.detach() for a in g1],
                                                                         [c.detach() for c in g2]))}  # fmt: skip
    if curvature:
        g = [(n1 * a + n2 * c) / b for a, c in zip(g1, g2, strict=True)]  # the minibatch gradient, with graph
        h1 = torch.autograd.grad(_dot(g, [a.detach() for a in g1]), params, retain_graph=True)
        h2 = torch.autograd.grad(_dot(g, [c.detach() for c in g2]), params)
        hd = [a - c for a, c in zip(h1, h2, strict=True)]
        out["trace_h_sigma"] = float(_dot(d, hd)) / w
        out["g_h_g"] = float(_dot([a.detach() for a in g1], h2))
    for p, a, c in zip(params, g1, g2, strict=True):
        grad = (n1 * a.detach() + n2 * c.detach()) / b
        p.grad = grad if p.grad is None else p.grad + grad
    return out


class ScheduleTrainer(Trainer):
    """A ``protocol.Trainer`` whose step t uses B_t and lr_t of ``rule`` (module docstring).

    ``spec.batch_size`` is the start batch (``ScheduleRule.start_batch``) and ``spec.lr`` the
    base learning rate; ``multiplier`` is c of the adaptive rules (B of the constant rule, B_0 of
    the geometric one otherwise). ``examples[t]`` is the cumulative number of examples after t
    steps; ``batch_trace`` and ``lr_trace`` hold B_t and lr_t.
    """

    def __init__(self, spec: RunSpec, rule: ScheduleRule, multiplier: float, probe=probe_trainer) -> None:
        if not (math.isfinite(multiplier) and multiplier > 0):
            raise ValueError(f"the multiplier (c, B or B_0) must be finite and > 0, got {multiplier!r}")
        super().__init__(spec)
        self.rule, self.multiplier = rule, float(multiplier)
        self.estimator = NoiseScaleEstimator(rule.beta) if rule.adaptive else None
        self.examples = [0]
        self.batch_trace: list[int] = []
        self.lr_trace: list[float] = []
        self._batch = spec.batch_size
        self._probe, self._probe_lr, self.probes = probe, math.nan, 0  # the probe rule's lr*_T(B_t), probes made

    def next_batch(self) -> int:
        t, r = len(self.batch_trace), self.rule
        if r.batch == "constant":
            return self.spec.batch_size
        if r.batch == "geometric":
            return r.clip(self.multiplier * r.batch_factor ** (t // r.interval))
        if r.batch == "probe":
            if t % r.interval == 0:
                self._probe_step(t)
            return self._batch
        if t >= r.warmup:
            if self.estimator is None:  # made for every adaptive rule: simple and critical are
                raise RuntimeError(f"batch rule {r.batch!r} runs without its noise-scale estimator")
            est = self.estimator.b_simple if r.batch == "simple" else self.estimator.b_crit
            if est > 0:  # nan or not positive: B_t stays where it was
                self._batch = r.clip(self.multiplier * est)
        return self._batch

    def _probe_step(self, t: int) -> None:
        """The probe rule at step t: (B_t, lr*_T(B_t)) from the probe at the current state
        (``probe_schedule``); where it finds no finite lr*_T, the last setting stays."""
        r = self.rule
        lr0 = self._probe_lr if math.isfinite(self._probe_lr) else PROBE_LR0
        lrs = self._probe(self, probe_window(self._batch, r.batch_min, r.batch_max), self.spec.seed * 1_000_003 + t,
                          lr0)  # fmt: skip
        self.probes += 1
        try:
            self._batch, self._probe_lr = probe_setting(lrs, r.clip, self.multiplier, 1.0)
        except ValueError:
            if not math.isfinite(self._probe_lr):
                raise

    def step(self) -> None:
        t = len(self.batch_trace)
        b, lr = self.next_batch(), self.rule.lr_at(t, self.spec.lr)
        if self.rule.batch == "probe":
            lr = self.spec.lr * self._probe_lr
        x, y = self.data.sample(self.gen, b)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        if self.estimator is None:
            self.loss_fn(self.model(x), y).backward()
        else:
            curvature = self.rule.batch == "critical" and t % self.rule.hvp_every == 0
            est = half_batch_estimates(self.model, self.loss_fn, x, y, curvature)
            self.estimator.update({k: est[k] for k in ("trace_sigma", "g_squared")})
            if curvature:
                self.estimator.update({k: est[k] for k in ("trace_h_sigma", "g_h_g")},
                                      self.rule.beta**self.rule.hvp_every)  # fmt: skip
        self.optimizer.step()
        self.batch_trace.append(b)
        self.lr_trace.append(lr)
        self.examples.append(self.examples[-1] + b)

    def examples_at(self, steps: float) -> float:
        """Cumulative examples after ``steps`` (fractional: linear between steps); nan for nan."""
        if not math.isfinite(steps):
            return math.nan
        return float(np.interp(steps, np.arange(len(self.examples)), np.asarray(self.examples, dtype=np.float64)))


def run_task(params: dict) -> list[dict]:
    """One (optimizer, variant, lr, seed) run: one row per target (``surgesim.schedules.ROW_COLUMNS``,
    plus ``TRACE_COLUMNS`` in the first row for seed 0); a pure function of ``params``
    (``ScheduleExperiment.tasks``)."""
    spec = RunSpec.from_params(params["spec"])
    rule = ScheduleRule(**params["rule"])
    trainer = ScheduleTrainer(spec, rule, float(params["batch"]))
    records, _ = follow_targets(
        trainer.step, trainer.loss, spec.targets, further_steps=0, max_steps=spec.max_steps,
        eval_rel=spec.eval_rel, dense_steps=spec.dense_steps, diverge_factor=spec.diverge_factor,
        stall_factor=spec.stall_factor,
    )  # fmt: skip
    rows: list[dict[str, Any]] = []
    for r in records:
        ok = math.isfinite(r.steps)
        row = {
            "schedule": params["schedule"], "variant": params["variant"], "optimizer": params["optimizer"],
            "target_loss": r.target_loss, "seed": spec.seed, "steps": float(r.steps) if ok else None,
            "examples": trainer.examples_at(r.steps) if ok else None, "batch_size": float(params["batch"]),
            "lr": spec.lr,
        }  # fmt: skip
        if spec.seed == 0 and not rows:  # once per run: every target's row would repeat it
            row.update(batch_trace=list(trainer.batch_trace), lr_trace=list(trainer.lr_trace))
        rows.append(row)
    return rows


def csv_rows(rows: Sequence[dict]) -> list[dict]:
    """``run_task``'s rows without the traces: the rows of schedules.csv."""
    return [{k: v for k, v in r.items() if k not in TRACE_COLUMNS} for r in rows]


def default_variants(
    schedules: Sequence[str],
    lrs: Sequence[float],
    batch_sizes: Sequence[int],
    multipliers: Sequence[float] = (1.0, 2.0),
    geometric: Sequence[tuple[int, int, float]] = ((8, 20, 1.0),),
    batch_start: int = 8,
    warmup: int = 5,
    beta: float = 0.98,
    hvp_every: int = 4,
    probe_multipliers: Sequence[float] = (1.0,),
    probe_every: int = 25,
) -> tuple[Variant, ...]:
    """The network's variants: constant at each of ``batch_sizes``, online and critical at c in
    ``multipliers``, geometric at each (B_0, K, gamma) with the batch doubled every K steps; every
    one over the learning rates ``lrs``; probe (the Adam schedule) at c in ``multipliers`` with a
    probe every ``probe_every`` steps, over the multipliers k in ``probe_multipliers`` of its lr.
    Adaptive, geometric and probe rules clip B_t to [2, max B]."""
    known = ("constant", "online", "critical", "geometric", "probe")
    for s in schedules:
        if s not in known:
            raise ValueError(f"unknown schedule {s!r} on a network; choose from {', '.join(known)}")
    for c in multipliers:
        if not (math.isfinite(c) and c > 0):
            raise ValueError(f"multipliers c must be finite and > 0, got {c!r}")
    if not batch_sizes or any(int(b) != b or b < 1 for b in batch_sizes):
        raise ValueError(f"batch sizes must be integers >= 1, got {list(batch_sizes)}")
    hi = int(max(batch_sizes))
    lrs = tuple(float(x) for x in lrs)
    out: list[Variant] = []
    if "constant" in schedules:
        out += [
            Variant("constant", f"B={b}", ScheduleRule(), float(b), lrs) for b in sorted(int(b) for b in batch_sizes)
        ]
    for name, batch in (("online", "simple"), ("critical", "critical")):
        if name in schedules:
            rule = ScheduleRule(batch, batch_min=2, batch_max=max(hi, 2), batch_start=batch_start, warmup=warmup,
                                beta=beta, hvp_every=hvp_every)  # fmt: skip
            out += [Variant(name, f"c={c:g}", rule, float(c), lrs) for c in multipliers]
    if "geometric" in schedules:
        for b0, k, gamma in geometric:
            rule = ScheduleRule("geometric", interval=int(k), batch_factor=2.0, lr_factor=float(gamma),
                                batch_min=2, batch_max=max(hi, 2))  # fmt: skip
            out.append(Variant("geometric", f"B0={b0},K={k},gamma={gamma:.2g}", rule, float(b0), lrs))
    if "probe" in schedules:
        rule = ScheduleRule("probe", interval=int(probe_every), batch_min=2, batch_max=max(hi, 2),
                            batch_start=batch_start)  # fmt: skip
        ks = tuple(float(x) for x in probe_multipliers)
        out += [Variant("probe", f"c={c:g}", rule, float(c), ks) for c in multipliers]
    return tuple(out)


@dataclass(frozen=True, eq=False)
class ScheduleExperiment:
    """Schedules x optimizers x targets on a network (module docstring): the object that
    ``surgesim.schedules.choose`` and ``summarize`` read (``optimizers``, ``variants``, ``targets``,
    ``seeds``). ``base`` holds the workload, data and evaluation protocol (its lr, batch size,
    seed, betas and eps are set per task; its targets are the absolute target losses)."""

    base: RunSpec
    optimizers: tuple[Optimizer, ...]
    variants: tuple[tuple[Variant, ...], ...]
    seeds: int = 3

    def __post_init__(self) -> None:
        if not isinstance(self.base, RunSpec):
            raise TypeError(f"base must be a RunSpec, got {type(self.base).__name__}")
        if len(self.variants) != len(self.optimizers) or not self.optimizers:
            raise ValueError("need one variant tuple per optimizer, and at least one optimizer")
        if isinstance(self.seeds, bool) or int(self.seeds) != self.seeds or self.seeds < 1:
            raise ValueError(f"seeds={self.seeds!r} must be an integer >= 1")
        if len(set(self.base.targets)) != len(self.base.targets):
            raise ValueError(f"targets must be distinct, got {self.base.targets}")
        for vs in self.variants:
            for v in vs:
                if not isinstance(v.rule, ScheduleRule) or SCHEDULE_OF_RULE[v.rule.batch] != v.schedule:
                    raise ValueError(f"variant {v.schedule} {v.label}: needs a ScheduleRule of its schedule")
        targets = tuple(sorted(self.base.targets, reverse=True))
        object.__setattr__(self, "base", dataclasses.replace(self.base, targets=targets, further_steps=0))

    @property
    def targets(self) -> tuple[float, ...]:
        """The target losses, from the highest."""
        return self.base.targets

    def tasks(self) -> list[dict]:
        """One task per (optimizer, variant, lr, seed), seeds 0 .. seeds - 1."""
        out = []
        for o, vs in zip(self.optimizers, self.variants, strict=True):
            for v in vs:
                for lr in v.lrs:
                    for s in range(self.seeds):
                        spec = dataclasses.replace(self.base, lr=float(lr), batch_size=v.rule.start_batch(v.batch),
                                                   seed=s, beta1=o.beta1, beta2=o.beta2, eps=o.eps)  # fmt: skip
                        out.append({"optimizer": o.name, "schedule": v.schedule, "variant": v.label,
                                    "batch": v.batch, "rule": dataclasses.asdict(v.rule),
                                    "spec": spec.to_params()})  # fmt: skip
        return out


def traces(experiment: ScheduleExperiment, rows: Sequence[dict], chosen) -> list[dict]:
    """B_t and lr_t along each variant at the lr chosen for the lowest target, seed 0, from
    ``run_task``'s rows (the format of ``surgesim.schedules.schedule_traces``)."""
    target = experiment.targets[-1]
    out = []
    for o, vs in zip(experiment.optimizers, experiment.variants, strict=True):
        for v in vs:
            lr = chosen[(o.name, v.schedule, v.label, target)]
            row = next((r for r in rows if r["optimizer"] == o.name and r["schedule"] == v.schedule
                        and r["variant"] == v.label and r["lr"] == lr and r["seed"] == 0
                        and "batch_trace" in r), None)  # fmt: skip
            if lr is None or row is None:
                continue
            out.append({"optimizer": o.name, "schedule": v.schedule, "variant": v.label,
                        "batch": np.asarray(row["batch_trace"], dtype=np.float64),
                        "lr": np.asarray(row["lr_trace"], dtype=np.float64)})  # fmt: skip
    return out
