"""Analysis of any learning-rate x batch-size grid (Section 3.2-3.3): the optimal learning rate
per batch size with its uncertainty, the surge curve (eq 2) against the SGD curves (eq 24 form,
alpha = 0.5 and 1), and B_noise from steps and examples (eq 22) with eps_max by eq 23.

It works on a table of runs, one row per (group, lr, batch size[, seed]), with a score that is
either a loss (lower is better: the final loss of a fixed-budget run) or a gain (higher is better:
the paper's further loss decrease after a fixed number of steps past the target loss). Steps to a
target, when the table has them, give eq 22. No torch here: grids from ``surgesim.workloads``,
``surgesim.dynamics`` or a user's own experiments all go through the same functions.

Choices, stated once:
- The optimum per batch size is ``surgesim.fit.grid_optimum`` (a parabola in log lr through the
  best grid point and its neighbours) applied to the seed-averaged score; a learning rate whose
  score is missing (NaN: the run never reached the target, or diverged) for any seed counts as
  worst. Its uncertainty: with two or more seeds, a bootstrap over seeds of the optimum in log lr
  (``log_lr_se``); in every case half the local grid spacing in log lr (``log_lr_halfwidth``,
  the resolution).
- An optimum at the edge of its learning-rate grid is only a bound; such points are flagged and
  left out of the curve fits (``include_edges=True`` keeps them).
- S per batch size (eq 22) is the fewest steps over learning rates of the seed-averaged steps to
  the target (McCandlish et al.'s S at the step-optimal learning rate), E = B S.
- The curves are compared by least squares in log lr with both parameters free
  (``surgesim.fit.compare_curves``) and Gaussian AIC; ``best_model`` is the lowest AIC.
- No extrapolated numbers: a surge fit whose peak B_noise lies outside the grid's batch sizes
  (the optima only rise or only fall) gives no B_noise and no peak lr (NaN, written as an empty
  cell; ``source == "no_peak_in_range"``), and a grid with too few usable optima gives
  ``source == "not_fitted"``; ``GridFit.note`` says why in one line.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .fit import CurveFit, compare_curves, estimate_peak_lr, fit_noise_batch_size, grid_optimum

__all__ = [
    "BatchOptimum",
    "csv_cells",
    "GridFit",
    "read_table",
    "optimal_lr_per_batch",
    "fit_grid",
    "fit_groups",
    "optimal_lr_rows",
    "fit_rows",
    "CURVE_MODELS",
    "FIT_COLUMNS",
    "OPTIMUM_COLUMNS",
    "score_matrix",
    "grid_cells",
]

CURVE_MODELS = ("surge", "sgd_alpha_0.5", "sgd_alpha_1")
FIT_COLUMNS = (
    "noise_batch_size", "peak_lr", "surge_rss", "sgd_rss_alpha_0.5", "sgd_rss_alpha_1", "best_model",
    "noise_batch_size_source", "surge_noise_batch_size", "surge_peak_lr", "surge_aic",
    "sgd_aic_alpha_0.5", "sgd_aic_alpha_1", "eq22_noise_batch_size", "s_min", "e_min",
    "surge_peak_in_range", "peak_batch_size", "n_batch_sizes", "n_fitted", "note",
)  # fmt: skip
OPTIMUM_COLUMNS = (
    "batch_size", "optimal_lr", "log_lr_se", "log_lr_halfwidth", "n_seeds", "at_edge", "best_score", "steps",
    "examples",
)  # fmt: skip


def read_table(path: str | Path) -> dict[str, np.ndarray]:
    """A CSV file as columns: numeric columns as float64 (empty cells NaN), others as str arrays."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a byte-order mark is not in the header
        reader = csv.reader(f)
        try:
            header = next(reader)
            rows = list(reader)
        except StopIteration:
            raise ValueError(f"{path}: empty file") from None
        except csv.Error as e:  # e.g. a field over csv's size limit
            raise ValueError(f"{path}: line {reader.line_num}: {e}") from None
    if len(set(header)) != len(header):
        raise ValueError(f"{path}: duplicate column names in header {header}")
    bad = [i + 2 for i, r in enumerate(rows) if len(r) != len(header)]
    if bad:
        raise ValueError(f"{path}: line {bad[0]} has a different number of cells than the header")
    if not rows:
        raise ValueError(f"{path}: no data rows")
    table: dict[str, np.ndarray] = {}
    for j, name in enumerate(header):
        cells = [r[j].strip() for r in rows]
        try:
            table[name] = np.array([float(c) if c else math.nan for c in cells])
        except ValueError:
            table[name] = np.array(cells, dtype=str)
    return table


