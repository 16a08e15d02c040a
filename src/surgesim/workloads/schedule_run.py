"""A schedule study on a network end to end (``python -m sims.schedules --workload``): every
(optimizer, variant, lr, seed) of ``schedules.ScheduleExperiment`` trained on ``surgesim.sweep``,
the lr chosen per target and the variants compared with the constant-batch front
(``surgesim.schedules.choose``, ``summarize``), as a ``surgesim.schedule_study.ScheduleResult``."""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable

from .. import schedules as quadratic
from ..outputs import OutputDir
from ..progress import Progress
from ..schedule_study import NETWORK, ScheduleOptions, ScheduleResult
from ..sweep import run_sweep
from . import protocol
from . import schedules as ws

__all__ = ["run_network_schedules"]


def run_network_schedules(
    opts: ScheduleOptions,
    open_out: Callable[[], OutputDir],
    *,
    scheduler: str | None = None,
    connect_timeout: float = 10.0,
    progress: Progress | None = None,
    say: Callable[[str], None] | None = None,
) -> ScheduleResult:
    """The study of ``opts`` on its workload (``NETWORK`` sizes its evaluation sample and geometric
    rule): the data loaded first (a missing or malformed dataset fails before ``open_out()``), then
    the runs in the resumable store store.sqlite there, on ``scheduler`` (a Dask address) or on
    opts.workers local processes. ``say`` gets the line that counts the runs; ``progress(description)``:
    a progress bar for them."""
    if opts.workload is None or opts.data_dir is None or opts.lrs is None or opts.batch_sizes is None:
        raise ValueError("run_network_schedules runs a network: its options need workload, data_dir, lrs and "
                         "batch_sizes")  # fmt: skip
    dflt = NETWORK[opts.workload]
    base = protocol.RunSpec(workload=opts.workload, lr=1e-3, batch_size=8, seed=0, targets=opts.targets,
                            data_dir=opts.data_dir, max_steps=opts.max_steps, further_steps=0,
                            eval_examples=dflt["eval_examples"], threads=1)  # fmt: skip
    protocol.load_data(base)  # a missing or malformed dataset fails here, before any training
    variants = ws.default_variants(opts.schedules, opts.lrs, opts.batch_sizes, opts.multipliers,
                                   dflt["geometric"], batch_start=dflt["batch_start"])  # fmt: skip
    optimizers = quadratic.optimizers_by_name(opts.optimizers)
    exp = ws.ScheduleExperiment(base, optimizers, tuple(variants for _ in optimizers), opts.seeds)
    out = open_out()
    started = time.perf_counter()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    tasks = exp.tasks()
    if say is not None:
        say(f"{opts.workload} on {opts.data_dir or 'demo data'}: {len(tasks)} runs ({', '.join(opts.optimizers)}; "
            f"{sum(len(v.lrs) for v in variants) * opts.seeds} per optimizer), load average {load:.1f}")  # fmt: skip
    with (progress or (lambda desc: contextlib.nullcontext(None)))("runs") as tick:
        rows = run_sweep(
            ws.run_task, tasks, params={"fn": "surgesim.workloads.schedules.run_task"}, store=out.final("store.sqlite"),
            scheduler=scheduler, workers=None if scheduler else opts.workers, progress=tick,
            connect_timeout=connect_timeout,
        )  # fmt: skip
    chosen = quadratic.choose(exp, rows)
    head = {"workload": opts.workload, "data": opts.data_dir or "demo", "seeds": opts.seeds,
            "targets": list(exp.targets), "optimizers": [o.label for o in optimizers], "runs": len(tasks)}  # fmt: skip
    return ScheduleResult(opts, ws.csv_rows(rows), quadratic.summarize(exp, rows, chosen), head,
                          {"load_average_at_start": load}, lambda: ws.traces(exp, rows, chosen),
                          f"lr chosen for loss {exp.targets[-1]:g}", started)  # fmt: skip
