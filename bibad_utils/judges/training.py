"""Training of the judges: a classifier on real (or generated) images and a balanced trigger detector.

Training is deterministic given ``seed`` on the CPU (weights, shuffling and augmentation draw from
seeded generators); on a GPU cuDNN kernels may add run-to-run noise.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bibad_utils.base import ConfigError
from bibad_utils.judges.augment import augment_batch, check_photometric
from bibad_utils.judges.images import as_images, nontarget
from bibad_utils.judges.models import Classifier, build_classifier
from bibad_utils.progress import Bar

OPTIMIZERS = ("adamw", "sgd")
# Used when ``weight_decay`` is None; decoupled (AdamW) and L2 (SGD) decay live on different scales.
_DEFAULT_WEIGHT_DECAY = {"adamw": 0.01, "sgd": 5e-4}


def detector_source(clean_images, labels, exclude_class):
    """The clean images a trigger detector trains on: ``(source, n, image_size)``, the images outside
    ``exclude_class`` (the target: its poisoned copies are no clean negatives); at least one is needed."""
    src = nontarget(as_images(clean_images, labels, "clean_images"), exclude_class)
    n = len(src)
    if n < 1:
        raise ConfigError("len(clean_images)", n, "at least 1 image outside exclude_class")
    return src, n, int(src.get(np.array([0])).shape[-1])


def check_hparams(epochs, batch_size, lr, optimizer, weight_decay, crop_pad) -> None:
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


def fit_judge(model: Classifier, n: int, get_batch: Callable[[np.ndarray], tuple[torch.Tensor, torch.Tensor]], *,
         epochs: int, batch_size: int, lr: float, optimizer: str, weight_decay: float | None, seed: int,
         device, augment: bool, crop_pad: int | None, hflip: bool, progress: bool, desc: str,
         photometric: dict | None = None) -> list[dict]:
    """Train ``model`` on ``n`` items read by ``get_batch(indices) -> (float [-1, 1] NCHW, int64 labels)``
    (cross-entropy, AdamW or SGD, cosine learning rate, the augmentation of :func:`augment_batch`), then
    set its BatchNorm statistics by precise BN; returns the per-epoch history (see :func:`train_classifier`)."""
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
    bar = Bar("train", desc, total, show=progress)
    for epoch in range(epochs):
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=gen).numpy()
        loss_sum, correct, seen = 0.0, 0, 0
        for s in starts:
            x, y = get_batch(perm[s:s + batch_size])
            if augment:
                x = augment_batch(x, gen, pad, hflip, photometric)
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
        bar.bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
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


def build_seeded(seed: int, **kwargs) -> Classifier:
    """:func:`build_classifier` with initial weights drawn from ``seed``."""
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
            :func:`augment_batch`); they make a judge trained on real images robust to generation artifacts.
        progress: show a tqdm bar.

    Returns:
        ``(model, history)``: the model in eval mode on ``device``, and one dict per epoch with
        ``epoch``, ``loss`` (mean cross-entropy), ``train_accuracy`` (on augmented batches, in
        [0, 1]), ``lr`` (at the epoch's end) and ``seconds``. ``model.meta`` records the settings.
    """
    check_hparams(epochs, batch_size, lr, optimizer, weight_decay, crop_pad)
    photometric = check_photometric(color_jitter=color_jitter, blur=blur, noise=noise)
    src = as_images(images_or_dataset, labels, "images_or_dataset")
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
    model = build_seeded(seed, arch=arch, num_classes=num_classes, image_size=image_size,
                          pretrained=pretrained, input_size=input_size, class_names=class_names)
    y_all = torch.from_numpy(src.labels)
    history = fit_judge(model, len(src), lambda idx: (src.get(idx), y_all[torch.from_numpy(idx)]),
                   epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, weight_decay=weight_decay,
                   seed=seed, device=device, augment=augment, crop_pad=crop_pad, hflip=hflip,
                   progress=progress, desc=f"classifier {arch}", photometric=photometric)
    model.meta = dict(trained_on=len(src), epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                      optimizer=optimizer, weight_decay=weight_decay, augment=augment, crop_pad=crop_pad,
                      hflip=hflip, pretrained=pretrained, history=history, **photometric)
    return model, history


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
    check_hparams(epochs, batch_size, lr, optimizer, weight_decay, crop_pad)
    photometric = check_photometric(color_jitter=color_jitter, blur=blur, noise=noise)
    if not callable(getattr(trigger, "apply", None)):
        raise ConfigError("trigger", type(trigger).__name__, "an object with apply(x) on [-1, 1] NCHW images")
    src, n, image_size = detector_source(clean_images, labels, exclude_class)
    model = build_seeded(seed, arch=arch, num_classes=2, image_size=image_size, pretrained=pretrained,
                          input_size=input_size, kind="trigger_detector", class_names=["clean", "trigger"])

    def get_batch(idx: np.ndarray):
        triggered = idx >= n
        x = src.get(idx % n)
        if triggered.any():
            mask = torch.from_numpy(triggered)
            x[mask] = trigger.apply(x[mask])
        return x, torch.from_numpy(triggered.astype(np.int64))

    history = fit_judge(model, 2 * n, get_batch, epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
                   weight_decay=weight_decay, seed=seed, device=device, augment=augment, crop_pad=crop_pad,
                   hflip=hflip, progress=progress, desc=f"trigger detector {arch}", photometric=photometric)
    model.meta = dict(trained_on=n, exclude_class=exclude_class, epochs=epochs, batch_size=batch_size, lr=lr,
                      seed=seed, optimizer=optimizer, weight_decay=weight_decay, augment=augment,
                      crop_pad=crop_pad, hflip=hflip, pretrained=pretrained, history=history, **photometric)
    return model
