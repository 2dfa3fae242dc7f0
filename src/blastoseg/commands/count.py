"""``blastoseg segment count INPUT --out DIR`` and ``blastoseg eval count --data DIR`` (Cell-Net,
S2: blastomere count and centres by density regression)."""

from __future__ import annotations

import argparse

from blastoseg.commands.options import (
    add_eval_data,
    add_frames_input,
    add_model_options,
    add_steady_option,
    check_frames,
    frames_at_plane,
    positive_float,
    print_eval_report,
)
from blastoseg.commands.progress import progress_printer

#: what ``eval count`` prints without --json
REPORT_KEYS = ("count_exact", "count_mae", "count_within1", "detection_rate", "misses",
               "perfect_rate", "ed_px", "n_images", "ms_per_frame")


def _segment_count(args: argparse.Namespace) -> int:
    from blastoseg.io import read_images
    from blastoseg.predict.base import load_predictor
    from blastoseg.results.count import count_result_paths, write_count_results
    from blastoseg.results.files import check_output_folder, refuse_existing

    check_output_folder(args.out)  # before any work: a bad output must not cost a run
    refuse_existing(count_result_paths(args.out), args.overwrite)
    stack = read_images(args.input)
    data = frames_at_plane(stack, args.plane)
    check_frames(data)  # a bad image must not wait for a model to load
    predictor = load_predictor(args.model, args.device, kind="count")  # cached (batch)
    print(f"model {predictor.entry.name} on {predictor.device_name}")
    options = {"localise": False} if args.no_localise else {}
    if args.diameter_px is not None:
        options["diameter_px"] = args.diameter_px
    if args.steady > 1:
        options["steady"] = args.steady
    results = predictor.predict(data, progress=progress_printer("counting"), **options)
    items = results if isinstance(results, list) else [results]
    for t, r in enumerate(items):
        unsure = " (embryo position unsure)" if r.meta.get("embryo_unsure") else ""
        print(f"frame {t}: {r.count} cells (integral {r.integral:.2f}){unsure}")
    for name, path in write_count_results(results, args.out, overwrite=args.overwrite).items():
        print(f"wrote {name}: {path}")
    return 0


def _eval_count(args: argparse.Namespace) -> int:
    from blastoseg.predict.count_eval import evaluate_count_model

    result = evaluate_count_model(args.model, args.data, device=args.device,
                                  max_images=args.max_images,
                                  progress=None if args.json else progress_printer("evaluating"))
    print_eval_report(result, REPORT_KEYS, args.json,
                      f"model {result['model']} on {result['n_images']} images of {result['data']}")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    add_model_options(p, "count")


def add_segment_parser(kinds: argparse._SubParsersAction) -> None:
    p = kinds.add_parser("count", help="blastomere count and centres per frame (Cell-Net "
                                       "density map)")
    add_frames_input(p, "output folder: counts.csv, centroids.csv, density.tif")
    p.add_argument("--diameter-px", type=positive_float, default=None,
                   help="the embryo's diameter in pixels, when known (helps the localiser)")
    p.add_argument("--no-localise", action="store_true",
                   help="frames are already crops around the embryo: use the whole frame")
    add_steady_option(p)
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    _common(p)
    p.set_defaults(func=_segment_count)


def add_eval_parser(kinds: argparse._SubParsersAction) -> None:
    p = kinds.add_parser("count", help="stage accuracy, count MAE, detection rate and centroid "
                                       "distance against the amodal masks' centroids")
    add_eval_data(p)
    _common(p)
    p.set_defaults(func=_eval_count)
