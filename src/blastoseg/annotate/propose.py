"""Propose from a click: the model's amodal mask of the cell under a point.

The model (an amodal blastomere model, or a brightfield SparseSEU-Net: both give whole-cell
masks that may overlap) runs once per frame at a low score threshold (a cell the model is unsure of
is still worth proposing: the user decides) and its detections are kept, cropped to their
boxes, keyed by a hash of the frame; further clicks on the same frame only search them.

A detection is chosen in this order:

1. detections that duplicate an instance already annotated (mask IoU > ``duplicate_iou``)
   are skipped, so clicking a second time on an overlap proposes the *other* cell;
2. of the detections whose amodal mask contains the click, the best score wins (ties: the
   smallest mask);
3. if none contains it, the detection whose centroid is nearest to the click, if it is
   within ``radius`` (default: 1.5 x that detection's equivalent-circle radius, so a click
   just beside a cell's edge still finds it);
4. else there is no proposal (None, no exception).
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from blastoseg.errors import BlastosegError, InvalidImageError
from blastoseg.instances import FrameInstances, flat_masks

__all__ = ["Detections", "Proposal", "Proposer", "image_key", "load_proposal_predictor",
           "propose_at"]

#: score threshold of the proposal run: low, the user judges the proposal
PROPOSAL_THRESHOLD = 0.05
#: mask NMS of the proposal run: only near-identical detections are merged, so a cell
#: largely hidden under another one is still among the candidates
PROPOSAL_NMS_IOU = 0.9
#: default search radius when no detection contains the click, in equivalent radii
NEAR_FACTOR = 1.5


def image_key(image: np.ndarray) -> str:
    """A cheap content hash of a frame (shape, dtype and every byte; blake2b)."""
    a = np.ascontiguousarray(image)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{a.shape}{a.dtype.str}".encode())
    h.update(memoryview(a).cast("B"))
    return h.hexdigest()


@dataclass
class Detections:
    """One frame's detections, each mask cropped to its box (compact for big frames).

    ``boxes`` are (N, 4) int (row0, row1, col0, col1), end exclusive; ``crops[i]`` is the
    bool mask inside box i.
    """

    shape: tuple[int, int]
    boxes: np.ndarray
    crops: list[np.ndarray]
    scores: np.ndarray

    @classmethod
    def from_instances(cls, inst: FrameInstances) -> Detections:
        boxes, crops, keep = [], [], []
        for i, m in enumerate(inst.masks):
            rows, cols = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
            if not len(rows):
                continue
            r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
            boxes.append((r0, r1, c0, c1))
            crops.append(m[r0:r1, c0:c1].copy())
            keep.append(i)
        return cls(tuple(inst.shape), np.array(boxes, dtype=np.int64).reshape(-1, 4), crops,
                   inst.scores[keep].astype(np.float32))

    def __len__(self) -> int:
        return len(self.crops)

    @property
    def areas(self) -> np.ndarray:
        return np.array([c.sum() for c in self.crops], dtype=np.int64)

    def mask(self, i: int) -> np.ndarray:
        """Detection i's (H, W) bool amodal mask."""
        out = np.zeros(self.shape, dtype=bool)
        r0, r1, c0, c1 = self.boxes[i]
        out[r0:r1, c0:c1] = self.crops[i]
        return out

    def contains(self, i: int, y: int, x: int) -> bool:
        r0, r1, c0, c1 = self.boxes[i]
        return bool(r0 <= y < r1 and c0 <= x < c1 and self.crops[i][y - r0, x - c0])

    def centroid(self, i: int) -> tuple[float, float]:
        ys, xs = np.nonzero(self.crops[i])
        return float(ys.mean() + self.boxes[i][0]), float(xs.mean() + self.boxes[i][2])

    def max_iou(self, i: int, masks: np.ndarray) -> float:
        """Largest mask IoU of detection i with any of (M, H, W) ``masks``."""
        if not len(masks):
            return 0.0
        r0, r1, c0, c1 = self.boxes[i]
        crop = self.crops[i]
        inter = flat_masks(masks[:, r0:r1, c0:c1] & crop).sum(axis=1)
        union = flat_masks(masks).sum(axis=1) + crop.sum() - inter
        return float((inter / np.maximum(union, 1)).max())


