"""The training engine: one model-agnostic loop for every model kind.

A model kind plugs in as a :class:`TrainTask` registered with :func:`register_task`; the engine
does the rest: seeding, AdamW with a cosine or step schedule, gradient accumulation, mixed
precision on CUDA, epochs or a wall-clock budget, step / validation / checkpoint events,
checkpoints every N steps or M seconds and on SIGTERM/SIGINT or a cooperative cancel, automatic
resume from the job folder's last checkpoint, and at the end ``.safetensors`` weights with a
model card, registered in the user model registry.

Entry points: :func:`run_job` (a job folder -> exit code; what ``blastoseg train JOB_DIR``
calls) and :func:`train` (a loaded :class:`TrainJob` -> :class:`TrainResult`).
"""

from __future__ import annotations

import importlib
import math
import os
import random
import signal
import sys
import threading
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.data import default_collate as _default_collate

from blastoseg.errors import BlastosegError
from blastoseg.predict.device import describe_device, resolve_device
from blastoseg.train.checkpoint import (
    CHECKPOINT_DIR,
    LAST_CHECKPOINT,
    capture_rng_state,
    find_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from blastoseg.train.events import EVENTS_FILE, EventWriter
from blastoseg.train.job import JobError, TrainJob
from blastoseg.weights.registry import (
    ModelCard,
    ModelEntry,
    list_models,
    register_model,
    resolve_model,
    verify,
    write_card,
)
from blastoseg.weights.safetensors_io import (
    WeightsError,
    check_state_dict,
    load_into_model,
    load_weights,
    save_weights,
    sha256_file,
)

__all__ = [
    "EXIT_BAD_JOB",
    "EXIT_CANCELLED",
    "EXIT_FAILED",
    "EXIT_OK",
    "OUTPUT_DIR",
    "TrainResult",
    "TrainTask",
    "TrainingError",
    "available_tasks",
    "get_task",
    "register_task",
    "run_job",
    "seed_everything",
    "train",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_JOB = 2
EXIT_CANCELLED = 130  # the shell convention for "stopped by Ctrl-C"

OUTPUT_DIR = "output"
BEST_WEIGHTS = "best.safetensors"


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
#: kind -> module that registers it when imported (filled as model kinds are added)
BUILTIN_TASK_MODULES: dict[str, str] = {
    "shape_prior": "blastoseg.train.shape_prior_task",
    "amodal": "blastoseg.train.amodal_task",
}


def register_task(kind: str, factory: Callable[[], TrainTask]) -> None:
    """Make a model kind trainable: ``factory()`` (a TrainTask subclass or any callable)
    returns a fresh :class:`TrainTask`. Registering a kind again replaces it."""
    if not isinstance(kind, str) or not kind:
        raise ValueError("a task kind must be a non-empty string")
    _TASKS[kind] = factory


def available_tasks() -> list[str]:
    """Registered model kinds (including built-in kinds not imported yet)."""
    return sorted(set(_TASKS) | set(BUILTIN_TASK_MODULES))


def get_task(kind: str, task_module: str | None = None) -> TrainTask:
    """A fresh task for ``kind``, importing ``task_module`` or the built-in module first."""
    modules = [m for m in (task_module, BUILTIN_TASK_MODULES.get(kind)) if m]
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


# --- helpers --------------------------------------------------------------------------------

def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's (all devices) random generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class LRSchedule:
    """Learning-rate factor as a function of progress: linear warm-up then cosine / step /
    constant. Progress is ``step / total_steps``, or elapsed / budget for time-budget runs."""

    def __init__(self, kind: str, *, warmup_steps: int, total_steps: int | None,
                 budget_s: float | None, min_ratio: float, step_every: int, gamma: float):
        self.kind = kind
        self.warmup_steps = int(warmup_steps or 0)
        self.total_steps = total_steps
        self.budget_s = budget_s
        self.min_ratio = float(min_ratio)
        self.step_every = max(int(step_every or 1), 1)
        self.gamma = float(gamma)
        self.last_factor = 1.0

    def progress(self, step: int, elapsed_s: float) -> float:
        parts = []
        if self.total_steps:
            parts.append(step / self.total_steps)
        if self.budget_s:
            parts.append(elapsed_s / self.budget_s)
        return min(max(parts), 1.0) if parts else 0.0

    def factor(self, step: int, elapsed_s: float) -> float:
        if self.warmup_steps and step < self.warmup_steps:
            f = (step + 1) / self.warmup_steps
        elif self.kind == "cosine":
            p = self.progress(step, elapsed_s)
            f = self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * p))
        elif self.kind == "step":
            f = self.gamma ** (step // self.step_every)
        else:
            f = 1.0
        self.last_factor = f
        return f

    def state_dict(self) -> dict:
        return {"kind": self.kind, "warmup_steps": self.warmup_steps,
                "total_steps": self.total_steps, "budget_s": self.budget_s,
                "last_factor": self.last_factor}


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


class _StopFlag:
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


class _SignalHandlers:
    """Install SIGINT/SIGTERM handlers that ask the loop to stop after the current step; a
    second signal stops at once (KeyboardInterrupt). Only in the main thread."""

    def __init__(self, flag: _StopFlag, enabled: bool) -> None:
        self.flag = flag
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.flag.reason is not None and self.flag.reason.startswith("signal"):
            raise KeyboardInterrupt(f"second {name}: stopping without a checkpoint")
        self.flag.reason = f"signal {name}"

    def __enter__(self) -> _SignalHandlers:
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


def _is_better(value: float, best: float | None, higher: bool) -> bool:
    if best is None:
        return True
    return value > best if higher else value < best


def _unique_model_name(name: str, sha: str) -> tuple[str, ModelEntry | None]:
    """A free registry name based on ``name``; an existing user model with the same bytes is
    returned instead of registering a duplicate."""
    existing = {e.name: e for e in list_models()}
    candidate, n = name, 1
    while candidate in existing:
        entry = existing[candidate]
        if entry.source == "user" and entry.card.sha256 == sha:
            return candidate, entry
        n += 1
        candidate = f"{name}-{n}"
    return candidate, None


# --- the loop -------------------------------------------------------------------------------

def train(
    job: TrainJob,
    *,
    events: EventWriter | None = None,
    cancel: threading.Event | Callable[[], bool] | None = None,
    resume: bool = True,
    device: str | None = None,
    handle_signals: bool = True,
) -> TrainResult:
    """Run a training job in this process.

    Parameters
    ----------
    job
        A validated job whose ``job_dir`` is set (``TrainJob.load(folder)``).
    events
        Where events go (default: ``job_dir/events.jsonl`` and stdout).
    cancel
        A ``threading.Event`` or a callable returning True to stop after the current step
        (checkpoint saved, "cancelled" event, status ``"cancelled"``).
    resume
        Continue from ``job_dir/checkpoints/last.pt`` when it exists.
    device
        Overrides ``job.device``.
    handle_signals
        Install SIGINT/SIGTERM handlers (main thread only) that cancel like ``cancel``.

    Raises
    ------
    BlastosegError
        Bad job, unknown kind, unusable data or weights, NaN loss, out of memory. (:func:`run_job`
        turns these into a "failed" event and an exit code.)
    """
    if job.job_dir is None:
        raise JobError("the training job has no folder: save it or load it with TrainJob.load")
    job_dir = Path(job.job_dir)
    own_events = events is None
    if events is None:
        events = EventWriter(job_dir / EVENTS_FILE, stream=True)
    flag = _StopFlag(cancel)
    try:
        with _SignalHandlers(flag, handle_signals):
            return _Run(job, job_dir, events, flag, resume, device).run()
    finally:
        if own_events:
            events.close()


class _Run:
    def __init__(self, job: TrainJob, job_dir: Path, events: EventWriter, flag: _StopFlag,
                 resume: bool, device: str | None) -> None:
        self.job, self.job_dir, self.events, self.flag = job, job_dir, events, flag
        self.resume = resume
        self.device_name = device or job.device
        self.step = 0
        self.epoch = 0
        self.micro_in_epoch = 0
        self.elapsed_base = 0.0
        self.best_metric: float | None = None
        self.best_step: int | None = None
        self.last_metrics: dict = {}
        self.last_val_step = -1
        self.ckpt_path = job_dir / CHECKPOINT_DIR / LAST_CHECKPOINT

    # time ---------------------------------------------------------------------------
    def elapsed(self) -> float:
        return self.elapsed_base + (time.monotonic() - self.t0)

    def emit(self, event: str, **fields: Any) -> dict:
        return self.events.emit(event, step=self.step, epoch=self.epoch, **fields)

    # setup --------------------------------------------------------------------------
    def setup(self) -> None:
        job = self.job
        self.device = resolve_device(self.device_name)
        seed_everything(job.seed)
        self.task = task = get_task(job.kind, job.task_module)
        task.job, task.device = job, self.device
        self.model = task.build_model(dict(job.config))
        if not isinstance(self.model, nn.Module):
            raise TrainingError(f"the {job.kind!r} task's build_model did not return a module")
        self.train_ds, self.val_ds = task.make_datasets(job)
        self.n_train = len(self.train_ds)
        self.n_val = len(self.val_ds) if self.val_ds is not None else 0
        if self.n_train == 0:
            raise TrainingError(
                f"the training data is empty ({', '.join(job.train_data)}): nothing to train on"
            )
        self.resume_from = find_checkpoint(self.job_dir) if self.resume else None
        if job.base and self.resume_from is None:
            entry = resolve_model(job.base, kind=job.kind)
            verify(entry)
            task.load_base(self.model, entry)
        self.model.to(self.device)

        hp = job.hp
        self.bs, self.accum = int(hp("batch_size")), int(hp("grad_accum"))
        self.batches_per_epoch = math.ceil(self.n_train / self.bs)
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / self.accum)
        limits = []
        if job.epochs is not None:
            limits.append(job.epochs * self.steps_per_epoch)
        if hp("max_steps"):
            limits.append(int(hp("max_steps")))
        self.total_steps = min(limits) if limits else None
        self.budget_s = job.time_budget_min * 60.0 if job.time_budget_min else None
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise TrainingError("the model has no trainable parameters")
        self.base_lr = float(hp("lr"))
        self.optimizer = torch.optim.AdamW(params, lr=self.base_lr,
                                           weight_decay=float(hp("weight_decay")))
        self.schedule = LRSchedule(
            hp("schedule"), warmup_steps=hp("warmup_steps"), total_steps=self.total_steps,
            budget_s=self.budget_s, min_ratio=hp("min_lr_ratio"), step_every=hp("step_every"),
            gamma=hp("gamma"),
        )
        self.use_amp = bool(hp("amp")) and self.device.type == "cuda"
        self.amp_dtype = (torch.bfloat16 if self.use_amp and torch.cuda.is_bf16_supported()
                          else torch.float16)
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=self.use_amp and self.amp_dtype == torch.float16
        )
        if self.resume_from is not None:
            self.load(self.resume_from)

    def load(self, path: Path) -> None:
        state = load_checkpoint(path)
        if state.get("kind") not in (None, self.job.kind):
            raise TrainingError(
                f"the checkpoint {path} belongs to a {state.get('kind')!r} job, not "
                f"{self.job.kind!r}; delete the {CHECKPOINT_DIR} folder to start afresh"
            )
        try:
            check_state_dict(self.model, state["model"], path)
        except WeightsError as exc:
            raise TrainingError(
                f"cannot resume: {exc} (was job.json's config changed? delete the "
                f"{CHECKPOINT_DIR} folder to start afresh)"
            ) from None
        self.model.load_state_dict(state["model"])
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as exc:
            raise TrainingError(f"cannot resume the optimizer from {path}: {exc}") from None
        if state.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.epoch = int(state.get("epoch", 0))
        self.micro_in_epoch = int(state.get("micro_in_epoch", 0))
        if self.micro_in_epoch >= self.batches_per_epoch:  # data changed size: next epoch
            self.epoch, self.micro_in_epoch = self.epoch + 1, 0
        self.elapsed_base = float(state.get("elapsed_s", 0.0))
        self.best_metric = state.get("best_metric")
        self.best_step = state.get("best_step")
        self.last_metrics = dict(state.get("metrics") or {})
        if "rng" in state:
            restore_rng_state(state["rng"])

    # checkpoints --------------------------------------------------------------------
    def checkpoint(self, reason: str, *, finished: bool = False) -> Path:
        state = {
            "kind": self.job.kind,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "step": self.step,
            "epoch": self.epoch,
            "micro_in_epoch": self.micro_in_epoch,
            "elapsed_s": self.elapsed(),
            "best_metric": self.best_metric,
            "best_step": self.best_step,
            "metrics": {k: float(v) for k, v in self.last_metrics.items()},
            "rng": capture_rng_state(),
            "finished": finished,
        }
        save_checkpoint(self.ckpt_path, state)
        self.last_ckpt_step, self.last_ckpt_time = self.step, time.monotonic()
        self.emit("checkpoint", path=str(self.ckpt_path), reason=reason,
                  best_metric=self.best_metric)
        return self.ckpt_path

    # validation ---------------------------------------------------------------------
    def main_metric(self, metrics: Mapping[str, float]) -> tuple[str, bool] | None:
        if not metrics:
            return None
        key = self.task.main_metric
        if key is None or key not in metrics:
            key = "val_loss" if "val_loss" in metrics else next(iter(metrics))
        higher = self.task.higher_is_better and "loss" not in key
        return key, higher

    def validate(self) -> dict:
        if self.val_ds is None or self.n_val == 0:
            return {}
        t = time.monotonic()
        self.model.eval()
        try:
            with torch.no_grad(), self.autocast():
                metrics = self.task.validate(self.model, self.val_ds)
        finally:
            self.model.train()
        metrics = {str(k): float(v) for k, v in dict(metrics).items()}
        self.last_metrics, self.last_val_step = metrics, self.step
        best = False
        chosen = self.main_metric(metrics)
        if chosen is not None:
            key, higher = chosen
            value = metrics[key]
            if math.isfinite(value) and _is_better(value, self.best_metric, higher):
                self.best_metric, self.best_step, best = value, self.step, True
                save_weights(self.model.state_dict(),
                             self.job_dir / CHECKPOINT_DIR / BEST_WEIGHTS,
                             {"kind": self.job.kind, "step": self.step, key: value})
        self.emit("validation", metrics=metrics, main_metric=chosen[0] if chosen else None,
                  best=best, best_metric=self.best_metric, best_step=self.best_step,
                  duration_s=round(time.monotonic() - t, 3))
        return metrics

    def autocast(self):
        if self.use_amp:
            return torch.autocast("cuda", dtype=self.amp_dtype)
        return nullcontext()

    # the loop -----------------------------------------------------------------------
    def should_stop(self) -> str | None:
        if self.flag.requested():
            return "cancel"
        if self.total_steps is not None and self.step >= self.total_steps:
            return "done"
        if self.job.epochs is not None and self.epoch >= self.job.epochs:
            return "done"
        if self.budget_s is not None and self.elapsed() >= self.budget_s:
            return "done"
        return None

    def eta(self) -> float | None:
        done = self.step - self.start_step
        run_time = time.monotonic() - self.t0
        if done <= 0 or run_time <= 0:
            return None
        candidates = []
        if self.total_steps is not None:
            candidates.append((self.total_steps - self.step) * run_time / done)
        if self.budget_s is not None:
            candidates.append(self.budget_s - self.elapsed())
        return round(max(min(candidates), 0.0), 1) if candidates else None

    def optimizer_step(self) -> float:
        lr = self.base_lr * self.schedule.factor(self.step, self.elapsed())
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        clip = self.job.hp("grad_clip")
        if clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(clip))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return lr

    def loop(self) -> str:
        hp = self.job.hp
        log_every = max(int(hp("log_every") or 1), 1)
        val_every = hp("val_every")
        ckpt_every = int(hp("ckpt_every") or 0)
        ckpt_every_s = float(hp("ckpt_every_s") or 0)
        num_workers = int(hp("num_workers") or 0)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        window: dict[str, list[float]] = {}
        last_log_time, last_log_step = time.monotonic(), self.step
        while True:
            stop = self.should_stop()
            if stop:
                return stop
            if hasattr(self.train_ds, "set_epoch"):  # e.g. fresh synthetic frames per epoch
                self.train_ds.set_epoch(self.epoch)
            order = torch.randperm(
                self.n_train, generator=torch.Generator().manual_seed(self.job.seed + 7919 * self.epoch)
            ).tolist()
            loader = DataLoader(
                self.train_ds, batch_size=self.bs, sampler=order[self.micro_in_epoch * self.bs:],
                collate_fn=self.task.collate, num_workers=num_workers,
                pin_memory=self.device.type == "cuda",
                worker_init_fn=_seed_worker if num_workers else None,
            )
            pending = 0
            for batch in loader:
                batch = self.task.move_to_device(batch, self.device)
                with self.autocast():
                    losses = self.task.training_step(self.model, batch)
                if not isinstance(losses, Mapping) or "loss" not in losses:
                    raise TrainingError(
                        f"the {self.job.kind!r} task's training_step must return a dict with "
                        "a 'loss' tensor"
                    )
                loss = losses["loss"]
                if not torch.isfinite(loss.detach()).all():
                    raise TrainingError(
                        f"the loss became {float(loss.detach())} at step {self.step + 1}: training "
                        "diverged. Lower the learning rate (hyper 'lr') or set 'grad_clip'"
                    )
                self.scaler.scale(loss / self.accum).backward()
                for k, v in losses.items():
                    window.setdefault(k, []).append(float(v.detach()) if torch.is_tensor(v)
                                                    else float(v))
                self.micro_in_epoch += 1
                pending += 1
                epoch_end = self.micro_in_epoch >= self.batches_per_epoch
                if pending < self.accum and not epoch_end:
                    continue
                lr = self.optimizer_step()
                pending = 0
                self.step += 1
                if epoch_end:
                    self.epoch, self.micro_in_epoch = self.epoch + 1, 0
                stop = self.should_stop()
                if self.step % log_every == 0 or self.step == self.start_step + 1 or stop:
                    now = time.monotonic()
                    means = {k: sum(v) / len(v) for k, v in window.items()}
                    self.emit(
                        "step", loss=means.pop("loss"), losses=means, lr=lr,
                        eta_s=self.eta(), total_steps=self.total_steps,
                        elapsed_s=round(self.elapsed(), 2),
                        steps_per_s=round((self.step - last_log_step) / max(now - last_log_time,
                                                                          1e-9), 3),
                    )
                    window.clear()
                    last_log_time, last_log_step = now, self.step
                if (val_every and self.step % int(val_every) == 0) or (not val_every and epoch_end):
                    self.validate()
                stop = self.should_stop()  # a cancel may have come during logging/validation
                if stop == "cancel":
                    return stop
                if (ckpt_every and self.step % ckpt_every == 0) or (
                    ckpt_every_s and time.monotonic() - self.last_ckpt_time >= ckpt_every_s
                ):
                    self.checkpoint("interval")
                if stop:
                    return stop

    def finish(self) -> TrainResult:
        job = self.job
        if self.n_val and self.last_val_step != self.step:
            self.validate()
        name = job.model_name()
        out_dir = self.job_dir / OUTPUT_DIR
        best_file = self.job_dir / CHECKPOINT_DIR / BEST_WEIGHTS
        use_best = job.hp("final_weights") == "best" and self.best_step is not None \
            and best_file.is_file()
        weights_path = out_dir / f"{name}.safetensors"
        state = load_weights(best_file) if use_best else self.model.state_dict()
        save_weights(state, weights_path, {"kind": job.kind, "name": name},
                     fp16=bool(job.hp("fp16_weights")))
        sha = sha256_file(weights_path)
        extra = dict(self.task.model_card(job, self.model, self.last_metrics) or {})
        training_data = [{"split": "train", "paths": list(job.train_data), "count": self.n_train}]
        if job.val_data:
            training_data.append({"split": "val", "paths": list(job.val_data),
                                  "count": self.n_val})
        card = ModelCard(
            name=name, kind=job.kind, version=str(job.version),
            architecture=str(extra.pop("architecture", type(self.model).__name__)),
            config=dict(extra.pop("config", job.config)),
            base_model=job.base, training_data=training_data,
            metrics=dict(self.last_metrics), sha256=sha,
            training={
                "hyper": {k: job.hp(k) for k in sorted({*job.hyper})} | {
                    "lr": job.hp("lr"), "batch_size": self.bs, "grad_accum": self.accum,
                    "schedule": job.hp("schedule")},
                "steps": self.step, "epochs": self.epoch, "seed": job.seed,
                "device": str(self.device), "elapsed_s": round(self.elapsed(), 1),
                "weights_from_step": self.best_step if use_best else self.step,
                "best_metric": self.best_metric,
                **extra.pop("training", {}),
            },
            description=job.description,
        )
        for key, value in extra.items():  # further task-specific card fields
            if key in ModelCard.__dataclass_fields__:
                setattr(card, key, value)
            else:
                card.training[key] = value
        card_path = write_card(card, weights_path.with_suffix(".json"))
        entry = None
        if job.register:
            reg_name, entry = _unique_model_name(name, sha)
            if entry is None:
                entry = register_model(weights_path, card, name=reg_name)
        ckpt = self.checkpoint("final", finished=True)
        message = f"trained {self.step} steps in {self.elapsed():.0f} s"
        if entry is not None:
            message += f"; registered as {entry.name!r}"
        self.emit("done", weights=str(weights_path), card=str(card_path),
                  model=entry.name if entry else None,
                  registered_path=str(entry.weights_path) if entry else None,
                  metrics=self.last_metrics, best_metric=self.best_metric,
                  elapsed_s=round(self.elapsed(), 2), message=message)
        return TrainResult("done", self.step, self.epoch, dict(self.last_metrics), weights_path,
                           card_path, entry, ckpt, message)

    def run(self) -> TrainResult:
        self.t0 = time.monotonic()
        self.setup()
        self.t0 = time.monotonic()
        self.start_step = self.step
        self.last_ckpt_step, self.last_ckpt_time = self.step, time.monotonic()
        desc = describe_device(self.device)
        resumed = self.resume_from is not None
        self.emit(
            "start", kind=self.job.kind, device=str(self.device), device_description=desc,
            resumed=resumed, resumed_from_step=self.step if resumed else None,
            total_steps=self.total_steps, steps_per_epoch=self.steps_per_epoch,
            epochs=self.job.epochs, time_budget_s=self.budget_s, n_train=self.n_train,
            n_val=self.n_val, amp=self.use_amp, seed=self.job.seed, pid=os.getpid(),
            job_dir=str(self.job_dir),
            message=(f"training {self.job.kind!r} on {desc}"
                     + (f", resuming from step {self.step}" if resumed else "")),
        )
        try:
            stop = self.loop()
        except torch.cuda.OutOfMemoryError:
            raise TrainingError(
                f"out of GPU memory at step {self.step + 1} on {desc}: lower hyper "
                "'batch_size' (and raise 'grad_accum' to keep the effective batch)"
            ) from None
        if stop == "cancel":
            path = self.checkpoint("cancel")
            reason = self.flag.reason or "cancel requested"
            message = (f"{reason}: stopped after step {self.step}, checkpoint saved; run the "
                       "job again to resume")
            self.emit("cancelled", checkpoint=str(path), reason=reason, message=message)
            return TrainResult("cancelled", self.step, self.epoch, dict(self.last_metrics),
                               checkpoint=path, message=message)
        return self.finish()


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


