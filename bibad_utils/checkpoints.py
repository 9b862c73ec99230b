"""Training checkpoints: model, EMA and optimizer state as safetensors with a ``state.json``, written whole
or not at all, with a ``checksums.json`` so that a resume reads only the bytes that were written."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from bibad_utils.files import checksum_problems, load_json, write_checksums

CHECKPOINT_DIR = "checkpoints"
KEPT_DIR = "kept"  # in the work dir: the EMA weights of the checkpoints ``keep_checkpoints`` keeps


def flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """torch optimizer state dict -> (tensors ``state.<param id>.<name>``, string metadata)."""
    tensors, scalars = {}, {}
    for pid, entries in state["state"].items():
        for name, value in entries.items():
            key = f"state.{pid}.{name}"
            if torch.is_tensor(value):
                tensors[key] = value.detach().contiguous().cpu()
            else:
                scalars[key] = value
    meta = {"param_groups": json.dumps(state["param_groups"]), "scalars": json.dumps(scalars)}
    return tensors, meta


def unflatten_optimizer(path: Path) -> dict:
    state: dict[int, dict] = {}
    with safe_open(str(path), framework="pt", device="cpu") as f:
        meta = f.metadata()
        for key in f.keys():
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = f.get_tensor(key)
    for key, value in json.loads(meta["scalars"]).items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = value
    return {"state": state, "param_groups": json.loads(meta["param_groups"])}


def cpu_copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def latest_checkpoint(work_dir) -> Path | None:
    """The newest complete checkpoint folder ``<work_dir>/checkpoints/step-XXXXXXXX`` whose files match their
    ``checksums.json`` (None if none; one that does not match is named on stderr and skipped)."""
    root = Path(work_dir) / CHECKPOINT_DIR
    done = sorted(p for p in root.glob("step-*") if (p / "state.json").is_file()) if root.is_dir() else []
    for ckpt in reversed(done):
        problems = checksum_problems(ckpt)
        if not problems:
            return ckpt
        print(f"warning: checkpoint {ckpt} is not resumed from: {problems[0]}", file=sys.stderr, flush=True)
    return None


def save_checkpoint(work_dir: Path, step: int, model, ema, optimizer, state: dict) -> Path:
    """Write ``model``, ``ema`` and ``optimizer`` .safetensors and ``state.json`` into a partial folder,
    rename it into place (a checkpoint is complete or absent) and drop the older ones."""
    root = work_dir / CHECKPOINT_DIR
    final = root / f"step-{step:08d}"
    partial = root / f".step-{step:08d}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    save_file(cpu_copy(model.state_dict_to_save()), str(partial / "model.safetensors"))
    save_file(cpu_copy(ema), str(partial / "ema.safetensors"))
    tensors, meta = flatten_optimizer(optimizer.state_dict())
    save_file(tensors, str(partial / "optimizer.safetensors"), metadata=meta)
    (partial / "state.json").write_text(json.dumps(state, indent=1) + "\n")
    write_checksums(partial)  # a resume reads only these bytes (see store._set_aside_damaged_work)
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    for old in root.glob("step-*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def kept_steps(steps: int, checkpoint_every: int, n: int) -> list[int]:
    """The checkpoint steps (multiples of ``checkpoint_every``, and ``steps``) whose EMA weights ``keep_checkpoints
    = n`` keeps: ``n`` of them evenly spread, the last included (all when there are at most ``n``; none for 0)."""
    marks = sorted(set(range(checkpoint_every, steps + 1, checkpoint_every)) | ({steps} if steps else set()))
    return spread(marks, n)


def spread(items: list, n: int) -> list:
    """``n`` of ``items`` evenly spread, the last included (all when there are at most ``n``; none for 0)."""
    return items if n >= len(items) else [items[round((k + 1) * len(items) / n) - 1] for k in range(n)]


def kept_checkpoints(artifact_dir) -> list[dict]:
    """The checkpoints whose EMA weights a training artifact kept (``<artifact_dir>/checkpoints/step-*``), step
    ascending: each one's ``state.json`` (``step``, ``images_seen``, ...) and ``path``, its ``ema.safetensors``."""
    folders = (Path(artifact_dir) / CHECKPOINT_DIR).glob("step-*")
    return sorted(({**load_json(f / "state.json"), "path": str(f / "ema.safetensors")} for f in folders),
                  key=lambda r: r["step"])
