"""ImageNette from local files: a zip of JPEGs (the offline copy's layout) and extracted folders, with the
same images in the same order from either; greyscale and CMYK files converted to RGB and counted; no
network and no pickle. Every source is built here, tiny; one test reads the offline copy beside the
project when it is there."""

import io
import os
import pickle
import shutil
import socket
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bibad_utils.config import ConfigError
from bibad_utils.poison import n_poison_for, r_train
from bibad_utils.data import (dataset_fingerprint, dataset_from_config, imagenette, load_dataset, real,
                              validate_dataset_options)

WNIDS = imagenette.IMAGENETTE_WNIDS
PER_CLASS = {"train": 3, "val": 2}
# (split folder, class, position) of the files stored in another colour mode than RGB
NON_RGB = {("train", 0, 0): "L", ("train", 5, 2): "L", ("train", 7, 1): "CMYK", ("val", 3, 1): "L",
           ("val", 9, 0): "L"}
SHARED_ZIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenette2-224.zip"


@pytest.fixture(autouse=True)
def own_data_root(tmp_path, monkeypatch):
    """The default cache folder of a zip (under the data root) is this test's own."""
    monkeypatch.setenv("BIBAD_DATA_ROOT", str(tmp_path / "data-root"))


def colour(label: int, k: int) -> tuple:
    """A flat colour naming (class, position in the class): survives JPEG within a few levels."""
    return (20 * label + 10, 40 * k + 30, 200 - 15 * label)


