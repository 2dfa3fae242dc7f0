"""Accuracy, speed and memory of an amodal model on held-out synthetic embryos (issue 3, item 8).

What it does, in one run:

1. **Held-out frames.** Renders ``--frames`` synthetic 500 x 500 frames with
   :func:`blastoseg.synth.render_embryo`, frame ``i`` with seed ``--seed + i`` and
   ``1 + i % 8`` cells (so cell counts 1-8 are spread evenly). The default base seed 900000
   keeps these frames apart from training: ``blastoseg synth embryos --seed S`` draws its
   frame seeds at random from [0, 2**31) (a collision with 200 consecutive seeds is
   vanishingly unlikely, and ``--check-data`` verifies it for named datasets), on-the-fly
   amodal training derives 63-bit seeds from ``SeedSequence``, and the in-memory mask
   generators of ``train/shape_prior_data.py`` use consecutive seeds from their start seed
   (0 by default) upwards.
   The time-lapse uses seed ``--seed + --frames`` (never one of the frames' seeds).
2. **Accuracy.** Every frame goes through :class:`AmodalPredictor` at score threshold 0.05,
   so mask AP can rank detections as COCO does; :func:`evaluate_amodal` then gives amodal
   and visible mask AP and counts cells at score >= ``--count-threshold`` (0.5). These calls
   are timed too and reported as a secondary figure (more masks are mapped back at 0.05).
3. **Latency.** The frames again, one ``predictor.predict(frame)`` call each (batch of one)
   at the production threshold 0.5: localisation + framing + model + mapping masks back to
   the frame, after one untimed warm-up. Rendering is never timed. Median and p90 ms per
   frame, torch thread count stated.
4. **Throughput.** The frames once more through ``iter_predict`` with batch size
   ``--batch-size`` (4) at threshold 0.5; ms per frame x T is the *extrapolated* time for a
   T-frame time-lapse (T = ``--timelapse-frames`` or 500).
5. **Time-lapse** (only with ``--timelapse-frames T``): renders one T-frame synthetic
   time-lapse (untimed) and times ``iter_predict`` over all of it: the *measured* time.
6. **Memory.** Peak resident set size (``resource.getrusage``, monotonic) after each stage.
   It includes the rendered frames and the ground truth and predictions held for
   evaluation (their size is printed), so it is an upper bound for the predictor itself.

Markdown tables go to stdout (progress to stderr); ``--json OUT`` writes every number.

Usage::

    nice python benchmarks/amodal_benchmark.py --model amodal-default [--frames 200]
        [--seed 900000] [--size 500] [--threads N] [--timelapse-frames 500] [--json OUT]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_SEED = 900_000
EXTRAPOLATE_T = 500


def _fail(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (ru_maxrss is KiB on Linux)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if sys.platform == "darwin":  # bytes on macOS
        kb /= 1024
    return kb / 1024


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q))


def instances_mb(frames) -> float:
    """Bytes held by the masks / visible masks / occlusion maps of FrameInstances, in MiB."""
    total = 0
    for f in frames:
        for a in (f.masks, f.visible_masks, getattr(f, "occlusion", None)):
            if a is not None:
                total += np.asarray(a).nbytes
    return total / 2**20


def held_out_counts(n: int) -> list[int]:
    return [1 + i % 8 for i in range(n)]


def check_seed_overlap(seeds: set[int], data_dirs: list[str]) -> dict:
    """Seeds of the named training datasets (image ``seed`` metadata) that collide with ours."""
    from blastoseg.io import read_dataset

    seen, hits = 0, []
    for d in data_dirs:
        ds = read_dataset(d)
        for i in range(len(ds)):
            s = ds.extra(i).get("seed")
            if s is None:
                continue
            seen += 1
            if int(s) in seeds:
                hits.append({"dataset": str(d), "index": i, "seed": int(s)})
    return {"datasets": [str(d) for d in data_dirs], "seeds_checked": seen, "collisions": hits}


def render_frames(n: int, base_seed: int, size: int, progress) -> tuple[list, list, float]:
    from blastoseg.synth import EmbryoConfig, render_embryo

    cfg = EmbryoConfig(image_size=(size, size))
    images, gts = [], []
    t0 = time.perf_counter()
    for i, n_cells in enumerate(held_out_counts(n)):
        fr = render_embryo(n_cells, seed=base_seed + i, config=cfg)
        images.append(fr.image)
        gts.append(fr.instances)
        progress(i + 1, n)
    return images, gts, time.perf_counter() - t0


def drain(gen) -> list:
    """Run an ``iter_predict`` generator to the end; return its results."""
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


# --- Markdown ------------------------------------------------------------------------------

def _f(v, fmt: str = "{:.3f}") -> str:
    return "-" if v is None else fmt.format(v)


def _p(v) -> str:
    return "-" if v is None else f"{100 * v:.1f} %"


def print_markdown(res: dict) -> None:
    s, acc, sp = res["settings"], res["accuracy"], res["speed"]
    flips = f", {s['flips']} test-time flips" if s.get("flips") else ""
    print(f"## Amodal benchmark: model `{s['model']}`{flips}")
    print()
    print(f"{s['n_frames']} held-out synthetic frames, {s['size']} x {s['size']} px, seeds "
          f"{s['seed_first']}-{s['seed_last']}, cell counts 1-8 evenly; device "
          f"{s['device']}, {s['threads']} torch thread(s), torch {s['torch']}, CPU {s['cpu']}.")
    print()
    print("### Accuracy")
    print()
    print("| metric | value |")
    print("|---|---:|")
    rows = [("amodal mask mAP (AP@[.5:.95])", _f(acc.get("mAP"))),
            ("amodal AP50", _f(acc.get("AP50"))), ("amodal AP75", _f(acc.get("AP75"))),
            ("visible mask mAP", _f(acc.get("visible_mAP"))),
            ("visible AP50", _f(acc.get("visible_AP50"))),
            (f"count exact (score >= {acc['score_threshold']:g})", _p(acc.get("count_exact"))),
            ("count within 1", _p(acc.get("count_within1"))),
            ("count MAE (cells)", _f(acc.get("count_mae"))),
            ("count bias (pred - true)", _f(acc.get("count_bias"), "{:+.3f}")),
            ("true cells / predictions (score >= 0.05)",
             f"{acc['n_gt_instances']} / {acc['n_pred_instances']}")]
    for name, val in rows:
        print(f"| {name} | {val} |")
    print()
    print("| true cells | frames | count exact | count MAE | mAP | AP50 | AP75 |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    by_c = {int(k): v for k, v in acc.get("by_count", {}).items()}
    by_ap = {int(k): v for k, v in acc.get("mAP_by_count", {}).items()}
    for n in sorted(set(by_c) | set(by_ap)):
        c, a = by_c.get(n, {}), by_ap.get(n, {})
        print(f"| {n} | {c.get('n_images', a.get('n_images', 0))} | {_p(c.get('exact'))} | "
              f"{_f(c.get('mae'), '{:.2f}')} | {_f(a.get('mAP'))} | {_f(a.get('AP50'))} | "
              f"{_f(a.get('AP75'))} |")
    print()
    print("### Speed (full predictor: localisation + framing + model + mapping back)")
    print()
    print("| measure | value |")
    print("|---|---:|")
    thr = f"threshold {sp['latency_threshold']:g}"
    print(f"| median ms / frame (batch 1, {thr}) | {sp['latency_ms_median']:.1f} |")
    print(f"| p90 ms / frame (batch 1, {thr}) | {sp['latency_ms_p90']:.1f} |")
    print(f"| mean ms / frame (batch 1, {thr}) | {sp['latency_ms_mean']:.1f} |")
    print(f"| median / p90 ms / frame (batch 1, threshold 0.05, accuracy pass) | "
          f"{sp['latency_ms_median_threshold_0.05']:.1f} / "
          f"{sp['latency_ms_p90_threshold_0.05']:.1f} |")
    print(f"| ms / frame, iter_predict batch {sp['batch_size']} "
          f"(threshold {sp['throughput_threshold']:g}) | {sp['throughput_ms_per_frame']:.1f} |")
    tl = res["timelapse"]
    print(f"| {tl['T']}-frame time-lapse, extrapolated | {tl['extrapolated_s']:.1f} s |")
    if tl.get("measured_s") is not None:
        print(f"| {tl['T']}-frame time-lapse, measured (iter_predict, batch {sp['batch_size']}) "
              f"| {tl['measured_s']:.1f} s ({1000 * tl['measured_s'] / tl['T']:.1f} ms / frame) |")
    else:
        print("| time-lapse, measured | not run (pass --timelapse-frames T) |")
    print(f"| rendering (excluded above) | {res['rendering']['held_out_s']:.1f} s for "
          f"{s['n_frames']} frames |")
    print()
    print("### Memory (peak RSS of the whole benchmark process, monotonic)")
    print()
    print("| after | peak RSS (MiB) |")
    print("|---|---:|")
    for name, mb in res["memory"]["peak_rss_mb"].items():
        print(f"| {name} | {mb:.0f} |")
    held = res["memory"]
    print()
    print(f"Held for evaluation at the end of the accuracy pass: rendered frames "
          f"{held['frames_mb']:.0f} MiB, ground truth {held['gt_mb']:.0f} MiB, predictions "
          f"{held['pred_mb']:.0f} MiB (masks, visible masks, occlusion maps).")
    if res.get("seed_check"):
        sc = res["seed_check"]
        print()
        print(f"Seed check against {', '.join(sc['datasets'])}: {sc['seeds_checked']} "
              f"training seeds, {len(sc['collisions'])} collisions.")
    print()
    print("<details><summary>evaluate_amodal report</summary>")
    print()
    print("```")
    print(res["report_text"])
    print("```")
    print()
    print("</details>")


# --- main ----------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from blastoseg.commands.options import add_flips_option

    ap = argparse.ArgumentParser(
        description="Accuracy (mask AP, counts), speed and memory of an amodal model on "
                    "held-out synthetic frames. See the module docstring for details.")
    ap.add_argument("--model", required=True,
                    help="registered model name (see `blastoseg models`) or a .safetensors path")
    ap.add_argument("--frames", type=int, default=200, help="held-out frames (default 200)")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED,
                    help=f"base seed: frame i uses seed + i (default {DEFAULT_SEED}; disjoint from "
                         "the training seeds, see the module docstring)")
    ap.add_argument("--size", type=int, default=500, help="frame side in pixels (default 500)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: torch's default, "
                         "i.e. the number of cores)")
    ap.add_argument("--device", default="cpu",
                    help="cpu (default), cuda, cuda:N, mps or auto")
    ap.add_argument("--batch-size", type=int, default=4,
                    help="batch size of the throughput and time-lapse runs (default 4)")
    ap.add_argument("--count-threshold", type=float, default=0.5,
                    help="score threshold for counting cells (default 0.5)")
    ap.add_argument("--timelapse-frames", type=int, default=None, metavar="T",
                    help="also render and segment a T-frame time-lapse and time it "
                         f"(default: only extrapolate to {EXTRAPOLATE_T} frames)")
    ap.add_argument("--check-data", default=None, metavar="DIR[,DIR...]",
                    help="training dataset folders whose frame seeds must not collide with "
                         "the held-out seeds (read from each image's metadata)")
    add_flips_option(ap)
    ap.add_argument("--json", type=Path, default=None, metavar="OUT",
                    help="write every number to this JSON file")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.frames < 1:
        _fail("--frames must be at least 1")
    if args.size < 64 or args.size > 4096:
        _fail("--size must be from 64 to 4096 pixels (the predictor's limits)")
    if args.batch_size < 1:
        _fail("--batch-size must be at least 1")
    if args.timelapse_frames is not None and args.timelapse_frames < 2:
        _fail("--timelapse-frames must be at least 2")
    if args.threads is not None and args.threads < 1:
        _fail("--threads must be at least 1")
    if args.json is not None and not args.json.parent.exists():
        _fail(f"--json: folder {args.json.parent} does not exist")
    if args.seed < 0 or args.seed + args.frames + 1 > 2**63 - 1:
        _fail("--seed must be a non-negative integer")

    import torch

    from blastoseg.commands.progress import progress_printer
    from blastoseg.errors import BlastosegError
    from blastoseg.metrics import evaluate_amodal, format_report
    from blastoseg.predict.amodal import AmodalPredictor
    from blastoseg.progress import run_with_progress

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    seeds = list(range(args.seed, args.seed + args.frames))
    tl_seed = args.seed + args.frames
    memory: dict[str, float] = {}

    try:
        seed_check = None
        if args.check_data:
            dirs = [d for d in args.check_data.split(",") if d]
            seed_check = check_seed_overlap(set(seeds) | {tl_seed}, dirs)
            if seed_check["collisions"]:
                _fail(f"held-out seeds collide with training data: "
                      f"{seed_check['collisions'][:5]}; choose another --seed")

        predictor = AmodalPredictor(args.model, device=args.device, score_threshold=0.05,
                                    batch_size=1, flips=args.flips)
        print(f"model {predictor.entry.name} on {predictor.device_name}, {threads} thread(s)",
              file=sys.stderr)
        memory["imports + model load"] = peak_rss_mb()

        images, gts, render_s = render_frames(args.frames, args.seed, args.size,
                                              progress_printer("rendering held-out frames"))
        memory["rendering held-out frames"] = peak_rss_mb()

        predictor.predict(images[0])  # warm-up (untimed): allocator, lazy init
        memory["warm-up"] = peak_rss_mb()

        # accuracy: keep detections down to 0.05 so AP can rank them (COCO practice)
        report = progress_printer("predicting (accuracy, threshold 0.05)")
        preds, lat_low = [], []
        for i, img in enumerate(images):
            t0 = time.perf_counter()
            out = predictor.predict(img)
            lat_low.append((time.perf_counter() - t0) * 1000.0)
            out.occlusion = None  # not used by the evaluation; do not hold it
            preds.append(out)
            report(i + 1, len(images))
        memory["accuracy pass (predictions held)"] = peak_rss_mb()
        frames_mb = sum(im.nbytes for im in images) / 2**20
        gt_mb, pred_mb = instances_mb(gts), instances_mb(preds)

        acc = evaluate_amodal(gts, preds, score_threshold=args.count_threshold)
        report_text = format_report(acc)
        del preds
        gc.collect()

        # latency at the production threshold, one frame per call (interactive use)
        predictor.score_threshold = args.count_threshold
        report = progress_printer(f"timing (batch 1, threshold {args.count_threshold:g})")
        lat = []
        for i, img in enumerate(images):
            t0 = time.perf_counter()
            predictor.predict(img)
            lat.append((time.perf_counter() - t0) * 1000.0)
            report(i + 1, len(images))
        memory["latency pass"] = peak_rss_mb()

        # throughput at the production threshold and batch size
        predictor.batch_size = args.batch_size
        t0 = time.perf_counter()
        drain(predictor.iter_predict(images))
        thr_ms = (time.perf_counter() - t0) * 1000.0 / len(images)
        memory["throughput pass"] = peak_rss_mb()
        del images, gts
        gc.collect()

        T = args.timelapse_frames or EXTRAPOLATE_T
        timelapse = {"T": T, "seed": tl_seed if args.timelapse_frames else None,
                     "batch_size": args.batch_size, "extrapolated_s": thr_ms * T / 1000.0,
                     "measured_s": None, "rendering_s": None}
        if args.timelapse_frames:
            from blastoseg.synth import EmbryoConfig, iter_timelapse

            cfg = EmbryoConfig(image_size=(args.size, args.size))
            rep = progress_printer(f"rendering {T}-frame time-lapse")
            t0 = time.perf_counter()
            stack = []
            for k, fr in enumerate(iter_timelapse(T, tl_seed, cfg)):
                stack.append(fr.image)
                rep(k + 1, T)
            timelapse["rendering_s"] = time.perf_counter() - t0
            stack = np.stack(stack)
            memory[f"rendering {T}-frame time-lapse"] = peak_rss_mb()
            rep = progress_printer(f"segmenting {T}-frame time-lapse")
            t0 = time.perf_counter()
            results = run_with_progress(predictor.iter_predict(list(stack)), rep)
            timelapse["measured_s"] = time.perf_counter() - t0
            counts = [int(np.count_nonzero(r.scores >= args.count_threshold)) for r in results]
            timelapse["results_mb"] = instances_mb(results)
            timelapse["predicted_counts_first_last"] = [counts[0], counts[-1]]
            memory[f"{T}-frame time-lapse (results held)"] = peak_rss_mb()
    except BlastosegError as exc:
        _fail(str(exc))

    res = {
        "settings": {
            "model": predictor.entry.name, "flips": predictor.flips,
            "device": predictor.device_name,
            "threads": threads, "torch": torch.__version__, "cpu": cpu_name(),
            "cores": os.cpu_count(), "n_frames": args.frames, "size": args.size,
            "seed_first": seeds[0], "seed_last": seeds[-1],
            "cell_counts": "1 + i % 8", "ap_score_threshold": 0.05,
            "count_threshold": args.count_threshold, "batch_size": args.batch_size,
        },
        "accuracy": acc,
        "speed": {
            "latency_ms_median": statistics.median(lat), "latency_ms_p90": percentile(lat, 90),
            "latency_ms_mean": statistics.fmean(lat), "latency_ms_min": min(lat),
            "latency_ms_max": max(lat), "latency_batch_size": 1,
            "latency_threshold": args.count_threshold,
            "latency_ms_median_threshold_0.05": statistics.median(lat_low),
            "latency_ms_p90_threshold_0.05": percentile(lat_low, 90),
            "batch_size": args.batch_size,
            "throughput_ms_per_frame": thr_ms, "throughput_threshold": args.count_threshold,
        },
        "timelapse": timelapse,
        "rendering": {"held_out_s": render_s},
        "memory": {"peak_rss_mb": memory, "frames_mb": frames_mb, "gt_mb": gt_mb,
                   "pred_mb": pred_mb},
        "seed_check": seed_check,
        "report_text": report_text,
    }
    print_markdown(res)
    if args.json is not None:
        args.json.write_text(json.dumps(res, indent=2, allow_nan=False) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
