"""GPU benchmark: the CuPy one-step kernels against the Numba CPU kernels on the same work.

Each case (Hessian, sampler, B) runs the same trials on both: samples/s with and without host-device
copies ("io", "device") and how far apart the results are (``surgesim.bench.gpu``: each number, and
the goal at d >= 10^5). Exit status 2 and one ``error:`` line when CuPy or a GPU is missing.

Every output column and key (meaning, unit, equation): docs/outputs.md.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict

from sims import _cli
from surgesim.bench.gpu import CASES, GOAL_DIMS, GOAL_RATIO, bench_gpu, print_report  # noqa: F401 - re-exported
from surgesim.bench.gpu import GpuBenchOptions as Options


def build_parser() -> _cli.Parser:
    p = _cli.parser("sims.bench_gpu", __doc__)
    p.add_argument("--dims", type=int, default=1000, help="dimension d (default 1000)")
    p.add_argument("--trials", type=int, default=1 << 16, help="trials per timed call (default 65536)")
    p.add_argument("--repeat", type=int, default=3, help="timed repetitions, best kept (default 3)")
    p.add_argument("--cpu-threads", type=int, default=2, help="Numba threads of the CPU kernels (default 2; 0: all)")
    p.add_argument("--out", metavar="FILE.json", help="also write the options and numbers as JSON")
    return p


main = _cli.main_of(__name__)


def _main(args: argparse.Namespace) -> int:
    opts = _cli.flag_checked(Options, args.dims, args.trials, args.repeat, args.cpu_threads or None, args.out)
    if opts.out:
        _cli.out_file(opts.out)  # before minutes of benchmarking
    report = bench_gpu(opts.dims, opts.trials, opts.repeat, opts.cpu_threads)
    print_report(report)
    if opts.out:
        _cli.write_json({"options": asdict(opts), **report}, opts.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
