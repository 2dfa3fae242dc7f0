"""Annotation edits on one frame's instances: pure functions, FrameInstances in and out.

Every function returns a new :class:`~blastoseg.instances.FrameInstances` and never changes
its input. The rules that keep a result consistent:

- **Ids** are track ids (the napari label value is ``id + 1``, see
  :mod:`blastoseg.napari.layer_conversion`). An input without track ids gets
  ``track_ids = 0 .. N-1`` (its current label order) first, so ids never shift when an
  instance is deleted. Ids must be unique within a frame.
- **Scores and class ids** stay with their instance. An added instance is a human
  annotation: score 1.0, class 1 unless given. A merge keeps the lowest id's class and the
  highest score; the two parts of a split keep the original's score and class.
- **Visible masks**, when the input has them, are kept disjoint and inside their amodal
  masks. A pixel keeps its visible owner while that owner still covers it; pixels released by
  an edit (their owner was deleted, shrunk or merged away) and pixels of an added or redrawn
  mask that nobody owned go to the smallest instance covering them (the smallest is taken to
  be on top, as in :func:`instance_at`). So an added cell lies *under* the cells already
  visible where they overlap; redraw the others or edit ``visible_masks`` to change that.
  Without visible masks in the input there are none in the output.
- **The occlusion map**, when present, becomes the overlap map of the edited amodal masks
  (1 where two or more overlap): an edited frame is an annotation, not a prediction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

import numpy as np

from blastoseg.errors import BlastosegError, InvalidImageError
from blastoseg.instances import FrameInstances

__all__ = [
    "add_instance",
    "delete_instances",
    "instance_at",
    "instance_ids",
    "merge_instances",
    "relabel_consecutive",
    "replace_mask",
    "split_instance",
]


#: owner-map value of a pixel whose visible owner was deleted (to be given away)
RELEASED = -2


# --- helpers -----------------------------------------------------------------------------
def instance_ids(inst: FrameInstances) -> np.ndarray:
    """(N,) int64 ids of the instances: their track ids, else 0 .. N-1."""
    if inst.track_ids is None:
        return np.arange(len(inst), dtype=np.int64)
    ids = inst.track_ids.astype(np.int64)
    if len(np.unique(ids)) != len(ids):
        raise BlastosegError(f"track ids must be unique within a frame; got {ids.tolist()}")
    return ids


def _row(ids: np.ndarray, track_id: int) -> int:
    hit = np.nonzero(ids == int(track_id))[0]
    if not len(hit):
        raise BlastosegError(f"no instance with id {track_id} (label {int(track_id) + 1}); "
                             f"the frame has ids {ids.tolist()}")
    return int(hit[0])


def _as_mask(inst: FrameInstances, mask: np.ndarray, what: str = "mask") -> np.ndarray:
    m = np.asarray(mask)
    if m.shape != inst.shape:
        raise InvalidImageError(f"the {what} must have the frame's shape {inst.shape}; "
                                f"got {m.shape}")
    m = m.astype(bool)
    if not m.any():
        raise InvalidImageError(f"the {what} is empty (no pixel set); use delete_instances "
                                "to remove an instance")
    return m


def _owner(inst: FrameInstances) -> np.ndarray | None:
    """(H, W) int32 row of the visible owner of each pixel, -1 where none; None when the
    input has no visible masks."""
    if inst.visible_masks is None:
        return None
    vis = inst.visible_masks
    if not len(vis):
        return np.full(inst.shape, -1, dtype=np.int32)
    return np.where(vis.any(axis=0), vis.argmax(axis=0), -1).astype(np.int32)


def _build(inst: FrameInstances, masks: np.ndarray, class_ids: np.ndarray,
           scores: np.ndarray, track_ids: np.ndarray, owner: np.ndarray | None,
           touched: np.ndarray | None) -> FrameInstances:
    """Assemble the result. ``owner`` maps pixels to rows of the NEW instances (-1: never
    owned, ``RELEASED``: the owner was deleted); ``touched`` marks the pixels of added or
    redrawn masks."""
    masks = np.asarray(masks, dtype=bool).reshape(-1, *inst.shape)
    n = len(masks)
    visible = None
    if owner is not None:
        covered = masks.any(axis=0) if n else np.zeros(inst.shape, bool)
        valid = owner >= 0
        if n:
            rows, cols = np.nonzero(valid)
            valid[rows, cols] = masks[owner[rows, cols], rows, cols]
        free = covered & ~valid & ((owner != -1) | (touched if touched is not None else False))
        owner = np.where(valid, owner, -1)
        if free.any():
            areas = masks.reshape(n, -1).sum(axis=1)
            big = np.iinfo(np.int64).max
            owner[free] = np.where(masks[:, free], areas[:, None], big).argmin(axis=0)
        visible = owner[None] == np.arange(n, dtype=np.int32)[:, None, None]
    occlusion = None
    if inst.occlusion is not None:
        occlusion = (masks.sum(axis=0) >= 2).astype(np.float32) if n else \
            np.zeros(inst.shape, np.float32)
    return replace(inst, masks=masks, class_ids=np.asarray(class_ids, dtype=np.int64),
                   scores=np.asarray(scores, dtype=np.float32), visible_masks=visible,
                   occlusion=occlusion, track_ids=np.asarray(track_ids, dtype=np.int64),
                   meta=dict(inst.meta))


def _id_list(ids: int | Iterable[int]) -> list[int]:
    if isinstance(ids, (int, np.integer)):
        return [int(ids)]
    return [int(i) for i in ids]


# --- edits -------------------------------------------------------------------------------
def add_instance(inst: FrameInstances, mask: np.ndarray, track_id: int | None = None,
                 class_id: int = 1, score: float = 1.0) -> FrameInstances:
    """Append an instance with amodal ``mask`` ((H, W) bool); its id is ``track_id`` or,
    when None, one more than the largest id (0 in an empty frame)."""
    m = _as_mask(inst, mask)
    ids = instance_ids(inst)
    if track_id is None:
        track_id = int(ids.max()) + 1 if len(ids) else 0
    elif int(track_id) in ids:
        raise BlastosegError(f"id {track_id} is already used; choose another or leave it None")
    elif int(track_id) < 0:
        raise BlastosegError(f"ids must be >= 0; got {track_id}")
    return _build(inst, np.concatenate([inst.masks, m[None]]),
                  np.append(inst.class_ids, int(class_id)), np.append(inst.scores, score),
                  np.append(ids, int(track_id)), _owner(inst), m)


def delete_instances(inst: FrameInstances, ids: int | Iterable[int]) -> FrameInstances:
    """Remove the instances with the given id(s)."""
    all_ids = instance_ids(inst)
    rows = {_row(all_ids, i) for i in _id_list(ids)}
    keep = np.array([i not in rows for i in range(len(inst))], dtype=bool)
    owner = _owner(inst)
    if owner is not None:
        new_row = np.cumsum(keep) - 1
        owner = np.where(owner >= 0, np.where(keep[owner], new_row[owner], RELEASED), -1)
        owner = owner.astype(np.int32)
    return _build(inst, inst.masks[keep], inst.class_ids[keep], inst.scores[keep],
                  all_ids[keep], owner, None)


def merge_instances(inst: FrameInstances, ids: Iterable[int]) -> FrameInstances:
    """Merge two or more instances into one: the union of their masks, under the lowest id
    (at that instance's place), with its class and the highest score of the merged ones."""
    all_ids = instance_ids(inst)
    want = sorted(set(_id_list(ids)))
    if len(want) < 2:
        raise BlastosegError(f"merging needs at least two different ids; got {want}")
    rows = [_row(all_ids, i) for i in want]
    keep_row = rows[0]  # want is sorted: the lowest id
    masks = inst.masks.copy()
    masks[keep_row] = inst.masks[rows].any(axis=0)
    scores = inst.scores.copy()
    scores[keep_row] = inst.scores[rows].max()
    keep = np.ones(len(inst), dtype=bool)
    keep[rows[1:]] = False
    owner = _owner(inst)
    if owner is not None:
        owner = np.where(np.isin(owner, rows), keep_row, owner)
        new_row = np.cumsum(keep) - 1
        owner = np.where(owner >= 0, new_row[np.maximum(owner, 0)], -1).astype(np.int32)
    return _build(inst, masks[keep], inst.class_ids[keep], scores[keep], all_ids[keep],
                  owner, None)


def split_instance(inst: FrameInstances, track_id: int,
                   line: Sequence[Sequence[float]], new_id: int | None = None
                   ) -> FrameInstances:
    """Cut an instance in two along the straight line through ``line = ((y0, x0), (y1, x1))``
    (extended across the mask, so the two points need not lie outside it).

    The larger part keeps the id; the smaller part (ties: the one left of the direction
    (y0, x0) -> (y1, x1) in the image) gets ``new_id`` or one more than the largest id and is
    appended. Raises :class:`BlastosegError` when the line leaves all of the mask on one side.
    """
    p = np.asarray(line, dtype=np.float64)
    if p.shape != (2, 2) or not np.isfinite(p).all():
        raise BlastosegError(f"line must be ((y0, x0), (y1, x1)); got {line!r}")
    (y0, x0), (y1, x1) = p
    if y0 == y1 and x0 == x1:
        raise BlastosegError("the line's two points coincide; draw a line across the cell")
    all_ids = instance_ids(inst)
    r = _row(all_ids, track_id)
    if new_id is None:
        new_id = int(all_ids.max()) + 1
    elif int(new_id) in all_ids:
        raise BlastosegError(f"id {new_id} is already used")
    yy, xx = np.nonzero(inst.masks[r])
    # sign of the cross product: which side of the line each pixel centre lies on
    side = (x1 - x0) * (yy - y0) - (y1 - y0) * (xx - x0) > 0
    a, b = np.zeros(inst.shape, bool), np.zeros(inst.shape, bool)
    a[yy[~side], xx[~side]] = True
    b[yy[side], xx[side]] = True
    na, nb = int((~side).sum()), int(side.sum())
    if na == 0 or nb == 0:
        raise BlastosegError(f"the line does not cut instance {track_id} (label "
                             f"{int(track_id) + 1}): all of it lies on one side; draw the "
                             "line across the cell")
    big, small = (a, b) if na > nb else (b, a)
    masks = np.concatenate([inst.masks, small[None]])
    masks[r] = big
    owner = _owner(inst)
    if owner is not None:
        owner = owner.copy()
        owner[(owner == r) & small] = len(inst)
    return _build(inst, masks, np.append(inst.class_ids, inst.class_ids[r]),
                  np.append(inst.scores, inst.scores[r]), np.append(all_ids, int(new_id)),
                  owner, None)


def replace_mask(inst: FrameInstances, track_id: int, mask: np.ndarray) -> FrameInstances:
    """Redraw an instance: its amodal mask becomes ``mask`` (id, score and class kept)."""
    m = _as_mask(inst, mask)
    all_ids = instance_ids(inst)
    r = _row(all_ids, track_id)
    masks = inst.masks.copy()
    masks[r] = m
    return _build(inst, masks, inst.class_ids, inst.scores, all_ids, _owner(inst), m)


def relabel_consecutive(inst: FrameInstances, start: int = 0) -> FrameInstances:
    """Renumber the ids to ``start, start + 1, ...`` in the order of the old ids (instances
    keep their order in the arrays; their masks are untouched)."""
    ids = instance_ids(inst)
    new = np.empty_like(ids)
    new[np.argsort(ids, kind="stable")] = np.arange(int(start), int(start) + len(ids))
    return replace(inst, track_ids=new, meta=dict(inst.meta))


def instance_at(inst: FrameInstances, point: Sequence[float]) -> list[int]:
    """Ids of every instance whose amodal mask covers ``point`` (y, x), topmost first.

    Topmost is the instance whose visible mask holds the point (when visible masks exist),
    then the others by increasing area (a small cell over a big one is the usual case).
    A point outside the frame covers nothing (empty list).
    """
    y, x = (float(v) for v in point)
    if not (np.isfinite(y) and np.isfinite(x)):
        raise BlastosegError(f"the point must be finite (y, x); got {point!r}")
    i, j = int(round(y)), int(round(x))
    h, w = inst.shape
    if not (0 <= i < h and 0 <= j < w) or not len(inst):
        return []
    ids = instance_ids(inst)
    rows = np.nonzero(inst.masks[:, i, j])[0]
    areas = inst.areas
    vis = inst.visible_masks

    def key(r: int) -> tuple[int, int, int]:
        on_top = vis is not None and bool(vis[r, i, j])
        return (0 if on_top else 1, int(areas[r]), int(ids[r]))

    return [int(ids[r]) for r in sorted(rows.tolist(), key=key)]
