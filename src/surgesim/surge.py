"""The surge experiment (``sims.surge``): the Monte Carlo optimal learning rate of sign-SGD per
batch size (eq 6, ``surgesim.estimate``) beside the exact theory (eq 9), the erf approximation
(eq 10), the closed-form surge (eq 2 / 13) and the SGD rule (eq 1), on one quadratic problem.

``run_surge`` generates or loads the problem, refuses one whose closed forms are not finite,
runs one resumable sweep task per batch size and returns a ``SurgeResult`` that writes
results.csv, summary.json and surge.png (columns and keys: docs/outputs.md).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from . import theory as th
from .estimate import Estimate, estimate_task
from .outputs import OutputDir, atomic_path, dumps_json
from .preflight import check_memory, checked_closed_forms
from .problem import FAMILIES, QuadraticProblem
from .sweep import run_sweep, write_csv

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "COLUMNS", "SurgeOptions", "SurgeResult", "checked_theory", "resolve_surge_options", "result_row", "run_surge",
    "reuse_freed_memory", "small_pages", "surge_warnings",
]  # fmt: skip

COLUMNS = [
    "batch_size", "trials", "denominator_trials", "lr_mc", "lr_mc_se", "lr_mc_search", "lr_exact",
    "lr_erf_approx", "lr_surge", "lr_sgd", "z", "dl_mc", "dl_mc_se", "dl_exact", "dl_surge", "converged",
]  # fmt: skip
"""The columns of results.csv, in order."""


@dataclass(frozen=True)
class SurgeOptions:
    """One surge run, as ``sims.surge`` resolves its options (saved as options.json)."""

    dims: int
    problem: str | None
    hessian: str
    noise_batch_size: float | None
    batch_sizes: tuple[int, ...]
    trials: int | None
    rel_se: float | None
    max_trials: int
    sampler: str
    seed: int
    out: str
    backend: str
    scheduler: str | None
    plot: bool
    quiet: bool


_DEFAULTS: dict[str, Any] = dict(
    dims=1000, hessian="lowrank", b_min=1, b_max=2**20, b_num=25, max_trials=1 << 24, sampler="sign", seed=0,
    out="runs/surge", backend="cpu", plot=True, quiet=False,
)  # fmt: skip


def resolve_surge_options(given: Mapping[str, Any]) -> SurgeOptions:
    """The options of a surge run from the values given by ``SurgeOptions`` field name, with
    ``b_min``, ``b_max``, ``b_num`` (the log grid of batch sizes where ``batch_sizes`` is not
    given); a value None or absent takes its default (``rel_se`` 0.01 unless ``trials`` is given).
    Other names are ignored. Raises ValueError, naming the option as `key`, for a value or
    combination that cannot run, or arrays larger than the memory available."""
    from .estimate import check_options
    from .hessian import check_dense_dim

    v: dict[str, Any] = {**_DEFAULTS, **{k: x for k, x in given.items() if x is not None}}
    g = v.get
    if g("batch_sizes") is None and not (1 <= v["b_min"] <= v["b_max"] and v["b_num"] >= 1):
        raise ValueError(f"need 1 <= `b_min` <= `b_max` and `b_num` >= 1, got "
                         f"{v['b_min']:g}, {v['b_max']:g}, {v['b_num']}")  # fmt: skip
    grid = np.logspace(np.log10(v["b_min"]), np.log10(v["b_max"]), v["b_num"])
    given_sizes = g("batch_sizes")
    sizes = tuple(given_sizes if given_sizes is not None else (int(b) for b in np.unique(np.round(grid))))
    if any(b < 1 for b in sizes):
        raise ValueError(f"batch sizes must be >= 1, got {min(sizes)}")
    rel_se = None if g("trials") is not None else g("rel_se", 0.01)
    if rel_se is not None and not 0 < rel_se < 1:
        raise ValueError(f"`rel_se` must be in (0, 1), got {rel_se}")
    problem, dims = g("problem"), v["dims"]
    if problem is not None and not Path(problem).is_file():
        raise ValueError(f"`problem` {problem!r}: no such file")
    dense = problem is None and v["hessian"] in ("dense", "powerlaw")
    if g("noise_batch_size") is not None and (problem is not None or v["hessian"] not in ("lowrank", "dense")):
        raise ValueError("`noise_batch_size` applies to a generated `hessian` lowrank or dense problem")
    if dense:
        check_dense_dim(dims)
    if problem is None:  # mu, sigma, the Hessian's factors (dense: d x d) and their temporaries
        check_memory(8 * dims * (dims if dense else 16), f"`dims` {dims}")
    check_options(sizes, trials=g("trials"), rel_se=rel_se, max_trials=v["max_trials"], sampler=v["sampler"])
    return SurgeOptions(dims, problem, v["hessian"], g("noise_batch_size"), sizes, g("trials"), rel_se,
                        v["max_trials"], v["sampler"], v["seed"], v["out"], v["backend"], g("scheduler"), v["plot"],
                        v["quiet"])  # fmt: skip


def small_pages() -> None:
    """Stop NumPy asking for transparent huge pages for its large arrays (it does on Linux >= 4.6),
    for this whole process: a command's choice. Where the kernel compacts memory to serve such a
    request (defrag = madvise, a common default), each fresh array costs more in page faults than
    the pass that fills it: at d = 10^7, problem generation and the npz save took 1.9 s and 1.0 s
    of system time with huge pages, 0.5 s and 0.3 s without (2 cores). Results are the same."""
    multiarray = getattr(getattr(np, "_core", None), "multiarray", None)
    set_madvise = getattr(multiarray, "_set_madvise_hugepage", None)
    if set_madvise is not None:
        set_madvise(False)


def reuse_freed_memory() -> None:
    """Let this process reuse the memory of its freed large arrays (glibc's malloc; elsewhere
    nothing changes), for the whole process: a command's choice, like ``small_pages``. By default
    glibc maps each array over 32 MiB afresh and unmaps it when freed, so every temporary of a
    pass over 10^7 coordinates pays a page fault per 4 KiB before the pass itself: at d = 10^7,
    0.2 to 0.4 s of the 1.3 to 1.7 s of CPU time of the closed forms (2 cores, idle). Here large
    arrays come from the heap (one arena for every thread, so that a thread's array of any size
    fits) and freed memory is kept for the next ones; the peak memory is the same (1.21 GB at
    d = 10^7). Results are the same."""
    import ctypes

    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return
        mallopt = ctypes.CDLL(None).mallopt
    except (ValueError, OSError, AttributeError):  # not glibc
        return
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    m_trim_threshold, m_mmap_max, m_arena_max = -1, -4, -8  # glibc's malloc.h
    mallopt(m_trim_threshold, 2**31 - 1)
    mallopt(m_mmap_max, 0)
    mallopt(m_arena_max, 1)


def checked_theory(problem: QuadraticProblem, batch_sizes) -> tuple[dict, dict]:
    """The closed forms at every batch size (eq 1, 2, 8, 9, 10, 18) and the problem's constants
    (eq 14, 16, 17, 19), from ``theory.curves_and_constants``; ValueError for a problem whose
    closed forms overflow or divide by zero (checked before any Monte Carlo)."""
    B = np.asarray(batch_sizes, dtype=np.float64)
    return checked_closed_forms(  # ValueError too: the constants refuse G'HG <= 0 (H vanishing along mu)
        problem, lambda: th.curves_and_constants(B, problem.mu, problem.sigma, problem.hessian, strict=True),
        errors=(FloatingPointError, OverflowError, ZeroDivisionError, ValueError))


def result_row(e: Estimate, theory: dict[str, float]) -> dict:
    """One results.csv row: the estimate (eq 6, 7) beside the theory at its batch size."""
    return {
        "batch_size": e.batch_size, "trials": e.trials, "denominator_trials": e.denominator_trials,
        "lr_mc": e.lr, "lr_mc_se": e.lr_se, "lr_mc_search": e.lr_search,
        **{k: v for k, v in theory.items() if k.startswith("lr_")},
        # z is undefined where the s.e. is below the estimator's rounding (every trial drew the
        # same update, as at very large B): a 1e-16 difference over a 0 s.e. is no test.
        "z": (e.lr - theory["lr_exact"]) / e.lr_se if e.lr_se > 1e-9 * abs(e.lr) else float("nan"),
        "dl_mc": e.loss_improvement, "dl_mc_se": e.loss_improvement_se,
        "dl_exact": theory["dl_exact"], "dl_surge": theory["dl_surge"], "converged": e.converged,
    }  # fmt: skip


@dataclass
class SurgeResult:
    """A finished surge run: its problem, closed forms, rows (results.csv) and summary."""

    options: SurgeOptions
    problem: QuadraticProblem
    theory: dict[str, np.ndarray]
    rows: list[dict]
    summary: dict[str, Any]

    @property
    def short(self) -> list[dict]:
        """Rows of an adaptive run that stopped at max_trials before the target precision."""
        return [r for r in self.rows if not r["converged"]] if self.options.rel_se is not None else []

    def write(self, out: OutputDir | Path) -> None:
        """results.csv, summary.json and (with options.plot) surge.png into ``out``."""
        write_csv(self.rows, out / "results.csv", COLUMNS)
        with atomic_path(out / "summary.json") as tmp:
            tmp.write_text(dumps_json(self.summary))
        if self.options.plot:
            self.figure().savefig(out / "surge.png", dpi=130)

    def figure(self) -> Figure:
        """Fig 1: the Monte Carlo points beside the closed forms (``plots.lr_vs_batch_figure``)."""
        from .plots import lr_vs_batch_figure

        p, s = self.problem, self.summary
        B = np.asarray(self.options.batch_sizes, dtype=np.float64)
        # the lines on 400 points, fewer at large d (each point is a pass over the coordinates); one
        # batch size is one point (logspace would give it twice, 1 ulp apart: a new curve, no x range)
        points = int(np.clip(4e8 / p.dim, 60, 400))
        B_line = B if B.size == 1 else np.unique(np.logspace(np.log10(B.min()), np.log10(B.max()), points))
        lines = self.theory if np.array_equal(B_line, B) else th.curves(B_line, p.mu, p.sigma, p.hessian)
        curves = {k: v for k, v in lines.items() if k.startswith("lr_")}
        return lr_vs_batch_figure(
            B_line, curves, B, np.array([r["lr_mc"] for r in self.rows]), np.array([r["lr_mc_se"] for r in self.rows]),
            s["noise_batch_size"], s["large_batch_lr"], s["validity_bound"],
            title=f"sign-SGD on a quadratic, {p.describe()}",
        )  # fmt: skip

    def report(self) -> str:
        """The console table: one line per batch size, then the constants and the peak."""
        s = self.summary
        lines = [f"{'B':>9} {'trials':>9} {'lr_mc':>11} {'rel.se':>7} {'lr_exact':>11} {'z':>6} "
                 f"{'lr_erf':>11} {'lr_surge':>11} {'lr_sgd':>11}"]  # fmt: skip
        for r in self.rows:
            lines.append(f"{r['batch_size']:>9d} {r['trials']:>9d} {r['lr_mc']:>11.4e} "
                         f"{r['lr_mc_se'] / abs(r['lr_mc']):>7.2%} {r['lr_exact']:>11.4e} {r['z']:>6.2f} "
                         f"{r['lr_erf_approx']:>11.4e} {r['lr_surge']:>11.4e} {r['lr_sgd']:>11.4e}")  # fmt: skip
        lines.append(f"B_noise (eq 14) = {s['noise_batch_size']:.4g}, peak lr (eq 16) = {s['peak_lr']:.4g}, "
                     f"large-batch lr (eq 17) = {s['large_batch_lr']:.4g}, "
                     f"validity bound = {s['validity_bound']:.4g}")  # fmt: skip
        lines.append(f"peak batch size: exact {s['exact_peak_batch_size']}, Monte Carlo {s['mc_peak_batch_size']}; "
                     f"max |z| = {s['max_abs_z']:.2f}; max rel. s.e. = {s['max_rel_se']:.2%}; "
                     f"{s['wall_seconds']:.1f} s")  # fmt: skip
        return "\n".join(lines)


def run_surge(
    opts: SurgeOptions,
    open_out: Callable[[], OutputDir],
    *,
    scheduler: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    connect_timeout: float = 10.0,
    announce: Callable[[str], None] | None = None,
) -> SurgeResult:
    """Run the surge experiment of ``opts``: the problem, its closed forms (checked first:
    ValueError), then ``open_out()`` (called after every check), the resumable store
    (store.sqlite) of one sweep task per batch size there, and problem.npz, written beside the
    sweep and complete when this returns. ``announce`` gets the line that
    describes the problem; ``scheduler``, ``progress`` and ``connect_timeout`` go to ``run_sweep``
    (None: this process, whose kernels already use every core)."""
    t_start = time.perf_counter()
    if opts.problem:
        problem = QuadraticProblem.load(opts.problem)
    else:
        family = {} if opts.noise_batch_size is None else {"noise_batch_size": opts.noise_batch_size}
        factory = cast(Callable[..., QuadraticProblem], FAMILIES[opts.hessian])
        problem = factory(opts.dims, opts.seed, **family)
    # O(d) passes at large d run in a thread beside the main work (hashlib, file writes and fsync
    # release the GIL): the digest (for the store) beside the closed forms, the problem file
    # beside the Monte Carlo (_saved_beside: complete and on disk before the run returns, so
    # before any commit; a failed save fails the run and leaves a fresh --out empty)
    with ThreadPoolExecutor(max_workers=1) as pool:  # on an error, waits for the thread
        digest = pool.submit(problem.digest)
        theory, scalars = checked_theory(problem, opts.batch_sizes)  # eq 1-19 at every B, computed once
        out = open_out()
        if announce is not None:
            each = f"{opts.trials} trials each" if opts.trials else f"target rel. s.e. {opts.rel_se:g}"
            announce(f"problem: {problem.describe()}; B_noise = {scalars['noise_batch_size']:.4g}, validity bound = "
                     f"{scalars['validity_bound']:.4g}; {len(opts.batch_sizes)} batch sizes, {each}")  # fmt: skip
        with _saved_beside(pool, problem, out):
            rows = _sweep(opts, problem, theory, digest.result(), out, scheduler, progress, connect_timeout)
    return SurgeResult(opts, problem, theory, rows, _summary(opts, problem, theory, scalars, rows, t_start))


_STORE = "store.sqlite"


@contextmanager
def _saved_beside(pool: ThreadPoolExecutor, problem: QuadraticProblem, out: OutputDir) -> Iterator[None]:
    """Write out / problem.npz in a thread of ``pool`` while the body runs (the Monte Carlo), and
    wait for it, flushed to disk, before leaving. A failed save raises its own error (also where
    the body failed, as a full disk fails the store too) after deleting the store where this run
    created it, so that a fresh --out is left empty, as when the save came first."""
    store = out.final(_STORE)
    fresh = not (store.exists() or store.is_symlink())
    saved = pool.submit(_save_synced, problem, out / "problem.npz")
    try:
        yield
    except Exception:
        _check_saved(saved, store if fresh else None)
        raise
    _check_saved(saved, store if fresh else None)


def _save_synced(problem: QuadraticProblem, path: Path) -> None:
    """``problem.save(path)``, then its data flushed to disk (the commit's fsync finds it done)."""
    problem.save(path)
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _check_saved(saved: Future, store: Path | None) -> None:
    """Wait for ``saved``; where it failed, delete ``store`` (and its journal) and raise its error."""
    error = saved.exception()
    if error is None:
        return
    if store is not None:
        for path in (store, store.with_name(store.name + "-journal")):
            path.unlink(missing_ok=True)
    raise error


def _sweep(opts: SurgeOptions, problem, theory, digest: str, out, scheduler, progress, connect_timeout) -> list[dict]:
    """One sweep task per batch size, stored as it finishes: an interrupted run keeps its results
    and a rerun into the same output directory resumes."""
    from .sweep import StoreError

    options = {"seed": opts.seed, "trials": opts.trials, "rel_se": opts.rel_se, "max_trials": opts.max_trials,
               "sampler": opts.sampler, "backend": opts.backend}  # fmt: skip
    stored = run_sweep(
        estimate_task, [{"batch_size": b, **options} for b in opts.batch_sizes],
        params={"problem_sha256": digest, **options}, store=out.final(_STORE),
        scheduler=scheduler, workers=None if scheduler else 1, shared=problem, progress=progress,
        connect_timeout=connect_timeout, per_task=True,
    )  # fmt: skip
    rows = []
    for i, (b, r) in enumerate(zip(opts.batch_sizes, stored, strict=True)):
        if len(r) != 1 or r[0].get("batch_size") != b:  # a store that lost or mixed rows
            raise StoreError(f"the store's result for batch size {b} is missing or belongs to another task: the "
                             "store is damaged; move store.sqlite away and rerun")  # fmt: skip
        rows.append(result_row(Estimate(**r[0]), {k: float(v[i]) for k, v in theory.items()}))
    return rows


def _summary(opts: SurgeOptions, problem, theory, scalars, rows, t_start: float) -> dict[str, Any]:
    """summary.json: the constants (eq 14, 16, 17, 19), the peaks and the agreement (max |z|)."""
    B = np.asarray(opts.batch_sizes, dtype=np.float64)
    lr_mc = np.array([r["lr_mc"] for r in rows])
    z = np.array([r["z"] for r in rows])
    summary = {
        "dims": problem.dim,
        "seed": opts.seed,
        "trials": int(sum(r["trials"] for r in rows)),
        "sampler": opts.sampler,
        **scalars,
        "exact_peak_batch_size": int(B[int(np.argmax(theory["lr_exact"]))]),
        "mc_peak_batch_size": int(B[int(np.argmax(lr_mc))]),
        "max_abs_z": float(np.abs(z[np.isfinite(z)]).max()) if np.isfinite(z).any() else math.nan,
        "max_rel_se": float(max(r["lr_mc_se"] / abs(r["lr_mc"]) for r in rows)),
        "all_converged": bool(all(r["converged"] for r in rows)),
        "wall_seconds": time.perf_counter() - t_start,
    }
    bn, bound = summary["noise_batch_size"], summary["validity_bound"]
    summary["noise_batch_size_beyond_validity"] = bool(np.isfinite(bn) and bn > bound)
    return summary


def surge_warnings(result: SurgeResult) -> list[str]:
    """The ``warning:`` lines of ``result`` (``surgesim.surge.run_surge``'s), worded for the
    command line: its options are named as flags."""
    opts, notes = result.options, []
    if result.short:
        notes.append(f"--rel-se {opts.rel_se:g} was not reached at {len(result.short)} of {len(result.rows)} batch "
                     f"sizes (B = {', '.join(str(r['batch_size']) for r in result.short[:6])}"
                     f"{', ...' if len(result.short) > 6 else ''}): they stopped at --max-trials {opts.max_trials} "
                     f"with rel. s.e. up to {max(r['lr_mc_se'] / abs(r['lr_mc']) for r in result.short):.2g} "
                     "(converged = False in results.csv)")  # fmt: skip
    bn, bound = result.summary["noise_batch_size"], result.summary["validity_bound"]
    if result.summary["noise_batch_size_beyond_validity"]:
        notes.append(f"B_noise (eq 14) = {bn:.4g} exceeds the validity bound {bound:.4g}: the peak lies outside "
                     "Theorem 3's regime (B << bound), where eq 2 and eq 14 need not hold")  # fmt: skip
    return notes
