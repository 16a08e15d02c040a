"""Your own quadratic problem: build it from arrays, save it as a problem file, and compare the
Monte Carlo optimal learning rate of sign-SGD with the theory (eq 9, eq 2, eq 14).

    python examples/own_problem.py --dims 1000 --out runs/own-problem    # default --out: a temp folder
    python -m sims.surge --problem runs/own-problem/problem.npz      # the full command on it
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

import surgesim as ss
from surgesim.estimate import estimate_curve


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.partition("\n\n")[0])
    p.add_argument("--dims", type=int, default=1000)
    p.add_argument("--out", help="folder for problem.npz (default: a new temporary folder)")
    p.add_argument("--rel-se", type=float, default=0.02, help="target relative s.e. of each Monte Carlo optimum")
    args = p.parse_args(argv)

    rng = np.random.default_rng(0)
    d = args.dims
    # Per-example gradients N(mu_i, sigma_i^2) with |mu_i| / sigma_i around 0.01, and a Hessian
    # diag(h) + u u' whose rank-one part is aligned with sign(mu): positive off-diagonal curvature
    # along the update direction, which is what makes B_noise (eq 14) finite (about 220 at d = 1000;
    # with this scaling it falls like 1/d, while the validity bound stays about 7000).
    sigma = np.ones(d)
    mu = rng.choice([-1.0, 1.0], d) * rng.uniform(0.005, 0.015, d)
    h = rng.uniform(0.5, 1.5, d)
    u = np.sign(mu) * 0.3 * np.sqrt(rng.uniform(0.0, 2.0, d))
    problem = ss.QuadraticProblem(mu, sigma, ss.DiagonalPlusLowRank(h, u[:, None]))
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="surgesim-own-problem-"))
    out.mkdir(parents=True, exist_ok=True)
    problem.save(out / "problem.npz")  # arrays mu, sigma, h_diag, h_factor: sims.surge --problem reads it
    print(problem)

    bn = ss.noise_batch_size(mu, sigma, problem.hessian)
    bound = ss.validity_bound(mu, sigma)
    print(f"B_noise (eq 14) = {bn:.4g}, peak lr (eq 16) = {ss.peak_lr(mu, sigma, problem.hessian):.4g}, "
          f"validity bound = {bound:.4g}")  # fmt: skip
    B = [1, 4, 16, 64, 256, 1024, 4096]
    exact = ss.optimal_lr(B, mu, sigma, problem.hessian)
    surge = ss.surge_lr(B, mu, sigma, problem.hessian)
    print(f"{'B':>6} {'Monte Carlo':>12} {'s.e.':>9} {'eq 9':>10} {'eq 2':>10}")
    for e, x, s in zip(estimate_curve(problem, B, seed=0, rel_se=args.rel_se), exact, surge):
        print(f"{e.batch_size:>6} {e.lr:>12.4e} {e.lr_se:>9.2e} {x:>10.4e} {s:>10.4e}")
    print(f"problem file: {out / 'problem.npz'} (python -m sims.surge --problem {out / 'problem.npz'})")


if __name__ == "__main__":
    main()
