"""The grid-search protocol of Section 3.2-3.3 (Li et al. 2024) on real networks, as independent
tasks: one task trains one (learning rate, batch size, seed) with Adam and returns one row per
target training loss.

Each run trains from the seed's initialisation with Adam(beta1, beta2, eps) at a constant learning
rate, drawing i.i.d. minibatches of B examples, and follows the training loss:

- The training loss is the mean loss over a fixed sample of ``eval_examples`` training examples
  (the same for every run: a fixed permutation with seed 0), evaluated after every step for the
  first ``dense_steps`` steps and then whenever the step count has grown by the fraction
  ``eval_rel`` (a geometric schedule: about 60 evaluations up to 1,000 steps at 10%). Models with
  BatchNorm are evaluated in train mode (batch statistics of 256-example chunks) with their
  running statistics restored afterwards, so the loss is a function of the parameters alone.
- S for a target loss is where the piecewise-linear interpolation of the evaluated losses first
  reaches it (exact to within one evaluation interval); E = B S (examples).
- After the first evaluation at or below a target, the run continues ``further_steps`` steps
  (the paper: 10 for the CNN, 50 for ResNet-18 and DistilGPT2) and records the loss decrease over
  them, measured from that evaluation: the score whose maximum over learning rates defines the
  optimal learning rate (Fig 2-4, left panels).
- A run stops when every target has its further decrease, at ``max_steps``, when the loss is
  not finite or exceeds ``diverge_factor`` times its initial value, or when it has stalled: no
  new lowest loss since step k_best and more than ``stall_factor`` k_best + 50 steps run (a
  dead network at a too-large learning rate would otherwise cost ``max_steps``). Targets not
  reached have ``steps``, ``examples`` and ``further_decrease`` None.

Seeding: the initial weights depend on the seed alone (common random numbers across the grid); the
minibatch stream on (seed, B, lr) through ``surgesim.rng.stream_key``: a task is a pure function of
its parameters (``torch.use_deterministic_algorithms`` is not forced, so the last bits of a CUDA
run may differ). ``run_task`` is module-level, so ``surgesim.sweep.run_sweep`` can run the grid on
local processes or a Dask cluster and resume it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import rng
from . import data as datasets
from .gradstats import noise_scale
from .models import CausalTransformer, FiveLayerCNN, ResNet18

__all__ = [
    "WORKLOADS",
    "ROW_COLUMNS",
    "GRADIENT_COLUMNS",
    "RunSpec",
    "TargetRecord",
    "Trainer",
    "follow_targets",
    "run_task",
    "gradient_task",
    "grid_tasks",
    "measure_step_seconds",
    "estimate_grid_seconds",
    "load_data",
    "build_model",
    "save_checkpoint",
    "checkpoint_path",
]

WORKLOADS = ("cnn", "resnet18", "gpt")
ROW_COLUMNS = (
    "optimizer", "lr", "batch_size", "seed", "target_loss", "steps", "examples", "further_decrease",
    "beta1", "beta2",
)  # fmt: skip
GRADIENT_COLUMNS = (
    "target_loss", "steps", "loss", "predicted_noise_batch_size", "predicted_noise_batch_size_se",
    "predicted_peak_lr", "predicted_peak_lr_se", "hessian_trace", "hessian_trace_se", "signal",
    "off_diagonal", "validity_bound", "n_examples", "n_probes", "n_params", "seconds",
)  # fmt: skip


@dataclass(frozen=True)
class RunSpec:
    """Everything one run depends on. ``data_dir`` "" means the workload's offline demo data.

    Workload options: ``per_class`` (Tiny-ImageNet images per class, 0 = all), ``max_records``
    (ELI5 records, 0 = all), ``context``/``n_layer``/``d_model``/``n_head`` (the transformer).
    """

    workload: str
    lr: float
    batch_size: int
    seed: int
    targets: tuple[float, ...]
    data_dir: str = ""
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    further_steps: int = 10
    max_steps: int = 2000
    eval_examples: int = 512
    eval_rel: float = 0.1
    dense_steps: int = 10
    diverge_factor: float = 3.0
    stall_factor: float = 2.0  # 0: never stop for a stall
    device: str = "cpu"
    threads: int = 1  # torch.set_num_threads in the task's process (0: torch's default); see below
    per_class: int = 0
    max_records: int = 0
    context: int = 128
    n_layer: int = 2
    d_model: int = 128
    n_head: int = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", tuple(float(t) for t in self.targets))
        if self.workload not in WORKLOADS:
            raise ValueError(f"workload must be one of {', '.join(WORKLOADS)}, got {self.workload!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be finite and > 0, got {self.lr}")
        if int(self.batch_size) != self.batch_size or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size}")
        if not self.targets or not all(math.isfinite(t) and t > 0 for t in self.targets):
            raise ValueError(f"targets must be finite losses > 0, got {self.targets}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not self.eps >= 0:
            raise ValueError(f"eps must be >= 0, got {self.eps}")
        for name in ("further_steps", "dense_steps", "threads", "per_class", "max_records"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("max_steps", "eval_examples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.eval_rel < 0:
            raise ValueError(f"eval_rel must be >= 0, got {self.eval_rel}")
        if self.diverge_factor <= 1:
            raise ValueError(f"diverge_factor must be > 1, got {self.diverge_factor}")
        if not (self.stall_factor == 0 or self.stall_factor >= 1):
            raise ValueError(f"stall_factor must be 0 (off) or >= 1, got {self.stall_factor}")

    def to_params(self) -> dict:
        """JSON-serialisable task parameters (``targets`` as a list)."""
        d = dataclasses.asdict(self)
        d["targets"] = list(self.targets)
        return d

    @classmethod
    def from_params(cls, params: dict) -> RunSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        extra = sorted(set(params) - known)
        if extra:
            raise ValueError(f"unknown run parameters {extra}")
        return cls(**params)


# --- data --------------------------------------------------------------------------------------


class _Images:
    """uint8 images kept as such; each batch converted to float and standardised per channel."""

    def __init__(self, d: datasets.ImageData, device: str) -> None:
        self.images = torch.from_numpy(d.images)
        self.labels = torch.from_numpy(d.labels)
        self.num_classes = len(d.classes)
        # Per-channel mean and standard deviation, accumulated in chunks (100k Tiny-ImageNet images
        # as float would take 5 GB).
        c = self.images.shape[1]
        s1 = torch.zeros(c, dtype=torch.float64)
        s2 = torch.zeros(c, dtype=torch.float64)
        for i in range(0, self.n, 4096):
            x = self.images[i : i + 4096].to(torch.float64) / 255.0
            s1 += x.sum(dim=(0, 2, 3))
            s2 += (x * x).sum(dim=(0, 2, 3))
        count = self.n * self.images.shape[2] * self.images.shape[3]
        mean = s1 / count
        std = torch.sqrt(torch.clamp(s2 / count - mean * mean, min=1e-12))
        self.mean = mean.to(torch.float32).view(1, c, 1, 1).to(device)
        self.std = std.to(torch.float32).view(1, c, 1, 1).to(device)
        self.device = device

    @property
    def n(self) -> int:
        return self.images.shape[0]

    def take(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[idx].to(self.device, torch.float32) / 255.0
        return (x - self.mean) / self.std, self.labels[idx].to(self.device)

    def sample(self, gen: torch.Generator, batch_size: int):
        return self.take(torch.randint(self.n, (batch_size,), generator=gen))

    def fixed(self, n: int, seed: int):
        """A fixed sample of min(n, N) distinct examples (a permutation seeded by ``seed``)."""
        return self.take(torch.randperm(self.n, generator=torch.Generator().manual_seed(seed))[:n])

    @staticmethod
    def loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output, target)


class _Text:
    """A token stream; an example is a window of ``context`` tokens and its next-token targets."""

    def __init__(self, tokens: np.ndarray, context: int, device: str) -> None:
        if tokens.size < context + 2:
            raise ValueError(f"text of {tokens.size} tokens is shorter than the context {context} + 2")
        self.tokens = torch.from_numpy(tokens)
        self.context = context
        self.offsets = torch.arange(context + 1)
        self.device = device

    @property
    def n(self) -> int:
        return self.tokens.numel() - self.context

    def take(self, starts: torch.Tensor):
        w = self.tokens[starts[:, None] + self.offsets].to(self.device, torch.int64)
        return w[:, :-1], w[:, 1:]

    def sample(self, gen: torch.Generator, batch_size: int):
        return self.take(torch.randint(self.n, (batch_size,), generator=gen))

    def fixed(self, n: int, seed: int):
        return self.take(torch.randint(self.n, (n,), generator=torch.Generator().manual_seed(seed)))

    @staticmethod
    def loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1))


@functools.lru_cache(maxsize=2)
def _load_raw(workload: str, data_dir: str, per_class: int, max_records: int):
    if workload == "cnn":
        return datasets.load_fashion_mnist(data_dir) if data_dir else datasets.load_mnist_5k()
    if workload == "resnet18":
        if data_dir:
            return datasets.load_tiny_imagenet(data_dir, per_class=per_class or None)
        # Demo: the 5,000 MNIST digits as 64x64 colour images (grey repeated in 3 channels).
        d = datasets.load_mnist_5k()
        x = F.interpolate(torch.from_numpy(d.images).float(), size=64, mode="bilinear", align_corners=False)
        rgb = x.round().clamp(0, 255).to(torch.uint8).repeat(1, 3, 1, 1).numpy()
        return datasets.ImageData(rgb, d.labels, d.classes)
    text = (
        datasets.load_eli5_category(data_dir, max_records=max_records or None)
        if data_dir
        else datasets.load_stdlib_text()
    )
    return datasets.encode_bytes(text)


@functools.lru_cache(maxsize=2)
def _dataset(workload: str, data_dir: str, per_class: int, max_records: int, context: int, device: str):
    raw = _load_raw(workload, data_dir, per_class, max_records)
    return _Text(raw, context, device) if workload == "gpt" else _Images(raw, device)


def load_data(spec: RunSpec):
    """The spec's dataset (cached per process): image or text batches on ``spec.device``."""
    return _dataset(spec.workload, spec.data_dir, spec.per_class, spec.max_records, spec.context, spec.device)


