"""Inference with a judge: class predictions, penultimate features, held-out error rates."""

from __future__ import annotations

import numpy as np
import torch

from bibad_utils import metrics
from bibad_utils.base import ConfigError
from bibad_utils.judges.images import ImageSource, as_images, nontarget
from bibad_utils.judges.models import Classifier


@torch.inference_mode()
def _run(model: Classifier, images, batch_size: int, device, fn) -> list[torch.Tensor]:
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ConfigError("batch_size", batch_size, "an integer >= 1")
    src = as_images(images)
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
                   batch_size: int = 256, device="cpu") -> dict:
    """Held-out error rates of a judge, with counts and 95 % Wilson intervals.

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
    src = as_images(images, labels)
    if kind == "classifier":
        if src.labels is None:
            raise ConfigError("labels", None, "class indices of the held-out images")
        pred, _ = predict(model, src, batch_size, device)
        n, n_correct = len(pred), int((pred == src.labels).sum())
        return dict(kind=kind, n=n, n_correct=n_correct, **metrics.rate_columns("accuracy", n_correct, n),
                    per_class_accuracy=metrics.per_class_accuracy(pred, src.labels,
                                                                  model.config["num_classes"]).tolist())
    if trigger is None:
        raise ConfigError("trigger", None, "the trigger the detector was trained for")
    src = nontarget(src, exclude_class)
    triggered = ImageSource(len(src), lambda idx: trigger.apply(src.get(idx)), None)
    pred_clean, _ = predict(model, src, batch_size, device)
    pred_trig, _ = predict(model, triggered, batch_size, device)
    n = len(src)
    fp, fn = int(pred_clean.sum()), int((pred_trig == 0).sum())
    out = dict(kind=kind, n_clean=n, n_triggered=n, false_positives=fp, false_negatives=fn)
    for name, k, m in (("fpr", fp, n), ("fnr", fn, n), ("accuracy", 2 * n - fp - fn, 2 * n)):
        out.update(metrics.rate_columns(name, k, m))
    return out
