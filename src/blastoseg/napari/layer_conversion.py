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


def pack_frame(inst: FrameInstances, preferred: dict[int, int] | None = None,
               dtype=np.uint16) -> tuple[list[np.ndarray], dict[int, int]]:
    """One frame's instances as the fewest non-overlapping (H, W) label planes.

    ``preferred`` maps label value -> plane index wanted (a cell keeps its layer over time and
    across edits). Returns the planes (at least one) and the label value -> plane mapping used.
    """
    values = _label_values(inst)
    layer_of = _assign_layers(inst, dict(preferred or {}))
    planes = [np.zeros(inst.shape, dtype=dtype) for _ in range(max(layer_of, default=-1) + 1)]
    planes = planes or [np.zeros(inst.shape, dtype=dtype)]
    for mask, value, k in zip(inst.masks, values, layer_of, strict=True):
        planes[k][mask] = value
    return planes, {int(v): k for v, k in zip(values, layer_of, strict=True)}


class LabelLayerPacker:
    """Packs frames one at a time into label stacks (streaming twin of
    :func:`instances_to_label_layers`): a segmentation worker adds each frame as it is
    predicted and drops it, so a long time-lapse is never held as instance masks.

    Parameters
    ----------
    n_frames, shape
        Number of frames and the (H, W) of each.
    new_stack
        ``new_stack(shape, dtype)`` makes one empty (T, H, W) label stack: ``np.zeros`` (the
        default) or e.g. :class:`blastoseg.napari.compressed_stack.CompressedStack`.
    """

    def __init__(self, n_frames: int, shape: tuple[int, int], new_stack=np.zeros) -> None:
        self.n_frames, self.shape = int(n_frames), tuple(int(s) for s in shape)
        self._new_stack = new_stack
        self._preferred: dict[int, int] = {}
        self.dtype = np.dtype(np.uint8)  # uint8 while ids fit: a quarter of int32, half of uint16
        self.layers: list = []

    def _ensure_layers(self, n: int) -> None:
        while len(self.layers) < n:
            self.layers.append(self._new_stack((self.n_frames, *self.shape), self.dtype))

    def _promote(self, max_value: int) -> None:
        if max_value > np.iinfo(np.uint16).max:
            raise InvalidImageError(f"instance id {max_value} does not fit a label layer")
        if max_value <= np.iinfo(self.dtype).max:
            return
        self.dtype = np.dtype(np.uint16)
        for k, stack in enumerate(self.layers):
            if hasattr(stack, "promote"):
                stack.promote(self.dtype)
            else:
                self.layers[k] = stack.astype(self.dtype)

    def add(self, t: int, inst: FrameInstances) -> None:
        """Pack frame ``t``; a cell keeps the layer it had in the previous added frame."""
        if inst.shape != self.shape:
            raise InvalidImageError(
                f"frame {t} has shape {inst.shape}, not {self.shape}: all frames of a stack "
                "must have the same shape")
        values = _label_values(inst)
        self._promote(int(values.max()) if len(values) else 0)
        planes, self._preferred = pack_frame(inst, self._preferred, self.dtype)
        self._ensure_layers(len(planes))
        for k, stack in enumerate(self.layers):  # all layers: re-adding leaves nothing stale
            stack[t] = planes[k] if k < len(planes) else 0

    def result(self) -> list:
        """The label stacks, at least one."""
        self._ensure_layers(1)
        return self.layers


def instances_to_label_layers(frames: list[FrameInstances]) -> list[np.ndarray]:
    """Pack the instances of each frame into non-overlapping label arrays.

    Parameters
    ----------
    frames
        One FrameInstances per frame (a single frame is a list of one); all the same shape.

    Returns
    -------
    list of np.ndarray
        Label arrays of shape (T, H, W) (uint8, or uint16 for ids above 255), at least one,
        fewest such that no two instances of a frame share a layer.
    """
    if not frames:
        raise InvalidImageError("no frames to convert")
    packer = LabelLayerPacker(len(frames), frames[0].shape)
    for t, inst in enumerate(frames):
        packer.add(t, inst)
    return packer.result()


def iter_label_layers_to_instances(layers: list, labels_are_track_ids: bool = False):
    """Like :func:`label_layers_to_instances`, one frame at a time (a generator), reading each
    layer frame by frame, so long (possibly compressed) stacks are never materialised."""
    if not layers:
        raise InvalidImageError("no label layers given")
    shapes = [tuple(np.shape(a)) for a in layers]
    if any(len(s) not in (2, 3) for s in shapes) or len(set(shapes)) != 1:
        raise InvalidImageError(
            "label layers must all be (H, W) or all (T, H, W) of the same shape; got "
            + ", ".join(str(s) for s in shapes))
    single = len(shapes[0]) == 2
    for t in range(1 if single else shapes[0][0]):
        planes = [np.asarray(a) if single else np.asarray(a[t]) for a in layers]
        yield _frame_from_planes(planes, t, labels_are_track_ids)


def _frame_from_planes(planes: list[np.ndarray], t: int,
                       labels_are_track_ids: bool) -> FrameInstances:
    masks: dict[int, np.ndarray] = {}
    for k, plane in enumerate(planes):
        for value in np.unique(plane):
            if value == 0:
                continue
            if int(value) in masks:
                raise InvalidImageError(
                    f"label {int(value)} appears in two label layers (layer {k + 1}) in "
                    f"frame {t}: give each cell its own label value")
            masks[int(value)] = plane == value
    values = sorted(masks)
    stacked = (np.stack([masks[v] for v in values]) if values
               else np.zeros((0, *planes[0].shape), dtype=bool))
    track = np.array(values, dtype=np.int64) - 1 if labels_are_track_ids else None
    return FrameInstances(masks=stacked, track_ids=track)


def label_layers_to_instances(
    layers: list[np.ndarray], labels_are_track_ids: bool = False
) -> list[FrameInstances]:
    """Unpack label arrays (each (T, H, W) or (H, W)) into one FrameInstances per frame.

    Instances are ordered by label value; when ``labels_are_track_ids`` the label value minus
    one becomes the track id. A label value used in two layers of one frame is an error (it
    would merge two cells silently).
    """
    return list(iter_label_layers_to_instances(layers, labels_are_track_ids))
