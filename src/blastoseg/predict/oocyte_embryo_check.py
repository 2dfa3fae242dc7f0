"""Is this frame an embryo rather than an oocyte? A check run beside the oocyte model.

SMANet labels every round cell it is shown as an oocyte: on real embryo crops it reports an
"ooplasm" every time (docs/models/oocyte.md). It cannot tell, but the blastomere detector can:
``amodal-default`` finds one cell in an oocyte and several in a cleaving embryo. A frame is
said to look like an embryo when the detector finds

* at least ``min_sure`` cells scored >= ``sure_score``, or
* at least ``min_cells`` cells scored >= ``score``,

counting only cells of at least ``min_area_ratio`` of the largest one's area (a polar body or
a fragment is not a blastomere). The numbers were chosen by a criterion on synthetic
validation frames (64 oocytes against 131 synthetic embryos of 2-8 cells: at most 1 false
warning in 64 oocytes, then the most embryos flagged; the real sets' figures were in view;
docs/oocytes.md has the tables). A 1-cell zygote is not told apart: it looks like an oocyte.

The outcome is a warning added to the result, never a refusal: the class map is still made.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["EmbryoCheck", "blastomere_count", "embryo_warnings"]


@dataclass(frozen=True)
class EmbryoCheck:
    """The rule (defaults: chosen on synthetic validation frames, see the module)."""

    model: str = "amodal-default"
    sure_score: float = 0.9
    min_sure: int = 2
    score: float = 0.6
    min_cells: int = 3
    min_area_ratio: float = 0.2

    def looks_like_embryo(self, scores: np.ndarray, areas: np.ndarray) -> bool:
        return (blastomere_count(scores, areas, self.sure_score, self.min_area_ratio)
                >= self.min_sure
                or blastomere_count(scores, areas, self.score, self.min_area_ratio)
                >= self.min_cells)


def blastomere_count(scores: np.ndarray, areas: np.ndarray, min_score: float,
                     min_area_ratio: float) -> int:
    """Cells scored >= ``min_score`` whose area is >= ``min_area_ratio`` x the largest of
    them."""
    scores, areas = np.asarray(scores, float), np.asarray(areas, float)
    kept = areas[scores >= min_score]
    if not len(kept) or kept.max() <= 0:
        return 0
    return int((kept >= min_area_ratio * kept.max()).sum())


def embryo_warnings(frames: Sequence[np.ndarray], device: str = "auto",
                    check: EmbryoCheck | None = None) -> list[str | None]:
    """One warning (or None) per frame: "this looks like an embryo" when the blastomere
    detector finds what :class:`EmbryoCheck` calls several cells."""
    from blastoseg.predict.base import load_predictor

    check = check or EmbryoCheck()
    detector = load_predictor(check.model, device, kind="amodal")
    out: list[str | None] = []
    for frame in frames:
        found = detector.predict(frame)
        if check.looks_like_embryo(found.scores, found.areas):
            n = blastomere_count(found.scores, found.areas, check.score, check.min_area_ratio)
            out.append(f"this looks like an embryo, not an oocyte ({check.model} finds {n} "
                       "cells): the oocyte classes and measurements mean nothing here")
        else:
            out.append(None)
    return out
