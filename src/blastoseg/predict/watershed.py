"""The "SEU-Net + wtshd" baseline: cell instances by a seeded watershed on the SE-U-Net's
cytoplasm and nuclei maps (S4, Prytula 2023; used again by the brightfield-instances issue).

- foreground mask = cytoplasm probability >= ``cytoplasm_threshold``;
- seeds = connected components of (nuclei probability >= ``nuclei_threshold``) inside the
  mask (smaller than ``min_seed_area`` dropped); every mask component left without a nucleus
  seed (or every component, when no nuclei map is given) is seeded instead at the peaks of
  its distance transform (h-maxima of height ``peak_h``);
- basins = the inverted cytoplasm probability (``basins="probability"``, with a small
  distance-transform term so flat plateaus split at their narrowest neck) or the inverted
  distance transform (``basins="distance"``);
- :func:`skimage.segmentation.watershed` floods the basins from the seeds within the mask;
  regions under ``min_area`` px are dropped.

Known limitation (the reason the thesis moves on to overlap-aware instance models): a
watershed partitions the image, so the instances are disjoint by construction - where two
cells overlap, each overlap pixel goes to one of them only, and the masks are visible
(modal) parts, not whole (amodal) cells. The result's ``visible_masks`` equal its masks.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import ndimage
from skimage.morphology import h_maxima
from skimage.segmentation import watershed

from blastoseg.errors import BlastosegError, InvalidImageError
from blastoseg.instances import FrameInstances

__all__ = ["watershed_from_result", "watershed_instances"]


def _map(a: np.ndarray | None, name: str, shape: tuple[int, ...] | None = None
         ) -> np.ndarray | None:
    if a is None:
        return None
    arr = np.asarray(a)
    if arr.dtype == bool:
        arr = arr.astype(np.float32)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise InvalidImageError(f"the {name} map must be numeric; got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.size == 0:
        raise InvalidImageError(f"the {name} map must be one 2D (H, W) probability map; got "
                                f"shape {arr.shape} (pass the frames of a stack one at a time)")
    if shape is not None and arr.shape != shape:
        raise InvalidImageError(f"the {name} map {arr.shape} must have the cytoplasm map's shape "
                                f"{shape}")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise InvalidImageError(f"the {name} map has NaN or infinite values")
    return arr


def _threshold(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise BlastosegError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def watershed_instances(cytoplasm: np.ndarray, nuclei: np.ndarray | None = None, *,
                        cytoplasm_threshold: float = 0.5, nuclei_threshold: float = 0.5,
                        min_area: int = 20, min_seed_area: int = 4, peak_h: float = 2.0,
                        basins: Literal["probability", "distance"] = "probability",
                        overlap: np.ndarray | None = None) -> FrameInstances:
    """Disjoint cell instances from cytoplasm (and nuclei) probability maps.

    Parameters
    ----------
    cytoplasm
        (H, W) cytoplasm probability (or a binary mask).
    nuclei
        (H, W) nuclei probability, or None (seeds then come from distance-transform peaks).
    cytoplasm_threshold, nuclei_threshold
        Thresholds of the foreground mask and of the nucleus seeds.
    min_area
        Instances smaller than this many pixels are dropped.
    min_seed_area
        Nucleus components smaller than this are not seeds (noise).
    peak_h
        Fallback seeds are the distance-transform maxima whose height above the saddle to a
        higher maximum is at least ``peak_h`` pixels (h-maxima).
    basins
        "probability": flood ``1 - cytoplasm`` (the thesis's inverted cytoplasm map);
        "distance": flood the inverted distance transform of the mask.
    overlap
        Optional (H, W) overlap probability, kept as the result's ``occlusion`` map.

    Returns
    -------
    FrameInstances
        Disjoint masks (see the module docstring: overlaps are not represented), scores = mean
        cytoplasm probability inside each mask, ``meta["method"] = "seunet+watershed"``.
    """
    cyto = _map(cytoplasm, "cytoplasm")
    shape = cyto.shape
    nuc = _map(nuclei, "nuclei", shape)
    occ = _map(overlap, "overlap", shape)
    cyto_thr = _threshold(cytoplasm_threshold, "cytoplasm_threshold")
    nuc_thr = _threshold(nuclei_threshold, "nuclei_threshold")
    if basins not in ("probability", "distance"):
        raise BlastosegError(f"basins must be 'probability' or 'distance', got {basins!r}")
    for name, value in (("min_area", min_area), ("min_seed_area", min_seed_area)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise BlastosegError(f"{name} must be a non-negative integer, got {value!r}")
    if isinstance(peak_h, bool) or not isinstance(peak_h, (int, float)) or peak_h <= 0:
        raise BlastosegError(f"peak_h must be a positive number, got {peak_h!r}")
    meta = {"method": "seunet+watershed", "basins": basins}

    mask = cyto >= cyto_thr
    if not mask.any():
        return FrameInstances(masks=np.zeros((0, *shape), bool), occlusion=occ, meta=meta)
    dist = ndimage.distance_transform_edt(mask).astype(np.float32)
    components, n_components = ndimage.label(mask)

    # seeds: nuclei components inside the mask
    markers = np.zeros(shape, np.int32)
    n_seeds = 0
    if nuc is not None:
        nuc_labels, n_nuc = ndimage.label((nuc >= nuc_thr) & mask)
        if n_nuc:
            sizes = np.bincount(nuc_labels.ravel(), minlength=n_nuc + 1)
            keep = sizes >= max(min_seed_area, 1)
            keep[0] = False
            relabel = np.zeros(n_nuc + 1, np.int32)
            relabel[keep] = np.arange(1, int(keep.sum()) + 1)
            markers = relabel[nuc_labels]
            n_seeds = int(keep.sum())
    # fallback: distance peaks in every mask component that has no nucleus seed
    seeded = np.zeros(n_components + 1, bool)
    seeded[np.unique(components[markers > 0])] = True
    unseeded = ~seeded[components] & mask
    if unseeded.any():
        # regional maxima of the distance transform that stand at least peak_h px above the
        # saddle to any higher maximum (an elongated cell's flat ridge is one seed, not many)
        region_dist = np.where(unseeded, dist, 0.0).astype(np.float64)
        peaks = h_maxima(region_dist, float(peak_h)).astype(bool) & unseeded
        peak_labels, n_peaks = ndimage.label(peaks, structure=np.ones((3, 3)))
        markers = np.where(peak_labels > 0, peak_labels + n_seeds, markers).astype(np.int32)
        n_seeds += n_peaks
        # a component too thin or flat for any maximum still gets one seed at its deepest pixel
        seeded = np.zeros(n_components + 1, bool)
        seeded[np.unique(components[markers > 0])] = True
        for comp in np.nonzero(~seeded[1:])[0] + 1:
            idx = np.argmax(np.where(components == comp, dist, -1.0))
            n_seeds += 1
            markers.flat[idx] = n_seeds

    if basins == "probability":
        # the distance term is < 0.01: it only breaks ties on flat plateaus of the probability
        surface = (1.0 - cyto) - 0.01 * dist / max(float(dist.max()), 1.0)
    else:
        surface = -dist
    labels = watershed(surface, markers=markers, mask=mask)

    ids = np.unique(labels)
    ids = ids[ids > 0]
    masks, scores = [], []
    for i in ids:
        m = labels == i
        if int(m.sum()) < max(min_area, 1):
            continue
        masks.append(m)
        scores.append(float(cyto[m].mean()))
    if not masks:
        return FrameInstances(masks=np.zeros((0, *shape), bool), occlusion=occ, meta=meta)
    stacked = np.stack(masks)
    return FrameInstances(masks=stacked, scores=np.asarray(scores, np.float32),
                          visible_masks=stacked.copy(), occlusion=occ, meta=meta)


def watershed_from_result(result, frame: int | None = None, **kwargs
                          ) -> FrameInstances | list[FrameInstances]:
    """:func:`watershed_instances` on an :class:`~blastoseg.predict.overlap.OverlapResult`.

    Uses its cytoplasm map (required), nuclei map (when the model has that head) and the
    card's cytoplasm / nuclei thresholds (keyword arguments override them); the overlap map,
    when present, becomes the instances' ``occlusion``. Returns FrameInstances for a frame
    (or for ``frame`` of a stack), else one per frame of the stack.
    """
    if "cytoplasm" not in result.probabilities:
        raise BlastosegError(f"the watershed baseline needs a cytoplasm map; this model "
                             f"({result.model or 'unnamed'}) has only {list(result.heads)}")
    if result.is_stack and frame is None:
        return [watershed_from_result(r, **kwargs) for r in result.frames()]
    single = result.frame(frame if frame is not None else 0)
    probs = single.probabilities
    params = {"cytoplasm_threshold": single.thresholds.get("cytoplasm", 0.5),
              "nuclei_threshold": single.thresholds.get("nuclei", 0.5), **kwargs}
    out = watershed_instances(probs["cytoplasm"], probs.get("nuclei"),
                              overlap=probs.get("overlap"), **params)
    out.meta["model"] = result.model
    return out
