"""Accuracy of the shipped CIFAR-10 ResNets on a class-balanced subset of the offline copy's test split.

    python scripts/cifar_resnet_accuracy.py [--data ../shared/data] [--n-per-class 200] [--seed 0]

Reads ``cifar10-jpg.zip`` and ``cifar10_resnet{20,56}.safetensors`` from ``--data`` (relative paths are
taken from the repository root), judges ``10 * n_per_class`` test images with each network through the
project's judge interface, and prints accuracy with its 95 % Wilson interval, per-class accuracy and
the time taken. The copy is JPEG quality 75: its accuracies are below the networks' published ones.
"""

import argparse
import json
import time

from bibad_utils.base import repo_path
from bibad_utils.data import load_dataset
from bibad_utils.judges import evaluate_judge
from bibad_utils.judges.cifar_resnet import cifar_resnet_judge


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--n-per-class", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    data = repo_path(args.data)
    start = time.perf_counter()
    test = load_dataset("cifar10", split="test", root=data / "cifar10-jpg.zip", seed=args.seed,
                        n_per_class=args.n_per_class, cache_dir=args.cache_dir)
    rows = {"images": len(test), "seed": args.seed, "load_s": round(time.perf_counter() - start, 2)}
    for depth in (20, 56):
        start = time.perf_counter()
        judge = cifar_resnet_judge(data / f"cifar10_resnet{depth}.safetensors", device=args.device)
        report = evaluate_judge(judge, test, batch_size=500, device=args.device)
        rows[f"resnet{depth}"] = {
            "accuracy": round(report["accuracy"], 4), "wilson95": [round(report["accuracy_lo"], 4),
                                                                   round(report["accuracy_hi"], 4)],
            "n_correct": report["n_correct"], "n": report["n"],
            "per_class": dict(zip(test.class_names, [round(a, 3) for a in report["per_class_accuracy"]])),
            "seconds": round(time.perf_counter() - start, 1)}
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
