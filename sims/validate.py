"""The surge on real networks, measured with statistics, and every predictor scored against it:
the paper's protocol (Section 3.2-3.3) at a resolution that can decide (surgesim.validate).

  python -m sims.validate --workload cnn --demo          the 5-layer CNN on 5,000 MNIST digits
  python -m sims.validate --workload gpt --data-dir F    the byte-level transformer on ELI5
  python -m sims.validate [--problem FILE.npz]          the default quadratic (sims.dynamics') or a file
  ... --quick                                           every output in seconds to a minute

Per target loss: the optimal lr per batch size with bootstrap s.e., the peak batch size with a 68%
interval, the surge test, eq 22's B_noise, and six predictors scored against it. Outputs in --out
(default runs/validate-KIND[-quick]; docs/outputs.md), with the stores a rerun continues from.
"""

from __future__ import annotations

from sims import _cli
from surgesim._install import TORCH
from surgesim.dynamics import default_problem
from surgesim.problem import QuadraticProblem
from surgesim.validate import DATA_FILES, DEFAULTS, QuadraticValidation, ValidationOptions, resolve_options
from surgesim.validate.options import check_combination, check_top


def build_parser() -> _cli.Parser:
    p = _cli.parser("sims.validate", __doc__)
    g = p.add_argument_group("what to validate")
    s = g.add_mutually_exclusive_group()
    s.add_argument("--workload", choices=sorted(DEFAULTS), help="a network of sims.workloads (default: a quadratic)")
    s.add_argument("--problem", metavar="FILE.npz", help="a quadratic problem file (default: sims.dynamics' problem)")
    d = g.add_mutually_exclusive_group()
    d.add_argument("--data-dir", help="the real data: " + "; ".join(f"{k}, {v}" for k, v in DATA_FILES.items()))
    d.add_argument("--demo", action="store_true", help="the workload's shipped demo data")
    g.add_argument("--dims", type=_cli.integer(2, 10**6), help="the default quadratic's dimension (default 256)")
    g = p.add_argument_group("protocol")
    g.add_argument("--batch-sizes", type=_cli.int_list, metavar="B1,B2,...", help="batch sizes (default per workload)")
    g.add_argument("--lrs", type=_cli.float_list, metavar="LR1,...", help="the coarse learning-rate grid")
    g.add_argument("--lr-points", type=_cli.integer(3, 200), help="quadratic: coarse learning rates (default 12)")
    g.add_argument("--seeds", type=_cli.integer(2, 10**4), help="seeds per grid point (default 4; quadratic 8)")
    g.add_argument("--targets", type=_cli.float_list, metavar="L1,...", help="target losses (quadratic: fractions)")
    g.add_argument("--refine-points", type=_cli.integer(0, 8), default=1,
                   help="learning rates added on each side of each target's best (default 1; 0: none)")  # fmt: skip
    g.add_argument("--further-steps", type=_cli.integer(1, 10**6), help="steps after the target for the score")
    g.add_argument("--max-steps", type=_cli.integer(1, 10**8), help="cap on steps per run")
    g.add_argument("--eval-examples", type=_cli.integer(1, 10**7), help="networks: the fixed loss sample's size")
    for name, default, hi in (("--beta1", 0.9, 0.999999), ("--beta2", 0.999, 0.999999), ("--eps", 1e-8, 1)):
        g.add_argument(name, type=_cli.finite(0, hi), default=default, help=f"Adam {name[2:]} (default {default:g})")
    g.add_argument("--seed", type=_cli.seed, default=0, help="seed of the quadratic and the bootstrap (default 0)")
    g = p.add_argument_group("statistics")
    g.add_argument("--replicates", type=_cli.integer(20, 10**6), default=400, help="bootstrap replicates (400)")
    g.add_argument("--top", type=_cli.integer(1, 100),
                   help="largest B in the surge test's top group (default 2 with >= 6 B, else 1)")  # fmt: skip
    g = p.add_argument_group("predictors")
    g.add_argument("--no-predictors", action="store_true", help="skip the predictors")
    g.add_argument("--probe-batch-sizes", type=_cli.int_list, metavar="B1,...", help="networks: the probe's B")
    m = g.add_mutually_exclusive_group()
    m.add_argument("--probe-rel-se", type=_cli.finite(1e-4, 0.99), help="networks: probe's relative s.e. (0.2)")
    m.add_argument("--probe-draws", type=_cli.integer(2, 1 << 30), help="networks: fixed probe draws per B")
    g.add_argument(
        "--probe-adam-draws",
        type=_cli.integer(0, 1 << 30),
        metavar="N",
        help="networks: fixed draws of the multi-step Adam probe (default 16; 0: as the sign probe)",
    )
    g.add_argument("--probe-gradient-examples", type=_cli.integer(1, 10**9), metavar="N",
                   help="networks: examples of the probe's full gradient G, a sample when fewer than the data "
                   "(error propagated; default CNN 16384, GPT 1024)")  # fmt: skip
    g.add_argument("--probe-steps", type=_cli.integer(1, 10**4), default=4,
                   help="networks: real Adam steps per probe draw (T, default 4: the T that held on quadratics, "
                   "README 'Which batch size and learning rate for Adam'; 1 = one step)")  # fmt: skip
    g = p.add_argument_group("execution and output")
    g.add_argument("--quick", action="store_true", help="tiny grids: every output in seconds to a minute")
    g.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="networks: torch device (default cpu)")
    g.add_argument("--threads", type=_cli.integer(0, 4096), default=1,
                   help="networks: torch threads per worker (default 1; 0: torch's choice)")  # fmt: skip
    g.add_argument("--workers", type=_cli.integer(0, 4096), default=0, help="local processes (default: cores)")
    _cli.dask_options(g, default="--workers local processes")
    _cli.output_options(g, None, plot="skip the figure")
    return p


