"""surgesim.hessian: each operator's products against the same H as a dense matrix.

Tolerances: products are compared at rtol 1e-12 (the same sums in another order, d <= 300);
the off-diagonal sum of eq 14 at rtol 1e-12 times its condition number
sum_{i!=j} |x_i x_j H_ij| / |sum_{i!=j} x_i x_j H_ij| (rounding is relative to the absolute terms).
"""

from __future__ import annotations

import numpy as np
import pytest
from _operators import random_operator
from hypothesis import given
from hypothesis import strategies as st

from surgesim import theory
from surgesim.hessian import Dense, Diagonal, DiagonalPlusLowRank, as_hessian

operators = st.builds(
    random_operator,
    st.sampled_from(["dense", "diagonal", "lowrank"]),
    st.integers(1, 60),
    st.integers(0, 2**32 - 1),
    st.integers(1, 5),
)


def dense_off_diagonal(x, M):
    """sum_{i!=j} x_i x_j M_ij and sum_{i!=j} |x_i x_j M_ij| by explicit masking."""
    terms = np.outer(x, x) * M
    np.fill_diagonal(terms, 0.0)
    return terms.sum(), np.abs(terms).sum()


@given(operators, st.integers(0, 2**32 - 1))
def test_products_match_dense(op, seed):
    M = op.to_dense()
    d = M.shape[0]
    assert op.dim == d
    np.testing.assert_array_equal(M, M.T)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(d)
    rows = rng.standard_normal((2, 4, d))
    np.testing.assert_allclose(op.diag(), np.diagonal(M), rtol=1e-12)
    np.testing.assert_allclose(op.trace(), np.trace(M), rtol=1e-12)
    np.testing.assert_allclose(op.matvec(x), M @ x, rtol=1e-12, atol=1e-12 * np.abs(M).sum())
    np.testing.assert_allclose(op.matvec(rows), rows @ M, rtol=1e-12, atol=1e-12 * np.abs(M).sum())
    qr = op.quad_rows(rows)
    assert qr.shape == (2, 4)
    np.testing.assert_allclose(qr, np.einsum("abi,ij,abj->ab", rows, M, rows), rtol=1e-11)
    np.testing.assert_allclose(op.quad_rows(x), x @ M @ x, rtol=1e-11)
    off, off_abs = dense_off_diagonal(x, M)
    np.testing.assert_allclose(op.quad_off_diagonal(x), off, rtol=0, atol=1e-12 * max(off_abs, 1e-300))


def test_off_diagonal_of_a_diagonal_matrix_is_exactly_zero():
    """x'Hx - sum x_i^2 H_ii leaves rounding noise for a diagonal H given densely (the bug that
    made B_noise finite); the off-diagonal sum must be exactly 0 for Dense and Diagonal."""
    rng = np.random.default_rng(3)
    for _ in range(50):
        d = int(rng.integers(2, 40))
        h, x = rng.uniform(0.1, 2.0, d), rng.standard_normal(d)
        assert Dense(np.diag(h)).quad_off_diagonal(x) == 0.0
        assert Diagonal(h).quad_off_diagonal(x) == 0.0
        assert DiagonalPlusLowRank(h, np.zeros((d, 2))).quad_off_diagonal(x) == 0.0


def test_low_rank_off_diagonal_has_no_cancellation_for_aligned_terms():
    """All terms positive and one coordinate dominating: |U'x|^2 - sum x_i^2 |U_i|^2 would lose
    about 8 digits here; the prefix-sum form must agree with the exact value 2 * 1e-8 * prod."""
    x = np.array([1.0, 1e-8])
    U = np.array([[1.0], [1.0]])
    assert DiagonalPlusLowRank(np.ones(2), U).quad_off_diagonal(x) == pytest.approx(2e-8, rel=1e-15)
    assert Dense(np.eye(2) + U @ U.T).quad_off_diagonal(x) == pytest.approx(2e-8, rel=1e-15)


def test_dense_symmetrises_and_copies():
    M = np.array([[2.0, 1.0], [1.0 + 1e-14, 3.0]])
    op = Dense(M)
    np.testing.assert_array_equal(op.matrix, op.matrix.T)
    got = op.to_dense()
    got[0, 0] = 99.0
    assert op.matrix[0, 0] == 2.0


def test_low_rank_is_never_densified():
    """d = 200,000, rank 4: a dense H would need 320 GB, so every theory function must run in
    O(d k) memory (this test would raise MemoryError otherwise)."""
    d, k = 200_000, 4
    rng = np.random.default_rng(0)
    s = rng.choice([-1.0, 1.0], d)
    mu, sigma = s * 0.001, np.ones(d)
    op = DiagonalPlusLowRank(rng.uniform(0.5, 2.0, d), s[:, None] * rng.uniform(0.5, 1.0, (d, k)) / 2)
    assert op.rank == k
    B = np.geomspace(1, 1e6, 5)
    assert np.all(np.isfinite(theory.optimal_lr(B, mu, sigma, op)))
    assert np.isfinite(theory.noise_batch_size(mu, sigma, op))
    assert np.all(np.isfinite(theory.surge_lr(B, mu, sigma, op)))
    assert np.isfinite(theory.large_batch_lr(mu, op))


