"""Counting with the layer branch: the layer rule reading the predicted layer map (issue 13.5).

``docs/counting_analysis.md`` found that the amodal detector misses cells stacked under
others because mask NMS cannot tell them from duplicates, and that the *layer rule* would
count 78 % of held-out frames right if it could read the true number of cells at every pixel.
This script measures the same rule reading a model's **predicted** layer map (a model with a
layer branch, ``models/layer_count.py``) side by side with the plain recipe and the rule
reading the occlusion map, on the frames and with the matching of ``count_analysis.py``
(whose helpers it imports):

* **benchmark frames**: those of ``benchmarks/amodal_benchmark.py`` (seeds 900000+, 500 x 500,
  ``1 + i % 8`` cells); nothing is chosen on them;
* **calibration frames** (seeds 950000+): every rule setting is chosen here, under the
  constraint of ``count_analysis.calibrate_rule`` (no true cell count may lose more than
  5 points of exact count against the plain recipe);
* **real crops** (``--real``, counts in the file names): counts only.

Usage::

    nice python benchmarks/layer_rule_benchmark.py --model MODEL_WITH_LAYER_BRANCH \\
        --cache /tmp/layer_cache_MODEL [--frames 200] [--calib-frames 200] [--json OUT]

Use one ``--cache`` folder per model: the cached outputs are the model's.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from count_analysis import (  # noqa: E402
    DEFAULT_CALIB_SEED,
    DEFAULT_REAL,
    DEFAULT_SEED,
    RULE_GRID,
    Frame,
    _inside_repo,
    best_of,
    calibrate_rule,
    collect_real,
    count_metrics_by_n,
    iter_records,
    map_model_frame,
    print_methods,
    print_real_counts,
    rule_counts,
)


def layer_rule_counts(frames: list[Frame], thr: float, nms: float, rule) -> list[int]:
    """Cells per frame with a ``source="layers"`` rule reading each frame's predicted map."""
    from blastoseg.predict.amodal_post import select_cells

    out = []
    for f in frames:
        cells, _ = select_cells(f.iou, f.area, f.masks(), f.scores, f.pred_layers,
                                score_threshold=thr, mask_nms_iou=nms, rule=rule)
        out.append(len(cells))
    return out


def calibrate_layer_rule(frames: list[Frame], thr: float, nms: float, max_loss: float = 0.05):
    """Grid-search the rule's settings (``RULE_GRID``) on the calibration frames, as
    ``calibrate_rule`` does for the occlusion table; returns (proposed, unconstrained)."""
    from blastoseg.predict.amodal_post import LayerRule

    true = np.array([f.n for f in frames])
    base = np.array(rule_counts(frames, thr, nms, None))
    base_by_n = {n: float((base[true == n] == n).mean()) for n in sorted(set(true.tolist()))}
    grid = []
    for mc, sa, ta, drop in itertools.product(*RULE_GRID.values()):
        rule = LayerRule(source="layers", table=[], min_count=mc, add_min_score=sa,
                         add_max_iou=ta, drop=drop)
        pred = np.array(layer_rule_counts(frames, thr, nms, rule))
        worst = min(float((pred[true == n] == n).mean()) - b for n, b in base_by_n.items())
        grid.append({"rule": rule, "count_exact": float((pred == true).mean()),
                     "count_mae": float(np.abs(pred - true).mean()),
                     "worst_change_by_count": worst})
    free = best_of(grid)
    ok = [g for g in grid if g["worst_change_by_count"] >= -max_loss - 1e-9]
    return (best_of(ok) if ok else free)["rule"], free["rule"]


