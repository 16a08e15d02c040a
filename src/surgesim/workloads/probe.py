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
them (``probe_statistics.state_statistics``), so no term holds an example's own Hessian (that biased B_crit up).

Updates: ``sign`` (the theory's object) or ``adam``: one Adam step from the state's moment buffers
(m, v, step; zeros at step 0 make it sign-like), V = m_hat / (sqrt(v_hat) + eps). The multi-step
probe (``multistep_batch_size``) measures the optimal learning rate of T real Adam steps instead.

The model is in eval mode throughout (BatchNorm with its running statistics, no dropout), so a
minibatch gradient is the mean of its per-example gradients. Every random number is drawn from a
``torch.Generator`` seeded by ``surgesim.rng.stream_key(seed, B, block)`` for fixed blocks of
draws, so an estimate depends on (state, seed, options) and not on how the draws are grouped.

Where each part lives: ``probe_state`` (the state, G, Adam's buffers, the random-number blocks),
``probe_statistics`` (B_simple, B_crit, eq 14 and the per-example statistics), ``probe_estimators``
(the three lr*(B) estimators, their errors, the peak batch size), ``probe_multistep`` (T Adam
steps). This module re-exports their public names; ``probing`` holds the sweep tasks.
"""

from __future__ import annotations

from .probe_estimators import CurvePoint, gaussian_batch_size, independent_curve, peak_batch_size, probe_batch_size
from .probe_multistep import MultiStepPoint, multistep_batch_size
from .probe_state import UPDATES, AdamState, ProbeState, TensorData, full_gradient, model_state
from .probe_statistics import StateStatistics, state_statistics

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
