"""The morphokinetic timeline on synthetic time-lapses whose division times are known.

Renders ``--videos`` time-lapses of ``--frames`` frames (500 x 500, seeds 900000 + i, so the
same embryos every run and none of the training seeds), counts every frame with ``--model``
(a "count" or "amodal" model; an amodal one fused with ``--density-model`` when given, as
``blastoseg timeline`` does by default), decodes the counts into stages and events
(:mod:`blastoseg.measure.timeline`) and compares them with the truth: the generator's cell
count per frame decoded the same way (t<k> = the first frame with k cells or more, so a
perfect counter scores 0 h whatever the frame spacing).

Prints the event MAE per event and overall (hours), the stage accuracy per frame before
decoding (rounded estimate) and after, and the counting time per frame (rendering excluded)
with the time a 500-frame time-lapse would take. Goals (issue 15): event MAE <= 1 h, stage
accuracy after decoding >= 95 %, 500 frames of 500 x 500 in under a minute.

Usage::

    nice python benchmarks/timeline_benchmark.py --model amodal-default --videos 4 \\
        --frames 80 [--device cpu] [--count-stacked] [--density-model M] [--steady N]
        [--json OUT] [--flips [4|8]]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from blastoseg.commands.options import add_flips_option
from blastoseg.measure.frame_counts import iter_frame_counts
from blastoseg.measure.timeline import build_timeline
from blastoseg.metrics.timeline import timeline_metrics
from blastoseg.predict.fused_counter import load_counter
from blastoseg.progress import run_with_progress
from blastoseg.synth import render_timelapse

SEED0 = 900000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="amodal-default")
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--frames", type=int, default=80)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    ap.add_argument("--count-stacked", action="store_true",
                    help="an amodal model counts with its card's layer rule switched on")
    ap.add_argument("--density-model", default=None,
                    help="a count model fused with the amodal --model (predict/fused_counter.py)")
    ap.add_argument("--steady", type=int, default=0,
                    help="steady framing: the running median of the localiser's circles over "
                         "this many frames (0: every frame localised alone)")
    add_flips_option(ap)
    args = ap.parse_args()

    predictor = load_counter(args.model, args.density_model, fuse=args.density_model is not None,
                             device=args.device, count_stacked=True if args.count_stacked else None,
                             flips=args.flips)
    predicted, truth, spacing = [], [], []
    count_seconds = 0.0
    for v in range(args.videos):
        lapse = render_timelapse(args.frames, seed=SEED0 + v)
        hours = np.asarray(lapse.meta["hours"], float)
        spacing.append(float(np.median(np.diff(hours))))
        start = time.perf_counter()
        counts = run_with_progress(iter_frame_counts(predictor, lapse.images,
                                                      steady=args.steady))
        count_seconds += time.perf_counter() - start
        pred = build_timeline([c.estimate for c in counts], hours, time_source="synthetic")
        true = build_timeline(lapse.meta["counts"], hours, time_source="synthetic")
        predicted.append(pred)
        truth.append(true)
        m = timeline_metrics([pred], [true])
        print(f"video {v} (seed {SEED0 + v}): event MAE "
              f"{m['event_mae_h'] if m['event_mae_h'] is None else round(m['event_mae_h'], 2)} h, "
              f"stages {100 * m['stage_accuracy']:.1f} % (raw {100 * m['stage_accuracy_raw']:.1f} %)",
              flush=True)
    metrics = timeline_metrics(predicted, truth)
    per_frame = count_seconds / metrics["n_frames"]
    result = {**metrics, "model": predictor.entry.name, "kind": predictor.kind,
              "count_stacked": bool(args.count_stacked), "steady": args.steady,
              "flips": args.flips,
              "device": predictor.device_name, "frames_per_video": args.frames,
              "median_frame_spacing_h": float(np.median(spacing)),
              "seconds_per_frame": per_frame, "seconds_for_500_frames": 500 * per_frame}
    print(f"\n{predictor.entry.name} ({predictor.kind}) on {predictor.device_name}: {args.videos} videos x "
          f"{args.frames} frames, frames every {result['median_frame_spacing_h']:.2f} h")
    print("| event | MAE (h) |\n|---|---|")
    for k, v in metrics["event_mae_h_by_event"].items():
        print(f"| {k} | {'-' if v is None else f'{v:.2f}'} |")
    mae = metrics["event_mae_h"]
    print(f"| all (t2..t8) | {'-' if mae is None else f'{mae:.2f}'} |")
    print(f"\nevents matched {metrics['events_matched']}, missed {metrics['events_missed']}, "
          f"extra {metrics['events_extra']}")
    print(f"stage accuracy: before decoding {100 * metrics['stage_accuracy_raw']:.1f} %, after "
          f"{100 * metrics['stage_accuracy']:.1f} %")
    print(f"counting: {per_frame:.3f} s per frame -> {500 * per_frame:.0f} s for 500 frames")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
