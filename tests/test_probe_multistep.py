"""The multi-step probe (``probe.multistep_batch_size``, issue 21 item 3): the optimal learning rate
of T real Adam steps from a state. On the torch quadratic (exact Gaussian per-example gradients)
T = 1 must reproduce Lemma 1 (eq 9 for sign-like Adam, the one-step probe for Adam with buffers),
and T > 1 an independent NumPy implementation of T Adam steps on the same quadratic, evaluated
with 40,000 draws (its own error far below the probe's)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from test_probe import coupled_problem  # noqa: E402

from surgesim import theory  # noqa: E402
from surgesim.workloads import probe  # noqa: E402
from surgesim.workloads.quadratic import quadratic_state  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def problem():
    return coupled_problem()


def numpy_adam_optimum(problem, B, T, lrs, m0, v0, step0, beta1, beta2, eps, draws=40_000, seed=0):
    """argmax over ``lrs`` (then a parabola in lr through the best 5) of the mean decrease of
    mu'theta + theta'H theta/2 after T Adam steps from theta = 0, minibatch gradients
    mu + H theta + sigma xi / sqrt(B) (xi standard normal), common random numbers across lrs."""
    rng = np.random.default_rng(seed)
    h = problem.hessian  # diagonal + low rank, written out densely here
    mu, sigma, H = problem.mu, problem.sigma, np.diag(h.h) + h.factor @ h.factor.T
    xi = rng.standard_normal((T, draws, mu.size)) * sigma / np.sqrt(B)
    mean = []
    for lr in lrs:
        th = np.zeros((draws, mu.size))
        m, v = np.tile(m0, (draws, 1)), np.tile(v0, (draws, 1))
        for t in range(T):
            g = mu + th @ H + xi[t]
            m = beta1 * m + (1 - beta1) * g
            v = beta2 * v + (1 - beta2) * g * g
            s = step0 + t + 1
            th = th - lr * (m / (1 - beta1**s)) / (np.sqrt(v / (1 - beta2**s)) + eps)
        mean.append(float(np.mean(-(th @ mu + 0.5 * ((th @ H) * th).sum(1)))))
    k = int(np.clip(np.argmax(mean), 2, len(lrs) - 3))
    c2, c1, _ = np.polyfit(lrs[k - 2 : k + 3], mean[k - 2 : k + 3], 2)
    return -c1 / (2 * c2)


def test_one_step_is_lemma_1(problem):
    """T = 1 with Adam(0, 0) from zero buffers is sign descent: eq 9 within 4 s.e.; with Adam(0.9,
    0.999) buffers it agrees with the one-step probe of the same Adam step within 4 combined s.e."""
    st = quadratic_state(problem, adam=probe.AdamState.zeros(problem.dim, beta1=0.0, beta2=0.0, eps=1e-12))
    for B in (16, 256):
        e = probe.multistep_batch_size(st, B, steps=1, rel_se=0.05, seed=B)
        exact = float(theory.optimal_lr(B, problem.mu, problem.sigma, problem.hessian))
        assert e.converged and abs(e.lr - exact) < 4 * e.lr_se, (B, e.lr, e.lr_se, exact)
    rng = np.random.default_rng(1)
    d = problem.dim
    m0 = torch.from_numpy(problem.mu + 0.5 * problem.sigma * rng.standard_normal(d))
    v0 = torch.from_numpy(problem.sigma**2 * rng.uniform(0.5, 1.5, d))
    st = quadratic_state(problem, adam=probe.AdamState(m0, v0, 20, 0.9, 0.999, 1e-8))
    e = probe.multistep_batch_size(st, 16, steps=1, rel_se=0.05, seed=3)
    one = probe.probe_batch_size(st, 16, update="adam", rel_se=0.03, hessian_examples=1, seed=3)
    assert abs(e.lr - one.lr) < 4 * np.hypot(e.lr_se, one.lr_se), (e.lr, e.lr_se, one.lr, one.lr_se)


@pytest.mark.parametrize("T, buffers", [(4, False), pytest.param(8, True, marks=pytest.mark.slow)])
def test_several_steps_match_numpy(problem, T, buffers):
    rng = np.random.default_rng(2)
    d = problem.dim
    if buffers:  # the checkpoint's buffers after 20 steps
        m0, v0, step0 = problem.mu + 0.5 * problem.sigma * rng.standard_normal(d), problem.sigma**2, 20
    else:  # a fresh Adam
        m0, v0, step0 = np.zeros(d), np.zeros(d), 0
    adam = probe.AdamState(torch.from_numpy(m0), torch.from_numpy(v0), step0, 0.9, 0.999, 1e-8)
    st = quadratic_state(problem, adam=adam)
    e = probe.multistep_batch_size(st, 16, steps=T, rel_se=0.04, seed=T)
    lrs = e.lr * np.geomspace(0.7, 1.45, 15)
    ref = numpy_adam_optimum(problem, 16, T, lrs, m0, v0, step0, 0.9, 0.999, 1e-8)
    assert e.converged and abs(e.lr - ref) < 4 * e.lr_se, (T, e.lr, e.lr_se, ref)


def test_reproducible_and_warmup(problem):
    st = quadratic_state(problem, adam=probe.AdamState.zeros(problem.dim))
    a = probe.multistep_batch_size(st, 16, steps=2, draws=32, seed=5)
    b = probe.multistep_batch_size(st, 16, steps=2, draws=32, seed=5)
    assert a == b
    w = probe.multistep_batch_size(st, 16, steps=2, warmup=3, draws=32, seed=5)
    assert w.lr != a.lr and w.gradient_examples > a.gradient_examples


def test_bad_options(problem):
    st = quadratic_state(problem)
    with pytest.raises(ValueError, match="steps"):
        probe.multistep_batch_size(st, 4, steps=0, draws=16)
    with pytest.raises(ValueError, match="warmup"):
        probe.multistep_batch_size(st, 4, steps=2, warmup=-1, draws=16)
    bad = quadratic_state(problem, adam=probe.AdamState.zeros(problem.dim, beta1=1.0))
    with pytest.raises(ValueError, match="beta1"):
        probe.multistep_batch_size(bad, 4, steps=2, draws=16)


def test_loss_sample_is_the_loss_evaluated():
    """``loss_sample``: the mean loss over those examples is the L of the decrease. All examples as
    the sample give the full-data probe (the same draws and learning rates; the losses summed in
    another order); a 16-example sample costs draws x lr points x 16 example-losses."""
    from _mlp_exact import mlp_data

    model, loss_fn, X, Y = mlp_data()
    st = probe.model_state(model, loss_fn, X, Y)
    full = probe.multistep_batch_size(st, 8, steps=2, draws=32, seed=3)
    same = probe.multistep_batch_size(st, 8, steps=2, draws=32, seed=3, loss_sample=(X, Y))
    assert same.lr_points == full.lr_points and same.draws == full.draws
    np.testing.assert_allclose([same.lr, same.loss_improvement], [full.lr, full.loss_improvement], rtol=1e-5)
    sub = probe.multistep_batch_size(st, 8, steps=2, draws=32, seed=3, loss_sample=(X[:16], Y[:16]))
    assert sub.loss_examples == sub.draws * sub.lr_points * 16
    assert full.loss_examples == full.draws * full.lr_points * X.shape[0]
    assert sub.loss_improvement != full.loss_improvement  # another loss: a planted no-op fails here
