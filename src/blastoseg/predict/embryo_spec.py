"""How a caller tells the amodal predictor where the embryo is: per-frame framing specs.

``embryo=`` of :meth:`blastoseg.predict.amodal.AmodalPredictor.predict` (and the CLI's
``--embryo``) becomes one :data:`EmbryoSpec` per frame here, and ``diameter_px=`` is checked;
anything unusable is a :class:`FramingError` with a message a person can act on.
"""

from __future__ import annotations

import numbers

import numpy as np

from blastoseg.errors import BlastosegError
from blastoseg.predict.embryo_box import EmbryoBox, parse_circle

__all__ = ["EmbryoSpec", "FramingError", "check_diameter", "per_frame_embryos"]

#: one frame's framing: None (localise it), an :class:`EmbryoBox` or a (cx, cy, r) circle in
#: pixels (x = column, y = row)
EmbryoSpec = EmbryoBox | tuple[float, float, float] | None


class FramingError(BlastosegError, ValueError):
    """An embryo circle, a diameter or a per-frame list of circles the predictor cannot use."""


def _is_circle(value: object) -> bool:
    """(cx, cy, r): a sequence of exactly three real numbers (not an EmbryoBox, not None)."""
    if isinstance(value, np.ndarray):
        return value.shape == (3,) and value.dtype.kind in "iuf"
    if isinstance(value, (tuple, list)):
        return len(value) == 3 and all(
            isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value)
    return False


def _one_spec(value: object, where: str) -> EmbryoSpec:
    if value is None or isinstance(value, EmbryoBox):
        return value
    if isinstance(value, str):
        try:
            return parse_circle(value)
        except ValueError as exc:
            raise FramingError(f"{where}: {exc}") from None
    if _is_circle(value):
        cx, cy, r = (float(v) for v in value)
        if not (np.isfinite([cx, cy, r]).all() and r > 0):
            raise FramingError(f"{where}: an embryo circle needs a finite centre and a positive "
                               f"radius; got cx={cx}, cy={cy}, r={r}")
        return cx, cy, r
    raise FramingError(f"{where}: expected None, an EmbryoBox or a (cx, cy, r) circle in "
                       f"pixels; got {value!r}")


def per_frame_embryos(embryo: object, n_frames: int) -> list[EmbryoSpec]:
    """One framing per frame from what a caller gave as ``embryo=``.

    Parameters
    ----------
    embryo
        None (localise every frame); one :class:`EmbryoBox`, (cx, cy, r) circle or
        ``"CX,CY,R"`` string (used for every frame); or a sequence with exactly one entry per
        frame, each None, an EmbryoBox or a circle (a (T, 3) array works too).
    n_frames
        Number of frames.

    Raises
    ------
    FramingError
        A sequence of the wrong length, or an entry that is not a usable circle.
    """
    if embryo is None or isinstance(embryo, (EmbryoBox, str)) or _is_circle(embryo):
        one = _one_spec(embryo, "embryo")
        return [one] * n_frames
    try:
        items = list(embryo)  # type: ignore[call-overload]
    except TypeError:
        raise FramingError(f"embryo: expected None, an EmbryoBox, a (cx, cy, r) circle or one "
                           f"of those per frame; got {embryo!r}") from None
    if len(items) != n_frames:
        raise FramingError(
            f"embryo: got {len(items)} circle(s) for {n_frames} frame(s); give exactly one "
            "entry per frame (None to localise that frame), or one EmbryoBox / (cx, cy, r) "
            "for every frame")
    return [_one_spec(v, f"embryo[{i}]") for i, v in enumerate(items)]


def check_diameter(diameter_px: float | None) -> float | None:
    if diameter_px is None:
        return None
    try:
        d = float(diameter_px)
    except (TypeError, ValueError):
        raise FramingError(f"diameter_px must be a number of pixels; got {diameter_px!r}"
                           ) from None
    if not (np.isfinite(d) and d > 0):
        raise FramingError(f"the embryo diameter must be a positive number of pixels; got "
                           f"{diameter_px!r}")
    return d
