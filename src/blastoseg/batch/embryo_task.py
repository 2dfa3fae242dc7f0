"""One embryo on a worker: run its tasks into a temporary folder, then publish the folder.

:func:`process_embryo` is what the batch sends to dask (one call per embryo). It never
raises for a bad embryo: an unreadable frame, a refused input or a crash in a verb comes
back as ``{"state": "failed", "error": ...}``, so one embryo fails alone. Results are
written under ``OUT/.partial/`` and renamed to ``OUT/<embryo>`` only when every task
finished: a killed worker leaves a partial folder there (removed by the next run), never a
half-written embryo folder.

Each worker process loads a model once and keeps it: the verbs get their predictor from
:func:`blastoseg.predict.base.load_predictor`, whose cache lives as long as the worker.
"""

from __future__ import annotations

import os
import shutil
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path

from blastoseg.batch.capture import captured_output
from blastoseg.batch.tasks import TaskSettings, parse_task, task_argv
from blastoseg.errors import BlastosegError

__all__ = ["EVENT_TOPIC", "PARTIAL_DIR", "EmbryoJob", "process_embryo", "publish_folder"]

#: the dask event topic on which workers say that an embryo started
EVENT_TOPIC = "blastoseg-batch"
#: where embryos are written before they are complete (inside OUT: the rename stays on one
#: file system, so it is atomic)
PARTIAL_DIR = ".partial"


@dataclass(frozen=True)
class EmbryoJob:
    """What a worker needs for one embryo (small and picklable)."""

    name: str
    input_path: str
    out_dir: str
    settings: TaskSettings


def _announce(name: str) -> str:
    """Tell the client this embryo started (dask event); returns the worker's address."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return "local"
    worker.log_event(EVENT_TOPIC, {"embryo": name, "state": "running",
                                   "worker": worker.address})
    return worker.address


def publish_folder(partial: Path, final: Path) -> None:
    """Replace ``final`` by the complete folder ``partial`` with renames only: an earlier
    result is first moved aside, so ``final`` is at every moment either the old or the new
    complete folder, or absent."""
    final.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if final.exists():
        old = partial.with_name(partial.name + ".old")
        os.replace(final, old)
    os.replace(partial, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def process_embryo(job: EmbryoJob) -> dict:
    """Run every task of ``job`` on its embryo; returns ``state`` ("done" or "failed"),
    ``error``, ``seconds``, ``worker`` and the captured ``log``."""
    start = time.perf_counter()
    worker = _announce(job.name)
    out = Path(job.out_dir)
    partial = out / PARTIAL_DIR / f"{job.name.replace('/', '__')}-{uuid.uuid4().hex[:8]}"
    result = {"name": job.name, "worker": worker, "pid": os.getpid()}
    task = None
    with captured_output() as log:
        try:
            for task in job.settings.tasks:
                args = parse_task(task_argv(task, job.input_path, partial / task, job.settings))
                code = int(args.func(args) or 0)
                if code != 0:
                    raise BlastosegError(f"exited with status {code}")
            publish_folder(partial, out / job.name)
            result.update(state="done")
        except Exception as exc:  # one embryo's failure, whatever it is, fails it alone
            what = str(exc) if isinstance(exc, BlastosegError) else f"{type(exc).__name__}: {exc}"
            result.update(state="failed", error=f"{task}: {what}" if task else what)
            if not isinstance(exc, BlastosegError):
                traceback.print_exc()
            shutil.rmtree(partial, ignore_errors=True)
    result.update(seconds=round(time.perf_counter() - start, 3), log=log.getvalue())
    return result
