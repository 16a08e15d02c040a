"""The probe (``probe.py``) on a training run: checkpoints of the reference run at each target
loss, probe states rebuilt from checkpoints, and the sweep tasks that ``sims.probe`` and
``sims.workloads`` run (one per state and batch size, plus one per state for the batch-size
scales), so an interrupted probe resumes through ``surgesim.sweep``.

Checkpoints are ``protocol.save_checkpoint``'s; ``load_checkpoint`` also takes a plain
state_dict or a dict with ``model`` (and optionally Adam's ``optimizer``) saved by other code.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..problem import QuadraticProblem
from ..progress import part
from . import protocol
from .probe import (
    UPDATES,
    AdamState,
    ProbeState,
    full_gradient,
    gaussian_batch_size,
    independent_curve,
    model_state,
    multistep_batch_size,
    peak_batch_size,
    probe_batch_size,
    state_statistics,
)
from .quadratic import quadratic_state

FULL_GRADIENT_EXAMPLES = 16384  # G exact on data sets up to this size, else a sample (error propagated)

__all__ = [
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


def load_checkpoint(path: str | os.PathLike, spec: protocol.RunSpec) -> tuple[torch.nn.Module, AdamState | None, dict]:
    """(model of ``spec``'s workload with the checkpoint's weights, Adam state or None, metadata).

    Raises ValueError naming the file when it is unreadable or does not match the model.
    """
    with open(path, "rb") as f:  # FileNotFoundError as it is
        head = f.read(4)
    if not head:
        raise ValueError(f"checkpoint {path} is an empty file, not a PyTorch checkpoint (torch.save)")
    if head != b"PK\x03\x04" and head[:1] != b"\x80":  # torch.save's zip format, or the legacy pickle
        raise ValueError(f"checkpoint {path} is not a PyTorch checkpoint (torch.save): it starts with {head!r}")
    try:
        ckpt = torch.load(path, map_location=spec.device, weights_only=True)
    except Exception as exc:
        lines = str(exc).strip().splitlines()
        detail = lines[0] if lines else type(exc).__name__
        raise ValueError(f"cannot read checkpoint {path} (a damaged or truncated file?): {detail}") from None
    if not isinstance(ckpt, dict):
        raise ValueError(f"checkpoint {path} holds a {type(ckpt).__name__}, not a state_dict")
    state_dict = ckpt.get("model", ckpt)
    model = protocol.build_model(spec)
    try:
        model.load_state_dict(state_dict)
    except (RuntimeError, TypeError, AttributeError) as exc:
        detail = " ".join(str(exc).split())[:300]
        raise ValueError(f"checkpoint {path} does not match the {spec.workload} model: {detail}") from None
    adam = _adam_state(ckpt.get("optimizer"), model, spec, path) if "model" in ckpt else None
    meta = {k: ckpt.get(k) for k in ("target_loss", "steps", "loss")}
    return model, adam, meta


def _adam_state(sd, model: torch.nn.Module, spec: protocol.RunSpec, path) -> AdamState | None:
    if not sd:
        return None
    try:
        params = [p for p in model.parameters() if p.requires_grad]
        group = sd["param_groups"][0]
        states = [sd["state"].get(i, sd["state"].get(str(i))) for i in range(len(params))]
        if any(s is None or "exp_avg" not in s for s in states):  # never stepped
            return None
        flat = lambda key: torch.cat([s[key].reshape(-1).to(torch.float64) for s in states])  # noqa: E731
        beta1, beta2 = group["betas"]
        return AdamState(flat("exp_avg"), flat("exp_avg_sq"), int(float(states[0]["step"])), float(beta1),
                         float(beta2), float(group["eps"]))  # fmt: skip
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"checkpoint {path}: the optimizer state is not Adam's for this model ({exc})") from None


def reference_checkpoints(
    spec: protocol.RunSpec, directory: Path, say: Callable[[str], None] = lambda s: None
) -> list[dict]:
    """Train ``spec`` (the reference run) and checkpoint it at the first evaluation reaching each
    target loss, into ``directory/target_<loss>.pt``; a target whose checkpoint exists is not
    trained for again (a rerun resumes). Returns, per reached target, ``target_loss``, ``steps``,
    ``loss`` and ``checkpoint`` (path); targets not reached within ``max_steps`` are left out."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {t: protocol.checkpoint_path(directory, t) for t in spec.targets}
    if not all(p.exists() for p in paths.values()):
        trainer = protocol.Trainer(spec)
        start = time.perf_counter()

        def save(r: protocol.TargetRecord) -> None:
            protocol.save_checkpoint(paths[r.target_loss], trainer, r)
            say(f"reference run reached loss {r.target_loss:g} at step {r.crossing_step} "
                f"({time.perf_counter() - start:.0f} s)")  # fmt: skip

        protocol.follow_targets(
            trainer.step, trainer.loss, spec.targets, further_steps=0, max_steps=spec.max_steps,
            eval_rel=spec.eval_rel, dense_steps=spec.dense_steps, diverge_factor=spec.diverge_factor,
            stall_factor=spec.stall_factor, on_cross=save,
        )  # fmt: skip
    out = []
    for t, p in paths.items():
        if p.exists():
            meta = torch.load(p, weights_only=True, map_location="cpu")
            out.append({"target_loss": t, "steps": meta["steps"], "loss": meta["loss"], "checkpoint": str(p)})
    return out


