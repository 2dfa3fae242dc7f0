"""Seeds for the items a DataLoader's workers load, so that a run resumed in the middle of an
epoch draws exactly what the uninterrupted run drew (issue 18; used by
:mod:`blastoseg.train.trainer` when ``num_workers`` > 0)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["SeededItems", "item_seeds"]


class SeededItems(Dataset):
    """A training set as DataLoader workers see it: item ``(index, seed)`` seeds torch's,
    numpy's and Python's global random generators with ``seed``, then returns
    ``dataset[index]``.

    Without it a worker's global generators run on from the items it drew before, and which
    worker gets which batch depends on where the loader started: a run resumed in the middle
    of an epoch (its loader starts there) gave its items to other workers, in other states,
    than the uninterrupted run did, so draws a dataset took from the global generators
    (e.g. the shape prior's crop augmentation) differed (issue 18). The seed of an item is a
    function of the job's seed, the epoch, the rank and the item's place in the epoch
    (:func:`item_seeds`), so every item sees the same numbers whichever worker loads it.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        return self.dataset[index]


def item_seeds(seed: int, epoch: int, rank: int, n: int) -> list[int]:
    """One seed per place in a rank's epoch (see :class:`SeededItems`)."""
    rng = np.random.default_rng([int(seed) % 2**63, int(epoch), int(rank), 0x17E4])
    return rng.integers(0, 2**62, size=n, dtype=np.int64).tolist()
