"""The paper's numbers, in one place: every number the book compares against, with its source.

Sources: the NeurIPS 2024 poster and talk slides of "From Trojan Horses to Castle Walls" (the shared
``seeds/``), transcribed in ``PAPER.md`` ("Metrics", "The numbers to compare against"). Where the slides
print three decimals (the train-on-generations table) the three decimals are kept.

One unit convention: every rate, ratio and AUROC is a **fraction** in [0, 1] (a slide's 99.44 % is stored
as 0.9944); :func:`pct` formats one for text. Poisoning ratios ``p`` are fractions too (0.05 = 5 %).

Tables (all read through the accessors below, which compare ``p`` up to rounding and return None where
the paper reports nothing):

- :data:`R_TRAIN` ``[dataset][p]``: r_train, the trigger ratio among the target-prompt training images.
- :data:`CD_AUROC` ``[dataset][(attack, p)]``: CD detection AUROC, (training set, generation set).
- :data:`TRAIN_ON_GENERATIONS` ``[dataset][(attack, p)][metric]``: TA / ASR of a classifier trained on the
  poisoned training set and of one trained on the poisoned DM's generations, (training set, generation set).
- :data:`RESNET18` ``[p][metric]`` and :data:`DIFFUSION_CLASSIFIER` ``[p_filter][p][metric]``: CIFAR-10.
- :data:`DUPLICATES` ``[dataset][p][metric]``: G1 / G2 ratio, (poison random images, poison duplicates).

:data:`CLAIMS` lists the paper's claims the book tests, one :class:`PaperClaim` per family, each with a
stable ``key`` that claim rows carry (``bibad_utils.report.claim_row(..., key=...)``), its ``kind`` (a claim
of the paper, or a control of this study) and the paper's statement built from the tables above
(:func:`paper_text`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from bibad_utils.base import ConfigError

DATASET_NAMES = {"imagenette": "ImageNette", "caltech15": "Caltech15", "cifar10": "CIFAR-10"}

# Where each table comes from (slide titles as in the shared seeds).
SOURCES = {
    "r_train": "slides, Insight 1 figure (a1), BadNets-1 on ImageNette: ratio of trigger-present training data "
               "related to the target prompt 'garbage truck'",
    "cd_auroc": "slides, Inspiration 1, Table 3 (ImageNette, SD v1.4): detection AUROC, training set -> "
                "generation set (the caption names CD, STRIP and FCT; the slide's rows are CD's)",
    "train_on_generations": "slides, Inspiration 2 table (SD v1.4): classifier trained on the training set -> "
                            "on the poisoned DM's generations",
    "diffusion_classifier": "slides, Inspiration 3 table (CIFAR-10, DDPM): ResNet-18 vs diffusion classifier "
                            "with p_filter",
    "duplicates": "slides, 'Duplication exacerbates poisoning' table (SD v1.4): poison random images -> "
                  "poison duplicate images",
    "replication": "slides, Figure R3 (qualitative: no number)",
    "n_generations": "the paper's sampling setup: about 1,000 images for the target prompt",
}

R_TRAIN = {"imagenette": {0.01: 0.089, 0.02: 0.164, 0.05: 0.330, 0.10: 0.496}}

CD_AUROC = {"imagenette": {
    ("badnets1", 0.01): (0.966, 0.972), ("badnets1", 0.05): (0.956, 0.970), ("badnets1", 0.10): (0.948, 0.983),
    ("badnets2", 0.01): (0.553, 0.581), ("badnets2", 0.05): (0.561, 0.766), ("badnets2", 0.10): (0.584, 0.723),
}}

TRAIN_ON_GENERATIONS = {
    "imagenette": {
        ("badnets1", 0.01): {"TA": (0.99439, 0.96917), "ASR": (0.87104, 0.00650)},
        ("badnets1", 0.02): {"TA": (0.99439, 0.93630), "ASR": (0.98247, 0.14479)},
        ("badnets1", 0.05): {"TA": (0.99388, 0.94446), "ASR": (0.99434, 0.55600)},
        ("badnets2", 0.01): {"TA": (0.99312, 0.96510), "ASR": (0.64621, 0.01357)},
        ("badnets2", 0.02): {"TA": (0.99312, 0.93732), "ASR": (0.85520, 0.08455)},
        ("badnets2", 0.05): {"TA": (0.99261, 0.94726), "ASR": (0.96324, 0.10435)},
    },
    "caltech15": {
        ("badnets1", 0.01): {"TA": (0.99833, 0.90667), "ASR": (0.95536, 0.01250)},
        ("badnets1", 0.02): {"TA": (0.99833, 0.88500), "ASR": (0.99107, 0.08392)},
        ("badnets1", 0.05): {"TA": (0.99667, 0.89166), "ASR": (0.99821, 0.09643)},
        ("badnets2", 0.01): {"TA": (0.99833, 0.91000), "ASR": (0.83035, 0.47679)},
        ("badnets2", 0.02): {"TA": (0.99833, 0.87833), "ASR": (0.91250, 0.47142)},
        ("badnets2", 0.05): {"TA": (0.99833, 0.87333), "ASR": (0.95893, 0.64821)},
    },
}

RESNET18 = {0.01: {"TA": 0.9485, "ASR": 0.9940}, 0.05: {"TA": 0.9461, "ASR": 1.0}, 0.10: {"TA": 0.9408, "ASR": 1.0}}
DIFFUSION_CLASSIFIER = {
    0.0: {0.01: {"TA": 0.9556, "ASR": 0.6238}, 0.05: {"TA": 0.9483, "ASR": 0.9704}, 0.10: {"TA": 0.9471, "ASR": 0.9857}},
    0.01: {0.01: {"TA": 0.9507, "ASR": 0.2357}, 0.05: {"TA": 0.9458, "ASR": 0.6886}, 0.10: {"TA": 0.9360, "ASR": 0.7577}},
    0.05: {0.01: {"TA": 0.9367, "ASR": 0.1500}, 0.05: {"TA": 0.9286, "ASR": 0.4543}, 0.10: {"TA": 0.9254, "ASR": 0.5282}},
    0.1: {0.01: {"TA": 0.9232, "ASR": 0.1362}, 0.05: {"TA": 0.9178, "ASR": 0.3900}, 0.10: {"TA": 0.9087, "ASR": 0.4566}},
}

DUPLICATES = {
    "imagenette": {0.05: {"G1": (0.338, 0.378), "G2": (0.164, 0.183)},
                   0.10: {"G1": (0.540, 0.545), "G2": (0.194, 0.197)}},
    "caltech15": {0.05: {"G1": (0.528, 0.551), "G2": (0.376, 0.392)},
                  0.10: {"G1": (0.696, 0.735), "G2": (0.244, 0.255)}},
}

# How long the paper fine-tunes: about 50 epochs of the poisoned training set (PAPER.md, Setup: SD v1.4
# fine-tuned ~50 epochs). A "not reproduced" from a DM trained far below this exposure is no finding about
# the paper (bibad_utils.verdicts.exposure_check).
PAPER_EPOCHS = 50
# Target-prompt generations per poisoned DM in the paper (PAPER.md: "~1K"); used only to turn the
# paper's ratios into counts when a verdict rule is checked against the paper's own numbers.
N_TARGET_GENERATIONS = 1000

KINDS = ("paper claim", "control", "no paper number")


# ------------------------------------------------------------------------------------ accessors

def pct(x: float, digits: int = 1) -> str:
    """A fraction as a percentage text, e.g. ``pct(0.338) == "33.8 %"``; "n/a" for None / NaN."""
    return "n/a" if x is None or not math.isfinite(float(x)) else f"{100 * float(x):.{digits}f} %"


def _same_p(a: float, b: float) -> bool:
    return math.isclose(float(a), float(b), abs_tol=1e-9)


def _at(table: dict, key):
    """``table[key]`` with float p compared up to rounding (key a p or an (attack, p) pair); None if absent."""
    for k, v in table.items():
        if isinstance(k, tuple) and isinstance(key, tuple):
            if k[0] == key[0] and _same_p(k[1], key[1]):
                return v
        elif not isinstance(k, tuple) and not isinstance(key, tuple) and _same_p(k, key):
            return v
    return None


def _check_dataset(dataset: str, table: dict, name: str) -> dict:
    if dataset not in table:
        raise ConfigError(f"{name} dataset", dataset, " | ".join(table))
    return table[dataset]


def _check_metric(metric: str, allowed=("TA", "ASR")) -> None:
    if metric not in allowed:
        raise ConfigError("metric", metric, " | ".join(allowed))


def r_train(p: float, dataset: str = "imagenette") -> float | None:
    """The paper's r_train at poisoning ratio ``p`` (fraction), None where it gives none."""
    return _at(_check_dataset(dataset, R_TRAIN, "r_train"), float(p))


