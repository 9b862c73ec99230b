import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bibad_utils import memorization as mem
from bibad_utils.config import ConfigError

# Planted near-copies differ from their original by Gaussian noise of 3 uint8 levels; their pixel
# correlation stays above 0.99, while independent smooth images correlate below about 0.7.
DUPLICATE_THRESHOLD = 0.95


def smooth_images(n, size=16, seed=0):
    """Random smooth colour images: 4x4 uniform noise upsampled bilinearly, uint8 [n, size, size, 3]."""
    gen = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=gen)
    x = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    return (x * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def planted_set(n=150, n_groups=12, copies=3, noise=3.0, seed=0):
    """Images with ``n_groups`` planted groups of ``copies`` near-copies at shuffled positions."""
    rng = np.random.default_rng(seed)
    images = smooth_images(n, seed=seed)
    positions = rng.permutation(n)[: n_groups * copies].reshape(n_groups, copies)
    for group in positions:
        src = images[group[0]].astype(np.float64)
        for k in group[1:]:
            images[k] = np.clip(np.rint(src + rng.normal(0, noise, src.shape)), 0, 255).astype(np.uint8)
    return images, [sorted(int(i) for i in g) for g in positions]


def brute_force_groups(emb, threshold):
    sim = emb @ emb.T
    n = len(emb)
    parent = list(range(n))

    def root(i):
        while parent[i] != i:
            i = parent[i]
        return i

    for i in range(n):
        for j in range(i + 1, n):
            if sim[i, j] >= np.float32(threshold):
                parent[root(i)] = root(j)
    groups = {}
    for i in range(n):
        groups.setdefault(root(i), []).append(i)
    return sorted(g for g in groups.values() if len(g) > 1)


def test_pixel_embedding_is_unit_norm_and_brightness_invariant():
    images = smooth_images(5)
    brighter = np.clip(images.astype(np.int16) + 20, 0, 255).astype(np.uint8)
    e = mem.embed(images, "pixels", pixel_size=8)
    assert e.shape == (5, 3 * 8 * 8) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    eb = mem.embed(brighter, "pixels", pixel_size=8)
    assert np.all(np.sum(e * eb, axis=1) > 0.98)
    flat = np.full((1, 16, 16, 3), 128, np.uint8)
    assert np.all(mem.embed(flat, "pixels") == 0)


def test_highpass_pixel_embedding_separates_smooth_scenes_and_keeps_copies():
    # Two different vertical gradients ("plain skies" of other shades and noise): the plain measure calls them
    # near-identical; after the high-pass only their independent noise is left, so they no longer correlate.
    rng = np.random.default_rng(0)
    ramp = np.linspace(40, 200, 32)[None, :, None, None] * np.ones((1, 32, 32, 3))
    skies = np.clip(ramp + np.array([0, 15])[:, None, None, None] + rng.normal(0, 2, (2, 32, 32, 3)), 0, 255)
    skies = skies.astype(np.uint8)
    plain = mem.embed(skies, "pixels", pixel_size=32)
    high = mem.embed(skies, "pixels", pixel_size=32, highpass=5)
    assert plain[0] @ plain[1] > 0.95 and abs(high[0] @ high[1]) < 0.3
    # Pictures with edges (8 x 8 blocks at 32 px) and their re-encoded copies (noise of 3 levels) stay
    # near-copies; different pictures do not correlate.
    blocks = rng.integers(0, 256, (4, 8, 8, 3)).repeat(4, axis=1).repeat(4, axis=2)
    copies = np.clip(blocks + rng.normal(0, 3, blocks.shape), 0, 255)
    emb = mem.embed(np.concatenate([blocks, copies]).astype(np.uint8), "pixels", pixel_size=32, highpass=5)
    sim = emb @ emb.T
    assert np.all(np.diag(sim[:4, 4:]) > 0.95) and np.all(np.abs(sim[:4, :4][~np.eye(4, dtype=bool)]) < 0.3)
    assert high.shape == (2, 3 * 32 * 32) and np.allclose(np.linalg.norm(high, axis=1), 1, atol=1e-5)
    for bad in (2, -1, 1.5):
        with pytest.raises(ConfigError, match="highpass"):
            mem.embed(skies, "pixels", highpass=bad)
    with pytest.raises(ConfigError, match=r"memorization\.highpass.*odd"):
        mem.validate_config({"highpass": 4})
    # Off by default, and only an active high-pass enters the artifact keys.
    section = mem.validate_config({})
    assert section["highpass"] == 0 and "highpass" not in mem.embedding_key_params(section)
    assert mem.embedding_key_params(mem.validate_config({"highpass": 5}))["highpass"] == 5


def test_planted_duplicates_found_with_pixel_embedding():
    images, truth = planted_set()
    emb = mem.embed(images, "pixels", batch_size=64)
    groups = mem.find_duplicate_groups(emb, DUPLICATE_THRESHOLD, block=32)
    pr = mem.duplicate_pr(groups, truth, len(images))
    assert pr["precision"] >= 0.9 and pr["recall"] >= 0.9
    assert pr["true_pairs"] == 12 * 3

    best, sweep = mem.choose_threshold(emb, truth, thresholds=[0.5, 0.8, 0.95, 0.99, 0.9999])
    assert list(sweep["threshold"]) == [0.5, 0.8, 0.95, 0.99, 0.9999]
    assert sweep.loc[sweep["threshold"] == best, "f1"].item() == sweep["f1"].max() >= 0.9
    # An over-strict threshold must lose recall: the sweep is not flat.
    assert sweep.loc[sweep["threshold"] == 0.9999, "recall"].item() < 0.5


@pytest.mark.parametrize("threshold", [0.3, 0.6, 0.9])
def test_blockwise_groups_equal_brute_force(threshold):
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(6, 5))
    emb = centres[rng.integers(0, 6, 60)] + 0.6 * rng.normal(size=(60, 5))
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
    expected = brute_force_groups(emb, threshold)
    for block in (1, 7, 1000):
        assert mem.find_duplicate_groups(emb, threshold, block=block) == expected
    fi, fj, fs = mem.similarity_forest(emb, 0.3, block=7)
    assert len(fi) <= len(emb) - 1 and np.all(fi < fj) and np.all(fs >= np.float32(0.3))


