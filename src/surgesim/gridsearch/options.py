"""The options a grid search is given as text and numbers (``python -m sims.dynamics``, and the
momentum study's ``sims.momentum``), checked and put in order (``resolve_grid_options``).

An error names the option it refuses by its key in backquotes (```seeds` must be >= 1, got 0``):
a command turns the key into its flag (``--seeds``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..kernels.dynamics import Optimizer
from ..preflight import check_range
from .spec import DEFAULT_BATCH_SIZES, OptimizerSpecError, parse_optimizers

__all__ = ["resolve_grid_options"]


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
