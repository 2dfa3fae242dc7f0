"""Write a segmentation result: dataset folder (so it can be corrected and re-used for
training), per-frame counts and per-cell measurements as CSV, and (for results that record
it) the embryo framing per frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from blastoseg.instances import FrameInstances
from blastoseg.io.atomic import atomic_write_text
from blastoseg.io.dataset import Sample, write_dataset
from blastoseg.measure import measure_stack, write_measurements_csv

#: columns of ``framing.csv``
FRAMING_COLUMNS = ("frame", "source", "cx", "cy", "radius", "confidence", "unsure",
                   "guess_cx", "guess_cy", "guess_radius", "guess_confidence")


def _circle(d: dict) -> dict:
    """The JSON-ready circle of an EmbryoBox dict (pixels, rounded)."""
    return {"cx": round(float(d["cx"]), 2), "cy": round(float(d["cy"]), 2),
            "radius": round(float(d["radius"]), 2),
            "confidence": round(float(d.get("confidence", 0.0)), 4),
            "source": str(d.get("source", ""))}


def framing_extra(inst: FrameInstances) -> dict:
    """Image-entry metadata for a result's framing: ``embryo`` (cx, cy, radius in pixels,
    confidence, source), ``embryo_unsure`` and, when unsure, ``embryo_guess``; empty when
    the result records no framing (e.g. not an amodal result)."""
    meta = inst.meta or {}
    if not isinstance(meta.get("embryo"), dict):
        return {}
    out = {"embryo": _circle(meta["embryo"]), "embryo_unsure": bool(meta.get("embryo_unsure"))}
    if isinstance(meta.get("embryo_guess"), dict):
        out["embryo_guess"] = _circle(meta["embryo_guess"])
    return out


def write_framing_csv(frames: list[FrameInstances], path: str | Path) -> Path | None:
    """One row per frame: the embryo circle used (pixels), its source and confidence, whether
    the localiser was unsure and its guess. None (nothing written) when no frame records its
    framing."""
    extras = [framing_extra(f) for f in frames]
    if not any(extras):
        return None
    rows = [",".join(FRAMING_COLUMNS)]
    for t, ex in enumerate(extras):
        e, g = ex.get("embryo"), ex.get("embryo_guess")
        values = [t]
        values += [e["source"], e["cx"], e["cy"], e["radius"], e["confidence"],
                   int(ex["embryo_unsure"])] if e else ["", "", "", "", "", ""]
        values += [g["cx"], g["cy"], g["radius"], g["confidence"]] if g else ["", "", "", ""]
        rows.append(",".join(str(v) for v in values))
    return atomic_write_text(Path(path), "\n".join(rows) + "\n")


def write_segmentation(out_dir: str | Path, images: np.ndarray, frames: list[FrameInstances],
                       pixel_size_um: float | None = None, overwrite: bool = False
                       ) -> dict[str, Path]:
    """Write ``images`` (T, Y, X) and their ``frames`` results under ``out_dir``.

    ``dataset/`` (images and masks; an amodal result's framing in each image entry:
    ``embryo``, ``embryo_unsure``, ``embryo_guess``, see :func:`framing_extra`),
    ``counts.csv`` (per frame), ``cells.csv`` (per cell) and, for results that record their
    framing, ``framing.csv`` (:func:`write_framing_csv`). Returns name -> path.
    """
    out = Path(out_dir)
    video = len(frames) > 1
    samples = [
        Sample(image=np.asarray(images[t]), instances=frames[t],
               file_name=f"images/frame_{t:04d}.png" if video else None,
               video_id=1 if video else None, frame_index=t if video else None,
               pixel_size_um=pixel_size_um, extra=framing_extra(frames[t]))
        for t in range(len(frames))
    ]
    paths = {"dataset": write_dataset(out / "dataset", samples, overwrite=overwrite)}
    per_frame, per_cell = measure_stack(frames, pixel_size_um=pixel_size_um)
    paths["counts"] = write_measurements_csv(per_frame, out / "counts.csv")
    if per_cell:
        paths["cells"] = write_measurements_csv(per_cell, out / "cells.csv")
    framing = write_framing_csv(frames, out / "framing.csv")
    if framing is not None:
        paths["framing"] = framing
    else:  # an earlier run's framing would describe other results
        (out / "framing.csv").unlink(missing_ok=True)
    return paths
