"""Stage 02, the clean base DM's quality: how often content judges read its class-conditional generations
as the prompt's class, how far its generations lie from real images, and how both grew over pre-training.

Judges (:func:`judge_specs`): the project's clean classifier (``study.judges.classifier()``) and, when the
profile names one (``judges.external``, :func:`bibad_utils.judges.profile.check_external`), a judge
nobody in this project trained (e.g. the CIFAR-10 ResNet-56 of :mod:`bibad_utils.judges.cifar_resnet`).
Each judge's accuracy on the real test images is the ceiling a perfect DM would reach by this measure;
chance is ``1 / number of classes``. Rates are fractions in [0, 1] with 95 % Wilson intervals.

Every prediction and every extra generated set is cached in the study's store: predictions under
:data:`~bibad_utils.content_judges.PRED_STAGE` (keyed by the judge: the clean classifier's artifact key,
or the external file's kind and SHA-256, and by the key of the images judged), the sets of kept
pre-training checkpoints or of another guidance scale under :data:`GEN_STAGE`, FD-clf under :data:`FD_STAGE`.

    table = base_quality_table(study)        # per class x judge: generations read right, real ceiling
    curve = quality_curve(study)             # the same overall rate at kept pre-training checkpoints
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import pandas as pd

from bibad_utils import checkpoints, metrics
from bibad_utils import store as st
from bibad_utils.base import ConfigError
from bibad_utils.cells import GenSet
from bibad_utils.content_judges import judge_specs, predictions, real_predictions
from bibad_utils.judges import features
from bibad_utils.metrics import Z95

GEN_STAGE = "base_quality_gen"
FD_STAGE = "base_quality_fd"
ALL_CLASSES = "all classes"
NO_BASE = "no clean base DM in this profile (pretrain.steps = 0): nothing to judge"
TABLE_COLUMNS = ["judge", "class", "n", "k", "rate", "rate_lo", "rate_hi", "real_n", "real_rate", "real_lo",
                 "real_hi", "chance"]
CURVE_COLUMNS = ["step", "wall_time_s", "images_seen", "judge", "n", "k", "rate", "rate_lo", "rate_hi"]
_REAL = (("n", "n"), ("rate", "rate"), ("lo", "rate_lo"), ("hi", "rate_hi"))  # real_<column>: <_rate_row key>


def has_base(study) -> bool:
    """Whether the profile has a clean pre-trained DM (``pretrain.steps`` > 0)."""
    return study.pretrain_expected_key() is not None


def _sample_all_set(study, model_key: str, w: float, load_model: Callable, label: str, extra: dict | None = None):
    """The all-class set (the study's class mix, seeds and sampling settings) of a DM at guidance ``w``,
    cached under :data:`GEN_STAGE`; returns ``(GenSet, artifact key)``."""
    from bibad_utils.progress import choose_threads
    from bibad_utils.sampling import class_mix, sample_images, set_seeds

    s = study.cfg.sampling
    params = {"sampling": {k: s[k] for k in ("steps", "eta", "n_all", "batch_size") if k in s}, "guidance": float(w),
              "seed": study.seed, **(extra or {})}

    def build(art):
        choose_threads()
        labels = class_mix(study.train_set.class_counts(), s.n_all)
        images = sample_images(load_model(), labels, set_seeds(study.seed, "all", len(labels)), guidance=float(w),
                               steps=s.steps, eta=s.eta, batch_size=s.batch_size,
                               device=study.device, progress=study.progress, report=("generate", label))
        st.save_array(art.dir / "images.npy", images)
        st.save_array(art.dir / "labels.npy", labels)

    path = study.store.cached(GEN_STAGE, params, [model_key], build, device=str(study.device))
    gen = GenSet(st.load_array(path / "images.npy"), st.load_array(path / "labels.npy"), "all", float(w), None)
    return gen, st.artifact_key(GEN_STAGE, params, [model_key])


def base_sets(study, guidance: float | None = None) -> tuple[dict[str, GenSet], str]:
    """The base DM's class-conditional sets at ``guidance`` (None: ``sampling.guidance_all``) and the key
    of the artifact holding them: ``{"all": GenSet}`` plus ``"target"`` when the base DM has a target set
    at that w. A w the study does not sample the base DM at is sampled here (cached)."""
    if not has_base(study):
        raise ConfigError("pretrain.steps", 0, "> 0: the profile has no clean base DM")
    w = study.guidance_all if guidance is None else float(guidance)
    gens = study.generations(None)
    if ("all", w) in gens:
        sets = {name: g for (name, gw), g in gens.items() if gw == w}
        return sets, study.generation_key(None)
    gen, key = _sample_all_set(study, study.pretrain_key, w, lambda: study.model(None), f"base DM all w={w:g}")
    return {"all": gen}, key


def _pooled(sets: dict[str, GenSet], preds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    names = sorted(sets)
    return (np.concatenate([sets[n].labels for n in names]).astype(np.int64),
            np.concatenate([preds[n] for n in names]).astype(np.int64))


def _rate_row(k: int, n: int, z: float) -> dict:
    return {"n": n, "k": k, **metrics.rate_columns("rate", k, n, z)}


def base_quality_table(study, guidance: float | None = None, z: float = Z95) -> pd.DataFrame:
    """Per judge and class, the share of the base DM's class-conditional generations (the all-class set at
    ``guidance``, default ``sampling.guidance_all``, pooled with the target set at that w if there is one)
    that the judge reads as the prompt's class; then a row ``all classes`` (the all-class set alone: the
    overall rate). Columns :data:`TABLE_COLUMNS`: ``n`` generations, ``k`` read right, ``rate`` (+ Wilson
    ``rate_lo`` / ``rate_hi`` at ``z``), ``real_n`` / ``real_rate`` (+ bounds) the judge's accuracy on the
    real test images of that class (the ceiling), ``chance`` = 1 / classes. Empty (these columns) without a
    base DM. ``df.attrs``: ``guidance``, ``sets`` (names pooled), ``judges``."""
    if not has_base(study):
        return pd.DataFrame(columns=TABLE_COLUMNS)
    sets, key = base_sets(study, guidance)
    names, n_cls = list(study.class_names), len(study.class_names)
    test_labels = np.asarray(study.test_set.labels, np.int64)
    rows, judges = [], judge_specs(study)
    for judge in judges:
        preds = predictions(study, judge, key, {n: g.images for n, g in sets.items()})
        labels, pred = _pooled(sets, preds)
        real = real_predictions(study, judge)
        for c in range(n_cls):
            m, r = labels == c, test_labels == c
            row = {"judge": judge.name, "class": names[c], **_rate_row(int(np.sum(pred[m] == c)), int(m.sum()), z)}
            real_row = _rate_row(int(np.sum(real[r] == c)), int(r.sum()), z)
            rows.append({**row, **{f"real_{k}": real_row[v] for k, v in _REAL}})
        all_pred = preds["all"]
        row = {"judge": judge.name, "class": ALL_CLASSES,
               **_rate_row(int(np.sum(all_pred == sets["all"].labels)), len(all_pred), z)}
        real_row = _rate_row(int(np.sum(real == test_labels)), len(test_labels), z)
        rows.append({**row, **{f"real_{k}": real_row[v] for k, v in _REAL}})
    df = pd.DataFrame(rows)
    df["chance"] = 1.0 / n_cls
    df = df.reindex(columns=TABLE_COLUMNS)
    df.attrs.update(guidance=float(sets["all"].guidance), sets=sorted(sets), judges=[j.name for j in judges])
    return df


def _cell(rate, lo, hi) -> str:
    return "n/a" if not np.isfinite(rate) else f"{100 * rate:.0f} % [{100 * lo:.0f}, {100 * hi:.0f}]"


def format_quality_table(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`base_quality_table` for reading: one row per class (then ``all classes``), per judge a column
    ``<judge>: generations`` and ``<judge>: real test`` as ``"rate % [lo, hi]"``, then ``n`` generations."""
    if table.empty:
        return pd.DataFrame({"note": [NO_BASE]})
    out = {}
    for judge, part in table.groupby("judge", sort=False):
        part = part.set_index("class")
        out[f"{judge}: generations"] = [_cell(*v) for v in part[["rate", "rate_lo", "rate_hi"]].to_numpy()]
        out[f"{judge}: real test"] = [_cell(*v) for v in part[["real_rate", "real_lo", "real_hi"]].to_numpy()]
        out["n"] = part["n"].to_numpy()
        index = part.index
    return pd.DataFrame(out, index=pd.Index(index, name="class"))


