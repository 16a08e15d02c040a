"""Gradient statistics of a real network at a checkpoint, and the B_noise and eps_max they predict.

Theorem 3 of Li et al. 2024 needs, per parameter i, the mean mu_i and standard deviation sigma_i of
the per-example gradients and the Hessian H of the loss. With r = mu / sigma:

    B_noise = pi tr(H) / (2 sum_{i != j} r_i r_j H_ij)                           (eq 14)
    eps_max = S / (2 sqrt(off tr(H))),  S = sum_i mu_i^2 / sigma_i,  off = r'Hr - sum_i r_i^2 H_ii
                                                                                   (eq 16 = eq 41)

- mu and sigma: per-example gradients by ``torch.func`` (``vmap`` of ``grad`` of
  ``functional_call``), streamed in chunks and merged with Welford/Chan updates, so memory is
  O(parameters x chunk) and never O(parameters x examples).
- r'Hr: one Hessian-vector product (double backward). tr(H) and sum_i r_i^2 H_ii: Hutchinson's
  estimator diag(H) = E[z * Hz] with Rademacher z (Bekas, Kokiopoulou & Saad 2007), whose spread
  over probes gives the error bars (delta method for B_noise and eps_max).
- Finite-sample bias: mu_hat_i^2 overestimates mu_i^2 by sigma_i^2 / n, which at small r (r^2 of
  order 1/n) dominates S and off. With ``debias=True`` (default) every product of two means uses
  the means of two disjoint halves of the examples (even and odd positions), whose product is
  unbiased: S = sum_i mu_A,i mu_B,i / sigma_i, off = r_A'H r_B - sum_i r_A,i r_B,i H_ii.
  The error bars cover the Hutchinson noise only, not the sampling noise of mu and sigma.
- BatchNorm in train mode couples the examples of a batch, so per-example gradients do not exist
  there: the model is put in eval mode (BatchNorm with its running statistics) for the whole
  measurement and restored afterwards. Dropout is off in eval mode too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

__all__ = [
    "EvalMode",
    "GradientMoments",
    "NoiseScale",
    "gradient_moments",
    "hessian_vector_product",
    "noise_scale",
]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class GradientMoments:
    """Per-parameter mean and standard deviation (ddof=1) of per-example gradients, flattened in
    ``model.named_parameters()`` order, and the means of the even- and odd-position halves."""

    mean: torch.Tensor
    std: torch.Tensor
    count: int
    mean_even: torch.Tensor
    mean_odd: torch.Tensor


class _Welford:
    """Running count, mean and sum of squared deviations, merged chunk by chunk (Chan et al.)."""

    def __init__(self, d: int, device) -> None:
        self.n = 0
        self.mean = torch.zeros(d, dtype=torch.float64, device=device)
        self.m2 = torch.zeros(d, dtype=torch.float64, device=device)

    def add(self, g: torch.Tensor) -> None:
        k = g.shape[0]
        if k == 0:
            return
        m = g.mean(0, dtype=torch.float64)
        c = g - m.to(g.dtype)  # centred in the gradients' precision, summed in float64
        self.merge(k, m, (c * c).sum(0, dtype=torch.float64))

    def merge(self, k: int, m: torch.Tensor, m2: torch.Tensor) -> None:
        n = self.n + k
        delta = m - self.mean
        self.mean += delta * (k / n)
        self.m2 += m2 + delta * delta * (self.n * k / n)
        self.n = n


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}


class EvalMode:
    """Eval mode (BatchNorm running statistics, no dropout) for the block; restores the mode."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.was_training = model, model.training

    def __enter__(self) -> nn.Module:
        self.model.eval()
        return self.model

    def __exit__(self, *exc) -> None:
        self.model.train(self.was_training)


def _check_examples(inputs: torch.Tensor, targets: torch.Tensor, chunk_size: int) -> None:
    if inputs.shape[0] != targets.shape[0]:
        raise ValueError(f"inputs ({inputs.shape[0]}) and targets ({targets.shape[0]}) differ in length")
    if inputs.shape[0] < 4:
        raise ValueError(f"need at least 4 examples (2 per half), got {inputs.shape[0]}")
    if chunk_size < 2:
        raise ValueError(f"chunk_size must be >= 2, got {chunk_size}")


