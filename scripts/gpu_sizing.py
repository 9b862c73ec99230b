"""Run the demo chain (real package code) for one or more cells on a GPU and print G1/G2 and accuracy.

Used to size the demo profile quickly: the same profile runs on the CPU in `make book`.
    python scripts/gpu_sizing.py PROFILE_YAML OUT_DIR [cell ...]      cell: clean | relabel | KIND:P
With no cells it only pre-trains (and judges); run it once so parallel cell runs share the pre-training.
"""
import json
import sys
from pathlib import Path

import numpy as np

from bibad_utils.plots import image_grid
from bibad_utils.stages import Cell, Study


def parse(c):
    if c == "clean":
        return Cell("clean")
    kind, p = c.split(":")
    return Cell(kind, float(p))


def main():
    if len(sys.argv) < 3 or sys.argv[1] in ("-h", "--help"):
        sys.exit(__doc__)
    profile, out = sys.argv[1], Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    study = Study(profile, {"device": "cuda", "run_dir": str(out / "run")}, progress=False)
    rows = []
    cells = [parse(c) for c in sys.argv[3:]]
    if not cells:
        study.judges.classifier()
        for kind in study.cfg.attacks:
            study.judges.detector(kind)
        cells = [None]
    for cell in cells:
        gens = study.generations(cell)
        kind = cell.trigger_kind if cell is not None and cell.trigger_kind else study.cfg.attacks[0]
        for (name, w), g in gens.items():
            j = study.judges.judge(g, kind)
            t, m = j["trigger"], j["match"]
            rows.append({"cell": cell.name if cell else "pretrained", "set": name, "w": w,
                         "trig": float(t.mean()), "G1": float((t & ~m).mean()), "G2": float((t & m).mean()),
                         "match": float(m.mean())})
            print(json.dumps(rows[-1]), flush=True)
            slug = cell.slug if cell else "pretrained"
            image_grid(g.images[:40], nrow=10).savefig(out / f"{slug}_{name}_w{w:g}.png")
        if cell is not None:
            rows.append({"cell": cell.name, "train_s": study.train_record(cell)["wall_time_s"]})
    with open(out / f"rows_{'_'.join(sys.argv[3:]) or 'pre'}.json".replace(":", "-"), "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
