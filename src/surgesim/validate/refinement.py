"""The protocol's refinement stage: after the coarse grid, learning rates added around each
target's best seed-mean score at every batch size (one run serves every target).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .optimal_lr import tables_from_rows

__all__ = ["refine_lrs", "refinement"]


def refine_lrs(lrs: Sequence[float], mean_score: Sequence[float], points: int = 1) -> list[float]:
    """Learning rates to add around the best of one batch size's grid (larger score is better):
    ``points`` geometrically spaced points between the best and each neighbour, or beyond it by
    one grid step at an end of the grid. NaN scores count as worst; none finite: nothing."""
    x = np.log(np.asarray(lrs, dtype=float))
    order = np.argsort(x)
    x, y = x[order], np.asarray(mean_score, dtype=float)[order]
    if not np.isfinite(y).any() or x.size < 2:
        return []
    k = int(np.nanargmax(np.where(np.isfinite(y), y, -np.inf)))
    step = float(np.median(np.diff(x)))
    lo = x[k - 1] if k > 0 else x[k] - step
    hi = x[k + 1] if k < x.size - 1 else x[k] + step
    f = np.arange(1, points + 1) / (points + 1)
    new = np.concatenate([x[k] + (lo - x[k]) * f, x[k] + (hi - x[k]) * f])
    if k == 0:
        new = np.append(new, lo)
    if k == x.size - 1:
        new = np.append(new, hi)
    return [float(v) for v in np.exp(new)]


def refinement(rows: Sequence[Mapping], targets: Sequence[float], points: int = 1) -> dict[float, list[float]]:
    """The refinement stage: per batch size, the learning rates to add around each target's best
    seed-mean score (``refine_lrs``; one run serves every target), those already run left out."""
    out: dict[float, list[float]] = {}
    for t in targets:
        sel = [r for r in rows if r["target_loss"] == t]
        if not sel:
            continue
        for table in tables_from_rows(sel, t):
            mean = table.score.mean(axis=1)
            new = out.setdefault(table.batch_size, [])
            for lr in refine_lrs(table.lrs, mean, points):
                if not np.any(np.isclose(lr, table.lrs, rtol=1e-9)) and not np.any(np.isclose(lr, new, rtol=1e-9)):
                    new.append(lr)
    return {b: sorted(v) for b, v in out.items() if v}
