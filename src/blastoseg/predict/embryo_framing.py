"""Which square of a frame a model sees: the embryo box choice shared by every predictor that
works on a crop around the embryo (amodal instances, Cell-Net counts).

A predictor that mixes in :class:`EmbryoFramed` has a typed card with ``use_localisation``,
``min_confidence`` and ``margin`` (see ``predict/cards.py``) and gets the same framing as
training used: the user's circle when given, else the localiser's box (the whole frame when its
confidence is too low, with its guess kept to show the user), and :meth:`locate` /
:meth:`locate_guess` for the napari framing circle. In a time-lapse the localiser's boxes can
be steadied over neighbouring frames (``steady=``, :mod:`blastoseg.predict.steady_framing`).
"""

from __future__ import annotations

import numpy as np

from blastoseg.predict import localise as _localise
from blastoseg.predict.embryo_box import EmbryoBox
from blastoseg.predict.embryo_spec import EmbryoSpec, FramingError, check_diameter
from blastoseg.predict.framing import to_grey
from blastoseg.predict.steady_framing import SteadyLocaliser, check_window

__all__ = ["EmbryoFramed"]


class EmbryoFramed:
    """Mixin: the embryo box of a frame, from the card's framing settings."""

    card: object

    @property
    def use_localisation(self) -> bool:
        """Localise the embryo in each frame unless told otherwise (the card's choice)."""
        return self.card.use_localisation

    @property
    def min_confidence(self) -> float:
        """Below this localiser confidence the whole frame is used (as in training)."""
        return self.card.min_confidence

    @property
    def margin(self) -> float:
        """Margin around the embryo circle in the crop, as a fraction of its diameter."""
        return self.card.margin

    def _steady(self, frames, specs: list[EmbryoSpec], diameter_px: float | None,
                localise: bool | None, window: int | None) -> SteadyLocaliser | None:
        """The steadied localiser of a time-lapse (``window`` frames), or None when there is
        nothing to steady (one frame, window 0 or 1, localisation off). Frames with a user's
        circle keep it and do not vote."""
        try:
            window = check_window(window)
        except ValueError as exc:
            raise FramingError(str(exc)) from None
        use_loc = self.use_localisation if localise is None else bool(localise)
        if window <= 1 or len(frames) < 2 or not use_loc:
            return None
        radius = None if diameter_px is None else diameter_px / 2.0

        def locate(k: int) -> EmbryoBox:
            grey = to_grey(frames[k], k)
            if specs[k] is not None:
                return EmbryoBox.full_frame(grey.shape)
            return _localise.locate_embryo(grey, radius_px=radius)

        return SteadyLocaliser(len(frames), locate, window, min_confidence=self.min_confidence)

    def _choose(self, grey: np.ndarray, spec: EmbryoSpec, diameter_px: float | None,
                localise: bool | None, steady: SteadyLocaliser | None = None,
                index: int | None = None) -> tuple[EmbryoBox, bool, EmbryoBox | None]:
        """(box used, unsure, the localiser's guess when unsure) for one grey frame
        (``index`` its place in the time-lapse ``steady`` steadies)."""
        shape = tuple(grey.shape[:2])
        if spec is not None:
            if isinstance(spec, EmbryoBox) and spec.image_shape is not None \
                    and tuple(spec.image_shape) != shape:
                raise FramingError(
                    f"the embryo box was made for a {spec.image_shape[0]} x "
                    f"{spec.image_shape[1]} frame, but the frame is {shape[0]} x {shape[1]}")
            try:
                return _localise.choose_embryo_box(grey, embryo=spec), False, None
            except ValueError as exc:
                raise FramingError(str(exc)) from None
        use_loc = self.use_localisation if localise is None else bool(localise)
        if use_loc and steady is not None and index is not None:
            box, raw = _localise.accept_box(steady.box(index), shape, self.min_confidence)
        else:
            box, raw = _localise.choose_embryo_box_and_guess(
                grey, use_localisation=use_loc, min_confidence=self.min_confidence,
                diameter_px=diameter_px)
        if not use_loc:
            return box, False, None
        if box.source == "whole frame":  # low confidence: show the guess, do not hide it
            return box, True, raw
        if box.unsure:
            return box, True, box
        return box, False, None

    def locate(self, frame: np.ndarray, *, diameter_px: float | None = None,
               localise: bool | None = None) -> EmbryoBox:
        """The box this predictor would frame ``frame`` with (no model is run).

        ``frame`` is one 2D frame (any dtype, grey RGB accepted); ``diameter_px`` and
        ``localise`` as in ``predict``. When the localiser's confidence is below
        :attr:`min_confidence` this is the whole-frame box (source ``"whole frame"``); its
        guess is :meth:`locate_guess`. A box with ``.unsure`` set is used but should be shown
        to the user.
        """
        grey = to_grey(frame)
        return self._choose(grey, None, check_diameter(diameter_px), localise)[0]

    def locate_guess(self, frame: np.ndarray, diameter_px: float | None = None) -> EmbryoBox:
        """The localiser's raw result for ``frame``, whatever its confidence (source
        ``"localised"``, or ``"diameter"`` with ``diameter_px``; the whole-frame box only for
        a frame with no contrast at all). Use it to show the user what the localiser saw
        when :meth:`locate` fell back to the whole frame."""
        grey = to_grey(frame)
        d = check_diameter(diameter_px)
        return _localise.locate_embryo(grey, radius_px=None if d is None else d / 2.0)
