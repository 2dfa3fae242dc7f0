"""Resumable training checkpoints: model, optimizer, scheduler, scaler, counters, RNG states.

Checkpoints are for resuming a run, not for shipping: they are written with ``torch.save``
(atomically: to memory, then temp file + rename) and read back with ``weights_only=True``, so
loading one never runs pickled code. Shipped / registered weights are ``.safetensors`` only
(:mod:`blastoseg.weights`).
"""

from __future__ import annotations

import io
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from blastoseg.errors import BlastosegError
from blastoseg.io.atomic import atomic_write_bytes

__all__ = [
    "CHECKPOINT_DIR",
    "CheckpointError",
    "LAST_CHECKPOINT",
    "capture_rng_state",
    "find_checkpoint",
    "load_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
]

CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.pt"
CHECKPOINT_FORMAT_VERSION = 1


class CheckpointError(BlastosegError):
    """A training checkpoint cannot be read or does not fit the job."""


def capture_rng_state() -> dict:
    """Python, numpy and torch (CPU and CUDA) RNG states, as weights_only-loadable objects."""
    np_state = np.random.get_state()
    state = {
        "python": _tuples_to_lists(random.getstate()),
        "numpy": {
            "name": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _tuples_to_lists(obj: Any) -> Any:
    if isinstance(obj, (tuple, list)):
        return [_tuples_to_lists(o) for o in obj]
    return obj


def _lists_to_tuples(obj: Any) -> Any:
    if isinstance(obj, list):
        return tuple(_lists_to_tuples(o) for o in obj)
    return obj


def restore_rng_state(state: dict) -> None:
    """Undo :func:`capture_rng_state`."""
    if "python" in state:
        random.setstate(_lists_to_tuples(state["python"]))
    if "numpy" in state:
        s = state["numpy"]
        np.random.set_state((s["name"], s["keys"].numpy().astype(np.uint32), s["pos"],
                             s["has_gauss"], s["cached_gaussian"]))
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        states = state["cuda"]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Write a checkpoint dict atomically (a killed write never leaves a half file).

    ``state`` holds state dicts and plain values (tensors, numbers, strings, lists, dicts):
    keys used by the engine are ``model``, ``optimizer``, ``scheduler``, ``scaler``, ``step``,
    ``epoch``, ``micro_in_epoch``, ``elapsed_s``, ``best_metric``, ``best_step``, ``rng``,
    ``kind``, ``finished``.
    """
    buffer = io.BytesIO()
    torch.save({"format_version": CHECKPOINT_FORMAT_VERSION, **state}, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint with ``torch.load(weights_only=True)``; CheckpointError if unusable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"cannot resume from {path}: the checkpoint is damaged or not a blastoseg "
            f"checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). Delete it "
            "to start the job from scratch"
        ) from None
    if not isinstance(state, dict) or "step" not in state or "model" not in state:
        raise CheckpointError(f"{path} is not a blastoseg training checkpoint")
    return state


def find_checkpoint(job_dir: str | os.PathLike) -> Path | None:
    """The job folder's last checkpoint, or None."""
    path = Path(job_dir) / CHECKPOINT_DIR / LAST_CHECKPOINT
    return path if path.is_file() else None
