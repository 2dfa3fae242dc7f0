"""One embryo, one place: the localiser's circles steadied over a time-lapse.

An embryo in a culture well hardly moves between two frames of a time-lapse (micrometres in
minutes), but a localiser run on each frame alone jitters: on synthetic time-lapses the
circle's centre jumps by up to 20 % of the radius from one frame to the next
(docs/localisation.md#steady-framing-over-a-time-lapse), and a frame now and then frames a
cluster of debris or the well's rim. The model then sees the embryo at a different scale and
place in neighbouring frames, and the counts flicker for a reason that is not the embryo.

:class:`SteadyLocaliser` localises every frame once, in order, and gives frame ``t`` the
median circle (centre and radius separately) of the frames found within ``window // 2``
frames of it: a running median, so one wrong frame in a window changes nothing, while a slow
drift is followed. Frames where no embryo was found do not vote. The box keeps the frame's
own notes that concern the frame (cut by the edge, several embryos) and is flagged unsure
(:data:`~blastoseg.predict.embryo_box.UNSTEADY`) when fewer than half of the voters agree with
the median (centre within 10 % of the radius, radius within 10 %): then the localiser is
not sure where the embryo is over these frames, and the user is shown it.

Only for frames of one embryo in time order (a time-lapse); a folder of different embryos
must not be steadied. The frames are localised one window ahead of the frame being framed,
so a stream needs no pass over the whole time-lapse first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from blastoseg.predict.embryo_box import CUT_BY_EDGE, MANY_EMBRYOS, UNSTEADY, EmbryoBox

__all__ = ["DEFAULT_WINDOW", "TIMELINE_STEADY", "SteadyLocaliser", "check_window",
           "steady_box"]

#: frames in the running median by default (the frame and four on each side: 2-3 hours of a
#: time-lapse taken every 15-20 minutes)
DEFAULT_WINDOW = 9

#: the window ``blastoseg timeline`` and the "Count and timeline" widget use by default (a
#: timeline is a time-lapse of one embryo by definition)
TIMELINE_STEADY = 0

#: a voter agrees with the median when its centre and radius are both this close (x radius)
AGREE = 0.10


def check_window(window: int | None) -> int:
    """A window of frames (0, 1 or None: off) as a validated int; ValueError otherwise."""
    if window is None:
        return 0
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 0:
        raise ValueError(f"the steady-framing window is a number of frames >= 0 (0 or 1: "
                         f"off); got {window!r}")
    return int(window)


def steady_box(boxes: list[EmbryoBox], own: EmbryoBox, min_confidence: float = 0.0
               ) -> EmbryoBox:
    """The median circle of ``boxes`` (the window's localised boxes) for the frame whose own
    box is ``own``; ``own`` itself when none of them found an embryo with at least
    ``min_confidence`` (frames a predictor would frame whole do not vote)."""
    found = [b for b in boxes if b.found and b.confidence >= min_confidence]
    if not found:
        return own
    circles = np.array([(b.cx, b.cy, b.radius) for b in found], float)
    cx, cy, r = np.median(circles, axis=0)
    agree = (np.hypot(circles[:, 0] - cx, circles[:, 1] - cy) <= AGREE * r) & (
        np.abs(circles[:, 2] - r) <= AGREE * r)
    # notes about this frame stay; a note about the localisers' disagreement in one frame
    # is answered by the vote
    notes = [n for n in own.note.split("; ") if n and (CUT_BY_EDGE in n or MANY_EMBRYOS in n)]
    if agree.sum() * 2 < len(found):
        notes.append(UNSTEADY)
    method = own.method or found[0].method
    return replace(own if own.found else found[0], cx=float(cx), cy=float(cy),
                   radius=float(r),
                   confidence=float(np.median([b.confidence for b in found])),
                   note="; ".join(notes),
                   method=f"{method}, steadied over {len(found)} frames")


class SteadyLocaliser:
    """Steadied boxes of a sequence of frames, localised lazily one window ahead.

    Parameters
    ----------
    n_frames
        Length of the time-lapse.
    locate
        ``locate(t)`` -> the localiser's own box for frame ``t`` (called once per frame, in
        increasing ``t``).
    window
        Frames in the running median (the frame in the middle); 0 or 1 is the frame alone.
    min_confidence
        Boxes below this confidence do not vote (the predictor's own threshold).
    """

    def __init__(self, n_frames: int, locate: Callable[[int], EmbryoBox],
                 window: int = DEFAULT_WINDOW, min_confidence: float = 0.0) -> None:
        self.min_confidence = float(min_confidence)
        self.n_frames = int(n_frames)
        self.half = max(check_window(window), 1) // 2
        self._locate = locate
        self._boxes: dict[int, EmbryoBox] = {}
        self._next = 0

    def box(self, t: int) -> EmbryoBox:
        """Frame ``t``'s steadied box (frames must be asked for in increasing order, give or
        take the window: boxes older than the window are forgotten)."""
        if not 0 <= t < self.n_frames:
            raise IndexError(f"frame {t} of a {self.n_frames}-frame time-lapse")
        lo, hi = max(t - self.half, 0), min(t + self.half, self.n_frames - 1)
        self._fill(hi)
        for old in [k for k in self._boxes if k < lo - self.half]:
            del self._boxes[old]  # a stream of any length keeps two windows at most
        return steady_box([self._boxes[k] for k in range(lo, hi + 1)], self._boxes[t],
                          self.min_confidence)

    def _fill(self, t: int) -> None:
        while self._next <= t:
            self._boxes[self._next] = self._locate(self._next)
            self._next += 1