def resolve(args) -> ValidationOptions:
    """The options, checked (``resolve_options``; a combination that does not go together, or a
    --top with no batch size below it: UsageError naming the flags)."""
    _cli.flag_checked(check_combination, vars(args))
    opts = resolve_options({**vars(args), "predictors": not args.no_predictors, "plot": not args.no_plot,
                            "scheduler": _cli.scheduler_address(args.scheduler)})  # fmt: skip
    _cli.flag_checked(check_top, args.top, opts.batch_sizes)
    return opts


main = _cli.main_of(__name__)


def _main(args) -> int:
    opts = resolve(args)
    if opts.workload:
        validation = _network(opts)  # the inputs checked, the data loaded
    else:
        problem = QuadraticProblem.load(opts.problem) if opts.problem else default_problem(opts.dims, opts.seed)
        _cli.check_problem(problem, opts.batch_sizes)
        validation = QuadraticValidation(opts, problem)
    out = _cli.out_dir(opts.out, command="sims.validate")
    say = None if opts.quiet else lambda text: print(text, flush=True)
    result = validation.run(out.final, connect_timeout=args.connect_timeout, say=say)
    summary = result.write(out)
    if not opts.quiet:
        print(result.report(summary, out))
    return 0


def _network(opts: ValidationOptions):
    _cli.torch_module("torch", f" (networks need PyTorch: {TORCH})")
    validation = _cli.torch_module("surgesim.workloads.validation", f" (networks need PyTorch: {TORCH})")
    try:
        return validation.NetworkValidation(opts)
    except validation.DataNotFound as exc:
        raise _cli.UsageError(f"{exc} (--data-dir for {opts.workload}: {DATA_FILES[opts.workload]})") from None
    except validation.DeviceUnavailable as exc:
        raise _cli.UsageError(f"--device cuda: {exc}") from None


if __name__ == "__main__":
    raise SystemExit(main())
