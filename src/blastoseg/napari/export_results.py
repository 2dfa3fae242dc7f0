"""Export one segmentation result (its image and its amodal Labels layers, corrections
included) with the files of ``blastoseg segment amodal`` plus label TIFFs; no Qt. The Measure
widget's "Export results..." button calls :func:`export_result`.

The files are written by :func:`blastoseg.results.amodal.write_amodal_results`, the CLI's
writer, so they have the same names and columns: ``annotations.json`` + ``images/`` (in the
folder itself, so it opens in napari, where the CLI writes ``dataset/``), ``counts.csv`` and
``cells.csv``; only the napari export adds ``labels/<layer>.tif``, each amodal layer as a label
TIFF. :func:`result_frames` reads a result's layers for the brightfield export as well.

The result's placement decides which image frames are written: a run on the current frame of
a stack writes that frame only, and a (T, Z, Y, X) stack writes the focal plane each frame was
segmented on (``focal_planes_used`` in the layers' metadata), so the dataset's images and masks
always line up. Frames are read one at a time: a long, compressed stack is never materialised.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from blastoseg.errors import DatasetFormatError, InvalidImageError
from blastoseg.instances import FrameInstances
from blastoseg.napari._ui import layer_tag
from blastoseg.napari._writer import write_label_tiffs
from blastoseg.napari.result_layers import FrameView, iter_instances_from_layers, placement_of
from blastoseg.results.amodal import write_amodal_results
from blastoseg.results.instances import instance_result_paths

__all__ = ["ResultFrames", "export_exists", "export_result", "result_frames"]


def export_exists(folder: str | Path) -> list[Path]:
    """Files an export into ``folder`` would replace: the annotations and the tables (the
    annotations kept as backups if you go ahead) and the label TIFFs."""
    folder = Path(folder)
    found = [p for p in instance_result_paths(folder, "") if p.exists()]
    labels = folder / "labels"
    return found + (sorted(labels.glob("*.tif")) if labels.is_dir() else [])


def _image_frames(image, placement, n: int, planes: list[int] | None) -> Iterator[np.ndarray]:
    """The image frame behind each result frame."""
    data = image.data
    axes, first = placement.axes, placement.first_frame
    for local in range(n):
        if axes == "":
            yield np.asarray(data)
        elif axes == "T":
            yield np.asarray(data[first + local])
        else:
            z = planes[local] if planes else int(np.shape(data)[axes.index("Z")] // 2)
            yield np.asarray(data[z] if axes == "Z" else data[first + local, z])


def _without_alpha(frames: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    for frame in frames:
        yield frame[..., :3] if frame.ndim == 3 and frame.shape[-1] == 4 else frame  # RGBA


@dataclass
class ResultFrames:
    """A result's frames read from its layers, one at a time (a long, compressed stack is
    never materialised): ``images`` and ``instances`` are parallel iterators."""

    first: int  # index of the first frame in the image layer
    n: int
    video: bool
    tracked: bool  # the label values are track ids over time
    images: Iterator[np.ndarray]
    instances: Iterator[FrameInstances]


def result_frames(image, amodal_layers: Sequence) -> ResultFrames:
    """The image frame behind each frame of a result and its instances, read from the image
    layer and the result's amodal Labels layers (instances keep ``track_id = label - 1``, so
    a cell's label value numbers it in ``cells.csv``).

    Raises
    ------
    InvalidImageError
        The labels do not match the image layer.
    """
    placement = placement_of(amodal_layers[0])
    n = placement.n_frames(amodal_layers[0].data)
    img_shape = tuple(np.shape(image.data))
    spatial = img_shape[:-1] if getattr(image, "rgb", False) else img_shape
    labels_shape = FrameView(amodal_layers[0].data, placement).shape[1:]
    if tuple(spatial[-2:]) != labels_shape:
        raise InvalidImageError(
            f"the labels ({labels_shape}) do not match the image layer "
            f"{getattr(image, 'name', '')!r} of shape {img_shape}")
    planes = layer_tag(amodal_layers[0]).get("focal_planes_used")
    first, instances, tracked = iter_instances_from_layers(amodal_layers)
    return ResultFrames(first=first, n=n, video=n > 1 or "T" in placement.axes,
                        tracked=tracked, instances=instances,
                        images=_without_alpha(_image_frames(image, placement, n, planes)))


def export_result(folder: str | Path, image, amodal_layers: Sequence,
                  pixel_size_um: float | None = None, overwrite: bool = False) -> dict:
    """Write a result as :func:`~blastoseg.results.amodal.write_amodal_results` does for the
    CLI (``annotations.json`` + ``images/`` in ``folder``, ``counts.csv``, ``cells.csv``) and
    each amodal layer as a label TIFF in ``folder/labels/``.

    Parameters
    ----------
    folder
        Output folder (created if needed).
    image
        The image layer the result belongs to (anything with ``.data``, ``.name``, ``.rgb``).
    amodal_layers
        The result's amodal Labels layers (one group).
    pixel_size_um
        Stored with every frame (µm per pixel), when known.
    overwrite
        An existing export in ``folder`` is refused unless True; then the previous
        ``annotations.json`` and label TIFFs are kept as timestamped ``.bak`` files (the
        tables are replaced).

    Returns
    -------
    dict with ``dataset`` (annotations.json path), ``counts``, ``cells`` (CSV paths),
    ``tiffs`` (list of paths), ``frames`` (how many).
    """
    if not amodal_layers:
        raise InvalidImageError("nothing to export: the result has no amodal label layers")
    if image is None:
        raise InvalidImageError("the image layer of this result is gone: reopen it to export")
    existing = export_exists(folder)
    if existing and not overwrite:
        raise DatasetFormatError(
            f"{existing[0]} exists already: choose another folder, or confirm replacing it "
            "(the previous files are kept as .bak)")
    frames = result_frames(image, amodal_layers)
    written = write_amodal_results(
        frames.instances, folder, images=frames.images, pixel_size_um=pixel_size_um,
        first_frame=frames.first, video=frames.video, track_ids=frames.tracked,
        dataset_dir="", overwrite=True,
        info={"description": f"blastoseg result for {image.name!r}",
              "source_image": str(getattr(image, "name", "")),
              "model": layer_tag(amodal_layers[0]).get("model")})
    placement = placement_of(amodal_layers[0])
    tiffs = write_label_tiffs(Path(folder), [
        (FrameView(la.data, placement) if frames.n > 1 or placement.axes else
         np.asarray(la.data), {"name": la.name}) for la in amodal_layers])
    return {**written, "tiffs": tiffs, "frames": frames.n}
