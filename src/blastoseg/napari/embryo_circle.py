"""The embryo circle of the Segment widget, without Qt: EmbryoBox <-> napari Shapes ellipse,
the per-frame framing state (what the localiser found, what the user drew) and the
diameter field's unit conversion.

A circle is stored in a Shapes layer that lines up with the image layer (same scale and
translate on Y and X), so shape coordinates are the image's pixel coordinates: a vertex is
``(*lead, row, column)`` with ``lead`` the frame index for a time-lapse (the circle lives on
that frame only) and a focal-plane coordinate 0 for an image with planes (that axis of the
Shapes layer is stretched over all planes, see :func:`shapes_placement`, so the circle shows
whatever plane is displayed).

No model logic here: the boxes come from :mod:`blastoseg.predict.localise` or from the
results' metadata, and go back to the predictor as its ``embryo=`` argument.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import numpy as np

from blastoseg.errors import BlastosegError
from blastoseg.predict.embryo_box import EmbryoBox

__all__ = [
    "COLOURS",
    "MIN_CONFIDENCE",
    "FramingState",
    "circle_of_shape",
    "diameter_in_pixels",
    "ellipse_vertices",
    "is_unsure",
    "lead_of",
    "shapes_placement",
]

#: edge colour of the circle by kind: found by the localiser, unsure (the localiser's guess,
#: or the whole frame when it found nothing), drawn by the user for one frame or the stack
COLOURS = {"found": "#00e5ff", "unsure": "#ff7f00", "given": "#7cff3a", "whole stack": "#7cff3a"}
#: below this confidence the predictor frames the whole frame instead of the localiser's
#: circle (its default; a model card may set its own ``framing.min_confidence``)
MIN_CONFIDENCE = 0.15


def is_unsure(box: EmbryoBox, min_confidence: float = MIN_CONFIDENCE) -> bool:
    """True for a localiser result the user must check: low confidence, or no embryo found
    (the predictor would fall back to the whole frame)."""
    return box.source != "given" and (box.unsure or not box.found
                                      or box.confidence < min_confidence)


# --- circle <-> shape ---------------------------------------------------------------------------

def ellipse_vertices(box: EmbryoBox | tuple[float, float, float],
                     lead: Sequence[float] = ()) -> np.ndarray:
    """The napari ellipse (4 corners of its bounding box, ``(*lead, row, col)``) of a circle."""
    cx, cy, r = ((box.cx, box.cy, box.radius) if isinstance(box, EmbryoBox) else box)
    corners = [(cy - r, cx - r), (cy - r, cx + r), (cy + r, cx + r), (cy + r, cx - r)]
    return np.array([[*lead, y, x] for y, x in corners], dtype=float)


def _polygon_area_centroid(yx: np.ndarray) -> tuple[float, float, float]:
    y, x = yx[:, 0], yx[:, 1]
    cross = x * np.roll(y, -1) - np.roll(x, -1) * y
    area = 0.5 * cross.sum()
    if abs(area) < 1e-9:
        return 0.0, float(y.mean()), float(x.mean())
    cx = float(((x + np.roll(x, -1)) * cross).sum() / (6 * area))
    cy = float(((y + np.roll(y, -1)) * cross).sum() / (6 * area))
    return abs(float(area)), cy, cx


def circle_of_shape(vertices: np.ndarray, shape_type: str = "ellipse"
                    ) -> tuple[tuple[float, ...], float, float, float]:
    """``(lead, cx, cy, r)`` of the circle with the same centre and area as a drawn shape.

    An ellipse (possibly rotated, given as the 4 corners of its box) of semi-axes a, b gives
    r = sqrt(a b); a rectangle or polygon the circle of its area around its centroid.
    ``lead`` holds the shape's coordinates before (row, col), rounded to whole indices.
    Raises ValueError for a shape without area (a line or a path).
    """
    v = np.asarray(vertices, dtype=float)
    if v.ndim != 2 or v.shape[1] < 2 or len(v) < 3:
        raise ValueError("draw an ellipse (or a rectangle, a polygon) around the embryo")
    lead = tuple(float(np.round(c)) for c in v[0, :-2])
    yx = v[:, -2:]
    if shape_type == "ellipse":
        a = 0.5 * float(np.hypot(*(yx[1] - yx[0])))
        b = 0.5 * float(np.hypot(*(yx[2] - yx[1])))
        cy, cx = (float(c) for c in yx.mean(axis=0))
        r = math.sqrt(a * b)
    elif shape_type in ("rectangle", "polygon"):
        area, cy, cx = _polygon_area_centroid(yx)
        r = math.sqrt(area / math.pi)
    else:
        raise ValueError(f"a {shape_type} has no area: draw an ellipse around the embryo")
    if not r > 0:
        raise ValueError("the circle drawn has no area: draw an ellipse around the embryo")
    return lead, cx, cy, r


def lead_of(axes: str, t: int) -> tuple[float, ...]:
    """Shape coordinates before (row, col) for frame ``t`` of an image with ``axes``."""
    return {"": (), "T": (float(t),), "Z": (0.0,), "TZ": (float(t), 0.0)}[axes]


def shapes_placement(axes: str, n_z: int, scale: Sequence[float], translate: Sequence[float]
                     ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(scale, translate) of the Shapes layer for an image layer with these axes, scale and
    translate (RGB channels excluded): the same on T, Y and X; the focal-plane axis
    stretched so that plane coordinate 0 covers all ``n_z`` planes."""
    scale = [float(s) for s in scale]
    translate = [float(t) for t in translate] or [0.0] * len(scale)
    if "Z" in axes:
        z = axes.index("Z")
        translate[z] += 0.5 * (n_z - 1) * scale[z]
        scale[z] *= n_z
    return tuple(scale), tuple(translate)


