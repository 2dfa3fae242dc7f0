"""Where everything of one synthetic oocyte is: the label map's geometry, in frame pixels.

:func:`sample_layout` draws the shells (zona, perivitelline space, ooplasm, all slightly
elliptical and sharing one orientation), the first polar body in the perivitelline space
(sometimes fragmented) and the abnormalities inside the ooplasm: inclusions (round spots, as
in the paper's random label maps, plus sometimes a larger refractile body), vacuoles (round
fluid spaces), SER clusters (flat smooth discs seen face-on, so ellipses) and a patch of
central granularity (a texture, not a class). :meth:`OocyteLayout.instances` gives one mask
per object, with the oocyte class ids of :mod:`blastoseg.io.oocyte_classes`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from blastoseg.instances import FrameInstances
from blastoseg.io.oocyte_classes import INCLUSION, OOPLASM, PVS, SER, VACUOLE, ZONA
from blastoseg.synth.oocyte.config import OocyteConfig

__all__ = ["Blob", "OocyteLayout", "sample_layout"]

#: the paper draws 2-7 px spots on 256 x 256 label maps
PAPER_SPOT_PX = (2.0, 7.0)
PAPER_SPOTS = (1, 5)


def _u(rng: np.random.Generator, r: tuple[float, float]) -> float:
    return float(rng.uniform(r[0], r[1]))


@dataclass
class Blob:
    """An elliptical object: centre (y, x), semi-axes (a along ``angle``, b across), px."""

    y: float
    x: float
    a: float
    b: float
    angle: float = 0.0

    def mask(self, shape: tuple[int, int]) -> np.ndarray:
        yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
        return self.inside(yy, xx) <= 1.0

    def inside(self, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        """Squared normalised radius (<= 1 inside)."""
        ca, sa = np.cos(self.angle), np.sin(self.angle)
        dy, dx = yy - self.y, xx - self.x
        u = (ca * dx + sa * dy) / max(self.a, 1e-3)
        v = (-sa * dx + ca * dy) / max(self.b, 1e-3)
        return u * u + v * v


@dataclass
class OocyteLayout:
    """One oocyte's geometry in frame pixels (see the module docstring)."""

    shape: tuple[int, int]
    px_um: float                       # micrometres per pixel
    centre: tuple[float, float]        # (y, x)
    angle: float
    ellipticity: float
    r_ooplasm: float
    r_zona_in: float
    r_zona_out: float
    polar_bodies: list[Blob] = field(default_factory=list)
    inclusions: list[Blob] = field(default_factory=list)
    vacuoles: list[Blob] = field(default_factory=list)
    ser: list[Blob] = field(default_factory=list)
    granular_centre: Blob | None = None

    def shell(self, r: float) -> Blob:
        """The ellipse of the oocyte's shells at nominal radius ``r``."""
        e = self.ellipticity
        return Blob(self.centre[0], self.centre[1], r * (1 + e), r * (1 - e), self.angle)

    def instances(self) -> FrameInstances:
        """One mask per object; class ids from :mod:`blastoseg.io.oocyte_classes`."""
        masks, ids = [], []
        outer = self.shell(self.r_zona_out).mask(self.shape)
        inner = self.shell(self.r_zona_in).mask(self.shape)
        plasm = self.shell(self.r_ooplasm).mask(self.shape)
        for m, k in ((outer & ~inner, ZONA), (inner & ~plasm, PVS), (plasm, OOPLASM)):
            masks.append(m)
            ids.append(k)
        for blobs, k in ((self.polar_bodies, PVS), (self.ser, SER), (self.vacuoles, VACUOLE),
                         (self.inclusions, INCLUSION)):
            for b in blobs:
                m = b.mask(self.shape)
                if m.any():
                    masks.append(m)
                    ids.append(k)
        keep = [i for i, m in enumerate(masks) if m.any()]
        if not keep:
            return FrameInstances.empty(self.shape)
        return FrameInstances(masks=np.stack([masks[i] for i in keep]),
                              class_ids=np.array([ids[i] for i in keep]))

    def meta(self) -> dict:
        """JSON-able summary (what a measurement should find)."""
        um = self.px_um
        return {"ooplasm_diameter_um": round(2 * self.r_ooplasm * um, 2),
                "zona_thickness_um": round((self.r_zona_out - self.r_zona_in) * um, 2),
                "pvs_width_um": round((self.r_zona_in - self.r_ooplasm) * um, 2),
                "n_inclusions": len(self.inclusions), "n_vacuoles": len(self.vacuoles),
                "n_ser_clusters": len(self.ser), "n_polar_bodies": len(self.polar_bodies),
                "central_granularity": self.granular_centre is not None,
                "centre_yx": [round(float(v), 2) for v in self.centre]}


def _inside_ooplasm(rng: np.random.Generator, lay: OocyteLayout, r: float,
                    taken: list[Blob]) -> tuple[float, float] | None:
    """A centre for a blob of radius ``r`` inside the ooplasm, clear of ``taken``."""
    room = lay.r_ooplasm * (1 - lay.ellipticity) - r - 1.5
    for _ in range(40):
        rad = room * np.sqrt(rng.uniform(0, 1))
        a = rng.uniform(0, 2 * np.pi)
        y, x = lay.centre[0] + rad * np.sin(a), lay.centre[1] + rad * np.cos(a)
        if all(np.hypot(y - t.y, x - t.x) > r + max(t.a, t.b) + 1.5 for t in taken):
            return y, x
    return None


