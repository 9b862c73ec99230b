"""Insight 2's verdict rule, the phase transition ("more poison, more mismatch"): over however many poisoning
ratios a run has, on the slides' quantities (#G1 - #triggered training images and #G2 - the same, per p, as
fractions of the generations), a two-sided Cochran-Armitage test of a fall of the G2 share G2 / (G1 + G2),
G1's take-over, and G2's dominance somewhere. Its verdicts and checks are those of :mod:`bibad_utils.verdicts`.
"""

from __future__ import annotations

import math

import numpy as np

from bibad_utils.base import ConfigError
from bibad_utils.metrics import Z95, newcombe_difference
from bibad_utils.verdicts import finite, mde_from_interval


def _share_rows(points) -> list[dict]:
    rows = []
    for i, pt in enumerate(points):
        missing = [k for k in ("p", "n", "n_G1", "n_G2") if k not in pt]
        if missing:
            raise ConfigError(f"phase point {i}", pt, f"a dict with p, n, n_G1, n_G2 (missing {missing})")
        n, g1, g2 = int(pt["n"]), int(pt["n_G1"]), int(pt["n_G2"])
        if n <= 0 or g1 < 0 or g2 < 0 or g1 + g2 > n:
            raise ConfigError(f"phase point {i}", pt, "counts with n > 0 and 0 <= n_G1 + n_G2 <= n")
        rt = pt.get("r_train")
        rt = float(rt) if rt is not None and math.isfinite(float(rt)) else math.nan
        rows.append({"p": float(pt["p"]), "n": n, "n_G1": g1, "n_G2": g2, "n_triggered": g1 + g2,
                     "G2_share": g2 / (g1 + g2) if g1 + g2 else math.nan,
                     "G1_minus_r_train": g1 / n - rt, "G2_minus_r_train": g2 / n - rt})
    return sorted(rows, key=lambda r: r["p"])


def share_trend(points) -> dict:
    """Cochran-Armitage test for a trend of the G2 share over p (scores: the ranks of p), on the points
    with triggered generations: ``z`` (negative = the share falls as p grows), one-sided ``p_fall``
    (probability of a fall this strong by chance; the two-sided p is ``2 min(p_fall, 1 - p_fall)``) and
    the number of points used ``k``."""
    rows = [r for r in _share_rows(points) if r["n_triggered"] > 0]
    if len(rows) < 2:
        return {"z": math.nan, "p_fall": math.nan, "k": len(rows)}
    n = np.array([r["n_triggered"] for r in rows], float)
    x = np.array([r["n_G2"] for r in rows], float)
    s = np.arange(len(rows), dtype=float)
    pbar = x.sum() / n.sum()
    t = float(np.sum(s * (x - n * pbar)))
    var = pbar * (1 - pbar) * (np.sum(n * s ** 2) - np.sum(n * s) ** 2 / n.sum())
    if var <= 0:
        return {"z": math.nan, "p_fall": math.nan, "k": len(rows)}
    zt = t / math.sqrt(var)
    return {"z": zt, "p_fall": 0.5 * math.erfc(-zt / math.sqrt(2)), "k": len(rows)}


PHASE_MIN_TRIGGERED = 10  # triggered generations a ratio needs before its G2 share enters Insight 2's test


