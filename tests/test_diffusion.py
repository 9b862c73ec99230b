"""Both diffusion backends behind one interface: pixel UNet and a tiny offline Stable Diffusion."""

import json

import numpy as np
import pytest
import torch

from bibad_utils.config import ConfigError, load_profile
from bibad_utils.diffusion import PixelDM, StableDiffusionDM, build_model, load_model, validate_config
from bibad_utils.diffusion.settings import resolve_config
from bibad_utils.sampling import sample_images
from bibad_utils.training import train_diffusion
from tiny_sd import make_tiny_sd

TINY = {"backend": "pixel", "block_out_channels": [16, 32], "attention": [False, True], "norm_groups": 8}
NAMES = ["cat", "dog", "fox"]


class Squares:
    """Stand-in for the dataset interface: a bright square whose corner encodes the class, on grey."""

    def __init__(self, n=8, size=16, num_classes=3):
        self.labels = np.arange(n, dtype=np.int64) % num_classes
        self.class_names = NAMES[:num_classes]
        self.images = np.full((n, 3, size, size), -0.5, dtype=np.float32)
        half = size // 2
        for i, k in enumerate(self.labels):
            r, c = divmod(int(k), 2)
            self.images[i, :, r * half:(r + 1) * half, c * half:(c + 1) * half] = 0.9

    def __len__(self):
        return len(self.labels)

    def batch(self, indices):
        idx = np.asarray(indices)
        return torch.from_numpy(self.images[idx].copy()), torch.from_numpy(self.labels[idx].copy())


def _fixed(fn):
    with torch.random.fork_rng():
        torch.manual_seed(0)  # random but fixed initial weights
        return fn()


@pytest.mark.parametrize("unshuffle", [1, 2])
def test_pixel_eps_shapes_and_null_class(unshuffle):
    model = _fixed(lambda: build_model({**TINY, "unshuffle": unshuffle}, NAMES, image_size=16)).eval()
    assert isinstance(model, PixelDM)
    assert model.num_classes == 3 and model.null_class == 3
    assert model.latent_shape == (3, 16, 16)
    assert model.unet.class_embedding.num_embeddings == 4
    assert model.unet.config.in_channels == 3 * unshuffle**2 and model.unet.config.sample_size == 16 // unshuffle
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cond = model.eps(x, torch.tensor([1, 10, 500, 999]), torch.tensor([0, 1, 2, 3]))
        null = model.eps(x, 500, torch.full((4,), model.null_class))
    assert cond.shape == x.shape and cond.dtype == torch.float32
    assert not torch.allclose(cond, null)
    assert torch.equal(model.encode(x), x) and model.decode(x * 3).abs().max() <= 1
    scheduler = model.noise_scheduler
    assert scheduler.config.prediction_type == "epsilon" and scheduler.config.num_train_timesteps == 1000
    assert scheduler.betas[0].item() == pytest.approx(1e-4) and scheduler.betas[-1].item() == pytest.approx(0.02)


def test_pixel_save_load_round_trip(tmp_path):
    model = _fixed(lambda: build_model({**TINY, "unshuffle": 2}, NAMES, image_size=16)).eval()
    model.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["class_names"] == NAMES and meta["model"]["image_size"] == 16
    loaded = PixelDM.load(tmp_path / "m").eval()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded.eps(x, 100, torch.tensor([0, 3])), model.eps(x, 100, torch.tensor([0, 3])))
    with pytest.raises(ConfigError, match="StableDiffusionDM"):
        StableDiffusionDM.load(tmp_path / "m")


def test_paper_cifar_preset():
    cfg = resolve_config({"backend": "pixel", "preset": "paper_cifar"})
    assert cfg["image_size"] == 32 and cfg["block_out_channels"] == [64, 128, 128, 128]
    assert cfg["attention"] == [False, True, False, False] and cfg["dropout"] == 0.1
    model = build_model({"backend": "pixel", "preset": "paper_cifar", "unshuffle": 2}, [str(i) for i in range(10)])
    down = [type(b).__name__ for b in model.unet.down_blocks]
    assert down == ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"]
    assert model.unshuffle == 2 and model.unet.class_embedding.num_embeddings == 11


