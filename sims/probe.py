"""Measure Lemma 1 on a network: the optimal learning rate of one update per batch size at a fixed
state, from real minibatches and exact Hessian-vector products, beside two theory predictions
made at the same state, so that each assumption of the paper's theory is tested on its own.

  probe        V = update of a real minibatch of B distinct examples; lr*(B) = E[G'V] / E[V'HV]
               (G the full-data gradient, V'HV by an exact Hessian-vector product): the truth.
  gaussian     V = sign(G + z / sqrt(B)), z Gaussian with the empirical per-example covariance:
               tests Gaussian minibatch noise, correlations kept.
  independent  eq 9 from the measured G, sigma and H: adds the paper's independent coordinates.

Beside them: McCandlish et al.'s B_simple = tr(Sigma)/|G|^2 and B_crit = tr(H Sigma)/G'HG, and
eq 14's B_noise, each with a standard error.

With --model FILE.py:FUNCTION (or package.module:FUNCTION) the state is your own network:
FUNCTION() returns (model, loss_fn, inputs, targets), an nn.Module at the weights to probe,
loss_fn(outputs, targets) the mean loss of a batch, and the data set as two tensors with the
example on the first axis. The model is evaluated in eval mode (BatchNorm with its running
statistics, no dropout), so a minibatch gradient is the mean of per-example gradients.

--update adam --steps T (T > 1): the multi-step probe, the optimal learning rate of T real Adam
steps from the state with fresh minibatches and the buffers evolving (the checkpoint's buffers,
zeros without one, or --warmup W steps at batch B): a 1-d search in log lr with common random
numbers, bootstrap errors. T = 1 (the default) is Lemma 1's one-step estimator.

With --problem FILE.npz the state is a torch quadratic whose per-example gradients are exactly
N(mu, diag sigma^2) and whose Hessian is H: the probe must then agree with eq 9 (lr_exact).
With --workload, the state is a checkpoint (--checkpoint FILE) or, without one, the reference run
of `sims.workloads` (same defaults: the grid's middle learning rate and batch size, seed 0),
trained and checkpointed at the first evaluation reaching each target loss.

Outputs in --out (columns and keys: docs/outputs.md): probe.csv, summary.json, probe.png,
options.json, checkpoints/ (the reference run's states), store.sqlite (resumable: rerun the same
command to continue).
"""

from __future__ import annotations

from sims import _cli
from surgesim._install import TORCH

try:  # the library's names, importable from here as before (COLUMNS, collect, _fmt, ...)
    from surgesim.workloads.probe_run import (  # noqa: F401
        COLUMNS,
        DEFAULT_BATCH_SIZES,
        FULL_GRADIENT_EXAMPLES,
        MULTI_COLUMNS,
        SCALE_KEYS,
        collect,
        print_table,
        resolve_probe_options,
        validity_disagreement,
    )  # fmt: skip
    from surgesim.workloads.probe_run import ProbeOptions as Options
    from surgesim.workloads.probe_run import format_number as _fmt  # noqa: F401
except ImportError:  # no torch: --help works, a run says what to install
    DEFAULT_BATCH_SIZES, FULL_GRADIENT_EXAMPLES, Options = (1, 4, 16, 64, 256, 1024), 16384, None


