"""Plain vectorised NumPy version of ``surgesim.kernels.dynamics``: the independent check of the
kernels in tests, and the NumPy baseline in ``sims.bench``.

All T trajectories advance together, one step at a time, as (T, d) arrays; the Hessian products
are the operators' own ``matvec`` (``surgesim.hessian``). With ``normals=None`` the noise is
regenerated from the same counter-based streams as the kernel (``surgesim.rng.normals``: step s of
trajectory t uses Box-Muller pairs s * ceil(d / 2) onwards of stream keys[t]; the kernel's own
Box-Muller agrees with it to 1e-14), so the trajectories agree with the kernel's step by step;
with a ``numpy.random.Generator`` they are the same process on NumPy's own (faster) normals, for
timing.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..hessian import Hessian
from ..kernels.dynamics import _W_TAG, Optimizer, StepRule
from ..kernels.step_rules import _PRIOR
from ..rng import derive_key
from ..rng import normals as counter_normals
from ..theory import max_loss_improvement, noise_batch_size, optimal_lr, sgd_optimal_lr

__all__ = ["run_trajectories", "run_rule_trajectories"]


def _step_normals(keys: np.ndarray, d: int, step: int, normals) -> np.ndarray:
    if normals is not None:
        return normals.standard_normal((keys.size, d))
    half = (d + 1) // 2
    return np.stack([counter_normals(int(k), 2 * half, step * half)[:d] for k in keys])


def _direction(optimizer: Optimizer, g: np.ndarray, m: np.ndarray, v: np.ndarray, t: int):
    """(u, m, v): the update direction of step t (1, 2, ...) at batch-mean gradient g and the new
    moments (``surgesim.kernels.optimizers._update``: one branch per optimizer)."""
    b1, b2, eps = optimizer.beta1, optimizer.beta2, optimizer.eps
    if optimizer.name == "sign":
        return np.sign(g), m, v
    if optimizer.name == "sgd" and b1 == 0:
        return g, m, v
    if optimizer.name == "sgd":  # momentum: Adam's bias-corrected first moment
        m = b1 * m + (1.0 - b1) * g
        return m / (1.0 - b1**t), m, v
    if optimizer.name == "adam":
        m = b1 * m + (1.0 - b1) * g
        v = b2 * v + (1.0 - b2) * g * g
        return (m / (1.0 - b1**t)) / (np.sqrt(v / (1.0 - b2**t)) + eps), m, v
    u = np.sign(b1 * m + (1.0 - b1) * g)  # lion
    return u, b2 * m + (1.0 - b2) * g, v


def run_trajectories(
    H: Hessian,
    sigma: np.ndarray,
    delta0: np.ndarray,
    keys: np.ndarray,
    lr,
    batch_size,
    optimizer: Optimizer,
    n_steps: int,
    normals: np.random.Generator | None = None,
) -> dict[str, np.ndarray]:
    """Run T = len(keys) trajectories for ``n_steps`` steps from theta - theta* = delta0.

    Returns a dict with the final ``delta``, ``m``, ``v`` (T, d) and ``trace`` (T, n_steps + 1),
    the loss 1/2 delta'H delta after 0 .. n_steps steps.
    """
    keys = np.asarray(keys, dtype=np.uint64).ravel()
    T, d = keys.size, np.asarray(delta0).size
    lr = np.broadcast_to(np.asarray(lr, dtype=np.float64), (T,))[:, None]
    noise_scale = (
        np.asarray(sigma, dtype=np.float64)[None, :]
        / np.sqrt(np.broadcast_to(np.asarray(batch_size, dtype=np.float64), (T,)))[:, None]
    )
    delta = np.tile(np.asarray(delta0, dtype=np.float64), (T, 1))
    m = np.zeros((T, d))
    v = np.zeros((T, d))
    trace = np.full((T, n_steps + 1), np.nan)
    G = H.matvec(delta)  # mean gradient H delta of each row
    trace[:, 0] = 0.5 * np.einsum("ti,ti->t", delta, G)
    with np.errstate(over="ignore", invalid="ignore"):
        for s in range(n_steps):
            g = G + noise_scale * _step_normals(keys, d, s, normals)  # batch-mean gradient
            t = s + 1
            u, m, v = _direction(optimizer, g, m, v, t)
            delta -= lr * u
            G = H.matvec(delta)
            trace[:, t] = 0.5 * np.einsum("ti,ti->t", delta, G)
    return {"delta": delta, "m": m, "v": v, "trace": trace}


def _rule_batch(rule: StepRule, s: int, b: float, bt: float, off: float, trace_h: float, hdiag, sig_hat, avg, weight):
    """(B_s, weight) by ``rule.batch`` (``surgesim.kernels.step_rules._choose_batch``); the oracle
    ``noise`` rule also advances avg["off"] and the weight 1 - beta^n."""
    beta = rule.beta
    if rule.batch == "constant":
        return b, weight
    if rule.batch == "noise":
        weight = 1 - beta * (1 - weight)
        avg["off"] = beta * avg["off"] + (1 - beta) * off
        o = avg["off"] / weight
        x = b * np.pi * trace_h / (2 * o) if o > 0 else bt
    elif rule.batch == "geometric":
        x = b * rule.batch_factor ** (s // rule.interval)
    elif s < rule.warmup:
        x = rule.batch_start
    elif rule.batch == "noise_estimated":
        o = avg["off"] / weight
        x = b * np.pi * trace_h / (2 * o) if o > 0 else bt
    else:
        den = avg["ghg"] / weight
        x = b * float(hdiag @ sig_hat**2) / den if den > 0 else bt
    return float(np.floor(min(max(x, rule.batch_min), rule.batch_max) + 0.5)), weight


class _Estimates:
    """The running estimates of the estimated rules (``surgesim.kernels.step_rules._update_estimates``)."""

    def __init__(self, d: int) -> None:
        self.var_sum, self.sig_hat, self.g_avg, self.q = np.zeros(d), np.zeros(d), np.zeros(d), 0.0

    def update(self, H: Hessian, sigma, hdiag, w, g, bt: float, s: int, beta: float, avg: dict, weight: float):
        """Step s's update from the half-batch normals w and the batch mean g; returns the new weight."""
        self.var_sum += (sigma * w) ** 2
        n = s + 1
        sig_hat = self.sig_hat = np.sqrt((self.var_sum + _PRIOR * self.var_sum.mean() / n) / (n + _PRIOR))
        u = g / sig_hat
        weight = 1 - beta * (1 - weight)
        self.q = beta**2 * self.q + (1 - beta) ** 2 / bt
        self.g_avg = beta * self.g_avg + (1 - beta) * g
        m_hat = self.g_avg / weight  # debiased; its noise variance is sig_hat^2 q / weight^2
        signal_est = float(np.sum((m_hat**2 - sig_hat**2 * self.q / weight**2) / sig_hat))
        est = {
            "off": H.quad_off_diagonal(u),
            "gg": float(g @ g - np.sum(sig_hat**2) / bt),
            "ghg": float(H.quad_rows(g) - hdiag @ sig_hat**2 / bt),
        }
        for name, value in est.items():
            avg[name] = beta * avg[name] + (1 - beta) * value
        avg["s"] = signal_est * weight  # not a running average of per-step estimates
        return weight


