"""Judges of generated images: a clean classifier and a binary trigger detector, trained on REAL data.

The clean classifier decides whether a generation shows the prompt's class (``M`` in G1-G4); the
trigger detector decides whether it carries the trigger (``T``). The same training code also serves
the castle-walls defense "train on generations" (uint8 generations + their prompt labels) and the
ResNet-18 baseline trained on poisoned data.

Every model here is a :class:`Classifier`: it takes float32 images in [-1, 1], NCHW, resizes them to
its ``input_size`` when they differ, normalises them with the ImageNet mean and standard deviation,
and returns logits ``[N, num_classes]``. A trigger detector is a two-class classifier whose class 1
means "trigger present".

Augmentation is a random translation (crop of a replicate-padded image) by at most
``image_size // 32`` pixels, and no horizontal flip by default: a flip would move a bottom-right
BadNets patch into the bottom-left corner, so the detector would learn a trigger that is not the
one of the attack, and a shift larger than the patch (side ``image_size // 10``) would cut it off.

Training is deterministic given ``seed`` on the CPU (weights, shuffling and augmentation draw from
seeded generators); on a GPU cuDNN kernels may add run-to-run noise.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from bibad_utils import metrics
from bibad_utils.config import ConfigError
from bibad_utils.data import to_float

ARCHS = ("small_cnn", "resnet18", "resnet50")
KINDS = ("classifier", "trigger_detector")
OPTIMIZERS = ("adamw", "sgd")
# Photometric augmentation of the judges (maximum strengths; 0 = off), so that judges trained on
# real images transfer to a diffusion model's generations (grain, colour cast, softness).
PHOTOMETRIC_KEYS = ("color_jitter", "blur", "noise")

# Used when ``weight_decay`` is None; decoupled (AdamW) and L2 (SGD) decay live on different scales.
_DEFAULT_WEIGHT_DECAY = {"adamw": 0.01, "sgd": 5e-4}
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_PRETRAINED_WEIGHTS = {
    "resnet18": torchvision.models.ResNet18_Weights.IMAGENET1K_V1,
    "resnet50": torchvision.models.ResNet50_Weights.IMAGENET1K_V2,
}

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


# ----------------------------------------------------------------------------------------- models

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
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

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


def _small_cnn(width: int = 32) -> tuple[nn.Module, int]:
    def block(c_in, c_out, stride):
        return [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]

    layers = (block(3, width, 1) + block(width, 2 * width, 2) + block(2 * width, 4 * width, 2)
              + block(4 * width, 4 * width, 2))
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten()), 4 * width


def _pretrained_weights(arch: str):
    weights = _PRETRAINED_WEIGHTS[arch]
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
            stem (3x3 convolution, stride 1, no max-pool).
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
    if arch not in ARCHS:
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
    if arch == "small_cnn":
        if pretrained:
            raise ConfigError("judges.pretrained", pretrained, "false for arch small_cnn (no ImageNet weights)")
        backbone, dim = _small_cnn()
    else:
        weights = _pretrained_weights(arch) if pretrained else None
        backbone = getattr(torchvision.models, arch)(weights=weights)
        if not pretrained and input_size <= 64:
            backbone.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
            backbone.maxpool = nn.Identity()
        dim = backbone.fc.in_features
        backbone.fc = nn.Identity()
    config = dict(arch=arch, num_classes=int(num_classes), image_size=int(image_size), input_size=input_size,
                  kind=kind, class_names=list(class_names) if class_names is not None else None)
    return Classifier(backbone, dim, config)


# ------------------------------------------------------------------------------------ image input

class _Images:
    """Uniform read access to a set of images: ``len``, ``get(indices) -> float [-1, 1] NCHW``,
    ``labels`` (int64 numpy or None), ``class_names`` (or None)."""

    def __init__(self, n: int, get: Callable[[np.ndarray], torch.Tensor], labels, class_names=None):
        self.n, self._get, self.labels, self.class_names = n, get, labels, class_names

    def __len__(self) -> int:
        return self.n

    def get(self, indices: np.ndarray) -> torch.Tensor:
        return self._get(np.asarray(indices, dtype=np.int64))

    def subset(self, keep: np.ndarray) -> "_Images":
        keep = np.asarray(keep, dtype=np.int64)
        labels = None if self.labels is None else self.labels[keep]
        return _Images(len(keep), lambda idx: self._get(keep[idx]), labels, self.class_names)


def _as_images(images, labels=None, name: str = "images") -> _Images:
    """Dataset (an object with ``batch(indices)``), uint8 ``[N, H, W, 3]`` array or tensor, or float
    [-1, 1] ``[N, 3, H, W]`` tensor -> :class:`_Images`. ``labels`` overrides a dataset's labels."""
    if isinstance(images, _Images):
        src = images
    elif hasattr(images, "batch"):
        ds = images
        src = _Images(len(ds), lambda idx: ds.batch(idx)[0].float().cpu(),
                      np.asarray(ds.labels, dtype=np.int64), getattr(ds, "class_names", None))
    elif isinstance(images, torch.Tensor) and torch.is_floating_point(images):
        if images.ndim != 4 or images.shape[1] != 3:
            raise ConfigError(f"{name}.shape", tuple(images.shape), "float [N, 3, H, W] in [-1, 1]")
        t = images
        src = _Images(len(t), lambda idx: t[torch.from_numpy(idx)].float().cpu(), None)
    else:
        a = images if isinstance(images, (np.ndarray, torch.Tensor)) else np.asarray(images)
        if a.dtype not in (np.uint8, torch.uint8) or a.ndim != 4 or a.shape[-1] != 3:
            raise ConfigError(name, f"{type(images).__name__} {getattr(a, 'dtype', '')} {tuple(a.shape)}",
                              "a dataset with batch(), uint8 [N, H, W, 3] images, or float [N, 3, H, W] in [-1, 1]")
        src = _Images(len(a), lambda idx: to_float(a[idx]), None)
    if labels is not None:
        y = np.asarray(labels)
        if y.ndim != 1 or len(y) != len(src) or (y.size and not np.issubdtype(y.dtype, np.integer)):
            raise ConfigError("labels", f"{y.dtype} {y.shape}", f"integer class indices [{len(src)}]")
        src = _Images(len(src), src.get, y.astype(np.int64), src.class_names)
    return src


