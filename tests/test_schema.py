"""Typed profile sections (bibad_utils.schema): the fields' checks and messages, the sections' defaults
(one per key), and the profile's use of them (validated once, kept as validated)."""

import inspect
from pathlib import Path

import pytest

from bibad_utils import config
from bibad_utils.base import ConfigError
from bibad_utils.schema import REQUIRED, Field, Section, is_int, is_number, signature_defaults


@pytest.mark.parametrize("field, good, bad, expected", [
    (Field("int", low=1), [1, 7], [0, 1.5, True, "3"], "a positive integer"),
    (Field("int", low=0, nullable=True), [0, None], [-1], "an integer >= 0 or null"),
    (Field("number", low=0, high=1, high_open=True), [0, 0.5], [1, -0.1, float("nan")], "a number in [0, 1)"),
    (Field("number", low=0, low_open=True), [1e-9, 3], [0, -1], "a number > 0"),
    (Field("bool"), [True, False], [0, "yes"], "true or false"),
    (Field("str"), ["x"], ["", "  ", 3], "a non-empty string"),
    (Field("choice", choices=("a", "b")), ["a"], ["c", ["a"]], "one of ['a', 'b']"),
    (Field("value", test=lambda v: isinstance(v, list), allowed="a list"), [[1]], [3], "a list"),
])
def test_a_field_accepts_what_it_says_and_names_it_otherwise(field, good, bad, expected):
    for value in good:
        field.check("sec.key", value)
    for value in bad:
        with pytest.raises(ConfigError) as err:
            field.check("sec.key", value)
        assert err.value.param == "sec.key" and err.value.allowed == expected


def test_numpy_scalars_count_as_numbers_and_bools_do_not():
    import numpy as np

    assert is_int(np.int64(3), 1) and not is_int(True) and not is_int(2, 3)
    assert is_number(np.float32(0.5)) and not is_number(False) and not is_number(float("inf"))


SECTION = Section("toy", {"steps": Field("int", low=0), "lr": Field("number", low=0, low_open=True),
                          "decay": Field("number", default=0.5, low=0, high=1)},
                  active=lambda v: v.get("steps", 0) > 0)


def test_a_section_checks_every_key_fills_its_defaults_and_names_typos():
    assert SECTION.validate({"steps": 3, "lr": 0.1}) == {"steps": 3, "lr": 0.1, "decay": 0.5}
    assert SECTION.validate({"steps": 0}) == {"steps": 0, "decay": 0.5}  # inactive: lr is not required
    with pytest.raises(ConfigError) as err:
        SECTION.validate({"steps": 3})
    assert err.value.param == "toy.lr" and err.value.value is REQUIRED
    with pytest.raises(ConfigError, match=r"did you mean toy\.decay"):
        SECTION.validate({"steps": 0, "decy": 0.1})
    with pytest.raises(ConfigError, match=r"a key among \['steps', 'lr', 'decay'\]"):
        SECTION.validate({"steps": 0, "momentum": 0.9})
    with pytest.raises(ConfigError, match="toy = 3"):
        SECTION.validate(3)
    assert SECTION.validate_partial({"decay": 0.2}, "over") == {"decay": 0.2}
    with pytest.raises(ConfigError, match="over.decay"):
        SECTION.validate_partial({"decay": 2}, "over")


def test_a_section_left_as_written_keeps_the_profile_s_keys_only():
    kept = Section("toy", SECTION.fields, fill=False, active=SECTION.active)
    assert kept.validate({"steps": 0}) == {"steps": 0}
    assert kept.value({"steps": 0}, "decay") == 0.5


def test_signature_defaults_take_the_function_s_defaults():
    def fn(a, *, b=3, c=None):
        return a

    fields = signature_defaults(fn, {"a": Field("int"), "b": Field("int"), "c": Field("int", nullable=True)})
    assert fields["a"].default is REQUIRED and fields["b"].default == 3 and fields["c"].default is None


def test_every_profile_key_is_declared_once_and_checked_on_load():
    # the sections of the profile are those of config.SECTIONS, each owned by one module
    assert set(config.TOP_LEVEL_KEYS) == set(config.TOP_LEVEL) | set(config.SECTIONS)
    assert not set(config.TOP_LEVEL) & set(config.SECTIONS)
    # no string import of an owner (the sections are imported like any module)
    text = (Path(config.__file__)).read_text()
    assert "importlib" not in text


def test_the_judges_and_training_defaults_are_their_functions_defaults():
    from bibad_utils.judges import train_classifier
    from bibad_utils.judges.profile import JUDGES, STUDY_KEYS, WARP_KEYS

    params = inspect.signature(train_classifier).parameters
    for key, value in JUDGES.defaults().items():
        # ablation and external steer the study, the warp keys the WaNet detector's recipe (test_wanet_judge)
        if key not in STUDY_KEYS and key not in WARP_KEYS:
            assert params[key].default == value, key


