"""Training events as JSON lines, on stdout and appended to ``events.jsonl`` in the job folder.

One JSON object per line, flushed immediately, so a GUI reading the subprocess pipe or tailing
the file sees each event live. Every event has ``event`` (one of :data:`EVENT_TYPES`),
``time`` (unix seconds), ``step`` (optimizer steps done) and ``epoch``; further fields depend
on the event (see docs/training_engine.md).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "EVENTS_FILE",
    "EVENT_PREFIX",
    "EVENT_TYPES",
    "EventWriter",
    "iter_events",
    "parse_event_line",
    "read_events",
]

EVENTS_FILE = "events.jsonl"
EVENT_TYPES = ("start", "step", "validation", "checkpoint", "calibrated", "done", "failed",
               "cancelled")
# Event lines on stdout are plain JSON objects; anything else printed (warnings, library
# chatter) is not an object starting with this prefix and is ignored by parse_event_line.
EVENT_PREFIX = '{"event": '


def _clean(value: Any) -> Any:
    """Make a value strict-JSON: NaN/inf -> None, tensors/numpy -> numbers, paths -> str."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    item = getattr(value, "item", None)  # torch / numpy scalars
    if callable(item):
        try:
            return _clean(item())
        except (ValueError, RuntimeError):
            pass
    return str(value)


class EventWriter:
    """Write events to a stream (stdout by default) and append them to a JSON-lines file.

    Parameters
    ----------
    path
        The ``events.jsonl`` file (appended to; None: no file).
    stream
        Text stream for the live copy; ``True``: ``sys.stdout``; ``None``/``False``: none.
    callback
        Optional ``callback(event_dict)`` for in-process listeners (e.g. a napari worker).
    """

    def __init__(self, path: str | os.PathLike | None, stream: IO[str] | bool | None = True,
                 callback=None) -> None:
        self.path = Path(path) if path is not None else None
        if stream is True:
            stream = sys.stdout
        self.stream = stream or None
        self.callback = callback
        self._fh = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def emit(self, event: str, *, step: int = 0, epoch: int = 0, **fields: Any) -> dict:
        """Write one event and return it as a dict."""
        if event not in EVENT_TYPES:
            raise ValueError(f"unknown event type {event!r}; expected one of {EVENT_TYPES}")
        record = {"event": event, "time": round(time.time(), 3), "step": int(step),
                  "epoch": int(epoch)}
        record.update({k: _clean(v) for k, v in fields.items()})
        line = json.dumps(record, allow_nan=False) + "\n"
        if self._fh is not None:
            self._fh.write(line)
            self._fh.flush()
        if self.stream is not None:
            try:
                self.stream.write(line)
                self.stream.flush()
            except (BrokenPipeError, ValueError, OSError):  # reader went away: keep training
                self.stream = None
        if self.callback is not None:
            self.callback(record)
        return record

    def close(self) -> None:
        if self._fh is not None:
            try:
                os.fsync(self._fh.fileno())
            except OSError:
                pass
            self._fh.close()
            self._fh = None

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parse_event_line(line: str | bytes) -> dict | None:
    """Parse one line of a subprocess's stdout; None when it is not a complete event."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", errors="replace")
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(record, dict) or record.get("event") not in EVENT_TYPES:
        return None
    return record


def iter_events(path: str | os.PathLike) -> Iterator[dict]:
    """Yield the complete events of a JSON-lines file, skipping a truncated or garbled line."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            record = parse_event_line(line)
            if record is not None:
                yield record


def read_events(path: str | os.PathLike, event: str | None = None) -> list[dict]:
    """All events of ``events.jsonl`` (or a job folder), optionally of one type only.

    A half-written last line (the writer was killed mid-line, or is writing right now) is
    skipped, as is any line that is not an event.
    """
    path = Path(path)
    if path.is_dir():
        path = path / EVENTS_FILE
    events = list(iter_events(path))
    if event is not None:
        events = [e for e in events if e["event"] == event]
    return events
