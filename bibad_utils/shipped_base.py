"""The clean base DM shipped with the package (``bibad_utils/assets/<name>/``): found by its artifact key,
installed into a run's store as the ``pretrain`` artifact a training would have written, and written
there in the first place by :func:`ship_base` (with the command that trained it)."""

from __future__ import annotations

from pathlib import Path

from bibad_utils import store as st
from bibad_utils.base import ConfigError

SHIPPED_DIR = Path(__file__).resolve().parent / "assets"
SHIPPED_FILES = ("model.safetensors", "config.json", "train_record.json", "manifest.json")


def shipped_bases(root: Path | None = None) -> dict[str, Path]:
    """Pre-trained DMs shipped with the package: artifact key -> folder (``<root>/*/manifest.json``)."""
    found = {}
    for manifest in sorted(Path(SHIPPED_DIR if root is None else root).glob("*/manifest.json")):
        found[st.load_json(manifest)["key"]] = manifest.parent
    return found


def install_shipped_base(store: st.ArtifactStore, key: str, profile: str = "", root: Path | None = None) -> bool:
    """Put the shipped base DM of artifact ``key`` into ``store`` (as the ``pretrain`` artifact a
    training would have written) unless the store has it already. Returns True when the store now holds
    it; False, after a printed note, when no shipped model has this key (the caller then trains it)."""
    import shutil
    import sys

    if store.exists("pretrain", key):
        return True
    root = SHIPPED_DIR if root is None else Path(root)
    folder = shipped_bases(root).get(key)
    if folder is None:
        print(f"note: pretrain.shipped is set, but no base DM shipped in {root} has the key {key} of this "
              f"{profile} configuration (its model, pretrain settings or dataset differ): training it",
              file=sys.stderr)
        return False
    shipped = st.load_json(folder / "manifest.json")
    with store.build("pretrain", shipped["params"], shipped["inputs"], device="shipped") as art:
        if art.key != key:
            raise ConfigError("shipped manifest", str(folder / "manifest.json"),
                              f"params and inputs that hash to its key {key} (they give {art.key})")
        (art.dir / "model").mkdir()
        for name in ("model.safetensors", "config.json"):
            shutil.copy2(folder / name, art.dir / "model" / name)
        shutil.copy2(folder / "train_record.json", art.dir / "train_record.json")
        art.meta["shipped_from"] = folder.name
        art.meta["train"] = shipped.get("train")
        art.meta["trained"] = {k: shipped.get(k) for k in ("git_commit", "created", "device", "command", "retrain")}
    return True


RETRAIN = "make book RETRAIN_BASE=1  (bibad run --profile PROFILE --retrain-base)"


def ship_base(store: st.ArtifactStore, key: str, dest: Path, command: str) -> Path:
    """Copy the pre-trained DM ``key`` of ``store`` into ``dest`` (model weights fp32, config, training
    record, and its manifest with ``command``, the command that trained it, and ``retrain``, the flag
    that trains it again); returns ``dest``."""
    import shutil

    src = store.path("pretrain", key)
    manifest = store.load_manifest("pretrain", key)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("model.safetensors", "config.json"):
        shutil.copy2(src / "model" / name, dest / name)
    shutil.copy2(src / "train_record.json", dest / "train_record.json")
    manifest["command"] = command
    manifest["retrain"] = RETRAIN
    st.save_json(dest / "manifest.json", manifest)
    return dest
