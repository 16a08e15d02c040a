"""surgesim.correlated (exact sign moments under correlated Gaussian noise) and
surgesim.kernels.correlated (correlated and non-Gaussian samplers).

Independent checks: the bivariate normal CDF of scipy.stats.multivariate_normal and Plackett's
integral Phi2(h, k; rho) = Phi(h) Phi(k) + int_0^rho phi2(h, k; t) dt by quadrature; brute-force
Monte Carlo with NumPy's own generator (not surgesim.rng); exact binomial sign probabilities for
the two-point law and the laws' CDFs at B = 1; scipy.stats' KS test for the samplers.

Tolerances. Orthant probabilities: 1e-12 absolute (every method is accurate to ~1e-15; the margin
covers quadrature). Monte Carlo: 4 standard errors of the estimator itself (each test compares at
most a few dozen statistics, so a false alarm at 4 s.e., probability 6e-5 each, is rare; seeds are
fixed). Diagonal-Sigma identities: rtol 1e-12 (the same terms summed in another order).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import integrate, special, stats

from surgesim import surge_problem, theory
from surgesim.correlated import (
    as_covariance,
    noise_batch_size_correlated,
    optimal_lr_correlated,
    orthant_probability,
    sign_correlation,
    sign_moments,
    surge_lr_correlated,
)
from surgesim.hessian import Dense, DiagonalPlusLowRank
from surgesim.kernels import correlated as kc
from surgesim.kernels import onestep
from surgesim.limits import ratio_estimate

K_SE = 4.0


def strong_covariance() -> tuple[np.ndarray, np.ndarray]:
    """A 4 x 4 covariance with correlations +0.9 and -0.9 (and unequal variances), and its sd."""
    R = np.array([[1.0, 0.9, -0.6, 0.3], [0.9, 1.0, -0.5, 0.2], [-0.6, -0.5, 1.0, -0.9], [0.3, 0.2, -0.9, 1.0]])
    assert np.linalg.eigvalsh(R)[0] > 0  # a valid correlation matrix (test setup, not input checking)
    sd = np.array([0.5, 1.0, 2.0, 1.5])
    return R * np.outer(sd, sd), sd


MU4 = np.array([0.3, -0.2, 0.5, 0.05])
H4 = np.array([[2.0, 0.8, -0.3, 0.2], [0.8, 1.5, 0.4, 0.1], [-0.3, 0.4, 1.0, 0.5], [0.2, 0.1, 0.5, 1.2]])


def plackett(h: float, k: float, rho: float) -> float:
    """Phi2(h, k; rho) = Phi(h) Phi(k) + int_0^asin(rho) exp(-(h^2 + k^2 - 2 h k sin t) / (2 cos^2 t)) / (2 pi) dt
    (Plackett's identity dPhi2/drho = phi2, with rho = sin t)."""
    f = lambda t: np.exp(-(h * h + k * k - 2 * h * k * np.sin(t)) / (2 * np.cos(t) ** 2)) / (2 * np.pi)  # noqa: E731
    return special.ndtr(h) * special.ndtr(k) + integrate.quad(f, 0.0, np.arcsin(rho), epsabs=1e-15, epsrel=1e-13)[0]


# --- two coordinates ---------------------------------------------------------------------------------


CASES = [
    (h, k, rho)
    for h in (-2.5, -0.3, 0.0, 0.7, 3.0)
    for k in (-1.0, 0.0, 0.4, 2.2)
    for rho in (-0.99, -0.9, -0.5, 0.0, 0.3, 0.9, 0.999)
]


@pytest.mark.parametrize("h,k,rho", CASES[::3])
def test_orthant_probability_matches_scipy_and_plackett(h, k, rho):
    got = float(orthant_probability(h, k, rho))
    ref = stats.multivariate_normal(mean=[0.0, 0.0], cov=[[1.0, rho], [rho, 1.0]]).cdf([h, k])
    assert abs(got - ref) < 1e-12
    assert abs(got - plackett(h, k, rho)) < 1e-12


def test_orthant_probability_vectorised():
    h, k, rho = (np.array(c) for c in zip(*CASES))
    ref = np.array([plackett(*c) for c in CASES])
    np.testing.assert_allclose(orthant_probability(h, k, rho), ref, rtol=0, atol=1e-12)


def test_sign_correlation_special_cases():
    rho = np.linspace(-0.999, 0.999, 41)
    # Sheppard's arcsine law at zero means
    np.testing.assert_allclose(sign_correlation(0.0, 0.0, rho), 2 / np.pi * np.arcsin(rho), rtol=0, atol=1e-15)
    # independence: the product of the means, exactly (1e-15: Owen's T roundings)
    h = np.linspace(-4, 4, 33)
    np.testing.assert_allclose(
        sign_correlation(h[:, None], h[None, :], 0.0),
        np.outer(special.erf(h / np.sqrt(2)), special.erf(h / np.sqrt(2))),
        rtol=0,
        atol=1e-15,
    )
    # infinite batch: deterministic signs (a zero mean keeps a fair coin)
    assert sign_correlation(np.inf, -np.inf, 0.5) == -1.0
    assert sign_correlation(np.inf, np.inf, -0.7) == 1.0
    assert sign_correlation(np.inf, 0.0, 0.7) == 0.0


@pytest.mark.parametrize("rho", [1.0, -1.0])
@pytest.mark.parametrize("h,k", [(0.3, -0.5), (1.0, 2.0), (0.0, 0.0), (-1.0, 0.2)])
def test_sign_correlation_degenerate(rho, h, k):
    """|rho| = 1: Z2 = rho Z1; E[sign(Z + h) sign(rho Z + k)] by quadrature over Z with breakpoints,
    and continuity with |rho| = 1 - 1e-12 (the general formula)."""
    pts = sorted({-h, -k / rho})
    edges = [-np.inf, *pts, np.inf]
    ref = sum(
        integrate.quad(lambda z: stats.norm.pdf(z) * np.sign(z + h) * np.sign(rho * z + k), a, b)[0]
        for a, b in zip(edges[:-1], edges[1:])
    )
    assert abs(float(sign_correlation(h, k, rho)) - ref) < 1e-10
    assert abs(float(sign_correlation(h, k, rho * (1 - 1e-12))) - ref) < 1e-5  # ~sqrt(1 - |rho|)


@given(h=st.floats(-6, 6), k=st.floats(-6, 6), rho=st.floats(-1, 1))
def test_sign_correlation_symmetries(h, k, rho):
    """E(h, k, rho) = E(k, h, rho) = E(-h, -k, rho) = -E(h, -k, -rho), and |E| <= 1."""
    e = float(sign_correlation(h, k, rho))
    assert abs(e) <= 1 + 1e-15
    assert abs(e - float(sign_correlation(k, h, rho))) < 1e-14
    assert abs(e - float(sign_correlation(-h, -k, rho))) < 1e-14
    assert abs(e + float(sign_correlation(h, -k, -rho))) < 1e-14


def test_small_mean_expansion():
    """E[V_i V_j] = (2/pi) asin(rho) + (2 h k - rho (h^2 + k^2)) / (pi sqrt(1 - rho^2)) + O(h^4)
    (docs/correlated-noise.md): the remainder shrinks 16x when h, k halve."""
    for rho in (-0.9, -0.3, 0.0, 0.5, 0.9):
        errs = []
        for s in (0.02, 0.01):
            h, k = 1.3 * s, -0.7 * s
            approx = 2 / np.pi * np.arcsin(rho) + (2 * h * k - rho * (h * h + k * k)) / (np.pi * np.sqrt(1 - rho * rho))
            errs.append(abs(float(sign_correlation(h, k, rho)) - approx))
        assert 14 < errs[0] / errs[1] < 18  # fourth order: the first-order terms are exact


# --- d coordinates -----------------------------------------------------------------------------------


@pytest.mark.parametrize("B", [1, 16])
def test_sign_moments_against_numpy_monte_carlo(B):
    """Brute force with NumPy's generator: X ~ N(mu, Sigma / B), |rho| up to 0.9."""
    Sigma, _ = strong_covariance()
    E, M = sign_moments(B, MU4, Sigma)
    rng = np.random.default_rng(20240514 + B)
    V = np.sign(rng.multivariate_normal(MU4, Sigma / B, size=400_000))
    se_e = V.std(axis=0, ddof=1) / np.sqrt(len(V))
    assert np.all(np.abs(V.mean(axis=0) - E) <= K_SE * se_e)
    P = V[:, :, None] * V[:, None, :]
    se_m = P.std(axis=0, ddof=1) / np.sqrt(len(V))
    off = ~np.eye(4, dtype=bool)
    assert np.all(np.abs(P.mean(axis=0) - M)[off] <= K_SE * se_m[off])
    assert np.all(np.diag(M) == 1.0)


def test_sign_moments_diagonal_is_the_paper():
    mu, sigma = np.array([0.1, -0.4, 0.0, 2.0]), np.array([1.0, 0.5, 2.0, 3.0])
    E, M = sign_moments(7.0, mu, sigma**2)
    np.testing.assert_allclose(E, theory.sign_mean(7.0, mu, sigma), rtol=1e-15, atol=0)
    expected = np.outer(E, E)
    np.fill_diagonal(expected, 1.0)  # eq 36: cov(V) = diag(1 - E^2)
    np.testing.assert_allclose(M, expected, rtol=1e-15, atol=0)


@pytest.mark.parametrize("form", ["variances", "dense", "pair"])
def test_optimal_lr_equals_eq9_for_diagonal_sigma(form):
    p = surge_problem(60, seed=3)
    var = p.sigma**2
    Sigma = {"variances": var, "dense": np.diag(var), "pair": (var, np.zeros((60, 2)))}[form]
    B = np.array([[1.0, 2.5, 40.0], [1e3, 1e6, np.inf]])
    got = optimal_lr_correlated(B, p.mu, Sigma, p.hessian)
    assert got.shape == B.shape
    np.testing.assert_allclose(got, theory.optimal_lr(B, p.mu, p.sigma, p.hessian), rtol=1e-12)
    assert noise_batch_size_correlated(p.mu, Sigma, p.hessian) == pytest.approx(
        theory.noise_batch_size(p.mu, p.sigma, p.hessian), rel=1e-12
    )
    np.testing.assert_allclose(
        surge_lr_correlated(B[:, :2], p.mu, Sigma, p.hessian),
        theory.surge_lr(B[:, :2], p.mu, p.sigma, p.hessian),
        rtol=1e-12,
    )


def test_optimal_lr_against_brute_force_moments():
    """eps = mu'E[V] / tr(H E[VV']) from sign_moments (a dense trace), for dense and
    diagonal + low-rank H and Sigma, at several B: checks the pair sums and the vectorisation."""
    rng = np.random.default_rng(5)
    d = 9
    F = rng.normal(size=(d, 2))
    Sigma = (rng.uniform(0.1, 0.5, d), F)
    U = rng.normal(size=(d, 2))
    Hop = DiagonalPlusLowRank(rng.uniform(0.5, 1.0, d), U)
    mu = rng.normal(size=d) * 0.3
    B = np.array([1.0, 3.0, 50.0, 1e4])
    for H in (Hop, Hop.to_dense()):
        want = []
        for b in B:
            E, M = sign_moments(b, mu, Sigma)
            want.append(mu @ E / np.sum(Hop.to_dense() * M))
        np.testing.assert_allclose(optimal_lr_correlated(B, mu, Sigma, H), want, rtol=1e-12)
        np.testing.assert_allclose(optimal_lr_correlated(B, mu, as_covariance(Sigma).to_dense(), H), want, rtol=1e-12)


def test_diagonal_hessian_ignores_correlations():
    Sigma, sd = strong_covariance()
    h = np.array([1.0, 2.0, 0.5, 3.0])
    np.testing.assert_allclose(
        optimal_lr_correlated([1.0, 9.0], MU4, Sigma, np.diag(h)),
        theory.optimal_lr([1.0, 9.0], MU4, sd, np.diag(h)),
        rtol=1e-12,
    )


def test_surge_lr_correlated_is_the_small_batch_limit():
    """The relative error of eq 13 with correlations against the exact theory is O(B): it halves
    when B halves, for strongly correlated dense Sigma and for a rank-one (D, F) Sigma."""
    p = surge_problem(40, seed=1)
    s = np.sign(p.mu)
    for Sigma in ((0.2 * p.sigma**2, (np.sqrt(0.8) * p.sigma * s)[:, None]),):
        e = [
            surge_lr_correlated(b, p.mu, Sigma, p.hessian) / optimal_lr_correlated(b, p.mu, Sigma, p.hessian) - 1
            for b in (2.0, 1.0)
        ]
        assert abs(e[1]) < 1e-3
        assert e[1] / e[0] == pytest.approx(0.5, rel=0.02)
    Sigma, _ = strong_covariance()
    mu = MU4 * 1e-3
    e = [surge_lr_correlated(b, mu, Sigma, H4) / optimal_lr_correlated(b, mu, Sigma, H4) - 1 for b in (2.0, 1.0)]
    assert e[1] / e[0] == pytest.approx(0.5, rel=0.02)


def test_noise_batch_size_correlated_is_the_peak_of_the_expansion():
    p = surge_problem(50, seed=2)
    Sigma = (0.9 * p.sigma**2, (np.sqrt(0.1) * p.sigma * np.sign(p.mu))[:, None])
    bn = noise_batch_size_correlated(p.mu, Sigma, p.hessian)
    assert np.isfinite(bn) and bn > theory.noise_batch_size(p.mu, p.sigma, p.hessian)  # aligned noise delays the peak
    f = lambda b: float(surge_lr_correlated(b, p.mu, Sigma, p.hessian))  # noqa: E731
    assert f(bn) > f(bn * 1.01) and f(bn) > f(bn / 1.01)


def test_validation_messages():
    with pytest.raises(ValueError, match="symmetric"):
        as_covariance([[1.0, 0.5], [0.4, 1.0]])
    with pytest.raises(ValueError, match="positive semi-definite"):
        as_covariance([[1.0, 2.0], [2.0, 1.0]])
    with pytest.raises(ValueError, match=r"variances must be > 0"):
        as_covariance([[1.0, 0.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match=r"D must be >= 0"):
        as_covariance(([1.0, -1.0], [[1.0], [1.0]]))
    with pytest.raises(ValueError, match=r"factor F must have shape \(2, k\)"):
        as_covariance(([1.0, 1.0], [[1.0], [1.0], [1.0]]))
    with pytest.raises(ValueError, match="dimension 2 but mu has 3"):
        sign_moments(1.0, [0.0, 0.0, 1.0], np.eye(2))
    with pytest.raises(ValueError, match="one batch size"):
        sign_moments([1.0, 2.0], [0.0, 1.0], np.eye(2))
    with pytest.raises(ValueError, match="B must be >= 1"):
        optimal_lr_correlated(0.5, [0.0, 1.0], np.eye(2), np.eye(2))
    with pytest.raises(ValueError, match=r"rho must be in \[-1, 1\]"):
        sign_correlation(0.0, 0.0, 1.5)
    with pytest.raises(ValueError, match=r"\|rho_ij\| < 1"):
        noise_batch_size_correlated([1.0, 1.0], ([0.0, 0.0], [[1.0], [1.0]]), np.ones((2, 2)))
    with pytest.raises(TypeError, match="Sigma must be"):
        as_covariance(np.ones((2, 2, 2)))


# --- the kernels: correlated Gaussian noise ---------------------------------------------------------


def test_diagonal_gaussian_noise_reproduces_onestep_batch_mean():
    """Same streams: a diagonal Sigma gives onestep's BATCH_MEAN signs, so the same a and b."""
    p = surge_problem(50, seed=4)
    B, n, seed = 9, 300, 11
    a, b = kc.moments(kc.gaussian_noise(p.sigma**2), B, p.mu, p.hessian, n, seed)
    key = onestep.batch_key(seed, B)
    thr, rare = onestep.sign_thresholds(B, p.mu, p.sigma)
    a1, b1 = np.empty(n), np.empty(n)
    work = np.empty(((n + 15) // 16, p.dim), dtype=np.float32)
    Ut = np.ascontiguousarray(p.hessian.factor.T)
    onestep.trial_moments(
        onestep.BATCH_MEAN, key, np.uint64(0), B, p.mu, p.sigma, thr, rare, p.hessian.h, Ut, a1, b1, work
    )
    np.testing.assert_array_equal(a, a1)
    np.testing.assert_allclose(b, b1, rtol=1e-14)


def test_kernel_results_do_not_depend_on_chunking():
    Sigma, _ = strong_covariance()
    noise = kc.gaussian_noise(Sigma)
    whole = kc.signs(noise, 5, MU4, 100, seed=3)
    parts = np.concatenate([kc.signs(noise, 5, MU4, 37, seed=3), kc.signs(noise, 5, MU4, 63, seed=3, start=37)])
    np.testing.assert_array_equal(whole, parts)


@pytest.mark.parametrize("form", ["dense", "singular", "pair"])
def test_correlated_kernel_matches_sign_moments(form):
    Sigma, sd = strong_covariance()
    if form == "singular":  # rank 2: eigen-factor instead of Cholesky; rho_12 = +-1 exactly possible
        F = np.array([[1.0, 0.2], [0.9, 0.1], [-0.5, 1.0], [0.3, -0.8]])
        Sigma = F @ F.T
    elif form == "pair":
        Sigma = (np.array([0.05, 0.2, 0.1, 0.3]), np.array([[0.5, 0.1], [0.45, 0.3], [-0.9, 0.4], [0.2, -0.7]]))
    noise = kc.gaussian_noise(Sigma)
    for B in (1, 6):
        E, M = sign_moments(B, MU4, Sigma)
        V = kc.signs(noise, B, MU4, 200_000, seed=7).astype(np.float64)
        se = V.std(axis=0, ddof=1) / np.sqrt(len(V))
        assert np.all(np.abs(V.mean(axis=0) - E) <= K_SE * se)
        for i in range(4):
            for j in range(i + 1, 4):
                pij = V[:, i] * V[:, j]
                assert abs(pij.mean() - M[i, j]) <= K_SE * pij.std(ddof=1) / np.sqrt(len(V))


@pytest.mark.parametrize("H", [H4, "lowrank"])
def test_optimal_lr_correlated_against_kernel_monte_carlo(H):
    """The exact optimal learning rate with |rho| up to 0.9 against mean(a) / mean(b) of the
    correlated sampler, within 4 delta-method standard errors."""
    Sigma, _ = strong_covariance()
    if isinstance(H, str):
        H = DiagonalPlusLowRank(
            np.array([1.0, 0.5, 1.5, 0.7]), np.array([[0.8, 0.1], [0.7, -0.2], [-0.5, 0.6], [0.3, 0.4]])
        )
    else:
        H = Dense(H)
    noise = kc.gaussian_noise(Sigma)
    for B in (1, 4, 64):
        lr, se = ratio_estimate(*kc.moments(noise, B, MU4, H, 100_000, seed=B))
        want = float(optimal_lr_correlated(B, MU4, Sigma, H))
        assert abs(lr - want) <= K_SE * se, (B, lr, want, se)


# --- the kernels: non-Gaussian per-example laws ---------------------------------------------------------


LAW_CASES = [("student_t", 3.0), ("student_t", 10.0), ("laplace", None), ("two_point", 0.01), ("two_point", 0.3)]


@pytest.mark.parametrize("law,shape", LAW_CASES)
def test_law_samples_moments(law, shape):
    """Mean 0, variance 1 and E[W^4] = 3 + excess kurtosis within 4 s.e. of the sample's own
    spread (E[W^4] only where the 8th moment is finite, i.e. not for nu = 3)."""
    w = kc.law_samples(law, 400_000, seed=1, shape=shape)
    m = kc.law_moments(law, shape)
    n = w.size
    assert abs(w.mean() - m["mean"]) <= K_SE * w.std() / np.sqrt(n)
    assert abs(np.mean(w * w) - m["var"]) <= K_SE * np.std(w * w) / np.sqrt(n)
    if np.isfinite(m["excess_kurtosis"]) and not (law == "student_t" and shape <= 8):
        w4 = w**4
        assert abs(w4.mean() - (3.0 + m["excess_kurtosis"])) <= K_SE * w4.std() / np.sqrt(n)
    if law == "two_point":
        w3 = w**3
        assert abs(w3.mean() - m["skew"]) <= K_SE * w3.std() / np.sqrt(n)


@pytest.mark.parametrize("law,shape", [("student_t", 3.0), ("student_t", 10.0), ("laplace", None)])
def test_law_samples_ks(law, shape):
    """KS test against scipy's law (standardised), 100,000 draws, fixed seed: p > 1e-3."""
    w = kc.law_samples(law, 100_000, seed=2, shape=shape)
    if law == "laplace":
        cdf = stats.laplace(scale=1 / np.sqrt(2)).cdf
    else:
        cdf = stats.t(df=shape, scale=np.sqrt((shape - 2) / shape)).cdf
    assert stats.kstest(w, cdf).pvalue > 1e-3


def test_law_sample_values_two_point():
    w = kc.law_samples("two_point", 10_000, seed=0, shape=0.2)
    assert set(np.round(w, 12)) == {round(np.sqrt(0.8 / 0.2), 12), round(-np.sqrt(0.2 / 0.8), 12)}


@pytest.mark.parametrize("law,shape", [("student_t", 3.0), ("laplace", None)])
def test_per_example_signs_at_batch_one(law, shape):
    """B = 1: P(V_i = sign(mu_i)) = F(|mu_i| / sigma_i) with F the standardised law's CDF."""
    mu = np.array([0.05, -0.3, 1.0, 0.0])
    sigma = np.array([1.0, 0.5, 2.0, 1.0])
    r = np.abs(mu) / sigma
    F = (
        stats.laplace(scale=1 / np.sqrt(2)).cdf
        if law == "laplace"
        else stats.t(df=shape, scale=np.sqrt((shape - 2) / shape)).cdf
    )
    want = np.where(mu < 0, -1.0, 1.0) * (2 * F(r) - 1)
    V = kc.signs(kc.law_noise(law, sigma, shape), 1, mu, 200_000, seed=5).astype(np.float64)
    se = V.std(axis=0, ddof=1) / np.sqrt(len(V))
    assert np.all(np.abs(V.mean(axis=0) - want) <= K_SE * np.maximum(se, 1e-12))


@pytest.mark.parametrize("B", [1, 8, 60])
def test_per_example_two_point_against_binomial(B):
    """Sum of B two-point draws: K ~ Binomial(B, p) spikes; V_i s_i = sign(B r_i + K (a + c) - B c)
    with a = sqrt((1-p)/p), c = sqrt(p/(1-p)): E[V_i] s_i = P(K > t) - P(K < t), t = B (c - r_i) / (a + c)."""
    p = 0.05
    mu = np.array([0.02, -0.1, 0.3, 0.2])
    sigma = np.array([1.0, 1.0, 1.0, 0.5])
    r = np.abs(mu) / sigma
    a, c = np.sqrt((1 - p) / p), np.sqrt(p / (1 - p))
    t = B * (c - r) / (a + c)
    kb = stats.binom(B, p)
    want = np.where(mu < 0, -1.0, 1.0) * (kb.sf(np.floor(t)) - kb.cdf(np.ceil(t) - 1))
    V = kc.signs(kc.law_noise("two_point", sigma, p), B, mu, 100_000, seed=9).astype(np.float64)
    se = V.std(axis=0, ddof=1) / np.sqrt(len(V))
    assert np.all(np.abs(V.mean(axis=0) - want) <= K_SE * np.maximum(se, 1e-12))


def test_kernel_validation():
    with pytest.raises(ValueError, match="law must be one of"):
        kc.law_noise("cauchy", [1.0])
    with pytest.raises(ValueError, match="nu > 2"):
        kc.law_noise("student_t", [1.0], 2.0)
    with pytest.raises(ValueError, match=r"p in \(0, 1\)"):
        kc.law_noise("two_point", [1.0], 1.0)
    with pytest.raises(ValueError, match="no shape"):
        kc.law_noise("laplace", [1.0], 3.0)
    with pytest.raises(ValueError, match="sigma must be"):
        kc.law_noise("laplace", [0.0])
    noise = kc.law_noise("laplace", [1.0, 1.0])
    with pytest.raises(ValueError, match="integer >= 1"):
        kc.signs(noise, 0, [0.0, 0.0], 10, seed=0)
    with pytest.raises(ValueError, match="too large"):
        kc.signs(noise, 1 << 21, [0.0, 0.0], 10, seed=0)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        kc.signs(noise, 1, [0.0, 0.0, 0.0], 10, seed=0)
    with pytest.raises(ValueError, match="H has dimension 3"):
        kc.moments(noise, 1, [0.0, 0.0], np.eye(3), 10, seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("rho,aligned", [(0.5, True), (0.9, False)])
def test_optimal_lr_correlated_at_scale(rho, aligned):
    """d = 1000 surge problem with rank-one correlated noise (|rho| = 0.5 along sign(mu), 0.9 with
    random signs): the exact theory against 200,000 kernel trials per batch size, within 4 s.e."""
    from surgesim.limits import aligned_correlation

    p = surge_problem(1000, seed=0)
    Sigma = aligned_correlation(p, rho, aligned)
    noise = kc.gaussian_noise(Sigma)
    B = np.array([1, 30, 1000, 100_000])
    want = optimal_lr_correlated(B, p.mu, Sigma, p.hessian)
    for b, w in zip(B, want):
        lr, se = ratio_estimate(*kc.moments(noise, int(b), p.mu, p.hessian, 200_000, seed=int(b) + 17))
        assert abs(lr - w) <= K_SE * se, (b, lr, w, se)
