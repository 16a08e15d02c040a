"""The probe (``probe.py``) on a training run: checkpoints of the reference run at each target
loss, probe states rebuilt from checkpoints, and the sweep tasks that ``sims.probe`` and
``sims.workloads`` run (one per state and batch size, plus one per state for the batch-size
scales), so an interrupted probe resumes through ``surgesim.sweep``.

Checkpoints are ``protocol.save_checkpoint``'s; ``load_checkpoint`` also takes a plain
state_dict or a dict with ``model`` (and optionally Adam's ``optimizer``) saved by other code.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ..problem import QuadraticProblem
from ..progress import part
from . import protocol
from .probe import (
    AdamState,
    ProbeState,
    full_gradient,
    gaussian_batch_size,
    independent_curve,
    probe_batch_size,
    state_statistics,
)
from .quadratic import quadratic_state

__all__ = [
    "load_checkpoint",
    "reference_checkpoints",
    "workload_state",
    "probe_task",
    "problem_task",
    "task_list",
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
    t0 = time.perf_counter()
    with part(0.0, 0.8):  # the probe's real minibatches: most of the task's time
        p = probe_batch_size(state, B, update=params["update"], hessian_examples=params["hessian_examples"],
                             seed=seed, max_draws=params["max_draws"], **plan)  # fmt: skip
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
        "seconds_probe": t1 - t0, "seconds_gaussian": t2 - t1,
    }  # fmt: skip


def _scales_row(stats) -> dict:
    return {
        "noise_batch_size_eq14": stats.noise_batch_size_eq14,
        "noise_batch_size_eq14_se": stats.noise_batch_size_eq14_se,
        "b_simple": stats.b_simple, "b_simple_se": stats.b_simple_se, "b_crit": stats.b_crit,
        "b_crit_se": stats.b_crit_se, "validity_bound": stats.validity_bound, "hessian_trace": stats.hessian_trace,
        "hessian_trace_se": stats.hessian_trace_se,
    }  # fmt: skip


STATS_KEYS = ("stats_examples", "hessian_examples", "probes", "crit_examples")


def _stats_options(params: dict) -> str:
    names = {"stats_examples": "examples"}
    return json.dumps({names.get(k, k): params[k] for k in STATS_KEYS}, sort_keys=True)


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
