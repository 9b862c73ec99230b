"""Artifact store: stable keys, reuse, atomic completion, manifests, file helpers."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from bibad_utils.config import ConfigError
from bibad_utils.files import DamagedFileError, load_array, load_json, save_array, save_json
from bibad_utils.store import ArtifactStore, DamagedArtifactError, artifact_key, canonical_json

PARAMS = {"seed": 3, "ratio": 0.1, "attack": "badnets1", "sizes": (16, 32)}


def test_key_is_stable_and_short():
    k = artifact_key("poison", PARAMS, ["b", "a"])
    assert len(k) == 16 and all(c in "0123456789abcdef" for c in k)
    assert k == artifact_key("poison", dict(reversed(list(PARAMS.items()))), ["a", "b"])
    assert artifact_key("s", {"a": 1}) == artifact_key("s", {"a": np.int64(1)})
    # pinned: a change of hashing orphans every cached artifact, so it must be deliberate
    assert artifact_key("s", {"a": 1}, ["k"]) == "f19c1cdc36dd6b9f"


def test_key_is_sensitive_to_stage_params_and_inputs():
    base = artifact_key("poison", PARAMS, ["a"])
    assert artifact_key("finetune", PARAMS, ["a"]) != base
    assert artifact_key("poison", dict(PARAMS, ratio=0.2), ["a"]) != base
    assert artifact_key("poison", dict(PARAMS, seed=4), ["a"]) != base
    assert artifact_key("poison", PARAMS, ["b"]) != base
    assert artifact_key("poison", PARAMS, ["a", "b"]) != base
    assert artifact_key("poison", PARAMS) != base


def test_numpy_tuples_paths_and_arrays_in_keys():
    assert canonical_json({"x": np.float32(0.5), "t": (1, 2), "p": Path("/a/b")}) == \
        canonical_json({"p": "/a/b", "t": [1, 2], "x": 0.5})
    a = np.arange(12, dtype=np.int64).reshape(3, 4)
    assert artifact_key("s", {"idx": a}) == artifact_key("s", {"idx": a.copy()})
    b = a.copy()
    b[2, 3] = 0
    assert artifact_key("s", {"idx": a}) != artifact_key("s", {"idx": b})
    assert artifact_key("s", {"idx": a}) != artifact_key("s", {"idx": a.astype(np.int32)})
    with pytest.raises(ConfigError):
        artifact_key("s", {"f": object()})


def test_bad_stage_name(tmp_path):
    with pytest.raises(ConfigError, match="stage"):
        artifact_key("../up", {})
    with pytest.raises(ConfigError, match="stage"):
        ArtifactStore(tmp_path).path(".hidden", "k")


def test_cached_builds_once_and_reuses(tmp_path):
    store = ArtifactStore(tmp_path / "artifacts")
    calls = []

    def build(art):
        calls.append(art.key)
        save_array(art.dir / "indices.npy", np.array([3, 1, 2]))
        assert art.work_dir.is_dir()

    p1 = store.cached("poison", PARAMS, ["in1"], build)
    p2 = store.cached("poison", PARAMS, ["in1"], build)
    assert p1 == p2 == store.path("poison", calls[0])
    assert len(calls) == 1
    assert store.exists("poison", calls[0])
    np.testing.assert_array_equal(load_array(p1 / "indices.npy"), [3, 1, 2])
    assert store.list("poison") == [calls[0]]
    store.cached("poison", dict(PARAMS, seed=9), ["in1"], build)
    assert len(calls) == 2 and len(store.list("poison")) == 2
    # after success nothing but the complete artifacts is left
    assert sorted(p.name for p in (tmp_path / "artifacts" / "poison").iterdir()) == sorted(calls)


def test_failed_build_leaves_no_artifact_and_keeps_work_dir(tmp_path):
    store = ArtifactStore(tmp_path)
    key = artifact_key("finetune", PARAMS)
    with pytest.raises(RuntimeError, match="boom"):
        with store.build("finetune", PARAMS) as art:
            (art.dir / "partial.bin").write_bytes(b"x")
            (art.work_dir / "checkpoint-3").mkdir()
            raise RuntimeError("boom")
    assert not store.exists("finetune", key)
    assert not store.path("finetune", key).exists()
    assert store.list("finetune") == []
    names = [p.name for p in (tmp_path / "finetune").iterdir()]
    assert names == [f".work-{key}"]
    # a later build sees the checkpoint to resume from, and removes the work folder when it succeeds
    with store.build("finetune", PARAMS) as art:
        assert (art.work_dir / "checkpoint-3").is_dir()
    assert store.exists("finetune", key)
    assert not (tmp_path / "finetune" / f".work-{key}").exists()


def test_manifest_contents(tmp_path):
    store = ArtifactStore(tmp_path)
    with store.build("generate", PARAMS, inputs=["k2", "k1"], device="cpu") as art:
        art.meta["n_images"] = np.int64(16)
    m = store.load_manifest("generate", art.key)
    assert m["stage"] == "generate" and m["key"] == art.key
    assert m["params"] == json.loads(canonical_json(PARAMS))
    assert m["inputs"] == ["k1", "k2"]
    assert m["seed"] == 3
    assert m["device"] == "cpu"
    assert m["n_images"] == 16
    assert m["wall_time_s"] >= 0
    assert set(m["packages"]) == {"torch", "diffusers", "transformers", "numpy"}
    assert m["packages"]["numpy"] == np.__version__
    assert "created" in m and "git_commit" in m
    with pytest.raises(ConfigError, match="complete artifact"):
        store.load_manifest("generate", "0" * 16)


def test_completed_elsewhere_first_is_kept(tmp_path):
    """Two processes building the same artifact: the one that finishes second keeps the first copy."""
    store = ArtifactStore(tmp_path)
    with store.build("s", {"a": 1}) as outer:
        (outer.dir / "who").write_text("outer")
        with store.build("s", {"a": 1}) as inner:
            (inner.dir / "who").write_text("inner")
        # the inner build used the same pid, so it must not have shared the temporary folder
    assert (store.path("s", outer.key) / "who").read_text() in ("inner", "outer")
    assert [p.name for p in (tmp_path / "s").iterdir()] == [outer.key]


def test_file_helpers(tmp_path):
    p = save_json(tmp_path / "t.json", {"a": np.float64(0.25), "b": (1, 2)})
    assert load_json(p) == {"a": 0.25, "b": [1, 2]}
    arr = np.arange(6, dtype=np.uint8).reshape(2, 3)
    path = save_array(tmp_path / "a.npy", arr)
    np.testing.assert_array_equal(load_array(path), arr)
    assert load_array(path, mmap_mode="r").shape == (2, 3)
    with pytest.raises(ValueError):
        save_array(tmp_path / "o.npy", np.array([{"x": 1}], dtype=object))


def test_stale_tmp_of_dead_process_is_removed(tmp_path):
    store = ArtifactStore(tmp_path)
    key = artifact_key("s", {"a": 2})
    stale = tmp_path / "s" / f".tmp-{key}-999999999-abc"
    stale.mkdir(parents=True)
    with store.build("s", {"a": 2}):
        pass
    assert not stale.exists() and store.exists("s", key)


def _model_artifact(store, params=None):
    def build(art):
        (art.dir / "model").mkdir()
        save_file({"w": torch.arange(1000, dtype=torch.float32)}, art.dir / "model" / "model.safetensors")
        save_json(art.dir / "train_record.json", {"steps": 3})
        save_array(art.dir / "loss.npy", np.arange(50, dtype=np.float32))

    return store.cached("finetune", params or {"steps": 3}, ["abc"], build)


def test_manifest_lists_files_and_a_truncated_model_is_named_with_the_remedy(tmp_path):
    store = ArtifactStore(tmp_path)
    path = _model_artifact(store)
    key = path.name
    files = store.load_manifest("finetune", key)["files"]
    assert sorted(files) == ["loss.npy", "model/model.safetensors", "train_record.json"]
    assert files["model/model.safetensors"]["bytes"] == (path / "model" / "model.safetensors").stat().st_size
    assert store.verify("finetune", key, full=True) == []
    assert not list(tmp_path.rglob("*.part"))  # atomic writes leave no partial files
    weights = path / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # cut short, as by a full disk or a killed copy
    with pytest.raises(DamagedArtifactError) as err:
        _model_artifact(store)
    msg = str(err.value)
    assert f"artifact finetune/{key} at {path}" in msg and "model.safetensors" in msg
    assert "Remedy: move it aside" in msg and "recomputes it" in msg
    assert err.value.stage == "finetune" and err.value.key == key
    # moved aside as the message says: the next call recomputes it
    os.rename(path, tmp_path / "finetune" / f".damaged-{key}")
    assert _model_artifact(store) == path and store.verify("finetune", key) == []


def test_damage_found_without_file_list_and_replaced_bytes_with_full_check(tmp_path):
    store = ArtifactStore(tmp_path)
    path = _model_artifact(store)
    key = path.name
    manifest = load_json(path / "manifest.json")
    del manifest["files"]  # an artifact built before manifests listed their files
    save_json(path / "manifest.json", manifest)
    (path / "loss.npy").write_bytes((path / "loss.npy").read_bytes()[:-8])
    problems = store.verify("finetune", key)
    assert len(problems) == 1 and "loss.npy" in problems[0] and "header describes" in problems[0]
    with pytest.raises(DamagedFileError, match="loss.npy"):
        load_array(path / "loss.npy")
    # same size, other bytes: the sha256 against the manifest sees it (every reuse checks it)
    other = tmp_path / "other"
    path2 = _model_artifact(ArtifactStore(other), {"steps": 4})
    record = path2 / "train_record.json"
    record.write_text(record.read_text().replace("3", "4"))
    store2 = ArtifactStore(other)
    assert store2.verify("finetune", path2.name, full=False) == []
    assert store2.verify("finetune", path2.name) == ["train_record.json has other bytes than when built (sha256 differs)"]
    (path2 / "manifest.json").write_text("{")
    assert "does not parse" in store2.verify("finetune", path2.name)[0]


def _work_checkpoint(tmp_path):
    """A store, the key of a finetune build and a checkpoint at step 4 in that build's work folder."""
    store = ArtifactStore(tmp_path)
    key = artifact_key("finetune", {"steps": 9}, [])
    ckpt = tmp_path / "finetune" / f".work-{key}" / "checkpoints" / "step-00000004"
    ckpt.mkdir(parents=True)
    save_file({"w": torch.ones(100)}, ckpt / "model.safetensors")
    (ckpt / "state.json").write_text('{"step": 4}')
    return store, key, ckpt


