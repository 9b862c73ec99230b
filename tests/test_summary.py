"""The results summary's pure parts: claim families and the coverage check, the claims table from saved
claim files, verdict counts, Markdown, styling, r_gen rows and the teaser drawing."""

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from bibad_utils import metrics
from bibad_utils.config import ConfigError
from bibad_utils.experiments import summary as sm
from bibad_utils.publish.readme import readme_results
from bibad_utils.experiments.explorer import frame_colors
from bibad_utils.publish.notebooks import STAGE_TITLES
from bibad_utils.report import claim_row, save_claims

# One row per family, worded as the analysis stages word their claims.
FAMILY_ROWS = {
    "trojan_g1": ("04_insights", "Trojan horse: the poisoned DM generates trigger-carrying images of the wrong "
                  "class (G1)", "G1 ratio of target-prompt generations", "badnets1, p=10%, w=1"),
    "amplification": ("04_insights", "Insight 1, trigger amplification: r_gen > r_train", "r_gen = G1 + G2",
                      "badnets1, p=10%, w=1"),
    "phase_transition": ("04_insights", "Insight 2, phase transition: the G2 share of triggered generations "
                         "falls as p grows", "drop of G2 / (G1 + G2)", "badnets1, w=1"),
    "clean_control": ("04_insights", "Clean control: a DM trained without poison generates no trigger",
                      "r_gen (detector fires)", "clean, badnets1 detector, w=1"),
    "detection_cd": ("05_castle_walls", "Detection is easier on generations", "AUROC(generated) - AUROC(training)",
                     "CD, badnets1 p=10%"),
    "detection_strip": ("05_castle_walls", "Detection is easier on generations",
                        "AUROC(generated) - AUROC(training)", "STRIP, badnets1 p=10%"),
    "detection_fct": ("05_castle_walls", "Detection is easier on generations", "AUROC(generated) - AUROC(training)",
                      "FCT, badnets1 p=10%"),
    "train_on_generations_asr": ("05_castle_walls", "Training on generations lowers ASR",
                                 "ASR(real subset) - ASR(generated)", "badnets1 p=10%, 20 images each"),
    "train_on_generations_ta": ("05_castle_walls", "... at a TA cost of a few points (< 10%)",
                                "TA(real subset) - TA(generated)", "badnets1 p=10%, 20 images each"),
    "diffusion_classifier_asr": ("05_castle_walls", "The diffusion classifier resists the backdoor",
                                 "ASR(resnet18) - ASR(DC)", "badnets1 p=10%, p_filter 0"),
    "diffusion_classifier_ta": ("05_castle_walls", "... with a comparable TA (at most 5% lower)",
                                "TA(DC) - TA(resnet18)", "badnets1 p=10%, p_filter 0"),
    "p_filter": ("05_castle_walls", "Filtering the largest errors lowers the DC's ASR further",
                 "ASR(DC, p_filter min) - ASR(DC, p_filter max)", "badnets1 p=10%, p_filter 0 -> 0.1"),
    "duplicates_g1": ("06_memorization", "Poisoning duplicated images raises G1", "G1(duplicate) - G1(random)",
                      "badnets1, p=0.1, w=1"),
    "duplicates_g2": ("06_memorization", "Poisoning duplicated images raises G2", "G2(duplicate) - G2(random)",
                      "badnets1, p=0.1, w=1"),
    "replication": ("06_memorization", "Poisoned DMs replicate training images more than the clean DM",
                    "replication rate (cos > 0.9), poisoned - clean", "badnets1 p=10%"),
    "relabel_control": ("04_insights", "Relabel-only control: target labels without a trigger plant no trigger",
                        "r_gen (detector fires)", "relabel p=10%, badnets1 detector, w=1"),
    "duplicate_finder": ("06_memorization", "The duplicate finder recovers planted near-duplicates",
                         "planted groups found", "pixels, cos >= 0.999"),
}


def row(key, verdict="reproduced", ours=0.3, lo=0.2, hi=0.4, keyed=True):
    """A claim row of family ``key``, worded as the stages word it; ``keyed``: carrying its key (new
    rows) or not (rows saved before keys existed, recognised by their wording)."""
    stage, claim, metric, setting = FAMILY_ROWS[key]
    return claim_row(stage, claim, metric=metric, setting=setting, ours=ours, lo=lo, hi=hi, verdict=verdict,
                     paper="p", note="n", key=key if keyed else "")