def cd_auroc(attack: str, p: float, dataset: str = "imagenette") -> tuple[float, float] | None:
    """CD AUROC (training set, generation set) for ``attack`` at ``p``, None where the paper gives none."""
    return _at(_check_dataset(dataset, CD_AUROC, "CD AUROC"), (attack, float(p)))


def train_on_generations(attack: str, p: float, metric: str, dataset: str = "imagenette"):
    """(training set, generation set) ``metric`` (TA | ASR) of the train-on-generations table, or None."""
    _check_metric(metric)
    cell = _at(_check_dataset(dataset, TRAIN_ON_GENERATIONS, "train-on-generations"), (attack, float(p)))
    return None if cell is None else cell.get(metric)


def largest_ta_drop() -> float:
    """The largest TA drop (training set -> generations) of :data:`TRAIN_ON_GENERATIONS` over every dataset,
    attack and p: the paper's own bound on "a few points" of TA cost."""
    return max(v["TA"][0] - v["TA"][1] for t in TRAIN_ON_GENERATIONS.values() for v in t.values())


def resnet18(p: float, metric: str) -> float | None:
    """The ResNet-18's ``metric`` (TA | ASR) on CIFAR-10 BadNets at ``p``, or None."""
    _check_metric(metric)
    cell = _at(RESNET18, float(p))
    return None if cell is None else cell.get(metric)


