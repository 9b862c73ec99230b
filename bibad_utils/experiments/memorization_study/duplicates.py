"""Duplicates: the duplicate finder on the planted near-duplicate groups (precision, recall, F1 and their
threshold sweep), and the paper's "duplication exacerbates poisoning" (random vs duplicate poisoning)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bibad_utils import paper
from bibad_utils import store as st
from bibad_utils.base import ConfigError
from bibad_utils.experiments.memorization_study.common import (PAPER_DATASETS, embedding_inputs, embedding_params,
                                                               group_matches, paper_duplicate_values, train_embedding)
from bibad_utils.memorization import choose_threshold, duplicate_pr, find_duplicate_groups
from bibad_utils.metrics import g_counts, wilson_interval
from bibad_utils.poison import n_poison_for
from bibad_utils.stages import Cell, Study


def planted_groups(study: Study) -> list[list[int]]:
    return [list(map(int, g)) for g in (study.train_set.meta.get("duplicate_groups") or [])]


def finder_path(study: Study):
    m = study.cfg.memorization
    planted = planted_groups(study)
    if m.duplicate_threshold is None and not planted:
        raise ConfigError("memorization.duplicate_threshold", None,
                          "a cosine similarity in [-1, 1]: this dataset has no planted duplicate groups "
                          "to choose one on")
    params = {**embedding_params(study), "duplicate_threshold": m.duplicate_threshold}

    def build(art):
        emb = train_embedding(study)
        n = len(emb)
        best, sweep = (None, None)
        if planted:
            best, sweep = choose_threshold(emb, planted, block=m.block)
            st.save_json(art.dir / "sweep.json", sweep.to_dict(orient="records"))
        threshold = float(m.duplicate_threshold) if m.duplicate_threshold is not None else best
        groups = find_duplicate_groups(emb, threshold, block=m.block)
        nan = float("nan")
        pr = duplicate_pr(groups, planted, n) if planted else {
            "precision": nan, "recall": nan, "f1": nan, "tp": 0, "pred_pairs": nan, "true_pairs": nan}
        summary = {
            "embedding": m.embedding, "threshold": threshold,
            "threshold_source": ("profile (memorization.duplicate_threshold)" if m.duplicate_threshold
                                 is not None else "F1 optimum on the planted groups"),
            "best_f1_threshold": best, "n_images": n, "planted_groups": len(planted),
            "found_groups": len(groups), "images_in_found_groups": int(sum(len(g) for g in groups)),
            **pr,
        }
        st.save_json(art.dir / "summary.json", summary)
        st.save_json(art.dir / "groups.json", groups)

    return study.store.cached("mem_finder", params, [study.data_key] + embedding_inputs(study), build,
                              device=str(study.device))


def duplicate_finder_table(study: Study) -> pd.DataFrame:
    """One row: the duplicate finder (embedding, threshold and where it comes from) validated against the
    planted duplicate groups: ``planted_groups``, ``found_groups``, pairwise ``precision``, ``recall``,
    ``f1`` (fractions in [0, 1]; NaN without planted groups), ``tp``/``pred_pairs``/``true_pairs`` (pair
    counts) and ``best_f1_threshold`` (the sweep's optimum; None without planted groups)."""
    return pd.DataFrame([st.load_json(finder_path(study) / "summary.json")])


def duplicate_threshold(study: Study) -> float:
    """The cosine threshold of the duplicate finder in effect (the profile's, else the F1 optimum)."""
    return float(st.load_json(finder_path(study) / "summary.json")["threshold"])


def duplicate_threshold_sweep(study: Study) -> pd.DataFrame:
    """Precision / recall / F1 / group count per candidate threshold (one row each; see
    :func:`bibad_utils.memorization.choose_threshold`); empty without planted groups."""
    path = finder_path(study) / "sweep.json"
    cols = ["threshold", "precision", "recall", "f1", "tp", "pred_pairs", "true_pairs", "n_groups"]
    return pd.DataFrame(st.load_json(path)) if path.exists() else pd.DataFrame(columns=cols)


def found_groups(study: Study) -> list[list[int]]:
    """The duplicate groups found at the threshold in effect (sorted index lists)."""
    return st.load_json(finder_path(study) / "groups.json")


def found_group_examples(study: Study, n_groups: int = 4, max_size: int = 4) -> dict[str, np.ndarray]:
    """A few found groups for a figure: ``{title: uint8 [k, H, W, 3]}`` (at most ``max_size`` images
    each; the title says whether the group is exactly a planted one, its first index and its size). Groups
    that are exactly a planted group come first; when some found group is not planted, the largest such
    group takes the last panel, since the finder's mistakes say most about the measure."""
    if not (isinstance(n_groups, int) and n_groups >= 1):
        raise ConfigError("n_groups", n_groups, "an integer >= 1")
    groups = found_groups(study)
    planted = planted_groups(study)
    matches = group_matches(groups, planted) if planted else [False] * len(groups)
    good = [g for g, ok in zip(groups, matches) if ok]
    bad = sorted((g for g, ok in zip(groups, matches) if not ok), key=len, reverse=True)
    chosen = [(g, True) for g in good[:n_groups - 1 if bad else n_groups]] + [(g, False) for g in bad[:1]]
    if not planted:
        chosen = [(g, None) for g in sorted(groups, key=len, reverse=True)[:n_groups]]
    names = {True: "planted", False: "not planted", None: "group"}
    return {f"{names[ok]} #{g[0]} ({len(g)})": study.train_set.images_uint8(g[:max_size]) for g, ok in chosen}


def duplicate_comparison_cells(study: Study) -> list[tuple[Cell, Cell]]:
    """``(random cell, duplicate cell)`` of the first attack for each p in ``memorization.ratios``. The
    random cell is a grid cell (already trained by the earlier stages) when p is in the grid. None when a real
    dataset has too few duplicated images for the comparison (:func:`duplicate_shortfall`)."""
    if duplicate_shortfall(study) is not None:
        return []
    attack = study.cfg.attacks[0]
    return [(Cell(attack, p), Cell(attack, p, "duplicate")) for p in study.cfg.memorization.ratios]


def duplicate_shortfall(study: Study) -> str | None:
    """Why a REAL dataset cannot be poisoned through its duplicates at the ratios of ``memorization.ratios``
    (no duplicate group at the finder's threshold, or fewer non-target duplicated images than a ratio needs):
    the comparison is then "not tested", a finding about the data. None when it can run, and always None for a
    dataset with planted groups, whose shortfall is a setting to fix (:func:`check_duplicate_pool` raises)."""
    if planted_groups(study):
        return None
    threshold = study.cfg.memorization.duplicate_threshold
    pool = study.duplicate_pool()
    if pool is None:
        return (f"the training set ({len(study.train_set.labels):,} images) has no duplicate group at the finder's "
                f"threshold (cos >= {threshold:g}): there is nothing to poison through its duplicates")
    labels = study.train_set.labels
    candidates = int(np.sum(labels[pool] != study.target))
    short = [p for p in study.cfg.memorization.ratios if n_poison_for(len(labels), p) > candidates]
    if short:
        return (f"the training set has {candidates} non-target images in duplicate groups at cos >= {threshold:g}; "
                f"p = {short[0]:g} needs {n_poison_for(len(labels), short[0])}")
    return None


def check_duplicate_pool(study: Study) -> int:
    """The number of non-target duplicated images (the candidates of duplicate poisoning); raises a
    ConfigError before any training if a ratio of ``memorization.ratios`` needs more."""
    pool = study.duplicate_pool()
    if pool is None:
        raise ConfigError("dataset.options.duplicate_fraction", 0,
                          "a dataset with duplicate groups (procedural: duplicate_fraction > 0; real data: "
                          "memorization.duplicate_threshold set)")
    labels = study.train_set.labels
    candidates = int(np.sum(labels[pool] != study.target))
    for p in study.cfg.memorization.ratios:
        need = n_poison_for(len(labels), p)
        if need > candidates:
            raise ConfigError("memorization.ratios", p,
                              f"ratios p with int(N * p) <= {candidates}, the non-target duplicated images "
                              f"(p = {p} needs {need}; raise dataset.options.duplicate_fraction)")
    return candidates


def random_vs_duplicate(study: Study) -> pd.DataFrame:
    """G1 and G2 of the target-prompt generations at the first guidance scale, random vs duplicate
    poisoning, for the first attack and each p in ``memorization.ratios``.

    Long format, one row per (p, pool, metric): ``attack``, ``p``, ``pool`` (random | duplicate), ``cell``,
    ``guidance``, ``metric`` (G1 | G2), ``setting`` (e.g. "G1, p=10%"), ``k``, ``n`` (counts), ``ours`` with
    Wilson 95 % bounds ``lo`` / ``hi`` (fractions), ``n_poison``, ``n_poison_duplicated`` (poisoned images
    that lie in a duplicate group), and the paper's ratio for the same pool and p as ``paper_imagenette``
    / ``paper_caltech15`` (fractions; NaN where the paper reports no such p).
    """
    reason = duplicate_shortfall(study)
    if reason is not None:  # a real dataset without enough duplicates: the comparison is not tested
        out = pd.DataFrame(columns=["attack", "p", "pool", "cell", "guidance", "metric", "setting", "k", "n",
                                    "ours", "lo", "hi", "n_poison", "n_poison_duplicated"])
        out.attrs["not_tested"] = reason
        return out
    check_duplicate_pool(study)
    pool = set(study.duplicate_pool().tolist())
    w = study.first_guidance
    rows = []
    for pair in duplicate_comparison_cells(study):
        for cell in pair:
            gen = study.generations(cell)[("target", w)]
            judged = study.judges.judge(gen, cell.kind)
            counts = g_counts(judged["trigger"], judged["match"])
            indices = study.poison_manifest(cell)["indices"]
            for metric in ("G1", "G2"):
                k, n = counts[f"n_{metric}"], counts["n"]
                lo, hi = wilson_interval(k, n)
                ref = paper_duplicate_values(cell.ratio, metric)
                side = 1 if cell.pool == "duplicate" else 0
                rows.append({
                    "attack": cell.kind, "p": cell.ratio, "pool": cell.pool, "cell": cell.name, "guidance": w,
                    "metric": metric, "setting": f"{metric}, p={cell.ratio:.0%}", "k": k, "n": n,
                    "ours": counts[metric], "lo": lo, "hi": hi,
                    "n_poison": len(indices), "n_poison_duplicated": sum(i in pool for i in indices),
                    **{f"paper_{d}": (ref[d][side] if d in ref else math.nan) for d in paper.DUPLICATES},
                })
    return pd.DataFrame(rows)


def random_vs_duplicate_wide(df: pd.DataFrame) -> pd.DataFrame:
    """The table of :func:`random_vs_duplicate` as the paper prints it: one row per (p, metric), our
    random and duplicate ratios (with intervals as text) beside the paper's, all in %."""
    out = []
    for (p, metric), rows in df.groupby(["p", "metric"], sort=True):
        r = rows.set_index("pool")
        row = {"p": f"{p:.0%}", "metric": metric}
        for pool in ("random", "duplicate"):
            if pool in r.index:
                x = r.loc[pool]
                row[f"ours {pool}"] = f"{100 * x['ours']:.1f} [{100 * x['lo']:.1f}, {100 * x['hi']:.1f}]"
        for d, name in PAPER_DATASETS.items():
            vals = [r.loc[pool, f"paper_{d}"] for pool in ("random", "duplicate") if pool in r.index]
            row[f"paper {name}"] = ("" if any(pd.isna(v) for v in vals) or len(vals) < 2
                                    else f"{100 * vals[0]:.1f} -> {100 * vals[1]:.1f}")
        out.append(row)
    return pd.DataFrame(out)
