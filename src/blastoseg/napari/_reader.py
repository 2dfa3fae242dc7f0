"""npe2 reader: image files, incubator frame folders and blastoseg dataset folders.

Returns napari LayerData tuples; pure functions over the library's readers, no Qt.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from blastoseg.io.dataset import read_dataset
from blastoseg.io.images import SUPPORTED_EXTENSIONS, ImageStack, read_images
from blastoseg.napari.cell_colours import cell_colormap
from blastoseg.napari.layer_conversion import instances_to_label_layers
from blastoseg.napari.layer_pairing import NUCLEI_ROLE, is_nuclei_name

ANNOTATIONS = "annotations.json"


def _dataset_root(path: Path) -> Path | None:
    if path.is_dir() and (path / ANNOTATIONS).is_file():
        return path
    if path.is_file() and path.name == ANNOTATIONS:
        return path.parent
    return None


def napari_get_reader(path: str | list[str]):
    """Return a reader function when ``path`` is something blastoseg reads, else None."""
    if isinstance(path, list):
        if len(path) != 1:
            return None  # napari calls us once per path when several are dropped
        path = path[0]
    p = Path(path)
    if _dataset_root(p) is not None:
        return read_dataset_layers
    if p.is_dir() or p.suffix.lower() in SUPPORTED_EXTENSIONS:
        return read_image_layers
    return None


def _image_layer(stack: ImageStack, name: str) -> tuple:
    meta = {
        "blastoseg": {
            "axes": stack.axes,
            "files": [str(f) for f in stack.files],
            "frame_numbers": stack.frame_numbers,
            "focal_planes": stack.focal_planes,
        }
    }
    if stack.pixel_size_um is not None:
        meta["pixel_size_um"] = stack.pixel_size_um
    kwargs = {"name": name, "metadata": meta, "rgb": stack.axes.endswith("C")}
    return (stack.data, kwargs, "image")


def read_image_layers(path: str | list[str]) -> list[tuple]:
    """Read one image file, TIFF stack or frame folder as an image layer."""
    p = Path(path[0] if isinstance(path, list) else path)
    if p.is_dir():
        separate = _separate_image_layers(p)
        if separate:
            return separate
    stack = read_images(p)
    name = p.stem if p.is_file() else p.name
    if is_nuclei_name(p.name) and np.issubdtype(stack.data.dtype, np.integer) \
            and not stack.axes.endswith("C"):
        # a dataset's nucleus mask (<image stem>_nuclei.tif): a Labels layer, so the
        # Probability-map preview offers it as nuclei
        return [(stack.data, {"name": name, "metadata": {"blastoseg": {
            "role": NUCLEI_ROLE, "files": [str(f) for f in stack.files]}}}, "labels")]
    return [_image_layer(stack, name)]


def _separate_image_layers(folder: Path) -> list[tuple]:
    """A folder of separate pictures (e.g. one crop per embryo): one image layer each, so
    each is segmented on its own ([] when the folder is one time-lapse)."""
    from blastoseg.io.image_folders import folder_layout, read_separate_images

    layout = folder_layout(folder)
    if not layout.separate:
        return []
    layers = [_image_layer(stack, stack.files[0].stem) for stack in read_separate_images(layout)]
    try:
        from napari.utils.notifications import show_info

        show_info(f"{folder.name}: {len(layers)} separate images ({layout.reason}), opened as "
                  "separate layers; segment each on its own")
    except ImportError:  # the reader without napari (scripts, tests)
        pass
    return layers


def dataset_to_layers(root: str | Path) -> list[tuple]:
    """Layers for a dataset folder: one image stack per group of same-sized frames and the
    ground-truth amodal masks as contour Labels layers packed without overlaps."""
    ds = read_dataset(root)
    groups: dict[tuple, list[int]] = {}
    for i, entry in enumerate(ds.images):
        groups.setdefault((entry["height"], entry["width"]), []).append(i)
    # keep each video's frames in time order
    order = {i: (e.get("video_id") or 0, e.get("frame_index") or 0, i) for i, e in enumerate(ds.images)}
    layers: list[tuple] = []
    name = Path(root).name
    for g, indices in enumerate(groups.values()):
        indices = sorted(indices, key=order.__getitem__)
        suffix = f" ({g + 1})" if len(groups) > 1 else ""
        images = np.stack([ds.load_image(i) for i in indices])
        frames = [ds.instances(i) for i in indices]
        # track ids become label values, so a cell keeps its colour over a time-lapse
        use_tracks = all(f.track_ids is not None for f in frames)
        if not use_tracks:
            frames = [f.__class__(masks=f.masks, class_ids=f.class_ids) for f in frames]
        squeeze = len(indices) == 1
        files = [ds.images[i]["file_name"] for i in indices]
        pixel = ds.images[indices[0]].get("pixel_size_um")
        meta = {"blastoseg": {"dataset": str(ds.root), "files": files}}
        if pixel is not None:
            meta["pixel_size_um"] = pixel
        layers.append(
            (images[0] if squeeze else images,
             {"name": f"{name}{suffix}", "metadata": meta, "rgb": images.ndim == 4}, "image")
        )
        packed = instances_to_label_layers(frames)
        for k, labels in enumerate(packed):
            layers.append(
                (
                    labels[0] if squeeze else labels,
                    {
                        "name": f"{name}{suffix} amodal {k + 1}",
                        "metadata": {"blastoseg": {"role": "amodal", "files": files,
                                                   "labels_are_track_ids": use_tracks}},
                        "opacity": 0.9, "colormap": cell_colormap(),
                    },
                    "labels",
                )
            )
    return layers


def read_dataset_layers(path: str | list[str]) -> list[tuple]:
    p = Path(path[0] if isinstance(path, list) else path)
    root = _dataset_root(p)
    return dataset_to_layers(root if root is not None else p)
