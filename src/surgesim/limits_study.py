"""The limits study (``sims.limits``): where eq 10, eq 2 and eq 14 hold, and how far correlated
noise, non-Gaussian per-example gradients and Adam move the optimal learning rate of sign-SGD,
assembled from ``surgesim.limits`` and ``surgesim.departures`` into tables and figures.

``run_limits`` computes every section and returns a ``LimitsResult`` that writes summary.csv,
summary.json, maps.csv, families.csv, peaks.csv, correlation.csv, nongaussian.csv, adam.csv and
the six limits_*.png figures (columns and keys: docs/outputs.md).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from . import limits as lim
from . import theory as th
from .outputs import OutputDir, atomic_path, dumps_json
from .preflight import check_range
from .problem import FAMILIES, QuadraticProblem, power_law_problem, surge_problem
from .sweep import write_csv

__all__ = ["TOLS", "LimitsOptions", "LimitsResult", "limits_options", "run_limits"]

TOLS = (0.05, 0.2)
"""The tolerances of families.csv and of the summary's within_5pct / within_20pct columns."""


@dataclass(frozen=True)
class LimitsOptions:
    """One limits study, as ``sims.limits`` resolves its options (saved as options.json)."""

    out: str
    quick: bool
    dims: int
    seed: int
    plot: bool
    quiet: bool
    map_batch_sizes: tuple[float, ...]
    snr_scales: tuple[float, ...]
    bound_dims: tuple[int, ...]
    powerlaw_dims: tuple[int, ...]
    corr_dims: int
    corr_batch_sizes: tuple[float, ...]
    corr_rhos: tuple[float, ...]
    laws: tuple[tuple[str, float | None], ...]
    ng_batch_sizes: tuple[int, ...]
    ng_rel_se: float
    ng_max_draws: float
    adam_betas: tuple[tuple[float, float], ...]
    adam_batch_sizes: tuple[float, ...]
    adam_samples: int


def limits_options(*, out: str, quick: bool, dims: int, seed: int, plot: bool, quiet: bool) -> LimitsOptions:
    """The study's grids: the full ones, or coarse grids and few trials with ``quick``. A ``dims``
    outside [2, 2^40] or a ``seed`` outside [0, 2^63) is refused: ValueError naming it as `key`."""
    check_range("dims", dims, 2, 2**40)
    if not 0 <= seed < 2**63:
        raise ValueError(f"`seed` must be in [0, 2^63), got {seed}")
    q = quick

    def grid(lo: float, hi: float, n: int) -> tuple[float, ...]:
        return tuple(float(v) for v in np.geomspace(lo, hi, n))

    return LimitsOptions(
        out=out, quick=q, dims=dims, seed=seed, plot=plot, quiet=quiet,
        map_batch_sizes=grid(1, 1e8, 33 if q else 97),
        snr_scales=grid(0.1, 30, 9 if q else 31),
        bound_dims=tuple(int(4 * 4**k) for k in range(6)) if q
        else tuple(int(round(v)) for v in np.geomspace(4, 65536, 15)),
        powerlaw_dims=(16, 64, 256) if q else (8, 16, 32, 64, 128, 256, 512, 1024, 2048),
        corr_dims=min(dims, 200) if q else dims,
        corr_batch_sizes=grid(1, 1e7, 8 if q else 22),
        corr_rhos=grid(1e-4, 0.9, 5 if q else 11),
        laws=(("gaussian", None), ("student_t", 3.0), ("laplace", None), ("two_point", 0.01)),
        ng_batch_sizes=(1, 4, 16, 64, 256, 1024) if q else tuple(2**k for k in range(13)),
        ng_rel_se=0.1 if q else 0.02,
        ng_max_draws=1e7 if q else 4e8,
        adam_betas=((0.9, 0.999), (0.0, 0.999), (0.9, 0.95)),
        adam_batch_sizes=grid(1, 1e7, 15 if q else 43),
        adam_samples=1 << (11 if q else 14),
    )  # fmt: skip


