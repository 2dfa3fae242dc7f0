"""Morphology and morphokinetics computed from instance results: every per-cell and per-frame
measurement of blastoseg is computed here (the CLI, the widgets and the result writers call
these functions)."""

from blastoseg.measure.morphology import (
    EmbryoMeasurements,
    InstanceMeasurements,
    measure_frame,
    measure_stack,
    write_measurements_csv,
)
from blastoseg.measure.overlap import cell_overlaps

__all__ = [
    "EmbryoMeasurements",
    "InstanceMeasurements",
    "cell_overlaps",
    "measure_frame",
    "measure_stack",
    "write_measurements_csv",
]
