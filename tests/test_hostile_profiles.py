"""Hostile profiles are refused early: before anything heavy is built, with a ConfigError that names the dotted
key, shows a short value and says what is allowed (alias bombs, repeated keys, paths out of the repository,
sizes the machine cannot hold, seeds no generator takes, a weights file that is not there)."""

from types import SimpleNamespace

import pytest

from bibad_utils import config, profile_yaml
from bibad_utils.config import (REPO_ROOT, ConfigError, load_profile, overrides_from_assignments, parse_yaml,
                                profile_names, read_profile_file)
from bibad_utils.typed_config import typed_profile

GiB = 2 ** 30


def _profile(tmp_path, body: str, name: str = "hostile"):
    """A profile file that extends smoke and adds ``body`` (YAML text)."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"extends: smoke\nname: {name}\nrun_dir: runs/{name}\n{body}")
    return path


def _bomb(levels: int = 9, width: int = 9) -> str:
    """A "billion laughs": ``levels`` anchors, each a list of ``width`` aliases of the one before
    (width ** levels strings once expanded, (levels - 1) * width aliases in the text)."""
    lines = [f"a0: &a0 [{', '.join(['lol'] * width)}]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def _refused(call, *args, **kwargs) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        call(*args, **kwargs)
    assert len(str(err.value)) < 600, str(err.value)  # a short message, never the expanded value
    return err.value


# ---------------------------------------------------------------------------------------------- YAML


def test_a_nested_alias_bomb_is_refused_before_it_expands(tmp_path):
    err = _refused(read_profile_file, _profile(tmp_path, _bomb() + "description: *a8\n"))
    assert "aliases" in str(err) and err.param in {f"a{i}" for i in range(9)}  # where the expansion gets large
    err = _refused(overrides_from_assignments, ["description=" + "{" + _bomb().strip().replace("\n", ", ") + "}"])
    assert "aliases" in str(err) and err.param.startswith("description")


def test_more_aliases_than_the_budget_are_refused(tmp_path):
    text = "x: &x 1\ny: [" + ", ".join(["*x"] * (profile_yaml.MAX_ALIASES + 1)) + "]\n"
    err = _refused(parse_yaml, text)
    assert "aliases" in str(err) and f"at most {profile_yaml.MAX_ALIASES}" in str(err)
    assert parse_yaml("x: &x 1\ny: [*x, *x]\n") == {"x": 1, "y": [1, 1]}  # a few aliases are fine


def test_a_recursive_alias_is_refused():
    err = _refused(parse_yaml, "a: &a [1, *a]\n")
    assert err.param == "a[1]" and "recursive" in str(err)


def test_a_repeated_key_in_a_profile_file_is_refused_with_its_lines(tmp_path):
    err = _refused(read_profile_file, _profile(tmp_path, "seed: 0\nsampling: {n_target: 4}\nseed: 1\n"))
    assert err.param == "seed" and "lines 4 and 6" in str(err)
    err = _refused(read_profile_file, _profile(tmp_path, "sampling:\n  n_target: 4\n  n_target: 8\n"))
    assert err.param == "sampling.n_target" and "lines 5 and 6" in str(err)


def test_a_repeated_key_in_a_set_value_is_refused():
    err = _refused(overrides_from_assignments, ["sampling={n_target: 4, n_target: 8}"])
    assert err.param == "sampling.n_target" and "twice, on line 1 (columns 2 and 15)" in str(err)
    # separate assignments still merge, the later one winning
    assert overrides_from_assignments(["sampling.n_target=4", "sampling.n_target=8"]) == {"sampling": {"n_target": 8}}


def test_a_long_value_is_shown_short():
    err = _refused(load_profile, "smoke", {"ratios": [0.5] * 100_000})
    assert err.param == "ratios" and "..." in str(err)


# ---------------------------------------------------------------------------------------------- paths


@pytest.mark.parametrize("name", ["../../../x", "a/b", ".hidden", "", "x" * 65, "two words"])
def test_a_profile_name_is_a_plain_identifier(tmp_path, name):
    assert _refused(load_profile, "smoke", {"name": name}).param == "name"


def test_a_profile_file_with_a_path_for_a_name_is_refused(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("extends: smoke\nname: ../../../evil\nrun_dir: runs/evil\n")
    assert _refused(load_profile, path).param == "name"
    assert load_profile("smoke", {"name": "my-run_2"})["name"] == "my-run_2"


@pytest.mark.parametrize("run_dir", ["../outside", "runs/../../outside", ".", "runs/.."])
def test_a_relative_run_dir_stays_inside_the_repository(run_dir):
    assert _refused(load_profile, "smoke", {"run_dir": run_dir}).param == "run_dir"


def test_an_absolute_run_dir_is_the_user_s_choice(tmp_path):
    assert load_profile("smoke", {"run_dir": str(tmp_path / "runs")})["run_dir"] == str(tmp_path / "runs")
    assert load_profile("smoke", {"run_dir": "runs/a/../b"})["run_dir"] == str(REPO_ROOT / "runs/a/../b")


# ---------------------------------------------------------------------------------------------- sizes


@pytest.fixture
def small_machine(monkeypatch):
    """Validation as on a machine with 8 GiB of memory."""
    monkeypatch.setattr(config, "machine_memory", lambda: 8 * GiB, raising=False)


@pytest.mark.parametrize("overrides, param", [
    ({"sampling": {"n_target": 20_000_000}}, "sampling.n_target"),    # 15 GB of 16-px images
    ({"sampling": {"n_all": 20_000_000}}, "sampling.n_all"),
    ({"defenses": {"n_boot": 100_000_000}}, "defenses.n_boot"),       # 64 GB of resampled scores
    ({"defenses": {"n_detect": 20_000_000}}, "defenses.n_detect"),
    ({"dataset": {"n_per_class": 2_000_000}}, "dataset.n_per_class"),
    ({"memorization": {"block": 20_000_000}}, "memorization.block"),   # 16 GB of cosines against 200 images
])
def test_a_size_the_machine_cannot_hold_is_refused_by_its_key(small_machine, overrides, param):
    err = _refused(load_profile, "smoke", overrides)
    assert err.param == param and "GiB" in str(err) and "8.0 GiB of memory" in str(err)


@pytest.mark.parametrize("overrides, param", [
    ({"sampling": {"n_target": 2 ** 40}}, "sampling.n_target"),       # past any integer bound, whatever the memory
    ({"defenses": {"n_boot": 2 ** 64}}, "defenses.n_boot"),
    ({"finetune": {"steps": 10 ** 30}}, "finetune.steps"),
    ({"dataset": {"image_size": 100_000}}, "dataset.image_size"),
    ({"train_seeds": 10 ** 6}, "train_seeds"),
    ({"train_seeds": {"default": 1, "clean": 10 ** 6}}, "train_seeds.clean"),
])
def test_a_huge_count_is_refused_on_any_machine(monkeypatch, overrides, param):
    """With the machine's memory unknown (0), the fixed bounds still hold."""
    monkeypatch.setattr(config, "machine_memory", lambda: 0, raising=False)
    assert _refused(load_profile, "smoke", overrides).param == param


