"""The dask cluster of a batch: a LocalCluster with N workers, or an existing scheduler.

Only this module and :mod:`blastoseg.batch.run` import ``distributed``; the rest of
blastoseg works without it (it comes with ``pip install "blastoseg[all]"`` or
``"blastoseg[scale]"``).
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager

from blastoseg.errors import BlastosegError

__all__ = ["default_workers", "open_client"]


def _distributed():
    try:
        import distributed
    except ImportError:
        raise BlastosegError("blastoseg batch runs on dask.distributed, which is not installed: "
                             'pip install "blastoseg[scale]" (or dask distributed)') from None
    return distributed


def default_workers() -> int:
    """Half the CPU cores, at least 1: each worker holds a model and runs torch threads."""
    return max(1, (os.cpu_count() or 2) // 2)


@contextmanager
def open_client(workers: int | None = None, scheduler: str | None = None, *,
                processes: bool = True, threads_per_worker: int = 1,
                memory_limit: str | None = "auto"):
    """A dask ``Client``: connected to ``scheduler`` (an address such as
    ``tcp://10.0.0.5:8786``, or a scheduler file ending in .json) when given, else on a new
    LocalCluster of ``workers`` worker processes (threads with ``processes=False``) with
    ``threads_per_worker`` each. The LocalCluster is closed on exit; a remote cluster is
    left running."""
    distributed = _distributed()
    if scheduler:
        try:
            if scheduler.endswith(".json"):
                client = distributed.Client(scheduler_file=scheduler, timeout="20s")
            else:
                client = distributed.Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise BlastosegError(f"cannot reach the dask scheduler at {scheduler}: {exc}") from None
        try:
            yield client
        finally:
            client.close()
        return
    n = workers or default_workers()
    # dashboard on a free port: two batches (or a notebook's cluster) must not collide
    cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=threads_per_worker,
                                       processes=processes, dashboard_address=":0",
                                       memory_limit=memory_limit)
    client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        # a worker holding torch takes longer than the nanny's 4 s to exit, and the nanny
        # then kills it, as it should, with a warning per worker that alarms users
        nanny_log = logging.getLogger("distributed.nanny")
        level = nanny_log.level
        nanny_log.setLevel(logging.ERROR)
        try:
            cluster.close()
        finally:
            nanny_log.setLevel(level)
