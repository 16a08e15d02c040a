"""The network schedules' noise-scale estimates (``surgesim.workloads.schedules``) against their
definitions: the half-batch weight 1/n1 + 1/n2 with unequal halves (B = 3: halves of 1 and 2,
where 4/B would be 11% off), and the curvature averages forgetting at the same rate *per step*
as the others although they are updated only every ``hvp_every`` steps."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from surgesim.hessian import DiagonalPlusLowRank  # noqa: E402
from surgesim.problem import QuadraticProblem  # noqa: E402
from surgesim.workloads import protocol  # noqa: E402
from surgesim.workloads import schedules as ws  # noqa: E402
from surgesim.workloads.quadratic import GaussianExamples, QuadraticModel, mean_loss  # noqa: E402


def test_half_batch_weights_with_unequal_halves():
    """At theta = 0 per-example gradients are N(mu, diag(sigma^2)) and the Hessian H: with B = 3
    E[|g1 - g2|^2] = (1/1 + 1/2) tr(Sigma), so the estimate divided by 1/n1 + 1/n2 is unbiased
    for tr(Sigma), and likewise tr(H Sigma). 2500 replicates: the means within 4 standard errors
    (about 3%: 4/B in place of 1/n1 + 1/n2 is 12.5% off)."""
    rng = np.random.default_rng(4)
    d = 24
    sigma = rng.uniform(0.5, 1.5, d)
    H = DiagonalPlusLowRank(rng.uniform(0.5, 2.0, d), rng.uniform(0.2, 0.6, (d, 1)))
    p = QuadraticProblem(rng.normal(0.0, 0.2, d), sigma, H)
    model, data = QuadraticModel(p), GaussianExamples(sigma**2)
    Hd = H.to_dense()
    truth = {"trace_sigma": np.sum(sigma**2), "trace_h_sigma": np.sum(np.diag(Hd) * sigma**2)}
    gen = torch.Generator().manual_seed(0)
    reps = []
    for _ in range(2500):
        x, y = data.draw(gen, 3)
        model.zero_grad(set_to_none=True)
        reps.append(ws.half_batch_estimates(model, mean_loss, x, y, curvature=True))
    for key, value in truth.items():
        v = np.array([r[key] for r in reps])
        se = v.std(ddof=1) / math.sqrt(v.size)
        assert se < 0.035 * value  # the test can tell 1/n1 + 1/n2 from 4/B
        assert abs(v.mean() - value) < 4 * se, (key, v.mean(), value, se)


def test_curvature_averages_forget_per_step(monkeypatch):
    """Scripted estimates through ScheduleTrainer.step (critical rule, HVPs every 3 steps, beta
    0.8): after 10 steps each average is the beta^(steps since)-weighted mean of what it was fed,
    the curvature terms (fed at steps 0, 3, 6, 9) included: weights 0.8^9, 0.8^6, 0.8^3, 1."""

    def scripted(model, loss_fn, x, y, curvature=False):
        t = len(trainer.batch_trace)
        out = {"trace_sigma": float(t * t), "g_squared": 1.0}
        if curvature:
            out |= {"trace_h_sigma": float(t * t), "g_h_g": 1.0}
        return out

    monkeypatch.setattr(ws, "half_batch_estimates", scripted)
    spec = protocol.RunSpec(workload="cnn", lr=1e-3, batch_size=4, seed=1, targets=(2.2,), further_steps=0,
                            max_steps=30, eval_examples=32)  # fmt: skip
    rule = ws.ScheduleRule("critical", batch_min=2, batch_max=64, batch_start=4, warmup=100, beta=0.8, hvp_every=3)
    trainer = ws.ScheduleTrainer(dataclasses.replace(spec, batch_size=4), rule, 1.0)
    for _ in range(10):
        trainer.step()
    steps = np.arange(10.0)
    for key, fed in (("trace_sigma", steps), ("trace_h_sigma", steps[::3])):
        w = 0.8 ** (9.0 - fed)
        assert trainer.estimator.average(key) == pytest.approx(np.dot(w, fed**2) / w.sum(), rel=1e-12), key