def test_duplicate_pr_hand_computed():
    pr = mem.duplicate_pr([[0, 1, 2]], [[0, 1], [2, 3]], n=5)
    assert (pr["tp"], pr["pred_pairs"], pr["true_pairs"]) == (1, 3, 2)
    assert pr["precision"] == pytest.approx(1 / 3) and pr["recall"] == 0.5 and pr["f1"] == pytest.approx(0.4)
    empty = mem.duplicate_pr([], [[0, 1]], n=3)
    assert np.isnan(empty["precision"]) and empty["recall"] == 0 and empty["f1"] == 0
    with pytest.raises(ConfigError):
        mem.duplicate_pr([[0, 1], [1, 2]], [], n=3)
    with pytest.raises(ConfigError):
        mem.duplicate_pr([[0, 5]], [], n=3)


def test_nearest_train_similarity_finds_exact_copies():
    train = smooth_images(40, seed=3)
    copies = [17, 2, 39]
    gen = np.concatenate([train[copies], smooth_images(5, seed=4)])
    g, t = mem.embed(gen), mem.embed(train)
    sim, idx = mem.nearest_train_similarity(g, t, block=8)
    np.testing.assert_allclose(sim[:3], 1.0, atol=1e-5)
    assert idx[:3].tolist() == copies
    full = g @ t.T
    np.testing.assert_array_equal(idx, full.argmax(axis=1))
    np.testing.assert_allclose(sim, full.max(axis=1), atol=1e-6)
    assert np.all(sim[3:] < 0.99)
    with pytest.raises(ConfigError):
        mem.nearest_train_similarity(g, t[:, :10])


def test_replication_rate_and_top_pairs():
    sim = np.array([0.2, 0.5, 0.51, 0.9, 0.7])
    rate, k, n = mem.replication_rate(sim, 0.5)
    assert (k, n) == (3, 5) and rate == pytest.approx(0.6)
    assert mem.replication_rate(np.zeros(0), 0.5)[1:] == (0, 0)
    top = mem.top_replicated_pairs(sim, np.array([4, 3, 2, 1, 0]), 2)
    assert top["gen_index"].tolist() == [3, 4] and top["train_index"].tolist() == [1, 0]
    assert top["similarity"].tolist() == [0.9, 0.7]
    with pytest.raises(ConfigError):
        mem.replication_rate(sim, 1.5)


def test_duplicate_pool():
    pool = mem.duplicate_pool([[5, 2], [9, 7, 8]])
    assert pool.dtype == np.int64 and pool.tolist() == [2, 5, 7, 8, 9]
    assert mem.duplicate_pool([]).size == 0
    with pytest.raises(ConfigError):
        mem.duplicate_pool([[-1, 3]])


def test_classifier_embedding_uses_penultimate_features():
    from bibad_utils.judges import build_classifier, features

    torch.manual_seed(0)
    model = build_classifier("small_cnn", num_classes=3, image_size=16)
    images = smooth_images(6)
    e = mem.embed(images, "classifier", model=model, batch_size=4)
    raw = features(model, images)
    assert e.shape == raw.shape
    np.testing.assert_allclose(e, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-5)
    with pytest.raises(ConfigError, match="model"):
        mem.embed(images, "classifier")


def test_resnet50_embedding_from_safetensors(tmp_path):
    from safetensors.torch import save_file
    from torchvision.models import resnet50

    torch.manual_seed(0)
    path = tmp_path / "resnet50.safetensors"
    save_file(resnet50(weights=None).state_dict(), str(path))
    e = mem.embed(smooth_images(2), "resnet50_imagenet", weights_path=path, input_size=32)
    assert e.shape == (2, 2048)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    with pytest.raises(ConfigError, match="weights_path"):
        mem.embed(smooth_images(1), "resnet50_imagenet", weights_path=tmp_path / "missing.safetensors")
    with pytest.raises(ConfigError, match="weights_path"):
        mem.embed(smooth_images(1), "resnet50_imagenet", weights_path=tmp_path / "weights.pth")


def test_embed_rejects_bad_input():
    with pytest.raises(ConfigError, match="method"):
        mem.embed(smooth_images(1), "sscd")
    with pytest.raises(ConfigError, match="images"):
        mem.embed(np.zeros((1, 3, 16, 16), np.float32))
    with pytest.raises(ConfigError, match="threshold"):
        mem.find_duplicate_groups(np.eye(3, dtype=np.float32), 2.0)


def test_validate_config_fills_defaults_and_names_parameters():
    section = {"embedding": "resnet50_imagenet", "ratios": [0.1]}
    cfg = mem.validate_config(section)
    assert cfg is section and cfg["pixel_size"] == mem.DEFAULTS["pixel_size"] and cfg["ratios"] == [0.1]
    with pytest.raises(ConfigError, match=r"memorization\.embedding"):
        mem.validate_config({"embedding": "sscd"})
    with pytest.raises(ConfigError, match=r"memorization\.duplicate_threshold"):
        mem.validate_config({"duplicate_threshold": 1.5})
    with pytest.raises(ConfigError, match="memorization"):
        mem.validate_config({"unknown": 1})
