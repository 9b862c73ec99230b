"""Look for near-duplicates inside a real training split with the measures available offline, and show the
closest pairs each finds.

    python scripts/duplicate_scan.py --dataset imagenette --root ../shared/data/imagenette2-224.zip \
        --size 64 --out duplicate_scan.png

Two pixel measures on the whole split, read by the dataset's own loader at ``--size`` px:

- ``pixels``: the project's embedding (:func:`bibad_utils.memorization.embed`, thumbnail of ``--thumb`` px
  minus its mean): the Pearson correlation of two thumbnails. Smooth scenes (plain sky, grass) correlate
  through their gradients alone.
- ``highpass``: the same embedding at ``--size`` px with ``highpass=--kernel`` (the profile key
  ``memorization.highpass``): a box blur subtracted first, so that only edges and texture are compared: two
  re-encodings or resizes of one picture keep it near 1, two plain skies do not.

Neither finds a crop, a flip or a re-framed copy (the paper's SSCD features do, and need weights this
machine cannot fetch). The script prints, per measure, the number of pairs above each threshold and the
top pairs (class of each, cosine), and draws the top pairs of both measures into ``--out``.
"""

from __future__ import annotations

import argparse
import sys


def top_pairs(emb, k: int, thresholds):
    """The ``k`` most similar distinct pairs (i, j, cosine), best first, and the count above each threshold."""
    import numpy as np

    n = len(emb)
    counts = dict.fromkeys(thresholds, 0)
    best_i, best_j, best_s = [], [], []
    for start in range(0, n, 1024):
        s = emb[start:start + 1024] @ emb.T
        rows = np.arange(len(s))[:, None] + start
        s = np.where(np.arange(n)[None, :] > rows, s, -2.0)  # each unordered pair once
        for t in thresholds:
            counts[t] += int((s >= t).sum())
        flat = np.argpartition(s.ravel(), -k)[-k:]
        best_i.extend(flat // n + start)
        best_j.extend(flat % n)
        best_s.extend(s.ravel()[flat])
    order = np.argsort(best_s)[::-1][:k]
    return [(int(best_i[o]), int(best_j[o]), float(best_s[o])) for o in order], counts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="imagenette")
    parser.add_argument("--root", default=None, help="the dataset's zip or folder (default: the data root)")
    parser.add_argument("--size", type=int, default=64, help="side of the images compared (px)")
    parser.add_argument("--thumb", type=int, default=16, help="thumbnail side of the `pixels` measure (px)")
    parser.add_argument("--kernel", type=int, default=7, help="box blur removed by the `highpass` measure (px)")
    parser.add_argument("--top", type=int, default=8)
    parser.add_argument("--out", default="duplicate_scan.png")
    args = parser.parse_args(argv)
    for name in ("size", "thumb", "kernel", "top"):
        if getattr(args, name) < 1:
            print(f"error: --{name} must be a positive integer, not {getattr(args, name)}", file=sys.stderr)
            return 2

    import numpy as np

    from bibad_utils.base import ConfigError
    from bibad_utils.data import load_dataset
    from bibad_utils.memorization import embed

    try:
        train = load_dataset(args.dataset, split="train", root=args.root, image_size=args.size)
    except (ConfigError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    thresholds = (0.8, 0.9, 0.95)
    measures = {f"pixels ({args.thumb} px thumbnail)": embed(train.images, "pixels", pixel_size=args.thumb),
                f"highpass ({args.size} px minus a {args.kernel}-px blur)": embed(train.images, "pixels", pixel_size=args.size, highpass=args.kernel)}
    names = train.class_names
    rows = []
    print(f"{args.dataset}: {len(train.images)} training images at {args.size} px, "
          f"{len(train.images) * (len(train.images) - 1) // 2} pairs")
    for measure, emb in measures.items():
        pairs, counts = top_pairs(emb, args.top, thresholds)
        print(f"\n{measure}: pairs with cosine >= " + ", ".join(f"{t}: {c}" for t, c in counts.items()))
        for i, j, s in pairs:
            print(f"  {s:.3f}  {i} ({names[train.labels[i]]})  {j} ({names[train.labels[j]]})")
        rows.append((measure, pairs))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2 * len(rows), args.top, figsize=(1.3 * args.top, 2.9 * len(rows)), squeeze=False)
    for r, (measure, pairs) in enumerate(rows):
        for c, (i, j, s) in enumerate(pairs):
            for k, idx in enumerate((i, j)):
                ax = axes[2 * r + k, c]
                ax.imshow(train.images[idx])
                ax.set_xticks([]), ax.set_yticks([])
                if k == 0:
                    ax.set_title(f"{s:.3f}", fontsize=8)
        axes[2 * r, 0].set_ylabel(measure.split(" (")[0], fontsize=8)
    fig.suptitle(f"{args.dataset}: the closest training pairs of each measure (columns: a pair and its cosine)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
