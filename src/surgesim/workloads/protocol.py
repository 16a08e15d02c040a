"""The grid-search protocol of Section 3.2-3.3 (Li et al. 2024) on real networks, as independent
tasks: one task trains one (learning rate, batch size, seed) with Adam and returns one row per
target training loss.

Each run trains from the seed's initialisation with Adam(beta1, beta2, eps) at a constant learning
rate, drawing i.i.d. minibatches of B examples, and follows the training loss:

- The training loss is the mean loss over a fixed sample of ``eval_examples`` training examples
  (the same for every run: a fixed permutation with seed 0), evaluated after every step for the
  first ``dense_steps`` steps and then whenever the step count has grown by the fraction
  ``eval_rel`` (a geometric schedule: about 60 evaluations up to 1,000 steps at 10%). Models with
  BatchNorm are evaluated in train mode (batch statistics of 256-example chunks) with their
  running statistics restored afterwards, so the loss is a function of the parameters alone.
- S for a target loss is where the piecewise-linear interpolation of the evaluated losses first
  reaches it (exact to within one evaluation interval); E = B S (examples).
- After the first evaluation at or below a target, the run continues ``further_steps`` steps
  (the paper: 10 for the CNN, 50 for ResNet-18 and DistilGPT2) and records the loss decrease over
  them, measured from that evaluation: the score whose maximum over learning rates defines the
  optimal learning rate (Fig 2-4, left panels).
- A run stops when every target has its further decrease, at ``max_steps``, when the loss is
  not finite or exceeds ``diverge_factor`` times its initial value, or when it has stalled: no
  new lowest loss since step k_best and more than ``stall_factor`` k_best + 50 steps run (a
  dead network at a too-large learning rate would otherwise cost ``max_steps``). Targets not
  reached have ``steps``, ``examples`` and ``further_decrease`` None.

Seeding: the initial weights depend on the seed alone (common random numbers across the grid); the
minibatch stream on (seed, B, lr) through ``surgesim.rng.stream_key``: a task is a pure function of
its parameters (``torch.use_deterministic_algorithms`` is not forced, so the last bits of a CUDA
run may differ). ``run_task`` is module-level, so ``surgesim.sweep.run_sweep`` can run the grid on
local processes or a Dask cluster and resume it.

The run's specification is ``run_spec.RunSpec``, its training ``training.Trainer``, the grid's cost
estimates ``grid_cost``; this module re-exports them.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .gradstats import noise_scale
from .grid_cost import estimate_grid_seconds, measure_step_seconds
from .run_spec import WORKLOADS, RunSpec
from .training import Trainer, build_model, load_data, stream_seed

__all__ = [
    "WORKLOADS",
    "ROW_COLUMNS",
    "GRADIENT_COLUMNS",
    "RunSpec",
    "TargetRecord",
    "Trainer",
    "follow_targets",
    "run_task",
    "gradient_task",
    "grid_tasks",
    "measure_step_seconds",
    "estimate_grid_seconds",
    "load_data",
    "build_model",
    "save_checkpoint",
    "checkpoint_path",
]

ROW_COLUMNS = (
    "optimizer", "lr", "batch_size", "seed", "target_loss", "steps", "examples", "further_decrease",
    "beta1", "beta2",
)  # fmt: skip
GRADIENT_COLUMNS = (
    "target_loss", "steps", "loss", "predicted_noise_batch_size", "predicted_noise_batch_size_se",
    "predicted_peak_lr", "predicted_peak_lr_se", "hessian_trace", "hessian_trace_se", "signal",
    "off_diagonal", "validity_bound", "n_examples", "n_probes", "n_params", "seconds",
)  # fmt: skip


# --- the protocol's bookkeeping ---------------------------------------------------------------


@dataclass
class TargetRecord:
    """Steps to one target loss (interpolated; NaN if not reached) and the further decrease."""

    target_loss: float
    steps: float = math.nan
    crossing_step: int = -1  # the first evaluated step at or below the target
    crossing_loss: float = math.nan
    further_decrease: float = math.nan


def follow_targets(
    step: Callable[[], None],
    evaluate: Callable[[], float],
    targets: Sequence[float],
    *,
    further_steps: int,
    max_steps: int,
    eval_rel: float = 0.0,
    dense_steps: int = 10,
    diverge_factor: float = 3.0,
    stall_factor: float = 0.0,
    on_cross: Callable[[TargetRecord], None] | None = None,
) -> tuple[list[TargetRecord], dict]:
    """Run ``step()`` until every target is reached and followed ``further_steps`` further, or
    ``max_steps``, or divergence; ``evaluate()`` gives the training loss (see the module docstring).

    ``on_cross(record)`` is called at the evaluation that first reaches a target (e.g. to measure
    gradient statistics there); it must not change the run.

    Returns:
        (records in the order of ``targets``, info with ``steps_run``, ``final_loss``,
        ``initial_loss``, ``diverged``, ``stalled`` and ``evaluations``).
    """
    records = [TargetRecord(float(t)) for t in targets]
    pending: dict[int, list[TargetRecord]] = {}
    open_targets = list(records)

    def crossed(k: int, loss: float, prev_step: int, prev_loss: float) -> None:
        for r in [r for r in open_targets if loss <= r.target_loss]:
            # Linear interpolation between the last evaluation above the target and this one.
            frac = 0.0 if k == prev_step else (prev_loss - r.target_loss) / (prev_loss - loss)
            r.steps = prev_step + (k - prev_step) * frac
            r.crossing_step, r.crossing_loss = k, loss
            open_targets.remove(r)
            if further_steps == 0:
                r.further_decrease = 0.0
            else:
                pending.setdefault(k + further_steps, []).append(r)
            if on_cross:
                on_cross(r)

    prev_step, prev_loss = 0, evaluate()
    initial = loss = prev_loss
    crossed(0, loss, 0, loss)  # targets at or above the initial loss: S = 0
    info = {"initial_loss": initial, "diverged": False, "stalled": False, "evaluations": 1}
    next_eval, k, best, k_best = 1, 0, initial, 0
    while k < max_steps and (open_targets or pending):
        step()
        k += 1
        if not (k <= dense_steps or k >= next_eval or k in pending):
            continue
        loss = evaluate()
        info["evaluations"] += 1
        next_eval = max(k + 1, math.ceil(k * (1.0 + eval_rel)))
        if not math.isfinite(loss) or loss > diverge_factor * initial:
            info["diverged"] = True
            break
        for r in pending.pop(k, []):
            r.further_decrease = r.crossing_loss - loss
        crossed(k, loss, prev_step, prev_loss)
        prev_step, prev_loss = k, loss
        if loss < best:
            best, k_best = loss, k
        elif stall_factor and open_targets and k > stall_factor * k_best + 50:
            info["stalled"] = True
            break
    info.update(steps_run=k, final_loss=loss)
    return records, info


def _none_if_nan(x: float) -> float | None:
    return None if not math.isfinite(x) else float(x)


def run_task(params: dict) -> list[dict]:
    """One grid point: train ``RunSpec(**params)`` and return one row per target (``ROW_COLUMNS``)."""
    spec = RunSpec.from_params(params)
    trainer = Trainer(spec)
    records, _ = follow_targets(
        trainer.step, trainer.loss, spec.targets, further_steps=spec.further_steps,
        max_steps=spec.max_steps, eval_rel=spec.eval_rel, dense_steps=spec.dense_steps,
        diverge_factor=spec.diverge_factor, stall_factor=spec.stall_factor,
    )  # fmt: skip
    rows = []
    for r in records:
        steps = _none_if_nan(r.steps)
        rows.append({
            "optimizer": "adam", "lr": spec.lr, "batch_size": spec.batch_size, "seed": spec.seed,
            "target_loss": r.target_loss, "steps": steps,
            "examples": None if steps is None else steps * spec.batch_size,
            "further_decrease": _none_if_nan(r.further_decrease), "beta1": spec.beta1, "beta2": spec.beta2,
        })  # fmt: skip
    return rows


CHECKPOINT_FORMAT = "surgesim-probe-1"


def save_checkpoint(path: str | os.PathLike, trainer: Trainer, record: TargetRecord | None) -> None:
    """The trainer's model and Adam state (a ``torch.save`` dict: ``format``, ``spec``, ``model``,
    ``optimizer``, ``target_loss``, ``steps``, ``loss``), written atomically (temporary + rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({
        "format": CHECKPOINT_FORMAT, "spec": trainer.spec.to_params(), "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "target_loss": None if record is None else record.target_loss,
        "steps": None if record is None else record.steps,
        "loss": None if record is None else record.crossing_loss,
    }, tmp)  # fmt: skip
    os.replace(tmp, path)


def checkpoint_path(directory: str | os.PathLike, target_loss: float) -> Path:
    """Where the reference run's state at ``target_loss`` is saved."""
    return Path(directory) / f"target_{target_loss:g}.pt"


def gradient_task(params: dict) -> list[dict]:
    """A reference run that measures eq 14 / eq 16 at each target loss (``GRADIENT_COLUMNS``).

    ``params`` is a ``RunSpec`` plus ``grad_examples`` (examples for the per-example gradients and
    the Hessian, a fixed sample with seed 1), ``probes`` (Hutchinson probes) and optionally
    ``checkpoint_dir`` (save the state at each target there, ``checkpoint_path``, for the probe).
    The trajectory is the same as ``run_task``'s with the same spec; targets not reached give no row.
    """
    params = dict(params)
    n_examples = int(params.pop("grad_examples", 512))
    probes = int(params.pop("probes", 32))
    checkpoint_dir = params.pop("checkpoint_dir", None)
    if checkpoint_dir:
        Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
    spec = RunSpec.from_params(params)
    trainer = Trainer(spec)
    x, y = trainer.data.fixed(n_examples, seed=1)
    n_params = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    rows: list[dict] = []

    def measure(r: TargetRecord) -> None:
        if checkpoint_dir:
            save_checkpoint(checkpoint_path(checkpoint_dir, r.target_loss), trainer, r)
        start = time.perf_counter()
        ns = noise_scale(
            trainer.model, trainer.loss_fn, x, y, probes=probes,
            seed=stream_seed(spec.seed, 2, len(rows)), chunk_size=32, hvp_chunk_size=256,
        )  # fmt: skip
        rows.append({
            "target_loss": r.target_loss, "steps": r.steps, "loss": r.crossing_loss,
            "predicted_noise_batch_size": ns.noise_batch_size,
            "predicted_noise_batch_size_se": ns.noise_batch_size_se,
            "predicted_peak_lr": ns.peak_lr, "predicted_peak_lr_se": ns.peak_lr_se,
            "hessian_trace": ns.trace, "hessian_trace_se": ns.trace_se, "signal": ns.signal,
            "off_diagonal": ns.off_diagonal, "validity_bound": ns.validity_bound,
            "n_examples": ns.moments.count, "n_probes": probes,
            "n_params": n_params, "seconds": time.perf_counter() - start,
        })  # fmt: skip

    follow_targets(
        trainer.step, trainer.loss, spec.targets, further_steps=spec.further_steps,
        max_steps=spec.max_steps, eval_rel=spec.eval_rel, dense_steps=spec.dense_steps,
        diverge_factor=spec.diverge_factor, stall_factor=spec.stall_factor, on_cross=measure,
    )  # fmt: skip
    return [{k: _none_if_nan(v) if isinstance(v, float) else v for k, v in r.items()} for r in rows]


def grid_tasks(base: RunSpec, lrs: Sequence[float], batch_sizes: Sequence[int], seeds: Sequence[int]) -> list[dict]:
    """Task parameters for every (seed, batch size, lr), the base spec's other fields kept."""
    if not lrs or not batch_sizes or not seeds:
        raise ValueError("need at least one learning rate, batch size and seed")
    return [
        dataclasses.replace(base, lr=float(lr), batch_size=int(b), seed=int(s)).to_params()
        for s in seeds
        for b in batch_sizes
        for lr in lrs
    ]
