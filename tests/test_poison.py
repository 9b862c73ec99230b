import json

import numpy as np
import pytest
import torch

from bibad_utils.config import ConfigError
from bibad_utils.data import ImageSet, make_procedural, to_float, to_uint8
from bibad_utils.poison import (poison_kinds, choose_poison_indices, n_poison_for, poison_dataset,
                                r_train)
from bibad_utils.triggers import make_trigger

# ImageNette (imagenette2, official train split) images per class; 9,469 in all, 961 garbage trucks.
IMAGENETTE_TRAIN_COUNTS = [963, 955, 993, 858, 941, 956, 961, 931, 951, 960]


def imagenette_like_labels():
    labels = np.repeat(np.arange(10), IMAGENETTE_TRAIN_COUNTS)
    return np.random.default_rng(0).permutation(labels)


def test_r_train_matches_paper_imagenette():
    labels = imagenette_like_labels()
    assert len(labels) == 9469
    paper = {0.01: 8.9, 0.02: 16.4, 0.05: 33.0, 0.10: 49.6}
    for p, expected in paper.items():
        idx = choose_poison_indices(labels, 6, p, seed=0)
        assert len(idx) == int(9469 * p)
        assert not np.any(labels[idx] == 6)
        r = 100 * r_train(len(idx), int(np.sum(labels == 6)))
        assert abs(r - expected) < 0.05, (p, r)  # the paper prints r_train to 0.1 %: the same value
    assert r_train(0, 0) == 0.0 and r_train(5, 15) == 0.25