def _cell(v):
    if isinstance(v, float | np.floating):
        return float(v) if math.isfinite(v) else None
    return v.item() if isinstance(v, np.generic) else v


def _write_csv(path, rows: list[dict]) -> None:
    """The rows' scalar cells through the one CSV writer (``surgesim.sweep.write_csv``); a number
    that is not finite as an empty cell (docs/outputs.md)."""
    cols = list(dict.fromkeys(k for r in rows for k in r if not isinstance(r[k], np.ndarray)))
    write_csv([{k: _cell(v) for k, v in r.items() if k in cols} for r in rows], path, cols)


def _fmt_b(b: float, bound: float | None = None) -> str:
    return f"{b:.3g}" + (f" ({b / bound:.2g} x bound)" if bound else "")


def _within(first: float, last: float, grid_max: float, bound: float | None = None) -> str:
    """'within tol' as text, from the failure interval on a grid (``limits.failure_interval``)."""
    if math.isnan(first):
        return "all B on the grid"
    return f"B < {_fmt_b(first, bound)}" + (f" and B > {_fmt_b(last, bound)}" if last < grid_max else "")


def _from(B, err, tol: float) -> str:
    """'within tol from some B on' as text (``limits.converged_from``)."""
    b = lim.converged_from(B, err, tol)
    return f"B >= {_fmt_b(b)}" if math.isfinite(b) else f"not up to B = {_fmt_b(float(np.max(B)))}"


def _peak(B, lr) -> str:
    k = lim.first_peak(lr)
    return "none" if k is None else f"{B[k]:.3g}"


def _row(approximation: str, setting: str, within_5pct: str, within_20pct: str, max_abs_error: float) -> dict:
    return {"approximation": approximation, "setting": setting, "within_5pct": within_5pct,
            "within_20pct": within_20pct, "max_abs_error": max_abs_error}  # fmt: skip


@dataclass
class LimitsResult:
    """Every section of the study: its tables (rows per CSV file), figures' inputs and summary."""

    options: LimitsOptions
    tables: dict[str, list[dict]] = field(default_factory=dict)
    summary: list[dict] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    scalars: dict[str, Any] = field(default_factory=dict)

    def write(self, out: OutputDir | Path) -> None:
        """The CSV files, summary.json and (with options.plot) the figures into ``out``."""
        for name in ("maps", "families", "peaks", "correlation", "nongaussian", "adam"):
            _write_csv(out / f"{name}.csv", self.tables[name])
        _write_csv(out / "summary.csv", self.summary)
        with atomic_path(out / "summary.json") as tmp:
            tmp.write_text(dumps_json(self.scalars))
        if self.options.plot:
            for name, fig in self.draw().items():
                fig.savefig(out / name, dpi=120)

    def draw(self) -> dict[str, Any]:
        """The six figures by file name (``surgesim.plots.limits``)."""
        from .plots import limits as pl

        f, bn0 = self.figures, self.scalars["noise_batch_size"]
        return {
            "limits_maps.png": pl.regime_maps_figure(f["maps"]),
            "limits_correlation.png": pl.regime_maps_figure(f["cmaps"]),
            "limits_families.png": pl.family_errors_figure(self.tables["families"]),
            "limits_peak.png": pl.peak_figure(self.tables["peaks"]),
            "limits_nongaussian.png": pl.departure_figure(self.tables["nongaussian"], noise_batch_size=bn0),
            "limits_adam.png": pl.adam_figure(f["B_adam"], f["sign_lr"], f["adam_curves"], noise_batch_size=bn0),
        }

    def report(self) -> str:
        """The console table: one line per summary row."""
        lines = [f"{'approximation':<40} {'setting':<62} {'within 5%':<44} {'within 20%':<44}"]
        for r in self.summary:
            lines.append(f"{r['approximation']:<40} {r['setting']:<62} {r['within_5pct']:<44} {r['within_20pct']:<44}")
        return "\n".join(lines)