def test_families_come_from_paper_py():
    from bibad_utils import paper

    assert [f.key for f in sm.CLAIM_FAMILIES] == list(paper.CLAIM_KEYS)
    for f in sm.CLAIM_FAMILIES:
        # the paper text of every family (and so of every "not tested" row) is paper.py's
        assert f.paper == paper.paper_text(f.key) and f.kind == paper.claim(f.key).kind
    assert all(f.kind != "control" for f in sm.PAPER_CLAIM_FAMILIES)
    assert {f.key for f in sm.CLAIM_FAMILIES} - {f.key for f in sm.PAPER_CLAIM_FAMILIES} == {
        "clean_control", "relabel_control", "duplicate_finder"}
    cd = next(f for f in sm.PAPER_CLAIM_FAMILIES if f.key == "detection_cd")
    assert "0.956 -> 0.970" in cd.paper
    ta = next(f for f in sm.PAPER_CLAIM_FAMILIES if f.key == "train_on_generations_ta")
    assert "Caltech15 badnets2 p = 5 %: 99.83 % -> 87.33 %" in ta.paper


def test_every_family_is_recognised_by_its_own_row_only():
    keys = [f.key for f in sm.CLAIM_FAMILIES]
    assert sorted(keys) == sorted(FAMILY_ROWS) and len(set(keys)) == len(keys)
    for f in sm.CLAIM_FAMILIES:
        assert f.stage in STAGE_TITLES and f.label
        assert [k for k in FAMILY_ROWS if f.matches(row(k))] == [f.key], f.key
        assert not f.matches(row(f.key, keyed=False))  # by its key, never by its wording
    assert sm.CLAIM_STAGES == ("04_insights", "05_castle_walls", "06_memorization")
    other = claim_row("04_insights", "Image quality of the poisoned DM", metric="FD", ours=0.0, verdict="not tested")
    assert sm.family_of(other) == ""
    wrong_stage = {**row("amplification"), "stage": "06_memorization"}
    assert sm.family_of(wrong_stage) == ""
    # a keyed row belongs to its key's family whatever its wording
    reworded = {**row("amplification"), "claim": "Detection is easier on generations", "setting": "CD"}
    assert sm.family_of(reworded) == "amplification"


def test_kinds_of_rows():
    assert sm.kind_of(row("clean_control")) == "control"
    assert sm.kind_of({**row("clean_control", keyed=False), "kind": "control"}) == "control"  # its own kind
    assert sm.kind_of(row("replication")) == "no paper number"
    assert sm.kind_of({**row("detection_strip", keyed=False), "paper": ""}) == "no paper number"
    assert sm.kind_of(row("detection_cd", keyed=False)) == "paper claim"
    assert sm.family_of(row("detection_cd", keyed=False)) == ""


def test_coverage_marks_missing_and_untested_families():
    rows = [row("amplification"), row("amplification", verdict="partly"), row("phase_transition", "not tested")]
    cov = sm.family_coverage(rows).set_index("family")
    assert cov.loc["amplification", ["n_rows", "n_tested", "status"]].tolist() == [2, 2, "tested"]
    assert cov.loc["phase_transition", ["n_rows", "n_tested", "status"]].tolist() == [1, 0, "not tested"]
    assert (cov.drop(["amplification", "phase_transition"])["status"] == "missing").all()
    shown = sm.coverage_table(sm.frame_from_rows(rows, ["04_insights"]))
    assert list(shown.columns) == ["rows", "tested", "status"] and len(shown) == len(sm.PAPER_CLAIM_FAMILIES)
    assert shown.loc[("04_insights", "Insight 1, trigger amplification: r_gen > r_train")].tolist() == [2, 2, "tested"]

    extra = sm.uncovered_rows(rows, ["04_insights"])
    assert {r["stage"] for r in extra} == set(sm.CLAIM_STAGES)
    assert len(extra) == len(sm.PAPER_CLAIM_FAMILIES) - 2
    assert all(r["verdict"] == "not tested" and math.isnan(r["ours"]) for r in extra)
    notes = {r["claim"]: r["note"] for r in extra}
    trojan = next(f for f in sm.PAPER_CLAIM_FAMILIES if f.key == "trojan_g1")
    cd = next(f for f in sm.PAPER_CLAIM_FAMILIES if f.key == "detection_cd")
    assert "does not reach it" in notes[trojan.label]       # its stage ran without it
    assert "has no claims in this run" in notes[cd.label]   # its stage did not run
    # a "not tested" row of the coverage check belongs to its own family, so it is never added twice
    assert sm.uncovered_rows(rows + extra, sm.CLAIM_STAGES) == []


