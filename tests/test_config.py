"""Profiles: every shipped profile loads; each kind of bad input is refused with its dotted name."""

import copy
from pathlib import Path

import pytest
import yaml

from bibad_utils.config import (ConfigError, PROFILES_DIR, REPO_ROOT, deep_merge, load_profile, parse_yaml, profile_path,
                                overrides_from_assignments, parse_assignment, profile_names,
                                resolve_device, validate_profile)


@pytest.fixture(scope="module")
def smoke():
    return load_profile("smoke")


def test_shipped_profiles_load_and_describe_themselves():
    names = profile_names()
    assert {"smoke", "demo", "paper"} <= set(names)
    for name in names:
        cfg = load_profile(name)
        assert cfg["name"] == name
        assert cfg["description"].strip()
        assert Path(cfg["run_dir"]).is_absolute()


def test_paper_profile_matches_reference_setup():
    cfg = load_profile("paper")
    assert cfg["dataset"]["name"] == "imagenette" and cfg["dataset"]["image_size"] == 512
    assert cfg["ratios"] == [0.01, 0.02, 0.05, 0.1]
    assert cfg["sampling"]["guidance"] == [1, 2, 5, 10]
    assert cfg["sampling"]["n_target"] == 1000
    assert cfg["model"]["pretrained"] == "CompVis/stable-diffusion-v1-4"
    assert cfg["target"] == 6 and cfg["device"] == "cuda"


def test_overrides_deep_merge_and_relative_run_dir(smoke):
    cfg = load_profile("smoke", {"sampling": {"n_target": 3}, "run_dir": "runs/elsewhere"})
    assert cfg["sampling"]["n_target"] == 3
    assert cfg["sampling"]["steps"] == smoke["sampling"]["steps"]  # siblings kept
    assert cfg["run_dir"] == str(REPO_ROOT / "runs" / "elsewhere")


def test_load_by_path_and_defaults_filled(tmp_path, smoke):
    raw = yaml.safe_load((PROFILES_DIR / "smoke.yaml").read_text())
    for key in ("cell_timeout", "pretrain", "defenses", "memorization", "triggers"):
        raw.pop(key)
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg = load_profile(str(path))
    assert cfg["cell_timeout"] is None and cfg["pretrain"] == {"steps": 0} and cfg["triggers"] == {}


def test_scientific_notation_is_a_float(tmp_path):
    text = (PROFILES_DIR / "smoke.yaml").read_text().replace("lr: 1.0e-4", "lr: 1e-4")
    path = tmp_path / "sci.yaml"
    path.write_text(text)
    assert load_profile(path)["finetune"]["lr"] == pytest.approx(1e-4)


def test_deep_merge_does_not_touch_inputs():
    base = {"a": {"b": 1, "c": [1]}, "d": 2}
    over = {"a": {"b": 5}}
    merged = deep_merge(base, over)
    assert merged == {"a": {"b": 5, "c": [1]}, "d": 2}
    assert base == {"a": {"b": 1, "c": [1]}, "d": 2}


def test_parse_assignments():
    assert parse_assignment("sampling.guidance=[1, 2]") == {"sampling": {"guidance": [1, 2]}}
    assert parse_assignment("run_dir=/tmp/x") == {"run_dir": "/tmp/x"}
    assert overrides_from_assignments(["a.b=1", "a.c=true", "a.b=2"]) == {"a": {"b": 2, "c": True}}
    with pytest.raises(ConfigError, match="--set"):
        parse_assignment("no_equals_sign")
    with pytest.raises(ConfigError, match="--set"):
        parse_assignment("bad key=1")


def _set(cfg, dotted, value):
    out = copy.deepcopy(cfg)
    node = out
    *parents, last = dotted.split(".")
    for p in parents:
        node = node[p]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return out


class _Delete:
    """Sentinel of BAD_INPUTS: remove the key (a stable repr, so parallel test workers collect the same ids)."""

    def __repr__(self):
        return "<deleted>"


_DELETE = _Delete()

