"""The cost of calling ``blastoseg.segment_amodal`` again, against torchvision's Mask R-CNN.

Issue 14: a user looping over frames with ``segment_amodal(frame)`` used to pay for loading the
weights on every call. Now the loaded predictor is kept (``predict.base.load_predictor``), so
the first call loads and the next ones only run. In one process, on one synthetic 500 x 500
embryo frame, batch of one, ``--threads`` torch threads (2 by default):

1. first call of ``segment_amodal`` (loads the shipped ``amodal-default``, then segments);
2. second call (same frame; the cached predictor);
3. median of ``--repeats`` further calls;
4. torchvision ``maskrcnn_resnet50_fpn`` (random weights: nothing is downloaded; inference
   mode) on the same frame at 500 px (``min_size = max_size = 500``, <= 20 detections, the
   conservative baseline) and with torchvision's defaults (resized to 800 px, <= 100
   detections): median ms per frame after one warm-up.

Imports happen before any timing. Usage::

    nice python benchmarks/segment_call_speed.py [--threads 2] [--repeats 5] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000.0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=900004)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import numpy as np
    import torch
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    import blastoseg
    from blastoseg.synth import render_embryo

    torch.set_num_threads(args.threads)
    frame = render_embryo(5, seed=args.seed).image
    assert frame.shape[:2] == (500, 500), frame.shape

    first = _timed(lambda: blastoseg.segment_amodal(frame, device="cpu"))
    second = _timed(lambda: blastoseg.segment_amodal(frame, device="cpu"))
    later = statistics.median(_timed(lambda: blastoseg.segment_amodal(frame, device="cpu"))
                              for _ in range(args.repeats))

    img = torch.from_numpy(np.repeat(frame[None].astype(np.float32) / 255.0, 3, axis=0))
    rows = {}
    for name, kw in (("maskrcnn_resnet50_fpn (500 px, 20 detections)",
                      {"min_size": 500, "max_size": 500, "box_detections_per_img": 20}),
                     ("maskrcnn_resnet50_fpn (torchvision defaults, 800 px)", {})):
        net = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, **kw).eval()
        with torch.inference_mode():
            net([img])  # warm-up
            rows[name] = statistics.median(
                _timed(lambda net=net: net([img])) for _ in range(args.repeats))

    print(f"## `segment_amodal` called again vs torchvision Mask R-CNN\n\n500 x 500 synthetic "
          f"frame (5 cells), batch 1, {args.threads} torch threads, CPU "
          f"{platform.processor() or platform.machine()}, torch {torch.__version__}\n")
    print("| call | ms |\n|---|---:|")
    print(f"| `segment_amodal`, first call (loads the model) | {first:.0f} |")
    print(f"| `segment_amodal`, second call (cached predictor) | {second:.0f} |")
    print(f"| `segment_amodal`, median of {args.repeats} further calls | {later:.0f} |")
    for name, ms in rows.items():
        print(f"| {name}, median | {ms:.0f} |")
    base = rows["maskrcnn_resnet50_fpn (500 px, 20 detections)"]
    print(f"\nsecond / first call: {second / first:.2f} (goal <= 0.5); Mask R-CNN 500 px / "
          f"segment_amodal: {base / later:.1f}x (goal >= 4x)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"first_ms": first, "second_ms": second, "median_ms": later,
                       "threads": args.threads, "maskrcnn_ms": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
