"""Profiles: load, merge and validate the configuration of a run.

A profile is one YAML file in ``notebooks/profiles/`` (or any path) that holds the whole configuration
of a run; a notebook receives ``profile`` (a name or a path) and ``overrides`` (a nested dict deep-merged
over the profile) from papermill and calls :func:`load_profile`. A profile may start from another (``extends: demo``) and
write only what differs (:func:`read_profile_file`): ``full`` and ``mnist`` extend the demo, so a setting
measured on the demo lives in ``demo.yaml`` alone. Every check happens here, once, before
any heavy work, and every failure is a :class:`ConfigError` that names the dotted parameter
(``sampling.n_target``), the value and what is allowed. Hostile input is refused the same way: the YAML
reader (:func:`bibad_utils.profile_yaml.parse_yaml`) refuses repeated keys and alias bombs before building a value;
``name`` is a plain name and a relative ``run_dir`` stays inside the repository; a seed lies in [0, 2**32 - 1];
a size whose arrays this machine's memory cannot hold is refused by its key (:func:`_check_sizes`).

Each section is declared by the module that owns it, as typed fields with one default each
(:class:`bibad_utils.schema.Section`), and listed in :data:`SECTIONS`; the top-level keys are
:data:`TOP_LEVEL`. The validated profile keeps what each section returns: the ``defenses`` and
``memorization`` sections with every default written in, the others as written (they are part of the
artifact keys), with the derived values a check adds: a fingerprint of every file the study reads (a
BadNets-2 pattern image: ``triggers.badnets2.pattern_sha256``; a real dataset's files:
``dataset.fingerprint``), so that every artifact key computed from it follows the content, not the path.
The code reads the validated profile as a frozen, typed object (:func:`bibad_utils.typed_config.typed_profile`:
``study.cfg.sampling.guidance``).
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path

import yaml

from bibad_utils.base import REPO_ROOT, ConfigError, raise_all, repo_path
from bibad_utils.cells import CONTROLS, EXPOSURE, validate_train_seeds
from bibad_utils.data.profile import DATASET, DATASET_CLASSES, check_ratios_fit
from bibad_utils.defenses.profile import DEFENSES
from bibad_utils.diffusion.settings import MODEL
from bibad_utils.judges.profile import JUDGES
from bibad_utils.memorization.settings import MEMORIZATION
from bibad_utils.sampling import SAMPLING
from bibad_utils.profile_yaml import MAX_YAML_CHARS, parse_yaml
from bibad_utils.schema import (REQUIRED, Field, Section, is_int, is_number, name_list, number_list, short,
                                typo_hint)
from bibad_utils.training import FINETUNE, PRETRAIN
from bibad_utils.triggers import TRIGGERS, TRIGGERS_SECTION

PROFILES_DIR = REPO_ROOT / "notebooks" / "profiles"
SEED_MAX = 2 ** 32 - 1
MAX_IMAGE_SIZE = 4096  # the paper's images are 512 px
MAX_TRAIN_SEEDS = 100  # training runs of one cell
DEVICES = ("cpu", "cuda", "auto")

# The sections of a profile, in the order they are checked (``triggers`` needs the dataset's image size);
# each validated once and kept as its Section returns it.
SECTIONS: dict[str, Section] = {s.name: s for s in (DATASET, TRIGGERS_SECTION, MODEL, PRETRAIN, FINETUNE, SAMPLING,
                                                    JUDGES, DEFENSES, MEMORIZATION, EXPOSURE)}
# The top-level keys that are not sections (a section's own key is a mapping, absent: {} for the
# optional ones). ``train_seeds`` (training runs per cell, bibad_utils.cells) is kept as written.
TOP_LEVEL: dict[str, Field] = {
    "name": Field("value", test=lambda v: isinstance(v, str) and bool(re.fullmatch(r"[A-Za-z0-9][\w-]{0,63}", v, re.A)),
                  allowed="a plain name of at most 64 letters, digits, - and _, starting with a letter or digit"),
    "description": Field("value", test=lambda v: isinstance(v, str), allowed="a string saying what the profile is for"),
    "seed": Field("int", low=0, high=SEED_MAX, allowed=f"an integer in [0, {SEED_MAX}] (2**32 - 1: the most numpy."
                                                         f"random.seed takes; torch.manual_seed stops at 2**64 - 1)"),
    "device": Field("choice", choices=DEVICES),
    "run_dir": Field("str", doc="artifacts in <run_dir>/artifacts, executed notebooks in <run_dir>/executed"),
    "cell_timeout": Field("int", low=1, default=None, nullable=True,
                          doc="seconds one notebook cell may run under papermill; null: no limit"),
    "target": Field("value", allowed="a class index", doc="the target class index"),
    "attacks": Field("value", allowed="a list of trigger kinds"),
    "ratios": Field("value", allowed="a list of poisoning ratios"),
    "controls": Field("value", allowed="a list of controls"),
    "train_seeds": Field("value", default=1, allowed="training runs per cell"),
    "attack_ratios": Field("value", default=None, allowed="a mapping attack -> a list of its ratios",
                           doc="the grid's ratios of a named attack (a subset of ratios); unnamed: all"),
}
UNFILLED = ("train_seeds", "attack_ratios")  # left out of the resolved profile when unset (artifact keys)
OPTIONAL_SECTIONS = ("triggers", "pretrain", "defenses", "memorization", "exposure")
NULLABLE_SECTIONS = ("triggers", "defenses", "memorization", "exposure")  # null reads as {}: every default
TOP_LEVEL_KEYS = tuple(TOP_LEVEL) + tuple(SECTIONS)
# A profile file may start from another (``extends: demo``) and write only what differs; it then sets
# these keys itself (bibad_utils.config.read_profile_file).
EXTENDING_SETS = ("name", "run_dir")


def profile_names() -> list[str]:
    """Names of the profiles shipped in ``notebooks/profiles/`` (file stems), sorted."""
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def deep_merge(base: dict, overrides: dict | None) -> dict:
    """A new dict: ``base`` with ``overrides`` merged in; nested dicts merge key by key, any other value
    (lists included) replaces the base's."""
    out = copy.deepcopy(base)
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def profile_path(profile: str | Path) -> Path:
    """A profile name (``"demo"``) or a path to a YAML file -> the file's path.

    Raises ConfigError for an unknown name (listing the known ones) or a missing file."""
    if not isinstance(profile, (str, Path)) or str(profile) == "":
        raise ConfigError("profile", profile, f"a profile name in {profile_names()} or a path to a YAML file")
    text = str(profile)
    looks_like_path = isinstance(profile, Path) or text.endswith((".yaml", ".yml")) or "/" in text
    if not looks_like_path:
        path = PROFILES_DIR / f"{text}.yaml"
        if not path.is_file():
            raise ConfigError("profile", text, f"one of {profile_names()} or a path to a YAML file")
        return path
    path = Path(text).expanduser()
    if not path.is_file():
        raise ConfigError("profile", text, f"an existing YAML file (no file at {path.resolve()})")
    return path.resolve()