@dataclass(frozen=True)
class BatchOptimum:
    """The optimal learning rate at one batch size, and the steps to target there (if known)."""

    batch_size: float
    optimal_lr: float
    log_lr_se: float  # bootstrap (over seeds) standard error of log(optimal_lr); NaN below 2 seeds
    log_lr_halfwidth: float  # half the local grid spacing in log lr (resolution)
    n_seeds: int
    at_edge: bool  # the best grid point is the smallest or largest lr tried: a bound only
    best_score: float
    steps: float = math.nan  # fewest seed-averaged steps to target over lr (eq 22's S)

    @property
    def examples(self) -> float:
        return self.batch_size * self.steps


def _first_non_number(arr: np.ndarray) -> str:
    """The first cell of a text column that is not a number (the one to quote in an error)."""
    for cell in arr.flat:
        try:
            float(cell or "nan")
        except ValueError:
            return str(cell)
    return str(arr.flat[0])


def _as_float(name: str, values) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype.kind in "US":
        raise ValueError(f"column {name} is not numeric (e.g. {_first_non_number(arr)!r})")
    return arr.astype(np.float64).ravel()


BOOTSTRAP_RESAMPLES = 200


def _bootstrap_log_se(lrs: np.ndarray, table: np.ndarray, maximize: bool) -> float:
    """Standard error of log(optimum of the seed-mean score), by resampling seeds (columns).

    The optimum's sampling law is far from normal (it jumps when noise moves the best grid point),
    so the spread of per-seed optima misstates it; the bootstrap follows the estimator itself.
    Resamples are drawn from a fixed generator, so the result is deterministic.
    """
    gen = np.random.default_rng(0)
    n = table.shape[1]
    logs = []
    for _ in range(BOOTSTRAP_RESAMPLES):
        opt, _ = grid_optimum(lrs, table[:, gen.integers(0, n, n)].mean(axis=1), maximize=maximize)
        if np.isfinite(opt):
            logs.append(math.log(opt))
    return float(np.std(logs, ddof=1)) if len(logs) >= 2 else math.nan


def optimal_lr_per_batch(lr, batch_size, score, *, seed=None, steps=None, maximize: bool = False) -> list[BatchOptimum]:
    """The optimal learning rate per batch size of one grid (one group), sorted by batch size.

    Args:
        lr, batch_size, score: one value per run (row); score is a loss (``maximize=False``) or a
            gain such as the further decrease after the target (``maximize=True``).
        seed: the run's seed (or round); rows sharing (lr, B, seed) are averaged. Without it all
            rows at one (lr, B) count as one seed.
        steps: steps to the target per run (NaN when not reached), for eq 22.
    """
    lr, b, s = _as_float("lr", lr), _as_float("batch_size", batch_size), _as_float("score", score)
    if not (lr.size == b.size == s.size) or lr.size == 0:
        raise ValueError(f"lr, batch_size and score must be non-empty, equal lengths: {lr.size}, {b.size}, {s.size}")
    sd = np.zeros(lr.size) if seed is None else _as_float("seed", seed)
    st = None if steps is None else _as_float("steps", steps)
    if sd.size != lr.size or (st is not None and st.size != lr.size):
        raise ValueError("seed and steps must have one value per row")
    ok = np.isfinite(lr) & np.isfinite(b) & (lr > 0) & (b > 0)
    if not ok.any():
        raise ValueError("no row with a finite lr > 0 and batch size > 0")
    out = []
    for B in np.unique(b[ok]):
        rows = ok & (b == B)
        lrs, seeds = np.unique(lr[rows]), np.unique(sd[rows])
        # score[i, k]: mean over rows of lr i, seed k; NaN when missing for any seed.
        table = np.full((lrs.size, seeds.size), math.nan)
        steps_tab = np.full_like(table, math.nan)
        for i, x in enumerate(lrs):
            for k, z in enumerate(seeds):
                sel = rows & (lr == x) & (sd == z)
                if sel.any():
                    table[i, k] = np.mean(s[sel])
                    if st is not None:
                        steps_tab[i, k] = np.mean(st[sel])
        mean = table.mean(axis=1)  # NaN if any seed missing or NaN: counts as worst
        lr_opt, half = grid_optimum(lrs, mean, maximize=maximize)
        finite = np.isfinite(mean)
        best = int(np.nanargmax(mean if maximize else -mean)) if finite.any() else -1
        at_edge = best in (0, lrs.size - 1) and lrs.size > 1
        log_se = _bootstrap_log_se(lrs, table, maximize) if seeds.size >= 2 else math.nan
        s_mean = steps_tab.mean(axis=1)
        s_best = float(np.nanmin(s_mean)) if np.isfinite(s_mean).any() else math.nan
        out.append(
            BatchOptimum(
                batch_size=float(B), optimal_lr=lr_opt, log_lr_se=log_se, log_lr_halfwidth=half,
                n_seeds=int(seeds.size), at_edge=bool(at_edge),
                best_score=float(mean[best]) if best >= 0 else math.nan, steps=s_best,
            )
        )  # fmt: skip
    return out


