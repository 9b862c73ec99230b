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

Modules: ``models`` (networks, save / load), ``images`` (input access), ``augment`` (translation and
photometric augmentation), ``training``, ``inference`` (predict, features, held-out error rates),
``warp_detector`` (the WaNet detector's own recipe: no blur or noise, other random warps as negatives,
a clean DM's generations in every batch), ``profile`` (the profile's ``judges`` section), ``cifar_resnet``
(the CIFAR-10 ResNet-20 / -56 of He et al. 2016 from shipped weights: a second content judge that nobody
in this project trained).
"""

from bibad_utils.judges.augment import PHOTOMETRIC_KEYS, augment_batch
from bibad_utils.judges.cifar_resnet import CifarResNet, cifar_resnet_judge
from bibad_utils.judges.inference import evaluate_judge, features, predict
from bibad_utils.judges.models import build_classifier, load_classifier, save_classifier
from bibad_utils.judges.profile import JUDGE_KEYS
from bibad_utils.judges.training import train_classifier, train_trigger_detector
from bibad_utils.judges.warp_detector import holdout_split, is_warp_kind, train_warp_detector, warp_check


__all__ = [
    "JUDGE_KEYS", "PHOTOMETRIC_KEYS", "CifarResNet", "augment_batch", "build_classifier", "cifar_resnet_judge",
    "evaluate_judge", "features", "holdout_split", "is_warp_kind", "load_classifier", "predict", "save_classifier",
    "train_classifier", "train_trigger_detector", "train_warp_detector", "warp_check",
]