# --------------------------------------------------------------------------------------- training

def _augment(x: torch.Tensor, gen: torch.Generator, crop_pad: int, hflip: bool,
             photometric: dict | None = None) -> torch.Tensor:
    """Random translation by up to ``crop_pad`` px (crop of a replicate-padded image), optional flip,
    then the photometric corruptions of ``photometric`` (see :data:`PHOTOMETRIC_KEYS`), each drawn
    per image with a strength uniform in [0, max]: colour jitter (brightness shift, contrast and
    saturation scaling by up to ``color_jitter``), a blend towards a 3 x 3 binomial blur (weight up to
    ``blur``), additive Gaussian noise (standard deviation up to ``noise``, on the [-1, 1] scale)."""
    n, _, h, w = x.shape
    if crop_pad > 0:
        xp = F.pad(x, (crop_pad,) * 4, mode="replicate")
        oy = torch.randint(0, 2 * crop_pad + 1, (n,), generator=gen)
        ox = torch.randint(0, 2 * crop_pad + 1, (n,), generator=gen)
        rows = (oy[:, None] + torch.arange(h))[:, :, None]
        cols = (ox[:, None] + torch.arange(w))[:, None, :]
        x = xp[torch.arange(n)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)
    if hflip:
        flip = torch.rand(n, generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    p = photometric or {}
    if not any(p.get(k, 0) for k in PHOTOMETRIC_KEYS):
        return x.contiguous()

    def uniform(scale, symmetric=True):
        u = torch.rand(n, 1, 1, 1, generator=gen)
        return (2 * u - 1) * scale if symmetric else u * scale

    jitter, blur, noise = (float(p.get(k, 0)) for k in PHOTOMETRIC_KEYS)
    if jitter > 0:
        mean = x.mean((1, 2, 3), keepdim=True)
        x = (x - mean) * (1 + uniform(jitter)) + mean + uniform(jitter)
        gray = x.mean(1, keepdim=True)
        x = gray + (x - gray) * (1 + uniform(jitter))
    if blur > 0:
        k = torch.tensor([1.0, 2.0, 1.0])
        kernel = (k[:, None] * k[None, :] / 16).expand(x.shape[1], 1, 3, 3)
        smooth = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=x.shape[1])
        a = uniform(blur, symmetric=False)
        x = x * (1 - a) + smooth * a
    if noise > 0:
        x = x + uniform(noise, symmetric=False) * torch.randn(x.shape, generator=gen)
    return x.clamp(-1, 1).contiguous()


