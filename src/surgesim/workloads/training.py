"""One run's training (``Trainer``): the workload's data as image or text batches on the run's
device (``load_data``, cached per process), its network initialised from the seed alone
(``build_model``), Adam at a constant learning rate over a minibatch stream seeded by
(seed, B, lr) through ``surgesim.rng.stream_key`` (``stream_seed``), and the training loss over a
fixed sample (``protocol``'s module docstring describes the evaluation).
"""

from __future__ import annotations

import functools
import struct

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import rng
from . import data as datasets
from .models import CausalTransformer, FiveLayerCNN, ResNet18
from .run_spec import RunSpec

__all__ = ["Trainer", "ImageBatches", "TextBatches", "load_data", "build_model", "stream_seed", "check_device"]


def check_device(device: str) -> None:
    """Refuse a torch device that does not exist here (ValueError naming the option as `device`),
    before any data is read."""
    try:
        torch.empty(1, device=torch.device(device))
    except (RuntimeError, AssertionError, ValueError) as exc:
        raise ValueError(f"`device` {device!r} is not usable here: {exc}") from None

# --- data --------------------------------------------------------------------------------------


class ImageBatches:
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

    def sample(self, gen: torch.Generator, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.take(torch.randint(self.n, (batch_size,), generator=gen))

    def fixed(self, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A fixed sample of min(n, N) distinct examples (a permutation seeded by ``seed``)."""
        return self.take(torch.randperm(self.n, generator=torch.Generator().manual_seed(seed))[:n])

    @staticmethod
    def loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output, target)


class TextBatches:
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

    def take(self, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.tokens[starts[:, None] + self.offsets].to(self.device, torch.int64)
        return w[:, :-1], w[:, 1:]

    def sample(self, gen: torch.Generator, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.take(torch.randint(self.n, (batch_size,), generator=gen))

    def fixed(self, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
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
    return TextBatches(raw, context, device) if workload == "gpt" else ImageBatches(raw, device)


def load_data(spec: RunSpec) -> ImageBatches | TextBatches:
    """The spec's dataset (cached per process): image or text batches on ``spec.device``."""
    return _dataset(spec.workload, spec.data_dir, spec.per_class, spec.max_records, spec.context, spec.device)


def build_model(spec: RunSpec) -> nn.Module:
    """The spec's network, freshly initialised from the spec's seed, on ``spec.device``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream_seed(spec.seed, 0, 0))  # initial weights: seed only
        return _build_model(spec, load_data(spec)).to(spec.device)


def _build_model(spec: RunSpec, data) -> nn.Module:
    if spec.workload == "cnn":
        _, c, h, _ = data.images.shape
        return FiveLayerCNN(num_classes=data.num_classes, in_channels=c, image_size=h)
    if spec.workload == "resnet18":
        return ResNet18(num_classes=data.num_classes, in_channels=data.images.shape[1])
    return CausalTransformer(256, spec.context, spec.n_layer, spec.d_model, spec.n_head)


def stream_seed(seed: int, a: int, b: int) -> int:
    """The seed of random stream (a, b) of run seed ``seed`` (``surgesim.rng.stream_key``)."""
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
        self.gen = torch.Generator().manual_seed(stream_seed(spec.seed, spec.batch_size, _lr_bits(spec.lr)))
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
