"""Pre-train a profile's clean base DM once (resumable: rerun the same command after an interruption and
training continues from its last checkpoint), then optionally ship it into ``bibad_utils/assets/<name>/`` so
that every later run of the profile installs it instead of training (``pretrain.shipped: true``).

    BIBAD_DATA_ROOT=../shared/data python scripts/pretrain_base.py --profile cifar10
    BIBAD_DATA_ROOT=../shared/data python scripts/pretrain_base.py --profile cifar10 --ship cifar10_base_dm

With ``--curve`` it also prints chapter 02's quality curve (the content judges' accuracy on the DM's
class-conditional generations at each kept checkpoint), which needs ``pretrain.keep_checkpoints > 0``.
"""

from __future__ import annotations

import argparse
import sys
import time

from bibad_utils.config import overrides_from_assignments
from bibad_utils.shipped_base import SHIPPED_DIR, ship_base
from bibad_utils.stages import Study


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="KEY.SUB=VALUE")
    parser.add_argument("--ship", metavar="NAME", help="copy the trained base DM to bibad_utils/assets/NAME")
    parser.add_argument("--curve", action="store_true", help="print the quality curve over kept checkpoints")
    args = parser.parse_args(argv)
    study = Study(args.profile, overrides_from_assignments(args.set))
    started = time.perf_counter()
    key = study.pretrain_key
    if key is None:
        print(f"profile {args.profile} has no pre-training (pretrain.steps is 0)", file=sys.stderr)
        return 2
    record = study.train_record(None)
    print(f"base DM {key}: {record['steps']} steps, {record['wall_time_s'] / 60:.1f} min of training "
          f"({time.perf_counter() - started:.0f} s in this call), {record['n_params'] / 1e6:.2f} M parameters")
    if args.curve:
        from bibad_utils.experiments.training_report import quality_curve
        print(quality_curve(study).to_string())
    if args.ship:
        command = " ".join(["python scripts/pretrain_base.py", "--profile", args.profile,
                            *[f"--set {s}" for s in args.set]])
        dest = ship_base(study.store, key, SHIPPED_DIR / args.ship, command)
        print(f"shipped to {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
