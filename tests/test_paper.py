"""The paper's numbers in one place: values against the slides, one unit convention, accessors, and the
claim families whose text the book's tables show."""

import math
import re
from pathlib import Path

import pytest

from bibad_utils import paper
from bibad_utils.config import ConfigError

PAPER_MD = Path("/work/shared/PAPER.md")


def _all_values():
    yield from paper.R_TRAIN["imagenette"].values()
    for t in paper.CD_AUROC.values():
        for pair in t.values():
            yield from pair
    for t in paper.TRAIN_ON_GENERATIONS.values():
        for cell in t.values():
            for pair in cell.values():
                yield from pair
    for cell in paper.RESNET18.values():
        yield from cell.values()
    for by_p in paper.DIFFUSION_CLASSIFIER.values():
        for cell in by_p.values():
            yield from cell.values()
    for t in paper.DUPLICATES.values():
        for cell in t.values():
            for pair in cell.values():
                yield from pair


def test_one_unit_convention_fractions():
    values = list(_all_values())
    assert len(values) > 80
    assert all(0.0 <= x <= 1.0 for x in values)


def test_caltech15_train_on_generations_ta_from_the_slides():
    cal = paper.TRAIN_ON_GENERATIONS["caltech15"]
    assert [cal[("badnets1", p)]["TA"] for p in (0.01, 0.02, 0.05)] == [
        (0.99833, 0.90667), (0.99833, 0.88500), (0.99667, 0.89166)]
    assert [cal[("badnets2", p)]["TA"] for p in (0.01, 0.02, 0.05)] == [
        (0.99833, 0.91000), (0.99833, 0.87833), (0.99833, 0.87333)]
    assert paper.train_on_generations("badnets2", 0.05, "TA", "caltech15") == (0.99833, 0.87333)


def test_accessors_compare_p_up_to_rounding_and_refuse_bad_input():
    assert paper.cd_auroc("badnets1", 0.1) == (0.948, 0.983)
    assert paper.cd_auroc("badnets1", 0.05 + 1e-12) == (0.956, 0.970)
    assert paper.cd_auroc("badnets1", 0.2) is None
    assert paper.r_train(0.05) == 0.330
    assert paper.resnet18(0.05, "ASR") == 1.0
    assert paper.diffusion_classifier(0.01, "ASR") == 0.6238
    assert paper.diffusion_classifier(0.01, "ASR", p_filter=0.1) == 0.1362
    assert paper.duplicates(0.10, "G2", "caltech15") == (0.244, 0.255)
    assert paper.g2_share(0.05) == pytest.approx(0.164 / (0.338 + 0.164))
    with pytest.raises(ConfigError, match="metric"):
        paper.train_on_generations("badnets1", 0.01, "FID")
    with pytest.raises(ConfigError, match="dataset"):
        paper.cd_auroc("badnets1", 0.01, dataset="mnist")
    with pytest.raises(ConfigError, match="claim key"):
        paper.claim("nope")


@pytest.mark.skipif(not PAPER_MD.is_file(), reason="PAPER.md not available")
def test_every_number_appears_in_paper_md_or_the_slides():
    text = PAPER_MD.read_text()
    seeds = "".join(p.read_text() for p in sorted((PAPER_MD.parent / "seeds").glob("*.txt")))
    shown = set(re.findall(r"\d+\.\d+|\d+", text + seeds))

    def spellings(x):
        pct = 100 * x
        out = {f"{pct:.3f}", f"{pct:.2f}", f"{pct:.1f}", f"{x:.3f}", f"{pct:g}", f"{pct:.2f}".rstrip("0").rstrip(".")}
        return out

    missing = [x for x in _all_values() if not (spellings(x) & shown)]
    assert not missing


def test_phase_points_are_counts_of_the_papers_ratios():
    pts = paper.phase_points("imagenette")
    assert [p["p"] for p in pts] == [0.05, 0.10]
    assert pts[0] == {"p": 0.05, "n": 1000, "n_G1": 338, "n_G2": 164, "r_train": 0.330}
    assert paper.phase_points("caltech15")[1]["r_train"] is None


def test_every_claim_has_a_text_and_a_kind():
    assert len(set(paper.CLAIM_KEYS)) == len(paper.CLAIMS)
    for c in paper.CLAIMS:
        assert c.kind in paper.KINDS
        text = paper.paper_text(c.key)
        if c.kind == "control":
            assert text == ""
        else:
            assert text and paper.SOURCES[c.source] in text


def test_setting_text_gives_the_numbers_of_one_setting():
    assert paper.paper_text("detection_cd", attack="badnets2", p=0.05).startswith("0.561 -> 0.766 (ImageNette)")
    t = paper.paper_text("train_on_generations_ta", attack="badnets1", p=0.05)
    assert "99.39 % -> 94.45 % (ImageNette)" in t and "99.67 % -> 89.17 % (Caltech15)" in t
    assert "33.0 %" in paper.paper_text("amplification", p=0.05)
    # a setting the paper does not report falls back to the family's whole statement
    assert paper.paper_text("detection_cd", attack="wanet", p=0.05) == paper.paper_text("detection_cd")
    assert paper.setting_text("detection_cd", attack="wanet", p=0.05) == ""
    assert math.isclose(paper.duplicates(0.05, "G1")[1], 0.378)
