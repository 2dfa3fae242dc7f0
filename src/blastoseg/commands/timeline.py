"""``blastoseg timeline INPUT --out DIR`` and ``blastoseg eval timeline --data DIR``: the
morphokinetic timeline (t2 ... t8, cc2, s2) from per-frame cell counts.

The counts come from an "amodal" model's instances fused with a "count" model's density
(:mod:`blastoseg.predict.fused_counter`, the default when both are installed), or from one of
them alone (``--no-fuse``, or a count ``--model``); :mod:`blastoseg.measure.timeline` decodes
them into a non-decreasing stage sequence and the events.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from blastoseg.commands.options import add_flips_option, add_steady_option, output_folder
from blastoseg.commands.progress import progress_printer
from blastoseg.errors import BlastosegError
from blastoseg.predict.steady_framing import TIMELINE_STEADY

MODEL_HELP = ("a 'count' or 'amodal' model: registered name, .safetensors file or training "
              "job folder (default: amodal-default, fused with count-default when installed)")


def load_count_predictor(args: argparse.Namespace):
    """The counter the options ask for (:func:`blastoseg.predict.fused_counter.load_counter`)."""
    from blastoseg.predict.fused_counter import load_counter

    return load_counter(args.model, args.density_model, fuse=args.fuse, device=args.device,
                        count_stacked=args.count_stacked, flips=args.flips)


def count_timelapse(predictor, frames, label: str | None = None, steady: int = 0) -> list:
    """The :class:`~blastoseg.measure.frame_counts.FrameCount` of every frame (framed with
    the localiser's circles steadied over ``steady`` frames when > 1)."""
    from blastoseg.measure.frame_counts import iter_frame_counts
    from blastoseg.progress import run_with_progress

    report = progress_printer(label) if label else None
    framing = {"steady": steady} if steady > 1 else {}
    return run_with_progress(iter_frame_counts(predictor, frames, **framing), report, None)


def check_timelapse(lapse) -> None:
    """Refuse, before any counting, a time-lapse that cannot give a timeline."""
    from blastoseg.measure.timeline import TimelineError, check_frame_hours

    if len(lapse.frames) < 2:
        raise TimelineError(f"{lapse.name}: a timeline needs a time-lapse of at least 2 frames; "
                            f"got {len(lapse.frames)}")
    if lapse.hours is not None:
        check_frame_hours(lapse.hours, lapse.frame_names)


def with_frame_times(lapse, interval_min: float | None = None, start_h: float | None = None):
    """``lapse`` with its frame times settled by
    :func:`~blastoseg.measure.timeline.frame_times`: its own when it has any, else from the
    frame interval (``--interval-min``, ``--start-h``); ``time_note`` says what was used."""
    from dataclasses import replace

    from blastoseg.measure.timeline import frame_times

    times = frame_times(len(lapse.frames), lapse.hours, lapse.time_source,
                        interval_min=interval_min, start_h=start_h)
    if times.hours is None:
        return lapse  # frame indices; its time_note says why
    return replace(lapse, hours=times.hours, time_source=times.source, time_note=times.note)


def timeline_of(lapse, counts) -> object:
    from blastoseg.measure.timeline import build_timeline

    return build_timeline([c.estimate for c in counts], lapse.hours,
                          time_source=lapse.time_source, frame_names=lapse.frame_names)


def _print_events(name: str, timeline, note: str) -> None:
    print(f"{name}: {len(timeline.hours)} frames, times from {timeline.time_source}"
          + (f" ({note})" if note else ""))
    for k, v in timeline.events.items():
        when = ("not reached" if v is None else
                f"{v[0]:.2f} h (frame {v[1]})" if timeline.has_hours else f"frame {v[1]}")
        print(f"  {k:>4}: {when}")
    for k, v in timeline.intervals.items():
        length = ("-" if v is None else
                  f"{v:.2f} h" if timeline.has_hours else f"{v:.0f} frames")
        print(f"  {k:>4}: {length}")


def _timeline(args: argparse.Namespace) -> int:
    from blastoseg.io.timelapses import read_timelapses
    from blastoseg.results.files import check_output_folder
    from blastoseg.results.timeline import write_timeline_files

    check_output_folder(args.out)  # before any work: a bad output must not cost a run
    lapses = [with_frame_times(lapse, args.interval_min, args.start_h)
              for lapse in read_timelapses(args.input)]
    for lapse in lapses:
        check_timelapse(lapse)
    predictor = load_count_predictor(args)
    docs = []
    for lapse in lapses:
        if lapse.hours is None:
            print(f"blastoseg: warning: {lapse.name}: {lapse.time_note}; using frame indices "
                  "as times (give --interval-min for hours)", file=sys.stderr)
        elif lapse.time_note:
            print(f"blastoseg: note: {lapse.name}: {lapse.time_note}", file=sys.stderr)
        counts = count_timelapse(predictor, lapse.frames,
                                 None if args.json else f"counting {lapse.name}", args.steady)
        timeline = timeline_of(lapse, counts)
        out = Path(args.out) if len(lapses) == 1 else Path(args.out) / lapse.name
        write_timeline_files(out, timeline)
        docs.append({"name": lapse.name, "out": str(out), **timeline.to_dict()})
        if not args.json:
            _print_events(lapse.name, timeline, lapse.time_note)
    if args.json:
        print(json.dumps({"model": predictor.entry.name, "kind": predictor.kind,
                          "timelines": docs}, indent=2))
    return 0


def evaluate_timelines(data: Path, load_predictor, quiet: bool = False, steady: int = 0
                       ) -> dict:
    """Predicted against true timelines of every video of a dataset (see
    :func:`blastoseg.metrics.timeline.timeline_metrics`); the truth is the dataset's per-frame
    cell count (``n_cells``, else the number of annotated instances) decoded the same way;
    ``load_predictor()`` gives the counter, loaded once the data is known to be usable;
    ``steady`` as in :func:`count_timelapse`."""
    from blastoseg.io.timelapses import read_timelapses
    from blastoseg.measure.timeline import build_timeline
    from blastoseg.metrics.timeline import timeline_metrics

    lapses = [la for la in read_timelapses(data) if len(la.frames) >= 2]
    if not lapses:
        raise BlastosegError(f"{data}: no time-lapse of 2 frames or more (image entries need "
                             "video_id and frame_index)")
    predictor = load_predictor()
    predicted, truth = [], []
    start = time.perf_counter()
    for lapse in lapses:
        counts = count_timelapse(predictor, lapse.frames,
                                 None if quiet else f"counting {lapse.name}", steady)
        predicted.append(timeline_of(lapse, counts))
        truth.append(build_timeline(lapse.true_counts, lapse.hours,
                                    time_source=lapse.time_source))
    seconds = time.perf_counter() - start
    metrics = timeline_metrics(predicted, truth)
    return {**metrics, "model": predictor.entry.name, "kind": predictor.kind,
            "time_source": sorted({la.time_source for la in lapses}),
            "seconds_per_frame": seconds / max(metrics["n_frames"], 1)}


def _eval_timeline(args: argparse.Namespace) -> int:
    report = evaluate_timelines(args.data, lambda: load_count_predictor(args), quiet=args.json,
                                steady=args.steady)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    mae = report["event_mae_h"]
    print(f"{report['n_videos']} videos, {report['n_frames']} frames, model {report['model']} "
          f"({report['kind']}), times from {', '.join(report['time_source'])}")
    print(f"event MAE: {'-' if mae is None else f'{mae:.2f} h'} over "
          f"{report['events_matched']} events ({report['events_missed']} missed, "
          f"{report['events_extra']} extra)")
    for k, v in report["event_mae_h_by_event"].items():
        print(f"  {k}: {'-' if v is None else f'{v:.2f} h'}")
    print(f"stage accuracy: {100 * report['stage_accuracy']:.1f} % after decoding, "
          f"{100 * report['stage_accuracy_raw']:.1f} % before")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help=MODEL_HELP)
    p.add_argument("--density-model", default=None, metavar="COUNT_MODEL",
                   help="the count model fused with an amodal --model's instances (default: "
                        "count-default when installed)")
    p.add_argument("--fuse", action=argparse.BooleanOptionalAction, default=True,
                   help="count with the amodal instances and the density map together "
                        "(docs/models/count.md#fusion-with-the-amodal-detector-issue-15-item-4);"
                        " --no-fuse counts with one model")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--count-stacked", action=argparse.BooleanOptionalAction, default=None,
                   help="an amodal model counts cells stacked under others with its layer "
                        "rule (default: as its card says; amodal-default: off)")
    add_steady_option(p, default=TIMELINE_STEADY)
    add_flips_option(p)


