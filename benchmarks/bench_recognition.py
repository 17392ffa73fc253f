"""Recognition on real photos: the default `landmark train` recipe vs a plain logistic-regression probe, and the
open set against everyday photos and against landmarks the model was never shown, in both directions.

For india12 and wonders7 (evaldata): `landmark train --data SET` (wall time), then on the test split, through
the one inference path and predict.decide as `tag` uses them: accuracy, macro-F1, top tag right (the photo's
one landmark tag is its true class), GAP; the share of the OTHER set's test photos and of distractors_imagenet
that get a tag. The plain probe: scikit-learn LogisticRegression (C=10) on the same frozen backbone features
of the training photos (evaluation crop, no augmentation), scored on the test photos' features.

    python benchmarks/bench_recognition.py            # ~6 minutes on 2 quiet cores
    python benchmarks/bench_recognition.py --quick    # wonders7 only, its own model: a smoke test
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from _common import evaldata_set, update_results  # noqa: E402
from run_all import landmark_cmd, summary_row, use_results_file  # noqa: E402

SETS = {"india12": "india12_Abinaya27m", "wonders7": "wonders7_hoodiinii"}
GOALS = {"india12": {"accuracy": 0.96, "seconds": 120.0}, "wonders7": {"accuracy": 0.98, "seconds": 90.0}}
TOP_TAG_GOAL, OTHER_GOAL, EVERYDAY_GOAL = 0.95, 0.05, 0.01


def _samples(folder: Path) -> list[tuple[Path, int]]:
    from landmark_search.data.datasets import discover

    return list(discover(folder).test)


def _photos(folder: Path) -> list[tuple[Path, int]]:
    from landmark_search.photos.files import iter_photos

    return [(p, -1) for p in iter_photos([folder], recursive=True)]


def measure(name: str, run: Path, others: dict[str, Path]) -> dict:
    """Scores of the trained run on its own test split and the share of each `others` folder it tags."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    from landmark_search.data.datasets import discover
    from landmark_search.embeddings import load_model
    from landmark_search.training.metrics import embed_samples
    from landmark_search.training.openset_eval import global_average_precision

    model = load_model(run / "best.pt")
    layout = discover(evaldata_set(SETS[name]))
    test, y = embed_samples(model, layout.test)
    probs, feats = test.probs, test.features
    decisions = [test.decide(i, model) for i in range(len(test.paths))]  # the geometric check counts too
    y = np.asarray(y)
    pred = probs.argmax(1)
    ids = np.asarray(model.class_ids)
    right = np.array([bool(d.kept) and d.kept[0].id == ids[t] for d, t in zip(decisions, y)], bool)
    out = {"accuracy": float((pred == y).mean()), "macro_f1": float(f1_score(y, pred, average="macro")),
           "top_tag_right": float(right.mean()), "n_test": int(len(y)),
           "verified": int(sum(d.verified for d in decisions))}
    conf = [d.confidence for d in decisions]
    correct = list(pred == y)
    for other, folder in others.items():
        seen, _ = embed_samples(model, _photos(folder))
        theirs = [seen.decide(i, model) for i in range(len(seen.paths))]
        tagged = [bool(d.kept) for d in theirs]
        out[f"tagged_{other}"] = float(np.mean(tagged))
        out[f"n_{other}"] = len(tagged)
        conf += [d.confidence for d in theirs]
        correct += [False] * len(tagged)
    out["gap"] = global_average_precision(conf, correct, len(y))
    # The plain probe on the same frozen features (the model's backbone, evaluation crop, all training photos).
    train, ty = embed_samples(model, layout.train)
    tfeats = train.features
    probe = LogisticRegression(C=10.0, max_iter=3000).fit(tfeats, ty)
    out["probe_accuracy"] = float((probe.predict(feats) == y).mean())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="wonders7 only, no other set: a smoke test")
    parser.add_argument("--work", type=Path, default=HERE / "_work" / "recognition")
    parser.add_argument("--reuse", action="store_true",
                        help="score the runs already in --work (their own total_seconds as the training time)")
    args = parser.parse_args()
    use_results_file(args.quick)
    names = ["wonders7"] if args.quick else list(SETS)
    everyday = evaldata_set("distractors_imagenet")
    entry, rows = {}, []
    for name in names:
        run = args.work / name
        start = time.perf_counter()
        if args.reuse and (run / "metrics.json").is_file():
            seconds = json.loads((run / "metrics.json").read_text())["total_seconds"]
        else:
            subprocess.run([*landmark_cmd(), "train", "--data", str(evaldata_set(SETS[name])), "--out", str(run),
                            "--overwrite", "--quiet", "--no-report"], check=True, cwd=ROOT)
            seconds = time.perf_counter() - start
        others = {"everyday": everyday}
        if not args.quick:
            other = next(n for n in SETS if n != name)
            others["other_landmarks"] = evaldata_set(SETS[other]) / "test"
        m = {**measure(name, run, others), "train_seconds": round(seconds, 1)}
        entry[name] = m
        g = GOALS[name]
        print(f"{name}: {m}", flush=True)
        rows += [summary_row("recognition", f"{name} test accuracy (plain probe {m['probe_accuracy']:.3f})",
                             round(m["accuracy"], 3), f">= {g['accuracy']}", m["accuracy"] >= g["accuracy"],
                             f"macro-F1 {m['macro_f1']:.3f}, GAP {m['gap']:.3f}, {m['n_test']} photos"),
                 summary_row("recognition", f"{name} top tag right", round(m["top_tag_right"], 3),
                             f">= {TOP_TAG_GOAL}", m["top_tag_right"] >= TOP_TAG_GOAL),
                 summary_row("recognition", f"{name} model: everyday photos tagged", round(m["tagged_everyday"], 3),
                             f"<= {EVERYDAY_GOAL}", m["tagged_everyday"] <= EVERYDAY_GOAL,
                             f"{m['n_everyday']} photos")]
        if "tagged_other_landmarks" in m:
            rows.append(summary_row("recognition", f"{name} model: other set's landmarks tagged",
                                    round(m["tagged_other_landmarks"], 3), f"<= {OTHER_GOAL}",
                                    m["tagged_other_landmarks"] <= OTHER_GOAL, f"{m['n_other_landmarks']} photos"))
        rows.append(summary_row("recognition", f"{name} `landmark train` wall time (s)", m["train_seconds"],
                                f"<= {g['seconds']:.0f}", m["train_seconds"] <= g["seconds"]))
    update_results("recognition", {**entry, "summary": rows})


if __name__ == "__main__":
    main()
