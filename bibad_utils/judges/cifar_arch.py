"""The CIFAR ResNets of He et al. (2016, section 4.2) as modules: ResNet-20 (n = 3, 0.27 M parameters), ResNet-56
(n = 9, 0.86 M), any depth 6n + 2.

Architecture: a 3x3 convolution to 16 channels, three stages of n basic blocks with 16 / 32 / 64 channels
(the first block of stages 2 and 3 with stride 2), batch norm after every convolution, global average
pooling and a linear layer 64 -> 10; depth 6n + 2. A basic block is conv3x3-BN-ReLU-conv3x3-BN plus the
shortcut, then ReLU. Where a block halves the resolution and doubles the channels its shortcut is "option
A": the input subsampled by 2 (every other row and column) with the new channels zero-padded, half before
and half after the old ones (no parameters).

Inputs of :class:`CifarResNet` are [0, 1] images ``[N, 3, 32, 32]``; it normalises them itself with the
mean (0.485, 0.456, 0.406) and standard deviation (0.229, 0.224, 0.225) of its training recipe. Loading the
public weights: :mod:`bibad_utils.judges.cifar_resnet`; training one here: ``arch: resnet20`` of
:func:`bibad_utils.judges.models.build_classifier`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bibad_utils.base import ConfigError

# ImageNet's mean and standard deviation: the CIFAR ResNets' recipe normalises with them, as every judge does
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WIDTHS = (16, 32, 64)


def check_depth(depth) -> int:
    """``depth`` as an int when it is 6n + 2 for some n >= 1 (20, 32, 44, 56, 110, ...); else ConfigError."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ConfigError("depth", depth, "6n + 2 for an integer n >= 1 (20: ResNet-20, 56: ResNet-56)")
    return depth


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus the identity shortcut (option A when the shape changes), ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.stride, self.pad = stride, (c_out - c_in) // 2
        if c_out - c_in != 2 * self.pad:
            raise ConfigError("channels", (c_in, c_out), "an even increase (option-A shortcut pads both sides)")

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad, self.pad)) if self.pad else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def trunk_features(m: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """Normalised images ``[N, 3, H, W]`` -> pooled features ``[N, 64]`` through the stem (``m.conv1``,
    ``m.bn1``) and the three stages (``m.layer1`` .. ``m.layer3``) of ``m``."""
    out = F.relu(m.bn1(m.conv1(z)))
    out = m.layer3(m.layer2(m.layer1(out)))
    return F.adaptive_avg_pool2d(out, 1).flatten(1)


class CifarResNet(nn.Module):
    """CIFAR ResNet of depth ``6 n + 2``: [0, 1] images ``[N, 3, H, W]`` (32 x 32 as trained) -> logits
    ``[N, num_classes]``. Its state dict has the checkpoint's keys without their prefix (``conv1``,
    ``bn1``, ``layer1.0.conv1``, ..., ``linear``); the normalisation constants are buffers left out of it."""

    def __init__(self, depth: int = 20, num_classes: int = 10):
        super().__init__()
        self.depth = check_depth(depth)
        self.n = (self.depth - 2) // 6
        self.conv1 = nn.Conv2d(3, WIDTHS[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(WIDTHS[0])
        c_in = WIDTHS[0]
        for stage, width in enumerate(WIDTHS):
            blocks = []
            for i in range(self.n):
                blocks.append(BasicBlock(c_in, width, 2 if stage and i == 0 else 1))
                c_in = width
            setattr(self, f"layer{stage + 1}", nn.Sequential(*blocks))
        self.linear = nn.Linear(WIDTHS[-1], num_classes)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] images -> normalised with the recipe's mean and standard deviation."""
        return (x - self.mean) / self.std

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``[N, 64]`` of [0, 1] images."""
        return trunk_features(self, self.normalize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.features(x))


class Trunk(nn.Module):
    """The stem and stages of a :class:`CifarResNet` (the same modules, weights shared) as a judge's
    backbone: normalised images -> features ``[N, 64]``."""

    def __init__(self, net: CifarResNet):
        super().__init__()
        self.conv1, self.bn1 = net.conv1, net.bn1
        self.layer1, self.layer2, self.layer3 = net.layer1, net.layer2, net.layer3

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return trunk_features(self, z)
