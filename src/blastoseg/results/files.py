"""The bytes of result files: ImageJ TIFFs and CSV tables, written atomically, and the one rule
for existing outputs (refused unless the caller says to replace them).

Every writer of :mod:`blastoseg.results` (and the probability-map export of
:mod:`blastoseg.targets.probability_export`) goes through here, so a TIFF or a CSV looks the
same whichever command or widget wrote it.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from blastoseg.errors import DatasetFormatError
from blastoseg.io.atomic import atomic_write_bytes, atomic_write_text

__all__ = ["csv_text", "format_value", "probability_file", "refuse_existing", "tiff_bytes",
           "write_csv", "write_tiff"]


def probability_file(key: str) -> str:
    """The file name of a ``key`` probability map (``overlap_probability.tif``, ...): the
    same for the overlap and the brightfield writers."""
    return f"{key}_probability.tif"


def tiff_bytes(array: np.ndarray) -> bytes:
    """``array`` ((H, W) or (T, H, W); uint8, uint16 or float32) as an ImageJ TIFF, so Fiji
    opens a stack as frames, not as focal planes."""
    import tifffile  # only when a TIFF is written: reading results needs no tifffile

    array = np.ascontiguousarray(array)
    if array.ndim not in (2, 3):
        raise ValueError(f"a result TIFF is (H, W) or (T, H, W); got shape {array.shape}")
    buf = io.BytesIO()
    tifffile.imwrite(buf, array, imagej=True,
                     metadata={"axes": "TYX" if array.ndim == 3 else "YX"})
    return buf.getvalue()


def write_tiff(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write :func:`tiff_bytes` of ``array`` to ``path`` atomically."""
    return atomic_write_bytes(path, tiff_bytes(array))


def format_value(value: object) -> str:
    """A CSV cell: empty for None (e.g. a size in µm without a pixel size), floats to four
    significant digits, anything else as ``str``."""
    if value is None:
        return ""
    if isinstance(value, float | np.floating):
        return f"{float(value):.4g}"
    return str(value)


def csv_text(columns: Sequence[str], rows: Iterable[Mapping]) -> str:
    """A CSV table: a header of ``columns``, then one line per row (a mapping holding at least
    those keys), values as :func:`format_value`."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([format_value(row[c]) for c in columns])
    return buf.getvalue()


def write_csv(path: str | os.PathLike, columns: Sequence[str], rows: Iterable[Mapping]
              ) -> Path:
    """Write :func:`csv_text` to ``path`` atomically (a table without rows keeps its header,
    so a script reading it finds the columns)."""
    return atomic_write_text(path, csv_text(columns, rows))


def check_output_folder(out_dir: str | os.PathLike) -> Path:
    """Check, before any work, that results can be written under ``out_dir``: not an empty
    name, not an existing file, and a folder (or the nearest existing parent) that is
    writable. Returns the path; raises :class:`~blastoseg.errors.DatasetFormatError`."""
    text = str(out_dir).strip()
    if not text:
        raise DatasetFormatError("the output folder is empty: give a folder to write into "
                                 "(--out DIR)")
    out = Path(text).expanduser()
    if out.exists() and not out.is_dir():
        raise DatasetFormatError(f"the output {out} is a file, not a folder: choose a folder")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise DatasetFormatError(f"cannot write into {parent}: it is read-only for this user "
                                 "(choose another output folder)")
    return out


def refuse_existing(paths: Iterable[Path], overwrite: bool) -> None:
    """Raise :class:`~blastoseg.errors.DatasetFormatError` naming the ``paths`` that exist,
    unless ``overwrite``."""
    if overwrite:
        return
    existing = [str(p) for p in paths if Path(p).exists()]
    if existing:
        raise DatasetFormatError(
            f"{', '.join(existing)} exists already: choose another folder, or replace the "
            "results (--overwrite on the command line)")
