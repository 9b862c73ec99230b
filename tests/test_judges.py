"""Judges trained for real on tiny synthetic data: coloured squares (one colour per class) on a dim
noisy background, and a bright bottom-right corner patch as the trigger."""

import math

import numpy as np
import pytest
import torch

from bibad_utils import judges
from bibad_utils.config import ConfigError
from bibad_utils.data import to_float
from bibad_utils.judges.profile import JUDGES

SIZE = 16
PALETTE = np.array([[230, 30, 30], [30, 200, 30], [40, 60, 230], [220, 210, 40]], np.uint8)


class ColourSquares:
    """Stand-in dataset with the project's dataset interface (labels, class_names, batch, images_uint8)."""

    def __init__(self, n, num_classes=3, size=SIZE, seed=0):
        rng = np.random.default_rng(seed)
        self.labels = rng.integers(0, num_classes, n).astype(np.int64)
        self.class_names = ["red", "green", "blue", "yellow"][:num_classes]
        imgs = rng.integers(0, 90, (n, size, size, 3)).astype(np.uint8)
        for i, c in enumerate(self.labels):
            side = rng.integers(size // 3, size // 2 + 1)
            r, q = rng.integers(0, size - side - 2, 2)
            imgs[i, r:r + side, q:q + side] = PALETTE[c]
        self.images = imgs

    def __len__(self):
        return len(self.labels)

    def images_uint8(self, indices):
        return self.images[indices]

    def batch(self, indices):
        return to_float(self.images[indices]), torch.from_numpy(self.labels[indices])


class CornerPatch:
    """Stand-in trigger: a white 3x3 square in the bottom-right corner."""

    def apply(self, x):
        y = x.clone()
        y[..., -3:, -3:] = 1.0
        return y


TRAIN = ColourSquares(200, seed=0)
TEST = ColourSquares(120, seed=1)
FAST = dict(epochs=2, batch_size=32, lr=3e-3, progress=False)


@pytest.fixture(scope="module")
def small_cnn():
    return judges.train_classifier(TRAIN, arch="small_cnn", seed=0, **FAST)


def test_small_cnn_learns_colours(small_cnn):
    model, history = small_cnn
    assert [h["epoch"] for h in history] == [1, 2]
    assert history[-1]["loss"] < history[0]["loss"]
    res = judges.evaluate_judge(model, TEST)
    assert res["n"] == 120 and res["n_correct"] == round(res["accuracy"] * 120)
    assert res["accuracy"] > 0.9, res
    assert res["accuracy_lo"] <= res["accuracy"] <= res["accuracy_hi"]
    assert model.config["class_names"] == TRAIN.class_names


def test_resnet18_learns_colours():
    # ResNet-18 is slow on one CPU thread even at 16 px: 64 images, 8 steps.
    model, _ = judges.train_classifier(TRAIN.images[:64], TRAIN.labels[:64], arch="resnet18", seed=0,
                                       **dict(FAST, batch_size=16))
    # CIFAR-style stem for small images.
    assert model.backbone.conv1.stride == (1, 1) and isinstance(model.backbone.maxpool, torch.nn.Identity)
    assert judges.evaluate_judge(model, TEST)["accuracy"] > 0.9


def test_trigger_detector_finds_corner_patch():
    det = judges.train_trigger_detector(TRAIN, CornerPatch(), exclude_class=0, arch="small_cnn", seed=0, **FAST)
    assert det.config["kind"] == "trigger_detector" and det.meta["trained_on"] == int((TRAIN.labels != 0).sum())
    res = judges.evaluate_judge(det, TEST, trigger=CornerPatch(), exclude_class=0)
    n = int((TEST.labels != 0).sum())
    assert res["n_clean"] == res["n_triggered"] == n
    assert res["accuracy"] == pytest.approx(1 - (res["false_positives"] + res["false_negatives"]) / (2 * n))
    assert res["fpr"] == res["false_positives"] / n and res["fnr"] == res["false_negatives"] / n
    assert res["accuracy"] > 0.95, res
    # The same decisions from predict on raw uint8 images: patch present -> class 1.
    nontarget = TEST.images[TEST.labels != 0]
    pred_clean, probs = judges.predict(det, nontarget)
    pred_trig, _ = judges.predict(det, CornerPatch().apply(to_float(nontarget)))
    assert probs.shape == (n, 2) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert (int(pred_clean.sum()), int((pred_trig == 0).sum())) == (res["false_positives"], res["false_negatives"])


def test_predict_accepts_every_input_form(small_cnn):
    model, _ = small_cnn
    idx = np.arange(10)
    p_uint8, pr_uint8 = judges.predict(model, TEST.images[idx], batch_size=4)
    p_float, pr_float = judges.predict(model, to_float(TEST.images[idx]))
    p_tensor, _ = judges.predict(model, torch.from_numpy(TEST.images[idx]))
    p_ds, pr_ds = judges.predict(model, TEST)
    assert p_uint8.dtype == np.int64 and pr_uint8.dtype == np.float32
    np.testing.assert_array_equal(p_uint8, p_float)
    np.testing.assert_array_equal(p_uint8, p_tensor)
    np.testing.assert_allclose(pr_uint8, pr_float, atol=1e-6)
    np.testing.assert_allclose(pr_ds[:10], pr_uint8, atol=1e-6)
    f = judges.features(model, TEST.images[idx])
    assert f.shape == (10, 128) and f.dtype == np.float32
    with pytest.raises(ConfigError):
        judges.predict(model, TEST.images[idx].astype(np.float32))


def test_save_load_round_trip(small_cnn, tmp_path):
    model, _ = small_cnn
    judges.save_classifier(model, tmp_path / "clf", meta={"dataset": "colour squares"})
    loaded = judges.load_classifier(tmp_path / "clf")
    assert loaded.config == model.config
    assert loaded.meta["dataset"] == "colour squares" and len(loaded.meta["history"]) == 2
    p0, pr0 = judges.predict(model, TEST)
    p1, pr1 = judges.predict(loaded, TEST)
    np.testing.assert_array_equal(p0, p1)
    np.testing.assert_array_equal(pr0, pr1)
    np.testing.assert_array_equal(judges.features(model, TEST.images[:8]), judges.features(loaded, TEST.images[:8]))
    with pytest.raises(ConfigError):
        judges.load_classifier(tmp_path / "missing")


def test_same_seed_same_weights_and_arrays_equal_dataset(small_cnn):
    model, history = small_cnn
    # Same data given as (uint8 array, labels) and the same seed: identical training.
    again, history2 = judges.train_classifier(TRAIN.images, TRAIN.labels, arch="small_cnn", seed=0, **FAST)
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k
    assert [h["loss"] for h in history] == [h["loss"] for h in history2]
    other, _ = judges.train_classifier(TRAIN, arch="small_cnn", seed=1, **dict(FAST, epochs=1))
    assert not torch.equal(other.head.weight, model.head.weight)


def test_training_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    judges.train_classifier(TRAIN.images[:8], TRAIN.labels[:8], arch="small_cnn", seed=5,
                            epochs=1, batch_size=4, lr=1e-3, progress=False)
    assert torch.equal(torch.rand(3), expected)


def test_augmentation_translates_and_keeps_corner_patch():
    gen = torch.Generator().manual_seed(0)
    x = CornerPatch().apply(torch.full((64, 3, 32, 32), -1.0))
    out = judges.augment_batch(x, gen, crop_pad=32 // 32, hflip=False)
    assert out.shape == x.shape
    # A shift by at most 1 px of a 3 px patch leaves a 2x2 white block in the bottom-right corner.
    assert (out[..., -2:, -2:] == 1).all()
    shifted = judges.augment_batch(x, torch.Generator().manual_seed(0), crop_pad=1, hflip=True)
    flipped = (shifted[..., -2:, :2] == 1).flatten(1).all(1)
    assert 0 < flipped.sum() < 64  # a flip moves the patch to the bottom-left corner: off by default.


def test_photometric_augmentation_is_seeded_bounded_and_off_by_default():
    x = CornerPatch().apply(torch.zeros(16, 3, 32, 32))
    plain = judges.augment_batch(x, torch.Generator().manual_seed(0), crop_pad=0, hflip=False,
                            photometric={"color_jitter": 0.0, "blur": 0.0, "noise": 0.0})
    assert torch.equal(plain, x)
    strong = {"color_jitter": 0.4, "blur": 1.0, "noise": 0.25}
    a = judges.augment_batch(x, torch.Generator().manual_seed(0), 0, False, strong)
    b = judges.augment_batch(x, torch.Generator().manual_seed(0), 0, False, strong)
    assert torch.equal(a, b) and a.min() >= -1 and a.max() <= 1
    changed = (a - x).abs().flatten(1).amax(1)
    assert (changed > 0).all()  # every image is corrupted, each by its own draw
    assert len(set(changed.round(decimals=4).tolist())) > 8
    # the corner patch survives (it is what the detector must still see): brighter than the grey field
    assert (a[..., -2:, -2:].mean((1, 2, 3)) > a[..., :8, :8].mean((1, 2, 3))).all()


def test_photometric_judge_recognises_corrupted_images():
    """A classifier trained with photometric augmentation still learns, records its settings, and is
    more accurate on noisy, blurred test images than one trained without."""
    noisy = TEST.images.astype(np.float32) + np.random.default_rng(0).normal(0, 60, TEST.images.shape)
    noisy = np.clip(noisy, 0, 255).astype(np.uint8)
    accs = []
    for strength in (0.0, 0.5):
        model, _ = judges.train_classifier(TRAIN, arch="small_cnn", seed=0, noise=strength,
                                           color_jitter=strength / 2, **FAST)
        assert model.meta["noise"] == strength
        accs.append(judges.evaluate_judge(model, noisy, TEST.labels)["accuracy"])
    assert accs[1] >= accs[0]


def test_input_size_resizes():
    model = judges.build_classifier("small_cnn", 3, image_size=32, input_size=16)
    x = torch.zeros(2, 3, 32, 32)
    assert model.preprocess(x).shape == (2, 3, 16, 16)
    assert model(x).shape == (2, 3)


def test_bad_inputs_raise_config_error():
    with pytest.raises(ConfigError, match="judges.arch"):
        judges.build_classifier("vgg", 3, 16)
    with pytest.raises(ConfigError, match="judges.pretrained"):
        judges.build_classifier("small_cnn", 3, 16, pretrained=True)
    with pytest.raises(ConfigError, match="labels"):
        judges.train_classifier(TRAIN.images, arch="small_cnn", seed=0, **FAST)
    with pytest.raises(ConfigError, match="judges.epochs"):
        judges.train_classifier(TRAIN, arch="small_cnn", seed=0, **dict(FAST, epochs=0))
    with pytest.raises(ConfigError, match="trigger"):
        judges.train_trigger_detector(TRAIN, object(), arch="small_cnn", seed=0, **FAST)


def test_pretrained_without_weights_says_how_to_provide_them(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match=r"judges.pretrained.*resnet50-.*\.pth"):
        judges.build_classifier("resnet50", 10, 224, pretrained=True)


def test_validate_judges():
    ok = {"arch": "resnet18", "epochs": 5, "batch_size": 128, "lr": 1e-3, "pretrained": False}
    assert JUDGES.validate(ok) == ok
    for bad in ({**ok, "arch": "vit"}, {**ok, "epochs": 0}, {**ok, "colour": 1}, {"arch": "resnet18"},
                {**ok, "optimizer": "adam"}, {**ok, "pretrained": "yes"}, {**ok, "noise": 1.5},
                {**ok, "blur": True}):
        with pytest.raises(ConfigError, match="judges"):
            JUDGES.validate(bad)


def test_evaluate_classifier_counts_per_class(small_cnn):
    model, _ = small_cnn
    res = judges.evaluate_judge(model, TEST.images[:30], TEST.labels[:30])
    pred, _ = judges.predict(model, TEST.images[:30])
    assert res["n_correct"] == int((pred == TEST.labels[:30]).sum())
    assert len(res["per_class_accuracy"]) == 3
    assert all(math.isnan(a) or 0 <= a <= 1 for a in res["per_class_accuracy"])