@pytest.mark.parametrize("name", profile_names())
def test_every_shipped_profile_loads_on_a_16_gib_machine(monkeypatch, name):
    monkeypatch.setattr(config, "machine_memory", lambda: 16 * GiB, raising=False)
    assert load_profile(name)["name"] == name


# ---------------------------------------------------------------------------------------------- seeds


@pytest.mark.parametrize("seed", [2 ** 64, 2 ** 32, -1, 10 ** 5000], ids=["2**64", "2**32", "-1", "10**5000"])
def test_a_seed_is_an_integer_in_0_to_2_32_minus_1(seed):
    err = _refused(load_profile, "smoke", {"seed": seed})
    assert err.param == "seed" and "4294967295" in str(err)


def test_the_largest_seed_is_accepted():
    assert load_profile("smoke", {"seed": 2 ** 32 - 1})["seed"] == 2 ** 32 - 1


# ---------------------------------------------------------------------------------------------- weights


def _resnet(path) -> dict:
    return {"memorization": {"embedding": "resnet50_imagenet", "weights_path": str(path)}}


def test_a_missing_weights_file_is_refused_at_validation(tmp_path):
    missing = tmp_path / "missing.safetensors"
    err = _refused(load_profile, "smoke", _resnet(missing))
    assert err.param == "memorization.weights_path" and str(missing) in str(err)


def test_the_weights_content_enters_the_embedding_key_only_when_a_file_is_set(tmp_path):
    from bibad_utils.memorization import embedding_key_params

    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    a.write_bytes(b"weights one")
    b.write_bytes(b"weights two")
    cfg_a = load_profile("smoke", _resnet(a))
    assert cfg_a["memorization"]["weights_path"] == str(a)
    params_a = embedding_key_params(cfg_a["memorization"])
    params_b = embedding_key_params(load_profile("smoke", _resnet(b))["memorization"])
    assert params_a["weights"]["bytes"] == 11 and params_a != params_b
    c = tmp_path / "elsewhere" / "c.safetensors"  # the same bytes under another name and place: the same key
    c.parent.mkdir()
    c.write_bytes(b"weights one")
    assert embedding_key_params(load_profile("smoke", _resnet(c))["memorization"]) == params_a
    # the hub's weights (no file), or an embedding that reads none: no weights in the key
    hub = load_profile("smoke", {"memorization": {"embedding": "resnet50_imagenet"}})
    assert embedding_key_params(hub["memorization"]) == {"embedding": "resnet50_imagenet"}
    pixels = load_profile("smoke", {"memorization": {"weights_path": str(a)}})
    assert embedding_key_params(pixels["memorization"]) == {"embedding": "pixels", "pixel_size": 16}


@pytest.mark.parametrize("name", profile_names())
def test_the_shipped_profiles_keep_their_embedding_keys(name):
    """embedding_key_params gives what the memorization stage computes its keys from today."""
    from bibad_utils.experiments.memorization_study.common import embedding_params
    from bibad_utils.memorization import embedding_key_params

    cfg = load_profile(name)
    assert embedding_key_params(cfg["memorization"]) == embedding_params(SimpleNamespace(cfg=typed_profile(cfg)))
