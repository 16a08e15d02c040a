"""The paper's figures as files: figures 1-4 built from the closed forms (eq 1, eq 2, eq 8-10,
eq 18) and Monte Carlo estimates, each saved as PNG and PDF at ``DPI``, and the figures of another
command kept under a figure's prefix (``figures_of_command``). What ``python -m sims.figures``
draws (``FIGURES``, each by ``make_figure``); each ``figN_figure`` takes settings with ``quick``
(small, fast versions) and ``seed``."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ._install import TORCH
from .command import Reported, sub_command
from .outputs import OutputDir

__all__ = ["DPI", "Settings", "save", "png_and_pdf", "figures_of_command", "fig1_figure", "fig2_figure", "fig3_figure",
           "fig4_figure", "FigureOptions", "FIGURES", "FROM_COMMANDS", "check_figures", "make_figure"]  # fmt: skip


class Settings(Protocol):
    """What a figure builder reads: small versions or the full ones, and the seed of everything."""

    @property
    def quick(self) -> bool: ...

    @property
    def seed(self) -> int: ...


DPI = 200


def save(fig: Any, out: Path | OutputDir, name: str) -> list[Path]:
    """The figure as ``out/name.png`` (at ``DPI``) and ``out/name.pdf`` (reproducible bytes), closed."""
    import matplotlib.pyplot as plt

    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    fig.savefig(paths[0], dpi=DPI)
    fig.savefig(paths[1], metadata={"CreationDate": None})  # reproducible PDF bytes
    plt.close(fig)
    return paths


@contextlib.contextmanager
def png_and_pdf() -> Iterator[None]:
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


def _panel(problem: Any, batch_sizes: Sequence[int], opts: Settings, title: str, loss: bool = False,
           sgd: bool = False) -> dict:  # fmt: skip
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


def fig1_figure(opts: Settings) -> Any:
    """Figure 1 (paper's Fig 1): the optimal lr against B, theory and Monte Carlo."""
    from surgesim import surge_problem
    from surgesim.plots import lr_vs_batch_figure

    p = surge_problem(300 if opts.quick else 1000, opts.seed)
    d = _panel(p, _grid(opts.quick), opts, "", sgd=True)
    title = f"Optimal learning rate vs batch size: sign-SGD and SGD ({p.describe()})"
    return lr_vs_batch_figure(d["B_line"], d["curves"], d["B_points"], d["points"], d["points_se"],
                              d["noise_batch_size"], d["plateau"], d["validity_bound"], title=title)  # fmt: skip


def fig2_figure(opts: Settings) -> Any:
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


def _families(opts: Settings, loss: bool) -> list[dict]:
    d = 200 if opts.quick else 1000
    names = {"lowrank": "diagonal + rank 4 (surge)", "powerlaw": "dense power-law spectrum",
             "diagonal": "diagonal H (no surge)"}  # fmt: skip
    return [_panel(_problem(k, d, opts.seed), _grid(opts.quick), opts, v, loss=loss) for k, v in names.items()]


def fig3_figure(opts: Settings) -> Any:
    """Optimal lr against B for three problem families (one without a surge)."""
    from surgesim.plots import families_figure

    return families_figure(_families(opts, loss=False))


def fig4_figure(opts: Settings) -> Any:
    """Theorem 5: the optimal loss improvement against B for the same families."""
    from surgesim.plots import families_figure

    return families_figure(_families(opts, loss=True), ylabel="optimal loss improvement per step")


def figures_of_command(
    main: Callable[[list[str]], int], args: list[str], out: OutputDir, prefix: str, *, one_figure: bool = False
) -> list[Path]:
    """Run another command (its ``main(argv)``) from scratch in a temporary directory and keep its
    figures (and its summary.json) as ``out/<prefix>_<name>``, each PNG with a PDF twin at ``DPI``;
    a command that writes ``one_figure``: as ``out/<prefix>.png``, ``.pdf`` and ``.json`` (its summary)."""
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, png_and_pdf():
        with sub_command(f"{prefix} (python -m {main.__module__} {' '.join(args)})"):
            code = main(args + ["--out", tmp, "--quiet"])
        if code != 0:  # its error line is on stderr already
            raise Reported(code)
        made = sorted(Path(tmp).glob("*.png")) + sorted(Path(tmp).glob("*.pdf")) + [Path(tmp) / "summary.json"]
        if one_figure and len(made) != 3:
            raise RuntimeError(f"{main.__module__} wrote {len(made) - 1} figure files, expected one PNG and one PDF")
        # The old files are removed when this run's are written.
        for old in [*out.path.glob(f"{prefix}_*"), *out.path.glob(f"{prefix}.*")]:
            out.remove(old.name)
        kept = []
        for f in made:
            kept.append(out / (f"{prefix}{f.suffix}" if one_figure else f"{prefix}_{f.name}"))
            shutil.copyfile(f, kept[-1])
    return kept


@dataclass(frozen=True)
class FigureOptions:
    """The settings of ``python -m sims.figures``: where, small or full, the seed, which figures
    (empty: every one of ``FIGURES``), and whether to print."""

    out: str
    quick: bool
    seed: int
    only: tuple[str, ...]
    quiet: bool


BUILT = {"fig1": (fig1_figure, "fig1_surge"), "fig2": (fig2_figure, "fig2_erf"), "fig3": (fig3_figure, "fig3_families"),
         "fig4": (fig4_figure, "fig4_loss")}  # fmt: skip
"""The figures built here: (builder, the files' name)."""
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
"""Every figure, in the order they are drawn."""


def check_figures(only: Sequence[str]) -> None:
    """Refuse (ValueError naming the option as `only`) figures not in ``FIGURES``, and figures that
    train a network when torch is not installed (``only`` empty: every figure)."""
    if unknown := set(only) - set(FIGURES):
        raise ValueError(f"`only`: unknown figure(s) {', '.join(sorted(unknown))}; choose from {', '.join(FIGURES)}")
    trains = {"fig6", "fig9", "fig10", "fig11"}
    if (not only or trains & set(only)) and importlib.util.find_spec("torch") is None:
        raise ValueError(f"fig6, fig9, fig10 and fig11 train a network and need torch: {TORCH} "
                         "(or `only` fig1,fig2,fig3,fig4,fig5,fig7,fig8,fig12)")  # fmt: skip


def make_figure(
    name: str, opts: FigureOptions, out: OutputDir, command_main: Callable[[str], Callable[[list[str]], int]]
) -> list[Path]:
    """Draw the figure ``name`` into ``out``: built here (``BUILT``), or by the command that draws
    it (``FROM_COMMANDS``: ``command_main(command)`` is its ``main(argv)``, run by
    ``figures_of_command``)."""
    if name in BUILT:
        return save(BUILT[name][0](opts), out, BUILT[name][1])
    runs = FROM_COMMANDS[name]
    paths = []
    for command, prefix, args, quick in runs if isinstance(runs, list) else [runs]:
        argv = (args.format(seed=opts.seed) + (" " + quick if opts.quick else "")).split()
        paths += figures_of_command(command_main(command), argv, out, prefix, one_figure=command in ONE_FIGURE)
    return paths
