"""The configuration of a validation run (``python -m sims.validate``): the protocol's sizes per
workload (full runs, quick runs, the quadratic) and ``ValidationOptions``, every choice resolved.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["DEFAULTS", "QUICK", "QUADRATIC", "DATA_FILES", "ValidationOptions", "resolve_options", "check_combination",
           "check_top"]

# Full runs (on an idle 2-core CPU 40 min for the CNN, measured from scratch; over 3 hours for the GPT: see the README)
# and the quick ones (seconds to a minute). Networks: 8-9 batch sizes spanning 128-256x around the demo's balance
# point (sims.workloads measured B_noise ~ 30-130 on the CNN demo), 6 coarse learning rates
# (factor 2) refined once per side, 4 seeds (the minimum), eval on a fixed 128-example sample.
# The probe's G: over up to 16,384 examples (the CNN demo's 5,000: exact); the GPT's 466,209 from a
# sample of 1,024, whose sampling-error term (per-example directional derivatives over the sample,
# about 7 s per 128 examples here) would otherwise cost most of the probe stage.
DEFAULTS: dict[str, dict[str, Any]] = {
    "cnn": dict(batch_sizes=(2, 4, 8, 16, 32, 64, 128, 256), lrs=(2e-4, 4e-4, 8e-4, 1.6e-3, 3.2e-3, 6.4e-3),
                targets=(1.0, 0.6, 0.4), real_targets=(1.0, 0.6, 0.4), seeds=4, further_steps=20, max_steps=800,
                eval_examples=128, probe_batch_sizes=(1, 4, 16, 64, 256), probe_rel_se=0.2, probe_adam_draws=16,
                probe_gradient_examples=16384),
    "gpt": dict(batch_sizes=(1, 2, 4, 8, 16, 32, 64, 128, 256), lrs=(3e-4, 1e-3, 3e-3, 1e-2),
                reference_batch_size=8,
                targets=(3.0, 2.7, 2.5), real_targets=(3.0, 2.7, 2.5), seeds=4, further_steps=50, max_steps=1000,
                eval_examples=64, probe_batch_sizes=(1, 4, 16, 64, 256), probe_rel_se=0.2, probe_adam_draws=16,
                probe_gradient_examples=1024),
}  # fmt: skip
"""The full network runs' protocol, per workload. The probe's batch sizes reach the grid's top
(256) on both networks: on the GPT a probe grid that stopped at 64 put both probes' peaks at that
edge, next to the measured peak, which read as agreement; to 256 their curves are seen to flatten.
``reference_batch_size``: the reference run's B (whose checkpoints are the probed states), where
it is one of the grid's; by default the grid's middle B. The GPT's stays at 8, its middle before
B = 256 joined the grid, so that the probe's states (and tasks) are the same as before."""
QUICK: dict[str, dict[str, Any]] = {
    "cnn": dict(batch_sizes=(4, 16, 64), lrs=(8e-4, 1.6e-3, 3.2e-3), targets=(1.4,), seeds=2, further_steps=5,
                max_steps=120, eval_examples=64, probe_batch_sizes=(64, 128, 256), probe_draws=8,
                probe_adam_draws=None),
    "gpt": dict(batch_sizes=(2, 8, 32), lrs=(1e-3, 3e-3, 1e-2), targets=(4.5,), seeds=2, further_steps=5,
                max_steps=120, eval_examples=16, probe_batch_sizes=(8, 16, 32), probe_draws=8,
                probe_adam_draws=None),
    "quadratic": dict(dims=32, batch_sizes=(8, 16, 32, 64, 128, 256, 512, 1024), lr_points=6, seeds=4,
                      further_steps=20, max_steps=1500),
}  # fmt: skip
"""The quick runs (every output in seconds to a minute): what they change, per workload. The quick
network runs: one target (one probed state), 3 batch sizes, probe batch sizes >= 64 (below that,
the probe's random-number blocks hold up to 1024 draws whatever the fixed number of draws)."""
QUADRATIC: dict[str, Any] = dict(dims=256, batch_sizes=tuple(2**k for k in range(3, 13)), lr_points=12, seeds=8,
                                 further_steps=50, max_steps=3000, target_fractions=(0.5, 0.25, 0.125))  # fmt: skip
