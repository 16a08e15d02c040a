"""QuadraticProblem: the gradient statistics (mu, sigma) and Hessian H of a quadratic loss.

Per-example gradients of coordinate i are N(mu_i, sigma_i^2), independent across coordinates;
the loss is L(theta - eps V) = L - eps mu'V + eps^2/2 V'HV exactly. Problems are saved as ``.npz``
with arrays ``mu``, ``sigma`` and either ``H`` (d, d) or ``h_diag`` (d,) with optional
``h_factor`` (d, k) meaning H = diag(h_diag) + h_factor h_factor'.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, cast

import numpy as np

from .hessian import (
    Dense,
    Diagonal,
    DiagonalPlusLowRank,
    Hessian,
    as_hessian,
    check_dense_dim,
    finite_array,
    low_rank_off_diagonal,
    sum_of_squares,
)

__all__ = ["QuadraticProblem", "NOISE_BATCH_SIZE", "surge_problem", "diagonal_problem", "power_law_problem", "FAMILIES"]


@dataclass(frozen=True, eq=False)
class QuadraticProblem:
    """mu (d,), sigma (d,) > 0 and a positive semi-definite Hessian (array or operator).

    >>> p = QuadraticProblem([1.0, -1.0], [2.0, 2.0], np.eye(2))
    >>> p.dim, type(p.hessian).__name__
    (2, 'Dense')
    """

    mu: np.ndarray
    sigma: np.ndarray
    hessian: Hessian

    def __post_init__(self) -> None:
        mu = finite_array("mu", self.mu, 1)
        sigma = finite_array("sigma", self.sigma, 1)
        if sigma.shape != mu.shape:
            raise ValueError(f"sigma must have the shape of mu {mu.shape}, got {sigma.shape}")
        if np.any(sigma <= 0):
            raise ValueError(f"sigma must be > 0, min is {sigma.min():.3g} at index {int(np.argmin(sigma))}")
        H = as_hessian(self.hessian).with_psd_check()
        if H.dim != mu.size:
            raise ValueError(f"H has dimension {H.dim} but mu has {mu.size}")
        object.__setattr__(self, "mu", mu)
        object.__setattr__(self, "sigma", sigma)
        object.__setattr__(self, "hessian", H)

    @property
    def dim(self) -> int:
        return self.mu.size

    def __repr__(self) -> str:
        r = np.abs(self.snr)
        return f"QuadraticProblem(d={self.dim}, |mu/sigma| in [{r.min():.3g}, {r.max():.3g}], hessian={self.hessian!r})"

    @property
    def snr(self) -> np.ndarray:
        """r_i = mu_i / sigma_i."""
        return self.mu / self.sigma

    def digest(self) -> str:
        """sha256 of the Hessian kind and every array: identifies the problem in sweep stores."""
        h = hashlib.sha256(type(self.hessian).__name__.encode())
        for a in (self.mu, self.sigma, *self.hessian.named_arrays().values()):
            h.update(str(a.shape).encode())
            h.update(np.ascontiguousarray(a, dtype=np.float64).data)  # the buffer itself: no copy
        return h.hexdigest()

    def describe(self) -> str:
        return f"d = {self.dim}, H {self.hessian.describe()}"

    # --- files ----------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write the ``.npz`` format described in the module docstring, around the page cache
        where the file system allows it (``outputs.uncached_file``: at d = 10^7, 560 MB)."""
        from .outputs import uncached_file

        arrays = {"mu": self.mu, "sigma": self.sigma, **self.hessian.named_arrays()}
        with uncached_file(path) as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]  # numpy stub: mypy matches **dict against allow_pickle: bool

    @classmethod
    def load(cls, path: str | os.PathLike) -> QuadraticProblem:
        """Read a ``.npz`` problem file; anything else is rejected with a ValueError naming it."""
        try:
            # Opened here, not by np.load: np.load leaks its file handle when the zip is corrupt.
            with open(path, "rb") as f:
                head = f.read(22)  # a zip archive is at least its 22-byte end record; np.load calls
                if head[:4] not in (b"PK\x03\x04", b"PK\x05\x06"):  # anything unknown "pickled data"
                    raise ValueError(f"not an .npz archive (it starts with {head[:8]!r})")
                if len(head) < 22:
                    raise ValueError(f"not an .npz archive: a truncated zip file of {len(head)} bytes")
                f.seek(0)
                data = np.load(f, allow_pickle=False)
                with data:
                    shapes, oversized = _headers(data)
                    if "H.npy" in shapes:  # a dense H too large to build: refuse before reading it
                        check_dense_dim(shapes["H.npy"][0])
                    if oversized:
                        raise ValueError(oversized[0])
                    arrays = {k: data[k] for k in data.files}
        except FileNotFoundError:
            raise ValueError(f"problem file {os.fspath(path)!r} does not exist") from None
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
            raise ValueError(f"cannot read problem file {os.fspath(path)!r}: {e}") from None
        if not isinstance(arrays, dict) or not arrays:
            raise ValueError(f"problem file {os.fspath(path)!r} holds no arrays")
        keys = set(arrays)
        allowed = [{"mu", "sigma", "H"}, {"mu", "sigma", "h_diag"}, {"mu", "sigma", "h_diag", "h_factor"}]
        if keys not in allowed:
            raise ValueError(
                f"problem file {os.fspath(path)!r} has arrays {sorted(keys)}; expected mu, sigma and "
                "either H or h_diag (with optional h_factor)"
            )
        try:
            if "H" in keys:
                H: Hessian = Dense(arrays["H"])
            elif "h_factor" in keys:
                H = DiagonalPlusLowRank(arrays["h_diag"], arrays["h_factor"])
            else:
                H = Diagonal(arrays["h_diag"])
            return cls(arrays["mu"], arrays["sigma"], H)
        except ValueError as e:
            raise ValueError(f"problem file {os.fspath(path)!r}: {e}") from None


