"""The grid search's specification: the optimizers, the learning-rate grids, the batch sizes and
targets of an ``Experiment`` and its independent tasks (``Experiment.tasks``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..kernels.dynamics import Optimizer
from ..problem import QuadraticProblem
from ..theory import optimal_lr, sgd_optimal_lr
from .problem import default_problem, diag_trace_lmax, initial_delta

__all__ = [
    "DEFAULT_OPTIMIZERS",
    "DEFAULT_BATCH_SIZES",
    "Experiment",
    "OptimizerSpecError",
    "default_experiment",
    "options_experiment",
    "default_lr_grid",
    "optimizer_spec",
    "parse_optimizer",
    "parse_optimizers",
]

DEFAULT_OPTIMIZERS = {
    "sign": Optimizer("sign"),
    "adam": Optimizer("adam", 0.9, 0.999, 1e-8),
    "sgd": Optimizer("sgd"),
    "lion": Optimizer("lion", 0.9, 0.99),
}
"""The optimizers by name, with the paper's Adam (0.9, 0.999) and Lion's published betas."""


def default_lr_grid(
    problem: QuadraticProblem, optimizer: Optimizer, batch_sizes: Sequence[float], n: int = 16
) -> np.ndarray:
    """A log grid of ``n`` learning rates that brackets the optima on ``problem``.

    Sign-like optimizers (sign, lion) span [min_B eq9 / 8, max_B eq9 * 2], eq 9 at the start;
    Adam, whose steps are shorter than sign's (its momentum averages the noise away), spans up to
    8 max_B eq9; SGD spans [min_B eq1 / 8, 2 / lambda_max] (eq 1; 2 / lambda_max is SGD's stability
    limit on a quadratic). The optima move to smaller learning rates as the loss falls, hence the
    wide lower margin.
    """
    if int(n) != n or n < 3:
        raise ValueError(f"n={n!r} learning rates: need an integer >= 3")
    b = np.asarray(batch_sizes, dtype=np.float64)
    if optimizer.name == "sgd":
        lo = float(np.min(sgd_optimal_lr(b, problem.mu, problem.sigma**2, problem.hessian))) / 8.0
        # SGD's stability limit on a quadratic; with momentum b1 (EMA form) 2 (1 + b1) / ((1 - b1) lambda_max)
        hi = 2.0 * (1.0 + optimizer.beta1) / ((1.0 - optimizer.beta1) * diag_trace_lmax(problem.hessian)[2])
    else:
        eq9 = optimal_lr(b, problem.mu, problem.sigma, problem.hessian)
        lo = float(np.min(eq9)) / 8.0
        hi = float(np.max(eq9)) * (8.0 if optimizer.name == "adam" else 2.0)
    return np.geomspace(lo, hi, int(n))



def _int_tuple(name: str, values, lo: int) -> tuple[int, ...]:
    out = []
    for v in np.atleast_1d(np.asarray(values)).ravel():
        if not (np.isfinite(v) and float(v).is_integer() and v >= lo):
            raise ValueError(f"{name} must be integers >= {lo}, got {v!r}")
        out.append(int(v))
    if not out or len(set(out)) != len(out):
        raise ValueError(f"{name} must be non-empty and distinct, got {out}")
    return tuple(sorted(out))


@dataclass(frozen=True, eq=False)
class Experiment:
    """A grid search: optimizers x batch sizes x learning rates x seeds, with target losses.

    Args:
        problem: H, sigma and mu, the mean gradient at the start (theta0 - theta* = H^-1 mu).
        optimizers: the update rules; ``lrs[k]`` is optimizer k's learning-rate grid.
        batch_sizes: integers >= 1.
        target_fractions: target losses as fractions (0, 1) of the initial loss.
        further_steps: steps run past each target before the further decrease is read.
        max_steps: a target not reached after this many steps counts as not reached.
        seeds: runs per grid point; run r uses the stream (seed, B, r) (``trajectory_key``).
        seed: the experiment's seed.
        backend: "cpu", "gpu" or "auto" (``surgesim.backend``): where the kernels run; the same
            random streams on each, so results agree to floating-point rounding.
        optimal_arm: also run the per-step optimal-lr arm for sign and sgd (each step's lr the
            exact one-step optimum at its state and B: eq 9, eq 1 for SGD; CPU backend only).
    """

    problem: QuadraticProblem
    optimizers: tuple[Optimizer, ...]
    batch_sizes: tuple[int, ...]
    lrs: tuple[tuple[float, ...], ...]
    target_fractions: tuple[float, ...] = (0.5, 0.25, 0.125)
    further_steps: int = 50
    max_steps: int = 3000
    seeds: int = 8
    seed: int = 0
    backend: str = "cpu"
    optimal_arm: bool = True
    _delta0: np.ndarray = field(init=False, repr=False)  # set by __post_init__
    _initial_loss: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.problem, QuadraticProblem):
            raise TypeError(f"problem must be a QuadraticProblem, got {type(self.problem).__name__}")
        opts = tuple(self.optimizers)
        if not opts or not all(isinstance(o, Optimizer) for o in opts):
            raise ValueError(f"optimizers must be a non-empty sequence of Optimizer, got {self.optimizers!r}")
        if len(set(opts)) != len(opts):
            raise ValueError(f"optimizers must be distinct, got {[o.label for o in opts]}")
        if len(self.lrs) != len(opts):
            raise ValueError(f"need one learning-rate grid per optimizer, got {len(self.lrs)} for {len(opts)}")
        lrs = []
        for o, grid in zip(opts, self.lrs, strict=True):
            g = np.asarray(grid, dtype=np.float64).ravel()
            if g.size < 1 or not np.all(np.isfinite(g)) or np.any(g <= 0) or np.unique(g).size != g.size:
                raise ValueError(f"learning rates of {o.label} must be distinct, finite and > 0, got {g}")
            lrs.append(tuple(float(x) for x in np.sort(g)))
        fr = np.asarray(self.target_fractions, dtype=np.float64).ravel()
        if fr.size < 1 or np.any(~(fr > 0)) or np.any(~(fr < 1)) or np.unique(fr).size != fr.size:
            raise ValueError(f"target_fractions must be distinct and in (0, 1), got {fr}")
        for name in ("further_steps", "max_steps", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or int(v) != v or v < 0:
                raise ValueError(f"{name}={v!r} must be an integer >= 0")
        if isinstance(self.seeds, bool) or int(self.seeds) != self.seeds or self.seeds < 1:
            raise ValueError(f"seeds={self.seeds!r} must be an integer >= 1")
        if self.optimal_arm and self.backend == "gpu" and self.arm_optimizers:
            raise ValueError("the per-step optimal-lr arm runs on the CPU backend only: use backend 'cpu' "
                             "or optimal_arm=False")  # fmt: skip
        object.__setattr__(self, "optimizers", opts)
        object.__setattr__(self, "lrs", tuple(lrs))
        object.__setattr__(self, "batch_sizes", _int_tuple("batch_sizes", self.batch_sizes, 1))
        object.__setattr__(self, "target_fractions", tuple(float(x) for x in np.sort(fr)[::-1]))
        delta0 = initial_delta(self.problem)
        object.__setattr__(self, "_delta0", delta0)
        object.__setattr__(self, "_initial_loss", 0.5 * float(delta0 @ self.problem.mu))

    @property
    def delta0(self) -> np.ndarray:
        return self._delta0.copy()

    @property
    def initial_loss(self) -> float:
        """L(theta0) = 1/2 mu'H^-1 mu."""
        return self._initial_loss

    @property
    def targets(self) -> tuple[float, ...]:
        """The target losses, largest first."""
        return tuple(f * self._initial_loss for f in self.target_fractions)

    @property
    def arm_optimizers(self) -> tuple[Optimizer, ...]:
        """The optimizers of the per-step optimal-lr arm (sign and sgd without momentum, if in ``optimizers``)."""
        arm = tuple(o for o in self.optimizers if o.name == "sign" or (o.name == "sgd" and o.beta1 == 0))
        return arm if self.optimal_arm else ()

    def tasks(self) -> list[dict]:
        """One JSON-serialisable parameter dict per (optimizer, batch size[, arm]), for ``run_task``."""
        common = {
            "seeds": self.seeds, "seed": self.seed, "targets": list(self.targets),
            "further_steps": self.further_steps, "max_steps": self.max_steps, "backend": self.backend,
        }  # fmt: skip

        def task(o: Optimizer, b: int, lrs, rule: str) -> dict:
            return {"optimizer": o.name, "beta1": o.beta1, "beta2": o.beta2, "eps": o.eps, "batch_size": b,
                    "lrs": list(lrs), "lr_rule": rule} | common  # fmt: skip

        grid = [task(o, b, lrs, "constant") for o, lrs in zip(self.optimizers, self.lrs, strict=True)
                for b in self.batch_sizes]  # fmt: skip
        return grid + [task(o, b, [1.0], "optimal") for o in self.arm_optimizers for b in self.batch_sizes]