# --- diameter ------------------------------------------------------------------------------------

def diameter_in_pixels(value: float, unit: str, *, scale: float = 1.0, scale_unit=None,
                       pixel_size_um: float | None = None) -> float | None:
    """The embryo diameter field in pixels; None when it is 0 (automatic).

    ``unit`` is "px" or "um". For um the pixel size comes from the image's
    ``pixel_size_um`` metadata, else from the layer's scale (in its units when they are a
    length, taken as um per pixel otherwise); a layer with neither raises a
    :class:`BlastosegError` that tells the user to give the diameter in px.
    """
    value = float(value)
    if value <= 0:
        return None
    if unit == "px":
        return value
    if unit != "um":
        raise BlastosegError(f"unknown diameter unit {unit!r}: use 'px' or 'um'")
    size = float(pixel_size_um) if pixel_size_um else None
    if size is None and scale_unit is not None and \
            str(getattr(scale_unit, "dimensionality", "")) == "[length]":
        size = float((float(scale) * scale_unit).to("micrometer").magnitude)
    elif size is None and float(scale) != 1.0:
        size = float(scale)
    if not size or size <= 0:
        raise BlastosegError(
            "the image has no pixel size, so a diameter in um cannot be converted: give the "
            "diameter in px, or set the pixel size (the Measure widget's 'pixel size', or the "
            "image layer's scale)")
    return value / size


# --- the framing of every frame --------------------------------------------------------------------

