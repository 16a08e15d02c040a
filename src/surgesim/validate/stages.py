"""The runs of a validation: its two stages (the coarse grid, then the refinement around each
target's best), each a resumable sweep with its own store (``coarse.sqlite``, ``refine.sqlite``),
and the wording of the time estimate printed before them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["SweepStages", "minutes", "load_average"]


class SweepStages:
    """Runs one stage's tasks with ``surgesim.sweep.run_sweep``: ``stages(tasks, "coarse")`` stores
    them in ``store(coarse.sqlite)`` with ``params`` plus the stage's name (so a rerun over the same
    output directory resumes), on ``scheduler`` (Dask) or ``workers`` local processes, with a
    progress bar unless ``quiet``."""

    def __init__(
        self, fn: Callable, params: Mapping[str, Any], store: Callable[[str], Path], *, scheduler: str | None = None,
        workers: int | None = None, shared: Any = None, connect_timeout: float | None = None, quiet: bool = False,
    ) -> None:  # fmt: skip
        self.fn, self.params, self.store, self.shared = fn, dict(params), store, shared
        self.scheduler, self.workers, self.connect_timeout, self.quiet = scheduler, workers, connect_timeout, quiet

    def __call__(self, tasks: list[dict], name: str) -> list[dict]:
        """The rows of ``tasks`` (every row of every task, in task order), run as stage ``name``."""
        from ..progress import progress_bar
        from ..sweep import run_sweep

        if not tasks:
            return []
        sched = self.scheduler
        with progress_bar(quiet=self.quiet, desc=f"{name} runs") as bar:
            return run_sweep(
                self.fn, tasks, params={**self.params, "stage": name}, store=self.store(f"{name}.sqlite"),
                scheduler=sched, workers=None if sched else self.workers, shared=self.shared, progress=bar,
                connect_timeout=self.connect_timeout,
            )  # fmt: skip


def minutes(seconds: float) -> str:
    """A duration as "N s" under two minutes, else "N.N min"."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def load_average() -> float:
    """The 1-minute load average (NaN where the system has none)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