def class_kappa(a, b, num_classes: int) -> float:
    """Cohen's kappa of two raters' class decisions ``a``, ``b`` (int ``[N]`` in ``[0, num_classes)``):
    (p_o - p_e) / (1 - p_e), p_o the share decided alike, p_e the share expected from the two raters' class
    frequencies alone. nan when undefined (no image, or p_e = 1), as ``sklearn.metrics.cohen_kappa_score``."""
    a, b = np.asarray(a, np.int64).ravel(), np.asarray(b, np.int64).ravel()
    if a.shape != b.shape:
        raise ConfigError("b", f"{len(b)} decisions", f"{len(a)} decisions, one per image of a")
    if len(a) == 0:
        return math.nan
    pa, pb = np.bincount(a, minlength=num_classes) / len(a), np.bincount(b, minlength=num_classes) / len(b)
    po, pe = float(np.mean(a == b)), float(pa @ pb)
    return math.nan if pe >= 1 else (po - pe) / (1 - pe)


def judge_agreement(study, guidance: float | None = None, z: float = Z95) -> pd.DataFrame:
    """How often the two judges give the same class on the base DM's generations (the sets of
    :func:`base_quality_table`, pooled): one row ``judges, n, n_agree, agreement`` (+ Wilson ``_lo`` /
    ``_hi``), ``kappa`` (:func:`class_kappa`) and ``both_right`` (share both read as the prompt's class).
    Empty when there is no base DM or only one judge."""
    cols = ["judges", "n", "n_agree", "agreement", "agreement_lo", "agreement_hi", "kappa", "both_right"]
    judges = judge_specs(study) if has_base(study) else []
    if len(judges) < 2:
        return pd.DataFrame(columns=cols)
    sets, key = base_sets(study, guidance)
    pooled = [_pooled(sets, predictions(study, j, key, {n: g.images for n, g in sets.items()})) for j in judges[:2]]
    labels, a, b = pooled[0][0], pooled[0][1], pooled[1][1]
    n, agree = len(a), int(np.sum(a == b))
    return pd.DataFrame([{"judges": f"{judges[0].name} vs {judges[1].name}", "n": n, "n_agree": agree,
                          **metrics.rate_columns("agreement", agree, n, z),
                          "kappa": class_kappa(a, b, len(study.class_names)),
                          "both_right": float(np.mean((a == labels) & (b == labels))) if n else math.nan}],
                        columns=cols)