def test_as_hessian():
    op = Diagonal([1.0, 2.0])
    assert as_hessian(op) is op
    dense = as_hessian([[1.0, 0.0], [0.0, 1.0]])
    assert isinstance(dense, Dense) and not dense.check_psd
    # not PSD but accepted here: PSD is checked by QuadraticProblem, where it matters
    assert as_hessian(np.array([[0.0, 1.0], [1.0, 0.0]])).trace() == 0.0


BAD = [
    ("dense 1-d", lambda: Dense(np.ones(3)), ValueError, r"H must be a non-empty 2-d array, got shape \(3,\)"),
    ("dense not square", lambda: Dense(np.ones((2, 3))), ValueError, r"H must be square, got shape \(2, 3\)"),
    ("dense empty", lambda: Dense(np.ones((0, 0))), ValueError, r"H must be a non-empty 2-d array, got shape \(0, 0\)"),
    ("dense nan", lambda: Dense([[1.0, np.nan], [np.nan, 1.0]]), ValueError, r"H has non-finite values \(2 of 4\)"),
    (
        "dense asymmetric",
        lambda: Dense([[1.0, 1e-6], [0.0, 1.0]]),
        ValueError,
        r"H must be symmetric: max \|H - H'\| = 1e-06",
    ),
    (
        "dense not PSD",
        lambda: Dense([[1.0, 2.0], [2.0, 1.0]]),
        ValueError,
        r"H must be positive semi-definite: smallest eigenvalue -1",
    ),
    ("diag negative", lambda: Diagonal([1.0, -0.5]), ValueError, r"h_diag must be >= 0 .* min is -0.5"),
    ("diag inf", lambda: Diagonal([1.0, np.inf]), ValueError, r"h_diag has non-finite"),
    ("diag 2-d", lambda: Diagonal(np.ones((2, 2))), ValueError, r"h_diag must be a non-empty 1-d array"),
    ("lowrank negative", lambda: DiagonalPlusLowRank([-1.0, 1.0], np.ones((2, 1))), ValueError, r"h_diag must be >= 0"),
    (
        "lowrank factor rows",
        lambda: DiagonalPlusLowRank([1.0, 1.0], np.ones((3, 1))),
        ValueError,
        r"h_factor must have shape \(d, k\) with d = 2, got \(3, 1\)",
    ),
    (
        "lowrank factor 1-d",
        lambda: DiagonalPlusLowRank([1.0, 1.0], np.ones(2)),
        ValueError,
        r"h_factor must be a non-empty 2-d array",
    ),
    (
        "lowrank factor nan",
        lambda: DiagonalPlusLowRank([1.0, 1.0], [[np.nan], [1.0]]),
        ValueError,
        r"h_factor has non-finite",
    ),
    (
        "as_hessian 1-d",
        lambda: as_hessian(np.ones(3)),
        TypeError,
        r"H must be a \(d, d\) array or a hessian operator .* shape \(3,\)",
    ),
    ("as_hessian 3-d", lambda: as_hessian(np.ones((2, 2, 2))), TypeError, r"got ndarray with shape \(2, 2, 2\)"),
]


@pytest.mark.parametrize("call,exc,match", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_raises_with_message(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_dense_psd_check_can_be_skipped_and_tolerates_rounding():
    assert Dense([[1.0, 2.0], [2.0, 1.0]], check_psd=False).dim == 2
    # a PSD matrix with a zero eigenvalue computed as about -1e-17 is accepted
    v = np.array([1.0, 1.0, 1.0]) / np.sqrt(3.0)
    Dense(np.eye(3) - np.outer(v, v))


@pytest.mark.parametrize("rows", [1, 3, 64, 1 << 16])
def test_low_rank_off_diagonal_is_numpys_prefix_sums_bit_for_bit(rows, monkeypatch):
    """The compiled pass gives NumPy's y * cumsum(concatenate([carry, y[:-1]])) term for term,
    summed by np.sum per block of rows, with the carry across blocks (the formula it replaced)."""
    from surgesim import hessian

    def by_numpy(x, factor):
        carry, total = np.zeros((1, factor.shape[1])), 0.0
        for s in range(0, x.shape[0], rows):
            y = x[s : s + rows, None] * factor[s : s + rows]
            below = np.cumsum(np.concatenate([carry, y[:-1]]), axis=0)
            total = total + np.sum(y * below)
            carry = below[-1:] + y[-1:]
        return float(2.0 * total)

    monkeypatch.setattr(hessian, "_ROWS", rows)
    rng = np.random.default_rng(rows)
    for d, k in [(1, 4), (2, 1), (9, 0), (200, 3), (1000, 4), (70001, 4)]:
        x = rng.standard_normal(d) * 10.0 ** rng.integers(-6, 6)
        U = rng.standard_normal((d, k)) * 10.0 ** rng.integers(-3, 3)
        U[::5] = np.abs(U[::5])
        got, want = hessian.low_rank_off_diagonal(x, U), by_numpy(x, U)
        assert got == want and np.signbit(got) == np.signbit(want), (d, k)
    x = rng.standard_normal(300)[::2]  # a strided x: the same values
    U = rng.standard_normal((150, 3))
    assert hessian.low_rank_off_diagonal(x, U) == by_numpy(x, U)
