"""The paper's grid search (Li et al. 2024, Section 3.2-3.3) on a noisy quadratic: sign-SGD,
Adam(0.9, 0.999) and SGD trained at every learning rate x batch size x seed until the loss reaches
each target, the optimal learning rate per batch size, B_noise from steps and examples (eq 22)
beside the theory's prediction at the states reached, and the peak batch size as the loss falls.

Default problem: d = 256, H = diag(h) + U U' with rank-4 factors positive along sign(mu),
|mu_i| / sigma_i log-uniform in (0.016, 0.05) at the start (``surgesim.gridsearch.default_problem``);
targets 1/2, 1/4, 1/8 of the initial loss; batch sizes 8 .. 8192 in half octaves; 16 learning rates
per optimizer around the theory's optimum at the start; 16 seeds; 50 further steps past each target;
at most 3000 steps to reach one. Measured run time: README, section "Multi-step dynamics".

Optimizers: sign, adam (0.9, 0.999), sgd, lion (0.9, 0.99); NAME:BETA1:BETA2 sets the betas of
adam or lion (adam:0:0 is sign-SGD up to eps, Appendix A), sgd:BETA1 SGD's momentum. Every Adam
result also reports path_noise_batch_size_adam, the package's predictor of Adam's balance point
(``surgesim.multistep_probe.adam_noise_batch_size``: eq 2 fitted to the optimal lr of 4 real steps).

Outputs in --out: runs.csv (one row per run and target; steps empty when the target was not
reached), summary.json (under "results", one entry per optimizer and target), problem.npz,
options.json, grid_<optimizer>_<k>.png per optimizer and target k (the further decrease, the optimal
learning rates and the fitted curves; 1/S against 1/E with eq 22), peak_vs_target.png, and
store.sqlite, the resumable store of finished tasks (a rerun into the same --out skips them).
Every output column and key (meaning, unit, equation): docs/outputs.md.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

from sims import _cli


def build_parser() -> _cli.Parser:
    p = _cli.parser("sims.dynamics", __doc__)
    g = p.add_argument_group("problem")
    g.add_argument("--dims", type=int, default=256, help="dimension d of the default problem (default 256)")
    g.add_argument("--problem", metavar="FILE.npz", help="load a problem (mu, sigma, H or h_diag[, h_factor]) "
                   "instead; mu is the mean gradient at the start, theta0 - theta* = H^-1 mu")  # fmt: skip
    g = p.add_argument_group("grid")
    g.add_argument("--optimizers", default="sign,adam,sgd", metavar="NAME[:B1[:B2]],...", help="comma-separated, "
                   "from sign, adam, sgd, lion; adam:B1:B2, lion:B1:B2, sgd:B1 (momentum) (default sign,adam,sgd)")
    g.add_argument("--batch-sizes", type=_cli.int_list, metavar="B1,B2,...", help="default 8,11,16,23,...,8192")
    g.add_argument("--lr-points", type=int, default=16, help="learning rates per optimizer (default 16)")
    g.add_argument("--targets", type=_cli.float_list, default=[0.5, 0.25, 0.125], metavar="F1,F2,...",
                   help="target losses as fractions of the initial loss (default 0.5,0.25,0.125)")  # fmt: skip
    g.add_argument("--further-steps", type=int, default=50, help="steps past each target (default 50)")
    g.add_argument("--max-steps", type=int, default=3000, help="steps allowed to reach a target (default 3000)")
    g.add_argument("--seeds", type=int, default=16, help="runs per grid point (default 16)")
    g.add_argument("--seed", type=int, default=0, help="seed of the problem and of every random stream (default 0)")
    g.add_argument("--no-optimal-arm", action="store_true", help="skip the per-step optimal-lr arm of sign and "
                   "sgd (each step's lr the exact one-step optimum at its state: eq 9, eq 1 for sgd; CPU only)")
    g = p.add_argument_group("execution and output")
    _cli.output_options(g, "runs/dynamics", quiet="no tables, no progress bar")
    _cli.dask_options(g, "this process, whose kernels already use every core")
    g.add_argument("--backend", choices=["cpu", "gpu", "auto"], default="cpu",
                   help="kernel backend: cpu (Numba, default), gpu (CuPy), auto (the GPU when usable)")  # fmt: skip
    return p


def resolve(args) -> tuple[SimpleNamespace, tuple]:
    """The options, checked (``resolve_dynamics_options``; a refusal: UsageError naming the flag)."""
    from surgesim.gridsearch import resolve_dynamics_options

    given = {**vars(args), "optimal_arm": not args.no_optimal_arm, "plot": not args.no_plot}
    return _cli.flag_checked(resolve_dynamics_options, given)


main = _cli.main_of(__name__)


def _main(args) -> int:
    from surgesim import backend as backends
    from surgesim import gridsearch, rng
    from surgesim.kernels import dynamics as kernels
    from surgesim.progress import progress_bar

    opts, optimizers = resolve(args)
    backend = backends.resolve(opts.backend)  # clear error before any work when the GPU is unusable
    scheduler = _cli.checked_scheduler(opts.scheduler, args.connect_timeout)  # a bad one before any work
    t_start = time.perf_counter()
    exp = gridsearch.options_experiment(opts, optimizers, backend)  # its problem checked
    out = _cli.out_dir(opts.out, command="sims.dynamics")  # after every check
    exp.problem.save(out / "problem.npz")
    _cli.write_json(vars(opts), out / "options.json")
    if not opts.quiet:
        print(gridsearch.describe_start(exp, opts.lr_points))
    if not scheduler:
        _cli.say_if_compiling(rng, kernels, quiet=opts.quiet)
    with progress_bar(quiet=opts.quiet, desc="tasks") as bar:
        result = gridsearch.run_dynamics(exp, out.final("store.sqlite"), scheduler, args.connect_timeout, bar, t_start)
    written = result.write(out, plot=opts.plot)
    if not opts.quiet:
        result.report(out, written)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
