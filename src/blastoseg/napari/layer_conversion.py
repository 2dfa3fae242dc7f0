"""Results <-> napari layer data, losslessly, without importing napari.

Amodal instances overlap, and a napari Labels layer holds one label per pixel. We pack the
instances of each frame into the fewest Labels layers such that no two instances in one layer
overlap (greedy colouring of the overlap graph). Every instance stays editable with napari's
own label tools, all outlines show at once in contour mode, and a (T, Y, X) stack needs only
as many layers as the densest frame needs colours (see docs/napari_layers.md).

Label values are instance ids: ``track_id + 1`` when the result carries track ids (so a cell
keeps its colour over time), otherwise the instance's 1-based index in its frame.
"""

from __future__ import annotations

import numpy as np

from blastoseg.errors import InvalidImageError
from blastoseg.instances import FrameInstances


def _label_values(inst: FrameInstances) -> np.ndarray:
    if inst.track_ids is not None:
        return inst.track_ids.astype(np.int64) + 1
    return np.arange(1, len(inst) + 1, dtype=np.int64)


def _assign_layers(inst: FrameInstances, preferred: dict[int, int]) -> list[int]:
    """Greedy colouring: each instance goes to its preferred layer if free there, else the first
    layer where it overlaps nothing already placed."""
    values = _label_values(inst)
    occupied: list[np.ndarray] = []
    layer_of = [-1] * len(inst)
    # Instances with a preference first, so that cells keep their layer over time.
    order = sorted(range(len(inst)), key=lambda i: (int(values[i]) not in preferred, i))
    for i in order:
        mask = inst.masks[i]
        candidates = []
        want = preferred.get(int(values[i]))
        if want is not None:
            candidates.append(want)
        candidates += [k for k in range(len(occupied) + 1) if k != want]
        for k in candidates:
            while k >= len(occupied):
                occupied.append(np.zeros(inst.shape, dtype=bool))
            if not (occupied[k] & mask).any():
                occupied[k] |= mask
                layer_of[i] = k
                break
    return layer_of


def instances_to_label_layers(frames: list[FrameInstances]) -> list[np.ndarray]:
    """Pack the instances of each frame into non-overlapping label arrays.

    Parameters
    ----------
    frames
        One FrameInstances per frame (a single frame is a list of one); all the same shape.

    Returns
    -------
    list of np.ndarray
        Label arrays of shape (T, H, W) (uint8, or uint16 for ids above 255), at least one, fewest such that no two
        instances of a frame share a layer.
    """
    if not frames:
        raise InvalidImageError("no frames to convert")
    shape = frames[0].shape
    if any(f.shape != shape for f in frames):
        raise InvalidImageError("all frames must have the same shape to form a stack")
    max_value = max((int(_label_values(f).max()) for f in frames if len(f)), default=0)
    if max_value > np.iinfo(np.uint16).max:
        raise InvalidImageError(f"instance id {max_value} does not fit a label layer")
    assignments: list[list[int]] = []
    preferred: dict[int, int] = {}
    for inst in frames:
        layer_of = _assign_layers(inst, preferred)
        assignments.append(layer_of)
        preferred = {int(v): k for v, k in zip(_label_values(inst), layer_of, strict=True)}
    n_layers = max([max(a, default=-1) + 1 for a in assignments] + [1])
    # uint8 when ids allow: a 500-frame 500x500 stack then costs 125 MB per layer, not 250
    dtype = np.uint8 if max_value <= np.iinfo(np.uint8).max else np.uint16
    layers = [np.zeros((len(frames), *shape), dtype=dtype) for _ in range(n_layers)]
    for t, (inst, layer_of) in enumerate(zip(frames, assignments, strict=True)):
        for mask, value, k in zip(inst.masks, _label_values(inst), layer_of, strict=True):
            layers[k][t][mask] = value
    return layers


def label_layers_to_instances(
    layers: list[np.ndarray], labels_are_track_ids: bool = False
) -> list[FrameInstances]:
    """Unpack label arrays (each (T, H, W) or (H, W)) into one FrameInstances per frame.

    Instances are ordered by label value; when ``labels_are_track_ids`` the label value minus
    one becomes the track id. A label value used in two layers of one frame is an error (it
    would merge two cells silently).
    """
    if not layers:
        raise InvalidImageError("no label layers given")
    arrays = [np.asarray(a) for a in layers]
    arrays = [a[None] if a.ndim == 2 else a for a in arrays]
    if any(a.ndim != 3 for a in arrays) or len({a.shape for a in arrays}) != 1:
        raise InvalidImageError(
            "label layers must all be (H, W) or all (T, H, W) of the same shape; got "
            + ", ".join(str(np.shape(a)) for a in layers)
        )
    frames: list[FrameInstances] = []
    for t in range(arrays[0].shape[0]):
        masks: dict[int, np.ndarray] = {}
        for k, arr in enumerate(arrays):
            plane = arr[t]
            for value in np.unique(plane):
                if value == 0:
                    continue
                if int(value) in masks:
                    raise InvalidImageError(
                        f"label {int(value)} appears in two label layers (layer {k + 1}) in "
                        f"frame {t}: give each cell its own label value"
                    )
                masks[int(value)] = plane == value
        values = sorted(masks)
        stacked = (
            np.stack([masks[v] for v in values]) if values
            else np.zeros((0, *arrays[0].shape[1:]), dtype=bool)
        )
        track = np.array(values, dtype=np.int64) - 1 if labels_are_track_ids else None
        frames.append(FrameInstances(masks=stacked, track_ids=track))
    return frames