DEFAULT_BATCH_SIZES = tuple(int(round(2 ** (k / 2))) for k in range(6, 27))
"""8, 11, 16, ..., 8192 (half octaves): from well below the default problem's B_noise to past its
validity bound, fine enough to place the peak within a factor sqrt(2)."""


def default_experiment(
    problem: QuadraticProblem | None = None,
    optimizers: Sequence[str | Optimizer] = ("sign", "adam", "sgd"),
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    lr_points: int = 16,
    target_fractions: Sequence[float] = (0.5, 0.25, 0.125),
    further_steps: int = 50,
    max_steps: int = 3000,
    seeds: int = 16,
    seed: int = 0,
    backend: str = "cpu",
    optimal_arm: bool = True,
) -> Experiment:
    """The experiment of ``python -m sims.dynamics`` (its measured run time: README, "Multi-step dynamics").

    ``problem`` defaults to ``default_problem(256, seed)``; optimizers are names of
    ``DEFAULT_OPTIMIZERS`` or ``Optimizer`` objects; each gets ``default_lr_grid`` with
    ``lr_points`` learning rates. Targets 1/2, 1/4, 1/8 of the initial loss: over them eq 14's
    B_noise grows about 2x per target on the default problem.
    """
    if problem is None:
        problem = default_problem(256, seed)
    opts = []
    for o in optimizers:
        if isinstance(o, str) and o not in DEFAULT_OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {sorted(DEFAULT_OPTIMIZERS)}, got {o!r}")
        opts.append(DEFAULT_OPTIMIZERS[o] if isinstance(o, str) else o)
    Bs = _int_tuple("batch_sizes", batch_sizes, 1)
    lrs = tuple(tuple(default_lr_grid(problem, o, Bs, lr_points)) for o in opts)
    return Experiment(
        problem, tuple(opts), Bs, lrs, tuple(target_fractions), further_steps, max_steps, seeds, seed, backend,
        optimal_arm,
    )  # fmt: skip


