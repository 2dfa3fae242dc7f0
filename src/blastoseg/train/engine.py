"""The training engine: one model-agnostic loop for every model kind.

A model kind plugs in as a :class:`TrainTask` registered with :func:`register_task`; the engine
does the rest: seeding, AdamW with a cosine or step schedule, gradient accumulation, mixed
precision on CUDA, epochs or a wall-clock budget, step / validation / checkpoint events,
checkpoints every N steps or M seconds and on SIGTERM/SIGINT or a cooperative cancel, automatic
resume from the job folder's last checkpoint, and at the end ``.safetensors`` weights with a
model card, registered in the user model registry.

Entry points: :func:`run_job` (a job folder -> exit code; what ``blastoseg train JOB_DIR``
calls) and :func:`train` (a loaded :class:`TrainJob` -> :class:`TrainResult`).

The pieces live in :mod:`~blastoseg.train.task` (the plug-in protocol and the task registry;
which module trains which kind is in :mod:`blastoseg.kinds`), :mod:`~blastoseg.train.trainer`
(the loop), :mod:`~blastoseg.train.schedule` (the learning-rate schedule) and
:mod:`~blastoseg.train.runtime` (seeding, cancel and signals, exit codes); import their names
from there (or from :mod:`blastoseg.train`).
"""

from __future__ import annotations

import os
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from blastoseg.errors import BlastosegError
from blastoseg.io.atomic import remove_stale_temp_files
from blastoseg.train.checkpoint import CHECKPOINT_DIR
from blastoseg.train.distributed import is_main_process
from blastoseg.train.events import EVENTS_FILE, EventWriter
from blastoseg.train.job import JobError, TrainJob
from blastoseg.train.runtime import (
    EXIT_BAD_JOB,
    EXIT_CANCELLED,
    EXIT_FAILED,
    SignalHandlers,
    StopFlag,
    TrainResult,
)
from blastoseg.train.trainer import OUTPUT_DIR, Trainer

__all__ = ["create_and_run", "run_job", "train"]


# --- in-process entry point -----------------------------------------------------------------

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
    main = is_main_process()  # under torchrun only rank 0 writes
    if events is None:
        events = EventWriter(job_dir / EVENTS_FILE if main else None, stream=main)
    flag = StopFlag(cancel)
    # one engine per job folder (launching refuses a running job): a temp file in its folders
    # is what a killed earlier run left behind (a checkpoint's is as large as the checkpoint)
    for folder in (job_dir / CHECKPOINT_DIR, job_dir / OUTPUT_DIR) if main else ():
        remove_stale_temp_files(folder)
    try:
        with SignalHandlers(flag, handle_signals):
            return Trainer(job, job_dir, events, flag, resume, device).run()
    finally:
        if own_events:
            events.close()


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
    main = is_main_process()  # under torchrun only rank 0 writes events
    events_path = job_dir / EVENTS_FILE if job_dir.is_dir() and main else None
    with EventWriter(events_path, stream=sys.stdout if stdout and main else None,
                     callback=callback if main else None) as events:
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

