"""One training engine for every model kind: jobs, events, checkpoints, the loop.

Typical use::

    from blastoseg.train import create_job, run_job
    job_dir = create_job("amodal", "data/train", "runs/amodal-1", val_data="data/val",
                         epochs=20, hyper={"lr": 3e-4, "batch_size": 4})
    exit_code = run_job(job_dir)          # events on stdout and in runs/amodal-1/events.jsonl

A model kind plugs in by subclassing :class:`TrainTask` and calling :func:`register_task`.
"""

from blastoseg.train.checkpoint import CheckpointError, find_checkpoint, load_checkpoint
from blastoseg.train.engine import create_and_run, run_job, train
from blastoseg.train.events import EVENT_TYPES, EventWriter, parse_event_line, read_events
from blastoseg.train.job import DEFAULT_HYPER, JobError, TrainJob, create_job, export_job
from blastoseg.train.runtime import (
    EXIT_BAD_JOB,
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_OK,
    TrainResult,
    seed_everything,
)
from blastoseg.train.task import (
    TrainingError,
    TrainTask,
    available_tasks,
    get_task,
    register_task,
)

__all__ = [
    "DEFAULT_HYPER",
    "EVENT_TYPES",
    "EXIT_BAD_JOB",
    "EXIT_CANCELLED",
    "EXIT_FAILED",
    "EXIT_OK",
    "CheckpointError",
    "EventWriter",
    "JobError",
    "TrainJob",
    "TrainResult",
    "TrainTask",
    "TrainingError",
    "available_tasks",
    "create_and_run",
    "create_job",
    "export_job",
    "find_checkpoint",
    "get_task",
    "load_checkpoint",
    "parse_event_line",
    "read_events",
    "register_task",
    "run_job",
    "seed_everything",
    "train",
]
