"""Training on several processes with torchrun: DistributedDataParallel, gloo on CPU and NCCL on CUDA.

`landmark train --nproc N` starts N processes through torchrun's own launcher (launch.py);
`torchrun --nproc-per-node N $(which landmark) train ...` does the same by hand. Every rank
builds the same model (DDP also broadcasts rank 0's weights), trains on its 1/N of each epoch (DistributedSampler,
1/N of the batch, so the global batch and the recipe's learning rate stay those of one process) and the gradients
are averaged. Frozen-backbone features are extracted 1/N per rank and gathered. Only rank 0 writes the run folder,
so the files (and the checkpoint format) are those of a one-process run.

BatchNorm: on CUDA the model's BatchNorm layers become SyncBatchNorm (statistics over the global batch); on CPU
PyTorch has no SyncBatchNorm, so each process normalises over its own part of the batch (as DDP does by default).
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar

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
