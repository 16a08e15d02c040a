"""The grid fit (``sims.fit``): Section 3.2-3.3 fitted to any learning-rate x batch-size grid,
group by group (``gridfit.fit_groups``: the optimal learning rate per batch size, the surge curve
eq 2 against the SGD curves eq 24 by AIC, B_noise by eq 22 or the surge fit, eq_max by eq 23),
with the paper's Fig 2-4 panels per group.

``run_fit`` reads and fits the grid and returns a ``FitResult`` that writes optimal_lr.csv,
fits.csv and fit_<group>.png/.pdf (columns: docs/outputs.md).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import gridfit
from .gridfit import GridFit, csv_cells
from .outputs import OutputDir
from .sweep import write_csv

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["FitOptions", "FitResult", "run_fit", "fit_figure", "readable", "resolve_fit_options"]


@dataclass(frozen=True)
class FitOptions:
    """One grid fit, as ``sims.fit`` resolves its options (saved as options.json)."""

    grid: str
    lr_col: str
    batch_col: str
    loss_col: str
    maximize: bool
    group_cols: tuple[str, ...]
    steps_col: str | None
    seed_col: str | None
    include_edges: bool
    out: str
    plot: bool
    quiet: bool

    def inputs(self) -> dict[str, Any]:
        """What a rerun into the same output directory must share with the run there (else it is
        refused, so that no figure of one grid stays beside the CSVs of another): the grid's
        content and the options that change the results."""
        digest = hashlib.sha256(Path(self.grid).read_bytes()).hexdigest()
        keep = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("grid", "out", "plot", "quiet")}
        return {"grid_sha256": digest, **keep}


def resolve_fit_options(given: Mapping[str, Any]) -> FitOptions:
    """The options of ``python -m sims.fit`` by name (``FitOptions``' fields; ``grid`` "steplaw":
    the shipped StepLaw grid; ``group_cols`` comma-separated), checked: ValueError for a grid file
    that does not exist."""
    from .data import steplaw_grid

    grid = str(steplaw_grid()) if given["grid"] == "steplaw" else given["grid"]
    if not Path(grid).is_file():
        raise ValueError(f"{grid!r}: no such file")
    groups = tuple(c.strip() for c in given["group_cols"].split(",") if c.strip())
    fields = {f.name: given[f.name] for f in dataclasses.fields(FitOptions)}
    return FitOptions(**fields | {"grid": grid, "group_cols": groups})


def readable(v) -> str:
    """A group value for titles: 429260800 -> 429M, 2.27e10 -> 22.7B; others as they are."""
    if isinstance(v, (int, float)) and abs(v) >= 1e4:
        for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
            if abs(v) >= scale:
                return f"{v / scale:.3g}{suffix}"
    return str(v)


def _slug(key: dict) -> str:
    """A file-name part for a group: at most 100 characters (a long value is cut and a hash of the
    whole key added, so that file names stay under every file system's 255-byte limit)."""
    slug = re.sub(r"[^A-Za-z0-9.=-]+", "_", "_".join(f"{c}={v}" for c, v in key.items())).strip("_")
    if len(slug) > 100:
        slug = slug[:91] + "_" + hashlib.sha256(repr(sorted(key.items())).encode()).hexdigest()[:8]
    return slug


def _g(x: float, fmt: str, width: int) -> str:
    return f"{x:>{width}{fmt}}" if math.isfinite(x) else f"{'-':>{width}}"


@dataclass
class FitResult:
    """The fitted groups of one grid: (group key, ``GridFit``) pairs, beside the grid's table."""

    options: FitOptions
    table: dict[str, np.ndarray]
    groups: list[tuple[dict, GridFit]]

    def notes(self) -> list[str]:
        """One line per group left without B_noise (its reason)."""
        return [f"{', '.join(f'{c} = {readable(v)}' for c, v in key.items()) or 'the grid'}: {fit.note}; "
                "B_noise and peak lr left empty" for key, fit in self.groups if fit.note]  # fmt: skip

    def write(self, out: OutputDir | Path) -> list[str]:
        """optimal_lr.csv, fits.csv and (with options.plot) one figure per group; returns the
        figures' names."""
        o = self.options
        write_csv(csv_cells(gridfit.optimal_lr_rows(self.groups)), out / "optimal_lr.csv",
                  [*o.group_cols, *gridfit.OPTIMUM_COLUMNS])  # fmt: skip
        write_csv(csv_cells(gridfit.fit_rows(self.groups)), out / "fits.csv", [*o.group_cols, *gridfit.FIT_COLUMNS])
        figures: list[str] = []
        for key, fit in self.groups if o.plot else ():
            sel = np.ones(len(self.table[o.lr_col]), dtype=bool)
            for c, v in key.items():
                sel &= self.table[c] == (v if isinstance(v, str) else float(v))
            label = ", ".join(f"{c} = {readable(v)}" for c, v in key.items())
            fig = fit_figure(
                fit, self.table[o.lr_col][sel], self.table[o.batch_col][sel], self.table[o.loss_col][sel],
                maximize=o.maximize, score_label=o.loss_col,
                title=f"{Path(o.grid).name}" + (f": {label}" if label else ""),
            )  # fmt: skip
            name = "fit_" + (_slug(key) if key else "all")
            if name in figures:  # groups whose names differ only in characters the slug drops
                name += "_" + hashlib.sha256(repr(sorted(key.items())).encode()).hexdigest()[:8]
            fig.savefig(out / f"{name}.png", dpi=200)
            fig.savefig(out / f"{name}.pdf", metadata={"CreationDate": None})
            figures.append(name)
        return figures

    def report(self) -> str:
        """The console table: one line per group."""
        head = " ".join(f"{c:>8}" for c in self.options.group_cols)
        lines = [f"{head} {'B_noise':>9} {'source':>16} {'peak lr':>9} {'surge rss':>9} {'sgd.5 rss':>9} "
                 f"{'sgd1 rss':>9} {'best (AIC)':>13} {'peak B':>7}"]  # fmt: skip
        for key, fit in self.groups:
            c = fit.curves
            rss = [c[m].rss if m in c else math.nan for m in ("surge", "sgd_alpha_0.5", "sgd_alpha_1")]
            vals = " ".join(f"{readable(v):>8}" for v in key.values())
            lines.append(f"{vals} {_g(fit.noise_batch_size, '.4g', 9)} {fit.source:>16} {_g(fit.peak_lr, '.3e', 9)} "
                         f"{_g(rss[0], '.3f', 9)} {_g(rss[1], '.3f', 9)} {_g(rss[2], '.3f', 9)} "
                         f"{fit.best_model or '-':>13} {_g(fit.peak_batch_size, '.0f', 7)}")  # fmt: skip
        lines.append("(B_noise, peak lr: eq 22/23 (source eq22) or the surge fit eq 2 (surge_fit), '-' when the fitted "
                     "peak lies outside the batch sizes;\n rss: residual sum of squares in log lr of each curve; best: "
                     "lowest AIC; peak B: the batch size with the largest optimal lr on the grid; columns: "
                     "docs/outputs.md)")  # fmt: skip
        return "\n".join(lines)


def run_fit(opts: FitOptions) -> FitResult:
    """Read and fit the grid of ``opts``, group by group; ValueError when no group can be fitted."""
    table = gridfit.read_table(opts.grid)
    groups = gridfit.fit_groups(
        table, opts.lr_col, opts.batch_col, opts.loss_col, opts.group_cols, seed_col=opts.seed_col,
        steps_col=opts.steps_col, maximize=opts.maximize, include_edges=opts.include_edges,
    )  # fmt: skip
    if all(fit.source == "not_fitted" for _, fit in groups):
        why = groups[0][1].note if len(groups) == 1 else "no group has 3 usable optima or steps at 2 batch sizes"
        raise ValueError(f"{opts.grid}: {why}")
    return FitResult(opts, table, groups)


def fit_figure(fit: GridFit, lr, B, score, *, maximize: bool, score_label: str, title: str = "",
               missing: str | None = None) -> Figure:  # fmt: skip
    """The paper's Fig 2-4 panels for one grid through ``surgesim.plots.grid``: the heat map with
    the optimal lr per B (+-2 s.e. in log lr: bootstrap over seeds, else half the grid spacing),
    the fitted curves (eq 2, eq 24) and B_noise; and the eq 22 panel when steps are known. A grid
    whose learning rates differ per batch size is drawn as it is (each B over its own lrs); cells
    run without a value are labelled ``missing`` (default: an empty or NaN score in the grid)."""
    from .plots.grid import grid_figure

    bs, lrs, z = gridfit.score_matrix(lr, B, score, maximize=maximize)
    ran = gridfit.grid_cells(lr, B)[2]
    opt = [o for o in fit.optima if math.isfinite(o.optimal_lr)]
    optima = {}
    for label, pts in (("optimal lr", [o for o in opt if not o.at_edge]),
                       ("optimum at the lr-grid edge (a bound)", [o for o in opt if o.at_edge])):  # fmt: skip
        if pts:
            err = [o.log_lr_se if math.isfinite(o.log_lr_se) else o.log_lr_halfwidth for o in pts]
            optima[label] = ([o.batch_size for o in pts], [o.optimal_lr for o in pts], err)
    steps = [o.steps for o in fit.optima] if fit.eq22 else None
    return grid_figure(
        bs, lrs, z, optima=optima, curves=fit.curves, noise_batch_size=fit.noise_batch_size, steps=steps,
        examples=[o.examples for o in fit.optima] if fit.eq22 else None,
        s_min=fit.eq22[1] if fit.eq22 else None, title=title, normalize=maximize,
        score_label=score_label if maximize else f"closeness of {score_label} to the best at this B",
        missing=missing or f"no value: {score_label} empty or NaN in the grid", ran=ran,
    )  # fmt: skip