@pytest.mark.parametrize("section, param", [
    ({"backend": "gan"}, "model.backend"),
    ({"backend": "pixel", "channels": [8]}, "model.channels"),
    ({**TINY, "attention": [True]}, "model.attention"),
    ({**TINY, "norm_groups": 5}, "model.norm_groups"),
    ({**TINY, "unshuffle": 3}, "model.unshuffle"),
    ({**TINY, "unshuffle": 4, "image_size": 20}, "model.image_size"),
    ({**TINY, "mixed_precision": "fp8"}, "model.mixed_precision"),
    ({"backend": "pixel", "preset": "paper_imagenet"}, "model.preset"),
    ({"backend": "stable_diffusion", "resolution": 512}, "model.resolution"),
    ({"backend": "stable_diffusion", "prompt_template": "a photo"}, "model.prompt_template"),
])
def test_bad_model_sections_name_the_parameter(section, param):
    with pytest.raises(ConfigError) as err:
        validate_config(section, "model")
    assert err.value.param == param


def test_image_size_comes_from_the_dataset_unless_given():
    assert resolve_config(TINY, image_size=32)["image_size"] == 32
    with pytest.raises(ConfigError, match="model.image_size"):
        resolve_config({**TINY, "image_size": 16}, image_size=32)


@pytest.mark.parametrize("profile", ["smoke", "demo", "paper"])
def test_shipped_profiles_have_valid_model_sections(profile):
    validate_config(load_profile(profile)["model"], "model")


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return make_tiny_sd(tmp_path_factory.mktemp("tiny_sd"))


def test_tiny_stable_diffusion_trains_samples_and_round_trips(tiny_sd, tmp_path):
    data = Squares()
    model = build_model({"backend": "stable_diffusion", "pretrained": str(tiny_sd)}, data.class_names,
                        image_size=16)
    assert isinstance(model, StableDiffusionDM)
    assert model.latent_shape == (4, 8, 8) and model.null_class == 3
    assert model.prompts == ["A photo of a cat", "A photo of a dog", "A photo of a fox", ""]
    assert model.prompt_embeds.shape == (4, 77, 32)
    assert not torch.allclose(model.prompt_embeds[0], model.prompt_embeds[3])
    assert {id(p) for p in model.trainable_parameters()} == {id(p) for p in model.unet.parameters()}
    assert not any(p.requires_grad for p in model.vae.parameters())
    assert not any(p.requires_grad for p in model.text_encoder.parameters())

    x, _ = data.batch([0, 1])
    z = model.encode(x)
    assert z.shape == (2, 4, 8, 8) and model.decode(z).shape == (2, 3, 16, 16)
    g = torch.Generator().manual_seed(0)
    assert not torch.equal(model.encode(x, generator=g), z)  # a posterior sample, not the mode

    vae_before = {k: v.clone() for k, v in model.vae.state_dict().items()}
    unet_before = {k: v.clone() for k, v in model.unet.state_dict().items()}
    result = train_diffusion(model, data, steps=3, batch_size=4, lr=1e-3, cond_drop=0.0, checkpoint_every=3,
                             work_dir=tmp_path / "train", seed=0, progress=False, log_every=1)
    assert len(result.loss_log) == 3 and all(np.isfinite(v) for _, v in result.loss_log)
    assert all(torch.equal(v, model.vae.state_dict()[k]) for k, v in vae_before.items())
    assert not all(torch.equal(v, model.unet.state_dict()[k]) for k, v in unet_before.items())
    assert not model.vae.training and not model.text_encoder.training

    model.load_trainable_state(result.ema_state)
    images = sample_images(model, [0, 2], [1, 2], steps=3, guidance=2.0, batch_size=2, progress=False)
    assert images.dtype == np.uint8 and images.shape == (2, 16, 16, 3)

    model.save(tmp_path / "sd")
    loaded = load_model(tmp_path / "sd")
    assert isinstance(loaded, StableDiffusionDM)
    again = sample_images(loaded, [0, 2], [1, 2], steps=3, guidance=2.0, batch_size=2, progress=False)
    assert np.array_equal(images, again)
