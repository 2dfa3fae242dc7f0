"""``blastoseg segment amodal INPUT --out DIR``, ``blastoseg eval amodal --data DIR`` and
``blastoseg calibrate amodal --data DIR``: the amodal kind's command line (its ``cli`` in
:mod:`blastoseg.kinds`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from blastoseg.commands.options import (
    add_flips_option,
    add_steady_option,
    check_frames,
    frames_at_plane,
    non_negative_int,
    output_folder,
    positive_int,
    read_input,
    unit_interval,
)
from blastoseg.commands.progress import progress_printer
from blastoseg.kinds import get_kind

DEFAULT_MODEL = get_kind("amodal").default_model
MODEL_HELP = ("registered name, .safetensors file (its .json card beside it) or a training "
              "job folder (the finished model of `blastoseg train ... --out DIR`)")
#: unsure frames named one by one on stderr; the rest are counted
_MAX_WARNINGS = 10


def _circle_arg(text: str) -> tuple[float, float, float]:
    from blastoseg.predict.embryo_box import parse_circle

    try:
        return parse_circle(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _diameter_px(args: argparse.Namespace, pixel_size_um: float | None, where: str
                 ) -> float | None:
    """``--diameter`` in pixels (``--diameter-unit um`` divides by the pixel size)."""
    from blastoseg.predict.embryo_spec import FramingError

    d = getattr(args, "diameter", None)
    if d is None:
        return None
    if not (d > 0 and d != float("inf")):
        raise FramingError(f"--diameter must be a positive number; got {d}")
    if args.diameter_unit == "px":
        return float(d)
    if not pixel_size_um:
        raise FramingError(
            f"--diameter {d:g} um needs the pixel size, but {where} does not record one; "
            "give the diameter in pixels (--diameter-unit px)")
    return float(d) / float(pixel_size_um)


def _fmt_circle(d: dict) -> str:
    return f"{d['cx']:.0f},{d['cy']:.0f},{d['radius']:.0f}"


def _report_framing(frames: list, names: list[str] | None = None) -> dict[str, int]:
    """Print how the frames were framed (stdout) and warn about unsure frames (stderr);
    returns {source: number of frames, ..., "unsure": n}."""
    counts: dict[str, int] = {}
    unsure = []
    for t, inst in enumerate(frames):
        meta = inst.meta or {}
        box = meta.get("embryo") or {}
        counts[box.get("source", "unknown")] = counts.get(box.get("source", "unknown"), 0) + 1
        if meta.get("embryo_unsure"):
            unsure.append((t, box, meta.get("embryo_guess")))
    counts["unsure"] = len(unsure)
    for t, box, guess in unsure[:_MAX_WARNINGS]:
        name = names[t] if names else f"frame {t}"
        g = (f"its guess was {_fmt_circle(guess)} (confidence {guess['confidence']:.2f})"
             if guess else "")
        if box.get("source") == "whole frame":
            what = f"no confident embryo found, the whole frame was used; {g}"
        else:
            what = f"used its guess {_fmt_circle(box)} (confidence {box['confidence']:.2f})"
        if box.get("note"):
            what += f" ({box['note']})"
        print(f"blastoseg: warning: {name}: the localiser is unsure: {what}. If that is "
              "wrong, give --embryo CX,CY,R, --diameter D or --no-localise", file=sys.stderr)
    if len(unsure) > _MAX_WARNINGS:
        print(f"blastoseg: warning: the localiser is unsure on {len(unsure) - _MAX_WARNINGS} "
              "more frame(s)", file=sys.stderr)
    return counts


def _report_no_cells(frames: list, threshold: float) -> None:
    """Warn (stderr) about frames without cells, with why and what to try."""
    from blastoseg.predict.no_cells import why_no_cells

    empty = [t for t, inst in enumerate(frames) if len(inst) == 0]
    for t in empty[:_MAX_WARNINGS]:
        name = "the frame" if len(frames) == 1 else f"frame {t}"
        print(f"blastoseg: warning: {name}: no cells: {why_no_cells(frames[t].meta, threshold)}",
              file=sys.stderr)
    if len(empty) > _MAX_WARNINGS:
        print(f"blastoseg: warning: {len(empty) - _MAX_WARNINGS} more frame(s) without cells",
              file=sys.stderr)


def _framing_line(counts: dict[str, int], n: int) -> str:
    parts = [f"{k} {v}" for k, v in counts.items() if k != "unsure" and v]
    line = f"framing of {n} frame(s): " + ", ".join(parts)
    if counts.get("unsure"):
        line += f" (localiser unsure on {counts['unsure']})"
    return line


def _requested_framing(embryo, diameter_px, localise, args, model_localises=True) -> str:
    if embryo is not None:
        return f"the given embryo circle {','.join(f'{v:g}' for v in embryo)} on every frame"
    if localise is False:
        return "the whole frame (--no-localise)"
    if not model_localises:
        return "the whole frame (the model card's framing.use_localisation is false)"
    steady = (f", then steadied (the median circle of {args.steady} frames)"
              if getattr(args, "steady", 0) > 1 else "")
    if diameter_px is not None:
        unit = "" if args.diameter_unit == "px" else f" ({args.diameter:g} um)"
        return f"localised, embryo diameter {diameter_px:.0f} px{unit}{steady}"
    return f"localised in each frame{steady}"


class _Seen:
    """What the reports read of a streamed result (its meta without the arrays, its number
    of cells), kept while the result itself is written and dropped."""

    def __init__(self, inst) -> None:
        self.meta = {k: v for k, v in (inst.meta or {}).items() if not hasattr(v, "shape")}
        self.count = len(inst)

    def __len__(self) -> int:
        return self.count


def _keep_seen(results, seen: list):
    for inst in results:
        seen.append(_Seen(inst))
        yield inst


def _segment_amodal(args: argparse.Namespace) -> int:
    from blastoseg.io.frames import as_frames
    from blastoseg.predict.base import load_predictor
    from blastoseg.predict.stream import stream_predictions
    from blastoseg.results.amodal import amodal_result_paths, write_amodal_results
    from blastoseg.results.files import check_output_folder, refuse_existing

    # before any work: a bad or occupied output must not cost a run
    refuse_existing(amodal_result_paths(check_output_folder(args.out)), args.overwrite)
    separate = separate_images(args.input)
    if separate is not None:
        return _segment_separate(args, separate)
    stack = read_input(args.input, lazy=True)  # frames read as they run
    images = frames_at_plane(stack, args.plane)
    check_frames(images)  # a bad image must not wait for a model to load
    embryo = args.embryo
    diameter_px = _diameter_px(args, stack.pixel_size_um, str(args.input))
    localise = False if args.no_localise else None
    # the cache: `blastoseg batch` runs this verb per embryo and loads the model once
    predictor = load_predictor(args.model, args.device, kind="amodal",
                               score_threshold=args.threshold, batch_size=args.batch_size,
                               count_stacked=args.count_stacked, flips=args.flips)
    print(f"model {predictor.entry.name} on {predictor.device_name}{_flips_note(predictor)}")
    requested = _requested_framing(embryo, diameter_px, localise, args,
                                   predictor.use_localisation)
    print(f"framing: {requested}")
    # streamed: each frame's result is written and dropped before the next batch runs,
    # so memory stays flat with the stack's length (issue 18 item 24)
    results = stream_predictions(predictor, images, progress_printer("segmenting"),
                                 embryo=embryo, diameter_px=diameter_px, localise=localise,
                                 steady=args.steady)
    frames: list[_Seen] = []
    _, is_stack = as_frames(images)
    paths = write_amodal_results(_keep_seen(results, frames), args.out,
                                 images=images if is_stack else images[None],
                                 video=is_stack and len(images) > 1,
                                 pixel_size_um=stack.pixel_size_um, overwrite=args.overwrite)
    print(_framing_line(_report_framing(frames), len(frames)))
    _report_no_cells(frames, float(predictor.score_threshold))
    for name, path in paths.items():
        print(f"wrote {name}: {path}")
    return 0


def _flips_note(predictor) -> str:
    return f", {predictor.flips} test-time flips" if predictor.flips else ""


def separate_images(path):
    """The layout of a folder of separate pictures (not one time-lapse), else None; says so."""
    from blastoseg.io.image_folders import folder_layout

    layout = folder_layout(path)
    if not layout.separate:
        return None
    print(f"{path}: {len(layout.files)} separate images ({layout.reason}): segmenting each "
          "on its own")
    return layout


def _segment_separate(args: argparse.Namespace, layout) -> int:
    """Segment a folder of separate pictures one by one (each framed on its own; the
    results are one dataset of independent images, not a time-lapse)."""
    from blastoseg.io.image_folders import read_separate_images
    from blastoseg.predict.amodal import AmodalPredictor
    from blastoseg.results.amodal import write_amodal_results

    stacks = read_separate_images(layout)
    if args.steady > 1:
        print("blastoseg: warning: --steady is for a time-lapse of one embryo; these pictures "
              "are framed each on its own", file=sys.stderr)
    if args.embryo is not None:
        print("blastoseg: warning: --embryo gives one circle for every picture of the folder",
              file=sys.stderr)
    predictor = AmodalPredictor(args.model, device=args.device,
                                score_threshold=args.threshold, batch_size=args.batch_size,
                                count_stacked=args.count_stacked, flips=args.flips)
    print(f"model {predictor.entry.name} on {predictor.device_name}{_flips_note(predictor)}")
    report = progress_printer("segmenting")
    frames, images = [], []
    for i, stack in enumerate(stacks):
        diameter_px = _diameter_px(args, stack.pixel_size_um, str(stack.files[0]))
        frames.append(predictor.predict(stack.data, embryo=args.embryo, diameter_px=diameter_px,
                                        localise=False if args.no_localise else None))
        images.append(stack.data)
        report(i + 1, len(stacks))
    names = [s.files[0].name for s in stacks]
    print(_framing_line(_report_framing(frames, names), len(frames)))
    _report_no_cells(frames, float(predictor.score_threshold))
    sizes = {s.pixel_size_um for s in stacks}
    paths = write_amodal_results(frames, args.out, images=images, video=False,
                                 pixel_size_um=sizes.pop() if len(sizes) == 1 else None,
                                 overwrite=args.overwrite)
    for name, path in paths.items():
        print(f"wrote {name}: {path}")
    return 0


def _eval_amodal(args: argparse.Namespace) -> int:
    from blastoseg.io import read_dataset
    from blastoseg.metrics import evaluate_amodal, format_report
    from blastoseg.predict.amodal import AmodalPredictor

    ds = read_dataset(args.data)
    if len(ds) == 0:
        from blastoseg.errors import DatasetFormatError

        raise DatasetFormatError(f"{args.data}: no images to evaluate")
    localise = False if args.no_localise else None
    # every image's diameter in pixels first: a missing pixel size fails before the model runs
    diameters = [_diameter_px(args, ds.images[i].get("pixel_size_um"),
                              f"image {ds.images[i].get('file_name')!r} of {args.data}")
                 for i in range(len(ds))]
    # keep every detection above a low score: AP ranks them, counting uses --threshold
    predictor = AmodalPredictor(args.model, device=args.device, score_threshold=0.05,
                                batch_size=args.batch_size, count_stacked=args.count_stacked,
                                flips=args.flips)
    report = progress_printer("evaluating")
    gt, pred = [], []
    for i in range(len(ds)):
        gt.append(ds.instances(i))
        pred.append(predictor.predict(ds.load_image(i), diameter_px=diameters[i],
                                      localise=localise))
        report(i + 1, len(ds))
    count_threshold = (args.threshold if args.threshold is not None
                       else predictor.calibrated_threshold)
    result = evaluate_amodal(gt, pred, score_threshold=count_threshold,
                             categories=ds.categories)
    result["model"] = predictor.entry.name
    result["flips"] = predictor.flips
    framing = _report_framing(pred, [str(ds.images[i].get("file_name")) for i in range(len(ds))])
    result["framing"] = framing
    if args.json:
        print(json.dumps(result, allow_nan=False))
    else:
        print(_framing_line(framing, len(pred)))
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


def _framing_options(p: argparse.ArgumentParser, *, circle: bool) -> None:
    g = p.add_argument_group("framing (where the embryo is; default: localised in each frame)")
    x = g.add_mutually_exclusive_group()
    if circle:
        x.add_argument("--embryo", type=_circle_arg, metavar="CX,CY,R", default=None,
                       help="the embryo's circle in pixels (x = column, y = row, radius to "
                            "the zona's outer face), used for every frame instead of "
                            "localising it")
    x.add_argument("--diameter", type=float, metavar="D", default=None,
                   help="the embryo's diameter (zona included): the localiser only looks "
                        "for embryos of this size (+-12 %%)")
    x.add_argument("--no-localise", action="store_true",
                   help="frame the whole image (frames that are already crops around the "
                        "embryo)")
    g.add_argument("--diameter-unit", choices=("px", "um"), default="px",
                   help="unit of --diameter (um needs the image's pixel size; default px)")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL, help=MODEL_HELP)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--threshold", type=unit_interval, default=None,
                   help="score threshold for cells (default: the model card's calibrated value)")
    p.add_argument("--batch-size", type=positive_int, default=4)
    p.add_argument("--count-stacked", action=argparse.BooleanOptionalAction, default=None,
                   help="count cells stacked under others with the model's layer rule "
                        "(default: as the model card says; amodal-default: off, see "
                        "docs/counting_analysis.md)")
    add_flips_option(p)


def add_segment_parser(kinds: argparse._SubParsersAction) -> None:
    am = kinds.add_parser("amodal", help="amodal blastomere masks (frame, TIFF stack, frame folder)")
    am.add_argument("input", type=Path, help="an image, a TIFF stack or a folder of frames")
    am.add_argument("--out", required=True, type=output_folder,
                    help="output folder: dataset (images + masks), counts.csv, cells.csv, "
                         "framing.csv")
    am.add_argument("--plane", type=non_negative_int, default=0,
                    help="focal-plane index for (T, Z, Y, X) input (default 0)")
    am.add_argument("--overwrite", action="store_true",
                    help="replace an existing output (previous annotations kept as a backup)")
    _common(am)
    _framing_options(am, circle=True)
    add_steady_option(am)
    am.set_defaults(func=_segment_amodal)


def add_eval_parser(ekinds: argparse._SubParsersAction) -> None:
    ea = ekinds.add_parser("amodal", help="amodal mask mAP, AP50, AP75, counting")
    ea.add_argument("--data", required=True, type=Path, help="dataset folder with ground truth")
    ea.add_argument("--json", action="store_true", help="print one JSON object")
    _common(ea)
    _framing_options(ea, circle=False)
    ea.set_defaults(func=_eval_amodal)


def add_calibrate_parser(ckinds: argparse._SubParsersAction) -> None:
    ca = ckinds.add_parser("amodal", help="score threshold and mask NMS for exact cell counts")
    ca.add_argument("--data", required=True, type=Path,
                    help="validation dataset folder (never the test set)")
    ca.add_argument("--model", default=DEFAULT_MODEL, help=MODEL_HELP)
    ca.add_argument("--device", default="auto")
    ca.add_argument("--frames", type=positive_int, default=None, help="use at most N frames")
    ca.add_argument("--write", action="store_true",
                    help="store the chosen values in the model's card (a user model)")
    ca.set_defaults(func=_calibrate_amodal)
