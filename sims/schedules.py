"""Batch-size and learning-rate schedules that follow the surge, against the constant-batch front:
steps S and examples E to each target loss for sign-SGD and Adam on the noisy quadratic of
``sims.dynamics`` (``surgesim.schedules``), or on a real network with --workload cnn
(``surgesim.workloads.schedules``).

Quadratic schedules: constant (B = 8 .. 8192 in octaves, lr tuned per target: the front), oracle
(B_t = c B_noise(theta_t) from eq 14 at the state, lr_t = k eq 9 at B_t), online (the same from
running estimates made from the minibatch gradients, lr_t = k eq 13), critical (B_t = c B_crit
estimated online, McCandlish et al.), geometric (B and lr multiplied every K steps). Each learning
rate or multiplier k is tuned per target on --tune-seeds runs (fewest mean steps), then evaluated
on --seeds fresh runs that share their random numbers across schedules.

On a network (--workload cnn --demo, or --data-dir DIR with Fashion-MNIST's
train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz]): sign is Adam(beta1 = 0, beta2 = 0),
adam Adam(0.9, 0.999); constant (B = 4 .. 128 in octaves), online (B_t = c B_simple, McCandlish's
simple noise scale tr(Sigma)/|G|^2 estimated from the two halves of each minibatch; eq 14 from the
network's own statistics is 0.07-4.1 where the fitted B_noise is 25-40: README, section "Predicting
the surge on a real network: Lemma 1 measured"), critical (B_t = c B_crit, tr(H Sigma)/G'HG with
Hessian-vector products every 4 steps), geometric (B_0 = 8 doubled every 20 steps); each over the
lrs 4e-4 .. 3.2e-3 on seeds 0 .. --seeds - 1, the lr chosen per target by fewest seed-mean steps;
targets are training losses (default 1.0, 0.6, 0.4, as sims.workloads). There is no oracle: the
state's B_noise is not known. Demo defaults: adam only, 4 seeds, c = 1, 2; 176 runs (measured run
time: README, section "Schedules that follow the surge"); --optimizers sign,adam doubles it. lr
6.4e-3 is left out: Adam diverges or stalls there on some seeds (B = 4 and B = 128 did not reach
loss 1.0).

Outputs in --out: schedules.csv (one row per schedule variant, optimizer, target and seed:
schedule, variant, optimizer, target_loss, seed, steps, examples, batch_size, lr; steps empty
where the target was not reached within --max-steps), summary.json (per optimizer, target and
variant: median S and E with bootstrap standard errors, the savings against the front in E at
equal S and in S at equal E with their standard errors, whether the front dominates it),
schedules_front.png (E against S), schedules_traces.png (B_t and lr_t along each schedule),
options.json, and the resumable stores (rerunning the same command into the same --out skips
finished tasks): quadratic problem.npz, tuning.sqlite and store.sqlite; network store.sqlite.
Measured run times: README, section "Schedules that follow the surge".

Every output column and key (meaning, unit, equation): docs/outputs.md.
"""

from __future__ import annotations

from sims import _cli
from surgesim.schedule_study import PROBE, SCHEDULE_NAMES, WORKLOADS, resolve_schedule_options
from surgesim.schedule_study import ScheduleOptions as Options


