"""surgesim.limits (regime maps of the theory's approximations and assumptions), its figures,
and ``python -m sims.limits``.

Independent checks: the leading-order behaviour of each approximation (its error is O(B) as
B -> 0, so it halves with B), the peak of eq 9 by the sign of its slope, the exact optimal
learning rate with Laplace per-example gradients at B = 1 (E_i = 2 F(r_i) - 1 with scipy's
Laplace CDF), Adam's update moments at beta = 0 (sign: erf) and as beta2 -> 1 (eq 28's closed
form). Monte Carlo comparisons use 4 of the estimator's own standard errors.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special, stats

from surgesim import limits as lim
from surgesim import surge_problem, theory
from surgesim.problem import diagonal_problem, power_law_problem

K_SE = 4.0


@pytest.fixture(scope="module")
def problem():
    return surge_problem(200, seed=0)


def test_failure_interval_and_converged_from():
    B = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    err = np.array([0.01, 0.1, 0.3, 0.04, 0.02])
    assert lim.failure_interval(B, err, 0.05) == (2.0, 4.0)
    assert all(math.isnan(v) for v in lim.failure_interval(B, err, 0.5))
    assert lim.failure_interval(B, [np.nan] * 5, 0.05) == (1.0, 16.0)  # nan counts as a failure
    assert lim.converged_from(B, err, 0.05) == 8.0
    assert lim.converged_from(B, err, 0.5) == 1.0
    assert lim.converged_from(B, [0.0, 0.0, 0.0, 0.0, 1.0], 0.05) == math.inf


def test_first_peak():
    assert lim.first_peak([1.0, 2.0, 3.0, 2.5, 4.0, 1.0]) == 2
    assert lim.first_peak([1.0, 2.0, 2.0, 1.0]) == 2  # a flat top counts at its right end
    assert lim.first_peak([3.0, 2.0, 1.0]) is None
    assert lim.first_peak([1.0, 2.0, 3.0]) is None


def test_ratio_estimate_is_the_delta_method():
    """Against the textbook delta method for mean(a) / mean(b) with N = M."""
    rng = np.random.default_rng(0)
    a = rng.normal(1.0, 2.0, 5000)
    b = 10.0 + 0.5 * a + rng.normal(0.0, 0.3, 5000)
    lr, se = lim.ratio_estimate(a, b)
    ma, mb = a.mean(), b.mean()
    C = np.cov(a, b) / a.size
    want = abs(ma / mb) * math.sqrt(C[0, 0] / ma**2 + C[1, 1] / mb**2 - 2 * C[0, 1] / (ma * mb))
    assert lr == pytest.approx(ma / mb, rel=1e-14)
    assert se == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize("which", ["erf", "surge"])
def test_maps_shapes_and_small_batch_limit(problem, which):
    """Both approximations agree with eq 9 to leading order: the error -> 0 as B -> 0, like B."""
    f = lim.erf_error_map if which == "erf" else lim.surge_error_map
    B = np.array([1.0, 2.0, 10.0, 1e3, 1e5, 1e7])
    scales = [0.01, 0.1, 1.0, 3.0]
    m = f(problem, B, scales)
    assert m.z.shape == (4, 6) and m.x.shape == (6,) and m.y.shape == (4,)
    np.testing.assert_allclose(m.y, np.array(scales) * np.median(np.abs(problem.snr)), rtol=1e-14)
    # B r^2 ~ 5e-9 at B = 1 and scale 0.01: the error is O(B r^2) and halves from B = 2 to B = 1
    assert abs(m.z[0, 0]) < 1e-6
    assert m.z[0, 0] / m.z[0, 1] == pytest.approx(0.5, rel=0.01)
    # everything depends on B r^2: (B = 10, scale 1) is (B = 1000, scale 0.1)
    assert m.z[2, 2] == pytest.approx(m.z[1, 3], rel=1e-9)
    bn = theory.noise_batch_size(problem.mu, problem.sigma, problem.hessian)
    np.testing.assert_allclose(m.lines["B_noise (eq 14)"], bn / np.array(scales) ** 2, rtol=1e-12)
    if which == "erf":
        assert np.max(np.abs(m.z)) < 0.2  # eq 10's E_i error is at most 0.108 absolute
        assert abs(m.z[-1, -1]) < 1e-3  # and both tend to sign(mu) as B -> inf
    else:
        assert m.z[-1, -1] < -0.9  # eq 2 decays like 1/sqrt(B) while eq 9 tends to eq 17


def test_surge_bound_map(problem):
    probs = [surge_problem(d, seed=0) for d in (8, 64, 512)] + [diagonal_problem(20)]
    x = np.geomspace(1e-4, 1e2, 13)
    m = lim.surge_bound_map(probs, x)
    assert m.z.shape == (3, 13)  # the diagonal problem (B_noise = inf) is skipped
    assert np.all(np.diff(m.y) > 0)
    for row in m.z:  # small B: eq 2 is eq 9's leading order; far beyond the bound it decays to 0
        first = row[np.isfinite(row)][0]
        assert abs(first) < 0.01
        assert row[-1] < -0.5
    np.testing.assert_array_equal(m.lines["B = B_noise"], m.y)


def test_peak_batch_size(problem):
    bp, lp = lim.peak_batch_size(problem)
    f = lambda b: float(theory.optimal_lr(b, problem.mu, problem.sigma, problem.hessian))  # noqa: E731
    assert lp == pytest.approx(f(bp), rel=1e-12)
    assert f(bp) > f(bp * 1.001) and f(bp) > f(bp / 1.001)
    bn = theory.noise_batch_size(problem.mu, problem.sigma, problem.hessian)
    assert bp / bn == pytest.approx(1.0, abs=0.05)  # B_noise << validity bound here
    assert all(math.isnan(v) for v in lim.peak_batch_size(diagonal_problem(50)))


def test_peak_table_and_family_errors(problem):
    probs = {"lowrank": problem, "powerlaw": power_law_problem(64), "diagonal": diagonal_problem(50)}
    rows = lim.peak_table(probs)
    assert [r["problem"] for r in rows] == list(probs)
    assert rows[0]["peak_over_bnoise"] == pytest.approx(1.0, abs=0.05)
    assert math.isnan(rows[2]["peak_batch_size"])
    B = np.geomspace(1, 1e8, 33)
    fam = lim.family_errors(probs, B)
    for r in fam:
        assert r["err_erf"].shape == B.shape
        assert abs(r["err_erf"][0]) < 1e-3 and abs(r["err_surge"][0]) < 1e-3
        first, last = r["surge_fails_from_0.05"], r["surge_fails_until_0.05"]
        assert first <= last and last == B[-1]  # eq 2 never recovers at large B
        assert r["surge_fails_from_0.05_over_bound"] == pytest.approx(first / r["validity_bound"])


def test_correlation_error_map(problem):
    p = surge_problem(40, seed=1)
    B = np.array([1.0, 30.0, 1e4, 1e9])
    m = lim.correlation_error_map(p, B, [1e-6, 0.1, 0.9])
    assert m.z.shape == (3, 4)
    assert np.all(np.abs(m.z[0]) < 1e-4)  # rho -> 0: the paper's independent theory
    assert np.all(np.abs(m.z[:, -1]) < 1e-3)  # B -> inf: deterministic signs, correlations vanish
    assert m.z[2, 0] > m.z[1, 0] > 0  # aligned correlated noise lowers the small-B optimal lr
    bn = m.lines["B_noise, correlated"]
    assert bn[0] == pytest.approx(theory.noise_batch_size(p.mu, p.sigma, p.hessian), rel=1e-3)
    assert np.all(np.diff(bn) > 0)
    r = lim.correlation_error_map(p, B, [0.5], aligned=False)
    assert r.z.shape == (1, 4) and "random" in r.ylabel
    with pytest.raises(ValueError, match=r"rhos must be in \(0, 1\]"):
        lim.correlation_error_map(p, B, [1.5])


def test_aligned_correlation(problem):
    D, F = lim.aligned_correlation(problem, 0.3)
    np.testing.assert_allclose(D + F[:, 0] ** 2, problem.sigma**2, rtol=1e-14)
    rho01 = F[0, 0] * F[1, 0] / (problem.sigma[0] * problem.sigma[1])
    assert rho01 == pytest.approx(0.3 * np.sign(problem.mu[0] * problem.mu[1]), rel=1e-14)
    with pytest.raises(ValueError, match="rho must be in"):
        lim.aligned_correlation(problem, -0.1)


def test_non_gaussian_departure_laplace_is_exact_at_batch_one():
    """B = 1: E_i = s_i (2 F(|r_i|) - 1) with F the standardised Laplace CDF, cov(V) diagonal:
    eq 6 gives the exact optimal learning rate, which the Monte Carlo must match within 4 s.e.;
    the Gaussian control must match eq 9 within 4 s.e."""
    p = surge_problem(50, seed=2, snr=(0.05, 0.2))
    rows = lim.non_gaussian_departure(p, {"laplace": None, "gaussian": None}, [1, 4], rel_se=0.03, seed=1)
    assert [(r["law"], r["batch_size"]) for r in rows] == [
        ("laplace", 1),
        ("laplace", 4),
        ("gaussian (control)", 1),
        ("gaussian (control)", 4),
    ]
    E = np.sign(p.mu) * (2 * stats.laplace(scale=1 / np.sqrt(2)).cdf(np.abs(p.snr)) - 1)
    H = p.hessian
    exact = (p.mu @ E) / ((1 - E * E) @ H.diag() + H.quad_rows(E))
    assert abs(rows[0]["lr_mc"] - exact) <= K_SE * rows[0]["lr_mc_se"]
    assert rows[0]["departure"] > 0.3  # Laplace's density at 0 is sqrt(pi) times the Gaussian's
    for r in rows[2:]:
        assert abs(r["departure"]) <= K_SE * r["departure_se"]
    with pytest.raises(ValueError, match="integers >= 1"):
        lim.non_gaussian_departure(p, {"laplace": None}, [0])


def test_adam_update_moments_sign_limit():
    """beta1 = beta2 = 0: u = sign(y + z), so f1 = erf(y / sqrt 2) (within 4 s.e. over the
    groups) and f2 = 1 (to rounding)."""
    y = np.array([0.0, 0.3, 1.0, 2.5])
    f1, f2 = lim.adam_update_moments(y, 0.0, 0.0, samples=1 << 14, seed=3)
    se = f1.std(axis=0, ddof=1) / math.sqrt(f1.shape[0])
    assert np.all(np.abs(f1.mean(axis=0) - special.erf(y / math.sqrt(2))) <= K_SE * se + 1e-15)
    # rtol 1e-9: u^2 = (y + z)^2 / (y^2 + 2 y z + z^2), whose expanded form cancels where z ~ -y
    np.testing.assert_allclose(f2, 1.0, rtol=1e-9)


def test_adam_update_moments_beta2_to_one():
    """beta2 -> 1 (eq 28): v_hat -> y^2 + 1, so f1 -> y / sqrt(1 + y^2) and
    f2 -> (y^2 + c) / (y^2 + 1), c = (1 - beta1) / (1 + beta1). With beta2 = 0.999 the remaining
    bias is second order in v's relative spread, about (3/8) 2 (1 - beta2) / (1 + beta2) ~ 4e-4:
    the tolerance is 4 s.e. plus 2e-3 absolute."""
    y = np.array([0.05, 0.5, 2.0])
    b1 = 0.9
    f1, f2 = lim.adam_update_moments(y, b1, 0.999, samples=1 << 11, seed=4)
    c = (1 - b1) / (1 + b1)
    for f, want in ((f1, y / np.sqrt(1 + y * y)), (f2, (y * y + c) / (y * y + 1))):
        se = f.std(axis=0, ddof=1) / math.sqrt(f.shape[0])
        assert np.all(np.abs(f.mean(axis=0) - want) <= K_SE * se + 2e-3)


def test_adam_frozen_lr_reduces_to_eq9(problem):
    B = np.array([1.0, 100.0, 1e5])
    lr, se = lim.adam_frozen_lr(problem, B, 0.0, 0.0, samples=1 << 12, seed=5)
    exact = theory.optimal_lr(B, problem.mu, problem.sigma, problem.hessian)
    assert lr.shape == se.shape == (3,)
    assert np.all(np.abs(lr - exact) <= K_SE * se + 1e-12 * exact)
    with pytest.raises(ValueError, match=r"beta1=1.0 must be in \[0, 1\)"):
        lim.adam_frozen_lr(problem, B, 1.0, 0.5)


def test_limits_figures(problem, tmp_path):
    from surgesim.plots import limits as pl

    B = np.geomspace(1, 1e6, 7)
    maps = [lim.erf_error_map(problem, B, [0.5, 1, 2]), lim.surge_error_map(problem, B, [0.5, 1, 2])]
    fam = lim.family_errors({"lowrank": problem}, B)
    peaks = lim.peak_table({"lowrank d=200": problem})
    ng = [{"law": "laplace", "batch_size": b, "departure": 0.5 / b, "departure_se": 0.01} for b in (1, 4, 16)]
    figs = [
        pl.regime_maps_figure(maps),
        pl.family_errors_figure(fam),
        pl.peak_figure(peaks),
        pl.departure_figure(ng, noise_batch_size=100.0),
        pl.adam_figure(B, 1 / np.sqrt(B), {"Adam(0.9, 0.999)": (1 + 1 / B, 0.01 / B)}, noise_batch_size=100.0),
    ]
    for i, fig in enumerate(figs):
        fig.savefig(tmp_path / f"f{i}.png", dpi=50)
        assert (tmp_path / f"f{i}.png").stat().st_size > 1000


def test_sims_limits_bad_input(capsys, tmp_path):
    from sims import limits

    assert limits.main(["--dims", "1", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --dims must be >= 2") and err.count("\n") == 1
    with pytest.raises(SystemExit) as e:
        limits.main(["--bogus"])
    assert e.value.code == 2
    assert capsys.readouterr().err.startswith("error:")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert limits.main(["--out", str(blocker), "--quick"]) == 2
    assert "not a directory" in capsys.readouterr().err


@pytest.mark.slow
def test_sims_limits_quick_end_to_end(tmp_path):
    from sims import limits

    assert limits.main(["--out", str(tmp_path), "--quick", "--quiet"]) == 0
    for name in ("summary.csv", "summary.json", "maps.csv", "families.csv", "peaks.csv", "correlation.csv",
                 "nongaussian.csv", "adam.csv", "options.json", "limits_maps.png", "limits_adam.png"):  # fmt: skip
        assert (tmp_path / name).stat().st_size > 0, name
    rows = (tmp_path / "summary.csv").read_text().splitlines()
    assert rows[0].startswith("approximation,setting,within_5pct,within_20pct")
