"""The profile's ``model`` section: the backends, their defaults and presets, and the checks of a section."""

from __future__ import annotations

import copy
from typing import Any

from bibad_utils.base import ConfigError
from bibad_utils.schema import Field, Section, is_int


BACKENDS = ("pixel", "stable_diffusion")


MIXED_PRECISION = ("no", "fp16", "bf16")


BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


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
    Field("int", low=8, allowed="an integer >= 8 (or null with the dataset's size given)").check(
        f"{prefix}.image_size", size)
    out["image_size"] = int(size)
    Field("choice", choices=MIXED_PRECISION).check(f"{prefix}.mixed_precision", out["mixed_precision"])
    if backend == "pixel":
        _check_pixel(out, prefix)
    else:
        _check_sd(out, prefix)
    return out


def _check_pixel(c: dict, prefix: str) -> None:
    channels = c["block_out_channels"]
    if not isinstance(channels, (list, tuple)) or not channels or not all(is_int(ch) and ch > 0 for ch in channels):
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
    Field("int", low=1).check(f"{prefix}.layers_per_block", c["layers_per_block"])
    head = c["attention_head_dim"]
    if head is not None and (not is_int(head) or head < 1 or any(ch % head for ch in channels)):
        raise ConfigError(f"{prefix}.attention_head_dim", head, "null or a positive divisor of every channel count")
    groups = c["norm_groups"]
    if not is_int(groups) or groups < 1 or any(ch % groups for ch in channels):
        raise ConfigError(f"{prefix}.norm_groups", groups, f"a positive divisor of every channel count {channels}")
    Field("number", low=0, high=1, high_open=True).check(f"{prefix}.dropout", c["dropout"])
    u = c["unshuffle"]
    if u not in (1, 2, 4) or isinstance(u, bool):
        raise ConfigError(f"{prefix}.unshuffle", u, "1, 2 or 4")
    factor = u * 2 ** (levels - 1)
    if c["image_size"] % factor:
        raise ConfigError(f"{prefix}.image_size", c["image_size"],
                          f"a multiple of unshuffle * 2^(levels - 1) = {factor}")
    Field("int", low=2).check(f"{prefix}.num_train_timesteps", c["num_train_timesteps"])
    Field("choice", choices=BETA_SCHEDULES).check(f"{prefix}.beta_schedule", c["beta_schedule"])
    for key in ("beta_start", "beta_end"):
        Field("number", low=0, high=1, low_open=True, high_open=True).check(f"{prefix}.{key}", c[key])
    if c["beta_start"] >= c["beta_end"]:
        raise ConfigError(f"{prefix}.beta_end", c["beta_end"], f"a number > beta_start = {c['beta_start']}")


def _check_sd(c: dict, prefix: str) -> None:
    if not isinstance(c["pretrained"], str) or not c["pretrained"].strip():
        raise ConfigError(f"{prefix}.pretrained", c["pretrained"], "a hub id or a local folder in the diffusers layout")
    template = c["prompt_template"]
    if template is not None and (not isinstance(template, str) or template.count("{}") != 1):
        raise ConfigError(f"{prefix}.prompt_template", template, "null or a string with exactly one '{}'")
    Field("bool").check(f"{prefix}.gradient_checkpointing", c["gradient_checkpointing"])
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


def _section_fields() -> dict[str, Field]:
    # every backend's keys with their one default (the keys the backends share default alike); which keys
    # a backend takes, and their ranges, are checked by resolve_config
    fields = {key: Field("value", default=default, allowed=f"a value of model.{key}")
              for backend in reversed(BACKENDS) for key, default in DEFAULTS[backend].items()}
    fields["backend"] = Field("choice", choices=BACKENDS)
    return fields


# The profile's ``model`` section, left as written (it is part of every model's artifact key).
MODEL = Section("model", _section_fields, check=lambda values, prefix, profile: validate_config(
    profile["model"], prefix), fill=False)