def phase_transition(points, *, paper_effect: float | None = None, alpha: float = 0.05, z: float = Z95) -> dict:
    """Verdict of Insight 2 from per-p counts of target-prompt generations, worded as what it tests: **the
    G2 share of triggered generations falls as p grows** (and G1 takes over).

    ``points``: dicts with ``p``, ``n`` (generations), ``n_G1``, ``n_G2`` and optionally ``r_train`` (the
    trigger ratio among the target-prompt training images), any number >= 2 of them. Where a cell was
    trained several times, the caller pools the runs' counts per p (more generations, one test).

    Criteria, all on the slides' quantities:

    - the G2 share G2 / (G1 + G2) falls significantly as p grows: Cochran-Armitage trend test over all p,
      **two-sided** at ``alpha`` like every other rule (a fall: ``z < 0`` and the two-sided p below
      ``alpha``; with two ratios, the two-proportion test);
    - G1 takes over: from the lowest to the highest p, #G1 - #triggered training images rises by more than
      #G2 - the same (as fractions of the generations: the rise of G1 exceeds the rise of G2);
    - G2 dominates somewhere: the paper's pattern is G2 at low p, G1 at high p; when the G2 share is at
      most one half at every p, the fall is shown but not the pattern.

    Reproduced when all three hold; "partly" when the share falls significantly but G1 does not take over
    or G2 never dominates (the reason says which); "underpowered" when the share changes significantly in
    neither direction and the drop's minimum detectable effect exceeds ``paper_effect`` (the paper's drop
    of the G2 share); otherwise "partly" when the share falls (point estimate) and "not reproduced" when
    it does not (or rises significantly).
    A p with fewer than :data:`PHASE_MIN_TRIGGERED` triggered generations (the DM did not, or barely,
    learn the trigger there) has no usable G2 share (one triggered image makes it 0 or 1): it is left out,
    said in the reason, and the test runs over the other ratios; "not tested" when fewer than two remain.

    Returns ``verdict``, ``reason``, ``mde``, ``drop`` (share at the lowest p - share at the highest) with
    ``drop_lo`` / ``drop_hi`` (Newcombe), ``trend_z``, ``p_fall`` (one-sided, for reference), ``p_two_sided``,
    ``g1_rise``, ``g2_rise``, ``g2_dominates`` (the G2 share above one half at some used p),
    ``crosses_half`` (informational: G2 dominates at the lowest p and G1 at the highest) and ``points`` (the
    per-p rows, with the slides' quantities ``G1_minus_r_train`` / ``G2_minus_r_train``, NaN without r_train).
    """
    rows = _share_rows(points)
    if len(rows) < 2:
        raise ConfigError("points", len(rows), "at least two poisoning ratios")
    base = {"points": rows, "drop": math.nan, "drop_lo": math.nan, "drop_hi": math.nan, "trend_z": math.nan,
            "p_fall": math.nan, "p_two_sided": math.nan, "g1_rise": math.nan, "g2_rise": math.nan,
            "crosses_half": False, "g2_dominates": False, "mde": math.nan, "left_out": []}
    empty = [r["p"] for r in rows if r["n_triggered"] < PHASE_MIN_TRIGGERED]
    empty_text = (f"fewer than {PHASE_MIN_TRIGGERED} triggered generations at p = "
                  + ", ".join(f"{100 * p:g} %" for p in empty))
    used = [r for r in rows if r["n_triggered"] >= PHASE_MIN_TRIGGERED]
    if len(used) < 2:
        return {**base, "left_out": empty, "verdict": "not tested",
                "reason": empty_text + (" (fewer than two ratios left)" if empty else "")}
    low, high = used[0], used[-1]
    d, lo, hi = newcombe_difference(low["n_G2"], low["n_triggered"], high["n_G2"], high["n_triggered"], z)
    trend = share_trend(used)
    p_two = 2 * min(trend["p_fall"], 1 - trend["p_fall"]) if finite(trend["p_fall"]) else math.nan
    g1_rise = high["n_G1"] / high["n"] - low["n_G1"] / low["n"]
    g2_rise = high["n_G2"] / high["n"] - low["n_G2"] / low["n"]
    mde = mde_from_interval(lo, hi, z=z)
    dominates = any(r["G2_share"] > 0.5 for r in used)
    out = {**base, "left_out": empty, "drop": d, "drop_lo": lo, "drop_hi": hi, "trend_z": trend["z"],
           "p_fall": trend["p_fall"], "p_two_sided": p_two, "g1_rise": g1_rise, "g2_rise": g2_rise, "mde": mde,
           "g2_dominates": dominates, "crosses_half": bool(low["G2_share"] > 0.5 > high["G2_share"])}
    significant = finite(p_two) and p_two < alpha
    falls = significant and trend["z"] < 0
    rises = significant and trend["z"] > 0
    takeover = g1_rise > g2_rise
    span = f"p = {100 * low['p']:g} -> {100 * high['p']:g} % ({len(used)} ratios)"
    test = f"two-sided p = {p_two:.3g}" if finite(p_two) else "no test"
    shares = ", ".join(f"{100 * r['G2_share']:.0f} %" for r in used)
    if falls and takeover and dominates:
        verdict, reason = "reproduced", (f"the G2 share falls significantly over {span} ({test}), G1 rises by "
                                         f"{g1_rise:+.3f} vs G2 {g2_rise:+.3f}, and G2 dominates at the low end")
    elif falls and not takeover:
        verdict, reason = "partly", (f"the G2 share falls significantly ({test}), but G1 rises less than G2 "
                                     f"({g1_rise:+.3f} vs {g2_rise:+.3f})")
    elif falls:
        verdict, reason = "partly", (f"the G2 share falls significantly over {span} ({test}), but G2 never "
                                     f"dominates (G2 share {shares}): the fall is shown, the G2-then-G1 pattern is not")
    elif rises:
        verdict, reason = "not reproduced", f"the G2 share rises significantly as p grows ({test})"
    elif paper_effect is not None and finite(mde) and abs(paper_effect) < mde:
        verdict, reason = "underpowered", (f"no significant change of the G2 share ({test}); the test could "
                                           f"detect only drops of {mde:.3f} or more, the paper's drop is "
                                           f"{abs(paper_effect):.3f}")
    elif d > 0:
        verdict, reason = "partly", f"the G2 share falls, not significantly ({test})"
    else:
        verdict, reason = "not reproduced", f"the G2 share does not fall as p grows ({test})"
    if empty:
        reason = f"{empty_text}, left out (the DM did not learn the trigger there); {reason}"
    return {**out, "verdict": verdict, "reason": reason}
