"""How a training run meets its process: seeding, cancel requests and signals, exit status.

Kept apart from the loop (:mod:`blastoseg.train.trainer`) so the loop and the entry points
(:mod:`blastoseg.train.engine`) share one definition of :class:`TrainResult` and the exit codes.
"""

from __future__ import annotations

import random
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from blastoseg.weights.registry import ModelEntry

__all__ = [
    "EXIT_BAD_JOB",
    "EXIT_CANCELLED",
    "EXIT_FAILED",
    "EXIT_OK",
    "SignalHandlers",
    "StopFlag",
    "TrainResult",
    "seed_everything",
    "seed_worker",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_JOB = 2
EXIT_CANCELLED = 130  # the shell convention for "stopped by Ctrl-C"


# --- seeding --------------------------------------------------------------------------------

def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's (all devices) random generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed numpy and ``random`` from the worker's torch seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


# --- the outcome ----------------------------------------------------------------------------

@dataclass
class TrainResult:
    """What a run ended with."""

    status: str  # "done" | "cancelled" | "failed"
    step: int = 0
    epoch: int = 0
    metrics: dict = field(default_factory=dict)
    weights_path: Path | None = None
    card_path: Path | None = None
    model: ModelEntry | None = None
    checkpoint: Path | None = None
    message: str = ""

    @property
    def exit_code(self) -> int:
        return {"done": EXIT_OK, "cancelled": EXIT_CANCELLED}.get(self.status, EXIT_FAILED)


# --- stopping -------------------------------------------------------------------------------

class StopFlag:
    """Cancel requests from signals, an Event / callable, and the reason."""

    def __init__(self, cancel: threading.Event | Callable[[], bool] | None) -> None:
        self.cancel = cancel
        self.reason: str | None = None

    def requested(self) -> bool:
        if self.reason is None and self.cancel is not None:
            is_set = getattr(self.cancel, "is_set", None)
            if is_set() if is_set is not None else self.cancel():
                self.reason = "cancel requested"
        return self.reason is not None


class SignalHandlers:
    """Install SIGINT/SIGTERM handlers that ask the loop to stop after the current step; a
    second signal stops at once (KeyboardInterrupt). Only in the main thread."""

    def __init__(self, flag: StopFlag, enabled: bool) -> None:
        self.flag = flag
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.flag.reason is not None and self.flag.reason.startswith("signal"):
            raise KeyboardInterrupt(f"second {name}: stopping without a checkpoint")
        self.flag.reason = f"signal {name}"

    def __enter__(self) -> SignalHandlers:
        if self.enabled:
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    self.previous[sig] = signal.signal(sig, self._handler)
                except (ValueError, OSError):  # pragma: no cover - unusual platforms
                    pass
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            try:
                signal.signal(sig, handler)
            except (ValueError, OSError):  # pragma: no cover
                pass
