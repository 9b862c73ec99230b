"""Choose the lowest resolution at which a real dataset still reads well: train the same classifier recipe on the
real training split at each size and measure its accuracy on the real held-out split (Wilson 95 % interval).

    python scripts/resolution_check.py --dataset imagenette --root ../shared/data/imagenette2-224.zip \
        --sizes 32 48 64 --arch resnet20 --epochs 15

The images are decoded and resized by the dataset's own loader (cached), the classifier is trained with the
project's judge trainer (random translation, AdamW; ``--arch`` and ``--epochs`` as a profile's ``judges``
section would give them), one thread per process unless OMP_NUM_THREADS says otherwise. Prints one markdown
table row per size, with the seconds each size took.
"""

from __future__ import annotations

import argparse
import sys
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="imagenette")
    parser.add_argument("--root", default=None, help="the dataset's zip or folder (default: the data root)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 48, 64])
    parser.add_argument("--arch", default="resnet20")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from bibad_utils.base import ConfigError
    from bibad_utils.data import load_dataset
    from bibad_utils.judges import evaluate_judge
    from bibad_utils.judges.training import train_classifier

    print(f"| {args.dataset} at | {args.arch}, {args.epochs} epochs: held-out accuracy | train / held-out images | seconds |")
    print("|---|---|---|---|")
    for size in args.sizes:
        started = time.perf_counter()
        try:
            train = load_dataset(args.dataset, split="train", root=args.root, image_size=size, seed=args.seed)
            test = load_dataset(args.dataset, split="test", root=args.root, image_size=size, seed=args.seed)
        except (ConfigError, FileNotFoundError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        model, _ = train_classifier(train, arch=args.arch, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                    seed=args.seed, progress=False)
        rep = evaluate_judge(model, test.images, test.labels)
        print(f"| {size} px | {100 * rep['accuracy']:.1f} % [{100 * rep['accuracy_lo']:.1f}, "
              f"{100 * rep['accuracy_hi']:.1f}] | {len(train)} / {len(test)} | {time.perf_counter() - started:.0f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