def _polar_bodies(rng: np.random.Generator, lay: OocyteLayout, cfg: OocyteConfig) -> None:
    """The first polar body in the perivitelline space (widening it locally where needed)."""
    if rng.random() >= cfg.polar_body_prob:
        return
    r = 0.5 * _u(rng, cfg.polar_body_diameter_um) / lay.px_um
    a = rng.uniform(0, 2 * np.pi)
    gap = lay.r_zona_in - lay.r_ooplasm
    if gap < 2 * r:  # the polar body pushes the ooplasm in: a wider PVS around it
        r = max(min(r, 0.5 * gap + 0.35 * r), 1.5)
    ring = lay.r_ooplasm + 0.5 * (lay.r_zona_in - lay.r_ooplasm)
    pieces = int(rng.integers(2, 4)) if rng.random() < cfg.polar_body_fragmented_prob else 1
    for k in range(pieces):
        rk = r * (0.55 + 0.3 * rng.random() if pieces > 1 else 1.0)
        ak = a + (k - (pieces - 1) / 2) * 1.6 * rk / ring
        lay.polar_bodies.append(Blob(lay.centre[0] + ring * np.sin(ak),
                                     lay.centre[1] + ring * np.cos(ak),
                                     rk * rng.uniform(1.0, 1.15), rk, float(ak)))


def _abnormalities(rng: np.random.Generator, lay: OocyteLayout, cfg: OocyteConfig,
                   scale: float) -> None:
    taken: list[Blob] = []

    def place(blobs: list[Blob], r: float, elong: float = 1.0) -> None:
        p = _inside_ooplasm(rng, lay, r * elong, taken)
        if p is not None:
            b = Blob(p[0], p[1], r * elong, r, float(rng.uniform(0, np.pi)))
            blobs.append(b)
            taken.append(b)

    if cfg.label_maps == "paper":  # 1-5 round spots of 2-7 px at 256 x 256
        for _ in range(int(rng.integers(PAPER_SPOTS[0], PAPER_SPOTS[1] + 1))):
            place(lay.inclusions, 0.5 * rng.uniform(*PAPER_SPOT_PX) * scale)
        return
    if rng.random() < cfg.vacuole_prob:
        for _ in range(int(round(_u(rng, cfg.vacuoles)))):
            place(lay.vacuoles, 0.5 * _u(rng, cfg.vacuole_diameter_um) / lay.px_um)
    if rng.random() < cfg.ser_prob:
        for _ in range(int(round(_u(rng, cfg.ser_clusters)))):
            place(lay.ser, 0.5 * _u(rng, cfg.ser_diameter_um) / lay.px_um,
                  elong=rng.uniform(1.0, 1.3))
    if rng.random() < cfg.inclusion_prob:
        for _ in range(int(round(_u(rng, cfg.inclusions)))):
            place(lay.inclusions, max(0.5 * _u(rng, cfg.inclusion_diameter_um) / lay.px_um,
                                      0.8), elong=rng.uniform(1.0, 1.2))
        if rng.random() < cfg.refractile_body_prob:
            place(lay.inclusions, 0.5 * rng.uniform(5.0, 10.0) / lay.px_um,
                  elong=rng.uniform(1.0, 1.25))
    if rng.random() < cfg.central_granularity_prob:
        r = lay.r_ooplasm * rng.uniform(0.3, 0.6)
        lay.granular_centre = Blob(lay.centre[0] + rng.normal(0, 0.1 * lay.r_ooplasm),
                                   lay.centre[1] + rng.normal(0, 0.1 * lay.r_ooplasm),
                                   r * rng.uniform(1.0, 1.2), r, float(rng.uniform(0, np.pi)))


def sample_layout(rng: np.random.Generator, cfg: OocyteConfig) -> OocyteLayout:
    """Draw one oocyte's geometry for a frame of ``cfg.image_size``."""
    h, w = (int(v) for v in cfg.image_size)
    s = min(h, w)
    scale = s / 256.0  # the paper's label maps are 256 x 256
    px_um = cfg.pixel_size_um / scale * float(np.exp(rng.normal(0, cfg.magnification_jitter)))
    r_pl = 0.5 * _u(rng, cfg.ooplasm_diameter_um) / px_um
    r_in = r_pl + _u(rng, cfg.perivitelline_um) / px_um
    r_out = r_in + _u(rng, cfg.zona_thickness_um) / px_um
    off = rng.uniform(-1, 1, 2) * cfg.off_centre * s
    if rng.random() < cfg.cut_by_frame_prob:  # pushed towards one side, partly outside
        a = rng.uniform(0, 2 * np.pi)
        off = np.array([np.sin(a), np.cos(a)]) * (0.5 * s - rng.uniform(0.1, 0.6) * r_out)
    lay = OocyteLayout(shape=(h, w), px_um=px_um, centre=(h / 2 + off[0], w / 2 + off[1]),
                       angle=float(rng.uniform(0, np.pi)),
                       ellipticity=_u(rng, cfg.ellipticity), r_ooplasm=r_pl, r_zona_in=r_in,
                       r_zona_out=r_out)
    _polar_bodies(rng, lay, cfg)
    _abnormalities(rng, lay, cfg, scale)
    return lay