def build_model(spec: RunSpec) -> nn.Module:
    """The spec's network, freshly initialised from the spec's seed, on ``spec.device``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_seed(spec.seed, 0, 0))  # initial weights: seed only
        return _build_model(spec, load_data(spec)).to(spec.device)


def _build_model(spec: RunSpec, data) -> nn.Module:
    if spec.workload == "cnn":
        _, c, h, _ = data.images.shape
        return FiveLayerCNN(num_classes=data.num_classes, in_channels=c, image_size=h)
    if spec.workload == "resnet18":
        return ResNet18(num_classes=data.num_classes, in_channels=data.images.shape[1])
    return CausalTransformer(256, spec.context, spec.n_layer, spec.d_model, spec.n_head)


def _seed(seed: int, a: int, b: int) -> int:
    return int(rng.stream_key(np.uint64(seed), np.uint64(a), np.uint64(b)))


def _lr_bits(lr: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", float(lr)))[0]


class Trainer:
    """One run's model, Adam optimizer, minibatch stream and training-loss probe."""

    def __init__(self, spec: RunSpec) -> None:
        if spec.threads:
            torch.set_num_threads(spec.threads)
        self.spec = spec
        self.data = load_data(spec)
        self.model = build_model(spec)
        self.model.train()
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=spec.lr, betas=(spec.beta1, spec.beta2), eps=spec.eps,
            fused=spec.device == "cpu" or spec.device.startswith("cuda"),
        )  # fmt: skip
        self.gen = torch.Generator().manual_seed(_seed(spec.seed, spec.batch_size, _lr_bits(spec.lr)))
        self.probe = self.data.fixed(spec.eval_examples, seed=0)
        self.loss_fn = self.data.loss

    def step(self) -> None:
        x, y = self.data.sample(self.gen, self.spec.batch_size)
        self.optimizer.zero_grad(set_to_none=True)
        self.loss_fn(self.model(x), y).backward()
        self.optimizer.step()

    @torch.no_grad()
    def loss(self, chunk: int = 256) -> float:
        """Mean loss over the probe sample (BatchNorm running statistics restored after)."""
        saved = [b.clone() for b in self.model.buffers()]
        x, y = self.probe
        total = 0.0
        for i in range(0, x.shape[0], chunk):
            total += float(self.loss_fn(self.model(x[i : i + chunk]), y[i : i + chunk])) * x[i : i + chunk].shape[0]
        for b, s in zip(self.model.buffers(), saved, strict=True):
            b.copy_(s)
        return total / x.shape[0]


