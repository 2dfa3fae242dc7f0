"""The plug-in side of the training engine: the :class:`TrainTask` protocol and the task registry.

A model kind becomes trainable by subclassing :class:`TrainTask` and calling
:func:`register_task`; the module of each built-in kind is named in the model-kind table
(:data:`blastoseg.kinds.KINDS`, ``task``) and imported on first use by :func:`get_task`.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.data import default_collate as _default_collate

from blastoseg.errors import BlastosegError
from blastoseg.kinds import KINDS
from blastoseg.weights.registry import ModelEntry
from blastoseg.weights.safetensors_io import load_into_model

if TYPE_CHECKING:  # the job module imports this one (get_task) at run time
    from blastoseg.train.job import TrainJob

__all__ = [
    "TrainTask",
    "TrainingError",
    "available_tasks",
    "get_task",
    "register_task",
]


class TrainingError(BlastosegError):
    """Training cannot start or cannot go on (unknown kind, empty data, NaN loss, OOM ...)."""


# --- the plug-in protocol -------------------------------------------------------------------

class TrainTask(ABC):
    """How one model kind trains. Subclass it and register it with :func:`register_task`.

    The engine sets ``self.job`` (the :class:`TrainJob`) and ``self.device`` before calling
    any method, and calls :meth:`validate` with the model in eval mode under ``torch.no_grad``.

    Class attributes
    ----------------
    kind
        The model kind (``"amodal"`` ...), written into the model card.
    main_metric
        The key of :meth:`validate`'s result that decides the best checkpoint (None: the first
        key, or ``"val_loss"`` with the default :meth:`validate`).
    higher_is_better
        Direction of ``main_metric`` (ignored for ``*loss*`` metrics, which are minimised).
    """

    kind: str = ""
    main_metric: str | None = None
    higher_is_better: bool = True
    #: things the user should read in the "start" event (e.g. a default the task chose);
    #: set in build_model / make_datasets, which run before it
    start_notes: tuple[str, ...] = ()

    job: TrainJob
    device: torch.device

    @abstractmethod
    def build_model(self, config: dict) -> nn.Module:
        """A fresh model from the job's ``config`` (architecture settings)."""

    @abstractmethod
    def make_datasets(self, job: TrainJob) -> tuple[Dataset, Dataset | None]:
        """``(train, val)`` torch datasets from ``job.train_paths()`` / ``job.val_paths()``;
        ``val`` may be None."""

    @abstractmethod
    def training_step(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        """Forward pass on one (device-resident) batch; returns loss tensors including the
        total ``"loss"`` that is back-propagated (other keys are logged as loss terms)."""

    def validate(self, model: nn.Module, val: Dataset) -> dict[str, float]:
        """Metrics on the validation set (e.g. ``{"mAP": ...}``). Default: mean ``val_loss``."""
        loader = DataLoader(val, batch_size=int(self.job.hp("batch_size")), shuffle=False,
                            collate_fn=self.collate)
        total, count = 0.0, 0
        for batch in loader:
            losses = self.training_step(model, self.move_to_device(batch, self.device))
            total += float(losses["loss"]) * _batch_len(batch)
            count += _batch_len(batch)
        return {"val_loss": total / max(count, 1)}

    def collate(self, samples: list) -> Any:
        """Turn a list of dataset items into a batch (default: torch's default_collate)."""
        return _default_collate(samples)

    def move_to_device(self, batch: Any, device: torch.device) -> Any:
        """Move a batch to ``device`` (tensors inside tuples, lists and dicts)."""
        return _to_device(batch, device)

    def load_base(self, model: nn.Module, entry: ModelEntry) -> None:
        """Initialise ``model`` from base weights (default: strict load, kind must match)."""
        load_into_model(model, entry.weights_path, card=entry.card.to_dict(),
                        expected_kind=self.kind or self.job.kind)

    def model_card(self, job: TrainJob, model: nn.Module, metrics: Mapping[str, float]) -> dict:
        """Extra model-card fields; default architecture = the model's class, config = job's."""
        return {"architecture": type(model).__name__, "config": dict(job.config)}

    def finalise_card(self, job: TrainJob, weights_path: Path, card_path: Path) -> dict | None:
        """After the final weights and card are written, before registration: a task may
        update the card on disk (e.g. calibrate post-processing on the validation data) and
        return a summary for the events. Default: nothing."""
        return None


def _batch_len(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() else 1
    if isinstance(batch, (list, tuple)) and batch:
        return _batch_len(batch[0])
    if isinstance(batch, Mapping) and batch:
        return _batch_len(next(iter(batch.values())))
    return 1


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, Mapping):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
        return type(obj)(*(_to_device(v, device) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(v, device) for v in obj)
    return obj


# --- task registry --------------------------------------------------------------------------

_TASKS: dict[str, Callable[[], TrainTask]] = {}


def register_task(kind: str, factory: Callable[[], TrainTask]) -> None:
    """Make a model kind trainable: ``factory()`` (a TrainTask subclass or any callable)
    returns a fresh :class:`TrainTask`. Registering a kind again replaces it."""
    if not isinstance(kind, str) or not kind:
        raise ValueError("a task kind must be a non-empty string")
    _TASKS[kind] = factory


def available_tasks() -> list[str]:
    """Registered model kinds (including built-in kinds not imported yet)."""
    return sorted(set(_TASKS) | set(KINDS))


def _check_installed(module: str) -> None:
    """A job's ``task_module`` must be installed code, never a file that came with the job
    folder (job folders travel between machines; the job runs with its folder as the working
    directory)."""
    import importlib.util
    import os

    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin:
        raise TrainingError(f"the job's task_module {module!r} is not installed here; install "
                            "the package that provides it")
    origin = Path(spec.origin).resolve()
    cwd = Path(os.getcwd()).resolve()
    if origin.is_relative_to(cwd) and not _is_installed(origin):
        raise TrainingError(
            f"the job's task_module {module!r} is the file {origin} in the working folder: a "
            "job folder may not bring its own code; install it as a package instead")


def _is_installed(path: Path) -> bool:
    """Inside site-packages / dist-packages or the blastoseg package itself."""
    import blastoseg

    pkg = Path(blastoseg.__file__).resolve().parent
    return path.is_relative_to(pkg) or any(p in ("site-packages", "dist-packages")
                                           for p in path.parts)


def get_task(kind: str, task_module: str | None = None) -> TrainTask:
    """A fresh task for ``kind``, importing ``task_module`` or the built-in module first."""
    builtin = KINDS[kind].task if kind in KINDS else None
    if task_module and task_module != builtin:
        _check_installed(task_module)
    modules = [m for m in (task_module, builtin) if m]
    if kind not in _TASKS:
        for module in modules:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise TrainingError(
                    f"cannot load the training code for model kind {kind!r} "
                    f"(module {module!r}): {exc}"
                ) from None
    if kind not in _TASKS:
        known = ", ".join(available_tasks()) or "none registered"
        raise TrainingError(f"unknown model kind {kind!r}; trainable kinds: {known}")
    task = _TASKS[kind]()
    if not isinstance(task, TrainTask):
        raise TrainingError(f"the factory registered for {kind!r} did not return a TrainTask")
    return task
