"""The BadNets-2 pattern image: the study's own cartoon (drawn, no file needed) or a user's image file,
checked and converted the one way the study reads it."""

from __future__ import annotations

import numpy as np

from bibad_utils.base import ConfigError, repo_path


def _inside_ellipse(x, y, cx, cy, rx, ry):
    return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0


def _inside_triangle(x, y, a, b, c):
    def side(p, q):
        return (q[0] - p[0]) * (y - p[1]) - (q[1] - p[1]) * (x - p[0])

    s1, s2, s3 = side(a, b), side(b, c), side(c, a)
    return ((s1 >= 0) & (s2 >= 0) & (s3 >= 0)) | ((s1 <= 0) & (s2 <= 0) & (s3 <= 0))


def _near_segment(x, y, p, q, width):
    px, py = q[0] - p[0], q[1] - p[1]
    t = np.clip(((x - p[0]) * px + (y - p[1]) * py) / (px * px + py * py), 0.0, 1.0)
    return np.hypot(x - p[0] - t * px, y - p[1] - t * py) <= width / 2


def cartoon_pattern(image_size: int) -> np.ndarray:
    """uint8 ``[S, S, 3]``: the fixed BadNets-2 pattern, a cartoon cat face with a red bow on a
    polka-dot pink background, drawn from geometry (no image file) so any size gives the same picture."""
    ss = 4 if image_size <= 128 else 2
    coords = (np.arange(image_size * ss, dtype=np.float64) + 0.5) / (image_size * ss)  # supersampled pixel centres
    y, x = np.meshgrid(coords, coords, indexing="ij")
    canvas = np.empty(x.shape + (3,), np.float64)
    canvas[:] = (250, 180, 205)
    black, white = (25, 20, 30), (255, 255, 255)

    def paint(mask, colour):
        canvas[mask] = colour

    dots = (np.hypot((x * 8) % 1 - 0.5, (y * 8) % 1 - 0.5) <= 0.16)
    paint(dots, (255, 235, 245))
    for sign in (-1, 1):
        ear = [(0.5 + sign * 0.33, 0.52), (0.5 + sign * 0.30, 0.16), (0.5 + sign * 0.10, 0.36)]
        inner = [(0.5 + sign * 0.29, 0.46), (0.5 + sign * 0.28, 0.23), (0.5 + sign * 0.15, 0.37)]
        paint(_inside_triangle(x, y, *[(px + sign * 0.02, py - 0.02) for px, py in ear]) |
              _inside_triangle(x, y, *ear), black)
        paint(_inside_triangle(x, y, *[(0.5 + sign * 0.31, 0.50), (0.5 + sign * 0.295, 0.20),
                                       (0.5 + sign * 0.13, 0.37)]), white)
        paint(_inside_triangle(x, y, *inner), (255, 160, 190))
    paint(_inside_ellipse(x, y, 0.5, 0.58, 0.39, 0.31), black)
    paint(_inside_ellipse(x, y, 0.5, 0.58, 0.37, 0.29), white)
    for sign in (-1, 1):
        paint(_inside_ellipse(x, y, 0.5 + sign * 0.14, 0.58, 0.035, 0.05), black)
        paint(_inside_ellipse(x, y, 0.5 + sign * 0.22, 0.68, 0.05, 0.03), (255, 175, 195))
        for k, dy in enumerate((-0.03, 0.0, 0.03)):
            start = (0.5 + sign * 0.25, 0.64 + dy)
            end = (0.5 + sign * 0.47, 0.62 + 2.2 * dy - 0.01 * (k - 1))
            paint(_near_segment(x, y, start, end, 0.012), black)
    paint(_inside_ellipse(x, y, 0.5, 0.65, 0.04, 0.028), black)
    paint(_inside_ellipse(x, y, 0.5, 0.65, 0.032, 0.02), (250, 200, 40))
    bow = (0.72, 0.30)
    for sign in (-1, 1):
        wing = [bow, (bow[0] + sign * 0.14, bow[1] - 0.09), (bow[0] + sign * 0.14, bow[1] + 0.09)]
        paint(_inside_triangle(x, y, *wing), (220, 30, 50))
    paint(_inside_ellipse(x, y, bow[0], bow[1], 0.04, 0.04), (190, 15, 40))
    img = canvas.reshape(image_size, ss, image_size, ss, 3).mean(axis=(1, 3))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


PATTERN_PARAM = "triggers.badnets2.pattern_path"


def load_pattern(path, image_size: int, param: str = PATTERN_PARAM) -> tuple[np.ndarray, str]:
    """(uint8 ``[S, S, 3]``, conversion): the square image at ``path`` resized (bicubic) to S x S, and
    a sentence stating what was done to it. Refused (ConfigError naming ``param``): a missing or
    unreadable file, a non-square image (it would be stretched) and one with transparent pixels (the
    alpha channel would be dropped). Grey or palette images are converted to RGB, which is stated."""
    from PIL import Image

    resolved = repo_path(path)
    if not resolved.is_file():
        raise ConfigError(param, str(path), f"an existing image file (not found: {resolved})")
    try:
        with Image.open(resolved) as im:
            im.load()
            mode, (w, h) = im.mode, im.size
            if w != h:
                raise ConfigError(param, str(path), f"a square image ({w} x {h} px would be stretched "
                                                    f"to {image_size} x {image_size}); crop it first")
            steps = []
            if "A" in im.getbands() or "transparency" in im.info:
                rgba = im.convert("RGBA")
                if int(np.asarray(rgba)[..., 3].min()) < 255:
                    raise ConfigError(param, str(path), "an opaque image (this one has transparent pixels, "
                                                        "and the blend has no alpha channel)")
                im = rgba
            if im.mode != "RGB":
                steps.append(f"{mode} converted to RGB")
                im = im.convert("RGB")
            if w != image_size:
                steps.append(f"resized bicubic from {w} x {h} to {image_size} x {image_size} px")
                im = im.resize((image_size, image_size), Image.Resampling.BICUBIC)
            array = np.asarray(im, dtype=np.uint8).copy()
    except ConfigError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ConfigError(param, str(path), f"a readable image file ({resolved}: {err})") from err
    return array, "; ".join(steps) or "used as is"
