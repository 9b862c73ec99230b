"""Measure the fine-tuning exposure at which a poisoned DM draws its trigger (the exposure curve of
:mod:`bibad_utils.experiments.training_report.exposure`): fine-tune the given cells for about ``--epochs``
epochs keeping ``--points`` checkpoints, read each checkpoint's target-prompt generations with the trigger
detector and the template, and write the table, a per-cell summary and the figure into
``<run_dir>/exposure/``. Resumable: everything it trains or draws is cached in the profile's store.

    python scripts/exposure_curve.py --profile demo --cells badnets1:0.01 badnets1:0.02 --epochs 50 --points 10
    python scripts/exposure_curve.py --profile cifar10      # the cells, epochs, points and w of its exposure section
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from bibad_utils.cells import Cell
from bibad_utils.config import ConfigError, overrides_from_assignments
from bibad_utils.experiments.training_report.exposure import exposure_curve, exposure_figure, first_learned
from bibad_utils.paper import PAPER_EPOCHS


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="KEY.SUB=VALUE")
    parser.add_argument("--cells", nargs="+", default=None, metavar="KIND:P",
                        help="default: the profile's exposure.cells, else badnets1:0.01 badnets1:0.02")
    parser.add_argument("--epochs", type=float, default=None, help=f"default: the profile's (~{PAPER_EPOCHS})")
    parser.add_argument("--points", type=int, default=None, help="default: the profile's exposure.points")
    parser.add_argument("--w", type=float, default=None, help="guidance (default: the profile's exposure.w, else "
                                                             "the profile's first)")
    args = parser.parse_args(argv)
    from bibad_utils.stages import Study

    try:
        study = Study(args.profile, overrides_from_assignments(args.set))
        sec = study.cfg.exposure
        specs = args.cells or sec.cells or ["badnets1:0.01", "badnets1:0.02"]
        cells = [Cell.parse(c) for c in specs]
        epochs = sec.epochs if args.epochs is None else args.epochs
        points = sec.points if args.points is None else args.points
        w = sec.w if args.w is None else args.w
        started = time.perf_counter()
        curve = exposure_curve(study, cells, epochs=epochs, points=points, w=w)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = study.run_dir / "exposure"
    out.mkdir(parents=True, exist_ok=True)
    curve.to_csv(out / "exposure_curve.csv", index=False)
    summary = first_learned(curve)
    summary.to_csv(out / "first_learned.csv", index=False)
    exposure_figure(study, curve).savefig(out / "exposure_curve.png")
    (out / "run.json").write_text(json.dumps({"profile": args.profile, "cells": specs, "epochs": epochs,
                                              "points": points, "w": w, "overrides": args.set,
                                              "seconds": round(time.perf_counter() - started, 1)}, indent=1))
    print(curve.to_string(index=False))
    print(summary.to_string(index=False))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
