"""The clean base DM shipped with the package: installed into a run's store in place of pre-training
when the profile sets ``pretrain.shipped``, retrained with ``--retrain-base``, and the shipped files
matching the profiles that use them."""

import json

import pytest
import torch

from bibad_utils import shipped_base, stages, training
from bibad_utils import store as st
from bibad_utils.config import PROFILES_DIR, load_profile
from bibad_utils.diffusion import load_model

TINY_PRETRAIN = {"steps": 2, "batch_size": 8, "lr": 1.0e-3, "checkpoint_every": 2}


def tiny_study(tmp_path, name, **pretrain):
    return stages.Study("smoke", {"run_dir": str(tmp_path / name), "pretrain": {**TINY_PRETRAIN, **pretrain}},
                        progress=False)


def test_ship_install_and_retrain(tmp_path, monkeypatch, capsys):
    trained = tiny_study(tmp_path, "a", shipped=False)
    key = trained.pretrain_key
    assert key == trained.pretrain_expected_key()
    assets = tmp_path / "assets"
    folder = shipped_base.ship_base(trained.store, key, assets / "smoke_base", "bibad run --profile smoke")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["key"] == key and manifest["command"] == "bibad run --profile smoke"
    assert "--retrain-base" in manifest["retrain"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(shipped_base.SHIPPED_FILES)
    monkeypatch.setattr(shipped_base, "SHIPPED_DIR", assets)

    calls = []
    real_train = training.train_diffusion
    monkeypatch.setattr(stages, "train_diffusion", lambda *a, **kw: calls.append(1) or real_train(*a, **kw))

    # shipped: the store gets the shipped files under the same key, nothing is trained
    shipped = tiny_study(tmp_path, "b", shipped=True)
    assert shipped.pretrain_key == key and calls == []
    made = shipped.store.load_manifest("pretrain", key)
    assert made["shipped_from"] == "smoke_base" and made["trained"]["command"] == "bibad run --profile smoke"
    a = load_model(trained.store.path("pretrain", key) / "model").state_dict_to_save()
    b = shipped.model(None).state_dict_to_save()
    assert all(torch.equal(a[k], b[k].cpu()) for k in a)
    assert shipped.train_record(None)["steps"] == 2

    # the retrain flag (pretrain.shipped false): trained here, same key
    retrained = tiny_study(tmp_path, "c", shipped=False)
    assert retrained.pretrain_key == key and calls == [1]

    # shipped asked for, but another configuration: a note, then it is trained
    other = tiny_study(tmp_path, "d", shipped=True, lr=2.0e-3)
    assert other.pretrain_key != key and calls == [1, 1]
    assert "no base DM shipped" in capsys.readouterr().err


def test_shipped_key_does_not_depend_on_the_flag(tmp_path):
    on, off = tiny_study(tmp_path, "e", shipped=True), tiny_study(tmp_path, "e", shipped=False)
    assert on.pretrain_expected_key() == off.pretrain_expected_key()
    assert on.pretrain_expected_key() == tiny_study(tmp_path, "e").pretrain_expected_key()


def test_install_refuses_a_manifest_whose_key_is_wrong(tmp_path):
    trained = tiny_study(tmp_path, "f")
    key = trained.pretrain_key
    folder = shipped_base.ship_base(trained.store, key, tmp_path / "assets" / "x", "cmd")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["params"]["seed"] = 99  # no longer hashes to its key
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(Exception, match="hash to its key"):
        shipped_base.install_shipped_base(st.ArtifactStore(tmp_path / "g"), key, root=tmp_path / "assets")


def shipped_profiles():
    return [p.stem for p in sorted(PROFILES_DIR.glob("*.yaml"))
            if (load_profile(p.stem).get("pretrain") or {}).get("shipped")]


@pytest.mark.parametrize("profile", shipped_profiles())
def test_shipped_base_matches_its_profile(profile):
    """A profile that asks for the shipped base DM finds one whose artifact key is the key of its own
    pre-training (model, pretrain settings, seed, dataset), with the weights of its model section. A profile
    of a real dataset is checked where its files are found (its key follows their fingerprint); elsewhere it
    is skipped, since no test may need data outside the repository."""
    dataset = load_profile(profile)["dataset"]
    if dataset["name"] not in ("procedural", "mnist5k") and "fingerprint" not in dataset:
        pytest.skip(f"the {dataset['name']} files of profile {profile} are not on this machine "
                    "(set BIBAD_DATA_ROOT or dataset.root)")
    study = stages.Study(profile, progress=False)
    key = study.pretrain_expected_key()
    found = shipped_base.shipped_bases()
    assert key in found, f"profile {profile}: no shipped base DM with key {key} in {shipped_base.SHIPPED_DIR}"
    folder = found[key]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert st.artifact_key("pretrain", manifest["params"], manifest["inputs"]) == key
    assert manifest["params"]["train"] == study._train_section("pretrain")
    assert manifest["params"]["model"] == study.cfg["model"] and manifest["inputs"] == [study.pretrain_data[1]]
    assert manifest["command"] and "--retrain-base" in manifest["retrain"]
    model = load_model(folder)
    assert model.config == study._new_model().config
    state = model.state_dict_to_save()
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())
