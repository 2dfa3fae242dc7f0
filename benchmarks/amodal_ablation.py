"""Ablations of the amodal detector on the same held-out synthetic frames (paper Tables 1, 3).

Table 1 of the paper compares the mask heads (an FCN mask head vs VQ-VAE shape codes),
Table 3 the components (VQ-VAE codes; + the refinement head; + the occlusion map). This
script evaluates several already-trained, registered amodal models on exactly the same
frames and prints both tables.

The ablation models are trained with one config each from ``configs/ablation/``::

    blastoseg train amodal --config configs/ablation/<variant>.json --data <synth_train> \\
        --val <synth_val> --name ablation-<variant>

for ``<variant>`` in fcn, vq, vq_refine, vq_refine_occ: the same data, seed 0 and the same
700-step budget, only ``mask_head`` ("fcn" | "vq" | "vq_refine") and ``occlusion`` differ.
Each model's card says which variant it is (``config.model.mask_head`` / ``occlusion``); the
rows are labelled from the cards, not from the names.

What it does, in one run:

1. **Held-out frames.** Renders ``--frames`` synthetic frames once, shared by every model,
   exactly as ``benchmarks/amodal_benchmark.py`` does (frame ``i``: seed ``--seed + i``,
   ``1 + i % 8`` cells; see its docstring for why base seed 900000 is disjoint from training).
2. **Accuracy.** Per model, :class:`AmodalPredictor` (CPU, score threshold 0.05, batch 4)
   segments every frame; :func:`evaluate_amodal` gives amodal mask mAP / AP50 / AP75, visible
   mask mAP, and counts at score >= ``--count-threshold`` (0.5): exact-count rate and MAE.
3. **Size and speed.** Parameters (all; and without the frozen VQ-VAE shape prior, i.e. those
   trained by the detector), and the median ms / frame of a batch-1 ``predict`` at threshold
   ``--count-threshold`` over the first min(50, frames) frames, after one untimed warm-up.
4. **Training** figures from each card (steps, step of the kept weights, seed, wall time,
   validation mAP), so that equal budgets can be checked.

Markdown goes to stdout (progress to stderr); ``--json OUT`` writes every number.

Usage::

    nice python benchmarks/amodal_ablation.py \\
        --models ablation-fcn,ablation-vq,ablation-vq_refine,ablation-vq_refine_occ \\
        [--frames 200] [--seed 900000] [--size 500] [--threads N] [--count-threshold 0.5] \\
        [--check-data DIR[,DIR...]] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import amodal_benchmark as ab  # noqa: E402

HEAD_LABELS = {"fcn": "FCN", "vq": "VQ-VAE", "vq_refine": "VQ-VAE + refinement"}
TABLE3_ORDER = [("vq", False, "VQ-VAE"), ("vq_refine", False, "+ refinement"),
                ("vq_refine", True, "+ occlusion map")]
LATENCY_FRAMES = 50


def _fail(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def label(mask_head: str, occlusion: bool) -> str:
    return HEAD_LABELS.get(mask_head, mask_head) + (" + occlusion map" if occlusion else "")


def card_training(card) -> dict:
    t = card.training or {}
    return {"steps": t.get("steps"), "weights_from_step": t.get("weights_from_step"),
            "seed": t.get("seed"), "elapsed_s": t.get("elapsed_s"),
            "max_steps": (t.get("hyper") or {}).get("max_steps"),
            "best_metric": t.get("best_metric"), "val_mAP": (card.metrics or {}).get("mAP"),
            "training_data": card.training_data}


def evaluate_model(name: str, images: list, gts: list, count_thr: float) -> dict:
    from blastoseg.commands.progress import progress_printer
    from blastoseg.metrics import evaluate_amodal
    from blastoseg.predict.amodal import AmodalPredictor
    from blastoseg.progress import run_with_progress

    pred = AmodalPredictor(name, device="cpu", score_threshold=0.05, batch_size=4)
    net = pred.model
    total = sum(p.numel() for p in net.parameters())
    frozen = sum(p.numel() for p in net.vqvae.parameters()) if net.vqvae is not None else 0
    t0 = time.perf_counter()
    preds = run_with_progress(pred.iter_predict(images),
                              progress_printer(f"{name}: predicting (threshold 0.05)"))
    acc_s = time.perf_counter() - t0
    for p in preds:
        p.occlusion = None  # not evaluated; do not hold it
    acc = evaluate_amodal(gts, preds, score_threshold=count_thr)
    del preds

    pred.score_threshold, pred.batch_size = count_thr, 1
    timed = images[:min(LATENCY_FRAMES, len(images))]
    pred.predict(timed[0])  # warm-up (untimed)
    lat = []
    for img in timed:
        t0 = time.perf_counter()
        pred.predict(img)
        lat.append((time.perf_counter() - t0) * 1000.0)
    print(f"{name}: mAP {ab._f(acc.get('mAP'))}, {statistics.median(lat):.1f} ms/frame",
          file=sys.stderr)
    cfg = pred.config
    return {
        "model": pred.entry.name, "source": pred.entry.source,
        "mask_head": cfg.mask_head, "occlusion": bool(cfg.occlusion),
        "label": label(cfg.mask_head, bool(cfg.occlusion)),
        "mAP": acc.get("mAP"), "AP50": acc.get("AP50"), "AP75": acc.get("AP75"),
        "visible_mAP": acc.get("visible_mAP"), "count_exact": acc.get("count_exact"),
        "count_mae": acc.get("count_mae"), "count_within1": acc.get("count_within1"),
        "count_bias": acc.get("count_bias"), "n_pred_instances": acc.get("n_pred_instances"),
        "params": total, "params_frozen_vqvae": frozen, "params_trained": total - frozen,
        "latency_ms_median": statistics.median(lat), "latency_frames": len(timed),
        "accuracy_pass_ms_per_frame": 1000.0 * acc_s / len(images),
        "training": card_training(pred.entry.card), "accuracy": acc,
    }


# --- Markdown ------------------------------------------------------------------------------

COLS = ("| model | mask head | occlusion | mAP | AP50 | AP75 | visible mAP | count exact | "
        "count MAE | params (trained) | ms/frame |")


def row(r: dict) -> str:
    head = HEAD_LABELS.get(r["mask_head"], r["mask_head"])
    return (f"| `{r['model']}` | {head} | {'yes' if r['occlusion'] else 'no'} | "
            f"{ab._f(r['mAP'])} | {ab._f(r['AP50'])} | {ab._f(r['AP75'])} | "
            f"{ab._f(r['visible_mAP'])} | {ab._p(r['count_exact'])} | "
            f"{ab._f(r['count_mae'], '{:.2f}')} | {r['params'] / 1e6:.2f} M "
            f"({r['params_trained'] / 1e6:.2f} M) | {r['latency_ms_median']:.0f} |")


def table1(rows: list[dict]) -> list[dict]:
    """The FCN models and every other model that shares an FCN model's occlusion setting."""
    occ = {r["occlusion"] for r in rows if r["mask_head"] == "fcn"}
    return [r for r in rows if r["occlusion"] in occ]


