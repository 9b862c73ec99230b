"""Verdict rules, in one place for every chapter.

A verdict is one of :data:`VERDICTS`. Every rule returns a :class:`Judgement` ``(verdict, reason, mde)``:
the verdict, a sentence saying why (empty when the verdict speaks for itself), and the minimum detectable
effect of the test where the rule computed one (NaN otherwise). A claim row takes ``verdict`` and puts
``reason`` in its note.

The rules:

- :func:`baseline_check` / :func:`false_alarm_check`: a comparison is stated only when its baseline passes
  its own check (a detector's training-set AUROC above chance by its interval; a detector's false-alarm
  rate on a clean model low). :func:`compare` turns a failed check into "not tested" with the reason.
- :func:`compare`: "ours differs from ``reference`` in the claimed direction, by about the paper's effect".
  **The magnitude rule** (one rule for every chapter): with the paper's effect E (same unit, measured
  from the reference, in the claimed direction), "reproduced" needs the interval beyond the reference
  (the direction is shown) and not wholly short of E (it contains E or exceeds it in the claimed
  direction); an interval beyond the reference but wholly short of E is "partly" (the direction holds,
  the size falls short), its reason giving both. Without a paper number the direction alone decides
  (such rows are "no paper number", :func:`bibad_utils.report.claim_row`). When the interval does not
  exclude the reference, a test too weak to see an effect of the paper's size (minimum detectable effect,
  :func:`mde_from_interval`, larger than E) says "underpowered", not "not reproduced"; an interval wholly
  on the wrong side says "not reproduced". An inverted interval (lo > hi) is refused.
- :func:`non_inferior`: "ours is comparable" (at most a margin worse), with "underpowered" when the
  interval is wider than the margin.
- Insight 2's rule over however many poisoning ratios a run has (a two-sided trend test of the G2
  share, G1's take-over, G2's dominance) is :func:`phase_transition`.
- :func:`capped_verdict`: an ASR verdict read together with its TA verdict (a low ASR of a model that no
  longer classifies is no robustness).
- :func:`count_verdicts` / :func:`headline`: verdict counts with the paper's claims apart from the
  controls and the rows without a paper number (``kind``, :data:`bibad_utils.paper.KINDS`).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import NamedTuple

from bibad_utils.base import ConfigError
from bibad_utils.metrics import Z95, newcombe_difference, share_rows, share_trend
from bibad_utils.paper import KINDS, PAPER_EPOCHS

VERDICTS = ("reproduced", "partly", "not reproduced", "underpowered", "not tested")
Z_POWER80 = 0.8416212335729143  # one-sided 80 % power
CHANCE_AUROC = 0.5


class Judgement(NamedTuple):
    """A verdict (one of :data:`VERDICTS`), the reason (a sentence, "" if none) and the minimum
    detectable effect of the test (NaN when the rule computed none)."""

    verdict: str
    reason: str = ""
    mde: float = math.nan


class Check(NamedTuple):
    """Whether a baseline passes its own check (``ok``) and a sentence saying what was checked."""

    ok: bool
    reason: str


def finite(*xs) -> bool:
    """Whether every one of ``xs`` is a number that is neither None, NaN nor infinite."""
    return all(x is not None and math.isfinite(float(x)) for x in xs)


def check_interval(lo: float, hi: float, name: str = "interval") -> None:
    """Refuse an inverted interval: ``lo > hi`` (both finite) is a caller's error, never a verdict."""
    if finite(lo, hi) and float(lo) > float(hi):
        raise ConfigError(name, f"[{lo}, {hi}]", "an interval with lo <= hi")


def _direction(direction: str) -> int:
    if direction not in ("greater", "less"):
        raise ConfigError("direction", direction, "greater | less")
    return 1 if direction == "greater" else -1


# ------------------------------------------------------------------------------------ baselines

