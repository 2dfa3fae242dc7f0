"""Morphology and morphokinetics computed from instance results."""

from blastoseg.measure.morphology import (
    EmbryoMeasurements,
    InstanceMeasurements,
    measure_frame,
    measure_stack,
    write_measurements_csv,
)

__all__ = [
    "EmbryoMeasurements",
    "InstanceMeasurements",
    "measure_frame",
    "measure_stack",
    "write_measurements_csv",
]
