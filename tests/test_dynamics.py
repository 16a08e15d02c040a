"""Multi-step dynamics: the Numba kernels against the NumPy reference, the optimizers' limits, the
target bookkeeping, reproducibility, eq 22, the protocol, and ``python -m sims.dynamics``."""

from __future__ import annotations

import csv
import json
import math

import numba
import numpy as np
import pytest
from scipy import linalg, stats

from surgesim import dynamics, gridsearch, rng, theory
from surgesim._jit import jit
from surgesim.fit import fit_noise_batch_size
from surgesim.hessian import Dense, Diagonal, DiagonalPlusLowRank
from surgesim.kernels.dynamics import (
    Optimizer,
    StepRule,
    run_trajectories,
    step_normals,
    trajectory_key,
)
from surgesim.kernels.dynamics import normal_pair as kernel_normal_pair
from surgesim.problem import QuadraticProblem, surge_problem
from surgesim.reference.dynamics import run_rule_trajectories as reference_rule_trajectories
from surgesim.reference.dynamics import run_trajectories as reference_trajectories


def _hessians(d: int = 7, k: int = 2):
    """The three kinds of H on one problem: diagonal + low rank, the same dense, and its diagonal."""
    g = np.random.default_rng(3)
    h = g.uniform(0.5, 2.0, d)
    U = g.uniform(0.2, 0.6, (d, k)) * g.choice([-1.0, 1.0], d)[:, None]
    low = DiagonalPlusLowRank(h, U)
    return {"lowrank": low, "dense": Dense(low.to_dense()), "diagonal": Diagonal(h)}


HESSIANS = _hessians()
SIGMA = np.linspace(0.5, 1.5, 7)
DELTA0 = np.linspace(-1.0, 1.0, 7) + 0.3  # d = 7 is odd: the last Box-Muller pair is half used
KEYS = np.array([trajectory_key(11, 4, r) for r in range(3)], dtype=np.uint64)
BATCH = np.array([1.0, 4.0, 64.0])
OPTIMIZERS = {
    "sign": (Optimizer("sign"), np.array([0.01, 0.02, 0.005])),
    "adam": (Optimizer("adam", 0.9, 0.999, 1e-8), np.array([0.01, 0.02, 0.005])),
    "adam00": (Optimizer("adam", 0.0, 0.0, 1e-8), np.array([0.01, 0.02, 0.005])),
    "sgd": (Optimizer("sgd"), np.array([0.05, 0.1, 0.2])),
    "sgd-momentum": (Optimizer("sgd", 0.9), np.array([0.05, 0.1, 0.2])),
    "lion": (Optimizer("lion", 0.9, 0.99), np.array([0.01, 0.02, 0.005])),
}


@pytest.mark.parametrize("hess", sorted(HESSIANS))
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_kernel_matches_numpy_reference_step_by_step(name, hess):
    # Same random numbers, same arithmetic up to the order of floating-point sums (the kernel
    # reassociates its reductions): agreement to ~1e-15 per step, and sign decisions only differ
    # if some |g_i| is within ~1e-15 of 0, which these seeds never produce. rtol 1e-9 leaves
    # room for the slow growth of rounding differences over 60 steps.
    opt, lr = OPTIMIZERS[name]
    H = HESSIANS[hess]
    n = 60
    got = run_trajectories(H, SIGMA, DELTA0, KEYS, lr, BATCH, opt, max_steps=n, min_steps=n, trace_steps=n + 1)
    ref = reference_trajectories(H, SIGMA, DELTA0, KEYS, lr, BATCH, opt, n)
    assert np.all(got.n_steps == n)
    np.testing.assert_allclose(got.trace, ref["trace"], rtol=1e-9)
    for field in ("delta", "m", "v"):
        np.testing.assert_allclose(getattr(got, field), ref[field], rtol=1e-9, atol=1e-12)
    assert np.ptp(got.trace[:, -1]) > 0  # the three trajectories really differ


RULES = {
    "optimal-sign": (StepRule("optimal"), "sign", 1.0, np.array([2.0, 4.0, 64.0])),
    "optimal-sgd": (StepRule("optimal"), "sgd", 1.0, np.array([2.0, 4.0, 64.0])),
    "oracle-adam": (StepRule("optimal", "noise", beta=0.8, batch_max=500), "adam", 1.0, np.array([0.5, 1.0, 2.0])),
    "online-sign": (
        StepRule("estimated", "noise_estimated", warmup=3, batch_min=2, batch_max=500), "sign", 1.0,
        np.array([0.5, 1.0, 2.0]),
    ),
    "critical-sgd": (
        StepRule("estimated", "critical_estimated", warmup=3, batch_min=2, batch_max=500), "sgd", 1.0,
        np.array([0.5, 1.0, 2.0]),
    ),
    "geometric-lion": (
        StepRule("geometric", "geometric", interval=7, batch_factor=1.5, lr_factor=0.8), "lion", 0.01,
        np.array([2.0, 4.0, 64.0]),
    ),
}  # fmt: skip


