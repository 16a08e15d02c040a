"""sims.surge computes each closed form once (issue 24, large d): ``theory.constants`` and the
shared sums inside ``theory.curves`` give the very bits of the one-equation functions, and
``check_problem`` hands back the curves it checked."""

from __future__ import annotations

import numpy as np
import pytest

from sims import _cli
from surgesim import theory as th
from surgesim.problem import FAMILIES


@pytest.mark.parametrize("family", ["lowrank", "diagonal", "powerlaw"])
def test_constants_and_curves_equal_the_single_functions_bit_for_bit(family):
    p = FAMILIES[family](300, 1)
    mu, sigma, H = p.mu, p.sigma, p.hessian
    c = th.constants(mu, sigma, H)
    assert list(c) == ["noise_batch_size", "peak_lr", "large_batch_lr", "validity_bound", "max_loss_improvement"]
    expected = [th.noise_batch_size(mu, sigma, H), th.peak_lr(mu, sigma, H), th.large_batch_lr(mu, H),
                th.validity_bound(mu, sigma), th.max_loss_improvement(mu, sigma, H)]  # fmt: skip
    assert [float(v) for v in c.values()] == [float(v) for v in expected]  # equal bits (inf == inf)
    B = np.array([1.0, 7.0, 64.0, 1e5])
    curves = th.curves(B, mu, sigma, H)
    np.testing.assert_array_equal(curves["lr_surge"], th.surge_lr(B, mu, sigma, H))
    np.testing.assert_array_equal(curves["dl_surge"], th.surge_loss_improvement(B, mu, sigma, H))
    np.testing.assert_array_equal(curves["lr_exact"], th.optimal_lr(B, mu, sigma, H))


def test_check_problem_returns_the_curves_it_checked():
    p = FAMILIES["lowrank"](200, 0)
    got = _cli.check_problem(p, (1, 16, 256))
    want = th.curves(np.array([1.0, 16.0, 256.0]), p.mu, p.sigma, p.hessian)
    assert got.keys() == want.keys()
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])
