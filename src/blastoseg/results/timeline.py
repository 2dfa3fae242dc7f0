"""The files of a timeline, the same for ``blastoseg timeline`` and the napari export.

- ``timeline.csv``: one row per frame: ``frame, hours, count_estimate, stage`` (``hours``
  empty when the input had no frame times; ``stage`` 9 means 9 cells or more);
- ``events.csv``: ``event, hours, frame``: t2 ... t8 (the first frame at that stage or
  above; empty when never reached), then the intervals cc2, s2, cc3, s3 with their length in
  hours and in frames.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from pathlib import Path

from blastoseg.io.atomic import atomic_write_text
from blastoseg.measure.timeline import EVENTS, INTERVALS, Timeline

__all__ = ["events_rows", "write_events_csv", "write_timeline_csv", "write_timeline_files"]


def _fmt(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def events_rows(event_hours: Mapping[str, float | None],
                event_frames: Mapping[str, int | None], has_hours: bool = True) -> list[list]:
    """Rows of ``events.csv`` (header first) for event times (hours) and frames."""
    rows: list[list] = [["event", "hours", "frame"]]
    for name in EVENTS:
        h, f = event_hours.get(name), event_frames.get(name)
        rows.append([name, _fmt(h) if has_hours else "", "" if f is None else f])
    for name, (later, earlier) in INTERVALS.items():
        ha, hb = event_hours.get(later), event_hours.get(earlier)
        fa, fb = event_frames.get(later), event_frames.get(earlier)
        hours = None if ha is None or hb is None or not has_hours else ha - hb
        frames = "" if fa is None or fb is None else fa - fb
        rows.append([name, _fmt(hours), frames])
    return rows


def _write_rows(path: Path, rows: list[list]) -> None:
    import io

    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    atomic_write_text(path, buf.getvalue())


def write_events_csv(path: str | os.PathLike, event_hours: Mapping[str, float | None],
                     event_frames: Mapping[str, int | None], has_hours: bool = True) -> Path:
    """Write ``events.csv`` (see the module docstring); returns its path."""
    path = Path(path)
    _write_rows(path, events_rows(event_hours, event_frames, has_hours))
    return path


def write_timeline_csv(path: str | os.PathLike, timeline: Timeline) -> Path:
    """Write ``timeline.csv`` (see the module docstring); returns its path."""
    path = Path(path)
    rows: list[list] = [["frame", "hours", "count_estimate", "stage"]]
    for t, (h, e, s) in enumerate(zip(timeline.hours, timeline.estimates, timeline.stages,
                                      strict=True)):
        rows.append([t, _fmt(float(h)) if timeline.has_hours else "", f"{e:.3f}", int(s)])
    _write_rows(path, rows)
    return path


def write_timeline_files(out_dir: str | os.PathLike, timeline: Timeline) -> list[Path]:
    """``timeline.csv`` and ``events.csv`` of one embryo in ``out_dir`` (created)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frames = {k: (None if v is None else v[1]) for k, v in timeline.events.items()}
    return [write_timeline_csv(out / "timeline.csv", timeline),
            write_events_csv(out / "events.csv", timeline.event_hours, frames,
                             timeline.has_hours)]
