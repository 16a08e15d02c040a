"""``python -m sims.validate`` on real networks: the runs of the protocol (``protocol.run_task``,
one task per (learning rate, batch size, seed), every target from the same run), and the predictors
measured at the reference run's states (its checkpoints at each target, ``probing``).

Predictors at one state (``NETWORK_PREDICTORS``, each ``fn(measured) -> (value, s.e.)``):

- ``b_simple``, ``b_crit``: McCandlish et al.'s tr(Sigma)/|G|^2 and tr(H Sigma)/G'HG from
  per-example gradients and Hessian-vector products (``probe.state_statistics``);
- ``eq14``: the paper's B_noise from the measured per-coordinate statistics (eq 14);
- ``probe_sign``: the peak over B of the probe's one-step optimal learning rate of sign updates
  (real minibatches, exact Hessian-vector products; ``probe.peak_batch_size``, its 68% interval
  turned into an s.e. of log B: (log high - log low) / 2, times the peak);
- ``probe_adam``: the same with Adam updates from the checkpoint's Adam buffers (``update="adam"``;
  with ``probe_steps`` T > 1, T real Adam steps where the probe supports it);
- ``adam_predicted``: the best Adam predictor; on networks, until a dedicated one exists, the
  value of ``probe_adam`` (said in docs/outputs.md).

``NetworkValidation`` runs the whole protocol (the statistics: ``surgesim.validate``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from ..validate import (
    SweepStages,
    TargetValidation,
    ValidationOptions,
    ValidationResult,
    curve_rows,
    load_average,
    minutes,
    refinement,
    validate_rows,
)
from . import probing, protocol
from .probe import peak_batch_size

__all__ = [
    "network_tasks",
    "predictor_tasks",
    "measured_states",
    "NETWORK_PREDICTORS",
    "probe_curve",
    "DataNotFound",
    "DeviceUnavailable",
    "NetworkValidation",
]


def network_tasks(base: protocol.RunSpec, lrs_by_batch: Mapping[float, Sequence[float]], seeds: int) -> list[dict]:
    """``protocol.run_task`` parameters for every (seed, batch size, learning rate)."""
    return [
        dataclasses.replace(base, lr=float(lr), batch_size=int(b), seed=int(s)).to_params()
        for s in range(seeds)
        for b, lrs in sorted(lrs_by_batch.items())
        for lr in lrs
    ]


def predictor_tasks(
    states: Sequence[dict],
    batch_sizes: Sequence[int],
    options: dict,
    probe_steps: int = 1,
    adam_draws: int | None = None,
) -> list[dict]:
    """``probing.probe_task`` parameters: per state its scales (batch size 0) and the sign probe at
    every batch size, then the Adam probe at every batch size (with ``adam_draws`` fixed draws
    where given: the multi-step probe costs draws x lr points x T x B example-gradients)."""
    adam = {**options, "update": "adam", **({"steps": int(probe_steps)} if probe_steps != 1 else {})}
    if adam_draws is not None:
        adam.update(rel_se=None, draws=int(adam_draws))
    sign = {**options, "update": "sign"}
    tasks = []
    for s in states:
        tasks += [{**s, **sign, "batch_size": int(b)} for b in (0, *batch_sizes)]
        tasks += [{**s, **adam, "batch_size": int(b)} for b in batch_sizes]
    return tasks


def measured_states(tasks: Sequence[dict], rows: Sequence[dict]) -> dict[float, dict]:
    """Per target loss: ``scales`` (the batch-size-0 row) and ``sign``/``adam`` curve rows."""
    out: dict[float, dict] = {}
    for task, row in zip(tasks, rows, strict=True):
        m = out.setdefault(float(task["target_loss"]), {"scales": {}, "sign": [], "adam": []})
        if task["batch_size"] == 0:
            m["scales"] = row
        else:
            m[task["update"]].append(row)
    return out


def _peak(curve: list[dict]) -> tuple[float, float]:
    if len(curve) < 3:
        return math.nan, math.nan
    B = [r["batch_size"] for r in curve]
    peak, low, high, interior = peak_batch_size(B, [r["lr_probe"] for r in curve], [r["lr_probe_se"] for r in curve])
    se = peak * (math.log(high) - math.log(low)) / 2 if interior and low > 0 and high > 0 else math.nan
    return peak, se


def _scale(name: str) -> Callable[[dict], tuple[float, float]]:
    def fn(m: dict) -> tuple[float, float]:
        s = m["scales"]
        return _num(s.get(name)), _num(s.get(f"{name}_se"))

    fn.__doc__ = f"``{name}`` and its s.e. from the state's statistics (``probe.state_statistics``)."
    return fn


def _num(x) -> float:
    return math.nan if x is None else float(x)


NETWORK_PREDICTORS: dict[str, Callable[[dict], tuple[float, float]]] = {
    "b_simple": _scale("b_simple"),
    "b_crit": _scale("b_crit"),
    "eq14": _scale("noise_batch_size_eq14"),
    "probe_sign": lambda m: _peak(m["sign"]),
    "probe_adam": lambda m: _peak(m["adam"]),
    # The best Adam predictor of issue 21 replaces this entry when it exists on networks (one line):
    "adam_predicted": lambda m: _peak(m["adam"]),
}
"""Predictors on networks, by name: ``fn(measured state) -> (value, s.e.)`` (module docstring)."""


def probe_curve(m: dict, update: str) -> tuple[np.ndarray, np.ndarray]:
    """(batch sizes, lr*) of one probe curve at a state."""
    rows = sorted(m[update], key=lambda r: r["batch_size"])
    return np.array([r["batch_size"] for r in rows], float), np.array([_num(r["lr_probe"]) for r in rows])


class DataNotFound(ValueError):
    """The workload's data are missing or malformed (the message says which files it expects)."""


