"""`landmark models|train|evaluate|export|report|demo`: make and judge models."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from ..errors import LandmarkError
from . import (
    DeviceOpt, JsonOpt, QuietOpt, RecallOpt, _count, _err, _json, _must_exist, _write_report, app,
    handle_errors,
)


# ----------------------------------------------------------------------------------------------- models

@app.command("models")
@handle_errors
def models_cmd(as_json: bool = JsonOpt) -> None:
    """List the registered models: parameters, embedding size, pretrained source."""
    from ..config import TrainConfig
    from ..models import get_spec, list_models

    dim = TrainConfig().embedding_dim
    rows = []
    for name in list_models():
        spec = get_spec(name)
        rows.append({"name": name, "params_m": round(spec.params(50, embedding_dim=dim) / 1e6, 2),
                     "feature_dim": spec.feature_dim, "embedding_dim": dim, "image_size": spec.image_size,
                     "pretrained": spec.pretrained_source or "none (trains from scratch)",
                     "description": spec.description})
    if as_json:
        typer.echo(_json(rows))
        return
    typer.echo(f"{'name':<20}{'params':>9}{'features':>10}{'embed':>7}{'size':>6}  pretrained")
    for r in rows:
        typer.echo(f"{r['name']:<20}{r['params_m']:>8}M{r['feature_dim']:>10}{r['embedding_dim']:>7}"
                   f"{r['image_size']:>6}  {r['pretrained']}")
    typer.echo("(params and embed are for a 50-class head; transfer models embed 256-d by default)")


# ------------------------------------------------------------------------------------------------ train

@app.command("train")
@handle_errors(interrupted="interrupted: the run folder keeps its last finished epoch (last.pt); go on with "
                           "`landmark train --resume RUN`")
def train_cmd(model: str = typer.Option("efficientnet_lite0", "--model", "-m", help="Architecture (see `landmark models`)."),
              data: Optional[Path] = typer.Option(None, "--data", "-d", help="Dataset folder with train/ (+ test/); "
                                                  "with --resume, the run's own unless given."),
              out: Optional[Path] = typer.Option(None, help="Run folder; default runs/<model>-<timestamp>. One that holds a run is refused (see --resume, --overwrite)."),
              epochs: Optional[int] = typer.Option(None, help="Epochs (default: 60 for a frozen backbone's head, 15 "
                                                   "with --finetune, 120 from scratch, residual 60)."),
              batch_size: Optional[int] = typer.Option(None, help="Batch size (default 64; 32 when training from scratch)."),
              lr: Optional[float] = typer.Option(None, help="Learning rate of AdamW/Adam/SGD (default: 3e-3 head, 3e-4 "
                                                 "with --finetune, 2e-3 from scratch; the default L-BFGS head fit "
                                                 "takes none)."),
              optimizer: str = typer.Option("auto", help="auto (lbfgs for a frozen backbone's power head, adamw otherwise)|lbfgs (full-batch: the exact regularised logistic regression; frozen heads only, --weight-decay and --lr unused)|adamw (decoupled weight decay)|adam (L2 weight decay)|sgd (Nesterov momentum)."),
              weight_decay: float = typer.Option(5e-4, help="Weight decay."),
              dropout: float = typer.Option(0.3, help="Dropout before the embedding/classifier."),
              scheduler: str = typer.Option("auto", help="auto (cosine from scratch, plateau for transfer)|plateau|cosine|exponential|none."),
              image_size: Optional[int] = typer.Option(None, help="Input size (default per model)."),
              valid_split: Optional[float] = typer.Option(None, help="Validation fraction of train/ (stratified; default: 0 for a frozen backbone's head, whose open set is calibrated leave-one-out on every photo; 0.2 otherwise)."),
              patience: int = typer.Option(8, help="Early stop after this many epochs without improvement."),
              head: str = typer.Option("auto", help="auto (power for a frozen backbone, embed otherwise), embed (Linear-BN-ReLU embedding + classifier), power (linear on square-rooted features) or linear."),
              embedding_dim: int = typer.Option(256, help="Embedding size of the embed head."),
              finetune: bool = typer.Option(False, "--finetune", help="Also train the pretrained backbone (lower LR)."),
              weights: str = typer.Option("default", help="default (ImageNet when available) or none."),
              device: str = typer.Option("auto", help="auto|cpu|cuda|mps."),
              precision: str = typer.Option("auto", help="auto|fp32|bf16|fp16."),
              label_smoothing: float = typer.Option(0.1, help="Cross-entropy label smoothing."),
              feature_views: int = typer.Option(0, help="Augmented views cached per photo (frozen backbone); 0: the evaluation crop alone, as tag sees a photo."),
              workers: int = typer.Option(-1, help="DataLoader workers (-1: auto)."),
              time_limit: Optional[float] = typer.Option(None, help="Training time budget in seconds (scratch models: 780 by default; 0 = none); the LR schedule anneals within it."),
              mix: str = typer.Option("auto", help="Batch mixing: auto (CutMix/MixUp for from-scratch runs of 40+ epochs)|none|mixup|cutmix|both."),
              progressive: Optional[bool] = typer.Option(None, "--progressive/--no-progressive", help="Progressive resizing (3/4 -> 7/8 -> full size; residual 1/2 -> 3/4 -> full); default on when training from scratch at 64 px and up."),
              seed: int = typer.Option(0, help="Random seed."),
              places: Optional[Path] = typer.Option(None, "--places", help="CSV class,latitude,longitude[,name,city,country] "
                                                    "saying where each landmark is (default: DATA/places.csv, else "
                                                    "the training photos' GPS, else the shipped table); used by "
                                                    "`tag --geotag`."),
              nproc: int = typer.Option(1, "--nproc", help="Train with N processes on this machine "
                                        "(DistributedDataParallel through torchrun: gloo on CPU, NCCL on CUDA); "
                                        "the run folder is the one a single process writes."),
              resume: Optional[Path] = typer.Option(None, help="Continue the run in this folder (its last.pt)."),
              extend: Optional[Path] = typer.Option(None, "--extend", help="Teach this model (RUN/best.pt, frozen "
                                                    "backbone) the landmarks of --data too: the new model knows both; "
                                                    "the old ones come from the old run's photos, or its "
                                                    "features.pt when they are gone."),
              overwrite: bool = typer.Option(False, "--overwrite", help="Replace the run already in --out (deletes only the files landmark wrote there)."),
              report: bool = typer.Option(True, "--report/--no-report", help="Write report.html at the end."),
              quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars.")) -> None:
    """Train a landmark classifier; writes best.pt, last.pt, history.csv, curves.png, metrics.json."""
    # Paths are checked before torch is imported: a typo answers in a moment.
    _must_exist(data, "--data", "make a dataset with `landmark data synth DIR` or `landmark data download DIR`")
    _must_exist(resume, "--resume", "pass the run folder `landmark train` wrote")
    _must_exist(places, "--places", "pass a CSV with columns class,latitude,longitude")
    _must_exist(extend, "--extend", "pass the RUN/best.pt of the model to teach more landmarks")
    if extend and not data:
        raise LandmarkError("--extend needs --data NEW: a folder with train/<landmark>/ photos of the landmarks to add")
    if extend and nproc != 1:
        raise LandmarkError("--extend trains a frozen backbone's head in seconds; leave out --nproc")
    from ..config import TrainConfig
    from ..data.datasets import unnamed_groups
    from ..training import fit

    unnamed = unnamed_groups(data) if data else ()
    if unnamed:
        _err(f"warning: {data / 'train'}: skipping {_count(len(unnamed), 'unnamed group folder')} "
             f"({', '.join(unnamed[:5])}{', ...' if len(unnamed) > 5 else ''}); name each with "
             f"`landmark group --name {unnamed[0]} NAME --out {data}` to train on it")

    cfg = TrainConfig(model=model, data=str(data or ""), out=str(out or ""), epochs=epochs, batch_size=batch_size, lr=lr,
                      optimizer=optimizer, weight_decay=weight_decay, dropout=dropout, scheduler=scheduler,
                      image_size=image_size, valid_split=valid_split, patience=patience, head=head,
                      embedding_dim=embedding_dim, finetune=finetune, weights=weights, device=device,
                      precision=precision, label_smoothing=label_smoothing, feature_views=feature_views,
                      workers=workers, seed=seed, quiet=quiet, time_limit=time_limit, mix=mix,
                      progressive=progressive, places=str(places) if places else None)
    if nproc != 1:
        from ..training.launch import launch

        result = launch(cfg, nproc, resume=resume, overwrite=overwrite)
    else:
        result = fit(cfg, resume=resume, overwrite=overwrite, extend=extend)
    if not result.main:  # a torchrun rank other than 0: rank 0 reports
        return
    m = result.metrics
    if "extended" in m:
        e = m["extended"]
        source = (f"their photos in {e['old_where']}" if e["old_from"] == "photos" else
                  f"the old run's cached features {e['old_where']} (its photos are gone)")
        typer.echo(f"extended {e['checkpoint']}: {_count(e['old_classes'], 'old landmark')} from {source}, "
                   f"{_count(e['new_classes'], 'new landmark')} from {data}")
        for folder, old in e.get("joined", []):
            if folder != old:
                typer.echo(f"  {data}/train/{folder}: photos of the old landmark {old}, added to it")
    typer.echo(f"run: {result.paths.root}  ({m['epochs_run']} epochs, {result.seconds:.1f}s)")
    if "stopped_early_at" in m:
        typer.echo(f"stopped early at epoch {m['stopped_early_at']} of {m['epochs_planned']} (no validation gain "
                   f"for {_count(m['patience'], 'epoch')})")
    if "converged_at" in m:
        typer.echo(f"converged at epoch {m['converged_at']} of {m['epochs_planned']} (the full-batch fit no "
                   "longer moved)")
    if "test_accuracy" in m:
        typer.echo(f"test accuracy {m['test_accuracy']:.4f}  macro-F1 {m['test_macro_f1']:.4f}  "
                   f"({_count(m['n_test'], 'photo')})")
    if report:
        _write_report(result.paths.root, None)
    typer.echo(f"best checkpoint: {result.paths.best}")


# --------------------------------------------------------------------------------------------- evaluate

@app.command("evaluate")
@handle_errors
def evaluate_cmd(checkpoint: Path = typer.Argument(..., help="Checkpoint (RUN/best.pt) or its run folder."),
                 data: Path = typer.Option(..., "--data", "-d", help="Dataset folder."),
                 split: str = typer.Option("test", help="test or train."),
                 out: Optional[Path] = typer.Option(None, help="Folder for the PNG and JSON (default: beside the checkpoint)."),
                 distractors: Optional[Path] = typer.Option(None, "--distractors", help="A folder of photos that show "
                                                            "none of the landmarks (people, pets, food...): adds GAP, "
                                                            "the false-tag rate and the recall at the threshold, and a "
                                                            "precision-recall PNG."),
                 recall: Optional[float] = RecallOpt,
                 as_json: bool = typer.Option(False, "--json", help="Print the JSON report."),
                 device: str = DeviceOpt, precision: str = typer.Option("auto", help="auto (bf16 where the CPU has it)|fp32|bf16|fp16|int8 (CPU, quantized body)."),
                 quiet: bool = QuietOpt) -> None:
    """Accuracy, macro/weighted F1, per-class table, confusion-matrix PNG and a JSON report."""
    from ..models.openset import check_recall  # numpy: not at `landmark --help`

    check_recall(recall)
    _must_exist(checkpoint, "checkpoint", "pass RUN/best.pt or the run folder from `landmark train`")
    _must_exist(data, "--data", "pass the dataset folder the model was trained on (with test/)")
    _must_exist(distractors, "--distractors", "pass a folder of photos that show none of the landmarks")
    from ..training import evaluate_checkpoint

    done = evaluate_checkpoint(checkpoint, data, split, out, device=device, precision=precision,
                               quiet=quiet or not sys.stderr.isatty(),  # no progress bars in a log file
                               distractors=distractors, recall=recall)
    result, files = done.result, done.files
    if result.skipped:  # each was named on stderr as it was skipped
        _err(f"{len(result.skipped)} unreadable photo(s) skipped")
    if as_json:
        typer.echo(files["report"].read_text())
        return
    typer.echo(f"{split}: accuracy {result.accuracy:.4f}  macro-F1 {result.macro_f1:.4f}  "
               f"weighted-F1 {result.weighted_f1:.4f}  ({_count(len(result.y_true), 'photo')})")
    typer.echo(f"{'class':<32}{'precision':>10}{'recall':>8}{'f1':>8}{'n':>5}")
    for name, row in result.per_class.items():
        typer.echo(f"{name[:31]:<32}{row['precision']:>10.3f}{row['recall']:>8.3f}{row['f1-score']:>8.3f}"
                   f"{int(row['support']):>5}")
    if done.open_set is not None:
        o = done.open_set
        typer.echo(f"with {o.n_distractors} distractors ({o.score}): GAP {o.gap:.4f}  false-tag rate "
                   f"{o.false_tag_rate:.3f}  recall {o.recall:.3f}  precision {o.precision:.3f}  "
                   f"(threshold {o.threshold:.3f}; {o.verified} kept by matched keypoints)\n"
                   f"precision-recall curve: {files['pr_curve']}")
    if done.places:
        typer.echo("places: " + "; ".join(f"{cls}: {p['latitude']:.4f},{p['longitude']:.4f}"
                                          f" {p.get('city') or ''} {p.get('country') or ''} ({p.get('source')})"
                                          .replace("  ", " ") for cls, p in done.places.items()))
    typer.echo(f"confusion matrix: {files['confusion']}\nreport: {files['report']}")


# ----------------------------------------------------------------------------------------------- export

@app.command("export")
@handle_errors
def export_cmd(checkpoint: Path = typer.Argument(..., help="Checkpoint (RUN/best.pt)."),
               out: Path = typer.Option(Path("model.pt"), "--out", "-o", help="Output file."),
               fmt: str = typer.Option("torchscript", "--format", help="torchscript (torch.jit.load) or pt2 (torch.export).")) -> None:
    """Export a predictor that resizes, crops, normalises and applies softmax itself."""
    from ..models.export import export_model

    path = export_model(checkpoint, out, fmt)
    typer.echo(f"exported {fmt} predictor to {path}")
    if fmt == "torchscript":
        typer.echo("load it with: model = torch.jit.load(path); probs = model(uint8_image_tensor); "
                   "model.class_names")


@app.command("report")
@handle_errors
def report_cmd(run: Path = typer.Argument(..., help="Run folder written by `landmark train` (or its best.pt)."),
               data: Optional[Path] = typer.Option(None, "--data", "-d", help="Dataset folder (default: the one in "
                                                   "the run's config.json); its test/ photos fill the mistakes grid."),
               out: Optional[Path] = typer.Option(None, "--out", "-o", help="HTML file (default: RUN/report.html).")) -> None:
    """One self-contained HTML page: config, curves, metrics, per-class table, confusions, mistakes with Grad-CAM."""
    from ..errors import DataError
    from ..render.report import write_report
    from ..training import dataset_dir

    if run.is_file():
        if run.suffix != ".pt":
            raise DataError(f"{run} is a file; pass the run folder `landmark train` wrote (the one holding best.pt)")
        run = run.parent  # RUN/best.pt names its run
    if data is not None:
        data = dataset_dir(data)
    typer.echo(f"report: {write_report(run, data=data, out=out)}")


# ------------------------------------------------------------------------------------------------- demo

@app.command("demo")
@handle_errors
def demo_cmd(out: Path = typer.Option(Path("demo-output"), help="Folder for everything the demo makes."),
             quiet: bool = QuietOpt) -> None:
    """Synthetic data -> train -> evaluate -> export -> classify -> index -> tag -> similar, with a summary."""
    from ..demo import run_demo

    summary = run_demo(out, quiet=quiet, echo=typer.echo)
    typer.echo("\n" + summary)
