"""Training runs and their metrics: fit / train_one_epoch / validate / evaluate.

Rooms: recipe (TrainConfig + model family -> a frozen Recipe), schedule (progress, optimiser, LR
schedule, batch mixing), loop (epoch loops as functions), run_dir (the run folder's files),
metrics (evaluation through the one inference path), fit (a whole run).
"""

from .fit import TrainResult, fit
from .loop import Runtime, make_loader, seed_everything, train_one_epoch, validate
from .metrics import (CheckpointEvaluation, EvalResult, class_metrics, evaluate, evaluate_checkpoint, predict_samples,
                      write_eval_outputs)
from .recipe import (ARCH_EPOCHS, DEFAULT_BATCH, DEFAULT_EPOCHS, DEFAULT_LR, DEFAULT_TIME_LIMIT, HEADS, MIN_IMAGE_SIZE,
                     MIX_MIN_EPOCHS, MIX_MODES, OPTIMIZERS, PROGRESSIVE_SCALES, SCHEDULERS, TRAIN_PRECISIONS, Recipe,
                     check_config)
from .run_dir import (RUN_EXTRA_FILES, RUN_MARKERS, STATS_VERSION, EpochStats, checkpoint_in, dataset_dir,
                      default_run_dir, prepare_run_dir, read_history, stats_fingerprint, write_history)
from .schedule import Progress, WarmupCosine, augment_batch, make_mixer, warmup_cosine

__all__ = [
    "ARCH_EPOCHS", "DEFAULT_BATCH", "DEFAULT_EPOCHS", "DEFAULT_LR", "DEFAULT_TIME_LIMIT", "HEADS", "MIN_IMAGE_SIZE",
    "MIX_MIN_EPOCHS", "MIX_MODES", "OPTIMIZERS", "PROGRESSIVE_SCALES", "RUN_EXTRA_FILES", "RUN_MARKERS", "SCHEDULERS",
    "STATS_VERSION", "TRAIN_PRECISIONS", "CheckpointEvaluation", "EpochStats", "EvalResult", "Progress", "Recipe",
    "Runtime", "TrainResult", "WarmupCosine", "augment_batch", "check_config", "checkpoint_in", "class_metrics",
    "dataset_dir", "default_run_dir", "evaluate", "evaluate_checkpoint", "fit", "make_loader", "make_mixer",
    "predict_samples", "prepare_run_dir", "read_history", "seed_everything", "stats_fingerprint", "train_one_epoch",
    "validate", "warmup_cosine", "write_eval_outputs", "write_history",
]
