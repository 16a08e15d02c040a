"""The probe's sweep tasks (the estimators: ``probe_estimators``; the states:
``probe_state``, ``probe_checkpoints``, ``user_model``): one task per state and batch size plus
one per state for the batch-size scales, that ``sims.probe``, ``sims.workloads`` and
``sims.validate`` run through ``surgesim.sweep`` (so an interrupted probe resumes), and
``probe_model``, the same measurements on any model from Python.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..problem import QuadraticProblem
from ..progress import part
from . import protocol
from .probe_checkpoints import load_checkpoint, reference_checkpoints, workload_state
from .probe_estimators import gaussian_batch_size, independent_curve, peak_batch_size, probe_batch_size
from .probe_multistep import multistep_batch_size
from .probe_state import UPDATES, AdamState, ProbeState, model_state
from .probe_statistics import state_statistics
from .quadratic import quadratic_state
from .user_model import call_model_function, file_digest, load_model_function

__all__ = [
    "FULL_GRADIENT_EXAMPLES",
    "DEFAULT_BATCH_SIZES",
    "load_checkpoint",
    "reference_checkpoints",
    "workload_state",
    "probe_task",
    "problem_task",
    "task_list",
    "load_model_function",
    "call_model_function",
    "check_model",
    "file_digest",
    "model_task",
    "curve_summary",
    "ProbeResult",
    "probe_model",
]

FULL_GRADIENT_EXAMPLES = 16384  # G exact on data sets up to this size, else a sample (error propagated)
DEFAULT_BATCH_SIZES = (1, 4, 16, 64, 256, 1024)  # the batch sizes probed by default


_STATE: dict = {}  # the last state built in this process: a sweep's tasks come state by state


def _cached(key: str, build: Callable[[], ProbeState], stats_options: str):
    """(state, statistics) for ``key``, built once per process while tasks share it."""
    full = (key, stats_options)
    if _STATE.get("key") != full:
        _STATE.clear()
        state = build()
        _STATE.update(key=full, value=(state, state_statistics(state, **json.loads(stats_options))))
    return _STATE["value"]


def _curve_row(state: ProbeState, stats, params: dict) -> dict:
    """One batch size: the probe, the Gaussian model and eq 9 from measured statistics. Optional
    parameters: ``gaussian`` False skips the Gaussian model (its fields None; most of a sign
    task's time at a network state); ``loss_examples`` m > 0 evaluates the multi-step probe's loss
    on the data's fixed sample of m examples, the grid's training loss (``protocol``), instead of
    the full data (``probe_multistep.multistep_batch_size``'s ``loss_sample``)."""
    B, seed = int(params["batch_size"]), int(params["seed"])
    plan = {k: params[k] for k in ("rel_se", "draws")}
    steps = int(params.get("steps", 1))
    t0 = time.perf_counter()
    with part(0.0, 0.8):  # the probe's real minibatches: most of the task's time
        if steps == 1:  # Lemma 1's one-step estimator (eq 6)
            p = probe_batch_size(state, B, update=params["update"], hessian_examples=params["hessian_examples"],
                                 seed=seed, max_draws=params["max_draws"], **plan)  # fmt: skip
            multi = {}
        else:
            m = int(params.get("loss_examples", 0))
            sample = state.data.fixed(m, seed=0) if m else None
            p = multistep_batch_size(state, B, steps=steps, warmup=int(params.get("warmup", 0)), seed=seed,
                                     max_draws=params["max_draws"], loss_sample=sample, **plan)  # fmt: skip
            multi = {"steps": steps, "lr_points_probe": p.lr_points, "gradient_examples_probe": p.gradient_examples}
    t1 = time.perf_counter()
    with part(0.8, 1.0):
        g = (gaussian_batch_size(state, stats, B, seed=seed, max_draws=params["max_draws"], **plan)
             if params.get("gaussian", True) else None)  # fmt: skip
    t2 = time.perf_counter()
    ind = independent_curve(state, stats, [B])[0]
    return {
        "batch_size": B, "lr_probe": p.lr, "lr_probe_se": p.lr_se, "dl_probe": p.loss_improvement,
        "dl_probe_se": p.loss_improvement_se, "draws_probe": p.draws, "hessian_draws_probe": p.hessian_draws,
        "converged_probe": p.converged, "lr_gaussian": g and g.lr, "lr_gaussian_se": g and g.lr_se,
        "dl_gaussian": g and g.loss_improvement, "hessian_draws_gaussian": g and g.hessian_draws,
        "lr_independent": ind.lr, "dl_independent": ind.loss_improvement,
        "seconds_probe": t1 - t0, "seconds_gaussian": t2 - t1, **multi,
    }  # fmt: skip


def _scales_row(stats) -> dict:
    return {
        "noise_batch_size_eq14": stats.noise_batch_size_eq14,
        "noise_batch_size_eq14_se": stats.noise_batch_size_eq14_se,
        "b_simple": stats.b_simple, "b_simple_se": stats.b_simple_se, "b_crit": stats.b_crit,
        "b_crit_se": stats.b_crit_se, "validity_bound": stats.validity_bound, "hessian_trace": stats.hessian_trace,
        "hessian_trace_se": stats.hessian_trace_se,
    }  # fmt: skip


STATS_KEYS = ("stats_examples", "stats_hessian_examples", "probes", "crit_examples", "seed")


def _stats_options(params: dict) -> str:
    """The statistics' options: their own Hessian sample size (``stats_hessian_examples``, default
    the probe's ``hessian_examples`` in tasks written before it existed)."""
    names = {"stats_examples": "examples", "stats_hessian_examples": "hessian_examples"}
    opts = {**params, "stats_hessian_examples": params.get("stats_hessian_examples", params["hessian_examples"])}
    return json.dumps({names.get(k, k): opts[k] for k in STATS_KEYS}, sort_keys=True)


def _task(params: dict, key: str, build: Callable[[], ProbeState]) -> dict:
    state, stats = _cached(key, build, _stats_options(params))
    if params["batch_size"] == 0:
        return {"batch_size": None, **_scales_row(stats)}
    return _curve_row(state, stats, params)


def probe_task(params: dict) -> dict:
    """A ``surgesim.sweep`` task at a workload checkpoint: ``batch_size`` 0 gives the state's
    batch-size scales (B_simple, B_crit, eq 14), otherwise one row of the three lr*(B) curves."""
    spec = protocol.RunSpec.from_params(params["spec"])

    def build() -> ProbeState:
        return workload_state(params["checkpoint"], spec, params["full_gradient_examples"], params["adam"])

    key = json.dumps([params["checkpoint"], params["spec"], params["full_gradient_examples"], params["adam"]])
    return {"target_loss": params.get("target_loss"), **_task(params, key, build)}


def problem_task(params: dict, problem: QuadraticProblem) -> dict:
    """``probe_task`` on the torch quadratic of ``problem`` (``quadratic.quadratic_state``)."""

    def build() -> ProbeState:
        return quadratic_state(problem, adam=AdamState.zeros(problem.dim, **params["adam"]))

    return _task(params, json.dumps([problem.digest(), params["adam"]]), build)


def task_list(states: Sequence[dict], batch_sizes: Sequence[int], options: dict) -> list[dict]:
    """Sweep tasks: per state (a dict merged into the task), its scales then each batch size."""
    return [{**s, **options, "batch_size": int(b)} for s in states for b in (0, *batch_sizes)]


# -- any model (``sims.probe --model``, ``probe_model``) -----------------------------------------

_BUILT: dict = {}  # the last user model state built by check_model, reused by its tasks in this process


def _model_key(params: dict) -> str:
    return json.dumps([params["model"], params.get("model_sha256"), params["full_gradient_examples"], params["adam"]])


def check_model(params: dict) -> ProbeState:
    """Load ``params['model']`` (``FILE.py:FUNCTION``), check FUNCTION's tuple, the loss and the
    weights, and build the probe's state (ValueError with one line on any fault)."""
    key = _model_key(params)
    if _BUILT.get("key") != key:
        _BUILT.clear()
        model, loss_fn, inputs, targets = call_model_function(load_model_function(params["model"]))
        state = model_state(model, loss_fn, inputs, targets, full_gradient_examples=params["full_gradient_examples"],
                            adam=AdamState.zeros(_dim(model), **params["adam"]))  # fmt: skip
        _BUILT.update(key=key, state=state)
    return _BUILT["state"]


def model_task(params: dict) -> dict:
    """``probe_task`` for the user's model named by ``params['model']`` (``FILE.py:FUNCTION``)."""
    return _task(params, _model_key(params), lambda: check_model(params))


def _dim(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def curve_summary(points: Sequence[dict]) -> dict:
    """Peaks of the three lr*(B) curves (``peak_batch_size``: refined, with a 68% interval),
    the largest relative s.e. of the probe and the seconds spent, from rows of ``_curve_row``."""
    B = [r["batch_size"] for r in points]
    s: dict = {}
    for name in ("probe", "gaussian", "independent"):
        se = [r.get(f"lr_{name}_se") for r in points] if name != "independent" else None
        peak, low, high, interior = peak_batch_size(B, [r[f"lr_{name}"] for r in points], se)
        s[f"peak_batch_size_{name}"] = peak
        s[f"peak_batch_size_{name}_low"] = low
        s[f"peak_batch_size_{name}_high"] = high
        s[f"peak_interior_{name}"] = interior
    s["max_rel_se_probe"] = max(r["lr_probe_se"] / abs(r["lr_probe"]) if r["lr_probe"] else math.inf for r in points)
    s["seconds"] = sum(r["seconds_probe"] + r["seconds_gaussian"] for r in points)
    return s


@dataclass
class ProbeResult:
    """``probe_model``'s answer: ``table`` (one dict per batch size, probe.csv's columns) and
    ``summary`` (summary.json's per-state keys)."""

    table: list[dict]
    summary: dict

    def to_csv(self, path: str | os.PathLike) -> None:
        """Write ``table`` as probe.csv (columns: docs/outputs.md)."""
        import csv

        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(self.table[0]))
            w.writeheader()
            w.writerows(self.table)


def probe_model(
    model: torch.nn.Module,
    loss_fn: Callable,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    *,
    update: str = "sign",
    steps: int = 1,
    warmup: int = 0,
    rel_se: float | None = None,
    draws: int | None = None,
    max_draws: int = 1 << 18,
    seed: int = 0,
    hessian_examples: int = 32,
    stats_examples: int = 256,
    stats_hessian_examples: int = 32,
    probes: int = 8,
    crit_examples: int = 32,
    full_gradient_examples: int = 0,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
) -> ProbeResult:
    """Lemma 1 measured on any model at its current weights (``python -m sims.probe --model``):
    per batch size lr*(B) of the probe, the Gaussian model and eq 9, and the state's batch-size
    scales (B_simple, B_crit, eq 14). ``loss_fn(outputs, targets)`` is the mean loss of a batch;
    inputs and targets hold the data set, the example on the first axis. ``update='adam'`` with
    ``steps`` T > 1: the multi-step probe (``probe.multistep_batch_size``), fresh Adam buffers with
    ``beta1``, ``beta2``, ``eps``. The model is evaluated in eval mode (module docstring of
    ``probe``); its mode is restored afterwards.

    >>> import torch; import torch.nn.functional as F
    >>> net = torch.nn.Linear(3, 2); x = torch.randn(64, 3); y = torch.randint(0, 2, (64,))
    >>> r = probe_model(net, F.cross_entropy, x, y, [1, 4], draws=16, stats_examples=16,
    ...                 stats_hessian_examples=4, hessian_examples=4, probes=2, crit_examples=4)
    >>> [row["batch_size"] for row in r.table], "b_crit" in r.summary
    ([1, 4], True)
    """
    params = _options(update, steps, rel_se, draws, max_draws, seed, hessian_examples, stats_examples,
                      stats_hessian_examples, probes, crit_examples, beta1, beta2, eps)  # fmt: skip
    params["warmup"] = warmup
    model, loss_fn, inputs, targets = call_model_function(lambda: (model, loss_fn, inputs, targets), "probe_model")
    n = inputs.shape[0]
    too_big = [b for b in batch_sizes if int(b) > n]
    if too_big:
        raise ValueError(f"batch size {max(too_big)} is larger than the data set ({n} examples)")
    state = model_state(model, loss_fn, inputs, targets, full_gradient_examples=full_gradient_examples,
                        adam=AdamState.zeros(_dim(model), beta1=beta1, beta2=beta2, eps=eps))  # fmt: skip
    stats = state_statistics(state, **json.loads(_stats_options(params)))
    rows = [_curve_row(state, stats, {**params, "batch_size": int(b)}) for b in sorted(batch_sizes)]
    summary = {**_scales_row(stats), **curve_summary(rows)}
    return ProbeResult(rows, summary)


def _options(update, steps, rel_se, draws, max_draws, seed, hessian_examples, stats_examples,
             stats_hessian_examples, probes, crit_examples, beta1, beta2, eps) -> dict:  # fmt: skip
    """The task options of one probe, checked (ValueError with the bad value)."""
    if update not in UPDATES:
        raise ValueError(f"update must be one of {', '.join(UPDATES)}, got {update!r}")
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps}")
    if steps > 1 and update != "adam":
        raise ValueError("steps > 1 is the multi-step Adam probe: use update='adam'")
    if not (0 <= beta1 < 1 and 0 <= beta2 < 1 and eps >= 0):
        raise ValueError(f"need 0 <= beta1, beta2 < 1 and eps >= 0, got beta1={beta1}, beta2={beta2}, eps={eps}")
    return {
        "update": update, "steps": int(steps), "rel_se": rel_se, "draws": draws, "max_draws": max_draws,
        "seed": seed, "hessian_examples": hessian_examples, "stats_examples": stats_examples,
        "stats_hessian_examples": stats_hessian_examples, "probes": probes, "crit_examples": crit_examples,
        "adam": {"beta1": beta1, "beta2": beta2, "eps": eps},
    }  # fmt: skip
