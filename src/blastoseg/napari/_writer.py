"""npe2 writer: an image layer plus instance Labels layers -> a blastoseg dataset folder.

Each label value of each Labels layer is one (amodal) instance; several Labels layers may
hold overlapping instances (the representation of docs/napari_layers.md). A (T, Y, X) image
with (T, Y, X) labels writes one image entry per frame, as a video.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from blastoseg.errors import InvalidImageError
from blastoseg.io.dataset import Sample, write_dataset
from blastoseg.napari.layer_conversion import label_layers_to_instances


def layers_to_samples(image: np.ndarray, image_meta: dict, labels: list[tuple]) -> list[Sample]:
    """Turn (image data, metadata) and Labels LayerData into dataset samples."""
    image = np.asarray(image)
    rgb = image.ndim >= 3 and image.shape[-1] in (3, 4) and bool(image_meta.get("rgb", False))
    spatial = image.shape[:-1] if rgb else image.shape
    if len(spatial) not in (2, 3):
        raise InvalidImageError(
            f"the dataset writer takes a 2D frame or a (T, Y, X) stack; got image shape {image.shape}"
        )
    label_arrays = [np.asarray(data) for data, _meta in labels]
    for arr in label_arrays:
        if arr.shape != spatial:
            raise InvalidImageError(
                f"label layer shape {arr.shape} does not match image shape {spatial}"
            )
    track = any(m.get("metadata", {}).get("blastoseg", {}).get("labels_are_track_ids")
                for _d, m in labels)
    frames = label_layers_to_instances(label_arrays, labels_are_track_ids=track) if labels else None
    stack = image[None] if len(spatial) == 2 else image
    pixel = image_meta.get("metadata", {}).get("pixel_size_um")
    samples = []
    for t in range(stack.shape[0]):
        inst = frames[t] if frames is not None else None
        if inst is None:
            from blastoseg.instances import FrameInstances

            inst = FrameInstances.empty(stack.shape[1:3])
        samples.append(
            Sample(
                image=stack[t],
                instances=inst,
                file_name=f"images/frame_{t:04d}.png" if stack.shape[0] > 1 else None,
                video_id=0 if stack.shape[0] > 1 else None,
                frame_index=t if stack.shape[0] > 1 else None,
                pixel_size_um=pixel,
            )
        )
    return samples


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
        arr = np.asarray(data)
        if target.exists():
            backup_existing(target, move=True)
        tifffile.imwrite(target, arr, imagej=arr.dtype in (np.uint8, np.uint16),
                         metadata={"axes": "TYX" if arr.ndim == 3 else "YX"})
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