def gradient_moments(
    model: nn.Module, loss_fn: LossFn, inputs: torch.Tensor, targets: torch.Tensor, chunk_size: int = 64
) -> GradientMoments:
    """Mean and standard deviation of the per-example gradients of ``loss_fn(model(x), y)``.

    ``loss_fn`` takes a batch's output and targets and returns the batch-mean loss; each example's
    gradient is taken with a batch of one (vmap over ``grad``), ``chunk_size`` examples at a time.
    The model is in eval mode during the measurement (see the module docstring).
    """
    _check_examples(inputs, targets, chunk_size)
    params = _params(model)
    buffers = dict(model.named_buffers())

    def example_loss(p, x, y):
        out = functional_call(model, (p, buffers), (x.unsqueeze(0),))
        return loss_fn(out, y.unsqueeze(0))

    per_example = vmap(grad(example_loss), in_dims=(None, 0, 0))
    d = sum(p.numel() for p in params.values())
    device = next(iter(params.values())).device
    halves = (_Welford(d, device), _Welford(d, device))
    with EvalMode(model):
        for start in range(0, inputs.shape[0], chunk_size):
            g = per_example(params, inputs[start : start + chunk_size], targets[start : start + chunk_size])
            flat = torch.cat([g[k].reshape(g[k].shape[0], -1) for k in params], dim=1)
            off = start % 2  # global position parity of the chunk's first example
            halves[0].add(flat[off::2])
            halves[1].add(flat[1 - off :: 2])
    even, odd = halves
    total = _Welford(d, device)
    total.merge(even.n, even.mean, even.m2)
    total.merge(odd.n, odd.mean, odd.m2)
    std = torch.sqrt(total.m2 / (total.n - 1))
    return GradientMoments(total.mean, std, total.n, even.mean, odd.mean)


