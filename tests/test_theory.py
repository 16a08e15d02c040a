"""surgesim.theory against independent computations and the theorems of Li et al. 2024.

Every expected value here is computed independently of the code under test: E_i through the
regularised incomplete gamma function (erf(x) = P(1/2, x^2)) or the normal CDF instead of
scipy.special.erf, covariances as dense matrices, eq 2, 16, 18 and 19 in their literal forms where
the library uses the rearranged forms of eq 40, 41 and 43, and learning rates by brute-force
maximisation of eq 31.

Tolerances. Closed forms are compared at rtol 1e-10 (against independent formulas: a few hundred
roundings at d = 2000) or 1e-12 (dense against operator H, scaling, permutation: the same formula
summed in another order). Quantities built on eq 14's off-diagonal sum off = sum_{i!=j} r_i r_j
H_ij inherit its condition number cond = sum_{i!=j} |r_i r_j H_ij| / |off| (the rounding error of
any summation is eps * sum |terms|), so their rtol is multiplied by cond; on aligned problems
cond is about 1.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import integrate, optimize, special, stats

from surgesim import theory
from surgesim.hessian import Dense, Diagonal, DiagonalPlusLowRank

PI = np.pi
BATCHES = (1.0, 3.7, 64.0, 1000.0, 1e5, np.inf)
OFF_BASED = {"noise_batch_size", "peak_lr", "surge_lr", "max_loss_improvement", "surge_loss_improvement"}


# --- problems -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    mu: np.ndarray
    sigma: np.ndarray
    op: object  # a hessian operator

    @cached_property
    def H(self) -> np.ndarray:
        """The dense matrix, built once (read-only: tests must not modify it)."""
        H = self.op.to_dense()
        H.flags.writeable = False
        return H

    @property
    def r(self) -> np.ndarray:
        return self.mu / self.sigma


def make_problem(d, seed, kind, aligned=True, snr=0.01, rank=3, zero_mu=0) -> Problem:
    """A random valid problem.

    kind: "diagonal", "lowrank" (diag + U U'), or "dense" (the low-rank H plus a generic dense PSD
    part W W' whose off-diagonal entries have both signs). aligned: U's rows carry sign(mu_i), so
    every term of eq 14's off-diagonal sum is positive (the surge case); otherwise random signs.
    zero_mu: number of coordinates with mu_i = 0 exactly.
    """
    rng = np.random.default_rng([seed, d, 7])
    s = rng.choice([-1.0, 1.0], size=d)
    sigma = np.exp(rng.uniform(np.log(0.2), np.log(5.0), size=d))
    mu = s * snr * np.exp(rng.uniform(-1.0, 1.0, size=d)) * sigma
    mu[rng.permutation(d)[:zero_mu]] = 0.0
    h = rng.uniform(0.1, 2.0, size=d)
    if kind == "diagonal":
        return Problem(mu, sigma, Diagonal(h))
    signs = s if aligned else rng.choice([-1.0, 1.0], size=d)
    k = min(rank, d)
    U = signs[:, None] * rng.uniform(0.2, 1.0, size=(d, k)) / np.sqrt(k)
    op = DiagonalPlusLowRank(h, U)
    if kind == "dense":
        W = rng.standard_normal((d, min(d, 20))) * (0.3 / np.sqrt(d))
        op = Dense(op.to_dense() + W @ W.T)
    return Problem(mu, sigma, op)


@st.composite
def problems(draw, kinds=("dense", "diagonal", "lowrank"), aligned=None, max_dim=50, log_snr=(-4.0, 0.0)):
    """Random valid problems of dimension 2..max_dim; |mu_i / sigma_i| = 10^log_snr times a
    factor in (1/e, e) (by default from 4e-5 to 3)."""
    d = draw(st.integers(2, max_dim))
    kind = draw(st.sampled_from(kinds))
    seed = draw(st.integers(0, 2**32 - 1))
    al = draw(st.booleans()) if aligned is None else aligned
    snr = 10.0 ** draw(st.floats(*log_snr))
    return make_problem(d, seed, kind, al, snr)


FIXED = [
    make_problem(2, 1, "dense"),
    make_problem(10, 2, "lowrank", aligned=False),
    make_problem(200, 3, "diagonal"),
    make_problem(300, 4, "dense", aligned=False, snr=0.1),
    make_problem(2000, 5, "lowrank"),
    make_problem(2000, 6, "dense"),
    make_problem(2000, 7, "diagonal", snr=0.003),
]
FIXED_IDS = [f"d{p.mu.size}-{type(p.op).__name__}" for p in FIXED]


# --- independent references ---------------------------------------------------------------------


def ref_sign_mean(B, r):
    """E_i = erf(sqrt(B/2) r_i) through erf(x) = P(1/2, x^2) (the chi-square(1) CDF at 2 x^2)."""
    with np.errstate(invalid="ignore"):  # inf * 0 where r_i = 0 and B = inf
        x2 = np.where(r == 0.0, 0.0, 0.5 * B * r * r)
    return np.sign(r) * special.gammainc(0.5, x2)


def off_sum(p: Problem) -> tuple[float, float]:
    """(sum_{i!=j} r_i r_j H_ij, sum_{i!=j} |r_i r_j H_ij|) from the dense H."""
    terms = np.outer(p.r, p.r) * p.H
    np.fill_diagonal(terms, 0.0)
    return float(terms.sum()), float(np.abs(terms).sum())


def off_condition(p: Problem) -> float:
    off, off_abs = off_sum(p)
    return 1.0 if off_abs == 0.0 else off_abs / abs(off)


def ref_eq9(E, mu, H):
    """Eq 6 with E[V] = E and cov(V) = diag(1 - E^2) as dense matrices: (lr, Delta L_opt)."""
    cov = np.diag(1.0 - E * E)
    num = mu @ E
    den = np.sum(H * cov.T) + E @ H @ E  # tr(H cov V) + E[V]' H E[V]
    return num / den, 0.5 * np.sum(np.outer(E * mu, E * mu)) / den


def reference_values(p: Problem, B: float) -> dict[str, float | np.ndarray]:
    """Every theory function, by name, computed independently (dense, literal equations)."""
    mu, sigma, r, H = p.mu, p.sigma, p.r, p.H
    tr = np.trace(H)
    S = np.sum(mu**2 / sigma)
    off, _ = off_sum(p)
    E = ref_sign_mean(B, r)
    with np.errstate(divide="ignore", invalid="ignore"):
        E_approx = np.where(r == 0.0, 0.0, r / np.sqrt(PI / (2.0 * B) + r * r))  # eq 10 literally
    lr, dl = ref_eq9(E, mu, H)
    out = {
        "sign_mean": E,
        "sign_mean_approx": E_approx,
        "optimal_lr": lr,
        "optimal_lr_approx": ref_eq9(E_approx, mu, H)[0],
        "optimal_loss_improvement": dl,
        "large_batch_lr": ref_eq9(np.sign(mu), mu, H)[0],  # eq 9 at B = inf
        "validity_bound": np.min(PI * sigma**2 / (2.0 * mu**2), initial=np.inf, where=mu != 0),
    }
    if off > 0:
        bn = PI * tr / (2.0 * off)  # eq 14
        peak = np.sqrt(bn / (2.0 * PI)) * S / tr  # eq 16
        dl_max = np.sum(np.outer(mu**2 / sigma, mu**2 / sigma)) / (2.0 * off)  # eq 19
        out.update(
            noise_batch_size=bn,
            peak_lr=peak,
            surge_lr=peak / (0.5 * (np.sqrt(bn / B) + np.sqrt(B / bn))),  # eq 2
            max_loss_improvement=dl_max,
            surge_loss_improvement=dl_max / (1.0 + bn / B),  # eq 18
        )
    else:  # B_noise = inf: eq 40 and 43 without the off-diagonal term
        with np.errstate(divide="ignore"):
            out.update(
                noise_batch_size=np.inf,
                peak_lr=np.inf,
                surge_lr=np.sqrt(2.0 * B / PI) * S / tr,
                max_loss_improvement=np.inf,
                surge_loss_improvement=(B / PI) * S * S / tr,
            )
    # McCandlish eq 1 with Sigma = diag(sigma^2) as a dense matrix.
    Sig = np.diag(sigma**2)
    ghg = mu @ H @ mu
    out["sgd_optimal_lr"] = (mu @ mu / ghg) / (1.0 + np.sum(H * Sig.T) / ghg / B)
    out["sgd_optimal_lr_dense_sigma"] = out["sgd_optimal_lr"]
    return out


def theory_values(mu, sigma, H, B) -> dict[str, float | np.ndarray]:
    """Every theory function of a problem, by name, from the code under test."""
    return {
        "sign_mean": theory.sign_mean(B, mu, sigma),
        "sign_mean_approx": theory.sign_mean_approx(B, mu, sigma),
        "optimal_lr": theory.optimal_lr(B, mu, sigma, H),
        "optimal_lr_approx": theory.optimal_lr(B, mu, sigma, H, approx=True),
        "optimal_loss_improvement": theory.optimal_loss_improvement(B, mu, sigma, H),
        "large_batch_lr": theory.large_batch_lr(mu, H),
        "validity_bound": theory.validity_bound(mu, sigma),
        "noise_batch_size": theory.noise_batch_size(mu, sigma, H),
        "peak_lr": theory.peak_lr(mu, sigma, H),
        "surge_lr": theory.surge_lr(B, mu, sigma, H),
        "max_loss_improvement": theory.max_loss_improvement(mu, sigma, H),
        "surge_loss_improvement": theory.surge_loss_improvement(B, mu, sigma, H),
        "sgd_optimal_lr": theory.sgd_optimal_lr(B, mu, sigma**2, H),
        "sgd_optimal_lr_dense_sigma": theory.sgd_optimal_lr(B, mu, np.diag(sigma**2), H),
    }


def assert_values_close(actual: dict, expected: dict, rtol: float, cond: float = 1.0, scale=None):
    """Compare two dicts of theory values; off-diagonal-based ones get rtol * cond.

    scale: optional dict name -> factor applied to the expected value.
    """
    assert set(actual) == set(expected)
    for name, want in expected.items():
        tol = rtol * (cond if name in OFF_BASED else 1.0)
        want = np.asarray(want) * (1.0 if scale is None else scale.get(name, 1.0))
        np.testing.assert_allclose(actual[name], want, rtol=tol, atol=0, err_msg=name)


# --- independent checks -------------------------------------------------------------------------


@pytest.mark.parametrize("m", [-4.0, -0.3, 0.0, 1e-6, 0.01, 0.5, 1.0, 2.5, 7.0])
def test_sign_mean_against_quadrature(m):
    """E[sign(x)], x ~ N(mu, sigma^2 / B), integrated in the standardised variable z = (x - mu)/sd:
    P(z > -m) - P(z < -m) with m = sqrt(B) mu / sigma; quad's error estimate is below 1e-13."""
    B, sigma = 3.0, 0.7
    mu = m * sigma / np.sqrt(B)
    up, err_up = integrate.quad(stats.norm.pdf, -m, np.inf, epsabs=1e-14, epsrel=1e-13)
    down, err_down = integrate.quad(stats.norm.pdf, -np.inf, -m, epsabs=1e-14, epsrel=1e-13)
    assert err_up + err_down < 1e-13
    got = theory.sign_mean(B, [mu], [sigma])[0]
    assert abs(got - (up - down)) <= 1e-12  # quad's accuracy plus rounding


def test_sign_mean_against_monte_carlo():
    """400,000 seeded draws per coordinate and batch size; each mean within 4.5 standard errors
    sqrt((1 - E^2) / n) (27 comparisons: a correct E fails one with probability about 2e-4)."""
    rng = np.random.default_rng(20240514)
    mu = np.array([0.002, -0.05, 0.3, 1.0, -2.0, 0.0, 0.8, -0.01, 0.1])
    sigma = np.array([1.0, 1.0, 2.0, 1.0, 3.0, 1.0, 0.5, 0.02, 1.0])
    n = 400_000
    for B in (1, 7, 100):
        x = rng.normal(mu, sigma / np.sqrt(B), size=(n, mu.size))
        mc = np.sign(x).mean(axis=0)
        E = theory.sign_mean(B, mu, sigma)
        se = np.sqrt((1.0 - E * E) / n)
        assert np.all(np.abs(mc - E) <= 4.5 * np.maximum(se, 1.0 / n)), (B, (mc - E) / se)


def test_sign_mean_monte_carlo_would_catch_a_wrong_scale():
    """The check above is sharp enough to see erf(sqrt(B) r) (a missing 1/sqrt(2))."""
    rng = np.random.default_rng(5)
    B, mu, sigma, n = 4, np.array([0.2]), np.array([1.0]), 400_000
    mc = np.sign(rng.normal(mu, sigma / np.sqrt(B), size=n)).mean()
    wrong = special.erf(np.sqrt(B) * mu[0] / sigma[0])
    se = np.sqrt((1.0 - wrong**2) / n)
    assert abs(mc - wrong) > 10 * se


def expected_gain(G, EV, covV, H):
    """Eq 31 as a function of eps: E[dL](eps) = eps G'E[V] - eps^2 / 2 (tr(H cov V) + E[V]' H E[V])
    (its two coefficients computed once from the dense matrices)."""
    first, second = G @ EV, np.trace(H @ covV) + EV @ H @ EV
    return lambda eps: eps * first - 0.5 * eps**2 * second


def brute_force_max(gain):
    """argmax and max of a one-dimensional concave function by Brent's method."""
    res = optimize.minimize_scalar(lambda e: -gain(e), bracket=(0.0, 1e-6), method="brent", tol=1e-12)
    assert res.success
    return res.x, -res.fun


@pytest.mark.parametrize("p", FIXED[:4], ids=FIXED_IDS[:4])
@pytest.mark.parametrize("B", [1.0, 16.0, 700.0, 1e6])
def test_optimal_lr_brute_force_eq31(p, B):
    """Eq 9 and eq 8 against the maximum of eq 31 with E[V] = 2 Phi(sqrt(B) r) - 1 and cov(V) a
    dense diagonal matrix. The argmax of a smooth maximum is only located to about sqrt(machine
    eps) relative (rtol 1e-6); the maximum value itself to rounding (rtol 1e-11)."""
    EV = 2.0 * stats.norm.cdf(np.sqrt(B) * p.r) - 1.0
    covV = np.diag(1.0 - EV**2)
    lr, best = brute_force_max(expected_gain(p.mu, EV, covV, p.H))
    np.testing.assert_allclose(theory.optimal_lr(B, p.mu, p.sigma, p.op), lr, rtol=1e-6)
    np.testing.assert_allclose(theory.optimal_loss_improvement(B, p.mu, p.sigma, p.op), best, rtol=1e-11)


@pytest.mark.parametrize("seed", range(4))
def test_optimal_lr_by_enumerating_sign_vectors(seed):
    """Lemma 1 + eq 35-36 without using them: for d <= 8, E[dL](eps) is a finite sum over all 2^d
    sign vectors v with probability prod_i P(v_i), P(+1) = Phi(sqrt(B) r_i). Its maximum must be
    eq 8 and its argmax eq 9 (rtol as in the brute-force test above)."""
    p = make_problem(3 + seed + (seed > 1) * 3, seed, "dense", aligned=bool(seed % 2), snr=0.3)
    d = p.mu.size
    V = np.array(list(itertools.product([-1.0, 1.0], repeat=d)))
    for B in (1.0, 9.0, 200.0):
        plus = stats.norm.cdf(np.sqrt(B) * p.r)
        prob = np.prod(np.where(V > 0, plus, 1.0 - plus), axis=1)
        first = prob @ (V @ p.mu)
        second = prob @ np.einsum("ni,ij,nj->n", V, p.H, V)
        lr, best = brute_force_max(lambda e, a=first, b=second: e * a - 0.5 * e * e * b)
        np.testing.assert_allclose(theory.optimal_lr(B, p.mu, p.sigma, p.op), lr, rtol=1e-6)
        np.testing.assert_allclose(theory.optimal_loss_improvement(B, p.mu, p.sigma, p.op), best, rtol=1e-11)


@pytest.mark.parametrize("p", FIXED, ids=FIXED_IDS)
def test_every_function_matches_independent_computation(p):
    """All of DESIGN.md's problem functions against the references, d = 2 .. 2000, at rtol 1e-10
    (times eq 14's condition number for the off-diagonal ones; see the module docstring)."""
    cond = off_condition(p)
    assert cond < 1e4
    for B in BATCHES:
        assert_values_close(theory_values(p.mu, p.sigma, p.op, B), reference_values(p, B), 1e-10, cond)


@given(problems())
def test_every_function_matches_independent_computation_random(p):
    cond = off_condition(p)
    assume(cond < 1e6)
    for B in BATCHES:
        assert_values_close(theory_values(p.mu, p.sigma, p.op, B), reference_values(p, B), 1e-10, cond)


@pytest.mark.slow
@settings(max_examples=12)
@given(problems(max_dim=2000))
def test_every_function_matches_independent_computation_random_large(p):
    """As above on random problems of dimension up to 2000 (about 1 s per dense example)."""
    test_every_function_matches_independent_computation_random.hypothesis.inner_test(p)


# |r| <= e 10^-2.5 puts validity_bound above 2e4, so [1, bound / 1000] is a real range of B.
REGIME = (-4.0, -2.5)


@given(problems(kinds=("lowrank", "dense"), aligned=True, max_dim=30, log_snr=REGIME))
def test_theorem3_against_eq9_with_eq10(p):
    """Theorem 3 replaces E_i (eq 10) by sqrt(2B/pi) r_i (eq 39). With q = B / validity_bound,
    eq 10's E_i lies between sqrt(2B/pi) r_i / sqrt(1 + q) and sqrt(2B/pi) r_i, so eq 9's numerator
    moves by at most q/2 and its denominator tr(H) + off(E) by at most q |off| terms: the relative
    gap is at most q (1/2 + offabs / den) to first order; we allow twice that. Also the exact
    eq 9 (erf, whose series erf(x) = 2x/sqrt(pi) (1 - x^2/3 + ...) gives a gap of order q)."""
    bound = theory.validity_bound(p.mu, p.sigma)
    _, off_abs = off_sum(p)
    assert bound / 1e3 > 10.0
    for B in np.geomspace(1.0, bound / 1e3, 6):
        q = B / bound
        surge = theory.surge_lr(B, p.mu, p.sigma, p.op)
        den = np.trace(p.H) + (2.0 * B / PI) * off_sum(p)[0]
        rtol = 2.0 * q * (0.5 + (2.0 * B / PI) * off_abs / den) + 1e-12
        np.testing.assert_allclose(surge, theory.optimal_lr(B, p.mu, p.sigma, p.op, approx=True), rtol=rtol)
        np.testing.assert_allclose(surge, theory.optimal_lr(B, p.mu, p.sigma, p.op), rtol=rtol)


def test_theorem3_approximation_degrades_outside_its_regime():
    """Sharpness: at B = validity_bound the gap is far above the in-regime tolerance."""
    p = make_problem(200, 11, "lowrank", snr=0.05)
    bound = theory.validity_bound(p.mu, p.sigma)
    surge = theory.surge_lr(bound, p.mu, p.sigma, p.op)
    exact = theory.optimal_lr(bound, p.mu, p.sigma, p.op, approx=True)
    assert abs(surge / exact - 1.0) > 0.05


@given(problems(aligned=True, max_dim=30, log_snr=REGIME))
def test_eq18_against_eq8_in_its_regime(p):
    """Theorem 5 (eq 18) vs eq 8 for B << validity_bound. erf(x) >= 2x/sqrt(pi) (1 - x^2/3) with
    x^2 = (pi/4) q: E_i is within a factor 1 - pi q / 12 of eq 39, the squared numerator within
    pi q / 6, the denominator's off(E) term within pi q / 6 of its absolute terms; we allow 2 q
    (1 + offabs terms / den)."""
    bound = theory.validity_bound(p.mu, p.sigma)
    _, off_abs = off_sum(p)
    assert bound / 1e3 > 10.0
    for B in np.geomspace(1.0, bound / 1e3, 6):
        q = B / bound
        den = np.trace(p.H) + (2.0 * B / PI) * off_sum(p)[0]
        rtol = 2.0 * q * (1.0 + (2.0 * B / PI) * off_abs / den) + 1e-12
        np.testing.assert_allclose(
            theory.surge_loss_improvement(B, p.mu, p.sigma, p.op),
            theory.optimal_loss_improvement(B, p.mu, p.sigma, p.op),
            rtol=rtol,
        )


@given(problems())
def test_eq17_is_the_large_batch_limit_of_eq9(p):
    """E_i = erf(sqrt(B/2) r_i) = sign(r_i) to double precision once sqrt(B/2) |r_i| > 6
    (erfc(6) ~ 2e-17): eq 9 at B = 72 / min r_i^2 and at B = inf equals eq 17 to rounding."""
    lim = theory.large_batch_lr(p.mu, p.op)
    b_sat = 72.0 / np.min(p.r**2)
    np.testing.assert_allclose(theory.optimal_lr(b_sat, p.mu, p.sigma, p.op), lim, rtol=1e-12)
    np.testing.assert_allclose(theory.optimal_lr(np.inf, p.mu, p.sigma, p.op), lim, rtol=1e-12)
    np.testing.assert_allclose(theory.optimal_lr(np.inf, p.mu, p.sigma, p.op, approx=True), lim, rtol=1e-12)
    # eq 17 literally: sum |mu_i| / sum_ij sign(mu_i) sign(mu_j) H_ij
    s = np.sign(p.mu)
    np.testing.assert_allclose(lim, np.sum(np.abs(p.mu)) / (s @ p.H @ s), rtol=1e-12)


def test_eq17_limit_with_zero_gradient_coordinates():
    """A coordinate with mu_i = 0 keeps a fair-coin sign at any B: its variance H_ii stays in
    eq 9's denominator, and large_batch_lr must be eq 9's limit (eq 17 literally would omit it)."""
    mu, sigma, H = np.array([1.0, 0.0, 2.0]), np.ones(3), np.diag([1.0, 5.0, 1.0])
    want = 3.0 / (1.0 + 1.0 + 5.0)  # sum|mu| / (s'Hs + H_22)
    assert theory.large_batch_lr(mu, H) == pytest.approx(want, rel=1e-15)
    assert theory.optimal_lr(np.inf, mu, sigma, H) == pytest.approx(want, rel=1e-15)
    p = make_problem(40, 3, "dense", zero_mu=5)
    np.testing.assert_allclose(
        theory.large_batch_lr(p.mu, p.op), theory.optimal_lr(1e20, p.mu, p.sigma, p.op), rtol=1e-12
    )


@pytest.mark.parametrize("B", [1.0, 2.0, 50.0, 3000.0])
@pytest.mark.parametrize("dense_sigma", [False, True])
def test_sgd_optimal_lr_brute_force(B, dense_sigma):
    """McCandlish eq 1 against the maximum of the SGD quadratic model
    eps G'G - eps^2/2 (tr(H Sigma)/B + G'HG) (E[V] = G, cov(V) = Sigma / B); argmax rtol 1e-6."""
    rng = np.random.default_rng(8)
    d = 12
    A = rng.standard_normal((d, d))
    H = A @ A.T / d
    G = rng.standard_normal(d)
    C = rng.standard_normal((d, d))
    Sigma = C @ C.T / d if dense_sigma else np.diag(rng.uniform(0.5, 3.0, d))
    lr, _ = brute_force_max(expected_gain(G, G, Sigma / B, H))
    arg = Sigma if dense_sigma else np.diag(Sigma)
    np.testing.assert_allclose(theory.sgd_optimal_lr(B, G, arg, H), lr, rtol=1e-6)


def test_fit_noise_batch_size_recovers_eq20_points():
    """Points on eq 20's hyperbola, S = S_min (1 + B_noise / B), E = E_min (1 + B / B_noise) =
    S B: the least-squares line is exact, so the fit returns the generating values to rounding
    (rtol 1e-9: the regression's normal equations lose a few digits)."""
    bn, s_min = 123.4, 5000.0
    e_min = bn * s_min
    B = np.geomspace(8, 8192, 11)
    S = s_min * (1.0 + bn / B)
    E = e_min * (1.0 + B / bn)
    np.testing.assert_allclose((S / s_min - 1.0) * (E / e_min - 1.0), 1.0, rtol=1e-12)  # eq 20
    np.testing.assert_allclose(theory.fit_noise_batch_size(S, E), (bn, s_min, e_min), rtol=1e-9)
    np.testing.assert_allclose(theory.fit_noise_batch_size(S[::-1], E[::-1]), (bn, s_min, e_min), rtol=1e-9)


@pytest.mark.parametrize("rule,alpha", [("adam", 1.0), ("sgd", 1.0), ("sgd", 0.5)])
def test_estimate_peak_lr_recovers_generating_peak(rule, alpha):
    """Learning rates generated from eq 2 (Adam) or eq 24's model eps_max / (1 + B_noise/B)^alpha
    give back eps_max exactly (rtol 1e-13), and the other rule does not."""
    bn, peak = 300.0, 2.5e-3
    B = np.geomspace(1, 1e5, 17)
    if rule == "adam":
        lr = peak / (0.5 * (np.sqrt(bn / B) + np.sqrt(B / bn)))
        other = theory.estimate_peak_lr(B, lr, bn, rule="sgd")
    else:
        lr = peak / (1.0 + bn / B) ** alpha
        other = theory.estimate_peak_lr(B, lr, bn, rule="adam")
    assert theory.estimate_peak_lr(B, lr, bn, rule=rule, alpha=alpha) == pytest.approx(peak, rel=1e-13)
    assert abs(other / peak - 1.0) > 0.1


# --- properties (hypothesis) --------------------------------------------------------------------


def scaled_op(op, c):
    if isinstance(op, Dense):
        return Dense(c * op.matrix)
    if isinstance(op, Diagonal):
        return Diagonal(c * op.h)
    return DiagonalPlusLowRank(c * op.h, np.sqrt(c) * op.factor)


def permuted_op(op, perm):
    if isinstance(op, Dense):
        return Dense(op.matrix[np.ix_(perm, perm)])
    if isinstance(op, Diagonal):
        return Diagonal(op.h[perm])
    return DiagonalPlusLowRank(op.h[perm], op.factor[perm])


@given(problems(), st.floats(1e-3, 1e3), st.floats(1.0, 1e7))
def test_scaling_H_scales_learning_rates_inversely(p, c, B):
    """H -> c H: every learning rate and loss improvement scales by 1/c; B_noise, E_i and the
    validity bound do not change (rtol 1e-12, times cond for eq 14's sum)."""
    cond = off_condition(p)
    assume(cond < 1e6)
    base = theory_values(p.mu, p.sigma, p.op, B)
    got = theory_values(p.mu, p.sigma, scaled_op(p.op, c), B)
    unchanged = {"sign_mean", "sign_mean_approx", "noise_batch_size", "validity_bound"}
    assert_values_close(got, base, 1e-12, cond, scale={k: 1.0 / c for k in base if k not in unchanged})


@given(problems(), st.floats(1e-3, 1e3), st.floats(1.0, 1e7))
def test_scaling_mu_and_sigma_together_leaves_E_unchanged(p, c, B):
    """mu, sigma -> c mu, c sigma leaves r = mu / sigma, hence E_i (exact and eq 10), B_noise and
    the validity bound, unchanged up to one rounding of r (rtol 1e-13)."""
    for f in (theory.sign_mean, theory.sign_mean_approx):
        np.testing.assert_allclose(f(B, c * p.mu, c * p.sigma), f(B, p.mu, p.sigma), rtol=1e-13)
    cond = off_condition(p)
    np.testing.assert_allclose(
        theory.noise_batch_size(c * p.mu, c * p.sigma, p.op),
        theory.noise_batch_size(p.mu, p.sigma, p.op),
        rtol=1e-12 * cond,
    )
    np.testing.assert_allclose(
        theory.validity_bound(c * p.mu, c * p.sigma), theory.validity_bound(p.mu, p.sigma), rtol=1e-13
    )


@given(problems(), st.randoms(use_true_random=False), st.floats(1.0, 1e7))
def test_permuting_coordinates_changes_nothing(p, random, B):
    d = p.mu.size
    perm = np.array(random.sample(range(d), d))
    cond = off_condition(p)
    assume(cond < 1e6)
    base = theory_values(p.mu, p.sigma, p.op, B)
    got = theory_values(p.mu[perm], p.sigma[perm], permuted_op(p.op, perm), B)
    for name in ("sign_mean", "sign_mean_approx"):  # per-coordinate: permuted, not equal
        got[name] = np.empty_like(got[name])
        got[name][perm] = theory_values(p.mu[perm], p.sigma[perm], permuted_op(p.op, perm), B)[name]
    assert_values_close(got, base, 1e-12, cond)


@given(problems(kinds=("diagonal", "lowrank")), st.floats(1.0, 1e7))
def test_dense_and_operator_forms_agree(p, B):
    """Diagonal and DiagonalPlusLowRank against the same H as a dense array, every function,
    rtol 1e-12 (times cond for eq 14's sum)."""
    cond = off_condition(p)
    assume(cond < 1e6)
    for H in (p.H, Dense(p.H)):
        assert_values_close(theory_values(p.mu, p.sigma, p.op, B), theory_values(p.mu, p.sigma, H, B), 1e-12, cond)


OPERATOR_FIXED = [(q, i) for q, i in zip(FIXED, FIXED_IDS) if not isinstance(q.op, Dense)]


@pytest.mark.parametrize("p", [q for q, _ in OPERATOR_FIXED], ids=[i for _, i in OPERATOR_FIXED])
def test_dense_and_operator_forms_agree_large(p):
    """As above up to d = 2000 (the dense form built once: as_hessian passes operators through)."""
    cond = off_condition(p)
    dense = Dense(p.H, check_psd=False)  # PSD by construction; eigvalsh at d = 2000 is slow
    for B in BATCHES:
        assert_values_close(theory_values(p.mu, p.sigma, p.op, B), theory_values(p.mu, p.sigma, dense, B), 1e-12, cond)


@given(problems(kinds=("dense", "lowrank"), aligned=True), st.floats(1.0, 1e7))
def test_surge_lr_peaks_at_noise_batch_size(p, B):
    """Eq 13: surge_lr(B) <= peak_lr for all B, with equality at B = B_noise (rtol 1e-12)."""
    bn = theory.noise_batch_size(p.mu, p.sigma, p.op)
    peak = theory.peak_lr(p.mu, p.sigma, p.op)
    assert np.isfinite(bn) and np.isfinite(peak)
    assert theory.surge_lr(B, p.mu, p.sigma, p.op) <= peak * (1.0 + 1e-12)
    if bn >= 1.0:
        np.testing.assert_allclose(theory.surge_lr(bn, p.mu, p.sigma, p.op), peak, rtol=1e-12)
        for f in (0.5, 2.0):
            if bn * f >= 1.0:
                assert theory.surge_lr(bn * f, p.mu, p.sigma, p.op) < peak * (1.0 - 1e-3)


@given(problems(kinds=("dense", "lowrank")))
def test_peak_lr_am_gm_bound_eq41(p):
    """Eq 41: peak_lr >= S / sum_ij {r_i r_j (i != j), 1 (i = j)} H_ij = S / (off + tr H)."""
    off, _ = off_sum(p)
    peak = theory.peak_lr(p.mu, p.sigma, p.op)
    S = np.sum(p.mu**2 / p.sigma)
    if off <= 0:
        assert peak == np.inf
        return
    cond = off_condition(p)
    assert peak >= S / (off + np.trace(p.H)) * (1.0 - 1e-12 * cond)


def test_peak_lr_am_gm_bound_is_tight():
    """Equality in eq 41 when off = tr(H): H = [[1, a], [a, 1]], r = (c, c) with 2 c^2 a = 2."""
    a, c = 0.5, np.sqrt(2.0)
    mu, sigma, H = np.array([c, c]), np.ones(2), np.array([[1.0, a], [a, 1.0]])
    S = 2.0 * c * c
    assert theory.peak_lr(mu, sigma, H) == pytest.approx(S / (2.0 * c * c * a + 2.0), rel=1e-14)


@given(st.floats(-60.0, 60.0, allow_nan=False))
def test_erf_approximation_error_bound(x):
    """|erf(x) - x / sqrt(x^2 + pi/4)| <= 0.1079 (eq 10 in the variable x = sqrt(B/2) r: take
    B = 2, sigma = 1, mu = x)."""
    gap = theory.sign_mean(2.0, [x], [1.0])[0] - theory.sign_mean_approx(2.0, [x], [1.0])[0]
    assert abs(gap) <= 0.1079


def test_erf_approximation_worst_case_near_1_33():
    """The maximum of erf(x) - x / sqrt(x^2 + pi/4) (the gap is odd, positive for x > 0): found by
    scipy.optimize, it is at x = 1.330 with value 0.10784, and a grid over [0, 60] finds nothing
    larger."""

    def gap(x):
        return special.erf(x) - theory.sign_mean_approx(2.0, [x], [1.0])[0]

    res = optimize.minimize_scalar(lambda x: -gap(x), bounds=(0.2, 4.0), method="bounded", options={"xatol": 1e-10})
    assert abs(res.x - 1.33) < 0.005
    assert 0.1078 < -res.fun <= 0.1079
    grid = np.linspace(0.0, 60.0, 600_001)
    worst = np.max(
        np.abs(theory.sign_mean(2.0, grid, np.ones_like(grid)) - theory.sign_mean_approx(2.0, grid, np.ones_like(grid)))
    )
    assert worst <= -res.fun + 1e-12


@given(problems(kinds=("diagonal",)), st.lists(st.floats(1.0, 1e12), min_size=2, max_size=20))
def test_diagonal_H_has_no_surge(p, batches):
    """Diagonal H: eq 14's off-diagonal sum is 0, B_noise = inf (for the operator and for the same
    matrix given densely), and eq 9 = sum_i |E_i mu_i| / tr(H) is non-decreasing in B (up to
    rounding of its denominator, rtol 1e-13)."""
    B = np.sort(np.array(batches + [np.inf]))
    for H in (p.op, p.H):
        assert theory.noise_batch_size(p.mu, p.sigma, H) == np.inf
        assert theory.peak_lr(p.mu, p.sigma, H) == np.inf
        assert theory.max_loss_improvement(p.mu, p.sigma, H) == np.inf
        for approx in (False, True):
            lr = theory.optimal_lr(B, p.mu, p.sigma, H, approx=approx)
            assert np.all(lr[1:] >= lr[:-1] * (1.0 - 1e-13))


def test_negative_off_diagonal_gives_infinite_noise_batch_size():
    """off < 0 (anti-aligned coupling): B_noise = inf, and the surge forms fall back to eq 4."""
    mu, sigma = np.array([1.0, 1.0]), np.array([10.0, 10.0])
    H = np.array([[1.0, -0.5], [-0.5, 1.0]])
    assert theory.noise_batch_size(mu, sigma, H) == np.inf
    assert theory.peak_lr(mu, sigma, H) == np.inf
    B = np.array([1.0, 100.0])
    S = np.sum(mu**2 / sigma)
    np.testing.assert_allclose(theory.surge_lr(B, mu, sigma, H), np.sqrt(2 * B / PI) * S / 2.0, rtol=1e-14)


# --- vectorisation ------------------------------------------------------------------------------


B_FUNCTIONS = {
    "sign_mean": lambda B, p: theory.sign_mean(B, p.mu, p.sigma),
    "sign_mean_approx": lambda B, p: theory.sign_mean_approx(B, p.mu, p.sigma),
    "optimal_lr": lambda B, p: theory.optimal_lr(B, p.mu, p.sigma, p.op),
    "optimal_lr_approx": lambda B, p: theory.optimal_lr(B, p.mu, p.sigma, p.op, approx=True),
    "optimal_loss_improvement": lambda B, p: theory.optimal_loss_improvement(B, p.mu, p.sigma, p.op),
    "surge_lr": lambda B, p: theory.surge_lr(B, p.mu, p.sigma, p.op),
    "surge_loss_improvement": lambda B, p: theory.surge_loss_improvement(B, p.mu, p.sigma, p.op),
    "sgd_optimal_lr": lambda B, p: theory.sgd_optimal_lr(B, p.mu, p.sigma**2, p.op),
}


@pytest.mark.parametrize("name", sorted(B_FUNCTIONS))
@pytest.mark.parametrize("kind", ["dense", "diagonal", "lowrank"])
def test_vectorised_over_batch_size(name, kind):
    """Array B of any shape gives out.shape = B.shape (+ (d,) for sign_mean*), each entry equal to
    the scalar call (rtol 1e-14: a batched matmul may sum in another order)."""
    f = B_FUNCTIONS[name]
    p = make_problem(7, 1, kind)
    tail = (7,) if name.startswith("sign_mean") else ()
    for B in (
        np.array(5.0),
        np.array([1.0, 2.5, np.inf]),
        np.geomspace(1, 1e6, 6).reshape(2, 3),
        np.full((2, 1, 2), 30.0),
        np.empty(0),
    ):
        out = f(B, p)
        assert np.shape(out) == B.shape + tail
        for idx in np.ndindex(B.shape):
            np.testing.assert_allclose(out[idx], f(float(B[idx]), p), rtol=1e-14, atol=0)
    assert np.shape(f(3, p)) == tail  # Python int
    np.testing.assert_allclose(f([3, 4], p), np.stack([f(3.0, p), f(4.0, p)]), rtol=1e-14)


# --- bad input ----------------------------------------------------------------------------------

MU, SIGMA, H2 = np.array([1.0, -1.0]), np.array([1.0, 2.0]), np.eye(2)

BAD_THEORY_CALLS = [
    ("sigma zero", lambda: theory.sign_mean(1.0, MU, [1.0, 0.0]), ValueError, r"sigma must be > 0"),
    ("sigma negative", lambda: theory.optimal_lr(1.0, MU, [-1.0, 1.0], H2), ValueError, r"sigma must be > 0"),
    ("mu nan", lambda: theory.sign_mean_approx(1.0, [np.nan, 1.0], SIGMA), ValueError, r"mu has non-finite"),
    ("sigma inf", lambda: theory.peak_lr(MU, [np.inf, 1.0], H2), ValueError, r"sigma has non-finite"),
    (
        "H nan",
        lambda: theory.noise_batch_size(MU, SIGMA, [[1.0, np.nan], [np.nan, 1.0]]),
        ValueError,
        r"H has non-finite",
    ),
    (
        "mu/sigma shapes",
        lambda: theory.sign_mean(1.0, MU, [1.0, 1.0, 1.0]),
        ValueError,
        r"mu and sigma must have the same shape",
    ),
    ("mu 2-d", lambda: theory.validity_bound([[1.0]], [[1.0]]), ValueError, r"mu must be a non-empty 1-d array"),
    ("mu empty", lambda: theory.sign_mean(1.0, [], []), ValueError, r"mu must be a non-empty 1-d array"),
    (
        "H dimension",
        lambda: theory.optimal_lr(1.0, MU, SIGMA, np.eye(3)),
        ValueError,
        r"H has dimension 3 but mu has 2",
    ),
    ("H not square", lambda: theory.optimal_lr(1.0, MU, SIGMA, np.ones((2, 3))), ValueError, r"H must be square"),
    (
        "H non-symmetric",
        lambda: theory.surge_lr(1.0, MU, SIGMA, [[1.0, 0.2], [0.0, 1.0]]),
        ValueError,
        r"H must be symmetric",
    ),
    (
        "H 1-d",
        lambda: theory.optimal_lr(1.0, MU, SIGMA, [1.0, 1.0]),
        TypeError,
        r"H must be a \(d, d\) array or a hessian operator",
    ),
    ("B < 1", lambda: theory.sign_mean(0.5, MU, SIGMA), ValueError, r"batch size B must be >= 1, got 0.5"),
    (
        "B = 0 in array",
        lambda: theory.optimal_lr([4.0, 0.0], MU, SIGMA, H2),
        ValueError,
        r"batch size B must be >= 1, got 0",
    ),
    ("B negative", lambda: theory.surge_lr(-3.0, MU, SIGMA, H2), ValueError, r"batch size B must be >= 1"),
    ("B nan", lambda: theory.surge_loss_improvement(np.nan, MU, SIGMA, H2), ValueError, r"batch size B must be >= 1"),
    ("B < 1 sgd", lambda: theory.sgd_optimal_lr(0.0, MU, SIGMA**2, H2), ValueError, r"batch size B must be >= 1"),
    (
        "Sigma shape",
        lambda: theory.sgd_optimal_lr(1.0, MU, np.ones(3), H2),
        ValueError,
        r"Sigma must have shape \(2,\) or \(2, 2\), got \(3,\)",
    ),
    (
        "Sigma negative",
        lambda: theory.sgd_optimal_lr(1.0, MU, [-1.0, 1.0], H2),
        ValueError,
        r"Sigma \(variances\) must be >= 0",
    ),
    ("Sigma nan", lambda: theory.sgd_optimal_lr(1.0, MU, [np.nan, 1.0], H2), ValueError, r"Sigma has non-finite"),
    ("G'HG = 0", lambda: theory.sgd_optimal_lr(1.0, MU, SIGMA, np.zeros((2, 2))), ValueError, r"G'HG must be > 0"),
    (
        "fit lengths",
        lambda: theory.fit_noise_batch_size([1.0, 2.0], [1.0, 2.0, 3.0]),
        ValueError,
        r"same length, got 2 and 3",
    ),
    ("fit one point", lambda: theory.fit_noise_batch_size([1.0], [1.0]), ValueError, r"need at least 2"),
    (
        "fit non-positive",
        lambda: theory.fit_noise_batch_size([1.0, -2.0], [1.0, 2.0]),
        ValueError,
        r"S and E must be finite and > 0",
    ),
    (
        "fit inf",
        lambda: theory.fit_noise_batch_size([1.0, 2.0], [1.0, np.inf]),
        ValueError,
        r"S and E must be finite and > 0",
    ),
    ("fit equal E", lambda: theory.fit_noise_batch_size([1.0, 2.0], [5.0, 5.0]), ValueError, r"all E are equal"),
    (
        "peak lengths",
        lambda: theory.estimate_peak_lr([1.0, 2.0], [1.0], 10.0),
        ValueError,
        r"B and lr must have the same length",
    ),
    (
        "peak B < 1",
        lambda: theory.estimate_peak_lr([0.5, 2.0], [1.0, 1.0], 10.0),
        ValueError,
        r"batch size B must be >= 1",
    ),
    (
        "peak B_noise inf",
        lambda: theory.estimate_peak_lr([1.0], [1.0], np.inf),
        ValueError,
        r"noise_batch_size must be finite and > 0, got inf",
    ),
    (
        "peak B_noise 0",
        lambda: theory.estimate_peak_lr([1.0], [1.0], 0.0),
        ValueError,
        r"noise_batch_size must be finite and > 0",
    ),
    (
        "peak rule",
        lambda: theory.estimate_peak_lr([1.0], [1.0], 5.0, rule="lion"),
        ValueError,
        r"rule must be 'adam' or 'sgd', got 'lion'",
    ),
]


@pytest.mark.parametrize("call,exc,match", [c[1:] for c in BAD_THEORY_CALLS], ids=[c[0] for c in BAD_THEORY_CALLS])
def test_bad_input_raises_with_message(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_curves_bundles_each_closed_form():
    # theory.curves is a convenience: each entry must be the named function's value.
    rng = np.random.default_rng(0)
    mu, sigma, H = rng.normal(0, 0.1, 6), rng.uniform(0.5, 2, 6), np.eye(6) + 0.2
    B = np.array([1.0, 10.0, 1e4])
    c = theory.curves(B, mu, sigma, H)
    np.testing.assert_array_equal(c["lr_exact"], theory.optimal_lr(B, mu, sigma, H))
    np.testing.assert_array_equal(c["lr_erf_approx"], theory.optimal_lr(B, mu, sigma, H, approx=True))
    np.testing.assert_array_equal(c["lr_surge"], theory.surge_lr(B, mu, sigma, H))
    np.testing.assert_array_equal(c["lr_sgd"], theory.sgd_optimal_lr(B, mu, sigma**2, H))
    np.testing.assert_array_equal(c["dl_exact"], theory.optimal_loss_improvement(B, mu, sigma, H))
    np.testing.assert_array_equal(c["dl_surge"], theory.surge_loss_improvement(B, mu, sigma, H))


@pytest.mark.parametrize("kind", ["diagonal", "lowrank"])
def test_blocked_sums_match_dense_form_and_do_not_depend_on_the_grid(kind, monkeypatch):
    # At large d eq 8/9 are summed over blocks of batch sizes and coordinates (and eq 14's sums
    # over blocks of the factor's rows). With blocks of 7 batch sizes and 50 coordinates forced,
    # every closed form equals the dense-matrix form (an independent computation, rtol 1e-12 times
    # the condition number of off, about 1 here), and a batch size's value is the same alone or
    # inside a grid (bit for bit: its sums run over the same blocks).
    import surgesim.hessian as hessian_module

    monkeypatch.setattr(theory, "_ROWS", 7)
    monkeypatch.setattr(theory, "_COORDS", 50)
    monkeypatch.setattr(hessian_module, "_ROWS", 50)
    rng = np.random.default_rng(5)
    d = 333
    mu, sigma, h = rng.normal(0, 0.05, d), rng.uniform(0.5, 2, d), rng.uniform(0.5, 2, d)
    U = np.abs(rng.normal(0, 0.2, (d, 2))) * np.sign(mu)[:, None]
    op = Diagonal(h) if kind == "diagonal" else DiagonalPlusLowRank(h, U)
    dense = Dense(op.to_dense())
    B = np.logspace(0, 6, 30)
    blocked = theory.curves(B, mu, sigma, op)
    for key, value in theory.curves(B, mu, sigma, dense).items():
        np.testing.assert_allclose(blocked[key], value, rtol=1e-12, err_msg=key)
    for i in (0, 13, 29):
        assert theory.optimal_lr(B[i], mu, sigma, op) == blocked["lr_exact"][i]
    assert op.trace() == pytest.approx(np.trace(op.to_dense()), rel=1e-13)
    expected = theory.noise_batch_size(mu, sigma, dense)
    assert theory.noise_batch_size(mu, sigma, op) == pytest.approx(expected, rel=1e-12)
