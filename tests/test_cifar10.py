"""CIFAR-10 from local files: a zip of JPEGs, an extracted folder, the official binary version; the
class-balanced subset; no network and no pickle. Every source is built here, tiny; one test reads the
offline copy beside the project when it is there."""

import io
import pickle
import socket
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bibad_utils.config import ConfigError
from bibad_utils.data import cifar10, dataset_fingerprint, dataset_from_config, load_dataset, real

CLASSES = cifar10.CIFAR10_CLASSES
PER_CLASS = {"train": 6, "test": 3}
SHARED_ZIP = Path(__file__).resolve().parents[2] / "shared" / "data" / cifar10.CIFAR10_ZIP


@pytest.fixture(autouse=True)
def own_data_root(tmp_path, monkeypatch):
    """The default cache folder (under the data root) is this test's own."""
    monkeypatch.setenv("BIBAD_DATA_ROOT", str(tmp_path / "data-root"))


def colour(label: int, k: int) -> tuple:
    """A flat colour naming (class, position in the class): survives JPEG within a few levels."""
    return (20 * label + 10, 30 * k + 15, 200 - 15 * label)


def records(split: str):
    """(uint8 [N, 32, 32, 3] images, labels) in a batch order where classes are interleaved: record r
    has label (3 r) % 10, and the k-th record of a class shows colour(label, k)."""
    n = PER_CLASS[split] * 10
    labels = np.array([(3 * r) % 10 for r in range(n)], np.uint8)
    seen = np.zeros(10, int)
    images = np.zeros((n, 32, 32, 3), np.uint8)
    for r, c in enumerate(labels):
        images[r] = colour(int(c), int(seen[c]))
        seen[c] += 1
    return images, labels


def write_binary(folder: Path) -> Path:
    """The official binary layout: 5 training batches and 1 test batch of (label, CHW pixels) records."""
    folder.mkdir(parents=True)
    for split, files in cifar10.CIFAR10_BINARY_FILES.items():
        images, labels = records(split)
        rec = np.concatenate([labels[:, None], images.transpose(0, 3, 1, 2).reshape(len(labels), -1)], 1)
        for f, part in zip(files, np.array_split(rec, len(files))):
            part.astype(np.uint8).tofile(folder / f)
    return folder


def jpeg(colour_or_image) -> bytes:
    arr = np.asarray(colour_or_image, np.uint8)
    if arr.ndim == 1:
        arr = np.broadcast_to(arr, (32, 32, 3))
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def write_zip(path: Path) -> Path:
    """The offline copy's layout: cifar10/{train,test}/<class>/NNNN.jpg with directory entries and one
    file that is not an image."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("cifar10/", b"")
        zf.writestr("cifar10/README.txt", b"not an image")
        for split, n in PER_CLASS.items():
            for label, name in enumerate(CLASSES):
                zf.writestr(f"cifar10/{split}/{name}/", b"")
                for k in reversed(range(n)):  # archive order is not file order
                    zf.writestr(f"cifar10/{split}/{name}/{k:04d}.jpg", jpeg(colour(label, k)))
    return path


@pytest.fixture
def tiny_zip(tmp_path):
    return write_zip(tmp_path / cifar10.CIFAR10_ZIP)


@pytest.fixture
def tiny_binary(tmp_path):
    return write_binary(tmp_path / "bin-root" / cifar10.CIFAR10_BINARY_DIR)


def expected(split: str):
    """Labels and colours of the whole split in the loaders' order: class by class, file order."""
    labels = np.repeat(np.arange(10), PER_CLASS[split])
    colours = np.array([colour(c, k) for c in range(10) for k in range(PER_CLASS[split])])
    return labels, colours


