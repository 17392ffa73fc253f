"""`landmark train --nproc N`: N processes through torchrun's own launcher (torch.distributed.run's `elastic_launch`),
each running `fit` (distributed.py holds what a rank does); the result is read back from the run folder."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

from ..errors import LandmarkError


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
