"""The probe's estimators of Lemma 1's optimal learning rate at a fixed state (the theory:
``probe.py``), each testing one more assumption of the paper's theory:

- ``probe_batch_size``: real minibatches, lr*(B) = E[G'V_B] / E[V_B' H V_B] (eq 6-7), the truth;
- ``gaussian_batch_size``: V = sign(G + z / sqrt(B)), z Gaussian with the empirical per-example
  covariance; numerator in closed form (eq 35), a jackknife for the statistics' noise;
- ``independent_curve``: eq 9 from the measured G, sigma and H (eq 35-36);
- ``peak_batch_size``: the batch size of the largest lr*(B), with a bootstrap interval.

Means, standard errors and the planning of draws are ``surgesim.estimate``'s (delta method,
``plan_trials``); draws come in blocks of ``BLOCK`` from ``probe_state.draw_generator``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike
from scipy import special

from ..estimate import delta_method, plan_trials
from ..progress import report
from .gradstats import EvalMode
from .probe_state import UPDATES, ProbeState, draw_generator
from .probe_statistics import StateStatistics

__all__ = [
    "BLOCK",
    "MIN_DRAWS",
    "CurvePoint",
    "DrawStream",
    "check_plan",
    "check_batch_size",
    "round_draws",
    "probe_batch_size",
    "gaussian_batch_size",
    "independent_curve",
    "peak_batch_size",
]

BLOCK = 16  # draws per random-number block (a: a multiple of it), the unit of reproducibility
MIN_DRAWS = 32
_BLOCK_EXAMPLES = 1024  # a-draws come in blocks of about this many examples (at least BLOCK draws)


@dataclass(frozen=True)
class CurvePoint:
    """lr*(B) = mean_a / mean_b and dL*(B) = mean_a^2 / (2 mean_b) with delta-method errors;
    ``draws`` a-draws and ``hessian_draws`` b-draws (0 and 0 for a closed form)."""

    batch_size: int
    lr: float
    lr_se: float
    loss_improvement: float
    loss_improvement_se: float
    mean_a: float
    mean_b: float
    draws: int
    hessian_draws: int
    converged: bool

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def check_plan(rel_se: float | None, draws: int | None, max_draws: int) -> float | None:
    """The relative standard error to reach (0.1 when neither is given), after checks."""
    if rel_se is not None and draws is not None:
        raise ValueError("give at most one of rel_se (adaptive) or draws (fixed)")
    if rel_se is None and draws is None:
        rel_se = 0.1
    if rel_se is not None and not 0 < rel_se < 1:
        raise ValueError(f"rel_se must be in (0, 1), got {rel_se}")
    if draws is not None and (int(draws) != draws or draws < 2):
        raise ValueError(f"draws must be an integer >= 2, got {draws}")
    if int(max_draws) != max_draws or max_draws < MIN_DRAWS:
        raise ValueError(f"max_draws must be an integer >= {MIN_DRAWS}, got {max_draws}")
    return rel_se


class DrawStream:
    """Per-draw values of one kind (a or b), grown in blocks of ``block`` draws; block j's random
    numbers come from ``draw_generator(seed, B, offset + j)`` alone."""

    def __init__(self, fn: Callable[[torch.Generator, int], np.ndarray], seed: int, B: int, offset: int, block: int):
        self.fn, self.seed, self.B, self.offset, self.block = fn, seed, B, offset, block
        self.values = np.empty(0)

    def grow(self, n: int) -> None:
        while self.values.size < n:
            j = self.values.size // self.block
            new = self.fn(draw_generator(self.seed, self.B, self.offset + j), self.block)
            self.values = np.concatenate([self.values, new])

    def take(self, n: int) -> np.ndarray:
        self.grow(n)
        return self.values[:n]


def _estimate(
    a: DrawStream | float,
    b: DrawStream,
    rel_se: float | None,
    draws: int | None,
    max_draws: int,
    b_cost: float,
    a_extra_var: Callable[[int], float] | None = None,
) -> CurvePoint:
    """lr = mean(a) / mean(b) from independent draws of a (N) and b (M), grown until lr's relative
    standard error is at most ``rel_se`` with N and M planned by ``estimate.plan_trials`` (cost of
    a b-draw ``b_cost`` a-draws), or ``draws`` of each; ``a`` a float: its exact mean."""
    stream = a if isinstance(a, DrawStream) else None  # None: a is the exact mean
    a_mean = 0.0 if isinstance(a, DrawStream) else float(a)
    exact = stream is None

    def stats(n: int, m: int) -> dict:
        bv = b.take(m)
        st = {"m": m, "mb": float(bv.mean()), "vb": float(np.var(bv - bv[0], ddof=1)), "cab": 0.0}
        if stream is None:
            return {**st, "n": m, "ma": a_mean, "va": 0.0}
        av = stream.take(n)
        va = float(np.var(av, ddof=1)) + (n * a_extra_var(n) if a_extra_var else 0.0)
        return {**st, "n": n, "ma": float(av.mean()), "va": va}

    if draws is not None:
        n = m = int(draws)
        converged = True
    else:
        if rel_se is None:
            raise ValueError("give rel_se (adaptive) or draws (fixed)")
        n = 0 if stream is None else round_draws(MIN_DRAWS, stream.block)
        m = round_draws(MIN_DRAWS, b.block)
        while True:
            st = stats(n, m)
            lr, lr_se, _, _ = delta_method(st)
            converged = lr_se <= rel_se * abs(lr)
            if converged or max(n, m) >= max_draws:
                break
            if exact:  # only b is sampled: var(ln lr) = rb / M
                want_n, want_m = 0, st["vb"] / (st["mb"] * rel_se) ** 2
            else:
                want_n, want_m = plan_trials(st, rel_se, b_cost)
            goal = max(min(float(max_draws), 1.15 * want_m), 2.0 * m)  # progress: draws against the plan
            report(math.log(m / MIN_DRAWS + 1) / math.log(goal / MIN_DRAWS + 1))
            n_new = 0
            if stream is not None:
                n_new = min(max_draws, round_draws(min(max(1.15 * want_n, n), 8 * n), stream.block))
            m_new = min(max_draws, round_draws(min(max(1.15 * want_m, m), 8 * m), b.block))
            if (n_new, m_new) == (n, m):  # the plan is met but the noise says not yet
                n_new, m_new = (0 if exact else min(max_draws, 2 * n)), min(max_draws, 2 * m)
            n, m = n_new, m_new
    st = stats(n, m)
    lr, lr_se, dl, dl_se = delta_method(st)
    return CurvePoint(
        batch_size=b.B, lr=lr, lr_se=lr_se, loss_improvement=dl, loss_improvement_se=dl_se,
        mean_a=st["ma"], mean_b=st["mb"], draws=0 if exact else n, hessian_draws=m, converged=bool(converged),
    )  # fmt: skip


def round_draws(x: float, block: int) -> int:
    return max(block, int(math.ceil(x / block) * block))


def probe_batch_size(
    state: ProbeState,
    batch_size: int,
    *,
    update: str = "sign",
    rel_se: float | None = None,
    draws: int | None = None,
    max_draws: int = 1 << 18,
    hessian_examples: int = 256,
    seed: int = 0,
) -> CurvePoint:
    """Lemma 1 with real minibatches: lr*(B) = E[G'V_B] / E[V_B'H V_B] (module docstring).

    a-draws (G'V) and b-draws (V'HV, its own minibatch and a fresh Hessian sample each) are
    independent streams, so var(ln lr) = var(a)/(N a^2) + var(b)/(M b^2).
    """
    rel_se = check_plan(rel_se, draws, max_draws)
    if update not in UPDATES:
        raise ValueError(f"update must be one of {', '.join(UPDATES)}, got {update!r}")
    B = check_batch_size(batch_size, state.n)
    if state.n is not None and hessian_examples > state.n:
        raise ValueError(f"hessian_examples {hessian_examples} is larger than the data set ({state.n})")
    G = state.gradient
    update_sum = torch.zeros(state.dim, dtype=torch.float64)
    per_call = max(1, state.chunk // B)  # minibatches per vectorised gradient call

    def a_values(gen: torch.Generator, k: int) -> np.ndarray:
        x, y = state.minibatches(gen, k, B)
        out = []
        for i in range(0, k, per_call):
            V = state.updates(state.mean_gradients(x[i : i + per_call], y[i : i + per_call]), update)
            update_sum.add_(V.sum(0, dtype=torch.float64))
            out.append((V.double() @ G).numpy())
        return np.concatenate(out)

    def b_values(gen: torch.Generator, k: int) -> np.ndarray:
        x, y = state.minibatches(gen, k, B)
        hx, hy = state.minibatches(gen, k, hessian_examples)
        return state.quad_forms(state.updates(state.mean_gradients(x, y), update), hx, hy)

    a = DrawStream(a_values, seed, B, 0, round_draws(_BLOCK_EXAMPLES / B, BLOCK))  # a function of B alone
    b = DrawStream(b_values, seed, B, 1 << 32, BLOCK)
    extra: Callable[[int], float] | None = None
    gradient_error = state.gradient_error
    if gradient_error is not None:
        # var(e'v), e the error of G, at v = the mean update of the first draws: one pass of
        # per-example directional derivatives over G's sample per estimate (at every growth of the
        # draws it held a GPT probe task for many minutes); later draws change v by their noise only.
        first: list[float] = []

        def extra_var(n: int) -> float:
            if not first:
                first.append(gradient_error(update_sum / a.values.size))
            return first[0]

        extra = extra_var

    with EvalMode(state.model):
        return _estimate(a, b, rel_se, draws, max_draws, (B + 3.0 * hessian_examples) / B, extra)


def _sign_mean(B: float, G: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """E[sign(G_i + sigma_i z_i / sqrt(B))] = erf(sqrt(B/2) G_i / sigma_i) (eq 35), sign(G_i) where
    sigma_i = 0."""
    g, s = G.numpy(), sigma.numpy()
    with np.errstate(over="ignore", divide="ignore"):
        h = math.sqrt(B / 2.0) * np.divide(g, s, out=np.zeros_like(g), where=s > 0)
    return torch.from_numpy(np.where(s > 0, special.erf(h), np.sign(g)))


_JACKKNIFE_GROUPS = 8  # groups of statistics rows left out in turn (gaussian's statistics noise)
_JACKKNIFE_DRAWS = 64  # at most this many denominator draws re-used (common random numbers) per left-out group


def gaussian_batch_size(
    state: ProbeState,
    stats: StateStatistics,
    batch_size: int,
    *,
    rel_se: float | None = None,
    draws: int | None = None,
    max_draws: int = 1 << 14,
    seed: int = 0,
) -> CurvePoint:
    """Lemma 1 for V = sign(G + z / sqrt(B)), z ~ N(0, empirical per-example covariance): the
    numerator in closed form (eq 35), E[V'HV] by Monte Carlo with one HVP per draw on a fresh
    Hessian sample disjoint from the statistics' rows (so no row is weighed with its own Hessian).
    Sign updates only.

    The standard error adds to the Monte Carlo error of the draws the sampling noise of the
    statistics themselves: a delete-a-group jackknife over ``_JACKKNIFE_GROUPS`` groups of rows, each
    refit on the first ``_JACKKNIFE_DRAWS`` draws with the same random numbers, the Monte Carlo
    part of the group differences subtracted (floored at 0). Cost: that many more HVPs per B.
    """
    rel_se = check_plan(rel_se, draws, max_draws)
    B = check_batch_size(batch_size, None)
    G = state.gradient
    C = stats.centred
    rows = C.shape[0]

    def randoms(gen: torch.Generator, k: int):
        w = torch.randn(k, rows, generator=gen, dtype=C.dtype)
        return w, *stats.hessian_sample(gen, k)

    def forms(Cm: torch.Tensor, w: torch.Tensor, hx, hy) -> np.ndarray:
        V = torch.sign(G + (w @ Cm).to(torch.float64) / math.sqrt(B * (Cm.shape[0] - 1))).to(C.dtype)
        return state.quad_forms(V, hx, hy)

    def b_values(gen: torch.Generator, k: int) -> np.ndarray:
        w, hx, hy = randoms(gen, k)
        return forms(C, w, hx, hy)

    offset = 1 << 33
    b = DrawStream(b_values, seed, B, offset, BLOCK)
    num = float(G @ _sign_mean(B, G, stats.sigma))
    with EvalMode(state.model):
        point = _estimate(num, b, rel_se, draws, max_draws, 0.0)
        rel_var = _jackknife_rel_var(G, C, B, num, b, randoms, forms, seed, offset)
    lr_se = math.sqrt(point.lr_se**2 + rel_var * point.lr**2)
    dl_se = math.sqrt(point.loss_improvement_se**2 + rel_var * point.loss_improvement**2)
    return dataclasses.replace(point, lr_se=lr_se, loss_improvement_se=dl_se)


def _jackknife_rel_var(G, C, B, num, b: DrawStream, randoms, forms, seed: int, offset: int) -> float:
    """Relative variance of the gaussian lr (and dL) from the statistics' sampling noise: a
    delete-a-group jackknife with common random numbers (``gaussian_batch_size``)."""
    K, rows = _JACKKNIFE_GROUPS, C.shape[0]
    if rows < 2 * K:
        return 0.0
    J = round_draws(min(b.values.size, _JACKKNIFE_DRAWS), b.block)
    base = b.take(J)
    blocks = [randoms(draw_generator(seed, B, offset + j), b.block) for j in range(J // b.block)]
    w = torch.cat([t[0] for t in blocks])
    hx, hy = torch.cat([t[1] for t in blocks]), torch.cat([t[2] for t in blocks])
    group = torch.arange(rows) % K
    f, noise = [], []
    for g in range(K):
        keep = group != g
        Cg = C[keep] - C[keep].mean(0, dtype=torch.float64).to(C.dtype)
        sigma = torch.sqrt((Cg * Cg).sum(0, dtype=torch.float64) / (Cg.shape[0] - 1))
        bg = forms(Cg, w[:, keep], hx, hy)
        f.append(math.log(float(G @ _sign_mean(B, G, sigma)) / num) - math.log(bg.mean() / base.mean()))
        noise.append(float(np.var(bg / bg.mean() - base / base.mean(), ddof=1)) / J)  # MC part of f[g]
    fa = np.array(f)
    return max(0.0, (K - 1) / K * (float(((fa - fa.mean()) ** 2).sum()) - (K - 1) / K * sum(noise)))


def independent_curve(state: ProbeState, stats: StateStatistics, batch_sizes: Sequence[int]) -> list[CurvePoint]:
    """Eq 9 from the measured G, sigma and H: lr = G'E / (sum_i (1 - E_i^2) H_ii + E'HE), E from
    eq 35, diag(H) by Hutchinson and E'HE by one HVP per batch size (no error bars)."""
    G = state.gradient
    diag = torch.from_numpy(np.asarray(stats.hessian_diag, dtype=np.float64))
    live = stats.sigma > 0  # V_i is constant where sigma_i = 0: no variance term
    x, y = stats.hessian_inputs
    out = []
    with EvalMode(state.model):
        for b in batch_sizes:
            E = _sign_mean(check_batch_size(b, None), G, stats.sigma)
            num = float(G @ E)
            den = float(((1 - E * E) * live * diag).sum()) + float(state.quad_forms(E[None], x, y, shared=True)[0])
            out.append(CurvePoint(int(b), num / den, math.nan, 0.5 * num * num / den, math.nan, num, den, 0, 0, True))
    return out


