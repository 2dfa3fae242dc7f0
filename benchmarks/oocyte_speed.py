"""Seconds per 512 x 512 oocyte image of an oocyte model on this CPU (issue 16 goal: < 0.5 s).

Renders ``--frames`` synthetic 512 x 512 oocytes (seeds 730000+), runs the predictor frame by
frame after one warm-up (class map back at 512 x 512 and the measurements included) with 1
and 2 torch threads, without and with the "looks like an embryo" check (the blastomere
detector run beside it, the default of ``segment oocyte``), and prints the median and the
slowest frame. ``--flips`` adds the rows with test-time flips (``segment oocyte --flips``).

    nice python benchmarks/oocyte_speed.py --model oocyte-default [--frames 10] [--flips]
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="oocyte-default")
    p.add_argument("--frames", type=int, default=10)
    p.add_argument("--flips", action="store_true", help="also time test-time flips")
    args = p.parse_args()
    import torch

    from blastoseg.predict.oocyte import OocytePredictor
    from blastoseg.synth.oocyte import OocyteConfig, render_oocyte

    cfg = OocyteConfig(image_size=(512, 512))
    frames = [render_oocyte(730_000 + i, cfg).image for i in range(args.frames)]
    print(f"model {args.model}, {args.frames} frames of 512 x 512")
    print("| torch threads | flips | embryo check | median s / frame | slowest s |")
    print("|---|---|---|---|---|")
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for flips, check in [(False, False), (False, True)] + (
                [(True, False), (True, True)] if args.flips else []):
            pred = OocytePredictor(args.model, device="cpu", batch_size=1,
                                   check_embryo=check, flips=flips)
            pred.predict(frames[0])
            times = []
            for f in frames:
                t0 = time.perf_counter()
                pred.predict(f)
                times.append(time.perf_counter() - t0)
            print(f"| {threads} | {'on' if flips else 'off'} | {'on' if check else 'off'} | "
                  f"{statistics.median(times):.3f} | {max(times):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
