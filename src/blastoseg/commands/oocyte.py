"""``blastoseg segment oocyte INPUT --out DIR``, ``blastoseg eval oocyte --data DIR`` and
``blastoseg calibrate oocyte --data DIR`` (SMANet, S3: oocyte class maps and inclusion
measurements; the calibration chooses the class-prior offsets of a class-weighted model)."""

from __future__ import annotations

import argparse
from pathlib import Path

from blastoseg.commands.options import (
    add_eval_data,
    add_frames_input,
    add_model_options,
    check_frames,
    frames_at_plane,
    positive_float,
    positive_int,
    print_eval_report,
)
from blastoseg.commands.progress import progress_printer

#: what ``eval oocyte`` prints without --json
REPORT_KEYS = ("accuracy", "mIoU", "inclusion_detection", "inclusions_found",
               "inclusions_total", "false_inclusions", "n_images", "ms_per_frame")


def _segment_oocyte(args: argparse.Namespace) -> int:
    from blastoseg.io import read_images
    from blastoseg.predict.oocyte import OocytePredictor
    from blastoseg.results.files import check_output_folder, refuse_existing
    from blastoseg.results.oocyte import oocyte_result_paths, write_oocyte_results

    check_output_folder(args.out)  # before any work: a bad output must not cost a run
    refuse_existing(oocyte_result_paths(args.out), args.overwrite)
    data = frames_at_plane(read_images(args.input), args.plane)
    check_frames(data)  # a bad image must not wait for a model to load
    predictor = OocytePredictor(args.model, device=args.device,
                                pixel_size_um=args.pixel_size_um,
                                check_embryo=not args.no_embryo_check, flips=args.flips)
    print(f"model {predictor.entry.name} on {predictor.device_name}")
    results = predictor.predict(data, progress=progress_printer("segmenting"))
    for t, r in enumerate(results if isinstance(results, list) else [results]):
        m = r.measurements
        print(f"frame {t}: {m.inclusion_count} inclusions ({m.inclusion_area:.1f} "
              f"{m.unit}^2), {m.vacuole_count} vacuoles, ooplasm {m.ooplasm_diameter} {m.unit}"
              + "".join(f"\n  warning: {w}" for w in m.warnings))
    for name, path in write_oocyte_results(results, args.out,
                                           overwrite=args.overwrite).items():
        print(f"wrote {name}: {path}")
    return 0


def _eval_oocyte(args: argparse.Namespace) -> int:
    from blastoseg.predict.oocyte_eval import evaluate_oocyte_model

    result = evaluate_oocyte_model(args.model, args.data, device=args.device,
                                   max_images=args.max_images, flips=args.flips,
                                   progress=None if args.json else progress_printer("evaluating"))
    print_eval_report(result, REPORT_KEYS, args.json,
                      f"model {result['model']} on {result['n_images']} images of {result['data']}")
    if not args.json:
        for name, iou in result["iou"].items():
            print(f"iou {name}: {iou}")
    return 0


def _calibrate_oocyte(args: argparse.Namespace) -> int:
    from blastoseg.errors import BlastosegError
    from blastoseg.predict.oocyte_calibrate import calibrate_oocyte_offsets, write_logit_offsets
    from blastoseg.weights import resolve_model

    entry = resolve_model(args.model, kind="oocyte")
    weights = (entry.card.config.get("loss") or {}).get("class_weights")
    if not isinstance(weights, list):
        raise BlastosegError(f"{entry.name} was trained without class weights: its scores need "
                             "no class-prior offsets, there is nothing to calibrate")
    result = calibrate_oocyte_offsets(str(entry.weights_path), args.data, weights=weights,
                                      device=args.device, max_frames=args.frames)
    print(f"{'alpha':>6} {'mIoU':>7}")
    for alpha, miou in result["mIoU_by_alpha"].items():
        print(f"{float(alpha):>6.2f} {miou:>7.3f}")
    print(f"best: alpha {result['alpha']} -> mIoU {result['mIoU']:.3f} on "
          f"{result['n_frames']} frames; offsets {result['logit_offsets']}")
    if args.write:
        if entry.source == "bundled":
            print("not written: bundled model cards are read-only; import the model first")
            return 2
        summary = {k: result[k] for k in ("alpha", "mIoU", "mIoU_by_alpha", "n_frames", "data")}
        print(f"wrote {write_logit_offsets(entry.card_path, result['logit_offsets'], summary)}")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    add_model_options(p, "oocyte")


def _flips_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--flips", action="store_true",
                   help="average the class scores over the four flips of each frame: a "
                        "better class map (docs/models/oocyte.md#test-time-flips) for 2.5 "
                        "times the time per frame")


def add_segment_parser(kinds: argparse._SubParsersAction) -> None:
    p = kinds.add_parser("oocyte", help="oocyte class maps (zona, perivitelline space, "
                                        "ooplasm, inclusions, vacuoles, SER) and measurements")
    add_frames_input(p, "output folder: classes.tif, measurements.csv, classes.csv")
    p.add_argument("--pixel-size-um", type=positive_float, default=None,
                   help="micrometres per pixel (measurements in um; default: in pixels)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--no-embryo-check", action="store_true",
                   help="do not run the blastomere detector to warn about embryo frames "
                        "(on a CPU it takes longer than the oocyte model itself)")
    _common(p)
    _flips_option(p)
    p.set_defaults(func=_segment_oocyte)


def add_eval_parser(kinds: argparse._SubParsersAction) -> None:
    p = kinds.add_parser("oocyte", help="pixel accuracy, mean IoU, per-class IoU and "
                                        "inclusion detection against a dataset's class maps")
    add_eval_data(p)
    _common(p)
    _flips_option(p)
    p.set_defaults(func=_eval_oocyte)


def add_calibrate_parser(ckinds: argparse._SubParsersAction) -> None:
    p = ckinds.add_parser("oocyte", help="class-prior offsets of a class-weighted oocyte model "
                                         "(best mean IoU on validation data)")
    p.add_argument("--data", required=True, type=Path,
                   help="validation dataset folder of oocytes (never the test set)")
    p.add_argument("--frames", type=positive_int, default=64, help="use at most N frames")
    p.add_argument("--write", action="store_true",
                   help="store the chosen offsets in the model's card (a user model)")
    _common(p)
    p.set_defaults(func=_calibrate_oocyte)
