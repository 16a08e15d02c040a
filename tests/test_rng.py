"""surgesim.rng: counter-based SplitMix64 against its published outputs, an independent
implementation, and its laws.

Statistical tests use fixed keys and 100,000+ draws, and the rule "p-value > 1e-4": a correct
generator fails one such test with probability 1e-4, while the defects they are built to find
(a biased bit, a lost factor in Box-Muller, overlapping streams) give p-values below 1e-10 at these
sample sizes. Correlations are required to lie within 4 standard errors, 1 / sqrt(n) each.
"""

from __future__ import annotations

from fractions import Fraction

import numba
import numpy as np
import pytest
from scipy import stats

from surgesim import rng

MASK = (1 << 64) - 1
GAMMA = 0x9E3779B97F4A7C15
P_MIN = 1e-4


def splitmix64_reference(seed: int, n: int) -> list[int]:
    """Steele, Lea & Flood's SplitMix64 (as in Vigna's splitmix64.c), in pure Python integers."""
    out, x = [], seed & MASK
    for _ in range(n):
        x = (x + GAMMA) & MASK
        z = x
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        out.append(z ^ (z >> 31))
    return out


@numba.njit
def _words(key, start, n):
    """A user's own @njit code calling the library's generator (DESIGN: kernels are reusable)."""
    out = np.empty(n, dtype=np.uint64)
    for i in range(n):
        out[i] = rng.random_bits(key, start + i)
    return out


def words(key: int, n: int, start: int = 0) -> np.ndarray:
    return _words(np.uint64(key), np.uint64(start), n)


# --- exactness ----------------------------------------------------------------------------------


def test_known_answer_vectors():
    """Published SplitMix64 outputs: seed 1234567 (the reference vector used by xoshiro/PRNG test
    suites) and seed 0 (first output 0xE220A8397B1DCDAF)."""
    expected = [
        6457827717110365317,
        3203168211198807973,
        9817491932198370423,
        4593380528125082431,
        16408922859458223821,
    ]
    assert [int(rng.random_bits(1234567, n)) for n in range(5)] == expected
    assert int(rng.random_bits(0, 0)) == 0xE220A8397B1DCDAF
    assert splitmix64_reference(1234567, 5) == expected  # the reference below is the algorithm


@pytest.mark.parametrize("key", [0, 1, 1234567, 2**63 - 1, 2**63, 2**64 - 1, 0xDEADBEEFCAFEF00D])
def test_random_bits_match_independent_implementation(key):
    """Word n of stream key is output n of SplitMix64 seeded with key, for keys above 2^63 too, and
    for counters far from 0 (the counter is jumped to, not iterated)."""
    ref = splitmix64_reference(key, 300)
    np.testing.assert_array_equal(words(key, 300), np.array(ref, dtype=np.uint64))
    # np.uint64: once an (int64, int64) version is compiled, Numba's dispatcher picks it for a
    # Python int >= 2^63 and fails to convert it
    k = np.uint64(key)
    assert [int(rng.random_bits(k, n)) for n in (0, 17, 299)] == [ref[0], ref[17], ref[299]]
    far = 2**40 + 3
    assert int(rng.random_bits(k, far)) == splitmix64_reference((key + far * GAMMA) & MASK, 1)[0]


def test_uniforms_and_normals_are_pure_functions_of_key_and_counter():
    """The array helpers equal the scalar functions, and any chunking of a stream gives the same
    numbers (what makes results independent of threads and block sizes)."""
    key = np.uint64(rng.stream_key(42, 7, 3))
    u = rng.uniforms(key, 1001)
    np.testing.assert_array_equal(u, [rng.uniform(key, i) for i in range(1001)])
    np.testing.assert_array_equal(np.concatenate([rng.uniforms(key, 400), rng.uniforms(key, 601, 400)]), u)
    expected_u = (words(key, 1001) >> np.uint64(11)).astype(np.float64) * 2.0**-53  # top 53 bits
    np.testing.assert_array_equal(u, expected_u)
    z = rng.normals(key, 11)
    pairs = [rng.normal_pair(key, j) for j in range(6)]
    np.testing.assert_array_equal(z, np.ravel(pairs)[:11])
    np.testing.assert_array_equal(rng.normals(key, 6, start_pair=2), np.ravel(pairs[2:5]))
    # Box-Muller from words 2j, 2j + 1: r = sqrt(-2 log(1 - u1)), angle 2 pi u2 (rtol: libm cos/sin)
    u1, u2 = rng.uniform(key, 2 * 4), rng.uniform(key, 2 * 4 + 1)
    rad = np.sqrt(-2.0 * np.log(1.0 - u1))
    np.testing.assert_allclose(pairs[4], (rad * np.cos(2 * np.pi * u2), rad * np.sin(2 * np.pi * u2)), rtol=1e-13)


def test_stream_keys_are_deterministic_and_distinct():
    keys = {rng.stream_key(2024, b, t) for b in range(1, 101) for t in range(100)}
    assert len(keys) == 100 * 100
    assert rng.stream_key(2024, 5, 6) == rng.stream_key(2024, 5, 6)
    assert rng.stream_key(2024, 5, 6) != rng.stream_key(2024, 6, 5)
    assert rng.stream_key(2024, 5, 6) != rng.stream_key(2025, 5, 6)
    assert rng.derive_key(1, 2) == rng.derive_key(1, 2) != rng.derive_key(2, 1)


