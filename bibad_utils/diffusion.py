"""Class-conditional diffusion models behind one interface: a pixel-space UNet and Stable Diffusion.

Both backends are conditioned on integer class labels; label ``model.null_class`` (== ``num_classes``)
is the unconditional input used by classifier-free guidance. Training, sampling and the diffusion
classifier only ever call :meth:`DiffusionModel.eps`, :meth:`DiffusionModel.encode` and
:meth:`DiffusionModel.decode`, so they work unchanged on either backend.

- :class:`PixelDM`: a diffusers ``UNet2DModel`` with ``num_class_embeds = num_classes + 1`` (the extra
  embedding is the null class), optionally run on ``pixel_unshuffle``-d inputs for speed.
- :class:`StableDiffusionDM`: a pretrained latent text-to-image model (UNet, VAE, CLIP text encoder)
  of which only the UNet is trained; a label selects the prompt ``"A photo of a {class}"`` and the null
  label the empty prompt. The prompt embeddings are computed once and cached.

:func:`build_model` turns a profile's ``model`` section into a model; :func:`validate_config` checks such
a section; :func:`load_model` reads a model written by :meth:`DiffusionModel.save`.
"""

from __future__ import annotations

import copy
import json
import math
import numbers
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from bibad_utils.config import ConfigError

BACKENDS = ("pixel", "stable_diffusion")
MIXED_PRECISION = ("no", "fp16", "bf16")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"

# Defaults of each backend, in one place: build_model, validate_config and the saved config.json all
# read these. ``image_size`` null means "the dataset's image size" (the build_model argument).
PIXEL_DEFAULTS: dict[str, Any] = {
    "backend": "pixel",
    "preset": None,                 # null | paper_cifar (fills the keys below; explicit keys win)
    "image_size": None,             # side in pixels; null: the dataset's
    "in_channels": 3,
    "block_out_channels": [32, 64, 64],   # channels per resolution level of the UNet
    "layers_per_block": 1,
    "attention": [False, False, True],    # self-attention at each level (one flag per level)
    "attention_head_dim": None,     # null: one head per attention layer (as the reference DDPM)
    "norm_groups": 32,              # GroupNorm groups; must divide every channel count
    "dropout": 0.0,
    "unshuffle": 1,                 # 1 | 2 | 4: run the UNet on pixel_unshuffle(x, u): u^2 x fewer positions
    "num_train_timesteps": 1000,
    "beta_schedule": "linear",
    "beta_start": 1.0e-4,
    "beta_end": 0.02,
    "mixed_precision": "no",        # no | fp16 | bf16 (autocast while training / sampling on a GPU)
}

# The reference CIFAR-10 DDPM (Ho et al. 2020) at 64 base channels, mults (1, 2, 2, 2), attention at
# 16x16, dropout 0.1, T = 1000 linear betas.
PIXEL_PRESETS: dict[str, dict[str, Any]] = {
    "paper_cifar": {
        "image_size": 32,
        "block_out_channels": [64, 128, 128, 128],
        "layers_per_block": 2,
        "attention": [False, True, False, False],
        "norm_groups": 32,
        "dropout": 0.1,
        "unshuffle": 1,
    },
}

SD_DEFAULTS: dict[str, Any] = {
    "backend": "stable_diffusion",
    "pretrained": "CompVis/stable-diffusion-v1-4",   # hub id or local folder in the diffusers layout
    "image_size": None,             # side in pixels; null: the dataset's
    "prompt_template": None,        # null: bibad_utils.data.PROMPT_TEMPLATE ("A photo of a {}")
    "mixed_precision": "no",        # frozen VAE / text encoder stored in this dtype; UNet autocast
    "gradient_checkpointing": False,
}

DEFAULTS = {"pixel": PIXEL_DEFAULTS, "stable_diffusion": SD_DEFAULTS}


# ----------------------------------------------------------------------------------------------
# configuration


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


