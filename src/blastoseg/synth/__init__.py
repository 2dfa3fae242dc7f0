"""Synthetic day 1-3 human embryos and day 5-6 blastocysts under relief contrast, with
amodal ground truth.

Blastomeres are packed 3D ellipsoids inside the zona; the image is formed from their
summed optical path (relief contrast), so overlapping cells show every outline. Each frame
comes with amodal and visible masks, the occlusion map and track ids.

>>> from blastoseg.synth import render_embryo
>>> frame = render_embryo(4, seed=0)
>>> frame.instances.count
4
"""

from blastoseg.synth.config import EmbryoConfig
from blastoseg.synth.embryo import (
    SynthFrame,
    SynthTimelapse,
    iter_timelapse,
    render_blastocyst,
    render_embryo,
    render_timelapse,
)
from blastoseg.synth.writer import write_synthetic_embryos

__all__ = [
    "EmbryoConfig",
    "SynthFrame",
    "SynthTimelapse",
    "iter_timelapse",
    "render_blastocyst",
    "render_embryo",
    "render_timelapse",
    "write_synthetic_embryos",
]