@pytest.mark.parametrize("hess", ["lowrank", "dense"])
@pytest.mark.parametrize("name", sorted(RULES))
def test_step_rules_match_numpy_reference_step_by_step(name, hess):
    # The per-step rules (optimal lr, batch-size schedules, running estimates) and the path integrals
    # against the reference, which computes eq 9 / eq 1 / eq 14 / eq 19 with surgesim.theory at each
    # state, one trajectory at a time. Same random numbers; the arithmetic differs in the order of
    # sums only (tolerances as in the test above). The kernel records the path integrals at its
    # targets: targets at the reference's running minimum of the loss after 10, 20, 30 steps are
    # first reached at steps the reference's trace gives.
    rule, opt_name, lr, B = RULES[name]
    opt = dynamics.DEFAULT_OPTIMIZERS[opt_name]
    H, n = HESSIANS[hess], 30
    ref = reference_rule_trajectories(H, SIGMA, DELTA0, KEYS, lr, B, opt, n, rule)
    for t in range(3):
        targets = [np.min(ref["trace"][t, : k + 1]) * (1 + 1e-9) for k in (10, 20, 30)]  # above rounding
        got = run_trajectories(H, SIGMA, DELTA0, KEYS[t : t + 1], lr, B[t], opt, targets, max_steps=n, min_steps=n,
                               trace_steps=n + 1, rule=rule, path=True)  # fmt: skip
        np.testing.assert_allclose(got.trace[0], ref["trace"][t], rtol=1e-9)
        np.testing.assert_array_equal(got.batch_trace[0, :n], ref["batch"][t])
        np.testing.assert_allclose(got.lr_trace[0, :n], ref["lr"][t], rtol=1e-9)
        np.testing.assert_allclose(got.delta[0], ref["delta"][t], rtol=1e-9, atol=1e-12)
        for j, target in enumerate(targets):
            s = int(np.nonzero(ref["trace"][t] <= target)[0][0])
            assert got.steps[0, j] == s
            assert got.examples_at[0, j] == ref["examples"][t, s]
            for field in ("path_ds", "path_bds"):
                np.testing.assert_allclose(getattr(got, field)[0, j], ref[field][t, s], rtol=1e-8, atol=1e-12)
    assert len(np.unique(ref["batch"])) > 1 or rule.batch == "constant"  # the batch size does vary


def test_constant_rule_through_the_general_loop_is_the_plain_run():
    # path=True runs the general loop; with the constant rule it must be the same trajectory.
    opt, lr = OPTIMIZERS["adam"]
    plain = run_trajectories(HESSIANS["lowrank"], SIGMA, DELTA0, KEYS, lr, BATCH, opt, max_steps=40, min_steps=40,
                             trace_steps=41)  # fmt: skip
    general = run_trajectories(HESSIANS["lowrank"], SIGMA, DELTA0, KEYS, lr, BATCH, opt, max_steps=40,
                                    min_steps=40, trace_steps=41, path=True)  # fmt: skip
    np.testing.assert_array_equal(plain.trace, general.trace)
    np.testing.assert_array_equal(plain.batch_trace[:, :40], np.repeat(BATCH[:, None], 40, axis=1))


def test_path_integrals_match_quadrature_of_the_gradient_flow():
    # SGD with a tiny learning rate and B = 1e12 (noise ~1e-6 of the gradient) follows the gradient
    # flow delta(tau) = exp(-H tau) delta0, along which dL = |G|^2 dtau, so McCandlish's
    # ds = dL / dL_max = 2 G'HG / |G|^2 dtau and B_noise ds = 2 tr(H Sigma) / |G|^2 dtau. Their
    # integrals up to the step time tau = lr * S at which the kernel reached each target, by
    # adaptive quadrature (scipy.integrate.quad) on H's eigendecomposition, must equal the
    # kernel's Riemann sums up to the discretisation, O(lr lambda_max) = 2e-3: rtol 1e-2.
    from scipy import integrate

    H = HESSIANS["dense"]
    lam, Q = np.linalg.eigh(H.matrix)
    c0 = Q.T @ DELTA0
    ths = float(np.diag(H.matrix) @ SIGMA**2)
    lr = 1e-3
    L0 = 0.5 * DELTA0 @ H.matvec(DELTA0)
    targets = np.array([0.5, 0.2, 0.05]) * L0
    res = run_trajectories(H, SIGMA, DELTA0, KEYS[:1], lr, 1e12, Optimizer("sgd"), targets, max_steps=10**5,
                           path=True)  # fmt: skip

    def flow(tau):
        c = c0 * np.exp(-lam * tau)  # delta in the eigenbasis; G = lam c
        g2 = np.sum((lam * c) ** 2)
        return np.sum(lam**3 * c**2), g2

    for j in range(3):
        tau = lr * res.steps[0, j]
        s_min = integrate.quad(lambda x: 2 * flow(x)[0] / flow(x)[1], 0, tau, epsabs=0, epsrel=1e-10)[0]
        e_min = integrate.quad(lambda x: 2 * ths / flow(x)[1], 0, tau, epsabs=0, epsrel=1e-10)[0]
        assert res.path_ds[0, j] == pytest.approx(s_min, rel=1e-2)
        assert res.path_bds[0, j] == pytest.approx(e_min, rel=1e-2)


