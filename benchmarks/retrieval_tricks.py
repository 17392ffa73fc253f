"""Which retrieval tricks raise mAP on a train/test set: raw features, trained head, QE, probabilities.

    python benchmarks/retrieval_tricks.py DATA --model RUN/best.pt
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import update_results  # noqa: E402


def mean_ap(q: np.ndarray, q_lab: np.ndarray, g: np.ndarray, g_lab: np.ndarray) -> tuple[float, float]:
    """mAP over the full ranking and top-1 same-class rate for cosine similarity."""
    order = np.argsort(-(q @ g.T), axis=1)
    aps, top1 = [], []
    for i, row in enumerate(order):
        rel = g_lab[row] == q_lab[i]
        hits = np.cumsum(rel)
        aps.append(float((hits[rel] / (np.flatnonzero(rel) + 1)).sum() / max(rel.sum(), 1)))
        top1.append(bool(rel[0]))
    return float(np.mean(aps)), float(np.mean(top1))


def alpha_qe(q: np.ndarray, g: np.ndarray, k: int = 3, alpha: float = 3.0) -> np.ndarray:
    """alpha query expansion: add the top-k neighbours weighted by similarity^alpha, renormalise."""
    sims = q @ g.T
    idx = np.argsort(-sims, axis=1)[:, :k]
    w = np.take_along_axis(sims, idx, 1).clip(0) ** alpha
    out = q + (w[..., None] * g[idx]).sum(1)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data", type=Path)
    parser.add_argument("--model", required=True)
    args = parser.parse_args()
    from landmark_search.config import EmbedConfig
    from landmark_search.embeddings import embed_paths, load_model

    cfg = EmbedConfig(progress=False)
    train = sorted((args.data / "train").rglob("*.jpg"))
    test = sorted((args.data / "test").rglob("*.jpg"))
    results = {}
    for name, spec in (("raw_backbone", "efficientnet_lite0"), ("trained_head", args.model)):
        model = load_model(spec)
        g = embed_paths(train, model, cfg)
        q = embed_paths(test, model, cfg)
        g_lab = np.array([p.parent.name for p in g.paths])
        q_lab = np.array([p.parent.name for p in q.paths])
        results[name] = mean_ap(q.embeddings, q_lab, g.embeddings, g_lab)
        results[f"{name}+alpha_qe"] = mean_ap(alpha_qe(q.embeddings, g.embeddings), q_lab, g.embeddings, g_lab)
        if name == "trained_head":
            results["class_probabilities"] = mean_ap(_normalise(q.probs), q_lab, _normalise(g.probs), g_lab)
            both = lambda e, p: _normalise(np.hstack([e, _normalise(p)]))  # noqa: E731
            results["head+probabilities"] = mean_ap(both(q.embeddings, q.probs), q_lab, both(g.embeddings, g.probs), g_lab)
    table = {k: {"mAP": round(v[0], 4), "top1": round(v[1], 4)} for k, v in results.items()}
    print(json.dumps(table, indent=2))
    update_results("retrieval_tricks", {"data": str(args.data), "model": args.model, "results": table})


if __name__ == "__main__":
    main()