def baseline_check(lo: float, hi: float = math.nan, *, chance: float = CHANCE_AUROC,
                   what: str = "training-set AUROC", floor_name: str = "chance") -> Check:
    """A baseline measured with a 95 % interval ``[lo, hi]`` must lie above ``chance`` by its interval
    (e.g. a detector's AUROC on the poisoned training set, whose lower bound must exceed 0.5); ``floor_name``
    says what the floor is in the message (chance, or a required share that is not chance)."""
    if not finite(lo):
        return Check(False, f"the {what} has no interval")
    shown = f"[{lo:.3f}, {hi:.3f}]" if finite(hi) else f"lower bound {lo:.3f}"
    if lo > chance:
        return Check(True, f"the {what} {shown} is above {floor_name} ({chance:g})")
    where = "lies below" if finite(hi) and hi < chance else "includes or lies below"
    return Check(False, f"the {what} {shown} {where} {floor_name} ({chance:g}): the baseline fails its own check")


def false_alarm_check(hi: float, *, max_rate: float, what: str = "false-alarm rate on a clean model") -> Check:
    """A detector's false-alarm rate (upper 95 % bound ``hi``) must be at most ``max_rate``."""
    if not finite(hi):
        return Check(False, f"the {what} was not measured")
    if hi <= max_rate:
        return Check(True, f"the {what} (upper bound {hi:.3f}) is at most {max_rate:g}")
    return Check(False, f"the {what} (upper bound {hi:.3f}) exceeds {max_rate:g}: the ground truth is unusable")


EXPOSURE_MIN_SHARE = 0.5  # a DM fine-tuned for less than this share of the paper's epochs is "far below" it


def exposure_check(epochs: float) -> Check:
    """Whether a DM was fine-tuned near the paper's exposure: ``epochs`` (how many times each poisoned image
    was seen in fine-tuning, on average) at least :data:`EXPOSURE_MIN_SHARE` of :data:`PAPER_EPOCHS` (about 50)."""
    if not finite(epochs):
        return Check(True, "exposure not stated")
    if epochs >= EXPOSURE_MIN_SHARE * PAPER_EPOCHS:
        return Check(True, f"fine-tuned {epochs:.1f} of about {PAPER_EPOCHS:g} epochs")
    return Check(False, f"not tested at the paper's exposure ({epochs:.1f} of about {PAPER_EPOCHS:g} epochs)")


def at_exposure(verdict: str, epochs: float) -> tuple[str, str]:
    """A verdict read with the DM's exposure: a "not reproduced" from a DM trained far below the paper's
    exposure (:func:`exposure_check` fails) is no finding about the paper, so it becomes "not tested" with
    the reason; every other verdict stands (a positive result at a lower exposure still shows the effect).
    Returns ``(verdict, reason)`` ("" when unchanged)."""
    check = exposure_check(epochs)
    return ("not tested", check.reason) if verdict == "not reproduced" and not check.ok else (verdict, "")


def first_failed(*checks: Check) -> Check | None:
    """The first check of ``checks`` that failed, None when all passed (None entries are skipped)."""
    return next((c for c in checks if c is not None and not c.ok), None)


# ------------------------------------------------------------------------------------ power

def mde_from_interval(lo: float, hi: float, *, z: float = Z95, power_z: float = Z_POWER80) -> float:
    """Minimum detectable effect of a test whose estimate has the two-sided ``z`` interval ``[lo, hi]``:
    the true effect that the interval would exclude zero for with the power of ``power_z`` (80 %),
    ``(z + power_z) * se`` with ``se = (hi - lo) / (2 z)``. NaN without a finite interval."""
    return math.nan if not finite(lo, hi) or hi < lo else (z + power_z) * (hi - lo) / (2 * z)


# ------------------------------------------------------------------------------------ comparisons

