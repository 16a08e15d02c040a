"""Schedules on a network (``surgesim.workloads.schedules``) and ``python -m sims.schedules
--workload``: the constant rule is the grid's run, the geometric rule's traces, the half-batch
noise-scale estimates against a quadratic whose answer is known, the example count, and the CLI."""

from __future__ import annotations

import csv
import dataclasses
import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from surgesim.problem import QuadraticProblem  # noqa: E402
from surgesim.workloads import protocol  # noqa: E402
from surgesim.workloads import schedules as ws  # noqa: E402
from surgesim.workloads.quadratic import GaussianExamples, QuadraticModel, mean_loss  # noqa: E402

# A tiny CNN run on the demo digits: the loss falls from ln 10 = 2.30 past 2.2 and 2.0 within 30
# steps at lr 1e-3 (checked by the tests that use it: a target not reached fails them).
TINY = protocol.RunSpec(workload="cnn", lr=1e-3, batch_size=8, seed=1, targets=(2.2, 2.0), further_steps=0,
                        max_steps=30, eval_examples=32)  # fmt: skip


def _task(rule: ws.ScheduleRule, batch: float, spec=TINY, schedule="constant", label="x") -> dict:
    spec = dataclasses.replace(spec, batch_size=rule.start_batch(batch))
    return {"optimizer": "adam", "schedule": schedule, "variant": label, "batch": batch,
            "rule": dataclasses.asdict(rule), "spec": spec.to_params()}  # fmt: skip


def test_constant_rule_is_the_grid_run_bit_for_bit():
    # Same spec, same stream: the rows of protocol.run_task and the schedule's rows agree exactly
    # in S, E = B S, and the weights after 12 steps are identical tensors.
    grid = protocol.run_task(TINY.to_params())
    mine = ws.run_task(_task(ws.ScheduleRule(), 8.0))
    assert [r["steps"] for r in grid] == [r["steps"] for r in mine]
    assert all(r["steps"] is not None for r in mine), "the tiny run must reach its targets"
    assert [r["examples"] for r in grid] == [r["examples"] for r in mine]
    a, b = protocol.Trainer(TINY), ws.ScheduleTrainer(TINY, ws.ScheduleRule(), 8.0)
    for _ in range(12):
        a.step()
        b.step()
    for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_geometric_rule_traces_and_examples_are_exact():
    rule = ws.ScheduleRule("geometric", interval=2, batch_factor=2.0, lr_factor=0.5, batch_max=16)
    spec = dataclasses.replace(TINY, batch_size=3, lr=1e-3)
    t = ws.ScheduleTrainer(spec, rule, 3.0)
    for _ in range(9):
        t.step()
    assert t.batch_trace == [3, 3, 6, 6, 12, 12, 16, 16, 16]  # 24 clipped to batch_max 16
    assert t.lr_trace == [1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 2.5e-4, 1.25e-4, 1.25e-4, 6.25e-5]
    assert t.examples == [0, 3, 6, 12, 18, 30, 42, 58, 74, 90]
    assert t.examples_at(2.5) == 9.0 and math.isnan(t.examples_at(math.nan))
    assert [g["lr"] for g in t.optimizer.param_groups] == [6.25e-5]  # the optimizer stepped with lr_t


class _Counting:
    """The dataset, counting the examples drawn."""

    def __init__(self, data) -> None:
        self.data, self.drawn = data, 0

    def __getattr__(self, name):
        return getattr(self.data, name)

    def sample(self, gen, b):
        self.drawn += b
        return self.data.sample(gen, b)


@pytest.mark.parametrize("batch", ["simple", "critical"])
def test_examples_are_the_sum_of_the_batch_sizes_and_no_more(batch):
    rule = ws.ScheduleRule(batch, batch_min=2, batch_max=64, batch_start=4, warmup=2, hvp_every=2)
    t = ws.ScheduleTrainer(dataclasses.replace(TINY, batch_size=4), rule, 1.0)
    t.data = _Counting(t.data)
    for _ in range(10):
        t.step()
    assert t.batch_trace[:2] == [4, 4] and all(2 <= b <= 64 for b in t.batch_trace)
    assert t.data.drawn == sum(t.batch_trace) == t.examples[-1]
    assert t.lr_trace == [TINY.lr] * 10


