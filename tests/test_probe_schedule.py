"""The Adam schedule on the quadratic (``surgesim.probe_schedule``): its (B_t, lr_t) against the
predictor computed independently (``momentum.adam_noise_batch_size``), its re-probing rule
against an independent replay of its first phase, and its place in ``surgesim.schedules``,
``python -m sims.schedules`` and the front figure."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from surgesim import dynamics, schedules
from surgesim.kernels.dynamics import run_trajectories, trajectory_key
from surgesim.momentum import RunState, adam_noise_batch_size
from surgesim.probe_schedule import (
    ProbeRule,
    lr_on_curve,
    phase_key,
    phase_setting,
    probe_seed,
    run_probe_schedule,
)

ADAM = dynamics.DEFAULT_OPTIMIZERS["adam"]
RULE = ProbeRule(interval=5, batch_min=1.0, batch_max=4096.0, batch_sizes=(4, 16, 64, 256, 1024, 4096), trials=4)


def _start(p):
    d0 = dynamics.initial_delta(p)
    z = np.zeros_like(d0)
    return RunState(d0, z, z, 0, 0.5 * float(d0 @ p.hessian.matvec(d0)))


def _expected(p, state, c, k, seed, rule=RULE):
    """B_t and lr_t written out from the predictor: round(c B_adam) clipped, k times lr*_T(B_t)
    interpolated in (log B, log lr) between the probe's optima inside its lr grid."""
    pred = adam_noise_batch_size(p, ADAM, [state], rule.batch_sizes, 4, rule.trials, seed)
    b = min(max(math.floor(c * pred.noise_batch_size + 0.5), rule.batch_min), rule.batch_max)
    pr = pred.probe
    ok = np.isfinite(pr.lr_opt) & ~pr.at_edge
    lr = k * math.exp(np.interp(math.log(b), np.log(pr.batch_sizes[ok]), np.log(pr.lr_opt[ok])))
    return float(b), lr, pred.noise_batch_size


@pytest.mark.parametrize("c,k", [(1.0, 1.0), (0.5, 2.0), (2.0, 0.7)])
def test_phase_setting_is_c_times_the_adam_predictor_and_k_times_its_lr_curve(c, k):
    p = dynamics.default_problem(16, 1)
    st = _start(p)
    got = phase_setting(p, ADAM, st, RULE, c, k, seed=11)
    b, lr, bn = _expected(p, st, c, k, 11)
    assert got.noise_batch_size == bn and 4 < bn < 4096  # an interior prediction: the rule is exercised
    assert got.batch_size == b  # a factor 2 (or any other) planted in B_t = c B_adam fails here
    assert got.lr == pytest.approx(lr, rel=1e-12)
    if c != 1.0:  # the multiplier moves B_t, not only the predictor
        assert got.batch_size != phase_setting(p, ADAM, st, RULE, 1.0, k, seed=11).batch_size


def test_lr_on_curve_interpolates_in_log_log_and_is_flat_past_the_ends():
    bs, lr = [4.0, 16.0, 64.0], [1e-3, 4e-3, 2e-3]
    assert lr_on_curve(bs, lr, [False] * 3, 8.0) == pytest.approx(2e-3)  # half-way in log B: sqrt(1e-3 * 4e-3)
    assert lr_on_curve(bs, lr, [False] * 3, 1.0) == pytest.approx(1e-3)
    assert lr_on_curve(bs, lr, [False] * 3, 1e6) == pytest.approx(2e-3)
    assert lr_on_curve(bs, lr, [True, False, False], 4.0) == pytest.approx(4e-3)  # an edge optimum is a bound only
    assert math.isnan(lr_on_curve(bs, [np.nan] * 3, [False] * 3, 8.0))


def test_run_steps_at_the_probed_setting_and_reprobes_after_the_loss_falls():
    p = dynamics.default_problem(16, 1)
    key = int(trajectory_key(0, 0, 3))
    st = _start(p)
    L0 = st.loss
    targets = [0.5 * L0, 0.25 * L0]
    run = run_probe_schedule(p, ADAM, RULE, 1.0, 1.0, key, st.delta, targets, 400, trace_steps=400)
    b0, lr0, _ = _expected(p, st, 1.0, 1.0, probe_seed(key, 0))
    assert run.batch_trace[0] == b0 and run.lr_trace[0] == pytest.approx(lr0, rel=1e-12)
    # replay the first phase independently: interval steps of the kernel at (b0, lr0), fresh Adam
    res = run_trajectories(p.hessian, p.sigma, st.delta, np.array([phase_key(key, 0)]), lr0, b0, ADAM,
                           max_steps=RULE.interval, min_steps=RULE.interval)  # fmt: skip
    d1 = res.delta[0]
    L1 = 0.5 * float(d1 @ p.hessian.matvec(d1))
    s1 = RULE.interval
    if L1 <= RULE.loss_factor * L0:  # re-probed at the new state, buffers and step count carried
        b1, lr1, _ = _expected(p, RunState(d1, res.m[0], res.v[0], s1, L1), 1.0, 1.0, probe_seed(key, 1))
    else:
        b1, lr1 = b0, lr0
    assert run.batch_trace[s1] == b1 and run.lr_trace[s1] == pytest.approx(lr1, rel=1e-12)
    assert np.all(run.steps > 0) and run.probes >= 2
    for j in range(2):  # examples = sum of B_t over the steps taken to the target
        assert run.examples[j] == pytest.approx(np.sum(run.batch_trace[: run.steps[j]]))
    assert np.all(np.isnan(run.batch_trace[run.n_steps :]))
    again = run_probe_schedule(p, ADAM, RULE, 1.0, 1.0, key, st.delta, targets, 400)
    np.testing.assert_array_equal(again.steps, run.steps)  # a pure function of its arguments


