"""Judge networks: :class:`Classifier` (images in [-1, 1] -> logits), its architectures, and saving /
loading with safetensors.

A Classifier resizes inputs to its ``input_size`` when they differ, normalises them with the ImageNet
mean and standard deviation, and returns logits ``[N, num_classes]``. A trigger detector is a two-class
classifier whose class 1 means "trigger present".
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from bibad_utils.base import ConfigError
from bibad_utils.judges.cifar_arch import IMAGENET_MEAN, IMAGENET_STD, WIDTHS, CifarResNet, Trunk

ARCHS = ("small_cnn", "resnet18", "resnet50", "resnet20", "resnet56")
FIELD_ARCH = "warp_field"  # a warp trigger's field detector (bibad_utils.judges.warp_detector), never a content judge
CIFAR_ARCHS = ("resnet20", "resnet56")  # He et al.'s CIFAR ResNets (bibad_utils.judges.cifar_arch), trained here
KINDS = ("classifier", "trigger_detector")
# torchvision's ImageNet weights of each ResNet (enum names). torchvision is imported where a ResNet is
# built: importing it costs about 2.5 s per process (it loads torch._dynamo), which every notebook and
# worker process would otherwise pay for a small CNN.
_PRETRAINED_WEIGHTS = {"resnet18": ("ResNet18_Weights", "IMAGENET1K_V1"), "resnet50": ("ResNet50_Weights", "IMAGENET1K_V2")}

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"

class Classifier(nn.Module):
    """Images in [-1, 1] ``[N, 3, H, W]`` -> logits ``[N, num_classes]``.

    ``backbone`` maps normalised images to penultimate features ``[N, feature_dim]``; ``head`` is
    a linear layer. ``config`` holds what :func:`build_classifier` needs to rebuild the module
    (arch, num_classes, image_size, input_size, kind, class_names); ``meta`` holds training
    information (saved with the weights).
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, config: dict):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(feature_dim, config["num_classes"])
        self.config = dict(config)
        self.meta: dict = {}
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images -> resized to ``input_size`` and ImageNet-normalised."""
        size = self.config["input_size"]
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return ((x + 1) / 2 - self.mean) / self.std

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``[N, feature_dim]`` of [-1, 1] images ``[N, 3, H, W]``."""
        return self.backbone(self.preprocess(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class WarpFieldFeatures(nn.Module):
    """The features of a warp trigger's field detector: at every inner pixel and along each axis, the log
    of the image's energy in its finest band (squared second difference) over its energy one band lower
    (squared difference across two pixels), channels averaged; standardised by the training set's mean and
    spread (buffers ``mu`` and ``sd``, saved with the weights). A bilinear resampling by a fraction f of a
    pixel damps the finest band by about (1 - 2 f)^2 and leaves the lower one nearly whole, so a fixed
    sub-pixel field leaves a fixed spatial pattern in these maps, whatever the image shows; a linear head
    reads that pattern. ``[N, 3, S, S]`` -> ``[N, 2 (S - 2)^2]``."""

    def __init__(self, size: int, eps: float = 5e-4):
        super().__init__()
        self.eps = float(eps)  # in ImageNet-normalised units (about 1e-4 in [-1, 1] units)
        dim = 2 * (int(size) - 2) ** 2
        self.register_buffer("mu", torch.zeros(dim))
        self.register_buffer("sd", torch.ones(dim))

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """The unstandardised log band ratios."""
        mid = x[:, :, 1:-1, 1:-1]
        maps = []
        for fine, coarse in ((x[:, :, 1:-1, 2:] - 2 * mid + x[:, :, 1:-1, :-2], x[:, :, 1:-1, 2:] - x[:, :, 1:-1, :-2]),
                             (x[:, :, 2:, 1:-1] - 2 * mid + x[:, :, :-2, 1:-1], x[:, :, 2:, 1:-1] - x[:, :, :-2, 1:-1])):
            maps.append((torch.log(fine.pow(2).mean(1) + self.eps) - torch.log(coarse.pow(2).mean(1) + self.eps)).flatten(1))
        return torch.cat(maps, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.raw(x) - self.mu) / self.sd


def _small_cnn(width: int = 32) -> tuple[nn.Module, int]:
    def block(c_in, c_out, stride):
        return [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]

    layers = (block(3, width, 1) + block(width, 2 * width, 2) + block(2 * width, 4 * width, 2)
              + block(4 * width, 4 * width, 2))
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten()), 4 * width


def _pretrained_weights(arch: str):
    import torchvision

    enum, name = _PRETRAINED_WEIGHTS[arch]
    weights = getattr(getattr(torchvision.models, enum), name)
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not path.is_file():
        raise ConfigError(
            "judges.pretrained", True,
            f"false, or torchvision's ImageNet weights of {arch} ({weights}) present offline at {path}: "
            f"download {weights.url} to that path (the TORCH_HOME environment variable moves the folder)")
    return weights


def build_classifier(arch: str, num_classes: int, image_size: int, pretrained: bool = False, *,
                     input_size: int | None = None, kind: str = "classifier",
                     class_names: list[str] | None = None) -> Classifier:
    """A classifier of [-1, 1] images ``[N, 3, image_size, image_size]`` into ``num_classes`` classes.

    Args:
        arch: ``"small_cnn"`` (4 conv layers, fast on a CPU), ``"resnet18"`` or ``"resnet50"``
            (torchvision). A ResNet trained from scratch on inputs of at most 64 px gets a CIFAR-style
            stem (3x3 convolution, stride 1, no max-pool). ``"resnet20"`` / ``"resnet56"``: the CIFAR
            ResNets of He et al. (0.27 M / 0.85 M parameters; a real CIFAR victim a CPU can train).
        num_classes: number of output classes (>= 2).
        image_size: side in pixels of the images the classifier is meant for.
        pretrained: start a ResNet from torchvision's ImageNet weights (must be on disk, see the error
            message; the ImageNet stem is kept, so use ``input_size`` >= 128). The head is new.
        input_size: side the network sees; inputs of another size are resized (bilinear, antialiased).
            None: ``image_size``.
        kind: ``"classifier"`` or ``"trigger_detector"`` (recorded in ``config``).
        class_names: optional names of the classes, recorded in ``config``.

    Weights are drawn from torch's global generator: seed it (or use :func:`train_classifier`, which
    does so under a forked RNG state) for reproducible initial weights.
    """
    if arch not in ARCHS and arch != FIELD_ARCH:
        raise ConfigError("judges.arch", arch, f"one of {ARCHS}")
    if kind not in KINDS:
        raise ConfigError("kind", kind, f"one of {KINDS}")
    for name, value in (("num_classes", num_classes), ("image_size", image_size)):
        if isinstance(value, bool) or int(value) != value or value < (2 if name == "num_classes" else 8):
            raise ConfigError(name, value, "an integer >= 2" if name == "num_classes" else "an integer >= 8")
    input_size = int(image_size if input_size is None else input_size)
    if input_size < 8:
        raise ConfigError("judges.input_size", input_size, "null or an integer >= 8")
    if not isinstance(pretrained, bool):
        raise ConfigError("judges.pretrained", pretrained, "true or false")
    if class_names is not None and len(class_names) != num_classes:
        raise ConfigError("class_names", class_names, f"{num_classes} names")
    if arch == FIELD_ARCH:
        if kind != "trigger_detector" or pretrained or input_size != image_size:
            raise ConfigError("arch", arch, "a trigger detector at its images' own size, without ImageNet weights")
        backbone = WarpFieldFeatures(input_size)
        dim = len(backbone.mu)
    elif pretrained and arch not in _PRETRAINED_WEIGHTS:
        raise ConfigError("judges.pretrained", pretrained, f"false for arch {arch} (no ImageNet weights)")
    elif arch == "small_cnn":
        backbone, dim = _small_cnn()
    elif arch in CIFAR_ARCHS:
        backbone, dim = Trunk(CifarResNet(int(arch.removeprefix("resnet")), int(num_classes))), WIDTHS[-1]
    else:
        weights = _pretrained_weights(arch) if pretrained else None
        import torchvision

        backbone = getattr(torchvision.models, arch)(weights=weights)
        if not pretrained and input_size <= 64:
            backbone.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
            backbone.maxpool = nn.Identity()
        dim = backbone.fc.in_features
        backbone.fc = nn.Identity()
    config = dict(arch=arch, num_classes=int(num_classes), image_size=int(image_size), input_size=input_size,
                  kind=kind, class_names=list(class_names) if class_names is not None else None)
    return Classifier(backbone, dim, config)


def save_classifier(model: Classifier, directory, meta: dict | None = None) -> Path:
    """Write ``model.safetensors`` (weights and BatchNorm statistics) and ``config.json``
    (``model.config`` plus ``meta``: ``model.meta`` updated with the given dict; JSON-serialisable)
    into ``directory`` (created). Returns the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE))
    record = dict(model.config, meta={**model.meta, **(meta or {})})
    (directory / CONFIG_FILE).write_text(json.dumps(record, indent=2, default=float))
    return directory


def load_classifier(directory, device="cpu") -> Classifier:
    """Rebuild a classifier written by :func:`save_classifier`, in eval mode on ``device``."""
    directory = Path(directory)
    if not (directory / CONFIG_FILE).is_file() or not (directory / WEIGHTS_FILE).is_file():
        raise ConfigError("directory", str(directory), f"a folder with {CONFIG_FILE} and {WEIGHTS_FILE}")
    record = json.loads((directory / CONFIG_FILE).read_text())
    meta = record.pop("meta", {})
    model = build_classifier(record["arch"], record["num_classes"], record["image_size"], pretrained=False,
                             input_size=record["input_size"], kind=record["kind"],
                             class_names=record["class_names"])
    model.load_state_dict(load_file(str(directory / WEIGHTS_FILE)))
    model.meta = meta
    return model.to(device).eval()