BAD_INPUTS = [
    # (dotted key to change, bad value, parameter named in the error)
    ("dataset.name", "mnist", "dataset.name"),                    # unknown dataset
    ("attacks", ["badnets1", "trojannn"], "attacks[1]"),          # unknown attack
    ("attacks", [], "attacks"),                                   # empty grid
    ("attacks", ["badnets1", "badnets1"], "attacks"),             # duplicate attack
    ("controls", ["clean", "finetune_only"], "controls[1]"),      # unknown control
    ("ratios", [0.1, 1.0], "ratios[1]"),                          # ratio at the upper bound
    ("ratios", [0.0], "ratios[0]"),                               # ratio at the lower bound
    ("ratios", [-0.05], "ratios[0]"),                             # negative ratio
    ("ratios", [0.1, 0.1], "ratios"),                             # duplicate ratios
    ("ratios", 0.1, "ratios"),                                    # a number, not a list
    ("target", 10, "target"),                                     # out of range for 10 classes
    ("target", -1, "target"),
    ("target", True, "target"),                                   # bool where an int is expected
    ("dataset.image_size", 0, "dataset.image_size"),              # non-positive size
    ("dataset.image_size", "32", "dataset.image_size"),           # string where a number is expected
    ("dataset.n_per_class", 12.5, "dataset.n_per_class"),         # float where an int is expected
    ("finetune.steps", 0, "finetune.steps"),                      # no fine-tuning at all
    ("finetune.batch_size", -4, "finetune.batch_size"),
    ("finetune.lr", "fast", "finetune.lr"),
    ("finetune.lr", 0.0, "finetune.lr"),
    ("finetune.ema_decay", 1.0, "finetune.ema_decay"),
    ("finetune.step", 5, "finetune.step"),                        # typo of a known key
    ("pretrain.steps", -1, "pretrain.steps"),
    ("sampling.steps", 0, "sampling.steps"),
    ("sampling.n_target", True, "sampling.n_target"),             # bool where an int is expected
    ("sampling.n_target", "1000", "sampling.n_target"),
    ("sampling.batch_size", 0, "sampling.batch_size"),
    ("sampling.guidance", [1, 0], "sampling.guidance[1]"),        # guidance <= 0
    ("sampling.guidance", [1, -2.5], "sampling.guidance[1]"),
    ("sampling.guidance", [], "sampling.guidance"),
    ("sampling.eta", 1.5, "sampling.eta"),
    ("judges.epochs", 0, "judges.epochs"),
    ("judges.pretrained", "yes", "judges.pretrained"),
    ("device", "tpu", "device"),                                  # unknown device
    ("seed", -3, "seed"),
    ("seed", 1.5, "seed"),
    ("sampels", {"steps": 1}, "sampels"),                         # unknown top-level key (typo)
    ("run_dir", "", "run_dir"),
    ("model", "pixel", "model"),                                  # a section that is not a mapping
    ("triggers.blend", {}, "triggers.blend"),                     # options of an unknown trigger
    ("cell_timeout", 0, "cell_timeout"),
    ("finetune", _DELETE, "finetune"),                            # a required section missing
]


@pytest.mark.parametrize("key,value,param", BAD_INPUTS, ids=[f"{k}={v!r}" for k, v, _ in BAD_INPUTS])
def test_bad_input_names_the_parameter(smoke, key, value, param):
    if key == "sampels":
        bad = dict(smoke, sampels=value)
    else:
        bad = _set(smoke, key, value)
    with pytest.raises(ConfigError) as err:
        validate_profile(bad)
    assert err.value.param == param
    assert str(err.value).startswith(f"{param} = ")
    assert "is not allowed: expected" in str(err.value)


@pytest.mark.parametrize("dataset,n_classes", [("caltech15", 15), ("cifar10", 10), ("imagenette", 10)])
def test_target_range_depends_on_dataset(smoke, dataset, n_classes):
    cfg = _set(smoke, "dataset.name", dataset)
    cfg["dataset"]["n_per_class"] = None
    cfg["dataset"]["options"] = {}  # the procedural generator's options are not options of a real dataset
    cfg["target"] = n_classes - 1
    validate_profile(cfg)
    cfg["target"] = n_classes
    with pytest.raises(ConfigError, match=rf"target = {n_classes} .*\[0, {n_classes - 1}\]"):
        validate_profile(cfg)


def test_missing_root_of_real_dataset(smoke, tmp_path):
    cfg = _set(smoke, "dataset.name", "imagenette")
    cfg["dataset"]["options"] = {}
    cfg["dataset"]["root"] = str(tmp_path / "nowhere")
    with pytest.raises(ConfigError) as err:
        validate_profile(cfg)
    assert err.value.param == "dataset.root" and "nowhere" in str(err.value)
    cfg["dataset"]["root"] = str(tmp_path)
    assert validate_profile(cfg)["dataset"]["root"] == str(tmp_path)


def test_unknown_profile_lists_available_ones():
    with pytest.raises(ConfigError) as err:
        load_profile("does_not_exist")
    assert err.value.param == "profile"
    for name in ("smoke", "demo", "paper"):
        assert name in str(err.value)


def test_missing_profile_file_names_the_path(tmp_path):
    path = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError, match="absent.yaml"):
        load_profile(str(path))


