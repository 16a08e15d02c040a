"""A sweep on a local Dask cluster: one Monte Carlo task per batch size, stored as each finishes
in a resumable SQLite store; interrupt it and run it again to resume. Needs the `dist` extra.

    python examples/dask_sweep.py --workers 2 --out runs/dask-sweep    # default --out: a new temp folder
    python -m sims.surge --scheduler local:2        # the same through the command (prints the dashboard)

For a running cluster pass --scheduler tcp://HOST:PORT instead of --workers.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from pathlib import Path

# Dask's own INFO logging (~65 lines per run: cluster start-up, workers, shutdown) is not this
# example's output; read by Dask when distributed is first imported.
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")

import surgesim as ss
from surgesim.estimate import estimate_task
from surgesim.sweep import run_sweep


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.partition("\n\n")[0])
    p.add_argument("--dims", type=int, default=1000)
    p.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes")
    p.add_argument("--scheduler", help="tcp://HOST:PORT of a running cluster (instead of a local one)")
    p.add_argument("--batch-sizes", default="1,16,256,4096")
    p.add_argument("--trials", type=int, default=20000)
    p.add_argument("--out", help="folder of the resumable store (default: a new temporary folder)")
    args = p.parse_args(argv)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="surgesim-dask-sweep-"))
    logging.basicConfig(format="%(message)s")
    logging.getLogger("surgesim").setLevel(logging.INFO)  # the sweep's progress and the dashboard address

    problem = ss.surge_problem(args.dims, seed=0)
    options = {"seed": 0, "trials": args.trials}
    tasks = [{"batch_size": int(b), **options} for b in args.batch_sizes.split(",")]
    rows = run_sweep(
        estimate_task, tasks, params={"problem_sha256": problem.digest(), **options},
        store=out / "store.sqlite", scheduler=args.scheduler or f"local:{args.workers}", shared=problem,
    )  # fmt: skip
    exact = ss.optimal_lr([r["batch_size"] for r in rows], problem.mu, problem.sigma, problem.hessian)
    for r, x in zip(rows, exact):
        print(f"B = {r['batch_size']:>6}: lr {r['lr']:.4e} +- {r['lr_se']:.1e} (eq 9: {x:.4e})")
    print(f"store: {out / 'store.sqlite'} (run again with --out {out} to resume)")


if __name__ == "__main__":
    main()