# --- the protocol's bookkeeping ---------------------------------------------------------------


@dataclass
class TargetRecord:
    """Steps to one target loss (interpolated; NaN if not reached) and the further decrease."""

    target_loss: float
    steps: float = math.nan
    crossing_step: int = -1  # the first evaluated step at or below the target
    crossing_loss: float = math.nan
    further_decrease: float = math.nan


def follow_targets(
    step: Callable[[], None],
    evaluate: Callable[[], float],
    targets: Sequence[float],
    *,
    further_steps: int,
    max_steps: int,
    eval_rel: float = 0.0,
    dense_steps: int = 10,
    diverge_factor: float = 3.0,
    stall_factor: float = 0.0,
    on_cross: Callable[[TargetRecord], None] | None = None,
) -> tuple[list[TargetRecord], dict]:
    """Run ``step()`` until every target is reached and followed ``further_steps`` further, or
    ``max_steps``, or divergence; ``evaluate()`` gives the training loss (see the module docstring).

    ``on_cross(record)`` is called at the evaluation that first reaches a target (e.g. to measure
    gradient statistics there); it must not change the run.

    Returns:
        (records in the order of ``targets``, info with ``steps_run``, ``final_loss``,
        ``initial_loss``, ``diverged``, ``stalled`` and ``evaluations``).
    """
    records = [TargetRecord(float(t)) for t in targets]
    pending: dict[int, list[TargetRecord]] = {}
    open_targets = list(records)

    def crossed(k: int, loss: float, prev_step: int, prev_loss: float) -> None:
        for r in [r for r in open_targets if loss <= r.target_loss]:
            # Linear interpolation between the last evaluation above the target and this one.
            frac = 0.0 if k == prev_step else (prev_loss - r.target_loss) / (prev_loss - loss)
            r.steps = prev_step + (k - prev_step) * frac
            r.crossing_step, r.crossing_loss = k, loss
            open_targets.remove(r)
            if further_steps == 0:
                r.further_decrease = 0.0
            else:
                pending.setdefault(k + further_steps, []).append(r)
            if on_cross:
                on_cross(r)

    prev_step, prev_loss = 0, evaluate()
    initial = loss = prev_loss
    crossed(0, loss, 0, loss)  # targets at or above the initial loss: S = 0
    info = {"initial_loss": initial, "diverged": False, "stalled": False, "evaluations": 1}
    next_eval, k, best, k_best = 1, 0, initial, 0
    while k < max_steps and (open_targets or pending):
        step()
        k += 1
        if not (k <= dense_steps or k >= next_eval or k in pending):
            continue
        loss = evaluate()
        info["evaluations"] += 1
        next_eval = max(k + 1, math.ceil(k * (1.0 + eval_rel)))
        if not math.isfinite(loss) or loss > diverge_factor * initial:
            info["diverged"] = True
            break
        for r in pending.pop(k, []):
            r.further_decrease = r.crossing_loss - loss
        crossed(k, loss, prev_step, prev_loss)
        prev_step, prev_loss = k, loss
        if loss < best:
            best, k_best = loss, k
        elif stall_factor and open_targets and k > stall_factor * k_best + 50:
            info["stalled"] = True
            break
    info.update(steps_run=k, final_loss=loss)
    return records, info