def test_overrides_must_be_a_dict_and_are_validated():
    with pytest.raises(ConfigError, match="overrides"):
        load_profile("smoke", overrides=["ratios", 0.5])
    with pytest.raises(ConfigError, match=r"ratios\[0\] = 1.5"):
        load_profile("smoke", overrides={"ratios": [1.5]})


def test_resolve_device(smoke):
    import torch

    assert resolve_device(smoke) == torch.device("cpu")
    assert resolve_device(dict(smoke, device="auto")).type in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="device = 'cuda'"):
            resolve_device(dict(smoke, device="cuda"))


def test_sections_are_also_checked_by_their_owner_modules(smoke):
    pytest.importorskip("bibad_utils.diffusion")
    with pytest.raises(ConfigError) as err:
        validate_profile(_set(smoke, "model.backend", "gan"))
    assert err.value.param == "model.backend"
    with pytest.raises(ConfigError) as err:
        validate_profile(_set(smoke, "model.channel_mult", [1, 2]))
    assert err.value.param == "model.channel_mult"


def test_demo_keys_unchanged_where_no_file_is_read():
    """The demo reads no file (procedural data, drawn pattern): its validated profile gains no
    fingerprint and its artifact keys stay those of the cache already computed."""
    import numpy as np

    from bibad_utils import store as st

    raw = parse_yaml(profile_path("demo").read_text())
    cfg = load_profile("demo")
    assert cfg["triggers"] == raw["triggers"]
    assert "fingerprint" not in cfg["dataset"] and "pattern_sha256" not in cfg["triggers"]["badnets2"]
    labels = np.tile(np.arange(10, dtype=np.int64), cfg["dataset"]["n_per_class"])
    data_key = st.artifact_key("data", {"dataset": cfg["dataset"], "seed": 0, "labels": labels})
    assert data_key == "2cd6f05fc7ecab55"
    params = {"kind": "badnets2", "ratio": 0.05, "pool": "random", "target": 0, "seed": 0,
              "trigger": cfg["triggers"]["badnets2"]}
    assert st.artifact_key("poison", params, [data_key]) == "cb8e18e24c17cb49"


# ----------------------------------------------------------------------------------------------
# extends: a profile written as the differences from another


def _leaves(d, prefix=""):
    out = {}
    for key, value in d.items():
        if isinstance(value, dict) and value:
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _extending_profiles():
    return [name for name in profile_names() if "extends" in parse_yaml(profile_path(name).read_text())]


def test_full_and_mnist_extend_the_demo_and_restate_none_of_it():
    """Every setting measured on the demo lives in demo.yaml alone: full and mnist extend it, and no line
    of theirs repeats a value of the demo's (a replaced dataset section aside)."""
    assert {"full", "mnist"} <= set(_extending_profiles())
    demo_raw = parse_yaml(profile_path("demo").read_text())
    demo = load_profile("demo")
    for name in _extending_profiles():
        raw = parse_yaml(profile_path(name).read_text())
        base_raw = parse_yaml(profile_path(raw["extends"]).read_text())
        own = {k: v for k, v in raw.items() if k != "extends"}
        if own.get("dataset", {}).get("name", base_raw["dataset"]["name"]) != base_raw["dataset"]["name"]:
            own.pop("dataset")
        base_leaves = _leaves(base_raw)
        repeated = {k: v for k, v in _leaves(own).items() if k in base_leaves and base_leaves[k] == v}
        assert not repeated, f"{name}.yaml restates {raw['extends']}.yaml: {repeated}"
    full = load_profile("full")
    assert full["model"] == demo["model"] and full["finetune"] == demo["finetune"]
    assert full["defenses"]["cd"] == demo["defenses"]["cd"]          # the castle-wall baselines of the demo
    assert full["sampling"]["guidance"] == [1, 2, 5, 10] and full["sampling"]["n_target"] == demo_raw["sampling"]["n_target"]
    mnist = load_profile("mnist")
    assert mnist["dataset"]["name"] == "mnist5k" and "background" not in (mnist["dataset"].get("options") or {})
    assert mnist["pretrain"]["shipped"] is False and mnist["judges"]["color_jitter"] == 0.8
    assert mnist["defenses"] == demo["defenses"]


def _write(folder, name, text):
    path = folder / name
    path.write_text(text)
    return path


def test_extends_merges_under_the_file_and_overrides_still_win(tmp_path):
    path = _write(tmp_path, "mine.yaml", "extends: smoke\nname: mine\nrun_dir: runs/mine\n"
                                         "sampling: {n_target: 7}\n")
    smoke = load_profile("smoke")
    cfg = load_profile(path)
    assert cfg["name"] == "mine" and cfg["run_dir"] == str(REPO_ROOT / "runs" / "mine")
    assert cfg["sampling"]["n_target"] == 7 and cfg["sampling"]["steps"] == smoke["sampling"]["steps"]
    assert cfg["model"] == smoke["model"]
    assert load_profile(path, {"sampling": {"n_target": 5}})["sampling"]["n_target"] == 5
    # a path relative to the extending file, and a chain of two
    _write(tmp_path, "second.yaml", "extends: mine.yaml\nname: second\nrun_dir: runs/second\nseed: 3\n")
    second = load_profile(tmp_path / "second.yaml")
    assert second["seed"] == 3 and second["sampling"]["n_target"] == 7


