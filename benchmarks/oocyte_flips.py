"""Test-time flips for an oocyte model: the class scores averaged over flipped copies of each
frame (flipped back), then the card's logit offsets and the arg-max, against the frame alone.

Prints, per flip set, the held-out metrics of ``blastoseg eval oocyte`` (accuracy, mIoU, IoU
per class, inclusions found and false ones) and the milliseconds per frame of the network
part (fitting, forward passes, mapping back; no measurements, no embryo check).

Usage::

    nice python benchmarks/oocyte_flips.py --data oocyte_data/test [--model oocyte-default]
        [--threads 1] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from blastoseg.io.dataset import read_dataset
from blastoseg.io.frames import grey_frame
from blastoseg.io.oocyte_classes import class_map
from blastoseg.predict.base import load_predictor
from blastoseg.predict.oocyte_input import class_scores_to_frame, fit_square
from blastoseg.predict.test_time_flips import FOUR_FLIPS, flip_averaged
from blastoseg.train.oocyte_task import evaluate_class_maps

#: flip sets: the dims of the (N, C, H, W) tensor each copy is flipped along ("all four" is
#: what ``OocytePredictor(flips=True)`` uses)
FLIPS = {"none": [()], "horizontal": [(), (-1,)], "horizontal + vertical": [(), (-1,), (-2,)],
         "all four": list(FOUR_FLIPS)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ds = read_dataset(args.data)
    predictor = load_predictor(args.model, "cpu", kind="oocyte", check_embryo=False)
    offsets = predictor.card.logit_offsets
    offsets = None if offsets is None else torch.tensor(offsets)[:, None, None]
    pairs = {k: [] for k in FLIPS}
    seconds = dict.fromkeys(FLIPS, 0.0)
    for i in range(len(ds)):
        truth = class_map(ds.instances(i), ds.categories)
        fitted, fit = fit_square(grey_frame(ds.load_image(i), min_side=16),
                                 predictor.card.working_size)
        x = torch.from_numpy(fitted[None, None]).to(predictor.device)
        for name, dims_list in FLIPS.items():
            t0 = time.perf_counter()
            with predictor.inference():
                scores = flip_averaged(predictor.model, x, dims_list)
            frame = class_scores_to_frame(scores[0].cpu(), fit)
            if offsets is not None:
                frame = frame + offsets
            labels = frame.argmax(0).numpy().astype(np.uint8)
            seconds[name] += time.perf_counter() - t0
            pairs[name].append((labels, truth))
    results = {}
    print(f"{predictor.entry.name} on {len(ds)} images of {args.data}, {args.threads} thread(s)")
    print("| flips | accuracy | mIoU | inclusion IoU | vacuole IoU | SER IoU | inclusions found "
          "(false) | ms / frame |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in FLIPS:
        r = evaluate_class_maps(pairs[name])
        r["ms_per_frame"] = 1000 * seconds[name] / len(ds)
        results[name] = r
        iou = r["iou"]
        print(f"| {name} | {r['accuracy']:.3f} | {r['mIoU']:.3f} | {iou['inclusion']:.3f} | "
              f"{iou['vacuole']:.3f} | {iou['ser_cluster']:.3f} | {r['inclusions_found']} / "
              f"{r['inclusions_total']} ({r['false_inclusions']}) | {r['ms_per_frame']:.0f} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
