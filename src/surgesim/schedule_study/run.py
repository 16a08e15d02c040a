"""A schedule study end to end (``python -m sims.schedules``): on the quadratic, each variant's
learning rate tuned and evaluated on ``surgesim.sweep`` (``run_schedules``; on a network,
``surgesim.workloads.schedule_run``), and the outputs schedules.csv, summary.json, the figures and
the printed table (``ScheduleResult``)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import schedules
from ..dynamics import default_problem
from ..outputs import OutputDir, write_json
from ..problem import QuadraticProblem
from ..progress import Progress
from ..sweep import run_sweep, write_csv
from .options import ScheduleOptions

__all__ = ["ScheduleResult", "run_schedules", "print_table"]


@dataclass
class ScheduleResult:
    """A finished study: the rows of schedules.csv, the summary's entries (``schedules.summarize``)
    and its other keys, before (``head``) and after (``tail``) the results and the wall time."""

    options: ScheduleOptions
    rows: list[dict]
    entries: list[dict]
    head: dict[str, Any]
    tail: dict[str, Any]
    traces: Callable[[], list[dict]]
    """B_t and lr_t along each schedule, for the figure (computed when it is drawn)."""
    tuned: str
    """What the traces' learning rates were chosen for, for the figure's title."""
    started: float
    """The ``time.perf_counter()`` the study's wall time counts from."""

    def write(self, out: Path | OutputDir) -> list[str]:
        """schedules.csv, summary.json and (with options.plot) schedules_front.png and
        schedules_traces.png into ``out``; the figures' names."""
        if self.rows:
            write_csv(self.rows, out / "schedules.csv", columns=schedules.ROW_COLUMNS)
        else:  # no variant reached any target when tuned: nothing evaluated, the header only
            (out / "schedules.csv").write_text(",".join(schedules.ROW_COLUMNS) + "\n")
        summary = {**self.head, "results": self.entries, "wall_seconds": time.perf_counter() - self.started,
                   **self.tail}  # fmt: skip
        write_json(summary, out / "summary.json")
        if not self.options.plot:
            return []
        from ..plots.schedules import schedule_traces_figure, schedules_front_figure

        schedules_front_figure(self.entries, "examples E against steps S to each target").savefig(
            out / "schedules_front.png", dpi=110
        )
        schedule_traces_figure(self.traces(), f"B_t and lr_t along each schedule ({self.tuned}, seed 0)").savefig(
            out / "schedules_traces.png", dpi=110
        )
        return ["schedules_front.png", "schedules_traces.png"]

    def report(self, out: Path | OutputDir, figures: Sequence[str]) -> None:
        """Print the table and the files written (``figures``: what ``write`` returned)."""
        print_table(self.entries)
        files = f"{out}/schedules.csv, summary.json" + "".join(f", {f}" for f in figures)
        took = time.perf_counter() - self.started
        if self.options.workload:
            print(f"{self.head['runs']} runs; wrote {files} in {took / 60:.1f} min")
        else:
            print(f"wrote {files} in {took:.1f} s")