def _check_hparams(epochs, batch_size, lr, optimizer, weight_decay, crop_pad) -> None:
    for name, value, low in (("judges.epochs", epochs, 1), ("judges.batch_size", batch_size, 2)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ConfigError(name, value, f"an integer >= {low}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < 10:
        raise ConfigError("judges.lr", lr, "a learning rate in (0, 10)")
    if optimizer not in OPTIMIZERS:
        raise ConfigError("judges.optimizer", optimizer, f"one of {OPTIMIZERS}")
    if weight_decay is not None and (isinstance(weight_decay, bool) or not weight_decay >= 0):
        raise ConfigError("judges.weight_decay", weight_decay, "null or a number >= 0")
    if crop_pad is not None and (isinstance(crop_pad, bool) or int(crop_pad) != crop_pad or crop_pad < 0):
        raise ConfigError("judges.crop_pad", crop_pad, "null or an integer >= 0")


def _check_photometric(prefix: str = "judges", **values) -> dict:
    """Photometric strengths (keys of :data:`PHOTOMETRIC_KEYS`) -> floats; a bad one raises a
    ConfigError named ``<prefix>.<key>``."""
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ConfigError(f"{prefix}.{key}", value, "a maximum strength in [0, 1] (0: off)")
    return {k: float(v) for k, v in values.items()}


def _fit(model: Classifier, n: int, get_batch: Callable[[np.ndarray], tuple[torch.Tensor, torch.Tensor]], *,
         epochs: int, batch_size: int, lr: float, optimizer: str, weight_decay: float | None, seed: int,
         device, augment: bool, crop_pad: int | None, hflip: bool, progress: bool, desc: str,
         photometric: dict | None = None) -> list[dict]:
    device = torch.device(device)
    model.to(device).train()
    gen = torch.Generator().manual_seed(seed)
    wd = _DEFAULT_WEIGHT_DECAY[optimizer] if weight_decay is None else float(weight_decay)
    if optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=wd)
    # BatchNorm cannot train on a batch of one image: such a trailing batch is skipped.
    starts = [s for s in range(0, n, batch_size) if min(batch_size, n - s) >= 2]
    total = epochs * len(starts)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 * (1 + math.cos(math.pi * step / total)))
    pad = model.config["image_size"] // 32 if crop_pad is None else int(crop_pad)
    history = []
    bar = tqdm(total=total, desc=desc, disable=not progress, leave=False)
    for epoch in range(epochs):
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=gen).numpy()
        loss_sum, correct, seen = 0.0, 0, 0
        for s in starts:
            x, y = get_batch(perm[s:s + batch_size])
            if augment:
                x = _augment(x, gen, pad, hflip, photometric)
            x, y = x.to(device), y.to(device)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            bar.update(1)
        history.append(dict(epoch=epoch + 1, loss=loss_sum / seen, train_accuracy=correct / seen,
                            lr=sched.get_last_lr()[0], seconds=time.perf_counter() - t0))
        bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
    bar.close()
    _precise_batchnorm(model, n, get_batch, batch_size, gen, device)
    model.eval()
    return history


