"""Stage 06, memorization: what notebooks/06_memorization.ipynb computes.

Three questions, each a function of a :class:`~bibad_utils.stages.Study` returning a tidy DataFrame:

- :func:`duplicate_finder_table` / :func:`duplicate_threshold_sweep`: does the duplicate finder of
  :mod:`bibad_utils.memorization` (an image embedding and a cosine threshold) recover the near-duplicate
  groups planted in the procedural dataset? Pairwise precision, recall, F1, and their threshold sweep.
- :func:`random_vs_duplicate`: the paper's "duplication exacerbates poisoning": G1 and G2 ratios of
  target-prompt generations when the poisoned images are drawn from duplicated images instead of at random.
- :func:`replication_table`: the paper's "poisoning exacerbates duplication": how close each all-class
  generation is to its nearest training image (the images the model was trained on, triggers included),
  and the replication rate above a stated threshold, for the clean and the poisoned DMs.

:func:`memorization_claims` turns them into claim rows (:mod:`bibad_utils.report`). Expensive parts
(embeddings, the threshold sweep, nearest-neighbour searches) are cached in ``study.store``; the DMs
and generations are the study's own (a duplicate-poisoning cell costs one fine-tuning and one generation).
The section ``memorization`` of the profile is validated by :func:`bibad_utils.memorization.validate_config`.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bibad_utils import paper, verdicts
from bibad_utils import store as st
from bibad_utils.config import ConfigError
from bibad_utils.stages import Cell, Study

STAGE = "06_memorization"

# G1 / G2 ratios (fractions) of target-prompt generations, poisoning random images -> poisoning duplicated
# images: bibad_utils.paper.DUPLICATES (the talk slides, "Duplication exacerbates poisoning"; Stable
# Diffusion v1.4 fine-tuned; the slide names neither the trigger nor the guidance scale).
PAPER_DUPLICATES = paper.DUPLICATES
PAPER_DATASETS = {d: paper.DATASET_NAMES[d] for d in paper.DUPLICATES}


# ---------------------------------------------------------------------------------------------------
# Pure helpers


def rate_difference(k1: int, n1: int, k0: int, n0: int, z: float = 1.96) -> tuple[float, float, float]:
    """Difference of two independent proportions ``k1/n1 - k0/n0`` with Newcombe's hybrid score
    interval (Newcombe 1998, method 10: built from the two Wilson intervals).

    Counts are integers with 0 <= k <= n; returns ``(d, lo, hi)``, fractions in [-1, 1]. With an empty
    sample (n = 0) the difference is NaN and the interval the whole range (-1, 1).
    """
    from bibad_utils.metrics import newcombe_difference as _newcombe

    return _newcombe(k1, n1, k0, n0, z)


def mean_difference(a, b, z: float = 1.96) -> tuple[float, float, float]:
    """Difference of the means of two independent samples ``mean(a) - mean(b)`` with a normal
    (Welch) interval ``d +- z * sqrt(var(a)/n_a + var(b)/n_b)`` (unbiased variances).

    a, b: float ``[n]`` (NaNs dropped). Returns ``(d, lo, hi)`` in the samples' unit; NaN when a
    sample has fewer than two values.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) < 2 or len(b) < 2:
        return math.nan, math.nan, math.nan
    d = float(a.mean() - b.mean())
    half = z * math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    return d, d - half, d + half


def paper_duplicate_values(p: float, metric: str) -> dict:
    """The paper's (random, duplicate) ratios as fractions for poisoning ratio ``p`` and ``metric``
    (G1 | G2): ``{dataset: (random, duplicate)}`` for the datasets that report this p (may be empty)."""
    if metric not in ("G1", "G2"):
        raise ConfigError("metric", metric, "G1 | G2")
    out = {}
    for dataset in PAPER_DUPLICATES:
        v = paper.duplicates(p, metric, dataset)
        if v is not None:
            out[dataset] = v
    return out