def test_damaged_checkpoint_in_the_work_folder_is_set_aside_before_a_build(tmp_path, capsys):
    store, key, ckpt = _work_checkpoint(tmp_path)
    good = ckpt.parent / "step-00000002"
    good.mkdir()
    save_file({"w": torch.ones(100)}, good / "model.safetensors")
    (ckpt / "model.safetensors").write_bytes((ckpt / "model.safetensors").read_bytes()[:50])
    seen = []
    with store.build("finetune", {"steps": 9}) as art:
        seen = sorted(p.name for p in (art.work_dir / "checkpoints").iterdir())
        save_json(art.dir / "x.json", {})
    assert seen == ["step-00000002"]  # the build never sees the checkpoint cut short
    err = capsys.readouterr().err
    assert f"checkpoint {ckpt} of finetune/{key} is damaged" in err and "moved aside" in err
    assert len(list((tmp_path / "finetune").glob(f".damaged-{key}-step-00000004-*"))) == 1


@pytest.mark.slow  # trains the smoke profile's clean cell (about 20 s on a busy 2-core machine)
def test_study_names_a_truncated_model_instead_of_a_loader_traceback(tmp_path):
    """A fine-tuned model cut short after it was built: reading the cell's model raises an error that
    names the stage, the key, the folder and the remedy, before any loader opens the file."""
    from bibad_utils.stages import Cell, Study

    overrides = {"run_dir": str(tmp_path / "run")}
    cell = Cell("clean")
    key = Study("smoke", overrides, progress=False).model_key(cell)
    weights = tmp_path / "run" / "artifacts" / "finetune" / key / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(DamagedArtifactError) as err:
        Study("smoke", overrides, progress=False).model(cell)
    msg = str(err.value)
    assert f"artifact finetune/{key} at {weights.parent.parent}" in msg
    assert "model/model.safetensors" in msg and "Remedy: move it aside" in msg