def workload_state(
    checkpoint: str, spec: protocol.RunSpec, full_gradient_examples: int = 0, adam: dict | None = None
) -> ProbeState:
    """The probe's state at a checkpoint of ``spec``'s workload: its data, G over the whole data
    set (``full_gradient_examples`` 0 or at least its size) or a uniform sample of that many
    examples (error propagated), and Adam's buffers from the checkpoint (else zeros with the
    hyper-parameters ``adam``)."""
    model, adam_state, _ = load_checkpoint(checkpoint, spec)
    data = protocol.load_data(spec)
    G, error = full_gradient(model, data.loss, data, min(full_gradient_examples or data.n, data.n))
    if adam_state is None:
        adam_state = AdamState.zeros(G.numel(), **(adam or {}))
    return ProbeState(model, data.loss, data, G, gradient_error=error, adam=adam_state)


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
    """One batch size: the probe, the Gaussian model and eq 9 from measured statistics."""
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
            p = multistep_batch_size(state, B, steps=steps, warmup=int(params.get("warmup", 0)), seed=seed,
                                     max_draws=params["max_draws"], **plan)  # fmt: skip
            multi = {"steps": steps, "lr_points_probe": p.lr_points, "gradient_examples_probe": p.gradient_examples}
    t1 = time.perf_counter()
    with part(0.8, 1.0):
        g = gaussian_batch_size(state, stats, B, seed=seed, max_draws=params["max_draws"], **plan)
    t2 = time.perf_counter()
    ind = independent_curve(state, stats, [B])[0]
    return {
        "batch_size": B, "lr_probe": p.lr, "lr_probe_se": p.lr_se, "dl_probe": p.loss_improvement,
        "dl_probe_se": p.loss_improvement_se, "draws_probe": p.draws, "hessian_draws_probe": p.hessian_draws,
        "converged_probe": p.converged, "lr_gaussian": g.lr, "lr_gaussian_se": g.lr_se,
        "dl_gaussian": g.loss_improvement, "hessian_draws_gaussian": g.hessian_draws,
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


def load_model_function(spec: str) -> Callable[[], tuple]:
    """The function named by ``FILE.py:FUNCTION`` or ``package.module:FUNCTION``. Raises ValueError
    (one line, naming the file) when the file is missing, fails to import, or lacks FUNCTION."""
    import importlib
    import importlib.util

    where, sep, name = str(spec).rpartition(":")
    if not sep or not where or not name.isidentifier():
        raise ValueError(f"--model must be FILE.py:FUNCTION or package.module:FUNCTION, got {spec!r}")
    try:
        if where.endswith(".py") or os.sep in where or "/" in where:
            path = Path(where)
            if not path.is_file():
                raise ValueError(f"no such file: {where}")
            mod_spec = importlib.util.spec_from_file_location(f"_surgesim_model_{path.stem}", path)
            module = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
    except ValueError:
        raise
    except BaseException as exc:  # the user's file raised while importing: say so in one line
        if isinstance(exc, KeyboardInterrupt):
            raise
        detail = " ".join(str(exc).split())[:200]
        raise ValueError(f"cannot import {where}: {type(exc).__name__}: {detail}") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ValueError(f"{where} has no function {name}")
    return fn


def call_model_function(fn: Callable[[], tuple], what: str = "the model function") -> tuple:
    """FUNCTION() checked: ``(model, loss_fn, inputs, targets)`` with an nn.Module, a callable and
    two tensors of the same length (first axis: the example). Raises ValueError otherwise."""
    try:
        out = fn()
    except Exception as exc:
        detail = " ".join(str(exc).split())[:200]
        raise ValueError(f"{what} raised {type(exc).__name__}: {detail}") from None
    if not isinstance(out, tuple | list) or len(out) != 4:
        got = f"a {len(out)}-tuple" if isinstance(out, tuple | list) else f"a {type(out).__name__}"
        raise ValueError(f"{what} must return (model, loss_fn, inputs, targets), got {got}")
    model, loss_fn, inputs, targets = out
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"{what}: the model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise ValueError(f"{what}: loss_fn must be callable, got {type(loss_fn).__name__}")
    for label, t in (("inputs", inputs), ("targets", targets)):
        if not isinstance(t, torch.Tensor) or t.dim() < 1:
            raise ValueError(f"{what}: {label} must be a tensor with the example on the first axis")
    if inputs.shape[0] != targets.shape[0]:
        raise ValueError(f"{what}: inputs and targets have different lengths ({inputs.shape[0]} and "
                         f"{targets.shape[0]} examples)")  # fmt: skip
    if inputs.shape[0] < 8:
        raise ValueError(f"{what}: {inputs.shape[0]} examples are too few to probe (at least 8)")
    return model, loss_fn, inputs, targets


def file_digest(spec: str) -> str:
    """sha256 of the file of a ``FILE.py:FUNCTION`` spec ('' for a module path): a changed file
    does not resume from the store's old rows."""
    import hashlib

    where = str(spec).rpartition(":")[0]
    path = Path(where)
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""


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
    batch_sizes: Sequence[int] = (1, 4, 16, 64, 256, 1024),
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