def steps(opts: LimitsOptions) -> int:
    """Progress steps of ``run_limits``: one per section, per non-Gaussian cell and per Adam."""
    return 6 + len(opts.laws) * len(opts.ng_batch_sizes) + len(opts.adam_betas)


def run_limits(opts: LimitsOptions, progress: Callable[[int, int], None] | None = None) -> LimitsResult:
    """Every section of the study (module docstring); ``progress(done, total)`` as it goes."""
    t0 = time.perf_counter()
    total, done = steps(opts), [0]

    def step(k: int = 1) -> None:
        done[0] += k
        if progress is not None:
            progress(done[0], total)

    res = LimitsResult(opts)
    base = surge_problem(opts.dims, opts.seed)
    _maps(res, base)
    step()
    _families(res)
    step()
    _peaks(res)
    step()
    _correlation(res)
    step(2)
    _non_gaussian(res, base, None if progress is None else lambda i, n: progress(done[0] + i, total))
    step(len(opts.laws) * len(opts.ng_batch_sizes))
    _adam(res, base, step)
    res.scalars = {
        "dims": opts.dims,
        "seed": opts.seed,
        "quick": opts.quick,
        "noise_batch_size": th.noise_batch_size(base.mu, base.sigma, base.hessian),
        "validity_bound": th.validity_bound(base.mu, base.sigma),
        "max_abs_err_erf_in_eq9": max(float(np.max(np.abs(r["err_erf"]))) for r in res.tables["families"]),
        "rows": len(res.summary),
        "wall_seconds": time.perf_counter() - t0,
    }
    return res


def _maps(res: LimitsResult, base) -> None:
    """maps.csv: eq 10 in eq 9 and eq 2 against eq 9 over (B, mu/sigma), and eq 2 over (B, B_noise)."""
    o = res.options
    B_map = np.array(o.map_batch_sizes)
    maps = [lim.erf_error_map(base, B_map, o.snr_scales), lim.surge_error_map(base, B_map, o.snr_scales)]
    sweep = {f"lowrank d={d}": surge_problem(d, o.seed) for d in o.bound_dims}
    sweep.update({f"powerlaw d={d}": power_law_problem(d, o.seed) for d in o.powerlaw_dims})
    maps.append(lim.surge_bound_map(list(sweep.values()), np.geomspace(1e-5, 1e3, len(o.map_batch_sizes))))
    res.tables["maps"] = [r for m in maps for r in m.rows()]
    res.figures["maps"], res.figures["sweep"] = maps, sweep


def _families(res: LimitsResult) -> None:
    """families.csv: per problem family, where eq 10 in eq 9 and eq 2 stay within each tolerance."""
    o = res.options
    B_map = np.array(o.map_batch_sizes)
    families = {name: cast(Callable[..., QuadraticProblem], f)(o.dims, o.seed) for name, f in FAMILIES.items()}
    rows = res.tables["families"] = lim.family_errors(families, B_map, TOLS)
    for r in rows:
        for which, label in (("erf", "eq 10 in eq 9"), ("surge", "eq 2 vs eq 9")):
            first5, last5 = r[f"{which}_fails_from_0.05"], r[f"{which}_fails_until_0.05"]
            first20, last20 = r[f"{which}_fails_from_0.2"], r[f"{which}_fails_until_0.2"]
            res.summary.append(_row(
                label, f"{r['problem']} d={r['dims']}, B_noise {r['noise_batch_size']:.3g}, "
                f"bound {r['validity_bound']:.3g}",
                _within(first5, last5, B_map.max(), r["validity_bound"]),
                _within(first20, last20, B_map.max(), r["validity_bound"]),
                float(np.max(np.abs(r[f"err_{which}"]))),
            ))  # fmt: skip


