"""
Small CIFAR-10 CNN baselines of the study: GoogleNet, ResNet, pre-activation ResNet and DenseNet.

All four map images (B, 3, 32, 32) -> logits (B, num_classes). They keep the 32x32 resolution at the input
(3x3 stem, no stride), use BatchNorm + ReLU, and end with global average pooling and one Linear layer.
They work unchanged on channels_last inputs / models (``x.to(memory_format=torch.channels_last)``).

Exact parameter counts with num_classes=10 (tested in tests/models/test_cnn.py):

    GoogleNet       260,650     every convolution has a bias (also the ones followed by BN)
    ResNet          272,378     block convs and stem conv bias-free, 1x1 downsampling shortcut with bias
    ResNetPreAct    272,250     no BN/ReLU between the last block and the pooling head (see below)
    DenseNet        239,146     stem conv with bias, all convs inside dense layers / transitions bias-free

Initialisation as in common CIFAR references: kaiming-normal convolutions (fan_out, relu), zero conv biases,
BatchNorm weight 1 / bias 0, default Linear weights with zero bias.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from replab.models.precision import upcast

# -----------------------------------------------------------------------------
# shared pieces


def conv_bn_relu(c_in: int, c_out: int, kernel_size: int, stride: int = 1, bias: bool = True) -> nn.Module:
    """Conv(k x k, 'same' padding) + BN + ReLU: (B, c_in, H, W) -> (B, c_out, H/stride, W/stride)."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=kernel_size // 2, bias=bias),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def bn_relu_conv(c_in: int, c_out: int, kernel_size: int, stride: int = 1) -> nn.Module:
    """Pre-activation BN + ReLU + Conv(k x k, no bias): (B, c_in, H, W) -> (B, c_out, H/stride, W/stride)."""
    return nn.Sequential(
        nn.BatchNorm2d(c_in),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
    )


class CNN(nn.Module):
    """Base class: weight init, the pooling + Linear head and the loss shared by the four models."""

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Global average pooling + Linear: (B, C, H, W) -> (B, num_classes)."""
        return self.fc(x.mean(dim=(2, 3)))

    def loss(self, preds: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of logits (B, num_classes) against integer labels (B,) -> scalar, in float32 under
        bf16/fp16 autocast, float64 for float64 logits."""
        return F.cross_entropy(upcast(preds), labels)


# -----------------------------------------------------------------------------
# GoogleNet


@dataclass(frozen=True)
class InceptionSpec:
    """Branch widths: 1x1; 1x1 reduce -> 3x3; 1x1 reduce -> 5x5; 3x3 max-pool (stride 1) -> 1x1."""

    c1: int
    c3_reduce: int
    c3: int
    c5_reduce: int
    c5: int
    pool_proj: int

    @property
    def c_out(self) -> int:
        return self.c1 + self.c3 + self.c5 + self.pool_proj


# "pool" marks a 3x3 stride-2 max-pool (32 -> 16 -> 8) between inception blocks.
GOOGLENET_LAYOUT: tuple[InceptionSpec | str, ...] = (
    InceptionSpec(16, 32, 32, 16, 8, 8),  # 64 -> 64
    InceptionSpec(24, 32, 48, 16, 12, 12),  # 64 -> 96
    "pool",
    InceptionSpec(24, 32, 48, 16, 12, 12),  # 96 -> 96
    InceptionSpec(16, 32, 48, 16, 16, 16),  # 96 -> 96
    InceptionSpec(16, 32, 48, 16, 16, 16),  # 96 -> 96
    InceptionSpec(32, 32, 48, 16, 24, 24),  # 96 -> 128
    "pool",
    InceptionSpec(32, 48, 64, 16, 16, 16),  # 128 -> 128
    InceptionSpec(32, 48, 64, 16, 16, 16),  # 128 -> 128
)