def check_batch_size(b: float, n: int | None) -> int:
    """``b`` as an int, checked: a whole number >= 1, at most ``n`` (the data set's size) if given."""
    if isinstance(b, bool) or not float(b).is_integer() or b < 1:
        raise ValueError(f"batch sizes must be integers >= 1, got {b}")
    if n is not None and b > n:
        raise ValueError(f"batch size {int(b)} is larger than the data set ({n} examples)")
    return int(b)


def peak_batch_size(
    batch_sizes: ArrayLike,
    lr: ArrayLike,
    lr_se: ArrayLike | None = None,
    *,
    draws: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float, bool]:
    """The batch size of the largest lr on the grid, refined by a parabola in (log B, log lr)
    through it and its neighbours, and a 68% interval from a parametric bootstrap (each lr
    redrawn from N(lr, se^2), independently: the estimates use independent draws).

    Returns (peak, low, high, interior): ``interior`` False when the largest lr sits at an end of
    the grid (then peak is that end and the interval is open on that side: low or high is nan).
    """
    B = np.asarray(batch_sizes, dtype=float)
    y = np.asarray(lr, dtype=float)
    order = np.argsort(B)
    B, y = B[order], y[order]
    ok = np.isfinite(y) & (y > 0)
    if ok.sum() < 1:
        return math.nan, math.nan, math.nan, False
    B, y = B[ok], y[ok]
    peak, interior = _refined_peak(B, y)
    if lr_se is None:
        return peak, math.nan, math.nan, interior
    se = np.asarray(lr_se, dtype=float)[order][ok]
    se = np.where(np.isfinite(se), se, 0.0)
    gen = np.random.default_rng(seed)
    noisy = np.maximum(y + se * gen.standard_normal((draws, y.size)), 1e-300)
    boot = np.array([_refined_peak(B, row)[0] for row in noisy])
    lo, hi = np.quantile(np.log(boot), [0.16, 0.84])
    low, high = float(np.exp(lo)), float(np.exp(hi))
    if not interior:
        if peak == B[0]:
            low = math.nan
        else:
            high = math.nan
    return peak, low, high, interior


def _refined_peak(B: np.ndarray, y: np.ndarray) -> tuple[float, bool]:
    k = int(np.argmax(y))
    if k == 0 or k == B.size - 1:
        return float(B[k]), False
    xs, ys = np.log(B[k - 1 : k + 2]), np.log(y[k - 1 : k + 2])
    c2, c1, _ = np.polyfit(xs, ys, 2)
    x = -c1 / (2 * c2) if c2 < 0 else xs[1]
    return float(np.exp(np.clip(x, xs[0], xs[2]))), True
