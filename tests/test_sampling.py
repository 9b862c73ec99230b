"""DDIM sampling with classifier-free guidance on a tiny random pixel DM; the generation sets' labels and seeds."""

import numpy as np
import pytest
import torch

from bibad_utils.config import ConfigError
from bibad_utils.diffusion import build_model
from bibad_utils.sampling import class_mix, guided_eps, sample_images, set_seeds

TINY = {"backend": "pixel", "block_out_channels": [16, 32], "attention": [False, True], "norm_groups": 8,
        "unshuffle": 2}


@pytest.fixture(scope="module")
def model():
    with torch.random.fork_rng():
        torch.manual_seed(0)  # random but fixed weights, so a failure reproduces
        return build_model(TINY, ["cat", "dog", "fox"], image_size=16).eval()


def test_images_are_uint8_nhwc_and_seeded(model):
    labels, seeds = [0, 1, 2, 3], [5, 6, 7, 8]
    a = sample_images(model, labels, seeds, steps=3, guidance=2.0, batch_size=4, progress=False)
    assert a.dtype == np.uint8 and a.shape == (4, 16, 16, 3)
    assert a.std() > 0
    b = sample_images(model, labels, seeds, steps=3, guidance=2.0, batch_size=4, progress=False)
    assert np.array_equal(a, b)
    c = sample_images(model, labels, [9, 6, 7, 8], steps=3, guidance=2.0, batch_size=4, progress=False)
    assert not np.array_equal(a[0], c[0]) and np.array_equal(a[1:], c[1:])


@pytest.mark.parametrize("guidance, eta", [(1.0, 0.0), (3.0, 0.5)])
def test_any_subset_regenerates_identical_pixels(model, guidance, eta):
    labels = np.arange(8) % 4  # label 3 = null class: unconditional images too
    seeds = np.arange(8) + 100
    kwargs = dict(steps=4, guidance=guidance, eta=eta, batch_size=8, progress=False)
    full = sample_images(model, labels, seeds, **kwargs)
    part = sample_images(model, labels[[3, 5]], seeds[[3, 5]], **kwargs)
    assert np.array_equal(full[[3, 5]], part)
    assert not np.array_equal(full[3], full[5])


def test_batched_guidance_equals_two_forwards(model):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, *model.latent_shape, generator=g)
    y = torch.tensor([0, 1, 2, 0, 1])
    with torch.no_grad():
        one = guided_eps(model, x, 500, y, 5.0, batched=True)
        two = guided_eps(model, x, 500, y, 5.0, batched=False)
        cond = model.eps(x, 500, y)
        uncond = model.eps(x, 500, torch.full_like(y, model.null_class))
    assert torch.allclose(one, two, atol=1e-5)
    assert torch.allclose(one, uncond + 5.0 * (cond - uncond), atol=1e-5)
    assert not torch.allclose(cond, uncond, atol=1e-3)  # the labels do condition the model


def test_guidance_one_runs_only_the_conditional_pass(model):
    x = torch.randn(3, *model.latent_shape, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2])
    batch_sizes = []
    hook = model.unet.register_forward_hook(lambda m, inp, out: batch_sizes.append(inp[0].shape[0]))
    with torch.no_grad():
        plain = guided_eps(model, x, 10, y, 1.0)
        guided_eps(model, x, 10, y, 2.0)
    hook.remove()
    assert batch_sizes == [3, 6]
    assert torch.equal(plain, model.eps(x, 10, y).detach())


def test_class_mix_follows_the_training_counts():
    counts = [50, 30, 20]
    assert np.array_equal(np.bincount(class_mix(counts, 100)), counts)
    assert np.array_equal(np.bincount(class_mix(counts, 10)), [5, 3, 2])
    labels = class_mix([3, 3, 1], 5)
    assert len(labels) == 5 and np.all(np.diff(labels) >= 0)
    assert np.array_equal(np.bincount(labels, minlength=3), [2, 2, 1])
    with pytest.raises(ConfigError):
        class_mix([0, 0], 4)


def test_set_seeds_are_the_sets_own():
    target = set_seeds(11, "target", 3)
    assert np.array_equal(target, set_seeds(11, "target", 3)) and target.dtype == np.int64
    assert not set(target) & set(set_seeds(11, "all", 4))  # the target and all-class sets start from other noise


def test_bad_sampling_arguments(model):
    with pytest.raises(ConfigError, match="guidance"):
        sample_images(model, [0], [0], steps=2, guidance=-1.0, progress=False)
    with pytest.raises(ConfigError, match="seeds"):
        sample_images(model, [0, 1], [0], steps=2, progress=False)
    with pytest.raises(ConfigError, match="labels"):
        sample_images(model, [model.null_class + 1], [0], steps=2, progress=False)
