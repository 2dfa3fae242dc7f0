"""Overlap F1 of overlap models over a range of thresholds, on held-out sets.

The thesis compares loss variants at one overlap threshold (0.3), but a focal-trained head and
a BCE-trained head are calibrated differently, so one threshold can favour one of them. This
script gives, per model and set, the F1 at every threshold of ``--thresholds`` and the best
one ("oracle" threshold chosen on the set itself: optimistic, but alike for every row, like
the ODS score of edge detection). Markdown to stdout, ``--json OUT`` keeps every number.

Usage::

    nice python benchmarks/overlap_threshold_sweep.py \\
        --models ../runs/overlap/heads/5_heads,../runs/overlap/probability/none,... \\
        --eval synthetic=../data/bf_val,isbi=../data/isbi_val [--json OUT]

A model is a registered name, a ``.safetensors`` path, or a job folder (its ``output/``
weights).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

DEFAULT_THRESHOLDS = "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8"


def resolve(model: str) -> str:
    folder = Path(model)
    if (folder / "output").is_dir():
        found = sorted((folder / "output").glob("*.safetensors"))
        if found:
            return str(found[0])
    return model


def sweep(model: str, data: str, thresholds: list[float]) -> dict[str, float]:
    from blastoseg.io.dataset import read_dataset
    from blastoseg.predict.overlap import OverlapPredictor
    from blastoseg.targets.heads import head_targets

    predictor = OverlapPredictor(resolve(model), device="cpu")
    ds = read_dataset(data)
    tp = np.zeros(len(thresholds))
    npred = np.zeros(len(thresholds))
    npos = 0
    for i in range(len(ds)):
        prob = predictor.predict(ds.load_image(i)).probabilities["overlap"]
        target = head_targets(ds.instances(i), None, heads=["overlap"])["overlap"] > 0.5
        npos += int(target.sum())
        for k, t in enumerate(thresholds):
            pred = prob >= t
            tp[k] += int((pred & target).sum())
            npred[k] += int(pred.sum())
    f1 = 2 * tp / np.maximum(npred + npos, 1)
    return {f"{t:g}": float(v) for t, v in zip(thresholds, f1, strict=True)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", required=True, help="comma-separated models or job folders")
    ap.add_argument("--eval", required=True, help="NAME=DIR[,NAME=DIR...]")
    ap.add_argument("--thresholds", default=DEFAULT_THRESHOLDS)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    thresholds = [float(t) for t in args.thresholds.split(",")]
    evals = dict(e.split("=", 1) for e in args.eval.split(",") if e)
    results: dict[str, dict] = {}
    for model in [m for m in args.models.split(",") if m]:
        name = Path(model).name
        results[name] = {s: sweep(model, d, thresholds) for s, d in evals.items()}
    for s in evals:
        print(f"\n**{s}**: overlap F1 by threshold (best per row in bold)\n")
        print("| model | " + " | ".join(f"{t:g}" for t in thresholds) + " | best |")
        print("|---|" + "---:|" * (len(thresholds) + 1))
        for name, row in results.items():
            f1 = row[s]
            best = max(f1, key=f1.get)
            cells = [f"**{v:.3f}**" if k == best else f"{v:.3f}" for k, v in f1.items()]
            print(f"| {name} | " + " | ".join(cells) + f" | {f1[best]:.3f} @ {best} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