def test_the_loaded_profile_keeps_the_validated_sections():
    from bibad_utils.defenses.profile import DEFENSES
    from bibad_utils.memorization.settings import MEMORIZATION

    cfg = config.load_profile("smoke")
    assert cfg["defenses"] == DEFENSES.validate(cfg["defenses"])  # filled once: validating again changes nothing
    assert set(cfg["defenses"]) == set(DEFENSES.defaults())
    assert set(cfg["memorization"]) == set(MEMORIZATION.defaults())
    raw = config.parse_yaml((config.PROFILES_DIR / "smoke.yaml").read_text())
    for name in ("finetune", "sampling", "judges", "model"):  # part of artifact keys: as written
        assert cfg[name] == raw[name], name


def test_the_sets_sampled_per_model_are_those_read_later(tmp_path):
    from bibad_utils.stages import Cell, Study

    study = Study("smoke", {"run_dir": str(tmp_path), "sampling": {"guidance": [1, 3, 5]}}, progress=False)
    assert study.claim_guidances() == [1.0, 3.0, 5.0]   # every generated scale is a row (old: 1 and 5 only)
    assert study.target_guidances(None) == []  # the pre-trained DM: its all-class set alone
    assert study.target_guidances(Cell("clean")) == [1.0, 3.0, 5.0]
    assert study.target_guidances(Cell("badnets1", 0.05)) == [1.0, 3.0, 5.0]
    assert study.target_guidances(Cell("relabel", 0.1)) == [1.0, 3.0, 5.0]
    assert study.target_guidances(Cell("badnets1", 0.1, "duplicate")) == [1.0]   # chapter 06 reads the first w


def test_the_judges_ablation_is_a_study_switch_not_a_judge_setting(tmp_path):
    from bibad_utils.experiments.insights.claims import plain_sentence
    from bibad_utils.judges.profile import JUDGE_KEYS, judge_settings, wants_ablation
    from bibad_utils.parallel import judge_tasks
    from bibad_utils.stages import Study

    on = Study("demo", {"run_dir": str(tmp_path), "judges": {"ablation": True}}, progress=False)
    off = Study("demo", {"run_dir": str(tmp_path)}, progress=False)
    assert "ablation" not in JUDGE_KEYS and "ablation" not in judge_settings(off.cfg["judges"])
    assert on.judges.params() == off.judges.params()  # the same judges, the same artifact keys
    assert wants_ablation(on.cfg["judges"]) and not wants_ablation(off.cfg["judges"])
    assert len(judge_tasks(on)) == 2 * len(judge_tasks(off)) == 6
    assert "judges.ablation is false" in plain_sentence(float("nan"), float("nan"))
    assert "41.8%" in plain_sentence(0.418, 0.99)


def test_castle_guidance_gives_the_poisoned_dms_further_all_class_sets(tmp_path):
    from bibad_utils.stages import Cell, Study

    study = Study("smoke", {"run_dir": str(tmp_path)}, progress=False)
    assert study.cfg["sampling"]["castle_guidance"] == [5]
    assert study.all_guidances(Cell("badnets1", 0.1)) == [1.0, 5.0]      # chapter 05's claims at w = 5 too
    assert study.all_guidances(Cell("clean")) == [1.0, 5.0] and study.all_guidances(None) == [1.0]  # chapter 04 checks M at w = 5
    assert study.all_guidances(Cell("relabel", 0.1)) == [1.0]
    assert study.all_guidances(Cell("badnets1", 0.1, "duplicate")) == [1.0]
    plain = Study("smoke", {"run_dir": str(tmp_path), "sampling": {"castle_guidance": None}}, progress=False)
    # without further sets the generation key is the one written before castle_guidance existed
    assert "all_guidances" not in str(plain.cfg["sampling"]) and plain.all_guidances(Cell("badnets1", 0.1)) == [1.0]
    for bad in ([1], [5, 5], [0], "5"):
        with pytest.raises(ConfigError, match="castle_guidance"):
            Study("smoke", {"run_dir": str(tmp_path), "sampling": {"castle_guidance": bad}}, progress=False)


def test_castle_guidance_changes_only_the_keys_of_the_dms_it_adds_sets_to(tmp_path):
    from bibad_utils.stages import Cell, Study

    with_castle = Study("smoke", {"run_dir": str(tmp_path)}, progress=False)
    without = Study("smoke", {"run_dir": str(tmp_path), "sampling": {"castle_guidance": None}}, progress=False)
    assert with_castle.generation_key(Cell("relabel", 0.1)) == without.generation_key(Cell("relabel", 0.1))
    for cell in (Cell("clean"), Cell("badnets1", 0.1)):  # the clean DM's sets there check the content judge
        assert with_castle.generation_key(cell) != without.generation_key(cell)