def merge_onto_base(base: dict, child: dict) -> dict:
    """A profile that ``extends`` another: the child's keys deep-merged over the base's (nested mappings
    key by key, lists and values replaced), except that a child naming another dataset replaces the
    whole ``dataset`` section (a dataset's options belong to that dataset)."""
    merged = deep_merge(base, child)
    base_data, child_data = base.get("dataset"), child.get("dataset")
    if isinstance(base_data, dict) and isinstance(child_data, dict) \
            and child_data.get("name", base_data.get("name")) != base_data.get("name"):
        merged["dataset"] = copy.deepcopy(child_data)
    return merged


def read_profile_file(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    """A profile file's parameters, with the profile it ``extends`` (a name or a path relative to this
    file) merged under them (:func:`merge_onto_base`), recursively. Unvalidated."""
    try:
        size = path.stat().st_size
        if size > MAX_YAML_CHARS:
            raise ConfigError("profile", str(path), f"a YAML file of at most {MAX_YAML_CHARS:,} bytes (here {size:,})")
        data = parse_yaml(path.read_text(), "profile", str(path))
    except yaml.YAMLError as err:
        raise ConfigError("profile", str(path), f"valid YAML ({short(str(err), 400)})") from None
    if not isinstance(data, dict):
        raise ConfigError("profile", str(path), "a YAML mapping of parameters")
    if "extends" not in data:
        return data
    base = data.pop("extends")
    if not isinstance(base, str) or not base:
        raise ConfigError("extends", base, f"in {path.name}: the name of a profile in {profile_names()} or a path "
                                           f"to a YAML file")
    if base.endswith((".yaml", ".yml")) or "/" in base:
        base = str((path.parent / base).resolve())
    base_path = profile_path(base).resolve()
    if base_path in chain + (path.resolve(),):
        loop = " -> ".join(p.name for p in chain + (path.resolve(), base_path))
        raise ConfigError("extends", base, f"a profile that does not extend itself (here: {loop})")
    for key in EXTENDING_SETS:
        if key not in data:
            raise ConfigError(key, REQUIRED, f"a value of its own in {path.name}: a profile that extends "
                                             f"{base_path.stem} sets {' and '.join(EXTENDING_SETS)}, so that its "
                                             f"runs do not overwrite the base's")
    return merge_onto_base(read_profile_file(base_path, chain + (path.resolve(),)), data)


def load_profile(profile: str | Path = "demo", overrides: dict | None = None) -> dict:
    """Load a profile by name or path (with the profile it ``extends`` under it), deep-merge
    ``overrides`` over it, validate, and return it.

    Relative ``run_dir`` and ``dataset.root`` are resolved against the repository root, so a notebook
    opened from ``notebooks/`` writes where a papermill run does.
    """
    data = read_profile_file(profile_path(profile))
    if overrides is not None and not isinstance(overrides, dict):
        raise ConfigError("overrides", short(overrides), "a dict of parameters, nested like the profile")
    return validate_profile(deep_merge(data, overrides))


def parse_assignment(text: str) -> dict:
    """``"sampling.n_target=100"`` -> ``{"sampling": {"n_target": 100}}`` (the value read as YAML)."""
    if "=" not in text:
        raise ConfigError("--set", short(text), "key.sub=value")
    key, _, raw = text.partition("=")
    parts = key.strip().split(".")
    if not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", p) for p in parts):
        raise ConfigError("--set", short(text), "a dotted key of identifiers, e.g. sampling.n_target=100")
    try:
        value = parse_yaml(raw, "--set", short(text), key.strip()) if raw.strip() else None
    except yaml.YAMLError as err:
        problem = " ".join(str(getattr(err, "problem", None) or err).split())
        raise ConfigError("--set", short(text), f"key.sub=VALUE with VALUE valid YAML (here: {problem}); quote a "
                                         f"string, e.g. --set 'key=\"text\"'") from None
    for part in reversed(parts):
        value = {part: value}
    return value


def overrides_from_assignments(assignments) -> dict:
    """Several ``key.sub=value`` strings -> one nested overrides dict (later ones win)."""
    out: dict = {}
    for text in assignments or ():
        out = deep_merge(out, parse_assignment(text))
    return out


# ----------------------------------------------------------------------------------------------
# the profile


def _check_ratios(ratios) -> None:
    for i, p in enumerate(ratios if isinstance(ratios, list) else []):
        if not is_number(p) or not 0 < p < 1:
            raise ConfigError(f"ratios[{i}]", short(p), "a number in (0, 1): a fraction of the whole training set")
    number_list("ratios", ratios, 0, 1, True, True, what="poisoning ratios, each")


def _check_attack_ratios(value, attacks, ratios) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise ConfigError("attack_ratios", short(value), "a mapping attack -> a non-empty list of values of ratios")
    for attack, sub in value.items():
        if attack not in attacks:
            raise ConfigError(f"attack_ratios.{attack}", short(sub), f"an attack of the grid: one of {list(attacks)}")
        if not isinstance(sub, list) or not sub or any(p not in ratios for p in sub) or len(set(sub)) != len(sub):
            raise ConfigError(f"attack_ratios.{attack}", short(sub),
                              f"a non-empty list of distinct values of ratios {ratios}")


def machine_memory() -> int:
    """Bytes of physical memory of this machine; 0 when unknown (then no bound is computed from it)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return 0


def check_fits_memory(param: str, value: int, bytes_each: float, what: str, memory: int) -> None:
    """Refuse ``value`` items of ``bytes_each`` bytes (``what``: the items, in words) when together they take
    more than ``memory`` bytes (0: unknown): the run would fail late, with a memory error naming no key."""
    if memory and bytes_each > 0 and value * bytes_each > memory:
        most = max(0, int(memory // bytes_each))
        raise ConfigError(param, short(value), f"at most {most:,} here: {value:,} {what} would take "
                                               f"{value * bytes_each / 2 ** 30:,.1f} GiB, more than this "
                                               f"machine's {memory / 2 ** 30:,.1f} GiB of memory")


def _check_run_dir(run_dir: str) -> None:
    """A relative ``run_dir`` must stay inside the repository (no ``..`` out of it, not the root itself); an
    absolute one (or ``~/...``) is the user's own choice."""
    path = Path(run_dir).expanduser()
    inside = Path(os.path.normpath(REPO_ROOT / path))
    if not path.is_absolute() and (inside == REPO_ROOT or not inside.is_relative_to(REPO_ROOT)):
        raise ConfigError("run_dir", short(run_dir), f"a folder inside the repository ({REPO_ROOT}) or an absolute "
                                                     f"path; this one is {inside}")


def _check_sizes(cfg: dict, memory: int) -> None:
    """Refuse a size whose arrays cannot fit in this machine's ``memory`` (bytes; 0: unknown), naming its key
    before any work: image sets of S x S x 3 bytes, float32 batches, the bootstrap's resamples (32 bytes per
    resampled score), the similarity blocks (4 bytes per cosine)."""
    ds, smp, d, m = cfg["dataset"], cfg["sampling"], cfg["defenses"], cfg["memorization"]
    s = ds["image_size"]
    image, n_classes = 3 * s * s, DATASET_CLASSES[ds["name"]]
    images, batch = f"images of {s} x {s} x 3 bytes", f"float32 images of {s} x {s} x 3"
    n_scored = max(d["n_detect"] or smp["n_all"], 2 * d["n_known"])
    per_class = f"x {n_classes} classes of {images}"
    rows = [("dataset.n_per_class", ds.get("n_per_class"), n_classes * image, per_class),
            ("dataset.n_test_per_class", ds.get("n_test_per_class"), n_classes * image, per_class),
            ("sampling.n_target", smp["n_target"], image, images), ("sampling.n_all", smp["n_all"], image, images),
            ("sampling.batch_size", smp["batch_size"], 8 * image, f"{batch} (twice: guidance)"),
            ("defenses.n_detect", d["n_detect"], image, images), ("defenses.n_known", d["n_known"], 2 * image, images),
            ("defenses.dc_n_images", d["dc_n_images"], 2 * image, images),
            ("defenses.n_calibration", d["n_calibration"], image, images),
            ("defenses.dc_batch_size", d["dc_batch_size"], 4 * image, batch),
            ("defenses.strip.n_overlay", (d.get("strip") or {}).get("n_overlay"), 4 * image, batch),
            ("defenses.n_boot", d["n_boot"], 32 * n_scored, f"bootstrap resamples of {n_scored:,} scores"),
            ("memorization.batch_size", m["batch_size"], 4 * image, batch)]
    rows += [(f"{name}.batch_size", cfg[name].get("batch_size"), 4 * image, batch)
             for name in ("pretrain", "finetune", "judges")]
    if ds.get("n_per_class"):
        rows.append(("memorization.block", m["block"], 4 * n_classes * ds["n_per_class"], "rows of cosines"))
    for param, value, bytes_each, what in rows:
        if is_int(value):
            check_fits_memory(param, value, bytes_each, what, memory)


def _collect(errors: list, check, *args):
    """``check(*args)``; a ConfigError it raises is added to ``errors`` (None returned) instead of stopping."""
    try:
        return check(*args)
    except ConfigError as err:
        errors.append(err)
        return None


def _top_level(cfg: dict, errors: list) -> None:
    """The top-level keys: unknown ones, the typed ones (defaults filled in), the sections' presence."""
    for key in cfg:
        if key not in TOP_LEVEL_KEYS:
            errors.append(ConfigError(str(key)[:80], short(cfg[key]), f"a known top-level key"
                                      f"{typo_hint(key, TOP_LEVEL_KEYS)}: one of {list(TOP_LEVEL_KEYS)}"))
    for key, f in TOP_LEVEL.items():
        if key in cfg:
            _collect(errors, f.check, key, cfg[key])
        elif f.default is REQUIRED:
            errors.append(ConfigError(key, REQUIRED, "a value (every profile sets it)"))
        elif key not in UNFILLED:
            cfg[key] = copy.deepcopy(f.default)
    for name in SECTIONS:
        if name not in cfg:
            if name not in OPTIONAL_SECTIONS:
                errors.append(ConfigError(name, REQUIRED, "a value (every profile sets it)"))
                continue
            cfg[name] = {"steps": 0} if name == "pretrain" else {}
        if not isinstance(cfg[name], dict) and not (cfg[name] is None and name in NULLABLE_SECTIONS):
            errors.append(ConfigError(name, short(cfg[name]), "a mapping of parameters"))


def _check_target(cfg: dict) -> None:
    n_classes = DATASET_CLASSES[cfg["dataset"]["name"]]
    if not is_int(cfg["target"]) or not 0 <= cfg["target"] < n_classes:
        raise ConfigError("target", short(cfg["target"]),
                          f"a class index in [0, {n_classes - 1}] for dataset {cfg['dataset']['name']}")


def _check_seed_runs(cfg: dict) -> None:
    for kind, runs in validate_train_seeds(cfg["train_seeds"], "train_seeds").items():
        if runs > MAX_TRAIN_SEEDS:
            where = "train_seeds" if is_int(cfg["train_seeds"]) else f"train_seeds.{kind}"
            raise ConfigError(where, short(runs), f"an integer in [1, {MAX_TRAIN_SEEDS}] (training runs per cell)")


def _check_pretrain_data(cfg: dict) -> None:
    ds = cfg["dataset"]
    if cfg["pretrain"].get("data", "subset") == "all" and (ds["name"] == "procedural" or ds.get("n_per_class") is None):
        raise ConfigError("pretrain.data", "all", f"subset: dataset {ds['name']!r} has no "
                          "class-balanced subset (dataset.n_per_class) for 'all' to widen")


def validate_profile(cfg: dict) -> dict:
    """Check a whole configuration (already merged) and return it: each section as its
    :class:`~bibad_utils.schema.Section` keeps it, ``run_dir`` made absolute.

    Every bad value is reported at once where the checks do not depend on each other (the top-level keys;
    then the grid's keys; then each section; then the checks across sections): one bad value raises its
    ConfigError, several a :class:`~bibad_utils.base.ConfigErrors` (the first one's ``param``, all in
    ``errors``). The dataset is checked alone, before anything that reads its size or classes."""
    if not isinstance(cfg, dict):
        raise ConfigError("profile", short(cfg), "a mapping of parameters")
    cfg, errors = copy.deepcopy(cfg), []
    _top_level(cfg, errors)
    raise_all(errors)
    _check_run_dir(cfg["run_dir"])
    cfg["run_dir"] = str(repo_path(cfg["run_dir"]))

    if isinstance(cfg["dataset"], dict) and is_int(cfg["dataset"].get("image_size"), MAX_IMAGE_SIZE + 1):
        raise ConfigError("dataset.image_size", short(cfg["dataset"]["image_size"]),
                          f"an integer in [8, {MAX_IMAGE_SIZE}] (pixels)")
    cfg["dataset"] = DATASET.validate(cfg["dataset"], profile=cfg)
    _collect(errors, _check_target, cfg)
    before = len(errors)
    _collect(errors, name_list, "attacks", cfg["attacks"], tuple(TRIGGERS))
    _collect(errors, _check_ratios, cfg["ratios"])
    if len(errors) == before:  # these read valid attacks and ratios
        _collect(errors, _check_attack_ratios, cfg.get("attack_ratios"), cfg["attacks"], cfg["ratios"])
        _collect(errors, check_ratios_fit, cfg)
    _collect(errors, name_list, "controls", cfg["controls"], CONTROLS, True)
    raise_all(errors)
    for name, section in SECTIONS.items():
        if name != "dataset":
            kept = _collect(errors, section.validate, cfg[name], None, cfg)  # (values, prefix, profile)
            cfg[name] = cfg[name] if kept is None else kept
    raise_all(errors)
    if "train_seeds" in cfg:
        _collect(errors, _check_seed_runs, cfg)
    _collect(errors, _check_sizes, cfg, machine_memory())
    _collect(errors, _check_pretrain_data, cfg)
    raise_all(errors)
    return cfg


def resolve_device(cfg: dict):
    """The (validated) profile's ``device`` as a ``torch.device``: ``auto`` picks CUDA when available, else the
    CPU; ``cuda`` on a machine without CUDA is a ConfigError."""
    import torch

    device = cfg.get("device", "cpu")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", device, "cpu or auto on a machine without a CUDA GPU")
    return torch.device(device)