def test_step_rule_rejects_bad_input_and_the_gpu_loop_refuses_rules():
    with pytest.raises(ValueError, match="lr rule must be one of"):
        StepRule("best")
    with pytest.raises(ValueError, match="interval=0"):
        StepRule(interval=0)
    with pytest.raises(ValueError, match="batch_min=1.0 must be >= 2"):
        StepRule("estimated", "noise_estimated")
    from surgesim.kernels import dynamics as kd

    def other_backend(*args):
        raise AssertionError("must not be called")

    constant_only = kd.TrajectoryLoop(other_backend, general=False)
    with pytest.raises(ValueError, match="CPU backend only"):
        kd.drive_trajectories(constant_only, HESSIANS["dense"], SIGMA, DELTA0, KEYS, 0.01, 4.0, Optimizer("sign"),
                              rule=StepRule("optimal"))  # fmt: skip


def test_drive_trajectories_hands_a_loop_seven_groups_built_once():
    # The host driver that both backends share: one call of the loop with the seven groups of
    # loop_arguments, targets sorted in decreasing order, scalars as Python int/float/bool (one
    # compiled signature), and through the Numba loop the same results as run_trajectories, every
    # record written (the loop unpacks the groups outside its prange, numba/numba#5872).
    from surgesim.kernels import dynamics as kd
    from surgesim.kernels import loop_arguments as la

    calls = []

    def spy(*groups):
        calls.append(groups)
        kd.NUMBA_LOOP.run(*groups)

    opt, lr = OPTIMIZERS["adam"]
    kw = dict(targets=(0.5, 2.0), further_steps=2, max_steps=60, trace_steps=5, rule=StepRule("optimal"), path=True)
    got = kd.drive_trajectories(kd.TrajectoryLoop(spy, general=True), HESSIANS["lowrank"], SIGMA, DELTA0, KEYS, lr,
                                BATCH, opt, **kw)  # fmt: skip
    want = run_trajectories(HESSIANS["lowrank"], SIGMA, DELTA0, KEYS, lr, BATCH, opt, **kw)
    assert len(calls) == 1
    groups = la.LoopArguments(*calls[0])
    assert [type(g) for g in groups] == [la.Quadratic, la.OptimizerConstants, la.RuleConstants, la.Horizon,
                                         la.PerTrajectory, la.State, la.Records]  # fmt: skip
    assert groups.horizon.targets.tolist() == [2.0, 0.5]
    for group in groups:
        for name, x in group._asdict().items():
            assert isinstance(x, np.ndarray) or type(x) in (int, float, bool), (type(group).__name__, name, type(x))
    for name in got.__dataclass_fields__:
        assert np.array_equal(getattr(got, name), getattr(want, name), equal_nan=True), name
    reached = got.steps[:, 1] >= 0
    assert np.all(got.n_steps == 60) and reached.any() and np.all(np.isfinite(got.path_ds[reached, 1]))


# --- the closed forms of the protocol against surgesim.theory ------------------------------------


def _random_states(H, n=5, seed=0):
    g = np.random.default_rng(seed)
    return g.normal(0.0, 0.3, (n, H.dim)) + 0.2


@pytest.mark.parametrize("hess", sorted(HESSIANS))
def test_state_quantities_are_the_theory_at_each_state(hess):
    # Each row's ingredients must combine into surgesim.theory's closed forms at that state:
    # off_diagonal is eq 14's sum without the diagonal, eq9_numerator / eq9_denominator is eq 9 at
    # the run's B (E_i = erf(sqrt(B/2) r_i)), signal is S of eq 13/16/19. rtol 1e-12: the same
    # sums in another order.
    H = HESSIANS[hess]
    deltas = _random_states(H)
    for B in (1.0, 16.0, 500.0):
        q = gridsearch.task._state_quantities(H, SIGMA, B, deltas)
        for k, delta in enumerate(deltas):
            mu = H.matvec(delta)
            r = mu / SIGMA
            assert q["off_diagonal"][k] == pytest.approx(H.quad_off_diagonal(r), rel=1e-12, abs=1e-12)
            assert q["eq9_numerator"][k] / q["eq9_denominator"][k] == pytest.approx(
                float(theory.optimal_lr(B, mu, SIGMA, H)), rel=1e-12
            )
            assert q["signal"][k] == pytest.approx(np.sum(mu * mu / SIGMA), rel=1e-12)
            assert q["grad_hgrad"][k] == pytest.approx(float(H.quad_rows(mu)), rel=1e-12)


