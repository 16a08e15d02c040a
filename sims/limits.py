"""The limits of the paper's theory: where eq 10, eq 2 and eq 14 hold, and how far correlated
noise, non-Gaussian per-example gradients and Adam move the optimal learning rate of sign-SGD.

Computes (``surgesim.limits``): regime maps over (B, mu/sigma) of eq 10 within eq 9 and of the
closed-form surge eq 2 against exact eq 9; eq 2's error over (B, B_noise) in units of Theorem 3's
validity bound (lowrank problems of many dimensions); per problem family, the B ranges where
each approximation stays within 5% and 20%; the peak of exact eq 9 against eq 14's B_noise and
eq 16's height; the independence assumption against the exact correlated theory over
(B, correlation); Monte Carlo departures of Student-t, Laplace and sparse two-point per-example
gradients from Gaussian eq 9; one Adam step (frozen-gradient model) against sign.

Outputs in --out: summary.csv (the table printed), summary.json, maps.csv, families.csv,
peaks.csv, correlation.csv, nongaussian.csv, adam.csv, options.json and the figures
limits_maps.png, limits_correlation.png, limits_families.png, limits_peak.png,
limits_nongaussian.png, limits_adam.png. --quick runs coarse grids and few trials.

Every output column and key (meaning, unit, equation): docs/outputs.md.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sims import _cli


@dataclass(frozen=True)
class Options:
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


TOLS = (0.05, 0.2)


def build_parser() -> _cli.Parser:
    p = _cli.parser("sims.limits", __doc__)
    p.add_argument("--out", default="runs/limits", help="output directory (default runs/limits)")
    p.add_argument("--quick", action="store_true", help="coarse grids, few trials (fast)")
    p.add_argument("--dims", type=int, default=1000, help="dimension of the family problems (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the problems and every random stream (default 0)")
    p.add_argument("--no-plot", action="store_true", help="skip the figures")
    p.add_argument("--quiet", action="store_true", help="no table, no progress bar")
    return p


def resolve(args) -> Options:
    _cli.check_int("--dims", args.dims, 2, 2**40)
    if not 0 <= args.seed < 2**63:
        raise _cli.UsageError(f"--seed must be in [0, 2^63), got {args.seed}")
    q = args.quick

    def grid(lo: float, hi: float, n: int) -> tuple[float, ...]:
        return tuple(float(v) for v in np.geomspace(lo, hi, n))

    return Options(
        out=args.out,
        quick=q,
        dims=args.dims,
        seed=args.seed,
        plot=not args.no_plot,
        quiet=args.quiet,
        map_batch_sizes=grid(1, 1e8, 33 if q else 97),
        snr_scales=grid(0.1, 30, 9 if q else 31),
        bound_dims=tuple(int(4 * 4**k) for k in range(6 if q else 8))
        if q
        else tuple(int(round(v)) for v in np.geomspace(4, 65536, 15)),
        powerlaw_dims=(16, 64, 256) if q else (8, 16, 32, 64, 128, 256, 512, 1024, 2048),
        corr_dims=min(args.dims, 200) if q else args.dims,
        corr_batch_sizes=grid(1, 1e7, 8 if q else 22),
        corr_rhos=grid(1e-4, 0.9, 5 if q else 11),
        laws=(("gaussian", None), ("student_t", 3.0), ("laplace", None), ("two_point", 0.01)),
        ng_batch_sizes=(1, 4, 16, 64, 256, 1024) if q else tuple(2**k for k in range(13)),
        ng_rel_se=0.1 if q else 0.02,
        ng_max_draws=1e7 if q else 4e8,
        adam_betas=((0.9, 0.999), (0.0, 0.999), (0.9, 0.95)),
        adam_batch_sizes=grid(1, 1e7, 15 if q else 43),
        adam_samples=1 << (11 if q else 14),
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return _cli.run(lambda: _main(args))


def _write_csv(path: Path, rows: list[dict]) -> None:
    """The rows' scalar cells through the one CSV writer (``surgesim.sweep.write_csv``); a number
    that is not finite as an empty cell (docs/outputs.md)."""
    from surgesim.sweep import write_csv

    cols = list(dict.fromkeys(k for r in rows for k in r if not isinstance(r[k], np.ndarray)))
    write_csv([{k: _cell(v) for k, v in r.items() if k in cols} for r in rows], path, cols)


def _cell(v):
    if isinstance(v, float | np.floating):
        return float(v) if math.isfinite(v) else None
    return v.item() if isinstance(v, np.generic) else v


def _fmt_b(b: float, bound: float | None = None) -> str:
    return f"{b:.3g}" + (f" ({b / bound:.2g} x bound)" if bound else "")


def _within(first: float, last: float, grid_max: float, bound: float | None = None) -> str:
    """'within tol' as text, from the failure interval on a grid (``limits.failure_interval``)."""
    if math.isnan(first):
        return "all B on the grid"
    return f"B < {_fmt_b(first, bound)}" + (f" and B > {_fmt_b(last, bound)}" if last < grid_max else "")


def _from(B, err, tol: float) -> str:
    """'within tol from some B on' as text (``limits.converged_from``)."""
    from surgesim.limits import converged_from

    b = converged_from(B, err, tol)
    return f"B >= {_fmt_b(b)}" if math.isfinite(b) else f"not up to B = {_fmt_b(float(np.max(B)))}"


def _peak(B, lr) -> str:
    from surgesim.limits import first_peak

    k = first_peak(lr)
    return "none" if k is None else f"{B[k]:.3g}"


def _main(args) -> int:
    from surgesim import limits as lim
    from surgesim import theory as th
    from surgesim.problem import FAMILIES, power_law_problem, surge_problem
    from surgesim.progress import progress_bar

    opts = resolve(args)
    _cli.need_memory(8 * opts.dims * opts.dims * 4, f"--dims {opts.dims} (dense and power-law families)")
    out = _cli.out_dir(opts.out, command="sims.limits")
    _cli.save_options(opts, out / "options.json")
    t0 = time.perf_counter()
    n_ng = len(opts.laws) * len(opts.ng_batch_sizes)
    total = 6 + n_ng + len(opts.adam_betas)
    bar = progress_bar(quiet=opts.quiet, desc="limits")
    done = [0]

    def step(k: int = 1) -> None:
        done[0] += k
        bar(done[0], total)

    summary: list[dict] = []
    with bar:
        base = surge_problem(opts.dims, opts.seed)
        bn0 = th.noise_batch_size(base.mu, base.sigma, base.hessian)
        vb0 = th.validity_bound(base.mu, base.sigma)
        B_map = np.array(opts.map_batch_sizes)
        maps = [lim.erf_error_map(base, B_map, opts.snr_scales), lim.surge_error_map(base, B_map, opts.snr_scales)]
        sweep = {f"lowrank d={d}": surge_problem(d, opts.seed) for d in opts.bound_dims}
        sweep.update({f"powerlaw d={d}": power_law_problem(d, opts.seed) for d in opts.powerlaw_dims})
        maps.append(lim.surge_bound_map(list(sweep.values()), np.geomspace(1e-5, 1e3, len(opts.map_batch_sizes))))
        _write_csv(out / "maps.csv", [r for m in maps for r in m.rows()])
        step()

        families = {name: f(opts.dims, opts.seed) for name, f in FAMILIES.items()}
        fam_rows = lim.family_errors(families, B_map, TOLS)
        _write_csv(out / "families.csv", fam_rows)
        for r in fam_rows:
            for which, label in (("erf", "eq 10 in eq 9"), ("surge", "eq 2 vs eq 9")):
                first5, last5 = r[f"{which}_fails_from_0.05"], r[f"{which}_fails_until_0.05"]
                first20, last20 = r[f"{which}_fails_from_0.2"], r[f"{which}_fails_until_0.2"]
                summary.append(
                    {
                        "approximation": label,
                        "setting": f"{r['problem']} d={r['dims']}, B_noise {r['noise_batch_size']:.3g}, "
                        f"bound {r['validity_bound']:.3g}",
                        "within_5pct": _within(first5, last5, B_map.max(), r["validity_bound"]),
                        "within_20pct": _within(first20, last20, B_map.max(), r["validity_bound"]),
                        "max_abs_error": float(np.max(np.abs(r[f"err_{which}"]))),
                    }
                )
        step()

        peak_rows = lim.peak_table(sweep)
        _write_csv(out / "peaks.csv", peak_rows)
        for r in peak_rows:
            summary.append(
                {
                    "approximation": "peak of eq 9 at B_noise (eq 14)",
                    "setting": f"{r['problem']}, B_noise/bound {r['bnoise_over_bound']:.3g}",
                    "within_5pct": f"B_peak/B_noise = {r['peak_over_bnoise']:.4g}",
                    "within_20pct": f"lr_peak/eps_max = {r['peak_lr_over_eps_max']:.4g}",
                    "max_abs_error": abs(r["peak_over_bnoise"] - 1.0),
                }
            )
        step()

        cbase = surge_problem(opts.corr_dims, opts.seed)
        cmaps = [
            lim.correlation_error_map(cbase, opts.corr_batch_sizes, opts.corr_rhos, aligned=a) for a in (True, False)
        ]
        step(2)
        _write_csv(out / "correlation.csv", [r for m in cmaps for r in m.rows()])
        for m in cmaps:
            for k, rho in enumerate(m.y):
                z = m.z[k]
                summary.append(
                    {
                        "approximation": "independent coordinates (eq 9)",
                        "setting": f"{m.ylabel} = {rho:.3g}, d={cbase.dim}",
                        "within_5pct": _from(m.x, z, 0.05),
                        "within_20pct": _from(m.x, z, 0.2),
                        "max_abs_error": float(np.max(np.abs(z))),
                    }
                )

        ng_rows = lim.non_gaussian_departure(
            base,
            dict(opts.laws),
            opts.ng_batch_sizes,
            rel_se=opts.ng_rel_se,
            max_draws=opts.ng_max_draws,
            seed=opts.seed,
            progress=lambda i, n: bar(done[0] + i, total),
        )
        step(n_ng)
        _write_csv(out / "nongaussian.csv", ng_rows)
        for law in dict.fromkeys(r["law"] for r in ng_rows):
            sel = [r for r in ng_rows if r["law"] == law]
            Bs = [r["batch_size"] for r in sel]
            dep = [r["departure"] for r in sel]
            summary.append(
                {
                    "approximation": "Gaussian per-example gradients (eq 9)",
                    "setting": f"{law}, d={base.dim}",
                    "within_5pct": _from(Bs, dep, 0.05),
                    "within_20pct": _from(Bs, dep, 0.2),
                    "max_abs_error": float(np.max(np.abs(dep))),
                }
            )

        B_adam = np.array(opts.adam_batch_sizes)
        sign_lr = th.optimal_lr(B_adam, base.mu, base.sigma, base.hessian)
        adam_rows, adam_curves = [], {}
        for b1, b2 in opts.adam_betas:
            lr, se = lim.adam_frozen_lr(base, B_adam, b1, b2, samples=opts.adam_samples, seed=opts.seed)
            label = f"Adam({b1:g}, {b2:g})"
            adam_curves[label] = (lr, se)
            adam_rows += [
                {
                    "optimizer": label,
                    "batch_size": float(b),
                    "lr_adam": float(x),
                    "lr_adam_se": float(s),
                    "lr_sign": float(g),
                    "ratio": float(x / g),
                }
                for b, x, s, g in zip(B_adam, lr, se, sign_lr)
            ]
            rel = lr / sign_lr - 1.0
            summary.append(
                {
                    "approximation": "Adam as sign (Appendix A)",
                    "setting": f"{label}, frozen-gradient one step, d={base.dim}, "
                    f"peak at B ~ {_peak(B_adam, lr)} (sign: {_peak(B_adam, sign_lr)})",
                    "within_5pct": _from(B_adam, rel, 0.05),
                    "within_20pct": _from(B_adam, rel, 0.2),
                    "max_abs_error": float(np.max(np.abs(rel))),
                }
            )
            step()
        _write_csv(out / "adam.csv", adam_rows)
    _write_csv(out / "summary.csv", summary)
    wall = time.perf_counter() - t0
    _cli.write_json(
        {
            "dims": opts.dims,
            "seed": opts.seed,
            "quick": opts.quick,
            "noise_batch_size": bn0,
            "validity_bound": vb0,
            "max_abs_err_erf_in_eq9": max(float(np.max(np.abs(r["err_erf"]))) for r in fam_rows),
            "rows": len(summary),
            "wall_seconds": wall,
        },
        out / "summary.json",
    )

    if opts.plot:
        from surgesim.plots import limits as pl

        figs = {
            "limits_maps.png": pl.regime_maps_figure(maps),
            "limits_correlation.png": pl.regime_maps_figure(cmaps),
            "limits_families.png": pl.family_errors_figure(fam_rows),
            "limits_peak.png": pl.peak_figure(peak_rows),
            "limits_nongaussian.png": pl.departure_figure(ng_rows, noise_batch_size=bn0),
            "limits_adam.png": pl.adam_figure(B_adam, sign_lr, adam_curves, noise_batch_size=bn0),
        }
        for name, fig in figs.items():
            fig.savefig(out / name, dpi=120)

    if not opts.quiet:
        print(f"{'approximation':<40} {'setting':<62} {'within 5%':<44} {'within 20%':<44}")
        for r in summary:
            print(f"{r['approximation']:<40} {r['setting']:<62} {r['within_5pct']:<44} {r['within_20pct']:<44}")
        print(f"wrote {out} ({wall:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