def test_run_task_is_a_pure_function_of_its_params():
    rule = ws.ScheduleRule("simple", batch_min=2, batch_max=32, batch_start=4, warmup=2)
    task = _task(rule, 1.0, schedule="online", label="c=1")
    first, second = ws.run_task(task), ws.run_task(json.loads(json.dumps(task)))
    assert first == second
    assert first[0]["seed"] == 1 and "batch_trace" not in first[0]  # traces only for seed 0
    zero = ws.run_task(_task(rule, 1.0, spec=dataclasses.replace(TINY, seed=0)))
    assert len(zero[0]["batch_trace"]) == len(zero[0]["lr_trace"]) >= math.ceil(zero[-1]["steps"])
    assert not any("batch_trace" in r for r in zero[1:])  # once per run, not per target


def _problem():
    g = np.random.default_rng(3)
    d = 6
    a = g.normal(size=(d, d))
    return QuadraticProblem(g.normal(size=d) * 0.5, g.uniform(0.5, 2.0, d), a @ a.T / d + np.eye(d))


def test_half_batch_estimates_are_unbiased_on_a_known_quadratic():
    # Known answer: at theta = 0 the per-example gradients are exactly N(mu, diag(sigma^2)) and
    # the Hessian is H, so E[g1'g2] = |mu|^2, E[|g1 - g2|^2 / (1/n1 + 1/n2)] = sum sigma^2,
    # E[d'Hd / (1/n1 + 1/n2)] = sum H_ii sigma_i^2 and E[g1'H g2] = mu'H mu. B = 5 (halves of 2
    # and 3) checks the unequal weights. Each mean is compared with its truth within 4 standard
    # errors of the replicate mean (a false alarm in about 1 run in 16,000 per quantity).
    p = _problem()
    model, data = QuadraticModel(p), GaussianExamples(p.sigma**2)
    H = np.asarray(p.hessian.matrix)
    truth = {"g_squared": p.mu @ p.mu, "trace_sigma": np.sum(p.sigma**2),
             "trace_h_sigma": np.sum(np.diag(H) * p.sigma**2), "g_h_g": p.mu @ H @ p.mu}  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    reps = []
    for _ in range(3000):
        x, y = data.draw(gen, 5)
        model.zero_grad(set_to_none=True)
        reps.append(ws.half_batch_estimates(model, mean_loss, x, y, curvature=True))
    # the gradient left in .grad is the minibatch's mean-loss gradient (last replicate)
    full = torch.autograd.grad(mean_loss(model(x), y), [model.theta])[0]
    torch.testing.assert_close(model.theta.grad, full, rtol=1e-12, atol=1e-14)
    for key, value in truth.items():
        v = np.array([r[key] for r in reps])
        se = v.std(ddof=1) / math.sqrt(v.size)
        assert abs(v.mean() - value) < 4 * se, (key, v.mean(), value, se)
    # B_simple as a ratio of means: within 4 delta-method standard errors of tr(Sigma) / |mu|^2
    n, s = np.array([r["trace_sigma"] for r in reps]), np.array([r["g_squared"] for r in reps])
    ratio = n.mean() / s.mean()
    resid = (n - ratio * s) / s.mean()
    assert abs(ratio - truth["trace_sigma"] / truth["g_squared"]) < 4 * resid.std(ddof=1) / math.sqrt(n.size)


