"""Proof that the human-in-the-loop cycle works (issue 5, item 6): correct 10 frames of an
unseen imaging style through the annotation library the napari widgets use, fine-tune for at
most 15 minutes on this CPU, and compare amodal mAP before and after.

1. **Style B** (``STYLE_B``): synthetic embryos the default model never saw: brightfield-like
   (relief contrast 5-8x weaker, stronger absorption, faint membranes), higher magnification
   (0.25 um/px at 640 px), noisier and blurrier, no text or well edge.
2. **Correct 10 frames** (seeds 700000+): the base model segments them (its calibrated
   threshold, as in the widget); an :class:`AnnotationProject` starts from that output; each
   frame is corrected to the truth with :mod:`blastoseg.annotate.edits` (a matched cell is
   redrawn with ``replace_mask``, a false cell deleted, a missed cell added), i.e. what a
   person does with the labelling widget; then frames are marked reviewed.
3. **Export** with :func:`export_for_training` (80/20 split) and **fine-tune** with
   :func:`create_finetune_job` + :func:`launch_job` (the widget's Start), base model's
   architecture, a time budget, synthetic frames of the original style mixed in each epoch
   (``synth_per_epoch``) so the model does not forget them.
4. **Evaluate** base and fine-tuned models on 50 further style-B frames (seeds 710000+) and on
   the original held-out synthetic frames (seeds 900000+, as in amodal_benchmark.py): mask AP
   from detections at score >= 0.05, counts at each model's calibrated threshold.

5. **Optionally** (``--interpolate 0.5,0.75``) the fine-tuned model mixed with its base in
   weight space (WiSE-FT, ``blastoseg models interpolate``) at each alpha, evaluated the same
   way: how much of the gain on style B a mix keeps while the original set does not fall.

Usage::

    nice python benchmarks/finetune_loop.py --out /tmp/loop [--minutes 15] [--annotate 10]
        [--test 50] [--orig 200] [--base amodal-default] [--interpolate 0.5,0.75]
        [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

STYLE_B = dict(image_size=(640, 640), pixel_size_um=0.25, relief_gain=(60.0, 110.0),
               cytoplasm_absorb=(0.35, 0.55), membrane_dark=(0.2, 0.35),
               noise_sigma=(7.0, 11.0), defocus_sigma=(1.4, 2.0), granularity=(0.35, 0.6),
               background_level=(100.0, 130.0), text_prob=0.0, well_edge_prob=0.0)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def render(n: int, seed: int, config) -> tuple[list, list]:
    from blastoseg.synth import render_embryo

    frames = [render_embryo(1 + i % 8, seed=seed + i, config=config) for i in range(n)]
    return [f.image for f in frames], [f.instances for f in frames]


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    fa = a.reshape(len(a), -1).astype(np.float32)
    fb = b.reshape(len(b), -1).astype(np.float32)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None] - inter
    return inter / np.maximum(union, 1)


def correct(pred, truth) -> tuple[object, dict]:
    """Edit ``pred`` into ``truth`` with the labelling operations; counts of each."""
    from scipy.optimize import linear_sum_assignment

    from blastoseg.annotate import edits

    inst = edits.relabel_consecutive(pred) if pred.track_ids is None else pred
    ids = list(inst.track_ids)
    ops = {"redrawn": 0, "deleted": 0, "added": 0}
    matched_truth: set[int] = set()
    if len(inst) and len(truth):
        m = iou_matrix(inst.masks, truth.masks)
        rows, cols = linear_sum_assignment(-m)
        for r, c in zip(rows, cols, strict=True):
            if m[r, c] >= 0.5:
                inst = edits.replace_mask(inst, ids[r], truth.masks[c])
                matched_truth.add(int(c))
                ops["redrawn"] += 1
        keep = {ids[r] for r, c in zip(rows, cols, strict=True) if m[r, c] >= 0.5}
    else:
        keep = set()
    drop = [i for i in ids if i not in keep]
    if drop:
        inst = edits.delete_instances(inst, drop)
        ops["deleted"] += len(drop)
    for c in range(len(truth)):
        if c not in matched_truth:
            inst = edits.add_instance(inst, truth.masks[c])
            ops["added"] += 1
    return inst, ops


def evaluate(model: str, images: list, truths: list) -> dict:
    from blastoseg.metrics import evaluate_amodal
    from blastoseg.predict.amodal import AmodalPredictor

    predictor = AmodalPredictor(model, device="cpu", score_threshold=0.05, batch_size=4)
    preds = [predictor.predict(im) for im in images]
    res = evaluate_amodal(truths, preds, score_threshold=predictor.calibrated_threshold)
    return {k: res.get(k) for k in ("mAP", "AP50", "AP75", "count_exact", "count_mae")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--base", default="amodal-default")
    ap.add_argument("--annotate", type=int, default=10)
    ap.add_argument("--test", type=int, default=50)
    ap.add_argument("--orig", type=int, default=200)
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--synth-per-epoch", type=int, default=8)
    ap.add_argument("--name", default="finetune-loop-style-b")
    ap.add_argument("--interpolate", default="",
                    help="comma-separated alphas: also evaluate the fine-tuned model mixed with "
                         "its base in weight space (WiSE-FT, blastoseg models interpolate)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    from blastoseg.annotate import AnnotationProject, export_for_training
    from blastoseg.predict.amodal import AmodalPredictor
    from blastoseg.synth import EmbryoConfig
    from blastoseg.train.finetune import create_finetune_job
    from blastoseg.train.monitor import launch_job, read_progress
    from blastoseg.weights import delete_model, list_models

    style = EmbryoConfig(**STYLE_B)
    args.out.mkdir(parents=True, exist_ok=True)
    log("rendering style-B frames")
    ann_images, ann_truth = render(args.annotate, 700_000, style)
    test_images, test_truth = render(args.test, 710_000, style)

    # 2. start from the base model's output and correct it, as in the labelling widget
    predictor = AmodalPredictor(args.base, device="cpu")
    preds = [predictor.predict(im) for im in ann_images]
    project = AnnotationProject.create(args.out / "project", ann_images, preds,
                                       source="style B (synthetic)", overwrite=True)
    totals = {"redrawn": 0, "deleted": 0, "added": 0}
    for t in range(project.n_frames):
        fixed, ops = correct(project.instances(t), ann_truth[t])
        project.set_instances(t, fixed)
        project.set_reviewed(t, True)
        totals = {k: totals[k] + ops[k] for k in totals}
    project.save()
    log(f"corrected {project.n_frames} frames: {totals}")

    # 3. export and fine-tune, as the fine-tuning widget does
    exp = export_for_training([project], args.out / "retrain", val_fraction=0.2,
                              split_by="frame", overwrite=True)
    if any(m.name == args.name for m in list_models()):
        delete_model(args.name)
    job = create_finetune_job(
        str(exp.train_dir), args.out / "job", base=args.base, val_data=str(exp.val_dir),
        minutes=args.minutes, lr=args.lr, name=args.name,
        hyper={"synth_per_epoch": args.synth_per_epoch, "warmup_steps": 20,
               "val_every": 100, "ckpt_every": 100})
    t0 = time.time()
    launch_job(job)
    progress = None
    while True:
        time.sleep(10)
        progress = read_progress(job, progress)
        if progress.state not in ("running", "not started"):
            break
        log(f"fine-tuning: step {progress.step}, {progress.eta_text()}")
    log(f"fine-tuning {progress.state} after {time.time() - t0:.0f} s, {progress.step} steps")
    if progress.state != "done":
        print((Path(job) / "train.log").read_text()[-3000:], file=sys.stderr)
        return 1

    # 4. before / after
    from blastoseg.synth import EmbryoConfig as Default

    orig_images, orig_truth = render(args.orig, 900_000, Default())
    res: dict = {"style_b": STYLE_B, "corrections": totals, "n_train": exp.n_train,
                 "n_val": exp.n_val, "finetune_s": time.time() - t0, "steps": progress.step}
    rows = [("before", args.base), ("after", args.name)]
    from blastoseg.weights.interpolate import interpolate_models

    for alpha in [float(a) for a in args.interpolate.split(",") if a]:
        mixed = f"{args.name}-mix{int(round(100 * alpha)):02d}"
        if any(m.name == mixed for m in list_models()):
            delete_model(mixed)
        interpolate_models(args.base, args.name, alpha, mixed)
        rows.append((f"after, mixed with the base (alpha {alpha:g})", mixed))
    for label, model in rows:
        log(f"evaluating {model}")
        res[label] = {"model": model, "style_b": evaluate(model, test_images, test_truth),
                      "original": evaluate(model, orig_images, orig_truth)}
    gain = res["after"]["style_b"]["mAP"] - res["before"]["style_b"]["mAP"]
    loss = res["before"]["original"]["mAP"] - res["after"]["original"]["mAP"]
    res["gain_style_b"], res["loss_original"] = gain, loss

    print(f"## Fine-tuning loop: {args.annotate} corrected style-B frames, "
          f"{res['finetune_s'] / 60:.1f} min on this CPU ({progress.step} steps)")
    print()
    print(f"Corrections made with the labelling operations: {totals['redrawn']} cells redrawn, "
          f"{totals['deleted']} deleted, {totals['added']} added; exported {exp.n_train} "
          f"training + {exp.n_val} validation frames.")
    print()
    print("| test set | model | mAP | AP50 | AP75 | count exact | count MAE |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for key, name in (("style_b", f"style B, {args.test} frames"),
                      ("original", f"original synthetic, {args.orig} frames")):
        for label, model in rows:
            r = res[label][key]
            print(f"| {name} | {label}: `{model}` | {r['mAP']:.3f} | {r['AP50']:.3f} | "
                  f"{r['AP75']:.3f} | {100 * r['count_exact']:.0f} % | {r['count_mae']:.2f} |")
    print()
    print(f"Gain on style B: {gain:+.3f} mAP (goal >= +0.15); change on the original set: "
          f"{-loss:+.3f} mAP (goal: loss < 0.03).")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