def run_schedules(
    opts: ScheduleOptions,
    open_out: Callable[[], OutputDir],
    *,
    scheduler: str | None = None,
    connect_timeout: float = 10.0,
    progress: Progress | None = None,
) -> ScheduleResult:
    """The study of ``opts`` on the quadratic: ``open_out()`` first, then the problem (generated,
    or loaded from opts.problem) saved there as problem.npz, every variant's learning rate tuned
    per target (the resumable store tuning.sqlite) and evaluated on fresh seeds (store.sqlite),
    with ``schedules.choose`` and ``summarize``. ``scheduler``: a Dask address or None (this
    process); ``progress(description)``: a progress bar for the tuning and the evaluation."""
    if opts.workload is not None or opts.dims is None or opts.seed is None or opts.tune_seeds is None:
        raise ValueError("run_schedules runs the quadratic: its options need dims, seed and tune_seeds, no workload")
    bar = progress or (lambda desc: contextlib.nullcontext(None))
    out = open_out()
    started = time.perf_counter()
    problem = QuadraticProblem.load(opts.problem) if opts.problem else default_problem(opts.dims, opts.seed)
    optimizers = schedules.optimizers_by_name(opts.optimizers)
    variants = tuple(schedules.default_variants(problem, o, opts.schedules, multipliers=opts.multipliers)
                     for o in optimizers)  # fmt: skip
    exp = schedules.ScheduleExperiment(problem, optimizers, variants, opts.targets, opts.seeds, opts.tune_seeds,
                                       opts.seed, opts.max_steps)  # fmt: skip
    problem.save(out / "problem.npz")
    digest = problem.digest()

    def run(tasks: list[dict], store: str, desc: str) -> list[dict]:
        with bar(desc) as tick:
            return run_sweep(
                schedules.run_task, tasks, params={"problem_sha256": digest}, store=out.final(store),
                scheduler=scheduler, workers=None if scheduler else 1, shared=problem, progress=tick,
                connect_timeout=connect_timeout,
            )  # fmt: skip

    chosen = schedules.choose(exp, run(exp.tune_tasks(), "tuning.sqlite", "tuning"))
    rows = run(exp.eval_tasks(chosen), "store.sqlite", "evaluation")
    head = {
        "dims": problem.dim, "initial_loss": exp.initial_loss, "seed": opts.seed, "seeds": opts.seeds,
        "tune_seeds": opts.tune_seeds, "target_fractions": list(exp.target_fractions),
        "optimizers": [o.label for o in optimizers],
    }  # fmt: skip
    return ScheduleResult(opts, rows, schedules.summarize(exp, rows, chosen), head, {},
                          lambda: schedules.schedule_traces(exp, chosen),
                          f"tuned for target {exp.target_fractions[-1]:g} L0", started)  # fmt: skip


def _g(x: float | None, fmt: str = ".3g", width: int = 9) -> str:
    return f"{x:>{width}{fmt}}" if x is not None and np.isfinite(x) else f"{'-':>{width}}"


def _pm(x: float | None, se: float | None) -> str:
    if x is None:
        return f"{'-':>13}"
    return f"{100 * x:+6.0f}% +-{'-' if se is None else f'{100 * se:.0f}':>3}"


def print_table(entries: Sequence[dict]) -> None:
    """Per optimizer and target, each variant's S, E and savings against the front (``summarize``'s entries)."""
    head = (f"  {'schedule':<10}{'variant':<24}{'k / lr':>9}{'S':>8}{'E':>11}  {'E saved at = S':>13}  "
            f"{'S saved at = E':>13}")  # fmt: skip
    last = None
    for e in entries:
        if (e["label"], e["target_loss"]) != last:
            last = (e["label"], e["target_loss"])
            target = (f"target {e['target_fraction']:g} of the initial loss" if "target_fraction" in e
                      else f"target loss {e['target_loss']:g}")  # fmt: skip
            print(f"\n{e['label']}, {target}")
            print(head)
        dom = " dominated by a constant B" + (" (>5% in both)" if e["front_dominates_5pct"] else "") if (
            e["front_dominates"] and e["schedule"] != "constant") else ""  # fmt: skip
        reached = "" if e["reached"] == e["seeds"] else f" ({e['reached']}/{e['seeds']} reached)"
        print(f"  {e['schedule']:<10}{e['variant']:<24}{_g(e['lr'])}{_g(e['median_steps'], '.0f', 8)}"
              f"{_g(e['median_examples'], '.0f', 11)}  {_pm(e['examples_saving'], e['examples_saving_se'])}  "
              f"{_pm(e['steps_saving'], e['steps_saving_se'])}{dom}{reached}")  # fmt: skip
    print(
        "\n(S, E: medians over seeds; savings against the constant-batch front, interpolated in log-log; "
        "+-: bootstrap s.e.)"
    )