def test_claims_frame_from_saved_files(tmp_path):
    informational = claim_row("04_insights", "Image quality (informational)", metric="FD-clf", ours=12.5,
                              verdict="not tested")
    save_claims(tmp_path, "06_memorization", [row("duplicates_g1", "not reproduced", ours=-0.02, lo=-0.1, hi=0.05)])
    save_claims(tmp_path, "04_insights", [row(k) for k in ("trojan_g1", "amplification", "phase_transition",
                                                           "clean_control")] + [informational])
    assert sm.present_stages(tmp_path) == ["04_insights", "06_memorization"]
    assert sm.missing_stages(tmp_path) == ["05_castle_walls"]
    df = sm.claims_frame(tmp_path)
    assert list(df.columns) == ["stage", "claim", "setting", "metric", "paper", "ours", "ours_lo", "ours_hi",
                                "verdict", "note", "family", "kind", "origin", "exposure"]
    assert list(pd.unique(df["stage"])) == ["04_insights", "05_castle_walls", "06_memorization"]
    run = df[df["origin"] == "run"]
    assert len(run) == 6 and run.iloc[4]["claim"] == "Image quality (informational)" and run.iloc[4]["family"] == ""
    check = df[df["origin"] == "coverage check"]
    assert set(check["family"]) == {"detection_cd", "detection_strip", "detection_fct", "train_on_generations_asr",
                                    "train_on_generations_ta", "diffusion_classifier_asr", "diffusion_classifier_ta",
                                    "p_filter", "duplicates_g2", "replication"}
    assert (check["verdict"] == "not tested").all()
    counts = sm.verdict_counts(df)
    assert counts == {"reproduced": 4, "partly": 0, "not reproduced": 1, "underpowered": 0, "not tested": 11,
                      "total": 16}
    by_stage = sm.stage_verdicts(df)
    assert by_stage.loc[("05_castle_walls", "paper claim"), "not tested"] == 8
    assert by_stage.loc[("04_insights", "control"), "reproduced"] == 1 and by_stage["total"].sum() == 16
    kinds = sm.kind_counts(df)
    assert (kinds["paper claim"]["total"], kinds["control"]["total"], kinds["no paper number"]["total"]) == (13, 1, 2)
    assert sm.claims_headline(df).startswith("13 paper claims: 3 reproduced, 1 not reproduced, 9 not tested; "
                                             "1 controls: 1 reproduced; 2 rows without a paper number:")
    assert sm.claims_frame(tmp_path / "empty")["origin"].eq("coverage check").all()


def test_frame_refuses_bad_rows():
    with pytest.raises(ConfigError, match="missing"):
        sm.frame_from_rows([{"stage": "04_insights", "claim": "x"}], [])
    bad = {**row("amplification"), "verdict": "maybe"}
    with pytest.raises(ConfigError, match="verdict = 'maybe'"):
        sm.frame_from_rows([bad], [])
    with pytest.raises(ConfigError, match="verdict"):
        sm.verdict_counts(pd.DataFrame({"x": [1]}))


def test_ours_text():
    assert sm.ours_text(0.31234, 0.2, 0.42) == "0.312 [0.200, 0.420]"
    assert sm.ours_text(-0.05) == "-0.050"
    assert sm.ours_text(math.nan) == "n/a"
    assert sm.ours_text(1234.5, math.nan, math.nan) == "1234"


def test_table_markdown_and_style():
    rows = [row("amplification"), {**row("trojan_g1", "partly"), "setting": "a | b"}]
    df = sm.frame_from_rows(rows, ["04_insights"])
    table = sm.claims_table(df)
    assert table.index.names == ["stage", "#"] and list(table.columns) == sm.DISPLAY_COLUMNS
    assert table.loc[("04_insights", 1), "ours (95 % CI)"] == "0.300 [0.200, 0.400]"
    md = sm.claims_markdown(df, missing=["05_castle_walls"])
    assert md.startswith(f"{len(df)} claim rows. {len(df) - 1} paper claims: 1 reproduced, 1 partly, "
                         f"{len(df) - 3} not tested; 1 rows without a paper number: 1 not tested.")
    assert "Stages without claims in this run: `05_castle_walls`." in md
    assert "### 04_insights" in md and "### 06_memorization" in md and "a \\| b" in md
    header = "| claim | setting | paper | ours (95 % CI) | verdict | kind |"
    assert md.count(header) == 3
    html = sm.styled_claims(df)._repr_html_()
    assert sm.VERDICT_COLORS["partly"] in html and sm.VERDICT_COLORS["not tested"] in html
    # each paper source once, numbered, listed under the table; notes folded; text escaped
    cited = sm.styled_claims(df.assign(paper="r_gen > r_train [slides, Insight 1 figure (a1)]", note="a <b> note"))
    page = cited._repr_html_()
    assert page.count("slides, Insight 1 figure (a1)") == 1 and "r_gen &gt; r_train [1]" in page
    assert "Sources of the paper's numbers: [1] slides, Insight 1 figure (a1)." in page
    assert "<details><summary>note</summary>a &lt;b&gt; note</details>" in page


