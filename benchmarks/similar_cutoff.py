"""Which cosine cut-off the web app's similar photos use: precision (same landmark) and count of hits above each.

    landmark index /work/shared/evaldata --index /tmp/measure
    python benchmarks/similar_cutoff.py /tmp/measure

A photo's landmark is its dataset folder + class folder (DATASET/{train,test}/CLASS/x.jpg); distractors have none.
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import numpy as np


def landmark_of(path: str) -> str | None:
    parts = Path(path).parts
    return None if "distractors_imagenet" in parts else f"{parts[-4]}/{parts[-2]}"


def main(index: Path, top: int = 60) -> None:
    conn = sqlite3.connect(f"{(index / 'manifest.sqlite').absolute().as_uri()}?mode=ro", uri=True)
    rows = conn.execute("SELECT path, vector FROM photos").fetchall()
    vectors = np.stack([np.frombuffer(blob, dtype=np.float32) for _, blob in rows])
    labels = [landmark_of(path) for path, _ in rows]
    scores = vectors @ vectors.T
    np.fill_diagonal(scores, -2.0)
    order = np.argsort(-scores, axis=1)[:, :top]
    print(f"{len(rows)} photos, {sum(1 for x in labels if x)} of a landmark; top {top} hits per photo")
    for cut in (0.4, 0.5, 0.55, 0.6, 0.65, 0.7):
        same = other = 0
        counts = []
        for i, row in enumerate(order):
            hits = [j for j in row if scores[i, j] >= cut]
            counts.append(len(hits))
            if labels[i]:
                same += sum(labels[j] == labels[i] for j in hits)
                other += sum(labels[j] != labels[i] for j in hits)
        print(f"cosine >= {cut:.2f}: same landmark {same / max(1, same + other):.2f}, hits per photo median "
              f"{int(np.median(counts))}, photos with none {sum(c == 0 for c in counts)}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
