"""A tiny toy model kind for the training-engine tests (importable by subprocesses).

The "dataset" is a folder with ``toy.json`` (``{"n": 64}``); samples are a fixed random linear
regression problem, so the loss of a 2-layer MLP falls within a few dozen steps.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

from blastoseg.train import TrainTask, register_task

KIND = "toy"


def make_toy_dataset(folder: str | Path, n: int = 64) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "toy.json").write_text(json.dumps({"n": n}))
    return folder


def _samples(folder: Path, seed: int) -> TensorDataset:
    n = json.loads((folder / "toy.json").read_text())["n"]
    g = torch.Generator().manual_seed(1234 + seed)
    w = torch.tensor([[1.5], [-2.0], [0.5], [1.0]])
    x = torch.randn(n, 4, generator=g)
    y = x @ w + 0.3 + 0.01 * torch.randn(n, 1, generator=g)
    return TensorDataset(x, y)


class _NoisyItems(torch.utils.data.Dataset):
    """Items with noise drawn from torch's global RNG in ``__getitem__``: as a dataset that
    augments with the global generators does (in a DataLoader worker, the worker's)."""

    def __init__(self, items) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        x, y = self.items[i]
        return x + 0.1 * torch.randn_like(x), y


class ToyTask(TrainTask):
    kind = KIND
    main_metric = "mse"
    higher_is_better = False

    def build_model(self, config: dict) -> nn.Module:
        hidden = int(config.get("hidden", 16))
        return nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def make_datasets(self, job):
        train = torch.utils.data.ConcatDataset([_samples(p, 0) for p in job.train_paths()])
        if job.config.get("augment_items"):
            train = _NoisyItems(train)
        val = (torch.utils.data.ConcatDataset([_samples(p, 1) for p in job.val_paths()])
               if job.val_data else None)
        return train, val

    def training_step(self, model, batch):
        sleep = float(self.job.config.get("sleep_s", 0.0))
        if sleep:
            time.sleep(sleep)
        x, y = batch
        if self.job.config.get("augment"):  # as augmentation does: draws from torch's RNG
            x = x + 0.1 * torch.randn_like(x)
        pred = model(x)
        mse = nn.functional.mse_loss(pred, y)
        l1 = (pred - y).abs().mean()
        return {"loss": mse, "l1": l1}

    def validate(self, model, val):
        x = torch.stack([val[i][0] for i in range(len(val))]).to(self.device)
        y = torch.stack([val[i][1] for i in range(len(val))]).to(self.device)
        return {"mse": float(nn.functional.mse_loss(model(x), y))}


register_task(KIND, ToyTask)