def test_same_size_corruption_inside_a_model_is_refused_on_reuse_even_with_the_old_mtime(tmp_path):
    """A byte flipped inside a saved model (same size, modification time set back): the reuse that
    follows, in the same process after the artifact was read once, raises instead of loading it."""
    store = ArtifactStore(tmp_path)
    path = _model_artifact(store)
    key = path.name
    assert store.verify("finetune", key) == []  # hashed once here (memoized by the stat signature)
    weights = next(path.rglob("*.safetensors"))
    st = weights.stat()
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert weights.stat().st_size == st.st_size
    with pytest.raises(DamagedArtifactError, match="sha256 differs"):
        _model_artifact(store)


def test_checkpoint_with_other_bytes_than_its_checksums_is_set_aside(tmp_path, capsys):
    """A resumable checkpoint changed after it was written (same size): its checksums.json no longer
    matches, so the build moves it aside and never resumes from it."""
    from bibad_utils.files import checksum_problems, write_checksums
    store, key, ckpt = _work_checkpoint(tmp_path)
    write_checksums(ckpt)
    assert checksum_problems(ckpt) == []
    data = bytearray((ckpt / "model.safetensors").read_bytes())
    data[-1] ^= 0x01
    (ckpt / "model.safetensors").write_bytes(bytes(data))
    assert checksum_problems(ckpt) == ["model.safetensors has other bytes than when written (sha256 differs)"]
    with store.build("finetune", {"steps": 9}) as art:
        assert not (art.work_dir / "checkpoints" / "step-00000004").exists()
        save_json(art.dir / "x.json", {})
    assert "sha256 differs" in capsys.readouterr().err


