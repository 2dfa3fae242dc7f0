"""One synthetic oocyte: layout, image and ground truth from one seed."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from blastoseg.instances import FrameInstances
from blastoseg.io.oocyte_classes import class_map
from blastoseg.synth.oocyte.config import OocyteConfig
from blastoseg.synth.oocyte.layout import OocyteLayout, sample_layout
from blastoseg.synth.oocyte.render import render_layout

__all__ = ["SynthOocyte", "render_oocyte"]


@dataclass
class SynthOocyte:
    """A synthetic oocyte.

    Attributes
    ----------
    image
        (H, W) uint8.
    instances
        One mask per object (zona, perivitelline space, polar body pieces, ooplasm,
        inclusions, vacuoles, SER clusters), class ids of :mod:`blastoseg.io.oocyte_classes`.
    labels
        (H, W) uint8 class map (:func:`~blastoseg.io.oocyte_classes.class_map`).
    layout
        The geometry it was drawn from.
    meta
        JSON-able: seed, pixel size, the true measurements, the optics drawn.
    """

    image: np.ndarray
    instances: FrameInstances
    labels: np.ndarray
    layout: OocyteLayout
    meta: dict = field(default_factory=dict)


def render_oocyte(seed: int = 0, config: OocyteConfig | None = None) -> SynthOocyte:
    """Draw and render one oocyte (deterministic in ``seed``)."""
    cfg = config if config is not None else OocyteConfig()
    s_layout, s_render = np.random.SeedSequence(int(seed)).spawn(2)
    lay = sample_layout(np.random.default_rng(s_layout), cfg)
    image, optics = render_layout(lay, cfg, np.random.default_rng(s_render))
    inst = lay.instances()
    meta = {"seed": int(seed), "pixel_size_um": round(lay.px_um, 5), **lay.meta(), **optics,
            "label_maps": cfg.label_maps}
    return SynthOocyte(image=image, instances=inst, labels=class_map(inst), layout=lay,
                       meta=meta)
