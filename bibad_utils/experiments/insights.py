"""Stage 04: the judges, the G1-G4 dissection of target-prompt generations, and the paper's two insights.

Every generation of the target prompt is judged twice (``PAPER.md``, Metrics): the trigger detector of
the cell's attack says whether it carries the trigger (``T``), the clean classifier whether it shows the
prompt's class (``M``). From these:

- ``G1 = T & ~M`` (the BadNets-like success: trigger and wrong content), ``G2 = T & M``, ``G3``, ``G4``;
- trigger amplification (Insight 1): ``r_gen = G1 + G2`` against ``r_train``, the trigger ratio among
  the training images that carry the target prompt;
- phase transition (Insight 2): the share of G2 among triggered generations, ``G2 / (G1 + G2)``, falls
  as p grows (G2 dominates at low p, G1 at high p).

The controls (clean, relabel-only) are judged with the detector of every attack of the profile, which
gives each detector's false-alarm level on generations of models that never saw a trigger.

Image quality: FD-clf, the Frechet distance between the clean classifier's penultimate features of a
model's all-class generations and of the real test images (a proxy in the spirit of FID, not comparable
with FID values), and the classifier's accuracy on those generations. Inception FID is added only where
torchvision's Inception-v3 weights are on disk and the images are large enough for it to mean something.

All ratios are fractions in [0, 1]. Tables are tidy pandas DataFrames, one row per (cell, detector, w).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from bibad_utils import metrics
from bibad_utils import store as st
from bibad_utils.config import ConfigError
from bibad_utils.plots import G_COLORS, PALETTE, REF_COLOR
from bibad_utils import paper, verdicts
from bibad_utils.report import claim_row, verdict_greater

STAGE = "04_insights"
JUDGED_STAGE = "insights_judged"
FID_MODES = ("auto", "inception", "off")
# Inception features of 16-32 px images blown up to 299 px say little about them, and cost about a
# minute per thousand images on one CPU core: "auto" computes FID from this side length on.
FID_MIN_IMAGE_SIZE = 64

# The paper's numbers used as reference points (fractions) are in bibad_utils.paper: r_train
# (paper.R_TRAIN) and the G1 / G2 ratios of random poisoning (paper.DUPLICATES, "poison random images").


# ------------------------------------------------------------------------------------ pure helpers

def newcombe_difference(k1: int, n1: int, k2: int, n2: int, z: float = 1.96) -> tuple[float, float, float]:
    """Difference of two proportions ``k1/n1 - k2/n2`` with Newcombe's hybrid score interval (built
    from the two Wilson intervals; Newcombe 1998, method 10).

    Returns ``(d, lo, hi)`` in [-1, 1]; ``d`` is nan and the interval ``(-1, 1)`` when a sample is empty.
    """
    from bibad_utils.metrics import newcombe_difference as _newcombe

    return _newcombe(k1, n1, k2, n2, z)


def g_row(trigger, match, *, r_train: float, z: float = 1.96, **keys) -> dict:
    """One row of the G table from the judges' decisions on N target-prompt generations.

    Args:
        trigger: bool ``[N]``, the trigger detector fired (``T``).
        match: bool ``[N]``, the clean classifier predicts the prompt's class (``M``).
        r_train: trigger ratio among the target-prompt training images, in [0, 1] (0 for the controls).
        **keys: identifying columns put first (cell, attack, ratio, detector, guidance, ...).

    Returns:
        the row of :func:`bibad_utils.metrics.g_table` (counts, ratios and Wilson bounds of G1-G4 and
        r_gen, r_train, amplification = r_gen / r_train, inf/nan when r_train = 0) plus ``G2_share`` =
        G2 / (G1 + G2) with its Wilson bounds (nan, (0, 1) without triggered images), and
        ``G1_minus_r_train`` / ``G2_minus_r_train`` (the quantities of the paper's Insight 2 figure,
        as ratios).
    """
    row = metrics.g_table(trigger, match, r_train=r_train, z=z, **keys)
    n_trig = row["n_G1"] + row["n_G2"]
    row["n_triggered"] = n_trig
    row["G2_share"] = row["n_G2"] / n_trig if n_trig else math.nan
    row["G2_share_lo"], row["G2_share_hi"] = metrics.wilson_interval(row["n_G2"], n_trig, z)
    row["G1_minus_r_train"] = row["G1"] - r_train
    row["G2_minus_r_train"] = row["G2"] - r_train
    return row


def phase_verdict(rows, z: float = 1.96) -> dict:
    """Verdict of Insight 2 for one attack from its rows at every p of the profile
    (:func:`bibad_utils.verdicts.phase_transition`: the slides' quantities G1 - r_train and G2 - r_train
    per p, and a significant fall of the G2 share G2 / (G1 + G2), not a crossing of one half).

    ``rows``: rows of :func:`g_row` (need ``ratio``, ``n``, ``n_G1``, ``n_G2``, ``r_train``), two or more.
    The paper's drop of the G2 share on ImageNette (5 -> 10 %) is the effect a test must be able to see
    before a miss counts as "not reproduced".

    Returns the dict of :func:`~bibad_utils.verdicts.phase_transition` plus ``share_low`` / ``share_high``
    (the G2 share at the lowest and the highest p).
    """
    pts = [{"p": float(r["ratio"]), "n": int(r["n"]), "n_G1": int(r["n_G1"]), "n_G2": int(r["n_G2"]),
            "r_train": float(r["r_train"])} for r in rows]
    effect = paper.g2_share(0.05) - paper.g2_share(0.10)
    out = verdicts.phase_transition(pts, paper_effect=effect, z=z)
    out["share_low"], out["share_high"] = out["points"][0]["G2_share"], out["points"][-1]["G2_share"]
    return out


def control_verdict(r_gen_lo: float, fpr_hi: float, poisoned_lo: float | None) -> str:
    """Verdict of "a control (no trigger in training) generates no trigger".

    Reproduced when the control's trigger ratio is consistent with the detector's false alarms on real
    clean images (its lower bound ``r_gen_lo`` at most the FPR's upper bound ``fpr_hi``); partly when it
    is above them but still below the poisoned model's lower bound ``poisoned_lo`` (None: no poisoned
    reference); not reproduced otherwise.
    """
    if r_gen_lo <= fpr_hi:
        return "reproduced"
    if poisoned_lo is not None and r_gen_lo < poisoned_lo:
        return "partly"
    return "not reproduced"


def _pct(x: float) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{100 * x:.1f} %"


def _p_label(ratio: float) -> str:
    return f"{100 * ratio:g}%"


# ------------------------------------------------------------------------------------- judging

def detectors_for(study, cell) -> list[str]:
    """Trigger kinds whose detector judges ``cell``'s generations: its own trigger, or every attack of
    the profile for a control (which carries none)."""
    return [cell.trigger_kind] if cell.trigger_kind else list(study.cfg["attacks"])


def judged(study, cell, detector: str) -> dict:
    """Decisions of the judges on every generation set of ``cell`` (cached in the store).

    Returns ``{(set_name, w): {"trigger": bool [N], "p_trigger": float32 [N] (detector's P(trigger)),
    "pred": int64 [N] (classifier's class), "match": bool [N] (pred == prompt's class),
    "labels": int64 [N]}}``; the all-class set also has ``"features"``: float32 ``[N, D]`` penultimate
    features of the clean classifier (for FD-clf).
    """
    from bibad_utils.judges import features, predict

    gens = study.generations(cell)
    params = {"judges": study.cfg["judges"], "seed": study.seed, "detector": detector,
              "trigger": study.cfg["triggers"].get(detector)}
    inputs = [study.generation_key(cell), study.data_key]

    def build(art):
        clf, det = study.classifier(), study.detector(detector)
        for (name, w), gen in gens.items():
            folder = art.dir / f"{name}_w{w:g}"
            folder.mkdir()
            pred, _ = predict(clf, gen.images, device=study.device)
            _, p_trig = predict(det, gen.images, device=study.device)
            st.save_array(folder / "pred.npy", pred)
            st.save_array(folder / "p_trigger.npy", p_trig[:, 1])
            if name == "all":
                st.save_array(folder / "features.npy", features(clf, gen.images, device=study.device))

    path = study.store.cached(JUDGED_STAGE, params, inputs, build, device=str(study.device))
    out = {}
    for (name, w), gen in gens.items():
        folder = path / f"{name}_w{w:g}"
        pred = st.load_array(folder / "pred.npy")
        p_trig = st.load_array(folder / "p_trigger.npy")
        rec = {"trigger": p_trig > 0.5, "p_trigger": p_trig, "pred": pred, "match": pred == gen.labels,
               "labels": gen.labels}
        if (folder / "features.npy").is_file():
            rec["features"] = st.load_array(folder / "features.npy")
        out[(name, w)] = rec
    return out


def trigger_r_train(study, cell) -> float:
    """Trigger ratio among ``cell``'s target-prompt training images (0 for the controls: relabel-only
    puts target labels on images without a trigger)."""
    return float(study.poison_manifest(cell)["r_train"]) if cell.trigger_kind else 0.0


# --------------------------------------------------------------------------------------- tables

def judge_table(study) -> pd.DataFrame:
    """Held-out error rates of the judges, with 95 % Wilson bounds: one row for the clean classifier
    (accuracy on the real test set) and one per attack's trigger detector (accuracy, FPR on clean and
    FNR on triggered non-target test images). Columns: judge, kind, n, accuracy(_lo/_hi),
    fpr(_lo/_hi), fnr(_lo/_hi); rates are fractions, nan where they do not apply."""
    rows = []
    c = study.classifier_report()
    rows.append({"judge": "clean classifier", "kind": "classifier", "n": c["n"], "accuracy": c["accuracy"],
                 "accuracy_lo": c["accuracy_lo"], "accuracy_hi": c["accuracy_hi"]})
    for kind in study.cfg["attacks"]:
        d = study.detector_report(kind)
        row = {"judge": f"{kind} detector", "kind": "trigger_detector", "n": d["n_clean"] + d["n_triggered"]}
        for m in ("accuracy", "fpr", "fnr"):
            row[m], row[f"{m}_lo"], row[f"{m}_hi"] = d[m], d[f"{m}_lo"], d[f"{m}_hi"]
        rows.append(row)
    cols = ["judge", "kind", "n"] + [f"{m}{s}" for m in ("accuracy", "fpr", "fnr") for s in ("", "_lo", "_hi")]
    return pd.DataFrame(rows).reindex(columns=cols)


def reference_cell(study):
    """The model whose generations calibrate the judges on generated images: the clean control when the
    profile trains one, else the pre-trained clean model (None), else None when neither exists."""
    clean = [c for c in study.control_cells() if c.kind == "clean"]
    if clean:
        return clean[0]
    return None if study.pretrain_key is not None else False


def generated_judge_table(study, z: float = 1.96) -> pd.DataFrame:
    """The judges on GENERATED images with a known answer: the all-class generations of a clean DM
    (:func:`reference_cell`), which carry no trigger and show their prompt's class if the DM learned it.

    Rows: ``clean classifier`` (accuracy = generations assigned to their prompt's class) and, per attack,
    ``<kind> detector`` with ``fpr`` (clean generations flagged) and ``tpr`` (the same generations with
    the attack's trigger pasted on, flagged). Columns: judge, n, accuracy/fpr/tpr with Wilson ``_lo`` /
    ``_hi``; empty when the profile has no clean model. A judge fit for the G ratios has a high accuracy
    and TPR and a low FPR here, not only on real test images (:func:`judge_table`)."""
    from bibad_utils.data import to_float, to_uint8
    from bibad_utils.judges import predict

    ref = reference_cell(study)
    if ref is False:
        return pd.DataFrame(columns=["judge", "n"])
    gen = study.generations(ref)[("all", study.guidance_all)]
    n = len(gen.labels)

    def rate(name, k):
        lo, hi = metrics.wilson_interval(int(k), n, z)
        return {name: k / n, f"{name}_lo": lo, f"{name}_hi": hi}

    pred, _ = predict(study.classifier(), gen.images, device=study.device)
    rows = [{"judge": "clean classifier", "n": n, **rate("accuracy", int((pred == gen.labels).sum()))}]
    for kind in study.cfg["attacks"]:
        det = study.detector(kind)
        fired, _ = predict(det, gen.images, device=study.device)
        pasted = to_uint8(study.trigger(kind).apply(to_float(gen.images)))
        caught, _ = predict(det, pasted, device=study.device)
        rows.append({"judge": f"{kind} detector", "n": n, **rate("fpr", int(fired.sum())),
                     **rate("tpr", int(caught.sum()))})
    cols = ["judge", "n"] + [f"{m}{s}" for m in ("accuracy", "fpr", "tpr") for s in ("", "_lo", "_hi")]
    return pd.DataFrame(rows).reindex(columns=cols)


def judge_augmentation_ablation(study, z: float = 1.96) -> pd.DataFrame:
    """:func:`generated_judge_table` for the profile's judges and for the same judges trained WITHOUT
    photometric augmentation (``color_jitter = blur = noise = 0``; cached like any judge), stacked with a
    ``judges`` column ("as configured" | "no photometric augmentation"). When the profile's judges use
    no photometric augmentation there is only the first block."""
    from bibad_utils.judges import PHOTOMETRIC_KEYS

    blocks = [generated_judge_table(study, z).assign(judges="as configured")]
    if any(study.cfg["judges"].get(k, 0) for k in PHOTOMETRIC_KEYS):
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


def g_table(study, z: float = 1.96) -> pd.DataFrame:
    """The G1-G4 dissection of every cell's target-prompt generations at every guidance w.

    One row per (cell, detector, w): ``cell`` (name), ``attack`` (the cell's kind: clean | relabel |
    a trigger), ``control`` (bool), ``ratio`` (p), ``p`` (label like "10%"), ``detector``, ``guidance``,
    ``n_poison``, then the columns of :func:`g_row` (G1-G4 and r_gen with counts and Wilson bounds,
    r_train, amplification, G2_share, G1/G2_minus_r_train). Controls appear once per detector.
    """
    rows = []
    for cell in study.cells():
        r_train = trigger_r_train(study, cell)
        n_poison = int(study.poison_manifest(cell)["n_poison"])
        for det in detectors_for(study, cell):
            judgments = judged(study, cell, det)
            for (name, w), j in judgments.items():
                if name != "target":
                    continue
                rows.append(g_row(j["trigger"], j["match"], r_train=r_train, z=z, cell=cell.name,
                                  attack=cell.kind, control=cell.trigger_kind is None, ratio=cell.ratio,
                                  p=_p_label(cell.ratio), detector=det, guidance=w, n_poison=n_poison))
    return pd.DataFrame(rows)


def first_guidance(study) -> float:
    """The profile's first guidance scale: the one the claims are stated at."""
    return float(study.cfg["sampling"]["guidance"][0])


def phase_transition(df: pd.DataFrame, guidance: float | None = None) -> pd.DataFrame:
    """Insight 2 per attack across p, at one guidance (default: the first in ``df``).

    ``df``: the output of :func:`g_table`. Returns the grid rows (no controls), sorted by attack then p,
    with columns attack, ratio, p, guidance, n, n_G1, n_G2, G1, G2, r_gen (+ Wilson bounds), r_train,
    amplification, G1_minus_r_train, G2_minus_r_train, G2_share (+ bounds), and ``dominant``: "G1", "G2" or "tie",
    the larger of the two among triggered generations ("none" without triggered generations).
    """
    need = ["attack", "control", "ratio", "guidance", "n_G1", "n_G2", "G1", "G2", "r_train"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ConfigError("df", f"columns {list(df.columns)}", f"a g_table DataFrame (missing {missing})")
    if guidance is None:
        guidance = float(df["guidance"].iloc[0])
    rows = df[(~df["control"].astype(bool)) & (df["guidance"] == guidance)].copy()
    if rows.empty:
        raise ConfigError("guidance", guidance, f"a guidance of the table: {sorted(df['guidance'].unique())}")
    rows["dominant"] = np.select([rows["n_G1"] + rows["n_G2"] == 0, rows["n_G1"] > rows["n_G2"],
                                  rows["n_G2"] > rows["n_G1"]], ["none", "G1", "G2"], "tie")
    order = {a: k for k, a in enumerate(pd.unique(rows["attack"]))}
    rows = rows.sort_values(["attack", "ratio"], key=lambda s: s.map(order) if s.name == "attack" else s)
    cols = ["attack", "ratio", "p", "guidance", "n", "n_G1", "n_G2", "G1", "G1_lo", "G1_hi", "G2", "G2_lo",
            "G2_hi", "r_gen", "r_gen_lo", "r_gen_hi", "r_train", "amplification", "G1_minus_r_train",
            "G2_minus_r_train", "G2_share", "G2_share_lo", "G2_share_hi", "dominant"]
    return rows.reindex(columns=[c for c in cols if c in rows.columns]).reset_index(drop=True)


def controls_table(gdf: pd.DataFrame, jdf: pd.DataFrame, guidance: float | None = None) -> pd.DataFrame:
    """The controls at one guidance (default: the first in ``gdf``) beside each detector's false-positive
    rate on real clean images and the poisoned DM at the largest p of that detector's attack: columns
    cell, detector, n, r_gen (+ bounds), G1, G2, det_fpr (+ upper bound), poisoned_r_gen."""
    if guidance is None:
        guidance = float(gdf["guidance"].iloc[0])
    at_w = gdf[gdf["guidance"] == guidance]
    rows = []
    for _, c in at_w[at_w["control"].astype(bool)].iterrows():
        det = jdf[jdf["judge"] == f"{c['detector']} detector"]
        pois = at_w[(~at_w["control"].astype(bool)) & (at_w["attack"] == c["detector"])].sort_values("ratio")
        rows.append({"cell": c["cell"], "detector": c["detector"], "n": c["n"], "r_gen": c["r_gen"],
                     "r_gen_lo": c["r_gen_lo"], "r_gen_hi": c["r_gen_hi"], "G1": c["G1"], "G2": c["G2"],
                     "det_fpr": float(det["fpr"].iloc[0]) if len(det) else math.nan,
                     "det_fpr_hi": float(det["fpr_hi"].iloc[0]) if len(det) else math.nan,
                     "poisoned_r_gen": float(pois["r_gen"].iloc[-1]) if len(pois) else math.nan})
    return pd.DataFrame(rows)


def dissection_frame(df: pd.DataFrame, guidance: float | None = None) -> pd.DataFrame:
    """Rows for the stacked G1-G4 bars: per detector (= attack), the controls judged by it and then the
    attack's cells in increasing p, at one guidance (default: the first in ``df``); a ``label`` column
    names the bar (clean, relabel, p=...)."""
    if guidance is None:
        guidance = float(df["guidance"].iloc[0])
    rows = df[df["guidance"] == guidance].copy()
    rows = rows[rows["control"].astype(bool) | (rows["attack"] == rows["detector"])]
    rows["label"] = np.where(rows["control"].astype(bool), rows["attack"], "p=" + rows["p"].astype(str))
    rows["_order"] = np.where(rows["control"].astype(bool), -1.0, rows["ratio"])
    order = {a: k for k, a in enumerate(pd.unique(rows["detector"]))}
    rows["_det"] = rows["detector"].map(order)
    return rows.sort_values(["_det", "_order"], kind="stable").drop(columns=["_order", "_det"]).reset_index(drop=True)


def group_examples(study, cell, guidance: float, n: int = 8, seed: int = 0) -> dict:
    """Up to ``n`` target-prompt generations of ``cell`` at ``guidance`` from each group G1-G4, drawn
    with ``numpy.random.default_rng(seed)``: ``{group: (uint8 [k, H, W, 3] images, k titles)}``, the
    title being the clean classifier's predicted class name."""
    if not cell.trigger_kind:
        raise ConfigError("cell", cell.name, "a poisoned cell of the grid (the controls have no trigger)")
    j = judged(study, cell, cell.trigger_kind)[("target", float(guidance))]
    images = study.generations(cell)[("target", float(guidance))].images
    t, m = j["trigger"], j["match"]
    masks = {"G1": t & ~m, "G2": t & m, "G3": ~t & ~m, "G4": ~t & m}
    rng = np.random.default_rng(seed)
    names = study.class_names
    out = {}
    for g, mask in masks.items():
        idx = np.flatnonzero(mask)
        idx = np.sort(rng.choice(idx, size=min(n, len(idx)), replace=False)) if len(idx) else idx
        out[g] = (np.asarray(images[idx]), [names[int(k)] for k in j["pred"][idx]])
    return out


def examples_figure(study, cell, guidance: float, n: int = 8, seed: int = 0, nrow: int = 2) -> Figure:
    """Example target-prompt generations of ``cell`` from each group G1-G4 (see :func:`group_examples`),
    one panel per group (headed G1..G4, ``nrow`` images per row; an empty group says so), each image
    headed by the clean classifier's predicted class."""
    from bibad_utils.plots import side_by_side_grids

    ex = group_examples(study, cell, guidance, n=n, seed=seed)
    fig = side_by_side_grids({g: images for g, (images, _) in ex.items()}, nrow=nrow,
                             titles={g: titles for g, (_, titles) in ex.items() if titles})
    fig.suptitle(f"{cell.name}: target-prompt generations at w = {guidance:g}, by group "
                 f"(detector: {cell.trigger_kind or study.cfg['attacks'][0]})", fontsize=10, fontweight="bold")
    return fig


# ---------------------------------------------------------------------------------------- quality

def inception_weights_path() -> Path:
    """Where torchvision keeps its Inception-v3 ImageNet weights (they are read only from there)."""
    import torch
    import torchvision

    url = torchvision.models.Inception_V3_Weights.IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name


def inception_net(state_dict: dict | None = None):
    """torchvision's Inception-v3 with its classifier removed (outputs the 2048 pool features), in
    eval mode. ``state_dict``: its ImageNet weights (None: random weights, for tests only)."""
    import torch
    import torchvision

    net = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=state_dict is None,
                                          transform_input=False)
    if state_dict is not None:
        net.load_state_dict(state_dict)
    net.fc = torch.nn.Identity()
    return net.eval()


def inception_features(net, images, batch_size: int = 64, device="cpu") -> np.ndarray:
    """Pool features float32 ``[N, 2048]`` of uint8 ``[N, H, W, 3]`` images, each resized to 299 px
    (bilinear, antialiased) and ImageNet-normalised."""
    import torch
    import torch.nn.functional as F

    from bibad_utils.data import to_float

    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ConfigError("images", f"{images.dtype} {images.shape}", "uint8 [N, H, W, 3]")
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1).to(device)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1).to(device)
    net = net.to(device)
    out = []
    with torch.inference_mode():
        for s in range(0, len(images), batch_size):
            x = to_float(images[s:s + batch_size]).to(device)
            x = F.interpolate(x, size=(299, 299), mode="bilinear", antialias=True, align_corners=False)
            out.append(net(((x + 1) / 2 - mean) / std).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 2048), np.float32)


