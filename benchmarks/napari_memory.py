"""Memory of the segmentation result layers for a long time-lapse (issue 4: "a 500-frame
500 x 500 time-lapse with up to 8 cells must not need more than a few times the image's own
memory").

What it does:

1. Renders a ``--frames``-frame synthetic time-lapse (``iter_timelapse``, seed ``--seed``),
   ``--size`` px square, 8-bit; the image itself is the reference memory.
2. Builds the napari result layers exactly as the "Segment blastomeres" widget does
   (:func:`blastoseg.napari._segment_widget.segment_job`: every frame streams into a
   :class:`ResultLayerBuilder` and is dropped), from either the ground truth (``--source
   truth``, fast) or the model (``--source model``: the real predictor, end to end).
3. Reports: bytes held by the layers (compressed) and what the same layers would need as plain
   arrays; the process's peak RSS before and after building; ms per frame to decode a frame
   (what scrubbing the time slider costs per layer) and to write one (a paint stroke).

Usage::

    nice python benchmarks/napari_memory.py [--frames 500] [--size 500] [--seed 7]
        [--source truth|model] [--model amodal-default] [--threads N]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time

import numpy as np


def peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 / (1024 if sys.platform == "darwin" else 1)


def held_mb(data) -> float:
    n = getattr(data, "compressed_nbytes", None)
    return (n if n is not None else np.asarray(data).nbytes) / 2**20


class TruthPredictor:
    """Stands in for AmodalPredictor: hands out the ground truth frame by frame."""

    device_name = "ground truth"

    def __init__(self, instances) -> None:
        self.instances = instances

    def iter_predict(self, frames, on_result=None):
        for i in range(len(frames)):
            on_result(i, self.instances[i])
            if i % 4 == 3 or i == len(frames) - 1:
                yield i + 1, len(frames)
        return []


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=500)
    ap.add_argument("--size", type=int, default=500)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--source", choices=("truth", "model"), default="truth")
    ap.add_argument("--model", default="amodal-default")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)

    from blastoseg.napari._segment_widget import segment_job
    from blastoseg.napari.result_layers import Placement
    from blastoseg.synth import EmbryoConfig, iter_timelapse

    cfg = EmbryoConfig(image_size=(args.size, args.size))
    images, truth = [], []
    t0 = time.perf_counter()
    for fr in iter_timelapse(args.frames, args.seed, cfg):
        images.append(fr.image)
        if args.source == "truth":
            truth.append(fr.instances)
        else:
            truth.append(len(fr.instances))
    stack = np.stack(images)
    del images
    counts = [len(t) if args.source == "truth" else t for t in truth]
    print(f"rendered {args.frames} frames in {time.perf_counter() - t0:.0f} s "
          f"({min(counts)}-{max(counts)} true cells)", file=sys.stderr)
    image_mb = stack.nbytes / 2**20
    rss_before = peak_rss_mb()

    if args.source == "truth":
        predictor = TruthPredictor(truth)
    else:
        import torch

        from blastoseg.predict.amodal import AmodalPredictor

        if args.threads:
            torch.set_num_threads(args.threads)
        predictor = AmodalPredictor(args.model, device="cpu")
        truth = None
    placement = Placement(axes="T")
    t0 = time.perf_counter()
    gen = segment_job(stack, "T", (0, args.frames), "best focus", lambda: predictor,
                      "embryo", placement)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            result = stop.value
            break
    build_s = time.perf_counter() - t0
    truth = None
    layers = result["builder"].layer_data()
    rss_after = peak_rss_mb()

    rows, held_total, plain_total = [], 0.0, 0.0
    for data, kwargs, kind in layers:
        if kind == "points":
            continue
        held = held_mb(data)
        plain = int(np.prod(data.shape)) * np.dtype(data.dtype).itemsize / 2**20
        held_total += held
        plain_total += plain
        rows.append((kwargs["name"], kind, held, plain))

    amodal = [d for d, k, kind in layers if kind == "labels" and "amodal" in k["name"]]
    read_ms, write_ms = [], []
    for t in range(0, args.frames, max(1, args.frames // 50)):
        for d in amodal:
            d._cache.clear()  # time a cold decode, as when the slider jumps to a new frame
            t1 = time.perf_counter()
            plane = d[t]
            read_ms.append((time.perf_counter() - t1) * 1000)
            t1 = time.perf_counter()
            d[t] = plane
            write_ms.append((time.perf_counter() - t1) * 1000)

    pred_counts = result["builder"].counts
    print(f"## Result-layer memory: {args.frames}-frame {args.size} x {args.size} time-lapse "
          f"(source: {args.source if args.source == 'truth' else args.model})")
    print()
    print(f"True cells {min(counts)}-{max(counts)}; result cells {min(pred_counts)}-"
          f"{max(pred_counts)}; {len(amodal)} amodal layers; built in {build_s:.1f} s "
          f"({1000 * build_s / args.frames:.1f} ms / frame, streaming).")
    print()
    print("| layer | type | held (MiB) | as plain array (MiB) |")
    print("|---|---|---:|---:|")
    for name, kind, held, plain in rows:
        print(f"| {name} | {kind} | {held:.2f} | {plain:.0f} |")
    print(f"| **all result layers** | | **{held_total:.1f}** | **{plain_total:.0f}** |")
    print()
    print("| measure | value |")
    print("|---|---:|")
    print(f"| image (uint8) | {image_mb:.0f} MiB |")
    print(f"| result layers held / image | {held_total / image_mb:.3f} x |")
    print(f"| same layers as plain arrays / image | {plain_total / image_mb:.1f} x |")
    print(f"| peak RSS before segmenting (image rendered, ground truth held) | "
          f"{rss_before:.0f} MiB |")
    print(f"| peak RSS after building the layers | {rss_after:.0f} MiB |")
    print(f"| decode one amodal frame (median, cold) | {statistics.median(read_ms):.2f} ms |")
    print(f"| re-encode one amodal frame (median, a paint stroke) | "
          f"{statistics.median(write_ms):.2f} ms |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
