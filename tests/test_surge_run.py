"""surgesim.surge (issue 25: the library behind sims.surge) and theory.curves_and_constants
(issue 24: the closed forms and constants of a large-d run in one threaded set of passes)."""

from __future__ import annotations

import numpy as np
import pytest

from surgesim import theory as th
from surgesim.problem import FAMILIES
from surgesim.surge import checked_theory


@pytest.mark.parametrize("family", ["lowrank", "diagonal", "powerlaw"])
def test_curves_and_constants_equal_curves_and_constants_bit_for_bit(family):
    p = FAMILIES[family](300, 2)
    B = np.array([1.0, 7.0, 64.0, 1e5])
    lines, scalars = th.curves_and_constants(B, p.mu, p.sigma, p.hessian)
    want = th.curves(B, p.mu, p.sigma, p.hessian)
    assert list(lines) == list(want)
    for k in want:
        np.testing.assert_array_equal(lines[k], want[k])
    assert list(scalars.items()) == list(th.constants(p.mu, p.sigma, p.hessian).items())  # inf == inf


def test_checked_theory_refuses_a_problem_without_gradient():
    p = FAMILIES["lowrank"](50, 0)
    zero = type(p)(np.zeros(50), p.sigma, p.hessian)
    with pytest.raises(ValueError, match="mu is zero"):
        checked_theory(zero, (1, 4))


def test_checked_theory_refuses_overflowing_closed_forms():
    p = FAMILIES["lowrank"](50, 0)
    huge = type(p)(p.mu * 1e200, p.sigma, p.hessian)
    with pytest.raises(ValueError, match="not finite"):
        checked_theory(huge, (1, 4))