def test_probe_rule_rejects_bad_values():
    for kw, msg in (({"interval": 0}, "interval"), ({"loss_factor": 0.0}, "loss_factor"),
                    ({"batch_min": 8.0, "batch_max": 4.0}, "batch_min"), ({"batch_sizes": (4, 8)}, "batch_sizes"),
                    ({"trials": 1}, "trials")):  # fmt: skip
        with pytest.raises(ValueError, match=msg):
            ProbeRule(**kw)
    assert ProbeRule(batch_sizes=(64, 4, 16)).batch_sizes == (4, 16, 64)


def test_probe_variants_run_through_the_schedule_protocol():
    p = dynamics.default_problem(16, 0)
    vs = schedules.default_variants(p, ADAM, ("constant", "probe"), batch_sizes=(4, 16, 64), multipliers=(1.0,),
                                    lr_points=3)  # fmt: skip
    probe = [v for v in vs if v.schedule == "probe"]
    assert [v.label for v in probe] == ["c=1"] and probe[0].lrs == schedules.PROBE_MULTIPLIERS
    assert "probe" not in {v.schedule for v in schedules.default_variants(p, ADAM, batch_sizes=(4, 16, 64))}
    exp = schedules.ScheduleExperiment(p, (ADAM,), (vs,), (0.5,), seeds=2, tune_seeds=2, max_steps=200)
    task = next(t for t in exp.tune_tasks() if t["schedule"] == "probe")
    task = {**task, "lrs": task["lrs"][:2]}
    rows = schedules.run_task(json.loads(json.dumps(task)), p)
    assert rows == schedules.run_task(task, p) and len(rows) == 4
    assert {r["schedule"] for r in rows} == {"probe"} and all(r["steps"] is not None for r in rows)
    for r in rows:  # the row is the run's: rerun it alone
        key = int(trajectory_key(0, 0, (1 << 20) + r["seed"]))
        run = run_probe_schedule(p, ADAM, probe[0].rule, 1.0, r["lr"], key, dynamics.initial_delta(p),
                                 exp.targets, 200)  # fmt: skip
        assert r["steps"] == run.steps[0] and r["examples"] == run.examples[0]


def test_sims_schedules_runs_the_probe_schedule_only_when_named(tmp_path):
    from sims import schedules as cli

    out = tmp_path / "out"
    argv = ["--out", str(out), "--dims", "16", "--seeds", "2", "--tune-seeds", "2", "--max-steps", "200",
            "--targets", "0.5", "--optimizers", "adam", "--multipliers", "1", "--schedules", "constant,probe",
            "--quiet"]  # fmt: skip
    assert cli.main(argv) == 0
    with open(out / "schedules.csv", newline="") as f:
        assert {r["schedule"] for r in csv.DictReader(f)} == {"constant", "probe"}
    summary = json.loads((out / "summary.json").read_text())
    assert {e["variant"] for e in summary["results"] if e["schedule"] == "probe"} == {"c=1"}
    assert (out / "schedules_front.png").is_file()
    args = cli.build_parser().parse_args(["--schedules", "constant,oracle"])
    assert "probe" not in cli.resolve(args).schedules
    assert "probe" not in cli.resolve(cli.build_parser().parse_args([])).schedules


def test_front_figure_draws_the_probe_schedule_as_its_own_labelled_series():
    from surgesim.plots.schedules import SCHEDULE_STYLE, schedules_front_figure

    def entry(schedule, variant, batch, s, e):
        return {
            "label": "adam",
            "target_loss": 1.0,
            "schedule": schedule,
            "variant": variant,
            "batch": batch,
            "median_steps": s,
            "median_steps_se": 1.0,
            "median_examples": e,
            "median_examples_se": 10.0,
        }

    fig = schedules_front_figure(
        [
            entry("constant", "B=8", 8, 50.0, 400.0),
            entry("constant", "B=64", 64, 12.0, 768.0),
            entry("oracle", "c=1", 1.0, 20.0, 700.0),
            entry("probe", "c=1", 1.0, 15.0, 500.0),
        ]
    )
    (ax,) = fig.axes
    (probe,) = [c for c in ax.containers if c.get_label() == "probe c=1"]
    assert tuple(np.ravel(probe.lines[0].get_data())) == (15.0, 500.0)
    assert probe.lines[0].get_color() == SCHEDULE_STYLE["probe"]["color"] != SCHEDULE_STYLE["oracle"]["color"]
    assert "probe c=1" in [t.get_text() for t in fig.legends[0].get_texts()]
