"""Training seeds of stage 04's claims.

A profile may train a cell several times (``train_seeds``): :func:`seed_table` judges every training run of
such cells, :func:`seed_spread` gives the mean over the runs, their standard deviation and a t interval of
the mean (never narrower than the pooled sampling interval), shown next to the sampling (Wilson) interval of one run; the headline claims use the interval
across runs where there are runs (:func:`bibad_utils.experiments.insights.claims.insight_claims`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from bibad_utils import metrics
from bibad_utils.experiments.insights.groups import cell_keys, g_row
from bibad_utils.experiments.insights.judging import detectors_for, trigger_r_train
from bibad_utils.metrics import Z95

SPREAD_COLUMNS = ("r_gen", "G1", "G2", "G2_share")
GROUP_KEYS = ["cell", "attack", "control", "ratio", "p", "detector", "guidance"]


def seed_table(study, z: float = Z95) -> pd.DataFrame:
    """The G table (:func:`~bibad_utils.experiments.insights.groups.g_row` columns) of every training run
    of every cell trained more than once, one row per (cell, detector, w, run) with ``train_seed``
    (0 = the profile's run, the one :func:`~bibad_utils.experiments.insights.groups.g_table` shows);
    empty when every cell has one run."""
    rows = []
    for cell in study.cells():
        runs = study.seed_cells(cell)
        if len(runs) < 2:
            continue
        r_train = trigger_r_train(study, cell)
        for run in runs:
            for det in detectors_for(study, cell):
                for (name, w), j in study.judges.judged(run, det).items():
                    if name == "target":
                        rows.append(g_row(j["trigger"], j["match"], r_train=r_train, z=z, **cell_keys(cell),
                                          detector=det, guidance=w, train_seed=run.seed))
    return pd.DataFrame(rows)


# the counts behind each spread column in a g_row: (successes, trials); G2_share's trials are the triggered
POOLED_KEYS = ("n", "n_G1", "n_G2")
POOLED_COUNTS = {"r_gen": ("n_r_gen", "n"), "G1": ("n_G1", "n"), "G2": ("n_G2", "n"), "G2_share": ("n_G2", "n_triggered")}


def _pooled_interval(g: pd.DataFrame, col: str, level: float) -> tuple[float, float] | None:
    """The Wilson interval of ``col`` over the generations of all runs of ``g`` pooled (None without counts)."""
    k_col, n_col = POOLED_COUNTS.get(col, (None, None))
    if k_col not in g.columns or n_col not in g.columns:
        return None
    k, n = int(g[k_col].sum()), int(g[n_col].sum())
    return None if n == 0 else metrics.wilson_interval(k, n, float(stats.norm.ppf(0.5 + level / 2)))


def seed_spread(sdf: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Across the training runs of each (cell, detector, w) of :func:`seed_table`: ``n_seeds`` and, for each
    of :data:`SPREAD_COLUMNS`, ``<col>_mean``, ``<col>_sd`` (sample standard deviation) and
    ``<col>_seed_lo`` / ``<col>_seed_hi``: the t interval of the mean at ``level``, clipped to [0, 1], and
    widened where needed to the Wilson interval of all runs' generations pooled, since with few runs the
    sample sd can come out (near) zero by chance, e.g. three runs that each generate 1 triggered image in
    200, and a t interval of zero width would claim a precision no single run has; NaN for one run; and
    ``pooled_n`` / ``pooled_n_G1`` / ``pooled_n_G2``: the counts of all runs summed (Insight 2's test pools
    the runs, :func:`pooled_counts`). Empty (with these columns) for an empty table."""
    cols = (GROUP_KEYS + ["n_seeds"] + [f"pooled_{k}" for k in POOLED_KEYS]
            + [f"{c}_{s}" for c in SPREAD_COLUMNS for s in ("mean", "sd", "seed_lo", "seed_hi")])
    if sdf is None or sdf.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for keys, g in sdf.groupby(GROUP_KEYS, sort=False, dropna=False):
        row = dict(zip(GROUP_KEYS, keys))
        n = len(g)
        row["n_seeds"] = n
        for k in POOLED_KEYS:
            row[f"pooled_{k}"] = int(g[k].sum()) if k in g.columns else 0
        for c in SPREAD_COLUMNS:
            v = g[c].to_numpy(dtype=float)
            v = v[np.isfinite(v)]
            mean = float(v.mean()) if len(v) else math.nan
            sd = float(v.std(ddof=1)) if len(v) > 1 else math.nan
            half = float(stats.t.ppf(0.5 + level / 2, len(v) - 1) * sd / math.sqrt(len(v))) if len(v) > 1 else math.nan
            lo, hi = max(0.0, mean - half), min(1.0, mean + half)
            pooled = _pooled_interval(g, c, level)
            if pooled is not None and math.isfinite(lo):  # never narrower than the runs' pooled sampling interval
                lo, hi = min(lo, pooled[0]), max(hi, pooled[1])
            row.update({f"{c}_mean": mean, f"{c}_sd": sd, f"{c}_seed_lo": lo, f"{c}_seed_hi": hi})
        rows.append(row)
    return pd.DataFrame(rows, columns=cols)


def _runs_row(spread: pd.DataFrame | None, cell: str, detector: str, guidance: float) -> pd.Series | None:
    """The :func:`seed_spread` row of one (cell, detector, w) trained two or more times; None otherwise."""
    if spread is None or spread.empty:
        return None
    sel = spread[(spread["cell"] == cell) & (spread["detector"] == detector)
                 & (spread["guidance"].astype(float) == float(guidance))]
    return None if sel.empty or int(sel["n_seeds"].iloc[0]) < 2 else sel.iloc[0]


def across_seeds(spread: pd.DataFrame | None, cell: str, detector: str, guidance: float, col: str) -> dict | None:
    """``{"mean", "lo", "hi", "sd", "n"}`` of ``col`` across the training runs of one (cell, detector, w) of
    :func:`seed_spread`; None without two or more runs."""
    r = _runs_row(spread, cell, detector, guidance)
    if r is None:
        return None
    return {"mean": float(r[f"{col}_mean"]), "lo": float(r[f"{col}_seed_lo"]), "hi": float(r[f"{col}_seed_hi"]),
            "sd": float(r[f"{col}_sd"]), "n": int(r["n_seeds"])}


def pooled_counts(spread: pd.DataFrame | None, cell: str, detector: str, guidance: float) -> dict | None:
    """``{"n", "n_G1", "n_G2", "runs"}``: the target-prompt counts of every training run of one (cell,
    detector, w) of :func:`seed_spread` summed; None without two or more runs."""
    r = _runs_row(spread, cell, detector, guidance)
    if r is None:
        return None
    return {"n": int(r["pooled_n"]), "n_G1": int(r["pooled_n_G1"]), "n_G2": int(r["pooled_n_G2"]),
            "runs": int(r["n_seeds"])}
