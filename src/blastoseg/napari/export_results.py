"""Export one segmentation result (its image and its amodal Labels layers, corrections
included) as a dataset folder plus label TIFFs; no Qt. The Measure widget's "Export
results..." button calls :func:`export_result`, and adds the measurement CSVs.

The result's placement decides which image frames are written: a run on the current frame of
a stack writes that frame only, and a (T, Z, Y, X) stack writes the focal plane each frame was
segmented on (``focal_planes_used`` in the layers' metadata), so the dataset's images and masks
always line up. Frames are read one at a time: a long, compressed stack is never materialised.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from blastoseg.errors import DatasetFormatError, InvalidImageError
from blastoseg.io.dataset import ANNOTATIONS_FILE, Sample, write_dataset
from blastoseg.napari._writer import write_label_tiffs
from blastoseg.napari.result_layers import FrameView, iter_instances_from_layers, placement_of

__all__ = ["export_result", "export_exists"]


def export_exists(folder: str | Path) -> list[Path]:
    """Files an export into ``folder`` would replace (kept as backups if you go ahead)."""
    folder = Path(folder)
    found = [folder / ANNOTATIONS_FILE] if (folder / ANNOTATIONS_FILE).exists() else []
    labels = folder / "labels"
    return found + (sorted(labels.glob("*.tif")) if labels.is_dir() else [])


def _tag(layer) -> dict:
    return ((getattr(layer, "metadata", None) or {}).get("blastoseg") or {})


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


def export_result(folder: str | Path, image, amodal_layers: Sequence,
                  pixel_size_um: float | None = None, overwrite: bool = False) -> dict:
    """Write a result as a dataset folder (``annotations.json`` + ``images/``) and each amodal
    layer as a label TIFF in ``folder/labels/``.

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
        ``annotations.json`` and label TIFFs are kept as timestamped ``.bak`` files.

    Returns
    -------
    dict with ``dataset`` (annotations.json path), ``tiffs`` (list of paths), ``frames``.
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
    placement = placement_of(amodal_layers[0])
    n = placement.n_frames(amodal_layers[0].data)
    img_shape = tuple(np.shape(image.data))
    spatial = img_shape[:-1] if getattr(image, "rgb", False) else img_shape
    if tuple(spatial[-2:]) != FrameView(amodal_layers[0].data, placement).shape[1:]:
        raise InvalidImageError(
            f"the labels ({FrameView(amodal_layers[0].data, placement).shape[1:]}) do not "
            f"match the image layer {getattr(image, 'name', '')!r} of shape {img_shape}")
    planes = _tag(amodal_layers[0]).get("focal_planes_used")
    first, frames, tracked = iter_instances_from_layers(amodal_layers)
    video = n > 1 or "T" in placement.axes

    def samples() -> Iterator[Sample]:
        for local, (frame, inst) in enumerate(zip(_image_frames(image, placement, n, planes),
                                                  frames, strict=True)):
            t = first + local
            if not tracked:
                inst.track_ids = None
            yield Sample(image=frame, instances=inst,
                         file_name=f"images/frame_{t:04d}.png" if video else None,
                         video_id=0 if video else None, frame_index=t if video else None,
                         pixel_size_um=pixel_size_um)

    ann = write_dataset(Path(folder), samples(), overwrite=True,
                        info={"description": f"blastoseg result for {image.name!r}",
                              "source_image": str(getattr(image, "name", "")),
                              "model": _tag(amodal_layers[0]).get("model")})
    tiffs = write_label_tiffs(Path(folder), [
        (FrameView(la.data, placement) if n > 1 or placement.axes else
         np.asarray(la.data), {"name": la.name}) for la in amodal_layers])
    return {"dataset": ann, "tiffs": tiffs, "frames": n}