def _fid_plan(study, fid: str) -> tuple[bool, str]:
    """(compute FID?, the reason when not)."""
    if fid not in FID_MODES:
        raise ConfigError("fid", fid, " | ".join(FID_MODES))
    if fid == "off":
        return False, "FID not computed (fid='off')"
    path = inception_weights_path()
    if not path.is_file():
        if fid == "inception":
            raise ConfigError("fid", fid, f"'auto' or 'off': torchvision's Inception-v3 weights are not at {path}")
        return False, f"FID not computed: torchvision's Inception-v3 weights ({path.name}) are not in the torch hub cache"
    if fid == "auto" and study.image_size < FID_MIN_IMAGE_SIZE:
        return False, (f"FID not computed: {study.image_size}-px images are below {FID_MIN_IMAGE_SIZE} px, "
                       "where Inception features are not meaningful")
    return True, ""


def largest_p_cells(study) -> dict:
    """``{attack: the grid cell of that attack with the largest p}``, in the profile's attack order."""
    largest: dict = {}
    for c in study.grid_cells():
        if c.kind not in largest or c.ratio > largest[c.kind].ratio:
            largest[c.kind] = c
    return largest


def quality_cells(study) -> list:
    """The controls and, per attack, the cell with the largest p."""
    return study.control_cells() + list(largest_p_cells(study).values())


