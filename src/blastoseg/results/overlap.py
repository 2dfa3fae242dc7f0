"""The files of an overlap (SE-U-Net) prediction, written by ``blastoseg segment overlap``
(the "Overlap map" widget shows the maps as layers and exports nothing of its own).

:func:`write_overlap_results` writes, under ``out_dir``:

- ``<head>_probability.tif`` for every head of the model (cytoplasm, nuclei, border,
  background, overlap): float32 in [0, 1];
- ``overlap_mask.tif``: uint8, 1 where the overlap probability is at least the model's
  threshold (when the model has an overlap head).

Each is an ImageJ TIFF of shape (H, W) or (T, H, W) like the input.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from blastoseg.results.files import probability_file, refuse_existing, write_tiff

__all__ = ["OVERLAP_MASK_FILE", "write_overlap_results"]

OVERLAP_MASK_FILE = "overlap_mask.tif"


def overlap_result_paths(out_dir: str | os.PathLike, heads: Iterable[str]) -> list[Path]:
    """The files a run with these ``heads`` writes (refused without ``overwrite``)."""
    out = Path(out_dir)
    return [*(out / probability_file(h) for h in heads), out / OVERLAP_MASK_FILE]


def write_overlap_results(result, out_dir: str | os.PathLike, *, overwrite: bool = False
                          ) -> dict[str, Path]:
    """Write ``result`` (an :class:`~blastoseg.predict.overlap.OverlapResult`) under
    ``out_dir``; returns name (``<head>_probability``, ``overlap_mask``) -> path.

    Existing files are refused unless ``overwrite`` (writes are atomic, so an interrupted
    export never leaves a half-written file).
    """
    out = Path(out_dir)
    files = {f"{h}_probability": (out / probability_file(h), np.asarray(p, np.float32))
             for h, p in result.probabilities.items()}
    if result.overlap_mask is not None:
        files["overlap_mask"] = (out / OVERLAP_MASK_FILE,
                                 np.asarray(result.overlap_mask, np.uint8))
    refuse_existing([path for path, _ in files.values()], overwrite)
    return {name: write_tiff(path, array) for name, (path, array) in files.items()}
