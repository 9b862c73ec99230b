"""The content judges of the study: the clean classifier trained here and, when the profile names one
(``judges.external``, :func:`bibad_utils.judges.profile.check_external`), a judge nobody in this project
trained (e.g. the CIFAR-10 ResNet-56 of :mod:`bibad_utils.judges.cifar_resnet`), each as a :class:`JudgeSpec`
whose predictions are cached in the study's store under :data:`PRED_STAGE` (keyed by the judge: the clean
classifier's artifact key, or the external file's kind and SHA-256, and by the key of the images judged).
Chapter 02 checks the base DM with every content judge; chapter 04 reads content with the more accurate one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from bibad_utils import metrics
from bibad_utils import store as st
from bibad_utils.base import ConfigError
from bibad_utils.judges import cifar_resnet_judge, predict
from bibad_utils.judges.profile import check_external

PRED_STAGE = "base_quality_pred"
CLEAN_JUDGE = "clean classifier"


@dataclass(frozen=True)
class JudgeSpec:
    """A content judge: its display ``name``, ``ident`` (what enters the keys of everything cached from it)
    and ``load()`` returning the :class:`~bibad_utils.judges.models.Classifier`."""

    name: str
    ident: dict
    load: Callable


def external_spec(study) -> JudgeSpec | None:
    """The profile's external judge (``judges.external``), or None. Its weights' SHA-256 is its identity;
    a judge whose classes are not the dataset's raises ConfigError when loaded."""
    spec = check_external(study.cfg.judges.external)
    if spec is None:
        return None
    sha = st.file_sha256(spec["path"])

    def load():
        judge = cifar_resnet_judge(spec["path"], device=study.device)
        names, ours = judge.config.get("class_names"), list(study.class_names)
        renamed = names and [n.lower() for n in names] != [n.lower() for n in ours]
        if judge.config["num_classes"] != len(ours) or renamed:
            raise ConfigError("judges.external.path", spec["path"],
                              f"a judge of this dataset's {len(ours)} classes {ours} (it reads {names})")
        return judge

    return JudgeSpec(f"{spec['kind']} (external)", {"kind": spec["kind"], "sha256": sha}, load)


def judge_specs(study) -> list[JudgeSpec]:
    """The content judges of the check: the clean classifier, then the external one when the profile names it."""
    clean = JudgeSpec(CLEAN_JUDGE, {"classifier": study.judges.key("classifier")[1]}, study.judges.classifier)
    ext = external_spec(study)
    return [clean] + ([ext] if ext is not None else [])


def predictions(study, judge: JudgeSpec, source_key: str, sets: dict) -> dict[str, np.ndarray]:
    """``{name: int64 [N]}``: ``judge``'s class for every image of ``sets`` (``{name: uint8 [N, H, W, 3]}``,
    or a function returning them), cached under the key ``source_key`` of the artifact they come from."""
    names = sorted(sets)
    params = {"judge": judge.ident, "sets": names}

    def build(art):
        model = judge.load()
        for name in names:
            images = sets[name]() if callable(sets[name]) else sets[name]
            st.save_array(art.dir / f"{name}.npy", predict(model, images, device=study.device)[0])

    path = study.store.cached(PRED_STAGE, params, [source_key], build, device=str(study.device))
    return {name: st.load_array(path / f"{name}.npy") for name in names}


def real_predictions(study, judge: JudgeSpec) -> np.ndarray:
    """``judge``'s class for every real test image (cached)."""
    return predictions(study, judge, study.data_key, {"test": lambda: study.test_set.images})["test"]


def content_choice(study) -> dict:
    """Which judge reads content (M) in this chapter: every content judge (the clean classifier, and the
    profile's external judge when it names one) with its accuracy on the real test images, and the chosen
    one, the more accurate (the clean classifier on a tie). Returns ``{"chosen": name, "judges": [{"judge",
    "n", "k", "accuracy", "accuracy_lo", "accuracy_hi"}]}``; predictions are cached."""
    specs = judge_specs(study)
    if len(specs) == 1:
        return {"chosen": CLEAN_JUDGE, "judges": []}
    labels = np.asarray(study.test_set.labels, np.int64)
    rows = []
    for spec in specs:
        k = int((real_predictions(study, spec) == labels).sum())
        lo, hi = metrics.wilson_interval(k, len(labels))
        rows.append({"judge": spec.name, "n": len(labels), "k": k, "accuracy": k / len(labels),
                     "accuracy_lo": lo, "accuracy_hi": hi})
    best = max(rows, key=lambda r: r["k"])  # the first (the clean classifier) wins a tie
    return {"chosen": best["judge"], "judges": rows}