def picture(sub: str, label: int, k: int) -> bytes:
    """A JPEG of colour(label, k) with a black band over its left quarter (so that cropping and stretching
    differ); even positions 40 x 30 (wide), odd ones 30 x 44 (tall); modes as NON_RGB says."""
    w, h = (40, 30) if k % 2 == 0 else (30, 44)
    arr = np.zeros((h, w, 3), np.uint8)
    arr[:] = colour(label, k)
    arr[:, : w // 4] = 0
    img = Image.fromarray(arr).convert(NON_RGB.get((sub, label, k), "RGB"))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def member(sub: str, label: int, k: int) -> str:
    return f"{sub}/{WNIDS[label]}/{WNIDS[label]}_{k:04d}.JPEG"


FILES = {member(sub, c, k): picture(sub, c, k) for sub, n in PER_CLASS.items() for c in range(10) for k in range(n)}


def write_zip(path: Path, prefix: str = "imagenette2-224/", skip=()) -> Path:
    """The offline copy's layout, with directory entries, a file that is not an image, and archive order
    unlike file order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(prefix, b"")
        zf.writestr(f"{prefix}README.txt", b"not an image")
        for name in reversed(sorted(FILES)):
            if name not in skip:
                zf.writestr(prefix + name, FILES[name])
    return path


def write_folder(folder: Path) -> Path:
    for name, data in FILES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


@pytest.fixture
def tiny_zip(tmp_path):
    return write_zip(tmp_path / "shared" / "imagenette2-224.zip")


def expected(sub: str):
    """Labels, centre colours and member names of a split in the loader's order."""
    order = [(c, k) for c in range(10) for k in range(PER_CLASS[sub])]
    return (np.array([c for c, _ in order]), np.array([colour(c, k) for c, k in order]),
            [member(sub, c, k) for c, k in order])


def test_zip_classes_labels_target_and_order(tiny_zip, tmp_path):
    ds = load_dataset("imagenette", root=tiny_zip, image_size=16, cache_dir=tmp_path / "cache")
    labels, colours, _ = expected("train")
    assert ds.class_names == list(imagenette.IMAGENETTE_CLASSES) and ds.class_names[6] == "garbage truck"
    assert WNIDS == tuple(sorted(WNIDS)) and WNIDS[6] == "n03417042" and ds.meta["target"] == 6
    assert ds.images.shape == (30, 16, 16, 3) and ds.labels.tolist() == labels.tolist()
    assert ds.meta["source_format"] == "zip" and ds.meta["variant"] == "224px" and ds.meta["split"] == "train"
    order = [(c, k) for c in range(10) for k in range(PER_CLASS["train"])]
    rgb = [i for i, (c, k) in enumerate(order) if ("train", c, k) not in NON_RGB]
    assert np.abs(ds.images[rgb, 8, 8].astype(int) - colours[rgb]).max() <= 4  # file order, not archive order
    assert ds.prompt_for(6) == "A photo of a garbage truck"
    test = load_dataset("imagenette", split="test", root=tiny_zip.parent, image_size=16, cache_dir=tmp_path / "cache")
    val = load_dataset("imagenette", split="val", root=tiny_zip, image_size=16, cache_dir=tmp_path / "cache")
    assert len(test) == 20 and test.meta["split"] == "test" and test.meta["source_split"] == "val"
    assert test.class_counts().tolist() == [2] * 10
    np.testing.assert_array_equal(test.images, val.images)
    again = load_dataset("imagenette", root=tiny_zip, image_size=16, cache_dir=tmp_path / "cache")
    assert isinstance(again.images, np.memmap) and again.meta["cache"] == ds.meta["cache"]
    np.testing.assert_array_equal(again.images, ds.images)


def test_extracted_folders_match_the_zip(tiny_zip, tmp_path):
    with zipfile.ZipFile(tiny_zip) as zf:
        zf.extractall(tmp_path / "extracted")
    write_folder(tmp_path / "legacy" / "imagenette2")  # the full-size archive's folder name
    roots = {tmp_path / "extracted": "224px", tmp_path / "extracted" / "imagenette2-224": "224px",
             tmp_path / "legacy": "full", tmp_path / "legacy" / "imagenette2": "full"}
    for split in ("train", "test"):
        archive = load_dataset("imagenette", split=split, root=tiny_zip, image_size=16, cache_dir=tmp_path / "c")
        threads = load_dataset("imagenette", split=split, root=tiny_zip, image_size=16, num_workers=2,
                               cache_dir=tmp_path / "threads")
        np.testing.assert_array_equal(threads.images, archive.images)
        for root, variant in roots.items():
            folder = load_dataset("imagenette", split=split, root=root, image_size=16, cache_dir=tmp_path / "c")
            assert folder.meta["source_format"] == "folder" and folder.meta["variant"] == variant
            np.testing.assert_array_equal(folder.images, archive.images)
            assert folder.labels.tolist() == archive.labels.tolist()
            assert folder.meta["converted_to_rgb"] == archive.meta["converted_to_rgb"]
    found = imagenette.find_imagenette(tmp_path / "legacy", "full")
    assert found == ("folder", tmp_path / "legacy" / "imagenette2")
    assert imagenette.find_imagenette(tmp_path / "legacy", "160px") is None


def test_greyscale_and_cmyk_files_are_converted_and_counted(tiny_zip, tmp_path):
    cache = tmp_path / "cache"
    train = load_dataset("imagenette", root=tiny_zip, image_size=16, cache_dir=cache)
    test = load_dataset("imagenette", split="test", root=tiny_zip, image_size=16, cache_dir=cache)
    assert train.meta["converted_to_rgb"] == 3 and train.meta["converted_modes"] == {"CMYK": 1, "L": 2}
    assert test.meta["converted_to_rgb"] == 2 and test.meta["converted_modes"] == {"L": 2}
    for (sub, label, k), mode in NON_RGB.items():
        ds = train if sub == "train" else test
        i = expected(sub)[2].index(member(sub, label, k))
        img = ds.images[i]
        assert img.shape == (16, 16, 3)
        if mode == "L":
            assert np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 1], img[..., 2])
            grey = np.asarray(Image.new("RGB", (1, 1), colour(label, k)).convert("L"))[0, 0]
            assert abs(int(img[8, 8, 0]) - int(grey)) <= 4
    reused = load_dataset("imagenette", root=tiny_zip, image_size=16, cache_dir=cache)
    assert isinstance(reused.images, np.memmap) and reused.meta["converted_to_rgb"] == 3
    assert reused.meta["converted_modes"] == train.meta["converted_modes"]


