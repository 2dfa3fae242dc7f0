"""Cell-Net counting (kind ``count``, S2) on held-out synthetic embryos, against the amodal
detector's count on the same frames (issue 15, Goals).

Renders ``--frames`` synthetic ``--size`` x ``--size`` frames with
:func:`blastoseg.synth.render_embryo`, frame ``i`` with seed ``--seed + i`` (900000 + i by
default, as ``benchmarks/amodal_benchmark.py``: apart from every training seed) and
``1 + i % 8`` cells. The truth is each frame's amodal masks (count = number of masks,
centres = mask centroids, input pixels).

Prints, for the count model: stage accuracy (exact count) overall and by true cell count,
count MAE, within-one, detection rate (true centres matched within 10 px, Hungarian),
misses (predicted centres > 10 px from every true centre), perfect localisations (< 3 px),
mean Euclidean distance (ED, px) and ms per frame (framing + model + mapping back, batch of
``--batch-size``, rendering untimed); then the same counts and detection for the amodal
detector (``--amodal``, instances at its calibrated threshold, centres = mask centroids).
Last, the fusion of both (:mod:`blastoseg.predict.count_fusion`: uncounted density peaks
recover low-scored instances, unsupported instances are dropped): exact count for density
alone, instances alone and fused. ``--json OUT`` writes every number.

Usage::

    nice python benchmarks/count_benchmark.py --model count-default [--amodal amodal-default]
        [--frames 200] [--seed 900000] [--size 500] [--threads N] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_SEED = 900_000


def render(n_frames: int, base_seed: int, size: int):
    from blastoseg.synth import EmbryoConfig, render_embryo

    cfg = EmbryoConfig(image_size=(size, size))
    frames, truth = [], []
    for i in range(n_frames):
        fr = render_embryo(1 + i % 8, seed=base_seed + i, config=cfg)
        c = fr.instances.centroids
        frames.append(fr.image)
        truth.append(c[np.all(np.isfinite(c), axis=1)])
        print(f"\rrendered {i + 1}/{n_frames}", end="", file=sys.stderr)
    print(file=sys.stderr)
    return frames, truth


def run_model(predictor, frames) -> tuple[list, float]:
    """All frames through ``iter_predict``; (results, ms per frame) after one warm-up."""
    from blastoseg.progress import run_with_progress

    predictor.predict(frames[0])  # warm-up (untimed)
    t0 = time.perf_counter()
    results = run_with_progress(predictor.iter_predict(frames), None, None)
    return results, 1000 * (time.perf_counter() - t0) / len(frames)


def summarise(truth, counts, points) -> dict:
    from blastoseg.metrics.counting_density import evaluate_density_counts

    r = evaluate_density_counts(truth, counts, points)
    by = {}
    for n in sorted({len(t) for t in truth}):
        idx = [k for k, t in enumerate(truth) if len(t) == n]
        sub = evaluate_density_counts([truth[k] for k in idx], [counts[k] for k in idx],
                                      [points[k] for k in idx])
        by[n] = {k: sub[k] for k in ("n_images", "count_exact", "count_mae", "detection_rate",
                                     "ed_px")}
    r["by_count"] = by
    return r


def fmt(v, pct: bool = False) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.1f} %" if pct else f"{v:.2f}"


def table(name: str, r: dict) -> str:
    lines = [f"### {name}", "",
             "| cells | frames | stage accuracy | count MAE | detection | ED (px) |",
             "|---|---|---|---|---|---|"]
    for n, row in r["by_count"].items():
        lines.append(f"| {n} | {row['n_images']} | {fmt(row['count_exact'], True)} | "
                     f"{fmt(row['count_mae'])} | {fmt(row['detection_rate'], True)} | "
                     f"{fmt(row['ed_px'])} |")
    lines.append(f"| **1-8** | {r['n_images']} | **{fmt(r['count_exact'], True)}** | "
                 f"{fmt(r['count_mae'])} | **{fmt(r['detection_rate'], True)}** | "
                 f"**{fmt(r['ed_px'])}** |")
    lines += ["", f"within one: {fmt(r['count_within1'], True)}; misses: {r['misses']} of "
                  f"{r['n_pred']} predicted centres ({fmt(r['miss_rate'], True)}); perfect "
                  f"(< 3 px): {fmt(r['perfect_rate'], True)} of true centres; "
                  f"{r['ms_per_frame']:.1f} ms/frame", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="count-default")
    ap.add_argument("--amodal", default="amodal-default",
                    help="amodal model to compare with ('none' to skip)")
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--size", type=int, default=500)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from blastoseg.predict.amodal import AmodalPredictor
    from blastoseg.predict.count import CountPredictor

    frames, truth = render(args.frames, args.seed, args.size)
    out = {"frames": args.frames, "seed": args.seed, "size": args.size,
           "threads": torch.get_num_threads()}
    counter = CountPredictor(args.model, device=args.device, batch_size=args.batch_size)
    results, ms = run_model(counter, frames)
    r = summarise(truth, [x.count for x in results], [x.centroids for x in results])
    r["ms_per_frame"] = ms
    out["count"] = {"model": counter.entry.name, **r}
    print(f"## Cell-Net `{counter.entry.name}` on {args.frames} held-out synthetic frames "
          f"({args.size} px, seeds {args.seed}+i, {out['threads']} torch threads)\n")
    print(table(f"density count ({counter.entry.name})", r))
    if args.amodal != "none":
        from blastoseg.predict.count_fusion import fuse_counts

        # candidates down to 0.05 for the fusion; the detector's own count at its threshold
        amodal = AmodalPredictor(args.amodal, device=args.device, batch_size=4,
                                 score_threshold=0.05)
        thr = amodal.calibrated_threshold
        res, ms = run_model(amodal, frames)
        counted = [x.select(x.scores >= thr) for x in res]
        ra = summarise(truth, [len(x) for x in counted], [x.centroids for x in counted])
        ra["ms_per_frame"] = ms
        out["amodal"] = {"model": amodal.entry.name, "count_threshold": thr, **ra}
        print(table(f"amodal instances ({amodal.entry.name}, score >= {thr:.2f})", ra))
        fused = [fuse_counts(d, x, count_threshold=thr) for d, x in zip(results, res,
                                                                        strict=True)]
        rf = summarise(truth, [f.count for f in fused], [f.instances.centroids for f in fused])
        rf["ms_per_frame"] = out["count"]["ms_per_frame"] + ms
        out["fused"] = rf
        print(table("fused (density count + amodal instances, predict/count_fusion.py)", rf))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