def compare(value: float, lo: float, hi: float, *, reference: float = 0.0, direction: str = "greater",
            paper_effect: float | None = None, baseline: Check | None = None, margin: float = 0.0) -> Judgement:
    """Verdict for "ours lies beyond ``reference`` (+ ``margin``) in ``direction``" (greater | less), by
    about the paper's effect, from the point ``value`` and its 95 % interval ``[lo, hi]``.

    - ``baseline`` failed (:func:`baseline_check`): "not tested", the check's reason.
    - the whole interval beyond the threshold: "reproduced" when ``paper_effect`` (the size of the
      paper's effect, same unit as ``value``, measured from the reference in the claimed direction) is
      None or not wholly above the interval (the interval contains it or exceeds it); "partly" when the
      whole interval falls short of it (the direction holds, the size does not).
    - the whole interval on the wrong side: "not reproduced".
    - otherwise, when ``paper_effect`` is smaller than the test's minimum detectable effect:
      "underpowered" with the MDE in the reason; else "partly" when the point is beyond the threshold,
      "not reproduced" when not.

    A paper effect against the claimed direction is not used for the size check (the reason says so).
    """
    sign = _direction(direction)
    check_interval(lo, hi)
    if baseline is not None and not baseline.ok:
        return Judgement("not tested", baseline.reason)
    if not finite(value):
        return Judgement("not tested", "no measurement")
    thr = reference + sign * margin
    near, far = (lo, hi) if sign > 0 else (hi, lo)  # bound nearest the threshold when the claim holds
    has_ci = finite(lo, hi)
    mde = mde_from_interval(lo, hi) if has_ci else math.nan
    effect = float(paper_effect) if paper_effect is not None and finite(paper_effect) else None
    if has_ci and sign * (near - thr) > 0:
        if effect is None:
            return Judgement("reproduced", "", mde)
        if sign * effect <= 0:
            return Judgement("reproduced", f"the paper's own effect ({effect:+.3f}) is not in the claimed "
                                           "direction: only the direction is compared", mde)
        reach = sign * (far - reference)  # the largest effect the interval allows
        if reach >= sign * effect:
            return Judgement("reproduced", "", mde)
        return Judgement("partly", f"the direction holds but the size falls short: the interval allows at "
                                   f"most {reach:+.3f}, the paper's effect is {sign * effect:+.3f}", mde)
    if has_ci and sign * (far - thr) < 0:
        return Judgement("not reproduced", "the interval lies wholly on the other side", mde)
    if effect is not None and finite(mde) and abs(effect) < mde:
        return Judgement("underpowered", f"the test could detect only effects of {mde:.3f} or more (80 % power, "
                                         f"alpha 0.05); the paper's effect is {abs(effect):.3f}", mde)
    if sign * (value - thr) > 0:
        return Judgement("partly", "the point estimate agrees, its interval does not exclude the reference", mde)
    return Judgement("not reproduced", "", mde)


def non_inferior(value: float, lo: float, hi: float, *, margin: float, baseline: Check | None = None) -> Judgement:
    """Verdict for "ours is comparable: at most ``margin`` below zero" (e.g. TA(DC) - TA(classifier) with a
    margin of 0.05), from the difference ``value`` and its 95 % interval ``[lo, hi]``.

    Reproduced when ``lo > -margin``; not reproduced when ``hi < -margin``; otherwise "underpowered" when
    the interval is too wide for any outcome to prove comparability (its half-width exceeds ``margin``:
    even a difference of zero would leave the lower bound below ``-margin``), else "partly" when the point
    is above ``-margin`` and "not reproduced" when not. A failed ``baseline`` gives "not tested"."""
    if margin <= 0:
        raise ConfigError("margin", margin, "a positive number (the largest shortfall still 'comparable')")
    check_interval(lo, hi)
    if baseline is not None and not baseline.ok:
        return Judgement("not tested", baseline.reason)
    if not finite(value, lo, hi):
        return Judgement("not tested", "no measurement")
    mde = mde_from_interval(lo, hi)
    if lo > -margin:
        return Judgement("reproduced", "", mde)
    if hi < -margin:
        return Judgement("not reproduced", f"the interval lies wholly below -{margin:g}", mde)
    half = (hi - lo) / 2
    if half > margin:
        return Judgement("underpowered", f"the interval's half-width {half:.3f} exceeds the margin {margin:g}: "
                                         "a test this size cannot show comparability at these rates", mde)
    if value > -margin:
        return Judgement("partly", f"the point estimate is within the margin {margin:g}, its interval is not", mde)
    return Judgement("not reproduced", "", mde)


