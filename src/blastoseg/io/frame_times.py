"""The time of each frame of a time-lapse, in hours, from wherever the input records it.

- file names that carry hours: ``frame_0003_25.5h.png``, ``embryo_t12_30.25hpi.jpg``,
  ``E1 24.0 hours.tif`` (a number followed by ``h``, ``hpi``, ``hr``, ``hrs``, ``hour`` or
  ``hours`` as its own token);
- TIFF metadata: ImageJ's frame interval (``finterval``, seconds) or OME's
  ``TimeIncrement`` / per-plane ``DeltaT``; hours from the first frame;
- dataset image entries: their ``hours``.

Each reader returns ``(hours, source)`` or ``(None, why)`` when the input has no usable
times, so callers can say what they fell back to.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

__all__ = ["hours_from_entries", "hours_from_names", "hours_from_tiff", "parse_hours"]

_HOURS = re.compile(r"(?:^|(?<=[_\-\s=]))(\d+(?:[.,]\d+)?)\s?(?:h|hpi|hr|hrs|hours?)(?=$|[_\-\s.])",
                    re.IGNORECASE)
_SECONDS = {"s": 1.0, "sec": 1.0, "ms": 1e-3, "min": 60.0, "h": 3600.0}


def parse_hours(stem: str) -> float | None:
    """Hours in a file name without its extension (the last such token), or None."""
    hits = _HOURS.findall(stem)
    return float(hits[-1].replace(",", ".")) if hits else None


def hours_from_names(files: Sequence[str | os.PathLike]) -> tuple[list[float] | None, str]:
    """Frame hours from file names, when every name carries them."""
    values = [parse_hours(Path(f).stem) for f in files]
    if values and all(v is not None for v in values):
        return [float(v) for v in values], "file names"  # type: ignore[arg-type]
    missing = [Path(f).name for f, v in zip(files, values, strict=True) if v is None]
    if len(missing) == len(values):
        return None, "no hours in the file names"
    return None, (f"{len(missing)} of {len(values)} file names carry no hours (e.g. "
                  f"{missing[0]})")


def hours_from_tiff(path: str | os.PathLike, n_frames: int) -> tuple[list[float] | None, str]:
    """Frame hours of a TIFF time-lapse from its ImageJ or OME metadata (hours since the
    first frame)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tf:
            ij = tf.imagej_metadata or {}
            ome = tf.ome_metadata or ""
    except Exception as exc:  # the pixels were read already; a metadata problem is not fatal
        return None, f"cannot read the TIFF metadata ({type(exc).__name__})"
    interval = ij.get("finterval")
    if interval:
        step = float(interval) * _SECONDS.get(str(ij.get("tunit", "s")).strip().lower(), 1.0)
        return [k * step / 3600.0 for k in range(n_frames)], "TIFF metadata (ImageJ finterval)"
    if ome:
        deltas = [float(v) for v in re.findall(r'DeltaT="([0-9.eE+-]+)"', ome)]
        unit = re.search(r'DeltaTUnit="([^"]+)"', ome)
        factor = _SECONDS.get(unit.group(1) if unit else "s", 1.0)
        if len(deltas) == n_frames:
            return [(d - deltas[0]) * factor / 3600.0 for d in deltas], "TIFF metadata (OME DeltaT)"
        inc = re.search(r'TimeIncrement="([0-9.eE+-]+)"', ome)
        if inc and float(inc.group(1)) > 0:
            unit = re.search(r'TimeIncrementUnit="([^"]+)"', ome)
            step = float(inc.group(1)) * _SECONDS.get(unit.group(1) if unit else "s", 1.0)
            return ([k * step / 3600.0 for k in range(n_frames)],
                    "TIFF metadata (OME TimeIncrement)")
    return None, "no frame times in the TIFF metadata"


def hours_from_entries(entries: Sequence[dict]) -> tuple[list[float] | None, str]:
    """Frame hours from dataset image entries (their ``hours``), when every entry has them."""
    values = [e.get("hours") for e in entries]
    if values and all(isinstance(v, (int, float)) for v in values):
        return [float(v) for v in values], "dataset hours"
    return None, "the dataset's image entries carry no 'hours'"
