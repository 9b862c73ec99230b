"""The tiny random-weight Stable Diffusion of the package (bibad_utils.diffusion.tiny_sd) and its script:
latent factor 2 (the unit tests' model, as it was) and 8 (four VAE levels, as the real SD)."""

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bibad_utils.config import ConfigError
from bibad_utils.diffusion import StableDiffusionDM, build_model
from bibad_utils.diffusion.tiny_sd import LATENT_FACTORS, make_tiny_sd
from bibad_utils.sampling import sample_images
from bibad_utils.training import train_diffusion

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "make_tiny_sd.py"
NAMES = ["cat", "dog", "fox"]


class Flat:
    """n images of one grey level per class, at ``size`` px: the dataset interface train_diffusion reads."""

    def __init__(self, n=4, size=64):
        self.labels = np.arange(n, dtype=np.int64) % 3
        self.class_names = NAMES
        self.images = (self.labels[:, None, None, None] / 2.0 - 0.5).astype(np.float32) * np.ones((1, 3, size, size),
                                                                                                   np.float32)

    def __len__(self):
        return len(self.labels)

    def batch(self, indices):
        idx = np.asarray(indices)
        return torch.from_numpy(self.images[idx].copy()), torch.from_numpy(self.labels[idx].copy())


def _vae_config(folder: Path) -> dict:
    return json.loads((folder / "vae" / "config.json").read_text())


def test_the_tests_re_export_is_the_package_writer():
    sys.path.insert(0, str(Path(__file__).parent))
    import tiny_sd

    assert tiny_sd.make_tiny_sd is make_tiny_sd


def test_default_is_the_two_level_vae_of_the_unit_tests(tmp_path):
    folder = make_tiny_sd(tmp_path / "f2")
    assert _vae_config(folder)["block_out_channels"] == [32, 64]
    model = build_model({"backend": "stable_diffusion", "pretrained": str(folder)}, NAMES, image_size=16)
    assert model.vae_factor == 2 and model.latent_shape == (4, 8, 8)


def test_latent_factor_8_runs_the_model_path(tmp_path):
    before = torch.random.get_rng_state()
    folder = make_tiny_sd(tmp_path / "f8", latent_factor=8)
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's RNG is left alone
    assert _vae_config(folder)["block_out_channels"] == list(LATENT_FACTORS[8]["vae"])
    model = build_model({"backend": "stable_diffusion", "pretrained": str(folder)}, NAMES, image_size=64)
    assert isinstance(model, StableDiffusionDM) and model.vae_factor == 8 and model.latent_shape == (4, 8, 8)
    data = Flat()
    x, _ = data.batch([0, 1])
    z = model.encode(x)
    assert z.shape == (2, 4, 8, 8) and model.decode(z).shape == (2, 3, 64, 64)
    result = train_diffusion(model, data, steps=2, batch_size=2, lr=1e-3, cond_drop=0.0, checkpoint_every=2,
                             work_dir=tmp_path / "train", seed=0, progress=False, log_every=1)
    assert all(np.isfinite(v) for _, v in result.loss_log)
    images = sample_images(model, [0, 2], [1, 2], steps=2, guidance=2.0, batch_size=2, progress=False)
    assert images.dtype == np.uint8 and images.shape == (2, 64, 64, 3)
    with pytest.raises(ConfigError, match="model.image_size"):  # 60 px is no whole number of latents
        build_model({"backend": "stable_diffusion", "pretrained": str(folder)}, NAMES, image_size=60)


def test_same_seed_same_files_and_bad_factors_refused(tmp_path):
    a, b = make_tiny_sd(tmp_path / "a", latent_factor=8), make_tiny_sd(tmp_path / "b", latent_factor=8)
    for f in sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file()):
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    for bad in (4, 1, True, "8"):
        with pytest.raises(ConfigError) as err:
            make_tiny_sd(tmp_path / "bad", latent_factor=bad)
        assert err.value.param == "latent_factor" and "2 or 8" in str(err.value)


def test_script_writes_the_folder_and_refuses_to_overwrite(tmp_path, monkeypatch, capsys):
    out = tmp_path / "tiny-sd"

    def run(*args):
        monkeypatch.setattr(sys, "argv", [str(SCRIPT), *args])
        with pytest.raises(SystemExit) as code:
            runpy.run_path(str(SCRIPT), run_name="__main__")
        return code.value.code

    assert run("--out", str(out), "--latent-factor", "8") == 0
    assert _vae_config(out)["block_out_channels"] == list(LATENT_FACTORS[8]["vae"])
    assert "latent factor 8" in capsys.readouterr().out
    assert run("--out", str(out)) == 2 and "--force" in capsys.readouterr().err
    assert run("--out", str(tmp_path / "other"), "--latent-factor", "4") == 2
    assert "latent_factor = 4" in capsys.readouterr().err