def layer_map_error(frames: list[Frame]) -> dict:
    """Mean absolute error of the predicted layer map inside the true cells, by true layer."""
    err: dict[int, list[float]] = {}
    for f in frames:
        inside = f.layers >= 1
        for k in range(1, 6):
            sel = inside & (np.minimum(f.layers, 5) == k)
            if sel.any():
                err.setdefault(k, []).append(float(np.abs(f.pred_layers[sel] - f.layers[sel])
                                                   .mean()))
    return {k: float(np.mean(v)) for k, v in sorted(err.items())}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description="The layer rule on a model's predicted layer "
                                             "map; see the module docstring.")
    ap.add_argument("--model", required=True, help="an amodal model with a layer branch")
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--calib-frames", type=int, default=200)
    ap.add_argument("--calib-seed", type=int, default=DEFAULT_CALIB_SEED)
    ap.add_argument("--size", type=int, default=500)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--cache", type=Path, required=True, metavar="DIR",
                    help="cache of this model's raw outputs (outside the repository)")
    ap.add_argument("--real", type=Path, default=DEFAULT_REAL, metavar="DIR")
    ap.add_argument("--json", type=Path, default=None, metavar="OUT")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if _inside_repo(args.cache):
        sys.exit("error: --cache must lie outside the repository")
    args.cache.mkdir(parents=True, exist_ok=True)
    import torch

    from blastoseg.predict.amodal import AmodalPredictor

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    pred = AmodalPredictor(args.model, device=args.device, score_threshold=0.0,
                           mask_nms_iou=1.0, batch_size=1)
    if pred.model.layer_branch is None:
        sys.exit(f"error: {args.model!r} has no layer branch (config.layer_classes is 0)")
    nets = {"shipped": pred.model}
    post = pred.entry.card.config.get("postprocess", {})
    thr = float(post.get("score_threshold", 0.5))
    nms = float(post.get("mask_nms_iou", 0.8))

    def load(kind, n, seed):
        return [Frame(r) for r in iter_records(kind, n, seed, args.size, pred, nets,
                                               args.cache)]

    calib = load("calib", args.calib_frames, args.calib_seed)
    bench = load("bench", args.frames, args.seed)
    occ_rule, _, _ = calibrate_rule(calib, thr, nms)
    lay_rule, lay_free = calibrate_layer_rule(calib, thr, nms)
    rules = {"plain (card)": None, "layer rule, occlusion map": occ_rule,
             "layer rule, layer map (proposed)": lay_rule,
             "layer rule, layer map (unconstrained)": lay_free}

    true = [f.n for f in bench]
    methods: dict[str, dict] = {}
    for name, rule in rules.items():
        if rule is not None and rule.source == "layers":
            counts = layer_rule_counts(bench, thr, nms, rule)
        else:
            counts = rule_counts(bench, thr, nms, rule)
        methods[name] = {"counts": counts, "metrics": count_metrics_by_n(true, counts)}
        if rule is None or rule.source == "occlusion":
            methods[name]["mAP_256"] = map_model_frame(bench, nms, thr, rule)["mAP"]
    # mAP with the layer rule: the predictor path (postprocess_detections with layers=)
    from count_analysis import _unpack  # noqa: E402

    from blastoseg.instances import FrameInstances
    from blastoseg.metrics import evaluate_amodal
    from blastoseg.predict.amodal_post import postprocess_detections

    gts, preds = [], []
    for f in bench:
        gts.append(FrameInstances(masks=_unpack(*f.gt_packed)))
        r = postprocess_detections(f._probs, f.scores, f.occ, score_threshold=0.05,
                                   mask_nms_iou=nms, count_threshold=thr, rule=lay_rule,
                                   layers=f.pred_layers)
        preds.append(FrameInstances(masks=f.masks(r.indices), scores=r.scores))
    acc = evaluate_amodal(gts, preds, score_threshold=thr)
    methods["layer rule, layer map (proposed)"]["mAP_256"] = acc["mAP"]
    true_counts = rule_counts(bench, thr, nms, replace(lay_free, source="occlusion",
                                                       table=[float(k) for k in range(13)],
                                                       edges=[k + 0.5 for k in range(12)]),
                              true_layers=True)
    methods["upper bound: true layer map"] = {"counts": true_counts,
                                              "metrics": count_metrics_by_n(true, true_counts)}

    print(f"# Layer rule on {pred.entry.name}: {len(bench)} benchmark frames (seeds "
          f"{args.seed}+), settings chosen on {len(calib)} calibration frames (seeds "
          f"{args.calib_seed}+); plain recipe: score >= {thr}, mask NMS {nms}\n")
    print_methods("Benchmark frames", true, methods)
    err = layer_map_error(bench)
    print("Predicted layer map, mean absolute error inside the true cells by true layer "
          "count: " + ", ".join(f"{k}{'+' if k == 5 else ''}: {v:.2f}" for k, v in err.items())
          + "\n")
    result = {"model": pred.entry.name, "postprocess": [thr, nms], "layer_map_mae": err,
              "rules": {k: (None if r is None else r.to_dict()) for k, r in rules.items()},
              "bench": {k: {"metrics": v["metrics"], "mAP_256": v.get("mAP_256")}
                        for k, v in methods.items()}}
    if str(args.real).lower() != "none" and args.real.is_dir():
        real = [Frame(r) for r in collect_real(args.real, pred, nets, args.cache)]
        rtrue = [f.n for f in real]
        rmethods = {}
        for name, rule in list(rules.items())[:3]:
            counts = (layer_rule_counts(real, thr, nms, rule)
                      if rule is not None and rule.source == "layers"
                      else rule_counts(real, thr, nms, rule))
            rmethods[name] = {"counts": counts, "metrics": count_metrics_by_n(rtrue, counts)}
        print_methods(f"Real crops ({args.real.name}, {len(real)} images)", rtrue, rmethods)
        print_real_counts(real, rmethods)
        result["real"] = {k: {"metrics": v["metrics"], "counts": v["counts"]}
                          for k, v in rmethods.items()}
    print("Card block of the proposed rule:")
    print(json.dumps({"layer_rule": lay_rule.to_dict()}))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
