"""The files of a Cell-Net count run (kind ``count``), written by ``blastoseg segment count``
(and by any widget export of counts, so both write the same columns).

:func:`write_count_results` writes, under ``out_dir``:

- ``counts.csv``: one row per frame, ``frame, cell_count, integral`` (plus ``image`` when
  the frames' names are given);
- ``centroids.csv``: one row per blastomere centre, ``frame, y, x`` (input pixels);
- ``density.tif``: the density maps, float32 ImageJ TIFF of shape (H, W) for one frame or
  (T, H, W); frames of different sizes get one ``density_<frame>.tif`` each.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from blastoseg.results.files import refuse_existing, write_csv, write_tiff

__all__ = ["CENTROIDS_FILE", "COUNTS_FILE", "DENSITY_FILE", "count_result_paths",
           "write_count_results"]

COUNTS_FILE = "counts.csv"
CENTROIDS_FILE = "centroids.csv"
DENSITY_FILE = "density.tif"


def count_result_paths(out_dir: str | os.PathLike) -> list[Path]:
    """The files whose existence means an earlier count result is in ``out_dir``."""
    out = Path(out_dir)
    return [out / COUNTS_FILE, out / CENTROIDS_FILE, out / DENSITY_FILE]


def write_count_results(results, out_dir: str | os.PathLike, *,
                        images: Sequence[str] | None = None, overwrite: bool = False
                        ) -> dict[str, Path]:
    """Write one :class:`~blastoseg.predict.count.CountResult` or a list of them (one per
    frame) under ``out_dir``; ``images`` optionally names each frame (an ``image`` column).
    Returns name -> path. Existing files are refused unless ``overwrite``."""
    from blastoseg.predict.count import CountResult

    items = [results] if isinstance(results, CountResult) else list(results)
    if not items:
        raise ValueError("no count results to write")
    if images is not None and len(images) != len(items):
        raise ValueError(f"{len(images)} image names for {len(items)} results")
    out = Path(out_dir)
    shapes = {np.shape(r.density) for r in items}
    density_files = ([out / DENSITY_FILE] if len(shapes) == 1
                     else [out / f"density_{t}.tif" for t in range(len(items))])
    refuse_existing([out / COUNTS_FILE, out / CENTROIDS_FILE, *density_files], overwrite)
    out.mkdir(parents=True, exist_ok=True)
    extra = ["image"] if images is not None else []
    rows = [{"frame": t, "cell_count": int(r.count), "integral": float(r.integral),
             **({"image": str(images[t])} if images is not None else {})}
            for t, r in enumerate(items)]
    points = [{"frame": t, "y": float(y), "x": float(x)}
              for t, r in enumerate(items) for y, x in np.asarray(r.centroids).reshape(-1, 2)]
    written = {"counts": write_csv(out / COUNTS_FILE, ["frame", *extra, "cell_count",
                                                       "integral"], rows),
               "centroids": write_csv(out / CENTROIDS_FILE, ["frame", "y", "x"], points)}
    if len(shapes) == 1:
        maps = [np.asarray(r.density, np.float32) for r in items]
        written["density"] = write_tiff(density_files[0], maps[0] if len(maps) == 1
                                        else np.stack(maps))
    else:
        for t, (r, path) in enumerate(zip(items, density_files, strict=True)):
            written[f"density_{t}"] = write_tiff(path, np.asarray(r.density, np.float32))
    return written
