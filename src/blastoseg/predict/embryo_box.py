"""Where the embryo is: :class:`EmbryoBox`, the circle every localiser returns and every
framing uses, the notes it carries, and the parsing of a user's circle.

The localisers themselves are in :mod:`blastoseg.predict.localise` (classical, learned and
their combination); a box can also come from a user (``--embryo``, a napari circle).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["CUT_BY_EDGE", "DISAGREE", "MANY_EMBRYOS", "NO_EMBRYO", "UNSTEADY",
           "UNSURE_CONFIDENCE", "EmbryoBox", "parse_circle"]

#: below this confidence the localiser's guess is shown to the user as unsure (checked on the
#: real sets in benchmarks/localise_benchmark.py)
UNSURE_CONFIDENCE = 0.35

NO_EMBRYO = "no embryo found"
MANY_EMBRYOS = "embryos in view"
#: the "auto" localiser's two halves found different circles: shown to the user as unsure
DISAGREE = "the learned and classical localisers disagree"
CUT_BY_EDGE = "embryo cut by the frame edge"
#: steady framing (predict/steady_framing.py): the neighbouring frames' circles do not agree
UNSTEADY = "the circles of neighbouring frames do not agree"


@dataclass(frozen=True)
class EmbryoBox:
    """Where the embryo is: a circle in pixel coordinates of the original frame.

    Attributes
    ----------
    cx, cy
        Centre (x = column, y = row), pixel units (pixel centres at integer coordinates).
    radius
        Radius in pixels (outer face of the zona pellucida).
    confidence
        0..1: contrast of texture inside vs just outside the circle; below ~0.2 the frame
        probably shows no embryo (or the embryo fills it) and the whole frame should be used.
    image_shape
        (H, W) of the frame it refers to.
    source
        Where it came from: "localised" (found by :func:`locate_embryo`), "diameter"
        (localised with the radius fixed by a user's diameter), "given" (a user's circle) or
        "whole frame" (no embryo found, localisation off, or the frame is already a crop).
    note
        What a user should know about this frame's framing, or "": "no embryo found",
        "N embryos in view: framed the most central one", "embryo cut by the frame edge".
    method
        Which localiser found it: "classical", "learned", "auto: ..." (see
        :func:`locate_embryo`), or "" (a user's circle, the whole frame).
    """

    cx: float
    cy: float
    radius: float
    confidence: float = 1.0
    image_shape: tuple[int, int] | None = None
    source: str = "localised"
    note: str = ""
    method: str = ""

    @classmethod
    def full_frame(cls, shape: tuple[int, int], note: str = "") -> EmbryoBox:
        """The box that frames the whole image (its centre, half the long side), confidence 0."""
        h, w = int(shape[0]), int(shape[1])
        return cls(cx=(w - 1) / 2.0, cy=(h - 1) / 2.0, radius=max(h, w) / 2.0,
                   confidence=0.0, image_shape=(h, w), source="whole frame", note=note)

    @classmethod
    def from_circle(cls, cx: float, cy: float, radius: float,
                    image_shape: tuple[int, int] | None = None) -> EmbryoBox:
        """A user's circle (confidence 1, source "given"); raises ValueError for a bad one."""
        cx, cy, radius = float(cx), float(cy), float(radius)
        if not (np.isfinite([cx, cy, radius]).all() and radius > 0):
            raise ValueError(f"an embryo circle needs a finite centre and a positive radius; "
                             f"got cx={cx}, cy={cy}, r={radius}")
        if image_shape is not None:
            h, w = int(image_shape[0]), int(image_shape[1])
            if not (-radius < cx < w - 1 + radius and -radius < cy < h - 1 + radius):
                raise ValueError(f"the embryo circle ({cx:.0f}, {cy:.0f}, r {radius:.0f}) lies "
                                 f"outside the {h} x {w} frame")
            image_shape = (h, w)
        return cls(cx=cx, cy=cy, radius=radius, confidence=1.0, image_shape=image_shape,
                   source="given")

    @property
    def found(self) -> bool:
        """False for the whole-frame fallback (no embryo found or localisation off)."""
        return self.confidence > 0 and self.source != "whole frame"

    @property
    def unsure(self) -> bool:
        """A localised box whose confidence is below :data:`UNSURE_CONFIDENCE`, or one chosen
        among several embryos in view, or one on which the "auto" localiser's two halves
        disagreed, or one steadied over frames whose circles do not agree (show the guess to the
        user; do not trust it silently)."""
        return self.source in ("localised", "diameter") and (
            self.confidence < UNSURE_CONFIDENCE or MANY_EMBRYOS in self.note
            or DISAGREE in self.note or UNSTEADY in self.note)

    def xyxy(self, margin: float = 0.0) -> tuple[float, float, float, float]:
        """Square (x1, y1, x2, y2) in pixel edges around the circle, grown by ``margin`` x radius."""
        half = self.radius * (1.0 + margin)
        x0, y0 = self.cx + 0.5, self.cy + 0.5  # centre in pixel-edge coordinates
        return (x0 - half, y0 - half, x0 + half, y0 + half)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["image_shape"] = None if self.image_shape is None else list(self.image_shape)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> EmbryoBox:
        """The box :meth:`to_dict` wrote (e.g. a result's ``meta["embryo"]``)."""
        shape = d.get("image_shape")
        return cls(**{**d, "image_shape": None if shape is None else tuple(shape)})


def parse_circle(text: str) -> tuple[float, float, float]:
    """``"CX,CY,R"`` (pixels; x = column, y = row) -> (cx, cy, r); ValueError with a usable
    message otherwise (the CLI's ``--embryo``)."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        cx, cy, r = (float(p) for p in parts)
    except ValueError:
        raise ValueError(f"expected the embryo circle as CX,CY,R in pixels (e.g. 250,240,"
                         f"120); got {text!r}") from None
    if not (np.isfinite([cx, cy, r]).all() and r > 0):
        raise ValueError(f"the embryo circle needs finite numbers and a positive radius; "
                         f"got {text!r}")
    return cx, cy, r
