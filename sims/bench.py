"""Benchmarks: the Numba kernels against plain NumPy on the same work, measured in one run.

By default: random-number rates; the one-step kernel at --dims (dense and low-rank H) against
NumPy; the whole ``sims.surge`` command at --rel-se 0.0025 against NumPy at the same precision
(--numpy-full runs NumPy instead of extrapolating its rate); the dynamics kernel. --backend gpu:
the CuPy kernels (``sims.bench_gpu``). --scaling: samples/s and peak memory against d. --compile:
JIT compile times (empty cache) and cached loads. What each measures: ``surgesim.bench``.

Every output column and key (meaning, unit, equation): docs/outputs.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sims import _cli
from surgesim.bench import compile_times, gpu, kernels, scaling


def build_parser() -> _cli.Parser:
    p = _cli.parser("sims.bench", __doc__)
    p.add_argument("--dims", type=_cli.integer(2, 2**40), default=1000, help="dimension d (default 1000)")
    p.add_argument("--trials", type=_cli.integer(16, 2**40), default=16384,
                   help="trials per one-step timing (default 16384)")  # fmt: skip
    p.add_argument("--repeat", type=_cli.integer(1, 1000), default=3, help="timed repetitions, best kept (default 3)")
    p.add_argument("--backend", choices=["cpu", "gpu"], default="cpu", help="gpu: CuPy kernels against the CPU kernels")
    p.add_argument("--skip-end-to-end", action="store_true", help="skip the --rel-se 0.0025 command timing (minutes)")
    p.add_argument("--numpy-full", action="store_true",
                   help="run the NumPy end-to-end estimator instead of extrapolating")  # fmt: skip
    p.add_argument("--out", help="also write the numbers as JSON to this file")
    p.add_argument("--scaling", action="store_true",
                   help="only the scaling table: samples/s and peak memory, d = 10^3 .. 10^7 (see above)")  # fmt: skip
    p.add_argument("--scaling-dims", type=_cli.int_list, metavar="D1,D2,...",
                   help="dimensions of --scaling (default 10^3 .. 10^7, and 10^8, ~10 GB, with >= 32 GB)")  # fmt: skip
    p.add_argument("--scaling-point", type=_cli.int_list, help=argparse.SUPPRESS)  # D,TRIALS: one row, as JSON
    p.add_argument("--compile", action="store_true",
                   help="only the JIT compile time of each kernel (cold cache) and its cached load time")  # fmt: skip
    p.add_argument("--compile-point", action="store_true", help=argparse.SUPPRESS)  # one pass, as JSON
    return p


main = _cli.main_of(__name__)


def _main(args: argparse.Namespace) -> int:
    if args.scaling_point or args.compile_point:  # one point in a fresh process, as JSON
        point = scaling.scaling_point(*args.scaling_point) if args.scaling_point else compile_times.compile_point()
        print(json.dumps(point))
        return 0
    if args.scaling_dims is not None and not args.compile and (not args.scaling or min(args.scaling_dims) < 2):
        raise _cli.UsageError("--scaling-dims needs --scaling and dimensions >= 2")
    if args.out is not None:
        _cli.out_file(args.out)  # before minutes of benchmarking
    if args.compile:
        report: dict = {"compile": compile_times.bench_compile()}
        compile_times.print_compile(report["compile"])
    elif args.scaling:
        dims = tuple(args.scaling_dims or scaling.default_scaling_dims())  # 10^8 peaks near 10 GB: ~100 B per dimension
        _cli.need_memory(100 * max(dims), f"--scaling at d = {max(dims)}")
        try:
            report = {"scaling": scaling.bench_scaling(dims)}
        except (MemoryError, ValueError) as exc:  # a child's failure, "scaling at d = ...": name the option
            if not str(exc).startswith("scaling at d"):
                raise
            raise (MemoryError if isinstance(exc, MemoryError) else _cli.UsageError)(f"--{exc}") from None
        print(f"one-step estimator, sign sampler, B = 64, ~{scaling.SCALING_SAMPLES:.2g} samples per d (trials x d):")
        scaling.print_scaling(report["scaling"])
    else:
        _cli.need_memory(8 * args.dims * args.dims * 3, f"--dims {args.dims} (dense H)")
        if args.backend == "gpu":
            report = {"gpu": gpu.bench_gpu(args.dims, args.trials, args.repeat)}
            gpu.print_report(report["gpu"])
            if args.out:
                Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
            return 0
        report = kernels.run_all(args.dims, args.trials, args.repeat, not args.skip_end_to_end, args.numpy_full)
    if args.out:
        _cli.write_json(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
