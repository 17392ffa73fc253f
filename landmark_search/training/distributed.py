"""Training on several processes with torchrun: DistributedDataParallel, gloo on CPU and NCCL on CUDA.

`landmark train --nproc N` starts N processes through torchrun's own launcher (torch.distributed.run's
`elastic_launch`); `torchrun --nproc-per-node N $(which landmark) train ...` does the same by hand. Every rank
builds the same model (DDP also broadcasts rank 0's weights), trains on its 1/N of each epoch (DistributedSampler,
1/N of the batch, so the global batch and the recipe's learning rate stay those of one process) and the gradients
are averaged. Frozen-backbone features are extracted 1/N per rank and gathered. Only rank 0 writes the run folder,
so the files (and the checkpoint format) are those of a one-process run.

BatchNorm: on CUDA the model's BatchNorm layers become SyncBatchNorm (statistics over the global batch); on CPU
PyTorch has no SyncBatchNorm, so each process normalises over its own part of the batch (as DDP does by default).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

import torch
import torch.distributed as tdist
from torch import nn
from torch.utils.data import Dataset, DistributedSampler

from ..errors import LandmarkError

T = TypeVar("T")
# A rank that waits longer than this for the others (one died without the group noticing) gives up.
GROUP_TIMEOUT = _dt.timedelta(minutes=10)


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        """More than one process trains."""
        return self.world > 1

    @property
    def main(self) -> bool:
        """The process that writes the run folder."""
        return self.rank == 0


def start(device: str = "auto") -> Ranks:
    """Join the process group torchrun set up (RANK/WORLD_SIZE/LOCAL_RANK); one process alone: Ranks()."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    ranks = Ranks(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    cuda = device in ("auto", "cuda") and torch.cuda.is_available()
    if cuda:  # before the model moves: "cuda" then means this rank's GPU
        torch.cuda.set_device(ranks.local_rank)
    if not tdist.is_initialized():
        tdist.init_process_group("nccl" if cuda else "gloo", timeout=GROUP_TIMEOUT)
    return ranks


def stop(ranks: Ranks) -> None:
    """Leave the process group (after the last collective call)."""
    if ranks.active and tdist.is_initialized():
        tdist.destroy_process_group()


def wrap(model: nn.Module, ranks: Ranks) -> nn.Module:
    """The model as DDP (BatchNorm synchronised on CUDA); the model itself when one process trains.

    Checkpoints are written from the unwrapped model, so their keys are those of a one-process run."""
    if not ranks.active:
        return model
    device = next(model.parameters()).device
    if device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return nn.parallel.DistributedDataParallel(model, device_ids=[device.index or 0])
    return nn.parallel.DistributedDataParallel(model)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def share(dataset: Dataset, batch_size: int, ranks: Ranks, *, seed: int
          ) -> tuple[DistributedSampler | None, int, int]:
    """This rank's part of each epoch: its sampler (a shuffled share, call set_epoch; None for one process:
    the loader shuffles), its batch (rank_batch) and how many samples it sees in an epoch."""
    sampler = None
    if ranks.active:
        sampler = DistributedSampler(dataset, num_replicas=ranks.world, rank=ranks.rank, shuffle=True, seed=seed,
                                     drop_last=False)
    return sampler, rank_batch(batch_size, ranks), len(sampler) if sampler is not None else len(dataset)


def rank_batch(batch_size: int, ranks: Ranks) -> int:
    """Each rank's batch: the global batch split between the ranks."""
    if batch_size < ranks.world:
        raise LandmarkError(f"--batch-size {batch_size} is smaller than --nproc {ranks.world}; every process "
                            "needs at least one photo per batch")
    return batch_size // ranks.world


def shard(items: Sequence[T], ranks: Ranks) -> list[T]:
    """This rank's items (every world-th, from its rank): the shares are disjoint and cover all items."""
    return list(items[ranks.rank::ranks.world])


