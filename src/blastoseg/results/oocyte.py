"""The files of an oocyte run (kind ``oocyte``), written by ``blastoseg segment oocyte`` and
by the "Oocyte inclusions" widget's export, so both write the same columns.

:func:`write_oocyte_results` writes, under ``out_dir``:

- ``classes.tif``: the class maps, uint8 (H, W) for one frame or (T, H, W) (frames of
  different sizes: one ``classes_<frame>.tif`` each); the ids are
  :data:`blastoseg.io.oocyte_classes.CLASS_NAMES`;
- ``measurements.csv``: one row per frame (:data:`MEASUREMENT_COLUMNS`);
- ``classes.csv``: the class ids and names (what the TIFF's values mean).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from blastoseg.io.oocyte_classes import CLASS_NAMES
from blastoseg.results.files import csv_text, refuse_existing, write_csv, write_tiff

__all__ = ["CLASSES_FILE", "write_oocyte_dataset", "LABELS_FILE", "MEASUREMENTS_FILE", "MEASUREMENT_COLUMNS",
           "measurement_rows", "measurements_csv", "oocyte_result_paths",
           "write_oocyte_results"]

LABELS_FILE = "classes.tif"
MEASUREMENTS_FILE = "measurements.csv"
CLASSES_FILE = "classes.csv"
MEASUREMENT_COLUMNS = ["frame", "unit", "inclusion_count", "inclusion_area", "vacuole_count",
                       "vacuole_diameters", "ser_count", "ooplasm_diameter", "zona_thickness",
                       "pvs_width", "warnings"]


def oocyte_result_paths(out_dir: str | os.PathLike) -> list[Path]:
    """The files whose existence means an earlier oocyte result is in ``out_dir``."""
    out = Path(out_dir)
    return [out / LABELS_FILE, out / MEASUREMENTS_FILE, out / CLASSES_FILE]


def _items(results) -> list:
    from blastoseg.predict.oocyte import OocyteResult

    items = [results] if isinstance(results, OocyteResult) else list(results)
    if not items:
        raise ValueError("no oocyte results to write")
    return items


def measurement_rows(results, images: Sequence[str] | None = None) -> list[dict]:
    """One measurement row per result (the CSV's rows; the widget's table)."""
    items = _items(results)
    if images is not None and len(images) != len(items):
        raise ValueError(f"{len(images)} image names for {len(items)} results")
    return [{"frame": int(r.meta.get("frame", t)), **r.measurements.row(),
             **({"image": str(images[t])} if images is not None else {})}
            for t, r in enumerate(items)]


def measurements_csv(results, images: Sequence[str] | None = None) -> str:
    """The measurements CSV as text (the widget's "Export CSV" writes it)."""
    extra = ["image"] if images is not None else []
    return csv_text(MEASUREMENT_COLUMNS[:1] + extra + MEASUREMENT_COLUMNS[1:],
                    measurement_rows(results, images))


def write_oocyte_results(results, out_dir: str | os.PathLike, *,
                         images: Sequence[str] | None = None, overwrite: bool = False
                         ) -> dict[str, Path]:
    """Write one :class:`~blastoseg.predict.oocyte.OocyteResult` or a list (one per frame)
    under ``out_dir``; returns name -> path. Existing files are refused unless
    ``overwrite``."""
    items = _items(results)
    out = Path(out_dir)
    shapes = {np.shape(r.labels) for r in items}
    label_files = ([out / LABELS_FILE] if len(shapes) == 1
                   else [out / f"classes_{t}.tif" for t in range(len(items))])
    refuse_existing([out / MEASUREMENTS_FILE, out / CLASSES_FILE, *label_files], overwrite)
    out.mkdir(parents=True, exist_ok=True)
    extra = ["image"] if images is not None else []
    written = {
        "measurements": write_csv(out / MEASUREMENTS_FILE,
                                  MEASUREMENT_COLUMNS[:1] + extra + MEASUREMENT_COLUMNS[1:],
                                  measurement_rows(items, images)),
        "classes": write_csv(out / CLASSES_FILE, ["id", "name"],
                             [{"id": k, "name": v} for k, v in CLASS_NAMES.items()]),
    }
    maps = [np.asarray(r.labels, np.uint8) for r in items]
    if len(shapes) == 1:
        written["labels"] = write_tiff(label_files[0], maps[0] if len(maps) == 1
                                       else np.stack(maps))
    else:
        for t, (m, path) in enumerate(zip(maps, label_files, strict=True)):
            written[f"labels_{t}"] = write_tiff(path, m)
    return written


def write_oocyte_dataset(images: Sequence[np.ndarray], class_maps: Sequence[np.ndarray],
                         out_dir: str | os.PathLike, *, pixel_size_um: float | None = None,
                         overwrite: bool = False) -> Path:
    """Images and their (corrected) class maps as an oocyte dataset folder, ready for
    ``blastoseg train oocyte`` or a fine-tune (the widget's "Export dataset"). Returns the
    annotations.json path; an existing one is refused unless ``overwrite`` (then kept as a
    backup)."""
    from blastoseg.io.dataset import Sample, write_dataset
    from blastoseg.io.oocyte_classes import OOCYTE_CATEGORIES, instances_from_class_map

    if len(images) != len(class_maps) or not len(images):
        raise ValueError(f"{len(images)} images for {len(class_maps)} class maps")
    samples = (Sample(image=np.asarray(img), instances=instances_from_class_map(cm),
                      file_name=f"images/oocyte_{t:04d}.png" if np.asarray(img).dtype == np.uint8
                      else f"images/oocyte_{t:04d}.tif",
                      pixel_size_um=pixel_size_um)
               for t, (img, cm) in enumerate(zip(images, class_maps, strict=True)))
    return write_dataset(out_dir, samples, categories=OOCYTE_CATEGORIES, overwrite=overwrite,
                         info={"description": "oocytes with class maps (blastoseg)",
                               "semantic": "oocyte"})