def test_running_averages_are_bias_corrected_exponential_means():
    est = ws.NoiseScaleEstimator(0.9)
    values = [3.0, -1.0, 2.0, 5.0]
    for v in values:
        est.update({"trace_sigma": v, "g_squared": 2.0})
    w = 0.9 ** np.arange(len(values))[::-1]  # weight of value i: 0.9^(n - 1 - i)
    assert est.average("trace_sigma") == pytest.approx(np.dot(w, values) / w.sum(), rel=1e-14)
    assert est.b_simple == pytest.approx(np.dot(w, values) / w.sum() / 2.0, rel=1e-14)
    assert math.isnan(est.b_crit)  # no curvature update yet
    est.update({"trace_h_sigma": 1.0, "g_h_g": -1.0})
    assert math.isnan(est.b_crit)  # a non-positive denominator gives no estimate


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: ws.ScheduleRule("cosine"), "batch rule must be one of"),
        (lambda: ws.ScheduleRule("simple", batch_min=1), "batch_min=1 must be an integer >= 2"),
        (lambda: ws.ScheduleRule("geometric", lr_factor=0.0), "lr_factor=0.0 must be finite and > 0"),
        (lambda: ws.default_variants(["constant", "online"], [1e-3], [4, 8], multipliers=[0.0]), "c must be"),
        (lambda: ws.default_variants(["oracle"], [1e-3], [4]), "unknown schedule 'oracle' on a network"),
        (lambda: ws.ScheduleTrainer(TINY, ws.ScheduleRule(), -1.0), "must be finite and > 0, got -1.0"),
        (lambda: ws.half_batch_estimates(None, None, torch.zeros(1, 2), torch.zeros(1)), "B >= 2, got 1"),
    ],
)
def test_bad_values_raise_value_error(make, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        make()


TINY_CLI = ["--workload", "cnn", "--demo", "--lrs", "1e-3", "--batch-sizes", "4,8", "--multipliers", "1",
            "--seeds", "2", "--targets", "2.2", "--max-steps", "30", "--workers", "1"]  # fmt: skip


def test_cli_end_to_end_and_resume(tmp_path, capsys, monkeypatch):
    from sims import schedules as cli

    out = tmp_path / "o"
    assert cli.main([*TINY_CLI, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "target loss 2.2" in printed
    with open(out / "schedules.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # 2 constant + online + critical + geometric variants, 1 lr, 2 seeds, 1 target
    assert len(rows) == 5 * 2
    assert {r["schedule"] for r in rows} == {"constant", "online", "critical", "geometric"}
    const = [r for r in rows if r["schedule"] == "constant"]
    assert all(r["steps"] != "" for r in const), "the tiny runs must reach the target"
    assert all(float(r["examples"]) == float(r["steps"]) * float(r["batch_size"]) for r in const)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["workload"] == "cnn" and summary["targets"] == [2.2] and summary["runs"] == 10
    assert len(summary["results"]) == 5 and all("target_fraction" not in e for e in summary["results"])
    assert (out / "schedules_front.png").exists() and (out / "schedules_traces.png").exists()
    # resume: every task is in the store, so a second run trains nothing and writes the same rows
    before = (out / "schedules.csv").read_text()

    def no_training(params):
        raise AssertionError("a finished task ran again")

    monkeypatch.setattr(ws, "run_task", no_training)
    assert cli.main([*TINY_CLI, "--out", str(out), "--quiet", "--no-plot"]) == 0
    assert (out / "schedules.csv").read_text() == before and capsys.readouterr().out == ""


@pytest.mark.parametrize(
    "argv, message",
    [
        ([*TINY_CLI, "--schedules", "constant,cosine"], "unknown 'cosine'"),
        ([*TINY_CLI, "--schedules", "constant,oracle"], "oracle needs the exact state"),
        ([*TINY_CLI, "--multipliers", "0"], "--multipliers must be finite and > 0"),
        ([*TINY_CLI, "--dims", "16"], "--dims is for the quadratic, not --workload"),
        ([*TINY_CLI, "--tune-seeds", "2"], "--tune-seeds is for the quadratic"),
        ([*TINY_CLI, "--seed", "3"], "--seed is for the quadratic"),
        ([*TINY_CLI, "--targets", "0"], "--targets must be training losses > 0"),
        (["--demo"], "--demo needs --workload"),
        (["--lrs", "1e-3"], "--lrs needs --workload"),
        (["--workload", "cnn", "--data-dir", "/nonexistent/fashion"], "not found in /nonexistent/fashion"),
    ],
)
def test_cli_bad_input_is_one_error_line(tmp_path, capsys, argv, message):
    from sims import schedules as cli

    status = cli.main([*argv, "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "o").exists()