@pytest.mark.parametrize("name", ["sign", "sgd"])
def test_predict_at_one_known_state_is_the_theory(name):
    # An ensemble of rows that all sit at one state: its predictions must be the closed forms at
    # that state: B_noise (eq 14; tr(H Sigma) / G'HG for SGD), eps_max (eq 16; G'G / G'HG), and
    # eq 9 (eq 1) per batch size. rtol 1e-12.
    H = HESSIANS["lowrank"]
    problem = QuadraticProblem(H.matvec(DELTA0), SIGMA, H)
    delta = _random_states(H, 1, seed=4)
    Bs = np.array([1.0, 8.0, 64.0, 512.0])
    rows = []
    for B in Bs:
        q = gridsearch.task._state_quantities(H, SIGMA, B, delta)
        rows.append({"lr": 0.01, "batch_size": B, "steps": 10.0} | {k: float(v[0]) for k, v in q.items()})
    opt = dynamics.DEFAULT_OPTIMIZERS[name]
    bn, peak, pred = gridsearch.summary._predict(opt, problem, rows, Bs, np.ones(len(rows), dtype=bool))
    mu = H.matvec(delta[0])
    if name == "sign":
        assert bn == pytest.approx(theory.noise_batch_size(mu, SIGMA, H), rel=1e-12)
        assert peak == pytest.approx(theory.peak_lr(mu, SIGMA, H), rel=1e-12)
        np.testing.assert_allclose(pred, theory.optimal_lr(Bs, mu, SIGMA, H), rtol=1e-12)
    else:
        ghg = float(H.quad_rows(mu))
        assert bn == pytest.approx(float(H.diag() @ SIGMA**2) / ghg, rel=1e-12)
        assert peak == pytest.approx(float(mu @ mu) / ghg, rel=1e-12)
        np.testing.assert_allclose(pred, theory.sgd_optimal_lr(Bs, mu, SIGMA**2, H), rtol=1e-12)


def test_path_average_pools_the_runs_integrals():
    rows = [{"path_s_min": 2.0, "path_e_min": 100.0}, {"path_s_min": 3.0, "path_e_min": 500.0},
            {"path_s_min": None, "path_e_min": None}]  # fmt: skip
    assert dynamics.path_noise_batch_size(rows) == pytest.approx(600.0 / 5.0, rel=1e-15)
    assert math.isnan(dynamics.path_noise_batch_size(rows[2:]))


def test_reference_regenerates_the_kernels_normals():
    # One SGD step with delta0 = 0 moves delta by -lr * sigma / sqrt(B) * z: z itself, the first
    # step's normals, which the reference draws from rng.normals(key, 2 * ceil(d / 2), 0). The
    # kernel's Box-Muller is written without library calls and agrees up to rounding (atol 1e-14:
    # a normal is at most ~8.6 and each of log, sqrt, sin, cos is within ~1 ulp).
    H = HESSIANS["diagonal"]
    got = run_trajectories(H, SIGMA, np.zeros(7), KEYS, 1.0, 1.0, Optimizer("sgd"), max_steps=1, min_steps=1)
    for t, key in enumerate(KEYS):
        z = rng.normals(int(key), 8, 0)[:7]
        np.testing.assert_allclose(got.delta[t], -SIGMA * z, rtol=0, atol=1e-14)


@jit
def _pairs(key, n):
    out = np.empty((n, 4))
    for j in range(n):
        out[j, 0], out[j, 1] = kernel_normal_pair(key, j)
        out[j, 2], out[j, 3] = rng.normal_pair(key, j)
    return out


def test_kernel_normal_pair_is_rng_normal_pair_up_to_rounding_and_normal():
    # The same transform of the same words: |difference| within 1e-14 over 10^6 pairs (the largest
    # normal from 53-bit words is sqrt(2 * 53 ln 2) ~ 8.6, and each step is within ~1 ulp), so it
    # inherits rng.normal_pair's law. Also checked directly: KS test against N(0, 1) on 2 * 10^5
    # draws (seeded; reject at p < 1e-3), and independence of the pair's two members (|corr| <
    # 4.5 / sqrt(n)).
    pairs = _pairs(np.uint64(rng.stream_key(7, 1, 2)), 1_000_000)
    np.testing.assert_allclose(pairs[:, :2], pairs[:, 2:], rtol=0, atol=1e-14)
    z = pairs[:100_000, :2]
    assert stats.kstest(z.ravel(), "norm").pvalue > 1e-3
    assert abs(np.corrcoef(z[:, 0], z[:, 1])[0, 1]) < 4.5 / math.sqrt(z.shape[0])


def test_step_normals_are_the_kernels_normals():
    z = step_normals(KEYS, 5, 7)
    for t, key in enumerate(KEYS):
        np.testing.assert_allclose(z[t], rng.normals(int(key), 8, 4 * 4)[:7], rtol=0, atol=1e-14)  # as above


def test_adam_with_zero_betas_is_sign_sgd():
    # Appendix A, eq 29: with beta1 = beta2 = 0, u = g / (|g| + eps). With eps = 0 that is g / |g|,
    # +-1 up to one rounding (the kernels may divide by multiplying with a reciprocal): the same
    # sign decisions as sign-SGD, so the trajectories agree to n_steps * lr * 2^-52. With eps > 0
    # each step differs from sign(g) by eps / (|g| + eps) <= eps / |g| per coordinate.
    H = HESSIANS["lowrank"]
    lr, n = np.array([0.01, 0.02, 0.005]), 200
    kw = dict(max_steps=n, min_steps=n, trace_steps=n + 1)
    sign = run_trajectories(H, SIGMA, DELTA0, KEYS, lr, BATCH, Optimizer("sign"), **kw)
    exact = run_trajectories(H, SIGMA, DELTA0, KEYS, lr, BATCH, Optimizer("adam", 0.0, 0.0, 0.0), **kw)
    np.testing.assert_allclose(exact.delta, sign.delta, rtol=0, atol=n * float(lr.max()) * 2.0**-52)
    eps = 1e-10
    near = run_trajectories(H, SIGMA, DELTA0, KEYS, lr, BATCH, Optimizer("adam", 0.0, 0.0, eps), **kw)
    # |g| > 1e-6 at every step here (checked by the bound holding with a margin): the drift is
    # at most lr * n * eps / 1e-6 = 2e-6 lr per coordinate.
    np.testing.assert_allclose(near.delta, sign.delta, rtol=0, atol=float(lr.max()) * n * eps / 1e-6)
    assert not np.array_equal(near.delta, sign.delta)  # eps does act