def group_matches(found_groups, planted_groups) -> list[bool]:
    """For each found group (list of indices), whether it is exactly one planted group."""
    planted = {frozenset(int(i) for i in g) for g in planted_groups}
    return [frozenset(int(i) for i in g) in planted for g in found_groups]


# ---------------------------------------------------------------------------------------------------
# Embeddings of the stated measure


def mem_config(study: Study) -> dict:
    """The profile's validated ``memorization`` section (defaults filled in)."""
    return study.cfg["memorization"]


def _embedding_params(study: Study) -> dict:
    m = mem_config(study)
    params = {"embedding": m["embedding"]}
    if m["embedding"] == "pixels":
        params["pixel_size"] = m["pixel_size"]
    return params


def _embedding_inputs(study: Study) -> list[str]:
    """Artifact keys the embedding depends on: the clean classifier's for the ``classifier`` embedding."""
    if mem_config(study)["embedding"] != "classifier":
        return []
    study.classifier()
    return [st.artifact_key("judge_classifier", study._judge_params(), [study.data_key])]


def embed_images(study: Study, images) -> np.ndarray:
    """Embeddings of uint8 ``[N, H, W, 3]`` images with the study's measure: float32 ``[N, D]``,
    unit rows (see :func:`bibad_utils.memorization.embed`)."""
    from bibad_utils.memorization import embed

    m = mem_config(study)
    model = study.classifier() if m["embedding"] == "classifier" else None
    return embed(images, m["embedding"], device=study.device, batch_size=m["batch_size"], model=model,
                 pixel_size=m["pixel_size"], weights_path=m["weights_path"])


def train_embedding(study: Study) -> np.ndarray:
    """Embeddings of the clean training set, float32 ``[N_train, D]``; cached."""
    def build(art):
        st.save_array(art.dir / "embedding.npy", embed_images(study, study.train_set.images))

    path = study.store.cached("mem_embed", _embedding_params(study), [study.data_key] + _embedding_inputs(study),
                              build, device=str(study.device))
    return st.load_array(path / "embedding.npy")


def training_embedding(study: Study, cell: Cell) -> np.ndarray:
    """Embeddings of the training set of ``cell`` as its DM saw it (poisoned rows with their trigger),
    float32 ``[N_train, D]``: the clean embedding with the poisoned rows re-embedded."""
    emb = np.array(train_embedding(study))
    if cell.trigger_kind is not None:
        ps = study.poisoned(cell)
        if len(ps.indices):
            emb[ps.indices] = embed_images(study, ps.images_uint8(ps.indices))
    return emb


# ---------------------------------------------------------------------------------------------------
# The duplicate finder against planted duplicates


def _planted_groups(study: Study) -> list[list[int]]:
    return [list(map(int, g)) for g in (study.train_set.meta.get("duplicate_groups") or [])]


def _finder_path(study: Study):
    from bibad_utils.memorization import choose_threshold, duplicate_pr, find_duplicate_groups

    m = mem_config(study)
    planted = _planted_groups(study)
    if m["duplicate_threshold"] is None and not planted:
        raise ConfigError("memorization.duplicate_threshold", None,
                          "a cosine similarity in [-1, 1]: this dataset has no planted duplicate groups "
                          "to choose one on")
    params = {**_embedding_params(study), "duplicate_threshold": m["duplicate_threshold"]}

    def build(art):
        emb = train_embedding(study)
        n = len(emb)
        best, sweep = (None, None)
        if planted:
            best, sweep = choose_threshold(emb, planted, block=m["block"])
            st.save_json(art.dir / "sweep.json", sweep.to_dict(orient="records"))
        threshold = float(m["duplicate_threshold"]) if m["duplicate_threshold"] is not None else best
        groups = find_duplicate_groups(emb, threshold, block=m["block"])
        nan = float("nan")
        pr = duplicate_pr(groups, planted, n) if planted else {
            "precision": nan, "recall": nan, "f1": nan, "tp": 0, "pred_pairs": nan, "true_pairs": nan}
        summary = {
            "embedding": m["embedding"], "threshold": threshold,
            "threshold_source": ("profile (memorization.duplicate_threshold)" if m["duplicate_threshold"]
                                 is not None else "F1 optimum on the planted groups"),
            "best_f1_threshold": best, "n_images": n, "planted_groups": len(planted),
            "found_groups": len(groups), "images_in_found_groups": int(sum(len(g) for g in groups)),
            **pr,
        }
        st.save_json(art.dir / "summary.json", summary)
        st.save_json(art.dir / "groups.json", groups)

    return study.store.cached("mem_finder", params, [study.data_key] + _embedding_inputs(study), build,
                              device=str(study.device))


