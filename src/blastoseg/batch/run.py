"""Run a batch: every embryo of a folder through the chosen tasks on a dask cluster.

:func:`iter_batch` is a generator of :class:`BatchUpdate` (the CLI draws a progress bar from
it, the napari Batch widget fills its table) that returns a :class:`BatchReport`;
:func:`run_batch` runs it to the end. The client process owns the manifest
(:mod:`blastoseg.batch.manifest`) and ``summary.csv``; workers run
:func:`blastoseg.batch.embryo_task.process_embryo`, one embryo per dask task.
"""

from __future__ import annotations

import os
import queue
import shutil
import time
import uuid
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from blastoseg.batch.embryo_task import EVENT_TOPIC, PARTIAL_DIR, EmbryoJob, process_embryo
from blastoseg.batch.embryos import Embryo, find_embryos, input_stamp
from blastoseg.batch.manifest import Manifest
from blastoseg.batch.summary import embryo_summary, write_summary
from blastoseg.batch.tasks import TaskSettings, check_settings
from blastoseg.errors import BlastosegError
from blastoseg.io.atomic import atomic_write_text

__all__ = ["LOG_DIR", "BatchReport", "BatchUpdate", "iter_batch", "run_batch"]

#: each embryo's captured output (what the verbs printed), OUT/_logs/<embryo>.log
LOG_DIR = "_logs"


@dataclass
class BatchUpdate:
    """One thing that happened. ``event``: "start" (``embryos`` lists every embryo with its
    state; ``dashboard`` the dask dashboard), "running", "done", "failed", "cancelled" or
    "finished". ``done``/``failed`` count this run's embryos out of ``total`` (the ones to run;
    ``skipped`` were done before); ``eta_s`` is the estimated time left."""

    event: str
    embryo: str | None = None
    done: int = 0
    failed: int = 0
    total: int = 0
    skipped: int = 0
    error: str = ""
    worker: str = ""
    eta_s: float | None = None
    dashboard: str | None = None
    embryos: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class BatchReport:
    """How a batch ended. ``failures``: (embryo, error) of this run's failed embryos;
    ``pending``: embryos left unrun (cancelled)."""

    out: Path
    total: int
    done: int
    failed: int
    skipped: int
    pending: int
    seconds: float
    summary: Path
    manifest: Path
    failures: list[tuple[str, str]]
    cancelled: bool = False
    dashboard: str | None = None


def _safe(name: str) -> str:
    return name.replace("/", "__")


def _eta(start: float, finished: int, total: int) -> float | None:
    if finished == 0:
        return None
    return (time.perf_counter() - start) / finished * (total - finished)


def _error_of_lost(fut) -> str:
    try:
        exc = fut.exception()
    except Exception as err:  # cancelled or lost: no exception to fetch
        exc = err
    return f"the worker running it was lost or the task failed ({type(exc).__name__}: {exc})"


def iter_batch(input_dir: str | os.PathLike, out_dir: str | os.PathLike,
               tasks: Sequence[str] = ("amodal",), *, models: Mapping[str, str] | None = None,
               device: str = "auto", plane: int = 0, workers: int | None = None,
               scheduler: str | None = None, processes: bool = True,
               cancel: Callable[[], bool] | None = None, poll_s: float = 0.1
               ) -> Generator[BatchUpdate, None, BatchReport]:
    """Segment every embryo of ``input_dir`` into ``out_dir`` (see the module docstring).

    Parameters
    ----------
    tasks
        Batch tasks (:data:`blastoseg.batch.tasks.BATCH_TASKS`), each writing
        ``OUT/<embryo>/<task>/`` as its single-input verb would.
    models
        Task -> model (name, .safetensors or job folder); others use the verb's default.
    workers, scheduler, processes
        A LocalCluster of ``workers`` processes (threads with ``processes=False``), or an
        existing scheduler's address (see :func:`blastoseg.batch.cluster.open_client`).
    cancel
        Polled between events; True stops the batch: embryos not finished go back to
        ``pending`` and the next run does them.
    """
    from blastoseg.annotate.project_lock import ProjectLock, ProjectLockedError

    settings = TaskSettings(tuple(tasks), dict(models or {}), device, plane)
    check_settings(settings)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lock = ProjectLock(out)  # one batch per OUT: two would both write its manifest
    try:
        lock.acquire()
    except ProjectLockedError:
        holder = lock.holder() or {}
        raise BlastosegError(f"another batch is writing into {out} (process {holder.get('pid')} "
                             f"on {holder.get('host')}); wait for it, or choose another output "
                             "folder") from None
    try:
        return (yield from _iter_batch(input_dir, out, settings, workers, scheduler, processes,
                                       cancel, poll_s))
    finally:
        lock.release()


