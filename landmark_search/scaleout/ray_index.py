"""`landmark index --engine ray`: indexing.index_batches on a Ray Data actor pool; the manifest written here.

This process (the driver) walks the photos and decides what to embed exactly as a local run does
(indexing._build_index). Ray Data reads the list of paths, and an actor pool (``map_batches`` with a callable
class) runs indexing.index_batches, the local path itself, on each batch: the model loads once per actor, on CPU
or on a share of a GPU, and the rows (vector, label, confidence, content hash, or why the photo failed) stream
back. The driver alone writes the SQLite manifest, each batch in its own transaction, so a killed job resumes
where it stopped; a batch that Ray delivers twice (a worker died and its task ran again) is written once.

Photos must be readable by every worker under the same path (a shared filesystem), and so must the model file
(each worker checks its sha256 against the driver's). Workers on other machines need landmark-search installed.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from ..config import EmbedConfig
from ..errors import LandmarkError
from ..search import IndexBatch
from ..models.ref import ModelRef

if TYPE_CHECKING:
    from ..embeddings import LoadedModel

INSTALL_HINT = "pip install 'landmark-search[ray]'"
# Paths per Ray block: small enough that every worker gets several blocks, large enough that a block costs
# more than its scheduling (a few ms) at ~100 photos/s per worker.
MAX_BLOCK = 4096
BLOCKS_PER_WORKER = 4


@dataclass(frozen=True)
class RayOptions:
    """Where and with how many workers `--engine ray` embeds."""

    address: str | None = None  # None: a Ray started for this run (or the one this process already joined);
    # "auto": the cluster running on this machine; "ray://HOST:PORT": a remote cluster through Ray Client
    workers: int = 2
    gpus_per_worker: float = 0.0


def import_ray() -> Any:
    """The ray module with Ray Data, or a one-line error saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401  (Ray Data is the extra's part that a bare `pip install ray` lacks)
    except ImportError as exc:
        raise LandmarkError(f"--engine ray needs Ray Data ({exc}); install it with `{INSTALL_HINT}`") from None
    return ray


def worker_config(cfg: EmbedConfig, model: LoadedModel, count: int, gpus: float) -> EmbedConfig:
    """The EmbedConfig every worker uses: the route a local run over `count` photos would take (int8, ONNX
    Runtime... depend on the job's size and the model), decided once here, since a worker sees one batch at a
    time and would decide otherwise; no progress bars."""
    from ..config import ROUTE_SETTINGS
    from ..embeddings import prepare_for, vector_route

    cfg = replace(cfg, progress=False)
    if gpus > 0:
        return replace(cfg, auto_int8=False)
    prepare_for(model, cfg, count)
    return replace(cfg, **{"auto_int8": False, **ROUTE_SETTINGS.get(vector_route(model), {})})


class Embedder:
    """One Ray actor: loads the model once, then turns batches of paths into index rows (index_batches)."""

    def __init__(self, ref: ModelRef, cfg: EmbedConfig) -> None:
        from ..embeddings import load_model
        from ..fsutil import file_sha256

        self.cfg = cfg
        if ref.path is not None and file_sha256(ref.path) != ref.sha256:
            raise LandmarkError(f"{ref.path} on this Ray worker is not the file the driver read (sha256 differs); "
                                "put the model on a filesystem every worker shares")
        self.model = load_model(ref)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from ..search import index_batches

        rows: dict[str, list] = {"path": [], "vector": [], "label": [], "confidence": [], "hash": [], "error": []}
        dim = self.model.embedding_dim
        for done in index_batches([Path(p) for p in batch["path"]], self.model, self.cfg):
            for i, path in enumerate(done.paths):
                for name, value in (("path", str(path)), ("vector", done.vectors[i]), ("label", done.labels[i]),
                                    ("confidence", done.confidences[i]), ("hash", done.hashes[i]), ("error", "")):
                    rows[name].append(value)
            for path, why in done.failed:
                for name, value in (("path", str(path)), ("vector", np.zeros(dim, np.float32)), ("label", None),
                                    ("confidence", None), ("hash", ""), ("error", why)):
                    rows[name].append(value)
        out = {k: np.array(v, dtype=object) for k, v in rows.items() if k != "vector"}
        out["vector"] = np.stack(rows["vector"]).astype(np.float32) if rows["vector"] else np.zeros((0, dim), np.float32)
        return out


def _blocks(paths: Sequence[Path], workers: int) -> list[list[str]]:
    size = max(1, min(MAX_BLOCK, math.ceil(len(paths) / (workers * BLOCKS_PER_WORKER))))
    return [[str(p) for p in paths[i:i + size]] for i in range(0, len(paths), size)]


def _optional(value: Any) -> Any:
    """None for the nulls a column of Python objects comes back with (None, NaN)."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _index_batch(rows: dict[str, np.ndarray], by_name: dict[str, Path], seen: set[str]) -> IndexBatch:
    """Ray's rows as an IndexBatch of the driver's own Paths; rows seen before (a retried task) are left out."""
    keep = [i for i, p in enumerate(rows["path"]) if p not in seen]
    seen.update(rows["path"][i] for i in keep)
    ok = [i for i in keep if not rows["error"][i]]
    return IndexBatch([by_name[rows["path"][i]] for i in ok], np.asarray(rows["vector"][ok], np.float32),
                      [_optional(rows["label"][i]) for i in ok], [_optional(rows["confidence"][i]) for i in ok],
                      [str(rows["hash"][i]) for i in ok],
                      [(by_name[rows["path"][i]], str(rows["error"][i])) for i in keep if rows["error"][i]])


class RayEngine:
    """An indexing.IndexEngine: index_batches on Ray workers, batches back to the driver as they finish."""

    def __init__(self, opts: RayOptions = RayOptions()) -> None:
        if opts.workers < 1:
            raise LandmarkError(f"--workers {opts.workers}: use 1 or more Ray workers")
        if opts.gpus_per_worker < 0:
            raise LandmarkError(f"--gpus-per-worker {opts.gpus_per_worker}: use 0 (CPU) or a positive share of a GPU")
        self.opts = opts
        self.ray = import_ray()

    def _connect(self) -> bool:
        """Join or start Ray; True when this call started it (and so stops it after the run)."""
        ray = self.ray
        if ray.is_initialized():
            return False
        try:
            ray.init(address=self.opts.address, include_dashboard=False, logging_level=logging.WARNING,
                     **({} if self.opts.address else {"num_cpus": os.cpu_count()}))
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise LandmarkError(f"cannot reach Ray at {self.opts.address or 'a new local instance'}: "
                                f"{str(exc).splitlines()[0]}; start the cluster (`ray start --head`) or check "
                                "--address") from None
        return True

    def index_batches(self, paths: Sequence[Path], ref: ModelRef, model: LoadedModel,
                      cfg: EmbedConfig) -> Iterator[IndexBatch]:
        """index_batches(paths) run by `workers` Ray actors; batches in the order they finish."""
        ray, opts = self.ray, self.opts
        started = self._connect()
        try:
            ctx = ray.data.DataContext.get_current()
            ctx.enable_progress_bars = cfg.progress
            ctx.print_on_execution_start = False
            # Ray Data's own INFO lines ("execution finished") and, with --quiet, its warnings stay out of the output.
            logging.getLogger("ray.data").setLevel(logging.WARNING if cfg.progress else logging.ERROR)
            import pyarrow as pa

            blocks = _blocks(paths, opts.workers)
            cpus = max(1.0, float(ray.cluster_resources().get("CPU", 1)) // opts.workers)
            rows = ray.data.from_arrow([pa.table({"path": block}) for block in blocks]).map_batches(
                Embedder, fn_constructor_args=(ref, worker_config(cfg, model, len(paths), opts.gpus_per_worker)),
                batch_size=cfg.batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=opts.workers),
                num_cpus=cpus, num_gpus=opts.gpus_per_worker or None)
            by_name = {str(p): p for p in paths}
            seen: set[str] = set()
            for batch in rows.iter_batches(batch_size=cfg.batch_size, batch_format="numpy"):
                yield _index_batch(batch, by_name, seen)
        finally:
            if started:
                ray.shutdown()