def table3(rows: list[dict]) -> list[tuple[str, dict]]:
    out = []
    for head, occ, name in TABLE3_ORDER:
        match = [r for r in rows if r["mask_head"] == head and r["occlusion"] == occ]
        if match:
            out.append((name, match[0]))
    return out


def print_markdown(res: dict) -> None:
    s, rows = res["settings"], res["models"]
    print("## Amodal ablations (paper Tables 1 and 3)")
    print()
    print(f"{s['n_frames']} held-out synthetic frames, {s['size']} x {s['size']} px, seeds "
          f"{s['seed_first']}-{s['seed_last']}, cell counts 1-8 evenly, the same frames for "
          f"every model; CPU, {s['threads']} torch thread(s), torch {s['torch']}, CPU "
          f"{s['cpu']}. Mask AP from detections at score >= 0.05; counts at score >= "
          f"{s['count_threshold']:g}; ms/frame: median of batch-1 `predict` over "
          f"{s['latency_frames']} frames at threshold {s['count_threshold']:g}. Params: all "
          "(in brackets: without the frozen VQ-VAE shape prior).")
    print()
    print("### All models")
    print()
    print(COLS)
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(row(r))
    print()
    print("### Table 1 (paper): mask head")
    print()
    t1 = table1(rows)
    if not t1:
        print("No FCN mask-head model among `--models`: nothing to compare.")
    else:
        print(COLS)
        print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in t1:
            print(row(r))
    print()
    print("### Table 3 (paper): components")
    print()
    t3 = table3(rows)
    if not t3:
        print("No VQ-VAE model among `--models`.")
    else:
        print("| components | model | mAP | delta mAP | AP50 | AP75 | visible mAP | "
              "count exact | count MAE |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        prev = None
        for name, r in t3:
            d = (r["mAP"] - prev if prev is not None and r["mAP"] is not None else None)
            print(f"| {name} | `{r['model']}` | {ab._f(r['mAP'])} | {ab._f(d, '{:+.3f}')} | "
                  f"{ab._f(r['AP50'])} | {ab._f(r['AP75'])} | {ab._f(r['visible_mAP'])} | "
                  f"{ab._p(r['count_exact'])} | {ab._f(r['count_mae'], '{:.2f}')} |")
            prev = r["mAP"]
        missing = [n for h, o, n in TABLE3_ORDER if not any(
            r["mask_head"] == h and r["occlusion"] == o for r in rows)]
        if missing:
            print()
            print(f"Not among `--models`: {', '.join(missing)}.")
    print()
    print("### Training (from the model cards)")
    print()
    print("| model | variant | steps | weights from step | seed | train time | val mAP (card) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        t = r["training"]
        el = "-" if t["elapsed_s"] is None else f"{t['elapsed_s'] / 60:.1f} min"
        print(f"| `{r['model']}` | {r['label']} | {t['steps'] or '-'} | "
              f"{t['weights_from_step'] or '-'} | {'-' if t['seed'] is None else t['seed']} | "
              f"{el} | {ab._f(t['val_mAP'])} |")
    if res.get("seed_check"):
        sc = res["seed_check"]
        print()
        print(f"Seed check against {', '.join(sc['datasets'])}: {sc['seeds_checked']} "
              f"training seeds, {len(sc['collisions'])} collisions.")


# --- main ----------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description="Evaluate several amodal models (the ablations of paper Tables 1 and 3) "
                    "on the same held-out synthetic frames. See the module docstring.")
    ap.add_argument("--models", required=True, metavar="NAME[,NAME...]",
                    help="comma-separated registered amodal models (or .safetensors paths)")
    ap.add_argument("--frames", type=int, default=200, help="held-out frames (default 200)")
    ap.add_argument("--seed", type=int, default=ab.DEFAULT_SEED,
                    help=f"base seed: frame i uses seed + i (default {ab.DEFAULT_SEED})")
    ap.add_argument("--size", type=int, default=500, help="frame side in pixels (default 500)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: torch's default)")
    ap.add_argument("--count-threshold", type=float, default=0.5,
                    help="score threshold for counting cells and timing (default 0.5)")
    ap.add_argument("--check-data", default=None, metavar="DIR[,DIR...]",
                    help="training dataset folders whose frame seeds must not collide with "
                         "the held-out seeds")
    ap.add_argument("--json", type=Path, default=None, metavar="OUT",
                    help="write every number to this JSON file")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    if not names:
        _fail("--models needs at least one model name")
    if len(set(names)) != len(names):
        _fail("--models names a model twice")
    if args.frames < 1:
        _fail("--frames must be at least 1")
    if args.size < 64 or args.size > 4096:
        _fail("--size must be from 64 to 4096 pixels (the predictor's limits)")
    if args.threads is not None and args.threads < 1:
        _fail("--threads must be at least 1")
    if not 0.0 <= args.count_threshold <= 1.0:
        _fail("--count-threshold must be from 0 to 1")
    if args.json is not None and not args.json.parent.exists():
        _fail(f"--json: folder {args.json.parent} does not exist")
    if args.seed < 0 or args.seed + args.frames > 2**63 - 1:
        _fail("--seed must be a non-negative integer")

    import torch

    from blastoseg.commands.progress import progress_printer
    from blastoseg.errors import BlastosegError
    from blastoseg.weights import resolve_model

    for n in names:  # fail fast, before rendering: unknown names, other kinds
        try:
            resolve_model(n, kind="amodal")
        except BlastosegError as exc:
            _fail(str(exc))
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    seeds = list(range(args.seed, args.seed + args.frames))

    try:
        seed_check = None
        if args.check_data:
            dirs = [d for d in args.check_data.split(",") if d]
            seed_check = ab.check_seed_overlap(set(seeds), dirs)
            if seed_check["collisions"]:
                _fail(f"held-out seeds collide with training data: "
                      f"{seed_check['collisions'][:5]}; choose another --seed")
        images, gts, render_s = ab.render_frames(
            args.frames, args.seed, args.size, progress_printer("rendering held-out frames"))
        rows = [evaluate_model(n, images, gts, args.count_threshold) for n in names]
    except BlastosegError as exc:
        _fail(str(exc))

    res = {
        "settings": {
            "models": names, "device": "cpu", "threads": torch.get_num_threads(),
            "torch": torch.__version__, "cpu": ab.cpu_name(), "cores": os.cpu_count(),
            "n_frames": args.frames, "size": args.size, "seed_first": seeds[0],
            "seed_last": seeds[-1], "cell_counts": "1 + i % 8",
            "ap_score_threshold": 0.05, "count_threshold": args.count_threshold,
            "accuracy_batch_size": 4, "latency_frames": min(LATENCY_FRAMES, args.frames),
            "rendering_s": render_s, "peak_rss_mb": ab.peak_rss_mb(),
        },
        "models": rows,
        "table1": [r["model"] for r in table1(rows)],
        "table3": [{"components": n, "model": r["model"]} for n, r in table3(rows)],
        "seed_check": seed_check,
    }
    print_markdown(res)
    if args.json is not None:
        args.json.write_text(json.dumps(res, indent=2, allow_nan=False) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