@dataclass
class Proposal:
    """A proposed cell: its (H, W) bool amodal ``mask``, the model's ``score`` and whether
    the click was inside the mask (``contains_click``; False: the nearest centroid)."""

    mask: np.ndarray
    score: float
    contains_click: bool


def _existing_masks(existing: Any, shape: tuple[int, int]) -> np.ndarray:
    if existing is None:
        return np.zeros((0, *shape), dtype=bool)
    m = existing.masks if isinstance(existing, FrameInstances) else np.asarray(existing)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3 or tuple(m.shape[1:]) != tuple(shape):
        raise InvalidImageError(f"existing instances must be (N, {shape[0]}, {shape[1]}) "
                                f"masks or FrameInstances of that frame; got shape {m.shape}")
    return m.astype(bool, copy=False)


def _for_proposals(predictor: Any, score_threshold: float, mask_nms_iou: float) -> Any:
    """A shallow copy of ``predictor`` (sharing its loaded network) with the proposal run's
    low score threshold and lenient mask NMS; the predictor itself is never changed (it may
    be a shared, cached one). A predictor without NMS (``mask_nms_iou`` None) keeps none;
    an object without these attributes is used as it is."""
    if not (hasattr(predictor, "score_threshold") or hasattr(predictor, "mask_nms_iou")):
        return predictor
    run = copy.copy(predictor)
    if getattr(run, "score_threshold", None) is not None:
        run.score_threshold = min(float(run.score_threshold), score_threshold)
    if getattr(run, "mask_nms_iou", None) is not None:
        run.mask_nms_iou = max(float(run.mask_nms_iou), mask_nms_iou)
    return run


def load_proposal_predictor(model: str, device: str = "auto",
                            score_threshold: float = PROPOSAL_THRESHOLD,
                            mask_nms_iou: float = PROPOSAL_NMS_IOU):
    """The predictor of a registered model for proposals, for any kind whose instances are
    cells (:attr:`blastoseg.kinds.ModelKind.proposes_cells`: amodal, brightfield), with the
    proposal run's low score threshold and lenient mask NMS (a model whose card has no NMS
    keeps none). The loaded model is the cached one of
    :func:`~blastoseg.predict.base.load_predictor`; the settings go on a copy."""
    from blastoseg.kinds import KINDS, get_kind
    from blastoseg.predict.base import load_predictor
    from blastoseg.weights import resolve_model

    kind = resolve_model(model).kind
    if not get_kind(kind).proposes_cells:
        able = " or ".join(k.name for k in KINDS.values() if k.proposes_cells)
        raise BlastosegError(f"model {model!r} is of kind {kind!r}; cells can be proposed by "
                             f"models of kind {able}")
    return _for_proposals(load_predictor(model, device, kind=kind), score_threshold, mask_nms_iou)


