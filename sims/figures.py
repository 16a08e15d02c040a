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
import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path

from sims import _cli
from surgesim._install import TORCH
from surgesim.outputs import OutputDir
from surgesim.paper_figures import fig1_figure, fig2_figure, fig3_figure, fig4_figure, figures_of_command, save


@dataclass(frozen=True)
class Options:
    out: str
    quick: bool
    seed: int
    only: tuple[str, ...]
    quiet: bool


BUILT = {"fig1": (fig1_figure, "fig1_surge"), "fig2": (fig2_figure, "fig2_erf"), "fig3": (fig3_figure, "fig3_families"),
         "fig4": (fig4_figure, "fig4_loss")}  # fmt: skip
# Figures another command draws: (command, prefix of its files here, its arguments, --quick's), or a
# list of such runs. A command in ONE_FIGURE writes one figure: kept as <prefix>.png/.pdf/.json.
FROM_COMMANDS: dict[str, tuple[str, str, str, str] | list[tuple[str, str, str, str]]] = {
    "fig5": ("dynamics", "fig5_dynamics", "--seed {seed}",
             "--dims 64 --seeds 4 --lr-points 8 --batch-sizes 8,32,128,512,2048"),
    "fig6": ("workloads", "fig6_workload", "--workload cnn --demo", "--batch-sizes 8,32 --lrs 0.001,0.003 --seeds 1 "
             "--max-steps 80 --no-gradstats --eval-examples 128 --workers 1 --targets 1.0,0.6,0.4"),
    "fig7": ("limits", "fig7", "--seed {seed}", "--quick"),
    "fig8": ("schedules", "fig8", "--seed {seed}", "--dims 32 --seeds 3 --tune-seeds 2 --max-steps 400 "
             "--multipliers 1"),
    "fig9": ("probe", "fig9", "--workload cnn --demo --seed {seed}", "--targets 1.0 --batch-sizes 1,16 --draws 16 "
             "--stats-examples 16 --hessian-examples 4 --probes 2 --crit-examples 2 --full-gradient-examples 256"),
    "fig10": ("schedules", "fig10_cnn", "--workload cnn --demo", "--seeds 1 --lrs 1.6e-3 --batch-sizes 8,16 "
              "--multipliers 1 --targets 1.8 --max-steps 30 --workers 1"),
    "fig11": [("validate", f"fig11_validate_{w}", f"--workload {w} --demo", "--quick") for w in ("cnn", "gpt")],
    "fig12": ("momentum", "fig12", "--seed {seed}", "--quick"),
}  # fmt: skip
ONE_FIGURE = {"validate"}
FIGURES = [f"fig{k}" for k in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12)]


def make(name: str, opts: Options, out: OutputDir) -> list[Path]:
    """Draw one figure into ``out``: built here, or by its command (found by name, ``sims.<command>``)."""
    if name in BUILT:
        return save(BUILT[name][0](opts), out, BUILT[name][1])
    runs = FROM_COMMANDS[name]
    paths = []
    for command, prefix, args, quick in runs if isinstance(runs, list) else [runs]:
        argv = (args.format(seed=opts.seed) + (" " + quick if opts.quick else "")).split()
        main = importlib.import_module(f"sims.{command}").main
        paths += figures_of_command(main, argv, out, prefix, one_figure=command in ONE_FIGURE)
    return paths


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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return _cli.run(lambda: _main(args))


def _main(args: argparse.Namespace) -> int:
    opts = Options(args.out, args.quick, args.seed, args.only, args.quiet)
    if unknown := set(opts.only) - set(FIGURES):
        raise _cli.UsageError(f"--only: unknown figure(s) {', '.join(sorted(unknown))}; choose from "
                              f"{', '.join(FIGURES)}")  # fmt: skip
    trains = {"fig6", "fig9", "fig10", "fig11"}
    if (not opts.only or trains & set(opts.only)) and importlib.util.find_spec("torch") is None:
        raise _cli.UsageError(f"fig6, fig9, fig10 and fig11 train a network and need torch: {TORCH} "
                              "(or --only fig1,fig2,fig3,fig4,fig5,fig7,fig8,fig12)")  # fmt: skip
    out = _cli.out_dir(opts.out)
    for name in FIGURES:
        if not opts.only or name in opts.only:
            t = time.perf_counter()
            paths = make(name, opts, out)
            if not opts.quiet:
                print(f"{name}: {', '.join(p.name for p in paths)} ({time.perf_counter() - t:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
