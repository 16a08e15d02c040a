"""Variants of the oracle schedule against the constant-batch front, for one optimizer: how much
the averaging of eq 14's off-diagonal sum (StepRule beta) and the learning-rate rule (k eq 9, or
one tuned constant lr) change the oracle B_t = c B_noise(theta_t) (README, "Schedules that follow
the surge": the Adam finding).

    python examples/oracle_variants.py          # Adam, default problem (d = 256): 30 variants
    python examples/oracle_variants.py --optimizer sign --betas 0.9 --multipliers 2

Prints the constant front (median S and E per batch size at its tuned lr) and, per variant and
target, S, E, the saving in E at equal S and whether a constant batch size beats it by more than
5% in both S and E. The protocol is sims.schedules' (tuned on --tune-seeds runs, evaluated on
--seeds fresh runs). Its measured run time: README, section "Schedules that follow the surge".
"""

from __future__ import annotations

import argparse

import numpy as np

from surgesim import dynamics, schedules
from surgesim.kernels.dynamics import StepRule


def variants(problem, optimizer, betas, multipliers, batch_max):
    """The constant front of ``schedules.default_variants`` plus the oracle for every (beta, c,
    lr rule): ``optimal`` tunes k on the oracle's multiplier grid, ``constant`` an lr on a 16-point
    grid spanning the front's."""
    base = schedules.default_variants(problem, optimizer, ("constant", "oracle"), multipliers=(1.0,))
    const = [v for v in base if v.schedule == "constant"]
    ks = next(v for v in base if v.schedule == "oracle").lrs
    lo, hi = min(min(v.lrs) for v in const), max(max(v.lrs) for v in const)
    grid = tuple(np.geomspace(lo, hi, 16))
    out = list(const)
    for lr_rule, lrs in (("optimal", ks), ("constant", grid)):
        for beta in betas:
            for c in multipliers:
                rule = StepRule(lr_rule, "noise", batch_min=1.0, batch_max=batch_max, beta=beta)
                out.append(schedules.Variant("oracle", f"{lr_rule} beta={beta:g} c={c:g}", rule, float(c), lrs))
    return tuple(out)


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--optimizer", default="adam", choices=("sign", "adam"))
    p.add_argument("--dims", type=int, default=256)
    p.add_argument("--betas", type=floats, default=[0.9, 0.98, 0.995])
    p.add_argument("--multipliers", type=floats, default=[0.125, 0.25, 0.5, 1.0, 2.0])
    p.add_argument("--seeds", type=int, default=16)
    p.add_argument("--tune-seeds", type=int, default=8)
    p.add_argument("--max-steps", type=int, default=3000)
    args = p.parse_args()
    problem = dynamics.default_problem(args.dims, 0)
    (opt,) = schedules.optimizers_by_name([args.optimizer])
    vs = variants(problem, opt, args.betas, args.multipliers, batch_max=8192.0)
    exp = schedules.ScheduleExperiment(problem, (opt,), (vs,), seeds=args.seeds, tune_seeds=args.tune_seeds,
                                       max_steps=args.max_steps)  # fmt: skip
    tune = [r for task in exp.tune_tasks() for r in schedules.run_task(task, problem)]
    chosen = schedules.choose(exp, tune)
    rows = [r for task in exp.eval_tasks(chosen) for r in schedules.run_task(task, problem)]

    def num(x, fmt):
        return format(x, fmt) if x is not None else "-"

    for e in schedules.summarize(exp, rows, chosen):
        kind = "front" if e["schedule"] == "constant" else "oracle"
        dominated = "" if kind == "front" else f" dominated>5%={e['front_dominates_5pct']}"
        print(f"{e['optimizer']} target={e['target_fraction']:g} {kind} {e['variant']:<30} "
              f"S={num(e['median_steps'], '.1f')} E={num(e['median_examples'], '.0f')} "
              f"E_saved={num(e['examples_saving'], '+.2f')}{dominated}")  # fmt: skip


if __name__ == "__main__":
    main()