def base_fd(study) -> pd.DataFrame:
    """FD-clf (:func:`bibad_utils.metrics.frechet_distance` of the clean classifier's penultimate features,
    :func:`bibad_utils.judges.features`; squared feature units) to the real test images, of the base DM's
    all-class set and, as the floor a perfect DM would reach at this sample size, of as many real training
    images (:meth:`~bibad_utils.stages.Study.real_reference_indices`). Columns ``set, n,
    fd_clf``; empty without a base DM."""
    cols = ["set", "n", "fd_clf"]
    if not has_base(study):
        return pd.DataFrame(columns=cols)
    sets, key = base_sets(study)
    gen = sets["all"]
    ref_idx = study.real_reference_indices(len(gen.labels))
    clf_key = study.judges.key("classifier")[1]

    def build(art):
        clf = study.judges.classifier()
        real = features(clf, study.test_set.images, device=study.device)
        ref = features(clf, study.train_set.images_uint8(ref_idx), device=study.device)
        rows = [{"set": f"clean base DM, all classes, w = {gen.guidance:g}", "n": len(gen.labels),
                 "fd_clf": metrics.frechet_distance(features(clf, gen.images, device=study.device), real)},
                {"set": "real train (floor)", "n": len(ref_idx), "fd_clf": metrics.frechet_distance(ref, real)}]
        st.save_json(art.dir / "fd.json", rows)

    path = study.store.cached(FD_STAGE, {"n_ref": len(ref_idx), "seed": study.seed}, [key, clf_key, study.data_key],
                              build, device=str(study.device))
    return pd.DataFrame(st.load_json(path / "fd.json"), columns=cols)