def test_rekey_store_carries_a_chain_over_to_a_changed_root_key(tmp_path):
    """scripts/rekey_store.py: when a root input's key changes but not its content, the artifacts built on
    it get exactly the keys a fresh build on the new key would give (inputs, and keys named in parameters),
    and their files are untouched."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("rekey_store", Path(__file__).resolve().parents[1] / "scripts" / "rekey_store.py")
    rekey = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rekey)

    def chain(store, root_key):
        a = store.cached("poison", {"p": 0.1}, [root_key], lambda art: save_json(art.dir / "a.json", {"x": 1}))
        b = store.cached("finetune", {"steps": 3, "source": a.name}, [a.name, root_key],
                         lambda art: save_json(art.dir / "b.json", {"y": 2}))
        c = store.cached("generate", {"n": 4}, [b.name], lambda art: save_json(art.dir / "c.json", {"z": 3}))
        return a.name, b.name, c.name

    old, fresh = ArtifactStore(tmp_path / "old"), ArtifactStore(tmp_path / "fresh")
    old_keys, new_keys = chain(old, "a" * 16), chain(fresh, "b" * 16)
    other = old.cached("poison", {"p": 0.2}, ["c" * 16], lambda art: save_json(art.dir / "d.json", {}))
    assert rekey.main([str(tmp_path / "old"), "--map", f"{'a' * 16}={'b' * 16}", "--apply"]) == 0
    for stage, key in zip(("poison", "finetune", "generate"), new_keys):
        assert old.exists(stage, key) and old.verify(stage, key) == []
    assert old.load_manifest("finetune", new_keys[1])["rekeyed_from"] == old_keys[1]
    assert old.exists("poison", other.name)  # nothing of it depends on the changed key
    with pytest.raises(SystemExit, match="cannot be recomputed"):  # a store written by other code is refused
        manifest = old.load_manifest("poison", other.name)
        save_json(old.path("poison", other.name) / "manifest.json", {**manifest, "key": "0" * 16})
        rekey.main([str(tmp_path / "old"), "--map", f"{'a' * 16}={'b' * 16}"])