@dataclass(frozen=True)
class GridFit:
    """Everything Section 3.2 estimates from one grid (one group).

    noise_batch_size / peak_lr: eq 22 + eq 23 when steps are known at two or more batch sizes
    (``source == "eq22"``), else the surge-curve fit's parameters when its peak lies inside the
    grid's batch sizes (``source == "surge_fit"``); NaN otherwise (``source`` is
    ``"no_peak_in_range"`` or ``"not_fitted"``, and ``note`` says why). ``curves`` holds the three
    least-squares fits (empty with fewer than three usable optima). ``peak_batch_size`` is the grid
    batch size with the largest optimum.
    """

    optima: tuple[BatchOptimum, ...]
    curves: dict[str, CurveFit] = field(default_factory=dict)
    noise_batch_size: float = math.nan
    peak_lr: float = math.nan
    source: str = "not_fitted"
    eq22: tuple[float, float, float] | None = None  # (B_noise, S_min, E_min)
    sgd_peak_lr: dict[str, float] = field(default_factory=dict)  # eq 24 with the same B_noise
    n_fitted: int = 0
    note: str = ""  # why B_noise is missing ("" when fitted)

    @property
    def fitted(self) -> bool:
        return self.source in ("eq22", "surge_fit")

    @property
    def best_model(self) -> str:
        if not self.curves:
            return ""
        return min(self.curves.values(), key=lambda c: c.aic).model

    @property
    def surge_peak_in_range(self) -> bool:
        """Whether the fitted surge peak lies within the grid's batch sizes (else: no peak seen)."""
        if "surge" not in self.curves:
            return False
        b = [o.batch_size for o in self.optima]
        return bool(min(b) <= self.curves["surge"].noise_batch_size <= max(b))

    @property
    def peak_batch_size(self) -> float:
        ok = [o for o in self.optima if np.isfinite(o.optimal_lr)]
        return max(ok, key=lambda o: o.optimal_lr).batch_size if ok else math.nan

    def peak_batch_size_range(self, z: float = 2.0) -> tuple[float, float]:
        """(smallest, largest) batch size whose optimal lr is within ``z`` combined standard
        errors of the largest one in log lr: the batch sizes the grid cannot tell from the peak.
        Each optimum's error is its bootstrap ``log_lr_se`` where finite, else its grid resolution
        ``log_lr_halfwidth`` (one seed). (NaN, NaN) without a finite optimum."""
        ok = [o for o in self.optima if np.isfinite(o.optimal_lr) and o.optimal_lr > 0]
        if not ok:
            return math.nan, math.nan

        def err(o: BatchOptimum) -> float:
            return o.log_lr_se if np.isfinite(o.log_lr_se) else o.log_lr_halfwidth

        top = max(ok, key=lambda o: o.optimal_lr)
        tied = [o.batch_size for o in ok
                if math.log(top.optimal_lr / o.optimal_lr) <= z * math.hypot(err(top), err(o))]  # fmt: skip
        return float(min(tied)), float(max(tied))