"""The full quadratic run's protocol (its target losses as fractions of the initial loss)."""
DATA_FILES = {
    "cnn": "a folder with train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz] (Fashion-MNIST)",
    "gpt": "a JSON-lines file or a folder of train*.jsonl[.gz] (ELI5-Category)",
}
"""The real data each network workload reads."""


@dataclass(frozen=True)
class ValidationOptions:
    """Every choice of one validation run, resolved (written as options.json; docs/outputs.md)."""

    workload: str | None
    problem: str | None
    dims: int
    data_dir: str
    batch_sizes: tuple[int, ...]
    reference_batch_size: int | None
    lrs: tuple[float, ...] | None
    lr_points: int
    seeds: int
    targets: tuple[float, ...]
    refine_points: int
    replicates: int
    top: int | None
    further_steps: int
    max_steps: int
    eval_examples: int
    probe_batch_sizes: tuple[int, ...]
    probe_rel_se: float | None
    probe_draws: int | None
    probe_adam_draws: int | None
    probe_gradient_examples: int
    probe_steps: int
    predictors: bool
    beta1: float
    beta2: float
    eps: float
    seed: int
    device: str
    threads: int
    workers: int
    scheduler: str | None
    quick: bool
    out: str
    plot: bool
    quiet: bool


_FIXED = dict(refine_points=1, replicates=400, probe_steps=4, predictors=True, beta1=0.9, beta2=0.999, eps=1e-8,
              seed=0, device="cpu", threads=1, quick=False, plot=True, quiet=False)  # fmt: skip
_NAMES = {f.name for f in fields(ValidationOptions)} | {"demo"}


