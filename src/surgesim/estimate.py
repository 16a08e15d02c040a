"""Monte Carlo estimate of the optimal learning rate of one sign-SGD step, per batch size.

For trial t, a_t = mu'V_t and b_t = V_t'HV_t (``surgesim.kernels.onestep``); the one-step loss
improvement is dL_t(eps) = eps a_t - eps^2/2 b_t exactly, so

    eps_mc = mean(a) / mean(b)            (argmax of the Monte Carlo mean of dL, eq 6 / 31)
    dL_mc  = mean(a)^2 / (2 mean(b))      (eq 7)

with standard errors by the delta method. The two means need very different numbers of trials:
at small B, a_t is a tiny signal sum_i mu_i E_i in noise of size |mu| (relative variance
~ 1 / (B d r^2)), while b_t ~ tr(H) varies little. For a dense H, b_t costs a d x d product per
trial and a_t only d random words, so b is averaged over the first M of the N trials and the
adaptive mode chooses N and M to reach the target relative standard error at least cost.
With overlapping samples (M <= N), Cov(mean_N(a), mean_M(b)) = cov(a, b) / N, so

    var(ln eps_mc) = var(a) / (N a^2) + var(b) / (M b^2) - 2 cov(a, b) / (N a b)
    var(ln dL_mc)  = 4 var(a) / (N a^2) + var(b) / (M b^2) - 4 cov(a, b) / (N a b)

Every trial's random numbers depend only on (seed, B, trial index), and means are taken over
arrays in trial order, so results do not depend on threads, block sizes or resumption.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import optimize

from . import backend as backends
from .problem import QuadraticProblem
from .progress import report

__all__ = [
    "Estimate",
    "estimate_batch_size",
    "estimate_curve",
    "estimate_task",
    "argmax_by_search",
    "plan_trials",
    "delta_method",
]

_ROUND = 1024  # trial counts are multiples of this
_BLOCK = 1 << 16  # trials per kernel call
_DENSE_GROUP = 8  # dense GEMM blocks sampled per kernel call, at most
_DENSE_V_BYTES = 256 << 20  # and fewer when V (float32, rows x d) would exceed this
_MIN_TRIALS = 4096
_PER_EXAMPLE_MAX_B = 4096  # d * B normals per trial: minutes per batch size beyond this


@dataclass(frozen=True)
class Estimate:
    """Monte Carlo optimum of one batch size. ``trials``: N (numerator); ``denominator_trials``: M."""

    batch_size: int
    trials: int
    denominator_trials: int
    lr: float
    lr_se: float
    lr_search: float
    loss_improvement: float
    loss_improvement_se: float
    mean_a: float
    mean_b: float
    converged: bool

    @property
    def lr_rel_se(self) -> float:
        return self.lr_se / abs(self.lr) if self.lr != 0 else math.inf

    def as_dict(self) -> dict:
        return asdict(self)


class _Sampler:
    """Per-trial a and b for one (problem, B, seed, sampler), grown in trial order."""

    def __init__(self, problem: QuadraticProblem, batch_size: int, seed: int, sampler: str, backend: str = "cpu"):
        self.k = onestep = backends.onestep_kernels(backend)
        if sampler not in onestep.SAMPLERS:
            raise ValueError(f"sampler must be one of {sorted(onestep.SAMPLERS)}, got {sampler!r}")
        self.p = problem
        self.B = int(batch_size)
        self.code = onestep.SAMPLERS[sampler]
        self.key = onestep.batch_key(seed, self.B)
        self.thr, self.rare = onestep.sign_thresholds(self.B, problem.mu, problem.sigma)
        H = problem.hessian
        dense = H.dense_part()  # H = diag(h) + U U' + D; b of a dense H by float32 GEMMs (_dense_b)
        self.dense = dense.size > 0
        self.h, self.Ut = H.diagonal_part(), H.low_rank_factor().T  # a view: the kernel reads U in place
        if self.dense:
            self.H32 = dense.astype(np.float32)
        self.a = np.empty(0)
        self.b = np.empty(0)
        self._b_blocks = np.empty(0)  # dense: b for whole aligned GEMM blocks of trials

    def _moments(self, t0: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = np.empty(n), np.empty(n)
        for s in range(0, n, _BLOCK):
            m = min(_BLOCK, n - s)
            self.k.trial_moments(
                self.code, self.key, np.uint64(t0 + s), self.B, self.p.mu, self.p.sigma,
                self.thr, self.rare, self.h, self.Ut, a[s : s + m], b[s : s + m],
            )  # fmt: skip
        return a, b

    def _dense_b(self, t0: int, n: int) -> np.ndarray:
        """b for trials t0 .. t0 + n - 1, both multiples of DENSE_BLOCK (aligned GEMM blocks)."""
        out = np.empty(n)
        group = max(1, min(_DENSE_GROUP, _DENSE_V_BYTES // (4 * self.k.DENSE_BLOCK * self.p.dim)))
        step = group * self.k.DENSE_BLOCK
        for s in range(0, n, step):
            m = min(step, n - s)
            V = np.empty((m, self.p.dim), dtype=np.float32)
            self.k.trial_signs(
                self.code, self.key, np.uint64(t0 + s), self.B, self.p.mu, self.p.sigma,
                self.thr, self.rare, np.empty(m), V,
            )  # fmt: skip
            out[s : s + m] = self.k.quad_rows_f32(V, self.H32)
        return out

    def grow(self, n_a: int, n_b: int) -> None:
        """Extend to n_a numerator trials and n_b <= n_a denominator trials (new trials only)."""
        have_a = self.a.size
        if n_a > have_a:
            a, b = self._moments(have_a, n_a - have_a)
            self.a = np.concatenate([self.a, a])
            if not self.dense:
                self.b = np.concatenate([self.b, b])
        if self.dense:
            blk = self.k.DENSE_BLOCK
            have, want = self._b_blocks.size, -(-n_b // blk) * blk
            if want > have:
                self._b_blocks = np.concatenate([self._b_blocks, self._dense_b(have, want - have)])
            self.b = self._b_blocks[: max(n_b, self.b.size)]

    def stats(self) -> dict:
        a, b = self.a, self.b
        n, m = a.size, b.size
        ma, mb = float(np.mean(a)), float(np.mean(b))
        va = float(np.var(a, ddof=1))
        bc = b - b[0]  # shift: b varies little around tr(H); avoids cancellation in the variance
        vb = float(np.var(bc, ddof=1))
        cab = float(np.cov(a[:m], bc, ddof=1)[0, 1]) if m > 1 else 0.0
        return {"n": n, "m": m, "ma": ma, "mb": mb, "va": va, "vb": vb, "cab": cab}


def delta_method(st: dict) -> tuple[float, float, float, float]:
    """(lr, lr_se, dL, dL_se) from moment statistics by the delta method (module docstring)."""
    n, m, ma, mb = st["n"], st["m"], st["ma"], st["mb"]
    ra = st["va"] / (n * ma * ma) if ma != 0 else math.inf
    rb = st["vb"] / (m * mb * mb)
    rc = st["cab"] / (n * ma * mb) if ma != 0 else 0.0
    lr = ma / mb
    dl = 0.5 * ma * ma / mb
    lr_se = abs(lr) * math.sqrt(max(ra + rb - 2.0 * rc, 0.0))
    dl_se = abs(dl) * math.sqrt(max(4.0 * ra + rb - 4.0 * rc, 0.0))
    return lr, lr_se, dl, dl_se


def argmax_by_search(mean_a: float, mean_b: float) -> float:
    """argmax over eps > 0 of eps mean_a - eps^2/2 mean_b found numerically (no closed form):
    a log-spaced scan over 1e-16 .. 1e8 brackets the maximum, bounded Brent refines it.
    Checks the closed form mean_a / mean_b on the same samples.
    """

    def neg(eps: float) -> float:
        return -(eps * mean_a - 0.5 * eps * eps * mean_b)

    grid = np.logspace(-16, 8, 241)
    vals = -(grid * mean_a - 0.5 * grid * grid * mean_b)
    k = int(np.argmin(vals))
    if vals[k] >= 0:  # no eps > 0 improves the loss in expectation
        return 0.0
    lo, hi = grid[max(k - 1, 0)], grid[min(k + 1, grid.size - 1)]
    res = optimize.minimize_scalar(neg, bounds=(lo, hi), method="bounded", options={"xatol": lo * 1e-12})
    return float(res.x)


def plan_trials(st: dict, rel_se: float, dense_cost: float | None) -> tuple[int, int]:
    """Trials (N, M) that reach relative standard error ``rel_se`` at least cost.

    With per-trial relative (co)variances ra = var(a)/a^2, rb = var(b)/b^2, rc = cov(a, b)/(a b),
    the squared relative error is (ra - 2 rc) / N + rb / M (module docstring). Minimising
    N + c M (c = ``dense_cost``, the cost of a b-trial in a-trials) under that constraint gives,
    by Lagrange, with e = ra - 2 rc (floored at ra / 20 so a noisy covariance cannot plan too few):
    N = sqrt(e) (sqrt(e) + sqrt(c rb)) / R^2 and M = sqrt(rb / c) (sqrt(e) + sqrt(c rb)) / R^2.
    ``dense_cost=None``: a and b come from the same trials (M = N = (e + rb) / R^2).
    """
    if st["ma"] == 0:
        return st["n"] * 8, st["m"] * 8
    ra = st["va"] / st["ma"] ** 2
    rb = st["vb"] / st["mb"] ** 2
    rc = st["cab"] / (st["ma"] * st["mb"])
    e = max(ra - 2.0 * rc, ra / 20.0)
    r2 = rel_se * rel_se
    if dense_cost is None:
        n = math.ceil((e + rb) / r2)
        return n, n
    total = math.sqrt(e) + math.sqrt(dense_cost * rb)
    return math.ceil(math.sqrt(e) * total / r2), math.ceil(math.sqrt(rb / dense_cost) * total / r2)


def _round_up(x: float) -> int:
    return int(math.ceil(x / _ROUND) * _ROUND)


def estimate_batch_size(
    problem: QuadraticProblem,
    batch_size: int,
    *,
    seed: int = 0,
    trials: int | None = None,
    rel_se: float | None = None,
    max_trials: int = 1 << 24,
    sampler: str = "sign",
    backend: str = "cpu",
) -> Estimate:
    """Monte Carlo optimal learning rate (eq 6) and loss improvement (eq 7) at one batch size.

    Exactly one of ``trials`` (fixed: N = M = trials) or ``rel_se`` (adaptive: grow N and M until
    the learning rate's relative standard error is at most rel_se, or N reaches ``max_trials``).
    ``backend``: "cpu", "gpu" or "auto" (``surgesim.backend``); the same random numbers on each.
    """
    B = _check_batch_size(batch_size)
    check_options([B], trials=trials, rel_se=rel_se, max_trials=max_trials, sampler=sampler)
    s = _Sampler(problem, B, seed, sampler, backend)
    if trials is not None:
        s.grow(int(trials), int(trials))
        converged = True
    else:
        if rel_se is None:  # check_options has rejected it: narrows rel_se to float
            raise ValueError("give exactly one of trials (fixed) or rel_se (adaptive)")
        d = problem.dim
        dense_cost = 1.0 + d / 50.0 if s.dense else None  # a d x d GEMM row vs d random words
        n = m = _MIN_TRIALS
        while True:
            s.grow(n, m)
            st = s.stats()
            lr, lr_se, _, _ = delta_method(st)
            converged = lr_se <= rel_se * abs(lr)
            if converged or n >= max_trials:
                break
            want_n, want_m = plan_trials(st, rel_se, dense_cost)
            # progress within the task: trials so far against the plan, on a log scale
            goal = max(min(float(max_trials), 1.15 * want_n), 2.0 * n)
            report(math.log(n / _MIN_TRIALS + 1) / math.log(goal / _MIN_TRIALS + 1))
            n_new = min(max_trials, _round_up(min(max(1.15 * want_n, n), 8 * n)))
            m_new = min(n_new, _round_up(min(max(1.15 * want_m, m), 8 * m)))
            if not s.dense:
                m_new = n_new
            if n_new == n and m_new == m:  # plan satisfied but noise says not yet: add a round
                n_new = min(max_trials, 2 * n)
                m_new = n_new if not s.dense else min(n_new, 2 * m)
            n, m = n_new, m_new
    st = s.stats()
    lr, lr_se, dl, dl_se = delta_method(st)
    return Estimate(
        batch_size=B, trials=st["n"], denominator_trials=st["m"], lr=lr, lr_se=lr_se,
        lr_search=argmax_by_search(st["ma"], st["mb"]), loss_improvement=dl,
        loss_improvement_se=dl_se, mean_a=st["ma"], mean_b=st["mb"], converged=bool(converged),
    )  # fmt: skip


def check_options(
    batch_sizes: Sequence[int],
    *,
    trials: int | None = None,
    rel_se: float | None = None,
    max_trials: int = 1 << 24,
    sampler: str = "sign",
) -> None:
    """Raise ValueError, naming the value, for options ``estimate_batch_size`` cannot run with
    (checked before any sampling, so a sweep fails fast instead of task by task)."""
    sizes = [_check_batch_size(b) for b in batch_sizes]
    if (trials is None) == (rel_se is None):
        raise ValueError("give exactly one of trials (fixed) or rel_se (adaptive)")
    if trials is not None and (int(trials) != trials or trials < 2):
        raise ValueError(f"trials must be an integer >= 2, got {trials}")
    if rel_se is not None:
        if not (0 < rel_se < 1):
            raise ValueError(f"rel_se must be in (0, 1), got {rel_se}")
        if int(max_trials) != max_trials or max_trials < _MIN_TRIALS:
            raise ValueError(f"max_trials must be an integer >= {_MIN_TRIALS}, got {max_trials}")
    if sampler not in ("sign", "batch_mean", "per_example"):
        raise ValueError(f"sampler must be one of batch_mean, per_example, sign, got {sampler!r}")
    if sampler == "per_example" and sizes and max(sizes) > _PER_EXAMPLE_MAX_B:
        raise ValueError(
            f"the per_example sampler draws B normals per coordinate per trial, so its cost grows with B; "
            f"B = {max(sizes)} is above its limit {_PER_EXAMPLE_MAX_B} (use smaller batch sizes, or the sign sampler)"
        )


def _check_batch_size(b) -> int:
    if isinstance(b, (bool, np.bool_)) or not float(b).is_integer() or b < 1:
        raise ValueError(f"batch sizes must be integers >= 1, got {b}")
    return int(b)


def estimate_curve(
    problem: QuadraticProblem,
    batch_sizes: Sequence[int],
    *,
    progress: Callable[[int, int], None] | None = None,
    **kwargs,
) -> list[Estimate]:
    """``estimate_batch_size`` for each batch size (same options); ``progress(done, total)``."""
    sizes = [_check_batch_size(b) for b in batch_sizes]
    out = []
    for i, b in enumerate(sizes):
        out.append(estimate_batch_size(problem, b, **kwargs))
        if progress is not None:
            progress(i + 1, len(sizes))
    return out


def estimate_task(params: dict, problem: QuadraticProblem) -> dict:
    """One batch size as a ``surgesim.sweep`` task: ``params`` holds ``batch_size`` and the
    keyword options of ``estimate_batch_size``; returns the estimate as a flat dict."""
    opts = dict(params)
    return estimate_batch_size(problem, opts.pop("batch_size"), **opts).as_dict()
