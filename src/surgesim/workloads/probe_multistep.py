"""The multi-step probe (issue 21 item 3): the optimal learning rate of T real Adam steps from a
probe state at batch size B, by a 1-d search in log lr with common random numbers across
learning rates and bootstrap errors (``multistep_batch_size``). T = 1 is Lemma 1's optimum (eq 6)
of one Adam step, which ``probe_estimators.probe_batch_size`` measures directly.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import grad, vmap

from .gradstats import EvalMode
from .probe_estimators import BLOCK, MIN_DRAWS, check_batch_size, check_plan, probe_batch_size, round_draws
from .probe_state import AdamState, ProbeState, draw_generator

__all__ = ["MultiStepPoint", "multistep_batch_size"]


_MULTI_OFFSET = 3 << 32  # random-number blocks of the multi-step probe (stream_key block numbers)
_EVAL_EXAMPLES = 4096  # examples of the loss evaluation: all up to this many, else a fixed sample
_BOOTSTRAP = 400


@dataclass(frozen=True)
class MultiStepPoint:
    """The optimal learning rate of ``steps`` Adam steps at batch size B (``multistep_batch_size``):
    lr maximises the mean loss decrease over ``draws`` draws; ``lr_points`` learning rates were
    tried; ``gradient_examples`` example-gradients and ``loss_examples`` example-losses spent."""

    batch_size: int
    steps: int
    lr: float
    lr_se: float
    loss_improvement: float
    loss_improvement_se: float
    draws: int
    lr_points: int
    gradient_examples: int
    loss_examples: int
    converged: bool
    hessian_draws: int = 0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _loss_evaluator(
    state: ProbeState, sample: tuple[torch.Tensor, torch.Tensor] | None = None
) -> tuple[Callable[[dict], torch.Tensor], int]:
    """(f, m): f(params batched over k draws) -> (k,) the loss L, at a cost of m example-losses
    per draw: the mean loss over the examples ``sample`` (x, y) if given, else the full-data loss:
    the population loss of the state (``state.population_loss``) if it has one, else the mean loss
    over all examples (up to ``_EVAL_EXAMPLES``; a fixed uniform sample beyond: the same for every
    draw and lr)."""
    if sample is not None:
        x, y = sample
    elif state.population_loss is not None:
        return vmap(state.population_loss), 1
    else:
        n = state.n
        m = min(n, _EVAL_EXAMPLES)
        idx = torch.arange(n) if m == n else torch.randperm(n, generator=torch.Generator().manual_seed(2))[:m]
        x, y = state.data.take(idx)
    m = x.shape[0]
    per = state.chunk * 4

    def loss(params: dict) -> torch.Tensor:  # draw by draw: a batch of shared examples each
        k = next(iter(params.values())).shape[0]
        total = torch.zeros(k, dtype=torch.float64)
        for j in range(k):
            p = {name: v[j] for name, v in params.items()}
            for s in range(0, m, per):
                total[j] += float(state.batch_loss(p, x[s : s + per], y[s : s + per])) * (min(per, m - s) / m)
        return total

    return loss, m


def multistep_batch_size(
    state: ProbeState,
    batch_size: int,
    *,
    steps: int = 1,
    warmup: int = 0,
    rel_se: float | None = None,
    draws: int | None = None,
    max_draws: int = 1 << 14,
    seed: int = 0,
    lr0: float | None = None,
    loss_sample: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> MultiStepPoint:
    """The optimal learning rate of T = ``steps`` real Adam steps from the state at batch size B
    (issue 21's multi-step probe; T = 1 is Lemma 1's optimum, eq 6, of one Adam step):

        lr*_T(B) = argmax_lr E[L(theta_0) - L(theta_T(lr))],
        theta_{t+1} = theta_t - lr m_hat_t / (sqrt(v_hat_t) + eps),

    each step's gradient that of a fresh minibatch of B distinct examples at theta_t, Adam's
    buffers evolving from the state's (``state.adam``: the checkpoint's buffers, which are the run's
    own history at this state; zeros for a fresh Adam); ``warmup`` W > 0 instead rebuilds them from
    zeros with W minibatch gradients of batch B at theta_0 (buffers as if the run had used batch B,
    no parameter moves). L is the full-data loss, or the mean loss over the fixed examples
    ``loss_sample`` (x, y) where given: the training loss as a grid of runs measures it
    (``protocol``: a fixed sample), at a fraction of the cost (``_loss_evaluator``).

    Search: the draws (the T minibatches of each) are common random numbers across learning rates;
    a grid in log lr (factor 2 to bracket the largest mean decrease, then factor 2^(1/3) around it);
    lr* by a parabola in lr through the five grid points nearest the best, its s.e. and that of
    the decrease by a bootstrap over draws. Draws grow until lr's relative s.e. <= ``rel_se``
    (default 0.1) or ``draws`` are fixed. Cost: draws x (grid points x T + W) minibatch gradients.
    """
    rel_se = check_plan(rel_se, draws, max_draws)
    B = check_batch_size(batch_size, state.n)
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps}")
    if isinstance(warmup, bool) or int(warmup) != warmup or warmup < 0:
        raise ValueError(f"warmup must be an integer >= 0, got {warmup}")
    adam = state.adam or AdamState.zeros(state.dim)
    if not 0 <= adam.beta1 < 1 or not 0 <= adam.beta2 < 1:
        raise ValueError(f"need 0 <= beta1, beta2 < 1, got {adam.beta1}, {adam.beta2}")
    T, W = int(steps), int(warmup)
    draws_of = _AdamDraws(state, adam, B, T, W, seed, loss_sample)
    values: dict[int, np.ndarray] = {}  # grid index -> (N,) decreases at lr = base * 2^(index / 3)

    def grow(n: int, idxs) -> None:
        for i in idxs:
            have = values.get(i, np.empty(0))
            if have.size < n:
                new = [draws_of.block(j, [base * 2.0 ** (i / 3)]) for j in range(have.size // BLOCK, n // BLOCK)]
                values[i] = np.concatenate([have, *[b[:, 0] for b in new]])

    with EvalMode(state.model):
        base = lr0 if lr0 is not None else _initial_lr(state, B, adam, T, seed)
        n = round_draws(draws if draws is not None else MIN_DRAWS, BLOCK)
        best = _bracket(lambda idxs: grow(n, idxs), values, n)
        for _ in range(1000):
            fine = [best + d for d in range(-3, 4)]
            grow(n, fine)
            best = max(fine, key=lambda i: values[i][:n].mean())
            if best in (fine[0], fine[-1]):  # the best moved to the fine grid's edge: recentre
                continue
            centre = min(max(best, fine[2]), fine[4])
            pts = [centre + d for d in range(-2, 3)]
            lr, lr_se, dl, dl_se = _fit_peak(np.array([base * 2.0 ** (i / 3) for i in pts]),
                                             np.stack([values[i][:n] for i in pts], 1), seed)  # fmt: skip
            converged = draws is not None or (lr_se <= rel_se * abs(lr))
            if converged or n >= max_draws:
                break
            want = n * (lr_se / (rel_se * abs(lr))) ** 2 * 1.15
            n = min(round_draws(max_draws, BLOCK), round_draws(min(max(want, n + BLOCK), 8 * n), BLOCK))
        else:  # pragma: no cover - the grid walks at most to a finite optimum
            raise RuntimeError("the multi-step probe's grid did not settle")
    cost = draws_of.cost
    return MultiStepPoint(B, T, lr, lr_se, dl, dl_se, n, len(values), cost["grad"], cost["loss"], bool(converged))


class _AdamDraws:
    """The loss decreases of T Adam steps from the state, draw block by draw block: block j's
    minibatches come from ``draw_generator(seed, B, _MULTI_OFFSET + j)`` alone (common random
    numbers across learning rates). ``cost`` counts example-gradients and example-losses."""

    def __init__(
        self, state: ProbeState, adam: AdamState, B: int, T: int, W: int, seed: int,
        loss_sample: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:  # fmt: skip
        self.state, self.adam, self.B, self.T, self.W, self.seed = state, adam, B, T, W, seed
        self.theta0 = state.flat(state.params).to(torch.float64)
        self.grad = grad(state.batch_loss)
        self.loss_of, self.loss_examples = _loss_evaluator(state, loss_sample)
        self.cost = {"grad": 0, "loss": 0}
        with torch.no_grad():
            self.L0 = float(self.loss_of({k: v[None] for k, v in state.params.items()})[0])

    def gradients(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(k, d) float64: each draw's minibatch-mean gradient at its own parameters, draw by draw
        (vmap over per-draw parameters turns convolutions into grouped ones: 50x slower on CPU
        at B = 1 for the CNN)."""
        state, k = self.state, theta.shape[0]
        out = [state.flat(self.grad(state.unflat(theta[j]), x[j], y[j])) for j in range(k)]
        self.cost["grad"] += k * self.B
        return torch.stack(out).to(torch.float64)

    def block(self, j: int, lrs: list[float]) -> np.ndarray:
        """(block draws, len(lrs)) loss decreases of draw block j (its own random numbers)."""
        state, adam, B, T, W = self.state, self.adam, self.B, self.T, self.W
        gen = draw_generator(self.seed, B, _MULTI_OFFSET + j)
        k = BLOCK
        x, y = state.minibatches(gen, k * (W + T), B)
        x, y = x.reshape(k, W + T, *x.shape[1:]), y.reshape(k, W + T, *y.shape[1:])
        m = adam.exp_avg.expand(k, -1).clone()
        v = adam.exp_avg_sq.expand(k, -1).clone()
        step = adam.step
        theta = self.theta0.expand(k, -1)
        if W:
            m.zero_(), v.zero_()
            step = 0
            for w in range(W):
                g = self.gradients(theta, x[:, w], y[:, w])
                m, v, step = adam.beta1 * m + (1 - adam.beta1) * g, adam.beta2 * v + (1 - adam.beta2) * g * g, step + 1
        out = np.empty((k, len(lrs)))
        for i, lr in enumerate(lrs):
            th, mm, vv = theta.clone(), m.clone(), v.clone()
            for t in range(T):
                g = self.gradients(th, x[:, W + t], y[:, W + t])
                mm = adam.beta1 * mm + (1 - adam.beta1) * g
                vv = adam.beta2 * vv + (1 - adam.beta2) * g * g
                s = step + t + 1
                th = th - lr * (mm / (1 - adam.beta1**s)) / (torch.sqrt(vv / (1 - adam.beta2**s)) + adam.eps)
            with torch.no_grad():
                out[:, i] = self.L0 - self.loss_of(state.unflat(th)).numpy()
            self.cost["loss"] += k * self.loss_examples
        return out