def _iter_batch(input_dir, out: Path, settings: TaskSettings, workers, scheduler, processes,
                cancel, poll_s) -> Generator[BatchUpdate, None, BatchReport]:
    """:func:`iter_batch` once the settings are checked and OUT is locked."""
    from blastoseg.batch.cluster import open_client

    start = time.perf_counter()
    doc = settings.to_dict()
    embryos = find_embryos(input_dir, exclude=out)
    manifest = Manifest.load(out)
    shutil.rmtree(out / PARTIAL_DIR, ignore_errors=True)  # what a killed run left half-written
    stamps = {e.name: input_stamp(e.path) for e in embryos}
    todo: list[Embryo] = []
    for e in embryos:
        if not manifest.is_done(e.name, stamps[e.name], doc):
            todo.append(e)
            manifest.set(e.name, "pending", input=str(e.path), stamp=None, worker=None)
    manifest.meta = {"input": str(Path(input_dir).resolve()), "settings": doc,
                     "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    manifest.save()
    skipped = len(embryos) - len(todo)
    counts = {"done": 0, "failed": 0}
    failures: list[tuple[str, str]] = []
    cancelled = False
    dashboard = None

    def update(event: str, **kw) -> BatchUpdate:
        return BatchUpdate(event, done=counts["done"], failed=counts["failed"],
                           total=len(todo), skipped=skipped, dashboard=dashboard,
                           eta_s=_eta(start, counts["done"] + counts["failed"], len(todo)), **kw)

    if not todo:
        yield update("start", embryos=[(e.name, manifest.state(e.name)) for e in embryos])
    else:
        with open_client(workers, scheduler, processes=processes) as client:
            dashboard = client.dashboard_link
            yield update("start", embryos=[(e.name, manifest.state(e.name)) for e in embryos])
            cancelled = yield from _run_on(client, todo, out, settings, doc, stamps, manifest,
                                           counts, failures, update, cancel, poll_s)
    rows = []
    for e in embryos:
        entry = manifest.entries.get(e.name, {})
        row = {"embryo": e.name, "status": entry.get("state", "pending"),
               "seconds": entry.get("seconds", ""), "error": entry.get("error", ""),
               "input": str(e.path), "output": ""}
        if row["status"] == "done":
            row.update(embryo_summary(out / e.name, settings.tasks), output=str(out / e.name))
        rows.append(row)
    summary = write_summary(out, rows, settings.tasks)
    report = BatchReport(out, len(embryos), counts["done"], counts["failed"], skipped,
                         manifest.counts()["pending"], round(time.perf_counter() - start, 2),
                         summary, manifest.path, failures, cancelled, dashboard)
    yield update("cancelled" if cancelled else "finished")
    return report


def _run_on(client, todo, out, settings, doc, stamps, manifest, counts, failures, update,
            cancel, poll_s) -> Generator[BatchUpdate, None, bool]:
    """Submit ``todo``, follow it to the end (or the cancel); returns whether cancelled."""
    from distributed import as_completed

    started: queue.Queue = queue.Queue()
    client.subscribe_topic(EVENT_TOPIC, lambda event: started.put(event[1]))
    futures = {}
    for e in todo:
        job = EmbryoJob(e.name, str(e.path), str(out), settings)
        fut = client.submit(process_embryo, job, pure=False,
                            key=f"embryo-{_safe(e.name)}-{uuid.uuid4().hex[:6]}")
        futures[fut.key] = (e.name, fut)
    ongoing = as_completed([f for _, f in futures.values()])
    finished: set[str] = set()
    try:
        while not ongoing.is_empty():
            while not started.empty():
                msg = started.get()
                name = msg.get("embryo")
                if name in finished or name not in stamps:
                    continue  # the event came after its result, or from another batch
                manifest.set(name, "running", worker=msg.get("worker"))
                manifest.save()
                yield update("running", embryo=name, worker=msg.get("worker", ""))
            if cancel is not None and cancel():
                client.cancel([f for _, f in futures.values() if not f.done()])
                return True
            if not ongoing.has_ready():
                time.sleep(poll_s)
                continue
            for fut in ongoing.next_batch(block=False):
                name = futures[fut.key][0]
                finished.add(name)
                result = (fut.result() if fut.status == "finished"
                          else {"state": "failed", "error": _error_of_lost(fut)})
                if result.get("log"):
                    atomic_write_text(out / LOG_DIR / f"{_safe(name)}.log", result["log"])
                if result["state"] == "done":
                    counts["done"] += 1
                    manifest.set(name, "done", stamp=stamps[name], settings=doc,
                                 seconds=result.get("seconds"), worker=result.get("worker"))
                else:
                    counts["failed"] += 1
                    failures.append((name, result["error"]))
                    manifest.set(name, "failed", error=result["error"],
                                 seconds=result.get("seconds"), worker=result.get("worker"))
                manifest.save()
                yield update(result["state"], embryo=name, error=result.get("error", ""),
                             worker=result.get("worker", ""))
        return False
    finally:
        # stopped (cancel, Ctrl-C, an error here): whatever did not finish is run next time
        left = [n for n, _ in futures.values() if n not in finished]
        for name in left:
            manifest.set(name, "pending", worker=None)
        if left:
            manifest.save()
        client.unsubscribe_topic(EVENT_TOPIC)


def run_batch(input_dir: str | os.PathLike, out_dir: str | os.PathLike,
              tasks: Sequence[str] = ("amodal",), *,
              on_update: Callable[[BatchUpdate], None] | None = None, **options) -> BatchReport:
    """:func:`iter_batch` to the end; ``on_update`` sees every update. Returns the report."""
    steps = iter_batch(input_dir, out_dir, tasks, **options)
    while True:
        try:
            step = next(steps)
        except StopIteration as stop:
            return stop.value
        if on_update is not None:
            on_update(step)