class Proposer:
    """A predictor plus the detections of the last frame it saw.

    Parameters
    ----------
    predictor
        A registered model name / ``.safetensors`` path of a kind that proposes cells
        (see :func:`load_proposal_predictor`), or any object with
        ``predict(frame) -> FrameInstances``. If the object has ``score_threshold`` /
        ``mask_nms_iou`` attributes (every predictor does), a shallow copy with the
        proposal settings is used; the object itself is never changed.
    device
        Device for a model given by name ("auto", "cpu", "cuda", ...).
    score_threshold, mask_nms_iou
        The proposal run's score threshold and mask NMS IoU.
    """

    def __init__(self, predictor: Any, device: str = "auto",
                 score_threshold: float = PROPOSAL_THRESHOLD,
                 mask_nms_iou: float = PROPOSAL_NMS_IOU) -> None:
        if isinstance(predictor, str):
            run = load_proposal_predictor(predictor, device, score_threshold, mask_nms_iou)
        elif callable(getattr(predictor, "predict", None)):
            run = _for_proposals(predictor, score_threshold, mask_nms_iou)
        else:
            raise BlastosegError(f"expected a model name or a predictor with a "
                                 f"predict(frame) method; got {type(predictor).__name__}")
        self.source = predictor
        self.device_arg = device
        self.predictor = run
        self._key: str | None = None
        self._detections: Detections | None = None
        #: how many times the model ran (a cached frame does not run it)
        self.runs = 0

    def detections(self, image: np.ndarray) -> Detections:
        """The detections of ``image`` (a 2D frame), from the cache when it is the last frame."""
        img = np.asarray(image)
        if not (img.ndim == 2 or (img.ndim == 3 and img.shape[-1] in (3, 4))):
            raise InvalidImageError(f"propose works on one 2D frame (grey or RGB); got shape "
                                    f"{img.shape}: pick a frame of a stack first")
        key = image_key(img)
        if key != self._key or self._detections is None:
            inst = self.predictor.predict(img)
            if not isinstance(inst, FrameInstances):
                raise BlastosegError("the predictor returned no FrameInstances for one frame")
            self.runs += 1
            self._detections = Detections.from_instances(inst)
            self._key = key
        return self._detections

    def propose(self, image: np.ndarray, point: Sequence[float], existing: Any = None,
                radius: float | None = None, duplicate_iou: float = 0.8) -> Proposal | None:
        """The proposal for a click at ``point`` (y, x); None when no detection fits."""
        det = self.detections(image)
        y, x = (float(v) for v in point)
        if not (np.isfinite(y) and np.isfinite(x)):
            raise BlastosegError(f"the click must be a finite (y, x) point; got {point!r}")
        ex = _existing_masks(existing, det.shape)
        cand = [i for i in range(len(det)) if det.max_iou(i, ex) <= duplicate_iou]
        if not cand:
            return None
        iy, ix = int(round(y)), int(round(x))
        areas = det.areas
        inside = [i for i in cand if det.contains(i, iy, ix)]
        if inside:
            best = min(inside, key=lambda i: (-float(det.scores[i]), int(areas[i])))
            return Proposal(det.mask(best), float(det.scores[best]), True)
        best, best_d = None, np.inf
        for i in cand:
            cy, cx = det.centroid(i)
            d = float(np.hypot(cy - y, cx - x))
            limit = (float(radius) if radius is not None
                     else NEAR_FACTOR * float(np.sqrt(areas[i] / np.pi)))
            if d <= limit and d < best_d:
                best, best_d = i, d
        if best is None:
            return None
        return Proposal(det.mask(best), float(det.scores[best]), False)


_LAST: Proposer | None = None


def _proposer(predictor: Any, device: str) -> Proposer:
    """The cached Proposer for this model name + device or predictor object."""
    global _LAST
    p = _LAST
    same = p is not None and (
        (isinstance(predictor, str) and p.source == predictor and p.device_arg == device)
        or (not isinstance(predictor, str) and p.source is predictor))
    if not same:
        p = Proposer(predictor, device=device)
        _LAST = p
    return p


def propose_at(predictor_or_model_name: Any, image: np.ndarray, point: Sequence[float],
               existing: Any = None, device: str = "auto", *, radius: float | None = None,
               duplicate_iou: float = 0.8) -> np.ndarray | None:
    """The model's amodal mask of the cell under a click, or None.

    Parameters
    ----------
    predictor_or_model_name
        Amodal or brightfield model name / path, or a predictor object (see
        :class:`Proposer`). The last
        one used is kept with its last frame's detections, so repeated clicks on one frame
        run the model once.
    image
        The 2D frame (grey or RGB) the user clicked on.
    point
        (y, x) of the click in the frame's pixel coordinates.
    existing
        Instances already annotated in this frame (FrameInstances or (N, H, W) masks);
        detections duplicating one of them (mask IoU > ``duplicate_iou``) are not proposed.
    device
        Device when a model name is given.
    radius
        Largest click-to-centroid distance when no detection contains the click; None:
        1.5 x each detection's own equivalent-circle radius.

    Returns
    -------
    np.ndarray or None
        (H, W) bool amodal mask, or None when no detection is at or near the click.
    """
    prop = _proposer(predictor_or_model_name, device).propose(
        image, point, existing=existing, radius=radius, duplicate_iou=duplicate_iou)
    return None if prop is None else prop.mask
