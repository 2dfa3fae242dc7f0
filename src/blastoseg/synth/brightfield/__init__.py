"""Synthetic brightfield images of adherent cells with amodal ground truth (thesis section 4.4).

A scene is a set of irregular, elongated, non-convex cells with nuclei (:mod:`.cells`),
overlapping with a controlled overlap ratio. Their thickness x refractive-index excess gives
a phase image; two defocused brightfield focal planes follow from the transport-of-intensity
(weak-phase) approximation (:mod:`.optics`). Copy-paste (:mod:`.copy_paste`, section 4.4.1)
makes new phase scenes from cut, warped cells; a translator (the pix2pix model of section
4.4.2, :mod:`.translate`) may turn those into brightfield planes.

>>> from blastoseg.synth.brightfield import BrightfieldConfig, render_brightfield
>>> scene = render_brightfield(0, BrightfieldConfig().for_size(128))
>>> scene.planes.shape, scene.nuclei.dtype.name
((2, 128, 128), 'uint16')
"""

from blastoseg.synth.brightfield.cells import CellPatch
from blastoseg.synth.brightfield.config import BrightfieldConfig
from blastoseg.synth.brightfield.copy_paste import (
    copy_paste_scene,
    cut_cells,
    render_copy_paste,
    scene_cells,
    transform_cell,
)
from blastoseg.synth.brightfield.scene import (
    GENERATOR,
    BrightfieldScene,
    Translator,
    render_brightfield,
)
from blastoseg.synth.brightfield.writer import write_synthetic_brightfield

__all__ = [
    "GENERATOR",
    "BrightfieldConfig",
    "BrightfieldScene",
    "CellPatch",
    "Translator",
    "copy_paste_scene",
    "cut_cells",
    "render_brightfield",
    "render_copy_paste",
    "scene_cells",
    "transform_cell",
    "write_synthetic_brightfield",
]
