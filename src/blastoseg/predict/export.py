"""Write a segmentation result: dataset folder (so it can be corrected and re-used for
training), per-frame counts and per-cell measurements as CSV."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from blastoseg.instances import FrameInstances
from blastoseg.io.dataset import Sample, write_dataset
from blastoseg.measure import measure_stack, write_measurements_csv


def write_segmentation(out_dir: str | Path, images: np.ndarray, frames: list[FrameInstances],
                       pixel_size_um: float | None = None, overwrite: bool = False
                       ) -> dict[str, Path]:
    """Write ``images`` (T, Y, X) and their ``frames`` results under ``out_dir``."""
    out = Path(out_dir)
    video = len(frames) > 1
    samples = [
        Sample(image=np.asarray(images[t]), instances=frames[t],
               file_name=f"images/frame_{t:04d}.png" if video else None,
               video_id=1 if video else None, frame_index=t if video else None,
               pixel_size_um=pixel_size_um)
        for t in range(len(frames))
    ]
    paths = {"dataset": write_dataset(out / "dataset", samples, overwrite=overwrite)}
    per_frame, per_cell = measure_stack(frames, pixel_size_um=pixel_size_um)
    paths["counts"] = write_measurements_csv(per_frame, out / "counts.csv")
    if per_cell:
        paths["cells"] = write_measurements_csv(per_cell, out / "cells.csv")
    return paths