def test_save_claims_markdown(tmp_path):
    df = sm.frame_from_rows([row("amplification")], ["04_insights"])
    path = sm.save_claims_markdown(tmp_path, df, ["05_castle_walls"])
    assert path == tmp_path / "figures" / "claims.md"
    assert path.read_text() == sm.claims_markdown(df, ["05_castle_walls"])


def test_ratio_row_counts_and_interval():
    t = np.array([1, 0, 1, 1, 0, 0, 0, 0], bool)
    r = sm.ratio_row(t, 0.25, attack="badnets1", p=0.1, label="10%")
    assert (r["n"], r["n_triggered"], r["r_gen"], r["r_train"]) == (8, 3, 0.375, 0.25)
    assert (r["r_gen_lo"], r["r_gen_hi"]) == metrics.wilson_interval(3, 8)
    assert r["attack"] == "badnets1" and r["label"] == "10%"


def test_teaser_drawing_shows_panels_and_bars():
    rng = np.random.default_rng(0)
    t = rng.random(8) < 0.5
    panels = [{"images": rng.integers(0, 256, (8, 8, 8, 3), dtype=np.uint8), "frames": frame_colors(t),
               "labels": ["x"] * 8, "title": name} for name in ("clean DM", "poisoned")]
    rows = [sm.ratio_row(rng.random(40) < q, rt, attack=a, p=p, label=lab)
            for a in ("badnets1", "badnets2")
            for p, lab, q, rt in ((0.0, "clean", 0.05, 0.0), (0.1, "10%", 0.5, 0.3))]
    bars = pd.DataFrame(rows)
    fig = sm.teaser_drawing(panels, bars, "bars")
    assert isinstance(fig, Figure) and len(fig.axes) == 17  # 16 images, then the bars (one row or two)
    ax = fig.axes[-1]
    heights = sorted(p.get_height() for p in ax.patches)
    assert np.allclose(heights, sorted(bars["r_gen"]))
    assert [t.get_text() for t in ax.get_xticklabels()] == ["clean", "10%"]


def test_a_wide_teaser_puts_its_bars_below_the_images():
    """Panels and bars wider than the text column: two rows (the images above, the bars below), no wider
    than the column's figure width."""
    from bibad_utils.plots import MAX_FIGURE_WIDTH_IN
    rng = np.random.default_rng(0)
    panels = [{"images": rng.integers(0, 256, (16, 8, 8, 3), dtype=np.uint8), "title": name}
              for name in ("clean DM", "poisoned")]
    rows = [sm.ratio_row(rng.random(40) < 0.3, 0.2, attack=a, p=p, label=f"{p:.0%}")
            for a in ("badnets1", "badnets2", "wanet") for p in (0.01, 0.02, 0.05, 0.1, 0.2)]
    fig = sm.teaser_drawing(panels, pd.DataFrame(rows), "bars")
    width, height = fig.get_size_inches()
    assert width <= MAX_FIGURE_WIDTH_IN and len(fig.subfigs) == 2  # two rows
    top, bottom = fig.subfigs
    assert sum(len(s.axes) for s in top.subfigs) == 32 and len(bottom.axes) == 1


def test_teaser_bars_of_a_failing_detector_are_hatched_and_named():
    rows = [sm.ratio_row(np.arange(40) < k, rt, attack=a, p=p, label=lab)
            for a, k_clean in (("badnets1", 0), ("wanet", 40))
            for p, lab, k, rt in ((0.0, "clean", k_clean, 0.0), (0.1, "10%", 20, 0.3))]
    bars = pd.DataFrame(rows)
    bars["trusted"] = [True, True, False, False]
    fig = sm.teaser_drawing([{"images": np.zeros((2, 8, 8, 3), np.uint8), "title": "clean DM"}], bars, "bars")
    ax = fig.subfigs[-1].axes[0]
    hatched = [p for p in ax.patches if p.get_hatch()]
    assert len(hatched) == 2 and sorted(p.get_height() for p in hatched) == [0.5, 1.0]
    labels = ax.get_legend_handles_labels()[1]
    assert "wanet: detector fails its check, no evidence" in labels and "r_gen, badnets1" in labels


