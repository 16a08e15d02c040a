"""``surgesim.kernels.one_step_moments``: raw per-trial (a, b) against eq 8 / 9 and the estimator;
short reprs of problems and Hessian operators."""

from __future__ import annotations

import numpy as np
import pytest

from surgesim import optimal_loss_improvement, optimal_lr
from surgesim.estimate import estimate_batch_size
from surgesim.kernels import one_step_moments
from surgesim.problem import FAMILIES


@pytest.mark.parametrize("family", ["lowrank", "dense", "diagonal"])
@pytest.mark.parametrize("sampler", ["sign", "batch_mean"])
def test_means_agree_with_theory_and_the_estimator(family, sampler):
    p = FAMILIES[family](60, 2)
    B, n = 32, 20000
    a, b = one_step_moments(p, B, n, seed=5, sampler=sampler)
    assert a.shape == b.shape == (n,) and a.dtype == b.dtype == np.float64
    # Eq 9 = E[a] / E[b] and eq 8 = E[a]^2 / (2 E[b]), so E[a] = 2 eq8 / eq9 and E[b] = E[a] / eq9
    # (eq 31). Each mean within 4 of its own standard errors (std / sqrt(n)).
    lr, dl = optimal_lr(B, p.mu, p.sigma, p.hessian), optimal_loss_improvement(B, p.mu, p.sigma, p.hessian)
    ea, eb = 2 * dl / lr, 2 * dl / lr**2
    assert abs(a.mean() - ea) <= 4 * a.std(ddof=1) / np.sqrt(n)
    assert abs(b.mean() - eb) <= 4 * b.std(ddof=1) / np.sqrt(n) + 1e-6 * eb  # + float32 rounding of dense b
    # Same streams and counter layout as the estimator: its means are these means.
    e = estimate_batch_size(p, B, seed=5, trials=n, sampler=sampler)
    assert a.mean() == pytest.approx(e.mean_a, rel=1e-12) and b.mean() == pytest.approx(e.mean_b, rel=1e-12)


def test_trials_are_a_prefix_whatever_the_count():
    p = FAMILIES["dense"](40, 1)
    a1, b1 = one_step_moments(p, 8, 100, seed=3)
    a2, b2 = one_step_moments(p, 8, 20000, seed=3)
    np.testing.assert_array_equal(a1, a2[:100])
    np.testing.assert_array_equal(b1, b2[:100])


@pytest.mark.parametrize(
    "kwargs, match",
    [({"batch_size": 0}, "batch_size"), ({"trials": 0}, "trials"), ({"sampler": "x"}, "sampler"),
     ({"seed": -1}, "seed"), ({"batch_size": 2.5}, "batch_size")],
)  # fmt: skip
def test_bad_arguments_raise(kwargs, match):
    args = {"batch_size": 4, "trials": 10, "seed": 0, "sampler": "sign", **kwargs}
    with pytest.raises(ValueError, match=match):
        one_step_moments(FAMILIES["lowrank"](10, 0), **args)


def test_reprs_are_short_and_informative():
    reprs = {name: repr(f(300, 0)) for name, f in FAMILIES.items()}
    for r in reprs.values():
        assert len(r) < 160 and "array" not in r and "\n" not in r, r
        assert r.startswith("QuadraticProblem(d=300, |mu/sigma| in [")
    assert "hessian=DiagonalPlusLowRank(d=300, rank=4, trace=" in reprs["lowrank"]
    assert "hessian=Dense(d=300, trace=" in reprs["dense"]
    assert "hessian=Diagonal(d=300, trace=" in reprs["diagonal"]
