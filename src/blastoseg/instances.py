"""The in-memory result of one frame: a set of (possibly overlapping) instances.

This is the data contract between synthetic generators, predictors, measurements, the
dataset format and the napari layers. Masks are AMODAL (the whole object, including parts
hidden under other objects); ``visible_masks`` optionally give the visible (modal) part.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from blastoseg.errors import InvalidImageError


def flat_masks(masks: np.ndarray) -> np.ndarray:
    """(N, H, W) masks as (N, H * W), also for N = 0 (``reshape(0, -1)`` cannot infer the -1:
    a frame with no cells is valid data, e.g. a negative training frame)."""
    m = np.asarray(masks)
    return m.reshape(m.shape[0], int(np.prod(m.shape[1:], dtype=np.int64)))


def _per_instance(values, dtype, n: int, what: str) -> np.ndarray:
    """``values`` as one ``dtype`` entry per instance; another length is a clear error (it was
    numpy's "cannot reshape array of size 3 into shape (2,)")."""
    arr = np.asarray(values, dtype=dtype)
    if arr.size != n:
        raise InvalidImageError(f"{what} has {arr.size} entries for {n} instance masks; "
                                "expected one per mask")
    return arr.reshape(n)


@dataclass
class FrameInstances:
    """Instances of one 2D frame.

    Attributes
    ----------
    masks
        (N, H, W) bool, amodal mask of each instance.
    class_ids
        (N,) int, category id of each instance (1 = blastomere by default).
    scores
        (N,) float32 confidence; 1.0 for ground truth.
    visible_masks
        Optional (N, H, W) bool, the visible part of each instance (inside its amodal mask).
    occlusion
        Optional (H, W) float32 map: 1 where two or more amodal masks overlap (ground truth) or
        the predicted occlusion probability.
    track_ids
        Optional (N,) int identity of each instance across the frames of a time-lapse.
    """

    masks: np.ndarray
    class_ids: np.ndarray | None = None
    scores: np.ndarray | None = None
    visible_masks: np.ndarray | None = None
    occlusion: np.ndarray | None = None
    track_ids: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        masks = np.asarray(self.masks)
        if masks.ndim != 3:
            raise InvalidImageError(f"instance masks must be (N, H, W); got shape {masks.shape}")
        self.masks = masks.astype(bool, copy=False)
        n = len(self.masks)
        self.class_ids = (
            np.ones(n, dtype=np.int64) if self.class_ids is None
            else _per_instance(self.class_ids, np.int64, n, "class_ids")
        )
        self.scores = (
            np.ones(n, dtype=np.float32) if self.scores is None
            else _per_instance(self.scores, np.float32, n, "scores")
        )
        if self.visible_masks is not None:
            vis = np.asarray(self.visible_masks).astype(bool, copy=False)
            if vis.shape != self.masks.shape:
                raise InvalidImageError(
                    f"visible masks {vis.shape} must match amodal masks {self.masks.shape}"
                )
            self.visible_masks = vis
        if self.occlusion is not None:
            occ = np.asarray(self.occlusion, dtype=np.float32)
            if occ.shape != self.shape:
                raise InvalidImageError(f"occlusion map {occ.shape} must be {self.shape}")
            self.occlusion = occ
        if self.track_ids is not None:
            self.track_ids = _per_instance(self.track_ids, np.int64, n, "track_ids")

    # --- derived quantities -------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.masks.shape[1:])  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self.masks)

    @property
    def count(self) -> int:
        return len(self.masks)

    @property
    def boxes(self) -> np.ndarray:
        """(N, 4) float32 amodal boxes, XYXY in pixel edges (x1, y1, x2, y2), x2/y2 exclusive."""
        out = np.zeros((len(self), 4), dtype=np.float32)
        for i, m in enumerate(self.masks):
            ys, xs = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
            if len(ys):
                out[i] = (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1)
        return out

    @property
    def areas(self) -> np.ndarray:
        return flat_masks(self.masks).sum(axis=1)

    @property
    def centroids(self) -> np.ndarray:
        """(N, 2) float (y, x) centroid of each amodal mask; NaN for an empty mask."""
        out = np.full((len(self), 2), np.nan)
        for i, m in enumerate(self.masks):
            ys, xs = np.nonzero(m)
            if len(ys):
                out[i] = (ys.mean(), xs.mean())
        return out

    def coverage(self) -> np.ndarray:
        """(H, W) int: how many amodal masks cover each pixel."""
        return self.masks.sum(axis=0, dtype=np.int32) if len(self) else np.zeros(self.shape, int)

    def overlap_map(self) -> np.ndarray:
        """(H, W) bool: pixels inside two or more amodal masks."""
        return self.coverage() >= 2

    def select(self, keep: np.ndarray) -> FrameInstances:
        """A new FrameInstances with the instances chosen by a boolean or index array."""
        keep = np.asarray(keep)
        return replace(
            self,
            masks=self.masks[keep],
            class_ids=self.class_ids[keep],
            scores=self.scores[keep],
            visible_masks=None if self.visible_masks is None else self.visible_masks[keep],
            track_ids=None if self.track_ids is None else self.track_ids[keep],
            meta=dict(self.meta),
        )

    @classmethod
    def empty(cls, shape: tuple[int, int]) -> FrameInstances:
        return cls(masks=np.zeros((0, *shape), dtype=bool))
