"""The CIFAR-10 ResNets of He et al. (2016, section 4.2) with public weights, a second content judge that
nobody in this project trained: ResNet-20 (0.27 M parameters) and ResNet-56 (0.86 M), read from safetensors
(the architecture: :mod:`bibad_utils.judges.cifar_arch`).

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
from safetensors.torch import load_file

from bibad_utils.base import ConfigError
from bibad_utils.judges.cifar_arch import WIDTHS, CifarResNet, Trunk, check_depth
from bibad_utils.judges.models import Classifier

CIFAR10_CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CHECKPOINT_PREFIX = "module."


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
    judge.meta = {"weights": None if isinstance(model, CifarResNet) else str(model), "depth": net.depth}
    return judge.to(device).eval()
