"""Benchmark of the multi-step dynamics kernel (``surgesim.kernels.dynamics``) against the plain
vectorised NumPy implementation (``surgesim.reference.dynamics``), measured in the same run.

T trajectories x n steps on the default kind of problem (d = 1000, H = diag(h) + U U' of rank 4):
coordinate-updates per second (T x n x d / s) of the kernel, of NumPy (its own PCG64 normals), of
the kernel's normals alone, and the per-step rules' cost against the constant batch. What each
number measures: ``surgesim.bench.dynamics``. Best of --repeat after a warm-up call.

Every output column and key (meaning, unit, equation): docs/outputs.md.
"""

from __future__ import annotations

import json

from sims import _cli
from surgesim.bench.dynamics import bench_dynamics


def build_parser() -> _cli.Parser:
    p = _cli.parser("sims.bench_dynamics", __doc__)
    p.add_argument("--dims", type=int, default=1000, help="dimension d (default 1000)")
    p.add_argument("--trajectories", type=int, default=64, help="trajectories T (default 64)")
    p.add_argument("--steps", type=int, default=2000, help="kernel steps (default 2000)")
    p.add_argument("--repeat", type=int, default=3, help="timed repetitions, best kept (default 3)")
    return p


main = _cli.main_of(__name__)


def _main(args) -> int:
    report = _cli.flag_checked(bench_dynamics, args.dims, args.trajectories, args.steps, repeat=args.repeat)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
