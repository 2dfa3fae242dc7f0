"""npe2 writer: an image layer plus instance Labels layers -> a blastoseg dataset folder.

Each label value of each Labels layer is one (amodal) instance; several Labels layers may
hold overlapping instances (the representation of docs/napari_layers.md). A (T, Y, X) image
with (T, Y, X) labels writes one image entry per frame, as a video.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from blastoseg.errors import InvalidImageError
from blastoseg.io.dataset import Sample, write_dataset
from blastoseg.napari.layer_conversion import iter_label_layers_to_instances


def layers_to_samples(image, image_meta: dict, labels: list[tuple]) -> Iterator[Sample]:
    """Turn (image data, metadata) and Labels LayerData into dataset samples, one frame at a
    time (a generator: long, possibly compressed, stacks are never materialised whole).

    The shapes are checked before the first sample is made, so a mismatch writes nothing.
    """
    shape = tuple(np.shape(image))
    rgb = len(shape) >= 3 and shape[-1] in (3, 4) and bool(image_meta.get("rgb", False))
    spatial = shape[:-1] if rgb else shape
    if len(spatial) not in (2, 3):
        raise InvalidImageError(
            f"the dataset writer takes a 2D frame or a (T, Y, X) stack; got image shape {shape}"
        )
    label_arrays = [data for data, _meta in labels]
    for arr in label_arrays:
        if tuple(np.shape(arr)) != spatial:
            raise InvalidImageError(
                f"label layer shape {tuple(np.shape(arr))} does not match image shape {spatial}"
            )
    track = any(m.get("metadata", {}).get("blastoseg", {}).get("labels_are_track_ids")
                for _d, m in labels)
    pixel = image_meta.get("metadata", {}).get("pixel_size_um")
    return _samples(image, len(spatial) == 2, label_arrays, track, pixel)


def _samples(image, single: bool, label_arrays: list, track: bool, pixel) -> Iterator[Sample]:
    from blastoseg.instances import FrameInstances

    n = 1 if single else int(np.shape(image)[0])
    frames = (iter_label_layers_to_instances(label_arrays, labels_are_track_ids=track)
              if label_arrays else None)
    for t in range(n):
        frame = np.asarray(image) if single else np.asarray(image[t])
        inst = next(frames) if frames is not None else FrameInstances.empty(frame.shape[:2])
        yield Sample(
            image=frame,
            instances=inst,
            file_name=f"images/frame_{t:04d}.png" if n > 1 else None,
            video_id=0 if n > 1 else None,
            frame_index=t if n > 1 else None,
            pixel_size_um=pixel,
        )


def write_label_tiffs(folder: Path, labels: list[tuple]) -> list[Path]:
    """Each Labels layer as an ImageJ-readable TIFF under ``folder/labels/`` (name from the
    layer); an existing file is kept as a timestamped backup, never silently replaced."""
    import re

    import tifffile

    from blastoseg.io.atomic import backup_existing

    out_dir = Path(folder) / "labels"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for k, (data, meta) in enumerate(labels):
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(meta.get("name") or f"labels_{k + 1}"))
        target = out_dir / f"{name.strip('_') or f'labels_{k + 1}'}.tif"
        shape, dtype = tuple(np.shape(data)), np.dtype(data.dtype)
        if target.exists():
            backup_existing(target, move=True)
        # frame by frame: a long (compressed) stack is never materialised whole
        frames = (np.asarray(data[t]) for t in range(shape[0])) if len(shape) == 3 else \
            np.asarray(data)
        tifffile.imwrite(target, frames, shape=shape, dtype=dtype,
                         imagej=dtype in (np.uint8, np.uint16),
                         metadata={"axes": "TYX" if len(shape) == 3 else "YX"})
        written.append(target)
    return written


def write_dataset_layers(path: str, layer_data: list[tuple]) -> list[str]:
    """napari writer hook: writes the first image layer and all Labels layers to ``path``
    as a dataset folder, plus each Labels layer as a label TIFF in ``path/labels/``.

    An existing dataset at ``path`` is not lost: its ``annotations.json`` and label TIFFs are
    kept as timestamped backups before new ones replace them.
    """
    images = [(d, m) for d, m, kind in layer_data if kind == "image"]
    labels = [(d, m) for d, m, kind in layer_data if kind == "labels"]
    if not images:
        raise InvalidImageError("select one image layer (and its Labels layers) to save a dataset")
    image, meta = images[0]
    samples = layers_to_samples(image, {**meta, "rgb": meta.get("rgb", False)}, labels)
    out = write_dataset(Path(path), samples, overwrite=True)
    if labels:
        write_label_tiffs(Path(path), labels)
    return [str(out.parent)]