# ------------------------------------------------------------------------------------ counting

def row_kind(row: dict) -> str:
    """The ``kind`` of a claim row: its own ``kind`` when set, else "no paper number" for a row whose
    ``paper`` text is empty and "paper claim" otherwise (rows saved before kinds existed)."""
    kind = row.get("kind") or ""
    if kind:
        if kind not in KINDS:
            raise ConfigError("kind", kind, " | ".join(KINDS))
        return kind
    return "no paper number" if not str(row.get("paper", "") or "").strip() else "paper claim"


def count_verdicts(rows) -> dict:
    """Verdict counts per kind: ``{kind: {verdict: n, ..., "total": n}}`` for every kind of
    :data:`bibad_utils.paper.KINDS` (zeros included). ``rows``: claim rows (dicts) or a DataFrame."""
    if hasattr(rows, "to_dict"):
        rows = rows.to_dict("records")
    out = {k: {**{v: 0 for v in VERDICTS}, "total": 0} for k in KINDS}
    for r in rows:
        v = r["verdict"]
        if v not in VERDICTS:
            raise ConfigError("verdict", v, " | ".join(VERDICTS))
        k = row_kind(r)
        out[k][v] += 1
        out[k]["total"] += 1
    return out


def counts_text(verdicts, always=()) -> str:
    """``verdicts`` (strings or {verdict: n}) as "3 reproduced, 1 partly" (VERDICTS order; 0 only if in ``always``)."""
    counts = Counter(verdicts)
    return ", ".join(f"{counts[v]} {v}" for v in VERDICTS if counts[v] or v in always)


_KIND_PLURAL = {"paper claim": "paper claims", "control": "controls", "no paper number": "rows without a paper number"}


def headline(rows) -> str:
    """One sentence of verdict counts with the paper's claims first and apart from the controls and the
    rows without a paper number, e.g. "12 paper claims: 5 reproduced, ...; 4 controls: ...; 3 rows
    without a paper number: ..." (verdicts with a zero count are left out)."""
    parts = [f"{c['total']} {_KIND_PLURAL[k]}: {counts_text(c) or 'none'}" for k, c in count_verdicts(rows).items()
             if c["total"] or k == "paper claim"]  # count_verdicts has every kind, in the order of KINDS
    return "; ".join(parts) + "."


def rows_of(rows, keys, metric: str | None = None) -> list[dict]:
    """The claim rows of the claim keys ``keys`` (one key or several; :data:`bibad_utils.paper.CLAIM_KEYS`),
    and, where a key has rows of several measures (``replication``), only those whose metric starts with
    ``metric``: rows are chosen by key, never by the wording of their claim."""
    keys = {keys} if isinstance(keys, str) else set(keys)
    return [r for r in rows if r.get("key") in keys and (metric is None or str(r.get("metric", "")).startswith(metric))]


def capped_verdict(verdict: str, ta_verdict: str) -> tuple[str, str]:
    """An ASR verdict read together with its TA verdict: a low ASR means robustness only for a model
    that still classifies, so when the TA claim is not reproduced (even the point estimate falls
    short) the ASR claim is "not tested"; otherwise the ASR verdict stands. Returns ``(verdict, note)``."""
    if ta_verdict == "not reproduced" and verdict in ("reproduced", "partly"):
        return "not tested", "the TA is too low for a low ASR to mean robustness"
    return verdict, ""


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
    rows = share_rows(points)
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