def quality_table(study, cells=None, fid: str = "auto", z: float = 1.96) -> tuple[pd.DataFrame, str]:
    """Image quality of the DMs' all-class generations (default cells: :func:`quality_cells`).

    Returns ``(df, fid_note)``. ``df`` has one row per cell plus a first row ``real train`` (as many
    real training images as generations, drawn with the study's seed: the level FD-clf reaches with no
    generation error at this sample size). Columns: cell, attack, ratio, n, ``fd_clf`` (squared feature
    units of the clean classifier), ``clf_acc`` (+ ``_lo``/``_hi``: the classifier finds the prompt's
    class), ``trigger_rate`` (the first attack's detector fires on the all-class set, + bounds; for a
    poisoned cell its own detector), and ``fid`` when computed. ``fid_note`` says why FID is absent
    ("" when present). FD-clf and FID compare with the real test set.
    """
    from bibad_utils.judges import features, predict

    cells = quality_cells(study) if cells is None else list(cells)
    use_fid, note = _fid_plan(study, fid)
    clf = study.classifier()
    real_feats = features(clf, study.test_set.images, device=study.device)
    n_all = int(study.cfg["sampling"]["n_all"])
    rng = np.random.default_rng(study.seed)
    ref_idx = np.sort(rng.choice(len(study.train_set), size=min(n_all, len(study.train_set)), replace=False))
    ref_images = study.train_set.images_uint8(ref_idx)
    ref_labels = study.train_set.labels[ref_idx]
    net = real_incep = None
    if use_fid:
        import torch
        net = inception_net(torch.load(inception_weights_path(), map_location="cpu", weights_only=True))
        real_incep = inception_features(net, np.asarray(study.test_set.images), device=study.device)

    def row(name, attack, ratio, images, labels, feats, pred, trig):
        n = len(labels)
        k_acc, k_trig = int(np.sum(pred == labels)), int(np.sum(trig))
        r = {"cell": name, "attack": attack, "ratio": ratio, "n": n,
             "fd_clf": metrics.frechet_distance(feats, real_feats),
             "clf_acc": k_acc / n if n else math.nan, "trigger_rate": k_trig / n if n else math.nan}
        r["clf_acc_lo"], r["clf_acc_hi"] = metrics.wilson_interval(k_acc, n, z)
        r["trigger_rate_lo"], r["trigger_rate_hi"] = metrics.wilson_interval(k_trig, n, z)
        if use_fid:
            r["fid"] = metrics.frechet_distance(inception_features(net, images, device=study.device), real_incep)
        return r

    first = study.cfg["attacks"][0]
    ref_pred, _ = predict(clf, ref_images, device=study.device)
    ref_trig, _ = predict(study.detector(first), ref_images, device=study.device)
    rows = [row("real train", "real", 0.0, ref_images, ref_labels,
                features(clf, ref_images, device=study.device), ref_pred, ref_trig.astype(bool))]
    for cell in cells:
        det = cell.trigger_kind or first
        w_all = study.guidance_all
        j = judged(study, cell, det)[("all", w_all)]
        gen = study.generations(cell)[("all", w_all)]
        rows.append(row(cell.name, cell.kind, cell.ratio, gen.images, gen.labels, j["features"], j["pred"],
                        j["trigger"]))
    cols = ["cell", "attack", "ratio", "n", "fd_clf", "clf_acc", "clf_acc_lo", "clf_acc_hi", "trigger_rate",
            "trigger_rate_lo", "trigger_rate_hi"] + (["fid"] if use_fid else [])
    return pd.DataFrame(rows).reindex(columns=cols), note


