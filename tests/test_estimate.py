"""The Monte Carlo estimator: agreement with eq 8 / 9 within its own standard errors, calibration
of those standard errors, the adaptive trial budget, and reproducibility across thread counts."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest

from surgesim import (
    estimate,
    optimal_loss_improvement,
    optimal_lr,
    power_law_problem,
    surge_problem,
)
from surgesim.problem import FAMILIES

BATCHES = [1, 4, 32, 300, 5000, 200000]


@pytest.mark.parametrize("family", ["lowrank", "dense", "diagonal", "powerlaw"])
def test_lr_and_loss_improvement_within_4_se_of_theory(family):
    # Every B of a grid spanning the rise, the peak, the fall and the plateau: |z| <= 4 for the
    # learning rate (eq 9) and the loss improvement (eq 8), with the estimator's own s.e.
    p = FAMILIES[family](200, 1)
    res = estimate.estimate_curve(p, BATCHES, seed=7, rel_se=0.02)
    lr = optimal_lr(BATCHES, p.mu, p.sigma, p.hessian)
    dl = optimal_loss_improvement(BATCHES, p.mu, p.sigma, p.hessian)
    for r, x, y in zip(res, lr, dl):
        assert r.converged and r.lr_rel_se <= 0.02
        assert abs(r.lr - x) <= 4 * r.lr_se, (r.batch_size, r.lr, x, r.lr_se)
        assert abs(r.loss_improvement - y) <= 4 * r.loss_improvement_se, (r.batch_size, r.loss_improvement, y)


@pytest.mark.parametrize("sampler", ["batch_mean", "per_example"])
def test_other_samplers_within_4_se_of_theory(sampler):
    # per_example draws B normals per coordinate: small d and B keep it fast.
    p = surge_problem(40, 2, snr=(0.05, 0.15))
    sizes = [1, 3, 10, 40]
    res = estimate.estimate_curve(p, sizes, seed=3, trials=20000, sampler=sampler)
    lr = optimal_lr(sizes, p.mu, p.sigma, p.hessian)
    for r, x in zip(res, lr):
        assert abs(r.lr - x) <= 4 * r.lr_se, (r.batch_size, r.lr, x, r.lr_se)


@pytest.mark.parametrize("family", ["lowrank", "dense"])
def test_standard_errors_are_calibrated(family):
    # z = (lr_mc - lr_exact) / se over 60 seeds at 3 batch sizes (180 z-scores) should be ~N(0, 1):
    # mean within 4 / sqrt(180) = 0.3 of 0 and standard deviation in [0.8, 1.25].
    p = FAMILIES[family](100, 4)
    sizes = [2, 50, 2000]
    exact = optimal_lr(sizes, p.mu, p.sigma, p.hessian)
    z = []
    for seed in range(60):
        for r, x in zip(estimate.estimate_curve(p, sizes, seed=seed, trials=4096), exact):
            z.append((r.lr - x) / r.lr_se)
    z = np.array(z)
    assert abs(z.mean()) < 4 / math.sqrt(z.size)
    assert 0.8 <= z.std(ddof=1) <= 1.25


def test_loss_improvement_standard_errors_are_calibrated():
    p = surge_problem(100, 5)
    exact = optimal_loss_improvement(20, p.mu, p.sigma, p.hessian)
    z = np.array([(r.loss_improvement - exact) / r.loss_improvement_se
                  for r in (estimate.estimate_batch_size(p, 20, seed=s, trials=4096) for s in range(120))])  # fmt: skip
    assert abs(z.mean()) < 4 / math.sqrt(z.size)
    assert 0.8 <= z.std(ddof=1) <= 1.25


def test_search_agrees_with_closed_form_argmax():
    p = power_law_problem(60, 0)
    for r in estimate.estimate_curve(p, [1, 10, 1000], seed=0, trials=3000):
        assert r.lr_search == pytest.approx(r.lr, rel=1e-6)


def test_argmax_by_search_on_known_quadratic():
    # eps a - eps^2/2 b has its maximum at a / b: found without using that formula.
    assert estimate.argmax_by_search(3e-3, 7.0) == pytest.approx(3e-3 / 7.0, rel=1e-6)
    assert estimate.argmax_by_search(-1.0, 1.0) == 0.0


def test_dense_spends_fewer_denominator_trials():
    # The denominator b = V'HV varies little: for a dense H (costly b) the plan buys precision with
    # numerator trials (N) and keeps M far smaller at small B, where a is noisy.
    p = FAMILIES["dense"](300, 0)
    r = estimate.estimate_batch_size(p, 1, seed=0, rel_se=0.02)
    assert r.converged and r.lr_rel_se <= 0.02
    assert r.denominator_trials * 4 <= r.trials


def test_plan_trials_minimises_cost():
    # The Lagrange solution against a brute-force search over N (M from the constraint).
    st = {"n": 100, "m": 100, "ma": 2.0, "mb": 10.0, "va": 40.0, "vb": 3.0, "cab": 0.0}
    c, R = 20.0, 0.01
    n, m = estimate.plan_trials(st, R, c)
    ra, rb = st["va"] / st["ma"] ** 2, st["vb"] / st["mb"] ** 2
    assert ra / n + rb / m <= R * R * (1 + 1e-9)
    grid = np.linspace(ra / R**2 * 1.0001, ra / R**2 * 5, 20000)
    cost = grid + c * rb / (R * R - ra / grid)
    assert n + c * m <= cost.min() * (1 + 1e-3)


def test_fixed_trials_are_reported():
    r = estimate.estimate_batch_size(surge_problem(50, 0), 8, seed=0, trials=777)
    assert (r.trials, r.denominator_trials) == (777, 777)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"trials": 1}, "trials must be an integer >= 2"),
        ({"rel_se": 0.0}, "rel_se must be in"),
        ({}, "exactly one of trials"),
        ({"trials": 10, "rel_se": 0.1}, "exactly one of trials"),
        ({"trials": 10, "sampler": "nope"}, "sampler must be one of"),
    ],
)
def test_bad_options_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        estimate.estimate_batch_size(surge_problem(10, 0), 4, seed=0, **kwargs)


@pytest.mark.parametrize("b", [0, -3, 2.5])
def test_bad_batch_size_raises(b):
    with pytest.raises(ValueError, match="batch sizes must be integers >= 1"):
        estimate.estimate_curve(surge_problem(10, 0), [1, b], seed=0, trials=10)


_CHILD = """
import hashlib, json, sys
from surgesim import estimate
from surgesim.problem import FAMILIES
out = {}
for fam in ("lowrank", "dense"):
    p = FAMILIES[fam](150, 3)
    res = estimate.estimate_curve(p, [1, 7, 90, 4000], seed=5, rel_se=0.03)
    out[fam] = [r.as_dict() for r in res]
