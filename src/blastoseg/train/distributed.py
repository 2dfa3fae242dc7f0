"""Data-parallel training under ``torchrun`` (DDP): what the training loop asks of it.

``torchrun --nproc_per_node N -m blastoseg train JOB_DIR`` (or ``blastoseg train ... --nproc
N``, which launches that) starts N copies of the engine; each reads its rank from the
environment torchrun sets (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``). :class:`DistContext`
is what :class:`~blastoseg.train.trainer.Trainer` uses, and with a world of one it does
nothing at all, so the single-process path is the one it always was:

- the process group (gloo on CPU, nccl on CUDA, one GPU per local rank);
- the model wrapped in ``DistributedDataParallel`` for the training step (gradients averaged
  over the ranks; validation, checkpoints and the final weights use the plain module);
- each epoch's sample order from a ``DistributedSampler`` (each rank its own share, the same
  number of batches on every rank);
- the logged losses averaged over the ranks, and the decision to stop taken by all together
  (a signal or the time budget seen by one rank stops every rank at the same step).

Only rank 0 writes events, checkpoints and the model (the trainer asks :attr:`is_main`).
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from blastoseg.errors import BlastosegError

__all__ = ["DistContext", "is_main_process", "launch_torchrun"]

#: stop decisions as numbers, so the ranks agree with one all-reduce (max wins)
_STOPS = (None, "done", "cancel")


def is_main_process() -> bool:
    """Rank 0, or not under torchrun."""
    return int(os.environ.get("RANK", "0")) == 0


class _DDPModel:
    """The DDP wrapper as the tasks see it: calling it runs DDP's forward (gradients are
    synchronised); any other attribute (``config``, ...) is the module's own."""

    def __init__(self, ddp: nn.Module) -> None:
        self._ddp = ddp

    def __call__(self, *args, **kwargs):
        return self._ddp(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._ddp.module, name)


@dataclass
class DistContext:
    """This process's place in a data-parallel run (a world of 1: not distributed)."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    _cuda: bool = field(default=False, init=False, repr=False)

    @classmethod
    def from_env(cls) -> DistContext:
        try:
            return cls(int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0")),
                       int(os.environ.get("LOCAL_RANK", "0")))
        except ValueError as exc:
            raise BlastosegError(f"bad torchrun environment: {exc}") from None

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def backend(self) -> str:
        return "nccl" if self._cuda else "gloo"

    def start(self, device: torch.device, kind: str) -> torch.device:
        """Join the process group; returns this rank's device (``cuda:LOCAL_RANK`` on GPUs)."""
        self._cuda = device.type == "cuda"
        if not self.active:
            return device
        if kind == "pix2pix":  # its losses() bypasses forward, which DDP needs to sync
            raise BlastosegError("pix2pix training runs in one process; drop --nproc / torchrun")
        if self._cuda:
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(self.backend)
        return device

    def wrap(self, model: nn.Module, device: torch.device):
        """The model the training step calls: DDP around ``model`` when distributed."""
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        # detection models leave some heads out of some losses: let DDP find them
        ddp = DistributedDataParallel(model, device_ids=[device.index] if self._cuda else None,
                                      find_unused_parameters=True)
        return _DDPModel(ddp)

    def batches_per_epoch(self, n_samples: int, batch_size: int) -> int:
        share = -(-n_samples // self.world_size)  # DistributedSampler pads to equal shares
        return -(-share // batch_size)

    def epoch_order(self, dataset, seed: int, epoch: int) -> list[int]:
        """This rank's sample indices for ``epoch``: the single-process permutation when not
        distributed, else a :class:`~torch.utils.data.DistributedSampler`'s share."""
        if not self.active:
            return torch.randperm(len(dataset), generator=torch.Generator().manual_seed(
                seed + 7919 * epoch)).tolist()
        from torch.utils.data import DistributedSampler

        sampler = DistributedSampler(dataset, num_replicas=self.world_size, rank=self.rank,
                                     shuffle=True, seed=seed)
        # the sampler permutes with seed + epoch: this "epoch" gives the single process's
        # permutation, dealt out rank by rank, so N ranks x batch B see the very samples of
        # one process with batch N x B (the loss curves can be compared step by step)
        sampler.set_epoch(7919 * epoch)
        return list(sampler)

    def mean(self, values: Mapping[str, float]) -> dict[str, float]:
        """Each value averaged over the ranks (the global batch's mean loss)."""
        if not self.active or not values:
            return dict(values)
        import torch.distributed as dist

        keys = sorted(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64,
                         device=self._reduce_device())
        dist.all_reduce(t)
        return {k: float(v) / self.world_size for k, v in zip(keys, t.tolist(), strict=True)}

    def from_main(self, value: float) -> float:
        """Rank 0's ``value`` on every rank (e.g. the elapsed time a schedule reads)."""
        if not self.active:
            return value
        import torch.distributed as dist

        t = torch.tensor([float(value)], dtype=torch.float64, device=self._reduce_device())
        dist.broadcast(t, src=0)
        return float(t.item())

    def agree_stop(self, stop: str | None) -> str | None:
        """The stop decision of the rank that wants to stop most (cancel > done > go on)."""
        if not self.active:
            return stop
        import torch.distributed as dist

        t = torch.tensor([_STOPS.index(stop)], device=self._reduce_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return _STOPS[int(t.item())]

    def _reduce_device(self) -> torch.device:
        return torch.device("cuda", torch.cuda.current_device()) if self._cuda else \
            torch.device("cpu")

    def close(self, wait: bool = True) -> None:
        """Leave the process group, after every rank got here when ``wait`` (a rank that
        failed does not wait: torchrun then stops the others)."""
        if not self.active:
            return
        import torch.distributed as dist

        if dist.is_initialized():
            # a DDP reducer kept alive by a reference cycle would otherwise be freed at
            # interpreter exit, with Gloo work still pending: the rank then aborts
            # ("terminate called without an active exception")
            gc.collect()
            if wait:
                dist.barrier()
            dist.destroy_process_group()


def launch_torchrun(train_argv: Sequence[str], nproc: int) -> int:
    """Run ``blastoseg train <train_argv>`` under ``torchrun --standalone --nproc_per_node
    nproc`` (one machine; several machines: run torchrun yourself, docs/scale_out.md);
    returns its exit status."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", "-m", "blastoseg", "train", *train_argv]
    print("launching: " + " ".join(cmd[2:]), file=sys.stderr)
    return subprocess.call(cmd)