# ----------------------------------------------------------------------------------------- claims

CLEAN_FALSE_ALARM_MAX = 0.10  # above this trigger ratio on the clean DM's generations, a detector is not trusted


def insight_claims(study, gdf: pd.DataFrame, jdf: pd.DataFrame | None = None,
                   qdf: pd.DataFrame | None = None, guidance: float | None = None) -> list[dict]:
    """Claim rows (:func:`bibad_utils.report.claim_row`) of this stage, at ``guidance`` (default the
    profile's first): the Trojan horse (G1 above the clean model's level at the largest p, per attack),
    Insight 1 per (attack, p), Insight 2 per attack (needs two values of p, else "not tested"), the
    controls (no trigger without a trigger in training, per detector), and image quality (informational).
    ``gdf``: :func:`g_table`; ``jdf``: :func:`judge_table` (default: computed); ``qdf``: the first element
    of :func:`quality_table` (default: no quality rows)."""
    w = first_guidance(study) if guidance is None else float(guidance)
    jdf = judge_table(study) if jdf is None else jdf
    at_w = gdf[gdf["guidance"] == w]
    grid = at_w[~at_w["control"].astype(bool)]
    controls = at_w[at_w["control"].astype(bool)]
    rows: list[dict] = []
    for attack in pd.unique(grid["attack"]):
        a = grid[grid["attack"] == attack].sort_values("ratio")
        top = a.iloc[-1]
        clean = controls[(controls["attack"] == "clean") & (controls["detector"] == attack)]
        floor = float(clean["G1"].iloc[0]) if len(clean) else 0.0
        # a detector that fires on the clean DM's generations cannot measure amplification
        clean_rate = float(clean["r_gen"].iloc[0]) if len(clean) else 0.0
        # the baseline of every claim below: the detector must not fire on the clean DM's generations
        check = verdicts.false_alarm_check(
            clean_rate, max_rate=CLEAN_FALSE_ALARM_MAX,
            what=f"share of the clean DM's target-prompt generations the {attack} detector flags")
        trojan = (verdicts.Judgement(verdict_greater(top["G1_lo"], top["G1"], floor)) if check.ok
                  else verdicts.Judgement("not tested", check.reason))
        rows.append(claim_row(
            STAGE, "Trojan horse: the poisoned DM generates trigger-carrying images of the wrong class (G1)",
            setting=f"{attack}, p={top['p']}, w={w:g}", metric="G1 ratio of target-prompt generations",
            paper=paper.paper_text("trojan_g1", p=top["ratio"]), key="trojan_g1",
            ours=top["G1"], lo=top["G1_lo"], hi=top["G1_hi"], verdict=trojan.verdict,
            note=f"reference: G1 of the clean DM under the same detector = {_pct(floor)}"
                 + (f"; not tested: {trojan.reason}" if trojan.reason else "")))
        for _, r in a.iterrows():
            g1, g2 = paper.duplicates(r["ratio"], "G1"), paper.duplicates(r["ratio"], "G2")
            rt = paper.r_train(r["ratio"])
            effect = g1[0] + g2[0] - rt if g1 and g2 and rt is not None else None
            j = verdicts.compare(r["r_gen"], r["r_gen_lo"], r["r_gen_hi"], reference=r["r_train"],
                                 paper_effect=effect, baseline=check)
            rows.append(claim_row(
                STAGE, "Insight 1, trigger amplification: r_gen > r_train",
                setting=f"{attack}, p={r['p']}, w={w:g}", metric="r_gen = G1 + G2",
                paper=paper.paper_text("amplification", p=r["ratio"]), key="amplification",
                kind="" if rt is not None else "no paper number",
                ours=r["r_gen"], lo=r["r_gen_lo"], hi=r["r_gen_hi"], verdict=j.verdict,
                note=(f"r_train = {_pct(r['r_train'])}; amplification r_gen / r_train = {r['amplification']:.2f}"
                      + (f"; paper (ImageNette): r_gen - r_train = {effect:+.3f}" if effect is not None else "")
                      + (f"; {j.verdict}: {j.reason}" if j.reason else ""))))
        phase_claim = "Insight 2, phase transition: the G2 share of triggered generations falls as p grows"
        metric = "drop of G2 / (G1 + G2) from the lowest to the highest p"
        text = paper.paper_text("phase_transition")
        if len(a) < 2:
            rows.append(claim_row(STAGE, phase_claim, setting=f"{attack}, w={w:g}", metric=metric, paper=text,
                                  key="phase_transition", ours=math.nan, verdict="not tested",
                                  note="the profile has a single poisoning ratio"))
        elif not check.ok:
            rows.append(claim_row(STAGE, phase_claim, setting=f"{attack}, w={w:g}", metric=metric, paper=text,
                                  key="phase_transition", ours=math.nan, verdict="not tested",
                                  note=f"not tested: {check.reason}"))
        else:
            pv = phase_verdict([r.to_dict() for _, r in a.iterrows()])
            slides = "; ".join(f"p={_p_label(pt['p'])}: G1 - r_train {pt['G1_minus_r_train']:+.3f}, "
                               f"G2 - r_train {pt['G2_minus_r_train']:+.3f}, G2 share {_pct(pt['G2_share'])}"
                               for pt in pv["points"])
            rows.append(claim_row(
                STAGE, phase_claim, setting=f"{attack}, p={a.iloc[0]['p']} -> {top['p']}, w={w:g}", metric=metric,
                paper=text, key="phase_transition", ours=pv["drop"], lo=pv["drop_lo"], hi=pv["drop_hi"],
                verdict=pv["verdict"], note=f"{pv['reason']}; {slides}"))
    for _, c in controls.iterrows():
        det = jdf[jdf["judge"] == f"{c['detector']} detector"]
        fpr_hi = float(det["fpr_hi"].iloc[0]) if len(det) else 0.0
        pois = grid[grid["attack"] == c["detector"]].sort_values("ratio")
        pois_lo = float(pois["r_gen_lo"].iloc[-1]) if len(pois) else None
        claim = ("Clean control: a DM trained without poison generates no trigger" if c["attack"] == "clean" else
                 "Relabel-only control: target labels without a trigger plant no trigger")
        rows.append(claim_row(
            STAGE, claim, setting=f"{c['cell']}, {c['detector']} detector, w={w:g}",
            key="clean_control" if c["attack"] == "clean" else "relabel_control",
            metric="r_gen (detector fires)", paper="~0 (no trigger in training)" if c["attack"] == "clean" else "",
            ours=c["r_gen"], lo=c["r_gen_lo"], hi=c["r_gen_hi"],
            verdict=control_verdict(c["r_gen_lo"], fpr_hi, pois_lo),
            note=f"detector FPR on real clean images <= {_pct(fpr_hi)} (95 % upper bound)"
                 + ("" if pois_lo is None else f"; poisoned DM at the largest p: r_gen >= {_pct(pois_lo)}")))
    if qdf is not None:
        clean = qdf[qdf["attack"] == "clean"]
        floor = qdf[qdf["attack"] == "real"]
        for _, q in qdf[~qdf["attack"].isin(["real", "clean", "relabel"])].iterrows():
            extra = (f"clean DM: {clean['fd_clf'].iloc[0]:.3g}; " if len(clean) else "") + (
                f"real training images: {floor['fd_clf'].iloc[0]:.3g}" if len(floor) else "")
            rows.append(claim_row(
                STAGE, "Image quality of the poisoned DM (informational, no paper number here)",
                setting=q["cell"], metric="FD-clf of all-class generations to real test images (lower: closer)",
                ours=q["fd_clf"], verdict="not tested", kind="no paper number", note=extra))
    return rows


