"""`landmark demo`: the whole pipeline on synthetic data, in a couple of minutes on a laptop CPU."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .config import EmbedConfig, TrainConfig
from .errors import LandmarkError


@dataclass(frozen=True)
class DemoSize:
    """How much synthetic data the demo renders and how long it trains."""

    classes: int
    per_class: int
    photo_size: int  # pixels of the rendered photos
    image_size: int | None  # the model's input size; None: its native size
    epochs: int
    feature_views: int


# `make demo`: a couple of minutes on a laptop CPU.
FULL = DemoSize(classes=6, per_class=60, photo_size=128, image_size=None, epochs=30, feature_views=4)
# Every stage, same code, on 90 photos at 64 px (the test suite): about a tenth of FULL's time, and
# the head still got all 18 test photos right (64 px input: no upscaled, blurred photos to learn from).
QUICK = DemoSize(classes=3, per_class=30, photo_size=64, image_size=64, epochs=8, feature_views=2)


def _earlier_demo_index(out: Path) -> bool:
    """True when out/index was built by an earlier demo from its own out/run/best.pt (never a user's index)."""
    from .search import recorded_model

    try:
        recorded = recorded_model(out / "index")
    except LandmarkError:  # none there, or one that cannot be read: not the demo's to reuse
        return False
    return recorded.get("spec") == str((out / "run" / "best.pt").resolve())


def run_demo(out: Path, *, quiet: bool = False, echo: Callable[[str], None] = print, size: DemoSize = FULL) -> str:
    """Run every stage into `out` and return a summary of what was made where."""
    from .data.synth import make_synthetic_dataset
    from .embeddings import load_model
    from .models.export import export_model
    from .render.report import write_report
    from .search import IndexOptions, build_index, find_similar
    from .tagging import TagOptions, classify, tag
    from .training import fit

    t0 = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = EmbedConfig(progress=False)
    lines: list[str] = []

    echo("1/7 rendering a synthetic landmark dataset ...")
    data = make_synthetic_dataset(out / "data", classes=size.classes, per_class=size.per_class,
                                  image_size=size.photo_size, seed=0)
    lines.append(f"data       {data.root}  ({len(data.classes)} classes, {data.n_train} train, {data.n_test} test)")

    echo("2/7 training efficientnet_lite0 (frozen ImageNet backbone + embedding head) ...")
    result = fit(TrainConfig(model="efficientnet_lite0", data=str(data.root), out=str(out / "run"), epochs=size.epochs,
                             image_size=size.image_size, feature_views=size.feature_views, quiet=quiet),
                 overwrite=True)  # the demo's own run: rerunnable
    m = result.metrics
    lines.append(f"run        {result.paths.root}  (test accuracy {m.get('test_accuracy', float('nan')):.3f}, "
                 f"macro-F1 {m.get('test_macro_f1', float('nan')):.3f}, {result.seconds:.0f}s)")
    lines.append(f"evaluate   {result.paths.root / 'test_confusion.png'}, {result.paths.root / 'test_report.json'}")
    lines.append(f"report     {write_report(result.paths.root)}")

    echo("3/7 exporting a TorchScript predictor ...")
    exported = export_model(result.paths.best, out / "model.pt")
    lines.append(f"export     {exported}  (torch.jit.load-able, does its own preprocessing)")

    echo("4/7 classifying test photos with the export ...")
    test_photos = sorted((data.root / "test").rglob("*.jpg"))
    model = load_model(exported, trust_export=True)  # the demo made it a moment ago
    results, _ = classify(test_photos, model, cfg, top_k=1)
    correct = sum(r.predictions[0].id == r.path.parent.name for r in results)
    lines.append(f"classify   {correct}/{len(results)} test photos correct with the export, e.g. "
                 f"{results[0].path.name} -> {results[0].predictions[0].label} ({results[0].predictions[0].score:.0%})")

    echo("5/7 indexing the training photos ...")
    if _earlier_demo_index(out):  # of an earlier demo's model: it would refuse the retrained one
        shutil.rmtree(out / "index")
    index = build_index([data.root / "train"], str(result.paths.best), out / "index", IndexOptions(), cfg)
    lines.append(f"index      {index.directory}  ({index.total} photos)")

    echo("6/7 tagging the test photos (sidecar JSON + XMP) ...")
    summary = tag([data.root / "test"], str(result.paths.best), TagOptions(xmp=True), cfg)
    first = test_photos[0]
    # Only a photo with something to record gets sidecars (an unknown one gets none), so the example is a
    # tagged photo, or one tagged by an earlier run with the same model.
    with_sidecar = [*summary.tagged, *(p for p in summary.unchanged if Path(f"{p}.json").is_file())]
    example = min(with_sidecar, default=None)
    lines.append(f"tag        {len(summary.tagged)} tagged, {len(summary.untagged)} untagged, "
                 f"{len(summary.unchanged)} unchanged; " + (f"e.g. {example}.json and {example.name}.xmp"
                                                            if example else "no photo was confidently tagged"))

    echo("7/7 finding photos similar to a test photo ...")
    similar = find_similar(first, out / "index", k=5, cfg=EmbedConfig(progress=False, workers=0))
    same = sum(Path(h.path).parent.name == first.parent.name for h in similar.hits)
    lines.append(f"similar    {first.name}: {same}/{len(similar.hits)} of the top 5 are the same landmark "
                 f"(best {similar.hits[0].score:.3f} {Path(similar.hits[0].path).name})")
    lines.append(f"done in {time.time() - t0:.0f}s; try: landmark similar {first} --index {out / 'index'}")
    lines.append(f"browse it: landmark serve --index {out / 'index'}  (then open http://127.0.0.1:8765/)")
    return "demo summary\n" + "\n".join("  " + line for line in lines)
