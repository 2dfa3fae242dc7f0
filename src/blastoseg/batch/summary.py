"""``OUT/summary.csv``: one row per embryo of a batch, read back from the files its tasks
wrote (so a rerun that skips finished embryos still lists them with their numbers).

Columns: ``embryo, status, frames, final_count, count_source`` then, when the timeline task
ran, ``t2 ... t8`` (hours when the input had frame times, else frame indices), then
``seconds, error, input, output``. ``final_count`` is the decoded stage of the last frame
when the timeline ran, else the last frame's count of the count, amodal or brightfield task
(``count_source`` says which).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

from blastoseg.measure.timeline import EVENTS
from blastoseg.results.files import write_csv

__all__ = ["SUMMARY_FILE", "embryo_summary", "summary_columns", "write_summary"]

SUMMARY_FILE = "summary.csv"
#: where a final count can be read, preferred first: (task, file, column)
_COUNT_SOURCES = (("timeline", "timeline.csv", "stage"), ("count", "counts.csv", "cell_count"),
                  ("amodal", "counts.csv", "cell_count"),
                  ("brightfield", "counts.csv", "cell_count"))


def _rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def summary_columns(tasks: Sequence[str]) -> list[str]:
    events = list(EVENTS) if "timeline" in tasks else []
    return ["embryo", "status", "frames", "final_count", "count_source", *events,
            "seconds", "error", "input", "output"]


def embryo_summary(folder: str | os.PathLike, tasks: Sequence[str]) -> dict:
    """``frames``, ``final_count``, ``count_source`` and the events of one finished embryo's
    output folder (empty values where its tasks wrote nothing to read them from)."""
    folder = Path(folder)
    row: dict = {"frames": "", "final_count": "", "count_source": ""}
    for task, name, column in _COUNT_SOURCES:
        rows = _rows(folder / task / name) if task in tasks else []
        if rows:
            row.update(frames=len(rows), final_count=rows[-1].get(column, ""),
                       count_source=task)
            break
    if "timeline" in tasks:
        events = {r["event"]: r for r in _rows(folder / "timeline" / "events.csv")}
        for name in EVENTS:
            e = events.get(name, {})
            row[name] = e.get("hours") or e.get("frame") or ""
    return row


def write_summary(out_dir: str | os.PathLike, rows: Sequence[dict],
                  tasks: Sequence[str]) -> Path:
    """Write ``OUT/summary.csv`` (atomically) from one dict per embryo."""
    columns = summary_columns(tasks)
    return write_csv(Path(out_dir) / SUMMARY_FILE, columns,
                     [{c: row.get(c, "") for c in columns} for row in rows])
