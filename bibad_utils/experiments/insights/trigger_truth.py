"""Trigger truth on generated images: the learned detector and the training-free template side by side.

Two instruments decide whether a generation carries the trigger: the attack's learned detector
(:meth:`~bibad_utils.study_judges.StudyJudges.judged`, P(trigger) above its ``TRIGGER_THRESHOLD``) and the
trigger template (:meth:`~bibad_utils.study_judges.StudyJudges.template`, its calibrated ``fires``). Both
pass their checks on real images; which one to read on generations is measured here: :func:`agreement_table`
(both decisions on every generated set, counts, rates, Cohen's kappa), :func:`planted_check` (the clean DM's
generations with the trigger pasted at reduced contrast, a known answer; :func:`preferred_instrument` states
the rule), :func:`leak_table` (the trigger among non-target-prompt generations, against the clean DM), and
:func:`instrument_decisions` / :func:`g_rows_by_instrument` (per-image decisions and G1-G4 rows under each
reading). Rates are fractions in [0, 1]; contrasts are blend weights in [0, 1] (1: as in training).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bibad_utils import metrics
from bibad_utils.metrics import Z95, cohen_kappa
from bibad_utils import store as st
from bibad_utils.base import ConfigError
from bibad_utils.data import to_float, to_uint8
from bibad_utils.experiments.insights.groups import cell_keys, g_row, target_sets
from bibad_utils.experiments.insights.judging import detectors_for, reference_cell
from bibad_utils.judges import predict
from bibad_utils.judges.profile import judge_settings
from bibad_utils.study_judges import TRIGGER_THRESHOLD

PLANTED_STAGE = "insights_planted"
INSTRUMENTS = ("detector", "template")
# trigger contrasts of the planted check (1: as pasted in training)
PLANT_CONTRASTS = (1.0, 0.5, 0.35, 0.25, 0.15)
# the rule of preferred_instrument: detection at CHECK_CONTRAST of at least CHECK_MIN_DETECTION, false
# alarms on the unplanted images at most CHECK_MAX_FALSE_ALARM by the upper Wilson bound
CHECK_CONTRAST = 0.5
CHECK_MIN_DETECTION = 0.8
CHECK_MAX_FALSE_ALARM = 0.05


def _rate(prefix: str, fires, z: float) -> dict:
    """``<prefix>_k``, ``<prefix>`` (rate), Wilson ``<prefix>_lo`` / ``_hi`` of bool decisions (None: nan)."""
    if fires is None:
        return {f"{prefix}_{s}" if s else prefix: math.nan for s in ("k", "", "lo", "hi")}
    k = int(np.sum(fires))
    return {f"{prefix}_k": k, **metrics.rate_columns(prefix, k, len(fires), z)}


def agreement_row(detector, template, z: float = Z95) -> dict:
    """Both instruments on one set: bool ``[N]`` decisions of the detector and of the template (None: the
    trigger has no template). Returns ``n``, ``n_both``, ``n_detector_only``, ``n_template_only``,
    ``n_neither``, ``det_k`` / ``det`` / ``det_lo`` / ``det_hi`` (detector's count, rate, Wilson bounds),
    the same with ``tpl``, ``agreement`` (share decided alike) and ``kappa`` (:func:`cohen_kappa`); the
    template's and the joint columns are nan without a template."""
    d = np.asarray(detector, bool)
    t = None if template is None else np.asarray(template, bool)
    if t is not None and t.shape != d.shape:
        raise ConfigError("template", f"{len(t)} decisions", f"{len(d)} decisions, one per image")
    joint = dict.fromkeys(("n_both", "n_detector_only", "n_template_only", "n_neither"), math.nan) if t is None else \
        {"n_both": int((d & t).sum()), "n_detector_only": int((d & ~t).sum()),
         "n_template_only": int((~d & t).sum()), "n_neither": int((~d & ~t).sum())}
    return {"n": len(d), **joint, **_rate("det", d, z), **_rate("tpl", t, z),
            "agreement": math.nan if t is None or not len(d) else float(np.mean(d == t)),
            "kappa": math.nan if t is None else cohen_kappa(d, t)}


def _paired(study, cell, detector: str, gens: dict) -> dict:
    """``{(set_name, w): decisions}`` of both instruments on every generated set of ``cell`` (see
    :func:`instrument_decisions`)."""
    tpl = study.judges.template(detector)
    out = {}
    for key, j in study.judges.judged(cell, detector, gens).items():
        images = gens[key].images
        score = None if tpl is None else tpl.scores(images)  # scored once: the decisions follow from it
        out[key] = {"detector": j["trigger"], "p_trigger": j["p_trigger"],
                    "template": None if tpl is None else tpl.decide(score), "template_score": score,
                    "match": j["match"], "labels": j["labels"], "images": images}
    return out


def instrument_decisions(study, cell, detector: str | None = None, set_name: str = "target",
                         guidance: float | None = None) -> dict:
    """Per-image trigger decisions of both instruments on one generated set of ``cell``.

    ``detector``: the trigger kind whose detector and template read the set (default the cell's own; a
    control needs one of the profile's attacks). ``set_name``: "target" (guidance default: the profile's
    first w) or "all" (the all-class set, at ``study.guidance_all``). Returns ``{"detector": bool [N],
    "p_trigger": float32 [N], "template": bool [N] or None (no template: a warp), "template_score":
    float64 [N] or None, "match": bool [N] (the clean classifier sees the prompt's class), "labels":
    int64 [N] (the prompts' classes), "images": uint8 [N, H, W, 3]}``. G rows under either reading:
    ``g_row(d["template"], d["match"], r_train=...)``."""
    detector = detector or cell.trigger_kind
    if detector not in study.cfg.attacks:
        raise ConfigError("detector", detector, f"a trigger kind of the profile: {list(study.cfg.attacks)}")
    if set_name not in ("target", "all"):
        raise ConfigError("set_name", set_name, "'target' or 'all'")
    w = float(study.guidance_all if set_name == "all" else study.first_guidance if guidance is None else guidance)
    gens = study.generations(cell)
    if (set_name, w) not in gens:
        raise ConfigError("guidance", guidance, f"a guidance of {cell.name}'s sets: {sorted(gens)}")
    return _paired(study, cell, detector, gens)[(set_name, w)]


def agreement_table(study, z: float = Z95) -> pd.DataFrame:
    """Both instruments on every generated set of every cell: one row per (cell, detector, set, w) (the
    controls once per attack), columns cell, attack, control, ratio, p, detector, set ("target" | "all"),
    guidance, ``template_passes`` (the template's own check on real images), then :func:`agreement_row`.
    Reads the cached judgments; the template scores the images anew (seconds)."""
    rows = []
    for cell in study.cells():
        gens = study.generations(cell)
        for det in detectors_for(study, cell):
            rep = study.judges.template_report(det)
            for (name, w), d in _paired(study, cell, det, gens).items():
                rows.append({**cell_keys(cell), "detector": det, "set": name, "guidance": w,
                             "template_passes": bool(rep and rep["passes"]),
                             **agreement_row(d["detector"], d["template"], z)})
    return pd.DataFrame(rows)


def g_rows_by_instrument(study, z: float = Z95) -> pd.DataFrame:
    """The G1-G4 rows of :func:`~bibad_utils.experiments.insights.groups.g_table` (target-prompt sets, every
    w) once per instrument: column ``instrument`` ("detector" | "template") says which decided ``T``; the
    template's rows are absent where the trigger has none. ``df[df.instrument == "template"]`` goes into
    :func:`~bibad_utils.experiments.insights.groups.phase_transition` like a G table."""
    rows = []
    for keys, gen, j, det in target_sets(study):
        tpl = study.judges.template(det)
        for inst, fires in (("detector", j["trigger"]), ("template", None if tpl is None else tpl.fires(gen.images))):
            if fires is not None:
                rows.append(g_row(fires, j["match"], z=z, **keys, instrument=inst))
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------ the planted check
def plant(trigger, images, contrast: float) -> np.ndarray:
    """uint8 images ``[N, H, W, 3]`` with ``trigger`` pasted at ``contrast`` c in [0, 1]: ``(1 - c) x +
    c trigger(x)`` in float, rounded to uint8 (c = 1: the trigger as in training; 0: the image)."""
    if not 0 <= contrast <= 1:
        raise ConfigError("contrast", contrast, "a blend weight in [0, 1]")
    x = to_float(np.asarray(images))
    return to_uint8((1 - contrast) * x + contrast * trigger.apply(x))


def planted_decisions(images, trigger, instruments: dict, contrasts=PLANT_CONTRASTS) -> dict:
    """``{instrument: {contrast: bool [N]}}``: each of ``instruments`` (name -> a function of uint8 images
    ``[N, H, W, 3]`` returning bool ``[N]``, e.g. a template's ``fires``) on ``images`` unplanted
    (contrast 0) and with ``trigger`` pasted at each contrast (:func:`plant`)."""
    out = {name: {} for name in instruments}
    for c in (0.0, *(float(c) for c in contrasts)):
        x = plant(trigger, images, c)
        for name, fires in instruments.items():
            out[name][c] = np.asarray(fires(x), bool)
    return out


def planted_rows(decisions: dict, z: float = Z95, **keys) -> list[dict]:
    """Rows of the planted check from ``decisions`` = ``{instrument: {contrast: bool [N]}}`` (contrast 0:
    the unplanted images): ``**keys`` first, then instrument, contrast, ``measure`` ("false alarm" at 0,
    "detection" above), n, k, rate, rate_lo, rate_hi (Wilson)."""
    rows = []
    for inst, by_c in decisions.items():
        for c in sorted(by_c):
            r = _rate("rate", np.asarray(by_c[c], bool), z)
            rows.append({**keys, "instrument": inst, "contrast": float(c), "n": len(by_c[c]),
                         "measure": "false alarm" if c == 0 else "detection", "k": r.pop("rate_k"), **r})
    return rows


def planted_images(study):
    """``(images, label)``: the clean DM's target-prompt generations at the first w (the pre-trained clean
    DM's all-class set when the profile trains no clean control), or ``(None, reason)`` without a clean DM."""
    ref = reference_cell(study)
    if ref is False:
        return None, "the profile has no clean DM"
    if ref is None:
        return study.generations(None)[("all", study.guidance_all)].images, "pre-trained DM, all-class set"
    w = study.first_guidance
    return study.generations(ref)[("target", w)].images, f"{ref.name}, target prompt, w = {w:g}"


def planted_check(study, contrasts=PLANT_CONTRASTS, z: float = Z95) -> pd.DataFrame:
    """Each attack's two instruments on clean generations with its trigger pasted at each contrast of
    ``contrasts`` (:func:`plant`) and on the same images unplanted (contrast 0, false alarms).

    Rows of :func:`planted_rows` with ``attack`` and ``images`` (which set) first; no template rows for a
    trigger without one (a warp, whose "contrast" is a partial warp). The detector's probabilities are
    cached in the store (stage :data:`PLANTED_STAGE`); the template scores anew. Deterministic: pasting
    draws nothing. Empty without a clean DM."""
    contrasts = tuple(float(c) for c in contrasts)
    if not contrasts or any(not 0 < c <= 1 for c in contrasts):
        raise ConfigError("contrasts", contrasts, "blend weights in (0, 1]")
    images, label = planted_images(study)
    if images is None:
        return pd.DataFrame(columns=["attack", "images", "instrument", "contrast", "measure", "n", "k", "rate"])
    levels, ref, rows = (0.0,) + contrasts, reference_cell(study), []
    for kind in study.cfg.attacks:
        trigger = study.trigger(kind)
        planted = {c: plant(trigger, images, c) for c in levels}

        def build(art, kind=kind, planted=planted):
            det = study.judges.detector(kind)
            for c, x in planted.items():
                st.save_array(art.dir / f"p_trigger_c{c:g}.npy", predict(det, x, device=study.device)[1][:, 1])

        params = {"judges": judge_settings(study.cfg.judges), "seed": study.seed, "detector": kind,
                  "trigger": study.cfg.triggers.get(kind), "contrasts": list(levels), "images": label}
        # the detector's own key among the inputs: a detector of another recipe never reuses these probabilities
        inputs = [study.generation_key(ref), study.data_key, study.judges.key(kind)[1]]
        path = study.store.cached(PLANTED_STAGE, params, inputs, build, device=str(study.device))
        decisions = {"detector": {c: st.load_array(path / f"p_trigger_c{c:g}.npy") > TRIGGER_THRESHOLD for c in levels}}
        tpl = study.judges.template(kind)
        if tpl is not None:
            decisions.update(planted_decisions(images, trigger, {"template": tpl.fires}, contrasts))
        rows += planted_rows(decisions, z, attack=kind, images=label)
    return pd.DataFrame(rows)


def instrument_passes(check, attack: str, instrument: str, contrast: float = CHECK_CONTRAST) -> dict:
    """Whether ``instrument`` passes the planted check of ``attack`` (rows of :func:`planted_check`): its
    detection rate at ``contrast`` is at least :data:`CHECK_MIN_DETECTION` (point estimate) AND the upper Wilson
    bound of its false-alarm rate on the unplanted images is at most :data:`CHECK_MAX_FALSE_ALARM`. Returns
    ``{"detection", "false_alarm", "false_alarm_hi", "passes", "reason"}`` (reason: why not, "" when it
    passes); an instrument without rows (no template) fails with that reason and nan rates."""
    df = pd.DataFrame(check)
    rows = df[(df["attack"] == attack) & (df["instrument"] == instrument)] if len(df) else df
    if rows.empty:
        return {"detection": math.nan, "false_alarm": math.nan, "false_alarm_hi": math.nan, "passes": False,
                "reason": f"no {instrument} rows for {attack}"}
    at_c, fa = rows[np.isclose(rows["contrast"].astype(float), contrast)], rows[rows["contrast"].astype(float) == 0]
    if at_c.empty or fa.empty:
        raise ConfigError("contrast", contrast, f"a contrast of the check: {sorted(set(rows['contrast']))}")
    out = {"detection": float(at_c["rate"].iloc[0]), "false_alarm": float(fa["rate"].iloc[0]),
           "false_alarm_hi": float(fa["rate_hi"].iloc[0])}
    problems = []
    if not out["detection"] >= CHECK_MIN_DETECTION:
        problems.append(f"detects {out['detection']:.1%} at contrast {contrast:g} (needs >= {CHECK_MIN_DETECTION:.0%})")
    if not out["false_alarm_hi"] <= CHECK_MAX_FALSE_ALARM:
        problems.append(f"false alarms up to {out['false_alarm_hi']:.1%} (needs <= {CHECK_MAX_FALSE_ALARM:.0%})")
    return {**out, "passes": not problems, "reason": "; ".join(problems)}


def preferred_instrument(check_rows, attack: str, contrast: float = CHECK_CONTRAST) -> str:
    """The instrument to read ``attack``'s generated triggers with, from the planted check
    (:func:`planted_check` rows, a DataFrame or a list of dicts).

    Rule: an instrument passes when, on the clean DM's generations with the trigger pasted at contrast
    ``contrast`` (default 0.5, half the training contrast: the faint corner patches generated images
    show), it detects at least :data:`CHECK_MIN_DETECTION` of them (0.8, point estimate), while on the same
    images unplanted the upper 95 % Wilson bound of its false-alarm rate is at most :data:`CHECK_MAX_FALSE_ALARM`
    (0.05). Returns "detector" or "template" when exactly that one passes, "both" when both do,
    "none" when neither does (an attack without a template can give only "detector" or "none")."""
    ok = {inst: instrument_passes(check_rows, attack, inst, contrast)["passes"]
          for inst in INSTRUMENTS}
    return "both" if all(ok.values()) else "none" if not any(ok.values()) else next(k for k, v in ok.items() if v)


def check_verdicts(check: pd.DataFrame, contrast: float = CHECK_CONTRAST) -> pd.DataFrame:
    """The planted check per attack and instrument (those with rows): attack, instrument, contrast, the
    columns of :func:`instrument_passes`, and the attack's ``preferred`` (:func:`preferred_instrument`)."""
    rows = []
    for attack in (pd.unique(check["attack"]) if len(check) else []):
        preferred = preferred_instrument(check, attack, contrast)
        for inst in pd.unique(check[check["attack"] == attack]["instrument"]):
            rows.append({"attack": attack, "instrument": inst, "contrast": contrast,
                         **instrument_passes(check, attack, inst, contrast), "preferred": preferred})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------ the leak
def leak_table(study, z: float = Z95) -> pd.DataFrame:
    """The trigger among the non-target-prompt generations of every DM's all-class set (clean included),
    under each instrument: one row per (cell, detector, instrument) (controls once per attack; no template
    row for a trigger without one), columns cell, attack, control, ratio, p, detector, instrument, guidance,
    n, leak_k (images with the trigger), leak (leak_k / n) with Wilson ``leak_lo`` / ``leak_hi``, and
    ``vs_clean`` with Newcombe ``vs_clean_lo`` / ``_hi``: the difference to the clean DM's leak under the
    same detector and instrument (nan for the clean DM itself and where the profile trains no clean control)."""
    ref = reference_cell(study)
    rows, clean = [], {}
    for cell in study.cells():
        gens = study.generations(cell)
        for det in detectors_for(study, cell):
            for (name, w), d in _paired(study, cell, det, gens).items():
                if name != "all" or w != study.guidance_all:  # the clean DM has no further all-class sets
                    continue
                keep = d["labels"] != study.target
                for inst in INSTRUMENTS:
                    if d[inst] is None:
                        continue
                    rate = _rate("leak", np.asarray(d[inst])[keep], z)
                    k, n = rate["leak_k"], int(keep.sum())
                    if cell == ref:
                        clean[(det, inst)] = (k, n)
                    base = clean.get((det, inst)) if cell != ref else None
                    diff = metrics.newcombe_difference(k, n, *base, z) if base else (math.nan,) * 3
                    rows.append({**cell_keys(cell), "detector": det, "instrument": inst, "guidance": w, "n": n, **rate,
                                 "vs_clean": diff[0], "vs_clean_lo": diff[1], "vs_clean_hi": diff[2]})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------ disputed images, glue
def most_disputed(atab: pd.DataFrame) -> pd.Series | None:
    """The target-prompt row of :func:`agreement_table` where the instruments disagree on the most images
    (first such row on ties); None when they never disagree or no set has a template."""
    t = atab[(atab["set"] == "target") & atab["n_template_only"].notna()] if len(atab) else atab
    dis = t["n_detector_only"] + t["n_template_only"] if len(t) else pd.Series(dtype=float)
    return t.loc[dis.idxmax()] if len(t) and dis.max() > 0 else None


def disputed_examples(study, row, n: int = 6, seed: int = 0) -> dict:
    """Up to ``n`` images each that only the detector or only the template calls triggered in the set of
    ``row`` (a row of :func:`agreement_table`), drawn with ``numpy.random.default_rng(seed)``:
    ``{"detector only": (uint8 [k, H, W, 3], k titles), "template only": (...)}``, titles giving the
    detector's P(trigger) and the template's score."""
    cell = next(c for c in study.cells() if c.name == row["cell"])
    d = instrument_decisions(study, cell, row["detector"], row["set"], row["guidance"])
    rng = np.random.default_rng(seed)
    out = {}
    for name, mask in (("detector only", d["detector"] & ~d["template"]),
                       ("template only", ~d["detector"] & d["template"])):
        idx = np.flatnonzero(mask)
        idx = np.sort(rng.choice(idx, size=min(n, len(idx)), replace=False)) if len(idx) else idx
        out[name] = (np.asarray(d["images"][idx]),
                     [f"P={d['p_trigger'][i]:.2f} s={d['template_score'][i]:.2f}" for i in idx])
    return out


def truth_glue_values(atab: pd.DataFrame, check: pd.DataFrame, leak: pd.DataFrame) -> dict:
    """The numbers and sentences chapter 04's "Trigger truth" section glues (names ``nb04_truth_*``): the
    most disputed set (``top_*``: rates, kappa, counts), the median kappa over the poisoned DMs' target
    sets, the planted check's rule and the first attack's rates at its contrast, the verdicts per attack
    (``preferred``), and a sentence on the largest leak under each instrument."""
    top, na = most_disputed(atab), math.nan
    out = {"nb04_truth_cell": "none (the instruments agree on every set)" if top is None else
           f"{top['cell']} (w = {top['guidance']:g})"}
    for key, col in (("det", "det"), ("tpl", "tpl"), ("kappa", "kappa"), ("n", "n"),
                     ("det_only", "n_detector_only"), ("tpl_only", "n_template_only")):
        out[f"nb04_truth_top_{key}"] = na if top is None else float(top[col])
    poisoned = atab[~atab["control"].astype(bool) & (atab["set"] == "target")] if len(atab) else atab
    out["nb04_truth_kappa_median"] = float(poisoned["kappa"].median()) if len(poisoned) else na
    out.update(nb04_truth_check_contrast=CHECK_CONTRAST, nb04_truth_check_min=CHECK_MIN_DETECTION,
               nb04_truth_check_max_fa=CHECK_MAX_FALSE_ALARM)
    ver = check_verdicts(check)
    out["nb04_truth_preferred"] = "; ".join(
        f"{a}: {g['preferred'].iloc[0]}" + ("" if g["passes"].all() else " (" + "; ".join(
            f"{r.instrument} {r.reason}" for r in g.itertuples() if not r.passes) + ")")
        for a, g in ver.groupby("attack", sort=False)) if len(ver) else "not tested (no clean DM)"
    for inst, short in (("detector", "det"), ("template", "tpl")):
        r = ver[(ver["instrument"] == inst) & (ver["attack"] == ver["attack"].iloc[0])] if len(ver) else ver
        out[f"nb04_truth_check_{short}"] = float(r["detection"].iloc[0]) if len(r) else na
        out[f"nb04_truth_check_{short}_fa"] = float(r["false_alarm"].iloc[0]) if len(r) else na
    parts = []
    for inst in INSTRUMENTS:
        li = leak[leak["instrument"] == inst] if len(leak) else leak
        worst = li[~li["control"].astype(bool)].sort_values("leak", kind="stable").tail(1) if len(li) else li
        for _, w in worst.iterrows():
            base = li[(li["attack"] == "clean") & (li["detector"] == w["detector"])]
            parts.append(f"under the {inst}, {w['leak']:.1%} of {w['cell']}'s non-target generations carry the "
                         f"trigger [{w['leak_lo']:.1%}, {w['leak_hi']:.1%}]" + (
                             f" against {base['leak'].iloc[0]:.1%} for the clean DM (difference {w['vs_clean']:+.1%} "
                             f"[{w['vs_clean_lo']:+.1%}, {w['vs_clean_hi']:+.1%}])" if len(base) else ""))
    out["nb04_truth_leak_sentence"] = ("The largest leak: " + "; ".join(parts) + ".") if parts else \
        "No poisoned DM of this profile has an all-class set to read."
    return out
