"""Write a tiny random-weight Stable Diffusion in the diffusers folder layout, offline
(:func:`bibad_utils.diffusion.tiny_sd.make_tiny_sd`): a stand-in for the real v1.4 weights that runs the
study's Stable Diffusion path (the ``paper-tiny`` profile reads it from ``runs/tiny-sd``). Its generations
mean nothing.

    python scripts/make_tiny_sd.py --out runs/tiny-sd --latent-factor 8

``--latent-factor 8``: a VAE of four levels, as the real SD (512 px -> 4 x 64 x 64 latents); 2 (the
default): two levels, the unit tests' model. An existing folder is refused unless ``--force``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the folder to write (relative: to the current directory)")
    parser.add_argument("--latent-factor", type=int, default=2, help="the VAE's downsampling: 2 or 8 (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    parser.add_argument("--force", action="store_true", help="write over an existing folder")
    args = parser.parse_args(argv)

    from bibad_utils.base import ConfigError
    from bibad_utils.diffusion.tiny_sd import make_tiny_sd

    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.force:
        print(f"error: --out = {str(out)!r} is not allowed: expected a new or empty folder (or pass --force)",
              file=sys.stderr)
        return 2
    try:
        path = make_tiny_sd(out, seed=args.seed, latent_factor=args.latent_factor)
    except ConfigError as err:
        print(f"error: --latent-factor: {err}", file=sys.stderr)
        return 2
    print(f"wrote a tiny Stable Diffusion (latent factor {args.latent_factor}, seed {args.seed}) to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