def options_experiment(opts: Any, optimizers: Sequence[Optimizer], backend: str) -> Experiment:
    """The experiment of ``sims.dynamics``' resolved options (``resolve_dynamics_options``): its
    problem loaded from ``opts.problem`` or ``default_problem(opts.dims, opts.seed)``, checked
    (``surgesim.preflight.check_problem``: ValueError) at the batch sizes before the learning-rate
    grids are built from its theory, then ``default_experiment``."""
    from ..preflight import check_problem

    problem = QuadraticProblem.load(opts.problem) if opts.problem else default_problem(opts.dims, opts.seed)
    check_problem(problem, opts.batch_sizes)
    return default_experiment(problem, optimizers, opts.batch_sizes, opts.lr_points, opts.targets, opts.further_steps,
                              opts.max_steps, opts.seeds, opts.seed, backend, opts.optimal_arm)  # fmt: skip


class OptimizerSpecError(ValueError):
    """An optimizer written as text (``parse_optimizer``) that names no optimizer."""


def parse_optimizer(spec: str) -> Optimizer:
    """NAME, NAME:BETA1:BETA2 (adam, lion) or sgd:BETA1 (SGD with momentum) -> an Optimizer
    (``DEFAULT_OPTIMIZERS``' betas and eps otherwise). Raises ``OptimizerSpecError`` for text that
    names no optimizer, ValueError (from ``Optimizer``) for betas out of range."""
    name, *betas = spec.strip().split(":")
    if name not in DEFAULT_OPTIMIZERS:
        raise OptimizerSpecError(f"unknown optimizer {name!r}; choose from {', '.join(DEFAULT_OPTIMIZERS)}")
    base = DEFAULT_OPTIMIZERS[name]
    if not betas:
        return base
    if name == "sgd" and len(betas) == 1:  # SGD with momentum BETA1
        betas = [betas[0], "0"]
    elif len(betas) != 2 or name not in ("adam", "lion"):
        raise OptimizerSpecError(f"{spec!r}: only adam and lion take betas, as NAME:BETA1:BETA2, "
                                 "and sgd a momentum, as sgd:BETA1")  # fmt: skip
    try:
        b1, b2 = float(betas[0]), float(betas[1])
    except ValueError:
        raise OptimizerSpecError(f"{spec!r}: betas must be numbers") from None
    return Optimizer(name, b1, b2, base.eps)


def optimizer_spec(o: Optimizer) -> str:
    """The text ``parse_optimizer`` reads back as ``o`` (adam:B1:B2, sgd:B1 with momentum, else the name)."""
    if o.name == "adam":
        return f"adam:{o.beta1:g}:{o.beta2:g}"
    return f"sgd:{o.beta1:g}" if o.name == "sgd" and o.beta1 > 0 else o.name


def parse_optimizers(text: str) -> tuple[Optimizer, ...]:
    """Comma-separated ``parse_optimizer`` texts; ``OptimizerSpecError`` when none is given or one repeats."""
    specs = [s.strip() for s in text.split(",") if s.strip()]
    if not specs:
        raise OptimizerSpecError(f"no optimizer in {text!r}")
    opts = tuple(parse_optimizer(s) for s in specs)
    if len({o.label for o in opts}) != len(opts):
        raise OptimizerSpecError(f"repeated optimizer in {text!r}")
    return opts
