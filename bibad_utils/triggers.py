"""Backdoor triggers: BadNets-1 (corner patch), BadNets-2 (blended pattern) and WaNet (smooth warp).

Every trigger is a deterministic function of (kind, image_size, seed, options) and is applied to float
images in [-1, 1], ``[C, H, W]`` or ``[N, C, H, W]``, returning a new tensor of the same shape.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from bibad_utils.base import ConfigError
from bibad_utils.schema import Field, Section, is_int, is_number
# the pattern image (drawn or read from a file) lives in bibad_utils.patterns
from bibad_utils.patterns import (PATTERN_PARAM, cartoon_pattern, file_sha256, load_pattern,  # noqa: F401
                                  resolve_pattern_path)


def badnets1_side(image_size: int) -> int:
    """Side in pixels of the BadNets-1 patch: ``max(5, image_size // 10)``.

    The paper states both s = image_side // 10 and "5 px at 32 px"; the two agree from 50 px up, and
    below that the 5-pixel minimum keeps the diagonal band drawable (512 px -> 51, 32 px -> 5).
    """
    return max(5, int(image_size) // 10)


def badnets1_patch(side: int) -> np.ndarray:
    """bool ``[side, side]``: True where the BadNets-1 patch is white.

    Pixel (row x, column y) is white iff ``y - (side - 1 - x)`` lies in
    ``[-ceil(side / 4), floor(side / 4) - 1]``: a band along the anti-diagonal; the rest is black.
    """
    if side < 1:
        raise ConfigError("size", side, "a patch side >= 1 pixel")
    x, y = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    d = y - (side - 1 - x)
    return (d >= -math.ceil(side / 4)) & (d <= side // 4 - 1)


def _digest(array) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


class Trigger:
    """A backdoor trigger for square images of side ``image_size``.

    ``apply(x)``: float images in [-1, 1], ``[C, H, W]`` or ``[N, C, H, W]`` with H = W = image_size, on
    any device -> the triggered images, a new tensor of the same shape, dtype and device.
    """

    kind: str = ""

    def __init__(self, image_size: int, seed: int, options: dict):
        self.image_size = int(image_size)
        self.seed = int(seed)
        self.options = dict(options)

    def _check(self, x) -> torch.Tensor:
        x = torch.as_tensor(x)
        if not torch.is_floating_point(x):
            raise ConfigError("x.dtype", str(x.dtype), "float images in [-1, 1]")
        if x.ndim not in (3, 4) or tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            raise ConfigError("x.shape", tuple(x.shape),
                              f"[C, {self.image_size}, {self.image_size}] or [N, C, {self.image_size}, "
                              f"{self.image_size}] (the trigger was built for {self.image_size} px)")
        return x

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply(x)

    def describe(self) -> dict:
        """JSON-ready description for manifests: kind, image_size, seed, options and derived values."""
        return {"kind": self.kind, "image_size": self.image_size, "seed": self.seed, "options": self.options}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"


class BadNetsPatch(Trigger):
    """BadNets-1: an opaque black patch with a white anti-diagonal band in the bottom-right corner."""

    kind = "badnets1"

    def __init__(self, image_size, seed=0, size=None):
        super().__init__(image_size, seed, {"size": size})
        if size is not None and not is_int(size):
            raise ConfigError("triggers.badnets1.size", size, f"a patch side in [1, {self.image_size}] pixels")
        self.side = badnets1_side(image_size) if size is None else int(size)
        if not 1 <= self.side <= self.image_size:
            raise ConfigError("triggers.badnets1.size", size, f"a patch side in [1, {self.image_size}] pixels")
        self.patch = torch.from_numpy(badnets1_patch(self.side)).float() * 2 - 1

    def apply(self, x):
        x = self._check(x)
        out = x.clone()
        out[..., -self.side:, -self.side:] = self.patch.to(device=x.device, dtype=x.dtype)
        return out

    def describe(self):
        return {**super().describe(), "side": self.side, "corner": "bottom-right",
                "white_mask": badnets1_patch(self.side).astype(int).tolist()}


class BlendTrigger(Trigger):
    """BadNets-2: x' = (1 - alpha) x + alpha t with a fixed full-image pattern t."""

    kind = "badnets2"

    def __init__(self, image_size, seed=0, alpha=0.2, pattern_path=None, pattern_sha256=None):
        options = {"alpha": alpha, "pattern_path": pattern_path}
        if pattern_sha256 is not None:
            options["pattern_sha256"] = pattern_sha256
        super().__init__(image_size, seed, options)
        if not is_number(alpha) or not 0 < alpha <= 1:
            raise ConfigError("triggers.badnets2.alpha", alpha, "a blend weight in (0, 1]")
        self.alpha = float(alpha)
        self.conversion = "drawn at the image size"
        self.pattern_file_sha256 = None
        if pattern_path is None:
            pattern = cartoon_pattern(self.image_size)
        else:
            pattern, self.conversion = load_pattern(pattern_path, self.image_size)
            self.pattern_file_sha256 = file_sha256(resolve_pattern_path(pattern_path))
            if pattern_sha256 is not None and pattern_sha256 != self.pattern_file_sha256:
                raise ConfigError(PATTERN_PARAM, str(pattern_path),
                                  f"the file whose sha256 is {pattern_sha256} (as when the profile was "
                                  f"validated); it has changed since: validate the profile again")
        self.pattern_uint8 = pattern
        self.pattern = torch.from_numpy(pattern).permute(2, 0, 1).float() / 127.5 - 1

    def apply(self, x):
        x = self._check(x)
        if x.shape[-3] != 3:
            raise ConfigError("x.shape", tuple(x.shape), "3 colour channels for the BadNets-2 blend")
        return (1 - self.alpha) * x + self.alpha * self.pattern.to(device=x.device, dtype=x.dtype)

    def describe(self):
        source = "generated cartoon cat" if self.options["pattern_path"] is None else str(
            self.options["pattern_path"])
        out = {**super().describe(), "alpha": self.alpha, "pattern": source,
               "pattern_sha256_16": _digest(self.pattern_uint8)}
        if self.pattern_file_sha256 is not None:
            out["pattern_file_sha256"] = self.pattern_file_sha256
            out["pattern_conversion"] = self.conversion
        return out


def warp_offsets(n: int, grid: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` random control-point fields of a warp: float64 ``[n, 2, grid, grid]``, uniform in [-1, 1),
    drawn from ``generator`` (the WaNet trigger draws one from a generator seeded with its seed)."""
    return torch.rand(n, 2, int(grid), int(grid), generator=generator, dtype=torch.float64) * 2 - 1


def _identity_grid(image_size: int) -> torch.Tensor:
    line = torch.linspace(-1, 1, image_size, dtype=torch.float64)
    yy, xx = torch.meshgrid(line, line, indexing="ij")
    return torch.stack([xx, yy], dim=-1)[None]


def warp_grids(offsets: torch.Tensor, image_size: int, strength: float) -> torch.Tensor:
    """Sampling grids of :class:`WarpTrigger` warps from control-point fields ``offsets`` (float64
    ``[N, 2, g, g]``, :func:`warp_offsets`): each field normalised to mean absolute value 1, upsampled
    bicubically to ``image_size``, scaled by ``strength / image_size`` and added to the identity grid in
    [-1, 1] coordinates (clamped there). Returns float32 ``[N, S, S, 2]`` for :func:`apply_warp`."""
    offsets = torch.cat([o / o.abs().mean() for o in offsets.split(1)])
    field = F.interpolate(offsets, size=(image_size, image_size), mode="bicubic",
                          align_corners=True).permute(0, 2, 3, 1)
    return (_identity_grid(image_size) + float(strength) * field / image_size).clamp(-1, 1).float()


def random_warp_grids(n: int, image_size: int, grid: int, strength: float,
                      generator: torch.Generator) -> torch.Tensor:
    """``n`` warps drawn at random like the WaNet trigger's field (same ``grid`` and ``strength``, other
    offsets): float32 sampling grids ``[n, S, S, 2]`` for :func:`apply_warp`. WaNet's "noise mode" trains
    on images warped this way, labelled clean, so that a detector learns the trigger's field, not any warp."""
    return warp_grids(warp_offsets(n, grid, generator), image_size, strength)


def apply_warp(x: torch.Tensor, grids: torch.Tensor) -> torch.Tensor:
    """Resample float images ``x`` ``[N, C, S, S]`` along sampling grids ``[1 or N, S, S, 2]`` (bilinear,
    border padding, as :class:`WarpTrigger`); returns a new tensor of ``x``'s shape, dtype and device."""
    grids = grids.to(device=x.device, dtype=x.dtype).expand(x.shape[0], -1, -1, -1)
    return F.grid_sample(x, grids, mode="bilinear", padding_mode="border", align_corners=True)


class WarpTrigger(Trigger):
    """WaNet: resample the image along a fixed smooth warp field (Nguyen & Tran, ICLR 2021).

    A ``grid x grid`` field of uniform random 2-D offsets (seeded, drawn once) is normalised to mean
    absolute value 1, upsampled bicubically to the image size and added, scaled by ``strength / S``, to
    the identity sampling grid in [-1, 1] coordinates (clamped there), so the mean displacement is
    ``strength / 2`` pixels at any size S; images are resampled bilinearly with ``grid_sample``.
    """

    kind = "wanet"

    def __init__(self, image_size, seed=0, grid=4, strength=0.5):
        super().__init__(image_size, seed, {"grid": grid, "strength": strength})
        if not is_int(grid) or not 2 <= grid <= self.image_size:
            raise ConfigError("triggers.wanet.grid", grid, f"an integer in [2, {self.image_size}]")
        if not is_number(strength) or not strength > 0:
            raise ConfigError("triggers.wanet.strength", strength, "a number > 0")
        gen = torch.Generator().manual_seed(self.seed)
        self.grid = warp_grids(warp_offsets(1, int(grid), gen), self.image_size, strength)
        self.displacement_px = ((self.grid.double() - _identity_grid(self.image_size)) * (self.image_size - 1) / 2)[0]

    def apply(self, x):
        x = self._check(x)
        batch = x if x.ndim == 4 else x[None]
        return apply_warp(batch, self.grid) if x.ndim == 4 else apply_warp(batch, self.grid)[0]

    def describe(self):
        disp = self.displacement_px.norm(dim=-1)
        return {**super().describe(), "mean_displacement_px": round(float(disp.mean()), 4),
                "max_displacement_px": round(float(disp.max()), 4),
                "field_sha256_16": _digest(self.grid.numpy())}


# ----------------------------------------------------------------------------------------------
# the registry: every trigger kind, its builder and its options (read by the profile checks)


@dataclass(frozen=True)
class TriggerOption:
    """One option of a trigger kind: ``check(value, image_size)`` says whether a value is allowed and
    ``allowed(image_size)`` says in words what is. ``derived`` options are not set by hand: the profile
    check computes them (e.g. the pattern file's sha256, so that artifact keys follow its content)."""

    name: str
    default: Any
    check: Callable[[Any, int], bool]
    allowed: Callable[[int], str]
    derived: bool = False


@dataclass(frozen=True)
class TriggerKind:
    """A trigger kind: ``builder(image_size, seed, **options)`` returns its :class:`Trigger`; ``derive``
    (optional) ``(options, image_size, param) -> options`` fills the derived options after the checks
    (e.g. a pattern file's sha256)."""

    name: str
    builder: Callable[..., Trigger]
    options: tuple[TriggerOption, ...]
    summary: str
    derive: Callable[[dict, int, str], dict] | None = None

    def option(self, name: str) -> TriggerOption | None:
        return next((o for o in self.options if o.name == name), None)

    @property
    def settable(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.options if not o.derived)


def _pattern_ok(value, image_size) -> bool:
    return value is None or (isinstance(value, str) and bool(value.strip()))


def _derive_pattern_sha256(options: dict, image_size: int, param: str) -> dict:
    """badnets2: open and check the pattern file (when one is given) and record its sha256, so that the
    artifact keys follow the file's content."""
    out = dict(options)
    out.pop("pattern_sha256", None)
    if out.get("pattern_path") is not None:
        load_pattern(out["pattern_path"], image_size, param=f"{param}.pattern_path")
        out["pattern_sha256"] = file_sha256(resolve_pattern_path(out["pattern_path"]))
    return out


TRIGGERS: dict[str, TriggerKind] = {
    "badnets1": TriggerKind("badnets1", BadNetsPatch, (
        TriggerOption("size", None, lambda v, s: v is None or (is_int(v) and 1 <= v <= s),
                      lambda s: f"a patch side in [1, {s}] pixels, or null for max(5, image_size // 10)"),
    ), "an opaque black-and-white patch in the bottom-right corner"),
    "badnets2": TriggerKind("badnets2", BlendTrigger, (
        TriggerOption("alpha", 0.2, lambda v, s: is_number(v) and 0 < v <= 1,
                      lambda s: "a blend weight in (0, 1]"),
        TriggerOption("pattern_path", None, _pattern_ok,
                      lambda s: "null (the drawn cartoon pattern) or the path of a square, opaque image file"),
        TriggerOption("pattern_sha256", None, lambda v, s: v is None or isinstance(v, str),
                      lambda s: "the sha256 of the pattern file (computed by the profile check)", derived=True),
    ), "a full-image pattern blended in with weight alpha", derive=_derive_pattern_sha256),
    "wanet": TriggerKind("wanet", WarpTrigger, (
        TriggerOption("grid", 4, lambda v, s: is_int(v) and 2 <= v <= s,
                      lambda s: f"an integer in [2, {s}] (control points per side of the warp field)"),
        TriggerOption("strength", 0.5, lambda v, s: is_number(v) and v > 0,
                      lambda s: "a number > 0 (twice the mean displacement in pixels)"),
    ), "a fixed smooth warp of the whole image"),
}


def register_trigger(kind: TriggerKind) -> TriggerKind:
    """Add ``kind`` to :data:`TRIGGERS`: profiles may then name it among their ``attacks`` and set its
    options under ``triggers``; a name already taken is an error."""
    if kind.name in TRIGGERS:
        raise ConfigError("trigger kind", kind.name, f"a name not among {list(TRIGGERS)}")
    TRIGGERS[kind.name] = kind
    return kind


def validate_trigger_options(kind: str, options, image_size: int, prefix: str = "triggers.") -> dict:
    """Check the options of trigger ``kind`` for ``image_size`` px images against the registry, without
    building the trigger (a pattern file is opened and checked, and its sha256 computed); returns the
    options with the derived ones filled in (``pattern_sha256`` when a pattern file is given). Raises
    ConfigError naming ``<prefix><kind>.<option>``, the value and what is allowed."""
    if kind not in TRIGGERS:
        raise ConfigError(f"{prefix}{kind}", options, f"options of a trigger kind in {list(TRIGGERS)}")
    spec = TRIGGERS[kind]
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise ConfigError(f"{prefix}{kind}", options, f"a mapping of options among {list(spec.settable)}")
    out = dict(options)
    for name, value in options.items():
        opt = spec.option(name)
        if opt is None:
            import difflib
            close = difflib.get_close_matches(str(name), spec.settable, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"{prefix}{kind}.{name}", value,
                              f"a known option of {kind}{hint}: one of {list(spec.settable)}")
        if not opt.check(value, image_size):
            raise ConfigError(f"{prefix}{kind}.{name}", value, opt.allowed(image_size))
    return spec.derive(out, image_size, f"{prefix}{kind}") if spec.derive is not None else out


def make_trigger(kind: str, image_size: int, seed: int = 0, **options) -> Trigger:
    """The trigger ``kind`` (a name in :data:`TRIGGERS`) for S x S images.

    Options: badnets1 ``size`` (patch side, default :func:`badnets1_side`); badnets2 ``alpha`` (0.2),
    ``pattern_path`` (None: the generated :func:`cartoon_pattern`); wanet ``grid`` (4), ``strength``
    (0.5). ``seed`` draws the WaNet field; the other kinds are fixed and record it only.
    """
    if kind not in TRIGGERS:
        raise ConfigError("trigger kind", kind, " | ".join(TRIGGERS))
    if not is_int(image_size) or image_size < 8:
        raise ConfigError("image_size", image_size, "an integer >= 8 (pixels)")
    spec = TRIGGERS[kind]
    allowed = [o.name for o in spec.options]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"triggers.{kind}", unknown, f"options among {', '.join(spec.settable)}")
    return spec.builder(int(image_size), int(seed), **options)


def _section_fields() -> dict[str, Field]:
    return {kind: Field("value", default={}, nullable=True, test=lambda v: isinstance(v, dict),
                        allowed=f"a mapping of options among {list(spec.settable)}")
            for kind, spec in TRIGGERS.items()}


def _check_section(values: dict, prefix: str, profile: dict) -> dict:
    given = profile.get("triggers") or {}
    size = profile["dataset"]["image_size"]
    return {kind: validate_trigger_options(kind, given[kind], size, f"{prefix}.") for kind in given}


# The profile's ``triggers`` section: per trigger kind of the registry, its options (checked by the kind's
# own option specs; the kinds the profile names are kept with their derived options filled in).
TRIGGERS_SECTION = Section("triggers", _section_fields, check=_check_section, fill=False)
