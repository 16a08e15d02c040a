"""The cost of a grid before it runs: seconds per training step and per loss evaluation, and
the grid's estimated compute seconds from a reference run (eq 20's form), for ``sims.workloads``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence

from .run_spec import RunSpec
from .training import Trainer

__all__ = ["measure_step_seconds", "estimate_grid_seconds"]


def measure_step_seconds(base: RunSpec, batch_sizes: Sequence[int], steps: int = 3) -> tuple[dict[int, float], float]:
    """Seconds per training step at each batch size (after one warm-up step) and per evaluation."""
    out = {}
    for b in batch_sizes:
        t = Trainer(dataclasses.replace(base, batch_size=int(b)))
        t.step()
        start = time.perf_counter()
        for _ in range(steps):
            t.step()
        out[int(b)] = (time.perf_counter() - start) / steps
    start = time.perf_counter()
    t.loss()
    return out, time.perf_counter() - start


def _evaluations(steps: float, spec: RunSpec) -> float:
    """Evaluations of the geometric schedule up to ``steps`` steps, plus one per target."""
    dense = min(steps, spec.dense_steps)
    rest = 0.0
    if steps > spec.dense_steps and spec.eval_rel == 0:
        rest = steps - spec.dense_steps
    elif steps > spec.dense_steps:
        rest = math.log(steps / max(spec.dense_steps, 1)) / math.log1p(spec.eval_rel)
    return 1 + dense + rest + len(spec.targets)


def estimate_grid_seconds(
    base: RunSpec,
    step_seconds: dict[int, float],
    eval_seconds: float,
    lrs: Sequence[float],
    n_seeds: int,
    reference_steps: float | None = None,
) -> tuple[float, float]:
    """(estimate, upper bound) of the grid's compute seconds on one worker.

    Upper bound: every run goes to ``max_steps``. Estimate: from a reference run (``base``'s lr
    and batch size) that reached the last target in S_ref = ``reference_steps``, a run at (lr, B) takes
    S_ref (1 + B_ref / B) / 2 max(1, lr_ref / lr) + further_steps steps, capped at max_steps:
    the eq 20 form with B_noise taken as B_ref, and a smaller learning rate needing
    proportionally more steps (gradient-flow time lr x steps). Without a reference: the bound.
    """
    est = upper = 0.0
    for b, t in step_seconds.items():
        full = base.max_steps * t + _evaluations(base.max_steps, base) * eval_seconds
        upper += n_seeds * len(lrs) * full
        for lr in lrs:
            if reference_steps is None or not math.isfinite(reference_steps):
                est += n_seeds * full
                continue
            s = reference_steps * (1 + base.batch_size / b) / 2 * max(1.0, base.lr / lr) + base.further_steps
            s = min(s, base.max_steps)
            est += n_seeds * (s * t + _evaluations(s, base) * eval_seconds)
    return est, upper