def claims_table(rows: list[dict]) -> pd.DataFrame:
    """The claim rows as a display table: claim, setting, paper, ours with its interval (text), verdict,
    note."""
    def ours(r):
        if not np.isfinite(r["ours"]):
            return "n/a"
        if np.isfinite(r["ours_lo"]):
            return f"{r['ours']:.3f} [{r['ours_lo']:.3f}, {r['ours_hi']:.3f}]"
        return f"{r['ours']:.3g}"
    return pd.DataFrame([{"claim": r["claim"], "setting": r["setting"], "paper": r["paper"], "ours": ours(r),
                          "verdict": r["verdict"], "note": r["note"]} for r in rows])


def verdict_summary(rows: list[dict], claim_prefix: str) -> str:
    """A phrase counting the verdicts of the claims whose text starts with ``claim_prefix``, e.g.
    "6 settings: 4 reproduced, 1 partly, 1 not reproduced"."""
    sel = [r["verdict"] for r in rows if r["claim"].startswith(claim_prefix)]
    if not sel:
        return "no setting in this profile"
    counts = [(sel.count(v), v) for v in verdicts.VERDICTS]
    head = f"{len(sel)} setting{'s' if len(sel) > 1 else ''}: "
    return head + ", ".join(f"{k} {v}" for k, v in counts if k or v == "reproduced")


