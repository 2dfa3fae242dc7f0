"""The work behind the "Oocyte inclusions" dock widget, without Qt: run an oocyte (SMANet)
model on an image layer's data and make the class-map Labels layer.

:func:`oocyte_job` is a generator yielding ``(message, done, total)`` (frames) and returning
an :class:`OocyteRun`: the results (class maps and measurements, one per frame) and one
Labels layer ``"<image>: oocyte classes"`` coloured per class
(:data:`blastoseg.io.oocyte_classes.CLASS_COLORS`, the legend's colours), tagged
``metadata["blastoseg"] = {"group": <image>, "role": "oocyte_classes", ...}`` so a re-run
replaces it. The class map can be corrected with napari's label tools (paint with the class
id shown in the legend). CLI twin: ``blastoseg segment oocyte IMAGE --out DIR``.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field

import numpy as np

from blastoseg.io.frames import as_frames, frame_range_of
from blastoseg.io.oocyte_classes import CLASS_COLORS, CLASS_NAMES
from blastoseg.napari.result_layers import Placement
from blastoseg.progress import with_message

__all__ = ["CLASSES_ROLE", "OocyteRun", "class_colormap", "legend_html", "oocyte_job"]

CLASSES_ROLE = "oocyte_classes"


@dataclass
class OocyteRun:
    """What a run gives the widget: ``results`` (one OocyteResult per frame run, the first
    being stack frame ``first_frame``), the layers to add and the model's name."""

    results: list
    first_frame: int
    layers: list[tuple] = field(default_factory=list)
    model: str = ""


def class_colormap() -> dict:
    """napari Labels colours: class id -> RGBA (background transparent)."""
    return {None: (0, 0, 0, 0), **{k: tuple(v) for k, v in CLASS_COLORS.items()}}


def legend_html() -> str:
    """The legend: a coloured square, the id (the label to paint with) and the class name."""
    rows = []
    for k, name in CLASS_NAMES.items():
        if k == 0:
            continue
        r, g, b, _ = (int(255 * c) for c in CLASS_COLORS[k])
        rows.append(f"<span style='color:rgb({r},{g},{b})'>&#9632;</span> {k} "
                    f"{name.replace('_', ' ')}")
    return "<br>".join(rows)


def oocyte_job(data, axes: str, frame_range: tuple[int, int],
               get_predictor: Callable[[], object], *, name: str = "image", rgb: bool = False,
               placement: Placement | None = None, pixel_size_um: float | None = None
               ) -> Generator[tuple[str, int, int], None, OocyteRun]:
    """Load the model (``get_predictor()``, in the worker thread) and segment the frames
    ``frame_range`` of ``data`` ((Y, X) or (T, Y, X), a colour axis with ``rgb``)."""
    t0, t1 = frame_range_of(data, axes, frame_range, "oocyte segmentation")
    frames, _ = as_frames(data if axes == "" else data[t0:t1], rgb=rgb)
    n = t1 - t0
    yield "loading the model", 0, n
    predictor = get_predictor()
    message = f"segmenting oocytes on {predictor.device_name}" + (f" ({n} frames)" if n > 1
                                                                   else "")
    yield message, 0, n
    results = yield from with_message(predictor.iter_predict(frames, pixel_size_um=pixel_size_um), message)
    for t, r in enumerate(results):
        r.meta["frame"] = t0 + t
    placement = Placement(axes=axes, first_frame=t0,
                          scale=(placement or Placement(axes=axes)).scale,
                          translate=(placement or Placement(axes=axes)).translate)
    labels = np.stack([r.labels for r in results]) if axes == "T" else results[0].labels
    layer = (labels, {
        **placement.layer_kwargs(), "name": f"{name}: oocyte classes", "opacity": 0.6,
        "colormap": class_colormap(),
        "metadata": {"blastoseg": {"group": name, "role": CLASSES_ROLE,
                                   "model": predictor.entry.name,
                                   "placement": placement.to_dict()}}}, "labels")
    return OocyteRun(results=results, first_frame=t0, layers=[layer],
                     model=predictor.entry.name)
