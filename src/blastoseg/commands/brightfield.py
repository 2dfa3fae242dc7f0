"""``blastoseg segment brightfield INPUT --out DIR`` and ``blastoseg eval brightfield --data
DIR [--json] [--model M] [--baseline watershed --overlap-model M]``."""

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


def _segment_brightfield(args: argparse.Namespace) -> int:
    from blastoseg.io.frames import as_frames
    from blastoseg.predict.base import load_predictor
    from blastoseg.predict.stream import stream_predictions
    from blastoseg.results.brightfield import brightfield_result_paths, write_brightfield_results
    from blastoseg.results.files import check_output_folder, refuse_existing

    # before any work: a bad or occupied output must not cost a run
    refuse_existing(brightfield_result_paths(check_output_folder(args.out)), args.overwrite)
    stack = read_input(args.input, lazy=True)  # frames read as they run
    data = frames_at_plane(stack, args.plane)
    check_frames(data)  # a bad image must not wait for a model to load
    predictor = load_predictor(args.model, args.device, kind="brightfield",  # cached (batch)
                               score_threshold=args.threshold)
    print(f"model {predictor.entry.name} on {predictor.device_name}")
    # streamed: each frame's result is written (its maps spooled) and dropped before the
    # next frame runs, so memory stays flat with the stack's length (issue 18 item 24)
    _, is_stack = as_frames(data)
    paths = write_brightfield_results(
        stream_predictions(predictor, data, progress_printer("segmenting")), args.out,
        images=data if is_stack else data[None], video=is_stack and len(data) > 1,
        pixel_size_um=stack.pixel_size_um, overwrite=args.overwrite)
    for name, path in paths.items():
        print(f"wrote {name}: {path}")
    return 0


def _eval_brightfield(args: argparse.Namespace) -> int:
    from blastoseg.metrics import format_report

    report = progress_printer("evaluating")
    if args.baseline == "watershed":
        from blastoseg.predict.brightfield_eval import evaluate_watershed_baseline

        result = evaluate_watershed_baseline(args.overlap_model, args.data, device=args.device,
                                             max_images=args.max_images, progress=report)
    else:
        from blastoseg.predict.brightfield_eval import evaluate_brightfield_model

        result = evaluate_brightfield_model(args.model, args.data, device=args.device,
                                            max_images=args.max_images,
                                            score_threshold=args.threshold, progress=report)
    if args.json:
        print(json.dumps(result, allow_nan=False))
    else:
        print(f"{result['method']} ({result['model']}) on {result['n_images']} images of "
              f"{result['data']}")
        print(format_report(result))
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=get_kind("brightfield").default_model,
                   help="registered name, .safetensors or training job folder")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--threshold", type=unit_interval, default=None,
                   help="score threshold for cells (default: the model card's)")


def add_segment_parser(kinds: argparse._SubParsersAction) -> None:
    p = kinds.add_parser(
        "brightfield", help="whole-cell, overlapping instances in brightfield images "
                            "(SparseSEU-Net)")
    add_frames_input(p, "output folder: dataset (images + amodal masks), counts.csv, "
                        "cells.csv, nuclei/overlap probability TIFFs (the files of the "
                        "widget's Export)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing output (previous annotations kept as a backup)")
    _common(p)
    p.set_defaults(func=_segment_brightfield)


def add_eval_parser(kinds: argparse._SubParsersAction) -> None:
    p = kinds.add_parser(
        "brightfield", help="amodal mask mAP, AP50, AP75, AP_S/M/L and counting of brightfield "
                            "cell instances (or of the watershed baseline)")
    add_eval_data(p)
    p.add_argument("--baseline", choices=["watershed"], default=None,
                   help="evaluate the SE-U-Net + watershed baseline instead of --model")
    p.add_argument("--overlap-model", default="overlap-default",
                   help="the overlap model whose maps the watershed baseline splits")
    _common(p)
    p.set_defaults(func=_eval_brightfield)
