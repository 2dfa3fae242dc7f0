"""Counting stacked cells with test-time flips: `amodal-default` with its layer rule on
(``count_stacked=True``, the CLI's ``--count-stacked``), with 0, 4 or 8 flips, on the 200
held-out synthetic frames of ``amodal_benchmark.py`` (seeds 900000-900199, 1-8 cells) and the
16 real crops of ``real_counts.py``. Counts at the model card's threshold.

    python benchmarks/stacked_flips.py [--flips 0,4,8] [--threads 2]

Prints one markdown row per setting: exact / within one / MAE / bias on each set, and exact
by cell count on the synthetic frames. See docs/models/amodal.md#test-time-flips.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from amodal_benchmark import DEFAULT_SEED, render_frames  # noqa: E402
from real_counts import DEFAULT_REAL, find_images  # noqa: E402


def summary(pred: np.ndarray, true: np.ndarray) -> str:
    err = pred - true
    return (f"{100 * (err == 0).mean():.1f} % / {100 * (abs(err) <= 1).mean():.1f} % / "
            f"{abs(err).mean():.2f} / {err.mean():+.2f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flips", default="0,4,8", help="comma-separated settings (0, 4, 8)")
    ap.add_argument("--model", default="amodal-default")
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--real", type=Path, default=DEFAULT_REAL)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)

    import torch

    from blastoseg.io import read_image
    from blastoseg.predict.amodal import AmodalPredictor

    if args.threads:
        torch.set_num_threads(args.threads)
    images, gts, _ = render_frames(args.frames, DEFAULT_SEED, 500, lambda *a: None)
    true = np.array([len(g) for g in gts])
    found, _ = find_images(args.real)
    real = [read_image(p) for _, p, _ in found]
    real_true = np.array([n for _, _, n in found])
    print(f"## Stacked cells with test-time flips: `{args.model}`, layer rule on\n")
    print("| flips | held-out synthetic exact / within 1 / MAE / bias | exact by cell count "
          "1-8 | real crops exact / within 1 / MAE / bias | s |")
    print("|---:|---|---|---|---:|")
    for flips in (int(f) for f in args.flips.split(",")):
        p = AmodalPredictor(args.model, device="cpu", count_stacked=True, flips=flips)
        thr = p.calibrated_threshold
        t0 = time.perf_counter()
        pred = np.array([int((p.predict(im).scores >= thr).sum()) for im in images])
        real_pred = np.array([int((p.predict(im).scores >= thr).sum()) for im in real])
        by = " / ".join(f"{100 * (pred[true == n] == n).mean():.0f}"
                        for n in range(1, 9) if (true == n).any())
        print(f"| {flips} | {summary(pred, true)} | {by} % | {summary(real_pred, real_true)} | "
              f"{time.perf_counter() - t0:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
