"""The typed profile: the validated dict of every shipped profile as a frozen object that gives that dict
back byte for byte, reads by attribute, and leaves the artifact keys as the dicts give them."""

import copy
import json
import pickle

import pytest
from pydantic import ValidationError

from bibad_utils import store as st
from bibad_utils.cells import Cell
from bibad_utils.config import load_profile, profile_names
from bibad_utils.judges.profile import judge_settings
from bibad_utils.stages import Study
from bibad_utils.typed_config import ConfigSection, Profile, typed_profile


@pytest.mark.parametrize("name", profile_names())
def test_the_typed_profile_gives_the_validated_dict_back(name):
    validated = load_profile(name)
    cfg = typed_profile(validated)
    assert isinstance(cfg, Profile)
    assert cfg.as_dict() == validated
    assert json.dumps(cfg.as_dict(), sort_keys=True) == json.dumps(validated, sort_keys=True)
    assert list(cfg.as_dict()) == list(validated)  # the profile's order, too
    for key in validated:
        assert list(cfg[key]) == list(validated[key]) if isinstance(validated[key], dict) else cfg[key] == validated[key]
    assert cfg == validated and dict(cfg) == validated and {**cfg} == validated
    assert copy.deepcopy(cfg).as_dict() == validated
    assert pickle.loads(pickle.dumps(cfg)).as_dict() == validated
    assert st.canonical_json(cfg) == st.canonical_json(validated)  # a key hashes a section as its dict


def test_the_typed_profile_is_frozen():
    cfg = typed_profile(load_profile("smoke"))
    for obj, key in [(cfg, "target"), (cfg.sampling, "steps"), (cfg.sampling, "unknown"), (cfg.triggers, "badnets1")]:
        with pytest.raises(ValidationError, match="frozen"):
            setattr(obj, key, 1)
    with pytest.raises(TypeError):
        cfg["target"] = 1
    cfg.as_dict()["sampling"]["steps"] = 10 ** 6  # a copy
    assert cfg.sampling.steps != 10 ** 6


def test_attributes_read_values_and_declared_defaults_the_mapping_only_what_is_written():
    validated = load_profile("smoke")
    cfg = typed_profile(validated)
    assert cfg.target == validated["target"] and cfg.sampling.guidance == validated["sampling"]["guidance"]
    assert isinstance(cfg.sampling, ConfigSection) and cfg["sampling"] is cfg.sampling
    assert "grad_clip" not in validated["finetune"] and "grad_clip" not in cfg.finetune
    assert cfg.finetune.grad_clip == 1.0 and cfg.finetune.get("grad_clip") is None  # train_diffusion's default
    assert "train_seeds" not in cfg and cfg.train_seeds == 1 and cfg.attack_ratios is None
    assert cfg.triggers.keys() == validated["triggers"].keys()  # a registry's keys
    with pytest.raises(KeyError):
        cfg.finetune["grad_clip"]
    with pytest.raises(AttributeError):
        cfg.no_such_key


@pytest.fixture(scope="module", params=["smoke", "demo"])
def procedural(request, tmp_path_factory):
    """A study of a procedural profile (no data to read) and its validated dict."""
    overrides = {"run_dir": str(tmp_path_factory.mktemp(request.param))}
    return Study(request.param, overrides, progress=False), load_profile(request.param, overrides)


def test_the_keys_of_the_typed_study_are_those_of_the_validated_dict(procedural):
    """The keys the study computes (from its typed profile) against the same keys written out from the
    validated dict: a section read with other values or defaults than the dict holds changes one."""
    study, d = procedural
    assert study.cfg.as_dict() == d
    ds = {k: v for k, v in d["dataset"].items() if k != "root" or "fingerprint" not in d["dataset"]}
    data = st.artifact_key("data", {"dataset": ds, "seed": d["seed"], "labels": study.train_set.labels})
    assert study.data_key == data
    kind, p = d["attacks"][0], float(max(d["ratios"]))
    poison = {"kind": kind, "ratio": p, "pool": "random", "target": d["target"], "seed": d["seed"],
              "trigger": d["triggers"].get(kind)}
    study.store.cached = lambda *args, **kwargs: None  # keys only: nothing is built
    assert study.poison_key(Cell(kind, p)) == st.artifact_key("poison", poison, [data])
    train = {k: v for k, v in d["pretrain"].items() if k not in ("shipped", "data") and (k != "keep_checkpoints" or v)}
    if train["steps"]:
        train.setdefault("checkpoint_every", max(1, train["steps"] // 5))
        pretrain = st.artifact_key("pretrain", {"model": d["model"], "train": train, "seed": d["seed"]}, [data])
        assert study.pretrain_expected_key() == pretrain
    else:
        assert study.pretrain_expected_key() is None
    classifier = st.artifact_key("judge_classifier", {"judges": judge_settings(d["judges"]), "seed": d["seed"]}, [data])
    assert study.judges.key("classifier") == ("judge_classifier", classifier)


def test_a_variant_merges_over_the_validated_dict(procedural):
    study, d = procedural
    other = study.variant({"sampling": {"n_target": 3}})
    assert isinstance(other.cfg, Profile) and other.cfg.sampling.n_target == 3
    assert other.cfg.as_dict() == {**d, "sampling": {**d["sampling"], "n_target": 3}}
    assert study.cfg.as_dict() == d
