"""The work behind the "Segment brightfield cells" dock widget, without Qt: run a brightfield
(SparseSEU-Net) model on an image layer's data, turn the overlapping whole-cell instances into
napari LayerData tuples, measure the cells, and export a (corrected) result.

:func:`brightfield_job` is a generator yielding ``(message, done, total)`` (``done``/``total``
count the model's network passes over all frames, so Cancel stops between them) and returning
a dict with the layer data:

- the instance layers of :class:`~blastoseg.napari.result_layers.ResultLayerBuilder` (group =
  the image's name): ``"<image>: amodal k"``, the cells packed into the fewest Labels layers
  (contours; edit them with napari's label tools) and ``"<image>: centroids"``. The builder's
  ``occlusion`` and ``visible`` layers are left out: brightfield cells are transparent, so a
  cell has no "visible part", and the model's overlap map is the layer below;
- ``"<image> nuclei probability"`` and ``"<image> overlap probability"``: the SE-U-Net heads'
  maps (float32 in [0, 1], as from the "Overlap map" widget, but tinting the image magenta /
  cyan where high instead of adding magma), when the model has them;

plus the measurements (:func:`brightfield_measurements`) and the cell count per frame.

CLI twin: ``blastoseg segment brightfield INPUT --out DIR``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path

import numpy as np

from blastoseg.errors import DatasetFormatError, InvalidImageError
from blastoseg.instances import FrameInstances
from blastoseg.napari.layer_conversion import _label_values
from blastoseg.napari.overlap_job import _grey, probability_layer_name
from blastoseg.napari.result_layers import Placement, ResultLayerBuilder

__all__ = [
    "CATEGORY",
    "MAP_ROLE",
    "MEASUREMENT_COLUMNS",
    "brightfield_export_exists",
    "brightfield_job",
    "brightfield_measurements",
    "brightfield_model_names",
    "card_threshold",
    "export_brightfield",
    "frame_counts",
]

CATEGORY = "cell"
DEFAULT_MODEL = "brightfield-default"
DEFAULT_THRESHOLD = 0.3
#: metadata role of the probability layers made here (the "Overlap map" widget has its own,
#: so neither widget touches the other's layers)
MAP_ROLE = "brightfield_probability"
MAP_KEYS = ("nuclei", "overlap")
#: colour maps of the probability layers: transparent at 0, so they tint a bright brightfield
#: image where the probability is high (the "Overlap map" widget's additive magma would wash
#: it out)
MAP_COLORMAPS = {
    "overlap": {"name": "overlap (magenta)", "colors": [[1, 0, 1, 0], [1, 0, 1, 1]]},
    "nuclei": {"name": "nuclei (cyan)", "colors": [[0, 1, 1, 0], [0, 1, 1, 1]]},
}
#: the instance layers kept from the ResultLayerBuilder
KEPT_ROLES = ("amodal", "centroids")
MEASUREMENT_COLUMNS = ("cell", "frame", "area_px", "overlap_px", "overlap_pct", "neighbours")


# --- models --------------------------------------------------------------------------------

def brightfield_model_names() -> list[str]:
    """Registered models of kind "brightfield" (the shipped brightfield-default first)."""
    from blastoseg.napari._ui import model_names

    return model_names("brightfield", first=DEFAULT_MODEL)


def card_threshold(model: str) -> float:
    """The score threshold in a model's card (0.3 when none or unreadable)."""
    from blastoseg.napari._ui import card_number

    return card_number(model, "brightfield", "postprocess", "score_threshold",
                       DEFAULT_THRESHOLD)


# --- measurements ----------------------------------------------------------------------------

def brightfield_measurements(frames: Sequence[FrameInstances], first_frame: int = 0
                             ) -> list[dict]:
    """One row per (non-empty) cell: ``cell`` (its label value in napari), ``frame``
    (``first_frame`` + position in ``frames``), ``area_px``, ``overlap_px`` (its pixels that
    lie inside at least one other cell), ``overlap_pct`` (that as % of its area) and
    ``neighbours`` (how many other cells share at least one pixel with it)."""
    rows: list[dict] = []
    for i, inst in enumerate(frames):
        n = len(inst)
        if n == 0:
            continue
        masks, boxes = inst.masks, inst.boxes.astype(int)  # x0, y0, x1, y1 (exclusive)
        coverage = inst.coverage()
        neighbours = np.zeros(n, int)
        for a in range(n):
            for b in range(a + 1, n):
                x0, y0 = max(boxes[a, 0], boxes[b, 0]), max(boxes[a, 1], boxes[b, 1])
                x1, y1 = min(boxes[a, 2], boxes[b, 2]), min(boxes[a, 3], boxes[b, 3])
                if x0 < x1 and y0 < y1 and (masks[a, y0:y1, x0:x1]
                                            & masks[b, y0:y1, x0:x1]).any():
                    neighbours[a] += 1
                    neighbours[b] += 1
        for k, value in enumerate(_label_values(inst)):
            x0, y0, x1, y1 = boxes[k]
            mask = masks[k, y0:y1, x0:x1]
            area = int(mask.sum())
            if area == 0:
                continue
            overlap = int((coverage[y0:y1, x0:x1][mask] >= 2).sum())
            rows.append({"cell": int(value), "frame": int(first_frame + i), "area_px": area,
                         "overlap_px": overlap, "overlap_pct": 100.0 * overlap / area,
                         "neighbours": int(neighbours[k])})
    return rows