def _none_if_nan(x: float) -> float | None:
    return None if not math.isfinite(x) else float(x)


def run_task(params: dict) -> list[dict]:
    """One grid point: train ``RunSpec(**params)`` and return one row per target (``ROW_COLUMNS``)."""
    spec = RunSpec.from_params(params)
    trainer = Trainer(spec)
    records, _ = follow_targets(
        trainer.step, trainer.loss, spec.targets, further_steps=spec.further_steps,
        max_steps=spec.max_steps, eval_rel=spec.eval_rel, dense_steps=spec.dense_steps,
        diverge_factor=spec.diverge_factor, stall_factor=spec.stall_factor,
    )  # fmt: skip
    rows = []
    for r in records:
        steps = _none_if_nan(r.steps)
        rows.append({
            "optimizer": "adam", "lr": spec.lr, "batch_size": spec.batch_size, "seed": spec.seed,
            "target_loss": r.target_loss, "steps": steps,
            "examples": None if steps is None else steps * spec.batch_size,
            "further_decrease": _none_if_nan(r.further_decrease), "beta1": spec.beta1, "beta2": spec.beta2,
        })  # fmt: skip
    return rows


CHECKPOINT_FORMAT = "surgesim-probe-1"


def save_checkpoint(path, trainer: Trainer, record: TargetRecord | None) -> None:
    """The trainer's model and Adam state (a ``torch.save`` dict: ``format``, ``spec``, ``model``,
    ``optimizer``, ``target_loss``, ``steps``, ``loss``), written atomically (temporary + rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({
        "format": CHECKPOINT_FORMAT, "spec": trainer.spec.to_params(), "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "target_loss": None if record is None else record.target_loss,
        "steps": None if record is None else record.steps,
        "loss": None if record is None else record.crossing_loss,
    }, tmp)  # fmt: skip
    os.replace(tmp, path)


def checkpoint_path(directory, target_loss: float) -> Path:
    """Where the reference run's state at ``target_loss`` is saved."""
    return Path(directory) / f"target_{target_loss:g}.pt"


