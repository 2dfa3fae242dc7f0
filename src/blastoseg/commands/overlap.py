"""``blastoseg segment overlap INPUT --out DIR`` and ``blastoseg eval overlap --data DIR``."""

from __future__ import annotations

import argparse
import json

from blastoseg.commands.options import (
    add_eval_data,
    add_frames_input,
    check_frames,
    frames_at_plane,
    read_input,
    unit_interval,
)
from blastoseg.commands.progress import progress_printer
from blastoseg.kinds import get_kind


def _segment_overlap(args: argparse.Namespace) -> int:
    from blastoseg.predict.base import load_predictor
    from blastoseg.predict.overlap import OverlapResult
    from blastoseg.results.files import check_output_folder, refuse_existing
    from blastoseg.results.overlap import overlap_result_paths, write_overlap_results

    check_output_folder(args.out)  # before any work: a bad output must not cost a run
    stack = read_input(args.input)
    data = frames_at_plane(stack, args.plane)
    check_frames(data)  # a bad image must not wait for a model to load
    predictor = load_predictor(args.model, args.device, kind="overlap")  # cached (batch)
    refuse_existing(overlap_result_paths(args.out, predictor.heads), args.overwrite)
    print(f"model {predictor.entry.name} on {predictor.device_name}")
    # one result per frame; the writer takes the stack's maps as (T, H, W) arrays
    result = OverlapResult.from_frames(
        predictor.predict(data, progress=progress_printer("predicting")))
    for name, path in write_overlap_results(result, args.out, overwrite=args.overwrite).items():
        print(f"wrote {name}: {path}")
    return 0


def _eval_overlap(args: argparse.Namespace) -> int:
    from blastoseg.metrics.pixel import format_pixel_report
    from blastoseg.predict.overlap_eval import evaluate_overlap_model

    result = evaluate_overlap_model(args.model, args.data, device=args.device,
                                    max_images=args.max_images,
                                    overlap_threshold=(None if args.overlap_threshold == "card"
                                                       else float(args.overlap_threshold)),
                                    progress=progress_printer("evaluating"))
    if args.json:
        print(json.dumps(result, allow_nan=False))
    else:
        print(f"model {result['model']} on {result['n_images']} images of {result['data']}")
        print(format_pixel_report(result))
    return 0


def _threshold_or_card(text: str) -> str:
    """``--overlap-threshold``: a number from 0 to 1, or ``card``."""
    return text if text == "card" else str(unit_interval(text))


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=get_kind("overlap").default_model, help="registered name, .safetensors or training job folder")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")


def add_segment_parser(kinds: argparse._SubParsersAction) -> None:
    p = kinds.add_parser(
        "overlap", help="SE-U-Net probability maps (cytoplasm, nuclei, border, background, "
                        "overlap) and the thresholded overlap mask")
    add_frames_input(p, "output folder: one float32 TIFF per head and overlap_mask.tif")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    _common(p)
    p.set_defaults(func=_segment_overlap)


def add_eval_parser(kinds: argparse._SubParsersAction) -> None:
    p = kinds.add_parser(
        "overlap", help="pixel accuracy, precision, recall, F1, IoU of cytoplasm, nuclei and "
                        "overlap (overlap thresholded at 0.3)")
    add_eval_data(p)
    p.add_argument("--overlap-threshold", type=_threshold_or_card, default="0.3",
                   help="overlap threshold: 0.3 (default, the thesis's protocol), another "
                        "number, or 'card' for the model's own calibrated threshold")
    _common(p)
    p.set_defaults(func=_eval_overlap)
