"""Regenerate every figure in figures/ from scratch (PNG and PDF), seeded: same seed, same figures.

  fig1_surge          optimal lr vs B: Monte Carlo, exact eq 9, surge eq 2, SGD eq 1 (paper's Fig 1)
  fig2_erf            eq 10 against erf, and its learning-rate error within eq 9
  fig3_families       closed form vs exact vs Monte Carlo over problem families (one without surge)
  fig4_loss           Theorem 5: loss improvement vs B (eq 8, eq 18, Monte Carlo)
  fig5_dynamics_*     multi-step sign-SGD / Adam / SGD grids: heat maps, 1/S-1/E fits, peak vs loss
  fig6_workload_*     a real-workload demo grid (CNN on shipped MNIST digits), needs torch
  fig7_limits_*       where the paper's approximations hold (sims.limits)
  fig8_schedules_*    batch-size and learning-rate schedules against the constant-batch front (sims.schedules)
  fig9_*              Lemma 1 measured on the CNN demo: lr*(B) from real minibatches, the Gaussian model and
                      eq 9 from gradient statistics (sims.probe), needs torch
  fig10_cnn_*         schedules against the constant-batch front on the CNN demo (sims.schedules
                      --workload cnn --demo), needs torch
  fig12_*             Adam's balance point against beta1 beside sign-SGD and SGD with momentum, on two
                      quadratic families (sims.momentum; the full run takes 15-30 min)

--quick makes small, fast versions (used by the tests); the committed figures are the full ones.
Measured run times (--quick and each full figure): README, section "Figures".

Every output column and key (meaning, unit, equation): docs/outputs.md.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sims import _cli


@dataclass(frozen=True)
class Options:
    out: str
    quick: bool
    seed: int
    only: tuple[str, ...]
    quiet: bool


DPI = 200


def _save(fig, out: Path, name: str) -> list[Path]:
    import matplotlib.pyplot as plt

    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    fig.savefig(paths[0], dpi=DPI)
    fig.savefig(paths[1], metadata={"CreationDate": None})  # reproducible PDF bytes
    plt.close(fig)
    return paths


@contextlib.contextmanager
def _png_and_pdf():
    """While another command runs: each PNG it saves is written at ``DPI``, with a PDF twin (the
    commands themselves save PNG only, at screen resolution)."""
    from matplotlib.figure import Figure

    savefig = Figure.savefig

    def paper_savefig(fig, fname, *args, **kwargs):
        savefig(fig, fname, *args, **{**kwargs, "dpi": DPI})
        if str(fname).endswith(".png"):
            savefig(fig, str(fname)[:-4] + ".pdf", metadata={"CreationDate": None})

    Figure.savefig = paper_savefig
    try:
        yield
    finally:
        Figure.savefig = savefig


@functools.cache
def _estimates(problem, batch_sizes: tuple[int, ...], seed: int, rel_se: float):
    from surgesim.estimate import estimate_curve

    return estimate_curve(problem, batch_sizes, seed=seed, rel_se=rel_se)


@functools.cache
def _problem(family: str, d: int, seed: int):
    from surgesim.problem import FAMILIES

    return FAMILIES[family](d, seed)


def _panel(problem, batch_sizes, opts: Options, title: str, loss: bool = False, sgd: bool = False) -> dict:
    """Data of one curves_panel: theory lines on a fine grid, Monte Carlo points with s.e."""
    from surgesim import theory as th

    mu, sigma, H = problem.mu, problem.sigma, problem.hessian
    B_line = np.logspace(0, np.log10(max(batch_sizes)), 300)
    est = _estimates(problem, tuple(batch_sizes), opts.seed, 0.05 if opts.quick else 0.01)
    lines = th.curves(B_line, mu, sigma, H)
    kind = "dl_" if loss else "lr_"
    curves = {k: v for k, v in lines.items() if k.startswith(kind) and (sgd or k != "lr_sgd")}
    if loss:
        pts, se = [e.loss_improvement for e in est], [e.loss_improvement_se for e in est]
        plateau = None
    else:
        pts, se = [e.lr for e in est], [e.lr_se for e in est]
        plateau = th.large_batch_lr(mu, H)
    return dict(
        title=title, B_line=B_line, curves=curves, B_points=np.asarray(batch_sizes, float), points=np.array(pts),
        points_se=np.array(se), noise_batch_size=th.noise_batch_size(mu, sigma, H), plateau=plateau,
        validity_bound=th.validity_bound(mu, sigma),
    )  # fmt: skip


def _grid(quick: bool) -> list[int]:
    return [int(b) for b in np.unique(np.round(np.logspace(0, 20 * np.log10(2), 12 if quick else 25)))]


def fig1_figure(opts: Options):
    """Figure 1 (paper's Fig 1): the optimal lr against B, theory and Monte Carlo."""
    from surgesim import surge_problem
    from surgesim.plots import lr_vs_batch_figure

    p = surge_problem(300 if opts.quick else 1000, opts.seed)
    d = _panel(p, _grid(opts.quick), opts, "", sgd=True)
    title = f"Optimal learning rate vs batch size: sign-SGD and SGD ({p.describe()})"
    return lr_vs_batch_figure(d["B_line"], d["curves"], d["B_points"], d["points"], d["points_se"],
                              d["noise_batch_size"], d["plateau"], d["validity_bound"], title=title)  # fmt: skip


def fig2_figure(opts: Options):
    """Eq 10 against erf, and its learning-rate error within eq 9 per family."""
    from surgesim import optimal_lr
    from surgesim.plots import erf_figure
    from surgesim.problem import FAMILIES

    x = np.linspace(0, 4, 801)
    B = np.logspace(0, 7, 200)
    err = {}
    for name in ("lowrank", "diagonal", "powerlaw"):
        p = FAMILIES[name](300 if opts.quick else 1000, opts.seed)
        exact = optimal_lr(B, p.mu, p.sigma, p.hessian)
        err[name] = optimal_lr(B, p.mu, p.sigma, p.hessian, approx=True) / exact - 1
    return erf_figure(x, B, err)


def _families(opts: Options, loss: bool) -> list[dict]:
    d = 200 if opts.quick else 1000
    names = {"lowrank": "diagonal + rank 4 (surge)", "powerlaw": "dense power-law spectrum",
             "diagonal": "diagonal H (no surge)"}  # fmt: skip
    return [_panel(_problem(k, d, opts.seed), _grid(opts.quick), opts, v, loss=loss) for k, v in names.items()]


def fig3_figure(opts: Options):
    """Optimal lr against B for three problem families (one without a surge)."""
    from surgesim.plots import families_figure

    return families_figure(_families(opts, loss=False))


def fig4_figure(opts: Options):
    """Theorem 5: the optimal loss improvement against B for the same families."""
    from surgesim.plots import families_figure

    return families_figure(_families(opts, loss=True), ylabel="optimal loss improvement per step")


def fig1(opts: Options, out: Path) -> list[Path]:
    return _save(fig1_figure(opts), out, "fig1_surge")


def fig2(opts: Options, out: Path) -> list[Path]:
    return _save(fig2_figure(opts), out, "fig2_erf")


def fig3(opts: Options, out: Path) -> list[Path]:
    return _save(fig3_figure(opts), out, "fig3_families")


def fig4(opts: Options, out: Path) -> list[Path]:
    return _save(fig4_figure(opts), out, "fig4_loss")


def _from_command(main, args: list[str], out: Path, prefix: str) -> list[Path]:
    """Run another ``sims`` command from scratch in a temporary directory and keep its figures
    (and its summary.json) as figures/<prefix>_<name>."""
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, _png_and_pdf():
        with _cli.sub_command(f"{prefix} (python -m {main.__module__} {' '.join(args)})"):
            code = main(args + ["--out", tmp, "--quiet"])
        if code != 0:  # its error line is on stderr already
            raise _cli.Reported(code)
        for old in out.path.glob(f"{prefix}_*"):  # removed when this run's figures are written
            out.remove(old.name)
        kept = []
        for f in sorted(Path(tmp).glob("*.png")) + sorted(Path(tmp).glob("*.pdf")) + [Path(tmp) / "summary.json"]:
            kept.append(out / f"{prefix}_{f.name}")
            shutil.copyfile(f, kept[-1])
    return kept


def fig5(opts: Options, out: Path) -> list[Path]:
    from sims import dynamics

    quick = ["--dims", "64", "--seeds", "4", "--lr-points", "8", "--batch-sizes", "8,32,128,512,2048"]
    return _from_command(dynamics.main, ["--seed", str(opts.seed)] + (quick if opts.quick else []), out,
                         "fig5_dynamics")  # fmt: skip


def _check_torch() -> None:
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        from surgesim._install import TORCH

        raise _cli.UsageError(f"fig6, fig9 and fig10 train a network and need torch: {TORCH} "
                              "(or --only fig1,fig2,fig3,fig4,fig5,fig7,fig8)")  # fmt: skip


def fig6(opts: Options, out: Path) -> list[Path]:
    from sims import workloads

    quick = [
        "--batch-sizes",
        "8,32",
        "--lrs",
        "0.001,0.003",
        "--seeds",
        "1",
        "--max-steps",
        "80",
        "--no-gradstats",  # the gradient statistics and B_simple, B_crit cost most of a quick run
        "--eval-examples",
        "128",
        "--workers",
        "1",
        "--targets",
        "1.0,0.6,0.4",  # the full run's targets (sims.workloads' cnn default): the same file names
    ]
    return _from_command(workloads.main, ["--workload", "cnn", "--demo"] + (quick if opts.quick else []), out,
                         "fig6_workload")  # fmt: skip


def fig7(opts: Options, out: Path) -> list[Path]:
    from sims import limits

    return _from_command(limits.main, ["--seed", str(opts.seed)] + (["--quick"] if opts.quick else []), out, "fig7")


def fig8(opts: Options, out: Path) -> list[Path]:
    from sims import schedules

    quick = ["--dims", "32", "--seeds", "3", "--tune-seeds", "2", "--max-steps", "400", "--multipliers", "1"]
    return _from_command(schedules.main, ["--seed", str(opts.seed)] + (quick if opts.quick else []), out,
                         "fig8")  # fmt: skip


def fig9(opts: Options, out: Path) -> list[Path]:
    from sims import probe

    quick = ["--targets", "1.0", "--batch-sizes", "1,16", "--draws", "16", "--stats-examples", "16",
             "--hessian-examples", "4", "--probes", "2", "--crit-examples", "2",
             "--full-gradient-examples", "256"]  # fmt: skip
    return _from_command(probe.main, ["--workload", "cnn", "--demo", "--seed", str(opts.seed)]
                         + (quick if opts.quick else []), out, "fig9")  # fmt: skip


def fig10(opts: Options, out: Path) -> list[Path]:
    from sims import schedules

    quick = ["--seeds", "1", "--lrs", "1.6e-3", "--batch-sizes", "8,16", "--multipliers", "1",
             "--targets", "1.8", "--max-steps", "30", "--workers", "1"]  # fmt: skip
    return _from_command(schedules.main, ["--workload", "cnn", "--demo"] + (quick if opts.quick else []), out,
                         "fig10_cnn")  # fmt: skip


def fig12(opts: Options, out: Path) -> list[Path]:
    from sims import momentum

    return _from_command(momentum.main, ["--seed", str(opts.seed)] + (["--quick"] if opts.quick else []), out,
                         "fig12")  # fmt: skip


FIGURES: dict[str, Callable[[Options, Path], list[Path]]] = {
    "fig1": fig1, "fig2": fig2, "fig3": fig3, "fig4": fig4, "fig5": fig5, "fig6": fig6, "fig7": fig7, "fig8": fig8,
    "fig9": fig9, "fig10": fig10, "fig12": fig12,
}  # fmt: skip


def build_parser() -> _cli.Parser:
    p = _cli.parser("sims.figures", __doc__)
    p.add_argument("--out", default="figures", help="output directory (default figures/)")
    p.add_argument("--quick", action="store_true",
                   help="small, fast versions (measured run time: README, section \"Figures\")")
    p.add_argument("--seed", type=_cli.seed, default=0, help="seed of every problem and random stream (default 0)")
    p.add_argument(
        "--only",
        type=_only,
        default=(),
        help=f"comma-separated subset of {','.join(FIGURES)}",
    )
    p.add_argument("--quiet", action="store_true", help="print nothing")
    return p


def _only(text: str) -> tuple[str, ...]:
    """argparse type of --only: a non-empty comma-separated list (an empty one is an error, not
    every figure)."""
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected one or more of {', '.join(FIGURES)}, got {text!r}")
    return names


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return _cli.run(lambda: _main(args))


def _main(args) -> int:
    opts = Options(args.out, args.quick, args.seed, args.only, args.quiet)
    unknown = set(opts.only) - set(FIGURES)
    if unknown:
        raise _cli.UsageError(
            f"--only: unknown figure(s) {', '.join(sorted(unknown))}; choose from {', '.join(FIGURES)}"
        )
    if not opts.only or {"fig6", "fig9", "fig10"} & set(opts.only):
        _check_torch()  # before any figure's work
    out = _cli.out_dir(opts.out)
    for name, make in FIGURES.items():
        if opts.only and name not in opts.only:
            continue
        t = time.perf_counter()
        paths = make(opts, out)
        if not opts.quiet:
            print(f"{name}: {', '.join(p.name for p in paths)} ({time.perf_counter() - t:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