def resolve_config(cfg: dict, image_size: int | None = None, prefix: str = "model") -> dict:
    """A ``model`` section -> the complete, checked configuration (defaults and preset filled in).

    image_size: the dataset's image side in pixels, used when the section leaves ``image_size`` out;
    both given and different is an error. Raises ConfigError naming ``<prefix>.<key>``.
    """
    if not isinstance(cfg, dict):
        raise ConfigError(prefix, cfg, "a mapping of model parameters")
    backend = cfg.get("backend")
    if backend not in BACKENDS:
        raise ConfigError(f"{prefix}.backend", backend, f"one of {list(BACKENDS)}")
    defaults = DEFAULTS[backend]
    for key in cfg:
        if key not in defaults:
            raise ConfigError(f"{prefix}.{key}", cfg[key], f"a key of the {backend} backend: {sorted(defaults)}")
    out = copy.deepcopy(defaults)
    preset = cfg.get("preset")
    if preset is not None:
        if preset not in PIXEL_PRESETS:
            raise ConfigError(f"{prefix}.preset", preset, f"null or one of {list(PIXEL_PRESETS)}")
        out.update(copy.deepcopy(PIXEL_PRESETS[preset]))
    out.update(copy.deepcopy(cfg))

    size = out["image_size"]
    if size is None:
        size = image_size
    elif image_size is not None and size != image_size:
        raise ConfigError(f"{prefix}.image_size", size, f"null or the dataset's image size {image_size}")
    if not _is_int(size) or size < 8:
        raise ConfigError(f"{prefix}.image_size", size, "an integer >= 8 (or null with the dataset's size given)")
    out["image_size"] = int(size)
    if out["mixed_precision"] not in MIXED_PRECISION:
        raise ConfigError(f"{prefix}.mixed_precision", out["mixed_precision"], f"one of {list(MIXED_PRECISION)}")
    if backend == "pixel":
        _check_pixel(out, prefix)
    else:
        _check_sd(out, prefix)
    return out


def _check_pixel(c: dict, prefix: str) -> None:
    channels = c["block_out_channels"]
    if (not isinstance(channels, (list, tuple)) or not channels
            or not all(_is_int(ch) and ch > 0 for ch in channels)):
        raise ConfigError(f"{prefix}.block_out_channels", channels, "a non-empty list of positive integers")
    c["block_out_channels"] = [int(ch) for ch in channels]
    levels = len(channels)
    attention = c["attention"]
    if (not isinstance(attention, (list, tuple)) or len(attention) != levels
            or not all(isinstance(a, bool) for a in attention)):
        raise ConfigError(f"{prefix}.attention", attention, f"a list of {levels} true/false flags, one per level")
    c["attention"] = list(attention)
    if c["in_channels"] != 3:
        raise ConfigError(f"{prefix}.in_channels", c["in_channels"], "3 (RGB images)")
    if not _is_int(c["layers_per_block"]) or c["layers_per_block"] < 1:
        raise ConfigError(f"{prefix}.layers_per_block", c["layers_per_block"], "a positive integer")
    head = c["attention_head_dim"]
    if head is not None and (not _is_int(head) or head < 1 or any(ch % head for ch in channels)):
        raise ConfigError(f"{prefix}.attention_head_dim", head, "null or a positive divisor of every channel count")
    groups = c["norm_groups"]
    if not _is_int(groups) or groups < 1 or any(ch % groups for ch in channels):
        raise ConfigError(f"{prefix}.norm_groups", groups, f"a positive divisor of every channel count {channels}")
    if not _is_number(c["dropout"]) or not 0 <= c["dropout"] < 1:
        raise ConfigError(f"{prefix}.dropout", c["dropout"], "a number in [0, 1)")
    u = c["unshuffle"]
    if u not in (1, 2, 4) or isinstance(u, bool):
        raise ConfigError(f"{prefix}.unshuffle", u, "1, 2 or 4")
    factor = u * 2 ** (levels - 1)
    if c["image_size"] % factor:
        raise ConfigError(f"{prefix}.image_size", c["image_size"],
                          f"a multiple of unshuffle * 2^(levels - 1) = {factor}")
    if not _is_int(c["num_train_timesteps"]) or c["num_train_timesteps"] < 2:
        raise ConfigError(f"{prefix}.num_train_timesteps", c["num_train_timesteps"], "an integer >= 2")
    if c["beta_schedule"] not in BETA_SCHEDULES:
        raise ConfigError(f"{prefix}.beta_schedule", c["beta_schedule"], f"one of {list(BETA_SCHEDULES)}")
    for key in ("beta_start", "beta_end"):
        if not _is_number(c[key]) or not 0 < c[key] < 1:
            raise ConfigError(f"{prefix}.{key}", c[key], "a number in (0, 1)")
    if c["beta_start"] >= c["beta_end"]:
        raise ConfigError(f"{prefix}.beta_end", c["beta_end"], f"a number > beta_start = {c['beta_start']}")