def add_parsers(verbs: argparse._SubParsersAction) -> None:
    """``blastoseg timeline``."""
    p = verbs.add_parser("timeline", help="division times t2..t8 of a time-lapse",
                         description="Count the cells of every frame, decode a non-decreasing "
                                     "stage sequence and write timeline.csv and events.csv.")
    p.add_argument("input", type=Path,
                   help="TIFF stack, folder of frames (hours in the names, e.g. "
                        "frame_0003_25.5h.png) or dataset folder (one timeline per video)")
    p.add_argument("--out", required=True, type=output_folder, help="output folder")
    p.add_argument("--interval-min", type=float, default=None, metavar="MIN",
                   help="minutes between frames, for inputs without frame times (the times "
                        "an input carries win): events in hours instead of frames")
    p.add_argument("--start-h", type=float, default=None, metavar="H",
                   help="hours post insemination at the first frame (with --interval-min; "
                        "default 0)")
    _common(p)
    p.set_defaults(func=_timeline)


def add_eval_parser(ekinds: argparse._SubParsersAction) -> None:
    """``blastoseg eval timeline`` (an extra sub-verb of ``eval``, see commands/segment.py)."""
    p = ekinds.add_parser("timeline", help="division-time error and stage accuracy on "
                                           "time-lapse datasets")
    p.add_argument("--data", required=True, type=Path,
                   help="dataset folder whose images carry video_id, frame_index and hours")
    _common(p)
    p.set_defaults(func=_eval_timeline)