def duplicate_finder_table(study: Study) -> pd.DataFrame:
    """One row: the duplicate finder (embedding, threshold and where it comes from) validated against the
    planted duplicate groups: ``planted_groups``, ``found_groups``, pairwise ``precision``, ``recall``,
    ``f1`` (fractions in [0, 1]; NaN without planted groups), ``tp``/``pred_pairs``/``true_pairs`` (pair
    counts) and ``best_f1_threshold`` (the sweep's optimum; None without planted groups)."""
    return pd.DataFrame([st.load_json(_finder_path(study) / "summary.json")])


def duplicate_threshold(study: Study) -> float:
    """The cosine threshold of the duplicate finder in effect (the profile's, else the F1 optimum)."""
    return float(st.load_json(_finder_path(study) / "summary.json")["threshold"])


def duplicate_threshold_sweep(study: Study) -> pd.DataFrame:
    """Precision / recall / F1 / group count per candidate threshold (one row each; see
    :func:`bibad_utils.memorization.choose_threshold`); empty without planted groups."""
    path = _finder_path(study) / "sweep.json"
    cols = ["threshold", "precision", "recall", "f1", "tp", "pred_pairs", "true_pairs", "n_groups"]
    return pd.DataFrame(st.load_json(path)) if path.exists() else pd.DataFrame(columns=cols)


def found_groups(study: Study) -> list[list[int]]:
    """The duplicate groups found at the threshold in effect (sorted index lists)."""
    return st.load_json(_finder_path(study) / "groups.json")


def found_group_examples(study: Study, n_groups: int = 4, max_size: int = 4) -> dict[str, np.ndarray]:
    """A few found groups for a figure: ``{title: uint8 [k, H, W, 3]}`` (at most ``max_size`` images
    each; the title says whether the group is exactly a planted one, its first index and its size). Groups
    that are exactly a planted group come first; when some found group is not planted, the largest such
    group takes the last panel, since the finder's mistakes say most about the measure."""
    if not (isinstance(n_groups, int) and n_groups >= 1):
        raise ConfigError("n_groups", n_groups, "an integer >= 1")
    groups = found_groups(study)
    planted = _planted_groups(study)
    matches = group_matches(groups, planted) if planted else [False] * len(groups)
    good = [g for g, ok in zip(groups, matches) if ok]
    bad = sorted((g for g, ok in zip(groups, matches) if not ok), key=len, reverse=True)
    chosen = [(g, True) for g in good[:n_groups - 1 if bad else n_groups]] + [(g, False) for g in bad[:1]]
    if not planted:
        chosen = [(g, None) for g in sorted(groups, key=len, reverse=True)[:n_groups]]
    names = {True: "planted", False: "not planted", None: "group"}
    return {f"{names[ok]} #{g[0]} ({len(g)})": study.train_set.images_uint8(g[:max_size]) for g, ok in chosen}


# ---------------------------------------------------------------------------------------------------
# Random vs duplicate poisoning


