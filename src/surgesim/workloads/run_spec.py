"""What one run of the grid-search protocol depends on (``RunSpec``), for ``protocol``'s tasks:
the workload, Adam's hyper-parameters, the learning rate, batch size and seed, the target losses
and the evaluation schedule (Section 3.2-3.3 of Li et al. 2024).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

__all__ = ["WORKLOADS", "RunSpec"]

WORKLOADS = ("cnn", "resnet18", "gpt")


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
