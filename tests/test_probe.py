"""surgesim.workloads.probe: Lemma 1 measured with real minibatches and exact Hessian-vector
products. The torch quadratic (``workloads.quadratic``) has a known answer: eq 9 for independent
per-example noise, ``optimal_lr_correlated`` for correlated noise; the probe must agree within
4 of its own standard errors, and those errors must be calibrated (z-scores over seeds)."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from surgesim import theory  # noqa: E402
from surgesim.correlated import optimal_lr_correlated  # noqa: E402
from surgesim.hessian import Dense, Diagonal, DiagonalPlusLowRank  # noqa: E402
from surgesim.problem import QuadraticProblem  # noqa: E402
from surgesim.workloads import probe, probe_state  # noqa: E402
from surgesim.workloads.quadratic import quadratic_state  # noqa: E402

BATCH_SIZES = (1, 4, 16, 64, 256, 1024)


def coupled_problem(d: int = 16, seed: int = 0, snr: tuple[float, float] = (0.03, 0.1)) -> QuadraticProblem:
    """Diagonal + rank-2 H positive along sign(mu), written out here (not a package family), with
    |mu|/sigma in ``snr``: eq 9 then rises, peaks and falls over BATCH_SIZES."""
    rng = np.random.default_rng(seed)
    s = rng.choice([-1.0, 1.0], d)
    sigma = np.exp(rng.uniform(-0.5, 0.5, d))
    mu = s * sigma * np.exp(rng.uniform(np.log(snr[0]), np.log(snr[1]), d))
    U = s[:, None] * rng.uniform(0.5, 1.0, (d, 2))
    return QuadraticProblem(mu, sigma, DiagonalPlusLowRank(np.exp(rng.uniform(-0.5, 0.5, d)), U))


@pytest.fixture(scope="module")
def problem():
    return coupled_problem()


def test_probe_agrees_with_eq9_at_six_batch_sizes(problem):
    state = quadratic_state(problem)
    exact = theory.optimal_lr(np.array(BATCH_SIZES, float), problem.mu, problem.sigma, problem.hessian)
    assert np.argmax(exact) not in (0, len(BATCH_SIZES) - 1)  # the curve has an interior peak
    for B, lr in zip(BATCH_SIZES, exact, strict=True):
        e = probe.probe_batch_size(state, B, rel_se=0.05, hessian_examples=1, seed=B)
        assert e.converged and e.lr_se <= 0.05 * e.lr * 1.0001
        assert abs(e.lr - lr) < 4 * e.lr_se, (B, e.lr, e.lr_se, lr)
        dl = float(theory.optimal_loss_improvement(B, problem.mu, problem.sigma, problem.hessian))
        assert abs(e.loss_improvement - dl) < 4 * e.loss_improvement_se


def test_probe_standard_errors_are_calibrated(problem):
    """z = (lr - eq 9) / se over 40 seeds: mean near 0 and spread near 1 (a se 2x too small or too
    large fails: the spread's sampling error over 40 seeds is about 0.11)."""
    state = quadratic_state(problem)
    B = 16
    exact = float(theory.optimal_lr(B, problem.mu, problem.sigma, problem.hessian))
    z = []
    for seed in range(40):
        e = probe.probe_batch_size(state, B, draws=256, hessian_examples=1, seed=seed)
        z.append((e.lr - exact) / e.lr_se)
    z = np.array(z)
    assert abs(z.mean()) < 3 / math.sqrt(z.size)
    assert 0.7 < z.std(ddof=1) < 1.35, z


def test_probe_agrees_with_correlated_theory():
    """Per-example noise diag(D) + F F' with strongly correlated coordinates: the probe follows
    optimal_lr_correlated, and eq 9 (independence) is off by many standard errors."""
    rng = np.random.default_rng(3)
    d = 10
    mu = rng.choice([-1.0, 1.0], d) * rng.uniform(0.025, 0.075, d)
    D = np.full(d, 0.2)
    F = np.abs(rng.normal(size=(d, 1))) * 0.9 + 0.3  # one common noise factor: correlations ~0.8
    H = Dense(np.eye(d) + 0.5 * np.ones((d, d)))  # curvature along the factor: tr(H E[VV']) grows
    problem = QuadraticProblem(mu, np.sqrt(D + (F * F).sum(1)), H)
    state = quadratic_state(problem, noise_factor=F)
    off = 0
    for B in (1, 16, 256):
        e = probe.probe_batch_size(state, B, rel_se=0.03, hessian_examples=1, seed=B)
        exact = float(optimal_lr_correlated(B, mu, (D, F), H.matrix))
        assert abs(e.lr - exact) < 4 * e.lr_se, (B, e.lr, e.lr_se, exact)
        independent = float(theory.optimal_lr(B, problem.mu, problem.sigma, H))
        off = max(off, abs(e.lr - independent) / e.lr_se)
    assert off > 10  # eq 9 is about 2x off here: the test tells correlated from independent theory


def test_scales_match_closed_forms(problem):
    """B_simple = tr(Sigma)/|G|^2 and B_crit = tr(H Sigma)/G'HG with Sigma = diag(sigma^2), within
    4 of their standard errors; eq 14 from the debiased statistics near the exact one."""
    state = quadratic_state(problem)
    s = probe.state_statistics(state, examples=512, hessian_examples=1, probes=64, crit_examples=512)
    mu, var, H = problem.mu, problem.sigma**2, problem.hessian
    b_simple = var.sum() / (mu @ mu)
    b_crit = float(np.sum(H.diag() * var) / (mu @ H.matvec(mu)))
    assert abs(s.b_simple - b_simple) < 4 * s.b_simple_se
    assert abs(s.b_crit - b_crit) < 4 * s.b_crit_se
    # Hutchinson on diag + low rank with 64 probes: tr(H) within 4 of its own error bar.
    assert s.hessian_trace == pytest.approx(H.trace(), rel=0.15)


def test_gaussian_and_independent_predictors_on_a_diagonal_problem():
    """With diagonal H (Hutchinson's diag exact), a large statistics sample and independent noise,
    the Gaussian model and eq 9 from statistics both approach eq 9 itself; the Gaussian numerator
    is eq 35's closed form from the sample sigma."""
    rng = np.random.default_rng(5)
    d = 8
    mu = rng.choice([-1.0, 1.0], d) * rng.uniform(0.05, 0.2, d)
    sigma = rng.uniform(0.5, 1.5, d)
    problem = QuadraticProblem(mu, sigma, Diagonal(rng.uniform(0.5, 2.0, d)))
    state = quadratic_state(problem)
    s = probe.state_statistics(state, examples=4096, hessian_examples=1, probes=2, crit_examples=4)
    for B in (1, 64, 1024):
        exact = float(theory.optimal_lr(B, mu, sigma, problem.hessian))
        g = probe.gaussian_batch_size(state, s, B, rel_se=0.01, seed=1)
        ind = probe.independent_curve(state, s, [B])[0]
        # sigma from 4096 examples: relative error ~ 1/sqrt(2 * 4096) ~ 1%, so 5% bounds both.
        assert g.lr == pytest.approx(exact, rel=0.05 + 4 * g.lr_se / g.lr)
        assert ind.lr == pytest.approx(exact, rel=0.05)
        num = float(mu @ theory.sign_mean(B, mu, s.sigma.numpy()))
        assert g.mean_a == pytest.approx(num, rel=1e-12)


def test_adam_update_matches_torch_adam():
    """AdamState.update with the buffers of a real torch Adam equals the step torch takes (lr = 1)."""
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(7, dtype=torch.float64))
    opt = torch.optim.Adam([p], lr=1.0, betas=(0.8, 0.95), eps=1e-6)
    for _ in range(3):
        p.grad = torch.randn(7, dtype=torch.float64)
        opt.step()
    st = opt.state[p]
    adam = probe.AdamState(st["exp_avg"].clone(), st["exp_avg_sq"].clone(), int(st["step"]), 0.8, 0.95, 1e-6)
    g = torch.randn(7, dtype=torch.float64)
    before = p.detach().clone()
    p.grad = g.clone()
    opt.step()
    torch.testing.assert_close(adam.update(g), before - p.detach(), rtol=1e-12, atol=1e-14)
    # From zero buffers, the first step is g / (|g| + eps): sign-like.
    first = probe.AdamState.zeros(7, eps=1e-12).update(g)
    torch.testing.assert_close(first, torch.sign(g), rtol=1e-9, atol=0)


