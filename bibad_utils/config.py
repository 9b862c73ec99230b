"""Profiles: load, merge and validate the configuration of a run.

A profile is one YAML file in ``notebooks/profiles/`` (or any path) that holds the whole configuration
of a run; a notebook receives ``profile`` (a name or a path) and ``overrides`` (a nested dict deep-merged
over the profile) from papermill and calls :func:`load_profile`. Every check happens here, before any
heavy work, and every failure is a :class:`ConfigError` that names the dotted parameter
(``sampling.n_target``), the value and what is allowed.

The trigger kinds and their options come from the one registry :data:`bibad_utils.triggers.TRIGGERS`;
``dataset.options`` are checked against the signature of the dataset's builder. Where a profile makes
the study read a file (a BadNets-2 pattern image, a real dataset's folder), the check adds a fingerprint
of its content to the validated configuration (``triggers.badnets2.pattern_sha256``,
``dataset.fingerprint``), so that every artifact key computed from it follows the content, not the path;
a profile that reads no file is returned without them, and its keys are unchanged.

Sections owned by other modules may be checked further by those modules: if
``bibad_utils.<module>`` defines ``validate_config(section: dict, prefix: str)`` (or
``validate_<section>(section: dict)``) it is called with the section (see ``SECTION_VALIDATORS``).
"""

from __future__ import annotations

import copy
import difflib
import importlib
import importlib.util
import math
import numbers
import re
from pathlib import Path
from typing import Any

import yaml

from bibad_utils.base import REPO_ROOT, ConfigError  # noqa: F401 (re-exported: the study's error type)

PROFILES_DIR = REPO_ROOT / "notebooks" / "profiles"

DATASET_CLASSES = {"procedural": 10, "imagenette": 10, "caltech15": 15, "cifar10": 10, "mnist5k": 10}
CONTROLS = ("clean", "relabel")
DEVICES = ("cpu", "cuda", "auto")

REQUIRED_KEYS = ("name", "description", "seed", "device", "run_dir", "dataset", "target", "attacks",
                 "ratios", "controls", "model", "finetune", "sampling", "judges")
# Optional top-level keys and the value they take when a profile leaves them out.
OPTIONAL_DEFAULTS: dict[str, Any] = {
    "cell_timeout": None,     # seconds one notebook cell may run under papermill; null: no limit
    "triggers": {},
    "pretrain": {"steps": 0},
    "defenses": {},
    "memorization": {},
}
# Optional top-level keys left out of the resolved profile when absent, each checked by its module's function.
OPTIONAL_CHECKED = {
    "train_seeds": ("bibad_utils.cells", "validate_train_seeds"),  # training runs per cell (default 1)
}
TOP_LEVEL_KEYS = REQUIRED_KEYS + tuple(OPTIONAL_DEFAULTS) + tuple(OPTIONAL_CHECKED)

# section -> module whose optional validate_config(section, prefix) checks the section's own keys
SECTION_VALIDATORS = {
    "dataset": "bibad_utils.data",
    "triggers": "bibad_utils.triggers",
    "model": "bibad_utils.diffusion",
    "pretrain": "bibad_utils.training",
    "finetune": "bibad_utils.training",
    "sampling": "bibad_utils.sampling",
    "judges": "bibad_utils.judges",
    "defenses": "bibad_utils.experiments.castle_walls",
    "memorization": "bibad_utils.memorization",
}


def attack_kinds() -> tuple[str, ...]:
    """The trigger kinds a profile may name: the keys of :data:`bibad_utils.triggers.TRIGGERS`."""
    from bibad_utils.triggers import TRIGGERS

    return tuple(TRIGGERS)


def __getattr__(name):
    # ``ATTACKS`` is read from the trigger registry on first use (the registry imports this module)
    if name == "ATTACKS":
        return attack_kinds()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _Missing:
    def __repr__(self):
        return "<missing>"


MISSING = _Missing()


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-4`` as a float (YAML 1.1 wants a dot in the mantissa)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_yaml(text: str):
    """YAML text -> Python value, with ``1e-4``-style floats understood."""
    return yaml.load(text, Loader=_Loader)


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


