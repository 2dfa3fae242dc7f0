"""Why an amodal result has no cells, and what to try: one line for the CLI and the widgets.

A frame with "0 cells" and no word why left users guessing (issue 18 item 11: a 2000 x 2000
field). The result's ``meta`` records how the frame was framed (:mod:`blastoseg.predict.amodal`:
``"embryo"``, the :class:`~blastoseg.predict.embryo_box.EmbryoBox` used; ``"embryo_box"``, the
crop and its scale; ``"embryo_unsure"``), which is nearly always the reason: no embryo was
found and the whole frame, shrunk to the model's working size, left the embryo too small; or
localisation was off on a frame that is not a crop; or the localiser guessed. Otherwise the
embryo was framed and no detection passed the score threshold.
"""

from __future__ import annotations

from blastoseg.predict.framing import DEFAULT_MARGIN

__all__ = ["smallest_visible_embryo_px", "why_no_cells"]

#: an embryo shown to the model at less than this fraction of the size it was trained at
#: is too small to segment (training crops fill the working size with the embryo)
_MIN_RELATIVE_SIZE = 0.5


def smallest_visible_embryo_px(scale: float, working_size: int,
                               margin: float = DEFAULT_MARGIN) -> float:
    """The smallest embryo diameter (original pixels) the model can still segment when the
    frame is resampled by ``scale`` (model pixels per original pixel) to ``working_size``."""
    trained_diameter = working_size / (1.0 + margin)  # model pixels, as in training crops
    return _MIN_RELATIVE_SIZE * trained_diameter / max(float(scale), 1e-9)


#: what to try, in the words of the command line and of the napari widget
_TRY = {
    "cli": {"frame it": "give the embryo's circle (--embryo CX,CY,R) or its diameter "
                        "(--diameter), or crop the image around the embryo",
            "localise": "drop --no-localise or give the embryo's circle (--embryo CX,CY,R)",
            "circle": "check the framing line above and give the embryo's circle "
                      "(--embryo CX,CY,R)",
            "threshold": "check the embryo's circle, or lower --threshold"},
    "napari": {"frame it": "draw the embryo's circle, give its diameter, or crop the image "
                           "around the embryo",
               "localise": "untick 'frames are already crops' or draw the embryo's circle",
               "circle": "check the embryo circle, move or draw it, and segment again",
               "threshold": "check that the circle frames the embryo, or lower the score "
                            "threshold"},
}


def why_no_cells(meta: dict | None, score_threshold: float | None = None,
                 advice: str = "cli") -> str:
    """Why a frame has no cells and what to try, from its result's ``meta`` (one line, no
    trailing full stop); ``advice``: "cli" or "napari", whose words the advice uses."""
    try_ = _TRY[advice]
    meta = meta or {}
    box = meta.get("embryo") or {}
    crop = meta.get("embryo_box") or {}
    shape = box.get("image_shape") or crop.get("image_shape")
    frame = f"the {shape[0]} x {shape[1]} frame" if shape else "the frame"
    scale, size = crop.get("scale"), crop.get("size")
    shrunk = ""
    if scale and size and scale < 1:
        shrunk = (f", shrunk {1 / scale:.1f} times to the model's {size} px: an embryo under "
                  f"about {smallest_visible_embryo_px(scale, size):.0f} px across is too "
                  "small at that scale")
    source = box.get("source")
    if source == "whole frame" and "no embryo" in str(box.get("note", "")):
        return (f"no embryo was found in {frame}, so the model saw the whole frame{shrunk}. "
                f"Try: {try_['frame it']}")
    if source == "whole frame":
        return (f"the model saw the whole of {frame} (localisation off: the frames were taken "
                f"for crops around the embryo){shrunk}. If the embryo fills only part of the "
                f"frame: {try_['localise']}")
    where = ""
    if box:
        where = (f" framed at ({box.get('cx', 0):.0f}, {box.get('cy', 0):.0f}), radius "
                 f"{box.get('radius', 0):.0f} px")
    if meta.get("embryo_unsure"):
        return (f"the localiser was unsure where the embryo is (confidence "
                f"{float(box.get('confidence', 0)):.2f}); the embryo{where} showed no cell. "
                f"Try: {try_['circle']}")
    threshold = (f" above the score threshold {score_threshold:g}"
                 if score_threshold is not None else "")
    return f"no cell scored{threshold} in the embryo{where}. Try: {try_['threshold']}"