def test_probe_is_reproducible_and_independent_of_chunking(problem):
    a = probe.probe_batch_size(quadratic_state(problem, chunk=4096), 64, draws=96, hessian_examples=3, seed=7)
    b = probe.probe_batch_size(quadratic_state(problem, chunk=50), 64, draws=96, hessian_examples=3, seed=7)
    c = probe.probe_batch_size(quadratic_state(problem), 64, draws=96, hessian_examples=3, seed=8)
    assert a.lr == pytest.approx(b.lr, rel=1e-12) and a.lr_se == pytest.approx(b.lr_se, rel=1e-9)
    assert a.lr != c.lr


def test_minibatch_rows_are_distinct():
    gen = torch.Generator().manual_seed(0)
    for n, b in ((10, 10), (1000, 30), (50, 8)):
        idx = probe_state.distinct_rows(gen, n, 200, b)
        assert idx.shape == (200, b) and int(idx.min()) >= 0 and int(idx.max()) < n
        assert all(len(set(row.tolist())) == b for row in idx)
    counts = np.bincount(probe_state.distinct_rows(gen, 20, 4000, 5).reshape(-1).numpy(), minlength=20)
    assert counts.min() > 0.85 * counts.mean() and counts.max() < 1.15 * counts.mean()  # uniform
    with pytest.raises(ValueError, match="larger than the data set"):
        probe_state.distinct_rows(gen, 5, 1, 6)