def gradient_task(params: dict) -> list[dict]:
    """A reference run that measures eq 14 / eq 16 at each target loss (``GRADIENT_COLUMNS``).

    ``params`` is a ``RunSpec`` plus ``grad_examples`` (examples for the per-example gradients and
    the Hessian, a fixed sample with seed 1), ``probes`` (Hutchinson probes) and optionally
    ``checkpoint_dir`` (save the state at each target there, ``checkpoint_path``, for the probe).
    The trajectory is the same as ``run_task``'s with the same spec; targets not reached give no row.
    """
    params = dict(params)
    n_examples = int(params.pop("grad_examples", 512))
    probes = int(params.pop("probes", 32))
    checkpoint_dir = params.pop("checkpoint_dir", None)
    if checkpoint_dir:
        Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
    spec = RunSpec.from_params(params)
    trainer = Trainer(spec)
    x, y = trainer.data.fixed(n_examples, seed=1)
    n_params = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    rows: list[dict] = []

    def measure(r: TargetRecord) -> None:
        if checkpoint_dir:
            save_checkpoint(checkpoint_path(checkpoint_dir, r.target_loss), trainer, r)
        start = time.perf_counter()
        ns = noise_scale(
            trainer.model, trainer.loss_fn, x, y, probes=probes,
            seed=_seed(spec.seed, 2, len(rows)), chunk_size=32, hvp_chunk_size=256,
        )  # fmt: skip
        rows.append({
            "target_loss": r.target_loss, "steps": r.steps, "loss": r.crossing_loss,
            "predicted_noise_batch_size": ns.noise_batch_size,
            "predicted_noise_batch_size_se": ns.noise_batch_size_se,
            "predicted_peak_lr": ns.peak_lr, "predicted_peak_lr_se": ns.peak_lr_se,
            "hessian_trace": ns.trace, "hessian_trace_se": ns.trace_se, "signal": ns.signal,
            "off_diagonal": ns.off_diagonal, "validity_bound": ns.validity_bound,
            "n_examples": ns.moments.count, "n_probes": probes,
            "n_params": n_params, "seconds": time.perf_counter() - start,
        })  # fmt: skip

    follow_targets(
        trainer.step, trainer.loss, spec.targets, further_steps=spec.further_steps,
        max_steps=spec.max_steps, eval_rel=spec.eval_rel, dense_steps=spec.dense_steps,
        diverge_factor=spec.diverge_factor, stall_factor=spec.stall_factor, on_cross=measure,
    )  # fmt: skip
    return [{k: _none_if_nan(v) if isinstance(v, float) else v for k, v in r.items()} for r in rows]