def build_parser() -> _cli.Parser:
    p = _cli.parser("sims.schedules", __doc__)
    g = p.add_argument_group("problem (quadratic) or workload (network)")
    g.add_argument("--dims", type=int, help="quadratic: dimension d of the default problem (default 256)")
    g.add_argument("--problem", metavar="FILE.npz",
                   help="quadratic: load a problem (mu, sigma, H or h_diag[, h_factor]) instead")  # fmt: skip
    g.add_argument(
        "--workload", metavar="NAME", help=f"a torch workload instead of the quadratic: {', '.join(WORKLOADS)}"
    )
    d = g.add_mutually_exclusive_group()
    d.add_argument("--demo", action="store_true", help="with --workload: its shipped demo data (5,000 MNIST digits)")
    d.add_argument("--data-dir", metavar="DIR", help="with --workload: the real dataset (Fashion-MNIST for cnn)")
    g = p.add_argument_group("schedules")
    g.add_argument("--optimizers",
                   help="comma-separated, from sign, adam (default sign,adam; with --workload: adam, as sign doubles "
                   "the time)")  # fmt: skip
    g.add_argument(
        "--schedules",
        help=f"comma-separated, from {', '.join(SCHEDULE_NAMES + (PROBE,))} (default all but probe, "
        "the Adam schedule that follows the multi-step probe at the state, which costs a probe per loss decrease; "
        "oracle is quadratic-only)",
    )
    g.add_argument("--multipliers", type=_cli.float_list, metavar="C1,C2,...",
                   help="c of the adaptive rules: quadratic B_t = c B_noise, critical 2c (default 0.5,1,2); "
                   "network B_t = c B_simple or c B_crit (default 1,2)")  # fmt: skip
    g.add_argument("--targets", type=_cli.float_list, metavar="T1,T2,...",
                   help="quadratic: fractions of the initial loss (default 0.5,0.25,0.125); network: training "
                   "losses (default 1,0.6,0.4)")  # fmt: skip
    g.add_argument(
        "--lrs",
        type=_cli.float_list,
        metavar="LR1,LR2,...",
        help="network: the learning rates every variant runs (default 4e-4,8e-4,1.6e-3,3.2e-3)",
    )
    g.add_argument(
        "--batch-sizes",
        type=_cli.int_list,
        metavar="B1,B2,...",
        help="network: the constant batch sizes, whose largest caps B_t (default 4,8,16,32,64,128)",
    )
    g.add_argument("--seeds", type=int, help="evaluation runs per schedule (default 16; network: seeds 0..N-1 per lr, "
                   "default 4)")  # fmt: skip
    g.add_argument("--tune-seeds", type=int, help="quadratic: tuning runs per learning rate (default 8)")
    g.add_argument("--max-steps", type=int, help="steps allowed to reach a target (default 3000; network 800)")
    g.add_argument("--seed", type=_cli.seed,
                   help="quadratic: seed of the problem and every random stream (default 0)")  # fmt: skip
    g = p.add_argument_group("execution and output")
    g.add_argument("--out", default="runs/schedules", help="output directory (default runs/schedules)")
    g.add_argument(
        "--workers",
        type=_cli.integer(1, 4096),
        help="network: local worker processes, one torch thread each (default: the number of cores)",
    )
    g.add_argument("--scheduler", metavar="local:N|tcp://HOST:PORT",
                   help="run the tasks on Dask (also via DASK_SCHEDULER_ADDRESS); default: this process "
                   "(network: local processes)")  # fmt: skip
    g.add_argument("--connect-timeout", **_cli.CONNECT_TIMEOUT)
    g.add_argument("--no-plot", action="store_true", help="skip the figures")
    g.add_argument("--quiet", action="store_true", help="no tables, no progress bar")
    return p


def resolve(args) -> Options:
    """The options, checked (``resolve_schedule_options``; a refusal: UsageError naming the flag)."""
    return _cli.flag_checked(resolve_schedule_options, {**vars(args), "plot": not args.no_plot})


main = _cli.main_of(__name__)


def _main(args) -> int:
    from surgesim.progress import progress_bar

    opts = resolve(args)
    scheduler = _cli.checked_scheduler(opts.scheduler, args.connect_timeout)  # a bad one before any work
    if opts.workload:
        run_study = _cli.torch_module("surgesim.workloads.schedule_run").run_network_schedules
        extra = {"say": None if opts.quiet else lambda text: print(text, flush=True)}
    else:
        from surgesim.schedule_study import run_schedules as run_study

        extra = {}
    out = _cli.out_opener(opts.out, "sims.schedules", opts)  # opened after every check
    result = run_study(opts, out, scheduler=scheduler, connect_timeout=args.connect_timeout,
                       progress=lambda desc: progress_bar(quiet=opts.quiet, desc=desc), **extra)  # fmt: skip
    figures = result.write(out())
    if not opts.quiet:
        result.report(out(), figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