def test_peak_batch_size():
    B = 2.0 ** np.arange(8)
    lr = np.exp(-((np.log(B) - np.log(11.0)) ** 2))  # log-parabola peaking at B = 11
    peak, low, high, interior = probe.peak_batch_size(B, lr, 0.01 * lr)
    assert interior and peak == pytest.approx(11.0, rel=1e-6) and low < 11 < high
    peak, low, high, interior = probe.peak_batch_size(B, B, 0.01 * B)  # rising: the right edge
    assert not interior and peak == 128 and math.isnan(high) and low < 128
    peak, low, high, interior = probe.peak_batch_size(B, np.full(8, np.nan))  # nothing to locate
    assert math.isnan(peak) and math.isnan(low) and math.isnan(high) and not interior


def test_bad_options(problem):
    state = quadratic_state(problem)
    with pytest.raises(ValueError, match="at most one"):
        probe.probe_batch_size(state, 4, rel_se=0.1, draws=10)
    with pytest.raises(ValueError, match="rel_se"):
        probe.probe_batch_size(state, 4, rel_se=2.0)
    with pytest.raises(ValueError, match="update"):
        probe.probe_batch_size(state, 4, draws=10, update="lion")
    with pytest.raises(ValueError, match="batch sizes"):
        probe.probe_batch_size(state, 0, draws=10)


def test_sweep_tasks_build_each_state_once(monkeypatch):
    """A state (G over the data, per-example statistics) is built once per process, not per task."""
    from surgesim.problem import surge_problem
    from surgesim.workloads import probing

    builds = []
    real = probing.quadratic_state
    monkeypatch.setattr(probing, "quadratic_state", lambda *a, **k: builds.append(1) or real(*a, **k))
    options = {"update": "sign", "rel_se": None, "draws": 16, "max_draws": 1 << 18, "seed": 0, "hessian_examples": 2,
               "stats_examples": 8, "probes": 2, "crit_examples": 2,
               "adam": {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8}}  # fmt: skip
    problem = surge_problem(12, 0)
    rows = [probing.problem_task(t, problem) for t in probing.task_list([{}], [1, 4, 16], options)]
    assert len(builds) == 1 and [r["batch_size"] for r in rows] == [None, 1, 4, 16]


def test_sampled_full_gradient_error_is_the_directional_variance():
    """With G from a sample of m of n examples, error(v) = var_j(g_j'v) / m (1 - m/n), checked
    against per-example gradients computed one example at a time."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))
    X, Y = torch.randn(40, 5), torch.randint(0, 3, (40,))

    class Data:
        n = 40

        def take(self, idx):
            return X[idx], Y[idx]

    G, error = probe.full_gradient(model, F.cross_entropy, Data(), examples=25, chunk=7)
    idx = torch.randperm(40, generator=torch.Generator().manual_seed(1))[:25]
    params = list(model.parameters())
    per = torch.stack([torch.cat([g.reshape(-1) for g in torch.autograd.grad(
        F.cross_entropy(model(X[j : j + 1]), Y[j : j + 1]), params)]) for j in idx]).double()  # fmt: skip
    torch.testing.assert_close(G, per.mean(0), rtol=1e-5, atol=1e-7)
    v = torch.randn(G.numel(), dtype=torch.float64)
    assert error(v) == pytest.approx(float((per @ v).var()) / 25 * (1 - 25 / 40), rel=1e-5)
    assert probe.full_gradient(model, F.cross_entropy, Data())[1] is None  # the whole data set: exact
