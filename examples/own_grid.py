"""Your own learning-rate x batch-size grid (a CSV file, one row per run): the optimal learning
rate per batch size, the surge curve (eq 2) against the SGD curves (eq 24 form), and B_noise.

    python examples/own_grid.py my_grid.csv --lr-col lr --batch-col bs --loss-col loss
    python examples/own_grid.py                 # writes (to a temp folder, or --out) and fits a small grid

The same analysis with tables and figures: python -m sims.fit my_grid.csv ... (docs/outputs.md).
"""

from __future__ import annotations

import argparse
import csv
import math
import tempfile
from pathlib import Path

from surgesim import gridfit


def synthetic_grid(path: Path) -> None:
    """Losses parabolic in log lr around eq 2's optimum (B_noise 64, eps_max 3e-3), two model sizes."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "lr", "bs", "loss"])
        for model, bn in (("small", 64.0), ("large", 256.0)):
            for bs in (8, 16, 32, 64, 128, 256, 512, 1024):
                opt = 3e-3 / (0.5 * (math.sqrt(bn / bs) + math.sqrt(bs / bn)))
                for k in range(17):
                    lr = 1e-4 * 10 ** (k / 6)
                    w.writerow([model, repr(lr), bs, repr(2.0 + 0.3 * math.log(lr / opt) ** 2)])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.partition("\n\n")[0])
    p.add_argument("grid", nargs="?", help="CSV file (default: a synthetic grid written beside it)")
    p.add_argument("--lr-col", default="lr")
    p.add_argument("--batch-col", default="bs")
    p.add_argument("--loss-col", default="loss")
    p.add_argument("--group-cols", default="model", help="comma-separated; empty for one group")
    p.add_argument("--out", help="folder for the synthetic grid (default: a new temporary folder)")
    args = p.parse_args(argv)
    if args.grid:
        path = Path(args.grid)
    else:  # written into --out, by default a new temporary folder (never the current directory)
        out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="surgesim-own-grid-"))
        path = out / "synthetic_grid.csv"
        synthetic_grid(path)
        print(f"synthetic grid: {path}")

    table = gridfit.read_table(path)  # or a pandas DataFrame
    groups = [c for c in args.group_cols.split(",") if c]
    for key, fit in gridfit.fit_groups(table, args.lr_col, args.batch_col, args.loss_col, groups):
        print(key or "all rows", f"best curve (AIC): {fit.best_model or '-'}")
        if fit.fitted:
            print(f"  B_noise = {fit.noise_batch_size:.4g} ({fit.source}), peak lr = {fit.peak_lr:.4g}")
        else:
            print(f"  {fit.note}")
        for o in fit.optima:
            print(
                f"  B = {o.batch_size:>6g}: optimal lr {o.optimal_lr:.4e}"
                + (" (at the grid edge)" if o.at_edge else "")
            )


if __name__ == "__main__":
    main()
