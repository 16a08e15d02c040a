"""The grid search on a real network (``python -m sims.workloads``): each workload's default grid,
sized for a 2-core CPU, and the grid's reference run (``reference_spec``: the middle learning rate,
geometric, and the middle batch size, seed 0), which ``sims.probe`` probes too.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .run_spec import RunSpec

__all__ = ["WORKLOAD_DEFAULTS", "GridOptions", "reference_spec", "resolve_workload_options"]

# Small defaults per workload, sized for a 2-core CPU (the paper's Table 1 grids are 10 lrs x 12
# batch sizes x 30-100 rounds). CNN: 6 x 6 x 2 runs in about 5 minutes; the demo's loss falls from
# ln 10 = 2.3 to its targets within a few hundred steps at every B. Targets differ between the demo
# data and the real data (ln 200 = 5.3 for Tiny-ImageNet's 200 classes; bytes of English for
# ELI5). Gradient statistics: examples and Hutchinson probes per target (the transformer's
# Hessian-vector product over 128 sequences of 64 tokens takes about 1 s here).
WORKLOAD_DEFAULTS: dict[str, dict[str, Any]] = {
    "cnn": dict(lrs=(2e-4, 4e-4, 8e-4, 1.6e-3, 3.2e-3, 6.4e-3), batch_sizes=(4, 8, 16, 32, 64, 128),
                targets=(1.0, 0.6, 0.4), real_targets=(1.0, 0.6, 0.4), further_steps=20, max_steps=800,
                eval_examples=128, grad_examples=512, probes=16),
    "resnet18": dict(lrs=(1e-4, 3e-4, 1e-3, 3e-3), batch_sizes=(8, 16, 32, 64),
                     targets=(1.0, 0.5), real_targets=(4.5, 4.0, 3.5), further_steps=50, max_steps=600,
                     eval_examples=128, grad_examples=64, probes=4),
    "gpt": dict(lrs=(3e-4, 1e-3, 3e-3, 1e-2), batch_sizes=(4, 8, 16, 32),
                targets=(3.0, 2.7), real_targets=(3.0, 2.7), further_steps=50, max_steps=1000,
                eval_examples=64, grad_examples=128, probes=8),
}  # fmt: skip


def default_targets(workload: str, data_dir: str, targets: Sequence[float] | None = None) -> tuple[float, ...]:
    """The target losses, highest first: ``targets``, else the workload's default for its demo
    data (``data_dir`` "") or its real data."""
    d = WORKLOAD_DEFAULTS[workload]
    picked = d["targets" if not data_dir else "real_targets"] if targets is None else targets
    return tuple(sorted(picked, reverse=True))


def reference_spec(
    workload: str,
    data_dir: str = "",
    *,
    lrs: Sequence[float] | None = None,
    batch_sizes: Sequence[int] | None = None,
    targets: Sequence[float] | None = None,
    **fields: Any,
) -> RunSpec:
    """The grid's reference run: the geometric mean of ``lrs`` (exp of the mean log lr), the middle
    of ``batch_sizes`` (the lower middle for an even count), seed 0, each of ``lrs``,
    ``batch_sizes``, ``targets``, ``further_steps``, ``max_steps`` and ``eval_examples`` the
    workload's default (``WORKLOAD_DEFAULTS``) unless given, the transformer's context 64 and one
    torch thread (``sims.workloads``' defaults); other ``RunSpec`` fields by keyword.

    >>> spec = reference_spec("cnn", lrs=(1e-3, 4e-3), batch_sizes=(8, 16, 32))
    >>> round(spec.lr, 6), spec.batch_size, spec.targets
    (0.002, 16, (1.0, 0.6, 0.4))
    """
    d = WORKLOAD_DEFAULTS[workload]
    lrs = tuple(d["lrs"] if lrs is None else lrs)
    sizes = sorted(d["batch_sizes"] if batch_sizes is None else batch_sizes)
    values = {k: d[k] for k in ("further_steps", "max_steps", "eval_examples")}
    values.update(context=64, threads=1)
    values.update(fields)
    return RunSpec(
        workload=workload, lr=float(np.exp(np.mean(np.log(lrs)))), batch_size=sizes[(len(sizes) - 1) // 2],
        seed=0, targets=default_targets(workload, data_dir, targets), data_dir=data_dir, **values,
    )  # fmt: skip


@dataclass(frozen=True)
class GridOptions:
    """Everything a grid run depends on (options.json): the workload and its data, the grid, Adam,
    the gradient statistics and the probe at the reference run's states, the execution."""

    workload: str
    data_dir: str
    lrs: tuple[float, ...]
    batch_sizes: tuple[int, ...]
    seeds: int
    targets: tuple[float, ...]
    further_steps: int
    max_steps: int
    beta1: float
    beta2: float
    eps: float
    eval_examples: int
    eval_rel: float
    grad_examples: int
    probes: int
    gradstats: bool
    probe: bool
    probe_rel_se: float
    per_class: int
    max_records: int
    context: int
    n_layer: int
    d_model: int
    n_head: int
    device: str
    threads: int
    workers: int
    scheduler: str | None
    out: str
    plot: bool
    quiet: bool
    estimate_only: bool

    def reference(self) -> RunSpec:
        """The grid's reference run (``reference_spec``) with these options."""
        fields = ("further_steps", "max_steps", "beta1", "beta2", "eps", "eval_examples", "eval_rel", "device",
                  "threads", "per_class", "max_records", "context", "n_layer", "d_model", "n_head")  # fmt: skip
        return reference_spec(self.workload, self.data_dir, lrs=self.lrs, batch_sizes=self.batch_sizes,
                              targets=self.targets, **{k: getattr(self, k) for k in fields})  # fmt: skip


_FIXED: dict[str, Any] = dict(
    workload="cnn", seeds=2, beta1=0.9, beta2=0.999, eps=1e-8, eval_rel=0.1, gradstats=True, probe=False,
    probe_rel_se=0.1, per_class=0, max_records=0, context=64, n_layer=2, d_model=128, n_head=4, device="cpu",
    threads=1, workers=0, scheduler=None, plot=True, quiet=False, estimate_only=False,
)  # fmt: skip
"""The defaults of the options that do not depend on the workload (``sims.workloads``')."""


def resolve_workload_options(given: Mapping[str, Any]) -> GridOptions:
    """The options of a grid run from the values given by ``GridOptions`` field name (and
    ``demo``: the workload's demo data); a value None or absent takes its default
    (``WORKLOAD_DEFAULTS`` of the workload, the demo's targets or the real data's; workers 0: the
    number of cores; out runs/workload-NAME). Other names are ignored. Raises ValueError, naming
    the option as `key`, for a value or combination that cannot run (``probe`` without
    ``gradstats`` among them)."""
    v: dict[str, Any] = {**_FIXED, **{k: x for k, x in given.items() if x is not None}}
    w, demo = v["workload"], bool(v.get("demo"))
    if not demo and not v.get("data_dir"):
        raise ValueError(f"pass `data_dir` DIR (the real {w} data) or `demo`")
    dflt = WORKLOAD_DEFAULTS[w]
    pick = lambda key, default=None: v.get(key, dflt[default or key])  # noqa: E731
    lrs, batch_sizes = tuple(pick("lrs")), tuple(pick("batch_sizes"))
    targets = tuple(sorted(pick("targets", "targets" if demo else "real_targets"), reverse=True))
    grad_examples, probes = pick("grad_examples"), pick("probes")
    if any(not (math.isfinite(x) and x > 0) for x in lrs):
        raise ValueError(f"learning rates must be finite and > 0, got {lrs}")
    if any(b < 1 for b in batch_sizes):
        raise ValueError(f"batch sizes must be >= 1, got {batch_sizes}")
    if len(set(lrs)) != len(lrs) or len(set(batch_sizes)) != len(batch_sizes):
        raise ValueError("learning rates and batch sizes must be distinct")
    if v["seeds"] < 1:
        raise ValueError(f"`seeds` must be >= 1, got {v['seeds']}")
    if not 0 < v["probe_rel_se"] < 1:
        raise ValueError(f"`probe_rel_se` must be in (0, 1), got {v['probe_rel_se']}")
    if probes < 2 or grad_examples < 4:
        raise ValueError(f"need `probes` >= 2 and `grad_examples` >= 4, got {probes}, {grad_examples}")
    kept = ("seeds", "beta1", "beta2", "eps", "eval_rel", "gradstats", "probe", "probe_rel_se", "per_class",
            "max_records", "context", "n_layer", "d_model", "n_head", "device", "threads", "scheduler", "plot",
            "quiet", "estimate_only")  # fmt: skip
    opts = GridOptions(
        workload=w, data_dir="" if demo else v["data_dir"], lrs=lrs, batch_sizes=batch_sizes, targets=targets,
        further_steps=pick("further_steps"), max_steps=pick("max_steps"), eval_examples=pick("eval_examples"),
        grad_examples=grad_examples, probes=probes, workers=v["workers"] or os.cpu_count() or 1,
        out=v.get("out", f"runs/workload-{w}"), **{k: v[k] for k in kept},
    )  # fmt: skip
    if opts.probe and not opts.gradstats:
        raise ValueError("`probe` measures at the reference run's states: drop `no_gradstats`")
    return opts
