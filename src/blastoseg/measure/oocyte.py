"""Measurements of an oocyte from its class map (S3): what an embryologist grades before ICSI.

* ``inclusion_count``, ``inclusion_area``: connected pieces of the inclusion class of at
  least :data:`MIN_COMPONENT_PX` pixels (smaller specks are noise at 40x), and their total area;
* ``vacuole_count``, ``vacuole_diameters``: pieces of the vacuole class and their equivalent
  diameters (the circle of the same area);
* ``ser_count``: smooth-ER clusters;
* ``ooplasm_diameter``: equivalent diameter of the ooplasm with everything inside it
  (inclusions, vacuoles, SER: they lie in the ooplasm), its largest piece, holes filled;
* ``zona_thickness`` and ``pvs_width``: differences of equivalent radii of the nested
  regions (ooplasm; + perivitelline space; + zona), robust to an elliptical oocyte.

Lengths are in micrometres when ``pixel_size_um`` is given, else in pixels (``unit``).
Warnings say when the numbers should not be trusted: no ooplasm, two oocytes, a cut oocyte.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage as ndi

from blastoseg.io.oocyte_classes import INCLUSION, OOPLASM, PVS, SER, VACUOLE, ZONA

__all__ = ["MIN_COMPONENT_PX", "OocyteMeasurements", "measure_oocyte"]

#: pieces of inclusion / vacuole / SER smaller than this are not counted
MIN_COMPONENT_PX = 3
#: a second ooplasm piece at least this share of the largest one means two oocytes
SECOND_OOCYTE_SHARE = 0.3


@dataclass
class OocyteMeasurements:
    """One oocyte's measurements (see the module docstring); lengths in ``unit``."""

    unit: str
    inclusion_count: int = 0
    inclusion_area: float = 0.0
    vacuole_count: int = 0
    vacuole_diameters: list[float] = field(default_factory=list)
    ser_count: int = 0
    ooplasm_diameter: float | None = None
    zona_thickness: float | None = None
    pvs_width: float | None = None
    warnings: list[str] = field(default_factory=list)

    def row(self) -> dict:
        """A flat, CSV-ready dict (diameters joined with ';')."""
        d = asdict(self)
        d["vacuole_diameters"] = ";".join(f"{v:.2f}" for v in self.vacuole_diameters)
        d["warnings"] = " | ".join(self.warnings)
        return d


def _pieces(mask: np.ndarray, min_px: int) -> list[int]:
    lab, n = ndi.label(mask)
    if not n:
        return []
    sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    return [int(s) for s in sizes if s >= min_px]


def _eq_radius(area: float) -> float:
    return float(np.sqrt(area / np.pi))


def measure_oocyte(labels: np.ndarray, pixel_size_um: float | None = None) -> OocyteMeasurements:
    """The measurements of one (H, W) class map."""
    labels = np.asarray(labels)
    um = float(pixel_size_um) if pixel_size_um else 1.0
    m = OocyteMeasurements(unit="um" if pixel_size_um else "px")
    inclusions = _pieces(labels == INCLUSION, MIN_COMPONENT_PX)
    m.inclusion_count, m.inclusion_area = len(inclusions), float(sum(inclusions)) * um * um
    vacuoles = _pieces(labels == VACUOLE, MIN_COMPONENT_PX)
    m.vacuole_count = len(vacuoles)
    m.vacuole_diameters = [round(2 * _eq_radius(a) * um, 3) for a in vacuoles]
    m.ser_count = len(_pieces(labels == SER, MIN_COMPONENT_PX))

    plasm = np.isin(labels, (OOPLASM, INCLUSION, VACUOLE, SER))
    lab, n = ndi.label(plasm)
    if not n:
        m.warnings.append("no ooplasm found: no oocyte in the frame, or not an image the "
                          "model knows (an embryo, another contrast)")
        return m
    sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    order = np.argsort(sizes)[::-1]
    if n > 1 and sizes[order[1]] >= SECOND_OOCYTE_SHARE * sizes[order[0]]:
        m.warnings.append(f"{int((sizes >= SECOND_OOCYTE_SHARE * sizes[order[0]]).sum())} "
                          "ooplasm regions of similar size: more than one oocyte? The "
                          "measurements are of the largest; counts cover the whole frame")
    main = ndi.binary_fill_holes(lab == order[0] + 1)
    edge = np.concatenate([main[0], main[-1], main[:, 0], main[:, -1]])
    if edge.any():
        m.warnings.append("the ooplasm touches the frame's edge: the oocyte is cut, its "
                          "diameter and widths are lower bounds")
    r_plasm = _eq_radius(main.sum())
    m.ooplasm_diameter = round(2 * r_plasm * um, 3)
    # nested regions grown from the main ooplasm only (another oocyte's shells stay out)
    near = ndi.binary_dilation(main, iterations=max(int(0.6 * r_plasm), 1))
    inner = ndi.binary_fill_holes(main | (near & (labels == PVS)))
    outer = ndi.binary_fill_holes(inner | (near & (labels == ZONA)))
    if (labels[near] == PVS).any():
        m.pvs_width = round((_eq_radius(inner.sum()) - r_plasm) * um, 3)
    if (labels[near] == ZONA).any():
        m.zona_thickness = round((_eq_radius(outer.sum()) - _eq_radius(inner.sum())) * um, 3)
    return m
