"""The batch-size scales at a probe state from per-example gradient statistics: McCandlish et
al. 2018's B_simple = tr(Sigma) / |G|^2 and B_crit = tr(H Sigma) / G'HG
(https://arxiv.org/abs/1812.06162, eq 2.7-2.8), eq 14's B_noise (``gradstats.noise_scale``), and
the per-example sigma and centred gradients that the ``gaussian`` and ``independent`` estimators
(``probe_estimators``) use. The statistics are only ever weighed with Hessians of examples
disjoint from them, so no term holds an example's own Hessian (that biased B_crit up).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..estimate import delta_method
from .gradstats import EvalMode, GradientMoments, noise_scale
from .probe_state import ProbeState, distinct_rows, draw_generator

__all__ = ["StateStatistics", "state_statistics", "statistics_sample"]


@dataclass
class StateStatistics:
    """Per-example gradient statistics of a sample at the state (for ``gaussian`` and
    ``independent``) and the batch-size scales computed from them.

    Every Hessian the statistics are weighed with is taken on examples disjoint from the statistics
    sample (``hessian_sample``), so c_j'H c_j has no term of example j's own Hessian."""

    sigma: torch.Tensor  # per-example standard deviation (ddof 1), float64
    centred: torch.Tensor  # (n, d), the parameters' dtype: per-example gradients minus their mean
    hessian_inputs: tuple  # (x, y): one Hessian sample (Hutchinson's diag(H) and eq 9), disjoint
    hessian_sample: Callable[[torch.Generator, int], tuple]  # (gen, k) -> k fresh disjoint samples (k, h, ...)
    hessian_trace: float
    hessian_trace_se: float
    hessian_diag: np.ndarray
    noise_batch_size_eq14: float
    noise_batch_size_eq14_se: float
    b_simple: float
    b_simple_se: float
    b_crit: float
    b_crit_se: float
    validity_bound: float


def _ratio_se(num: np.ndarray, den: float) -> tuple[float, float]:
    """mean(num) / den with the standard error of the mean of ``num``."""
    return float(num.mean() / den), float(num.std(ddof=1) / math.sqrt(num.size) / den)


_STATS_BLOCK = 0  # statistics' random-number blocks use batch size 0 in stream_key (a probe's B >= 1)


def statistics_sample(
    state: ProbeState, examples: int, hessian_examples: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, Callable[[torch.Generator, int], tuple]]:
    """(x, y) of ``examples`` distinct examples, and ``sample(gen, k)``: k Hessian samples of
    ``hessian_examples`` distinct examples each, drawn from the rest of the data set (disjoint from
    the statistics sample; fresh i.i.d. examples for an endless stream)."""
    gen = draw_generator(seed, _STATS_BLOCK, 0)
    data = state.data
    if data.n is None:
        stream = data
        x, y = stream.draw(gen, examples)

        def fresh_sample(g: torch.Generator, k: int) -> tuple:
            hx, hy = stream.draw(g, k * hessian_examples)
            return hx.reshape(k, hessian_examples, *hx.shape[1:]), hy.reshape(k, hessian_examples, *hy.shape[1:])

        return x, y, fresh_sample
    examples_set = data
    if examples + hessian_examples > data.n:
        raise ValueError(
            f"examples + hessian_examples = {examples + hessian_examples} is larger than the data set "
            f"({state.n}): the Hessian samples must be disjoint from the statistics sample"
        )
    perm = torch.randperm(data.n, generator=gen)
    x, y = examples_set.take(perm[:examples])
    pool = perm[examples:]

    def sample(g: torch.Generator, k: int) -> tuple:
        hx, hy = examples_set.take(pool[distinct_rows(g, pool.numel(), k, hessian_examples).reshape(-1)])
        return hx.reshape(k, hessian_examples, *hx.shape[1:]), hy.reshape(k, hessian_examples, *hy.shape[1:])

    return x, y, sample


def state_statistics(
    state: ProbeState,
    examples: int = 256,
    hessian_examples: int = 32,
    probes: int = 8,
    crit_examples: int = 32,
    seed: int = 0,
    max_bytes: float = 2e9,
) -> StateStatistics:
    """Per-example gradients of a uniform sample of ``examples`` distinct examples: sigma and the
    centred gradient matrix C (rows c_j); Hessians on samples of ``hessian_examples`` other
    examples (disjoint from that sample: examples drawn from the rest of the data set). On one
    such sample: Hutchinson's tr(H) and diag(H) with ``probes`` probes and eq 14
    (``gradstats.noise_scale``, split-half debiased). McCandlish's scales
    (https://arxiv.org/abs/1812.06162, eq 2.7-2.8):

        B_simple = tr(Sigma) / |G|^2,   B_crit = tr(H Sigma) / G'HG,

    tr(Sigma) as n/(n-1) times the mean of |c_j|^2 over all rows (s.e. with the finite-population
    correction); B_crit = mean_j(c_j'H_j c_j) n/(n-1) / mean_j(G'H_j G) over the first
    ``crit_examples`` rows, H_j a fresh disjoint Hessian sample per j (the same one for both
    terms), by the delta method with their covariance: i.i.d. terms, so the s.e. includes the
    sampling noise of the c_j and of the Hessian samples. A term c_j'H c_j with H over a sample
    that holds example j (the former estimator) is biased up by example j's own Hessian.
    Draws come from ``draw_generator(seed, 0, block)``: the sample is a function of ``seed``.
    """
    if examples < 4:
        raise ValueError(f"examples must be >= 4, got {examples}")
    if hessian_examples < 1:
        raise ValueError(f"hessian_examples must be >= 1, got {hessian_examples}")
    if crit_examples < 2:
        raise ValueError(f"crit_examples must be >= 2, got {crit_examples}")
    if examples * state.dim * 4 > max_bytes:
        raise ValueError(
            f"{examples} per-example gradients of {state.dim:,} parameters need "
            f"{examples * state.dim * 4 / 1e9:.1f} GB; use fewer examples (at most "
            f"{int(max_bytes // (4 * state.dim))})"
        )
    x, y, hessian_sample = statistics_sample(state, examples, hessian_examples, seed)
    hx, hy = (t[0] for t in hessian_sample(draw_generator(seed, _STATS_BLOCK, 1), 1))
    with EvalMode(state.model):
        centred = state.mean_gradients(x.unsqueeze(1), y.unsqueeze(1))  # n minibatches of one
        f64 = torch.float64
        mean = centred.mean(0, dtype=f64)
        moments = GradientMoments(mean, torch.zeros(0), examples, centred[0::2].mean(0, dtype=f64),
                                  centred[1::2].mean(0, dtype=f64))  # fmt: skip
        centred -= mean.to(centred.dtype)
        sigma = torch.sqrt((centred * centred).sum(0, dtype=f64) / (examples - 1))
        moments = dataclasses.replace(moments, std=sigma)
        ns = noise_scale(state.model, state.loss_fn, hx, hy, probes=probes, seed=seed, moments=moments)
        G = state.gradient
        sq = (centred * centred).sum(1, dtype=f64).numpy() * examples / (examples - 1)
        fpc = 1.0 - examples / state.n if state.n else 1.0
        b_simple, b_simple_se = _ratio_se(sq, float(G @ G))
        b_simple_se *= math.sqrt(fpc)
        k = min(crit_examples, examples)
        cx, cy = hessian_sample(draw_generator(seed, _STATS_BLOCK, 2), k)
        V = torch.cat([centred[:k], G[None].expand(k, -1).to(centred.dtype)])
        forms = state.quad_forms(V, torch.cat([cx, cx]), torch.cat([cy, cy]))
        chc, ghg = forms[:k] * examples / (examples - 1), forms[k:]
        st = {"n": k, "m": k, "ma": float(chc.mean()), "mb": float(ghg.mean()), "va": float(np.var(chc, ddof=1)),
              "vb": float(np.var(ghg, ddof=1)), "cab": float(np.cov(chc, ghg)[0, 1])}  # fmt: skip
        b_crit, b_crit_se, _, _ = delta_method(st)
    return StateStatistics(
        sigma=sigma, centred=centred, hessian_inputs=(hx, hy), hessian_sample=hessian_sample,
        hessian_trace=ns.trace, hessian_trace_se=ns.trace_se,
        hessian_diag=ns.hessian_diag, noise_batch_size_eq14=ns.noise_batch_size,
        noise_batch_size_eq14_se=ns.noise_batch_size_se, b_simple=b_simple, b_simple_se=b_simple_se,
        b_crit=b_crit, b_crit_se=b_crit_se, validity_bound=ns.validity_bound,
    )  # fmt: skip
