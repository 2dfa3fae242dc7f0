"""``blastoseg segment amodal INPUT --out DIR`` and ``blastoseg eval amodal --data DIR``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from blastoseg.commands import brightfield, overlap
from blastoseg.commands.progress import progress_printer


def _segment_amodal(args: argparse.Namespace) -> int:
    from blastoseg.io import read_images
    from blastoseg.predict.amodal import AmodalPredictor
    from blastoseg.predict.export import write_segmentation

    stack = read_images(args.input)
    predictor = AmodalPredictor(args.model, device=args.device,
                                score_threshold=args.threshold, batch_size=args.batch_size)
    print(f"model {predictor.entry.name} on {predictor.device_name}")
    result = predictor.predict(stack.data if stack.axes != "TZYX" else stack.data[:, args.plane],
                               progress=progress_printer("segmenting"))
    frames = result if isinstance(result, list) else [result]
    images = stack.data if stack.axes != "TZYX" else stack.data[:, args.plane]
    if not isinstance(result, list):
        images = images[None]
    paths = write_segmentation(args.out, images, frames, pixel_size_um=stack.pixel_size_um,
                               overwrite=args.overwrite)
    for name, path in paths.items():
        print(f"wrote {name}: {path}")
    return 0


def _eval_amodal(args: argparse.Namespace) -> int:
    from blastoseg.io import read_dataset
    from blastoseg.metrics import evaluate_amodal, format_report
    from blastoseg.predict.amodal import AmodalPredictor

    ds = read_dataset(args.data)
    # keep every detection above a low score: AP ranks them, counting uses --threshold
    predictor = AmodalPredictor(args.model, device=args.device, score_threshold=0.05,
                                batch_size=args.batch_size)
    report = progress_printer("evaluating")
    gt, pred = [], []
    for i in range(len(ds)):
        gt.append(ds.instances(i))
        pred.append(predictor.predict(ds.load_image(i)))
        report(i + 1, len(ds))
    count_threshold = (args.threshold if args.threshold is not None
                       else predictor.calibrated_threshold)
    result = evaluate_amodal(gt, pred, score_threshold=count_threshold,
                             categories=ds.categories)
    result["model"] = predictor.entry.name
    if args.json:
        print(json.dumps(result, allow_nan=False))
    else:
        print(format_report(result))
    return 0


def _calibrate_amodal(args: argparse.Namespace) -> int:
    from blastoseg.predict.calibrate import calibrate_counts, write_postprocess
    from blastoseg.weights import resolve_model

    result = calibrate_counts(args.model, args.data, device=args.device,
                              max_frames=args.frames, progress=progress_printer("calibrating"))
    print(f"{'mask NMS IoU':>12} {'score thr':>9} {'exact %':>8} {'MAE':>6}")
    for g in result["grid"]:
        print(f"{g['mask_nms_iou']:>12.2f} {g['score_threshold']:>9.2f} "
              f"{100 * g['count_exact']:>8.1f} {g['count_mae']:>6.2f}")
    print(f"best: mask NMS IoU {result['mask_nms_iou']}, score threshold "
          f"{result['score_threshold']} -> exact count {100 * result['count_exact']:.1f} %, "
          f"MAE {result['count_mae']:.2f} on {result['n_frames']} frames")
    if args.write:
        entry = resolve_model(args.model, kind="amodal")
        if entry.source == "bundled":
            print("not written: bundled model cards are read-only; import the model first")
            return 2
        print(f"wrote {write_postprocess(entry.card_path, result)}")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="amodal-default", help="registered name or .safetensors")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--threshold", type=float, default=None,
                   help="score threshold for cells (default: the model card's calibrated value)")
    p.add_argument("--batch-size", type=int, default=4)


def add_parsers(verbs: argparse._SubParsersAction) -> None:
    seg = verbs.add_parser("segment", help="segment images or time-lapses")
    kinds = seg.add_subparsers(dest="kind", metavar="KIND")
    am = kinds.add_parser("amodal", help="amodal blastomere masks (frame, TIFF stack, frame folder)")
    am.add_argument("input", type=Path, help="an image, a TIFF stack or a folder of frames")
    am.add_argument("--out", required=True, type=Path,
                    help="output folder: dataset (images + masks), counts.csv, cells.csv")
    am.add_argument("--plane", type=int, default=0,
                    help="focal-plane index for (T, Z, Y, X) input (default 0)")
    am.add_argument("--overwrite", action="store_true",
                    help="replace an existing output (previous annotations kept as a backup)")
    _common(am)
    am.set_defaults(func=_segment_amodal)
    overlap.add_segment_parser(kinds)
    brightfield.add_segment_parser(kinds)

    ev = verbs.add_parser("eval", help="evaluate a model on a dataset folder")
    ekinds = ev.add_subparsers(dest="kind", metavar="KIND")
    ea = ekinds.add_parser("amodal", help="amodal mask mAP, AP50, AP75, counting")
    ea.add_argument("--data", required=True, type=Path, help="dataset folder with ground truth")
    ea.add_argument("--json", action="store_true", help="print one JSON object")
    _common(ea)
    ea.set_defaults(func=_eval_amodal)
    overlap.add_eval_parser(ekinds)
    brightfield.add_eval_parser(ekinds)

    cal = verbs.add_parser("calibrate", help="choose post-processing thresholds on validation data")
    ckinds = cal.add_subparsers(dest="kind", metavar="KIND")
    ca = ckinds.add_parser("amodal", help="score threshold and mask NMS for exact cell counts")
    ca.add_argument("--data", required=True, type=Path,
                    help="validation dataset folder (never the test set)")
    ca.add_argument("--model", default="amodal-default", help="registered name or .safetensors")
    ca.add_argument("--device", default="auto")
    ca.add_argument("--frames", type=int, default=None, help="use at most N frames")
    ca.add_argument("--write", action="store_true",
                    help="store the chosen values in the model's card (a user model)")
    ca.set_defaults(func=_calibrate_amodal)