def test_glue_values_count_and_name_what_is_missing():
    rows = [row("amplification"), row("trojan_g1", "not reproduced")]
    df = sm.frame_from_rows(rows, ["04_insights"])
    g = sm.glue_values(df, ["05_castle_walls", "06_memorization"])
    n_fam = len(sm.PAPER_CLAIM_FAMILIES)
    assert g["nb08_n_claims"] == len(df) == 2 + n_fam - 2
    assert (g["nb08_n_reproduced"], g["nb08_n_partly"], g["nb08_n_not_reproduced"], g["nb08_n_not_tested"]) == \
        (1, 0, 1, n_fam - 2)
    assert g["nb08_missing_stages"] == "05_castle_walls, 06_memorization"
    assert (g["nb08_n_families"], g["nb08_n_families_tested"]) == (n_fam, 2)
    assert "Insight 2, phase transition" in g["nb08_uncovered"] and "amplification" not in g["nb08_uncovered"]
    # the paper's claims counted apart (here every row is one: no control, one family without a number)
    assert (g["nb08_paper_reproduced"], g["nb08_paper_not_reproduced"]) == (1, 1)
    assert g["nb08_n_paper"] + g["nb08_n_control"] + g["nb08_n_nonumber"] == g["nb08_n_claims"]
    assert g["nb08_n_nonumber"] == 1 and g["nb08_headline"].startswith(f"{g['nb08_n_paper']} paper claims: ")
    full = sm.frame_from_rows([row(k) for k in FAMILY_ROWS], sm.CLAIM_STAGES)
    g = sm.glue_values(full)
    assert g["nb08_uncovered"] == "none" and g["nb08_missing_stages"] == "none"
    assert g["nb08_n_families_tested"] == n_fam


def test_book_staging_of_the_teaser(tmp_path):
    from bibad_utils.publish.book import stage_teaser
    from bibad_utils.typed_config import load_config

    cfg = load_config("smoke", {"run_dir": str(tmp_path / "run")})
    book = tmp_path / "src" / "book"
    assert stage_teaser(cfg, book) is False
    page = (book / "_generated" / "teaser.md").read_text()
    assert "no teaser figure yet" in page and "{figure}" not in page and "--profile smoke" in page
    assert not (book / "_generated" / "teaser.png").exists()

    figures = tmp_path / "run" / "figures"
    figures.mkdir(parents=True)
    fig = sm.teaser_drawing([{"images": np.zeros((2, 8, 8, 3), np.uint8), "title": "clean DM"}],
                            pd.DataFrame([sm.ratio_row([True, False], 0.0, attack="badnets1", p=0.0, label="clean")]),
                            "bars")
    fig.savefig(figures / "teaser.png")
    (figures / "teaser_caption.md").write_text("Planted caption with $r_{gen}$.\n")
    assert stage_teaser(cfg, book) is True
    page = (book / "_generated" / "teaser.md").read_text()
    assert page.startswith("```{figure} _generated/teaser.png\n")  # relative to book/intro.md, which includes it
    assert "Planted caption with $r_{gen}$. Every claim with its verdict: {doc}`../notebooks/08_results`." in page
    assert page.rstrip().endswith("```")
    assert (book / "_generated" / "teaser.png").read_bytes() == (figures / "teaser.png").read_bytes()