class _Problem(NamedTuple):
    """The problem's arrays and constants that the rules use."""

    H: Hessian
    sigma: np.ndarray
    hdiag: np.ndarray
    trace_h: float


def _rule_lr(rule: StepRule, optimizer: Optimizer, s: int, lr: float, bt: float, mu, problem: _Problem, sig_hat,
             avg: dict, weight: float) -> float:  # fmt: skip
    """The learning rate of step s by ``rule.lr`` (``surgesim.kernels.step_rules._choose_lr``)."""
    H, sigma, hdiag, trace_h = problem
    if rule.lr == "constant":
        step_lr = lr
    elif rule.lr == "geometric":
        step_lr = lr * rule.lr_factor ** (s // rule.interval)
    elif rule.lr == "optimal":
        if optimizer.name == "sgd":
            step_lr = lr * float(sgd_optimal_lr(bt, mu, sigma**2, H))
        else:
            step_lr = lr * float(optimal_lr(bt, mu, sigma, H))
    elif optimizer.name == "sgd":
        a = {k: x / weight for k, x in avg.items()}
        step_lr = lr * a["gg"] / (a["ghg"] + float(hdiag @ sig_hat**2) / bt)
    else:  # eq 13 from the estimates
        a = {k: x / weight for k, x in avg.items()}
        step_lr = lr * np.sqrt(2 * bt / np.pi) * a["s"] / (trace_h + 2 * bt / np.pi * max(a["off"], 0.0))
    return step_lr if step_lr > 0 else 0.0


def _path_step(optimizer: Optimizer, H: Hessian, mu, sigma, dl: float, off: float, signal: float, trace_h: float,
               ths: float) -> tuple[float, float]:  # fmt: skip
    """One step's ds = dL / dL_max and B_noise ds (eq 44-45)."""
    if optimizer.name == "sgd":  # McCandlish: dL_max = |G|^4 / (2 G'HG), B_noise = tr(H Sigma) / G'HG
        ghg = float(H.quad_rows(mu))
        step_ds = dl / (float(mu @ mu) ** 2 / (2 * ghg))
        return step_ds, ths / ghg * step_ds
    if off > 0:  # ds = dL / dL_max with eq 19, times eq 14
        step_ds = dl / max_loss_improvement(mu, sigma, H)
        return step_ds, noise_batch_size(mu, sigma, H) * step_ds
    return 2 * off * dl / signal**2, np.pi * trace_h * dl / signal**2  # eq 19 is inf: linear in off


def run_rule_trajectories(
    H: Hessian,
    sigma: np.ndarray,
    delta0: np.ndarray,
    keys: np.ndarray,
    lr,
    batch_size,
    optimizer: Optimizer,
    n_steps: int,
    rule: StepRule,
) -> dict[str, np.ndarray]:
    """``surgesim.kernels.dynamics.run_trajectories`` with a per-step ``rule`` and ``path=True``,
    one trajectory and one step at a time, from the closed forms of ``surgesim.theory`` (eq 9,
    eq 1 and eq 14 at each state) and the counter-based streams (``surgesim.rng.normals``).

    Returns ``delta`` (T, d) and, per step, ``trace`` (T, n_steps + 1), ``batch`` and ``lr``
    (T, n_steps), and the cumulative ``examples``, ``path_ds`` and ``path_bds`` (T, n_steps + 1).
    """
    keys = np.asarray(keys, dtype=np.uint64).ravel()
    T, d = keys.size, np.asarray(delta0).size
    sigma = np.asarray(sigma, dtype=np.float64)
    lrs = np.broadcast_to(np.asarray(lr, dtype=np.float64), (T,))
    bs = np.broadcast_to(np.asarray(batch_size, dtype=np.float64), (T,))
    hdiag, trace_h = H.diag(), H.trace()
    ths = float(hdiag @ sigma**2)
    problem = _Problem(H, sigma, hdiag, trace_h)
    out = {name: np.full((T, n_steps + 1), np.nan) for name in ("trace", "examples", "path_ds", "path_bds")}
    out |= {"batch": np.full((T, n_steps), np.nan), "lr": np.full((T, n_steps), np.nan), "delta": np.zeros((T, d))}
    half = (d + 1) // 2
    for t in range(T):
        delta = np.array(delta0, dtype=np.float64)
        m, v = np.zeros(d), np.zeros(d)
        est, avg = _Estimates(d), {"off": 0.0, "s": 0.0, "gg": 0.0, "ghg": 0.0}
        weight = 0.0  # 1 - beta^n
        bt, ex, ds, bds = rule.batch_start, 0.0, 0.0, 0.0
        mu = H.matvec(delta)
        loss = 0.5 * delta @ mu
        out["trace"][t, 0], out["examples"][t, 0], out["path_ds"][t, 0], out["path_bds"][t, 0] = loss, 0, 0, 0
        for s in range(n_steps):
            r = mu / sigma
            off = H.quad_off_diagonal(r)
            signal = float(np.sum(mu * r))
            bt, weight = _rule_batch(rule, s, bs[t], bt, off, trace_h, hdiag, est.sig_hat, avg, weight)
            z = counter_normals(int(keys[t]), 2 * half, s * half)[:d]
            g = mu + sigma / np.sqrt(bt) * z
            if rule.estimates:
                w = counter_normals(int(derive_key(keys[t], np.uint64(_W_TAG))), 2 * half, s * half)[:d]
                weight = est.update(H, sigma, hdiag, w, g, bt, s, rule.beta, avg, weight)
            step_lr = _rule_lr(rule, optimizer, s, lrs[t], bt, mu, problem, est.sig_hat, avg, weight)
            out["batch"][t, s], out["lr"][t, s] = bt, step_lr
            k = s + 1
            u_step, m, v = _direction(optimizer, g, m, v, k)
            delta = delta - step_lr * u_step
            ex += bt
            new_mu = H.matvec(delta)
            new = 0.5 * delta @ new_mu
            step_ds, step_bds = _path_step(optimizer, H, mu, sigma, loss - new, off, signal, trace_h, ths)
            ds, bds = ds + step_ds, bds + step_bds
            mu, loss = new_mu, new
            out["trace"][t, k], out["examples"][t, k], out["path_ds"][t, k], out["path_bds"][t, k] = loss, ex, ds, bds
        out["delta"][t] = delta
    return out