# --- laws ---------------------------------------------------------------------------------------


def test_uniforms_are_uniform():
    u = rng.uniforms(rng.stream_key(1, 0, 0), 100_000)
    assert u.min() >= 0.0 and u.max() < 1.0
    assert stats.kstest(u, "uniform").pvalue > P_MIN


def test_normals_are_standard_normal():
    z = rng.normals(rng.stream_key(2, 0, 0), 100_000)
    assert stats.kstest(z, "norm").pvalue > P_MIN
    # moments within 4 standard errors: mean 1/sqrt(n), variance sqrt(2/n), 4th moment sqrt(96/n)
    n = z.size
    assert abs(z.mean()) < 4 / np.sqrt(n)
    assert abs(z.var() - 1.0) < 4 * np.sqrt(2.0 / n)
    assert abs(np.mean(z**4) - 3.0) < 4 * np.sqrt(96.0 / n)


def test_normal_ks_would_catch_a_wrong_box_muller():
    """Sharpness of the KS rule: a radius off by 5 % fails it by a wide margin."""
    z = rng.normals(rng.stream_key(2, 0, 0), 100_000)
    assert stats.kstest(1.05 * z, "norm").pvalue < 1e-10


def test_bit_frequencies_chi_square():
    """Each of the 64 bit positions of 100,000 words is 1 with probability 1/2: the counts give a
    chi-square statistic with 64 degrees of freedom; and the 256 byte values of the same words
    (800,000 bytes) are uniform (chi-square, 255 degrees of freedom)."""
    w = words(rng.stream_key(3, 0, 0), 100_000)
    n = w.size
    ones = ((w[:, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)).sum(axis=0).astype(np.float64)
    chi2 = np.sum((ones - n / 2) ** 2 / (n / 4))
    assert stats.chi2.sf(chi2, df=64) > P_MIN
    counts = np.bincount(w.view(np.uint8), minlength=256)
    assert stats.chisquare(counts).pvalue > P_MIN


@pytest.mark.parametrize("seed,b,t", [(0, 1, 0), (7, 64, 99), (2**40, 16384, 12345)])
def test_neighbouring_streams_are_independent(seed, b, t):
    """Streams (seed, b, t) and (seed, b, t + 1), and (seed, b + 1, t), (seed + 1, b, t): the
    correlation of their uniforms and of their normals, term by term and at lag 1, is within
    4 standard errors of 0; the XOR of their words has 32 set bits on average (sd 4 / sqrt(n))."""
    n = 100_000
    base = rng.stream_key(seed, b, t)
    for other in (rng.stream_key(seed, b, t + 1), rng.stream_key(seed, b + 1, t), rng.stream_key(seed + 1, b, t)):
        for draw in (rng.uniforms, rng.normals):
            x, y = draw(base, n), draw(other, n)
            assert abs(np.corrcoef(x, y)[0, 1]) < 4 / np.sqrt(n)
            assert abs(np.corrcoef(x[1:], y[:-1])[0, 1]) < 4 / np.sqrt(n)
        xor = words(base, n) ^ words(other, n)
        popcount = np.unpackbits(xor.view(np.uint8)).reshape(n, 64).sum(axis=1)
        assert abs(popcount.mean() - 32.0) < 4 * 4.0 / np.sqrt(n)


def test_successive_words_are_uncorrelated():
    u = rng.uniforms(rng.stream_key(4, 0, 0), 100_000)
    for lag in (1, 2, 7):
        assert abs(np.corrcoef(u[lag:], u[:-lag])[0, 1]) < 4 / np.sqrt(u.size)


# --- probability thresholds ---------------------------------------------------------------------


@pytest.mark.parametrize("p", [1e-300, 2.0**-60, 1e-9, 0.1, 0.3, 0.5, 1 / 3, 0.7, 0.999999, 1.0 - 2.0**-53])
def test_probability_threshold_is_exact(p):
    """P(word < T) = T / 2^64 for a uniform 64-bit word: T must be floor(p 2^64) exactly (the
    double p times 2^64 is exact as a rational), so |T / 2^64 - p| < 2^-64 < 1e-15."""
    T = int(rng.probability_threshold(p))
    assert T == int(Fraction(p) * 2**64)  # int() floors a positive Fraction
    assert abs(Fraction(T, 2**64) - Fraction(p)) < Fraction(1, 2**64)
    assert abs(T / 2.0**64 - p) <= 1e-15


@pytest.mark.parametrize("p,T", [(0.0, 0), (-0.5, 0), (1.0, 2**64 - 1), (3.0, 2**64 - 1)])
def test_probability_threshold_boundaries(p, T):
    """p <= 0 never passes (word < 0 is impossible); p >= 1 gives the largest word, which passes
    every word but one: P = 1 - 2^-64."""
    assert int(rng.probability_threshold(p)) == T


def test_probability_threshold_frequency():
    """The fraction of 10^6 words below T is p within 4 binomial standard errors."""
    w = words(rng.stream_key(5, 0, 0), 1_000_000)
    for p in (0.01, 0.3, 0.5, 0.9):
        freq = np.mean(w < np.uint64(rng.probability_threshold(p)))
        assert abs(freq - p) < 4 * np.sqrt(p * (1 - p) / w.size)