def test_sgd_small_lr_follows_gradient_flow_within_noise():
    # SGD on a quadratic is linear: delta_t = A^t delta0 + noise with A = I - lr H, so
    # E[delta_t] = A^t delta0, which for lr -> 0 at fixed tau = lr t tends to the gradient flow
    # exp(-H tau) delta0, and Cov[delta_t] = C_inf - A^t C_inf A^t with C_inf = A C_inf A + lr^2
    # diag(sigma^2) / B (discrete Lyapunov equation). With lr = 1e-4 the discretisation error is
    # below a tenth of the standard error of the mean over T runs (checked), so the mean must agree
    # with the flow within 4.5 standard errors per coordinate (7 coordinates: p < 5e-5), and each
    # sample variance must lie in its chi-square 1e-5 two-sided interval.
    H = HESSIANS["dense"]
    lr, tau, T, B = 1e-4, 1.0, 256, 2.0
    n = int(round(tau / lr))
    keys = np.array([trajectory_key(5, 2, r) for r in range(T)], dtype=np.uint64)
    res = run_trajectories(H, SIGMA, DELTA0, keys, lr, B, Optimizer("sgd"), max_steps=n, min_steps=n)
    flow = linalg.expm(-H.matrix * tau) @ DELTA0
    A = np.eye(7) - lr * H.matrix
    An = np.linalg.matrix_power(A, n)
    c_inf = linalg.solve_discrete_lyapunov(A, np.diag(lr**2 * SIGMA**2 / B))
    var = np.diag(c_inf - An @ c_inf @ An.T)
    se = np.sqrt(var / T)
    assert np.all(np.abs(An @ DELTA0 - flow) < 0.1 * se)
    z = (res.delta.mean(axis=0) - flow) / se
    assert np.max(np.abs(z)) < 4.5, z
    ratio = res.delta.var(axis=0, ddof=1) / var
    lo, hi = stats.chi2.ppf([0.5e-5, 1 - 0.5e-5], T - 1) / (T - 1)
    assert np.all((lo < ratio) & (ratio < hi)), ratio


def test_targets_steps_and_further_decrease_agree_with_the_trace():
    H = HESSIANS["lowrank"]
    n = 400
    lr = np.array([0.02, 0.01, 0.003])
    L0 = 0.5 * DELTA0 @ H.matvec(DELTA0)
    targets = np.array([0.3, 0.6, 0.05, 1e-9]) * L0  # deliberately unsorted; the last is unreachable
    further = 7
    res = run_trajectories(
        H, SIGMA, DELTA0, KEYS, lr, BATCH, Optimizer("sign"), targets, further, max_steps=300, min_steps=n,
        trace_steps=n + 1,
    )  # fmt: skip
    for t in range(3):
        for j, target in enumerate(targets):
            below = np.nonzero(res.trace[t, :301] <= target)[0]
            if below.size == 0:
                assert res.steps[t, j] == -1 and np.isnan(res.loss_at[t, j]) and np.isnan(res.loss_after[t, j])
                assert np.all(np.isnan(res.delta_at[t, j]))
                continue
            s = below[0]
            assert res.steps[t, j] == s
            assert res.loss_at[t, j] == res.trace[t, s]
            assert res.loss_after[t, j] == res.trace[t, s + further]
            np.testing.assert_allclose(
                0.5 * res.delta_at[t, j] @ H.matvec(res.delta_at[t, j]), res.trace[t, s], rtol=1e-12
            )
    assert np.all(res.steps[:, 3] == -1)
    assert np.all(res.steps[:, 2] >= 0)  # all reach 5% of L0 within 300 steps


def test_run_stops_when_targets_are_done_and_diverging_runs_stop():
    H = HESSIANS["lowrank"]
    L0 = 0.5 * DELTA0 @ H.matvec(DELTA0)
    res = run_trajectories(H, SIGMA, DELTA0, KEYS[:1], 0.02, 64.0, Optimizer("sign"), [0.5 * L0], 5, max_steps=10**6)
    assert res.n_steps[0] == res.steps[0, 0] + 5
    lmax = np.linalg.eigvalsh(H.to_dense())[-1]
    bad = run_trajectories(H, SIGMA, DELTA0, KEYS[:1], 2.5 / lmax, 1.0, Optimizer("sgd"), [1e-3 * L0], 5, 10**6)
    assert bad.steps[0, 0] == -1 and bad.n_steps[0] < 10**5  # stopped on the non-finite loss


