"""The Adam schedule on a network (issue 22 item 3): B_t and lr_t from the multi-step probe
(``probe.multistep_batch_size``, T = 4 real Adam steps, the ``probe_adam`` predictor of
``sims.probe --update adam --steps 4``) on the run's current weights and Adam buffers.

Every ``ScheduleRule.interval`` steps (t = 0, K, 2K, ...) the probe measures lr*_T(B) at three
batch sizes, one octave apart around the current B_t (``probe_window``), with ``PROBE_DRAWS``
draws each and the loss on the run's own evaluation sample; then

    B_t = clip(round(c B_peak)),   lr_t = k lr*_T(B_t),

B_peak the peak of lr*_T over the window (``probe.peak_batch_size``: a parabola in (log B, log
lr) through the largest and its neighbours; an end of the window where the largest lr is there,
so the next window moves that way), lr*_T(B_t) interpolated in (log B, log lr) and flat past the
window's ends. c is the variant's multiplier, k the task's lr. The cost is bounded by the probe
interval and the draws: 3 x draws x (about 9 learning rates x T steps) minibatch gradients and
as many evaluations of the sample's loss per probe.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch.func import functional_call

from .probe import AdamState, ProbeState, full_gradient, multistep_batch_size, peak_batch_size

__all__ = ["PROBE_DRAWS", "PROBE_STEPS", "PROBE_LR0", "probe_window", "probe_setting", "probe_trainer"]

PROBE_DRAWS = 16  # one random-number block of the multi-step probe
PROBE_STEPS = 4
PROBE_LR0 = 1e-3  # the probe's first guess at the first probe (later: the last lr*_T)


def probe_window(b: float, batch_min: int, batch_max: int) -> list[int]:
    """Three batch sizes one octave apart around b, inside [batch_min, batch_max] (shifted inward
    at an end; fewer where the range holds fewer)."""
    lo, hi = int(batch_min), int(batch_max)
    centre = min(max(float(b), 2.0 * lo), hi / 2.0) if hi >= 4 * lo else float(b)
    out = {int(min(max(math.floor(centre * f + 0.5), lo), hi)) for f in (0.5, 1.0, 2.0)}
    return sorted(out)


def probe_setting(lrs: Mapping[int, float], clip: Callable[[float], int], c: float, k: float) -> tuple[int, float]:
    """(B_t, lr_t) from the probe's lr*_T per batch size (module docstring); ``clip`` rounds and
    clips a batch size. ValueError where no lr*_T is finite and positive."""
    bs = np.array(sorted(lrs), dtype=np.float64)
    y = np.array([lrs[int(b)] for b in bs], dtype=np.float64)
    ok = np.isfinite(y) & (y > 0)
    if not ok.any():
        raise ValueError("the probe found no finite optimal learning rate")
    peak = peak_batch_size(bs[ok], y[ok])[0]
    b = clip(c * peak)
    lr = k * math.exp(float(np.interp(math.log(b), np.log(bs[ok]), np.log(y[ok]))))
    return b, lr


def probe_trainer(trainer, batch_sizes: Sequence[int], seed: int, lr0: float) -> dict[int, float]:
    """lr*_T(B) per batch size at the trainer's current weights and Adam buffers: the multi-step
    probe on its data, the loss on its evaluation sample (``trainer.probe``), G over that sample."""
    model, loss_fn, opt = trainer.model, trainer.loss_fn, trainer.optimizer
    x, y = trainer.probe
    G, error = full_gradient(model, loss_fn, trainer.data, min(x.shape[0], trainer.data.n))
    buffers = dict(model.named_buffers())

    def sample_loss(params: dict) -> torch.Tensor:
        return loss_fn(functional_call(model, (params, buffers), (x,)), y)

    state = ProbeState(model, loss_fn, trainer.data, G, gradient_error=error, adam=_adam_state(opt, G.numel()),
                       population_loss=sample_loss)  # fmt: skip
    return {int(b): multistep_batch_size(state, int(b), steps=PROBE_STEPS, draws=PROBE_DRAWS, seed=seed,
                                         lr0=lr0).lr for b in batch_sizes}  # fmt: skip


def _adam_state(opt: torch.optim.Adam, dim: int) -> AdamState:
    """The optimizer's buffers, flattened in parameter order (zeros before its first step)."""
    group = opt.param_groups[0]
    beta1, beta2 = group["betas"]
    params = [p for g in opt.param_groups for p in g["params"]]
    states = [opt.state.get(p, {}) for p in params]
    if any("exp_avg" not in s for s in states):
        return AdamState.zeros(dim, beta1=float(beta1), beta2=float(beta2), eps=float(group["eps"]))
    flat = lambda key: torch.cat([s[key].reshape(-1).to(torch.float64) for s in states])  # noqa: E731
    return AdamState(flat("exp_avg"), flat("exp_avg_sq"), int(float(states[0]["step"])), float(beta1), float(beta2),
                     float(group["eps"]))  # fmt: skip
