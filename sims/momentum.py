"""Momentum and Adam's balance point on noisy quadratics: the paper's grid search (Li et al. 2024,
Section 3.2-3.3, as ``sims.dynamics``) for Adam with beta1 in {0, 0.5, 0.8, 0.9, 0.95} x beta2 in
{0.9, 0.999}, beside sign-SGD and SGD with momentum 0, 0.5, 0.9, on two problem families
(``lowrank``: the default problem of sims.dynamics, d = 256; ``powerlaw``: dense H with eigenvalues
k^-1, d = 64; ``--families diagonal``: lowrank's diag(h) alone, the NQM). Per (family, optimizer,
target): the fitted eq-22 B_noise and the grid's peak batch size, each with a bootstrap standard
error over seeds, and the predictors of the balance point scored against the fit
(``surgesim.momentum``): eq 14 at the target states and its eq-21 path average, the
stationary-buffer one-step model, the multi-step probe (T real optimizer steps from the run's
states, fresh minibatches) for each T of --probe-steps, and the large-batch argument (momentum
leaves E_min and shortens S_min to the noise-free steps S_inf; Zhang et al. 2019).

Outputs in --out: momentum.csv (one row per family, optimizer and target), predictors.csv (one
row per predictor, with its ratio to the fit), summary.json, momentum.png (fitted B_noise against
beta1), options.json, store_<family>.sqlite (resumable: rerunning the same command into the same
--out skips the finished grid tasks). Every column and key: docs/outputs.md.

Default: 8 seeds, 12 learning rates, batch sizes 8 .. 8192 in octaves, 3 targets, probe T = 1, 4, 8
from 4 states per result: 15-30 minutes on 2 loaded cores. --quick: a smoke run of a few seconds.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

from sims import _cli


def build_parser() -> _cli.Parser:
    p = _cli.parser("sims.momentum", __doc__)
    g = p.add_argument_group("study")
    g.add_argument("--families", default="lowrank,powerlaw",
                   help="problem families, from lowrank, powerlaw, diagonal (default lowrank,powerlaw)")
    g.add_argument("--optimizers", metavar="NAME[:B1[:B2]],...",
                   help="default: sign, sgd, sgd:0.5, sgd:0.9, adam:B1:B2 for B1 in 0,0.5,0.8,0.9,0.95 and "
                        "B2 in 0.9,0.999 (sgd:B1 is SGD with momentum B1)")  # fmt: skip
    g.add_argument("--batch-sizes", type=_cli.int_list, metavar="B1,B2,...", help="default 8,16,...,8192")
    g.add_argument("--lr-points", type=int, default=12, help="learning rates per optimizer (default 12)")
    g.add_argument("--targets", type=_cli.float_list, default=[0.5, 0.25, 0.125], metavar="F1,F2,...",
                   help="target losses as fractions of the initial loss (default 0.5,0.25,0.125)")  # fmt: skip
    g.add_argument("--max-steps", type=int, default=3000, help="steps allowed to reach a target (default 3000)")
    g.add_argument("--seeds", type=int, default=8, help="runs per grid point (default 8)")
    g.add_argument("--seed", type=int, default=0, help="seed of the problems and of every stream (default 0)")
    g.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples over seeds (default 200)")
    g.add_argument("--probe-steps", type=_cli.int_list, default=[1, 4, 8], metavar="T1,T2,...",
                   help="T of the multi-step probe (default 1,4,8)")  # fmt: skip
    g.add_argument("--probe-states", type=int, default=4, help="run states probed per result (default 4)")
    g.add_argument("--probe-trials", type=int, default=8, help="probe trials per state (default 8)")
    g.add_argument("--quick", action="store_true", help="a smoke run of a few seconds (tests)")
    g = p.add_argument_group("execution and output")
    _cli.output_options(g, "runs/momentum", plot="skip the figure", quiet="no table, no progress bar")
    _cli.dask_options(g)
    return p


def resolve(args) -> tuple[SimpleNamespace, tuple]:
    """The options, checked (``resolve_momentum_options``; a refusal: UsageError naming the flag)."""
    from surgesim.momentum_study import resolve_momentum_options

    given, parser = {**vars(args), "plot": not args.no_plot}, build_parser()
    return _cli.flag_checked(resolve_momentum_options, given, {k: parser.get_default(k) for k in given})


main = _cli.main_of(__name__)


def _main(args) -> int:
    from surgesim.momentum_study import run_momentum_study
    from surgesim.progress import progress_bar

    opts, optimizers = resolve(args)
    out = _cli.out_dir(opts.out, command="sims.momentum")
    t_start = time.perf_counter()
    _cli.write_json(vars(opts), out / "options.json")
    result = run_momentum_study(
        opts.families, optimizers, opts.batch_sizes, opts.lr_points, opts.targets, opts.max_steps, opts.seeds,
        opts.seed, opts.bootstrap, opts.probe_steps, opts.probe_states, opts.probe_trials, store=out.final,
        scheduler=_cli.scheduler_address(opts.scheduler), connect_timeout=args.connect_timeout,
        progress=lambda desc: progress_bar(quiet=opts.quiet, desc=desc), started=t_start,
    )  # fmt: skip
    written = result.write(out, plot=opts.plot)
    if not opts.quiet:
        result.report(out, written)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