def test_results_do_not_depend_on_threads_or_grouping():
    p = surge_problem(40, seed=2, rank=3)
    delta0 = dynamics.initial_delta(p)
    keys = np.array([trajectory_key(9, b, r) for b in (1, 16) for r in range(4)], dtype=np.uint64)
    lr, B = np.geomspace(1e-4, 1e-2, 8), np.repeat([1.0, 16.0], 4)
    L0 = 0.5 * delta0 @ p.mu
    args = (p.hessian, p.sigma, delta0, keys, lr, B, Optimizer("adam", 0.9, 0.999), [0.7 * L0, 0.4 * L0], 20, 500)
    previous = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = run_trajectories(*args, trace_steps=50)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = run_trajectories(*args, trace_steps=50)
    finally:
        numba.set_num_threads(previous)
    for field in ("steps", "loss_at", "loss_after", "delta_at", "delta", "m", "v", "n_steps", "trace"):
        np.testing.assert_array_equal(getattr(one, field), getattr(two, field))
    alone = run_trajectories(p.hessian, p.sigma, delta0, keys[5:6], lr[5], B[5], *args[6:], trace_steps=50)
    np.testing.assert_array_equal(alone.trace[0], one.trace[5])


@pytest.mark.parametrize("hess", sorted(HESSIANS))
def test_initial_delta_solves_h_delta_equals_mu(hess):
    p = QuadraticProblem(np.linspace(-0.2, 0.3, 7), SIGMA, HESSIANS[hess])
    np.testing.assert_allclose(p.hessian.matvec(dynamics.initial_delta(p)), p.mu, rtol=1e-12, atol=1e-14)


# --- eq 22 --------------------------------------------------------------------------------------


def _eq20_points(noise_batch_size: float, s_min: float, batch_sizes: np.ndarray):
    """(S, E) on eq 20's curve: S = S_min (1 + B_noise / B), E = B S."""
    S = s_min * (1.0 + noise_batch_size / batch_sizes)
    return S, batch_sizes * S


def test_eq22_recovers_exact_parameters():
    B = np.geomspace(4, 4096, 11)
    S, E = _eq20_points(150.0, 40.0, B)
    np.testing.assert_allclose((S / 40.0 - 1) * (E / 6000.0 - 1), 1.0, rtol=1e-12)  # eq 20 holds
    bn, s_min, e_min = fit_noise_batch_size(S, E)
    assert (bn, s_min, e_min) == pytest.approx((150.0, 40.0, 6000.0), rel=1e-9)


def test_eq22_recovers_parameters_from_noisy_points_within_their_standard_errors():
    # 2% log-normal noise on S (E = B S keeps the same factor). The fit is ordinary least squares of
    # 1/S on 1/E, so scipy's slope and intercept standard errors are the reference: the estimates
    # must land within 4 of them (seeded; p ~ 6e-5 each for a Gaussian estimator).
    g = np.random.default_rng(0)
    B = np.geomspace(4, 4096, 24)
    S, E = _eq20_points(150.0, 40.0, B)
    noise = np.exp(0.02 * g.standard_normal(B.size))
    S, E = S * noise, E * noise
    bn, s_min, _ = fit_noise_batch_size(S, E)
    ref = stats.linregress(1.0 / E, 1.0 / S)
    assert abs(bn - 150.0) < 4 * ref.stderr
    assert abs(1.0 / s_min - 1.0 / 40.0) < 4 * ref.intercept_stderr
    assert ref.stderr < 0.1 * 150.0  # the test has power: the standard error is well below B_noise


# --- the protocol ---------------------------------------------------------------------------------


def _tiny_experiment(optimizers=("sign", "sgd"), seeds=3):
    p = surge_problem(24, seed=1, snr=(0.05, 0.15))
    opts = tuple(dynamics.DEFAULT_OPTIMIZERS[o] for o in optimizers)
    Bs = (2, 8, 32, 128)
    lrs = tuple(tuple(dynamics.default_lr_grid(p, o, Bs, 6)) for o in opts)
    return dynamics.Experiment(p, opts, Bs, lrs, (0.5, 0.25), further_steps=10, max_steps=800, seeds=seeds, seed=4)


def test_run_task_rows_are_deterministic_and_complete():
    exp = _tiny_experiment()
    tasks = exp.tasks()
    assert len(tasks) == 2 * 4 + 2 * 4  # the grid, then the per-step optimal-lr arm of sign and sgd
    assert [t["lr_rule"] for t in tasks] == ["constant"] * 8 + ["optimal"] * 8
    assert json.loads(json.dumps(tasks)) == tasks  # JSON parameters, as surgesim.sweep needs
    rows = dynamics.run_task(tasks[1], exp.problem)
    assert rows == dynamics.run_task(json.loads(json.dumps(tasks[1])), exp.problem)
    assert len(rows) == 6 * 3 * 2 and all(tuple(r) == dynamics.ROW_COLUMNS for r in rows)
    for r in rows:
        assert (r["steps"] is None) == (r["examples"] is None)
        if r["steps"] is not None:
            assert r["examples"] == r["steps"] * r["batch_size"] and r["loss_at"] <= r["target_loss"]
    assert any(r["steps"] is not None for r in rows)