print(hashlib.sha256(json.dumps(out).encode()).hexdigest())
"""


def test_bit_identical_across_thread_counts():
    # Same seed, NUMBA_NUM_THREADS = 1 and 2 (also BLAS threads): identical results to the last bit.
    digests = set()
    for n in ("1", "2"):
        env = dict(os.environ, NUMBA_NUM_THREADS=n, OPENBLAS_NUM_THREADS=n, OMP_NUM_THREADS=n)
        r = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, check=True)
        digests.add(r.stdout.strip())
    assert len(digests) == 1


def test_delta_method_counts_denominator_trials_separately():
    # Synthetic per-trial moments with N = 4000 numerator and only M = 40 denominator trials (the
    # first M of the N, as for dense H), the denominator far noisier than the numerator:
    # var(ln eps) = var(a)/(N a^2) + var(b)/(M b^2) - 2 cov(a,b)/(N a b) = 2.5e-4 + 2.25e-3 - 1.5e-4.
    # Over 400 replicates the spread of ln(mean a / mean b) must match the delta-method s.e.
    # (ratio in [0.85, 1.18], 4 s.e. of a standard deviation from 400 samples); dividing
    # var(b) by N instead of M would shrink the s.e. about 3x.
    rng = np.random.default_rng(7)
    n, m = 4000, 40
    logs, ses = [], []
    for _ in range(400):
        z = rng.standard_normal((2, n))
        a = 1.0 + z[0]
        b = 10.0 + 3.0 * (0.5 * z[0] + math.sqrt(0.75) * z[1])  # corr(a, b) = 0.5
        st = {"n": n, "m": m, "ma": a.mean(), "mb": b[:m].mean(), "va": a.var(ddof=1), "vb": b[:m].var(ddof=1),
              "cab": float(np.cov(a[:m], b[:m])[0, 1])}  # fmt: skip
        lr, lr_se, _, _ = estimate.delta_method(st)
        logs.append(math.log(lr))
        ses.append(lr_se / lr)
    expected = math.sqrt(1 / n + 9 / (m * 100) - 2 * 1.5 / (n * 10))
    assert np.mean(ses) == pytest.approx(expected, rel=0.1)
    assert 0.85 <= np.std(logs, ddof=1) / np.mean(ses) <= 1.18