def _peaks(res: LimitsResult) -> None:
    """peaks.csv: the peak of exact eq 9 against eq 14's B_noise and eq 16's height."""
    rows = res.tables["peaks"] = lim.peak_table(res.figures["sweep"])
    for r in rows:
        res.summary.append(_row(
            "peak of eq 9 at B_noise (eq 14)", f"{r['problem']}, B_noise/bound {r['bnoise_over_bound']:.3g}",
            f"B_peak/B_noise = {r['peak_over_bnoise']:.4g}", f"lr_peak/eps_max = {r['peak_lr_over_eps_max']:.4g}",
            abs(r["peak_over_bnoise"] - 1.0),
        ))  # fmt: skip


def _correlation(res: LimitsResult) -> None:
    """correlation.csv: eq 9 (independent coordinates) against the exact correlated theory."""
    o = res.options
    cbase = surge_problem(o.corr_dims, o.seed)
    cmaps = [lim.correlation_error_map(cbase, o.corr_batch_sizes, o.corr_rhos, aligned=a) for a in (True, False)]
    res.tables["correlation"] = [r for m in cmaps for r in m.rows()]
    res.figures["cmaps"] = cmaps
    for m in cmaps:
        for k, rho in enumerate(m.y):
            z = m.z[k]
            res.summary.append(_row("independent coordinates (eq 9)", f"{m.ylabel} = {rho:.3g}, d={cbase.dim}",
                                    _from(m.x, z, 0.05), _from(m.x, z, 0.2), float(np.max(np.abs(z)))))  # fmt: skip


def _non_gaussian(res: LimitsResult, base, progress) -> None:
    """nongaussian.csv: Monte Carlo optimal lr of non-Gaussian per-example gradients against eq 9."""
    o = res.options
    rows = res.tables["nongaussian"] = lim.non_gaussian_departure(
        base, dict(o.laws), o.ng_batch_sizes, rel_se=o.ng_rel_se, max_draws=o.ng_max_draws, seed=o.seed,
        progress=progress,
    )  # fmt: skip
    for law in dict.fromkeys(r["law"] for r in rows):
        sel = [r for r in rows if r["law"] == law]
        Bs = [r["batch_size"] for r in sel]
        dep = [r["departure"] for r in sel]
        res.summary.append(_row("Gaussian per-example gradients (eq 9)", f"{law}, d={base.dim}",
                                _from(Bs, dep, 0.05), _from(Bs, dep, 0.2), float(np.max(np.abs(dep)))))  # fmt: skip


def _adam(res: LimitsResult, base, step: Callable[[], None]) -> None:
    """adam.csv: one Adam step (frozen-gradient model) against sign (Appendix A)."""
    o = res.options
    B_adam = np.array(o.adam_batch_sizes)
    sign_lr = th.optimal_lr(B_adam, base.mu, base.sigma, base.hessian)
    rows, curves = [], {}
    for b1, b2 in o.adam_betas:
        lr, se = lim.adam_frozen_lr(base, B_adam, b1, b2, samples=o.adam_samples, seed=o.seed)
        label = f"Adam({b1:g}, {b2:g})"
        curves[label] = (lr, se)
        rows += [{"optimizer": label, "batch_size": float(b), "lr_adam": float(x), "lr_adam_se": float(s),
                  "lr_sign": float(g), "ratio": float(x / g)}
                 for b, x, s, g in zip(B_adam, lr, se, sign_lr)]  # fmt: skip
        rel = lr / sign_lr - 1.0
        res.summary.append(_row(
            "Adam as sign (Appendix A)", f"{label}, frozen-gradient one step, d={base.dim}, "
            f"peak at B ~ {_peak(B_adam, lr)} (sign: {_peak(B_adam, sign_lr)})",
            _from(B_adam, rel, 0.05), _from(B_adam, rel, 0.2), float(np.max(np.abs(rel))),
        ))  # fmt: skip
        step()
    res.tables["adam"] = rows
    res.figures.update(B_adam=B_adam, sign_lr=sign_lr, adam_curves=curves)
