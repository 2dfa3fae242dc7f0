"""Brightfield instances on frames larger than the training frames: whole-frame inference vs
windows of the training size (the card's ``inference`` block).

The SparseSEU-Net's N activation maps are learnt on frames of the training crop's size
(``brightfield-default``: 512 px frames at scale 0.25 = 128 working px). This renders
``--n`` synthetic scenes of ``--size`` px (default 1024) with the training look (cells
90-220 px long) and 4x the cells of a 512 px field (16-44), runs the model once per setting
of ``--settings`` (``whole`` = one pass over the whole frame; ``W/O`` = windows of W working
px overlapping by O) and prints COCO mask AP (all predictions >= 0.05), cells found at the
card's score threshold against the annotated count, and ms per frame.

Usage::

    nice python benchmarks/brightfield_large_frames.py [--model brightfield-default] \\
        [--n 6] [--size 1024] [--settings whole,128/64,160/80] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

SCENE = {"cell_length_px": [90.0, 220.0], "n_cells": [16.0, 44.0]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="brightfield-default")
    ap.add_argument("--n", type=int, default=6)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=100)
    ap.add_argument("--settings", default="whole,128/64,160/80")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)

    import torch

    from blastoseg.metrics.coco_eval import evaluate_masks
    from blastoseg.predict.brightfield import BrightfieldPredictor
    from blastoseg.synth.brightfield import BrightfieldConfig, render_brightfield

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = BrightfieldConfig.from_dict({**BrightfieldConfig().to_dict(), **SCENE})
    scenes = [render_brightfield(args.seed + s, cfg.for_size(args.size)) for s in range(args.n)]
    gt = [sc.instances for sc in scenes]
    print(f"{args.n} synthetic {args.size} px scenes (seeds {args.seed}..), model "
          f"{args.model}; AP of all predictions >= 0.05, cells found at the card's threshold\n")
    print("| inference | AP | AP50 | AP75 | cells found / annotated | ms per frame |")
    print("|---|---:|---:|---:|---:|---:|")
    for setting in args.settings.split(","):
        kw = {"max_side": 1_000_000} if setting == "whole" else dict(
            zip(("max_side", "tile_overlap"), (int(v) for v in setting.split("/")), strict=True))
        predictor = BrightfieldPredictor(args.model, device="cpu", score_threshold=0.05, **kw)
        card_threshold = BrightfieldPredictor(args.model, device="cpu").score_threshold
        predictor.predict(scenes[0].planes[0])  # warm-up
        start = time.perf_counter()
        pred = [predictor.predict(sc.planes[0]) for sc in scenes]
        ms = 1000.0 * (time.perf_counter() - start) / len(scenes)
        r = evaluate_masks(gt, pred)
        found = sum(int((p.scores >= card_threshold).sum()) for p in pred)
        label = "whole frame" if setting == "whole" else f"windows {kw['max_side']} px, " \
            f"overlap {kw['tile_overlap']}"
        print(f"| {label} | {r['mAP']:.3f} | {r['AP50']:.3f} | {r['AP75']:.3f} | "
              f"{found} / {sum(len(g) for g in gt)} | {ms:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
