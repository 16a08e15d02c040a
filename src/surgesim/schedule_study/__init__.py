"""The schedule study (``python -m sims.schedules``): batch-size and learning-rate schedules that
follow the surge, against the constant-batch front, on the quadratic (``surgesim.schedules``) or a
network (``surgesim.workloads.schedules``).

Modules: ``options`` (the defaults and ``resolve_schedule_options``), ``run`` (``run_schedules``:
the quadratic study end to end; ``ScheduleResult``: its outputs and table). The network study,
which needs PyTorch, is ``surgesim.workloads.schedule_run.run_network_schedules``.
"""

from __future__ import annotations

from .options import (
    NETWORK,
    NETWORK_SCHEDULES,
    PROBE,
    QUADRATIC,
    SCHEDULE_NAMES,
    WORKLOADS,
    ScheduleOptions,
    resolve_schedule_options,
)
from .run import ScheduleResult, print_table, run_schedules

__all__ = [
    "SCHEDULE_NAMES",
    "NETWORK_SCHEDULES",
    "PROBE",
    "WORKLOADS",
    "QUADRATIC",
    "NETWORK",
    "ScheduleOptions",
    "resolve_schedule_options",
    "ScheduleResult",
    "run_schedules",
    "print_table",
]