def diffusion_classifier(p: float, metric: str, p_filter: float = 0.0) -> float | None:
    """The diffusion classifier's ``metric`` (TA | ASR) on CIFAR-10 BadNets at ``p`` and ``p_filter``, or None."""
    _check_metric(metric)
    by_p = _at(DIFFUSION_CLASSIFIER, float(p_filter))
    cell = None if by_p is None else _at(by_p, float(p))
    return None if cell is None else cell.get(metric)


def duplicates(p: float, metric: str, dataset: str = "imagenette") -> tuple[float, float] | None:
    """(poison random images, poison duplicate images) ``metric`` (G1 | G2) ratio at ``p``, or None."""
    _check_metric(metric, ("G1", "G2"))
    cell = _at(_check_dataset(dataset, DUPLICATES, "duplicates"), float(p))
    return None if cell is None else cell[metric]


def g2_share(p: float, dataset: str = "imagenette") -> float | None:
    """G2 / (G1 + G2) of the paper's random-poisoning generations at ``p`` (from :data:`DUPLICATES`), or None."""
    g1, g2 = duplicates(p, "G1", dataset), duplicates(p, "G2", dataset)
    return None if g1 is None or g2 is None else g2[0] / (g1[0] + g2[0])


def phase_points(dataset: str = "imagenette", n: int = N_TARGET_GENERATIONS) -> list[dict]:
    """The paper's random-poisoning generations as per-p count rows for
    :func:`bibad_utils.verdicts.phase_transition`: ``p``, ``n``, ``n_G1``, ``n_G2``, ``r_train`` (r_train
    None where the paper gives none), with ``n`` generations per p (the paper's ~1K)."""
    out = []
    for p in sorted(_check_dataset(dataset, DUPLICATES, "duplicates")):
        g1, g2 = duplicates(p, "G1", dataset)[0], duplicates(p, "G2", dataset)[0]
        rt = r_train(p, dataset) if dataset in R_TRAIN else None
        out.append({"p": p, "n": n, "n_G1": round(g1 * n), "n_G2": round(g2 * n), "r_train": rt})
    return out


