"""Regenerate every figure in figures/ from scratch (PNG and PDF), seeded: same seed, same figures.

  fig1_surge          optimal lr vs B: Monte Carlo, exact eq 9, surge eq 2, SGD eq 1 (paper's Fig 1)
  fig2_erf            eq 10 against erf, and its learning-rate error within eq 9
  fig3_families       closed form vs exact vs Monte Carlo over problem families (one without surge)
  fig4_loss           Theorem 5: loss improvement vs B (eq 8, eq 18, Monte Carlo)
  fig5_dynamics_*     multi-step sign-SGD / Adam / SGD grids: heat maps, 1/S-1/E fits, peak vs loss
  fig7_*, fig8_*      where the paper's approximations hold (sims.limits); schedules against the
                      constant-batch front (sims.schedules)
  fig6_*, fig9_*, fig10_cnn_*   the CNN demo (needs torch): a grid (sims.workloads), Lemma 1 measured
                      (sims.probe), schedules (sims.schedules --workload cnn)
  fig11_validate_*    the surge on the CNN and GPT demos with statistics, every predictor scored (sims.validate;
                      the full runs take hours on a 2-core CPU: README, "Validation on real networks")
  fig12_*             Adam's balance point against beta1 beside sign-SGD and SGD with momentum (sims.momentum)
--quick: small, fast versions (for the tests), not the committed ones; run times: README, section "Figures".

Every output column and key (meaning, unit, equation): docs/outputs.md.
"""

from __future__ import annotations

import argparse
import time

from sims import _cli
from surgesim.paper_figures import (  # noqa: F401 - the figure builders, kept importable from here
    FIGURES,
    check_figures,
    fig1_figure,
    fig2_figure,
    fig3_figure,
    fig4_figure,
    make_figure,
)
from surgesim.paper_figures import FigureOptions as Options


def _only(text: str) -> tuple[str, ...]:  # argparse type of --only: an empty list is an error, not every figure
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected one or more of {', '.join(FIGURES)}, got {text!r}")
    return names


def build_parser() -> _cli.Parser:
    p = _cli.parser("sims.figures", __doc__)
    p.add_argument("--out", default="figures", help="output directory (default figures/)")
    p.add_argument("--quick", action="store_true", help='small, fast versions (measured run time: README, "Figures")')
    p.add_argument("--seed", type=_cli.seed, default=0, help="seed of every problem and random stream (default 0)")
    p.add_argument("--only", type=_only, default=(), help=f"comma-separated subset of {','.join(FIGURES)}")
    p.add_argument("--quiet", action="store_true", help="print nothing")
    return p


main = _cli.main_of(__name__)


def _main(args: argparse.Namespace) -> int:
    opts = Options(args.out, args.quick, args.seed, args.only, args.quiet)
    _cli.flag_checked(check_figures, opts.only)
    out = _cli.out_dir(opts.out)
    for name in FIGURES:
        if not opts.only or name in opts.only:
            t = time.perf_counter()
            paths = make_figure(name, opts, out, _cli.command_main)
            if not opts.quiet:
                print(f"{name}: {', '.join(p.name for p in paths)} ({time.perf_counter() - t:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
