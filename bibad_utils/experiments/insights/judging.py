"""The judges of stage 04 on generations: which detectors judge a cell, the cached judgments, the judges'
own checks on real and generated images.

Content (M: the image shows the prompt's class) is read by the clean classifier trained here, unless the
profile names a judge nobody here trained (``judges.external``, e.g. the CIFAR-10 ResNet-56) that reads the
real test images more accurately (:func:`content_choice`): then that judge decides M for every G ratio and
claim, the trained one's reading is kept beside it (``pred_trained``), and :func:`content_agreement_table`
shows where the two disagree on generations."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bibad_utils import metrics
from bibad_utils.content_judges import CLEAN_JUDGE, content_choice, judge_specs, predictions
from bibad_utils.data import to_float, to_uint8
from bibad_utils.judges import PHOTOMETRIC_KEYS, predict
from bibad_utils.judges.profile import wants_ablation
from bibad_utils.metrics import Z95


def detectors_for(study, cell) -> list[str]:
    """Trigger kinds whose detector judges ``cell``'s generations: its own trigger, or every attack of
    the profile for a control (which carries none)."""
    return [cell.trigger_kind] if cell.trigger_kind else list(study.cfg.attacks)


def trigger_r_train(study, cell) -> float:
    """Trigger ratio among ``cell``'s target-prompt training images (0 for the controls: relabel-only
    puts target labels on images without a trigger)."""
    return float(study.poison_manifest(cell)["r_train"]) if cell.trigger_kind else 0.0


def judge_table(study) -> pd.DataFrame:
    """Held-out error rates of the judges, with 95 % Wilson bounds: one row for the clean classifier
    (accuracy on the real test set) and one per attack's trigger detector (accuracy, FPR on clean and
    FNR on triggered non-target test images). Columns: judge, kind, n, accuracy(_lo/_hi),
    fpr(_lo/_hi), fnr(_lo/_hi); rates are fractions, nan where they do not apply."""
    rows = []
    c = study.judges.classifier_report()
    rows.append({"judge": "clean classifier", "kind": "classifier", "n": c["n"], "accuracy": c["accuracy"],
                 "accuracy_lo": c["accuracy_lo"], "accuracy_hi": c["accuracy_hi"]})
    for kind in study.cfg.attacks:
        d = study.judges.detector_report(kind)
        row = {"judge": f"{kind} detector", "kind": "trigger_detector", "n": d["n_clean"] + d["n_triggered"]}
        for m in ("accuracy", "fpr", "fnr"):
            row[m], row[f"{m}_lo"], row[f"{m}_hi"] = d[m], d[f"{m}_lo"], d[f"{m}_hi"]
        rows.append(row)
    cols = ["judge", "kind", "n"] + [f"{m}{s}" for m in ("accuracy", "fpr", "fnr") for s in ("", "_lo", "_hi")]
    return pd.DataFrame(rows).reindex(columns=cols)


def template_table(study) -> pd.DataFrame:
    """The training-free trigger template of each attack on real held-out images with a known answer
    (:meth:`~bibad_utils.study_judges.StudyJudges.template_report`): one row per attack, columns judge,
    kind, has_template, threshold, n_clean, n_triggered, fpr / tpr with Wilson ``_lo`` / ``_hi``, auroc,
    passes (its own sanity check), reason. An attack without a pixel pattern (a warp) has
    ``has_template`` False, nan rates, ``passes`` False and the reason."""
    rows = []
    for kind in study.cfg.attacks:
        rep = study.judges.template_report(kind)
        if rep is None:
            rows.append({"judge": f"{kind} template", "kind": kind, "has_template": False, "passes": False,
                         "reason": "the trigger has no pixel pattern (it moves pixels instead of painting them)"})
        else:
            rows.append({"judge": f"{kind} template", "has_template": True, **rep})
    cols = ["judge", "kind", "has_template", "threshold", "n_clean", "n_triggered"] + [
        f"{m}{s}" for m in ("fpr", "tpr") for s in ("", "_lo", "_hi")] + ["auroc", "passes", "reason"]
    return pd.DataFrame(rows).reindex(columns=cols)


def reference_cell(study):
    """The model whose generations calibrate the judges on generated images: the clean control when the
    profile trains one, else the pre-trained clean model (None), else None when neither exists."""
    clean = [c for c in study.control_cells() if c.kind == "clean"]
    if clean:
        return clean[0]
    return None if study.pretrain_key is not None else False


def generated_judge_table(study, z: float = Z95, guidance: float | None = None) -> pd.DataFrame:
    """The judges on GENERATED images with a known answer: the all-class generations of a clean DM
    (:func:`reference_cell`), which carry no trigger and show their prompt's class if the DM learned it.

    Rows: ``clean classifier`` (accuracy = generations assigned to their prompt's class) and, per attack,
    ``<kind> detector`` with ``fpr`` (clean generations flagged) and ``tpr`` (the same generations with
    the attack's trigger pasted on, flagged). Columns: judge, n, accuracy/fpr/tpr with Wilson ``_lo`` /
    ``_hi``; empty when the profile has no clean model. A judge fit for the G ratios has a high accuracy
    and TPR and a low FPR here, not only on real test images (:func:`judge_table`).

    ``guidance``: the clean DM's all-class set at this w when it has one (the clean control has one at every
    ``castle_guidance``), else at ``sampling.guidance_all``; the table's ``guidance`` column says which. When
    the chapter reads content with another judge (:func:`content_choice`), its row follows the clean
    classifier's, named ``content judge: <name>``."""

    ref = reference_cell(study)
    if ref is False:
        return pd.DataFrame(columns=["judge", "n"])
    sets = study.generations(ref)
    w = float(guidance) if guidance is not None and ("all", float(guidance)) in sets else study.guidance_all
    gen = sets[("all", w)]
    n = len(gen.labels)

    def rate(name, k):
        return metrics.rate_columns(name, k, n, z)

    pred, _ = predict(study.judges.classifier(), gen.images, device=study.device)
    rows = [{"judge": "clean classifier", "n": n, **rate("accuracy", int((pred == gen.labels).sum()))}]
    chosen = content_choice(study)["chosen"]
    if chosen != CLEAN_JUDGE:
        spec = next(s for s in judge_specs(study) if s.name == chosen)
        other = predictions(study, spec, study.generation_key(ref), {f"all_w{w:g}": gen.images})[f"all_w{w:g}"]
        rows.append({"judge": f"content judge: {chosen}", "n": n, **rate("accuracy", int((other == gen.labels).sum()))})
    for kind in study.cfg.attacks:
        det = study.judges.detector(kind)
        fired, _ = predict(det, gen.images, device=study.device)
        pasted = to_uint8(study.trigger(kind).apply(to_float(gen.images)))
        caught, _ = predict(det, pasted, device=study.device)
        rows.append({"judge": f"{kind} detector", "n": n, **rate("fpr", int(fired.sum())),
                     **rate("tpr", int(caught.sum()))})
    cols = ["judge", "n"] + [f"{m}{s}" for m in ("accuracy", "fpr", "tpr") for s in ("", "_lo", "_hi")]
    return pd.DataFrame(rows).reindex(columns=cols).assign(guidance=w)


def judge_augmentation_ablation(study, z: float = Z95) -> pd.DataFrame:
    """:func:`generated_judge_table` for the profile's judges and for the same judges trained WITHOUT
    photometric augmentation (``color_jitter = blur = noise = 0``; cached like any judge), stacked with a
    ``judges`` column ("as configured" | "no photometric augmentation"). When the profile's judges use
    no photometric augmentation, or ``judges.ablation`` is false, there is only the first block."""
    blocks = [generated_judge_table(study, z).assign(judges="as configured")]
    if wants_ablation(study.cfg.judges):
        plain = study.variant({"judges": {k: 0.0 for k in PHOTOMETRIC_KEYS}})
        blocks.append(generated_judge_table(plain, z).assign(judges="no photometric augmentation"))
    out = pd.concat(blocks, ignore_index=True)
    return out[["judges"] + [c for c in out.columns if c != "judges"]]


def judge_check_display(gjdf: pd.DataFrame) -> pd.DataFrame:
    """:func:`judge_augmentation_ablation` (or :func:`generated_judge_table`) for reading: index
    (judges, judge), one column per measure on the clean DM's generations, each "98.8 % [97.1, 99.5]"
    (point and 95 % interval), "" where a measure does not apply to the judge."""
    measures = {"accuracy": "content = prompt's class", "fpr": "false alarms (no trigger)",
                "tpr": "detected (trigger pasted on)"}
    rows = []
    for _, r in gjdf.iterrows():
        row = {"judges": r.get("judges", "as configured"), "judge": r["judge"], "n": int(r["n"])}
        for key, name in measures.items():
            v = r.get(key, math.nan)
            row[name] = "" if v is None or not np.isfinite(v) else \
                f"{100 * v:.1f} % [{100 * r[f'{key}_lo']:.1f}, {100 * r[f'{key}_hi']:.1f}]"
        rows.append(row)
    return pd.DataFrame(rows).set_index(["judges", "judge"])


def content_agreement_table(study, cells=None) -> pd.DataFrame:
    """Where the two content judges disagree on generations: per cell (default every cell of the profile)
    and target-prompt set, ``n``, the share each judge reads as the prompt's class (``match_chosen``,
    ``match_trained``), the share both decide alike (``agreement``) and Cohen's kappa of the two decisions.
    Empty when the clean classifier is the only content judge (or is chosen)."""
    cols = ["cell", "set", "guidance", "n", "match_chosen", "match_trained", "agreement", "kappa"]
    if content_choice(study)["chosen"] == CLEAN_JUDGE:
        return pd.DataFrame(columns=cols)
    rows = []
    for cell in study.cells() if cells is None else cells:
        for (name, w), rec in study.judges.judged(cell, detectors_for(study, cell)[0]).items():
            if name != "target":
                continue
            a, b = rec["match"], rec["pred_trained"] == rec["labels"]
            rows.append({"cell": cell.name, "set": name, "guidance": w, "n": len(a), "match_chosen": a.mean(),
                         "match_trained": b.mean(), "agreement": float((a == b).mean()),
                         "kappa": metrics.cohen_kappa(a, b)})
    return pd.DataFrame(rows, columns=cols)


def content_sentence(choice: dict) -> str:
    """One sentence saying which judge reads content in this chapter, with the real-image accuracies."""
    if not choice["judges"]:
        return ("Content (the prompt's class shown) is read by the clean classifier trained here; the profile "
                "names no second content judge.")
    acc = "; ".join(f"{r['judge']} {100 * r['accuracy']:.1f} % [{100 * r['accuracy_lo']:.1f}, "
                    f"{100 * r['accuracy_hi']:.1f}]" for r in choice["judges"])
    return (f"Content (the prompt's class shown) is read by the {choice['chosen']}, the content judge that reads "
            f"the real test images more accurately ({acc}); the table below shows where the two judges disagree "
            "on the target-prompt generations.")