def fit_grid(
    lr, batch_size, score, *, seed=None, steps=None, maximize: bool = False, include_edges: bool = False
) -> GridFit:
    """Optimal lr per batch size, curve fits (eq 2, eq 24 form) and eq 22/23 for one grid."""
    optima = tuple(optimal_lr_per_batch(lr, batch_size, score, seed=seed, steps=steps, maximize=maximize))
    use = [o for o in optima if np.isfinite(o.optimal_lr) and (include_edges or not o.at_edge)]
    B = np.array([o.batch_size for o in use])
    y = np.array([o.optimal_lr for o in use])
    curves = compare_curves(B, y) if len(use) >= 3 else {}
    with_steps = [o for o in optima if np.isfinite(o.steps) and o.steps > 0]
    eq22 = None
    if len(with_steps) >= 2:
        eq22 = fit_noise_batch_size([o.steps for o in with_steps], [o.examples for o in with_steps])
    if eq22 is not None and eq22[0] > 0 and len(use) >= 1:
        bn = eq22[0]
        peak = estimate_peak_lr(B, y, bn, rule="adam")
        sgd = {f"sgd_alpha_{a:g}": estimate_peak_lr(B, y, bn, rule="sgd", alpha=a) for a in (0.5, 1.0)}
        return GridFit(optima, curves, bn, peak, "eq22", eq22, sgd, len(use))
    if "surge" in curves:
        fit = GridFit(optima, curves, eq22=eq22, n_fitted=len(use))
        c = curves["surge"]
        if fit.surge_peak_in_range:
            return replace(fit, noise_batch_size=c.noise_batch_size, peak_lr=c.peak_lr, source="surge_fit")
        b = [o.batch_size for o in optima]
        side = f"above the largest batch size {max(b):g}" if c.noise_batch_size > max(b) else (
            f"below the smallest batch size {min(b):g}")  # fmt: skip
        return replace(fit, source="no_peak_in_range", note=f"no surge peak in range: the fitted B_noise lies {side}")
    edge = sum(o.at_edge for o in optima if np.isfinite(o.optimal_lr)) if not include_edges else 0
    why = (f"{len(use)} usable optima of {len(optima)} batch sizes ({edge} at an edge of the lr grid, "
           f"{sum(not np.isfinite(o.optimal_lr) for o in optima)} without a finite score); the curve fits need 3, "
           "eq 22 steps at 2 batch sizes")  # fmt: skip
    return GridFit(optima, curves, eq22=eq22, n_fitted=len(use), source="not_fitted", note=f"not fitted: {why}")


def _columns(table) -> dict[str, np.ndarray]:
    """A table as a dict of 1-d arrays; a pandas DataFrame's text columns become str arrays."""
    if hasattr(table, "columns") and hasattr(table, "to_numpy"):  # a DataFrame, without importing pandas
        out = {}
        for name in table.columns:
            col = table[name].to_numpy()
            out[str(name)] = col.astype(str) if col.dtype.kind == "O" else col
        return out
    return dict(table)


def _group_keys(table: dict[str, np.ndarray], group_cols: Sequence[str]) -> list[tuple]:
    """Each row's group as a tuple (integral floats as int, so 2.0e9 prints as 2000000000)."""
    for c in group_cols:
        col = table[c]
        if col.dtype.kind == "f" and not np.all(np.isfinite(col)):
            raise ValueError(f"group column {c!r} has empty or non-finite cells")
    n = len(next(iter(table.values())))

    def cell(c: str, i: int):
        v = table[c][i].item()
        return int(v) if isinstance(v, float) and v.is_integer() else v

    return [tuple(cell(c, i) for c in group_cols) for i in range(n)]


def fit_groups(
    table: dict[str, np.ndarray],
    lr_col: str,
    batch_col: str,
    score_col: str,
    group_cols: Sequence[str] = (),
    *,
    seed_col: str | None = None,
    steps_col: str | None = None,
    maximize: bool = False,
    include_edges: bool = False,
) -> list[tuple[dict, GridFit]]:
    """``fit_grid`` for every group of rows sharing the values of ``group_cols`` (sorted).

    ``table``: columns by name, as ``read_table`` returns them, or a pandas DataFrame.
    """
    table = _columns(table)
    needed = [lr_col, batch_col, score_col, *group_cols, *(c for c in (seed_col, steps_col) if c)]
    missing = [c for c in needed if c not in table]
    if missing:
        raise ValueError(f"no column {missing[0]!r}; the table has {', '.join(table)}")
    for c in needed[:3] + [c for c in (seed_col, steps_col) if c]:
        if table[c].dtype.kind in "US":
            raise ValueError(f"column {c!r} is not numeric (e.g. {_first_non_number(table[c])!r})")
    keys = _group_keys(table, group_cols)
    out = []
    for key in sorted(set(keys), key=lambda k: tuple((isinstance(v, str), v) for v in k)):
        sel = np.array([k == key for k in keys])
        fit = fit_grid(
            table[lr_col][sel], table[batch_col][sel], table[score_col][sel],
            seed=table[seed_col][sel] if seed_col else None,
            steps=table[steps_col][sel] if steps_col else None,
            maximize=maximize, include_edges=include_edges,
        )  # fmt: skip
        out.append((dict(zip(group_cols, key, strict=True)), fit))
    return out


def optimal_lr_rows(groups: list[tuple[dict, GridFit]]) -> list[dict]:
    """One row per (group, batch size): the group columns, then ``OPTIMUM_COLUMNS``."""
    rows = []
    for key, fit in groups:
        for o in fit.optima:
            rows.append({**key, **{c: getattr(o, c) for c in OPTIMUM_COLUMNS}})
    return rows


