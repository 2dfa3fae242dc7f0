"""The file of a localisation run (kind ``localiser``), written by ``blastoseg segment
localiser``: ``embryos.csv``, one row per frame with the embryo's circle (pixels; x = column,
y = row), the localiser's confidence, the method that found it (``source``), whether it is
unsure, and its note ("no embryo found", "embryo cut by the frame edge", ...)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from blastoseg.results.files import refuse_existing, write_csv

__all__ = ["EMBRYOS_COLUMNS", "EMBRYOS_FILE", "write_framing_results"]

EMBRYOS_FILE = "embryos.csv"
EMBRYOS_COLUMNS = ("frame", "cx", "cy", "radius", "confidence", "source", "found", "unsure",
                   "note")


def write_framing_results(results, out_dir: str | os.PathLike, *,
                          images: Sequence[str] | None = None, overwrite: bool = False
                          ) -> dict[str, Path]:
    """Write one localiser result (anything with a ``box`` EmbryoBox, or an EmbryoBox) or a
    list of them under ``out_dir``; ``images`` optionally names each frame. Returns
    name -> path; an existing file is refused unless ``overwrite``."""
    items = list(results) if isinstance(results, (list, tuple)) else [results]
    if not items:
        raise ValueError("no localisation results to write")
    if images is not None and len(images) != len(items):
        raise ValueError(f"{len(images)} image names for {len(items)} results")
    out = Path(out_dir)
    refuse_existing([out / EMBRYOS_FILE], overwrite)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for t, item in enumerate(items):
        box = getattr(item, "box", item)
        rows.append({"frame": t, "cx": round(box.cx, 2), "cy": round(box.cy, 2),
                     "radius": round(box.radius, 2), "confidence": box.confidence,
                     "source": box.source, "found": int(box.found), "unsure": int(box.unsure),
                     "note": box.note, **({"image": str(images[t])} if images else {})})
    columns = (*EMBRYOS_COLUMNS, *(("image",) if images else ()))
    return {"embryos": write_csv(out / EMBRYOS_FILE, columns, rows)}
