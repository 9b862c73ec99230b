"""A procedurally generated ten-class image dataset that needs no download.

Each image shows one large, centred, coloured shape or textured patch on a light-grey background;
the class decides the shape and its colour. At the default settings a small class-conditional diffusion
model learns the classes within CPU minutes, and the bottom-right 15 % corner of every image is pure
background (the BadNets-1 patch goes there), so a stamped trigger never hides a shape.

Rendering is vectorised: each shape is an inside-test on a rotated, scaled coordinate grid, evaluated on
a supersampled grid and box-filtered down (anti-aliasing).
"""

from __future__ import annotations

import numpy as np

from bibad_utils.base import ConfigError
from bibad_utils.data.registry import DatasetSpec

PROCEDURAL_CLASSES = ("circle", "square", "triangle", "cross", "ring", "diamond", "flag", "checkerboard",
                      "star", "heart")

# One fixed fill colour per class (RGB, 0..255), chosen far apart in hue and lightness; the
# secondary colour paints the stripes of the flag and the dark cells of the checkerboard.
_FILL = np.array([
    (220, 45, 45),     # circle: red
    (35, 100, 215),    # square: blue
    (40, 160, 60),     # triangle: green
    (245, 135, 20),    # cross: orange
    (130, 60, 190),    # ring: purple
    (20, 170, 175),    # diamond: teal
    (230, 80, 160),    # flag: pink
    (245, 215, 60),    # checkerboard: yellow
    (120, 75, 35),     # star: brown
    (150, 20, 70),     # heart: maroon
], dtype=np.float64)
_SECONDARY = np.array([(0, 0, 0)] * 6 + [(250, 250, 250), (30, 30, 40)] + [(0, 0, 0)] * 2, dtype=np.float64)
_BACKGROUND = np.array((208, 206, 200), dtype=np.float64)
_BACKGROUNDS = ("plain", "gradient")
_SPLITS = {"train": 0, "test": 1}


def _star(u, v, outer=1.2, inner=0.52, points=5):
    # Fold the angle into one half-spike and test the side of the outer-to-inner edge.
    sector = 2 * np.pi / points
    a = np.mod(np.arctan2(u, v), sector)
    a = np.minimum(a, sector - a)
    rho = np.hypot(u, v)
    px, py = rho * np.cos(a), rho * np.sin(a)
    qx, qy = inner * np.cos(sector / 2) - outer, inner * np.sin(sector / 2)
    return (px - outer) * qy - py * qx <= 0


def _heart(u, v, scale=0.8):
    x, y = u / scale, v / scale + 0.12
    return (x * x + y * y - 1) ** 3 - x * x * y ** 3 <= 0


def _triangle(u, v, radius=1.1, shift=0.2):
    v = v + shift
    inside = v >= -radius / 2
    for angle in (np.pi / 6, 5 * np.pi / 6):
        inside &= u * np.cos(angle) + v * np.sin(angle) <= radius / 2
    return inside


def _shape(label: int, u: np.ndarray, v: np.ndarray):
    """(inside, secondary) boolean maps of class ``label`` in shape coordinates (u right, v up, unit =
    half the nominal shape size). ``secondary`` marks pixels painted in the secondary colour."""
    au, av = np.abs(u), np.abs(v)
    if label == 0:
        return u * u + v * v <= 0.92 ** 2, None
    if label == 1:
        return np.maximum(au, av) <= 0.82, None
    if label == 2:
        return _triangle(u, v), None
    if label == 3:
        return ((au <= 0.32) & (av <= 0.95)) | ((av <= 0.32) & (au <= 0.95)), None
    if label == 4:
        r2 = u * u + v * v
        return (r2 <= 0.95 ** 2) & (r2 >= 0.55 ** 2), None
    if label == 5:
        return au / 0.78 + av / 1.2 <= 1.0, None
    if label == 6:
        inside = (au <= 0.95) & (av <= 0.7)
        return inside, inside & (np.floor((v + 0.7) / 0.28).astype(np.int64) % 2 == 1)
    if label == 7:
        inside = np.maximum(au, av) <= 0.82
        cells = np.floor((u + 0.82) / 0.41).astype(np.int64) + np.floor((v + 0.82) / 0.41).astype(np.int64)
        return inside, inside & (cells % 2 == 1)
    if label == 8:
        return _star(u, v), None
    return _heart(u, v), None


