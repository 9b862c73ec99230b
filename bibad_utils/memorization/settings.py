"""The profile's ``memorization`` section: its keys, each with its one default, and their validation; and the
parameters of the embedding's artifact keys (:func:`embedding_key_params`)."""

from __future__ import annotations

from bibad_utils.base import ConfigError, repo_path
from bibad_utils.schema import Field, Section, is_number, short

EMBEDDINGS = ("pixels", "classifier", "resnet50_imagenet")
WEIGHTED = ("resnet50_imagenet",)  # the embeddings that read memorization.weights_path
_COSINE = "null or a cosine similarity in [-1, 1]"

MEMORIZATION = Section("memorization", {
    "embedding": Field("choice", default="pixels", choices=EMBEDDINGS, allowed=" | ".join(EMBEDDINGS),
                       doc="the replication measure (see embed)"),
    "pixel_size": Field("int", default=16, low=1, allowed="an integer >= 1",
                        doc="pixels: side of the area-averaged thumbnail"),
    "highpass": Field("int", default=0, low=0, test=lambda k: k == 0 or k % 2 == 1,
                      allowed="0 (off) or an odd integer >= 1",
                      doc="pixels: subtract a box blur of this side (px) from the thumbnail first, so that "
                          "only edges and texture are compared (0: off)"),
    "weights_path": Field("value", default=None, test=lambda v: v is None or str(v).endswith(".safetensors"),
                          allowed="null or a path to a .safetensors file",
                          doc="resnet50_imagenet: local state dict (null: torch hub cache)"),
    "batch_size": Field("int", default=256, low=1, allowed="an integer >= 1", doc="images per forward pass"),
    "block": Field("int", default=1024, low=1, allowed="an integer >= 1",
                   doc="rows per similarity block (memory ~ block * N * 4 bytes)"),
    "duplicate_threshold": Field("number", default=None, low=-1, high=1, nullable=True, allowed=_COSINE,
                                 doc="cosine >= this joins a duplicate group; null: the F1 optimum on the "
                                     "planted duplicates (procedural only)"),
    "replication_threshold": Field("number", default=None, low=-1, high=1, nullable=True, allowed=_COSINE,
                                   doc="a generation is a replica above this; null: see replication_quantile"),
    "replication_quantile": Field("number", default=None, low=0, high=1, low_open=True, high_open=True,
                                  nullable=True, allowed="null or a quantile in (0, 1)",
                                  doc="q: a replica is closer to a training image than a fraction q of "
                                      "held-out real images are (null: the duplicate threshold)"),
    "ratios": Field("value", default=[0.05, 0.1],
                    test=lambda r: isinstance(r, (list, tuple)) and len(r) > 0
                    and all(is_number(p) and 0 < p < 1 for p in r),
                    allowed="a non-empty list of ratios in (0, 1)",
                    doc="poisoning ratios of the random vs duplicate comparison"),
    "top_pairs": Field("int", default=8, low=1, allowed="an integer >= 1", doc="replication pairs shown"),
}, check=lambda values, prefix, profile: _check(values, prefix))

DEFAULTS = MEMORIZATION.defaults()


def _check(values: dict, prefix: str) -> dict:
    """The section to keep: ratios as floats, a ``weights_path`` made absolute (relative to the repository, as
    the notebooks run there) once its file is known to exist."""
    out = {**values, "ratios": [float(p) for p in values["ratios"]]}
    if values["weights_path"] is not None:
        path = repo_path(values["weights_path"])
        if not path.is_file():
            raise ConfigError(f"{prefix}.weights_path", short(str(values["weights_path"])),
                              f"null or an existing .safetensors file (there is no file at {short(str(path), 200)!r})")
        out["weights_path"] = str(path)
    return out


def embedding_key_params(section: dict) -> dict:
    """The parameters of the artifact keys of the embeddings (stages ``mem_embed``, ``mem_heldout``,
    ``mem_replication`` ...), from a validated ``memorization`` section: the measure, the thumbnail size of
    ``pixels`` and, only when the embedding reads a ``weights_path`` file, that file's content (bytes and
    SHA-256; not its name, place or time), so that other
    weights never reuse an embedding. Without a weights file the keys are those computed before it counted."""
    params = {"embedding": section["embedding"]}
    if section["embedding"] == "pixels":
        params["pixel_size"] = section["pixel_size"]
        if section.get("highpass"):  # only when on: the keys of every profile without it stay as they were
            params["highpass"] = section["highpass"]
    if section.get("weights_path") is not None and section["embedding"] in WEIGHTED:
        from bibad_utils.files import verified_sha256

        path = repo_path(section["weights_path"])
        params["weights"] = {"bytes": path.stat().st_size, "sha256": verified_sha256(path)}
    return params


def validate_config(section: dict | None, prefix: str = "memorization") -> dict:
    """Check a profile's ``memorization`` section and fill in the defaults (in place when a dict is
    given); returns it. Unknown keys and bad values raise ConfigError naming ``<prefix>.<key>``."""
    section = {} if section is None else section
    section.update(MEMORIZATION.validate(section, prefix))
    return section
