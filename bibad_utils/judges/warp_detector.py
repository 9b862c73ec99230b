"""The trigger detector of a warp trigger (WaNet): its own recipes, and its check.

A WaNet field moves pixels by about a quarter of a pixel. The BadNets detectors' recipe fails on it: the
photometric blur and noise that make a judge read a diffusion model's grain erase the warp, and a
detector that has only seen clean vs trigger-warped images learns "any resampling" and fires on a DM's
soft generations. Two recipes (``method``):

- ``"field"`` (the default): a matched filter of the known field. Bilinear resampling by a fraction f of a
  pixel damps an image's finest band by about (1 - 2 f)^2, so the trigger's fixed field leaves a fixed
  spatial pattern of damping; :class:`~bibad_utils.judges.models.WarpFieldFeatures` maps each image to its
  log band ratios per pixel and axis, and an L2-regularised logistic regression (``C`` = :data:`FIELD_C`)
  learns the trigger's pattern from clean real images (and copies warped by random fields of the same
  grid and strength, share ``random_warps``) against the same images warped by the trigger, all rounded to
  uint8 as stored images are; with generated images of a clean DM, those too (as they are, and warped).
  No photometric augmentation, no epochs: a closed-form fit in seconds. Measured on real CIFAR-10 (32 px,
  2,250 non-target training images of the cifar10 profile, 2026-12-07, AMD EPYC): ROC AUC 0.945 between
  clean and warped real test images, 4.8 % false alarms and 28 % misses at P = 0.5, 11.6 % of images
  warped by other fields flagged; on the clean DM's target-prompt generations 0.5 % false alarms and
  98.5 % of them detected once warped. The small CNN of the other recipe, on the same data: 24 % false
  alarms, 23 % misses, 63 % of other warps and 15 % of the clean DM's generations flagged.
- ``"cnn"``: the judges' network (``arch``) trained with no blur or noise augmentation (colour jitter
  stays) for ``epochs`` (15 by default), the random-field negatives, and a share ``generated_fraction``
  of every batch drawn from a clean DM's generations, half warped with the trigger (class 1), half as
  they are. On the demo's procedural shapes (strength 0.5, grid 4, 15 epochs, 300 generations mixed in):
  1 / 900 false alarms and 899 / 900 detections on real test images, 0 / 100 false alarms on held-out
  generations; on real CIFAR-10 it fails (above).

:func:`holdout_split` keeps part of the generated images out of training for :func:`warp_check`.
Deterministic given ``seed`` on the CPU, like every judge.
"""

from __future__ import annotations

import numpy as np
import torch

from bibad_utils import metrics
from bibad_utils.base import ConfigError
from bibad_utils.data import to_float, to_uint8
from bibad_utils.judges.augment import check_photometric
from bibad_utils.judges.images import as_images, nontarget
from bibad_utils.judges.inference import predict
from bibad_utils.judges.models import FIELD_ARCH, Classifier, build_classifier
from bibad_utils.judges.training import build_seeded, check_hparams, detector_source, fit_judge
from bibad_utils.schema import is_int, is_number
from bibad_utils.triggers import TRIGGERS
from bibad_utils.triggers.warp import WarpTrigger, apply_warp, random_warp_grids


def is_warp_kind(kind: str) -> bool:
    """Whether trigger ``kind`` of the registry is a warp (:class:`WarpTrigger`): its detector follows
    this module's recipe."""
    builder = TRIGGERS[kind].builder if kind in TRIGGERS else None
    return isinstance(builder, type) and issubclass(builder, WarpTrigger)


METHODS = ("field", "cnn")
FIELD_C = 1e-3  # inverse L2 strength of the field detector's logistic regression (measured: 3e-4 to 1e-2 on CIFAR-10)


def _check_share(name: str, value, high_open: bool) -> float:
    if not is_number(value) or value < 0 or value > 1 or (high_open and value == 1):
        raise ConfigError(name, value, f"a share in [0, 1{')' if high_open else ']'}")
    return float(value)