@dataclass
class FramingState:
    """Where the embryo is, frame by frame, for one image layer.

    ``auto`` holds what the localiser found (or its guess when unsure), per frame; ``user``
    the circles the user drew or moved for single frames; ``stack`` the user's circle for
    the whole stack; ``confirmed`` the frames whose unsure guess the user accepted
    ("Segment anyway"). A user circle for a frame wins over the stack's, which wins over the
    localiser's.
    """

    image_shape: tuple[int, int]
    n_frames: int = 1
    min_confidence: float = MIN_CONFIDENCE
    auto: dict[int, EmbryoBox] = field(default_factory=dict)
    user: dict[int, EmbryoBox] = field(default_factory=dict)
    stack: EmbryoBox | None = None
    confirmed: set[int] = field(default_factory=set)
    flagged: set[int] = field(default_factory=set)  # frames a run reported as unsure

    def circle(self, t: int, localise: bool = True) -> tuple[EmbryoBox | None, str | None]:
        """(box, kind) shown on frame ``t``; kind is "given", "whole stack", "found",
        "unsure" or None (nothing to show: not located yet, or localisation off)."""
        if t in self.user:
            return self.user[t], "given"
        if self.stack is not None:
            return self.stack, "whole stack"
        if not localise or t not in self.auto:
            return None, None
        box = self.auto[t]
        return box, "unsure" if is_unsure(box, self.min_confidence) or t in self.flagged else "found"

    def set_auto(self, t: int, box: EmbryoBox) -> None:
        """What the localiser found on frame ``t`` (a fresh look replaces a run's flag)."""
        self.auto[t] = box
        self.flagged.discard(t)

    def set_user(self, t: int, box: EmbryoBox, whole_stack: bool) -> None:
        """A circle the user drew or moved on frame ``t``, for that frame or the stack."""
        if whole_stack:
            self.stack = box
            self.user.clear()
        else:
            self.user[t] = box
        self.confirmed.discard(t)

    def clear_user(self, t: int | None = None) -> None:
        """Back to automatic: on frame ``t`` (its own circle), or everywhere (None)."""
        if t is None:
            self.user.clear()
            self.stack = None
            self.confirmed.clear()
        else:
            self.user.pop(t, None)
            self.confirmed.discard(t)

    def needs_confirmation(self, t: int, localise: bool = True) -> bool:
        """The localiser is unsure on frame ``t``, no user circle frames it and the user has
        not accepted the guess."""
        box, kind = self.circle(t, localise)
        return kind == "unsure" and t not in self.confirmed

    def embryo_for(self, frames: range, localise: bool = True
                   ) -> EmbryoBox | list[EmbryoBox | None] | None:
        """The predictor's ``embryo=`` for these frames: None (localise every frame), one box
        (the stack's circle), or one entry per frame (None where the predictor localises)."""
        per: list[EmbryoBox | None] = []
        for t in frames:
            if t in self.user:
                per.append(self.user[t])
            elif self.stack is not None:
                per.append(self.stack)
            elif localise and t in self.confirmed and t in self.auto:
                guess = self.auto[t]
                per.append(guess if not guess.found else EmbryoBox.from_circle(
                    guess.cx, guess.cy, guess.radius, self.image_shape))
            else:
                per.append(None)
        if all(b is None for b in per):
            return None
        if self.stack is not None and all(b is self.stack for b in per):
            return self.stack
        return per

    def update_from_result(self, t: int, meta: dict) -> None:
        """Record what a run used on frame ``t`` (its result's ``meta``): the localiser's box,
        or its guess where it was unsure. User circles are left as they are."""
        used = meta.get("embryo")
        if not used or used.get("source") == "given":
            return
        unsure = bool(meta.get("embryo_unsure"))
        guess = meta.get("embryo_guess") if unsure else None
        self.auto[t] = box_from_dict(guess or used)
        if unsure:
            self.flagged.add(t)
        else:
            self.flagged.discard(t)


def box_from_dict(d: dict) -> EmbryoBox:
    """An EmbryoBox from ``EmbryoBox.to_dict()`` (a result's ``meta["embryo"]``)."""
    keys = {f.name for f in fields(EmbryoBox)}
    d = {k: v for k, v in d.items() if k in keys}
    if d.get("image_shape") is not None:
        d["image_shape"] = tuple(int(s) for s in d["image_shape"])
    return EmbryoBox(**d)
