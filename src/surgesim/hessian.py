"""Hessian operators: dense, diagonal, and diagonal plus low rank.

The theory needs only a handful of products with H (its diagonal, its trace, H x and x'Hx for
many rows x at once, and the off-diagonal sum_{i != j} x_i x_j H_ij of eq 14); each operator
gives them at the cost its structure allows, so a ``DiagonalPlusLowRank`` Hessian
H = diag(h) + U U' of dimension d and rank k costs O(d k) and is never densified.

Every operator follows the ``HessianOperator`` protocol: the library asks the operator for what it
needs (products, a solve, its largest eigenvalue, the arrays it is saved as, the arrays a kernel
takes) and never branches on its type. For the kernels an operator is written as
H = diag(h) + U U' + D with ``diagonal_part`` h (d,), ``low_rank_factor`` U (d, k) and
``dense_part`` D (d, d): a dense H is (0, k = 0, D), a diagonal one (h, k = 0, D empty (0, 0)), a
diagonal plus low-rank one (h, U, D empty); kernels branch on which arrays are present (data),
not on the operator's class.

Products use ``np.einsum`` (NumPy's own loops), not a multi-threaded BLAS call: the result is the
same bit for bit whatever the number of BLAS threads, so theory columns are reproducible too.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = [
    "HessianOperator",
    "Dense",
    "Diagonal",
    "DiagonalPlusLowRank",
    "Hessian",
    "as_hessian",
    "finite_array",
    "check_dense_dim",
    "low_rank_off_diagonal",
    "sum_of_squares",
]


def finite_array(name: str, value, ndim: int) -> np.ndarray:
    """``value`` as a C-contiguous float64 array of ``ndim`` dimensions, non-empty and finite;
    ValueError naming ``name`` and what was received otherwise (shared by the input checks)."""
    if np.iscomplexobj(value):
        raise ValueError(f"{name} must be real, got complex values")
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != ndim or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty {ndim}-d array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} has non-finite values ({np.count_nonzero(~np.isfinite(arr))} of {arr.size})")
    return np.ascontiguousarray(arr)


_ROWS = 1 << 16  # rows of the factor per block in O(d k) reductions: temporaries stay O(_ROWS k)
_DENSE_COPIES = 4  # float64 d x d arrays alive at once while a Dense H is built and checked


def sum_of_squares(a: np.ndarray) -> float:
    """sum of a^2 over row blocks of ``a`` (one block, as ``np.sum(a * a)``, for <= _ROWS rows)."""
    total = 0.0
    for s in range(0, a.shape[0], _ROWS):
        total = total + np.sum(a[s : s + _ROWS] ** 2)
    return float(total)


def low_rank_off_diagonal(x: np.ndarray, factor: np.ndarray) -> float:
    """sum_{i != j} x_i x_j (U U')_ij = 2 sum_k sum_{j < i} y_ik y_jk with y_ik = x_i U_ik, O(d k).

    Summed from exclusive prefix sums, not as |U'x|^2 - sum_i x_i^2 |U_i|^2, so that no
    cancellation occurs when the terms share a sign; over row blocks, the running sum carried
    across them exactly as unblocked. The terms of a block come from one compiled pass
    (``kernels.hessian_products.off_diagonal_products``, the values of NumPy's
    ``y * cumsum(concatenate([carry, y[:-1]]))``), summed by ``np.sum`` in row order (the
    order of a C-contiguous factor, as every operator's).
    """
    from .kernels.hessian_products import off_diagonal_products

    x = np.ascontiguousarray(x, dtype=np.float64)
    factor = np.ascontiguousarray(factor, dtype=np.float64)
    carry = np.zeros(factor.shape[1])  # sum of y over the rows before the block
    terms = np.empty((min(_ROWS, x.shape[0]), factor.shape[1]))
    total = 0.0
    for s in range(0, x.shape[0], _ROWS):
        block = terms[: min(_ROWS, x.shape[0] - s)]
        off_diagonal_products(x[s : s + _ROWS], factor[s : s + _ROWS], carry, block)
        total = total + np.sum(block)
    return float(2.0 * total)


def check_dense_dim(d: int) -> None:
    """ValueError, suggesting the diagonal + low-rank form, when a dense d x d Hessian cannot be
    built on this machine (about 4 float64 d x d arrays at once: built, symmetrised, checked)."""
    need = _DENSE_COPIES * 8.0 * d * d
    try:
        have = float(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):  # not POSIX: assume 16 GiB
        have = 16.0 * 2**30
    if need > have:
        raise ValueError(
            f"a dense H of dimension d = {d} needs about {need / 2**30:.3g} GiB ({_DENSE_COPIES} float64 d x d "
            f"arrays while it is built and checked), more than this machine's {have / 2**30:.3g} GiB; use the "
            "diagonal + low-rank form (DiagonalPlusLowRank, --hessian lowrank, or h_diag and h_factor in a "
            "problem file), which costs O(d k)"
        )


@runtime_checkable
class HessianOperator(Protocol):
    """What the library needs of a Hessian H (d, d), symmetric positive semi-definite.

    ``Dense``, ``Diagonal`` and ``DiagonalPlusLowRank`` implement it, each at the cost its
    structure allows; code that takes a Hessian calls these methods and never tests the type
    (``tests/test_hessian_protocol.py`` greps the package for it). Arrays returned by
    ``diagonal_part``, ``low_rank_factor``, ``dense_part``, ``rows`` and ``named_arrays`` may be
    the operator's own: do not modify them. ``isinstance(x, HessianOperator)`` is the check that
    ``x`` is an operator (``as_hessian``).

    >>> H = DiagonalPlusLowRank([1.0, 2.0], [[1.0], [1.0]])
    >>> H.describe(), isinstance(H, HessianOperator), H.solve(H.matvec(np.array([1.0, -1.0]))).round(12).tolist()
    ('diagonal + rank 1', True, [1.0, -1.0])
    >>> H.rows(0, 2).tolist() == H.to_dense().tolist(), round(H.max_eigenvalue(), 9)
    (True, 3.618033989)
    """

    @property
    def dim(self) -> int:
        """d."""

    @property
    def is_diagonal(self) -> bool:
        """Whether H is diagonal by construction (every H_ij, i != j, is 0 without looking)."""

    def diag(self) -> np.ndarray:
        """The diagonal H_ii (d,), a copy."""

    def trace(self) -> float:
        """tr(H)."""

    def matvec(self, x: np.ndarray) -> np.ndarray:
        """H x for x of shape (d,) or (..., d) (rows)."""

    def quad_rows(self, x: np.ndarray) -> np.ndarray:
        """x'Hx for each row of x (shape (..., d)) -> shape (...)."""

    def quad_off_diagonal(self, x: np.ndarray) -> float:
        """sum_{i != j} x_i x_j H_ij for x of shape (d,) (eq 14's sum), summed without the diagonal."""

    def trace_product(self, sigma: np.ndarray) -> float:
        """tr(H Sigma) for a (d, d) matrix Sigma."""

    def rows(self, i0: int, i1: int) -> np.ndarray:
        """The rows H[i0:i1] as a dense (i1 - i0, d) array."""

    def solve(self, b: np.ndarray) -> np.ndarray:
        """H^-1 b for b of shape (d,); ValueError when H is singular (for the structured kinds,
        when a diagonal entry h_i is not > 0)."""

    def max_eigenvalue(self) -> float:
        """The largest eigenvalue of H."""

    def to_dense(self) -> np.ndarray:
        """H as a dense (d, d) array, a copy."""

    def diagonal_part(self) -> np.ndarray:
        """h (d,) in H = diag(h) + U U' + D (zeros for a dense H)."""

    def low_rank_factor(self) -> np.ndarray:
        """U (d, k) in H = diag(h) + U U' + D (k = 0 unless diagonal plus low rank)."""

    def dense_part(self) -> np.ndarray:
        """D in H = diag(h) + U U' + D: the (d, d) matrix of a dense H, an empty (0, 0) array
        otherwise."""

    def named_arrays(self) -> dict[str, np.ndarray]:
        """The arrays that define H, in order, under their names in a problem file (``H``;
        ``h_diag``; or ``h_diag`` and ``h_factor``)."""

    def describe(self) -> str:
        """The kind in words: "dense", "diagonal" or "diagonal + rank k"."""

    def with_psd_check(self) -> HessianOperator:
        """H, checked to be positive semi-definite where its construction does not ensure it
        (ValueError otherwise)."""


@dataclass(frozen=True, eq=False)
class Dense:
    """A dense symmetric Hessian H (d, d).

    Args:
        matrix: the (d, d) array; must be finite and symmetric (to 1e-10 of its largest entry).
        check_psd: also require H to be positive semi-definite (eigenvalues >= -1e-10 max|H|).
    """

    matrix: np.ndarray
    check_psd: bool = True

    def __post_init__(self) -> None:
        m = finite_array("H", self.matrix, 2)
        if m.shape[0] != m.shape[1]:
            raise ValueError(f"H must be square, got shape {m.shape}")
        scale = max(float(np.max(np.abs(m))), np.finfo(float).tiny)
        asym = float(np.max(np.abs(m - m.T)))
        if asym > 1e-10 * scale:
            raise ValueError(f"H must be symmetric: max |H - H'| = {asym:.3g} (max |H| = {scale:.3g})")
        m = 0.5 * (m + m.T)
        if self.check_psd:
            lo = float(np.linalg.eigvalsh(m)[0])
            if lo < -1e-10 * scale * m.shape[0]:
                raise ValueError(f"H must be positive semi-definite: smallest eigenvalue {lo:.3g}")
        object.__setattr__(self, "matrix", m)

    @property
    def dim(self) -> int:
        return self.matrix.shape[0]

    def __repr__(self) -> str:
        return f"Dense(d={self.dim}, trace={self.trace():.4g})"

    def diag(self) -> np.ndarray:
        return np.diagonal(self.matrix).copy()

    def trace(self) -> float:
        return float(np.trace(self.matrix))

    def matvec(self, x: np.ndarray) -> np.ndarray:
        """H x for x of shape (d,) or (..., d) (rows)."""
        return np.einsum("...i,ij->...j", np.asarray(x, dtype=np.float64), self.matrix)

    def quad_rows(self, x: np.ndarray) -> np.ndarray:
        """x'Hx for each row of x (shape (..., d)) -> shape (...)."""
        x = np.asarray(x, dtype=np.float64)
        return np.einsum("...i,...i->...", self.matvec(x), x)

    def quad_off_diagonal(self, x: np.ndarray) -> float:
        """sum_{i != j} x_i x_j H_ij for x of shape (d,) (eq 14's sum), summed without the diagonal.

        Not x'Hx - sum_i x_i^2 H_ii: that difference cancels and leaves rounding noise (e.g. a
        finite B_noise for a diagonal H).
        """
        off = self.matrix.copy()
        np.fill_diagonal(off, 0.0)
        x = np.asarray(x, dtype=np.float64)
        return float(np.einsum("i,ij,j->", x, off, x))

    def to_dense(self) -> np.ndarray:
        return self.matrix.copy()

    @property
    def is_diagonal(self) -> bool:
        return False

    def trace_product(self, sigma: np.ndarray) -> float:
        """tr(H Sigma) = sum_ij H_ij Sigma_ji: O(d^2), not a d^3 product."""
        return float(np.einsum("ij,ji->", self.matrix, sigma))

    def rows(self, i0: int, i1: int) -> np.ndarray:
        return self.matrix[i0:i1]

    def solve(self, b: np.ndarray) -> np.ndarray:
        try:
            return np.linalg.solve(self.matrix, b)
        except np.linalg.LinAlgError:
            raise ValueError("H is singular: H^-1 b is undefined") from None

    def max_eigenvalue(self) -> float:
        return float(np.linalg.eigvalsh(self.matrix)[-1])

    def diagonal_part(self) -> np.ndarray:
        return np.zeros(self.dim)

    def low_rank_factor(self) -> np.ndarray:
        return np.zeros((self.dim, 0))

    def dense_part(self) -> np.ndarray:
        return self.matrix

    def named_arrays(self) -> dict[str, np.ndarray]:
        return {"H": self.matrix}

    def describe(self) -> str:
        return "dense"

    def with_psd_check(self) -> Dense:
        return self if self.check_psd else Dense(self.matrix, check_psd=True)


@dataclass(frozen=True, eq=False)
class Diagonal:
    """A diagonal Hessian H = diag(h), h >= 0."""

    h: np.ndarray

    def __post_init__(self) -> None:
        h = finite_array("h_diag", self.h, 1)
        if np.any(h < 0):
            raise ValueError(f"h_diag must be >= 0 (H positive semi-definite), min is {h.min():.3g}")
        object.__setattr__(self, "h", h)

    @property
    def dim(self) -> int:
        return self.h.shape[0]

    def __repr__(self) -> str:
        return f"Diagonal(d={self.dim}, trace={self.trace():.4g})"

    def diag(self) -> np.ndarray:
        return self.h.copy()

    def trace(self) -> float:
        return float(self.h.sum())

    def matvec(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x) * self.h

    def quad_rows(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return np.einsum("...i,i->...", x * x, self.h)

    def quad_off_diagonal(self, x: np.ndarray) -> float:
        """sum_{i != j} x_i x_j H_ij = 0 exactly for a diagonal H."""
        return 0.0

    def to_dense(self) -> np.ndarray:
        return np.diag(self.h)

    @property
    def is_diagonal(self) -> bool:
        return True

    def trace_product(self, sigma: np.ndarray) -> float:
        """tr(H Sigma) = sum_i h_i Sigma_ii."""
        return float(np.trace(self.matvec(sigma)))

    def rows(self, i0: int, i1: int) -> np.ndarray:
        out = np.zeros((i1 - i0, self.dim))
        out[np.arange(i1 - i0), np.arange(i0, i1)] = self.h[i0:i1]
        return out

    def solve(self, b: np.ndarray) -> np.ndarray:
        _check_solvable(self.h)
        return b / self.h

    def max_eigenvalue(self) -> float:
        return float(self.h.max())

    def diagonal_part(self) -> np.ndarray:
        return self.h

    def low_rank_factor(self) -> np.ndarray:
        return np.zeros((self.dim, 0))

    def dense_part(self) -> np.ndarray:
        return np.zeros((0, 0))

    def named_arrays(self) -> dict[str, np.ndarray]:
        return {"h_diag": self.h}

    def describe(self) -> str:
        return "diagonal"

    def with_psd_check(self) -> Diagonal:
        return self  # h >= 0 is checked when built


@dataclass(frozen=True, eq=False)
class DiagonalPlusLowRank:
    """H = diag(h) + U U', h >= 0 of shape (d,), U of shape (d, k): O(d k) per product."""

    h: np.ndarray
    factor: np.ndarray

    def __post_init__(self) -> None:
        h = finite_array("h_diag", self.h, 1)
        if np.any(h < 0):
            raise ValueError(f"h_diag must be >= 0 (H positive semi-definite), min is {h.min():.3g}")
        u = finite_array("h_factor", self.factor, 2)
        if u.shape[0] != h.shape[0]:
            raise ValueError(f"h_factor must have shape (d, k) with d = {h.shape[0]}, got {u.shape}")
        object.__setattr__(self, "h", h)
        object.__setattr__(self, "factor", u)

    @property
    def dim(self) -> int:
        return self.h.shape[0]

    def __repr__(self) -> str:
        return f"DiagonalPlusLowRank(d={self.dim}, rank={self.factor.shape[1]}, trace={self.trace():.4g})"

    @property
    def rank(self) -> int:
        return self.factor.shape[1]

    def diag(self) -> np.ndarray:
        return self.h + np.einsum("ik,ik->i", self.factor, self.factor)

    def trace(self) -> float:
        return float(self.h.sum() + sum_of_squares(self.factor))

    def matvec(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return x * self.h + np.einsum("...k,ik->...i", np.einsum("...i,ik->...k", x, self.factor), self.factor)

    def quad_rows(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        proj = np.einsum("...i,ik->...k", x, self.factor)
        return np.einsum("...i,i->...", x * x, self.h) + np.einsum("...k,...k->...", proj, proj)

    def quad_off_diagonal(self, x: np.ndarray) -> float:
        """sum_{i != j} x_i x_j H_ij = 2 sum_k sum_{j < i} y_ik y_jk with y_ik = x_i U_ik, O(d k).

        Summed from exclusive prefix sums, not as |U'x|^2 - sum_i x_i^2 |U_i|^2, so that no
        cancellation occurs when the terms share a sign.
        """
        return low_rank_off_diagonal(x, self.factor)

    def to_dense(self) -> np.ndarray:
        return np.diag(self.h) + self.factor @ self.factor.T

    @property
    def is_diagonal(self) -> bool:
        return False

    def trace_product(self, sigma: np.ndarray) -> float:
        """tr(H Sigma): O(d^2 k)."""
        return float(np.trace(self.matvec(sigma)))

    def rows(self, i0: int, i1: int) -> np.ndarray:
        out = self.factor[i0:i1] @ self.factor.T
        out[np.arange(i1 - i0), np.arange(i0, i1)] += self.h[i0:i1]
        return out

    def solve(self, b: np.ndarray) -> np.ndarray:
        """(D + U U')^-1 b = D^-1 b - D^-1 U (I + U'D^-1 U)^-1 U'D^-1 b (Woodbury identity),
        O(d k^2), with D = diag(h): needs h > 0."""
        _check_solvable(self.h)
        U, dinv = self.factor, 1.0 / self.h
        small = np.eye(U.shape[1]) + (U.T * dinv) @ U
        y = dinv * b
        return y - dinv * (U @ np.linalg.solve(small, U.T @ y))

    def max_eigenvalue(self) -> float:
        """By power iteration from the normalised ones vector (until the relative change is at most
        1e-12, at most 500 products)."""
        x = np.ones(self.dim) / math.sqrt(self.dim)
        lam = 0.0
        for _ in range(500):
            y = self.matvec(x)
            new = float(np.linalg.norm(y))
            x = y / new
            if abs(new - lam) <= 1e-12 * new:
                break
            lam = new
        return new

    def diagonal_part(self) -> np.ndarray:
        return self.h

    def low_rank_factor(self) -> np.ndarray:
        return self.factor

    def dense_part(self) -> np.ndarray:
        return np.zeros((0, 0))

    def named_arrays(self) -> dict[str, np.ndarray]:
        return {"h_diag": self.h, "h_factor": self.factor}

    def describe(self) -> str:
        return f"diagonal + rank {self.rank}"

    def with_psd_check(self) -> DiagonalPlusLowRank:
        return self  # positive semi-definite by construction: h >= 0 is checked when built


def _check_solvable(h: np.ndarray) -> None:
    if np.any(h <= 0):
        raise ValueError(f"H's diagonal part must be > 0 to solve with it, min is {h.min():.3g}")


Hessian = HessianOperator
"""The type of a Hessian operator in annotations (``Dense``, ``Diagonal``, ``DiagonalPlusLowRank``,
or any class following ``HessianOperator``); formerly the union of the three classes."""


def as_hessian(H: object) -> HessianOperator:
    """Return H as an operator: operators pass through, a 2-d array becomes ``Dense``.

    Symmetry is checked here; positive semi-definiteness (O(d^3)) is checked where it matters,
    when a ``QuadraticProblem`` is built.
    """
    if isinstance(H, HessianOperator):
        return H
    arr = np.asarray(H)
    if arr.ndim != 2:
        raise TypeError(
            f"H must be a (d, d) array or a hessian operator (Dense, Diagonal, DiagonalPlusLowRank), "
            f"got {type(H).__name__} with shape {arr.shape}"
        )
    return Dense(arr, check_psd=False)