def duplicate_comparison_cells(study: Study) -> list[tuple[Cell, Cell]]:
    """``(random cell, duplicate cell)`` of the first attack for each p in ``memorization.ratios``. The
    random cell is a grid cell (already trained by the earlier stages) when p is in the grid."""
    attack = study.cfg["attacks"][0]
    return [(Cell(attack, p), Cell(attack, p, "duplicate")) for p in mem_config(study)["ratios"]]


def check_duplicate_pool(study: Study) -> int:
    """The number of non-target duplicated images (the candidates of duplicate poisoning); raises a
    ConfigError before any training if a ratio of ``memorization.ratios`` needs more."""
    from bibad_utils.poison import n_poison_for

    pool = study.duplicate_pool()
    if pool is None:
        raise ConfigError("dataset.options.duplicate_fraction", 0,
                          "a dataset with duplicate groups (procedural: duplicate_fraction > 0; real data: "
                          "memorization.duplicate_threshold set)")
    labels = study.train_set.labels
    candidates = int(np.sum(labels[pool] != study.target))
    for p in mem_config(study)["ratios"]:
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
    from bibad_utils.metrics import g_counts, wilson_interval

    check_duplicate_pool(study)
    pool = set(study.duplicate_pool().tolist())
    w = float(study.cfg["sampling"]["guidance"][0])
    rows = []
    for pair in duplicate_comparison_cells(study):
        for cell in pair:
            gen = study.generations(cell)[("target", w)]
            judged = study.judge(gen, cell.kind)
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
                    **{f"paper_{d}": (ref[d][side] if d in ref else math.nan) for d in PAPER_DUPLICATES},
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


# ---------------------------------------------------------------------------------------------------
# Replication of training images


HELDOUT = "held-out real"


def heldout_similarity(study: Study) -> tuple[np.ndarray, np.ndarray]:
    """The reference of "no memorization": each held-out real (test) image's cosine similarity to its
    nearest clean training image (float32 ``[N_test]``) and that image's index (int64 ``[N_test]``); cached."""
    def build(art):
        from bibad_utils.memorization import nearest_train_similarity

        sim, idx = nearest_train_similarity(embed_images(study, study.test_set.images), train_embedding(study),
                                            block=mem_config(study)["block"])
        st.save_array(art.dir / "similarity.npy", sim)
        st.save_array(art.dir / "nearest.npy", idx)

    test_key = st.artifact_key("data_test", {"dataset": study.cfg["dataset"], "seed": study.seed,
                                             "labels": study.test_set.labels})
    path = study.store.cached("mem_heldout", _embedding_params(study),
                              [study.data_key, test_key] + _embedding_inputs(study), build, device=str(study.device))
    return st.load_array(path / "similarity.npy"), st.load_array(path / "nearest.npy")


def replication_threshold(study: Study) -> float:
    """Cosine threshold above which a generation counts as a replica (see
    :func:`replication_threshold_source`)."""
    m = mem_config(study)
    if m["replication_threshold"] is not None:
        return float(m["replication_threshold"])
    if m["replication_quantile"] is not None:
        return float(np.quantile(heldout_similarity(study)[0].astype(np.float64), m["replication_quantile"]))
    return duplicate_threshold(study)


def replication_threshold_source(study: Study) -> str:
    """Where :func:`replication_threshold` comes from: ``memorization.replication_threshold`` if set; else,
    with ``memorization.replication_quantile`` = q, the q-quantile of the held-out real images' nearest-
    training similarity (a replica is closer to a training image than a fraction q of fresh real images
    are); else the duplicate finder's threshold (as close to a training image as a planted copy)."""
    m = mem_config(study)
    if m["replication_threshold"] is not None:
        return "profile (memorization.replication_threshold)"
    if m["replication_quantile"] is not None:
        return f"{m['replication_quantile']:.0%} quantile of held-out real images' nearest-training similarity"
    return "the duplicate threshold"


