"""Synthetic human MII oocytes (S3) with semantic ground truth: zona, perivitelline space and
polar body, ooplasm, inclusions, vacuoles, SER clusters (:mod:`blastoseg.io.oocyte_classes`).

>>> from blastoseg.synth.oocyte import render_oocyte
>>> frame = render_oocyte(seed=0)
>>> frame.image.shape
(256, 256)
"""

from blastoseg.synth.oocyte.config import CONTRASTS, LABEL_MAPS, OocyteConfig
from blastoseg.synth.oocyte.oocyte import SynthOocyte, render_oocyte
from blastoseg.synth.oocyte.writer import write_synthetic_oocytes

__all__ = ["CONTRASTS", "LABEL_MAPS", "OocyteConfig", "SynthOocyte", "render_oocyte",
           "write_synthetic_oocytes"]
