"""surgesim.momentum and sims.momentum: the multi-step probe against Lemma 1 and against an
independent NumPy computation, the stationary-buffer model against its own exact expression, the
bootstrap of the grid fit against summarize, SGD with momentum, and sims.dynamics' Adam predictor."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import optimize

from surgesim import dynamics, momentum
from surgesim.kernels.dynamics import Optimizer, run_trajectories
from surgesim.problem import surge_problem
from surgesim.reference.dynamics import run_trajectories as reference_trajectories
from surgesim.theory import noise_batch_size, optimal_lr

PROBLEM = surge_problem(32, seed=3, snr=(0.05, 0.12))  # B_noise at the start ~ 10^2, small d: cheap


def _start_state(problem=PROBLEM) -> momentum.RunState:
    exp = dynamics.default_experiment(problem, ["sign"], (4, 16), 3, seeds=2, optimal_arm=False)
    d0 = exp.delta0
    return momentum.RunState(d0, np.zeros_like(d0), np.zeros_like(d0), 0, exp.initial_loss)


@pytest.mark.parametrize("opt", [Optimizer("sign"), Optimizer("adam", 0.9, 0.999, 1e-12)])
def test_one_step_probe_from_fresh_buffers_is_lemma_1(opt):
    # T = 1 from fresh buffers: Adam's first step is g / |g| = sign(g), and the mean decrease
    # lr E[mu'u] - lr^2 / 2 E[u'Hu] peaks at eq 9 (Lemma 1). 3000 trials; the parabola in log lr on
    # a grid of ratio ~1.15 is biased by < 1%: within 4 bootstrap s.e. + 2%. A probe that took T = 2
    # or dropped Adam's bias corrections would miss eq 9 by far more.
    st = _start_state()
    Bs = (4, 32, 256)
    eq9 = optimal_lr(np.array(Bs, dtype=float), PROBLEM.mu, PROBLEM.sigma, PROBLEM.hessian)
    lrs = np.geomspace(eq9.min() / 2, eq9.max() * 2, 24)
    res = momentum.multistep_probe(PROBLEM, opt, st, Bs, 1, lrs, trials=3000, bootstrap=60)
    assert not res.at_edge.any()
    err = np.abs(np.log(res.lr_opt / eq9))
    assert np.all(err < 4 * res.lr_log_se + 0.02), (res.lr_opt, eq9, res.lr_log_se)
    assert np.all(res.lr_log_se < 0.05)


def _independent_probe_b(problem, opt, states, Bs, T, lrs, trials, seed) -> float:
    """The Adam predictor recomputed with the NumPy reference (same streams), NumPy's argmax and a
    scipy least-squares fit of eq 2 in log lr."""
    lr_opt = []
    for B in Bs:
        per = []
        for k, st in enumerate(states):
            keys = np.array([momentum.probe_key(seed + k, int(B), r) for r in range(trials)], dtype=np.uint64)
            out = reference_trajectories(problem.hessian, problem.sigma, st.delta, np.tile(keys, lrs.size),
                                         np.repeat(lrs, trials), float(B), opt, T)  # fmt: skip
            tr = out["trace"]
            per.append((tr[:, 0] - tr[:, T]).reshape(lrs.size, trials))
        dec = np.concatenate(per, axis=1).mean(axis=1)
        k = int(np.argmax(dec))
        c = np.polyfit(np.log(lrs[k - 1 : k + 2]), dec[k - 1 : k + 2], 2)
        lr_opt.append(math.exp(-c[1] / (2 * c[0])))
    b, y = np.array(Bs, dtype=float), np.log(lr_opt)

    def resid(p):
        return p[1] - np.log(0.5 * (np.sqrt(np.exp(p[0]) / b) + np.sqrt(b / np.exp(p[0])))) - y

    fit = optimize.least_squares(resid, [math.log(np.sqrt(b.min() * b.max())), y.max()])
    return float(math.exp(fit.x[0]))


def test_adam_predictor_agrees_with_an_independent_computation():
    # The predictor of sims.dynamics (path_noise_batch_size_adam) against the same definition
    # computed independently (NumPy reference dynamics, own argmax and eq-2 fit): the same
    # minibatches, so they agree to the interpolation's rounding; 10% fails a x2 error (or T off by one).
    opt = Optimizer("adam", 0.9, 0.999)
    exp = dynamics.default_experiment(PROBLEM, [opt], (8, 32, 128, 512, 2048, 8192), 8, seeds=2, optimal_arm=False)
    st = momentum.run_states(PROBLEM, opt, 0.3 * optimal_lr(16.0, PROBLEM.mu, PROBLEM.sigma, PROBLEM.hessian), 16,
                             [0.6 * exp.initial_loss], [1, 2], exp.delta0)  # fmt: skip
    states = [s[0] for s in st]
    assert all(s is not None and s.step > 0 for s in states)
    Bs = exp.batch_sizes
    pred = momentum.adam_noise_batch_size(PROBLEM, opt, states, Bs, trials=8, seed=5)
    assert pred.source == "eq2_fit" and pred.steps == momentum.PROBE_STEPS
    lrs = pred.probe.lrs
    assert not pred.probe.at_edge.any()
    ref = _independent_probe_b(PROBLEM, opt, states, Bs, momentum.PROBE_STEPS, lrs, 8, 5)
    assert pred.noise_batch_size == pytest.approx(ref, rel=0.1)


def test_stationary_model_peak_is_its_exact_one_step_optimum():
    # The closed form (2 / pi) k B_noise(eq 14) against the exact one-step optimum of its model,
    # E[mu'u] / E[u'Hu] with E u = mu / s, Var u = k sigma^2 / (B s^2), s^2 = mu^2 + sigma^2 / B,
    # maximised over B numerically; in the model's regime (B << 1 / r^2) they agree within 10%.
    # A k off by (1 + beta1) or a missing 2 / pi fails.
    p = surge_problem(400, seed=1, snr=(0.002, 0.006))
    mu, sig, H = p.mu, p.sigma, p.hessian.to_dense()
    hd = np.diag(H)
    for b1 in (0.0, 0.5, 0.9):
        k = (1 - b1) / (1 + b1)

        def lr(B, k=k):
            s = np.sqrt(mu**2 + sig**2 / B)
            e = mu / s
            # E[u'Hu] = sum_i H_ii Var u_i + (E u)'H (E u)
            return float(mu @ e / (hd @ (k * sig**2 / (B * s**2)) + e @ H @ e))

        grid = np.geomspace(0.01, 1e5, 3000)
        best = grid[np.argmax([lr(B) for B in grid])]
        want = momentum.stationary_noise_batch_size(mu, sig, p.hessian, b1)
        assert best == pytest.approx(want, rel=0.1), (b1, best, want)
        assert want == pytest.approx(2 / math.pi * k * noise_batch_size(mu, sig, p.hessian), rel=1e-12)


def test_bootstrap_fit_is_summarize_fit_and_zero_without_seed_spread():
    opt = Optimizer("adam", 0.5, 0.999)
    exp = dynamics.default_experiment(PROBLEM, [opt], (4, 16, 64, 256), 6, [0.5], seeds=4, max_steps=600,
                                      optimal_arm=False)  # fmt: skip
    rows = dynamics.run_experiment(exp)
    (res,) = dynamics.summarize(exp, rows, adam_predictor=False)
    cube = momentum.steps_cube(rows, np.asarray(res.lrs), np.asarray(exp.batch_sizes, float), exp.seeds)
    bn, bn_se, peak, peak_se, _ = momentum.bootstrap_grid_fit(cube, np.asarray(res.lrs),
                                                              np.asarray(exp.batch_sizes, float), 50)  # fmt: skip
    assert bn == pytest.approx(res.fitted_noise_batch_size, rel=1e-12)
    assert peak == res.peak_batch_size
    assert bn_se > 0
    same = np.repeat(cube[:, :, :1], 4, axis=2)  # four copies of one seed: every resample is the same
    b0, se0, _, pse0, _ = momentum.bootstrap_grid_fit(same, np.asarray(res.lrs), np.asarray(exp.batch_sizes, float), 20)
    assert se0 <= 1e-9 * b0 and pse0 == 0


def test_sgd_momentum_is_the_bias_corrected_ema_on_a_noise_free_quadratic():
    # sgd(b): delta_{t+1} = delta_t - lr m_t / (1 - b^t), m_t = b m_{t-1} + (1 - b) g_t (heavy ball of
    # learning rate lr (1 - b) once b^t is small), written out here on the exact gradient; B = 1e16
    # leaves noise of sigma / 1e8 per step (atol 1e-7 over 30 steps). Without the bias correction
    # the first step alone is 10x shorter.
    H = PROBLEM.hessian
    d0 = _start_state().delta
    b, lr, n = 0.9, 0.05, 30
    got = run_trajectories(H, PROBLEM.sigma, d0, np.array([7], dtype=np.uint64), lr, 1e16, Optimizer("sgd", b),
                           max_steps=n, min_steps=n)  # fmt: skip
    delta, m = d0.copy(), np.zeros_like(d0)
    for t in range(1, n + 1):
        m = b * m + (1 - b) * H.matvec(delta)
        delta = delta - lr * m / (1 - b**t)
    np.testing.assert_allclose(got.delta[0], delta, rtol=0, atol=1e-7)


def test_sims_dynamics_reports_a_finite_adam_predictor_for_every_adam_result(tmp_path):
    from sims import dynamics as cli

    out = tmp_path / "dyn"
    assert cli.main(["--dims", "16", "--optimizers", "sign,adam:0:0.999,adam:0.9:0.999", "--batch-sizes", "4,16,64,256",
                     "--lr-points", "5", "--seeds", "2", "--targets", "0.5,0.25", "--max-steps", "400",
                     "--further-steps", "2", "--out", str(out), "--quiet", "--no-plot"]) == 0  # fmt: skip
    res = json.loads((out / "summary.json").read_text())["results"]
    for r in res:
        v = r["path_noise_batch_size_adam"]
        if r["optimizer"] == "adam":
            assert v is not None and math.isfinite(v) and v > 0, r["label"]
            assert r["path_noise_batch_size_adam_source"] in ("eq2_fit", "probe_peak", "start:eq2_fit",
                                                              "start:probe_peak")  # fmt: skip
        else:
            assert v is None


def test_sims_momentum_quick_writes_every_output(tmp_path, capsys):
    from sims import momentum as cli

    out = tmp_path / "m"
    assert cli.main(["--quick", "--families", "lowrank", "--batch-sizes", "16,64,256", "--seeds", "2",
                     "--probe-trials", "2", "--probe-states", "1", "--bootstrap", "4",
                     "--out", str(out)]) == 0  # fmt: skip
    for f in ("momentum.csv", "predictors.csv", "summary.json", "options.json", "momentum.png"):
        assert (out / f).is_file(), f
    summary = json.loads((out / "summary.json").read_text())
    labels = {r["label"] for r in summary["results"]}
    assert labels == {"sign", "sgd(0.9)", "adam(0, 0.999)", "adam(0.9, 0.999)"}
    assert all(r["fitted_noise_batch_size_se"] is not None for r in summary["results"] if r["fitted_noise_batch_size"])
    assert "fitted" in capsys.readouterr().out.lower()
    rows = (out / "predictors.csv").read_text()
    for name in ("eq14", "path_eq21", "stationary", "probe", "large_batch", "sign_emin"):
        assert f",{name}," in rows, name


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--families", "cube"], "--families"),
        (["--optimizers", "sgd:1.5"], "beta1=1.5"),
        (["--optimizers", "adam:0.9"], "only adam and lion take betas"),
        (["--probe-steps", "0"], "--probe-steps"),
        (["--seeds", "1"], "--seeds"),
    ],
)
def test_sims_momentum_bad_input_is_one_error_line(tmp_path, capsys, argv, message):
    from sims import momentum as cli

    assert cli.main([*argv, "--out", str(tmp_path / "x"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0], err
