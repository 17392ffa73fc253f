"""`landmark train --nproc N`: DistributedDataParallel over gloo on the CPU (training/distributed.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import free_port
from landmark_search.cli import app

runner = CliRunner()
TINY = ["--model", "scratch", "--image-size", "32", "--batch-size", "8", "--workers", "0", "--lr", "1e-3",
        "--scheduler", "none", "--valid-split", "0.25", "--quiet", "--no-report"]


@pytest.fixture(scope="module")
def easy_data(tmp_path_factory) -> Path:
    """2 classes x 16 photos of 32 px (reddish and bluish noise): a scratch model learns them in a few steps."""
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("easy")
    for name, channel in (("00.Red", 0), ("01.Blue", 2)):
        (root / "train" / name).mkdir(parents=True)
        for i in range(16):
            pixels = rng.integers(0, 120, (32, 32, 3), dtype=np.uint8)
            pixels[..., channel] += 120
            Image.fromarray(pixels).save(root / "train" / name / f"{i:02d}.png")
    return root


def test_two_processes_write_a_normal_run_that_resumes(easy_data, tmp_path):
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", *TINY, "--data", str(easy_data), "--out", str(run), "--epochs", "3",
                                 "--nproc", "2"])
    assert result.exit_code == 0, result.output
    assert {"best.pt", "last.pt", "history.csv", "config.json", "metrics.json", "mean_std.json", "curves.png"} <= \
        {p.name for p in run.iterdir()}
    assert json.loads((run / "config.json").read_text())["processes"] == 2
    losses = [float(line.split(",")[1]) for line in (run / "history.csv").read_text().splitlines()[1:]]
    assert len(losses) == 3 and losses[-1] < losses[0]  # it learns
    from landmark_search.embeddings import embed_paths, load_model

    model = load_model(run / "best.pt")  # the checkpoint format of a one-process run
    photo = next((easy_data / "train").rglob("*.png"))
    assert embed_paths([photo], model).embeddings.shape == (1, 256)
    # Resumed in this process (one more 2-process launch would cost seconds): the same last.pt either way.
    more = runner.invoke(app, ["train", "--resume", str(run), "--epochs", "4", "--quiet", "--no-report"])
    assert more.exit_code == 0, more.output
    assert len((run / "history.csv").read_text().splitlines()) == 1 + 4
    refused = runner.invoke(app, ["train", *TINY, "--data", str(easy_data), "--out", str(run), "--nproc", "2"])
    assert refused.exit_code == 1 and "already holds a training run" in refused.output  # rank 0's one line


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(8, 3, 32, 32, generator=gen), torch.randint(0, 3, (8,), generator=gen)


def _first_step(rank: int, world: int, port: int, out: str) -> None:
    """One rank: the training loop's first step through DDP (lr 0, so the gradients are what is left)."""
    import os

    from torch.utils.data import DataLoader, TensorDataset

    from landmark_search.models import build_model
    from landmark_search.training import distributed
    from landmark_search.training.loop import Runtime, train_one_epoch

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    ranks = distributed.start("cpu")
    torch.manual_seed(rank)  # different weights per process: DDP must hand rank 0's to all
    model = build_model("scratch", 3, pretrained=False, dropout=0.0)
    data = TensorDataset(*_batch())
    sampler, batch, _ = distributed.share(data, 8, ranks, seed=0)
    loader = DataLoader(data, batch_size=batch, sampler=sampler)
    trained = distributed.wrap(model, ranks)
    train_one_epoch(trained, loader, torch.optim.SGD(model.parameters(), lr=0.0), torch.nn.CrossEntropyLoss(),
                    Runtime(torch.device("cpu"), None))
    torch.save({"indices": list(sampler), "grads": {n: p.grad for n, p in model.named_parameters()},
                "weights": model.state_dict()}, f"{out}.{rank}")
    distributed.stop(ranks)


def test_two_processes_give_the_first_step_gradients_of_one(tmp_path):
    from landmark_search.models import build_model

    torch.multiprocessing.spawn(_first_step, args=(2, free_port(), str(tmp_path / "r")), nprocs=2)
    ranks = [torch.load(tmp_path / f"r.{r}", weights_only=True) for r in range(2)]
    assert sorted(ranks[0]["indices"] + ranks[1]["indices"]) == list(range(8))  # disjoint halves of the batch
    # One process, the same weights (rank 0's) and the same 8 photos. On the CPU, BatchNorm normalises over each
    # process's half of the batch (there is no SyncBatchNorm for gloo), so the reference does too.
    torch.manual_seed(0)
    model = build_model("scratch", 3, pretrained=False, dropout=0.0)
    model.load_state_dict(torch.load(tmp_path / "r.0", weights_only=True)["weights"])
    x, y = _batch()
    model.train()
    loss = sum(torch.nn.functional.cross_entropy(model(x[r["indices"]]), y[r["indices"]]) for r in ranks) / 2
    loss.backward()
    for name, param in model.named_parameters():
        for r in ranks:  # every rank holds the averaged gradient
            np.testing.assert_allclose(r["grads"][name].numpy(), param.grad.numpy(), rtol=1e-4, atol=1e-6,
                                       err_msg=name)
