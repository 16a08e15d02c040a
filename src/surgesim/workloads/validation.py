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
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from . import protocol
from .probe import peak_batch_size

__all__ = ["network_tasks", "predictor_tasks", "measured_states", "NETWORK_PREDICTORS"]


def network_tasks(base: protocol.RunSpec, lrs_by_batch: Mapping[float, Sequence[float]], seeds: int) -> list[dict]:
    """``protocol.run_task`` parameters for every (seed, batch size, learning rate)."""
    return [
        dataclasses.replace(base, lr=float(lr), batch_size=int(b), seed=int(s)).to_params()
        for s in range(seeds)
        for b, lrs in sorted(lrs_by_batch.items())
        for lr in lrs
    ]


def predictor_tasks(
    states: Sequence[dict], batch_sizes: Sequence[int], options: dict, probe_steps: int = 1
) -> list[dict]:
    """``probing.probe_task`` parameters: per state its scales (batch size 0) and the sign probe at
    every batch size, then the Adam probe at every batch size."""
    adam = {**options, "update": "adam", **({"steps": int(probe_steps)} if probe_steps != 1 else {})}
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
