"""Per-blastomere and per-embryo measurements from amodal instance masks.

Amodal masks give each blastomere's full projected outline, so sizes are not biased by
which cell happens to lie on top. Size symmetry is the coefficient of variation (CV) of the
blastomere diameters: clinical grading (e.g. the Istanbul consensus) scores day-2/3 embryos
as even or uneven by blastomere size, and CV of diameters is its usual quantitative form.
"""

from __future__ import annotations

import csv
import math
from dataclasses import asdict, dataclass, fields
from io import StringIO
from pathlib import Path

import numpy as np
from skimage.measure import regionprops

from blastoseg.instances import FrameInstances
from blastoseg.io.atomic import atomic_write_text


@dataclass
class InstanceMeasurements:
    frame: int
    instance: int
    track_id: int | None
    area_px: int
    area_um2: float | None
    diameter_px: float
    diameter_um: float | None
    eccentricity: float
    overlap_fraction: float  # share of this cell's amodal area covered by at least one other cell
    centroid_y: float
    centroid_x: float


@dataclass
class EmbryoMeasurements:
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
        Amodal instances of the frame.
    frame
        Frame index written into the rows.
    pixel_size_um
        Pixel size in micrometres; when given, areas and diameters are also reported in um.
    """
    coverage = instances.coverage()
    rows: list[InstanceMeasurements] = []
    for i, mask in enumerate(instances.masks):
        area = int(mask.sum())
        if area == 0:
            continue
        props = regionprops(mask.astype(np.uint8))[0]
        others = coverage[mask] - 1
        diameter = _equivalent_diameter(area)
        cy, cx = props.centroid
        rows.append(
            InstanceMeasurements(
                frame=frame,
                instance=i + 1,
                track_id=None if instances.track_ids is None else int(instances.track_ids[i]),
                area_px=area,
                area_um2=None if pixel_size_um is None else area * pixel_size_um**2,
                diameter_px=diameter,
                diameter_um=None if pixel_size_um is None else diameter * pixel_size_um,
                eccentricity=float(props.eccentricity),
                overlap_fraction=float((others > 0).mean()),
                centroid_y=float(cy),
                centroid_x=float(cx),
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


def _format(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def write_measurements_csv(rows: list, path: str | Path) -> Path:
    """Write dataclass rows (per-frame or per-blastomere) to a CSV file, atomically."""
    path = Path(path)
    if not rows:
        raise ValueError("no measurements to write")
    names = [f.name for f in fields(rows[0])]
    lines: list[list[str]] = [names]
    for row in rows:
        d = asdict(row)
        lines.append([_format(d[n]) for n in names])


    buf = StringIO()
    csv.writer(buf, lineterminator="\n").writerows(lines)
    atomic_write_text(path, buf.getvalue())
    return path
