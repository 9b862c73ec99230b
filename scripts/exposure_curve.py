"""Measure the fine-tuning exposure at which a poisoned DM draws its trigger (the exposure curve of
:mod:`bibad_utils.experiments.training_report.exposure`): fine-tune the given cells for about ``--epochs``
epochs keeping ``--points`` checkpoints, read each checkpoint's target-prompt generations with the trigger
detector and the template, and write the table, a per-cell summary and the figure into
``<run_dir>/exposure/``. Resumable: everything it trains or draws is cached in the profile's store.

    python scripts/exposure_curve.py --profile demo --cells badnets1:0.01 badnets1:0.02 --epochs 50 --points 10
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from bibad_utils.cells import Cell
from bibad_utils.config import ConfigError, overrides_from_assignments
from bibad_utils.experiments.training_report.exposure import exposure_curve, first_learned
from bibad_utils.paper import PAPER_EPOCHS


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="KEY.SUB=VALUE")
    parser.add_argument("--cells", nargs="+", default=["badnets1:0.01", "badnets1:0.02"], metavar="KIND:P")
    parser.add_argument("--epochs", type=float, default=float(PAPER_EPOCHS))
    parser.add_argument("--points", type=int, default=10)
    parser.add_argument("--w", type=float, default=None, help="guidance (default: the profile's first)")
    args = parser.parse_args(argv)
    from bibad_utils.plots import exposure_chart
    from bibad_utils.stages import Study

    try:
        study = Study(args.profile, overrides_from_assignments(args.set))
        cells = [Cell.parse(c) for c in args.cells]
        started = time.perf_counter()
        curve = exposure_curve(study, cells, epochs=args.epochs, points=args.points, w=args.w)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = study.run_dir / "exposure"
    out.mkdir(parents=True, exist_ok=True)
    curve.to_csv(out / "exposure_curve.csv", index=False)
    summary = first_learned(curve)
    summary.to_csv(out / "first_learned.csv", index=False)
    own = study.exposure(cells[0])
    exposure_chart(curve, {f"the paper (~{PAPER_EPOCHS})": PAPER_EPOCHS, f"this profile ({own:.1f})": own}).savefig(
        out / "exposure_curve.png")
    (out / "run.json").write_text(json.dumps({"profile": args.profile, "cells": args.cells, "epochs": args.epochs,
                                              "points": args.points, "w": args.w, "overrides": args.set,
                                              "seconds": round(time.perf_counter() - started, 1)}, indent=1))
    print(curve.to_string(index=False))
    print(summary.to_string(index=False))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
