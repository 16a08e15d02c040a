"""The per-step rules of the dynamics kernels (``surgesim.kernels.dynamics``): ``StepRule``, its
codes, and the compiled pieces that set a step's batch size and learning rate (the exact one-step
optima, and the running estimates made from the minibatch gradients)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .._jit import jit, jit_inline
from .hessian_products import _off_diagonal, _quad
from .optimizers import SGD

__all__ = ["LR_RULES", "BATCH_RULES", "StepRule"]

LR_CONSTANT, LR_OPTIMAL, LR_ESTIMATED, LR_GEOMETRIC = 0, 1, 2, 3
LR_RULES = {"constant": LR_CONSTANT, "optimal": LR_OPTIMAL, "estimated": LR_ESTIMATED, "geometric": LR_GEOMETRIC}
BATCH_CONSTANT, BATCH_NOISE, BATCH_NOISE_ESTIMATED, BATCH_CRIT_ESTIMATED, BATCH_GEOMETRIC = 0, 1, 2, 3, 4
BATCH_RULES = {
    "constant": BATCH_CONSTANT, "noise": BATCH_NOISE, "noise_estimated": BATCH_NOISE_ESTIMATED,
    "critical_estimated": BATCH_CRIT_ESTIMATED, "geometric": BATCH_GEOMETRIC,
}  # fmt: skip


@jit
def _sign_optimal_lr(kind, h, ut, hd, hdiag, B, mu, sig, e):
    """Eq 9 at mean gradient mu, noise scale sig and batch size B: sum E mu / (sum (1 - E^2) H_ii
    + E'HE) with E_i = erf(sqrt(B/2) mu_i / sig_i) (eq 35); e receives E."""
    x = np.sqrt(0.5 * B)
    num = 0.0
    den = 0.0
    for i in range(mu.shape[0]):
        E = math.erf(x * mu[i] / sig[i])
        e[i] = E
        num += E * mu[i]
        den += (1.0 - E * E) * hdiag[i]
    return num / (den + _quad(kind, h, ut, hd, e))


@jit
def _sgd_optimal_lr(kind, h, ut, hd, hdiag, B, G, sig):
    """McCandlish et al.'s eq 1 as the exact one-step optimum of SGD on a quadratic:
    G'G / (G'HG + tr(H Sigma) / B), Sigma = diag(sig^2)."""
    gg = 0.0
    ths = 0.0
    for i in range(G.shape[0]):
        gg += G[i] * G[i]
        ths += hdiag[i] * sig[i] * sig[i]
    return gg / (_quad(kind, h, ut, hd, G) + ths / B)


@jit_inline
def _batch(x, b_min, b_max):
    """x clipped to [b_min, b_max] and rounded to an integer batch size."""
    return np.floor(min(max(x, b_min), b_max) + 0.5)


_PRIOR = 4.0  # weight, in steps, of the coordinates' mean variance in each coordinate's estimate


@jit
def _estimate(kind, h, ut, hd, hdiag, s, bt, c, sigma, gm, z, w, es, sgh, u, t):  # noqa: PLR0913
    """Update the per-coordinate variance estimates from step s's two half batches, and set
    u = g / sigma_hat for the batch-mean gradient g = gm + c sigma z.

    The half-batch means are g +- sigma w / sqrt(B) (w ~ N(0, 1) independent of z), so their
    squared difference times B / 4 is sigma^2 w^2, one degree of freedom per step and no extra
    example. es[t] holds the running sums; each estimate is shrunk towards the coordinates' mean
    with the weight of ``_PRIOR`` steps, so that no sigma_hat is near 0 after a few steps.
    """
    d = gm.shape[0]
    mean = 0.0
    for i in range(d):
        es[t, i] += (sigma[i] * w[i]) ** 2
        mean += es[t, i]
    mean /= d
    n = s + 1.0
    for i in range(d):
        sgh[i] = np.sqrt((es[t, i] + _PRIOR * mean / n) / (n + _PRIOR))
        u[i] = (gm[i] + c * sigma[i] * z[i]) / sgh[i]


@jit
def _signal(em, gm, c, sigma, z, sgh, beta, debias, var):
    """Update em, the running average (factor beta) of the batch-mean gradient g = gm + c sigma z,
    and return sum_i (m_i^2 - sigma_hat_i^2 var) / sigma_hat_i with m = debias * em: an estimate of
    S = sum mu_i^2 / sigma_i, m^2 made unbiased by its noise variance sigma_hat^2 var (var: the
    sum of the average's squared weights over B_s, debiased)."""
    s = 0.0
    for i in range(gm.shape[0]):
        em[i] = beta * em[i] + (1.0 - beta) * (gm[i] + c * sigma[i] * z[i])
        m = em[i] * debias
        s += (m * m - sgh[i] * sgh[i] * var) / sgh[i]
    return s


@jit
def _grad_products(kind, h, ut, hd, hdiag, bt, gm, c, sigma, z, sgh, g):  # noqa: PLR0913
    """Unbiased estimates of G'G and G'HG from one batch mean g (overwritten into ``g``):
    g'g - tr(Sigma_hat) / B and g'Hg - tr(H Sigma_hat) / B."""
    gg = 0.0
    tr = 0.0
    trh = 0.0
    for i in range(gm.shape[0]):
        g[i] = gm[i] + c * sigma[i] * z[i]
        gg += g[i] * g[i]
        tr += sgh[i] * sgh[i]
        trh += hdiag[i] * sgh[i] * sgh[i]
    return gg - tr / bt, _quad(kind, h, ut, hd, g) - trh / bt


@jit_inline
def _state_scalars(kind, ut, hd, sigma, gm, e, needed):
    """(off, S) at the state: eq 14's sum and S = sum mu^2 / sigma, at r = mu / sigma (left in e);
    (0, 0) unless ``needed``."""
    off = 0.0
    sig_s = 0.0
    if needed:
        for i in range(gm.shape[0]):
            e[i] = gm[i] / sigma[i]
            sig_s += gm[i] * e[i]
        off = _off_diagonal(kind, ut, hd, e)
    return off, sig_s


@jit_inline
def _choose_batch(  # noqa: PLR0913
    batch_rule, b, inv_sqrt_b, s, k_geo, bt, off, pwa, a_off, a_ghg, beta, trace_h, hdiag, sgh, batch_factor, warmup,
    b_start, b_min, b_max,
):  # fmt: skip
    """(B_s, B_s^-1/2, pwa, a_off) of step s by ``batch_rule`` (b: the trajectory's batch size or
    multiplier; bt: the previous B_s); the oracle rule ``noise`` advances the average of off."""
    if batch_rule == BATCH_CONSTANT:
        bt = b
        c = inv_sqrt_b
    else:
        if batch_rule == BATCH_NOISE:
            # eq 14 with off averaged over the recent states (the state's own off-diagonal
            # sum fluctuates from step to step, often through 0)
            pwa *= beta
            a_off = beta * a_off + (1.0 - beta) * off
            o = a_off / (1.0 - pwa)
            x = b * np.pi * trace_h / (2.0 * o) if o > 0 else bt
        elif batch_rule == BATCH_GEOMETRIC:
            x = b * batch_factor**k_geo
        elif s < warmup:
            x = b_start
        elif batch_rule == BATCH_NOISE_ESTIMATED:
            o = a_off / (1.0 - pwa)
            x = b * np.pi * trace_h / (2.0 * o) if o > 0 else bt
        else:  # BATCH_CRIT_ESTIMATED: tr(H Sigma) / G'HG (McCandlish et al. 2018)
            num = 0.0
            for i in range(hdiag.shape[0]):
                num += hdiag[i] * sgh[i] * sgh[i]
            den = a_ghg / (1.0 - pwa)
            x = b * num / den if den > 0 else bt
        bt = _batch(x, b_min, b_max)
        c = 1.0 / np.sqrt(bt)
    return bt, c, pwa, a_off


@jit_inline
def _update_estimates(  # noqa: PLR0913
    kind, h, ut, hd, hdiag, s, bt, c, sigma, gm, z, w, es, sgh, e, em, t, beta, pwa, q, a_off, a_gg, a_ghg,
):  # fmt: skip
    """Step s's update of the running estimates from its half-batch normals w and batch-mean
    gradient gm + c sigma z; returns the new (pwa, q, a_s, a_off, a_gg, a_ghg)."""
    _estimate(kind, h, ut, hd, hdiag, s, bt, c, sigma, gm, z, w, es, sgh, e, t)
    pwa *= beta
    q = beta * beta * q + (1.0 - beta) * (1.0 - beta) / bt
    bc = 1.0 / (1.0 - pwa)
    a_s = _signal(em, gm, c, sigma, z, sgh, beta, bc, q * bc * bc) / bc
    a_off = beta * a_off + (1.0 - beta) * _off_diagonal(kind, ut, hd, e)
    gg, ghg = _grad_products(kind, h, ut, hd, hdiag, bt, gm, c, sigma, z, sgh, e)
    a_gg = beta * a_gg + (1.0 - beta) * gg
    a_ghg = beta * a_ghg + (1.0 - beta) * ghg
    return pwa, q, a_s, a_off, a_gg, a_ghg


@jit_inline
def _choose_lr(  # noqa: PLR0913
    lr_rule, opt, lr, lr_factor, k_geo, kind, h, ut, hd, hdiag, bt, gm, sigma, e, sgh, trace_h, pwa, a_s, a_off, a_gg,
    a_ghg,
):  # fmt: skip
    """The learning rate of a step by ``lr_rule`` (lr: the trajectory's rate or multiplier); 0
    where no signal is estimated (yet)."""
    if lr_rule == LR_CONSTANT:
        step_lr = lr
    elif lr_rule == LR_GEOMETRIC:
        step_lr = lr * lr_factor**k_geo
    elif lr_rule == LR_OPTIMAL:
        if opt == SGD:
            step_lr = lr * _sgd_optimal_lr(kind, h, ut, hd, hdiag, bt, gm, sigma)
        else:
            step_lr = lr * _sign_optimal_lr(kind, h, ut, hd, hdiag, bt, gm, sigma, e)
    else:  # LR_ESTIMATED: eq 13 (sign-like) or eq 1 (sgd) from the running estimates
        bc = 1.0 / (1.0 - pwa)
        if opt == SGD:
            num = 0.0
            for i in range(gm.shape[0]):
                num += hdiag[i] * sgh[i] * sgh[i]
            step_lr = lr * a_gg * bc / (a_ghg * bc + num / bt)
        else:
            step_lr = lr * (np.sqrt(2.0 * bt / np.pi) * a_s * bc / (trace_h + 2.0 * bt / np.pi * max(a_off * bc, 0.0)))
    if not (step_lr > 0.0):  # no signal estimated (yet): no step
        step_lr = 0.0
    return step_lr


@jit_inline
def _sgd_path_terms(needed, kind, h, ut, hd, gm):
    """(G'G, G'HG) at the state before an SGD step, for its path integrals; (0, 0) unless ``needed``."""
    g2 = 0.0
    ghg = 0.0
    if needed:
        for i in range(gm.shape[0]):
            g2 += gm[i] * gm[i]
        ghg = _quad(kind, h, ut, hd, gm)
    return g2, ghg


@jit_inline
def _path_step(sgd, dl, g2, ghg, off, sig_s, ths, trace_h, ids, ibds):
    """The integrals of ds = dL / dL_max and B_noise ds (eq 44-45) after a step that lowered the
    loss by dl; returns the new (ids, ibds)."""
    if sgd:
        # McCandlish: dL_max = (G'G)^2 / (2 G'HG), B_noise = tr(H Sigma) / G'HG
        if g2 > 0:
            ids += 2.0 * ghg * dl / (g2 * g2)
            ibds += 2.0 * ths * dl / (g2 * g2)
    elif sig_s > 0:
        # eq 19: dL_max = S^2 / (2 off); eq 14: B_noise ds = pi tr(H) dL / S^2
        ids += 2.0 * off * dl / (sig_s * sig_s)
        ibds += np.pi * trace_h * dl / (sig_s * sig_s)
    return ids, ibds


@dataclass(frozen=True)
class StepRule:
    """How each step sets its batch size B_s and learning rate (``run_trajectories``).

    lr: ``constant`` (lr[t]); ``optimal``: lr[t] times the exact one-step optimum at the state
    (eq 9 at B_s for sign, adam and lion; McCandlish's eq 1 for sgd, G'G / (G'HG + tr(H Sigma) / B));
    ``estimated``: eq 13 at B_s (eq 1 for sgd) from running estimates made from the minibatch
    gradients (no access to the state; per-coordinate variances from the two half batches);
    ``geometric``: lr[t] * lr_factor^floor(s / interval).
    batch: ``constant`` (batch_size[t]); ``noise``: batch_size[t] * B_noise (eq 14) at the state,
    its off-diagonal sum averaged over the recent states;
    ``noise_estimated``: the same from the running estimates; ``critical_estimated``:
    batch_size[t] * tr(H Sigma) / G'HG from the estimates (McCandlish et al.'s B_crit);
    ``geometric``: batch_size[t] * batch_factor^floor(s / interval). Every rule but ``constant``
    clips to [batch_min, batch_max] and rounds; the estimated ones use batch_start for their
    first ``warmup`` steps; where a running average is not positive, the batch size stays as it
    was. beta: the averaging factor of the running averages over steps (the oracle's off-diagonal
    sum of eq 14; the estimated rules' S, off, G'G and G'HG).
    """

    lr: str = "constant"
    batch: str = "constant"
    interval: int = 1
    batch_factor: float = 1.0
    lr_factor: float = 1.0
    batch_min: float = 1.0
    batch_max: float = 2.0**20
    batch_start: float = 16.0
    warmup: int = 10
    beta: float = 0.9

    def __post_init__(self) -> None:
        if self.lr not in LR_RULES:
            raise ValueError(f"lr rule must be one of {sorted(LR_RULES)}, got {self.lr!r}")
        if self.batch not in BATCH_RULES:
            raise ValueError(f"batch rule must be one of {sorted(BATCH_RULES)}, got {self.batch!r}")
        if isinstance(self.interval, bool) or int(self.interval) != self.interval or self.interval < 1:
            raise ValueError(f"interval={self.interval!r} must be an integer >= 1")
        if isinstance(self.warmup, bool) or int(self.warmup) != self.warmup or self.warmup < 0:
            raise ValueError(f"warmup={self.warmup!r} must be an integer >= 0")
        for name in ("batch_factor", "lr_factor"):
            if not (0 < getattr(self, name) < np.inf):
                raise ValueError(f"{name}={getattr(self, name)!r} must be finite and > 0")
        if not (1.0 <= self.batch_min <= self.batch_max < np.inf):
            raise ValueError(f"need 1 <= batch_min <= batch_max < inf, got {self.batch_min!r}, {self.batch_max!r}")
        if not (2.0 <= self.batch_start < np.inf) and self.estimates:
            raise ValueError(f"batch_start={self.batch_start!r} must be >= 2 (two half batches)")
        if self.estimates and self.batch != "constant" and self.batch_min < 2:
            raise ValueError(f"estimated rules split each batch in two: batch_min={self.batch_min!r} must be >= 2")
        if self.estimates and self.batch == "noise":
            raise ValueError("the batch rule 'noise' (exact state) cannot be combined with the lr rule 'estimated'")
        if not (0.0 <= self.beta < 1.0):
            raise ValueError(f"beta={self.beta!r} must be in [0, 1)")

    @property
    def estimates(self) -> bool:
        """Whether the rule keeps running estimates of mu and sigma."""
        return self.lr == "estimated" or self.batch in ("noise_estimated", "critical_estimated")

    @property
    def is_constant(self) -> bool:
        return self.lr == "constant" and self.batch == "constant"
