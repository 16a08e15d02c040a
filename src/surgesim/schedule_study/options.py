"""The configuration of a schedule study (``python -m sims.schedules``): the default sizes of the
quadratic and of each network workload, and ``ScheduleOptions``, every choice resolved and checked
(``resolve_schedule_options``).

An error names the option it refuses by its key in backquotes (```seeds` must be >= 2, got 1``):
a command turns the key into its flag (``--seeds``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..preflight import check_range

__all__ = [
    "SCHEDULE_NAMES",
    "NETWORK_SCHEDULES",
    "PROBE",
    "WORKLOADS",
    "QUADRATIC",
    "NETWORK",
    "ScheduleOptions",
    "resolve_schedule_options",
]

SCHEDULE_NAMES = ("constant", "oracle", "online", "critical", "geometric")
"""The quadratic's schedules run by default (``surgesim.schedules.SCHEDULES``)."""
NETWORK_SCHEDULES = ("constant", "online", "critical", "geometric")
"""A network's schedules run by default (no oracle: the state's B_noise is not known)."""
PROBE = "probe"
"""The Adam schedule (the multi-step probe at the state): run only where named."""
WORKLOADS = ("cnn",)
"""The networks the schedules are sized for."""

# Defaults of the quadratic (fractions of the initial loss) and of the CNN, sized for 2 idle cores
# (measured: 6.1 s of a worker per run on 2 workers; 6 B x 4 lrs x 3 seeds for the front and 4 x 3
# runs per schedule variant took 6 min 40 s; with 4 seeds, 176 runs, 8 min 33 s). The lrs are the
# middle four of sims.workloads' grid, where the grid's optimal lrs lie at every B and target; B_start 8 and
# B_0 = 8 doubled every 20 steps span the front's 4 .. 128 within the runs' 15-150 steps.
QUADRATIC: dict[str, Any] = dict(optimizers="sign,adam", multipliers=(0.5, 1.0, 2.0), targets=(0.5, 0.25, 0.125),
                                 seeds=16, tune_seeds=8, max_steps=3000, dims=256, seed=0)  # fmt: skip
"""The quadratic's defaults; its target losses are fractions of the initial loss."""
NETWORK: dict[str, dict[str, Any]] = {
    "cnn": dict(optimizers="adam", multipliers=(1.0, 2.0), targets=(1.0, 0.6, 0.4), seeds=4, max_steps=800,
                lrs=(4e-4, 8e-4, 1.6e-3, 3.2e-3), batch_sizes=(4, 8, 16, 32, 64, 128), eval_examples=128,
                geometric=((8, 20, 1.0),), batch_start=8),
}  # fmt: skip
"""Each network's defaults (its target losses are training losses), with its evaluation sample and
geometric rule."""


@dataclass(frozen=True)
class ScheduleOptions:
    """Every choice of one schedule study, resolved (written as options.json; docs/outputs.md).
    The quadratic's fields (dims, problem, tune_seeds, seed) are None on a network, the network's
    (workload, data_dir, lrs, batch_sizes, workers) None on the quadratic; data_dir "" is the demo."""

    dims: int | None
    problem: str | None
    workload: str | None
    data_dir: str | None
    optimizers: tuple[str, ...]
    schedules: tuple[str, ...]
    multipliers: tuple[float, ...]
    targets: tuple[float, ...]
    lrs: tuple[float, ...] | None
    batch_sizes: tuple[int, ...] | None
    seeds: int
    tune_seeds: int | None
    max_steps: int
    seed: int | None
    workers: int | None
    out: str
    scheduler: str | None
    plot: bool
    quiet: bool


def _names(text: str, allowed: tuple[str, ...], key: str) -> tuple[str, ...]:
    """Comma-separated distinct names from ``allowed``."""
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    bad = [s for s in names if s not in allowed]
    if not names or bad or len(set(names)) != len(names):
        what = f"unknown {bad[0]!r}" if bad else "empty or repeated names"
        raise ValueError(f"`{key}`: {what} in {text!r}; choose from {', '.join(allowed)}")
    return names


def _check_kind(v: Mapping[str, Any], network: bool) -> None:
    """Refuse the options of the other kind (the quadratic's on a network and the reverse)."""
    quadratic, torch = ("dims", "problem", "tune_seeds", "seed"), ("demo", "data_dir", "lrs", "batch_sizes", "workers")
    for key in quadratic if network else torch:
        if (v.get(key) or None if key == "demo" else v.get(key)) is not None:
            raise ValueError(f"`{key}` is for the quadratic, not `workload`" if network else
                             f"`{key}` needs `workload` (a torch workload)")  # fmt: skip
    if network:
        if v["workload"] not in WORKLOADS:
            raise ValueError(f"`workload` {v['workload']!r}: schedules are sized for {', '.join(WORKLOADS)} only "
                             "(sims.workloads runs the grid on resnet18 and gpt)")  # fmt: skip
        if not v.get("demo") and not v.get("data_dir"):
            raise ValueError(f"pass `data_dir` DIR (the real {v['workload']} data) or `demo`")


