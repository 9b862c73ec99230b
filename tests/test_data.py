import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bibad_utils.config import ConfigError
from bibad_utils.data import (PROMPT_TEMPLATE, ImageSet, dataset_fingerprint, load_dataset, make_procedural, to_float,
                              to_uint8)
from bibad_utils.data.procedural import PROCEDURAL_CLASSES
from bibad_utils.data import caltech15, imagenette, real
from bibad_utils.triggers import make_trigger


def test_to_float_to_uint8_roundtrip():
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    x = to_float(u8)
    assert x.shape == (2, 3, 5, 7) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    assert float(to_float(np.array([[[0, 255, 128]]], np.uint8))[0, 0, 0]) == -1.0
    np.testing.assert_array_equal(to_uint8(x), u8)
    np.testing.assert_array_equal(to_uint8(to_float(torch.from_numpy(u8[0]))), u8[0])
    # values out of range are clamped, values between levels rounded
    y = to_uint8(torch.tensor([-3.0, 3.0, 0.0]).view(3, 1, 1))
    assert y.tolist() == [[[0, 255, 128]]]
    with pytest.raises(ConfigError):
        to_float(np.zeros((2, 5, 5, 3), np.float32))


def test_imageset_api(tiny_procedural):
    ds = tiny_procedural
    assert len(ds) == 60 and ds.images.shape == (60, 16, 16, 3) and ds.images.dtype == np.uint8
    assert ds.labels.dtype == np.int64
    assert ds.class_names == list(PROCEDURAL_CLASSES)
    assert ds.prompt_for(8) == "A photo of a star" == PROMPT_TEMPLATE.format("star")
    assert ds.prompts[:2] == ["A photo of a circle", "A photo of a square"]
    x, y = ds.batch([3, 0, 11])
    assert x.shape == (3, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert y.tolist() == [3, 0, 1]
    np.testing.assert_array_equal(to_uint8(x), ds.images_uint8([3, 0, 11]))
    assert ds.class_counts().tolist() == [6] * 10
    sub = ds.subset(np.arange(0, 60, 3))
    assert len(sub) == 20 and sub.meta["subset_indices"][1] == 3
    np.testing.assert_array_equal(sub.images[1], ds.images[3])
    with pytest.raises(ConfigError, match="label"):
        ds.prompt_for(10)
    with pytest.raises(ConfigError, match="labels"):
        ImageSet(ds.images[:2], [0, 12], ds.class_names, "x")


def test_procedural_deterministic_and_split_streams():
    a = make_procedural(3, image_size=16, seed=5)
    b = make_procedural(3, image_size=16, seed=5)
    c = make_procedural(3, image_size=16, seed=6)
    t = make_procedural(3, image_size=16, seed=5, split="test")
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.images, c.images)
    assert not np.array_equal(a.images, t.images)
    np.testing.assert_array_equal(a.labels, t.labels)


