"""The CIFAR-10 ResNets of He et al. (2016, section 4.2), a second content judge that nobody in this project
trained: ResNet-20 (n = 3, 0.27 M parameters) and ResNet-56 (n = 9, 0.86 M), read from safetensors.

Architecture: a 3x3 convolution to 16 channels, three stages of n basic blocks with 16 / 32 / 64 channels
(the first block of stages 2 and 3 with stride 2), batch norm after every convolution, global average
pooling and a linear layer 64 -> 10; depth 6n + 2. A basic block is conv3x3-BN-ReLU-conv3x3-BN plus the
shortcut, then ReLU. Where a block halves the resolution and doubles the channels its shortcut is "option
A": the input subsampled by 2 (every other row and column) with the new channels zero-padded, half before
and half after the old ones (no parameters).

Inputs of :class:`CifarResNet` are [0, 1] images ``[N, 3, 32, 32]``; it normalises them itself with the
mean (0.485, 0.456, 0.406) and standard deviation (0.229, 0.224, 0.225) of its training recipe.
:func:`cifar_resnet_judge` wraps a network as a :class:`~bibad_utils.judges.models.Classifier` (the
project's judge interface: float [-1, 1] NCHW or uint8 NHWC images, resized to 32 px when they differ),
so that :func:`~bibad_utils.judges.inference.predict`, ``features`` and ``evaluate_judge`` take it as
they take the trained judges. Such a judge is loaded again with :func:`load_cifar_resnet`, not with
``load_classifier``.

Weights: keys as in the public checkpoints (a ``module.`` prefix, stripped on load; no
``num_batches_tracked`` counters, which are filled with zeros); everything else must match exactly.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from bibad_utils.base import ConfigError
from bibad_utils.judges.models import Classifier

CIFAR_MEAN = (0.485, 0.456, 0.406)
CIFAR_STD = (0.229, 0.224, 0.225)
CIFAR10_CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CHECKPOINT_PREFIX = "module."
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
        self.register_buffer("mean", torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CIFAR_STD).view(1, 3, 1, 1), persistent=False)

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


def parameter_count(model: nn.Module) -> int:
    """Number of trainable parameters (ResNet-20: 269,722; ResNet-56: 853,018)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _blocks(keys, stage: int) -> int:
    pattern = re.compile(rf"^layer{stage}\.(\d+)\.")
    found = {int(m.group(1)) for k in keys if (m := pattern.match(k))}
    return max(found) + 1 if found else 0


def load_cifar_resnet(path, depth: int | None = None, device="cpu") -> CifarResNet:
    """A :class:`CifarResNet` with the weights of the safetensors file ``path``, in eval mode on ``device``.

    The ``module.`` prefix of the keys is stripped; the depth is read from the keys (number of blocks of
    stage 1) and, when ``depth`` is given, must equal it; missing ``num_batches_tracked`` counters are set
    to 0. Any other missing, unexpected or misshapen tensor raises ConfigError naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError("weights", str(path), "a safetensors file of a CIFAR ResNet")
    state = load_file(str(path))
    state = {k.removeprefix(CHECKPOINT_PREFIX): v for k, v in state.items()}
    n = _blocks(state, 1)
    if n == 0 or any(_blocks(state, s) != n for s in (2, 3)) or "linear.weight" not in state:
        raise ConfigError("weights", str(path), "a CIFAR ResNet state dict (layer1..layer3 of n blocks each, linear)")
    found = 6 * n + 2
    if depth is not None and check_depth(depth) != found:
        raise ConfigError("depth", depth, f"{found}, the depth of the weights in {path.name}")
    model = CifarResNet(found, num_classes=state["linear.weight"].shape[0])
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(value)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ConfigError("weights", str(path), f"the tensors of a ResNet-{found} ({err})") from None
    return model.to(device).eval()


def cifar_resnet_judge(model, device="cpu", class_names=CIFAR10_CLASS_NAMES) -> Classifier:
    """A :class:`~bibad_utils.judges.models.Classifier` (the project's judge interface) sharing the weights
    of ``model`` (a :class:`CifarResNet`, or the path of its safetensors file): [-1, 1] images are
    resized to 32 px when they differ, mapped to [0, 1] and normalised as the network was trained.
    ``config["arch"]`` is ``"cifar_resnet<depth>"``; in eval mode on ``device``."""
    net = model if isinstance(model, CifarResNet) else load_cifar_resnet(model, device=device)
    k = net.linear.out_features
    names = list(class_names) if class_names is not None and len(class_names) == k else None
    config = dict(arch=f"cifar_resnet{net.depth}", num_classes=k, image_size=32, input_size=32,
                  kind="classifier", class_names=names)
    judge = Classifier(Trunk(net), WIDTHS[-1], config)
    judge.head = net.linear
    judge.mean.copy_(net.mean.view(1, 3, 1, 1))
    judge.std.copy_(net.std.view(1, 3, 1, 1))
    judge.meta = {"weights": None if isinstance(model, CifarResNet) else str(model), "depth": net.depth}
    return judge.to(device).eval()
