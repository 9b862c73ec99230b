"""A training-free trigger judge: how strongly an image carries the trigger's own pixel pattern.

The trigger detectors (:mod:`bibad_utils.judges.training`) are learned, and the study calibrates them on
a clean DM's generations; that calibration cannot also be the evidence that the clean DM generates no
trigger. This judge learns nothing from generations: it reads the trigger's pattern off the trigger itself
(what it writes onto two constant images), and scores an image by the correlation between the image's fine
detail and the pattern's, on the pixels the trigger changes. Its threshold comes from real clean training
images and its error rates from the real held-out test set, both with the grain, blur and colour cast the
judges are trained against (:func:`corrupted`), so its reading of a generation is an independent second
measurement that grain alone does not set off. A trigger that leaves a constant image unchanged (WaNet's warp) has no
pixel pattern, so no template.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from bibad_utils import metrics
from bibad_utils.base import ConfigError
from bibad_utils.data import to_float, to_uint8
from bibad_utils.judges.augment import augment_batch

# the share of real clean (training) images the threshold lets through
TEMPLATE_FALSE_ALARM = 0.01
# the template is fit to judge when, on real held-out images, it finds at least this share of triggered
# images (by the lower bound of the 95 % interval) and false-alarms on at most this share (upper bound)
TEMPLATE_MIN_TPR = 0.9
TEMPLATE_MAX_FPR = 0.05


def corrupted(images, photometric: dict | None, seed: int) -> np.ndarray:
    """uint8 images ``[N, H, W, 3]`` with the photometric corruptions of ``photometric`` (the judges'
    colour jitter, blur and noise strengths, :func:`~bibad_utils.judges.augment.augment_batch`), drawn per
    image from ``seed``; no translation. The template's threshold and check use such images, so that a
    generation's grain does not read as a pattern."""
    gen = torch.Generator().manual_seed(int(seed))
    return to_uint8(augment_batch(to_float(images), gen, crop_pad=0, hflip=False, photometric=photometric))


def _detail(x: torch.Tensor) -> torch.Tensor:
    """Fine detail of float images ``[N, C, H, W]``: each pixel minus the mean of its 3 x 3 neighbourhood
    (edge pixels repeated), which removes backgrounds, gradients and colour casts."""
    c = x.shape[1]
    kernel = torch.full((c, 1, 3, 3), 1 / 9, dtype=x.dtype)
    return x - F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=c)


def pattern_of(trigger, channels: int = 3) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The pixel pattern of ``trigger``: ``(pattern [C, H, W], support bool [H, W])``, where ``support`` are
    the pixels the trigger changes in a black or a white image and ``pattern`` what it writes on a mid-grey
    one; None when it changes neither (a warp)."""
    size = trigger.image_size
    changed = torch.zeros(size, size, dtype=torch.bool)
    for value in (-1.0, 1.0):
        flat = torch.full((1, channels, size, size), value)
        changed |= ((trigger.apply(flat) - flat).abs() > 1e-6).any(dim=1)[0]
    return (trigger.apply(torch.zeros(1, channels, size, size))[0], changed) if changed.any() else None


@dataclass
class TriggerTemplate:
    """Scores images by their detail's Pearson correlation with the trigger pattern's detail, on the
    pattern's support (1: the pattern itself; about 0: no relation). ``threshold`` is set by
    :meth:`calibrate`."""

    kind: str
    pattern: torch.Tensor
    support: torch.Tensor
    threshold: float = float("nan")

    @classmethod
    def of(cls, trigger) -> "TriggerTemplate | None":
        """The template of ``trigger``, or None when the trigger has no pixel pattern."""
        found = pattern_of(trigger)
        return None if found is None else cls(trigger.kind, *found)

    def scores(self, images, batch_size: int = 1000) -> np.ndarray:
        """float64 ``[N]`` scores of uint8 images ``[N, H, W, 3]``."""
        ref = _detail(self.pattern[None])[0][:, self.support].flatten()
        ref = ref - ref.mean()
        out = []
        for i in range(0, len(images), batch_size):
            x = _detail(to_float(images[i:i + batch_size]))[:, :, self.support].flatten(1)
            x = x - x.mean(dim=1, keepdim=True)
            denom = x.norm(dim=1) * ref.norm()
            out.append(torch.where(denom > 1e-8, (x @ ref) / denom.clamp_min(1e-8), torch.zeros(())))
        return torch.cat(out).double().numpy() if out else np.zeros(0)

    def calibrate(self, clean_images, false_alarm: float = TEMPLATE_FALSE_ALARM) -> "TriggerTemplate":
        """Set ``threshold`` so that a share ``false_alarm`` of ``clean_images`` (real, trigger-free)
        scores above it; returns self."""
        if not 0 < false_alarm < 1:
            raise ConfigError("false_alarm", false_alarm, "a share in (0, 1)")
        if len(clean_images) == 0:
            raise ConfigError("clean_images", 0, "at least one real clean image to set the threshold on")
        self.threshold = float(np.quantile(self.scores(clean_images), 1 - false_alarm))
        return self

    def fires(self, images) -> np.ndarray:
        """bool ``[N]``: the score is above the calibrated threshold."""
        return self.decide(self.scores(images))

    def decide(self, scores) -> np.ndarray:
        """bool ``[N]``: which of the :meth:`scores` ``scores`` lie above the calibrated threshold (for a
        caller that keeps the scores too)."""
        if not np.isfinite(self.threshold):
            raise ConfigError("TriggerTemplate.threshold", self.threshold, "a threshold set by calibrate()")
        return np.asarray(scores) > self.threshold


def template_check(template: TriggerTemplate, clean_images, triggered_images) -> dict:
    """The template on real held-out images with a known answer: ``fpr`` (clean images it fires on),
    ``tpr`` (triggered ones it fires on), each with Wilson ``_lo`` / ``_hi``, ``auroc`` of the scores,
    ``n_clean``, ``n_triggered``, ``threshold``, and ``passes`` (:data:`TEMPLATE_MIN_TPR` /
    :data:`TEMPLATE_MAX_FPR` by the interval bounds) with ``reason`` when it does not."""
    s_clean, s_trig = template.scores(clean_images), template.scores(triggered_images)
    out = {"kind": template.kind, "threshold": template.threshold, "n_clean": len(s_clean), "n_triggered": len(s_trig)}
    for name, s in (("fpr", s_clean), ("tpr", s_trig)):
        k = int((s > template.threshold).sum())
        out[name] = k / max(len(s), 1)
        out[f"{name}_lo"], out[f"{name}_hi"] = metrics.wilson_interval(k, len(s))
    out["auroc"] = metrics.auroc(np.r_[s_clean, s_trig], np.r_[np.zeros(len(s_clean), bool), np.ones(len(s_trig), bool)])
    problems = []
    if out["tpr_lo"] < TEMPLATE_MIN_TPR:
        problems.append(f"finds {out['tpr']:.1%} of triggered real images (needs >= {TEMPLATE_MIN_TPR:.0%})")
    if out["fpr_hi"] > TEMPLATE_MAX_FPR:
        problems.append(f"fires on {out['fpr']:.1%} of clean real images (needs <= {TEMPLATE_MAX_FPR:.0%})")
    out["passes"] = not problems
    out["reason"] = "; ".join(problems)
    return out
