"""The options a grid search is given as text and numbers (``python -m sims.dynamics``, and the
momentum study's ``sims.momentum``), checked and put in order (``resolve_grid_options``; the
whole of ``sims.dynamics``' options: ``resolve_dynamics_options``).

An error names the option it refuses by its key in backquotes (```seeds` must be >= 1, got 0``):
a command turns the key into its flag (``--seeds``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ..kernels.dynamics import Optimizer
from ..preflight import check_memory, check_range
from .spec import DEFAULT_BATCH_SIZES, OptimizerSpecError, parse_optimizers

__all__ = ["resolve_grid_options", "resolve_dynamics_options", "DYNAMICS_LIMITS", "DYNAMICS_OPTIONS"]

DYNAMICS_LIMITS = {"dims": (2, 2**40), "lr_points": (3, 10**4), "further_steps": (0, 10**9),
                   "max_steps": (1, 10**9), "seeds": (1, 2**31), "seed": (0, 2**63 - 1)}  # fmt: skip
"""The [lo, hi] of each integer option of ``sims.dynamics``."""
DYNAMICS_OPTIONS = ("dims", "problem", "optimizers", "batch_sizes", "lr_points", "targets", "further_steps",
                    "max_steps", "seeds", "seed", "out", "scheduler", "backend", "optimal_arm", "plot",
                    "quiet")  # fmt: skip
"""The keys of ``sims.dynamics``' resolved options (its options.json), in order."""


def resolve_grid_options(
    given: Mapping[str, Any],
    limits: Mapping[str, tuple[int, int]],
    *,
    default_batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    min_batch_sizes: int = 2,
) -> tuple[dict[str, Any], tuple[Optimizer, ...]]:
    """Check a grid's options, given by name: each integer option of ``limits`` within its
    [lo, hi]; ``optimizers``, comma-separated ``parse_optimizer`` texts; ``batch_sizes`` (None:
    ``default_batch_sizes``), at least ``min_batch_sizes`` distinct integers >= 1; ``targets``,
    distinct fractions of the initial loss in (0, 1). Returns ``given`` with the optimizers as the
    tuple of their texts, the batch sizes ascending and the targets from the highest, and the
    parsed optimizers. Raises ValueError (``OptimizerSpecError`` for the optimizers) naming the
    option as `key`."""
    for key, (lo, hi) in limits.items():
        check_range(key, given[key], lo, hi)
    try:
        optimizers = parse_optimizers(given["optimizers"])
    except OptimizerSpecError as exc:
        raise OptimizerSpecError(f"`optimizers`: {exc}") from None
    sizes = tuple(default_batch_sizes if given.get("batch_sizes") is None else given["batch_sizes"])
    if min(sizes) < 1 or len(set(sizes)) != len(sizes) or len(sizes) < min_batch_sizes:
        raise ValueError(f"`batch_sizes` must be at least {min_batch_sizes} distinct integers >= 1, got {list(sizes)}")
    targets = given["targets"]
    if any(not 0 < f < 1 for f in targets) or len(set(targets)) != len(targets):
        raise ValueError(f"`targets` must be distinct fractions in (0, 1), got {targets}")
    chosen = dict(given) | {
        "optimizers": tuple(s.strip() for s in given["optimizers"].split(",") if s.strip()),
        "batch_sizes": tuple(sorted(sizes)), "targets": tuple(sorted(targets, reverse=True)),
    }  # fmt: skip
    return chosen, optimizers


def resolve_dynamics_options(given: Mapping[str, Any]) -> tuple[SimpleNamespace, tuple[Optimizer, ...]]:
    """The options of one grid search (``python -m sims.dynamics``), given by name: checked by
    ``resolve_grid_options`` within ``DYNAMICS_LIMITS``, the problem file (``problem``, None: the
    default problem) existing, and the memory of one task's trajectories and the rows available.
    Returns the ``DYNAMICS_OPTIONS`` of the result, in order, and the parsed optimizers. Raises
    ValueError naming the option as `key`."""
    chosen, optimizers = resolve_grid_options(given, DYNAMICS_LIMITS)
    if given["problem"] is not None and not Path(given["problem"]).is_file():
        raise ValueError(f"`problem` {given['problem']!r}: no such file")
    dims, lr_points, seeds, targets = given["dims"], given["lr_points"], given["seeds"], given["targets"]
    runs = lr_points * seeds  # trajectories per task, each with a few d-vectors of state
    rows = runs * len(targets) * len(chosen["batch_sizes"]) * len(optimizers)
    need = 8 * dims * runs * (6 + len(targets)) + 200 * rows
    check_memory(need, f"`dims` {dims} x `lr_points` {lr_points} x `seeds` {seeds}")
    return SimpleNamespace(**{k: chosen[k] for k in DYNAMICS_OPTIONS}), optimizers