def replication_cells(study: Study, include_duplicate: bool = True) -> list[Cell]:
    """The clean model, each attack's model at the largest grid ratio, and (``include_duplicate``) the
    duplicate-poisoning cells of :func:`duplicate_comparison_cells` (already trained there)."""
    cells = [Cell("clean")] + [Cell(a, float(max(study.cfg["ratios"]))) for a in study.cfg["attacks"]]
    if include_duplicate:
        cells += [dup for _, dup in duplicate_comparison_cells(study)]
    return cells


def _replication_path(study: Study, cell: Cell):
    params = {**_embedding_params(study), "set": "all", "guidance": study.guidance_all}
    inputs = [study.generation_key(cell), study.poison_key(cell)] + _embedding_inputs(study)

    def build(art):
        from bibad_utils.memorization import nearest_train_similarity

        gen = study.generations(cell)[("all", study.guidance_all)]
        sim, idx = nearest_train_similarity(embed_images(study, gen.images), training_embedding(study, cell),
                                            block=mem_config(study)["block"])
        st.save_array(art.dir / "similarity.npy", sim)
        st.save_array(art.dir / "nearest.npy", idx)

    return study.store.cached("mem_replication", params, inputs, build, device=str(study.device))


def replication_scores(study: Study, cell: Cell) -> tuple[np.ndarray, np.ndarray]:
    """For each all-class generation of ``cell``'s DM: cosine similarity to its nearest training image
    (float32 ``[N_all]`` in [-1, 1]) and that image's index (int64 ``[N_all]``); cached."""
    path = _replication_path(study, cell)
    return st.load_array(path / "similarity.npy"), st.load_array(path / "nearest.npy")


def replication_similarities(study: Study, cells=None, heldout: bool = True) -> dict[str, np.ndarray]:
    """``{name: nearest-training similarities}`` for the histogram: each cell (default
    :func:`replication_cells`) by its name, and (``heldout``) the held-out real images as the reference."""
    out = {HELDOUT: heldout_similarity(study)[0]} if heldout else {}
    out.update({c.name: replication_scores(study, c)[0] for c in (cells or replication_cells(study))})
    return out


def replication_table(study: Study, cells=None) -> pd.DataFrame:
    """Replication of training images by the all-class generations, one row per cell (default
    :func:`replication_cells`) after a first reference row ``held-out real`` (the test images against the
    clean training set, kind ``real``): ``cell``, ``model`` (the name on several lines, for axes), ``kind``,
    ``p``, ``pool``, ``n`` images, ``k`` replicas (similarity > ``threshold``), ``rate`` with Wilson
    95 % bounds ``lo`` / ``hi``, ``mean_sim`` and ``median_sim`` (cosine), ``nearest_poisoned`` (fraction of
    generations whose nearest training image is a poisoned one) beside ``poisoned_share`` (fraction of the
    training set that is poisoned)."""
    from bibad_utils.memorization import replication_rate
    from bibad_utils.metrics import wilson_interval

    threshold = replication_threshold(study)
    entries = [(HELDOUT, "real", 0.0, "random", heldout_similarity(study), np.zeros(0, np.int64))]
    for cell in cells or replication_cells(study):
        entries.append((cell.name, cell.kind, cell.ratio, cell.pool, replication_scores(study, cell),
                        np.asarray(study.poison_manifest(cell)["indices"], dtype=np.int64)))
    rows = []
    for name, kind, p, pool, (sim, idx), poisoned in entries:
        rate, k, n = replication_rate(sim, threshold)
        lo, hi = wilson_interval(k, n)
        rows.append({
            "cell": name, "model": name.replace(" ", "\n"), "kind": kind, "p": p, "pool": pool, "n": n, "k": k,
            "rate": rate, "lo": lo, "hi": hi, "threshold": threshold,
            "mean_sim": float(np.mean(sim)) if n else math.nan,
            "median_sim": float(np.median(sim)) if n else math.nan,
            "nearest_poisoned": float(np.isin(idx, poisoned).mean()) if n else math.nan,
            "poisoned_share": len(poisoned) / len(study.train_set),
        })
    return pd.DataFrame(rows)


