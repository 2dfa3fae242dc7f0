"""Per-blastomere and per-embryo measurements from amodal instance masks.

Amodal masks give each blastomere's full projected outline, so sizes are not biased by
which cell happens to lie on top. Size symmetry is the coefficient of variation (CV) of the
blastomere diameters: clinical grading (e.g. the Istanbul consensus) scores day-2/3 embryos
as even or uneven by blastomere size, and CV of diameters is its usual quantitative form.

The same rows describe any instance result (amodal blastomeres, brightfield cells): they are
the ``cells.csv`` and ``counts.csv`` of every writer in :mod:`blastoseg.results` and the tables
of the napari Measure and brightfield widgets.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
from skimage.measure import regionprops

from blastoseg.instances import FrameInstances
from blastoseg.measure.overlap import cell_overlaps
from blastoseg.results.files import write_csv


@dataclass
class InstanceMeasurements:
    """One cell of one frame (a row of ``cells.csv``). Sizes in µm are None without a pixel
    size; new columns are added at the end, so scripts reading by position keep working."""

    frame: int
    instance: int  # the cell's label value in napari: track id + 1, else its position + 1
    track_id: int | None
    area_px: int
    area_um2: float | None
    diameter_px: float  # equivalent diameter: of the disk with the cell's area
    diameter_um: float | None
    eccentricity: float  # of the ellipse with the same second moments (0 = round)
    overlap_fraction: float  # share of this cell's amodal area covered by at least one other cell
    centroid_y: float
    centroid_x: float
    overlap_px: int  # this cell's pixels inside at least one other cell
    neighbours: int  # other cells sharing at least one pixel with this one
    score: float  # the model's confidence; 1 for cells drawn or corrected by hand


@dataclass
class EmbryoMeasurements:
    """One frame (a row of ``counts.csv``)."""

    frame: int
    cell_count: int
    mean_diameter_px: float
    mean_diameter_um: float | None
    diameter_cv: float  # size symmetry: 0 = perfectly even blastomeres
    overlap_fraction: float  # share of the embryo's cell area covered by two or more cells


def _equivalent_diameter(area: float) -> float:
    return math.sqrt(4.0 * area / math.pi)


def measure_frame(
    instances: FrameInstances, frame: int = 0, pixel_size_um: float | None = None
) -> tuple[EmbryoMeasurements, list[InstanceMeasurements]]:
    """Measure one frame's instances.

    Parameters
    ----------
    instances
        The frame's instances (amodal blastomeres or brightfield cells). Their track ids,
        when they have some, give each cell's ``instance`` number (track id + 1, the label
        value napari shows).
    frame
        Frame index written into the rows.
    pixel_size_um
        Pixel size in micrometres; when given, areas and diameters are also reported in um.
    """
    coverage = instances.coverage()
    overlap_px, neighbours = cell_overlaps(instances)
    boxes = instances.boxes.astype(int)
    tracks = instances.track_ids
    rows: list[InstanceMeasurements] = []
    for i, mask in enumerate(instances.masks):
        area = int(mask.sum())
        if area == 0:
            continue
        x0, y0, x1, y1 = boxes[i]
        # the cell's box only: regionprops of a whole frame per cell is slow on big frames
        props = regionprops(mask[y0:y1, x0:x1].astype(np.uint8))[0]
        diameter = _equivalent_diameter(area)
        cy, cx = props.centroid
        rows.append(
            InstanceMeasurements(
                frame=frame,
                instance=i + 1 if tracks is None else int(tracks[i]) + 1,
                track_id=None if tracks is None else int(tracks[i]),
                area_px=area,
                area_um2=None if pixel_size_um is None else area * pixel_size_um**2,
                diameter_px=diameter,
                diameter_um=None if pixel_size_um is None else diameter * pixel_size_um,
                eccentricity=float(props.eccentricity),
                overlap_fraction=int(overlap_px[i]) / area,
                centroid_y=float(cy + y0),
                centroid_x=float(cx + x0),
                overlap_px=int(overlap_px[i]),
                neighbours=int(neighbours[i]),
                score=float(instances.scores[i]),
            )
        )
    diameters = np.array([r.diameter_px for r in rows])
    mean_d = float(diameters.mean()) if len(rows) else 0.0
    covered = coverage > 0
    embryo = EmbryoMeasurements(
        frame=frame,
        cell_count=len(rows),
        mean_diameter_px=mean_d,
        mean_diameter_um=None if pixel_size_um is None else mean_d * pixel_size_um,
        diameter_cv=float(diameters.std() / mean_d) if len(rows) > 1 else 0.0,
        overlap_fraction=float((coverage[covered] >= 2).mean()) if covered.any() else 0.0,
    )
    return embryo, rows


def measure_stack(
    frames: list[FrameInstances], pixel_size_um: float | None = None
) -> tuple[list[EmbryoMeasurements], list[InstanceMeasurements]]:
    """Measure every frame of a time-lapse; returns per-frame and per-blastomere rows."""
    per_frame: list[EmbryoMeasurements] = []
    per_cell: list[InstanceMeasurements] = []
    for t, inst in enumerate(frames):
        embryo, cells = measure_frame(inst, frame=t, pixel_size_um=pixel_size_um)
        per_frame.append(embryo)
        per_cell.extend(cells)
    return per_frame, per_cell


def write_measurements_csv(rows: list, path: str | Path) -> Path:
    """Write dataclass rows (per-frame or per-blastomere) to a CSV file, atomically."""
    if not rows:
        raise ValueError("no measurements to write")
    return write_csv(path, [f.name for f in fields(rows[0])], [asdict(r) for r in rows])
