"""A tiny Stable Diffusion with random weights, written in the diffusers folder layout, fully offline.

``make_tiny_sd(directory)`` writes ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``
and ``model_index.json``, so :class:`~bibad_utils.diffusion.StableDiffusionDM` loads it with exactly the
``from_pretrained(path, subfolder=...)`` calls it uses for the real v1.4 weights. Its outputs mean
nothing: it exists to run the Stable Diffusion path of the study (tests; the ``paper-tiny`` profile)
where the real weights cannot be had. ``scripts/make_tiny_sd.py`` writes one from the command line.

Sizes (:data:`LATENT_FACTORS`): CLIP text encoder hidden 32, 2 layers; cross-attention 32; the latent
factor sets the VAE and the UNet:

- ``latent_factor=2`` (the default, the unit tests'): VAE (32, 64), 2 levels (16 px -> 4 x 8 x 8); UNet
  (32, 64) with cross-attention at its first level;
- ``latent_factor=8`` (as the real SD: 512 px -> 4 x 64 x 64): VAE (4, 8, 16, 32), 4 levels, GroupNorm of
  4 groups, so that a 512-px run costs what its 64 x 64 latents imply; UNet (32, 64, 64) with
  cross-attention at its third level only (16 x 16 positions at 512 px). Measured on one CPU thread, 16
  latents of 64 x 64, forward + backward: 7.2 s for the factor-2 UNet (attention at 64 x 64 is 8x dearer
  still), 1.85 s for this one; the VAE encodes 16 images of 512 px in 2.0 s and decodes them in 4.0 s
  ((8, 16, 32, 32): 2.4 and 7.3 s).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from bibad_utils.base import ConfigError

# latent factor -> the VAE's channels per level and GroupNorm groups, the UNet's channels per level and
# (down, up) blocks, and its sample size (latent side)
LATENT_FACTORS = {
    2: {"vae": (32, 64), "vae_groups": 32, "unet": (32, 64), "sample_size": 8,
        "blocks": (("CrossAttnDownBlock2D", "DownBlock2D"), ("UpBlock2D", "CrossAttnUpBlock2D"))},
    8: {"vae": (4, 8, 16, 32), "vae_groups": 4, "unet": (32, 64, 64), "sample_size": 64,
        "blocks": (("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
                   ("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"))},
}


# GPT-2 / CLIP byte-level alphabet: printable bytes map to themselves, the others to code points from 256
# upwards, so every byte sequence is a string of "visible" characters.
def _byte_alphabet() -> list[str]:
    visible = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    chars, extra = [], 0
    for b in range(256):
        if b in visible:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


# A few merges so the BPE model has real work to do on the study's prompts.
_MERGES = [("p", "h"), ("ph", "o"), ("t", "o</w>"), ("o", "g</w>")]


def write_tokenizer(directory: Path) -> None:
    """vocab.json (256 byte characters, each also with ``</w>``, the merged symbols, the two special
    tokens) + merges.txt (``#version: 0.2`` then one merge a line) + tokenizer_config.json."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    alphabet = _byte_alphabet()
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["".join(m) for m in _MERGES]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    merges = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in _MERGES)
    (directory / "merges.txt").write_text(merges)
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": 77,
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
    }))


def make_tiny_sd(directory, seed: int = 0, latent_factor: int = 2) -> Path:
    """Write a tiny random-weight Stable Diffusion into ``directory`` (created) and return its path.

    latent_factor: the VAE's downsampling, a key of :data:`LATENT_FACTORS` (2: two levels; 8: four, as
    the real SD). The weights follow from ``seed`` alone; the caller's global RNG state is left as it was."""
    if isinstance(latent_factor, bool) or latent_factor not in LATENT_FACTORS:
        raise ConfigError("latent_factor", latent_factor, " or ".join(str(f) for f in LATENT_FACTORS))
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    sizes = LATENT_FACTORS[latent_factor]
    vae_channels, sample_size, (down, up) = sizes["vae"], sizes["sample_size"], sizes["blocks"]
    root = Path(directory)
    write_tokenizer(root / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(root / "tokenizer")
    # The components initialise from the global RNG: seed it inside fork_rng so the caller's state is
    # left as it was.
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=77, projection_dim=32,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ))
        unet = UNet2DConditionModel(
            sample_size=sample_size, in_channels=4, out_channels=4, layers_per_block=1,
            block_out_channels=sizes["unet"], down_block_types=down, up_block_types=up, cross_attention_dim=32,
            attention_head_dim=8,
        )
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, block_out_channels=vae_channels,
            down_block_types=("DownEncoderBlock2D",) * len(vae_channels),
            up_block_types=("UpDecoderBlock2D",) * len(vae_channels), sample_size=sample_size * latent_factor,
            norm_num_groups=sizes["vae_groups"],
        )
    # v1.4 ships a PNDM scheduler config; training reads it as a DDPMScheduler, as with the real weights.
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              num_train_timesteps=1000, skip_prk_steps=True, steps_offset=1,
                              set_alpha_to_one=False)
    text_encoder.save_pretrained(root / "text_encoder")
    unet.save_pretrained(root / "unet")
    vae.save_pretrained(root / "vae")
    scheduler.save_pretrained(root / "scheduler")
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline",
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "scheduler": ["diffusers", "PNDMScheduler"],
        "safety_checker": [None, None], "feature_extractor": [None, None],
        "requires_safety_checker": False,
    }, indent=2))
    return root