@torch.no_grad()
def _precise_batchnorm(model: nn.Module, n: int, get_batch, batch_size: int, gen: torch.Generator, device,
                       max_images: int = 4096) -> None:
    """Replace the BatchNorm running statistics by exact averages over up to ``max_images`` unaugmented
    training images under the final weights ("precise BN", Wu & Johnson 2021). After a short training
    the exponential running averages still mix in statistics of early weights, and eval-mode accuracy
    falls far below train-mode accuracy."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the batches below
    model.train()
    idx = torch.randperm(n, generator=gen).numpy()[:max_images]
    for s in range(0, len(idx), batch_size):
        chunk = idx[s:s + batch_size]
        if len(chunk) >= 2:
            model(get_batch(chunk)[0].to(device))
    for bn, momentum in zip(bns, momenta):
        bn.momentum = momentum


def _build_seeded(seed: int, **kwargs) -> Classifier:
    # Forking keeps the caller's global RNG state untouched while making the initial weights a
    # function of the seed.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_classifier(**kwargs)


def train_classifier(images_or_dataset, labels=None, *, arch: str, epochs: int, batch_size: int, lr: float,
                     seed: int, device="cpu", num_classes: int | None = None, pretrained: bool = False,
                     input_size: int | None = None, optimizer: str = "adamw", weight_decay: float | None = None,
                     augment: bool = True, crop_pad: int | None = None, hflip: bool = False,
                     color_jitter: float = 0.0, blur: float = 0.0, noise: float = 0.0,
                     progress: bool = True) -> tuple[Classifier, list[dict]]:
    """Train a classifier on real images (or, for the defense, on generated ones).

    Args:
        images_or_dataset: a dataset (``labels``, ``class_names``, ``batch(indices)``), or uint8
            images ``[N, H, W, 3]`` (numpy or tensor), or float [-1, 1] images ``[N, 3, H, W]``.
        labels: int ``[N]`` class indices; required for arrays, overrides a dataset's labels.
        arch, pretrained, input_size: see :func:`build_classifier`.
        epochs, batch_size, lr: schedule; the learning rate follows a cosine from ``lr`` to 0.
        seed: seeds the initial weights, the shuffling and the augmentation.
        device: where the model trains (data are read on the CPU and moved batch by batch).
        num_classes: None: ``len(class_names)`` of a dataset, else ``max(labels) + 1``.
        optimizer: ``"adamw"`` or ``"sgd"`` (momentum 0.9, Nesterov).
        weight_decay: None: 0.01 for AdamW, 5e-4 for SGD.
        augment: random translation by up to ``crop_pad`` pixels (None: ``image_size // 32``).
        hflip: add random horizontal flips (off by default: a flip moves a corner trigger).
        color_jitter, blur, noise: maximum strengths of the photometric augmentation (0: off; see
            :func:`_augment`); they make a judge trained on real images robust to generation artifacts.
        progress: show a tqdm bar.

    Returns:
        ``(model, history)``: the model in eval mode on ``device``, and one dict per epoch with
        ``epoch``, ``loss`` (mean cross-entropy), ``train_accuracy`` (on augmented batches, in
        [0, 1]), ``lr`` (at the epoch's end) and ``seconds``. ``model.meta`` records the settings.
    """
    _check_hparams(epochs, batch_size, lr, optimizer, weight_decay, crop_pad)
    photometric = _check_photometric(color_jitter=color_jitter, blur=blur, noise=noise)
    src = _as_images(images_or_dataset, labels, "images_or_dataset")
    if src.labels is None:
        raise ConfigError("labels", None, "int class indices [N] (required for image arrays)")
    if len(src) < 2:
        raise ConfigError("len(images_or_dataset)", len(src), "at least 2 images")
    if num_classes is None:
        num_classes = len(src.class_names) if src.class_names is not None else int(src.labels.max()) + 1
    if src.labels.min() < 0 or src.labels.max() >= num_classes:
        raise ConfigError("labels", [int(src.labels.min()), int(src.labels.max())],
                          f"class indices in [0, {num_classes})")
    image_size = int(src.get(np.array([0])).shape[-1])
    class_names = src.class_names if src.class_names is not None and len(src.class_names) == num_classes else None
    model = _build_seeded(seed, arch=arch, num_classes=num_classes, image_size=image_size,
                          pretrained=pretrained, input_size=input_size, class_names=class_names)
    y_all = torch.from_numpy(src.labels)
    history = _fit(model, len(src), lambda idx: (src.get(idx), y_all[torch.from_numpy(idx)]),
                   epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, weight_decay=weight_decay,
                   seed=seed, device=device, augment=augment, crop_pad=crop_pad, hflip=hflip,
                   progress=progress, desc=f"classifier {arch}", photometric=photometric)
    model.meta = dict(trained_on=len(src), epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                      optimizer=optimizer, weight_decay=weight_decay, augment=augment, crop_pad=crop_pad,
                      hflip=hflip, pretrained=pretrained, history=history, **photometric)
    return model, history


def _nontarget(src: _Images, exclude_class: int | None) -> _Images:
    if exclude_class is None:
        return src
    if src.labels is None:
        raise ConfigError("labels", None, "class indices, needed to leave out exclude_class")
    return src.subset(np.flatnonzero(src.labels != exclude_class))


def train_trigger_detector(clean_images, trigger, *, labels=None, exclude_class: int | None = None, arch: str,
                           epochs: int, batch_size: int, lr: float, seed: int, device="cpu",
                           pretrained: bool = False, input_size: int | None = None, optimizer: str = "adamw",
                           weight_decay: float | None = None, augment: bool = True,
                           crop_pad: int | None = None, hflip: bool = False, color_jitter: float = 0.0,
                           blur: float = 0.0, noise: float = 0.0, progress: bool = True) -> Classifier:
    """Train a binary trigger detector (class 1 = trigger present) for one trigger.

    The training set is balanced: every clean image appears once as it is (class 0) and once with
    ``trigger.apply`` (class 1) in each epoch; the trigger is applied to each batch as it is read, so a
    random trigger would be drawn afresh every epoch.

    Args:
        clean_images: clean real images (dataset, uint8 ``[N, H, W, 3]``, or float [-1, 1] NCHW).
        trigger: an object with ``apply(x)`` on float [-1, 1] ``[N, 3, H, W]`` images.
        labels: class indices of ``clean_images`` (a dataset brings its own).
        exclude_class: leave out images of this class (the target class: the detector is trained on
            non-target images, like the poisoned ones); None keeps all.
        Other arguments: as in :func:`train_classifier`.

    Returns:
        the detector in eval mode on ``device``; ``model.meta["history"]`` holds the per-epoch history.
    """
    _check_hparams(epochs, batch_size, lr, optimizer, weight_decay, crop_pad)
    photometric = _check_photometric(color_jitter=color_jitter, blur=blur, noise=noise)
    if not callable(getattr(trigger, "apply", None)):
        raise ConfigError("trigger", type(trigger).__name__, "an object with apply(x) on [-1, 1] NCHW images")
    src = _nontarget(_as_images(clean_images, labels, "clean_images"), exclude_class)
    n = len(src)
    if n < 1:
        raise ConfigError("len(clean_images)", n, "at least 1 image outside exclude_class")
    image_size = int(src.get(np.array([0])).shape[-1])
    model = _build_seeded(seed, arch=arch, num_classes=2, image_size=image_size, pretrained=pretrained,
                          input_size=input_size, kind="trigger_detector", class_names=["clean", "trigger"])

    def get_batch(idx: np.ndarray):
        triggered = idx >= n
        x = src.get(idx % n)
        if triggered.any():
            mask = torch.from_numpy(triggered)
            x[mask] = trigger.apply(x[mask])
        return x, torch.from_numpy(triggered.astype(np.int64))

    history = _fit(model, 2 * n, get_batch, epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
                   weight_decay=weight_decay, seed=seed, device=device, augment=augment, crop_pad=crop_pad,
                   hflip=hflip, progress=progress, desc=f"trigger detector {arch}", photometric=photometric)
    model.meta = dict(trained_on=n, exclude_class=exclude_class, epochs=epochs, batch_size=batch_size, lr=lr,
                      seed=seed, optimizer=optimizer, weight_decay=weight_decay, augment=augment,
                      crop_pad=crop_pad, hflip=hflip, pretrained=pretrained, history=history, **photometric)
    return model


# -------------------------------------------------------------------------------------- inference

@torch.inference_mode()
def _run(model: Classifier, images, batch_size: int, device, fn) -> list[torch.Tensor]:
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ConfigError("batch_size", batch_size, "an integer >= 1")
    src = _as_images(images)
    model.to(device).eval()
    return [fn(src.get(np.arange(s, min(s + batch_size, len(src)))).to(device)).float().cpu()
            for s in range(0, len(src), batch_size)]


def predict(model: Classifier, images, batch_size: int = 256, device="cpu") -> tuple[np.ndarray, np.ndarray]:
    """Class predictions and probabilities.

    Args:
        model: a :class:`Classifier` (moved to ``device``, set to eval mode).
        images: uint8 ``[N, H, W, 3]`` (numpy or tensor), float [-1, 1] ``[N, 3, H, W]``, or a dataset.

    Returns:
        ``(pred, probs)``: int64 ``[N]`` argmax classes, float32 ``[N, num_classes]`` softmax
        probabilities (for a trigger detector ``probs[:, 1]`` is P(trigger)).
    """
    out = _run(model, images, batch_size, device, lambda x: model(x).softmax(1))
    k = model.config["num_classes"]
    probs = torch.cat(out).numpy() if out else np.zeros((0, k), np.float32)
    return probs.argmax(1).astype(np.int64), probs.astype(np.float32)


def features(model: Classifier, images, batch_size: int = 256, device="cpu") -> np.ndarray:
    """Penultimate features, float32 ``[N, feature_dim]`` (512 for resnet18, 2048 for resnet50, 128 for
    small_cnn), of images given as in :func:`predict`. Used by the Frechet distance (FD-clf) and FCT."""
    out = _run(model, images, batch_size, device, model.features)
    return torch.cat(out).numpy() if out else np.zeros((0, model.head.in_features), np.float32)


def evaluate_judge(model: Classifier, images, labels=None, *, trigger=None, exclude_class: int | None = None,
                   batch_size: int = 256, device="cpu", z: float = 1.96) -> dict:
    """Held-out error rates of a judge, with counts and Wilson intervals (``z``: 1.96 = 95 %).

    Classifier (``model.config["kind"] == "classifier"``): ``images`` with ``labels`` (or a dataset);
    returns ``kind, n, n_correct, accuracy, accuracy_lo, accuracy_hi, per_class_accuracy`` (list, nan
    for absent classes).

    Trigger detector: ``images`` are clean held-out images (``exclude_class`` leaves out the target
    class, which needs labels) and ``trigger`` is applied to a copy of each; returns ``kind, n_clean,
    n_triggered, false_positives`` (clean flagged), ``false_negatives`` (triggered missed), ``fpr``,
    ``fnr``, ``accuracy`` (over both halves), each rate with ``_lo``/``_hi`` bounds.
    All rates are fractions in [0, 1].
    """
    kind = model.config["kind"]
    src = _as_images(images, labels)
    if kind == "classifier":
        if src.labels is None:
            raise ConfigError("labels", None, "class indices of the held-out images")
        pred, _ = predict(model, src, batch_size, device)
        n, n_correct = len(pred), int((pred == src.labels).sum())
        lo, hi = metrics.wilson_interval(n_correct, n, z)
        return dict(kind=kind, n=n, n_correct=n_correct, accuracy=n_correct / n if n else math.nan,
                    accuracy_lo=lo, accuracy_hi=hi,
                    per_class_accuracy=metrics.per_class_accuracy(pred, src.labels,
                                                                  model.config["num_classes"]).tolist())
    if trigger is None:
        raise ConfigError("trigger", None, "the trigger the detector was trained for")
    src = _nontarget(src, exclude_class)
    triggered = _Images(len(src), lambda idx: trigger.apply(src.get(idx)), None)
    pred_clean, _ = predict(model, src, batch_size, device)
    pred_trig, _ = predict(model, triggered, batch_size, device)
    n = len(src)
    fp, fn = int(pred_clean.sum()), int((pred_trig == 0).sum())
    out = dict(kind=kind, n_clean=n, n_triggered=n, false_positives=fp, false_negatives=fn)
    for name, k, m in (("fpr", fp, n), ("fnr", fn, n), ("accuracy", 2 * n - fp - fn, 2 * n)):
        out[name] = k / m if m else math.nan
        out[f"{name}_lo"], out[f"{name}_hi"] = metrics.wilson_interval(k, m, z)
    return out


# ------------------------------------------------------------------------------------ persistence

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
                             class_names=record.get("class_names"))
    model.load_state_dict(load_file(str(directory / WEIGHTS_FILE)))
    model.meta = meta
    return model.to(device).eval()


# ------------------------------------------------------------------------------------ profile

JUDGE_KEYS = ("arch", "epochs", "batch_size", "lr", "pretrained", "input_size", "optimizer", "weight_decay",
              "augment", "crop_pad", "hflip") + PHOTOMETRIC_KEYS
_REQUIRED_KEYS = ("arch", "epochs", "batch_size", "lr")


def validate_judges(section: dict) -> dict:
    """Check the ``judges`` section of a profile; return a copy.

    Required: ``arch``, ``epochs``, ``batch_size``, ``lr``. Optional (defaults of
    :func:`train_classifier`): ``pretrained``, ``input_size``, ``optimizer``, ``weight_decay``,
    ``augment``, ``crop_pad``, ``hflip``, ``color_jitter``, ``blur``, ``noise``. The section is passed as keyword arguments to
    :func:`train_classifier` and :func:`train_trigger_detector`.
    """
    if not isinstance(section, dict):
        raise ConfigError("judges", section, "a mapping")
    unknown = sorted(set(section) - set(JUDGE_KEYS))
    if unknown:
        raise ConfigError(f"judges.{unknown[0]}", section[unknown[0]], f"a key among {JUDGE_KEYS}")
    missing = [k for k in _REQUIRED_KEYS if k not in section]
    if missing:
        raise ConfigError(f"judges.{missing[0]}", None, "a value (required)")
    s = dict(section)
    if s["arch"] not in ARCHS:
        raise ConfigError("judges.arch", s["arch"], f"one of {ARCHS}")
    _check_hparams(s["epochs"], s["batch_size"], s["lr"], s.get("optimizer", "adamw"), s.get("weight_decay"),
                   s.get("crop_pad"))
    for key in ("pretrained", "augment", "hflip"):
        if key in s and not isinstance(s[key], bool):
            raise ConfigError(f"judges.{key}", s[key], "true or false")
    _check_photometric(**{k: s[k] for k in PHOTOMETRIC_KEYS if k in s})
    if s.get("pretrained") and s["arch"] == "small_cnn":
        raise ConfigError("judges.pretrained", True, "false for arch small_cnn (no ImageNet weights)")
    size = s.get("input_size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 8):
        raise ConfigError("judges.input_size", size, "null or an integer >= 8")
    return s