class DeviceUnavailable(ValueError):
    """The torch device asked for cannot be used here."""


class NetworkValidation:
    """The protocol on a network workload: Adam's runs (``protocol.run_task``, one per (lr, B,
    seed), every target from the same run) over a coarse grid, then the refinement
    (``surgesim.validate.refinement``); the statistics per target (``validate_rows``); the
    predictors (``NETWORK_PREDICTORS``) and the probe's curves at the reference run's checkpoints
    (the grid's middle lr, ``options.reference_batch_size``, seed 0).

    Construction checks the device and loads the data (``DataNotFound``, ``DeviceUnavailable``,
    ValueError for a batch size larger than the data set) before any training; ``run`` does the
    work, resumable through the stores in the output directory."""

    def __init__(self, options: ValidationOptions) -> None:
        o = options
        if o.device == "cuda" and not torch.cuda.is_available():
            raise DeviceUnavailable("no CUDA device is usable here")
        torch.set_num_threads(o.threads or torch.get_num_threads())  # this process: the timing and the probe
        self.started = time.perf_counter()
        self.options = o
        mid = lambda xs: sorted(xs)[(len(xs) - 1) // 2]  # noqa: E731
        self.base = protocol.RunSpec(
            workload=o.workload, lr=mid(o.lrs), batch_size=o.reference_batch_size or mid(o.batch_sizes), seed=0,
            targets=o.targets,
            data_dir=o.data_dir, beta1=o.beta1, beta2=o.beta2, eps=o.eps, further_steps=o.further_steps,
            max_steps=o.max_steps, eval_examples=o.eval_examples, device=o.device, threads=o.threads,
            context=64 if o.workload == "gpt" else 128,
        )  # fmt: skip
        try:
            self.data = protocol.load_data(self.base)  # a missing or malformed dataset fails here
        except FileNotFoundError as exc:
            raise DataNotFound(str(exc)) from None
        too_big = [b for b in (*o.batch_sizes, *o.probe_batch_sizes, self.base.batch_size) if b > self.data.n]
        if too_big:
            raise ValueError(f"batch size {max(too_big)} is larger than the data set ({self.data.n} examples)")

    def run(
        self, store: Callable[[str], Path], *, connect_timeout: float | None = None,
        say: Callable[[str], None] | None = None,
    ) -> ValidationResult:  # fmt: skip
        """Run the protocol with its stores and checkpoints at ``store(NAME)`` (``coarse.sqlite``,
        ``refine.sqlite``, ``probe.sqlite``, ``checkpoints``); ``say`` receives the time estimate,
        printed before the grid."""
        o, base, lrs = self.options, self.base, self.options.lrs
        # The estimate first: a per-B step timing and the reference run (which also checkpoints the
        # predictors' states at each target).
        step_s, eval_s = protocol.measure_step_seconds(base, o.batch_sizes, steps=2)
        t0 = time.perf_counter()
        reached = probing.reference_checkpoints(base, store("checkpoints"))
        ref_s = time.perf_counter() - t0
        steps_ref = max((r["steps"] for r in reached), default=None)
        est, upper = protocol.estimate_grid_seconds(base, step_s, eval_s, lrs, o.seeds, steps_ref)
        if say is not None:
            say(self._estimate(ref_s, est, upper))
        stages = SweepStages(protocol.run_task, {"fn": "surgesim.workloads.protocol.run_task"}, store,
                             scheduler=o.scheduler, workers=o.workers, connect_timeout=connect_timeout,
                             quiet=o.quiet)  # fmt: skip
        rows = stages(network_tasks(base, {b: lrs for b in o.batch_sizes}, o.seeds), "coarse")
        extra = refinement(rows, o.targets, o.refine_points) if o.refine_points else {}
        rows = rows + stages(network_tasks(base, extra, o.seeds), "refine")
        results = validate_rows(rows, o.targets, replicates=o.replicates, seed=o.seed, top=o.top)
        measured, curves = self._predictors(reached, results, store) if o.predictors and reached else ({}, [])
        context = {"workload": o.workload, "data": o.data_dir or "demo", "device": o.device,
                   "reference": {"batch_size": base.batch_size, "lr": base.lr, "seed": 0,
                                 "steps": {f"{r['target_loss']:g}": r["steps"] for r in reached}},
                   "coarse_lrs": list(lrs)}  # fmt: skip
        return ValidationResult(o, rows, results, measured, curves, context, time.perf_counter() - self.started)

    def _estimate(self, ref_s: float, est: float, upper: float) -> str:
        """The line printed before the grid: its size, the reference run's time and the estimate."""
        o, lrs = self.options, self.options.lrs
        workers = 1 if o.scheduler else o.workers
        refine = 1 + (2 * o.refine_points * len(o.targets)) / len(lrs) * 0.5 if o.refine_points else 1.0
        return (f"{o.workload} on {o.data_dir or 'demo data'}, Adam({o.beta1:g}, {o.beta2:g}) on "
                f"{o.device}: {len(o.batch_sizes)} batch sizes x {len(lrs)} coarse lrs x {o.seeds} seeds, "
                f"refined by {o.refine_points} per side; targets {', '.join(f'{t:g}' for t in o.targets)}; "
                f"reference run {ref_s:.0f} s; estimated {minutes(est * refine / workers)} for the runs on "
                f"{workers} worker(s) (at most {minutes(upper * refine / workers)}; "
                f"load {load_average():.1f})")  # fmt: skip

    def _probe_options(self) -> dict:
        """The probe's options at the reference states (``probing.probe_task``)."""
        o, n = self.options, self.data.n
        options = {
            "rel_se": o.probe_rel_se, "draws": o.probe_draws, "max_draws": 1 << 16, "seed": 0,
            "hessian_examples": min(32, n), "stats_examples": min(256, n), "probes": 8,
            "crit_examples": min(32, n), "adam": {"beta1": o.beta1, "beta2": o.beta2, "eps": o.eps},
            "spec": self.base.to_params(), "full_gradient_examples": o.probe_gradient_examples,
            # The predictors only: no Gaussian-model comparison; the multi-step probe's loss is the
            # grid's training loss (its fixed sample of eval_examples), not the full data's.
            "gaussian": False, "loss_examples": o.eval_examples,
        }  # fmt: skip
        if o.quick:
            # G exact where the data set is small (the CNN demo: no sampling-error term, whose
            # per-example directional derivatives cost most of a probe task), else a small sample.
            full = n if n <= probing.FULL_GRADIENT_EXAMPLES else 64
            options.update(stats_examples=min(32, n), hessian_examples=4, probes=2, crit_examples=4,
                           full_gradient_examples=full)  # fmt: skip
        return options

    def _predictors(
        self, reached: list[dict], results: Sequence[TargetValidation], store: Callable[[str], Path]
    ) -> tuple[dict[float, dict[str, tuple[float, float]]], list[dict]]:
        """The predictors per target and the probe curves (curves.csv rows), from one resumable
        sweep of probe tasks (``probe.sqlite``) at the reference run's checkpoints."""
        from ..progress import progress_bar
        from ..sweep import run_sweep

        o = self.options
        states = [{"checkpoint": str(os.path.abspath(r["checkpoint"])), "target_loss": r["target_loss"]}
                  for r in reached]  # fmt: skip
        tasks = predictor_tasks(states, o.probe_batch_sizes, self._probe_options(), o.probe_steps, o.probe_adam_draws)
        with progress_bar(quiet=o.quiet, desc="probe") as bar:
            prows = run_sweep(probing.probe_task, tasks, params={"fn": "surgesim.workloads.probing.probe_task"},
                              store=store("probe.sqlite"), workers=1 if o.scheduler else o.workers,
                              progress=bar)  # fmt: skip
        measured, curves = {}, []
        for t, m in measured_states(tasks, prows).items():
            measured[t] = {name: fn(m) for name, fn in NETWORK_PREDICTORS.items()}
            res = next((r for r in results if r.target_loss == t), None)
            for update in ("sign", "adam"):
                B, lr = probe_curve(m, update)
                if res is not None and B.size:
                    curves += curve_rows(t, f"probe_{update}", B, lr, res)
        return measured, curves