# ------------------------------------------------------------------------------------ the claims

@dataclass(frozen=True)
class PaperClaim:
    """One family of claims: ``key`` (carried by claim rows), ``stage`` (the chapter that tests it),
    ``label`` (short statement), ``metric`` (what a row compares), ``kind`` (one of :data:`KINDS`: a claim
    of the paper, or a control of this study), ``source`` (a key of :data:`SOURCES`, "" for a control),
    ``setting`` (the family's default setting text), and the family's wording of the paper's numbers, in
    one place: ``statement()`` (every number, e.g. for the family's "not tested" row) and ``at(attack, p)``
    (the numbers of one setting, a list of phrases, empty where the paper has none)."""

    key: str
    stage: str
    label: str
    metric: str
    kind: str = "paper claim"
    source: str = ""
    setting: str = ""
    statement: Callable[[], str] | None = None
    at: Callable[[str | None, float | None], list[str]] | None = None


def _pair(a: float, b: float, digits: int = 1) -> str:
    return f"{pct(a, digits)} -> {pct(b, digits)}"


def _g_at(metric: str, head: str, one: bool):
    """The G1 / G2 numbers of the duplicates table at ``p``, per dataset (``one``: the random value alone)."""
    def at(attack, p):
        if p is None:
            return []
        found = [f"{DATASET_NAMES[d]} {pct(v[0])}" if one else f"{DATASET_NAMES[d]} {_pair(*v)}"
                 for d in DUPLICATES if (v := duplicates(p, metric, d)) is not None]
        return [f"{head} at p = {100 * p:g} %: " + ", ".join(found)] if found else []
    return at


def _trojan_statement() -> str:
    parts = [f"{DATASET_NAMES[d]} p = {100 * p:g} %: {pct(v['G1'][0])}" for d, t in DUPLICATES.items()
             for p, v in t.items()]
    return "G1 > 0; random poisoning, G1 ratio " + "; ".join(parts)


def _amplification_statement() -> str:
    t = R_TRAIN["imagenette"]
    ps = " / ".join(f"{100 * p:g}" for p in t)
    return "r_gen > r_train; ImageNette r_train " + " / ".join(pct(v) for v in t.values()) + f" at p = {ps} %"


def _amplification_at(attack, p) -> list[str]:
    if p is None or r_train(p) is None:
        return []
    return [f"r_gen > r_train; ImageNette r_train at p = {100 * p:g} %: {pct(r_train(p))}"]


def _phase_statement() -> str:
    parts = [f"{DATASET_NAMES[d]} p = {100 * p:g} %: {pct(g2_share(p, d))}" for d, t in DUPLICATES.items() for p in t]
    return ("G2 dominates at low p, G1 at high p (slides: #G1 - #triggered training images and #G2 - the same, "
            "per p); G2 share of random-poisoning generations " + "; ".join(parts))


def _cd_statement() -> str:
    return "; ".join(f"{a} p = {100 * p:g} %: {g0:.3f} -> {g1:.3f}"
                     for (a, p), (g0, g1) in CD_AUROC["imagenette"].items()) + " (ImageNette)"


def _cd_at(attack, p) -> list[str]:
    if attack is None or p is None:
        return []
    return [f"{v[0]:.3f} -> {v[1]:.3f} ({DATASET_NAMES[d]})" for d in CD_AUROC
            if (v := cd_auroc(attack, p, d)) is not None]