def frame_counts(rows: Sequence[dict], frames: Sequence[int]) -> dict[int, int]:
    """Cells per frame (frames without cells count 0)."""
    counts = {int(t): 0 for t in frames}
    for r in rows:
        counts[r["frame"]] = counts.get(r["frame"], 0) + 1
    return counts


def _csv_text(columns: Sequence[str], rows: Sequence[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (f"{r[k]:.4g}" if isinstance(r[k], float) else r[k])
                         for k in columns})
    return buf.getvalue()


# --- the job ---------------------------------------------------------------------------------

def brightfield_job(data, axes: str, frame_range: tuple[int, int],
                    get_predictor: Callable[[], object], *, name: str = "image",
                    rgb: bool = False, placement: Placement | None = None
                    ) -> Generator[tuple[str, int, int], None, dict]:
    """Load the model (``get_predictor()``, called here so it runs in the worker thread) and
    segment the cells of ``data``, one frame at a time; yields ``(message, done, total)``.

    Parameters
    ----------
    data
        The image layer's data: (Y, X), (Y, X, 3/4) with ``rgb``, (T, Y, X) or (T, Y, X, 3/4).
    axes
        ``""`` or ``"T"`` (see :func:`blastoseg.napari.overlap_job.overlap_axes`).
    frame_range
        ``(t0, t1)``: the frames of a (T, Y, X) stack to segment; ignored for a 2D frame.
    get_predictor
        Returns a :class:`~blastoseg.predict.brightfield.BrightfieldPredictor` (or anything
        with ``iter_predict(frame)`` returning FrameInstances, ``device_name``,
        ``entry.name`` and ``score_threshold``).
    name
        The image layer's name: the layers' group and name prefix.
    rgb
        The data has a trailing colour axis (averaged to grey).
    placement
        Scale and translate of the image layer (``first_frame`` is set from
        ``frame_range``).

    Returns
    -------
    dict
        ``layers`` (LayerData tuples, bottom to top: probability maps, amodal Labels layers,
        centroids), ``rows`` (:func:`brightfield_measurements`), ``counts`` (frame -> cells),
        ``predictor``.
    """
    if axes not in ("", "T"):
        raise InvalidImageError(f"brightfield cells are segmented in 2D frames or (T, Y, X) "
                                f"stacks, not axes {axes!r}")
    t0, t1 = (0, 1) if axes == "" else (int(frame_range[0]), int(frame_range[1]))
    if axes == "T" and not 0 <= t0 < t1 <= np.shape(data)[0]:
        raise InvalidImageError(f"frames {t0}..{t1 - 1} are not in a stack of "
                                f"{np.shape(data)[0]} frames")
    n = t1 - t0
    placement = placement or Placement(axes=axes)
    placement = Placement(axes=axes, first_frame=t0, scale=placement.scale,
                          translate=placement.translate)
    yield "loading the model", 0, n
    predictor = get_predictor()
    message = f"segmenting cells on {predictor.device_name}" + (
        f" ({n} frames)" if n > 1 else "")
    yield message, 0, n
    builder: ResultLayerBuilder | None = None
    maps: dict[str, np.ndarray] = {}
    rows: list[dict] = []
    for i, t in enumerate(range(t0, t1)):
        work = predictor.iter_predict(_grey(data if axes == "" else data[t], rgb))
        while True:  # one frame at a time: its masks go into the builder and are dropped
            try:
                done, total = next(work)
            except StopIteration as stop:
                inst = stop.value
                break
            yield message, i * total + done, n * total
        if builder is None:
            builder = ResultLayerBuilder(n, inst.shape, name, placement, extra_meta={
                "source_image": name, "model": predictor.entry.name,
                "device": predictor.device_name, "category": CATEGORY,
                "score_threshold": float(predictor.score_threshold)})
        builder.add(i, inst)
        rows += brightfield_measurements([inst], first_frame=t)
        for key in MAP_KEYS:
            prob = inst.meta.get(key)
            if prob is None and key == "overlap":
                prob = inst.occlusion
            if prob is not None:
                maps.setdefault(key, np.zeros((n, *inst.shape), np.float32))[i] = prob
    common = placement.layer_kwargs()
    layers: list[tuple] = []
    for key, stack in maps.items():
        layers.append((stack if axes == "T" else stack[0], {
            **common, "name": probability_layer_name(name, key),
            "colormap": dict(MAP_COLORMAPS[key]), "blending": "translucent",
            "contrast_limits": (0.0, 1.0), "visible": key == "overlap", "opacity": 0.7,
            "metadata": {"blastoseg": {**builder.extra, "group": name, "role": MAP_ROLE,
                                       "head": key, "placement": placement.to_dict()}}},
            "image"))
    layers += [tup for tup in builder.layer_data()
               if tup[1]["metadata"]["blastoseg"]["role"] in KEPT_ROLES]
    return {"layers": layers, "rows": rows, "counts": frame_counts(rows, range(t0, t1)),
            "predictor": predictor}


