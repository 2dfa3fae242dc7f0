"""The files of a brightfield (whole-cell) segmentation: written the same by ``blastoseg
segment brightfield`` and by the "Segment brightfield cells" widget's "Export..."
(:func:`blastoseg.napari.brightfield_job.export_brightfield`).

:func:`write_brightfield_results` writes, under ``out_dir``:

- ``<dataset_dir>/`` (``dataset/`` for the CLI, the folder itself for a napari export):
  ``annotations.json`` + ``images/``, each cell an amodal instance of category 1 =
  :data:`CATEGORY` (``cell``);
- ``counts.csv`` (one row per frame: ``frame, cell_count, mean_diameter_px,
  mean_diameter_um, diameter_cv, overlap_fraction``) and ``cells.csv`` (one row per cell and
  frame: ``frame, instance, track_id, area_px, area_um2, diameter_px, diameter_um,
  eccentricity, overlap_fraction, centroid_y, centroid_x, overlap_px, neighbours, score``),
  the tables of the amodal writer (:mod:`blastoseg.results.instances`);
- ``nuclei_probability.tif`` and ``overlap_probability.tif``: the SE-U-Net heads' maps,
  float32 ImageJ TIFFs of shape (H, W) for one frame or (T, H, W), when the model has them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from blastoseg.instances import FrameInstances
from blastoseg.results.files import probability_file, refuse_existing, write_tiff
from blastoseg.results.instances import (
    WrittenResults,
    instance_result_paths,
    is_video,
    write_instance_results,
)

__all__ = ["CATEGORY", "MAP_KEYS", "write_brightfield_results"]

#: the dataset category of every brightfield instance
CATEGORY = "cell"
#: the probability maps a brightfield prediction carries in ``FrameInstances.meta``
MAP_KEYS = ("nuclei", "overlap")


def _maps_from_meta(results: Iterable[FrameInstances], maps: dict[str, list]
                    ) -> Iterator[FrameInstances]:
    """Pass the results through, keeping each one's nuclei / overlap maps in ``maps``."""
    for inst in results:
        for key in MAP_KEYS:
            m = (inst.meta or {}).get(key)
            maps[key].append(None if m is None else np.asarray(m, np.float32))
        yield inst


def brightfield_result_paths(out_dir: str | os.PathLike, dataset_dir: str = "dataset",
                             keys: Sequence[str] = MAP_KEYS) -> list[Path]:
    """The files whose existence means an earlier brightfield result is in ``out_dir``."""
    out = Path(out_dir)
    return [*instance_result_paths(out, dataset_dir), *(out / probability_file(k) for k in keys)]


def write_brightfield_results(
    results: Sequence[FrameInstances] | Iterable[FrameInstances], out_dir: str | os.PathLike,
    *, images: Iterable[np.ndarray], maps: Mapping[str, np.ndarray] | None = None,
    pixel_size_um: float | None = None, first_frame: int = 0, video: bool | None = None,
    track_ids: bool = True, dataset_dir: str = "dataset", info: dict | None = None,
    overwrite: bool = False,
) -> WrittenResults:
    """Write a brightfield result (see the module docstring for the files and columns).

    ``maps``: key -> (H, W) or (T, H, W) probability map to write as
    ``<key>_probability.tif``; None takes the nuclei / overlap maps of the results' ``meta``
    (each written when every frame has it). The other parameters are those of
    :func:`blastoseg.results.amodal.write_amodal_results`.

    Returns
    -------
    WrittenResults
        name -> path (``dataset``, ``counts``, ``cells``, ``<key>_probability``), with the
        measurement rows as ``.frames`` and ``.cells``.
    """
    out = Path(out_dir)
    keys = MAP_KEYS if maps is None else tuple(maps)
    refuse_existing(brightfield_result_paths(out, dataset_dir, keys), overwrite)
    video = is_video(results, video)
    collected: dict[str, list] = {k: [] for k in MAP_KEYS}
    written = write_instance_results(
        results if maps is not None else _maps_from_meta(results, collected), out,
        images=images, video=video, pixel_size_um=pixel_size_um, first_frame=first_frame,
        track_ids=track_ids, dataset_dir=dataset_dir, categories={1: CATEGORY}, info=info,
        overwrite=overwrite)
    if maps is None:
        maps = {k: (np.stack(v) if len(v) > 1 else v[0]) for k, v in collected.items()
                if v and all(m is not None for m in v)}
    for key, array in maps.items():
        written[f"{key}_probability"] = write_tiff(out / probability_file(key),
                                                   np.asarray(array, np.float32))
    return written
