"""The files of an amodal (blastomere) segmentation: written the same by ``blastoseg segment
amodal`` and by the napari Measure widget's "Export results..." (through
:func:`blastoseg.napari.export_results.export_result`).

:func:`write_amodal_results` writes, under ``out_dir``:

- ``<dataset_dir>/`` (``dataset/`` for the CLI, the folder itself for a napari export, so it
  opens in napari): ``annotations.json`` + ``images/``, category 1 = ``blastomere``; each
  image entry records the frame's framing when the predictor recorded it: ``embryo`` (cx, cy,
  radius in pixels, confidence, source), ``embryo_unsure`` and, when unsure,
  ``embryo_guess`` (:func:`framing_extra`);
- ``counts.csv`` (one row per frame: ``frame, cell_count, mean_diameter_px,
  mean_diameter_um, diameter_cv, overlap_fraction``) and ``cells.csv`` (one row per
  blastomere and frame: ``frame, instance, track_id, area_px, area_um2, diameter_px,
  diameter_um, eccentricity, overlap_fraction, centroid_y, centroid_x, overlap_px,
  neighbours, score``), see :mod:`blastoseg.results.instances`;
- ``framing.csv``, when the results record their framing (predictions; napari layers do
  not): one row per frame, :data:`FRAMING_COLUMNS` = ``frame, source, cx, cy, radius,
  confidence, unsure, guess_cx, guess_cy, guess_radius, guess_confidence, method, note``
  (the guess only for unsure frames; ``method``: how the circle was found, ``note``: the
  localiser's remark, e.g. several embryos in view). A stale ``framing.csv`` of an earlier run is removed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from blastoseg.instances import FrameInstances
from blastoseg.results.files import refuse_existing, write_csv
from blastoseg.results.instances import (
    WrittenResults,
    instance_result_paths,
    is_video,
    write_instance_results,
)

__all__ = ["FRAMING_COLUMNS", "FRAMING_FILE", "framing_extra", "write_amodal_results"]

FRAMING_FILE = "framing.csv"
#: columns of ``framing.csv``
FRAMING_COLUMNS = ("frame", "source", "cx", "cy", "radius", "confidence", "unsure",
                   "guess_cx", "guess_cy", "guess_radius", "guess_confidence", "method", "note")


def _circle(d: dict) -> dict:
    """The JSON-ready circle of an EmbryoBox dict (pixels, rounded), with how it was found
    (``method``, e.g. "auto + outer face", "steady 9") and the localiser's ``note`` when there
    is one."""
    out = {"cx": round(float(d["cx"]), 2), "cy": round(float(d["cy"]), 2),
           "radius": round(float(d["radius"]), 2),
           "confidence": round(float(d.get("confidence", 0.0)), 4),
           "source": str(d.get("source", ""))}
    for key in ("method", "note"):
        if d.get(key):
            out[key] = str(d[key])
    return out


def framing_extra(inst: FrameInstances) -> dict:
    """Image-entry metadata for a result's framing: ``embryo`` (cx, cy, radius in pixels,
    confidence, source), ``embryo_unsure`` and, when unsure, ``embryo_guess``; empty when
    the result records no framing (e.g. not an amodal prediction)."""
    meta = inst.meta or {}
    if not isinstance(meta.get("embryo"), dict):
        return {}
    out = {"embryo": _circle(meta["embryo"]), "embryo_unsure": bool(meta.get("embryo_unsure"))}
    if isinstance(meta.get("embryo_guess"), dict):
        out["embryo_guess"] = _circle(meta["embryo_guess"])
    return out


def _framing_row(t: int, extra: dict) -> dict:
    e, g = extra.get("embryo"), extra.get("embryo_guess")
    row = dict.fromkeys(FRAMING_COLUMNS, "")
    row["frame"] = t
    if e:
        row.update(source=e["source"], cx=e["cx"], cy=e["cy"], radius=e["radius"],
                   confidence=e["confidence"], unsure=int(extra["embryo_unsure"]),
                   method=e.get("method", ""), note=e.get("note", ""))
    if g:
        row.update(guess_cx=g["cx"], guess_cy=g["cy"], guess_radius=g["radius"],
                   guess_confidence=g["confidence"])
    # already rounded in _circle: written as they are, not to four significant digits
    return {k: str(v) for k, v in row.items()}


def amodal_result_paths(out_dir: str | os.PathLike, dataset_dir: str = "dataset") -> list[Path]:
    """The files whose existence means an earlier amodal result is in ``out_dir`` (what
    :func:`write_amodal_results` refuses to replace without ``overwrite``)."""
    out = Path(out_dir)
    return [*instance_result_paths(out, dataset_dir), out / FRAMING_FILE]


def write_amodal_results(
    results: Sequence[FrameInstances] | Iterable[FrameInstances], out_dir: str | os.PathLike,
    *, images: Iterable[np.ndarray], pixel_size_um: float | None = None,
    first_frame: int = 0, video: bool | None = None, track_ids: bool = True,
    dataset_dir: str = "dataset", info: dict | None = None, overwrite: bool = False,
) -> WrittenResults:
    """Write an amodal result (see the module docstring for the files and columns).

    Parameters
    ----------
    results
        One :class:`~blastoseg.instances.FrameInstances` per frame (a list, or any iterable
        when ``video`` is given: frames are then read one at a time).
    out_dir
        The output folder (created if needed).
    images
        The frame behind each result, (H, W) or (H, W, 3), in the same order.
    pixel_size_um
        µm per pixel, when known: stored with every frame, and the ``_um`` columns.
    first_frame
        The index of the first frame (a napari run on part of a stack).
    video
        Write the frames as a time-lapse (``frame_index``); None: when there are several.
    track_ids
        False when the results' track ids are only napari label values (see
        :func:`~blastoseg.results.instances.write_instance_results`).
    dataset_dir
        The dataset's folder inside ``out_dir`` (``""``: ``out_dir`` itself).
    info
        Extra keys of the dataset's ``info`` block (source image, model, ...).
    overwrite
        Existing results are refused unless True; then the previous annotations and changed
        images are kept as ``.bak`` files and the tables are replaced.

    Returns
    -------
    WrittenResults
        name -> path (``dataset``, ``counts``, ``cells`` and ``framing`` when written), with
        the measurement rows as ``.frames`` and ``.cells``.
    """
    out = Path(out_dir)
    refuse_existing(amodal_result_paths(out, dataset_dir), overwrite)
    video = is_video(results, video)
    extras: list[dict] = []

    def framing(inst: FrameInstances) -> dict:
        extras.append(framing_extra(inst))
        return extras[-1]

    written = write_instance_results(
        results, out, images=images, video=video, pixel_size_um=pixel_size_um,
        first_frame=first_frame, track_ids=track_ids, dataset_dir=dataset_dir, info=info,
        overwrite=overwrite, image_extra=framing)
    if any(extras):
        written["framing"] = write_csv(out / FRAMING_FILE, FRAMING_COLUMNS, [
            _framing_row(first_frame + i, e) for i, e in enumerate(extras)])
    else:  # an earlier run's framing would describe other results
        (out / FRAMING_FILE).unlink(missing_ok=True)
    return written