def test_readme_results_publishes_a_finished_run(tmp_path):
    import json

    run_dir, repo = tmp_path / "run", tmp_path / "repo"
    repo.mkdir()
    (repo / "README.md").write_text("# Study\n\n<!-- results demo -->\nold\n<!-- /results demo -->\n\n"
                                     "<!-- results mnist -->\nkept\n<!-- /results mnist -->\n\n## Cite\n")
    with pytest.raises(ConfigError, match="bibad run --profile demo"):
        readme_results(run_dir, "demo", repo)
    save_claims(run_dir, "04_insights", [row("trojan_g1"), row("amplification", "not reproduced")])
    figures = run_dir / "figures"
    figures.mkdir(parents=True)
    (figures / "teaser.png").write_bytes(b"\x89PNG fake")
    (figures / "teaser_caption.md").write_text("Generations of the demo run.\n")
    sm.save_claims_markdown(run_dir, sm.claims_frame(run_dir))
    (run_dir / "executed").mkdir()
    record = {"profile": "demo", "notebooks": [{"name": "01", "seconds": 90}, {"name": "02", "seconds": 30}]}
    (run_dir / "executed" / "run.json").write_text(json.dumps({**record, "status": "interrupted"}))
    with pytest.raises(ConfigError, match="'interrupted'"):  # an interrupted run is not published
        readme_results(run_dir, "demo", repo)
    (run_dir / "executed" / "run.json").write_text(json.dumps({**record, "status": "ok"}))
    dest = readme_results(run_dir, "demo", repo)
    assert sorted(p.name for p in dest.iterdir()) == ["README.md", "claims.md", "run.json", "teaser.png"]
    text = (repo / "README.md").read_text()
    assert "\nold\n" not in text and text.count("<!-- results demo -->") == 1
    assert text.endswith("<!-- results mnist -->\nkept\n<!-- /results mnist -->\n\n## Cite\n")  # another profile's block
    counts = sm.verdict_counts(sm.claims_frame(run_dir))
    entry = text.split("<!-- results demo -->\n", 1)[1].split("<!-- /results demo -->", 1)[0]
    assert entry.count("\n") == 1 and entry.startswith(f"- **`demo`**: {counts['total']} claim rows. 13 paper claims")
    assert "(results/demo/README.md)" in entry and "(results/demo/claims.md)" in entry
    page = (dest / "README.md").read_text()
    assert "![teaser](teaser.png)" in page and "> Generations of the demo run." in page
    assert f"{counts['total']} claim rows. 13 paper claims: {counts['reproduced']} reproduced" in page
    assert "## 04_insights" in page and "spent 2 minutes in the notebooks" in page
    assert "| 04_insights, paper claim | 1 | 0 | 1 |" in page
    assert str(tmp_path) not in text + page  # no machine-specific paths
    # a profile published for the first time lands after the last entry, not at the end of the file
    readme_results(run_dir, "cifar10", repo)
    text = (repo / "README.md").read_text()
    assert text.index("<!-- /results mnist -->") < text.index("<!-- results cifar10 -->") < text.index("## Cite")


def test_verdict_changes_against_published_markdown(tmp_path):
    from bibad_utils.experiments import summary as s
    md = tmp_path / "claims.md"
    md.write_text("3 claim rows.\n\n### 05_castle_walls\n\n| claim | setting | paper | ours (95 % CI) | verdict | kind |\n"
                  "|---|---|---|---|---|---|\n"
                  "| Training on generations lowers ASR | badnets2 p=5% | x \\| y | 0.19 | reproduced | paper claim |\n"
                  "| The diffusion classifier resists the backdoor | badnets1 p=1% |  | 0.08 | reproduced | paper claim |\n"
                  "| Old row | z |  | 0.1 | partly | paper claim |\n")
    pub = s.published_claims(md)
    assert len(pub) == 3 and pub.loc[0, "verdict"] == "reproduced"
    run = pd.DataFrame([
        {"stage": "05_castle_walls", "claim": "Training on generations lowers ASR", "setting": "badnets2 p=5%",
         "verdict": "not tested"},
        {"stage": "05_castle_walls", "claim": "The diffusion classifier resists the backdoor", "setting": "badnets1 p=1%",
         "verdict": "reproduced"},
        {"stage": "04_insights", "claim": "Insight 1", "setting": "w=3", "verdict": "partly"}])
    ch = s.verdict_changes(run, pub)
    assert list(ch["change"]) == ["changed", "new", "dropped"]
    assert ch.iloc[0][["before", "after"]].tolist() == ["reproduced", "not tested"]
    assert "1 rows changed their verdict, 1 rows are new and 1 were dropped" in s.changes_sentence(ch, pub)
    assert s.published_claims(tmp_path / "none.md").empty
    assert "nothing to compare" in s.changes_sentence(ch, s.published_claims(tmp_path / "none.md"))


