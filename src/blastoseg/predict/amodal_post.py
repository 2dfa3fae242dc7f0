"""Post-processing of the amodal detector's raw outputs: which detections are cells.

The detector (:class:`~blastoseg.models.amodal_rcnn.AmodalMaskRCNN`) returns, per frame,
up to ``box_detections_per_img`` candidates with a score and a mask probability map, and a
per-pixel occlusion probability (the chance that a pixel lies inside two or more cells).
Turning these into cells takes a score threshold and a duplicate filter. The plain recipe
(score >= t, then greedy NMS on mask IoU, :func:`blastoseg.predict.mask_nms.mask_nms`) is what
the predictor has used so far.

Why the plain recipe under-counts at 4-8 cells (``docs/counting_analysis.md``): a blastomere
lying under another one has an amodal mask that overlaps the upper cell's mask by IoU 0.5-0.9
(a quarter of all true cells on the held-out synthetic frames have another true cell at mask
IoU >= 0.5), exactly like a duplicate detection of the upper cell does. The detector usually
proposes the deep cell (some candidate scores >= 0.5 on it), but mask NMS at 0.6 removes it;
raising the NMS IoU lets the duplicates through instead, and neither the scores nor the mask
overlaps tell the two apart (a pair classifier on them reaches only AUC 0.84).

What does tell them apart is the *occlusion map*: a stack of two cells makes the pixels under
both "occluded", a duplicate does not. :func:`layer_count` turns the occlusion map into an
expected number of cell layers per pixel (a lookup table fitted on frames with ground truth,
:func:`fit_layer_table`), sums it over the kept cells' union and divides by the kept cells'
mean area: an estimate of how many cells the embryo holds that does not depend on every cell
being detected. :func:`select_cells` (the *layer rule*) keeps the plain recipe's cells, and
when the layer count is at least ``min_count`` and says cells are missing, it lets in the
missing number of candidates that mask NMS had removed (best score first, still refusing
near-copies above ``add_max_iou``); when it says there are too many, it drops the lowest
scored. All of it is numpy on the detector's outputs at the working resolution: about 3.5 ms
per 8-cell frame in all (one CPU thread; the plain recipe alone about 2.5 ms).

Every numeric default here was chosen on calibration frames (seeds 950000-950399), never on
the reported benchmark frames; ``benchmarks/count_analysis.py`` re-derives them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from blastoseg.instances import flat_masks
from blastoseg.predict.mask_nms import as_binary, mask_nms, mask_overlaps

__all__ = ["DEFAULT_LAYER_EDGES", "LayerRule", "PostResult", "fit_layer_table",
           "layer_count", "postprocess_detections", "select_cells"]

#: bin edges of the occlusion probability for the layer table (the shipped detector's
#: occlusion map saturates near 0.55, so finer bins above 0.6 would stay empty)
DEFAULT_LAYER_EDGES: tuple[float, ...] = tuple(round(0.05 * k, 2) for k in range(13))


def fit_layer_table(occlusions: Sequence[np.ndarray], layer_maps: Sequence[np.ndarray],
                    edges: Sequence[float] = DEFAULT_LAYER_EDGES) -> list[float]:
    """E[number of cells covering a pixel | its occlusion probability], per occlusion bin.

    Parameters
    ----------
    occlusions
        Predicted occlusion maps (H, W) in [0, 1], one per calibration frame, at the
        detector's working resolution.
    layer_maps
        The ground truth for the same frames: at every pixel, how many amodal masks cover it
        (``gt_masks.sum(axis=0)`` in the model's frame).
    edges
        Bin edges of the occlusion probability; ``np.digitize(o, edges)`` gives the bin, so
        the table has ``len(edges) + 1`` entries.

    Returns
    -------
    list of float
        The mean layer count of the pixels inside at least one cell, per bin; 1.0 for an
        empty bin (a pixel inside a cell is at least one layer).

    Notes
    -----
    Only pixels inside at least one true cell are used: the table answers "given that this
    pixel is inside a detected cell, how many cells lie there?", which is how
    :func:`layer_count` uses it.
    """
    e = np.asarray(edges, dtype=np.float64)
    total = np.zeros(len(e) + 1)
    count = np.zeros(len(e) + 1)
    for occ, layers in zip(occlusions, layer_maps, strict=True):
        o = np.asarray(occ, dtype=np.float32)
        L = np.asarray(layers)
        if o.shape != L.shape:
            raise ValueError(f"occlusion map {o.shape} and layer map {L.shape} differ in shape")
        inside = L >= 1
        k = np.digitize(o[inside], e)
        np.add.at(total, k, L[inside])
        np.add.at(count, k, 1)
    table = np.where(count > 0, total / np.maximum(count, 1), 1.0)
    return [float(v) for v in table]


def layer_count(masks: np.ndarray, occlusion: np.ndarray, table: Sequence[float] | None,
                edges: Sequence[float] = DEFAULT_LAYER_EDGES) -> float:
    """How many cells the embryo holds, from a layer signal and the kept cells' masks.

    ``sum over the union of the masks of E[layers]`` divided by the masks' mean area. If
    every cell were found this is about their number (the sum of the cells' areas over their
    mean area); a cell hidden under others adds layers to pixels already in the union, so it
    raises the estimate even when no kept mask covers it, while a duplicate adds nothing.
    E[layers] is ``table[bin of the occlusion probability]`` (:func:`fit_layer_table`), or,
    with ``table=None``, ``occlusion`` is already an expected-layer map (the layer branch's,
    :mod:`blastoseg.models.layer_count`), read as it is with at least one layer inside a
    kept mask. 0.0 without masks.
    """
    b = as_binary(masks)
    if len(b) == 0:
        return 0.0
    area = flat_masks(b).sum(1).astype(np.float64)
    if area.mean() <= 0:
        return 0.0
    union = b.any(axis=0)
    values = np.asarray(occlusion, dtype=np.float32)[union]
    if table is None:
        expected = np.maximum(values.astype(np.float64), 1.0)
    else:
        tab = np.asarray(table, dtype=np.float64)
        expected = tab[np.digitize(values, np.asarray(edges, dtype=np.float64))]
    return float(expected.sum() / area.mean())


@dataclass
class LayerRule:
    """Settings of the layer rule (:func:`select_cells`); stored in a model card's
    ``postprocess.layer_rule``.

    Attributes
    ----------
    table
        E[layers | occlusion bin] (:func:`fit_layer_table`), ``len(edges) + 1`` values
        (``source="occlusion"``; empty for ``"layers"``).
    edges
        Occlusion-probability bin edges of ``table``.
    source
        What the rule reads: ``"occlusion"``, the occlusion map through ``table``; or
        ``"layers"``, the expected-layer map of a model with a layer branch, as it is.
    min_count
        The rule only acts when the layer count is at least this (below it the plain recipe
        is already right on synthetic frames: 1-3 cells are 80-100 % exact).
    add_min_score
        A candidate that NMS removed may come back only with at least this score.
    add_max_iou
        ... and only if its mask IoU with every kept cell is at most this (a relaxed NMS:
        stacked cells overlap up to ~0.9, duplicates often more).
    drop
        Also drop the lowest-scored cells when the layer count says there are too many.
    """

    table: list[float] = field(default_factory=list)
    edges: list[float] = field(default_factory=lambda: list(DEFAULT_LAYER_EDGES))
    min_count: float = 4.0
    add_min_score: float = 0.5
    add_max_iou: float = 0.9
    drop: bool = True
    source: str = "occlusion"

    def __post_init__(self) -> None:
        self.table = [float(v) for v in self.table]
        self.edges = [float(v) for v in self.edges]
        if self.source not in ("occlusion", "layers"):
            raise ValueError(f"layer rule source must be 'occlusion' or 'layers'; "
                             f"got {self.source!r}")
        if self.source == "occlusion" and len(self.table) != len(self.edges) + 1:
            raise ValueError(f"layer table needs len(edges) + 1 = {len(self.edges) + 1} "
                             f"values; got {len(self.table)}")
        if any(b <= a for a, b in zip(self.edges[:-1], self.edges[1:], strict=True)):
            raise ValueError("layer edges must increase")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> LayerRule:
        known = {"table", "edges", "min_count", "add_min_score", "add_max_iou", "drop",
                 "source"}
        return cls(**{k: v for k, v in d.items() if k in known})


def select_cells(iou: np.ndarray, area: np.ndarray, masks: np.ndarray, scores: np.ndarray,
                 occlusion: np.ndarray | None, *, score_threshold: float, mask_nms_iou: float,
                 rule: LayerRule | None = None) -> tuple[list[int], float | None]:
    """The detections that are cells: the plain recipe, corrected by the layer rule.

    Parameters
    ----------
    iou, area
        :func:`~blastoseg.predict.mask_nms.mask_overlaps` of ``masks``.
    masks
        (N, H, W) candidate masks (probabilities or bool) at the working resolution.
    scores
        (N,) candidate scores.
    occlusion
        (H, W) map the rule reads at the same resolution (the occlusion probability, or the
        expected-layer map for a rule with ``source="layers"``), or None (no layer rule).
    score_threshold, mask_nms_iou
        The plain recipe: candidates with ``score >= score_threshold``, greedy mask NMS.
    rule
        The layer rule, or None for the plain recipe.

    Returns
    -------
    cells : list of int
        Indices of the cells, in descending score order.
    estimate : float or None
        The layer count (None when the rule did not run).
    """
    s = np.asarray(scores, dtype=np.float64)
    above = np.flatnonzero(s >= score_threshold)
    keep = mask_nms(iou, s, mask_nms_iou, above)
    if rule is None or occlusion is None or not keep:
        return keep, None
    b = as_binary(masks)
    kept_area = area[keep]
    if kept_area.mean() <= 0:
        return keep, None
    table = None if rule.source == "layers" else rule.table
    estimate = layer_count(b[keep], occlusion, table, rule.edges)
    if estimate < rule.min_count:
        return keep, estimate
    target = int(round(estimate))
    if target > len(keep):
        kept = set(keep)
        for j in np.argsort(-s, kind="stable").tolist():
            if len(keep) >= target or s[j] < rule.add_min_score:
                break
            if j in kept or area[j] <= 0 or any(iou[i, j] > rule.add_max_iou for i in keep):
                continue
            keep.append(j)
            kept.add(j)
    elif target < len(keep) and rule.drop:
        keep = keep[:max(target, 1)]
    keep.sort(key=lambda j: -s[j])
    return keep, estimate


@dataclass
class PostResult:
    """What :func:`postprocess_detections` keeps of one frame's candidates.

    Attributes
    ----------
    indices
        Candidates to return, in descending order of ``scores``.
    scores
        Their scores after post-processing: a cell's score is at least the count threshold,
        a kept non-cell's is below it (so ``scores >= count_threshold`` counts the cells).
    n_cells
        Number of cells (the count).
    layer_estimate
        The layer count, when the layer rule ran.
    """

    indices: np.ndarray
    scores: np.ndarray
    n_cells: int
    layer_estimate: float | None = None


def postprocess_detections(masks: np.ndarray, scores: np.ndarray,
                           occlusion: np.ndarray | None = None, *, score_threshold: float,
                           mask_nms_iou: float, count_threshold: float | None = None,
                           rule: LayerRule | Mapping | None = None,
                           layers: np.ndarray | None = None) -> PostResult:
    """One frame's raw candidates -> the instances a predictor returns.

    Parameters
    ----------
    masks
        (N, H, W) mask probabilities (float or uint8 0-255) or bool masks, working resolution.
    scores
        (N,) detector scores.
    occlusion
        (H, W) occlusion probability map at the same resolution, or None.
    score_threshold
        The lowest score to return (the predictor's ``score_threshold``; e.g. 0.05 for mask
        AP, the count threshold for normal use).
    mask_nms_iou
        IoU of the plain mask NMS.
    count_threshold
        The score at which a detection counts as a cell (the card's calibrated
        ``postprocess.score_threshold``); None: ``score_threshold``.
    rule
        :class:`LayerRule` (or its dict) or None for the plain recipe.
    layers
        (H, W) expected-layer map of a model with a layer branch, or None; read by a rule
        with ``source="layers"`` (without it such a rule does not run).

    Returns
    -------
    PostResult
        With ``rule=None`` and ``count_threshold == score_threshold`` this is exactly the
        plain recipe (score threshold, then mask NMS). With the rule, cells it adds keep
        their score (they are >= ``add_min_score``; raised to the count threshold if that is
        higher) and cells it drops are lowered to just below the count threshold, so mask
        AP still ranks every candidate and counting ``score >= count_threshold`` gives the
        corrected count.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    n = len(s)
    ct = float(score_threshold if count_threshold is None else count_threshold)
    if isinstance(rule, Mapping):
        rule = LayerRule.from_dict(rule)
    if n == 0:
        return PostResult(np.zeros(0, dtype=np.int64), np.zeros(0, np.float32), 0)
    iou, area = mask_overlaps(masks)
    signal = layers if rule is not None and rule.source == "layers" else occlusion
    cells, estimate = select_cells(iou, area, masks, s, signal, score_threshold=ct,
                                   mask_nms_iou=mask_nms_iou, rule=rule)
    below = np.nextafter(np.float32(ct), np.float32(-np.inf))
    new = {j: max(float(s[j]), ct) for j in cells}
    if score_threshold < ct:
        # the rest of the plain recipe's list (for mask AP): NMS over everything above
        # score_threshold, the cells first so that they are never suppressed by a non-cell
        cellset = set(cells)
        rest = [j for j in range(n) if s[j] >= score_threshold and j not in cellset]
        for j in mask_nms(iou, s, mask_nms_iou, rest, kept=cells)[len(cells):]:
            new[j] = min(float(s[j]), float(below))
    idx = np.array(sorted(new, key=lambda j: (-new[j], j)), dtype=np.int64)
    out = np.array([new[j] for j in idx], dtype=np.float32)
    keep = out >= score_threshold
    return PostResult(idx[keep], out[keep], len(cells), estimate)
