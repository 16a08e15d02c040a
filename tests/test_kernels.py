"""One-step kernels against the plain NumPy reference on the same random numbers, in distribution
against the theory, and across thread counts / block sizes."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit
from scipy import special, stats

from surgesim import Dense, Diagonal, DiagonalPlusLowRank, QuadraticProblem
from surgesim.estimate import _Sampler
from surgesim.kernels import onestep
from surgesim.reference import onestep as ref
from surgesim.rng import derive_key


def small_problem(kind: str, d: int = 37, seed: int = 3) -> QuadraticProblem:
    rng = np.random.default_rng(seed)
    mu = rng.normal(0, 0.3, d)
    mu[0] = 0.0  # a coordinate with no signal: P(V = +1) = 1/2
    sigma = rng.uniform(0.5, 2.0, d)
    h = rng.uniform(0.5, 2.0, d)
    U = rng.normal(0, 0.4, (d, 3))
    H = {"diagonal": lambda: Diagonal(h), "lowrank": lambda: DiagonalPlusLowRank(h, U),
         "dense": lambda: Dense(np.diag(h) + U @ U.T)}[kind]()  # fmt: skip
    return QuadraticProblem(mu, sigma, H)


KINDS = ["diagonal", "lowrank", "dense"]
SAMPLERS = ["sign", "batch_mean", "per_example"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("B", [1, 3, 16])
def test_kernel_matches_numpy_reference_sample_for_sample(kind, sampler, B):
    p = small_problem(kind)
    t0, n = 7, 40  # an offset start: trial t's stream must not depend on where a call begins
    s = _Sampler(p, B, seed=11, sampler=sampler)
    s.grow(t0 + n, t0 + n)
    trials = np.arange(t0, t0 + n)
    V = ref.signs(p, B, trials, key_b=onestep.batch_key(11, B), sampler=sampler)
    a_ref, b_ref = ref.moments(p, V)
    # Same V: a equal up to summation order (1e-12); b is float32 GEMM for dense (1e-6), else 1e-12.
    np.testing.assert_allclose(s.a[t0:], a_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(s.b[t0:], b_ref, rtol=1e-6 if kind == "dense" else 1e-12)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_signs_are_exactly_the_reference_signs(sampler):
    p = small_problem("dense")
    B, n = 5, 64
    key = onestep.batch_key(2, B)
    thr, rare = onestep.sign_thresholds(B, p.mu, p.sigma)
    a, V = np.empty(n), np.empty((n, p.dim), np.float32)
    onestep.trial_signs(onestep.SAMPLERS[sampler], key, np.uint64(0), B, p.mu, p.sigma, thr, rare, a, V)
    np.testing.assert_array_equal(V, ref.signs(p, B, np.arange(n), key_b=key, sampler=sampler))


def test_sign_thresholds_give_the_exact_probability():
    # P(V_i = -sign(mu_i)) = Phi(-sqrt(B)|mu_i|/sigma_i), computed here with scipy.stats.norm.
    mu, sigma, B = np.array([0.5, -0.2, 0.0, 3.0]), np.array([1.0, 2.0, 1.0, 0.1]), 4
    thr, rare = onestep.sign_thresholds(B, mu, sigma)
    q = stats.norm.cdf(-np.sqrt(B) * np.abs(mu) / sigma)
    np.testing.assert_allclose(thr.astype(np.float64) / 2.0**64, q, rtol=1e-12, atol=2.0**-60)
    np.testing.assert_array_equal(rare[[0, 1, 3]], [-1.0, 1.0, -1.0])


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_mean_sign_matches_erf(sampler):
    # E[V_i] = erf(sqrt(B/2) mu_i / sigma_i) (eq 35); each coordinate's mean over n trials has
    # standard error sqrt((1 - E^2) / n): require every coordinate within 4.5 s.e. (d = 37 tests).
    p = small_problem("diagonal")
    B, n = 4, 20000
    V = np.empty((n, p.dim), np.float32)
    thr, rare = onestep.sign_thresholds(B, p.mu, p.sigma)
    onestep.trial_signs(onestep.SAMPLERS[sampler], onestep.batch_key(5, B), np.uint64(0), B, p.mu, p.sigma,
                        thr, rare, np.empty(n), V)  # fmt: skip
    E = special.erf(np.sqrt(B / 2) * p.mu / p.sigma)
    se = np.sqrt((1 - E**2) / n)
    assert np.all(np.abs(V.mean(axis=0) - E) < 4.5 * se)


def test_samplers_agree_in_distribution():
    # a_t = mu'V_t has the same law under all three samplers: two-sample KS, 5000 trials each,
    # different seeds (independent samples); reject only at p < 1e-3.
    p = small_problem("lowrank")
    B = 6
    samples = {}
    for i, sampler in enumerate(SAMPLERS):
        s = _Sampler(p, B, seed=100 + i, sampler=sampler)
        s.grow(5000, 5000)
        samples[sampler] = s.a
    for other in ("batch_mean", "per_example"):
        assert stats.ks_2samp(samples["sign"], samples[other]).pvalue > 1e-3


def test_block_size_does_not_change_results():
    p = small_problem("dense", d=50)
    one = _Sampler(p, 8, seed=1, sampler="sign")
    one.grow(3000, 3000)
    pieces = _Sampler(p, 8, seed=1, sampler="sign")
    for n in (1, 17, 1024, 2500, 3000):
        pieces.grow(n, n)
    np.testing.assert_array_equal(one.a, pieces.a)
    np.testing.assert_array_equal(one.b, pieces.b)


def _moments(p, sampler, B, t0, n, **kw):
    thr, rare = onestep.sign_thresholds(B, p.mu, p.sigma)
    a, b = np.empty(n), np.empty(n)
    H = p.hessian
    onestep.trial_moments(onestep.SAMPLERS[sampler], onestep.batch_key(3, B), np.uint64(t0), B, p.mu, p.sigma,
                          thr, rare, H.h, H.factor.T, a, b, **kw)  # fmt: skip
    return a, b


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_blocked_moments_match_reference_across_blocks(sampler):
    # d spans several leaves and (block = LEAF) several cache blocks, with a ragged last leaf: the
    # kernel's a and b equal the NumPy reference's on the same random words, up to float64
    # summation order (a: 2 d u sum|mu|; b: 4 d u (sum h + sum_j (sum_i |U_ij|)^2), u = 2^-53).
    p = small_problem("lowrank", d=3 * onestep.LEAF + 41)
    B, t0, n = 3, 5, 24
    a, b = _moments(p, sampler, B, t0, n, block=onestep.LEAF)
    V = ref.signs(p, B, np.arange(t0, t0 + n), key_b=onestep.batch_key(3, B), sampler=sampler)
    a_ref, b_ref = ref.moments(p, V)
    u, d, U = 2.0**-53, p.dim, p.hessian.factor
    np.testing.assert_allclose(a, a_ref, rtol=0, atol=2 * d * u * np.abs(p.mu).sum())
    tol_b = 4 * d * u * (p.hessian.h.sum() + (np.abs(U).sum(axis=0) ** 2).sum())
    np.testing.assert_allclose(b, b_ref, rtol=0, atol=tol_b)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_moments_do_not_depend_on_block_pass_threads_or_layout(sampler):
    # Bit-identical whatever the cache block, the trials per pass, the Numba thread count, the
    # split of trials into calls and the factor's memory layout (view factor.T or a C copy).
    import numba

    p = small_problem("lowrank", d=5 * onestep.LEAF + 7)
    B, n = 5, 40
    base = _moments(p, sampler, B, 0, n)
    threads = numba.get_num_threads()
    try:
        for t, block, per_pass in [(1, onestep.LEAF, 1), (threads, 3 * onestep.LEAF, 7), (1, 1 << 16, 64)]:
            numba.set_num_threads(t)
            got = _moments(p, sampler, B, 0, n, block=block, per_pass=per_pass)
            np.testing.assert_array_equal(got[0], base[0])
            np.testing.assert_array_equal(got[1], base[1])
    finally:
        numba.set_num_threads(threads)
    head, tail = _moments(p, sampler, B, 0, 13), _moments(p, sampler, B, 13, n - 13)
    np.testing.assert_array_equal(np.concatenate([head[1], tail[1]]), base[1])
    thr, rare = onestep.sign_thresholds(B, p.mu, p.sigma)
    a, b = np.empty(n), np.empty(n)
    Ut = np.ascontiguousarray(p.hessian.factor.T)
    onestep.trial_moments(onestep.SAMPLERS[sampler], onestep.batch_key(3, B), np.uint64(0), B, p.mu, p.sigma,
                          thr, rare, p.hessian.h, Ut, a, b)  # fmt: skip
    np.testing.assert_array_equal(b, base[1])


@njit(cache=True)
def _fill_in_pieces(code, key, B, mu, sigma, thr, rare, cuts, out):
    for c in range(cuts.shape[0] - 1):
        i0, i1 = cuts[c], cuts[c + 1]
        onestep.fill_signs(code, key, B, mu[i0:i1], sigma[i0:i1], thr[i0:i1], rare[i0:i1], i0, out[i0:i1])


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_fill_signs_on_any_slice_equals_the_whole_row(sampler):
    # fill_signs on coordinates i0 .. i1 - 1 draws exactly what sample_signs draws there: odd offsets
    # split Box-Muller pairs (batch_mean) and, with odd B, pairs shared by two coordinates (per_example).
    p = small_problem("diagonal")
    B = 3
    key = derive_key(onestep.batch_key(1, B), 9)
    thr, rare = onestep.sign_thresholds(B, p.mu, p.sigma)
    code = onestep.SAMPLERS[sampler]
    out = np.empty(p.dim)
    _fill_in_pieces(code, key, B, p.mu, p.sigma, thr, rare, np.array([0, 1, 4, 5, 17, 18, 30, p.dim]), out)
    V = ref.signs(p, B, [9], key_b=onestep.batch_key(1, B), sampler=sampler)[0]
    np.testing.assert_array_equal(out, V)


def test_bad_block_or_pass_raises():
    p = small_problem("lowrank")
    with pytest.raises(ValueError, match="multiple of LEAF"):
        _moments(p, "sign", 2, 0, 4, block=onestep.LEAF + 1)
    with pytest.raises(ValueError, match="per_pass"):
        _moments(p, "sign", 2, 0, 4, per_pass=0)


def test_different_batch_sizes_and_seeds_use_different_streams():
    keys = {int(onestep.batch_key(s, b)) for s in range(4) for b in (1, 2, 3, 1024)}
    assert len(keys) == 16


def test_kernels_are_callable_from_user_njit_code():
    # A user's own @njit function can call the sampler directly (documented use).
    @njit
    def count_positive(key_b, B, mu, sigma, thr, rare, d):
        row = np.empty(d, np.float32)
        onestep.sample_signs(onestep.SIGN, derive_key(key_b, 0), B, mu, sigma, thr, rare, row)
        return (row > 0).sum()

    p = small_problem("diagonal")
    thr, rare = onestep.sign_thresholds(2, p.mu, p.sigma)
    n_pos = count_positive(onestep.batch_key(0, 2), 2, p.mu, p.sigma, thr, rare, p.dim)
    V = ref.signs(p, 2, [0], key_b=onestep.batch_key(0, 2))
    assert n_pos == int((V > 0).sum())


def test_sign_thresholds_do_not_depend_on_the_threads():
    """Blocks of coordinates on Numba's threads at once: each value is its own coordinate's,
    as from one block on one thread (d = 3 blocks and a bit)."""
    import numba

    rng = np.random.default_rng(4)
    d = 3 * onestep._THRESHOLD_BLOCK + 5
    mu, sigma, B = rng.normal(0, 0.05, d), rng.uniform(0.5, 2.0, d), 16
    mu[7] = 0.0
    x = np.sqrt(B) * (mu / sigma)
    want_thr, want_rare = onestep._thresholds(special.ndtr(-np.abs(x))), np.where(x >= 0, -1.0, 1.0)
    threads = numba.get_num_threads()
    try:
        for n in {1, threads}:
            numba.set_num_threads(n)
            thr, rare = onestep.sign_thresholds(B, mu, sigma)
            np.testing.assert_array_equal(thr, want_thr)
            np.testing.assert_array_equal(rare, want_rare.astype(np.float32))
    finally:
        numba.set_num_threads(threads)