@pytest.mark.parametrize("text, match", [
    ("extends: nosuch\nname: a\nrun_dir: runs/a\n", r"profile.*nosuch.*one of"),
    ("extends: 3\nname: a\nrun_dir: runs/a\n", r"extends.*3.*name of a profile"),
    ("extends: smoke\nrun_dir: runs/a\n", r"name.*a value of its own.*extends smoke"),
    ("extends: smoke\nname: a\n", r"run_dir.*a value of its own"),
    ("extends: loop.yaml\nname: a\nrun_dir: runs/a\n", r"extends.*does not extend itself.*loop.yaml -> loop.yaml"),
])
def test_extends_refuses_bad_bases(tmp_path, text, match):
    path = _write(tmp_path, "loop.yaml", text)
    with pytest.raises(ConfigError, match=match):
        load_profile(path)


def test_extends_a_dataset_of_its_own_replaces_the_base_dataset(tmp_path):
    from bibad_utils.config import merge_onto_base

    base = {"dataset": {"name": "procedural", "options": {"background": "gradient"}}, "seed": 0}
    same = merge_onto_base(base, {"dataset": {"image_size": 16}})
    assert same["dataset"] == {"name": "procedural", "options": {"background": "gradient"}, "image_size": 16}
    other = merge_onto_base(base, {"dataset": {"name": "mnist5k", "options": {"test_fraction": 0.2}}})
    assert other["dataset"] == {"name": "mnist5k", "options": {"test_fraction": 0.2}} and other["seed"] == 0


def test_attack_ratios_run_an_attack_at_some_of_the_grid_ratios():
    """attack_ratios names the grid's ratios of one attack (e.g. WaNet at one p where a CPU cannot afford
    three): the grid, the teaser's cell and the refusals of names and values outside the grid; a profile
    without it keeps its resolved form (no key is added)."""
    from bibad_utils.experiments.summary.teaser import teaser_cells
    from bibad_utils.stages import Cell, Study

    over = {"attacks": ["wanet", "badnets1"], "ratios": [0.05, 0.1], "attack_ratios": {"wanet": [0.05]}}
    study = Study("smoke", over, progress=False)
    assert study.grid_cells() == [Cell("wanet", 0.05), Cell("badnets1", 0.05), Cell("badnets1", 0.1)]
    assert study.ratios_of("badnets1") == [0.05, 0.1] and teaser_cells(study)[1] == Cell("wanet", 0.05)
    assert "attack_ratios" not in load_profile("smoke")
    for bad, param in (({"badnets2": [0.1]}, "attack_ratios.badnets2"), ({"wanet": [0.2]}, "attack_ratios.wanet"),
                       ({"wanet": []}, "attack_ratios.wanet"), ({"wanet": [0.1, 0.1]}, "attack_ratios.wanet"),
                       ([0.1], "attack_ratios")):
        with pytest.raises(ConfigError) as err:
            load_profile("smoke", {**over, "attack_ratios": bad})
        assert err.value.param == param


def test_every_independent_bad_value_is_reported_at_once():
    from bibad_utils.base import ConfigErrors

    with pytest.raises(ConfigErrors) as err:  # two unknown or bad top-level keys: both, the first's param
        load_profile("smoke", {"seed": -1, "sampels": {}})
    assert err.value.param == "sampels" and [e.param for e in err.value.errors] == ["sampels", "seed"]
    assert str(err.value).startswith("2 parameters are not allowed: sampels = ")
    with pytest.raises(ConfigError) as err:  # the sections wait for a valid grid
        load_profile("smoke", {"sampling": {"n_target": 0}, "judges": {"epochs": 0}, "target": 99})
    assert type(err.value) is ConfigError and err.value.param == "target"
    with pytest.raises(ConfigErrors) as err:  # bad keys in two sections: both, in the sections' order
        load_profile("smoke", {"sampling": {"n_target": 0}, "judges": {"epochs": 0}})
    assert [e.param for e in err.value.errors] == ["sampling.n_target", "judges.epochs"]
    with pytest.raises(ConfigError) as err:  # one bad value: that error itself, as before
        load_profile("smoke", {"judges": {"epochs": 0}})
    assert type(err.value) is ConfigError and err.value.param == "judges.epochs"