def _split_like(v: torch.Tensor, params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    out, i = [], 0
    for p in params:
        out.append(v[i : i + p.numel()].view_as(p).to(p.dtype))
        i += p.numel()
    return out


def hessian_vector_product(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    v: torch.Tensor,
    chunk_size: int = 256,
) -> torch.Tensor:
    """H v for the Hessian of the mean loss over the examples (double backward), in float64.

    Chunks are weighted by their size, so the result does not depend on ``chunk_size``. Uses the
    model's current mode (``noise_scale`` puts it in eval mode).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    vs = _split_like(v, params)
    n = inputs.shape[0]
    hv = torch.zeros(v.numel(), dtype=torch.float64, device=v.device)
    for start in range(0, n, chunk_size):
        x, y = inputs[start : start + chunk_size], targets[start : start + chunk_size]
        loss = loss_fn(model(x), y) * (x.shape[0] / n)
        g = torch.autograd.grad(loss, params, create_graph=True)
        dot = sum((gi * vi).sum() for gi, vi in zip(g, vs, strict=True))
        if not isinstance(dot, torch.Tensor):  # sum() of nothing is the int 0
            raise ValueError("the model has no trainable parameters")
        h = torch.autograd.grad(dot, params)
        hv += torch.cat([hi.reshape(-1) for hi in h]).to(torch.float64)
    return hv


@dataclass(frozen=True)
class NoiseScale:
    """Eq 14 and eq 16 measured on a network, with Hutchinson error bars (see module docstring)."""

    noise_batch_size: float
    noise_batch_size_se: float
    peak_lr: float
    peak_lr_se: float
    trace: float  # tr(H)
    trace_se: float
    rhr: float  # r'Hr (split-half r_A' H r_B when debiased)
    r2_diag: float  # sum_i r_i^2 H_ii (r_A,i r_B,i when debiased)
    r2_diag_se: float
    signal: float  # S = sum_i mu_i^2 / sigma_i
    validity_bound: float  # pi / (2 max_i r_i^2) from the full-sample r (a noisy maximum: biased low)
    hessian_diag: np.ndarray  # Hutchinson diag(H)
    hessian_diag_se: np.ndarray
    moments: GradientMoments
    n_probes: int
    debiased: bool

    @property
    def off_diagonal(self) -> float:
        """sum_{i != j} r_i r_j H_ij, the denominator of eq 14."""
        return self.rhr - self.r2_diag


def noise_scale(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    probes: int = 32,
    seed: int = 0,
    chunk_size: int = 64,
    hvp_chunk_size: int = 256,
    debias: bool = True,
    moments: GradientMoments | None = None,
) -> NoiseScale:
    """Predicted B_noise (eq 14) and eps_max (eq 16) of a network at its current parameters.

    Args:
        inputs, targets: the examples (a sample of the training set) on the model's device.
        probes: Rademacher probes for Hutchinson's estimator (>= 2, for the error bars).
        seed: seed of the probes (a ``torch.Generator``; the result is a function of it).
        debias: split-half products of means (see module docstring); False uses mu_hat itself,
            which reproduces ``surgesim.theory.noise_batch_size(mu_hat, sigma_hat, H)``.
        moments: the per-example gradient moments if already measured (then ``inputs`` serve
            the Hessian alone and may be a subset of the moments' examples).

    Parameters whose per-example gradients never vary (sigma = 0, e.g. embeddings of tokens absent
    from the sample) get r_i = 0 and drop out of every sum. B_noise and eps_max are inf when the
    off-diagonal sum is <= 0 (eq 14), and NaN when the estimated signal S or tr(H) is <= 0 (early
    in training, or at a saddle, where the theorem's locally convex quadratic does not apply).
    """
    if probes < 2:
        raise ValueError(f"probes must be >= 2, got {probes}")
    mom = moments if moments is not None else gradient_moments(model, loss_fn, inputs, targets, chunk_size)
    sigma = mom.std
    live = sigma > 0
    safe = torch.where(live, sigma, torch.ones_like(sigma))
    if debias:
        mu_a, mu_b = mom.mean_even, mom.mean_odd
    else:
        mu_a = mu_b = mom.mean
    r_a = torch.where(live, mu_a / safe, 0.0)
    r_b = torch.where(live, mu_b / safe, 0.0)
    signal = float(torch.where(live, mu_a * mu_b / safe, 0.0).sum())
    r_max = float(torch.where(live, mom.mean / safe, 0.0).abs().max())
    w = r_a * r_b
    d = sigma.numel()
    gen = torch.Generator().manual_seed(int(seed))
    t = np.empty(probes)
    dw = np.empty(probes)
    diag_sum = torch.zeros(d, dtype=torch.float64, device=sigma.device)
    diag_sq = torch.zeros_like(diag_sum)
    with EvalMode(model):
        rhr = float(r_a @ hessian_vector_product(model, loss_fn, inputs, targets, r_b, hvp_chunk_size))
        for k in range(probes):
            z = (torch.randint(0, 2, (d,), generator=gen, dtype=torch.float64) * 2 - 1).to(sigma.device)
            zhz = z * hessian_vector_product(model, loss_fn, inputs, targets, z, hvp_chunk_size)
            t[k] = float(zhz.sum())
            dw[k] = float((w * zhz).sum())
            diag_sum += zhz
            diag_sq += zhz * zhz
    diag = diag_sum / probes
    diag_se = torch.sqrt(torch.clamp(diag_sq / probes - diag * diag, min=0) / (probes - 1))
    trace, r2_diag = float(t.mean()), float(dw.mean())
    cov = np.cov(np.stack([t, dw])) / probes  # covariance of the two probe means
    off = rhr - r2_diag
    nan = math.nan
    if signal <= 0 or trace <= 0:
        bn = bn_se = pk = pk_se = nan
    elif off <= 0:
        bn, pk, bn_se, pk_se = math.inf, math.inf, nan, nan
    else:
        bn = math.pi * trace / (2 * off)
        # delta method in (trace, r2_diag): off = rhr - r2_diag is exact given the data.
        g_bn = np.array([math.pi / (2 * off), math.pi * trace / (2 * off * off)])
        bn_se = float(math.sqrt(max(g_bn @ cov @ g_bn, 0.0)))
        pk = signal / (2 * math.sqrt(off * trace))
        g_pk = np.array([-pk / (2 * trace), pk / (2 * off)])
        pk_se = float(math.sqrt(max(g_pk @ cov @ g_pk, 0.0)))
    return NoiseScale(
        noise_batch_size=bn, noise_batch_size_se=bn_se, peak_lr=pk, peak_lr_se=pk_se,
        trace=trace, trace_se=float(math.sqrt(cov[0, 0])), rhr=rhr, r2_diag=r2_diag,
        r2_diag_se=float(math.sqrt(cov[1, 1])), signal=signal,
        validity_bound=math.pi / (2 * r_max * r_max) if r_max > 0 else math.inf,
        hessian_diag=diag.cpu().numpy(), hessian_diag_se=diag_se.cpu().numpy(),
        moments=mom, n_probes=probes, debiased=debias,
    )  # fmt: skip
