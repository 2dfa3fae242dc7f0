"""Speed of the probability-map preview (issue 6 goal: an update within 200 ms of an edit on
a 1024 x 1024 label image with 50 cells).

For every variant: the full computation (``probability_map``) and one incremental update of
``ProbabilityMapCache`` after editing one cell (a disc painted over a cell's edge, growing it
and cutting into a neighbour), the median of several edits. Also checks that the incremental
map equals the full one. Prints a markdown table.

    python benchmarks/probability_preview_speed.py [--size 1024] [--cells 50] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from skimage.draw import disk, ellipse

from blastoseg.targets.probability import (
    PROBABILITY_VARIANTS,
    ProbabilityMapCache,
    probability_map,
)


def random_labels(size: int, n: int, rng: np.random.Generator, layers: int = 1
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``layers`` label layers (K, H, W) holding ``n`` random ellipses (cell ``label`` in
    layer ``label % layers``, so cells of different layers overlap) and a nucleus mask."""
    labels = np.zeros((layers, size, size), dtype=np.int32)
    nuclei = np.zeros((size, size), dtype=bool)
    r = size / (2.2 * np.sqrt(n))
    for label in range(1, n + 1):
        cy, cx = rng.uniform(r, size - r, 2)
        a, b = rng.uniform(0.7 * r, 1.4 * r, 2)
        rr, cc = ellipse(cy, cx, a, b, shape=nuclei.shape, rotation=rng.uniform(0, np.pi))
        labels[label % layers, rr, cc] = label
        rr, cc = disk((cy, cx), 0.25 * min(a, b), shape=nuclei.shape)
        nuclei[rr, cc] = True
    return labels, nuclei


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--cells", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    probability_map(np.ones((8, 8), np.int32))  # warm-up (imports)
    print(f"{args.size} x {args.size}, {args.cells} cells, median of {args.repeats} edits\n")
    print("| input | variant | full compute (ms) | one-edit update (ms) | equal to full |")
    print("|---|---|---:|---:|---|")
    for layers in (1, 2):
        labels, nuclei = random_labels(args.size, args.cells, rng, layers)
        run(labels, nuclei, args, rng)


def run(labels: np.ndarray, nuclei: np.ndarray, args, rng: np.random.Generator) -> None:
    name = ("one label image" if len(labels) == 1
            else f"{len(labels)} label layers (overlapping cells)")
    present = [(k, v) for k in range(len(labels)) for v in np.unique(labels[k]) if v > 0]
    for variant in PROBABILITY_VARIANTS:
        t0 = time.perf_counter()
        probability_map(labels, variant, nuclei=nuclei)
        full_ms = 1000 * (time.perf_counter() - t0)
        cache = ProbabilityMapCache(variant, nuclei=nuclei)
        cache.update(labels)
        work = labels.copy()
        times = []
        for _ in range(args.repeats):
            k, label = present[rng.integers(len(present))]
            ys, xs = np.nonzero(work[k] == label)
            if not len(ys):
                continue
            j = rng.integers(len(ys))
            rr, cc = disk((ys[j], xs[j]), args.size / 40, shape=nuclei.shape)
            work[k, rr, cc] = label
            t0 = time.perf_counter()
            p = cache.update(work)
            times.append(1000 * (time.perf_counter() - t0))
        equal = np.array_equal(p, probability_map(work, variant, nuclei=nuclei))
        print(f"| {name} | {variant} | {full_ms:.1f} | {np.median(times):.1f} | {equal} |")


if __name__ == "__main__":
    main()