def test_summary_predictions_and_fits_are_consistent():
    exp = _tiny_experiment()
    calls = []
    rows = dynamics.run_experiment(exp, progress=lambda done, total: calls.append((done, total)))
    results = dynamics.summarize(exp, rows)
    assert calls[0] == (0, 16) and calls[-1] == (16, 16)
    assert [(r.optimizer.name, r.target_fraction) for r in results] == [
        ("sign", 0.5), ("sign", 0.25), ("sgd", 0.5), ("sgd", 0.25),
    ]  # fmt: skip
    for r in results:
        d = r.as_dict()
        json.dumps(d, allow_nan=False)
        for key in ("optimizer", "target_loss", "fitted_noise_batch_size", "predicted_noise_batch_size",
                    "peak_batch_size", "optimal_lr"):  # fmt: skip
            assert key in d
        assert [b for b, _ in d["optimal_lr"]] == [2, 8, 32, 128]
        assert r.decrease.shape == (4, 6) and len(r.seed_peaks) == 3
        S = np.array([s for _, s in d["steps"] if s is not None])
        assert S.size >= 2 and d["fitted_noise_batch_size"] is not None
        assert d["path_noise_batch_size"] > 0
        arm = d["optimal_lr_arm"]
        assert arm["fitted_noise_batch_size"] is not None and arm["path_noise_batch_size"] > 0
        # the arm's eq 22 by hand from its rows
        mine = [row for row in rows if row["lr_rule"] == "optimal" and row["optimizer"] == r.optimizer.name
                and row["target_loss"] == r.target_loss]  # fmt: skip
        S_arm = np.array([np.mean([np.nan if row["steps"] is None else row["steps"] for row in mine
                                   if row["batch_size"] == b]) for b in exp.batch_sizes])  # fmt: skip
        got = np.array([np.nan if x is None else x for _, x in arm["steps"]])
        np.testing.assert_allclose(got, S_arm, rtol=1e-12)
        ok = np.isfinite(S_arm)
        bn = fit_noise_batch_size(S_arm[ok], np.array(exp.batch_sizes)[ok] * S_arm[ok])[0]
        assert arm["fitted_noise_batch_size"] == pytest.approx(bn, rel=1e-12)
    # eq 14 from the ensemble by hand, for the first result
    r = results[0]
    sel = [row for row in rows if row["optimizer"] == "sign" and row["target_loss"] == r.target_loss]
    chosen = []
    for o in r.steps_fit.optima:
        grid = np.array(sorted({row["lr"] for row in sel if row["batch_size"] == o.batch_size}))
        near = grid[np.argmin(np.abs(np.log(grid / o.optimal_lr)))]
        chosen += [
            row for row in sel if row["batch_size"] == o.batch_size and row["lr"] == near and row["steps"] is not None
        ]
    off = np.mean([row["off_diagonal"] for row in chosen])
    assert r.predicted_noise_batch_size == pytest.approx(math.pi * exp.problem.hessian.trace() / (2 * off), rel=1e-12)
    # eq 21's path average over the same runs by hand: sum of B_noise ds over sum of ds (eq 44-45)
    e_min, s_min = (sum(row[k] for row in chosen) for k in ("path_e_min", "path_s_min"))
    assert r.as_dict()["path_noise_batch_size"] == pytest.approx(e_min / s_min, rel=1e-12)
    arm = [row for row in rows if row["lr_rule"] == "optimal" and row["optimizer"] == "sign"
           and row["target_loss"] == r.target_loss and row["steps"] is not None]  # fmt: skip
    e_arm, s_arm = (sum(row[k] for row in arm) for k in ("path_e_min", "path_s_min"))
    assert r.as_dict()["optimal_lr_arm"]["path_noise_batch_size"] == pytest.approx(e_arm / s_arm, rel=1e-12)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(target_fractions=(0.5, 1.5)), "target_fractions"),
        (dict(seeds=0), "seeds"),
        (dict(batch_sizes=(0, 4)), "batch_sizes"),
        (dict(lrs=((1e-3,),)), "one learning-rate grid per optimizer"),
        (dict(lrs=((1e-3, -1.0), (1e-3,))), "learning rates"),
        (dict(max_steps=-1), "max_steps"),
    ],
)
def test_experiment_rejects_bad_input_with_the_value(kwargs, match):
    exp = _tiny_experiment()
    base = dict(problem=exp.problem, optimizers=exp.optimizers, batch_sizes=exp.batch_sizes, lrs=exp.lrs)
    with pytest.raises(ValueError, match=match):
        dynamics.Experiment(**(base | kwargs))


def test_optimizer_rejects_bad_hyperparameters():
    with pytest.raises(ValueError, match="beta1=1.0"):
        Optimizer("adam", 1.0, 0.9)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        Optimizer("rmsprop")


# --- the default experiment: the paper's claims -----------------------------------------------------


