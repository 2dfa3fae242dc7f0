"""``blastoseg batch INPUT --out OUT [--tasks amodal,count,timeline] [--workers N |
--scheduler ADDRESS]``: every embryo of a folder on a dask cluster (see
:mod:`blastoseg.batch` and docs/scale_out.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from blastoseg.commands.options import non_negative_int, output_folder, positive_int
from blastoseg.errors import BlastosegError

#: failures named one by one at the end; the rest are in summary.csv
_MAX_LISTED = 20


def _tasks(text: str) -> tuple[str, ...]:
    from blastoseg.batch.tasks import BATCH_TASKS

    tasks = tuple(t.strip() for t in text.split(",") if t.strip())
    bad = [t for t in tasks if t not in BATCH_TASKS]
    if bad or not tasks:
        raise argparse.ArgumentTypeError(f"unknown task(s) {', '.join(bad) or '(none)'}; "
                                         f"choose from {', '.join(BATCH_TASKS)}")
    return tuple(dict.fromkeys(tasks))


def _model(text: str) -> tuple[str, str]:
    task, sep, model = text.partition("=")
    if not sep or not task or not model:
        raise argparse.ArgumentTypeError(f"expected TASK=MODEL (e.g. count=my-count); got {text!r}")
    return task.strip(), model.strip()


def _batch(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from blastoseg.batch import iter_batch

    steps = iter_batch(args.input, args.out, args.tasks, models=dict(args.model or []),
                       device=args.device, plane=args.plane, workers=args.workers,
                       scheduler=args.scheduler, processes=not args.threads)
    bar = None
    try:
        while True:
            try:
                u = next(steps)
            except StopIteration as stop:
                report = stop.value
                break
            if u.event == "start":
                names = [n for n, s in u.embryos if s == "done"]
                print(f"{len(u.embryos)} embryo(s) in {args.input}; {u.total} to run")
                if names:
                    shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more"
                                                     if len(names) > 10 else "")
                    print(f"skipping {len(names)} embryo(s) already done (manifest "
                          f"{Path(args.out) / 'manifest.json'}): {shown}")
                if u.dashboard:
                    print(f"dask dashboard: {u.dashboard}")
                if u.total:
                    bar = tqdm(total=u.total, unit="embryo", file=sys.stderr,
                               disable=args.quiet, dynamic_ncols=True)
            elif u.event in ("done", "failed") and bar is not None:
                bar.update(1)
                bar.set_postfix(failed=u.failed)
                if u.event == "failed":
                    bar.write(f"failed {u.embryo}: {u.error}", file=sys.stderr)
    finally:
        if bar is not None:
            bar.close()
    print(f"done {report.done}, failed {report.failed}, skipped {report.skipped}"
          f"{f', left pending {report.pending}' if report.pending else ''} "
          f"in {report.seconds:.1f} s")
    for name, error in report.failures[:_MAX_LISTED]:
        print(f"  failed {name}: {error}")
    if len(report.failures) > _MAX_LISTED:
        print(f"  ... {len(report.failures) - _MAX_LISTED} more failures in {report.summary}")
    print(f"wrote summary: {report.summary}")
    print(f"manifest: {report.manifest}")
    if report.cancelled:
        raise BlastosegError("batch cancelled; rerun the same command to finish it")
    return 1 if report.failed else 0


def add_parsers(verbs: argparse._SubParsersAction) -> None:
    """``blastoseg batch``."""
    from blastoseg.batch.tasks import BATCH_TASKS

    p = verbs.add_parser(
        "batch", help="segment a folder of embryos on a dask cluster (resumable)",
        description="Run tasks on every embryo of INPUT (one TIFF stack, frame folder or "
                    "dataset folder per embryo; incubator exports with one folder per well). "
                    "Each embryo's OUT/<embryo>/<task>/ holds what `blastoseg segment <task>` "
                    "(or `blastoseg timeline`) writes; OUT/manifest.json records each "
                    "embryo's state, so a rerun skips the finished ones; OUT/summary.csv has "
                    "one row per embryo. Exit status 1 when an embryo failed.")
    p.add_argument("input", type=Path, help="folder holding one input per embryo")
    p.add_argument("--out", required=True, type=output_folder, help="output folder")
    p.add_argument("--tasks", type=_tasks, default=("amodal",),
                   help=f"comma-separated, from {','.join(BATCH_TASKS)} (default amodal)")
    p.add_argument("--model", type=_model, action="append", metavar="TASK=MODEL",
                   help="the model of a task (repeatable), e.g. --model count=my-count; "
                        "default: the task's own default")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=positive_int, default=None,
                       help="local worker processes (default: half the CPU cores); each "
                            "loads the models once")
    where.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help="an existing dask scheduler (tcp://host:8786 or a scheduler "
                            "file .json), e.g. from dask-jobqueue on SLURM")
    p.add_argument("--threads", action="store_true",
                   help="local workers as threads of this process instead of processes")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps, on each worker")
    p.add_argument("--plane", type=non_negative_int, default=0,
                   help="focal plane of (T, Z, Y, X) inputs for the segment tasks")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_batch)
