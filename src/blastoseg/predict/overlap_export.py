"""Write an overlap prediction to a folder: one float32 TIFF per head and the thresholded
overlap mask, each (H, W) or (T, H, W) like the input, ImageJ-readable."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import tifffile

from blastoseg.errors import BlastosegError
from blastoseg.io.atomic import atomic_write_bytes

__all__ = ["write_overlap_result"]


def _tiff_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    axes = "TYX" if array.ndim == 3 else "YX"
    tifffile.imwrite(buf, array, imagej=True, metadata={"axes": axes})
    return buf.getvalue()


def write_overlap_result(out_dir: str | os.PathLike, result, *, overwrite: bool = False
                         ) -> dict[str, Path]:
    """Write ``result`` (an :class:`~blastoseg.predict.overlap.OverlapResult`) to
    ``out_dir/<head>_probability.tif`` and ``out_dir/overlap_mask.tif``.

    Existing files are replaced only with ``overwrite`` (writes are atomic, so an
    interrupted export never leaves a half-written file).
    """
    out = Path(out_dir)
    files = {f"{h}_probability": (out / f"{h}_probability.tif",
                                  np.asarray(p, dtype=np.float32))
             for h, p in result.probabilities.items()}
    if result.overlap_mask is not None:
        files["overlap_mask"] = (out / "overlap_mask.tif",
                                 np.asarray(result.overlap_mask, dtype=np.uint8))
    existing = [str(p) for p, _ in files.values() if p.exists()]
    if existing and not overwrite:
        raise BlastosegError(f"{out} already holds {', '.join(existing)}; pass --overwrite "
                             f"to replace them")
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, (path, array) in files.items():
        written[name] = atomic_write_bytes(path, _tiff_bytes(array))
    return written