def _render(labels, cx, cy, radius, angle, image_size, chunk_points=1 << 22):
    """Coverage and secondary-colour coverage, float32 [N, H, W] in [0, 1], of every image's shape."""
    n = len(labels)
    ss = 4 if image_size <= 64 else 2 if image_size <= 256 else 1  # supersampling factor
    side = image_size * ss
    grid = (np.arange(side, dtype=np.float32) + 0.5) / side
    gy, gx = np.meshgrid(grid, grid, indexing="ij")
    cover = np.zeros((n, image_size, image_size), np.float32)
    second = np.zeros_like(cover)
    chunk = max(1, chunk_points // (side * side))
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        for start in range(0, len(members), chunk):
            idx = members[start:start + chunk]
            c = np.cos(angle[idx])[:, None, None].astype(np.float32)
            s = np.sin(angle[idx])[:, None, None].astype(np.float32)
            r = radius[idx][:, None, None].astype(np.float32)
            dx = gx[None] - cx[idx][:, None, None].astype(np.float32)
            dy = gy[None] - cy[idx][:, None, None].astype(np.float32)
            u = (c * dx + s * dy) / r
            v = (s * dx - c * dy) / r
            inside, secondary = _shape(int(label), u, v)
            shape = (len(idx), image_size, ss, image_size, ss)
            cover[idx] = inside.reshape(shape).mean(axis=(2, 4), dtype=np.float32)
            if secondary is not None:
                second[idx] = secondary.reshape(shape).mean(axis=(2, 4), dtype=np.float32)
    return cover, second


def _palettes(palette_size: int, seed: int) -> np.ndarray:
    """float [10, palette_size, 3]: the colours each class may be filled with (0..255)."""
    if palette_size == 1:
        return _FILL[:, None, :].copy()
    rng = np.random.default_rng([seed, 1000])
    variants = _FILL[:, None, :] + rng.normal(0.0, 28.0, (len(_FILL), palette_size - 1, 3))
    return np.clip(np.concatenate([_FILL[:, None, :], variants], axis=1), 0, 255)


def _validate(n_per_class, image_size, split, palette_size, shape_scale, scale_jitter, position_jitter,
              rotation, background, noise_std, duplicate_fraction, duplicate_copies, duplicate_noise):
    checks = [
        ("n_per_class", n_per_class, isinstance(n_per_class, (int, np.integer)) and n_per_class >= 1,
         "an integer >= 1"),
        ("image_size", image_size, isinstance(image_size, (int, np.integer)) and image_size >= 8,
         "an integer >= 8 (pixels)"),
        ("split", split, split in _SPLITS, "train | test"),
        ("palette_size", palette_size, isinstance(palette_size, (int, np.integer)) and palette_size >= 1,
         "an integer >= 1"),
        ("shape_scale", shape_scale, 0 < shape_scale <= 1, "a fraction of the image side in (0, 1]"),
        ("scale_jitter", scale_jitter, 0 <= scale_jitter < 1, "a relative jitter in [0, 1)"),
        ("position_jitter", position_jitter, 0 <= position_jitter < 0.5,
         "a fraction of the image side in [0, 0.5)"),
        ("rotation", rotation, 0 <= rotation <= 180, "a maximum angle in degrees in [0, 180]"),
        ("background", background, background in _BACKGROUNDS, " | ".join(_BACKGROUNDS)),
        ("noise_std", noise_std, noise_std >= 0, "a standard deviation >= 0 in uint8 levels"),
        ("duplicate_fraction", duplicate_fraction, 0 <= duplicate_fraction < 1, "a fraction in [0, 1)"),
        ("duplicate_copies", duplicate_copies,
         isinstance(duplicate_copies, (int, np.integer)) and duplicate_copies >= 2, "an integer >= 2"),
        ("duplicate_noise", duplicate_noise, duplicate_noise >= 0, "a standard deviation >= 0 in uint8 levels"),
    ]
    for name, value, ok, allowed in checks:
        if not ok:
            raise ConfigError(name, value, allowed)


def _add_duplicates(images, labels, n_classes, fraction, copies, noise, rng):
    """Overwrite groups of ``copies`` same-class images by noisy copies of the group's first member.
    Returns the groups (sorted index lists, base image first)."""
    n_groups = int(fraction * len(labels)) // copies
    if n_groups == 0:
        return []
    group_class = rng.permutation(np.arange(n_groups) % n_classes)
    groups = []
    for label in range(n_classes):
        k = int(np.sum(group_class == label))
        members = np.flatnonzero(labels == label)
        if k * copies > len(members):
            raise ConfigError("duplicate_fraction", fraction,
                              f"at most {len(members) // copies * n_classes * copies / len(labels):.3f} "
                              f"with {copies} copies per group")
        chosen = rng.choice(members, size=k * copies, replace=False).reshape(k, copies)
        for group in np.sort(chosen, axis=1):
            base = images[group[0]].astype(np.float64)
            for i in group[1:]:
                images[i] = np.clip(np.rint(base + rng.normal(0.0, noise, base.shape)), 0, 255)
            groups.append(group.tolist())
    return sorted(groups)


def make_procedural(n_per_class: int, image_size: int = 32, seed: int = 0, split: str = "train",
                    palette_size: int = 1, shape_scale: float = 0.6, scale_jitter: float = 0.1,
                    position_jitter: float = 0.06, rotation: float = 15.0, background: str = "plain",
                    noise_std: float = 0.0, duplicate_fraction: float = 0.0, duplicate_copies: int = 4,
                    duplicate_noise: float = 2.0):
    """Ten classes of coloured shapes (:data:`PROCEDURAL_CLASSES`), ``n_per_class`` images each, labels
    interleaved (0, 1, ..., 9, 0, 1, ...).

    image_size: side in pixels (16, 32, 64 and larger work). seed, split: the images are a deterministic
    function of (seed, split, options); "train" and "test" come from different random streams.
    palette_size: colours per class (1: one fixed colour; k > 1: k seeded colours around it, each image
    also jittered by a few levels). shape_scale: nominal shape size as a fraction of the side;
    scale_jitter: relative size jitter (uniform in [1 - j, 1 + j]); position_jitter: centre offset per
    axis, uniform in [-j, j] of the side; rotation: uniform angle in [-r, r] degrees. background: "plain"
    (light grey, per-image brightness jitter of +-5 %) or "gradient" (a seeded linear gradient between
    two light colours). noise_std: Gaussian pixel noise over the whole image, in uint8 levels.
    duplicate_fraction: fraction of the images replaced by near-duplicate groups of ``duplicate_copies``
    same-class images (the first member plus Gaussian noise of std ``duplicate_noise`` levels, rounded);
    the groups are in ``meta["duplicate_groups"]``. The number of images stays ``10 * n_per_class``.

    Returns an :class:`~bibad_utils.data.ImageSet` of uint8 ``[10 * n_per_class, S, S, 3]`` images.
    """
    from bibad_utils.data.base import ImageSet

    _validate(n_per_class, image_size, split, palette_size, shape_scale, scale_jitter, position_jitter,
              rotation, background, noise_std, duplicate_fraction, duplicate_copies, duplicate_noise)
    n_classes = len(PROCEDURAL_CLASSES)
    n = n_classes * int(n_per_class)
    rng = np.random.default_rng([int(seed), _SPLITS[split]])
    labels = np.tile(np.arange(n_classes, dtype=np.int64), int(n_per_class))

    cx = 0.5 + rng.uniform(-position_jitter, position_jitter, n)
    cy = 0.5 + rng.uniform(-position_jitter, position_jitter, n)
    radius = shape_scale / 2 * rng.uniform(1 - scale_jitter, 1 + scale_jitter, n)
    angle = np.deg2rad(rng.uniform(-rotation, rotation, n))
    palette = _palettes(int(palette_size), int(seed))
    fill = palette[labels, rng.integers(0, palette_size, n)]
    if palette_size > 1:
        fill = np.clip(fill + rng.normal(0.0, 6.0, fill.shape), 0, 255)
    secondary = _SECONDARY[labels]
    brightness = rng.uniform(0.95, 1.05, n)

    cover, second = _render(labels, cx, cy, radius, angle, int(image_size))
    coords = (np.arange(image_size) + 0.5) / image_size
    if background == "gradient":
        direction = rng.uniform(0, 2 * np.pi, n)
        ends = np.clip(_BACKGROUND + rng.normal(0.0, 25.0, (n, 2, 3)), 120, 255)
    images = np.empty((n, image_size, image_size, 3), np.uint8)
    noise_rng = np.random.default_rng([int(seed), _SPLITS[split], 2])
    for start in range(0, n, 256):
        sl = slice(start, min(n, start + 256))
        if background == "plain":
            bg = (_BACKGROUND[None] * brightness[sl, None])[:, None, None, :]
        else:
            t = (np.cos(direction[sl])[:, None, None] * (coords[None, None, :] - 0.5)
                 + np.sin(direction[sl])[:, None, None] * (coords[None, :, None] - 0.5)) / np.sqrt(2) + 0.5
            bg = ends[sl, None, None, 0] * (1 - t[..., None]) + ends[sl, None, None, 1] * t[..., None]
        cov, sec = cover[sl, ..., None], second[sl, ..., None]
        img = bg * (1 - cov) + fill[sl, None, None] * (cov - sec) + secondary[sl, None, None] * sec
        if noise_std > 0:
            img = img + noise_rng.normal(0.0, noise_std, img.shape)
        images[sl] = np.clip(np.rint(img), 0, 255)

    groups = []
    if duplicate_fraction > 0:
        groups = _add_duplicates(images, labels, n_classes, duplicate_fraction, int(duplicate_copies),
                                 duplicate_noise, np.random.default_rng([int(seed), _SPLITS[split], 3]))
    options = dict(palette_size=int(palette_size), shape_scale=shape_scale, scale_jitter=scale_jitter,
                   position_jitter=position_jitter, rotation=rotation, background=background,
                   noise_std=noise_std, duplicate_fraction=duplicate_fraction,
                   duplicate_copies=int(duplicate_copies), duplicate_noise=duplicate_noise)
    meta = {"source": "procedural", "split": split, "seed": int(seed), "image_size": int(image_size),
            "n_per_class": int(n_per_class), "options": options, "duplicate_groups": groups}
    return ImageSet(images, labels, list(PROCEDURAL_CLASSES), "procedural", meta)


def check_options(options: dict, image_size, n_per_class=None, n_test_per_class=None,
                  prefix: str = "dataset.options.") -> None:
    """Each option of the generator of the type of its default, and the whole set valid for both splits'
    sizes (:func:`_validate`; duplicate groups that fit in a class), without generating anything."""
    from bibad_utils.schema import is_int, is_number

    schema = DATASET.options()
    values = {**schema, **options}
    for key, value in options.items():
        default = schema[key]
        if isinstance(default, bool) or isinstance(default, str):
            ok = isinstance(value, type(default))
            what = "a string" if isinstance(default, str) else "true or false"
        elif isinstance(default, int):
            ok, what = is_int(value), "an integer"
        else:
            ok, what = is_number(value), "a number"
        if not ok:
            raise ConfigError(f"{prefix}{key}", value, what)
    for n in (n_per_class, n_test_per_class):
        try:
            _validate(n if is_int(n) else 1, image_size if is_int(image_size) else 32, "train",
                      **{k: values[k] for k in schema})
        except ConfigError as err:
            if err.param in options:
                raise ConfigError(f"{prefix}{err.param}", err.value, err.allowed) from None
            raise
        if is_int(n) and values["duplicate_fraction"] > 0:
            groups = int(values["duplicate_fraction"] * 10 * n) // values["duplicate_copies"]
            per_class = -(-groups // 10)
            if per_class * values["duplicate_copies"] > n:
                raise ConfigError(f"{prefix}duplicate_fraction", values["duplicate_fraction"],
                                  f"a fraction small enough that {values['duplicate_copies']}-image groups "
                                  f"fit in {n} images per class")


def _load(split="train", root=None, image_size=None, seed=0, download=False, **options):
    options.setdefault("n_per_class", 500 if split == "train" else 100)
    return make_procedural(image_size=32 if image_size is None else image_size, seed=seed, split=split, **options)


DATASET = DatasetSpec("procedural", len(PROCEDURAL_CLASSES), _load, make_procedural, per_class=True,
                      check_options=check_options,
                      summary="procedural shapes generated here (the demo's data)")
