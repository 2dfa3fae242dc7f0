"""What the amodal and the brightfield writers share: an instance result as a dataset folder
(so it can be corrected and used for training) and its two measurement tables.

Files, under the writer's ``out_dir``:

- ``<dataset_dir>/annotations.json`` and ``<dataset_dir>/images/``: the frames and their
  instances in the dataset format (docs/dataset_format.md), with the model's scores. A
  time-lapse's frames are ``images/frame_<t>.png`` (``.tif`` for pixels PNG cannot hold) with
  ``video_id`` 1 and ``frame_index`` t; one frame is ``images/000001.png``.
- ``counts.csv``: one row per frame, :data:`COUNTS_COLUMNS` (the fields of
  :class:`~blastoseg.measure.EmbryoMeasurements`): ``frame, cell_count, mean_diameter_px,
  mean_diameter_um, diameter_cv, overlap_fraction``.
- ``cells.csv``: one row per cell and frame, :data:`CELLS_COLUMNS` (the fields of
  :class:`~blastoseg.measure.InstanceMeasurements`): ``frame, instance, track_id, area_px,
  area_um2, diameter_px, diameter_um, eccentricity, overlap_fraction, centroid_y,
  centroid_x, overlap_px, neighbours, score``. ``instance`` is the cell's label value in
  napari; the ``_um``/``_um2`` columns are empty without a pixel size; a frame without cells
  has no row, and a result without cells keeps the header.

The measurements are computed by :func:`blastoseg.measure.measure_frame`, one frame at a time
while the dataset is written, so a long stack read lazily (napari layers) is never held whole.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, fields, replace
from pathlib import Path

import numpy as np

from blastoseg.instances import FrameInstances
from blastoseg.io.dataset import ANNOTATIONS_FILE, Sample, lossless_suffix, write_dataset
from blastoseg.measure import EmbryoMeasurements, InstanceMeasurements, measure_frame
from blastoseg.results.files import write_csv

__all__ = ["CELLS_COLUMNS", "CELLS_FILE", "COUNTS_COLUMNS", "COUNTS_FILE", "WrittenResults",
           "instance_result_paths", "is_video", "write_instance_results"]

COUNTS_FILE = "counts.csv"
CELLS_FILE = "cells.csv"
COUNTS_COLUMNS = tuple(f.name for f in fields(EmbryoMeasurements))
CELLS_COLUMNS = tuple(f.name for f in fields(InstanceMeasurements))


class WrittenResults(dict):
    """What a writer wrote: name -> path of each file (``dataset`` is the annotations.json,
    ``counts``, ``cells``, ...), plus the measurement rows it wrote: :attr:`frames` (those of
    ``counts.csv``) and :attr:`cells` (those of ``cells.csv``)."""

    def __init__(self, files: dict[str, Path], frames: list[EmbryoMeasurements],
                 cells: list[InstanceMeasurements]) -> None:
        super().__init__(files)
        self.frames = frames
        self.cells = cells


def instance_result_paths(out_dir: str | os.PathLike, dataset_dir: str) -> list[Path]:
    """The files :func:`write_instance_results` writes whose existence means "an earlier
    result is there": the dataset's annotations and the two tables."""
    out = Path(out_dir)
    return [out / dataset_dir / ANNOTATIONS_FILE, out / COUNTS_FILE, out / CELLS_FILE]


def is_video(results: Iterable, video: bool | None) -> bool:
    """``video``, or when None: whether ``results`` (then a sequence) has several frames."""
    return len(results) > 1 if video is None else bool(video)  # type: ignore[arg-type]


def write_instance_results(
    results: Iterable[FrameInstances], out_dir: str | os.PathLike, *,
    images: Iterable[np.ndarray], video: bool, pixel_size_um: float | None = None,
    first_frame: int = 0, track_ids: bool = True, dataset_dir: str = "dataset",
    categories: dict[int, str] | None = None, info: dict | None = None,
    overwrite: bool = False, image_extra: Callable[[FrameInstances], dict] | None = None,
) -> WrittenResults:
    """Write the dataset, ``counts.csv`` and ``cells.csv`` of ``results`` under ``out_dir``.

    ``images`` holds the frame behind each result (same order); frames are numbered from
    ``first_frame``. ``track_ids=False``: the results' track ids are only the cells' label
    values (napari layers not tracked over time), so they number the cells in ``cells.csv``
    but are written as no track. ``image_extra(instances)`` adds keys to a frame's image
    entry. ``overwrite`` is passed to :func:`~blastoseg.io.dataset.write_dataset` (previous
    annotations and changed images kept as ``.bak``); the tables are replaced.
    """
    out = Path(out_dir)
    per_frame: list[EmbryoMeasurements] = []
    per_cell: list[InstanceMeasurements] = []

    def samples():
        for local, (image, inst) in enumerate(zip(images, results, strict=True)):
            t = first_frame + local
            embryo, cells = measure_frame(inst, frame=t, pixel_size_um=pixel_size_um)
            if not track_ids:
                cells = [replace(c, track_id=None) for c in cells]
                inst = replace(inst, track_ids=None)
            per_frame.append(embryo)
            per_cell.extend(cells)
            image = np.asarray(image)
            yield Sample(image=image, instances=inst,
                         file_name=f"images/frame_{t:04d}{lossless_suffix(image)}"
                         if video else None,
                         video_id=1 if video else None, frame_index=t if video else None,
                         pixel_size_um=pixel_size_um,
                         extra=image_extra(inst) if image_extra else {})

    files = {"dataset": write_dataset(out / dataset_dir, samples(), categories,
                                      overwrite=overwrite, info=info)}
    files["counts"] = write_csv(out / COUNTS_FILE, COUNTS_COLUMNS, map(asdict, per_frame))
    files["cells"] = write_csv(out / CELLS_FILE, CELLS_COLUMNS, map(asdict, per_cell))
    return WrittenResults(files, per_frame, per_cell)