@pytest.mark.parametrize("size", [16, 32, 64])
def test_procedural_corner_is_background_and_classes_distinct(size):
    ds = make_procedural(4, image_size=size, seed=1)
    assert ds.images.shape == (40, size, size, 3)
    k = size - round(0.15 * size)
    corner = ds.images[:, k:, k:].reshape(40, -1, 3).astype(int)
    # plain background: the corner is one flat colour per image, equal to the top-left pixel
    assert np.all(corner == ds.images[:, :1, :1].reshape(40, 1, 3))
    # the shape occupies a large central area
    centre = ds.images[:, size // 2, size // 2].astype(int)
    assert np.mean(np.abs(centre - corner[:, 0]).sum(1) > 60) > 0.85
    # mean image per class: every pair of classes differs clearly
    means = np.stack([ds.images[ds.labels == c].mean(0) for c in range(10)]).reshape(10, -1)
    dist = np.abs(means[:, None] - means[None]).mean(-1)
    assert dist[~np.eye(10, dtype=bool)].min() > 5


def test_procedural_options_change_images():
    base = make_procedural(2, image_size=16)
    for kw in ({"palette_size": 3}, {"background": "gradient"}, {"noise_std": 10.0}, {"rotation": 90.0}):
        other = make_procedural(2, image_size=16, **kw)
        assert not np.array_equal(base.images, other.images), kw
    noisy = make_procedural(2, image_size=16, noise_std=10.0)
    assert noisy.images[:, -2:, -2:].std() > 5
    with pytest.raises(ConfigError, match="background"):
        make_procedural(2, background="sky")
    with pytest.raises(ConfigError, match="split"):
        make_procedural(2, split="val")


def test_procedural_duplicates():
    ds = make_procedural(10, image_size=16, seed=2, duplicate_fraction=0.4, duplicate_copies=4,
                         duplicate_noise=2.0)
    groups = ds.meta["duplicate_groups"]
    assert len(ds) == 100 and len(groups) == 10
    members = [i for g in groups for i in g]
    assert len(members) == len(set(members)) == 40
    for g in groups:
        assert len(g) == 4 and len(set(ds.labels[g].tolist())) == 1
        diff = ds.images[g].astype(int) - ds.images[g[0]].astype(int)
        assert 0.5 < np.abs(diff[1:]).mean() < 4
    others = [i for i in range(100) if i not in set(members)]
    # unrelated images of the same class differ much more than copies do
    a, b = [i for i in others if ds.labels[i] == 0][:2]
    assert np.abs(ds.images[a].astype(int) - ds.images[b].astype(int)).mean() > 4
    sub = ds.subset(groups[0] + others[:5])
    assert sub.meta["duplicate_groups"] == [[0, 1, 2, 3]]
    with pytest.raises(ConfigError, match="duplicate_fraction"):
        make_procedural(2, duplicate_fraction=0.9, duplicate_copies=4)


def test_badnets_patch_lands_on_background():
    ds = make_procedural(2, image_size=32)
    x, _ = ds.batch(slice(None))
    out = to_uint8(make_trigger("badnets1", 32).apply(x))
    changed = np.any(out != ds.images, axis=-1)
    assert not changed[:, :27, :].any() and not changed[:, :, :27].any()


def test_load_dataset_dispatch():
    ds = load_dataset("procedural", split="test", image_size=16, seed=3, n_per_class=2)
    assert len(ds) == 20 and ds.meta["split"] == "test"
    with pytest.raises(ConfigError, match="dataset.name"):
        load_dataset("mnist")


# ----- real datasets, on tiny fake folders in the standard layouts -----


def write_jpeg(path, colour, size=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.zeros((size[1], size[0], 3), np.uint8)
    arr[:] = colour
    Image.fromarray(arr).save(path, quality=95)


def fake_imagenette(root, per_class=2):
    for split in ("train", "val"):
        for label, wnid in enumerate(imagenette.IMAGENETTE_WNIDS):
            for k in range(per_class):
                write_jpeg(root / "imagenette2" / split / wnid / f"{wnid}_{k}.JPEG", (20 * label, 100, 50 + k))


def test_imagenette_from_folder_and_cache(tmp_path):
    fake_imagenette(tmp_path)
    ds = load_dataset("imagenette", root=tmp_path, image_size=16)
    assert ds.name == "imagenette" and len(ds) == 20 and ds.images.shape == (20, 16, 16, 3)
    assert ds.class_names[6] == "garbage truck" and ds.meta["target"] == 6
    assert ds.labels.tolist() == sorted([c for c in range(10)] * 2)
    assert abs(int(ds.images[18, 8, 8, 0]) - 180) <= 3  # class 9, red = 20 * 9
    assert ds.prompt_for(6) == "A photo of a garbage truck"
    cache_files = sorted(p.name for p in (tmp_path / ".bibad_cache").iterdir())
    assert len(cache_files) == 3 and not any(".tmp" in p for p in cache_files)
    again = load_dataset("imagenette", root=tmp_path, image_size=16)
    assert isinstance(again.images, np.memmap)
    np.testing.assert_array_equal(again.images, ds.images)
    test = load_dataset("imagenette", split="test", root=tmp_path, image_size=16)
    assert len(test) == 20 and test.meta["split"] == "test"
    x, y = again.batch([0, 19])
    assert x.shape == (2, 3, 16, 16) and y.tolist() == [0, 9]


def test_center_crop_keeps_the_middle(tmp_path):
    arr = np.zeros((20, 60, 3), np.uint8)
    arr[:, :20] = (0, 0, 255)
    arr[:, 20:40] = (255, 0, 0)
    arr[:, 40:] = (0, 0, 255)
    Image.fromarray(arr).save(tmp_path / "wide.png")
    img = real.decode_image(tmp_path / "wide.png", 10)[0]
    assert img.shape == (10, 10, 3) and img[:, 2:8, 0].min() > 200 and img[:, 2:8, 2].max() < 60
    stretched = real.decode_image(tmp_path / "wide.png", 12, resize="stretch")[0]
    assert stretched[:, 0, 2].min() > 200 and stretched[:, 6, 0].min() > 200


def test_corrupt_image_names_the_file(tmp_path):
    fake_imagenette(tmp_path, per_class=1)
    bad = tmp_path / "imagenette2" / "train" / imagenette.IMAGENETTE_WNIDS[3] / "broken.JPEG"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(real.ImageReadError, match="broken.JPEG"):
        load_dataset("imagenette", root=tmp_path, image_size=16)
    assert not any(".tmp" in p.name for p in (tmp_path / ".bibad_cache").iterdir())


def test_missing_datasets_explain_how_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="imagenette2.tgz") as err:
        load_dataset("imagenette", root=tmp_path / "nowhere", image_size=16)
    assert "download=True" in str(err.value) and "nowhere" in str(err.value)
    with pytest.raises(FileNotFoundError, match="256_ObjectCategories"):
        load_dataset("caltech15", root=tmp_path, image_size=16)
    with pytest.raises(FileNotFoundError, match="cifar-10-python.tar.gz") as err:
        load_dataset("cifar10", root=tmp_path)
    assert "cifar-10-batches-py" in str(err.value)


def test_caltech15_from_folder_with_seeded_split(tmp_path):
    cats = tmp_path / "256_ObjectCategories"
    for label, folder in enumerate(caltech15.CALTECH15_FOLDERS):
        for k in range(5):
            write_jpeg(cats / folder / f"{folder[:3]}_{k:04d}.jpg", (10 * label, 200 - 10 * label, k * 40),
                       size=(30, 30))
    write_jpeg(cats / "001.ak47" / "001_0001.jpg", (0, 0, 0))  # not one of the 15 classes
    train = load_dataset("caltech15", root=tmp_path, image_size=16, seed=0, test_fraction=0.4)
    test = load_dataset("caltech15", split="test", root=tmp_path, image_size=16, seed=0, test_fraction=0.4)
    assert train.class_names[2] == "binocular" and len(train.class_names) == 15
    assert train.class_counts().tolist() == [3] * 15 and test.class_counts().tolist() == [2] * 15
    tr, te = caltech15.caltech15_split(5, 0.4, 0, 2)
    assert sorted(tr.tolist() + te.tolist()) == list(range(5)) and len(te) == 2
    other = load_dataset("caltech15", split="test", root=tmp_path, image_size=16, seed=1, test_fraction=0.4)
    assert not np.array_equal(other.images, test.images)
    # blue channel encodes the file number: train and test images of a class are different files
    blue_train = {int(v) // 40 for v in train.images[train.labels == 4][:, 8, 8, 2] + 20}
    blue_test = {int(v) // 40 for v in test.images[test.labels == 4][:, 8, 8, 2] + 20}
    assert blue_train.isdisjoint(blue_test) and len(blue_train | blue_test) == 5


def test_dataset_from_profile_section(tmp_path):
    from bibad_utils.data import dataset_from_config

    section = {"name": "procedural", "root": None, "image_size": 16, "n_per_class": 3, "n_test_per_class": 2,
               "options": {"palette_size": 2}}
    train = dataset_from_config(section, split="train", seed=1)
    test = dataset_from_config(section, split="test", seed=1)
    assert len(train) == 30 and len(test) == 20 and train.meta["options"]["palette_size"] == 2
    fake_imagenette(tmp_path, per_class=1)
    real_section = {"name": "imagenette", "root": str(tmp_path), "image_size": 16, "n_per_class": None,
                    "n_test_per_class": None, "options": {}}
    assert len(dataset_from_config(real_section)) == 10
    with pytest.raises(ConfigError, match="dataset.n_per_class"):
        dataset_from_config({**real_section, "n_per_class": 5})
    with pytest.raises(ConfigError, match="dataset"):
        dataset_from_config({**section, "colour": "red"})


def _png_same_size(path, colour):
    """An uncompressed 12 x 12 PNG: any colour gives a file of the same size."""
    Image.fromarray(np.full((12, 12, 3), colour, np.uint8)).save(path, compress_level=0)


def test_replaced_file_of_the_same_size_and_time_is_not_served_from_the_cache(tmp_path):
    fake_imagenette(tmp_path, per_class=1)
    wnid = imagenette.IMAGENETTE_WNIDS[0]
    target = tmp_path / "imagenette2" / "train" / wnid / f"{wnid}_0.JPEG"
    _png_same_size(target, (10, 10, 10))
    first = load_dataset("imagenette", root=tmp_path, image_size=8)
    size, stat = target.stat().st_size, target.stat()
    _png_same_size(target, (250, 250, 250))
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size, same mtime: only the bytes differ
    assert target.stat().st_size == size
    again = load_dataset("imagenette", root=tmp_path, image_size=8)
    assert int(first.images[0].mean()) == 10 and int(again.images[0].mean()) == 250
    assert first.meta["files_fingerprint"] != again.meta["files_fingerprint"]


def test_dataset_fingerprint_follows_listing_and_bytes(tmp_path):
    fake_imagenette(tmp_path, per_class=1)
    a = dataset_fingerprint("imagenette", tmp_path)
    assert a["files"] == 20 and a["content_sha256"] is not None
    assert dataset_fingerprint("imagenette", tmp_path) == a
    f = next((tmp_path / "imagenette2" / "val").rglob("*.JPEG"))
    os.utime(f, ns=(0, f.stat().st_mtime_ns + 10**9))  # touched (as a copy of the data folder is): same keys
    assert dataset_fingerprint("imagenette", tmp_path) == a
    st = f.stat()
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # replaced with the same size and mtime: the bytes tell
    b = dataset_fingerprint("imagenette", tmp_path)
    assert b["listing_sha256"] == a["listing_sha256"] and b["content_sha256"] != a["content_sha256"]
    assert dataset_fingerprint("imagenette", tmp_path / "absent") is None
    assert dataset_fingerprint("procedural") is None


def _recolour_keep_size_and_mtime(f, colour):
    st = f.stat()
    _png_same_size(f, colour)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert f.stat().st_size == st.st_size


def test_changing_a_dataset_file_changes_the_keys_of_the_chain_and_touching_it_does_not(tmp_path):
    from bibad_utils.config import load_profile
    from bibad_utils.stages import Cell, Study

    fake_imagenette(tmp_path / "data", per_class=2)
    f = next((tmp_path / "data" / "imagenette2" / "train").rglob("*.JPEG"))
    _png_same_size(f, (10, 10, 10))
    overrides = {"run_dir": str(tmp_path / "run"), "target": 6,
                 "dataset": {"name": "imagenette", "root": str(tmp_path / "data"), "image_size": 8,
                             "n_per_class": None, "n_test_per_class": None,
                             "options": None}}  # null clears the procedural options of smoke
    cfg = load_profile("smoke", overrides)
    assert cfg["dataset"]["fingerprint"] == dataset_fingerprint("imagenette", tmp_path / "data")
    first = Study("smoke", overrides, progress=False)
    cell = Cell("badnets1", 0.1)
    keys = (first.data_key, first.poison_key(cell))
    manifest = first.poison_manifest(cell)
    assert manifest["dataset_fingerprint"] == cfg["dataset"]["fingerprint"]
    assert Study("smoke", overrides, progress=False).poison_key(cell) == keys[1]  # nothing changed: reused
    os.utime(f, ns=(0, f.stat().st_mtime_ns + 10**9))  # a copy of the data folder gets new mtimes: same keys
    assert Study("smoke", overrides, progress=False).poison_key(cell) == keys[1]
    _recolour_keep_size_and_mtime(f, (250, 250, 250))  # other bytes, same size and mtime
    second = Study("smoke", overrides, progress=False)
    assert second.data_key != keys[0] and second.poison_key(cell) != keys[1]
    assert len(second.store.list("poison")) == 2
    # a study validated before the change refuses to read the changed files
    stale = Study("smoke", {**overrides, "seed": 1}, progress=False)
    _recolour_keep_size_and_mtime(f, (20, 20, 20))
    with pytest.raises(ConfigError, match="dataset.fingerprint"):
        stale.train_set


def test_cut_short_image_cache_is_named_with_the_remedy(tmp_path):
    fake_imagenette(tmp_path, per_class=1)
    load_dataset("imagenette", root=tmp_path, image_size=8)
    cache = next((tmp_path / ".bibad_cache").glob("*.images.npy"))
    cache.write_bytes(cache.read_bytes()[:-40])
    with pytest.raises(ConfigError, match="delete the files") as err:
        load_dataset("imagenette", root=tmp_path, image_size=8)
    assert err.value.param == "cache" and cache.name in str(err.value)


def test_image_cache_changed_in_place_is_refused(tmp_path):
    """A pixel cache with one byte changed (same size, mtime set back): its recorded SHA-256 refuses it."""
    fake_imagenette(tmp_path, per_class=1)
    first = load_dataset("imagenette", root=tmp_path, image_size=8)
    cache = Path(first.meta["cache"])
    st = cache.stat()
    data = bytearray(cache.read_bytes())
    data[-1] ^= 0xFF
    cache.write_bytes(bytes(data))
    os.utime(cache, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(ConfigError, match="sha256 differs") as err:
        load_dataset("imagenette", root=tmp_path, image_size=8)
    assert err.value.param == "cache"
