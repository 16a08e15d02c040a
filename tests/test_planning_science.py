"""The draw planning (``estimate.plan_trials``) and the sampled full gradient's error term in the
probe, checked against their definitions:

- the planned (N, M) reach the target relative error exactly, (ra - 2 rc) / N + rb / M = R^2 up to
  rounding, and at least cost N + c M (no point of the constraint is cheaper: Lagrange);
- with G a sample estimate, var(e'v) enters lr's error once, in full: (lr_se / lr)^2 grows by
  exactly var(e'v) / E[a]^2 over the same draws with G exact.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from surgesim.estimate import plan_trials


@pytest.mark.parametrize(
    "st, cost",
    [
        ({"n": 64, "m": 64, "ma": 2.0, "mb": 5.0, "va": 9.0, "vb": 40.0, "cab": 0.0}, 3.0),
        ({"n": 64, "m": 64, "ma": 0.5, "mb": 1.0, "va": 1.0, "vb": 0.5, "cab": 0.05}, 0.2),
        ({"n": 64, "m": 64, "ma": 1.0, "mb": 1.0, "va": 1.0, "vb": 9.0, "cab": 0.0}, 40.0),
    ],
)
def test_plan_reaches_the_target_at_least_cost(st, cost):
    R = 0.01
    N, M = plan_trials(st, R, cost)
    ra, rb = st["va"] / st["ma"] ** 2, st["vb"] / st["mb"] ** 2
    e = ra - 2 * st["cab"] / (st["ma"] * st["mb"])
    var = e / N + rb / M
    assert R * R * (1 - 1e-3) <= var <= R * R * 1.0001  # met, and not overshot beyond rounding up
    # every other split of the same error budget costs more: N' = e / (R^2 - rb / M') for M' near M
    for f in (0.5, 0.7, 0.9, 1.1, 1.4, 2.0):
        m2 = M * f
        if rb / m2 >= R * R:
            continue
        n2 = e / (R * R - rb / m2)
        assert n2 + cost * m2 >= (N + cost * M) * (1 - 1e-3), f
    # same trials for a and b (no dense cost): N = M = (e + rb) / R^2
    n, m = plan_trials(st, R, None)
    assert n == m == math.ceil((e + rb) / R**2)


def test_sampled_gradient_error_enters_the_lr_error_in_full():
    pytest.importorskip("torch")
    from surgesim.problem import surge_problem
    from surgesim.workloads import probe
    from surgesim.workloads.quadratic import quadratic_state

    p = surge_problem(12, 0)
    exact = quadratic_state(p)
    e0 = probe.probe_batch_size(exact, 8, draws=64, hessian_examples=1, seed=3)
    c = 0.3 * e0.mean_a**2 * (e0.lr_se / e0.lr) ** 2  # about a third of the error budget
    sampled = quadratic_state(p)
    sampled.gradient_error = lambda v: c
    e1 = probe.probe_batch_size(sampled, 8, draws=64, hessian_examples=1, seed=3)
    assert e1.lr == e0.lr and e1.mean_a == e0.mean_a  # the same draws
    grown = (e1.lr_se / e1.lr) ** 2 - (e0.lr_se / e0.lr) ** 2
    assert grown == pytest.approx(c / e0.mean_a**2, rel=1e-9)
    assert np.isfinite(e1.loss_improvement_se) and e1.loss_improvement_se > e0.loss_improvement_se