# --- export ----------------------------------------------------------------------------------

def brightfield_export_exists(folder: str | Path) -> list[Path]:
    """Files an export into ``folder`` would replace."""
    from blastoseg.napari.export_results import export_exists

    folder = Path(folder)
    return export_exists(folder) + [p for p in (folder / "cells.csv", folder / "counts.csv")
                                    if p.exists()]


def export_brightfield(folder: str | Path, image, amodal_layers: Sequence,
                       map_layers: Sequence = (), pixel_size_um: float | None = None,
                       overwrite: bool = False) -> dict:
    """Write a result, the user's corrections included, to ``folder``: the dataset format
    (``annotations.json`` + ``images/``, category 1 = "cell"; read it back with
    :func:`blastoseg.io.read_dataset`), ``cells.csv`` (:func:`brightfield_measurements`),
    ``counts.csv`` (cells per frame) and ``<key>_probability.tif`` (float32) for each map
    layer. An existing export is refused unless ``overwrite`` (the previous annotations and
    images are then kept as ``.bak`` files)."""
    from blastoseg.io.atomic import atomic_write_bytes, atomic_write_text
    from blastoseg.io.dataset import Sample, lossless_suffix, write_dataset
    from blastoseg.napari.export_results import _image_frames, _tag
    from blastoseg.napari.result_layers import iter_instances_from_layers, placement_of

    if not amodal_layers:
        raise InvalidImageError("nothing to export: segment the cells first")
    if image is None:
        raise InvalidImageError("the image layer of this result is gone: reopen it to export")
    folder = Path(folder)
    existing = brightfield_export_exists(folder)
    if existing and not overwrite:
        raise DatasetFormatError(f"{existing[0]} exists already: choose another folder, or "
                                 "confirm replacing it")
    placement = placement_of(amodal_layers[0])
    first, frames, tracked = iter_instances_from_layers(amodal_layers)
    n = placement.n_frames(amodal_layers[0].data)
    video = "T" in placement.axes
    rows: list[dict] = []

    def samples() -> Iterator[Sample]:
        for local, (frame, inst) in enumerate(zip(
                _image_frames(image, placement, n, None), frames, strict=True)):
            t = first + local
            if frame.ndim == 3 and frame.shape[-1] == 4:
                frame = frame[..., :3]  # RGBA: the dataset holds grey or RGB
            if frame.shape[:2] != inst.shape:
                raise InvalidImageError(f"the labels {inst.shape} do not match the image "
                                        f"layer {image.name!r} ({frame.shape[:2]})")
            rows.extend(brightfield_measurements([inst], first_frame=t))
            if not tracked:
                inst.track_ids = None
            yield Sample(image=frame, instances=inst,
                         file_name=f"images/frame_{t:04d}{lossless_suffix(frame)}"
                         if video else None, video_id=0 if video else None,
                         frame_index=t if video else None, pixel_size_um=pixel_size_um)

    ann = write_dataset(folder, samples(), categories={1: CATEGORY}, overwrite=True, info={
        "description": f"blastoseg brightfield cells of {image.name!r}",
        "source_image": str(image.name), "model": _tag(amodal_layers[0]).get("model")})
    out = {"dataset": ann, "frames": n, "rows": rows,
           "cells": atomic_write_text(folder / "cells.csv",
                                      _csv_text(MEASUREMENT_COLUMNS, rows)),
           "counts": atomic_write_text(folder / "counts.csv", _csv_text(
               ("frame", "cells"), [{"frame": t, "cells": c} for t, c in frame_counts(
                   rows, range(first, first + n)).items()]))}
    import tifffile

    for layer in map_layers:
        key = _tag(layer).get("head", "map")
        buf = io.BytesIO()
        tifffile.imwrite(buf, np.asarray(layer.data, np.float32))
        out[f"{key}_probability"] = atomic_write_bytes(folder / f"{key}_probability.tif",
                                                       buf.getvalue())
    return out
