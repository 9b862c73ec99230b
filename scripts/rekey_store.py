"""Carry a run's artifact store over to new keys when an input key changed but the content did not.

A store is content-addressed: each artifact's key hashes its stage, parameters and the keys of its inputs
(`bibad_utils.store.artifact_key`). When the key of a root input changes while the data behind it do not
(e.g. the dataset fingerprint stopped hashing file modification times), every key downstream changes too,
and the store would be recomputed from scratch. This script rewrites the keys instead:

    python scripts/rekey_store.py runs/cifar10/artifacts --map OLD_DATA_KEY=NEW_DATA_KEY [--apply]

It visits the artifacts in dependency order, replaces every old key found among an artifact's inputs or
(as a string value) in its parameters by the new one, recomputes the artifact's key from its stage,
parameters and inputs exactly as `artifact_key` does, and (with ``--apply``) renames the folder and rewrites
its manifest (``key``, ``inputs``, ``params``, plus ``rekeyed_from``). Files other than the manifest are not
touched, so their recorded SHA-256 still hold. Without ``--apply`` it only prints what it would do. Use it
only when the new key names the same content (say why in the commit); artifacts that do not depend on a
mapped key keep their key.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bibad_utils.store import MANIFEST, artifact_key, load_json, save_json


def _swap(value, mapping: dict):
    if isinstance(value, str):
        return mapping.get(value, value)
    if isinstance(value, list):
        return [_swap(v, mapping) for v in value]
    if isinstance(value, dict):
        return {k: _swap(v, mapping) for k, v in value.items()}
    return value


def plan(root: Path, mapping: dict[str, str]) -> list[tuple[Path, dict, str]]:
    """(folder, new manifest, new key) of every artifact whose key changes, in dependency order; ``mapping``
    grows with each artifact's old -> new key."""
    manifests = {}
    for folder in sorted(root.glob(f"*/*/{MANIFEST}")):
        if not folder.parent.name.startswith("."):
            manifests[folder.parent] = load_json(folder)
    out, done = [], set()
    progress = True
    while progress:
        progress = False
        for folder, m in manifests.items():
            pending = _pending(manifests, done) - {m["key"]}
            if folder in done or any(s in pending for s in m.get("inputs", []) + _strings(m["params"])):
                continue
            done.add(folder)
            progress = True
            inputs, params = _swap(list(m.get("inputs", [])), mapping), _swap(m["params"], mapping)
            key = artifact_key(m["stage"], params, inputs)
            if key != m["key"] and inputs == m.get("inputs", []) and params == m["params"]:
                raise SystemExit(f"{folder}: its key cannot be recomputed from its manifest ({key} != {m['key']}); "
                                 f"this store was written by other code: not re-keyed")
            if key != m["key"]:
                mapping[m["key"]] = key
                out.append((folder, {**m, "key": key, "inputs": sorted(inputs), "params": params,
                                     "rekeyed_from": m["key"]}, key))
    left = [str(f) for f in manifests if f not in done]
    if left:
        raise SystemExit(f"inputs never resolved (a cycle?): {left[:3]}")
    return out


def _pending(manifests, done) -> set[str]:
    """Keys of artifacts not visited yet (an artifact waits until its inputs have their final keys)."""
    return {m["key"] for f, m in manifests.items() if f not in done}


def _strings(value) -> list[str]:
    """Every string inside ``value`` (parameters may name other artifacts by key)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="the store: <run_dir>/artifacts")
    parser.add_argument("--map", action="append", required=True, metavar="OLD=NEW", help="a key that changed")
    parser.add_argument("--apply", action="store_true", help="rename and rewrite (default: print the plan)")
    args = parser.parse_args(argv)
    mapping = dict(pair.split("=", 1) for pair in args.map)
    changes = plan(Path(args.root), mapping)
    for folder, manifest, key in changes:
        print(f"{folder.parent.name}/{folder.name} -> {key}")
        if args.apply:
            target = folder.parent / key
            if target.exists():
                raise SystemExit(f"{target} exists already")
            save_json(folder / MANIFEST, manifest)
            os.rename(folder, target)
    print(f"{len(changes)} artifact(s) {'re-keyed' if args.apply else 'to re-key (dry run)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