def load_profile(profile: str | Path = "demo", overrides: dict | None = None) -> dict:
    """Load a profile by name or path, deep-merge ``overrides`` over it, validate, and return it.

    Relative ``run_dir`` and ``dataset.root`` are resolved against the repository root, so a notebook
    opened from ``notebooks/`` writes where a papermill run does.
    """
    path = profile_path(profile)
    try:
        data = parse_yaml(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError("profile", str(path), f"valid YAML ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError("profile", str(path), "a YAML mapping of parameters")
    if overrides is not None and not isinstance(overrides, dict):
        raise ConfigError("overrides", overrides, "a dict of parameters, nested like the profile")
    return validate_profile(deep_merge(data, overrides))


def parse_assignment(text: str) -> dict:
    """``"sampling.n_target=100"`` -> ``{"sampling": {"n_target": 100}}`` (the value read as YAML)."""
    if "=" not in text:
        raise ConfigError("--set", text, "key.sub=value")
    key, _, raw = text.partition("=")
    parts = key.strip().split(".")
    if not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", p) for p in parts):
        raise ConfigError("--set", text, "a dotted key of identifiers, e.g. sampling.n_target=100")
    try:
        value = parse_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        problem = " ".join(str(getattr(err, "problem", None) or err).split())
        raise ConfigError("--set", text, f"key.sub=VALUE with VALUE valid YAML (here: {problem}); quote a "
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
# checks of single values


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


def _int(cfg: dict, key: str, prefix: str, minimum: int = 1, required: bool = True, nullable=False):
    value = cfg.get(key, MISSING)
    param = f"{prefix}{key}"
    if value is MISSING and not required:
        return
    if value is None and nullable:
        return
    if not _is_int(value) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigError(param, value, what + (" or null" if nullable else ""))


def _number(cfg: dict, key: str, prefix: str, low=None, high=None, low_open=False, high_open=False,
            required: bool = True, nullable=False):
    value = cfg.get(key, MISSING)
    param = f"{prefix}{key}"
    if value is MISSING and not required:
        return
    if value is None and nullable:
        return
    ok = _is_number(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        rng = f" in {lo}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi}"
        raise ConfigError(param, value, "a number" + ("" if low is None and high is None else rng))


def _bool(cfg: dict, key: str, prefix: str, required: bool = True):
    value = cfg.get(key, MISSING)
    if value is MISSING and not required:
        return
    if not isinstance(value, bool):
        raise ConfigError(f"{prefix}{key}", value, "true or false")


def _string(cfg: dict, key: str, prefix: str, required: bool = True, nullable=False):
    value = cfg.get(key, MISSING)
    if value is MISSING and not required:
        return
    if value is None and nullable:
        return
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{prefix}{key}", value, "a non-empty string" + (" or null" if nullable else ""))


def _section(cfg: dict, key: str) -> dict:
    value = cfg.get(key, MISSING)
    if not isinstance(value, dict):
        raise ConfigError(key, value, "a mapping of parameters")
    return value


def _near_typos(section: dict, known, prefix: str):
    """Unknown keys that look like a known one are typos (``finetune.step`` for ``steps``); other
    unknown keys are left to the module that owns the section."""
    for key in section:
        if key in known:
            continue
        close = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.8)
        if close:
            raise ConfigError(f"{prefix}{key}", section[key], f"a known key (did you mean {prefix}{close[0]}?)")


def _name_list(cfg: dict, key: str, allowed, allow_empty: bool):
    value = cfg.get(key, MISSING)
    expected = f"a list of distinct names from {list(allowed)}" + ("" if allow_empty else ", not empty")
    if not isinstance(value, list) or (not value and not allow_empty):
        raise ConfigError(key, value, expected)
    for i, item in enumerate(value):
        if item not in allowed:
            raise ConfigError(f"{key}[{i}]", item, f"one of {list(allowed)}")
    if len(set(value)) != len(value):
        raise ConfigError(key, value, expected)


# ----------------------------------------------------------------------------------------------
# the profile


def validate_profile(cfg: dict) -> dict:
    """Check a whole configuration (already merged) and return it, with optional top-level keys filled
    in and ``run_dir`` / ``dataset.root`` made absolute. Raises ConfigError on the first bad value."""
    if not isinstance(cfg, dict):
        raise ConfigError("profile", cfg, "a mapping of parameters")
    cfg = copy.deepcopy(cfg)
    for key in cfg:
        if key not in TOP_LEVEL_KEYS:
            close = difflib.get_close_matches(str(key), TOP_LEVEL_KEYS, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(key, cfg[key], f"a known top-level key{hint}: one of {list(TOP_LEVEL_KEYS)}")
    for key in REQUIRED_KEYS:
        if key not in cfg:
            raise ConfigError(key, MISSING, "a value (every profile sets it)")
    for key, default in OPTIONAL_DEFAULTS.items():
        if key not in cfg:
            cfg[key] = copy.deepcopy(default)

    _string(cfg, "name", "")
    if not isinstance(cfg["description"], str):
        raise ConfigError("description", cfg["description"], "a string saying what the profile is for")
    _int(cfg, "seed", "", minimum=0)
    if cfg["device"] not in DEVICES:
        raise ConfigError("device", cfg["device"], f"one of {list(DEVICES)}")
    _string(cfg, "run_dir", "")
    cfg["run_dir"] = str(_absolute(cfg["run_dir"]))
    _int(cfg, "cell_timeout", "", nullable=True)

    n_classes = _validate_dataset(cfg)
    if not _is_int(cfg["target"]) or not 0 <= cfg["target"] < n_classes:
        raise ConfigError("target", cfg["target"],
                          f"a class index in [0, {n_classes - 1}] for dataset {cfg['dataset']['name']}")

    _name_list(cfg, "attacks", attack_kinds(), allow_empty=False)
    _validate_ratios(cfg.get("ratios"))
    _check_ratios_fit(cfg)
    _name_list(cfg, "controls", CONTROLS, allow_empty=True)

    from bibad_utils.triggers import validate_trigger_options

    triggers = _section(cfg, "triggers")
    for kind, options in triggers.items():
        triggers[kind] = validate_trigger_options(kind, options, cfg["dataset"]["image_size"])

    model = _section(cfg, "model")
    _string(model, "backend", "model.")

    _validate_training(_section(cfg, "pretrain"), "pretrain.", min_steps=0)
    _validate_training(_section(cfg, "finetune"), "finetune.", min_steps=1)
    _validate_sampling(_section(cfg, "sampling"))
    _validate_judges(_section(cfg, "judges"))
    _section(cfg, "defenses")
    _section(cfg, "memorization")

    for section, module in SECTION_VALIDATORS.items():
        validator = _module_validator(module, section)
        if validator is not None:
            validator(cfg[section])
    for key, (module, function) in OPTIONAL_CHECKED.items():
        if key in cfg:
            getattr(importlib.import_module(module), function)(cfg[key], key)
    return cfg


def _absolute(path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else REPO_ROOT / p


def _validate_dataset(cfg: dict) -> int:
    ds = _section(cfg, "dataset")
    known = ("name", "root", "image_size", "n_per_class", "n_test_per_class", "options", "fingerprint")
    _near_typos(ds, known, "dataset.")
    name = ds.get("name", MISSING)
    if name not in DATASET_CLASSES:
        raise ConfigError("dataset.name", name, f"one of {list(DATASET_CLASSES)}")
    _int(ds, "image_size", "dataset.", minimum=8)
    procedural = name == "procedural"
    _int(ds, "n_per_class", "dataset.", required=procedural, nullable=not procedural)
    _int(ds, "n_test_per_class", "dataset.", required=procedural, nullable=not procedural)
    root = ds.get("root")
    if root is not None:
        if not isinstance(root, str) or not root.strip():
            raise ConfigError("dataset.root", root, "a folder path or null")
        if not procedural:
            path = _absolute(root)
            if not path.is_dir():
                raise ConfigError("dataset.root", root, f"an existing folder for {name} (not found: {path})")
            ds["root"] = str(path)
    options = ds.setdefault("options", {})
    if options is None:
        ds["options"] = {}
    elif not isinstance(options, dict):
        raise ConfigError("dataset.options", options, "a mapping of dataset options")
    from bibad_utils.data import dataset_fingerprint, validate_dataset_options

    validate_dataset_options(name, ds["options"], image_size=ds["image_size"],
                             n_per_class=ds.get("n_per_class"), n_test_per_class=ds.get("n_test_per_class"))
    # a real dataset is read from files: the key of everything computed from it follows their content
    ds.pop("fingerprint", None)
    if not procedural:
        fingerprint = dataset_fingerprint(name, ds.get("root"), **ds["options"])
        if fingerprint is not None:
            ds["fingerprint"] = fingerprint
    return DATASET_CLASSES[name]


def _check_ratios_fit(cfg: dict):
    """Each p must leave int(N p) <= the number of non-target images (known before loading for the
    procedural dataset: N = 10 n_per_class, one tenth per class)."""
    ds = cfg["dataset"]
    if ds["name"] != "procedural":
        return
    n_classes = DATASET_CLASSES["procedural"]
    n_images = n_classes * ds["n_per_class"]
    n_other = (n_classes - 1) * ds["n_per_class"]
    for i, p in enumerate(cfg["ratios"]):
        n = int(math.floor(n_images * p + 1e-9))
        if n > n_other:
            raise ConfigError(f"ratios[{i}]", p,
                              f"a ratio of at most {n_other / n_images:g}: int(N p) = {n} poisoned images "
                              f"exceed the {n_other} non-target images of the procedural dataset "
                              f"(N = {n_images})")


def _validate_ratios(ratios):
    expected = "a non-empty list of distinct poisoning ratios, each in (0, 1)"
    if not isinstance(ratios, list) or not ratios:
        raise ConfigError("ratios", ratios, expected)
    for i, p in enumerate(ratios):
        if not _is_number(p) or not 0 < p < 1:
            raise ConfigError(f"ratios[{i}]", p, "a number in (0, 1): a fraction of the whole training set")
    if len(set(ratios)) != len(ratios):
        raise ConfigError("ratios", ratios, expected)


def _validate_training(sec: dict, prefix: str, min_steps: int):
    known = ("steps", "batch_size", "lr", "weight_decay", "ema_decay", "checkpoint_every", "cond_drop",
             "warmup_steps", "grad_clip") + (("shipped",) if prefix == "pretrain." else ())
    _near_typos(sec, known, prefix)
    _bool(sec, "shipped", prefix, required=False)
    _int(sec, "steps", prefix, minimum=min_steps)
    active = sec["steps"] > 0
    _int(sec, "batch_size", prefix, required=active)
    _number(sec, "lr", prefix, low=0, low_open=True, required=active)
    _number(sec, "weight_decay", prefix, low=0, required=False)
    _number(sec, "ema_decay", prefix, low=0, high=1, high_open=True, required=False, nullable=True)
    _int(sec, "checkpoint_every", prefix, required=False, nullable=True)
    _number(sec, "cond_drop", prefix, low=0, high=1, high_open=True, required=False)


def _validate_sampling(sec: dict):
    prefix = "sampling."
    known = ("steps", "eta", "guidance", "guidance_all", "n_target", "n_all", "batch_size")
    _near_typos(sec, known, prefix)
    _int(sec, "steps", prefix)
    _number(sec, "eta", prefix, low=0, high=1)
    guidance = sec.get("guidance", MISSING)
    if not isinstance(guidance, list) or not guidance:
        raise ConfigError("sampling.guidance", guidance, "a non-empty list of guidance scales w > 0")
    for i, w in enumerate(guidance):
        if not _is_number(w) or w <= 0:
            raise ConfigError(f"sampling.guidance[{i}]", w, "a guidance scale w > 0 (1 = plain conditional)")
    if len(set(guidance)) != len(guidance):
        raise ConfigError("sampling.guidance", guidance, "distinct guidance scales")
    _int(sec, "n_target", prefix)
    _int(sec, "n_all", prefix)
    _int(sec, "batch_size", prefix)
    _number(sec, "guidance_all", prefix, low=0, low_open=True, required=False, nullable=True)


def _validate_judges(sec: dict):
    prefix = "judges."
    known = ("arch", "epochs", "batch_size", "lr", "pretrained")
    _near_typos(sec, known, prefix)
    _string(sec, "arch", prefix)
    _int(sec, "epochs", prefix)
    _int(sec, "batch_size", prefix)
    _number(sec, "lr", prefix, low=0, low_open=True)
    _bool(sec, "pretrained", prefix, required=False)


def _module_validator(module: str, section: str):
    """The owner module's check of ``section``: ``validate_config(section, prefix)`` or
    ``validate_<section>(section)``; None when the module or both functions are absent."""
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:
        return None
    if spec is None:
        return None
    owner = importlib.import_module(module)
    generic = getattr(owner, "validate_config", None)
    if generic is not None:
        return lambda sec: generic(sec, section)
    return getattr(owner, f"validate_{section}", None)


def resolve_device(cfg: dict):
    """The profile's ``device`` as a ``torch.device``: ``auto`` picks CUDA when available, else the CPU;
    ``cuda`` on a machine without CUDA is a ConfigError."""
    import torch

    device = cfg.get("device", "cpu")
    if device not in DEVICES:
        raise ConfigError("device", device, f"one of {list(DEVICES)}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", device, "cpu or auto on a machine without a CUDA GPU")
    return torch.device(device)