def build_parser() -> _cli.Parser:
    p, i = _cli.parser("sims.probe", __doc__), int
    g = p.add_argument_group("state")
    s = g.add_mutually_exclusive_group(required=True)
    s.add_argument("--problem", metavar="FILE.npz", help="a quadratic problem (arrays mu, sigma, H or h_diag/h_factor)")
    s.add_argument("--workload", choices=("cnn", "resnet18", "gpt"), help="a network of sims.workloads")
    s.add_argument("--model", metavar="FILE.py:FUNCTION", help="your own network: FUNCTION() returns "
                   "(model, loss_fn, inputs, targets); also package.module:FUNCTION")  # fmt: skip
    d = g.add_mutually_exclusive_group()
    d.add_argument("--data-dir", "--data", dest="data_dir", metavar="DIR", help="the workload's real data")
    d.add_argument("--demo", action="store_true", help="the workload's shipped demo data")
    g.add_argument("--checkpoint", metavar="FILE", help="probe this saved state (a state_dict, or a dict with "
                   "'model' and optionally Adam's 'optimizer') instead of training the reference run")  # fmt: skip
    g.add_argument("--targets", type=_cli.float_list, metavar="L1,L2,...",
                   help="target training losses of the reference run (default: sims.workloads')")  # fmt: skip
    g = p.add_argument_group("measurement")
    g.add_argument("--batch-sizes", type=_cli.int_list, metavar="B1,B2,...",
                   help=f"batch sizes (default {','.join(map(str, DEFAULT_BATCH_SIZES))})")  # fmt: skip
    m = g.add_mutually_exclusive_group()
    m.add_argument("--rel-se", type=float, help="adaptive draws until lr*'s relative s.e. <= R (default 0.1)")
    m.add_argument("--draws", type=i, help="fixed draws per batch size and estimator")
    g.add_argument("--max-draws", type=i, default=1 << 18, help="cap on adaptive draws (default 262144)")
    g.add_argument("--update", choices=("sign", "adam"), default="sign",
                   help="the probed update: sign(minibatch gradient), or one Adam step from the state's "
                   "moment buffers (zeros if the state has none); gaussian/independent are sign theory")  # fmt: skip
    g.add_argument("--steps", type=i, default=1, help="T: the optimal lr of T real Adam steps (--update adam; "
                   "default 1, Lemma 1's one-step estimator)")  # fmt: skip
    g.add_argument("--warmup", type=i, default=0, help="with --steps T > 1: rebuild Adam's buffers from zeros by "
                   "W minibatch gradients at batch B at the state (default 0: the checkpoint's buffers)")  # fmt: skip
    for name, default in (("beta1", 0.9), ("beta2", 0.999), ("eps", 1e-8)):
        g.add_argument(f"--{name}", type=float, default=default, help=f"Adam {name} where the state has no "
                       f"optimizer ({default:g})")  # fmt: skip
    g.add_argument("--seed", type=_cli.seed, default=0, help="seed of every draw (default 0)")
    g.add_argument("--hessian-examples", type=i, default=32,
                   help="examples per Hessian-vector product (a fresh sample per probe draw; default 32)")  # fmt: skip
    g.add_argument("--stats-examples", type=i, default=256,
                   help="examples for the per-example gradient statistics (default 256)")  # fmt: skip
    g.add_argument("--stats-hessian-examples", type=i, default=32,
                   help="examples per Hessian sample of the statistics (B_crit, eq 14, gaussian, independent): "
                   "disjoint from the statistics' examples, a fresh sample per HVP (default 32)")  # fmt: skip
    g.add_argument("--probes", type=i, default=8, help="Hutchinson probes for tr(H), diag(H) (default 8)")
    g.add_argument("--crit-examples", type=i, default=32, help="HVPs for tr(H Sigma) in B_crit (default 32)")
    g.add_argument("--full-gradient-examples", type=i, default=FULL_GRADIENT_EXAMPLES,
                   help=f"examples for G: all (exact) if the data set has no more, else a uniform sample whose "
                   f"error is propagated (default {FULL_GRADIENT_EXAMPLES}; 0: all)")  # fmt: skip
    g = p.add_argument_group("execution and output")
    g.add_argument("--threads", type=i, default=0, help="torch threads (default 0: torch's choice)")
    g.add_argument("--workers", type=i, default=1, help="local worker processes (default 1: this process)")
    _cli.dask_options(g)
    _cli.output_options(g, "runs/probe", plot="skip the figure")
    return p


def resolve(args) -> Options:
    """The options, checked (``resolve_probe_options``; a bad combination or value: UsageError naming the flag)."""
    return _cli.flag_checked(resolve_probe_options, {**vars(args), "plot": not args.no_plot})


main = _cli.main_of(__name__)


def _main(args) -> int:
    probe_run = _cli.torch_module("surgesim.workloads.probe_run", f" (sims.probe needs PyTorch: {TORCH})")
    opts = resolve(args)
    if opts.scheduler:  # (--workers runs local processes, whatever DASK_SCHEDULER_ADDRESS says)
        _cli.checked_scheduler(opts.scheduler, args.connect_timeout)  # a bad one before any work
    plan = probe_run.prepare_probe(opts)
    if plan.problem is not None:  # a block of 16 minibatches of B examples of d float64 values: a lower bound
        _cli.check_problem(plan.problem, opts.batch_sizes)
        _cli.need_memory(16 * max(opts.batch_sizes) * plan.problem.dim * 8,
                         f"--batch-sizes {max(opts.batch_sizes)} at d = {plan.problem.dim}")  # fmt: skip
    out = _cli.out_dir(opts.out, command="sims.probe", options=opts)
    result = plan.run(
        out, say=lambda s: None if opts.quiet else print(s, flush=True), connect_timeout=args.connect_timeout
    )
    result.write(out)
    for warning in result.warnings():
        _cli.warn(warning)
    if not opts.quiet:
        result.report(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