def kept_checkpoints(study) -> list[dict]:
    """The pre-training checkpoints whose EMA weights the pretrain artifact kept (``pretrain.keep_checkpoints``),
    step ascending: ``{"step", "wall_time_s" (training seconds up to it), "images_seen", "path"}``; [] when
    none (the default, a shipped base DM, or no pre-training)."""
    if not has_base(study):
        return []
    return checkpoints.kept_checkpoints(study.store.path("pretrain", study.pretrain_key))


def _choose(kept: list[dict], points) -> list[dict]:
    if points is None:
        return kept
    if isinstance(points, (int, np.integer)) and not isinstance(points, bool):
        if points < 1:
            raise ConfigError("points", points, "an integer >= 1, a list of kept steps, or None (all)")
        return checkpoints.spread(kept, points)
    steps = {r["step"]: r for r in kept}
    if not isinstance(points, (list, tuple)) or any(p not in steps for p in points):
        raise ConfigError("points", points, f"None, a count, or a list of kept checkpoint steps {sorted(steps)}")
    return [steps[p] for p in sorted(set(points))]


def quality_curve(study, points=None, z: float = Z95) -> pd.DataFrame:
    """The overall rate of :func:`base_quality_table` (all-class set at ``sampling.guidance_all``, every
    judge) at kept pre-training checkpoints (:func:`kept_checkpoints`). points: None (all kept), a count
    (evenly spread, the last included) or a list of kept steps. Each checkpoint's EMA weights draw the
    study's all-class set (same labels, seeds, settings; cached); the last one is the base DM itself, whose
    set is reused. Columns :data:`CURVE_COLUMNS` (``wall_time_s``: pre-training seconds up to the step);
    empty when nothing was kept."""
    chosen = _choose(kept_checkpoints(study), points)
    if not chosen:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    from safetensors.torch import load_file
    from bibad_utils.diffusion import load_model

    w, final = study.guidance_all, int(study.cfg.pretrain.steps)
    model_dir = study.store.path("pretrain", study.pretrain_key) / "model"
    rows = []
    for ck in chosen:
        if ck["step"] == final:
            gen, key = base_sets(study)[0]["all"], study.generation_key(None)
        else:
            def load(path=ck["path"]):
                model = load_model(model_dir)
                model.load_trainable_state(load_file(path))
                return model.to(study.device)
            gen, key = _sample_all_set(study, study.pretrain_key, w, load, f"base DM step {ck['step']}",
                                       {"checkpoint_step": int(ck["step"])})
        for judge in judge_specs(study):
            pred = predictions(study, judge, key, {"all": gen.images})["all"]
            rows.append({"step": int(ck["step"]), "wall_time_s": float(ck["wall_time_s"]),
                         "images_seen": int(ck["images_seen"]), "judge": judge.name,
                         **_rate_row(int(np.sum(pred == gen.labels)), len(pred), z)})
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)
