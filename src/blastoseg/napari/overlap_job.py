"""The work behind the "Overlap map" dock widget, without Qt: run an overlap (SE-U-Net) model
on an image layer's data and turn the result into napari LayerData tuples.

:func:`overlap_job` is a generator yielding ``(message, done, total)`` (``done``/``total``
count sliding windows over all frames, so a huge image shows progress while it is tiled and
Cancel stops between window batches) and returning the layer data:

- one image layer per head, ``"<image> <head> probability"`` (float32 in [0, 1]; overlap in
  magma, the cytoplasm in green, the other heads in grey; additive blending; only the overlap
  map visible at first);
- a Labels layer ``"<image> overlap"``: the overlap map thresholded (1 = overlap).

Every layer is tagged ``metadata["blastoseg"] = {"group": <image>, "role": ..., "head": ...,
"model": ..., "threshold": ..., "placement": ...}`` so a re-run updates the same layers and
other widgets do not mistake them for images to segment. A run on the current frame of a
(T, Y, X) stack gives (1, Y, X) layers translated to that frame (see
:class:`blastoseg.napari.result_layers.Placement`), a run on the whole stack (T, Y, X) layers.

CLI twin: ``blastoseg segment overlap IMAGE --out DIR``.
"""

from __future__ import annotations

from collections.abc import Callable, Generator

import numpy as np

from blastoseg.io.frames import as_frames, frame_range_of
from blastoseg.napari.result_layers import Placement
from blastoseg.progress import with_message

__all__ = [
    "HEAD_COLORMAPS",
    "LABELS_ROLE",
    "PROBABILITY_ROLE",
    "overlap_job",
    "overlap_labels_data",
    "probability_layer_name",
]

#: metadata roles of the layers made here (not in result_layers.ROLES: a segmentation re-run
#: leaves them alone)
PROBABILITY_ROLE = "overlap_probability"
LABELS_ROLE = "overlap_labels"
HEAD_COLORMAPS = {"overlap": "magma", "cytoplasm": "green", "nuclei": "gray",
                  "border": "gray", "background": "gray"}
#: colour of the thresholded overlap pixels in the Labels layer
OVERLAP_COLOR = "magenta"


def probability_layer_name(image: str, head: str) -> str:
    return f"{image} {head} probability"


def overlap_labels_name(image: str) -> str:
    return f"{image} overlap"


def _meta(group: str, role: str, placement: Placement, extra: dict) -> dict:
    return {"blastoseg": {**extra, "group": group, "role": role,
                          "placement": placement.to_dict()}}


def overlap_labels_data(prob: np.ndarray, threshold: float) -> np.ndarray:
    """The thresholded overlap map as uint8 labels (1 = overlap), ``prob >= threshold`` like
    :attr:`blastoseg.predict.overlap.OverlapResult.overlap_mask`."""
    return (np.asarray(prob) >= float(threshold)).astype(np.uint8)


def overlap_job(data, axes: str, frame_range: tuple[int, int],
                get_predictor: Callable[[], object], *, name: str = "image",
                threshold: float | None = None, rgb: bool = False,
                placement: Placement | None = None
                ) -> Generator[tuple[str, int, int], None, list[tuple]]:
    """Load the model (``get_predictor()``, called here so it runs in the worker thread) and
    compute the overlap maps of ``data``; yields ``(message, done, total)``.

    Parameters
    ----------
    data
        The image layer's data: (Y, X), (Y, X, 3/4) with ``rgb``, (T, Y, X) or (T, Y, X, 3/4).
    axes
        ``""`` or ``"T"`` (see :func:`blastoseg.io.frames.image_axes`).
    frame_range
        ``(t0, t1)``: the frames of a (T, Y, X) stack to run on (``(t, t + 1)`` for the
        current frame); ignored for a 2D frame.
    get_predictor
        Returns an :class:`~blastoseg.predict.overlap.OverlapPredictor` (or anything with
        ``iter_predict``, ``heads``, ``thresholds``, ``device_name`` and ``entry.name``).
    name
        The image layer's name: the layers are called ``"<name> <head> probability"`` and
        ``"<name> overlap"``.
    threshold
        Overlap threshold; None takes the model's (its card's, 0.3 by default).
    rgb
        The data has a trailing colour axis.
    placement
        Where the layers sit (scale, translate of the image layer; ``first_frame`` is set
        from ``frame_range``).

    Returns
    -------
    list of (data, kwargs, layer_type)
        The probability image layers in the model's head order, then the overlap Labels layer
        (absent when the model has no overlap head).
    """
    from blastoseg.predict.overlap import OverlapResult  # torch: loaded with the job

    t0, t1 = frame_range_of(data, axes, frame_range, "overlap maps")
    n = t1 - t0
    frames, _ = as_frames(data if axes == "" else data[t0:t1], rgb=rgb)
    yield "loading the model", 0, n
    predictor = get_predictor()
    device = predictor.device_name
    message = f"computing overlap maps on {device}" + (f" ({n} frames)" if n > 1 else "")
    yield message, 0, n
    results = yield from with_message(predictor.iter_predict(frames), message)
    # one result per frame; a stack's layers take (T, H, W) maps
    result = OverlapResult.from_frames(results) if axes == "T" else results[0]
    thr = float(predictor.thresholds.get("overlap", 0.3) if threshold is None else threshold)
    if placement is None:
        placement = Placement(axes=axes)
    placement = Placement(axes=axes, first_frame=t0, scale=placement.scale,
                          translate=placement.translate)
    common = placement.layer_kwargs()
    extra = {"source_image": name, "model": predictor.entry.name, "device": device,
             "threshold": thr}

    def layer_array(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a)
        return a[None] if axes == "T" and a.ndim == 2 else a  # (1, H, W) on its frame

    out: list[tuple] = []
    for head, prob in result.probabilities.items():
        out.append((layer_array(np.asarray(prob, dtype=np.float32)), {
            **common, "name": probability_layer_name(name, head),
            "colormap": HEAD_COLORMAPS.get(head, "gray"), "blending": "additive",
            "contrast_limits": (0.0, 1.0), "visible": head == "overlap",
            "opacity": 0.8 if head == "overlap" else 0.6,
            "metadata": _meta(name, PROBABILITY_ROLE, placement, {**extra, "head": head})},
            "image"))
    if "overlap" in result.probabilities:
        labels = layer_array(overlap_labels_data(result.probabilities["overlap"], thr))
        out.append((labels, {
            **common, "name": overlap_labels_name(name), "opacity": 0.6,
            "colormap": {None: "transparent", 0: "transparent", 1: OVERLAP_COLOR},
            "metadata": _meta(name, LABELS_ROLE, placement, {**extra, "head": "overlap"})},
            "labels"))
    return out