@dataclass
class GoogleNetConfig:
    stem_channels: int = 64
    layout: tuple[InceptionSpec | str, ...] = GOOGLENET_LAYOUT


class Inception(nn.Module):
    """Four parallel branches concatenated on channels: (B, c_in, H, W) -> (B, spec.c_out, H, W)."""

    def __init__(self, c_in: int, spec: InceptionSpec):
        super().__init__()
        self.branch1 = conv_bn_relu(c_in, spec.c1, 1)
        self.branch3 = nn.Sequential(
            conv_bn_relu(c_in, spec.c3_reduce, 1), conv_bn_relu(spec.c3_reduce, spec.c3, 3)
        )
        self.branch5 = nn.Sequential(
            conv_bn_relu(c_in, spec.c5_reduce, 1), conv_bn_relu(spec.c5_reduce, spec.c5, 5)
        )
        self.branch_pool = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1), conv_bn_relu(c_in, spec.pool_proj, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (self.branch1, self.branch3, self.branch5, self.branch_pool)
        return torch.cat([branch(x) for branch in branches], dim=1)


class GoogleNet(CNN):
    """Small CIFAR GoogleNet (260,650 parameters): (B, 3, 32, 32) -> logits (B, num_classes)."""

    def __init__(self, num_classes: int = 10, config: GoogleNetConfig | None = None):
        super().__init__()
        config = config or GoogleNetConfig()
        c = config.stem_channels
        self.stem = conv_bn_relu(3, c, 3)
        blocks: list[nn.Module] = []
        for spec in config.layout:
            if spec == "pool":
                blocks.append(nn.MaxPool2d(3, stride=2, padding=1))
            else:
                blocks.append(Inception(c, spec))
                c = spec.c_out
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(c, num_classes)
        self._init_weights()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


# -----------------------------------------------------------------------------
# ResNet and pre-activation ResNet


@dataclass
class ResNetConfig:
    channels: tuple[int, ...] = (16, 32, 64)  # one stage per entry; stages after the first halve H and W
    blocks_per_stage: int = 3


class BasicBlock(nn.Module):
    """ReLU(BN(conv(ReLU(BN(conv(x))))) + shortcut(x)): (B, c_in, H, W) -> (B, c_out, H/s, W/s)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.net = nn.Sequential(
            conv_bn_relu(c_in, c_out, 3, stride=stride, bias=False),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        # downsampling shortcut: 1x1 stride-2 convolution, with a bias (part of the 272,378 count)
        self.shortcut = (
            nn.Conv2d(c_in, c_out, 1, stride=stride) if stride != 1 or c_in != c_out else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.net(x) + self.shortcut(x))


class PreActBlock(nn.Module):
    """Pre-activation block: conv(ReLU(BN(conv(ReLU(BN(x)))))) + shortcut(x), no ReLU after the sum."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.net = nn.Sequential(bn_relu_conv(c_in, c_out, 3, stride=stride), bn_relu_conv(c_out, c_out, 3))
        # downsampling shortcut: its own BN + ReLU + 1x1 stride-2 convolution (no bias)
        self.shortcut = (
            bn_relu_conv(c_in, c_out, 1, stride=stride) if stride != 1 or c_in != c_out else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) + self.shortcut(x)


class ResNet(CNN):
    """Small CIFAR ResNet-20 style network (272,378 parameters): (B, 3, 32, 32) -> logits (B, num_classes)."""

    block = BasicBlock

    def __init__(self, num_classes: int = 10, config: ResNetConfig | None = None):
        super().__init__()
        config = config or ResNetConfig()
        self.stem = self.make_stem(config.channels[0])
        blocks: list[nn.Module] = []
        c_in = config.channels[0]
        for i, c_out in enumerate(config.channels):
            for j in range(config.blocks_per_stage):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(self.block(c_in, c_out, stride))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(c_in, num_classes)
        self._init_weights()

    def make_stem(self, c: int) -> nn.Module:
        return conv_bn_relu(3, c, 3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


class ResNetPreAct(ResNet):
    """Pre-activation ResNet (272,250 parameters): (B, 3, 32, 32) -> logits (B, num_classes).

    The stem is the bare Conv3x3(3 -> 16, no bias): each block normalises its own input. The output of the
    last block (a plain sum) goes straight to the pooling + Linear head: no final BN + ReLU. That is what the
    exact count 272,250 implies; a final BN(64) would add 128 parameters (272,378).
    """

    block = PreActBlock

    def make_stem(self, c: int) -> nn.Module:
        return nn.Conv2d(3, c, 3, padding=1, bias=False)


# -----------------------------------------------------------------------------
# DenseNet


@dataclass
class DenseNetConfig:
    growth_rate: int = 16
    bn_size: int = 2  # bottleneck width = bn_size * growth_rate
    layers_per_block: tuple[int, ...] = (6, 6, 6, 6)


class DenseLayer(nn.Module):
    """BN-ReLU-Conv1x1 bottleneck, BN-ReLU-Conv3x3, concatenated: (B, c, H, W) -> (B, c + growth, H, W)."""

    def __init__(self, c_in: int, bn_size: int, growth_rate: int):
        super().__init__()
        self.net = nn.Sequential(
            bn_relu_conv(c_in, bn_size * growth_rate, 1), bn_relu_conv(bn_size * growth_rate, growth_rate, 3)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.net(x)], dim=1)


class Transition(nn.Module):
    """BN-ReLU-Conv1x1 then 2x2 average pooling: (B, c, H, W) -> (B, c // 2, H/2, W/2)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.net = nn.Sequential(bn_relu_conv(c_in, c_out, 1), nn.AvgPool2d(2, stride=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class DenseNet(CNN):
    """Small CIFAR DenseNet (239,146 parameters): (B, 3, 32, 32) -> logits (B, num_classes)."""

    def __init__(self, num_classes: int = 10, config: DenseNetConfig | None = None):
        super().__init__()
        config = config or DenseNetConfig()
        c = config.bn_size * config.growth_rate  # 32 stem channels
        self.stem = nn.Conv2d(3, c, 3, padding=1)  # with bias, no BN: the first dense layer normalises
        blocks: list[nn.Module] = []
        for i, n_layers in enumerate(config.layers_per_block):
            for _ in range(n_layers):
                blocks.append(DenseLayer(c, config.bn_size, config.growth_rate))
                c += config.growth_rate
            if i < len(config.layers_per_block) - 1:
                blocks.append(Transition(c, c // 2))
                c //= 2
        self.blocks = nn.Sequential(*blocks)
        self.norm = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=True))
        self.fc = nn.Linear(c, num_classes)
        self._init_weights()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.blocks(self.stem(x))))


# -----------------------------------------------------------------------------
# registry

CNN_MODELS: dict[str, type[CNN]] = {
    "googlenet": GoogleNet,
    "resnet": ResNet,
    "resnetpreact": ResNetPreAct,
    "densenet": DenseNet,
}


def build_cnn(name: str, num_classes: int = 10) -> nn.Module:
    """Build a CNN baseline by name (one of CNN_MODELS)."""
    if name not in CNN_MODELS:
        raise ValueError(f"unknown CNN {name!r}; valid choices: {', '.join(sorted(CNN_MODELS))}")
    return CNN_MODELS[name](num_classes=num_classes)


@dataclass(frozen=True)
class CNNConfig:
    """A CNN baseline of an experiment: which network (a name of ``CNN_MODELS``); no other hyperparameter."""

    architecture: str = field(metadata={"choices": tuple(CNN_MODELS)})


def cnn_from_config(config: CNNConfig, **_run_options) -> CNN:
    """The experiment's CNN (10 classes); the run options of other models (``attention``) do not apply."""
    return build_cnn(config.architecture)