# --- job-folder entry point -----------------------------------------------------------------

def run_job(
    job_dir: str | os.PathLike,
    *,
    stdout: bool = True,
    cancel: threading.Event | Callable[[], bool] | None = None,
    resume: bool = True,
    device: str | None = None,
    handle_signals: bool = True,
    callback: Callable[[dict], None] | None = None,
) -> int:
    """Run the job in ``job_dir`` (what ``blastoseg train JOB_DIR`` calls); never raises for
    user errors: they end as a "failed" event.

    Returns
    -------
    int
        :data:`EXIT_OK` (0) done, :data:`EXIT_FAILED` (1) failed, :data:`EXIT_BAD_JOB` (2)
        the job folder is invalid, :data:`EXIT_CANCELLED` (130) cancelled by a signal or
        ``cancel`` (a checkpoint was saved; running again resumes).
    """
    job_dir = Path(job_dir)
    events_path = job_dir / EVENTS_FILE if job_dir.is_dir() else None
    with EventWriter(events_path, stream=sys.stdout if stdout else None,
                     callback=callback) as events:
        try:
            job = TrainJob.load(job_dir)
        except BlastosegError as exc:
            events.emit("failed", message=str(exc), error=type(exc).__name__)
            print(f"blastoseg train: {exc}", file=sys.stderr)
            return EXIT_BAD_JOB
        try:
            result = train(job, events=events, cancel=cancel, resume=resume, device=device,
                           handle_signals=handle_signals)
        except KeyboardInterrupt as exc:
            events.emit("cancelled", message=f"interrupted: {exc or 'KeyboardInterrupt'} "
                        "(no new checkpoint)", reason="interrupt")
            return EXIT_CANCELLED
        except BlastosegError as exc:
            events.emit("failed", message=str(exc), error=type(exc).__name__)
            print(f"blastoseg train: {exc}", file=sys.stderr)
            return EXIT_FAILED
        except Exception as exc:
            tb = traceback.format_exc()
            events.emit("failed", message=f"{type(exc).__name__}: {exc}",
                        error=type(exc).__name__, traceback=tb[-4000:])
            print(tb, file=sys.stderr)
            return EXIT_FAILED
        return result.exit_code


def create_and_run(*args: Any, **kwargs: Any) -> int:  # pragma: no cover - convenience
    """:func:`blastoseg.train.job.create_job` then :func:`run_job` on the new folder."""
    from blastoseg.train.job import create_job

    run_kwargs = {k: kwargs.pop(k) for k in ("stdout", "cancel", "handle_signals")
                  if k in kwargs}
    return run_job(create_job(*args, **kwargs), **run_kwargs)