def shortfall_sentence(rows: list[dict]) -> str:
    """A sentence saying, from the computed verdicts, whether Insights 1 and 2 show in this run."""
    missing = []
    for prefix, name in (("Insight 1", "trigger amplification"), ("Insight 2", "the phase transition")):
        sel = [r["verdict"] for r in rows if r["claim"].startswith(prefix)]
        if not sel or all(v == "not tested" for v in sel):
            missing.append(f"{name} is not tested in this profile")
        elif any(v != "reproduced" for v in sel if v != "not tested"):
            missing.append(f"{name} is not reproduced in every setting ({verdict_summary(rows, prefix)})")
    if not missing:
        return "Both insights are reproduced in every setting of this run."
    return "In this run, " + "; ".join(missing) + "."


def glue_values(study, gdf: pd.DataFrame, jdf: pd.DataFrame, qdf: pd.DataFrame, rows: list[dict],
                gjdf: pd.DataFrame | None = None) -> dict:
    """Numbers and computed sentences the notebook's text quotes, keyed ``nb04_*``: the judges, the first
    attack at its largest p (``attack0``, ``pmax``), the clean control, and verdict summaries."""
    w = first_guidance(study)
    attack0 = study.cfg["attacks"][0]
    at_w = gdf[gdf["guidance"] == w]
    top = at_w[at_w["attack"] == attack0].sort_values("ratio").iloc[-1]
    clean = at_w[(at_w["attack"] == "clean") & (at_w["detector"] == attack0)]
    det = jdf[jdf["judge"] == f"{attack0} detector"].iloc[0]
    clf = jdf[jdf["kind"] == "classifier"].iloc[0]
    out = {
        "nb04_w": w, "nb04_attack0": attack0, "nb04_pmax": float(top["ratio"]),
        "nb04_clf_acc": float(clf["accuracy"]), "nb04_det_acc": float(det["accuracy"]),
        "nb04_det_fpr": float(det["fpr"]), "nb04_det_fnr": float(det["fnr"]),
        "nb04_g1_top": float(top["G1"]), "nb04_g2_top": float(top["G2"]), "nb04_rgen_top": float(top["r_gen"]),
        "nb04_rtrain_top": float(top["r_train"]), "nb04_amp_top": float(top["amplification"]),
        "nb04_rgen_clean": float(clean["r_gen"].iloc[0]) if len(clean) else math.nan,
        "nb04_trojan_summary": verdict_summary(rows, "Trojan horse"),
        "nb04_amp_summary": verdict_summary(rows, "Insight 1"),
        "nb04_phase_summary": verdict_summary(rows, "Insight 2"),
        "nb04_control_summary": verdict_summary(rows, "Clean control"),
        "nb04_relabel_summary": verdict_summary(rows, "Relabel-only"),
        "nb04_shortfall": shortfall_sentence(rows),
        # the paper's own G2 shares (ImageNette, random poisoning), which the phase-transition rule must pass
        "nb04_paper_share_p5": paper.g2_share(0.05), "nb04_paper_share_p10": paper.g2_share(0.10),
        "nb04_paper_share_drop": paper.g2_share(0.05) - paper.g2_share(0.10),
    }
    # judges on generations (NaN when the profile has no clean model or no ablation block)
    out.update({k: math.nan for k in ("nb04_gen_n", "nb04_gen_clf_acc", "nb04_gen_det_fpr", "nb04_gen_det_tpr",
                                      "nb04_gen_worst_fpr", "nb04_gen_worst_tpr", "nb04_plain_clf_acc",
                                      "nb04_plain_worst_fpr")})
    if gjdf is not None and len(gjdf):
        mine = gjdf[gjdf["judges"] == "as configured"] if "judges" in gjdf.columns else gjdf
        gclf = mine[mine["judge"] == "clean classifier"].iloc[0]
        gdet = mine[mine["judge"] == f"{attack0} detector"].iloc[0]
        out.update({"nb04_gen_n": int(gclf["n"]), "nb04_gen_clf_acc": float(gclf["accuracy"]),
                    "nb04_gen_det_fpr": float(gdet["fpr"]), "nb04_gen_det_tpr": float(gdet["tpr"]),
                    "nb04_gen_worst_fpr": float(mine["fpr"].max()), "nb04_gen_worst_tpr": float(mine["tpr"].min())})
        if "judges" in gjdf.columns and (gjdf["judges"] != "as configured").any():
            plain = gjdf[gjdf["judges"] != "as configured"]
            out.update({"nb04_plain_clf_acc": float(plain.loc[plain["judge"] == "clean classifier", "accuracy"].iloc[0]),
                        "nb04_plain_worst_fpr": float(plain["fpr"].max())})
    if qdf is not None and len(qdf):
        clean_q = qdf[qdf["attack"] == "clean"]
        out["nb04_fd_clean"] = float(clean_q["fd_clf"].iloc[0]) if len(clean_q) else math.nan
        out["nb04_fd_real"] = float(qdf[qdf["attack"] == "real"]["fd_clf"].iloc[0])
    return out