def test_published_runs_become_book_pages(tmp_path):
    from PIL import Image

    """Each results/<profile>/README.md is staged as book/results/<profile>.md with its teaser beside it;
    links to files outside the book become repository paths (Sphinx would warn on them), images stay."""
    from bibad_utils.publish.book import stage_published_results
    results, book = tmp_path / "results", tmp_path / "book"
    (results / "full").mkdir(parents=True)
    (results / "full" / "README.md").write_text("# Results of the `full` run\n\n![teaser](teaser.png)\n\n"
                                                "Also in [claims.md](claims.md), see [paper](https://arxiv.org/abs/2311.02373).\n")
    Image.new("RGB", (900, 300), "white").save(results / "full" / "teaser.png", dpi=(100, 100))
    (results / "notes").mkdir()  # a folder without a page is no published run
    assert stage_published_results(book, results) == ["full"]
    page = (book / "results" / "full.md").read_text()
    assert "![teaser of the full run](full_teaser.png)" in page and (book / "results" / "full_teaser.png").is_file()
    # a teaser too wide for the column (its labels would shrink below a readable size) is linked, not shown
    Image.new("RGB", (2500, 600), "white").save(results / "full" / "teaser.png", dpi=(150, 150))
    stage_published_results(book, results)
    page = (book / "results" / "full.md").read_text()
    assert "![teaser" not in page and "{download}`open it at full size <full_teaser.png>`" in page
    assert "`results/full/claims.md`" in page and "[paper](https://arxiv.org/abs/2311.02373)" in page


def test_readme_from_snapshot(tmp_path):
    from bibad_utils.publish.readme import readme_from_snapshot
    repo = tmp_path
    (repo / "README.md").write_text("# Study\n\n<!-- results demo -->\nx\n<!-- /results demo -->\n\n## Cite\n")
    with pytest.raises(ConfigError, match="results/full"):
        readme_from_snapshot("full", repo)
    (repo / "results" / "full").mkdir(parents=True)
    (repo / "results" / "full" / "claims.md").write_text(
        "3 claim rows. 2 paper claims: 1 reproduced, 1 not tested.\n\n### 04_insights\n\n| claim |\n|---|\n| a |\n")
    dest = readme_from_snapshot("full", repo)
    text = (repo / "README.md").read_text()
    entry = text.split("<!-- results full -->\n", 1)[1].split("<!-- /results full -->", 1)[0]
    assert entry.startswith("- **`full`**: 3 claim rows. 2 paper claims: 1 reproduced, 1 not tested. [Summary")
    assert text.index("<!-- /results demo -->") < text.index("<!-- results full -->") < text.index("## Cite")
    page = (dest / "README.md").read_text()
    assert page.startswith("# Results of the `full` run") and "\n## 04_insights\n" in page and "teaser" not in page


def test_landing_summary_counts_each_family(tmp_path):
    """The first page's lines count the run's rows per family of claims; a family without rows says so, and
    rows of no family get a line of their own."""
    from bibad_utils.experiments.summary.tables import LANDING_FAMILIES, landing_markdown
    rows = [row("trojan_g1"), row("trojan_g1", "partly"), row("amplification", "not tested")]
    save_claims(tmp_path, "04_insights", rows)
    df = sm.claims_frame(tmp_path)
    text = landing_markdown(df, "demo")
    lines = {line.split("*")[1]: line for line in text.splitlines() if line.startswith("- *")}
    trojan, amplif = LANDING_FAMILIES[0][0], LANDING_FAMILIES[1][0]
    assert lines[trojan].endswith(": 2 rows: 1 reproduced, 1 partly.")
    assert lines[amplif].endswith(": 1 row: 1 not tested.")
    assert "rows: 2 not tested." in lines[LANDING_FAMILIES[4][0]]  # the coverage check's rows of a stage not run
    assert "{doc}`chapter 04 <../notebooks/04_insights>`" in lines[trojan]
    covered = sum(int(line.split(" row")[0].rsplit(": ", 1)[1]) for line in lines.values() if " row" in line
                  and "no row" not in line)
    assert covered == len(df)  # every row of the frame is counted once


def test_readme_stays_short_and_links_every_published_run():
    """The README is read in two minutes: under 150 lines, the two commands, and one entry per published
    run (results/<profile>/README.md) instead of the claims tables."""
    from bibad_utils.config import REPO_ROOT
    text = (REPO_ROOT / "README.md").read_text()
    assert len(text.splitlines()) < 150
    assert "make book" in text and "make test" in text
    for page in sorted((REPO_ROOT / "results").glob("*/README.md")):
        assert f"(results/{page.parent.name}/README.md)" in text
    assert "| claim | setting |" not in text


