"""The three network families of Section 3.1 (Li et al. 2024), in plain PyTorch (no torchvision).

- ``FiveLayerCNN``: the 5-layer CNN for 28x28 grey images (Fashion-MNIST): two 5x5 convolutions
  with max pooling, then three fully connected layers (LeNet-5's layout, LeCun et al. 1998, with
  wider layers). The paper gives no layer sizes; these are the common PyTorch tutorial ones.
- ``ResNet18``: He et al. 2016 (https://arxiv.org/abs/1512.03385), BasicBlock x [2, 2, 2, 2] with
  the ImageNet stem (7x7 stride-2 convolution, 3x3 max pool), identical in layout and parameter
  count to torchvision's ``resnet18``; with 200 classes (Tiny-ImageNet) it has 11,279,112
  parameters (torchvision's 11,689,512 with 1000 classes, minus 800 x 513 head weights).
- ``CausalTransformer``: a small GPT-2 style decoder (Radford et al. 2019; DistilGPT2, Sanh et al.
  2019, https://arxiv.org/abs/1910.01108, is GPT-2 with 6 layers): pre-LayerNorm blocks, causal
  multi-head self-attention, a 4x GELU MLP, learned positions, the output layer tied to the token
  embedding; byte-level vocabulary of 256 by default, depth and width configurable.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FiveLayerCNN", "ResNet18", "BasicBlock", "CausalTransformer", "count_parameters"]


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _positive(name: str, value: int) -> int:
    if int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class FiveLayerCNN(nn.Module):
    """conv5x5(c1) - pool - conv5x5(c2) - pool - fc(h1) - fc(h2) - fc(classes), ReLU between.

    Input (N, in_channels, 28, 28) (any side divisible by 4 works); output logits (N, classes).
    Defaults (c1, c2, h1, h2) = (32, 64, 128, 64): 462,538 parameters at 28x28, 10 classes.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: int = 28,
        channels: tuple[int, int] = (32, 64),
        hidden: tuple[int, int] = (128, 64),
    ) -> None:
        super().__init__()
        num_classes = _positive("num_classes", num_classes)
        if image_size % 4:
            raise ValueError(f"image_size must be divisible by 4, got {image_size}")
        c1, c2 = (_positive("channels", c) for c in channels)
        h1, h2 = (_positive("hidden", h) for h in hidden)
        self.conv1 = nn.Conv2d(_positive("in_channels", in_channels), c1, 5, padding=2)
        self.conv2 = nn.Conv2d(c1, c2, 5, padding=2)
        side = image_size // 4
        self.fc1 = nn.Linear(c2 * side * side, h1)
        self.fc2 = nn.Linear(h1, h2)
        self.fc3 = nn.Linear(h2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm and an identity (or 1x1-projection) shortcut."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class ResNet18(nn.Module):
    """ResNet-18 (BasicBlock x [2, 2, 2, 2], widths 64-128-256-512), torchvision's layout.

    Input (N, 3, H, W), e.g. 64x64 Tiny-ImageNet; output logits (N, num_classes). Weights are
    initialised as torchvision does (Kaiming normal for convolutions, BatchNorm at 1 and 0).
    BatchNorm couples the examples of a batch: per-example gradients (``gradstats``) need the
    model in eval mode.
    """

    def __init__(self, num_classes: int = 200, in_channels: int = 3) -> None:
        super().__init__()
        num_classes = _positive("num_classes", num_classes)
        self.conv1 = nn.Conv2d(_positive("in_channels", in_channels), 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        layers, in_planes = [], 64
        for i, planes in enumerate((64, 128, 256, 512)):
            stride = 1 if i == 0 else 2
            layers.append(nn.Sequential(BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes)))
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.fc = nn.Linear(512, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


class _Block(nn.Module):
    def __init__(self, d_model: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc = nn.Linear(d_model, 4 * d_model)
        self.out = nn.Linear(4 * d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q, k, v = (z.view(n, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        # Written out (not F.scaled_dot_product_attention): its fused CPU kernel has no vmap rule
        # and no double backward, which per-example gradients and Hessian-vector products need.
        att = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
        mask = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
        y = att.masked_fill(mask, float("-inf")).softmax(dim=-1) @ v
        x = x + self.proj(y.transpose(1, 2).reshape(n, t, c))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class CausalTransformer(nn.Module):
    """GPT-2 style causal language model: tokens (N, T) int64 -> next-token logits (N, T, vocab).

    Initialisation as GPT-2: normal(0, 0.02), residual output projections scaled by
    1/sqrt(2 n_layer). DistilGPT2 is n_layer=6, d_model=768, n_head=12, context 1024 with GPT-2's
    BPE vocabulary; the defaults here are a CPU-sized byte-level model.
    """

    def __init__(
        self,
        vocab_size: int = 256,
        context: int = 128,
        n_layer: int = 2,
        d_model: int = 128,
        n_head: int = 4,
    ) -> None:
        super().__init__()
        self.context = _positive("context", context)
        d_model, n_head = _positive("d_model", d_model), _positive("n_head", n_head)
        if d_model % n_head:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_head ({n_head})")
        self.tok = nn.Embedding(_positive("vocab_size", vocab_size), d_model)
        self.pos = nn.Embedding(self.context, d_model)
        self.blocks = nn.ModuleList(_Block(d_model, n_head) for _ in range(_positive("n_layer", n_layer)))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        self.head.weight = self.tok.weight
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * n_layer) if name.endswith(("proj.weight", "out.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        if t > self.context:
            raise ValueError(f"sequence length {t} exceeds the context {self.context}")
        x = self.tok(idx) + self.pos(torch.arange(t, device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))