def test_zip_layout_labels_and_class_order(tiny_zip, tmp_path):
    ds = load_dataset("cifar10", split="train", root=tiny_zip, cache_dir=tmp_path / "cache")
    labels, colours = expected("train")
    assert ds.class_names == list(CLASSES) and ds.class_names[4] == "deer" and ds.meta["target"] == 4
    assert ds.images.shape == (60, 32, 32, 3) and ds.images.dtype == np.uint8
    assert ds.labels.tolist() == labels.tolist() and ds.meta["source_format"] == "zip"
    assert np.abs(ds.images[:, 16, 16].astype(int) - colours).max() <= 3
    test = load_dataset("cifar10", split="test", root=tiny_zip.parent, cache_dir=tmp_path / "cache")
    assert len(test) == 30 and test.class_counts().tolist() == [3] * 10  # the folder holding the zip
    assert ds.prompt_for(0) == "A photo of a airplane"
    again = load_dataset("cifar10", split="train", root=tiny_zip, cache_dir=tmp_path / "cache")
    assert isinstance(again.images, np.memmap) and again.meta["cache"] == ds.meta["cache"]
    np.testing.assert_array_equal(again.images, ds.images)


def test_binary_records_in_class_order_and_equal_to_the_zip(tiny_binary, tiny_zip, tmp_path):
    ds = load_dataset("cifar10", split="train", root=tiny_binary.parent, cache_dir=tmp_path / "cache")
    labels, colours = expected("train")
    assert ds.meta["source_format"] == "binary" and ds.labels.tolist() == labels.tolist()
    np.testing.assert_array_equal(ds.images[:, 16, 16], colours)  # lossless, and the CHW records read right
    images, raw_labels = cifar10.read_binary_batches(
        [tiny_binary / f for f in cifar10.CIFAR10_BINARY_FILES["train"]])
    np.testing.assert_array_equal(images, records("train")[0])
    assert raw_labels.tolist() == records("train")[1].tolist()
    # image i is the same picture from either source, up to the JPEG loss
    from_zip = load_dataset("cifar10", split="train", root=tiny_zip, cache_dir=tmp_path / "cache")
    assert from_zip.labels.tolist() == ds.labels.tolist()
    assert np.abs(from_zip.images.astype(int) - ds.images.astype(int)).max() <= 3
    test = load_dataset("cifar10", split="test", root=tiny_binary, image_size=16, cache_dir=tmp_path / "cache")
    assert test.images.shape == (30, 16, 16, 3)
    np.testing.assert_array_equal(test.images[:, 8, 8], expected("test")[1])


def test_extracted_folder_matches_the_zip(tiny_zip, tmp_path):
    with zipfile.ZipFile(tiny_zip) as zf:
        zf.extractall(tmp_path / "extracted")
    folder = load_dataset("cifar10", split="test", root=tmp_path / "extracted", cache_dir=tmp_path / "cache",
                          num_workers=2)
    archive = load_dataset("cifar10", split="test", root=tiny_zip, cache_dir=tmp_path / "cache")
    assert folder.meta["source_format"] == "folder"
    np.testing.assert_array_equal(folder.images, archive.images)
    assert folder.labels.tolist() == archive.labels.tolist()


def test_class_balanced_subset_is_deterministic_and_nested(tiny_zip, tiny_binary, tmp_path):
    cache = tmp_path / "cache"
    a = load_dataset("cifar10", split="train", root=tiny_zip, seed=3, n_per_class=4, cache_dir=cache)
    b = load_dataset("cifar10", split="train", root=tiny_zip, seed=3, n_per_class=4, cache_dir=tmp_path / "other")
    assert a.class_counts().tolist() == [4] * 10 and a.meta["n_per_class"] == 4 and a.meta["subset_seed"] == 3
    np.testing.assert_array_equal(a.images, b.images)  # same images every run, cache or not
    # the positions kept are those of subset_positions, the same from every source
    _, colours = expected("train")
    keep = np.concatenate([c * 6 + cifar10.subset_positions(6, 4, 3, "train", c) for c in range(10)])
    assert np.abs(a.images[:, 16, 16].astype(int) - colours[keep]).max() <= 3
    binary = load_dataset("cifar10", split="train", root=tiny_binary, seed=3, n_per_class=4, cache_dir=cache)
    np.testing.assert_array_equal(binary.images[:, 16, 16], colours[keep])
    other = load_dataset("cifar10", split="train", root=tiny_zip, seed=4, n_per_class=4, cache_dir=cache)
    assert not np.array_equal(other.images, a.images) and other.meta["cache"] != a.meta["cache"]
    # a smaller subset is part of a larger one; the split has its own stream
    small, large = cifar10.subset_positions(100, 10, 0, "train", 2), cifar10.subset_positions(100, 30, 0, "train", 2)
    assert set(small) <= set(large) and list(small) == sorted(small)
    assert not np.array_equal(small, cifar10.subset_positions(100, 10, 0, "test", 2))
    with pytest.raises(ConfigError, match="n_per_class"):
        load_dataset("cifar10", split="test", root=tiny_zip, n_per_class=4, cache_dir=cache)
    with pytest.raises(ConfigError, match="n_per_class"):
        load_dataset("cifar10", root=tiny_zip, n_per_class=0, cache_dir=cache)