def fit_rows(groups: list[tuple[dict, GridFit]]) -> list[dict]:
    """One row per group: the group columns, then ``FIT_COLUMNS``."""
    nan = math.nan
    rows = []
    for key, fit in groups:
        c = fit.curves
        rss = {m: c[m].rss if m in c else nan for m in CURVE_MODELS}
        aic = {m: c[m].aic if m in c else nan for m in CURVE_MODELS}
        values = {
            "noise_batch_size": fit.noise_batch_size, "peak_lr": fit.peak_lr,
            "surge_rss": rss["surge"], "sgd_rss_alpha_0.5": rss["sgd_alpha_0.5"],
            "sgd_rss_alpha_1": rss["sgd_alpha_1"], "best_model": fit.best_model,
            "noise_batch_size_source": fit.source,
            "surge_noise_batch_size": c["surge"].noise_batch_size if fit.surge_peak_in_range else nan,
            "surge_peak_lr": c["surge"].peak_lr if fit.surge_peak_in_range else nan,
            "surge_aic": aic["surge"], "sgd_aic_alpha_0.5": aic["sgd_alpha_0.5"], "sgd_aic_alpha_1": aic["sgd_alpha_1"],
            "eq22_noise_batch_size": fit.eq22[0] if fit.eq22 else nan,
            "s_min": fit.eq22[1] if fit.eq22 else nan, "e_min": fit.eq22[2] if fit.eq22 else nan,
            "surge_peak_in_range": fit.surge_peak_in_range,
            "peak_batch_size": fit.peak_batch_size, "n_batch_sizes": len(fit.optima), "n_fitted": fit.n_fitted,
            "note": fit.note,
        }  # fmt: skip
        rows.append({**key, **values})
    return rows


def csv_cells(rows: list[dict]) -> list[dict]:
    """Rows for ``sweep.write_csv``: NaN and inf cells as empty (None); batch sizes that are whole
    numbers (as in the grid) as integers, 4 not 4.0 (docs/outputs.md)."""

    def cell(k, v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if k in ("batch_size", "peak_batch_size") and isinstance(v, float) and v.is_integer():
            return int(v)
        return v

    return [{k: cell(k, v) for k, v in r.items()} for r in rows]


def grid_cells(lr, batch_size) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(batch sizes, learning rates, ran): ``ran[i, j]`` is True where the table has a row at
    batch size i and learning rate j. A grid whose learning rates differ per batch size (a common
    layout: lr scaled with B) has many cells that were never run: not missing results."""
    lr, b = _as_float("lr", lr), _as_float("batch_size", batch_size)
    ok = np.isfinite(lr) & np.isfinite(b)
    bs, lrs = np.unique(b[ok]), np.unique(lr[ok])
    ran = np.zeros((bs.size, lrs.size), dtype=bool)
    ran[np.searchsorted(bs, b[ok]), np.searchsorted(lrs, lr[ok])] = True
    return bs, lrs, ran


def score_matrix(lr, batch_size, score, *, maximize: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The grid as a matrix for heat maps: (batch sizes, learning rates, mean score (n_B, n_lr)).

    Means over all rows of a cell (seeds), NaN where a cell is missing or any of its rows is.
    For a loss (``maximize=False``) the score is mapped to a closeness to the best at each batch
    size, 1 - (loss - best) / q, clipped at 0, with q the 90th percentile of (loss - best) over
    the grid: 1 marks each column's best, and the few diverged runs do not set the scale. For a
    gain it is the mean itself.
    """
    lr, b, s = _as_float("lr", lr), _as_float("batch_size", batch_size), _as_float("score", score)
    ok = np.isfinite(lr) & np.isfinite(b)
    bs, lrs = np.unique(b[ok]), np.unique(lr[ok])
    z = np.full((bs.size, lrs.size), math.nan)
    for i, B in enumerate(bs):
        for j, x in enumerate(lrs):
            sel = ok & (b == B) & (lr == x)
            if sel.any():
                z[i, j] = np.mean(s[sel])
    if not maximize:
        with np.errstate(invalid="ignore"):
            finite_rows = np.isfinite(z).any(axis=1, keepdims=True)
            best = np.where(finite_rows, np.nanmin(np.where(finite_rows, z, 0.0), axis=1, keepdims=True), np.nan)
            excess = z - best
            q = np.nanpercentile(excess, 90) if np.isfinite(excess).any() else math.nan
            z = np.clip(1.0 - excess / q, 0.0, 1.0) if q > 0 else np.where(np.isfinite(excess), 1.0, np.nan)
    return bs, lrs, z