def resolve_options(given: Mapping[str, Any]) -> ValidationOptions:
    """The options of a run from the values given by ``ValidationOptions`` field name (and ``demo``:
    the workload's demo data); a value None or absent takes the workload's default (``DEFAULTS``,
    with ``QUICK`` over it for a quick run; ``QUADRATIC`` without a workload). Other names are
    ignored. Raises ValueError for batch sizes, targets or learning rates that cannot be run."""
    v: dict[str, Any] = {**_FIXED, **{k: x for k, x in given.items() if k in _NAMES and x is not None}}
    w, quick = v.get("workload"), v["quick"]
    kind = w or "quadratic"
    base: dict[str, Any] = dict(DEFAULTS[w]) if w else dict(QUADRATIC)
    if quick:
        base.update(QUICK[kind])
    if w:
        base.setdefault("probe_draws", None)
        targets = base["targets"] if (v.get("demo") or quick) else base["real_targets"]
    else:
        targets = base["target_fractions"]
    pick = lambda key: v.get(key, base[key])  # noqa: E731
    batch_sizes = tuple(sorted(pick("batch_sizes")))
    targets = tuple(sorted(v.get("targets") or targets, reverse=True))
    if len(batch_sizes) < 3 or len(set(batch_sizes)) != len(batch_sizes) or batch_sizes[0] < 1:
        raise ValueError(f"need 3 or more distinct batch sizes >= 1, got {batch_sizes}")
    if not all(math.isfinite(t) and t > 0 for t in targets) or len(set(targets)) != len(targets):
        raise ValueError(f"targets must be distinct, finite and > 0, got {targets}")
    if not w and not all(t < 1 for t in targets):
        raise ValueError(f"quadratic targets are fractions of the initial loss in (0, 1), got {targets}")
    lrs = tuple(sorted(v["lrs"])) if v.get("lrs") else (base.get("lrs") if w else None)
    if lrs is not None and (len(lrs) < 2 or len(set(lrs)) != len(lrs) or min(lrs) <= 0):
        raise ValueError(f"need 2 or more distinct learning rates > 0, got {lrs}")
    probe_draws = v["probe_draws"] if "probe_draws" in v else (base.get("probe_draws") if w else None)
    rel_se = v.get("probe_rel_se") or (base.get("probe_rel_se") if w else None)
    probe_rel_se = None if probe_draws is not None else rel_se
    return ValidationOptions(
        workload=w, problem=v.get("problem"), dims=v.get("dims") or base.get("dims", 256),
        data_dir=v.get("data_dir") or "", batch_sizes=batch_sizes, lrs=lrs,
        reference_batch_size=_reference_batch_size(v.get("reference_batch_size"), base, batch_sizes) if w else None,
        lr_points=v.get("lr_points") or base.get("lr_points", 12), seeds=pick("seeds"), targets=targets,
        refine_points=v["refine_points"], replicates=v["replicates"], top=v.get("top"),
        further_steps=pick("further_steps"), max_steps=pick("max_steps"),
        eval_examples=v.get("eval_examples") or base.get("eval_examples", 0),
        probe_batch_sizes=tuple(sorted(v.get("probe_batch_sizes") or base.get("probe_batch_sizes", ()))),
        probe_rel_se=probe_rel_se, probe_draws=probe_draws,
        probe_adam_draws=(v["probe_adam_draws"] or None) if "probe_adam_draws" in v else base.get("probe_adam_draws"),
        probe_gradient_examples=v.get("probe_gradient_examples") or base.get("probe_gradient_examples", 0),
        probe_steps=v["probe_steps"],
        predictors=v["predictors"], beta1=v["beta1"], beta2=v["beta2"], eps=v["eps"], seed=v["seed"],
        device=v["device"], threads=v["threads"], workers=v.get("workers") or os.cpu_count() or 1,
        scheduler=v.get("scheduler"), quick=quick,
        out=v["out"] if "out" in v else f"runs/validate-{kind}{'-quick' if quick else ''}",
        plot=v["plot"], quiet=v["quiet"],
    )  # fmt: skip


def _reference_batch_size(given: int | None, base: Mapping[str, Any], batch_sizes: tuple[int, ...]) -> int:
    """The reference run's batch size: ``given``, else the workload's default where the grid holds
    it, else the grid's middle B (the lower of the two middles)."""
    if given is not None:
        if int(given) != given or given < 1:
            raise ValueError(f"the reference batch size must be an integer >= 1, got {given}")
        return int(given)
    default = base.get("reference_batch_size")
    return default if default in batch_sizes else batch_sizes[(len(batch_sizes) - 1) // 2]


def check_combination(given: Mapping[str, Any]) -> None:
    """Refuse options that do not go together: a network (``workload``) needs ``data_dir`` or
    ``demo`` and takes no ``dims`` or ``lr_points``; a quadratic takes neither ``demo`` nor
    ``data_dir``, and ``dims`` only without ``problem``."""
    w = given["workload"]
    if w and not (given["demo"] or given["data_dir"]):
        raise ValueError(f"pass `data_dir` (the real {w} data: {DATA_FILES[w]}) or `demo`")
    if not w and (given["demo"] or given["data_dir"]):
        raise ValueError("`demo` and `data_dir` go with `workload`")
    if w and (given["dims"] or given["lr_points"]):
        raise ValueError("`dims` and `lr_points` are for the quadratic, not `workload`")
    if given["problem"] and given["dims"]:
        raise ValueError("`dims` sets the default quadratic; `problem` gives its own")


def check_top(top: int | None, batch_sizes: Sequence[int]) -> None:
    """Refuse a surge test's top group (``top`` largest batch sizes) that leaves none below it."""
    if top is not None and top >= len(batch_sizes):
        raise ValueError(f"`top` {top} leaves no batch size below the top group of {len(batch_sizes)}")