def test_choose_indices_determinism_and_uniformity():
    labels = imagenette_like_labels()
    a = choose_poison_indices(labels, 6, 0.05, seed=1)
    b = choose_poison_indices(labels, 6, 0.05, seed=1)
    c = choose_poison_indices(labels, 6, 0.05, seed=2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.dtype == np.int64 and np.all(np.diff(a) > 0)
    # drawn from every non-target class roughly in proportion to its size (473 draws)
    per_class = np.bincount(labels[a], minlength=10)
    assert per_class[6] == 0 and per_class[[0, 1, 2, 3, 4, 5, 7, 8, 9]].min() > 25
    assert len(choose_poison_indices(labels, 6, 0.0, seed=0)) == 0
    assert n_poison_for(100, 0.29) == 29


def test_choose_indices_from_pool():
    labels = np.tile(np.arange(4), 25)
    pool = np.arange(40)
    idx = choose_poison_indices(labels, 0, 0.2, seed=0, pool=pool)
    assert len(idx) == 20 and set(idx) <= set(range(40)) and not np.any(labels[idx] == 0)
    with pytest.raises(ConfigError, match="ratio"):
        choose_poison_indices(labels, 0, 0.35, seed=0, pool=pool)


@pytest.mark.parametrize("bad", [dict(ratio=1.0), dict(ratio=-0.1), dict(target=4), dict(target=-1),
                                 dict(ratio=0.9)])
def test_choose_indices_errors(bad):
    labels = np.tile(np.arange(4), 5)
    kw = dict(target=0, ratio=0.1, seed=0)
    kw.update(bad)
    with pytest.raises(ConfigError):
        choose_poison_indices(labels, kw["target"], kw["ratio"], kw["seed"])


def test_poisoned_set_view_badnets1(tiny_procedural):
    ds = tiny_procedural
    images_before, labels_before = ds.images.copy(), ds.labels.copy()
    ps = poison_dataset(ds, "badnets1", 0.2, target=2, seed=0)
    assert len(ps) == len(ds) and ps.n_poison == 12 and ps.class_names == ds.class_names
    assert np.all(ps.labels[ps.indices] == 2) and np.all(ds.labels[ps.indices] != 2)
    assert ps.is_poisoned.sum() == 12
    x, y = ps.batch(np.arange(len(ps)))
    assert torch.equal(y, torch.as_tensor(ps.labels))
    clean_x, _ = ds.batch(np.arange(len(ds)))
    trig = make_trigger("badnets1", 16)
    assert torch.equal(x[ps.is_poisoned], trig.apply(clean_x[ps.is_poisoned]))
    assert torch.equal(x[~ps.is_poisoned], clean_x[~ps.is_poisoned])
    u8 = ps.images_uint8(slice(None))
    np.testing.assert_array_equal(u8, to_uint8(x))
    np.testing.assert_array_equal(u8[~ps.is_poisoned], ds.images[~ps.is_poisoned])
    # the source dataset is never written
    np.testing.assert_array_equal(ds.images, images_before)
    np.testing.assert_array_equal(ds.labels, labels_before)
    m = ps.materialize()
    assert isinstance(m, ImageSet)
    np.testing.assert_array_equal(m.images, u8)
    np.testing.assert_array_equal(m.labels, ps.labels)
    assert m.meta["poison"]["n_poison"] == 12
    assert ps.prompts[int(ps.indices[0])] == "A photo of a triangle"


def test_manifest_counts_and_json(tiny_procedural):
    ps = poison_dataset(tiny_procedural, "badnets2", 0.1, target=0, seed=3)
    man = ps.manifest()
    json.dumps(man)
    assert man["kind"] == "badnets2" and man["n_poison"] == 6 and len(man["indices"]) == 6
    assert man["counts_before"] == [6] * 10
    after = np.array(man["counts_after"])
    assert after[0] == 12 and after.sum() == 60
    assert man["r_train"] == pytest.approx(6 / 12)
    assert man["trigger"]["kind"] == "badnets2" and man["trigger"]["alpha"] == 0.2


def test_controls_and_kinds(tiny_procedural):
    ds = tiny_procedural
    clean = poison_dataset(ds, "clean", 0.3, target=1, seed=0)
    assert clean.n_poison == 0 and clean.ratio == 0.0 and clean.manifest()["r_train"] == 0.0
    np.testing.assert_array_equal(clean.images_uint8(slice(None)), ds.images)
    relabel = poison_dataset(ds, "relabel", 0.1, target=1, seed=0)
    bad = poison_dataset(ds, "badnets1", 0.1, target=1, seed=0)
    np.testing.assert_array_equal(relabel.indices, bad.indices)
    np.testing.assert_array_equal(relabel.labels, bad.labels)
    assert relabel.trigger is None
    np.testing.assert_array_equal(relabel.images_uint8(relabel.indices), ds.images[relabel.indices])
    wanet = poison_dataset(ds, "wanet", 0.1, target=1, seed=0, trigger=make_trigger("wanet", 16, seed=9))
    assert wanet.manifest()["trigger"]["seed"] == 9
    assert set(poison_kinds()) == {"clean", "relabel", "badnets1", "badnets2", "wanet"}
    with pytest.raises(ConfigError, match="kind"):
        poison_dataset(ds, "blend", 0.1, target=1, seed=0)
    with pytest.raises(ConfigError, match="trigger"):
        poison_dataset(ds, "badnets1", 0.1, target=1, seed=0, trigger=make_trigger("badnets2", 16))
    with pytest.raises(ConfigError, match="target"):
        poison_dataset(ds, "badnets1", 0.1, target=10, seed=0)


def test_duplicate_poisoning_uses_pool():
    ds = make_procedural(8, image_size=16, duplicate_fraction=0.5, duplicate_copies=4)
    pool = [i for g in ds.meta["duplicate_groups"] for i in g]
    ps = poison_dataset(ds, "badnets1", 0.1, target=0, seed=0, pool=pool)
    assert ps.n_poison == 8 and set(ps.indices) <= set(pool)
    assert ps.manifest()["pool_size"] == len(pool)


def test_batch_on_subset_of_rows_with_duplicates_of_index(tiny_procedural):
    ps = poison_dataset(tiny_procedural, "badnets1", 0.2, target=2, seed=0)
    i = int(ps.indices[0])
    x, y = ps.batch([i, i, 0])
    assert torch.equal(x[0], x[1]) and y[0] == 2
    assert torch.equal(x[0], make_trigger("badnets1", 16).apply(to_float(tiny_procedural.images[i])))


def test_new_pattern_bytes_at_the_same_path_give_a_new_poison_key(tmp_path):
    from PIL import Image

    from bibad_utils.config import ConfigError
    from bibad_utils.stages import Cell, Study

    pattern = tmp_path / "pattern.png"
    Image.fromarray(np.full((16, 16, 3), 30, np.uint8)).save(pattern)
    overrides = {"run_dir": str(tmp_path / "run"), "attacks": ["badnets2"],
                 "triggers": {"badnets2": {"alpha": 0.5, "pattern_path": str(pattern)}}}
    cell = Cell("badnets2", 0.1)
    first = Study("smoke", overrides, progress=False)
    key = first.poison_key(cell)
    manifest = first.poison_manifest(cell)["trigger"]
    assert manifest["pattern_file_sha256"] == first.cfg["triggers"]["badnets2"]["pattern_sha256"]
    assert Study("smoke", overrides, progress=False).poison_key(cell) == key  # unchanged file: reused
    Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(pattern)  # same path, new picture
    second = Study("smoke", overrides, progress=False)
    new_key = second.poison_key(cell)
    assert new_key != key and sorted(second.store.list("poison")) == sorted([key, new_key])
    assert second.poison_manifest(cell)["trigger"]["pattern_file_sha256"] != manifest["pattern_file_sha256"]
    # a study validated before the change refuses to build its trigger from the changed file
    with pytest.raises(ConfigError, match="changed since"):
        first.trigger("badnets2")
