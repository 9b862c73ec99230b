"""The tests' tiny Stable Diffusion: :func:`bibad_utils.diffusion.tiny_sd.make_tiny_sd`, re-exported so that
``from tiny_sd import make_tiny_sd`` keeps working (default: latent factor 2, 16 px -> 4 x 8 x 8)."""

from bibad_utils.diffusion.tiny_sd import LATENT_FACTORS, make_tiny_sd, write_tokenizer  # noqa: F401