def _headers(data: np.lib.npyio.NpzFile) -> tuple[dict[str, tuple[int, ...]], list[str]]:
    """The shape of each ``.npy`` member, read from its header without the data, and a message for
    each array whose header declares more values than its member holds."""
    shapes, oversized = {}, []
    archive = data.zip
    if archive is None:
        raise ValueError("the .npz file is closed")
    for info in archive.infolist():
        with archive.open(info) as member:
            version = np.lib.format.read_magic(member)
            read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            if version not in read:
                continue  # np.load checks the rest
            shape, _, dtype = read[version](member)
        declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if declared > info.file_size:
            oversized.append(f"array {info.filename!r} declares shape {shape} ({declared} bytes) but holds "
                             f"{info.file_size} bytes")  # fmt: skip
        shapes[info.filename] = shape if len(shape) else (0,)
    return shapes, oversized


# --- problem families ----------------------------------------------------------------------------


def _check_dim(d: int) -> int:
    if int(d) != d or d < 2:
        raise ValueError(f"dims must be an integer >= 2, got {d}")
    return int(d)


NOISE_BATCH_SIZE = 86.0
"""B_noise (eq 14) of ``surge_problem`` above d = 1000 (its value at d = 1000, seed 0, is 86.1)."""


def surge_problem(
    d: int,
    seed: int = 0,
    rank: int = 4,
    snr: tuple[float, float] = (0.004, 0.0125),
    curvature: tuple[float, float] = (0.5, 2.0),
    coupling: float = 1.0,
    dense: bool = False,
    noise_batch_size: float | None = None,
) -> QuadraticProblem:
    """A problem that shows the surge well inside Theorem 3's regime, at any dimension.

    H = diag(h) + c U U' with h log-uniform in ``curvature`` and U[i, k] = sign(mu_i) a_ik,
    a_ik uniform in (0.5, 1) * coupling / sqrt(rank): the factors are positive along sign(mu), so
    the off-diagonal sum of eq 14 is large and positive. |mu_i| / sigma_i is log-uniform in
    ``snr``, sigma_i log-uniform in (0.5, 2), signs random; validity_bound = pi / (2 r_max^2) is
    about 10^4 at every d.

    Scaling with d. With c = 1, off grows like d^2 and tr(H) like d, so B_noise = pi tr(H) / (2 off)
    falls like 1 / d (about 86 at d = 1000, 0.84 at d = 10^5). So c is chosen to hold B_noise:
    from B_noise(c) = pi (tr diag(h) + c tr UU') / (2 c off(UU')),
    c = pi tr diag(h) / (2 B_noise off(UU') - pi tr UU'), with B_noise = ``noise_batch_size``, or
    by default ``NOISE_BATCH_SIZE`` for d > 1000 and c = 1 for d <= 1000 (so the family at
    d <= 1000 is the same, bit for bit, as before the scaling). Below d = 1000 B_noise cannot be
    held: for any positive semi-definite H, off <= r'Hr <= d r_max^2 tr(H), so
    B_noise > validity_bound / d, and with this snr range B_noise ~ 86 * 1000 / d there
    (~860 at d = 100, ~10^4, at the bound, at d = 10). A ``noise_batch_size`` at or below the
    reachable minimum pi tr UU' / (2 off(UU')) (the limit c -> inf) is a ValueError.
    ``dense=True`` returns the same H as a dense matrix (small d only: ``check_dense_dim``).

    Arrays are built in place (float64, one d x rank factor, no copies), so d = 10^8 needs about
    8 bytes x (4 + rank) per coordinate.
    """
    d = _check_dim(d)
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    if noise_batch_size is not None and not (np.isfinite(noise_batch_size) and noise_batch_size > 0):
        raise ValueError(f"noise_batch_size must be finite and > 0, got {noise_batch_size}")
    if dense:
        check_dense_dim(d)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5E7]))
    # U's uniforms are the stream's words after those of the signs (NumPy draws them as 32-bit
    # halves: ceil(d / 2) words) and the 3 d of sigma, mu and h (one word per double): drawn in a
    # thread, beside those, by a copy of the generator advanced to where they end; checked there
    # (a NumPy that draws the signs otherwise: U is drawn then, in turn, from the stream itself)
    ahead = _advanced(rng, -(-d // 2) + 3 * d)
    start = ahead.bit_generator.state["state"]
    with ThreadPoolExecutor(max_workers=1) as pool:
        drawn = pool.submit(ahead.uniform, 0.5, 1.0, (d, rank))
        s = rng.choice([-1.0, 1.0], size=d)
        sigma = _exp_uniform(rng, 0.5, 2.0, d)
        mu = _exp_uniform(rng, snr[0], snr[1], d)  # r = |mu| / sigma
        mu *= s
        mu *= sigma
        h = _exp_uniform(rng, curvature[0], curvature[1], d)
        scale = s * (coupling / np.sqrt(rank))
        del s
        U = drawn.result() if rng.bit_generator.state["state"] == start else rng.uniform(0.5, 1.0, (d, rank))
        # U *= scale[:, None] (= U * s * c; s = +-1: one pass, the same rounding), in halves at once
        top = pool.submit(np.multiply, U[: d // 2], scale[: d // 2, None], out=U[: d // 2])
        U[d // 2 :] *= scale[d // 2 :, None]
        top.result()
    del scale
    target = noise_batch_size if noise_batch_size is not None else NOISE_BATCH_SIZE if d > 1000 else None
    if target is not None:
        U *= np.sqrt(_coupling_for(target, mu, sigma, h, U))
    H: Hessian = DiagonalPlusLowRank(h, U)
    if dense:
        H = Dense(H.to_dense())
    return QuadraticProblem(mu, sigma, H)


def _advanced(rng: np.random.Generator, words: int) -> np.random.Generator:
    """A generator whose draws are those of ``rng`` (PCG64, as ``default_rng`` gives) after
    ``words`` more 64-bit outputs; ``rng`` itself is not moved."""
    bits = np.random.PCG64()
    bits.state = cast(Any, rng.bit_generator.state)  # a PCG64 state (numpy's stub: any Mapping)
    bits.advance(words)
    return np.random.Generator(bits)


def _exp_uniform(rng: np.random.Generator, lo: float, hi: float, d: int) -> np.ndarray:
    """exp(uniform(log lo, log hi)): log-uniform in [lo, hi], computed in place (no second array)."""
    x = rng.uniform(np.log(lo), np.log(hi), size=d)
    return np.exp(x, out=x)


def _coupling_for(noise_batch_size: float, mu, sigma, h, U) -> float:
    """c with B_noise(diag(h) + c U U') = noise_batch_size (eq 14; see ``surge_problem``)."""
    off = low_rank_off_diagonal(mu / sigma, U)
    tr_u = sum_of_squares(U)
    smallest = np.pi * tr_u / (2.0 * off) if off > 0 else np.inf
    if not noise_batch_size > smallest * (1 + 1e-9):
        raise ValueError(
            f"noise_batch_size = {noise_batch_size:g} is not reachable at d = {h.size}: the smallest is "
            f"{smallest:.4g} (B_noise > validity_bound / d for any H); raise it, or use a larger d"
        )
    return float(np.pi * h.sum() / (2.0 * noise_batch_size * off - np.pi * tr_u))


def diagonal_problem(d: int, seed: int = 0, snr: tuple[float, float] = (0.004, 0.0125)) -> QuadraticProblem:
    """The same statistics as ``surge_problem`` with H = diag(h): no off-diagonal curvature.

    Eq 14's off-diagonal sum is 0, so B_noise = inf and eq 9 rises monotonically to eq 17:
    the control case with no surge.
    """
    p = surge_problem(d, seed, snr=snr)  # diagonal plus low rank: its diagonal part is h
    return QuadraticProblem(p.mu, p.sigma, Diagonal(p.hessian.diagonal_part()))


def power_law_problem(d: int, seed: int = 0, exponent: float = 1.0, snr: float = 0.01) -> QuadraticProblem:
    """Dense H = Q diag(k^-exponent) Q' with a random rotation Q: the spectrum of neural-network
    Hessians. mu = H (theta - theta*) for a random theta (the gradient of the quadratic itself),
    sigma = |mu| / snr on average (sigma_i = mean|mu| / snr, constant).

    Whether it surges depends on the sign of eq 14's off-diagonal sum, r'Hr - sum r_i^2 H_ii,
    which for mu = H delta is delta'H^3 delta / s^2 - ...: typically positive (the gradient is
    aligned with the top of the spectrum), giving a finite B_noise.
    """
    d = _check_dim(d)
    check_dense_dim(d)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x90E]))
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    lam = np.arange(1, d + 1, dtype=np.float64) ** (-float(exponent))
    H = (q * lam) @ q.T
    H = 0.5 * (H + H.T)
    mu = H @ rng.standard_normal(d)
    sigma = np.full(d, np.mean(np.abs(mu)) / snr)
    return QuadraticProblem(mu, sigma, Dense(H))


class _ProblemFactory(Protocol):
    def __call__(self, d: int, seed: int = 0) -> QuadraticProblem: ...


FAMILIES: dict[str, _ProblemFactory] = {
    "lowrank": surge_problem,
    "dense": lambda d, seed=0, **kw: surge_problem(d, seed, dense=True, **kw),
    "diagonal": diagonal_problem,
    "powerlaw": power_law_problem,
}
"""Named factories (name -> f(d, seed)) used by ``--hessian`` on the command line."""
