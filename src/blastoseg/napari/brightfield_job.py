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

plus the widget table's rows (:func:`brightfield_measurements`, computed by
:func:`blastoseg.measure.measure_frame`) and the cell count per frame. :func:`export_brightfield`
writes through :func:`blastoseg.results.brightfield.write_brightfield_results`, the CLI's writer:
same files, same columns.

CLI twin: ``blastoseg segment brightfield INPUT --out DIR``.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from pathlib import Path

import numpy as np

from blastoseg.errors import DatasetFormatError, InvalidImageError
from blastoseg.instances import FrameInstances
from blastoseg.io.frames import as_frames, frame_range_of
from blastoseg.measure import measure_frame
from blastoseg.napari.overlap_job import probability_layer_name
from blastoseg.napari.result_layers import Placement, ResultLayerBuilder
from blastoseg.results.brightfield import CATEGORY

__all__ = [
    "MAP_ROLE",
    "brightfield_export_exists",
    "brightfield_job",
    "brightfield_measurements",
    "export_brightfield",
    "frame_counts",
]

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


# --- measurements ----------------------------------------------------------------------------

def brightfield_measurements(frames: Sequence[FrameInstances], first_frame: int = 0
                             ) -> list[dict]:
    """The widget table's rows, one per (non-empty) cell, from
    :func:`blastoseg.measure.measure_frame`: ``cell`` (its label value in napari, the
    ``instance`` of ``cells.csv``), ``frame`` (``first_frame`` + position in ``frames``),
    ``area_px``, ``overlap_px`` (its pixels that lie inside at least one other cell),
    ``overlap_pct`` (that as % of its area) and ``neighbours`` (how many other cells share at
    least one pixel with it)."""
    rows: list[dict] = []
    for i, inst in enumerate(frames):
        _, cells = measure_frame(inst, frame=first_frame + i)
        rows += [{"cell": c.instance, "frame": c.frame, "area_px": c.area_px,
                  "overlap_px": c.overlap_px, "overlap_pct": 100.0 * c.overlap_fraction,
                  "neighbours": c.neighbours} for c in cells]
    return rows


def frame_counts(rows: Sequence[dict], frames: Sequence[int]) -> dict[int, int]:
    """Cells per frame (frames without cells count 0)."""
    counts = {int(t): 0 for t in frames}
    for r in rows:
        counts[r["frame"]] = counts.get(r["frame"], 0) + 1
    return counts


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
        ``""`` or ``"T"`` (see :func:`blastoseg.io.frames.image_axes`).
    frame_range
        ``(t0, t1)``: the frames of a (T, Y, X) stack to segment; ignored for a 2D frame.
    get_predictor
        Returns a :class:`~blastoseg.predict.brightfield.BrightfieldPredictor` (or anything
        with ``iter_predict(frames)`` returning a FrameInstances per frame, ``device_name``,
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
    t0, t1 = frame_range_of(data, axes, frame_range, "brightfield segmentation")
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
        # one frame at a time (read, run, its masks into the builder, dropped)
        frame, _ = as_frames(data if axes == "" else data[t], rgb=rgb)
        work = predictor.iter_predict(frame)
        while True:
            try:
                done, total = next(work)
            except StopIteration as stop:
                inst = stop.value[0]
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
    from blastoseg.results.files import probability_file

    folder = Path(folder)
    return export_exists(folder) + [p for p in (folder / probability_file(k) for k in MAP_KEYS)
                                    if p.exists()]


def export_brightfield(folder: str | Path, image, amodal_layers: Sequence,
                       map_layers: Sequence = (), pixel_size_um: float | None = None,
                       overwrite: bool = False) -> dict:
    """Write a result, the user's corrections included, to ``folder`` through
    :func:`~blastoseg.results.brightfield.write_brightfield_results` (the files of ``blastoseg
    segment brightfield``, the dataset in ``folder`` itself so it opens in napari):
    ``annotations.json`` + ``images/`` (category 1 = "cell"; read it back with
    :func:`blastoseg.io.read_dataset`), ``counts.csv``, ``cells.csv`` and
    ``<key>_probability.tif`` (float32) for each map layer. An existing export is refused
    unless ``overwrite`` (the previous annotations and images are then kept as ``.bak``
    files).

    Returns the writer's name -> path, plus ``frames`` (how many) and ``rows`` (the
    :class:`~blastoseg.measure.InstanceMeasurements` of ``cells.csv``)."""
    from blastoseg.napari._ui import layer_tag
    from blastoseg.napari.export_results import result_frames
    from blastoseg.results.brightfield import write_brightfield_results

    if not amodal_layers:
        raise InvalidImageError("nothing to export: segment the cells first")
    if image is None:
        raise InvalidImageError("the image layer of this result is gone: reopen it to export")
    folder = Path(folder)
    existing = brightfield_export_exists(folder)
    if existing and not overwrite:
        raise DatasetFormatError(f"{existing[0]} exists already: choose another folder, or "
                                 "confirm replacing it")
    frames = result_frames(image, amodal_layers)
    written = write_brightfield_results(
        frames.instances, folder, images=frames.images,
        maps={layer_tag(la).get("head", "map"): np.asarray(la.data) for la in map_layers},
        pixel_size_um=pixel_size_um, first_frame=frames.first, video=frames.video,
        track_ids=frames.tracked, dataset_dir="", overwrite=True,
        info={"description": f"blastoseg brightfield cells of {image.name!r}",
              "source_image": str(image.name), "model": layer_tag(amodal_layers[0]).get("model")})
    return {**written, "frames": frames.n, "rows": written.cells}
