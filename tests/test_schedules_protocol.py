"""The schedules' protocol pinned on constructed rows (``surgesim.schedules``), written from the
protocol's definition (module docstring of ``surgesim.schedules``), not from the code:

- tuning picks the fewest *seed-mean* steps (a missed target counts as never), not the median;
- tuning runs never use the evaluation streams;
- "dominated" needs a constant point at least as good in both S and E and strictly better in one;
- the bootstrap standard errors of the medians are calibrated (z-scores over replications).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from surgesim import dynamics, schedules


def _experiment(labels=("B4",), seeds=5, targets=(1.0,)):
    """The least object ``choose`` and ``summarize`` accept: one optimizer, constant variants."""
    variants = tuple(SimpleNamespace(schedule="constant", label=lab, batch=4.0) for lab in labels)
    return SimpleNamespace(optimizers=(SimpleNamespace(name="sign", label="sign-SGD"),), variants=(variants,),
                           targets=targets, seeds=seeds)  # fmt: skip


def _row(label, lr, seed, steps, target=1.0, batch=4.0):
    examples = None if steps is None else steps * batch
    return {"schedule": "constant", "variant": label, "optimizer": "sign", "target_loss": target, "seed": seed,
            "steps": steps, "examples": examples, "batch_size": batch, "lr": lr}  # fmt: skip


def test_tuning_minimises_the_mean_not_the_median():
    # lr 0.1: steps 10, 10, 100 (median 10, mean 40); lr 0.2: 20, 20, 20 (mean 20): the mean picks 0.2
    rows = [_row("B4", 0.1, r, s) for r, s in enumerate((10, 10, 100))]
    rows += [_row("B4", 0.2, r, 20) for r in range(3)]
    assert schedules.choose(_experiment(), rows) == {("sign", "constant", "B4", 1.0): 0.2}
    # a missed target counts as never: one miss makes the mean infinite, whatever the median
    rows = [_row("B4", 0.1, r, s) for r, s in enumerate((5, 5, None))]
    rows += [_row("B4", 0.2, r, 50) for r in range(3)]
    assert schedules.choose(_experiment(), rows) == {("sign", "constant", "B4", 1.0): 0.2}
    # every lr missed it: None
    rows = [_row("B4", x, r, None) for x in (0.1, 0.2) for r in range(3)]
    assert schedules.choose(_experiment(), rows) == {("sign", "constant", "B4", 1.0): None}


def test_tuning_runs_never_use_the_evaluation_streams(monkeypatch):
    # Record the random-stream keys of every run: the tuning runs' keys and the evaluation runs'
    # keys are disjoint, and every evaluation run r uses the stream (seed, 0, r) whatever its schedule.
    p = dynamics.default_problem(16, seed=2)
    opt = schedules.optimizers_by_name(["sign"])[0]
    vs = schedules.default_variants(p, opt, batch_sizes=(4, 16), multipliers=(1.0,), lr_points=3)
    exp = schedules.ScheduleExperiment(p, (opt,), (vs,), (0.5,), seeds=3, tune_seeds=3, seed=5, max_steps=5)
    keys = {"tune": set(), "eval": set()}
    real = schedules.run_trajectories

    def spy(*args, **kwargs):
        spy.keys.update(int(k) for k in np.asarray(args[3]).ravel())
        return real(*args, **kwargs)

    monkeypatch.setattr(schedules, "run_trajectories", spy)
    for phase, tasks in (("tune", exp.tune_tasks()), ("eval", None)):
        if tasks is None:
            chosen = {(o.name, v.schedule, v.label, f): v.lrs[0] for o in exp.optimizers for v in vs
                      for f in exp.target_fractions}  # fmt: skip
            tasks = exp.eval_tasks(chosen)
        spy.keys = keys[phase]
        for t in tasks:
            schedules.run_task(t, p)
    assert keys["tune"] and keys["eval"] and not keys["tune"] & keys["eval"]
    from surgesim.kernels.dynamics import trajectory_key

    assert keys["eval"] == {int(trajectory_key(5, 0, r)) for r in range(3)}


def test_dominated_needs_a_strictly_better_coordinate():
    fs, fe = np.array([10.0, 20.0, 40.0]), np.array([400.0, 300.0, 250.0])
    # the front's own point: equal in both, not dominated (the strict clause)
    same = schedules.front_savings(fs, fe, 20.0, 300.0)
    assert not same["dominated"] and same["examples_saving"] == pytest.approx(0.0, abs=1e-12)
    # equal S, more E: dominated; equal E, more S: dominated; better in one, worse in the other: not
    assert schedules.front_savings(fs, fe, 20.0, 300.0 * (1 + 1e-9))["dominated"]
    assert schedules.front_savings(fs, fe, 20.0 * (1 + 1e-9), 300.0)["dominated"]
    assert not schedules.front_savings(fs, fe, 15.0, 320.0)["dominated"]
    # 5%: a constant point needs <= 0.95 in both
    assert schedules.front_savings(fs, fe, 20.0 / 0.95, 300.0 / 0.95)["dominated_5pct"]
    assert not schedules.front_savings(fs, fe, 20.0 / 0.95 * (1 - 1e-9), 400.0)["dominated_5pct"]


@pytest.mark.slow
def test_bootstrap_standard_errors_are_calibrated():
    """The reported s.e. of the median steps (and examples) against the true spread of the median,
    computed here by plain simulation (20000 replications), over 150 replications of 25 seeds with
    steps ~ N(1000, 100^2): the root-mean-square s.e. is within [0.85, 1.2] of the truth (measured
    1.04; a s.e. x1.4 or x0.7 gives 1.46 or 0.73; the ratio's own sampling error is about 0.03)."""
    n, reps = 25, 150
    gen = np.random.default_rng(7)
    true_sd = np.std(np.median(gen.normal(1000.0, 100.0, (20000, n)), axis=1))
    exp = _experiment(seeds=n)
    med, se_s, se_e = [], [], []
    for _ in range(reps):
        steps = gen.normal(1000.0, 100.0, n)
        rows = [_row("B4", 0.1, r, float(s)) for r, s in enumerate(steps)]
        (e,) = schedules.summarize(exp, rows, {("sign", "constant", "B4", 1.0): 0.1})
        assert e["median_steps"] == pytest.approx(np.median(steps), rel=1e-12)
        assert e["median_examples"] == pytest.approx(4 * np.median(steps), rel=1e-12)
        med.append(e["median_steps"])
        se_s.append(e["median_steps_se"])
        se_e.append(e["median_examples_se"] / 4)
    z = (np.array(med) - 1000.0) / np.array(se_s)
    assert abs(z.mean()) < 4 * 1.2 / math.sqrt(reps)
    for se in (se_s, se_e):
        assert 0.85 < math.sqrt(np.mean(np.square(se))) / true_sd < 1.2
