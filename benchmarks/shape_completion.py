"""How well does "complete shape" recover an occluded cell's amodal mask from its visible part?

On synthetic embryos (``blastoseg.synth.render_embryo``, 4-8 cells; the default seeds
20000.. were used to choose the circle/ellipse test of ``complete.py``, check on others with
``--seed``) every occluded cell (visible part < 95 %
of its amodal mask) is completed from its visible mask with
:func:`blastoseg.annotate.complete.complete_shape`, and the mean IoU to the true amodal mask is
reported for:

- the visible mask itself (no completion);
- the prior alone: the visible mask encoded / decoded in its own box (no ellipse);
- a plain direct ellipse fit to the outline pixels on the convex hull;
- the edge fit alone (circle or ellipse through the real-edge pixels, ``shape_prior=None``)
  and edge fit + prior (the default), each without and with the ``hidden`` region (union of
  the other cells' amodal masks);
- the true amodal box given (as if the user dragged the box), without and with the prior.

Prints a markdown table (overall and by visible fraction). Run (CPU, 1 thread, ~1 minute)::

    OMP_NUM_THREADS=1 nice python benchmarks/shape_completion.py --frames 30
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from blastoseg.annotate.complete import (
    _box_of,
    _project,
    complete_shape,
    edge_points,
    load_prior,
)
from blastoseg.annotate.shapes import ellipse_from_points
from blastoseg.errors import BlastosegError
from blastoseg.synth import render_embryo


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def plain_ellipse(v: np.ndarray) -> np.ndarray:
    """A direct least-squares ellipse through the convex-hull edge pixels, nothing more."""
    pts = edge_points(v)
    try:
        return ellipse_from_points(pts).mask(v.shape) | v
    except BlastosegError:
        return v


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--seed", type=int, default=20000)
    ap.add_argument("--prior", default="shape-prior-default")
    args = ap.parse_args()
    torch.set_num_threads(1)
    vq = load_prior(args.prior, "cpu")

    methods = {
        "visible mask (no completion)": lambda v, hid, box: v,
        "prior alone (visible mask, own box)": lambda v, hid, box: (
            _project(vq, v, _box_of(v)) >= 0.5) | v,
        "plain ellipse fit (convex-hull edge pixels)": lambda v, hid, box: plain_ellipse(v),
        "edge fit": lambda v, hid, box: complete_shape(v, None),
        "edge fit + prior": lambda v, hid, box: complete_shape(v, vq),
        "edge fit, hidden given": lambda v, hid, box: complete_shape(v, None, hidden=hid),
        "edge fit + prior, hidden given": lambda v, hid, box: complete_shape(v, vq, hidden=hid),
        "box given, hidden given": lambda v, hid, box: complete_shape(
            v, None, box=box, hidden=hid),
        "box given + prior, hidden given": lambda v, hid, box: complete_shape(
            v, vq, box=box, hidden=hid),
    }
    rows: list[tuple[float, list[float]]] = []
    seconds = dict.fromkeys(methods, 0.0)
    for k in range(args.frames):
        inst = render_embryo(4 + k % 5, seed=args.seed + k).instances
        boxes = inst.boxes
        for i, (m, v) in enumerate(zip(inst.masks, inst.visible_masks, strict=True)):
            frac = v.sum() / m.sum()
            if frac >= 0.95 or not v.any():
                continue
            hid = np.delete(inst.masks, i, axis=0).any(axis=0)
            scores = []
            for name, fn in methods.items():
                t = time.perf_counter()
                out = fn(v, hid, boxes[i])
                seconds[name] += time.perf_counter() - t
                assert out.shape == v.shape and not (v & ~out).any()
                scores.append(iou(out, m))
            rows.append((float(frac), scores))

    fr = np.array([r[0] for r in rows])
    sc = np.array([r[1] for r in rows])
    bins = [(0.0, 0.3), (0.3, 0.6), (0.6, 0.95)]
    head = ["method", f"all ({len(fr)})"] + [
        f"visible {lo:.0%}-{hi:.0%} ({int(((fr >= lo) & (fr < hi)).sum())})" for lo, hi in bins]
    print(f"{args.frames} frames, seeds {args.seed}..{args.seed + args.frames - 1}, "
          f"{len(fr)} occluded cells; mean IoU to the true amodal mask\n")
    print("| " + " | ".join(head + ["ms / cell"]) + " |")
    print("|" + "---|" * (len(head) + 1))
    for j, name in enumerate(methods):
        cells = [f"{sc[:, j].mean():.3f}"]
        for lo, hi in bins:
            sel = (fr >= lo) & (fr < hi)
            cells.append(f"{sc[sel, j].mean():.3f}" if sel.any() else "-")
        ms = 1000 * seconds[name] / max(len(fr), 1)
        print(f"| {name} | " + " | ".join(cells) + f" | {ms:.0f} |")


if __name__ == "__main__":
    main()