def holdout_split(n: int, seed: int, holdout: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """Split ``n`` generated images into training and held-out indices (int64, each sorted): a seeded
    random ``round(holdout * n)`` of them (at least one when ``n`` >= 2) are held out for :func:`warp_check`."""
    if not is_int(n, 0):
        raise ConfigError("n", n, "an integer >= 0")
    if not is_number(holdout) or not 0 < holdout < 1:
        raise ConfigError("judges.wanet_holdout", holdout, "a share in (0, 1)")
    k = min(n - 1, max(1, round(holdout * n))) if n >= 2 else 0
    perm = np.random.default_rng([int(seed), 17]).permutation(n)
    return np.sort(perm[k:]).astype(np.int64), np.sort(perm[:k]).astype(np.int64)


def train_warp_detector(clean_images, trigger, *, generated=None, labels=None, exclude_class: int | None = None,
                        seed: int, arch: str | None = None, batch_size: int | None = None, lr: float | None = None,
                        device="cpu", epochs: int = 15,
                        random_warps: float = 0.5, generated_fraction: float = 0.2, pretrained: bool = False,
                        input_size: int | None = None, optimizer: str = "adamw", weight_decay: float | None = None,
                        augment: bool = True, crop_pad: int | None = None, hflip: bool = False,
                        color_jitter: float = 0.0, blur: float = 0.0, noise: float = 0.0,
                        progress: bool = True, method: str = "field") -> Classifier:
    """Train the binary detector (class 1 = trigger present) of a warp trigger with one of this module's
    recipes (``method``: ``"field"``, the default, or ``"cnn"``; module docstring).

    ``"field"`` reads ``clean_images``, ``trigger``, ``generated`` (all of it, when ``generated_fraction`` > 0),
    ``labels``, ``exclude_class``, ``random_warps`` and ``seed``; the network's training arguments do not
    apply to it.

    Every epoch reads each clean real image twice, once as it is or (with probability ``random_warps``)
    warped by a freshly drawn random field (class 0), once warped by ``trigger`` (class 1); with
    ``generated``, ``round(generated_fraction * batch_size)`` images of every batch of ``batch_size`` are
    generated images drawn at random, the first half of them warped by ``trigger`` (class 1), the rest
    as they are (class 0).

    Args:
        clean_images: clean real images (dataset, uint8 ``[N, H, W, 3]``, or float [-1, 1] NCHW).
        trigger: a :class:`~bibad_utils.triggers.warp.WarpTrigger` (its ``grid`` and ``strength`` options are
            those of the random fields).
        generated: images of a clean DM, uint8 ``[M, H, W, 3]`` or float [-1, 1] ``[M, 3, H, W]`` (the
            training part of :func:`holdout_split`), or None: real images only.
        labels, exclude_class: as in :func:`~bibad_utils.judges.train_trigger_detector` (the target class
            is left out of the real images; generated images are used whatever their class).
        epochs: passes over the real images (15: the measured recipe).
        random_warps: share of the clean real images warped by a random field, in [0, 1].
        generated_fraction: share of every batch drawn from ``generated``, in [0, 1) (ignored without it).
        blur, noise: photometric strengths, 0 by default (they erase the warp); ``color_jitter`` as for
            any judge. Other arguments: as in :func:`~bibad_utils.judges.train_classifier`.

    Returns:
        the detector in eval mode on ``device``; ``model.meta`` records the settings and the history.
    """
    if method not in METHODS:
        raise ConfigError("judges.wanet_detector", method, f"one of {list(METHODS)}")
    random_warps = _check_share("judges.wanet_random_warps", random_warps, high_open=False)
    generated_fraction = _check_share("judges.wanet_generated", generated_fraction, high_open=True)
    if not isinstance(trigger, WarpTrigger):
        raise ConfigError("trigger", type(trigger).__name__, "a WarpTrigger (this recipe is for warp triggers)")
    src, n, size = detector_source(clean_images, labels, exclude_class)
    if size != trigger.image_size:
        raise ConfigError("clean_images.shape", size, f"{trigger.image_size} px images (the trigger's size)")
    gen_src = None if generated is None else as_images(generated, name="generated")
    if gen_src is not None and len(gen_src) and int(gen_src.get(np.array([0])).shape[-1]) != size:
        raise ConfigError("generated.shape", int(gen_src.get(np.array([0])).shape[-1]), f"{size} px images")
    if method == "field":
        return _train_field(src, n, size, trigger, gen_src if generated_fraction > 0 else None, seed=seed,
                            random_warps=random_warps, exclude_class=exclude_class, device=device)
    check_hparams(epochs, batch_size, lr, optimizer, weight_decay, crop_pad)
    photometric = check_photometric(color_jitter=color_jitter, blur=blur, noise=noise)
    n_gen = round(generated_fraction * batch_size) if gen_src is not None and len(gen_src) else 0
    real_batch = batch_size - n_gen
    if real_batch < 2:
        raise ConfigError("judges.wanet_generated", generated_fraction,
                          f"a share that leaves at least 2 real images in a batch of {batch_size}")
    model = build_seeded(seed, arch=arch, num_classes=2, image_size=size, pretrained=pretrained,
                         input_size=input_size, kind="trigger_detector", class_names=["clean", "trigger"])
    # the random fields and generated images are drawn from a stream of their own, seeded like the rest
    draw = torch.Generator().manual_seed(int(np.random.SeedSequence([int(seed), 23]).generate_state(1)[0]))
    grid, strength = trigger.options["grid"], trigger.options["strength"]

    def get_batch(idx: np.ndarray):
        triggered = torch.from_numpy(idx >= n)
        x = src.get(idx % n)
        other = (~triggered) & (torch.rand(len(idx), generator=draw) < random_warps)
        if triggered.any():
            x[triggered] = trigger.apply(x[triggered])
        if other.any():
            x[other] = apply_warp(x[other], random_warp_grids(int(other.sum()), size, grid, strength, draw))
        y = triggered.long()
        if n_gen:
            g = gen_src.get(torch.randint(len(gen_src), (n_gen,), generator=draw).numpy())
            half = n_gen // 2
            g[:half] = trigger.apply(g[:half])
            x = torch.cat([x, g])
            y = torch.cat([y, (torch.arange(n_gen) < half).long()])
        return x, y

    history = fit_judge(model, 2 * n, get_batch, epochs=epochs, batch_size=real_batch, lr=lr, optimizer=optimizer,
                        weight_decay=weight_decay, seed=seed, device=device, augment=augment, crop_pad=crop_pad,
                        hflip=hflip, progress=progress, desc=f"warp detector {arch}", photometric=photometric)
    model.meta = dict(method="cnn", trained_on=n, exclude_class=exclude_class, epochs=epochs, batch_size=batch_size, lr=lr,
                      seed=seed, optimizer=optimizer, weight_decay=weight_decay, augment=augment,
                      crop_pad=crop_pad, hflip=hflip, pretrained=pretrained, random_warps=random_warps,
                      generated_fraction=generated_fraction if n_gen else 0.0,
                      generated_images=0 if gen_src is None else len(gen_src), generated_per_batch=n_gen,
                      history=history, **photometric)
    return model


def _train_field(src, n: int, size: int, trigger, gen_src, *, seed: int, random_warps: float,
                 exclude_class: int | None, device, chunk: int = 2048) -> Classifier:
    """The ``"field"`` recipe (module docstring) on ``n`` clean real images of ``src`` (and ``gen_src``'s
    generated images, or None): features of every image as it is and warped by the trigger, and of a seeded
    share ``random_warps`` warped by random fields; then the logistic regression, written into the linear
    head of a :data:`~bibad_utils.judges.models.FIELD_ARCH` classifier (logit difference = the regression's)."""
    from sklearn.linear_model import LogisticRegression

    model = build_classifier(FIELD_ARCH, 2, size, kind="trigger_detector", class_names=["clean", "trigger"])
    feats = model.backbone
    draw = torch.Generator().manual_seed(int(np.random.SeedSequence([int(seed), 23]).generate_state(1)[0]))
    grid, strength = trigger.options["grid"], trigger.options["strength"]
    n_other = round(random_warps * n)

    def raw(x):  # float [-1, 1] images, rounded to uint8 as stored ones are
        return feats.raw(model.preprocess(to_float(to_uint8(x)))).numpy()

    parts, labels = [], []
    with torch.no_grad():
        for source, count, others in ((src, n, n_other), (gen_src, 0 if gen_src is None else len(gen_src), 0)):
            for s in range(0, count, chunk):
                x = source.get(np.arange(s, min(s + chunk, count)))
                parts += [raw(x), raw(trigger.apply(x))]
                labels += [np.zeros(len(x)), np.ones(len(x))]
                k = max(0, min(len(x), others - s))
                if k:
                    parts.append(raw(apply_warp(x[:k], random_warp_grids(k, size, grid, strength, draw))))
                    labels.append(np.zeros(k))
    X, y = np.concatenate(parts).astype(np.float64), np.concatenate(labels)
    mu, sd = X.mean(0), X.std(0) + 1e-6
    fit = LogisticRegression(C=FIELD_C, max_iter=5000).fit((X - mu) / sd, y)
    with torch.no_grad():
        feats.mu.copy_(torch.from_numpy(mu).float())
        feats.sd.copy_(torch.from_numpy(sd).float())
        w, b = torch.from_numpy(fit.coef_[0]).float(), float(fit.intercept_[0])
        model.head.weight.copy_(torch.stack([-w / 2, w / 2]))
        model.head.bias.copy_(torch.tensor([-b / 2, b / 2]))
    model.meta = dict(method="field", trained_on=n, exclude_class=exclude_class, seed=seed, random_warps=random_warps,
                      random_warp_images=n_other, generated_images=0 if gen_src is None else len(gen_src), C=FIELD_C,
                      train_accuracy=float(fit.score((X - mu) / sd, y)), n_features=int(X.shape[1]))
    return model.to(device).eval()


def warp_check(model: Classifier, images, trigger, *, exclude_class: int | None = None, seed: int = 0,
               quantize: bool = False, batch_size: int = 256, device="cpu") -> dict:
    """Held-out error rates of a warp detector on images with a known answer: each clean image as it is,
    warped by ``trigger``, and warped by a random field of the same grid and strength (seeded by ``seed``).

    Args:
        images, exclude_class: held-out clean images as in
            :func:`~bibad_utils.judges.evaluate_judge` (real test images without the target class, or a
            clean DM's held-out generations).
        quantize: round the warped images to uint8 before judging, as a DM's generations are stored.

    Returns:
        :func:`~bibad_utils.judges.evaluate_judge`'s keys (``kind, n_clean, n_triggered, false_positives,
        false_negatives, fpr, fnr, accuracy`` with ``_lo``/``_hi``) plus ``n_other_warp``,
        ``other_warp_false_positives`` and ``other_warp_fpr`` (with ``_lo``/``_hi``): images warped by
        another field that the detector flags. Rates are fractions in [0, 1].
    """
    src = nontarget(as_images(images), exclude_class)
    n = len(src)
    draw = torch.Generator().manual_seed(int(seed))
    fp = fn = fo = 0
    for s in range(0, n, batch_size):
        x = src.get(np.arange(s, min(s + batch_size, n)))
        warped = trigger.apply(x)
        other = apply_warp(x, random_warp_grids(len(x), trigger.image_size, trigger.options["grid"],
                                                trigger.options["strength"], draw))
        if quantize:
            warped, other = to_float(to_uint8(warped)), to_float(to_uint8(other))
        fp += int(predict(model, x, batch_size, device)[0].sum())
        fn += int((predict(model, warped, batch_size, device)[0] == 0).sum())
        fo += int(predict(model, other, batch_size, device)[0].sum())
    out = dict(kind=model.config["kind"], n_clean=n, n_triggered=n, false_positives=fp, false_negatives=fn)
    for name, k, m in (("fpr", fp, n), ("fnr", fn, n), ("accuracy", 2 * n - fp - fn, 2 * n)):
        out.update(metrics.rate_columns(name, k, m))
    out.update(n_other_warp=n, other_warp_false_positives=fo)
    out.update(metrics.rate_columns("other_warp_fpr", fo, n))
    return out
