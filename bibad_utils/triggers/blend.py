"""BadNets-2: a full-image pattern blended in with weight alpha (the drawn cartoon, or a user's image)."""

from __future__ import annotations

import torch

from bibad_utils.base import ConfigError, repo_path
from bibad_utils.files import file_sha256
# the pattern image (drawn or read from a file) lives in bibad_utils.patterns
from bibad_utils.patterns import PATTERN_PARAM, cartoon_pattern, load_pattern
from bibad_utils.schema import is_number
from bibad_utils.triggers.base import Trigger, TriggerKind, TriggerOption, array_digest


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
            self.pattern_file_sha256 = file_sha256(repo_path(pattern_path))
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
        source = "generated cartoon cat" if self.options["pattern_path"] is None else str(self.options["pattern_path"])
        out = {**super().describe(), "alpha": self.alpha, "pattern": source,
               "pattern_sha256_16": array_digest(self.pattern_uint8)}
        if self.pattern_file_sha256 is not None:
            out["pattern_file_sha256"] = self.pattern_file_sha256
            out["pattern_conversion"] = self.conversion
        return out

    def view(self) -> dict:
        return {"style": "image", "data": self.pattern_uint8,
                "title": f"BadNets-2\npattern blended at alpha = {self.alpha:g}"}


def _derive_pattern_sha256(options: dict, image_size: int, param: str) -> dict:
    """badnets2: open and check the pattern file (when one is given) and record its sha256, so that the
    artifact keys follow the file's content."""
    out = dict(options)
    out.pop("pattern_sha256", None)
    if out.get("pattern_path") is not None:
        load_pattern(out["pattern_path"], image_size, param=f"{param}.pattern_path")
        out["pattern_sha256"] = file_sha256(repo_path(out["pattern_path"]))
    return out


KIND = TriggerKind("badnets2", BlendTrigger, (
    TriggerOption("alpha", 0.2, lambda v, s: is_number(v) and 0 < v <= 1,
                  lambda s: "a blend weight in (0, 1]"),
    TriggerOption("pattern_path", None, lambda v, s: v is None or (isinstance(v, str) and bool(v.strip())),
                  lambda s: "null (the drawn cartoon pattern) or the path of a square, opaque image file"),
    TriggerOption("pattern_sha256", None, lambda v, s: v is None or isinstance(v, str),
                  lambda s: "the sha256 of the pattern file (computed by the profile check)", derived=True),
), "a full-image pattern blended in with weight alpha", derive=_derive_pattern_sha256)