def _initial_lr(state: ProbeState, B: int, adam: AdamState, T: int, seed: int) -> float:
    """A first guess of lr*_T: Lemma 1's one-step optimum of an Adam step over 16 draws with a
    Hessian sample of 8 examples, divided by T (the grid walks from there)."""
    saved = state.adam
    state.adam = adam
    try:
        p = probe_batch_size(state, B, update="adam", draws=16, hessian_examples=min(8, state.n or 8), seed=seed)
    finally:
        state.adam = saved
    return p.lr / T if math.isfinite(p.lr) and p.lr > 0 else 1e-3


def _bracket(grow: Callable, values: dict, n: int) -> int:
    """Grid index of the largest mean decrease, bracketed on the factor-2 grid (every 3rd index)."""
    idx = [-3, 0, 3]
    for _ in range(60):
        grow(idx)
        k = int(np.argmax([values[i][:n].mean() for i in idx]))
        if 0 < k < len(idx) - 1:
            return idx[k]
        idx = [idx[0] - 3, *idx] if k == 0 else [*idx, idx[-1] + 3]
    raise ValueError("the multi-step probe found no learning rate that maximises the loss decrease "
                     "within a factor 2^30 of the first guess")  # fmt: skip


def _fit_peak(lrs: np.ndarray, dec: np.ndarray, seed: int) -> tuple[float, float, float, float]:
    """Peak (lr, lr_se, dL, dL_se) of a parabola in lr through the mean decreases ``dec`` (N, 5);
    errors by a bootstrap over the N draws (rows resampled together: common random numbers)."""

    def peak(mean: np.ndarray) -> tuple[float, float]:
        c2, c1, c0 = np.polyfit(lrs, mean, 2)
        x = -c1 / (2 * c2) if c2 < 0 else lrs[int(np.argmax(mean))]
        x = float(np.clip(x, lrs[0], lrs[-1]))
        return x, float(c0 + c1 * x + c2 * x * x)

    lr, dl = peak(dec.mean(0))
    gen = np.random.default_rng(seed)
    boot = np.array([peak(dec[gen.integers(0, dec.shape[0], dec.shape[0])].mean(0)) for _ in range(_BOOTSTRAP)])
    return lr, float(boot[:, 0].std(ddof=1)), dl, float(boot[:, 1].std(ddof=1))