def _schedules(text: str | None, network: bool) -> tuple[str, ...]:
    defaults = NETWORK_SCHEDULES if network else SCHEDULE_NAMES
    allowed = defaults + (PROBE,)
    if network and text is not None and "oracle" in text.split(","):
        raise ValueError("`schedules` oracle needs the exact state: quadratic only (drop it or `workload`)")
    if text is not None and not text.strip(" ,"):
        raise ValueError(f"`schedules` is empty: name one or more of {', '.join(allowed)}, or leave it out for all")
    schedules = _names(text or ",".join(defaults), allowed, "schedules")
    if "constant" not in schedules:
        raise ValueError("`schedules` must include constant: the front every schedule is measured against")
    return schedules


def resolve_schedule_options(given: Mapping[str, Any]) -> ScheduleOptions:
    """The options of a study from the values given by ``ScheduleOptions`` field name (and
    ``demo``: the workload's demo data); a value None or absent takes the default (``QUADRATIC``,
    or ``NETWORK[workload]`` with a workload). Other names are ignored. Raises ValueError, naming
    the option as `key`, for a value or combination that cannot run."""
    v = dict(given)
    network = v.get("workload") is not None
    _check_kind(v, network)
    dflt = NETWORK[v["workload"]] if network else QUADRATIC
    pick = lambda key: dflt[key] if v.get(key) is None else v[key]  # noqa: E731
    seeds, max_steps = pick("seeds"), pick("max_steps")
    check_range("seeds", seeds, 1 if network else 2, 100_000)
    check_range("max_steps", max_steps, 1, 10_000_000)
    targets, multipliers = tuple(pick("targets")), tuple(pick("multipliers"))
    if len(set(targets)) != len(targets):
        raise ValueError(f"`targets` must be distinct, got {list(targets)}")
    if network and any(not t > 0 for t in targets):
        raise ValueError(f"`targets` must be training losses > 0, got {list(targets)}")
    if not network and any(not 0 < f < 1 for f in targets):
        raise ValueError(f"`targets` must be distinct fractions in (0, 1), got {list(targets)}")
    if any(not (math.isfinite(c) and c > 0) for c in multipliers):
        raise ValueError(f"`multipliers` must be finite and > 0, got {list(multipliers)}")
    schedules = _schedules(v.get("schedules"), network)
    lrs = batch_sizes = tune_seeds = dims = seed = None
    if network:
        lrs, batch_sizes = tuple(pick("lrs")), tuple(pick("batch_sizes"))
        if any(not (math.isfinite(x) and x > 0) for x in lrs) or len(set(lrs)) != len(lrs):
            raise ValueError(f"`lrs` must be distinct, finite and > 0, got {list(lrs)}")
        if any(b < 1 for b in batch_sizes) or len(set(batch_sizes)) != len(batch_sizes):
            raise ValueError(f"`batch_sizes` must be distinct integers >= 1, got {list(batch_sizes)}")
        if max(batch_sizes) < 2:
            raise ValueError("`batch_sizes`: the largest caps B_t and must be >= 2 (two half batches)")
    else:
        tune_seeds, dims, seed = pick("tune_seeds"), pick("dims"), pick("seed")
        check_range("dims", dims, 2, 1 << 24)
        check_range("tune_seeds", tune_seeds, 1, 100_000)
        if v.get("problem") is not None and not Path(v["problem"]).is_file():
            raise ValueError(f"`problem` {v['problem']!r}: no such file")
    return ScheduleOptions(
        dims=dims, problem=v.get("problem"), workload=v.get("workload"),
        data_dir=("" if v.get("demo") else v.get("data_dir")) if network else None,
        optimizers=_names(pick("optimizers"), ("sign", "adam"), "optimizers"), schedules=schedules,
        multipliers=multipliers, targets=tuple(sorted(targets, reverse=True)), lrs=lrs, batch_sizes=batch_sizes,
        seeds=seeds, tune_seeds=tune_seeds, max_steps=max_steps, seed=seed,
        workers=(v.get("workers") or os.cpu_count() or 1) if network else None, out=v.get("out", "runs/schedules"),
        scheduler=v.get("scheduler"), plot=v.get("plot", True), quiet=v.get("quiet", False),
    )  # fmt: skip
