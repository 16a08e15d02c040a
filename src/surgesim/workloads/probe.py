"""Lemma 1 measured on a network: the optimal learning rate of one update at a fixed state, per
batch size, from real minibatches and exact Hessian-vector products.

For the local quadratic model of the loss at parameters theta, an update V at learning rate eps
changes the loss by dL(eps) = eps G'V - eps^2/2 V'HV (eq 5), so (Lemma 1, eq 6-7)

    lr*(B) = E[G'V_B] / E[V_B' H V_B],        dL*(B) = E[G'V_B]^2 / (2 E[V_B' H V_B])

where V_B is the update from a minibatch of B examples, G the full-data gradient and H the
Hessian of the full-data loss. Three estimates of lr*(B), each testing one more assumption of
the paper's theory (Li et al. 2024, https://arxiv.org/abs/2405.14578):

- ``probe`` (the truth, no assumption): V_B from real minibatches (B distinct examples drawn
  uniformly from the data set), a_t = G'V_t for N draws and b_t = V_t'H_t V_t for the first M of
  them, H_t the Hessian over a fresh uniform sample of ``hessian_examples`` examples (unbiased for
  the full-data H, its sampling noise included in the error bars). Means, errors and the trial
  planning are ``surgesim.estimate``'s (delta method; N and M chosen for the target error at the
  least cost, an a-draw costing B example-gradients and a b-draw about 3 ``hessian_examples``).
- ``gaussian`` (Gaussian minibatch means, correlations kept): V = sign(G + z / sqrt(B)) with z
  Gaussian with the *empirical* per-example covariance, z = C'w / sqrt(n - 1) for the n x d matrix
  C of centred per-example gradients and w ~ N(0, I_n). E[G'V] has the closed form
  sum_i G_i erf(sqrt(B/2) G_i / sigma_i) (eq 35: marginals only), so only E[V'HV] is sampled.
- ``independent`` (the paper's eq 9): cov(V) = diag(1 - E^2) (eq 36), with sigma_i from the
  per-example gradients and tr(H), diag(H) by Hutchinson's estimator (``gradstats.noise_scale``),
  E'HE by one Hessian-vector product per batch size.

Beside them, at the same state: McCandlish et al. 2018's B_simple = tr(Sigma) / |G|^2 and
B_crit = tr(H Sigma) / G'HG (https://arxiv.org/abs/1812.06162), and eq 14's B_noise. The
statistics (per-example gradients) are only ever weighed with Hessians of examples disjoint from
them (``state_statistics``), so no term holds an example's own Hessian (that biased B_crit up).

Updates: ``sign`` (the theory's object) or ``adam``: one Adam step from the state's moment buffers
(m, v, step; zeros at step 0 make it sign-like), V = m_hat / (sqrt(v_hat) + eps). The multi-step
probe (``multistep_batch_size``) measures the optimal learning rate of T real Adam steps instead.

The model is in eval mode throughout (BatchNorm with its running statistics, no dropout), so a
minibatch gradient is the mean of its per-example gradients. Every random number is drawn from a
``torch.Generator`` seeded by ``surgesim.rng.stream_key(seed, B, block)`` for fixed blocks of
draws, so an estimate depends on (state, seed, options) and not on how the draws are grouped.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import special
from torch import nn
from torch.func import functional_call, grad, vjp, vmap

from .. import rng
from ..estimate import delta_method, plan_trials
from ..progress import report
from .gradstats import GradientMoments, _EvalMode, noise_scale

__all__ = [
    "UPDATES",
    "AdamState",
    "ProbeState",
    "StateStatistics",
    "CurvePoint",
    "TensorData",
    "model_state",
    "full_gradient",
    "state_statistics",
    "probe_batch_size",
    "gaussian_batch_size",
    "independent_curve",
    "peak_batch_size",
    "MultiStepPoint",
    "multistep_batch_size",
]

UPDATES = ("sign", "adam")
_BLOCK = 16  # draws per random-number block (a: a multiple of it), the unit of reproducibility
_MIN_DRAWS = 32
_BLOCK_EXAMPLES = 1024  # a-draws come in blocks of about this many examples (at least _BLOCK draws)
_LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class AdamState:
    """Adam's moment buffers (flattened like the parameters, float64), its step count and
    hyper-parameters: V = m_hat / (sqrt(v_hat) + eps) after one more step with gradient g."""

    exp_avg: torch.Tensor
    exp_avg_sq: torch.Tensor
    step: int = 0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    def update(self, g: torch.Tensor) -> torch.Tensor:
        t = self.step + 1
        m = self.beta1 * self.exp_avg + (1 - self.beta1) * g
        v = self.beta2 * self.exp_avg_sq + (1 - self.beta2) * g * g
        m_hat = m / (1 - self.beta1**t)
        v_hat = v / (1 - self.beta2**t)
        return m_hat / (torch.sqrt(v_hat) + self.eps)

    @classmethod
    def zeros(cls, d: int, **hyper) -> AdamState:
        z = torch.zeros(d, dtype=torch.float64)
        return cls(z, z.clone(), 0, **hyper)


@dataclass
class ProbeState:
    """What the probe needs at one state: the model (its current parameters are the state), the
    batch-mean loss ``loss_fn(output, targets)``, the data and the full-data gradient G.

    ``data`` has ``take(indices) -> (inputs, targets)`` and ``n`` (its size), or ``n = None`` and
    ``draw(generator, count) -> (inputs, targets)`` for an endless stream of i.i.d. examples.
    ``gradient_error(v)``: var(e'v) for the error e of G when G is a sample estimate (None: exact).
    """

    model: nn.Module
    loss_fn: _LossFn
    data: object
    gradient: torch.Tensor
    gradient_error: Callable[[torch.Tensor], float] | None = None
    adam: AdamState | None = None
    chunk: int = 128  # examples per vectorised gradient call (memory: chunk x parameters)
    population_loss: Callable[[dict], torch.Tensor] | None = None  # exact full-data loss of params, if known

    def __post_init__(self) -> None:
        self.params = {k: v.detach() for k, v in self.model.named_parameters() if v.requires_grad}
        self.buffers = dict(self.model.named_buffers())
        self.names = list(self.params)
        self.dim = sum(p.numel() for p in self.params.values())
        if self.gradient.shape != (self.dim,):
            raise ValueError(f"gradient has shape {tuple(self.gradient.shape)}, the model has {self.dim} parameters")
        self.gradient = self.gradient.to(torch.float64)

    @property
    def n(self) -> int | None:
        return getattr(self.data, "n", None)

    # -- flat <-> named parameters -------------------------------------------------------------
    def flat(self, tree: dict[str, torch.Tensor], batched: bool = False) -> torch.Tensor:
        lead = 1 if batched else 0
        return torch.cat([tree[k].reshape(*tree[k].shape[:lead], -1) for k in self.names], dim=lead)

    def unflat(self, v: torch.Tensor) -> dict[str, torch.Tensor]:
        out, i = {}, 0
        for k in self.names:
            p = self.params[k]
            out[k] = v[..., i : i + p.numel()].reshape(*v.shape[:-1], *p.shape).to(p.dtype)
            i += p.numel()
        return out

    # -- data ----------------------------------------------------------------------------------
    def minibatches(self, gen: torch.Generator, k: int, batch_size: int):
        """k minibatches of ``batch_size`` distinct examples, inputs shaped (k, B, ...)."""
        if self.n is None:
            x, y = self.data.draw(gen, k * batch_size)
        else:
            x, y = self.data.take(_distinct_rows(gen, self.n, k, batch_size).reshape(-1))
        return x.reshape(k, batch_size, *x.shape[1:]), y.reshape(k, batch_size, *y.shape[1:])

    # -- derivatives ---------------------------------------------------------------------------
    def _loss(self, params, x, y):
        return self.loss_fn(functional_call(self.model, (params, self.buffers), (x,)), y)

    def mean_gradients(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(k, d): the gradient of the mean loss of each of the k minibatches x[j] (parameters' dtype)."""
        k, b = x.shape[:2]
        if b <= self.chunk:
            per = max(1, self.chunk // b)
            f = vmap(grad(self._loss), in_dims=(None, 0, 0))
            parts = [self.flat(f(self.params, x[i : i + per], y[i : i + per]), True) for i in range(0, k, per)]
            return torch.cat(parts)
        out = torch.zeros(k, self.dim, dtype=next(iter(self.params.values())).dtype)
        g = grad(self._loss)
        for j in range(k):
            for s in range(0, b, self.chunk):
                xs, ys = x[j, s : s + self.chunk], y[j, s : s + self.chunk]
                out[j] += self.flat(g(self.params, xs, ys)) * (xs.shape[0] / b)
        return out

    def hvp(self, v: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """H v (float64) for the Hessian of the mean loss over the examples x."""
        out = torch.zeros(self.dim, dtype=torch.float64)
        n = x.shape[0]
        for s in range(0, n, self.chunk):
            xs, ys = x[s : s + self.chunk], y[s : s + self.chunk]
            out += self.flat(self._hvp(self.unflat(v), xs, ys)).to(torch.float64) * (xs.shape[0] / n)
        return out

    def _hvp(self, tangent, x, y):
        # Reverse over reverse: the vector-Jacobian product of the gradient is H v (H symmetric).
        _, vjp_fn = vjp(lambda p: grad(self._loss)(p, x, y), self.params)
        return vjp_fn(tangent)[0]

    def quad_forms(self, V: torch.Tensor, x: torch.Tensor, y: torch.Tensor, shared: bool = False) -> np.ndarray:
        """v_j'H_j v_j for the rows of V, H_j the Hessian of the mean loss over examples x[j]
        (x shaped (k, n, ...)), or over the same examples x for every row when ``shared``."""
        n = x.shape[0] if shared else x.shape[1]
        if n > self.chunk:  # one update at a time, the examples in chunks
            return np.array([float(v.double() @ self.hvp(v, x if shared else x[j], y if shared else y[j]))
                             for j, v in enumerate(V)])  # fmt: skip
        per = max(1, self.chunk // n)
        f = vmap(self._hvp, in_dims=(0, None, None) if shared else (0, 0, 0))
        out = []
        for i in range(0, V.shape[0], per):
            v = V[i : i + per]
            xs, ys = (x, y) if shared else (x[i : i + per], y[i : i + per])
            hv = self.flat(f(self.unflat(v), xs, ys), True)
            out.append((v.double() * hv.double()).sum(1).numpy())
        return np.concatenate(out)

    def updates(self, g: torch.Tensor, update: str) -> torch.Tensor:
        if update == "sign":
            return torch.sign(g)
        adam = self.adam or AdamState.zeros(self.dim)
        return adam.update(g)


class TensorData:
    """A data set held as two tensors whose first axis is the example: ``take(indices)``."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        if inputs.shape[0] != targets.shape[0]:
            raise ValueError(f"inputs and targets have {inputs.shape[0]} and {targets.shape[0]} examples")
        self.inputs, self.targets, self.n = inputs, targets, int(inputs.shape[0])

    def take(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inputs[idx], self.targets[idx]


def model_state(
    model: nn.Module,
    loss_fn: _LossFn,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    full_gradient_examples: int = 0,
    adam: AdamState | None = None,
    chunk: int = 128,
) -> ProbeState:
    """The probe's state for any model at its current weights: the data set (inputs, targets),
    ``loss_fn(outputs, targets)`` the mean loss of a batch, G over the whole data set (or a uniform
    sample of ``full_gradient_examples``, its error propagated). Raises ValueError when the loss is
    not a scalar or a weight or G is not finite."""
    data = TensorData(inputs, targets)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    bad = [name for name, p in model.named_parameters() if p.requires_grad and not bool(torch.isfinite(p).all())]
    if bad:
        raise ValueError(f"the model's weights are not finite ({', '.join(bad[:3])})")
    with _EvalMode(model), torch.no_grad():
        loss = loss_fn(model(inputs[:2]), targets[:2])
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1 or loss.dim() != 0:
        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise ValueError(f"loss_fn must return the scalar mean loss of the batch, got {shape}")
    examples = min(full_gradient_examples or data.n, data.n)
    G, error = full_gradient(model, loss_fn, data, examples)
    if not bool(torch.isfinite(G).all()):
        raise ValueError("the gradient of the loss is not finite at these weights")
    return ProbeState(model, loss_fn, data, G, gradient_error=error, adam=adam, chunk=chunk)


def _distinct_rows(gen: torch.Generator, n: int, k: int, b: int) -> torch.Tensor:
    """(k, b) indices, each row b distinct uniform draws from range(n) (without replacement)."""
    if b > n:
        raise ValueError(f"batch size {b} is larger than the data set ({n} examples)")
    if b * b > n:  # duplicates likely: a permutation per row
        return torch.stack([torch.randperm(n, generator=gen)[:b] for _ in range(k)])
    idx = torch.randint(n, (k, b), generator=gen)
    while True:  # redraw the rows with a repeated index (probability about b^2 / 2n each)
        s, _ = idx.sort(dim=1)
        bad = (s[:, 1:] == s[:, :-1]).any(dim=1)
        if not bad.any():
            return idx
        idx[bad] = torch.randint(n, (int(bad.sum()), b), generator=gen)


def _generator(seed: int, batch_size: int, block: int) -> torch.Generator:
    key = int(rng.stream_key(np.uint64(seed), np.uint64(batch_size), np.uint64(block)))
    return torch.Generator().manual_seed(key & ((1 << 63) - 1))


def full_gradient(model: nn.Module, loss_fn: _LossFn, data, examples: int = 0, chunk: int = 512, seed: int = 1):
    """G, the gradient of the mean loss over the whole data set (``examples = 0``), or over a
    uniform sample of ``examples`` distinct examples; second value None when G is exact, else
    ``error(v)`` = var(e'v) for G's sampling error e, var_j(g_j'v) / m (1 - m/n) over the sample's
    per-example gradients g_j (finite population correction included)."""
    params = [p for p in model.parameters() if p.requires_grad]
    n = data.n
    sample = examples and examples < n
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:examples] if sample else torch.arange(n)
    m = idx.numel()
    total = torch.zeros(sum(p.numel() for p in params), dtype=torch.float64)
    with _EvalMode(model):
        for s in range(0, m, chunk):
            x, y = data.take(idx[s : s + chunk])
            g = torch.autograd.grad(loss_fn(model(x), y) * (x.shape[0] / m), params)
            total += torch.cat([t.reshape(-1) for t in g]).to(torch.float64)
    if not sample:
        return total, None

    def error(v: torch.Tensor) -> float:
        proj = torch.cat([_directional(model, loss_fn, *data.take(idx[s : s + chunk]), params, v)
                          for s in range(0, m, chunk)])  # fmt: skip
        return float(proj.var()) / m * (1 - m / n)

    return total, error


def _directional(model: nn.Module, loss_fn: _LossFn, x, y, params: list, v: torch.Tensor) -> torch.Tensor:
    """g_j'v for each example j of the batch: J v by the double-backward trick, J v = d/du (J'u)'v
    (two backward passes, no per-example gradients stored)."""
    with _EvalMode(model):
        out = model(x)
        per = torch.stack([loss_fn(out[j : j + 1], y[j : j + 1]) for j in range(x.shape[0])])
        u = torch.zeros_like(per, requires_grad=True)
        g = torch.autograd.grad(per, params, grad_outputs=u, create_graph=True)
        vs = v.split([p.numel() for p in params])
        dot = sum((gi.reshape(-1).to(torch.float64) * vi).sum() for gi, vi in zip(g, vs, strict=True))
        return torch.autograd.grad(dot, u)[0].detach().to(torch.float64)


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


def _statistics_sample(state: ProbeState, examples: int, hessian_examples: int, seed: int):
    """(x, y) of ``examples`` distinct examples, and ``sample(gen, k)``: k Hessian samples of
    ``hessian_examples`` distinct examples each, drawn from the rest of the data set (disjoint from
    the statistics sample; fresh i.i.d. examples for an endless stream)."""
    gen = _generator(seed, _STATS_BLOCK, 0)
    if state.n is None:
        x, y = state.data.draw(gen, examples)

        def sample(g: torch.Generator, k: int) -> tuple:
            hx, hy = state.data.draw(g, k * hessian_examples)
            return hx.reshape(k, hessian_examples, *hx.shape[1:]), hy.reshape(k, hessian_examples, *hy.shape[1:])

        return x, y, sample
    if examples + hessian_examples > state.n:
        raise ValueError(
            f"examples + hessian_examples = {examples + hessian_examples} is larger than the data set "
            f"({state.n}): the Hessian samples must be disjoint from the statistics sample"
        )
    perm = torch.randperm(state.n, generator=gen)
    x, y = state.data.take(perm[:examples])
    pool = perm[examples:]

    def sample(g: torch.Generator, k: int) -> tuple:
        hx, hy = state.data.take(pool[_distinct_rows(g, pool.numel(), k, hessian_examples).reshape(-1)])
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
    Draws come from ``_generator(seed, 0, block)``: the sample is a function of ``seed``.
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
    x, y, hessian_sample = _statistics_sample(state, examples, hessian_examples, seed)
    hx, hy = (t[0] for t in hessian_sample(_generator(seed, _STATS_BLOCK, 1), 1))
    with _EvalMode(state.model):
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
        cx, cy = hessian_sample(_generator(seed, _STATS_BLOCK, 2), k)
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


def _check_plan(rel_se: float | None, draws: int | None, max_draws: int) -> float | None:
    """The relative standard error to reach (0.1 when neither is given), after checks."""
    if rel_se is not None and draws is not None:
        raise ValueError("give at most one of rel_se (adaptive) or draws (fixed)")
    if rel_se is None and draws is None:
        rel_se = 0.1
    if rel_se is not None and not 0 < rel_se < 1:
        raise ValueError(f"rel_se must be in (0, 1), got {rel_se}")
    if draws is not None and (int(draws) != draws or draws < 2):
        raise ValueError(f"draws must be an integer >= 2, got {draws}")
    if int(max_draws) != max_draws or max_draws < _MIN_DRAWS:
        raise ValueError(f"max_draws must be an integer >= {_MIN_DRAWS}, got {max_draws}")
    return rel_se


class _Stream:
    """Per-draw values of one kind (a or b), grown in blocks of ``block`` draws; block j's random
    numbers come from ``_generator(seed, B, offset + j)`` alone."""

    def __init__(self, fn: Callable[[torch.Generator, int], np.ndarray], seed: int, B: int, offset: int, block: int):
        self.fn, self.seed, self.B, self.offset, self.block = fn, seed, B, offset, block
        self.values = np.empty(0)

    def grow(self, n: int) -> None:
        while self.values.size < n:
            j = self.values.size // self.block
            new = self.fn(_generator(self.seed, self.B, self.offset + j), self.block)
            self.values = np.concatenate([self.values, new])

    def take(self, n: int) -> np.ndarray:
        self.grow(n)
        return self.values[:n]


def _estimate(
    a: _Stream | float,
    b: _Stream,
    rel_se: float | None,
    draws: int | None,
    max_draws: int,
    b_cost: float,
    a_extra_var: Callable[[int], float] | None = None,
) -> CurvePoint:
    """lr = mean(a) / mean(b) from independent draws of a (N) and b (M), grown until lr's relative
    standard error is at most ``rel_se`` with N and M planned by ``estimate.plan_trials`` (cost of
    a b-draw ``b_cost`` a-draws), or ``draws`` of each; ``a`` a float: its exact mean."""
    exact = not isinstance(a, _Stream)

    def stats(n: int, m: int) -> dict:
        bv = b.take(m)
        st = {"m": m, "mb": float(bv.mean()), "vb": float(np.var(bv - bv[0], ddof=1)), "cab": 0.0}
        if exact:
            return {**st, "n": m, "ma": float(a), "va": 0.0}
        av = a.take(n)
        va = float(np.var(av, ddof=1)) + (n * a_extra_var(n) if a_extra_var else 0.0)
        return {**st, "n": n, "ma": float(av.mean()), "va": va}

    if draws is not None:
        n = m = int(draws)
        converged = True
    else:
        n = 0 if exact else _round(_MIN_DRAWS, a.block)
        m = _round(_MIN_DRAWS, b.block)
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
            report(math.log(m / _MIN_DRAWS + 1) / math.log(goal / _MIN_DRAWS + 1))
            n_new = 0 if exact else min(max_draws, _round(min(max(1.15 * want_n, n), 8 * n), a.block))
            m_new = min(max_draws, _round(min(max(1.15 * want_m, m), 8 * m), b.block))
            if (n_new, m_new) == (n, m):  # the plan is met but the noise says not yet
                n_new, m_new = (0 if exact else min(max_draws, 2 * n)), min(max_draws, 2 * m)
            n, m = n_new, m_new
    st = stats(n, m)
    lr, lr_se, dl, dl_se = delta_method(st)
    return CurvePoint(
        batch_size=b.B, lr=lr, lr_se=lr_se, loss_improvement=dl, loss_improvement_se=dl_se,
        mean_a=st["ma"], mean_b=st["mb"], draws=0 if exact else n, hessian_draws=m, converged=bool(converged),
    )  # fmt: skip


def _round(x: float, block: int) -> int:
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
    rel_se = _check_plan(rel_se, draws, max_draws)
    if update not in UPDATES:
        raise ValueError(f"update must be one of {', '.join(UPDATES)}, got {update!r}")
    B = _batch(batch_size, state.n)
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

    a = _Stream(a_values, seed, B, 0, _round(_BLOCK_EXAMPLES / B, _BLOCK))  # a function of B alone
    b = _Stream(b_values, seed, B, 1 << 32, _BLOCK)
    extra = None
    if state.gradient_error is not None:

        def extra(n: int) -> float:  # var(e'v) at v = the mean update, e the error of G
            return state.gradient_error(update_sum / a.values.size)

    with _EvalMode(state.model):
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
    rel_se = _check_plan(rel_se, draws, max_draws)
    B = _batch(batch_size, None)
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
    b = _Stream(b_values, seed, B, offset, _BLOCK)
    num = float(G @ _sign_mean(B, G, stats.sigma))
    with _EvalMode(state.model):
        point = _estimate(num, b, rel_se, draws, max_draws, 0.0)
        rel_var = _jackknife_rel_var(G, C, B, num, b, randoms, forms, seed, offset)
    lr_se = math.sqrt(point.lr_se**2 + rel_var * point.lr**2)
    dl_se = math.sqrt(point.loss_improvement_se**2 + rel_var * point.loss_improvement**2)
    return dataclasses.replace(point, lr_se=lr_se, loss_improvement_se=dl_se)


def _jackknife_rel_var(G, C, B, num, b: _Stream, randoms, forms, seed: int, offset: int) -> float:
    """Relative variance of the gaussian lr (and dL) from the statistics' sampling noise: a
    delete-a-group jackknife with common random numbers (``gaussian_batch_size``)."""
    K, rows = _JACKKNIFE_GROUPS, C.shape[0]
    if rows < 2 * K:
        return 0.0
    J = _round(min(b.values.size, _JACKKNIFE_DRAWS), b.block)
    base = b.take(J)
    blocks = [randoms(_generator(seed, B, offset + j), b.block) for j in range(J // b.block)]
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
    f = np.array(f)
    return max(0.0, (K - 1) / K * (float(((f - f.mean()) ** 2).sum()) - (K - 1) / K * sum(noise)))


def independent_curve(state: ProbeState, stats: StateStatistics, batch_sizes: Sequence[int]) -> list[CurvePoint]:
    """Eq 9 from the measured G, sigma and H: lr = G'E / (sum_i (1 - E_i^2) H_ii + E'HE), E from
    eq 35, diag(H) by Hutchinson and E'HE by one HVP per batch size (no error bars)."""
    G = state.gradient
    diag = torch.from_numpy(np.asarray(stats.hessian_diag, dtype=np.float64))
    live = stats.sigma > 0  # V_i is constant where sigma_i = 0: no variance term
    x, y = stats.hessian_inputs
    out = []
    with _EvalMode(state.model):
        for b in batch_sizes:
            E = _sign_mean(_batch(b, None), G, stats.sigma)
            num = float(G @ E)
            den = float(((1 - E * E) * live * diag).sum()) + float(state.quad_forms(E[None], x, y, shared=True)[0])
            out.append(CurvePoint(int(b), num / den, math.nan, 0.5 * num * num / den, math.nan, num, den, 0, 0, True))
    return out


def _batch(b, n: int | None) -> int:
    if isinstance(b, bool) or not float(b).is_integer() or b < 1:
        raise ValueError(f"batch sizes must be integers >= 1, got {b}")
    if n is not None and b > n:
        raise ValueError(f"batch size {int(b)} is larger than the data set ({n} examples)")
    return int(b)


def peak_batch_size(
    batch_sizes: Sequence[float],
    lr: Sequence[float],
    lr_se: Sequence[float] | None = None,
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


# -- the multi-step probe (issue 21 item 3) ------------------------------------------------------

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


def _loss_evaluator(state: ProbeState) -> Callable[[dict], torch.Tensor]:
    """f(params batched over k draws) -> (k,) the full-data loss: the population loss of the state
    (``state.population_loss``) if it has one, else the mean loss over all examples (up to
    ``_EVAL_EXAMPLES``; a fixed uniform sample beyond: the same for every draw and lr)."""
    if state.population_loss is not None:
        return vmap(state.population_loss)
    n = state.n
    m = min(n, _EVAL_EXAMPLES)
    idx = torch.arange(n) if m == n else torch.randperm(n, generator=torch.Generator().manual_seed(2))[:m]
    x, y = state.data.take(idx)
    one = vmap(lambda p, xs, ys: state._loss(p, xs, ys), in_dims=(0, None, None))

    def loss(params: dict) -> torch.Tensor:
        k = next(iter(params.values())).shape[0]
        per = max(1, (state.chunk * 64) // max(1, k))
        total = torch.zeros(k, dtype=torch.float64)
        for s in range(0, m, per):
            total += one(params, x[s : s + per], y[s : s + per]).to(torch.float64) * (min(per, m - s) / m)
        return total

    return loss


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
) -> MultiStepPoint:
    """The optimal learning rate of T = ``steps`` real Adam steps from the state at batch size B
    (issue 21's multi-step probe; T = 1 is Lemma 1's optimum, eq 6, of one Adam step):

        lr*_T(B) = argmax_lr E[L(theta_0) - L(theta_T(lr))],
        theta_{t+1} = theta_t - lr m_hat_t / (sqrt(v_hat_t) + eps),

    each step's gradient that of a fresh minibatch of B distinct examples at theta_t, Adam's
    buffers evolving from the state's (``state.adam``: the checkpoint's buffers, which are the run's
    own history at this state; zeros for a fresh Adam); ``warmup`` W > 0 instead rebuilds them from
    zeros with W minibatch gradients of batch B at theta_0 (buffers as if the run had used batch B,
    no parameter moves). L is the full-data loss (``_loss_evaluator``).

    Search: the draws (the T minibatches of each) are common random numbers across learning rates;
    a grid in log lr (factor 2 to bracket the largest mean decrease, then factor 2^(1/3) around it);
    lr* by a parabola in lr through the five grid points nearest the best, its s.e. and that of
    the decrease by a bootstrap over draws. Draws grow until lr's relative s.e. <= ``rel_se``
    (default 0.1) or ``draws`` are fixed. Cost: draws x (grid points x T + W) minibatch gradients.
    """
    rel_se = _check_plan(rel_se, draws, max_draws)
    B = _batch(batch_size, state.n)
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps}")
    if isinstance(warmup, bool) or int(warmup) != warmup or warmup < 0:
        raise ValueError(f"warmup must be an integer >= 0, got {warmup}")
    adam = state.adam or AdamState.zeros(state.dim)
    if not 0 <= adam.beta1 < 1 or not 0 <= adam.beta2 < 1:
        raise ValueError(f"need 0 <= beta1, beta2 < 1, got {adam.beta1}, {adam.beta2}")
    T, W = int(steps), int(warmup)
    theta0 = state.flat(state.params).to(torch.float64)
    batched_grad = vmap(grad(state._loss), in_dims=(0, 0, 0))
    loss_of = _loss_evaluator(state)
    cost = {"grad": 0, "loss": 0}
    with torch.no_grad():
        L0 = float(loss_of({k: v[None] for k, v in state.params.items()})[0])

    def gradients(theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        k = theta.shape[0]
        per = max(1, state.chunk // B)
        out = [state.flat(batched_grad(state.unflat(theta[i : i + per]), x[i : i + per], y[i : i + per]), True)
               for i in range(0, k, per)]  # fmt: skip
        cost["grad"] += k * B
        return torch.cat(out).to(torch.float64)

    def block(j: int, lrs: list[float]) -> np.ndarray:
        """(block draws, len(lrs)) loss decreases of draw block j (its own random numbers)."""
        gen = _generator(seed, B, _MULTI_OFFSET + j)
        k = _BLOCK
        x, y = state.minibatches(gen, k * (W + T), B)
        x, y = x.reshape(k, W + T, *x.shape[1:]), y.reshape(k, W + T, *y.shape[1:])
        m = adam.exp_avg.expand(k, -1).clone()
        v = adam.exp_avg_sq.expand(k, -1).clone()
        step = adam.step
        theta = theta0.expand(k, -1)
        if W:
            m.zero_(), v.zero_()
            step = 0
            for w in range(W):
                g = gradients(theta, x[:, w], y[:, w])
                m, v, step = adam.beta1 * m + (1 - adam.beta1) * g, adam.beta2 * v + (1 - adam.beta2) * g * g, step + 1
        out = np.empty((k, len(lrs)))
        for i, lr in enumerate(lrs):
            th, mm, vv = theta.clone(), m.clone(), v.clone()
            for t in range(T):
                g = gradients(th, x[:, W + t], y[:, W + t])
                mm = adam.beta1 * mm + (1 - adam.beta1) * g
                vv = adam.beta2 * vv + (1 - adam.beta2) * g * g
                s = step + t + 1
                th = th - lr * (mm / (1 - adam.beta1**s)) / (torch.sqrt(vv / (1 - adam.beta2**s)) + adam.eps)
            with torch.no_grad():
                out[:, i] = L0 - loss_of(state.unflat(th)).numpy()
            cost["loss"] += k * (1 if state.population_loss is not None else min(state.n, _EVAL_EXAMPLES))
        return out

    values: dict[int, np.ndarray] = {}  # grid index -> (N,) decreases at lr = base * 2^(index / 3)

    def grow(n: int, idxs) -> None:
        for i in idxs:
            have = values.get(i, np.empty(0))
            if have.size < n:
                new = [block(j, [base * 2.0 ** (i / 3)]) for j in range(have.size // _BLOCK, n // _BLOCK)]
                values[i] = np.concatenate([have, *[b[:, 0] for b in new]])

    with _EvalMode(state.model):
        base = lr0 if lr0 is not None else _initial_lr(state, B, adam, T, seed)
        n = _round(draws if draws is not None else _MIN_DRAWS, _BLOCK)
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
            n = min(_round(max_draws, _BLOCK), _round(min(max(want, n + _BLOCK), 8 * n), _BLOCK))
        else:  # pragma: no cover - the grid walks at most to a finite optimum
            raise RuntimeError("the multi-step probe's grid did not settle")
    return MultiStepPoint(B, T, lr, lr_se, dl, dl_se, n, len(values), cost["grad"], cost["loss"], bool(converged))


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