def _check_sd(c: dict, prefix: str) -> None:
    if not isinstance(c["pretrained"], str) or not c["pretrained"].strip():
        raise ConfigError(f"{prefix}.pretrained", c["pretrained"], "a hub id or a local folder in the diffusers layout")
    template = c["prompt_template"]
    if template is not None and (not isinstance(template, str) or template.count("{}") != 1):
        raise ConfigError(f"{prefix}.prompt_template", template, "null or a string with exactly one '{}'")
    if not isinstance(c["gradient_checkpointing"], bool):
        raise ConfigError(f"{prefix}.gradient_checkpointing", c["gradient_checkpointing"], "true or false")
    if c["image_size"] % 8:
        raise ConfigError(f"{prefix}.image_size", c["image_size"], "a multiple of 8 (the VAE downsamples by 8)")


def validate_config(section: dict, prefix: str = "model") -> None:
    """Check a profile's ``model`` section (called by ``bibad_utils.config.validate_profile``).

    The image size may be absent (it then comes from the dataset), so it is checked with a stand-in
    that satisfies the size constraints; :func:`build_model` checks the real one."""
    probe = dict(section) if isinstance(section, dict) else section
    if isinstance(probe, dict) and probe.get("image_size") is None:
        probe["image_size"] = 512
    resolve_config(probe, prefix=prefix)


def build_model(cfg: dict, class_names, image_size: int | None = None) -> "DiffusionModel":
    """A profile's ``model`` section -> a freshly initialised (pixel) or pretrained (SD) model on the CPU.

    class_names: one name per class (``num_classes = len(class_names)``); image_size: the dataset's
    image side in pixels, used when the section leaves ``image_size`` out.
    """
    class_names = [str(c) for c in class_names]
    if not class_names:
        raise ConfigError("class_names", class_names, "a non-empty list of class names")
    resolved = resolve_config(cfg, image_size=image_size)
    cls = PixelDM if resolved["backend"] == "pixel" else StableDiffusionDM
    return cls(resolved, class_names)


def load_model(directory) -> "DiffusionModel":
    """Read a model written by :meth:`DiffusionModel.save` (``config.json`` + ``model.safetensors``).

    The result is on the CPU; for Stable Diffusion the frozen components come from ``pretrained``."""
    directory = Path(directory)
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise ConfigError("directory", str(directory), f"a folder holding {CONFIG_FILE} and {WEIGHTS_FILE}")
    meta = json.loads(path.read_text())
    model = build_model(meta["model"], meta["class_names"])
    model.load_trainable_state(load_file(str(directory / WEIGHTS_FILE)))
    return model


# ----------------------------------------------------------------------------------------------
# the interface


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
        raise NotImplementedError

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

    def _labels(self, labels: torch.Tensor, n: int, device) -> torch.Tensor:
        labels = torch.as_tensor(labels, dtype=torch.long, device=device)
        if labels.shape != (n,):
            raise ConfigError("labels.shape", tuple(labels.shape), f"({n},): one label per sample")
        return labels

    @staticmethod
    def _timesteps(t, n: int, device) -> torch.Tensor:
        t = torch.as_tensor(t, device=device)
        return t.expand(n) if t.ndim == 0 else t


def _noise_scheduler(c: dict):
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=c["num_train_timesteps"], beta_schedule=c["beta_schedule"],
                         beta_start=c["beta_start"], beta_end=c["beta_end"], prediction_type="epsilon",
                         clip_sample=True, clip_sample_range=1.0)