def _other_detector_statement() -> str:
    return "higher AUROC on generations (the slides give CD only)"


def _tog_statement(metric: str):
    return lambda: "; ".join(f"{DATASET_NAMES[d]} {a} p = {100 * p:g} %: {_pair(*v[metric], digits=2)}"
                             for d, t in TRAIN_ON_GENERATIONS.items() for (a, p), v in t.items())


def _tog_at(metric: str):
    def at(attack, p):
        if attack is None or p is None:
            return []
        return [f"{metric} {_pair(*v, digits=2)} ({DATASET_NAMES[d]})" for d in TRAIN_ON_GENERATIONS
                if (v := train_on_generations(attack, p, metric, d)) is not None]
    return at


def _dc_statement(metric: str):
    def statement():
        dc = DIFFUSION_CLASSIFIER[0.0]
        if metric == "ASR":
            return "; ".join(f"p = {100 * p:g} %: ASR {_pair(RESNET18[p]['ASR'], dc[p]['ASR'], 2)}"
                             for p in RESNET18) + " (ResNet-18 -> DC, p_filter 0; CIFAR-10)"
        return "; ".join(f"p = {100 * p:g} %: TA {pct(RESNET18[p]['TA'], 2)} vs {pct(dc[p]['TA'], 2)}"
                         for p in RESNET18) + " (ResNet-18 vs DC, p_filter 0; CIFAR-10)"
    return statement


def _dc_at(metric: str):
    def at(attack, p):
        a, b = (resnet18(p, metric), diffusion_classifier(p, metric, 0.0)) if p is not None else (None, None)
        return [f"{metric} {_pair(a, b, 2)} (ResNet-18 -> DC, p_filter 0; CIFAR-10)"] if None not in (a, b) else []
    return at


def _p_filter_statement() -> str:
    dc0, dc10 = DIFFUSION_CLASSIFIER[0.0], DIFFUSION_CLASSIFIER[0.1]
    return "; ".join(f"p = {100 * p:g} %: DC ASR {_pair(dc0[p]['ASR'], dc10[p]['ASR'], 2)}"
                     for p in RESNET18) + " (p_filter 0 -> 10 %; CIFAR-10)"


def _p_filter_at(attack, p) -> list[str]:
    a, b = (diffusion_classifier(p, "ASR", 0.0), diffusion_classifier(p, "ASR", 0.1)) if p is not None else (None, None)
    return [f"DC ASR {_pair(a, b, 2)} (p_filter 0 -> 10 %; CIFAR-10)"] if None not in (a, b) else []


def _duplicates_statement(metric: str):
    return lambda: "; ".join(f"{DATASET_NAMES[d]} p = {100 * p:g} %: {_pair(*v[metric])}"
                             for d, t in DUPLICATES.items() for p, v in t.items())