def test_no_network_and_no_pickle(tiny_zip, tiny_binary, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the CIFAR-10 loader must not touch the network or unpickle anything")

    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    with zipfile.ZipFile(tiny_zip) as zf:
        zf.extractall(tmp_path / "extracted")
    for root in (tiny_zip, tmp_path / "extracted", tiny_binary):
        for _ in range(2):  # built, then read back from the cache
            ds = load_dataset("cifar10", split="test", root=root, cache_dir=tmp_path / "cache", n_per_class=2)
            assert len(ds) == 20
        assert dataset_fingerprint("cifar10", root)["files"] >= 1


def test_missing_data_names_the_sources_and_never_reads_the_pickled_version(tmp_path):
    python_version = tmp_path / "cifar-10-batches-py"
    python_version.mkdir()
    (python_version / "data_batch_1").write_bytes(b"\x80\x04 pickled")
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("cifar10", root=tmp_path)
    text = str(err.value)
    for part in (cifar10.CIFAR10_ZIP, cifar10.CIFAR10_BINARY_DIR, cifar10.CIFAR10_BINARY_URL, "download=True",
                 "cifar-10-python.tar.gz", "pickles"):
        assert part in text
    assert dataset_fingerprint("cifar10", tmp_path) is None
    with pytest.raises(ConfigError, match="download"):
        load_dataset("cifar10", root=tmp_path / "absent.zip", download=True)


def test_damaged_sources_are_named(tiny_binary, tiny_zip, tmp_path):
    with (tiny_binary / "test_batch.bin").open("ab") as f:
        f.write(b"\x00" * 10)
    with pytest.raises(ConfigError, match="test_batch.bin"):
        load_dataset("cifar10", split="test", root=tiny_binary, cache_dir=tmp_path / "cache")
    (tiny_binary / "data_batch_5.bin").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_5.bin"):
        load_dataset("cifar10", root=tiny_binary, cache_dir=tmp_path / "cache")
    broken = tmp_path / "broken" / cifar10.CIFAR10_ZIP
    broken.parent.mkdir()
    with zipfile.ZipFile(tiny_zip) as src, zipfile.ZipFile(broken, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info, b"\xff\xd8\xff\xe0 not a jpeg" if info.filename.endswith("bird/0001.jpg") else data)
    with pytest.raises(real.ImageReadError, match="bird/0001.jpg"):
        load_dataset("cifar10", split="test", root=broken, cache_dir=tmp_path / "cache")
    assert not any(".tmp" in p.name for p in (tmp_path / "cache").iterdir())


def test_default_cache_is_under_the_data_root_not_beside_the_source(tiny_zip, tmp_path):
    ds = load_dataset("cifar10", split="test", root=tiny_zip, n_per_class=1)
    assert Path(ds.meta["cache"]).parent == tmp_path / "data-root" / ".bibad_cache"
    assert not (tiny_zip.parent / ".bibad_cache").exists()


def test_profile_section_with_the_zip_as_root_and_a_subset(tiny_zip, tmp_path):
    from bibad_utils.config import load_profile

    section = {"name": "cifar10", "root": str(tiny_zip), "image_size": 16, "n_per_class": 3,
               "n_test_per_class": 2, "options": None}  # null clears the procedural options of smoke
    cfg = load_profile("smoke", {"dataset": section, "target": 4})
    assert cfg["dataset"]["root"] == str(tiny_zip)
    assert cfg["dataset"]["fingerprint"] == dataset_fingerprint("cifar10", tiny_zip)
    assert cfg["dataset"]["fingerprint"]["files"] == 1
    train = dataset_from_config(cfg["dataset"], split="train", seed=0)
    test = dataset_from_config(cfg["dataset"], split="test", seed=0)
    assert train.images.shape == (30, 16, 16, 3) and test.class_counts().tolist() == [2] * 10
    for key, value in (("n_per_class", 5001), ("n_test_per_class", 1001)):
        with pytest.raises(ConfigError) as err:
            load_profile("smoke", {"dataset": {**section, key: value}, "target": 4})
        assert err.value.param == f"dataset.{key}"
    with pytest.raises(ConfigError) as err:
        load_profile("smoke", {"dataset": {**section, "root": str(tmp_path / "absent.zip")}, "target": 4})
    assert err.value.param == "dataset.root" and "zip" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_profile("smoke", {"dataset": section, "target": 4, "ratios": [0.95]})  # 28 > 27 others
    assert err.value.param == "ratios[0]"


@pytest.mark.skipif(not SHARED_ZIP.is_file(), reason="the offline CIFAR-10 copy is not beside the project")
def test_the_offline_copy_reads_quickly(tmp_path):
    start = time.perf_counter()
    ds = load_dataset("cifar10", split="test", root=SHARED_ZIP, n_per_class=1, seed=0, cache_dir=tmp_path)
    assert time.perf_counter() - start < 30
    assert ds.images.shape == (10, 32, 32, 3) and ds.labels.tolist() == list(range(10))
    assert ds.meta["source_format"] == "zip" and 20 < ds.images.mean() < 235 and ds.images.std() > 10
    assert ds.meta["files_fingerprint"]["files"] == 1


def test_pretraining_on_the_whole_split_where_the_cells_use_a_subset(tiny_zip, tmp_path):
    """pretrain.data: all pre-trains the base DM on every training image (its own data key) while the cells
    keep the subset; subset (the default) keeps the pre-training key of a profile that does not name it."""
    from bibad_utils.config import load_profile
    from bibad_utils.stages import Study

    section = {"name": "cifar10", "root": str(tiny_zip), "image_size": 16, "n_per_class": 3,
               "n_test_per_class": 2, "options": None}
    base = {"dataset": section, "target": 4, "run_dir": str(tmp_path / "run")}
    base["pretrain"] = {"steps": 2}  # smoke trains from scratch: a key needs pre-training
    subset = Study("smoke", base, progress=False)
    named = Study("smoke", {**base, "pretrain": {"steps": 2, "data": "subset"}}, progress=False)
    whole = Study("smoke", {**base, "pretrain": {"steps": 2, "data": "all"}}, progress=False)
    assert len(subset.train_set) == len(whole.train_set) == 30
    data, key = whole.pretrain_data
    assert len(data) == 60 and data.class_counts().tolist() == [6] * 10 and key != whole.data_key
    assert subset.pretrain_data[1] == subset.data_key
    assert named.pretrain_expected_key() == subset.pretrain_expected_key() != whole.pretrain_expected_key()
    assert whole.data_key == subset.data_key  # the cells' data is unchanged
    smaller = {**base, "dataset": {**section, "n_per_class": 2, "n_test_per_class": 1}, "pretrain": {"steps": 2, "data": "all"}}
    assert Study("smoke", smaller, progress=False).pretrain_expected_key() == whole.pretrain_expected_key()
    for dataset in ({**section, "n_per_class": None}, None):  # nothing to widen: the whole split already,
        over = {"pretrain": {"data": "all"}, **({"dataset": dataset, "target": 4} if dataset else {})}
        with pytest.raises(ConfigError) as err:                  # or the procedural set (no fixed split)
            load_profile("smoke", over)
        assert err.value.param == "pretrain.data" and "subset" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_profile("smoke", {**base, "pretrain": {"data": "everything"}})
    assert err.value.param == "pretrain.data"
