"""The checks of a validation run's options (``python -m sims.validate``) that ``resolve_options``
does not make: which options go together, and the surge test's top group. Kept apart from
``surgesim.validate.options`` while that package is being edited; they belong beside
``resolve_options``. Each raises ValueError naming the options as `key`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .validate import DATA_FILES

__all__ = ["check_combination", "check_top"]


def check_combination(given: Mapping[str, Any]) -> None:
    """Refuse options that do not go together: a network (``workload``) needs ``data_dir`` or
    ``demo`` and takes no ``dims`` or ``lr_points``; a quadratic takes neither ``demo`` nor
    ``data_dir``, and ``dims`` only without ``problem``."""
    w = given["workload"]
    if w and not (given["demo"] or given["data_dir"]):
        raise ValueError(f"pass `data_dir` (the real {w} data: {DATA_FILES[w]}) or `demo`")
    if not w and (given["demo"] or given["data_dir"]):
        raise ValueError("`demo` and `data_dir` go with `workload`")
    if w and (given["dims"] or given["lr_points"]):
        raise ValueError("`dims` and `lr_points` are for the quadratic, not `workload`")
    if given["problem"] and given["dims"]:
        raise ValueError("`dims` sets the default quadratic; `problem` gives its own")


def check_top(top: int | None, batch_sizes: Sequence[int]) -> None:
    """Refuse a surge test's top group (``top`` largest batch sizes) that leaves none below it."""
    if top is not None and top >= len(batch_sizes):
        raise ValueError(f"`top` {top} leaves no batch size below the top group of {len(batch_sizes)}")
