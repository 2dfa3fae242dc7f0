"""Batch processing of many embryos on dask.distributed (``blastoseg batch``).

One embryo is one task; a LocalCluster by default, an existing scheduler by address. See
docs/scale_out.md. ``distributed`` is imported only when a batch runs
(:mod:`blastoseg.batch.cluster`), so ``import blastoseg.batch`` works without it.
"""

from blastoseg.batch.embryos import Embryo, find_embryos, input_stamp
from blastoseg.batch.manifest import Manifest
from blastoseg.batch.run import BatchReport, BatchUpdate, iter_batch, run_batch
from blastoseg.batch.tasks import BATCH_TASKS, TaskSettings

__all__ = ["BATCH_TASKS", "BatchReport", "BatchUpdate", "Embryo", "Manifest", "TaskSettings",
           "find_embryos", "input_stamp", "iter_batch", "run_batch"]