def grid_tasks(base: RunSpec, lrs: Sequence[float], batch_sizes: Sequence[int], seeds: Sequence[int]) -> list[dict]:
    """Task parameters for every (seed, batch size, lr), the base spec's other fields kept."""
    if not lrs or not batch_sizes or not seeds:
        raise ValueError("need at least one learning rate, batch size and seed")
    return [
        dataclasses.replace(base, lr=float(lr), batch_size=int(b), seed=int(s)).to_params()
        for s in seeds
        for b in batch_sizes
        for lr in lrs
    ]


# --- cost estimates ----------------------------------------------------------------------------


def measure_step_seconds(base: RunSpec, batch_sizes: Sequence[int], steps: int = 3) -> tuple[dict[int, float], float]:
    """Seconds per training step at each batch size (after one warm-up step) and per evaluation."""
    out = {}
    for b in batch_sizes:
        t = Trainer(dataclasses.replace(base, batch_size=int(b)))
        t.step()
        start = time.perf_counter()
        for _ in range(steps):
            t.step()
        out[int(b)] = (time.perf_counter() - start) / steps
    start = time.perf_counter()
    t.loss()
    return out, time.perf_counter() - start


def _evaluations(steps: float, spec: RunSpec) -> float:
    """Evaluations of the geometric schedule up to ``steps`` steps, plus one per target."""
    dense = min(steps, spec.dense_steps)
    rest = 0.0
    if steps > spec.dense_steps and spec.eval_rel == 0:
        rest = steps - spec.dense_steps
    elif steps > spec.dense_steps:
        rest = math.log(steps / max(spec.dense_steps, 1)) / math.log1p(spec.eval_rel)
    return 1 + dense + rest + len(spec.targets)


def estimate_grid_seconds(
    base: RunSpec,
    step_seconds: dict[int, float],
    eval_seconds: float,
    lrs: Sequence[float],
    n_seeds: int,
    reference_steps: float | None = None,
) -> tuple[float, float]:
    """(estimate, upper bound) of the grid's compute seconds on one worker.

    Upper bound: every run goes to ``max_steps``. Estimate: from a reference run (``base``'s lr
    and batch size) that reached the last target in S_ref = ``reference_steps``, a run at (lr, B) takes
    S_ref (1 + B_ref / B) / 2 max(1, lr_ref / lr) + further_steps steps, capped at max_steps:
    the eq 20 form with B_noise taken as B_ref, and a smaller learning rate needing
    proportionally more steps (gradient-flow time lr x steps). Without a reference: the bound.
    """
    est = upper = 0.0
    for b, t in step_seconds.items():
        full = base.max_steps * t + _evaluations(base.max_steps, base) * eval_seconds
        upper += n_seeds * len(lrs) * full
        for lr in lrs:
            if reference_steps is None or not math.isfinite(reference_steps):
                est += n_seeds * full
                continue
            s = reference_steps * (1 + base.batch_size / b) / 2 * max(1.0, base.lr / lr) + base.further_steps
            s = min(s, base.max_steps)
            est += n_seeds * (s * t + _evaluations(s, base) * eval_seconds)
    return est, upper