@pytest.mark.parametrize("image_size,resize", [(16, "center_crop"), (24, "center_crop"), (16, "stretch")])
def test_image_size_and_resize_are_those_of_decode_image(tiny_zip, tmp_path, image_size, resize):
    ds = load_dataset("imagenette", split="test", root=tiny_zip, image_size=image_size, resize=resize,
                      cache_dir=tmp_path / "cache")
    assert ds.images.shape == (20, image_size, image_size, 3) and ds.meta["resize"] == resize
    for i, name in enumerate(expected("val")[2]):
        np.testing.assert_array_equal(ds.images[i], real.decode_image(io.BytesIO(FILES[name]), image_size, resize)[0])
    wide = expected("val")[2].index(member("val", 2, 0))  # 40 x 30: the black band is cropped in part
    other = load_dataset("imagenette", split="test", root=tiny_zip, image_size=image_size,
                         resize="stretch" if resize == "center_crop" else "center_crop", cache_dir=tmp_path / "cache")
    assert not np.array_equal(ds.images[wide], other.images[wide])


def test_missing_data_names_the_sources_it_looked_for(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("imagenette", root=tmp_path / "nowhere", image_size=16)
    text = str(err.value)
    for part in ("imagenette2-224.zip", "imagenette2-224/", "imagenette2/", "imagenette2-320/", "imagenette2-160/",
                 "imagenette2.tgz", "download=True", "nowhere"):
        assert part in text, part
    with pytest.raises(FileNotFoundError, match="offline copy"):
        load_dataset("imagenette", root=tmp_path, image_size=16, variant="224px")
    assert dataset_fingerprint("imagenette", tmp_path) is None
    with pytest.raises(ConfigError) as err:
        load_dataset("imagenette", root=tmp_path, image_size=16, variant="224px", download=True)
    assert err.value.param == "download"
    with pytest.raises(ConfigError) as err:
        load_dataset("imagenette", root=tmp_path / "absent.zip", image_size=16, download=True)
    assert err.value.param == "download"
    with pytest.raises(ConfigError) as err:
        load_dataset("imagenette", root=tmp_path, image_size=16, variant="512px")
    assert err.value.param == "variant" and "224px" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_dataset("imagenette", split="validation", root=tmp_path, image_size=16)
    assert err.value.param == "split"
    gap = write_zip(tmp_path / "gap" / "imagenette2-224.zip",
                    skip={member("val", 6, k) for k in range(PER_CLASS["val"])})
    assert len(load_dataset("imagenette", root=gap, image_size=16)) == 30  # train is whole
    with pytest.raises(FileNotFoundError, match="n03417042.*garbage truck.*val"):
        load_dataset("imagenette", split="test", root=gap, image_size=16)
    assert imagenette.find_imagenette(gap.parent, "224px") == ("zip", gap)
    assert imagenette.find_imagenette(gap.parent, "160px") is None


def test_damaged_zips_are_named(tiny_zip, tmp_path):
    cut = tmp_path / "cut" / "imagenette2-224.zip"
    cut.parent.mkdir()
    cut.write_bytes(tiny_zip.read_bytes()[: tiny_zip.stat().st_size // 2])  # the central directory is lost
    for root in (cut, cut.parent):
        with pytest.raises(ConfigError) as err:
            load_dataset("imagenette", root=root, image_size=16)
        assert err.value.param == "dataset.root" and str(cut) in str(err.value)
    broken = tmp_path / "broken" / "imagenette2-224.zip"
    broken.parent.mkdir()
    bad = "imagenette2-224/" + member("train", 4, 1)
    with zipfile.ZipFile(tiny_zip) as src, zipfile.ZipFile(broken, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, b"\xff\xd8\xff\xe0 not a jpeg" if info.filename == bad else src.read(info))
    with pytest.raises(real.ImageReadError, match=member("train", 4, 1)) as err:
        load_dataset("imagenette", root=broken, image_size=16, cache_dir=tmp_path / "cache")
    assert str(broken) in str(err.value)
    assert not any(".tmp" in p.name for p in (tmp_path / "cache").iterdir())
    two = tmp_path / "two" / "imagenette2-224.zip"
    write_zip(two)
    with zipfile.ZipFile(two, "a") as zf:
        zf.writestr("copy/" + member("train", 0, 0), FILES[member("train", 0, 0)])
    with pytest.raises(ConfigError, match="one ImageNette tree"):
        load_dataset("imagenette", root=two, image_size=16)


def test_no_network_and_no_pickle(tiny_zip, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the ImageNette loader must not touch the network or unpickle anything")

    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    write_folder(tmp_path / "data" / "imagenette2-224")
    for root in (tiny_zip, tmp_path / "data"):
        for _ in range(2):  # built, then read back from the cache
            ds = load_dataset("imagenette", split="test", root=root, image_size=16, cache_dir=tmp_path / "cache")
            assert len(ds) == 20
        assert dataset_fingerprint("imagenette", root)["files"] >= 1
    with pytest.raises(FileNotFoundError):
        load_dataset("imagenette", root=tmp_path / "empty", image_size=16)  # download=False: nothing fetched


def test_fingerprint_follows_the_files_not_their_path(tiny_zip, tmp_path):
    a = dataset_fingerprint("imagenette", tiny_zip)
    assert a["files"] == 1 and a == dataset_fingerprint("imagenette", tiny_zip.parent)  # the zip is one file
    moved = tmp_path / "elsewhere" / tiny_zip.name
    moved.parent.mkdir()
    shutil.copy2(tiny_zip, moved)  # same name, bytes and modification time
    assert dataset_fingerprint("imagenette", moved) == a
    one = load_dataset("imagenette", root=tiny_zip, image_size=8, cache_dir=tmp_path / "cache")
    two = load_dataset("imagenette", root=moved, image_size=8, cache_dir=tmp_path / "cache")
    assert one.meta["cache"] == two.meta["cache"]  # the cache key follows the files too
    os.utime(moved, ns=(0, moved.stat().st_mtime_ns + 10**9))  # a copy with a new mtime keeps every key
    assert dataset_fingerprint("imagenette", moved) == a
    folder = write_folder(tmp_path / "tree" / "imagenette2-224")
    f = dataset_fingerprint("imagenette", folder.parent)
    assert f["files"] == len(FILES) and f["content_sha256"] is not None


def test_default_cache_is_under_the_data_root_for_a_zip(tiny_zip, tmp_path):
    ds = load_dataset("imagenette", split="test", root=tiny_zip, image_size=8)
    assert Path(ds.meta["cache"]).parent == tmp_path / "data-root" / ".bibad_cache"
    assert not (tiny_zip.parent / ".bibad_cache").exists()
    folder = write_folder(tmp_path / "mine" / "imagenette2")
    ds = load_dataset("imagenette", split="test", root=folder.parent, image_size=8)
    assert Path(ds.meta["cache"]).parent == folder.parent / ".bibad_cache"  # an extracted folder: as before


def test_profile_section_with_the_zip_as_root(tiny_zip, tmp_path):
    from bibad_utils.config import load_profile

    section = {"name": "imagenette", "root": str(tiny_zip), "image_size": 32, "n_per_class": None,
               "n_test_per_class": None, "options": None}  # null clears the procedural options of smoke
    cfg = load_profile("smoke", {"dataset": section, "target": 6})
    assert cfg["dataset"]["root"] == str(tiny_zip)
    assert cfg["dataset"]["fingerprint"] == dataset_fingerprint("imagenette", tiny_zip)
    assert cfg["dataset"]["fingerprint"]["files"] == 1
    train = dataset_from_config(cfg["dataset"], split="train")
    test = dataset_from_config(cfg["dataset"], split="test")
    assert train.images.shape == (30, 32, 32, 3) and test.class_counts().tolist() == [2] * 10
    assert train.meta["fingerprint"] == cfg["dataset"]["fingerprint"] and train.meta["converted_to_rgb"] == 3
    # an override's options merge over smoke's procedural ones, so the variant option is checked alone
    validate_dataset_options("imagenette", {"variant": "224px"})
    validate_dataset_options("imagenette", {"variant": None})
    with pytest.raises(ConfigError) as err:
        validate_dataset_options("imagenette", {"variant": "512px"})
    assert err.value.param == "dataset.options.variant" and "224px" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_profile("smoke", {"dataset": {**section, "root": str(tmp_path / "absent.zip")}, "target": 6})
    assert err.value.param == "dataset.root" and "zip" in str(err.value)


@pytest.mark.skipif(not SHARED_ZIP.is_file(), reason="the offline ImageNette copy is not beside the project")
def test_the_offline_copy_holds_the_official_split(tmp_path):
    listing = imagenette._listing("zip", SHARED_ZIP)
    counts = {sub: [len(listing[(sub, c)]) for c in range(10)] for sub in ("train", "val")}
    assert sum(counts["train"]) == 9469 and sum(counts["val"]) == 3925 and counts["train"][6] == 961
    # the whole split's r_train at the paper's p, by the poisoning code's own count, is the paper's, as printed
    for p, paper in {0.01: 8.9, 0.02: 16.4, 0.05: 33.0, 0.10: 49.6}.items():
        assert round(100 * r_train(n_poison_for(9469, p), counts["train"][6]), 1) == paper
    start = time.perf_counter()
    train = load_dataset("imagenette", root=SHARED_ZIP, image_size=32, cache_dir=tmp_path)
    test = load_dataset("imagenette", split="test", root=SHARED_ZIP, image_size=32, cache_dir=tmp_path)
    assert time.perf_counter() - start < 60
    assert train.images.shape == (9469, 32, 32, 3) and test.images.shape == (3925, 32, 32, 3)
    assert train.class_counts().tolist() == counts["train"] and train.meta["variant"] == "224px"
    assert train.meta["converted_to_rgb"] + test.meta["converted_to_rgb"] == 242
    assert set(train.meta["converted_modes"]) <= {"L"} and train.meta["files_fingerprint"]["files"] == 1
    assert 20 < train.images[::97].mean() < 235 and train.images[::97].std() > 10


# ----------------------------------------------------------------------------------------------
# a class-balanced subset (dataset.n_per_class / n_test_per_class), the rule of the CIFAR-10 loader


def _blocks(ds):
    """{class: images of that class, in dataset order}."""
    return {c: np.asarray(ds.images)[ds.labels == c] for c in range(10)}


def test_subset_is_balanced_and_the_seeded_choice_of_each_class(tiny_zip, tmp_path):
    cache = tmp_path / "cache"
    full = load_dataset("imagenette", root=tiny_zip, image_size=16, cache_dir=cache)
    for split, n, per_class in (("train", 2, 3), ("test", 1, 2)):
        whole = full if split == "train" else load_dataset("imagenette", split="test", root=tiny_zip, image_size=16,
                                                           cache_dir=cache)
        ds = load_dataset("imagenette", split=split, root=tiny_zip, image_size=16, seed=5, n_per_class=n,
                          cache_dir=cache)
        assert ds.class_counts().tolist() == [n] * 10 and ds.labels.tolist() == sorted(ds.labels.tolist())
        assert ds.meta["n_per_class"] == n and ds.meta["subset_seed"] == 5
        for c, block in _blocks(ds).items():
            keep = imagenette.subset_positions(per_class, n, 5, split, c)
            rng = np.random.default_rng([5, imagenette.IMAGENETTE_STREAM, ("train", "test").index(split), c])
            assert keep.tolist() == sorted(rng.permutation(per_class)[:n].tolist())
            np.testing.assert_array_equal(block, _blocks(whole)[c][keep])  # the chosen files, decoded alike
    assert full.meta["n_per_class"] is None and full.meta["subset_seed"] is None


def test_subset_is_deterministic_and_its_cache_keys_on_the_chosen_images(tiny_zip, tmp_path):
    a = load_dataset("imagenette", root=tiny_zip, image_size=16, seed=3, n_per_class=2, cache_dir=tmp_path / "a")
    b = load_dataset("imagenette", root=tiny_zip, image_size=16, seed=3, n_per_class=2, cache_dir=tmp_path / "b")
    np.testing.assert_array_equal(a.images, b.images)
    assert Path(a.meta["cache"]).name == Path(b.meta["cache"]).name and "-2pc-" in Path(a.meta["cache"]).name
    with zipfile.ZipFile(tiny_zip) as zf:
        zf.extractall(tmp_path / "extracted")
    folder = load_dataset("imagenette", root=tmp_path / "extracted", image_size=16, seed=3, n_per_class=2,
                          cache_dir=tmp_path / "a")
    np.testing.assert_array_equal(folder.images, a.images)  # the same pictures from either source
    stems = {Path(load_dataset("imagenette", root=tiny_zip, image_size=16, seed=s, n_per_class=n,
                               cache_dir=tmp_path / "a").meta["cache"]).name for s, n in ((3, 2), (4, 2), (3, 1), (3, 3))}
    assert len(stems) == 4  # another seed or size: another cache file (3 of 3 per class too: a subset's key)
    whole = load_dataset("imagenette", root=tiny_zip, image_size=16, cache_dir=tmp_path / "a")
    assert Path(whole.meta["cache"]).name not in stems and "pc-" not in Path(whole.meta["cache"]).name
    # null keeps the cache key the whole split had before subsets existed
    names, labels = expected("train")[2], expected("train")[0].tolist()
    content = real.files_fingerprint([tiny_zip], tiny_zip.parent)
    key = real.fingerprint_of([real.CACHE_VERSION, "imagenette", "zip", "train", 16, "center_crop",
                               *["imagenette2-224/" + n for n in names], *labels, content["listing_sha256"],
                               content["content_sha256"]])
    assert Path(whole.meta["cache"]).name == f"imagenette-train-16px-center_crop-{key}.images.npy"


def test_subsets_are_nested():
    for split in ("train", "test"):
        for c in range(10):
            small, large = (set(imagenette.subset_positions(900, n, 0, split, c).tolist()) for n in (30, 300))
            assert len(small) == 30 and small < large
    assert imagenette.subset_positions(5, None, 0, "train", 0).tolist() == list(range(5))
    seeds = {tuple(imagenette.subset_positions(900, 30, s, "train", 6)) for s in range(3)}
    splits = {tuple(imagenette.subset_positions(900, 30, 0, sp, 6)) for sp in ("train", "test")}
    assert len(seeds) == 3 and len(splits) == 2


def test_subset_nested_on_the_files(tiny_zip, tmp_path):
    one, two = (load_dataset("imagenette", root=tiny_zip, image_size=16, n_per_class=n, cache_dir=tmp_path)
                for n in (1, 2))
    for c in range(10):
        assert any(np.array_equal(_blocks(one)[c][0], img) for img in _blocks(two)[c])


def test_too_large_or_bad_subsets_are_refused(tiny_zip, tmp_path):
    from bibad_utils.config import load_profile

    section = {"name": "imagenette", "root": str(tiny_zip), "image_size": 16, "n_per_class": 2,
               "n_test_per_class": 1, "options": None}
    cfg = load_profile("smoke", {"dataset": section, "target": 6})
    train, test = dataset_from_config(cfg["dataset"], "train"), dataset_from_config(cfg["dataset"], "test")
    assert len(train) == 20 and len(test) == 10
    for key, split, value in (("n_per_class", "train", 4), ("n_test_per_class", "test", 3)):
        too_many = load_profile("smoke", {"dataset": {**section, key: value}, "target": 6})
        with pytest.raises(ConfigError) as err:
            dataset_from_config(too_many["dataset"], split)  # more than this copy's classes hold
        assert err.value.param == f"dataset.{key}" and err.value.value == value and "at most" in str(err.value)
    for key, value in (("n_per_class", 859), ("n_test_per_class", 358), ("n_per_class", 0)):
        with pytest.raises(ConfigError) as err:  # more than the official split's smallest class: at load time
            load_profile("smoke", {"dataset": {**section, key: value}, "target": 6})
        assert err.value.param == f"dataset.{key}"
    with pytest.raises(ConfigError) as err:
        load_profile("smoke", {"dataset": section, "target": 6, "ratios": [0.95]})  # 19 > 18 non-target images
    assert err.value.param == "ratios[0]"
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ConfigError) as err:
            load_dataset("imagenette", root=tiny_zip, image_size=16, n_per_class=bad, cache_dir=tmp_path)
        assert err.value.param == "n_per_class"
