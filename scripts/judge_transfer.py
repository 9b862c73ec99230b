"""How well do classifiers trained on real images read a diffusion model's generations, and the other
way round? The measurements behind the photometric augmentation of the demo profile's judges and of
its "training on generations" classifiers (BENCHMARKS.md, "Judges on generated images").

    python scripts/judge_transfer.py [--profile demo] [--out judge_transfer.json]

Needs a finished `bibad run` of the profile (its clean and BadNets-1 p = 10 % generation sets are
read from the artifact store; nothing is retrained except the classifiers measured here).

Part 1, judges (trained on the real training set, as the study trains them) for each augmentation
setting: accuracy on real test images, accuracy on the clean DM's all-class generations, and for each
attack's trigger detector the false-alarm rate on those generations and the detection rate once the
trigger is pasted on them.

Part 2, the classifier of "training on generations" (trained on the BadNets-1 DM's all-class
generations with the stage's settings) for each augmentation setting: accuracy on real test images
(TA) and attack success rate on triggered real non-target test images (ASR).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from bibad_utils import judges as J
from bibad_utils.data import to_float, to_uint8
from bibad_utils.experiments import castle_walls as cw
from bibad_utils.stages import Cell, Study

JUDGE_SETTINGS = {
    "none": {},
    "mild": {"color_jitter": 0.25, "blur": 0.7, "noise": 0.15},
    "demo": {"color_jitter": 0.4, "blur": 1.0, "noise": 0.25},
}
TOG_SETTINGS = {
    "none": {},
    "colour jitter 0.4": {"color_jitter": 0.4},
    "jitter 0.2, blur 1.0, noise 0.1": {"color_jitter": 0.2, "blur": 1.0, "noise": 0.1},
    "jitter 0.4, blur 1.0, noise 0.25": {"color_jitter": 0.4, "blur": 1.0, "noise": 0.25},
}


def judge_part(study: Study) -> list[dict]:
    base = {k: v for k, v in study.cfg.judges.items() if k not in J.PHOTOMETRIC_KEYS}
    gen = study.generations(Cell("clean"))[("all", study.guidance_all)]
    rows = []
    for name, photometric in JUDGE_SETTINGS.items():
        t0 = time.perf_counter()
        clf, _ = J.train_classifier(study.train_set, seed=study.seed, progress=False, **base, **photometric)
        pred, _ = J.predict(clf, gen.images)
        row = {"setting": name, **photometric, "real_accuracy": J.evaluate_judge(clf, study.test_set)["accuracy"],
               "gen_accuracy": float((pred == gen.labels).mean()),
               "gen_per_class": [float((pred[gen.labels == c] == c).mean()) for c in range(len(study.class_names))]}
        for kind in study.cfg.attacks:
            trigger = study.trigger(kind)
            det = J.train_trigger_detector(study.train_set, trigger, exclude_class=study.target, seed=study.seed,
                                           progress=False, **base, **photometric)
            fired, _ = J.predict(det, gen.images)
            caught, _ = J.predict(det, to_uint8(trigger.apply(to_float(gen.images))))
            row[f"{kind}_gen_fpr"] = float(fired.mean())
            row[f"{kind}_gen_tpr_pasted"] = float(caught.mean())
        row["seconds"] = round(time.perf_counter() - t0, 1)
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def tog_part(study: Study) -> list[dict]:
    cell = Cell("badnets1", max(study.cfg.ratios))
    gen = study.generations(cell)[("all", study.guidance_all)]
    kw = {k: v for k, v in cw.classifier_settings(study, small=True).items() if k not in J.PHOTOMETRIC_KEYS}
    test = study.test_set
    nontarget = test.images[test.labels != study.target]
    triggered = to_uint8(study.trigger("badnets1").apply(to_float(nontarget)))
    rows = []
    for name, photometric in TOG_SETTINGS.items():
        model, _ = J.train_classifier(gen.images, gen.labels, seed=study.seed, progress=False,
                                      num_classes=len(study.class_names), **kw, **photometric)
        pred, _ = J.predict(model, triggered)
        row = {"setting": name, "cell": cell.name, "n_train": len(gen.labels),
               "TA": J.evaluate_judge(model, test)["accuracy"], "ASR": float((pred == study.target).mean())}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--out", default="judge_transfer.json")
    args = parser.parse_args()
    study = Study(args.profile, progress=False)
    result = {"profile": args.profile, "judges": judge_part(study), "training_on_generations": tog_part(study)}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
