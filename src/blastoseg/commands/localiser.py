"""``blastoseg segment localiser INPUT --out DIR`` (where is the embryo in each frame) and
``blastoseg eval localiser --data DIR`` (centre and radius errors against ``embryo_circle``)."""

from __future__ import annotations

import argparse

from blastoseg.commands.options import (
    add_eval_data,
    add_frames_input,
    frames_at_plane,
    print_eval_report,
)
from blastoseg.commands.progress import progress_printer
from blastoseg.kinds import get_kind

#: what ``eval localiser`` prints without --json
REPORT_KEYS = ("within_10pct", "centre_err", "radius_err", "not_found", "n_images",
               "ms_per_frame")


def _check_model(args: argparse.Namespace) -> None:
    """A named localiser model is resolved before any frame is read: the learned half runs
    only on frames where the classical one finds a circle, so a wrong name was otherwise
    ignored silently on the others (on every frame of a blank stack)."""
    if args.model is not None and args.method != "classical":
        from blastoseg.weights import resolve_model

        resolve_model(args.model, kind="localiser")


def _segment_localiser(args: argparse.Namespace) -> int:
    from blastoseg.io import read_images
    from blastoseg.predict.localise import locate_embryo
    from blastoseg.results.files import check_output_folder
    from blastoseg.results.framing import write_framing_results

    check_output_folder(args.out)  # before any work: a bad output must not cost a run
    _check_model(args)
    stack = read_images(args.input)
    data = frames_at_plane(stack, args.plane)
    frames = [data] if data.ndim == 2 else list(data)
    report = progress_printer("locating")
    boxes = []
    for t, frame in enumerate(frames):
        boxes.append(locate_embryo(frame, method=args.method, model=args.model))
        report(t + 1, len(frames))
    for t, box in enumerate(boxes):
        state = "no embryo found" if not box.found else (
            f"centre ({box.cx:.1f}, {box.cy:.1f}) radius {box.radius:.1f} px, confidence "
            f"{box.confidence:.2f}" + (" (unsure)" if box.unsure else ""))
        print(f"frame {t}: {state}" + (f"; {box.note}" if box.note and box.found else ""))
    for name, path in write_framing_results(boxes, args.out, overwrite=args.overwrite).items():
        print(f"wrote {name}: {path}")
    return 0


def _eval_localiser(args: argparse.Namespace) -> int:
    from blastoseg.predict.localise_eval import evaluate_localiser

    _check_model(args)
    result = evaluate_localiser(args.data, method=args.method, model=args.model,
                                max_images=args.max_images,
                                progress=None if args.json else progress_printer("evaluating"))
    print_eval_report(result, REPORT_KEYS, args.json, f"localiser {result['method']} on "
                      f"{result['n_images']} images of {result['data']}")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    from blastoseg.predict.localise import METHODS

    p.add_argument("--method", choices=METHODS, default="auto",
                   help="auto (default: the learned localiser checked by the classical one), "
                        "learned or classical")
    p.add_argument("--model", default=None,
                   help=f"the learned localiser: registered name, .safetensors or training "
                        f"job folder (default {get_kind('localiser').default_model})")


def add_segment_parser(kinds: argparse._SubParsersAction) -> None:
    p = kinds.add_parser("localiser", help="the embryo's circle (zona outer face) in every "
                                           "frame, with a confidence")
    add_frames_input(p, "output folder: embryos.csv")
    p.add_argument("--overwrite", action="store_true", help="replace an existing embryos.csv")
    _common(p)
    p.set_defaults(func=_segment_localiser)


def add_eval_parser(kinds: argparse._SubParsersAction) -> None:
    p = kinds.add_parser("localiser", help="centre and radius errors (fractions of the radius) "
                                           "against the dataset's embryo_circle")
    add_eval_data(p, "dataset folder whose images carry embryo_circle")
    _common(p)
    p.set_defaults(func=_eval_localiser)
