"""How the cells of one frame overlap each other: per cell, the pixels it shares with other
cells and how many other cells it shares them with.

Amodal and brightfield instances may overlap (a cell hidden under another keeps its whole
outline), so these are properties of each cell, measured on the full masks.
"""

from __future__ import annotations

import numpy as np

from blastoseg.instances import FrameInstances

__all__ = ["cell_overlaps"]


def cell_overlaps(instances: FrameInstances) -> tuple[np.ndarray, np.ndarray]:
    """Per instance: ``overlap_px`` (its pixels that lie inside at least one other instance,
    counted once however many cover them) and ``neighbours`` (how many other instances share
    at least one pixel with it; instances that only touch do not count).

    Returns
    -------
    (overlap_px, neighbours)
        Two (N,) int arrays.
    """
    n = len(instances)
    overlap_px = np.zeros(n, np.int64)
    neighbours = np.zeros(n, np.int64)
    if n == 0:
        return overlap_px, neighbours
    masks, boxes = instances.masks, instances.boxes.astype(int)  # x0, y0, x1, y1 (exclusive)
    coverage = instances.coverage()
    for a in range(n):
        x0, y0, x1, y1 = boxes[a]
        mask = masks[a, y0:y1, x0:x1]
        overlap_px[a] = int((coverage[y0:y1, x0:x1][mask] >= 2).sum())
        if overlap_px[a] == 0:
            continue  # shares no pixel: no neighbour either
        for b in range(a + 1, n):
            # only where the two boxes meet: cheap for the many pairs far apart
            bx0, by0 = max(x0, boxes[b, 0]), max(y0, boxes[b, 1])
            bx1, by1 = min(x1, boxes[b, 2]), min(y1, boxes[b, 3])
            if bx0 < bx1 and by0 < by1 and (masks[a, by0:by1, bx0:bx1]
                                            & masks[b, by0:by1, bx0:bx1]).any():
                neighbours[a] += 1
                neighbours[b] += 1
    return overlap_px, neighbours