class PixelDM(DiffusionModel):
    """Class-conditional pixel-space DM: ``UNet2DModel`` with ``num_classes + 1`` class embeddings.

    With ``unshuffle = u > 1`` the UNet sees ``pixel_unshuffle(x, u)`` (``3 u^2`` channels at
    ``image_size / u``) and its output is ``pixel_shuffle``-d back: the same model interface at
    ``u^2`` times fewer spatial positions per layer.
    """

    clip_sample = True

    def __init__(self, config: dict, class_names: list[str]):
        super().__init__(config, class_names)
        from diffusers import UNet2DModel

        c = config
        u = c["unshuffle"]
        channels = c["in_channels"] * u * u
        down = ["AttnDownBlock2D" if a else "DownBlock2D" for a in c["attention"]]
        up = ["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(c["attention"])]
        self.unet = UNet2DModel(
            sample_size=c["image_size"] // u,
            in_channels=channels,
            out_channels=channels,
            down_block_types=tuple(down),
            up_block_types=tuple(up),
            block_out_channels=tuple(c["block_out_channels"]),
            layers_per_block=c["layers_per_block"],
            attention_head_dim=c["attention_head_dim"],
            norm_num_groups=c["norm_groups"],
            dropout=c["dropout"],
            num_class_embeds=self.num_classes + 1,
        )
        self.unshuffle = u
        self.noise_scheduler = _noise_scheduler(c)

    @property
    def denoiser(self) -> nn.Module:
        return self.unet

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (self.config["in_channels"], self.image_size, self.image_size)

    def eps(self, x_t, t, labels, denoiser=None):
        net = self.unet if denoiser is None else denoiser
        n = x_t.shape[0]
        labels = self._labels(labels, n, x_t.device)
        t = self._timesteps(t, n, x_t.device)
        h = F.pixel_unshuffle(x_t, self.unshuffle) if self.unshuffle > 1 else x_t
        out = net(h, t, class_labels=labels).sample
        out = F.pixel_shuffle(out, self.unshuffle) if self.unshuffle > 1 else out
        return out.float()

    def encode(self, images, generator=None):
        return images.float()

    def decode(self, z):
        return z.float().clamp(-1.0, 1.0)


_DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class StableDiffusionDM(DiffusionModel):
    """Stable Diffusion with a trainable UNet and a frozen VAE and CLIP text encoder.

    Components load with ``from_pretrained(config["pretrained"], subfolder=...)`` from a hub id or a
    local folder in the diffusers layout (``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``,
    ``scheduler/``). Latents are the VAE posterior times ``vae.config.scaling_factor``. The frozen parts
    are stored in the ``mixed_precision`` dtype; the UNet stays float32 (its master weights).
    """

    def __init__(self, config: dict, class_names: list[str]):
        super().__init__(config, class_names)
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        src = config["pretrained"]
        frozen_dtype = _DTYPES[config["mixed_precision"]]
        self.tokenizer = CLIPTokenizer.from_pretrained(src, subfolder="tokenizer")
        self.text_encoder = CLIPTextModel.from_pretrained(src, subfolder="text_encoder")
        self.vae = AutoencoderKL.from_pretrained(src, subfolder="vae", torch_dtype=frozen_dtype)
        self.unet = UNet2DConditionModel.from_pretrained(src, subfolder="unet")
        self.noise_scheduler = DDPMScheduler.from_pretrained(src, subfolder="scheduler")
        if self.noise_scheduler.config.prediction_type != "epsilon":
            raise ConfigError("model.pretrained", src, "a model whose scheduler predicts epsilon")
        for frozen in (self.text_encoder, self.vae):
            frozen.requires_grad_(False)
            frozen.eval()
        if config["gradient_checkpointing"]:
            self.unet.enable_gradient_checkpointing()
        self.vae_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        if self.image_size % self.vae_factor:
            raise ConfigError("model.image_size", self.image_size, f"a multiple of the VAE factor {self.vae_factor}")
        if config["prompt_template"] is None:
            from bibad_utils.data import PROMPT_TEMPLATE

            template = PROMPT_TEMPLATE
        else:
            template = config["prompt_template"]
        self.prompts = [template.format(name) for name in self.class_names] + [""]
        self.register_buffer("prompt_embeds", self._embed(self.prompts), persistent=False)
        self.text_encoder.to(frozen_dtype)

    @torch.no_grad()
    def _embed(self, prompts: list[str]) -> torch.Tensor:
        """CLIP last hidden states float32 ``[len(prompts), max_length, hidden]``."""
        ids = self.tokenizer(prompts, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids
        return self.text_encoder(ids)[0].float()

    def train(self, mode: bool = True):
        super().train(mode)
        self.vae.eval()
        self.text_encoder.eval()
        return self

    @property
    def denoiser(self) -> nn.Module:
        return self.unet

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        side = self.image_size // self.vae_factor
        return (self.vae.config.latent_channels, side, side)

    def eps(self, x_t, t, labels, denoiser=None):
        net = self.unet if denoiser is None else denoiser
        n = x_t.shape[0]
        labels = self._labels(labels, n, x_t.device)
        t = self._timesteps(t, n, x_t.device)
        dtype = self.unet.dtype
        context = self.prompt_embeds[labels].to(dtype)
        return net(x_t.to(dtype), t, encoder_hidden_states=context).sample.float()

    @torch.no_grad()
    def encode(self, images, generator=None):
        posterior = self.vae.encode(images.to(self.vae.dtype)).latent_dist
        z = posterior.mode() if generator is None else posterior.sample(generator=generator)
        return z.float() * self.vae.config.scaling_factor

    @torch.no_grad()
    def decode(self, z):
        z = (z / self.vae.config.scaling_factor).to(self.vae.dtype)
        return self.vae.decode(z).sample.float().clamp(-1.0, 1.0)