# ---------------------------------------------------------------------------------------- figures

def _new_axes(nrows: int, ncols: int, width: float, height: float):
    fig = Figure(figsize=(width, height), dpi=100)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat:
        ax.grid(True, color="#dddddd", linewidth=0.6)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    return fig, axes


def _errorbar(ax, x, df, col, **kw):
    y = df[col].to_numpy(dtype=float)
    err = np.vstack([y - df[f"{col}_lo"].to_numpy(dtype=float), df[f"{col}_hi"].to_numpy(dtype=float) - y])
    ax.errorbar(x, y, yerr=np.clip(err, 0, None), capsize=2.5, elinewidth=1.0, **kw)


def phase_figure(pt: pd.DataFrame) -> Figure:
    """Insight 2 from :func:`phase_transition`: top row, G1 and G2 ratios (Wilson 95 %) against p per
    attack with r_train dashed; bottom row, G1 - r_train and G2 - r_train as bars (the quantities of the
    paper's figure, as ratios)."""
    attacks = list(pd.unique(pt["attack"]))
    fig, axes = _new_axes(2, len(attacks), 3.6 * len(attacks) + 0.6, 5.6)
    for k, attack in enumerate(attacks):
        a = pt[pt["attack"] == attack]
        x = np.arange(len(a))
        top, bottom = axes[0, k], axes[1, k]
        _errorbar(top, x - 0.04, a, "G1", color=G_COLORS["G1"], marker="o", label="G1 (trigger, wrong class)")
        _errorbar(top, x + 0.04, a, "G2", color=G_COLORS["G2"], marker="s", label="G2 (trigger, right class)")
        top.plot(x, a["r_train"], color=REF_COLOR, linestyle="--", marker="_", label="r_train")
        top.set_title(attack)
        top.set_ylim(0, 1)
        top.set_xticks(x, a["p"])
        bottom.bar(x - 0.18, a["G1_minus_r_train"], width=0.36, color=G_COLORS["G1"], label="G1 - r_train")
        bottom.bar(x + 0.18, a["G2_minus_r_train"], width=0.36, color=G_COLORS["G2"], label="G2 - r_train")
        bottom.axhline(0, color=REF_COLOR, linewidth=0.8)
        bottom.set_xticks(x, a["p"])
        bottom.set_xlabel("poisoning ratio p")
        for ax in (top, bottom):
            ax.set_xlim(-0.6, len(a) - 0.4)
    axes[0, 0].set_ylabel("fraction of generations")
    axes[1, 0].set_ylabel("ratio - r_train")
    axes[0, -1].legend(fontsize=8, frameon=False, loc="upper left")
    axes[1, -1].legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def guidance_figure(gdf: pd.DataFrame) -> Figure:
    """r_gen (top) and G1 (bottom) against the guidance scale w for every poisoned cell (Wilson 95 %),
    one column per attack, one line per p; r_train dotted in the top row."""
    grid = gdf[~gdf["control"].astype(bool)]
    attacks = list(pd.unique(grid["attack"]))
    fig, axes = _new_axes(2, len(attacks), 3.6 * len(attacks) + 0.6, 5.6)
    for k, attack in enumerate(attacks):
        a = grid[grid["attack"] == attack]
        ratios = sorted(a["ratio"].unique())
        span = float(np.ptp(a["guidance"].to_numpy(dtype=float))) or 1.0
        for c, ratio in enumerate(ratios):
            r = a[a["ratio"] == ratio].sort_values("guidance")
            color = PALETTE[c % len(PALETTE)]
            # a small horizontal offset per p keeps overlapping points and intervals apart
            w = r["guidance"].to_numpy(dtype=float) + 0.015 * span * (c - (len(ratios) - 1) / 2)
            _errorbar(axes[0, k], w, r, "r_gen", color=color, marker="o", label=f"p={_p_label(ratio)}")
            axes[0, k].axhline(r["r_train"].iloc[0], color=color, linestyle=":", linewidth=1.2)
            _errorbar(axes[1, k], w, r, "G1", color=color, marker="o")
        axes[0, k].set_title(attack)
        for ax in axes[:, k]:
            ax.set_ylim(0, 1)
        axes[1, k].set_xlabel("guidance w")
    axes[0, 0].set_ylabel("r_gen (dotted: r_train)")
    axes[1, 0].set_ylabel("G1")
    axes[0, -1].legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def quality_figure(qdf: pd.DataFrame) -> Figure:
    """FD-clf (left) and the clean classifier's accuracy on the all-class generations (right, Wilson
    95 %) per row of :func:`quality_table`."""
    fig, axes = _new_axes(1, 2, 8.5, 3.2)
    x = np.arange(len(qdf))
    colors = [REF_COLOR if a == "real" else PALETTE[0] if a in ("clean", "relabel") else PALETTE[1]
              for a in qdf["attack"]]
    axes[0, 0].bar(x, qdf["fd_clf"], color=colors)
    axes[0, 0].set_ylabel("FD-clf to real test images")
    axes[0, 1].bar(x, qdf["clf_acc"], color=colors)
    _errorbar(axes[0, 1], x, qdf, "clf_acc", fmt="none", ecolor="#333333")
    axes[0, 1].set_ylim(0, 1)
    axes[0, 1].set_ylabel("classifier accuracy")
    for ax in axes[0]:
        ax.set_xticks(x, qdf["cell"], rotation=30, ha="right")
    fig.tight_layout()
    return fig