@pytest.mark.slow
def test_peak_batch_size_grows_as_the_target_loss_falls():
    # Section 2.3, conclusion 2 / eq 21: B_peak grows as the loss falls. On the default problem,
    # for sign-SGD and Adam(0.9, 0.999): each seed's own peak batch size at the lowest target
    # (1/8 of L0) against the highest (1/2 of L0). One-sided exact binomial (sign) test over the
    # 16 seeds, ties dropped: growth must be significant at p < 0.001. And the fitted B_noise
    # (eq 22) grows from target to target, and at every target the optimal learning rate rises
    # then falls inside the batch-size grid (by 20% or more on each side of the peak).
    exp = dynamics.default_experiment(optimizers=("sign", "adam"))
    results = dynamics.summarize(exp, dynamics.run_experiment(exp))
    for name in ("sign", "adam"):
        mine = [r for r in results if r.optimizer.name == name]
        growth = np.log2(mine[-1].seed_peaks) - np.log2(mine[0].seed_peaks)
        untied = growth[growth != 0]
        p = stats.binomtest(int(np.sum(untied > 0)), untied.size, alternative="greater").pvalue
        assert p < 1e-3, (name, growth)
        fitted = [r.fitted_noise_batch_size for r in mine]
        assert np.all(np.diff(fitted) > 0), (name, fitted)
        for r in mine:
            lr = r.optimal_lr[:, 1]
            k = int(np.nanargmax(lr))
            assert 0 < k < lr.size - 1 and lr[-1] < 0.8 * lr[k] and np.nanmin(lr[:k]) < 0.8 * lr[k], (name, lr)


# --- python -m sims.dynamics --------------------------------------------------------------------------


def test_sims_dynamics_writes_runs_summary_and_figures(tmp_path, capsys):
    from sims import dynamics as cli

    out = tmp_path / "out"
    argv = ["--out", str(out), "--dims", "16", "--batch-sizes", "2,8,32", "--lr-points", "4", "--seeds", "2",
            "--max-steps", "400", "--further-steps", "5", "--targets", "0.5,0.3",
            "--optimizers", "sign,adam:0:0,lion"]  # fmt: skip
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "fitted B_noise (eq 22)" in printed and "predicted B_noise" in printed
    with open(out / "runs.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    required = ["optimizer", "lr", "batch_size", "seed", "target_loss", "steps", "examples", "further_decrease"]
    assert list(rows[0])[: len(required) + 3] == ["optimizer", "beta1", "beta2", "eps", *required[1:]]
    assert len(rows) == 3 * 3 * 4 * 2 * 2 + 3 * 2 * 2  # optimizers x B x lr x seeds x targets, + sign's arm
    assert {r["optimizer"] for r in rows} == {"sign", "adam", "lion"}
    unreached = [r for r in rows if r["steps"] == ""]
    assert all(r["examples"] == "" for r in unreached)
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["results"]) == 3 * 2
    for entry in summary["results"]:
        for key in ("optimizer", "target_loss", "fitted_noise_batch_size", "predicted_noise_batch_size",
                    "peak_batch_size", "optimal_lr"):  # fmt: skip
            assert key in entry
        assert [b for b, _ in entry["optimal_lr"]] == [2, 8, 32]
    assert json.loads((out / "options.json").read_text())["seeds"] == 2
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert "peak_vs_target.png" in pngs and "grid_adam-0-0_1.png" in pngs and len(pngs) == 3 * 2 + 1
    # a rerun into the same directory resumes from the store and gives the same rows
    before = (out / "runs.csv").read_text()
    assert cli.main([*argv, "--quiet", "--no-plot"]) == 0
    assert (out / "runs.csv").read_text() == before and capsys.readouterr().out == ""


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--optimizers", "rmsprop"], "unknown optimizer 'rmsprop'"),
        (["--optimizers", "sign:0.9:0.9"], "only adam and lion take betas"),
        (["--optimizers", "adam:1.5:0.9"], "beta1=1.5"),
        (["--targets", "0.5,2"], "--targets must be distinct fractions"),
        (["--seeds", "0"], "--seeds must be >= 1"),
        (["--batch-sizes", "4"], "--batch-sizes must be at least 2"),
        (["--problem", "/nonexistent.npz"], "no such file"),
        (["--dims", "x"], "invalid int value"),
    ],
)
def test_sims_dynamics_bad_input_is_one_error_line(tmp_path, capsys, argv, message):
    from sims import dynamics as cli

    try:
        status = cli.main(["--out", str(tmp_path), "--quiet", *argv])
    except SystemExit as e:  # argparse's own errors
        status = e.code
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err


def test_bench_dynamics_reports_rates_and_ratios():
    from sims.bench_dynamics import bench_dynamics

    out = bench_dynamics(dims=16, trajectories=2, steps=20, numpy_steps=5, repeat=1, optimizers=("sign",))
    assert out["normals_per_s"] > 0 and out["numpy_normals_per_s"] > 0
    sign = out["sign"]
    assert sign["kernel_vs_numpy"] == pytest.approx(sign["kernel_updates_per_s"] / sign["numpy_updates_per_s"])
    assert sign["kernel_vs_normals"] == pytest.approx(out["normals_per_s"] / sign["kernel_updates_per_s"])
