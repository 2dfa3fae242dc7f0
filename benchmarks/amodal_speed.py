"""Speed of the S1 amodal detector against torchvision's Mask R-CNN R50-FPN on the CPU.

Measures, in one run and on the same 500 x 500 input: median milliseconds per frame
(inference mode, batch of one, after warm-up), parameters, fp16 weight size and GFLOPs
(``torch.utils.flop_counter.FlopCounterMode``: convolutions and matrix products;
RoIAlign, NMS and mask pasting are not counted). Weights are random (nothing is
downloaded), so every model runs its heads on its maximum number of detections.

Rows:

* ``blastoseg amodal (default)``: :class:`AmodalConfig` defaults (working size 256,
  ResNet-18 layers 1-3, FPN 64, occlusion branch, VQ-VAE + refinement, <= 20 detections);
* ``maskrcnn_resnet50_fpn (torchvision defaults)``: resizes the frame to 800 px, <= 100
  detections: the paper's baseline architecture as torchvision ships it;
* ``maskrcnn_resnet50_fpn (500 px, 20 det.)``: the same network kept at the 500 px input
  and capped at 20 detections: the conservative comparison.

Usage::

    nice python benchmarks/amodal_speed.py [--frames 5] [--threads 1] [--size 500]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models.detection import maskrcnn_resnet50_fpn

from blastoseg.models.amodal_config import AmodalConfig
from blastoseg.models.amodal_rcnn import AmodalMaskRCNN


def _frame(size: int, channels: int, seed: int = 0) -> torch.Tensor:
    """A grey frame with a bright disc (an embryo-like blob) and noise, in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    r = ((y - size / 2) ** 2 + (x - size / 2) ** 2).sqrt()
    img = 0.4 + 0.2 * (r < size * 0.35).float() + 0.05 * torch.randn(size, size, generator=g)
    return img.clamp(0, 1)[None].expand(channels, -1, -1).contiguous()


def measure(name: str, model: torch.nn.Module, img: torch.Tensor, frames: int) -> dict:
    model.eval()
    with torch.inference_mode():
        model([img])  # warm-up
        times = []
        n_det = 0
        for _ in range(frames):
            t0 = time.perf_counter()
            out = model([img])
            times.append((time.perf_counter() - t0) * 1000.0)
            n_det = len(out[0]["boxes"])
        with FlopCounterMode(display=False) as fc:
            model([img])
    params = sum(p.numel() for p in model.parameters())
    return {"name": name, "ms": statistics.median(times), "params": params,
            "mb_fp16": params * 2 / 1e6, "gflops": fc.get_total_flops() / 1e9, "det": n_det}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=5, help="timed frames per model")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--size", type=int, default=500, help="input frame side in pixels")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    rows = [measure("blastoseg amodal (default)", AmodalMaskRCNN(AmodalConfig()),
                    _frame(args.size, 1), args.frames)]
    rows.append(measure("maskrcnn_resnet50_fpn (torchvision defaults)",
                        maskrcnn_resnet50_fpn(weights=None, weights_backbone=None),
                        _frame(args.size, 3), args.frames))
    rows.append(measure(f"maskrcnn_resnet50_fpn ({args.size} px, 20 det.)",
                        maskrcnn_resnet50_fpn(weights=None, weights_backbone=None,
                                              min_size=args.size, max_size=args.size,
                                              box_detections_per_img=20),
                        _frame(args.size, 3), args.frames))

    ours = rows[0]["ms"]
    print(f"CPU, torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"{args.size} x {args.size} input, median of {args.frames} frames after 1 warm-up")
    print()
    print("| model | ms / frame | x slower than ours | params (M) | fp16 MB | GFLOPs | "
          "detections |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['name']} | {r['ms']:.0f} | {r['ms'] / ours:.1f} | {r['params'] / 1e6:.2f} "
              f"| {r['mb_fp16']:.1f} | {r['gflops']:.1f} | {r['det']} |")


if __name__ == "__main__":
    main()