def top_pairs(study: Study, cell: Cell, k: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` (default ``memorization.top_pairs``) all-class generations of ``cell`` most similar to a
    training image: (generated uint8 ``[k, H, W, 3]``, their nearest training images as the model saw
    them, uint8 ``[k, H, W, 3]``, similarities float ``[k]``), most similar first; the arguments of
    :func:`bibad_utils.plots.pairs_figure`."""
    from bibad_utils.memorization import top_replicated_pairs

    k = mem_config(study)["top_pairs"] if k is None else k
    sim, idx = replication_scores(study, cell)
    pairs = top_replicated_pairs(sim, idx, k)
    gen = study.generations(cell)[("all", study.guidance_all)].images
    train = study.poisoned(cell).images_uint8(pairs["train_index"].to_numpy())
    return np.asarray(gen[pairs["gen_index"].to_numpy()]), train, pairs["similarity"].to_numpy()


# ---------------------------------------------------------------------------------------------------
# Claims


def memorization_claims(study: Study, dup: pd.DataFrame | None = None, rep: pd.DataFrame | None = None,
                        finder: pd.DataFrame | None = None) -> list[dict]:
    """Claim rows of the stage (see :func:`claims_from_tables`); the tables are recomputed (from the cache)
    when not given."""
    dup = random_vs_duplicate(study) if dup is None else dup
    rep = replication_table(study) if rep is None else rep
    finder = duplicate_finder_table(study) if finder is None else finder
    cells = [Cell(r["kind"], float(r["p"]), r["pool"]) for _, r in rep.iterrows() if r["kind"] != "real"]
    sims = replication_similarities(study, cells, heldout=False)
    return claims_from_tables(dup, rep, finder, sims, guidance=float(study.cfg["sampling"]["guidance"][0]))


def claims_from_tables(dup: pd.DataFrame, rep: pd.DataFrame, finder: pd.DataFrame, sims: dict,
                       guidance: float) -> list[dict]:
    """Claim rows (:func:`bibad_utils.report.claim_row`) from the stage's tables.

    dup: :func:`random_vs_duplicate`; rep: :func:`replication_table`; finder: :func:`duplicate_finder_table`;
    sims: ``{cell name: nearest-training similarities}`` of the cells in ``rep``; guidance: the w of ``dup``.

    - "duplicate poisoning raises G1 / G2", per p: ours = G_dup - G_random (fraction) with Newcombe's
      interval (:func:`bibad_utils.verdicts.compare`): reproduced when the interval lies above 0;
      "underpowered" when it does not and the paper's largest rise at this p is below the test's minimum
      detectable effect; partly when only the point is above 0; a row where the paper reports no such p
      is of kind "no paper number".
    - "poisoned DMs replicate more than the clean DM", per random-poisoning cell of ``rep``: the
      replication-rate difference (Newcombe) and the mean-similarity difference (Welch interval); the
      paper's claim is qualitative (kind "no paper number").
    - the finder's precision and recall on planted duplicates: a control of our measure ("not tested").
    """
    from bibad_utils.report import claim_row

    rows = []
    for (p, metric), r in dup.groupby(["p", "metric"], sort=True):
        r = r.set_index("pool")
        d, lo, hi = rate_difference(int(r.loc["duplicate", "k"]), int(r.loc["duplicate", "n"]),
                                    int(r.loc["random", "k"]), int(r.loc["random", "n"]))
        values = paper_duplicate_values(p, metric)
        key = f"duplicates_{metric.lower()}"
        effect = max((dup_v - rnd_v for rnd_v, dup_v in values.values()), default=None)
        j = verdicts.compare(d, lo, hi, reference=0.0, paper_effect=effect)
        rows.append(claim_row(
            STAGE, f"Poisoning duplicated images raises {metric}", metric=f"{metric}(duplicate) - {metric}(random)",
            setting=f"{r['attack'].iloc[0]}, p={p:g}, w={guidance:g}", paper=paper.paper_text(key, p=p), key=key,
            kind="" if values else "no paper number", ours=d, lo=lo, hi=hi, verdict=j.verdict,
            note=(f"{metric}: {r.loc['random', 'ours']:.3f} (random) vs {r.loc['duplicate', 'ours']:.3f} "
                  f"(duplicate), n = {int(r.loc['random', 'n'])} each; Newcombe 95 % interval"
                  + (f"; paper's largest rise at this p {effect:+.3f}" if effect is not None else "")
                  + (f"; {j.verdict}: {j.reason}" if j.reason else ""))))
    clean = rep[rep["kind"] == "clean"]
    if len(clean):
        c = clean.iloc[0]
        threshold = float(c["threshold"])
        poisoned = rep[~rep["kind"].isin(["clean", "relabel", "real"]) & (rep["pool"] == "random")]
        for _, r in poisoned.iterrows():
            d, lo, hi = rate_difference(int(r["k"]), int(r["n"]), int(c["k"]), int(c["n"]))
            rows.append(claim_row(
                STAGE, "Poisoned DMs replicate training images more than the clean DM",
                metric=f"replication rate (cos > {threshold:.4g}), poisoned - clean", setting=r["cell"],
                paper=paper.paper_text("replication"), key="replication", ours=d, lo=lo, hi=hi,
                verdict=verdicts.compare(d, lo, hi).verdict,
                note=f"{int(r['k'])}/{int(r['n'])} vs {int(c['k'])}/{int(c['n'])} replicas; Newcombe 95 % interval"))
            d, lo, hi = mean_difference(sims[r["cell"]], sims[c["cell"]])
            rows.append(claim_row(
                STAGE, "Poisoned DMs' generations lie closer to their nearest training image",
                metric="mean nearest-training cosine, poisoned - clean", setting=r["cell"],
                paper=paper.paper_text("replication"), key="replication", ours=d, lo=lo, hi=hi,
                verdict=verdicts.compare(d, lo, hi).verdict,
                note=f"means {r['mean_sim']:.4f} vs {c['mean_sim']:.4f}; Welch normal 95 % interval"))
    f = finder.iloc[0]
    for metric in ("precision", "recall"):
        rows.append(claim_row(
            STAGE, "The duplicate finder recovers planted near-duplicates", metric=f"pairwise {metric}",
            setting=f"{f['embedding']}, cos >= {float(f['threshold']):.4g}", ours=float(f[metric]),
            verdict="not tested", key="duplicate_finder",
            note="validates our measure on the planted groups; the paper has no counterpart"))
    return rows


def claims_frame(rows: list[dict]) -> pd.DataFrame:
    """The claim rows for display: claim, setting, metric, paper, ours and its interval (rounded to 4
    digits), verdict, note."""
    cols = ["claim", "setting", "metric", "paper", "ours", "ours_lo", "ours_hi", "verdict", "note"]
    return pd.DataFrame(rows, columns=cols).round({"ours": 4, "ours_lo": 4, "ours_hi": 4})


def verdict_phrase(rows: list[dict], claim_prefix: str) -> str:
    """The verdicts of the claims whose text starts with ``claim_prefix``, counted, e.g.
    "2 settings: 1 reproduced, 1 partly"; "no setting" when there is none."""
    sel = [r["verdict"] for r in rows if r["claim"].startswith(claim_prefix)]
    if not sel:
        return "no setting"
    counts = ", ".join(f"{sel.count(v)} {v}" for v in verdicts.VERDICTS if sel.count(v))
    return f"{len(sel)} setting{'s' if len(sel) > 1 else ''}: {counts}"


def resolution_sentence(rows: list[dict]) -> str:
    """Whether our intervals on "duplicate minus random" are narrow enough to see an effect of the
    paper's size: compares the widest half-width with the largest difference the paper reports."""
    dup = [r for r in rows if r["claim"].startswith("Poisoning duplicated images")]
    if not dup:
        return "No duplicate-poisoning comparison ran in this profile."
    half = max((r["ours_hi"] - r["ours_lo"]) / 2 for r in dup)
    largest = max(abs(b - a) for table in PAPER_DUPLICATES.values() for v in table.values() for a, b in v.values())
    mde = max(verdicts.mde_from_interval(r["ours_lo"], r["ours_hi"]) for r in dup)
    if half > largest:
        return (f"Our intervals on the difference reach ±{half:.1%}, wider than the largest difference the paper "
                f"reports ({largest:.1%}); the tests could detect only rises of {mde:.1%} or more (80 % power, "
                f"alpha 0.05), so where the paper's rise is smaller the verdict is \"underpowered\": not "
                f"detected rather than contradicted.")
    return (f"Our intervals on the difference are at most ±{half:.1%} wide, narrower than the largest difference "
            f"the paper reports ({largest:.1%}): an effect of that size would have been detected.")


def glue_values(study: Study, finder: pd.DataFrame, dup: pd.DataFrame, rep: pd.DataFrame,
                rows: list[dict]) -> dict:
    """The numbers and phrases the notebook's text quotes, keyed ``nb06_*`` (for ``myst_nb.glue``)."""
    f = finder.iloc[0]
    clean = rep[rep["kind"] == "clean"]
    return {
        "nb06_embedding": str(f["embedding"]),
        "nb06_dup_threshold": float(f["threshold"]),
        "nb06_threshold_source": str(f["threshold_source"]),
        "nb06_rep_threshold": replication_threshold(study),
        "nb06_rep_threshold_source": replication_threshold_source(study),
        "nb06_rate_heldout": float(rep.loc[rep["kind"] == "real", "rate"].iloc[0]) if len(rep) else math.nan,
        "nb06_planted_groups": int(f["planted_groups"]),
        "nb06_found_groups": int(f["found_groups"]),
        "nb06_finder_precision": float(f["precision"]),
        "nb06_finder_recall": float(f["recall"]),
        "nb06_finder_f1": float(f["f1"]),
        "nb06_attack": str(study.cfg["attacks"][0]),
        "nb06_w": float(study.cfg["sampling"]["guidance"][0]),
        "nb06_w_all": float(study.guidance_all),
        "nb06_n_target": int(dup["n"].iloc[0]) if len(dup) else 0,
        "nb06_n_all": int(rep.loc[rep["kind"] != "real", "n"].iloc[0]) if (rep["kind"] != "real").any() else 0,
        "nb06_rate_clean": float(clean["rate"].iloc[0]) if len(clean) else math.nan,
        "nb06_dup_summary": verdict_phrase(rows, "Poisoning duplicated images"),
        "nb06_rep_summary": verdict_phrase(rows, "Poisoned DMs replicate"),
        "nb06_closer_summary": verdict_phrase(rows, "Poisoned DMs' generations"),
        "nb06_resolution": resolution_sentence(rows),
    }


__all__ = [
    "HELDOUT", "PAPER_DUPLICATES", "STAGE", "check_duplicate_pool", "claims_frame", "claims_from_tables",
    "duplicate_comparison_cells", "duplicate_finder_table", "duplicate_threshold",
    "duplicate_threshold_sweep", "embed_images", "found_group_examples", "found_groups", "glue_values",
    "group_matches", "heldout_similarity", "mean_difference", "mem_config", "memorization_claims",
    "paper_duplicate_values", "random_vs_duplicate", "random_vs_duplicate_wide", "rate_difference",
    "replication_cells", "replication_scores", "replication_similarities", "replication_table",
    "replication_threshold", "replication_threshold_source", "resolution_sentence", "top_pairs", "train_embedding",
    "training_embedding", "verdict_phrase",
]
