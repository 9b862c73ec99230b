"""The one interface of the class-conditional diffusion models (:class:`DiffusionModel`): noise prediction,
encoding and decoding, saving as safetensors with its config, and the noise scheduler of a config."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from bibad_utils.base import ConfigError
from bibad_utils.diffusion.settings import resolve_config


# backend name -> class; each backend module registers its class (the package imports them all)
BACKEND_CLASSES: dict[str, type] = {}
CONFIG_FILE = "config.json"


WEIGHTS_FILE = "model.safetensors"


class DiffusionModel(nn.Module):
    """A class-conditional epsilon-prediction diffusion model.

    Attributes: ``config`` (the resolved ``model`` section), ``class_names``, ``num_classes``,
    ``null_class`` (== num_classes: the unconditional label), ``image_size`` (pixels),
    ``latent_shape`` ((C, H, W) of the space the diffusion runs in), ``noise_scheduler`` (a diffusers
    ``DDPMScheduler`` with epsilon prediction), ``denoiser`` (the trainable network), ``clip_sample``
    (whether the model's space is bounded to [-1, 1], so DDIM may clip its x0 estimate).
    """

    clip_sample: bool = False

    def __init__(self, config: dict, class_names: list[str]):
        super().__init__()
        self.config = config
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.null_class = self.num_classes
        self.image_size = int(config["image_size"])

    @property
    def denoiser(self) -> nn.Module:
        return self.unet  # both backends train their UNet

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    @property
    def mixed_precision(self) -> str:
        return self.config["mixed_precision"]

    def eps(self, x_t: torch.Tensor, t, labels: torch.Tensor, denoiser: nn.Module | None = None) -> torch.Tensor:
        """Predicted noise, float32 with the shape of ``x_t``.

        x_t: noisy samples ``[N, *latent_shape]`` in the model's space; t: int timesteps in
        ``[0, num_train_timesteps)``, a tensor ``[N]`` or a scalar; labels: int64 ``[N]`` in
        ``[0, num_classes]`` (``null_class`` = unconditional). denoiser: a module to run in place of
        ``self.denoiser`` with the same weights (training passes its distributed wrapper).
        """
        raise NotImplementedError

    def encode(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images float ``[N, 3, H, W]`` in [-1, 1] -> ``[N, *latent_shape]`` in the model's space.
        generator: draws the latent sample of a VAE posterior (None: its mode)."""
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``[N, *latent_shape]`` -> images float32 ``[N, 3, H, W]`` clamped to [-1, 1]."""
        raise NotImplementedError

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters an optimiser updates (the denoiser's)."""
        return list(self.denoiser.parameters())

    def state_dict_to_save(self) -> dict[str, torch.Tensor]:
        """The trainable weights (the denoiser's state dict): what a checkpoint and :meth:`save` hold."""
        return {k: v.detach() for k, v in self.denoiser.state_dict().items()}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        """Copy weights with the keys of :meth:`state_dict_to_save` into the denoiser (strict)."""
        self.denoiser.load_state_dict(state, strict=True)

    def save(self, directory) -> Path:
        """Write ``config.json`` (resolved config, class names) and ``model.safetensors`` (trainable
        weights) into ``directory`` (created); returns it."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.contiguous().cpu() for k, v in self.state_dict_to_save().items()}
        save_file(state, str(directory / WEIGHTS_FILE))
        meta = {"model": self.config, "class_names": self.class_names}
        (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory) -> "DiffusionModel":
        """Same as :func:`load_model`; raises ConfigError if the saved backend is not ``cls``'s."""
        model = load_model(directory)
        if not isinstance(model, cls):
            raise ConfigError("directory", str(directory), f"a saved {cls.__name__}, not {type(model).__name__}")
        return model

    def _inputs(self, x_t: torch.Tensor, t, labels, denoiser: nn.Module | None):
        """(the network to run, timesteps ``[N]``, int64 labels ``[N]``) of an :meth:`eps` call."""
        n = x_t.shape[0]
        labels = torch.as_tensor(labels, dtype=torch.long, device=x_t.device)
        if labels.shape != (n,):
            raise ConfigError("labels.shape", tuple(labels.shape), f"({n},): one label per sample")
        t = torch.as_tensor(t, device=x_t.device)
        return self.denoiser if denoiser is None else denoiser, t.expand(n) if t.ndim == 0 else t, labels


def noise_scheduler_for(c: dict):
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=c["num_train_timesteps"], beta_schedule=c["beta_schedule"],
                         beta_start=c["beta_start"], beta_end=c["beta_end"], prediction_type="epsilon",
                         clip_sample=True, clip_sample_range=1.0)


def load_model(directory) -> "DiffusionModel":
    """Read a model written by :meth:`DiffusionModel.save` (``config.json`` + ``model.safetensors``).

    The result is on the CPU; for Stable Diffusion the frozen components come from ``pretrained``."""
    directory = Path(directory)
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise ConfigError("directory", str(directory), f"a folder holding {CONFIG_FILE} and {WEIGHTS_FILE}")
    meta = json.loads(path.read_text())
    resolved = resolve_config(meta["model"])
    model = BACKEND_CLASSES[resolved["backend"]](resolved, [str(c) for c in meta["class_names"]])
    model.load_trainable_state(load_file(str(directory / WEIGHTS_FILE)))
    return model
