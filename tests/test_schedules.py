"""Schedules (``surgesim.schedules``): the known answers, the front comparison, the protocol and
``python -m sims.schedules``. The variable-batch kernels against the NumPy reference, step for
step, are in test_dynamics.py (``test_step_rules_match_numpy_reference_step_by_step``)."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from surgesim import dynamics, schedules, theory
from surgesim.hessian import DiagonalPlusLowRank
from surgesim.kernels.dynamics import Optimizer, StepRule, run_trajectories, trajectory_key
from surgesim.problem import QuadraticProblem


def _weak_coupling_problem(d=32, seed=0):
    """H = I + u u' with |u| tiny: eq 14's B_noise ~ 1e6 or more everywhere near the start."""
    g = np.random.default_rng(seed)
    s = g.choice([-1.0, 1.0], d)
    mu = s * 0.05 * np.exp(g.uniform(-0.3, 0.3, d))
    return QuadraticProblem(mu, np.ones(d), DiagonalPlusLowRank(np.ones(d), (s * 1e-3)[:, None]))


@pytest.mark.parametrize("opt", ["sign", "adam"])
def test_oracle_reduces_to_the_constant_batch_it_is_clipped_to(opt):
    # Known answer: where c B_noise(theta_t) stays above batch_max at every step (B_noise ~ 1e6
    # here, checked along the run), the oracle is the constant batch size batch_max with the per-step
    # optimal learning rate: the same trajectory, bit for bit, as StepRule("optimal") at that B.
    p = _weak_coupling_problem()
    assert theory.noise_batch_size(p.mu, p.sigma, p.hessian) > 1e5
    delta0 = dynamics.initial_delta(p)
    keys = np.array([trajectory_key(3, 0, r) for r in range(4)], dtype=np.uint64)
    o = dynamics.DEFAULT_OPTIMIZERS[opt]
    kw = dict(max_steps=200, min_steps=200, trace_steps=201)
    oracle = run_trajectories(p.hessian, p.sigma, delta0, keys, 0.7, 1.0, o, rule=StepRule("optimal", "noise",
                              batch_max=64.0), **kw)  # fmt: skip
    const = run_trajectories(p.hessian, p.sigma, delta0, keys, 0.7, 64.0, o, rule=StepRule("optimal"), **kw)
    assert np.all(oracle.batch_trace[:, :200] == 64.0)
    np.testing.assert_array_equal(oracle.trace, const.trace)
    np.testing.assert_array_equal(oracle.lr_trace, const.lr_trace)
    # and the first step is eq 9 at B = 64 at the start (the one-step theory), rtol 1e-12
    assert oracle.lr_trace[0, 0] == pytest.approx(0.7 * float(theory.optimal_lr(64.0, p.mu, p.sigma, p.hessian)),
                                                  rel=1e-12)  # fmt: skip


def test_oracle_first_batch_is_c_times_eq14_at_the_start():
    # At step 0 the average of the off-diagonal sum is the start's own: B_0 = round(c B_noise(theta0)).
    p = dynamics.default_problem(64, seed=1)
    delta0 = dynamics.initial_delta(p)
    bn = theory.noise_batch_size(p.mu, p.sigma, p.hessian)
    for c in (0.5, 1.0, 3.0):
        res = run_trajectories(p.hessian, p.sigma, delta0, [trajectory_key(0, 0, 0)], 1.0, c, Optimizer("sign"),
                               max_steps=1, min_steps=1, trace_steps=2, rule=StepRule("optimal", "noise"))  # fmt: skip
        assert res.batch_trace[0, 0] == np.floor(c * bn + 0.5)


def test_front_savings_on_a_known_front():
    # Front points on S E = const (a straight line in log-log): a point at (S, E) with E = k S^-1
    # saves 1 - k' / k exactly in E; points off the range give nan; domination is checked by hand.
    fs = np.array([10.0, 20.0, 40.0, 80.0])
    fe = 8000.0 / fs
    on = schedules.front_savings(fs, fe, 30.0, 8000.0 / 30.0)
    assert on["examples_saving"] == pytest.approx(0.0, abs=1e-12) and on["steps_saving"] == pytest.approx(
        0.0, abs=1e-12
    )
    better = schedules.front_savings(fs, fe, 30.0, 0.8 * 8000.0 / 30.0)
    assert better["examples_saving"] == pytest.approx(0.2, rel=1e-12)
    assert better["steps_saving"] == pytest.approx(0.2, rel=1e-12)  # S E = 0.8 * 8000: S_front(E) = S / 0.8
    assert not better["dominated"] and not better["dominated_5pct"]
    worse = schedules.front_savings(fs, fe, 40.0, 400.0)  # the front's (40, 200) beats it in E at equal S
    assert worse["dominated"] and not worse["dominated_5pct"] and worse["examples_saving"] == pytest.approx(-1.0)
    far = schedules.front_savings(fs, fe, 5.0, 10.0)  # fewer steps and examples than any constant point
    assert math.isnan(far["examples_saving"]) and math.isnan(far["steps_saving"])
    beyond = schedules.front_savings(fs, fe, 160.0, 50.0)  # past the front's largest S: E_front = 100
    assert beyond["examples_saving"] == pytest.approx(0.5, rel=1e-12) and math.isnan(beyond["steps_saving"])
    # a dominated (non-efficient) constant point does not bend the front
    with_bad = schedules.front_savings(np.append(fs, 30.0), np.append(fe, 1000.0), 30.0, 8000.0 / 30.0)
    assert with_bad["examples_saving"] == pytest.approx(0.0, abs=1e-12)


def _tiny_experiment():
    p = dynamics.default_problem(32, seed=2)
    opts = schedules.optimizers_by_name(["sign"])
    vs = schedules.default_variants(p, opts[0], batch_sizes=(4, 16, 64), multipliers=(1.0,), lr_points=4)
    return schedules.ScheduleExperiment(p, opts, (vs,), (0.5, 0.3), seeds=4, tune_seeds=2, max_steps=400)


def test_protocol_tunes_by_fewest_mean_steps_and_summarizes():
    exp = _tiny_experiment()
    assert {v.schedule for v in exp.variants[0]} == set(schedules.SCHEDULES)
    tune = [r for t in exp.tune_tasks() for r in schedules.run_task(t, exp.problem)]
    chosen = schedules.choose(exp, tune)
    # by hand for one variant and target: the lr with the fewest mean steps (never reached: inf)
    v = exp.variants[0][1]
    target = exp.targets[1]
    mine = [r for r in tune if r["variant"] == v.label and r["schedule"] == v.schedule
            and r["target_loss"] == target]  # fmt: skip
    means = {x: np.mean([math.inf if r["steps"] is None else r["steps"] for r in mine if r["lr"] == x])
             for x in v.lrs}  # fmt: skip
    best = min(means, key=means.get)
    assert chosen[("sign", v.schedule, v.label, exp.target_fractions[1])] == (
        best if np.isfinite(means[best]) else None
    )
    tasks = exp.eval_tasks(chosen)
    assert json.loads(json.dumps(tasks)) == tasks
    rows = [r for t in tasks for r in schedules.run_task(t, exp.problem)]
    assert all(tuple(r) == schedules.ROW_COLUMNS for r in rows)
    for r in rows:
        if r["steps"] is not None and r["schedule"] == "constant":
            assert r["examples"] == r["steps"] * r["batch_size"]
    entries = schedules.summarize(exp, rows, chosen)
    assert len(entries) == len(exp.variants[0]) * 2
    json.dumps(entries, allow_nan=False)
    for e in entries:
        if e["median_steps"] is not None:
            S = [r["steps"] for r in rows if r["variant"] == e["variant"] and r["schedule"] == e["schedule"]
                 and r["lr"] == e["lr"] and r["target_loss"] == e["target_loss"]]  # fmt: skip
            assert e["median_steps"] == np.median([math.inf if s is None else s for s in S])


def test_run_task_is_deterministic():
    exp = _tiny_experiment()
    task = exp.tune_tasks()[5]
    assert schedules.run_task(task, exp.problem) == schedules.run_task(json.loads(json.dumps(task)), exp.problem)


def test_variant_and_experiment_reject_bad_input():
    p = dynamics.default_problem(16)
    with pytest.raises(ValueError, match="unknown schedule 'cosine'"):
        schedules.default_variants(p, Optimizer("sign"), ("constant", "cosine"))
    with pytest.raises(ValueError, match="multipliers c must be finite and > 0"):
        schedules.default_variants(p, Optimizer("sign"), multipliers=(0.0,))
    vs = schedules.default_variants(p, Optimizer("sign"), ("constant",), batch_sizes=(4, 8), lr_points=3)
    with pytest.raises(ValueError, match="target fractions"):
        schedules.ScheduleExperiment(p, (Optimizer("sign"),), (vs,), (0.5, 1.2))


# --- python -m sims.schedules ------------------------------------------------------------------


def test_sims_schedules_writes_outputs_and_resumes(tmp_path, capsys):
    from sims import schedules as cli

    out = tmp_path / "out"
    argv = ["--out", str(out), "--dims", "16", "--seeds", "3", "--tune-seeds", "2", "--max-steps", "300",
            "--targets", "0.5,0.3", "--optimizers", "sign", "--multipliers", "1"]  # fmt: skip
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "E saved at = S" in printed
    with open(out / "schedules.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {"schedule", "optimizer", "target_loss", "seed", "steps", "examples"} <= set(rows[0])
    assert {r["schedule"] for r in rows} == set(schedules.SCHEDULES)
    summary = json.loads((out / "summary.json").read_text())
    keys = ("schedule", "variant", "target_loss", "median_steps", "median_steps_se", "median_examples",
            "median_examples_se", "examples_saving", "examples_saving_se", "steps_saving", "steps_saving_se",
            "front_dominates", "front_dominates_5pct")  # fmt: skip
    assert all(k in e for e in summary["results"] for k in keys)
    # the values, from the table by hand: medians over seeds (a missed target counts as never),
    # E = B S for constant batches, and no constant batch saves against the front it is part of
    for r in rows:
        if r["schedule"] == "constant" and r["steps"]:
            assert float(r["examples"]) == float(r["steps"]) * float(r["batch_size"])
    for e in summary["results"]:
        mine = [r for r in rows if r["schedule"] == e["schedule"] and r["variant"] == e["variant"]
                and float(r["lr"]) == e["lr"] and math.isclose(float(r["target_loss"]), e["target_loss"])]  # fmt: skip
        assert len(mine) == 3
        S = np.median([float(r["steps"]) if r["steps"] else math.inf for r in mine])
        assert (e["median_steps"] is None) if math.isinf(S) else e["median_steps"] == S
        if e["schedule"] == "constant" and e["examples_saving"] is not None:
            assert e["examples_saving"] <= 1e-12
    assert (out / "schedules_front.png").exists() and (out / "schedules_traces.png").exists()
    before = (out / "schedules.csv").read_text()
    assert cli.main([*argv, "--quiet", "--no-plot"]) == 0
    assert (out / "schedules.csv").read_text() == before and capsys.readouterr().out == ""


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--schedules", "constant,cosine"], "unknown 'cosine'"),
        (["--schedules", "oracle"], "must include constant"),
        (["--multipliers", "0,1"], "--multipliers must be finite and > 0"),
        (["--targets", "0.5,1.5"], "--targets must be distinct fractions"),
        (["--optimizers", "lion"], "unknown 'lion'"),
        (["--workload", "cnn"], "pass --data-dir DIR (the real cnn data) or --demo"),
        (["--workload", "gpt", "--demo"], "sized for cnn only"),
        (["--seeds", "1"], "--seeds must be >= 2"),
    ],
)
def test_sims_schedules_bad_input_is_one_error_line(tmp_path, capsys, argv, message):
    from sims import schedules as cli

    status = cli.main(["--out", str(tmp_path), "--quiet", *argv])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err


def test_unreached_targets_are_reported_not_raised(tmp_path):
    from sims import schedules as cli

    out = tmp_path / "o"
    assert cli.main(["--out", str(out), "--dims", "16", "--seeds", "2", "--tune-seeds", "1", "--max-steps", "2",
                     "--targets", "0.1", "--optimizers", "sign", "--schedules", "constant,oracle", "--multipliers",
                     "1", "--quiet", "--no-plot"]) == 0  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert all(e["reached"] == 0 and e["median_steps"] is None for e in summary["results"])