def test_compact_frame_and_frame_html():
    """Book tables: an estimate and its interval columns become one column; row numbers are not shown, a
    meaningful index is; non-numeric or unpaired columns are left alone."""
    import numpy as np
    import pandas as pd

    from bibad_utils.report import compact_frame, frame_html
    df = pd.DataFrame({"cell": ["a", "b"], "r_gen": [0.31, 0.5], "r_gen_lo": [0.2, np.nan], "r_gen_hi": [0.4, np.nan],
                       "fpr": [0.1, 0.2], "fpr_lo": [0.05, 0.1], "n": [200, 200], "note_lo": ["x", "y"]})
    out = compact_frame(df)
    assert list(out.columns) == ["cell", "r_gen", "fpr", "fpr_lo", "n", "note_lo"]
    assert list(out["r_gen"]) == ["0.310 [0.200, 0.400]", "0.500"]
    html = frame_html(df)
    assert "<th>r_gen</th>" in html and "r_gen_lo" not in html and "<th>0</th>" not in html
    assert "<th>a</th>" in frame_html(df.set_index("cell"))  # a named index stays
    claims = pd.DataFrame({"claim": ["x < y", "z"], "paper": ["0.95 -> 0.97 [slides, Inspiration 1, Table 3]",
                                                             "0.5 [slides, Inspiration 1, Table 3]"],
                           "note": ["why <this>", ""]})
    html = frame_html(claims)
    assert html.count("slides, Inspiration 1, Table 3") == 1 and "0.95 -&gt; 0.97 [1]" in html and "0.5 [1]" in html
    assert "Sources of the paper's numbers: [1] slides, Inspiration 1, Table 3." in html
    assert "<details><summary>note</summary>why &lt;this&gt;</details>" in html and "x &lt; y" in html


def test_parameter_cells_show_no_build_paths(tmp_path):
    """Papermill's injected parameters keep their values but lose the build machine's absolute paths."""
    import json

    from bibad_utils.config import REPO_ROOT
    from bibad_utils.publish.book import notebook_for_book
    src = tmp_path / "nb.ipynb"
    cell = {"cell_type": "code", "metadata": {"tags": ["injected-parameters"]}, "outputs": [],
            "source": f'profile = "smoke"\noverrides = {{"run_dir": "/tmp/pytest-of-x/p-1/run", '
                      f'"dataset": {{"root": "{REPO_ROOT}/data/cifar10"}}}}\n'}
    src.write_text(json.dumps({"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    notebook_for_book(src, tmp_path / "out.ipynb")
    text = json.loads((tmp_path / "out.ipynb").read_text())["cells"][0]["source"]
    assert '"run_dir": ".../p-1/run"' in text and '"root": "data/cifar10"' in text and "/tmp/" not in text


def test_first_page_says_which_run_it_shows(tmp_path):
    """The first page opens, above the teaser, with the profile's description, so a chain check (paper-tiny,
    smoke) says that its numbers mean nothing before any figure or verdict count."""
    from bibad_utils.publish.book import about_markdown
    cfg = SimpleNamespace(run_dir=str(tmp_path), name="paper-tiny", description="a chain check; its numbers mean nothing.")
    assert about_markdown(cfg) == "```{note}\nThis book shows the `paper-tiny` run: a chain check; its numbers mean nothing.\n```\n"
    intro = (Path(__file__).resolve().parents[1] / "book" / "intro.md").read_text()
    assert intro.index("_generated/about.md") < intro.index("_generated/teaser.md")


def test_report_numbers_come_from_the_claim_files(tmp_path):
    """The reproduction report's computed sentences: families tested and the headline from the run's claims;
    a run without claims says so (the page never depends on another chapter's glue)."""
    from bibad_utils.publish.book import report_markdown
    assert "has no claims yet" in report_markdown(SimpleNamespace(run_dir=str(tmp_path), name="x"))
    save_claims(tmp_path, "04_insights", [row("trojan_g1"), row("amplification", "not tested")])
    text = report_markdown(SimpleNamespace(run_dir=str(tmp_path), name="demo"))
    assert text.startswith("The `demo` run tested 1 of the ") and "paper claims:" in text


def test_teaser_caption_says_when_the_content_judge_fails_at_its_w(tmp_path):
    from bibad_utils.experiments.summary.teaser import teaser_caption
    from bibad_utils.stages import Study
    from bibad_utils.verdicts import Check

    study = Study("smoke", {"run_dir": str(tmp_path)}, progress=False)
    plain = teaser_caption(study)
    assert "no evidence at this $w$" not in plain
    assert teaser_caption(study, content=Check(True, "the accuracy [0.7, 0.8] is above 0.5")) == plain
    failing = teaser_caption(study, ["badnets1"], Check(False, "the accuracy [0.267, 0.357] lies below 0.5"))
    assert failing.startswith(plain.rstrip(".")) or failing.startswith(plain[:80])
    assert "The labels and the G1-G4 counts are no evidence at this $w$: the accuracy [0.267, 0.357]" in failing
    assert "Hatched grey bars (badnets1)" in failing