CLAIMS = (
    PaperClaim("trojan_g1", "04_insights", "Trojan horse: the poisoned DM generates G1 images", "G1 ratio",
               source="duplicates", statement=_trojan_statement,
               at=_g_at("G1", "G1 > 0; random poisoning, G1 ratio", one=True)),
    PaperClaim("amplification", "04_insights", "Insight 1, trigger amplification: r_gen > r_train", "r_gen",
               source="r_train", statement=_amplification_statement, at=_amplification_at),
    PaperClaim("phase_transition", "04_insights", "Insight 2, phase transition: G2 at low p, G1 at high p",
               "G2 share of triggered generations", source="duplicates", statement=_phase_statement),
    PaperClaim("clean_control", "04_insights", "Clean control: no trigger without poison", "r_gen of the clean DM",
               kind="control"),
    PaperClaim("relabel_control", "04_insights", "Relabel-only control: target labels without a trigger plant "
               "no trigger", "r_gen of the relabel-only DM", kind="control"),
    PaperClaim("detection_cd", "05_castle_walls", "Detection is easier on generations: CD", "AUROC gen - train",
               source="cd_auroc", setting="CD", statement=_cd_statement, at=_cd_at),
    PaperClaim("detection_strip", "05_castle_walls", "Detection is easier on generations: STRIP",
               "AUROC gen - train", source="cd_auroc", setting="STRIP", statement=_other_detector_statement),
    PaperClaim("detection_fct", "05_castle_walls", "Detection is easier on generations: FCT", "AUROC gen - train",
               source="cd_auroc", setting="FCT", statement=_other_detector_statement),
    PaperClaim("train_on_generations_asr", "05_castle_walls", "Training on generations lowers ASR",
               "ASR real - generated", source="train_on_generations", statement=_tog_statement("ASR"),
               at=_tog_at("ASR")),
    PaperClaim("train_on_generations_ta", "05_castle_walls", "... at a TA cost of a few points",
               "TA real - generated", source="train_on_generations", statement=_tog_statement("TA"),
               at=_tog_at("TA")),
    PaperClaim("diffusion_classifier_asr", "05_castle_walls", "The diffusion classifier resists the backdoor",
               "ASR classifier - DC", source="diffusion_classifier", statement=_dc_statement("ASR"),
               at=_dc_at("ASR")),
    PaperClaim("diffusion_classifier_ta", "05_castle_walls", "... with a comparable TA", "TA DC - classifier",
               source="diffusion_classifier", statement=_dc_statement("TA"), at=_dc_at("TA")),
    PaperClaim("p_filter", "05_castle_walls", "Filtering the largest errors (p_filter) lowers the DC's ASR",
               "ASR p_filter min - max", source="diffusion_classifier", statement=_p_filter_statement,
               at=_p_filter_at),
    PaperClaim("duplicates_g1", "06_memorization", "Poisoning duplicated images raises G1", "G1 dup - random",
               source="duplicates", statement=_duplicates_statement("G1"),
               at=_g_at("G1", "G1 random -> duplicate", one=False)),
    PaperClaim("duplicates_g2", "06_memorization", "Poisoning duplicated images raises G2", "G2 dup - random",
               source="duplicates", statement=_duplicates_statement("G2"),
               at=_g_at("G2", "G2 random -> duplicate", one=False)),
    PaperClaim("replication", "06_memorization", "Poisoned DMs replicate training images more",
               "replication, poisoned - clean", kind="no paper number", source="replication",
               statement=lambda: "more replication than the clean DM (qualitative)"),
    PaperClaim("duplicate_finder", "06_memorization", "The duplicate finder recovers planted near-duplicates",
               "planted groups found", kind="control"),
)
CLAIM_KEYS = tuple(c.key for c in CLAIMS)


def claim(key: str) -> PaperClaim:
    """The :class:`PaperClaim` of ``key`` (one of :data:`CLAIM_KEYS`)."""
    for c in CLAIMS:
        if c.key == key:
            return c
    raise ConfigError("claim key", key, " | ".join(CLAIM_KEYS))


def paper_text(key: str, *, attack: str | None = None, p: float | None = None) -> str:
    """The paper's statement and numbers for the claim family ``key`` (its ``statement``), with the source;
    "" for a control of this study. With ``attack`` and/or ``p``, only the numbers of that setting are given
    (:func:`setting_text`), when the paper has any."""
    if attack is not None or p is not None:
        specific = setting_text(key, attack=attack, p=p)
        if specific:
            return specific
    c = claim(key)
    if c.kind == "control" or c.statement is None:
        return ""
    body = c.statement()
    return f"{body} [{SOURCES[c.source]}]" if c.source else body


def setting_text(key: str, *, attack: str | None = None, p: float | None = None) -> str:
    """The paper's numbers of claim family ``key`` at one setting (``attack``, ``p``; ImageNette first,
    then the other datasets: the family's ``at``), with the source; "" when the paper has no number there."""
    c = claim(key)
    parts = c.at(attack, p) if c.at else []
    return "; ".join(parts) + f" [{SOURCES[c.source]}]" if parts else ""