def gather(tensor: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """Every rank's tensor (of any length along dim 0), concatenated in rank order on every rank (CPU)."""
    if not ranks.active:
        return tensor
    parts: list[Any] = [None] * ranks.world
    tdist.all_gather_object(parts, tensor.cpu())
    return torch.cat(parts)


def mean(values: Sequence[float], weight: float, ranks: Ranks) -> tuple[float, ...]:
    """The weighted mean of each value over the ranks (weight: this rank's photos); the values alone for one."""
    if not ranks.active:
        return tuple(values)
    # A rank with no photos (fewer photos than ranks) adds nothing, not inf x 0.
    total = torch.tensor([v * weight if weight else 0.0 for v in values] + [weight], dtype=torch.float64)
    tdist.all_reduce(total)
    if total[-1] == 0:
        return (float("inf"),) * len(values)
    return tuple(float(v) for v in total[:-1] / total[-1])


def from_main(ranks: Ranks, work: Callable[[], T]) -> T:
    """`work` on rank 0 only (it writes files), its result (or its LandmarkError) handed to every rank."""
    if not ranks.active:
        return work()
    box: list[Any] = [None]
    if ranks.main:
        try:
            box[0] = ("ok", work())
        except LandmarkError as exc:
            box[0] = ("error", str(exc))
    tdist.broadcast_object_list(box, src=0)
    status, value = box[0]
    if status == "error":
        raise LandmarkError(value)
    return value


# ------------------------------------------------------------------------------------- the launcher

def launch(cfg: Any, nproc: int, resume: str | Path | None = None, overwrite: bool = False) -> Any:
    """Run `fit` on `nproc` local processes through torchrun's launcher; the TrainResult read from the run folder."""
    from ..config import RunPaths, TrainConfig
    from .fit import TrainResult
    from .recipe import check_config
    from .run_dir import default_run_dir, prepare_run_dir, read_history

    if nproc < 1:
        raise LandmarkError(f"--nproc {nproc}: use 1 or more processes")
    # Every rank must write (and rank 0 name) the same folder, so the timestamped default is picked here.
    out = Path(resume) if resume else Path(cfg.out) if cfg.out else default_run_dir(cfg.model)
    cfg = TrainConfig.from_dict({**cfg.to_dict(), "out": str(out)})
    if not resume:  # what can be refused is refused before any process starts
        check_config(cfg)
        if not overwrite:
            prepare_run_dir(RunPaths(out))
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    with tempfile.TemporaryDirectory(prefix="landmark-train-") as tmp:
        job = Path(tmp) / "job.json"
        job.write_text(json.dumps({"config": cfg.to_dict(), "resume": str(resume) if resume else None,
                                   "overwrite": overwrite}), encoding="utf-8")
        threads = max(1, (os.cpu_count() or 1) // nproc)  # torchrun's default is 1 thread per process
        config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"landmark-{os.getpid()}",
                              rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
                              monitor_interval=0.2, local_addr="127.0.0.1")
        env = {"OMP_NUM_THREADS": str(threads)}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        t0 = _dt.datetime.now()
        try:
            with _quiet_launcher():
                elastic_launch(config, sys.executable)("-m", "landmark_search.training", str(job))
        except ChildFailedError as exc:
            error = job.with_suffix(".error")
            if error.exists():  # rank 0's LandmarkError, as one line
                raise LandmarkError(error.read_text(encoding="utf-8")) from None
            code = next(iter(exc.failures.values())).exitcode if exc.failures else 1
            raise LandmarkError(f"training on {nproc} processes stopped (exit code {code}); the reason is "
                                "printed above") from None
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    paths = RunPaths(out)
    metrics = json.loads(paths.metrics.read_text(encoding="utf-8"))
    return TrainResult(paths, read_history(paths.history), metrics, (_dt.datetime.now() - t0).total_seconds())


@contextlib.contextmanager
def _quiet_launcher() -> Iterator[None]:
    """torchrun's agent logs a child's failure as a page of text; the launcher says it in one line instead."""
    loggers = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
               if name.startswith("torch.distributed.elastic")]
    saved = [logger.disabled for logger in loggers]
    for logger in loggers:
        logger.disabled = True
    try:
        yield
    finally:
        for logger, disabled in zip(loggers, saved):
            logger.disabled = disabled


def rank_main(argv: list[str]) -> int:
    """One rank of a `launch`: fit the job's config; rank 0 leaves a LandmarkError beside the job for the launcher."""
    from ..config import TrainConfig
    from .fit import fit

    path = Path(argv[0])
    job = json.loads(path.read_text(encoding="utf-8"))
    cfg = TrainConfig.from_dict(job["config"])
    logging.basicConfig(level=logging.WARNING if cfg.quiet else logging.INFO, format="%(message)s")
    try:
        fit(cfg, resume=job["resume"], overwrite=job["overwrite"])
    except LandmarkError as exc:
        if os.environ.get("RANK", "0") == "0":
            path.with_suffix(".error").write_text(str(exc), encoding="utf-8")
        return 1
    return 0
