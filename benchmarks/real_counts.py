"""Cell counts of an amodal model on real embryo crops labelled only by their count.

A robustness check, not a training set (issue 3, Goals): each image's true number of
blastomeres is parsed from its file name (``5cells.jpg``, ``1cell.png``, ``embryo_3_cells.tif``;
the number right before ``cell``/``cells``). The default layout is that of
``../shared/data/real/embryo_counts/``: one sub-folder per modality (``microscope/``,
``timelapse/``), images directly inside; images directly in ``--real`` form one modality
named after the folder. Files without a count in the name are listed and skipped.

Prints a Markdown table per image (true count, predicted count at score >= ``--threshold``,
mean score of the counted cells, scores of the best uncounted candidates) and the exact-count
accuracy, within-one accuracy, MAE and bias per modality and overall.
``--overlay OUT_DIR`` writes PNGs with the predicted amodal outlines for looking at; it must
lie outside the repository (the real images are not ours to commit).

A ``count`` model (Cell-Net, issue 15) is run with its own predictor: its count is the
rounded integral of the density map (the "mean score" column then holds the integral) and
``--threshold`` / ``--overlay`` do not apply. ``--fuse COUNT_MODEL`` (with an amodal
``--model``) also runs that Cell-Net and reports the fused count of
:mod:`blastoseg.predict.count_fusion` in the "predicted" column, with the exact counts of the
instances alone and the density alone below the summary (issue 15, item 4).

Usage::

    nice python benchmarks/real_counts.py --model amodal-default \\
        [--real ../shared/data/real/embryo_counts] [--overlay /tmp/real_overlays] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_REAL = REPO.parent / "shared" / "data" / "real" / "embryo_counts"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
_COUNT_RE = re.compile(r"(?<![0-9])([0-9]{1,2})[ _-]?cells?(?![a-z])", re.IGNORECASE)


def _fail(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def count_from_name(name: str) -> int | None:
    """``5cells.jpg`` -> 5, ``1cell.png`` -> 1, ``emb_3-cells_a.tif`` -> 3; else None."""
    m = _COUNT_RE.search(Path(name).stem)
    return int(m.group(1)) if m else None


def find_images(root: Path) -> tuple[list[tuple[str, Path, int]], list[Path]]:
    """(modality, path, true count) of every labelled image, and the unlabelled ones."""
    def images_in(folder: Path) -> list[Path]:
        return sorted(p for p in folder.iterdir()
                      if p.is_file() and not p.name.startswith(".")
                      and p.suffix.lower() in IMAGE_SUFFIXES)

    groups = [(root.name, images_in(root))]
    groups += [(d.name, images_in(d)) for d in sorted(root.iterdir())
               if d.is_dir() and not d.name.startswith(".")]
    found, skipped = [], []
    for modality, files in groups:
        for p in files:
            n = count_from_name(p.name)
            if n is None:
                skipped.append(p)
            else:
                found.append((modality, p, n))
    return found, skipped


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def build_parser() -> argparse.ArgumentParser:
    from blastoseg.commands.options import add_flips_option

    ap = argparse.ArgumentParser(
        description="Predicted vs true cell counts on real embryo crops whose file names give "
                    "the count (e.g. 5cells.jpg); per image and per modality (sub-folder).")
    ap.add_argument("--model", required=True,
                    help="registered model name (see `blastoseg models`) or a .safetensors path")
    ap.add_argument("--real", type=Path, default=DEFAULT_REAL, metavar="DIR",
                    help=f"folder of labelled images, one sub-folder per modality "
                         f"(default {DEFAULT_REAL})")
    ap.add_argument("--threshold", type=float, default=0.5,
                    help="score threshold for counting a cell (default 0.5)")
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N, mps or auto")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--overlay", type=Path, default=None, metavar="OUT_DIR",
                    help="write PNGs with the predicted amodal outlines here "
                         "(outside the repository)")
    ap.add_argument("--zoom", type=int, default=2,
                    help="integer enlargement of the overlay PNGs (default 2)")
    ap.add_argument("--fuse", default=None, metavar="COUNT_MODEL",
                    help="also run this count model (Cell-Net) and report the fused count")
    add_flips_option(ap)
    ap.add_argument("--json", type=Path, default=None, metavar="OUT",
                    help="write the per-image rows and summaries to this JSON file")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.real.is_dir():
        _fail(f"--real {args.real}: no such folder (expected sub-folders of images named like "
              f"5cells.jpg)")
    if not 0.0 <= args.threshold <= 1.0:
        _fail("--threshold must be from 0 to 1")
    if args.zoom < 1:
        _fail("--zoom must be at least 1")
    if args.threads is not None and args.threads < 1:
        _fail("--threads must be at least 1")
    if args.overlay is not None and _inside(args.overlay, REPO):
        _fail(f"--overlay {args.overlay} is inside the repository {REPO}; the real images must "
              f"not be copied into it - choose a folder elsewhere (e.g. /tmp/real_overlays)")
    if args.json is not None and not args.json.parent.exists():
        _fail(f"--json: folder {args.json.parent} does not exist")

    found, skipped = find_images(args.real)
    for p in skipped[:5]:
        print(f"skipped {p}: no cell count in the file name", file=sys.stderr)
    if len(skipped) > 5:
        print(f"... and {len(skipped) - 5} more files without a cell count in the name",
              file=sys.stderr)
    if not found:
        _fail(f"{args.real}: no images with a cell count in the name (like 5cells.jpg) "
              f"directly inside it or in its sub-folders")

    import torch

    from blastoseg.errors import BlastosegError
    from blastoseg.io import read_image
    from blastoseg.metrics import count_metrics
    from blastoseg.predict.amodal import AmodalPredictor

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    from blastoseg.weights import resolve_model

    try:
        kind = resolve_model(args.model).kind
        if kind == "count":  # Cell-Net (issue 15): the count is round(integral of the density)
            from blastoseg.predict.count import CountPredictor

            predictor = CountPredictor(args.model, device=args.device, batch_size=1)
        else:
            # keep candidates down to 0.05 to show the near misses; count at --threshold
            predictor = AmodalPredictor(args.model, device=args.device,
                                        score_threshold=min(0.05, args.threshold),
                                        batch_size=1, flips=args.flips)
    except BlastosegError as exc:
        _fail(str(exc))
    if kind == "count" and args.overlay is not None:
        _fail("--overlay draws amodal outlines; a count model has none")
    if kind == "count" and args.flips:
        _fail("--flips merges an amodal model's detections; a count model has none")
    fuser = None
    if args.fuse is not None:
        if kind == "count":
            _fail("--fuse needs an amodal --model (the instances to fuse with the density)")
        from blastoseg.predict.count import CountPredictor
        from blastoseg.predict.count_fusion import fuse_counts
        from blastoseg.predict.embryo_box import EmbryoBox

        try:
            fuser = CountPredictor(args.fuse, device=args.device, batch_size=1)
        except BlastosegError as exc:
            _fail(str(exc))
    print(f"model {predictor.entry.name} on {predictor.device_name}", file=sys.stderr)
    if args.overlay is not None:
        import imageio.v3 as iio

        from blastoseg.overlay import draw_outlines
        args.overlay.mkdir(parents=True, exist_ok=True)

    rows = []
    for modality, path, true_n in found:
        try:
            image = read_image(path)
            t0 = time.perf_counter()
            inst = predictor.predict(image)
            ms = (time.perf_counter() - t0) * 1000.0
        except BlastosegError as exc:
            print(f"error on {path}: {exc}", file=sys.stderr)
            rows.append({"modality": modality, "file": path.name, "true": true_n,
                         "error": str(exc)})
            continue
        if kind == "count":  # "mean score" column: the density integral
            rows.append({"modality": modality, "file": path.name,
                         "shape": list(image.shape[:2]), "true": true_n, "pred": inst.count,
                         "mean_score": float(inst.integral), "next_scores": [], "ms": ms})
            continue
        scores = np.sort(inst.scores)[::-1]
        counted = scores[scores >= args.threshold]
        below = scores[scores < args.threshold]
        row = {"modality": modality, "file": path.name, "shape": list(image.shape[:2]),
               "true": true_n, "pred": int(len(counted)),
               "mean_score": float(counted.mean()) if len(counted) else None,
               "next_scores": [round(float(s), 3) for s in below[:3]], "ms": ms}
        if fuser is not None:  # the fused count replaces the detector's own
            # the detector's circle: the frame is localised once, as FusedCounter does
            dens = fuser.predict(image, embryo=EmbryoBox.from_dict(inst.meta["embryo"]))
            fused = fuse_counts(dens, inst, count_threshold=args.threshold)
            row.update(pred=fused.count, pred_instances=fused.instance_count,
                       pred_density=fused.density_count)
        rows.append(row)
        if args.overlay is not None:
            kept = inst.select(inst.scores >= args.threshold)
            rgb = draw_outlines(image, kept)
            if args.zoom > 1:
                rgb = np.repeat(np.repeat(rgb, args.zoom, axis=0), args.zoom, axis=1)
            out = args.overlay / f"{modality}_{path.stem}_pred{row['pred']}.png"
            iio.imwrite(out, rgb)
            row["overlay"] = str(out)

    ok = [r for r in rows if "error" not in r]
    summaries = {}
    for modality in [m for m in dict.fromkeys(r["modality"] for r in rows)] + ["all"]:
        sel = [r for r in ok if modality == "all" or r["modality"] == modality]
        m = count_metrics([r["true"] for r in sel], [r["pred"] for r in sel])
        summaries[modality] = {k: m[k] for k in ("n_images", "count_exact", "count_within1",
                                                 "count_mae", "count_bias")}
        summaries[modality]["n_errors"] = sum(1 for r in rows if "error" in r
                                              and modality in ("all", r["modality"]))

    def pct(v):
        return "-" if v is None else f"{100 * v:.0f} %"

    def num(v, fmt="{:.2f}"):
        return "-" if v is None else fmt.format(v)

    flips = getattr(predictor, "flips", 0)
    print(f"## Real embryo crops: model `{predictor.entry.name}`"
          + (f", {flips} test-time flips" if flips else ""))
    print()
    print(f"{len(found)} images from `{args.real}`; a cell counts at score >= "
          f"{args.threshold:g}; device {predictor.device_name}.")
    print()
    print("| modality | image | size | true | predicted | error | mean score (counted) | "
          "next scores below threshold | ms |")
    print("|---|---|---:|---:|---:|---:|---:|---|---:|")
    for r in rows:
        if "error" in r:
            print(f"| {r['modality']} | {r['file']} | - | {r['true']} | failed | - | - | "
                  f"{r['error']} | - |")
            continue
        h, w = r["shape"]
        nxt = ", ".join(f"{s:.2f}" for s in r["next_scores"]) or "-"
        print(f"| {r['modality']} | {r['file']} | {w}x{h} | {r['true']} | {r['pred']} | "
              f"{r['pred'] - r['true']:+d} | {num(r['mean_score'])} | {nxt} | {r['ms']:.0f} |")
    print()
    print("| modality | images | exact | within 1 | MAE | bias |")
    print("|---|---:|---:|---:|---:|---:|")
    for modality, s in summaries.items():
        failed = f" ({s['n_errors']} failed)" if s["n_errors"] else ""
        print(f"| {modality} | {s['n_images']}{failed} | {pct(s['count_exact'])} | "
              f"{pct(s['count_within1'])} | {num(s['count_mae'])} | "
              f"{num(s['count_bias'], '{:+.2f}')} |")
    if fuser is not None:
        print(f"\npredicted = fused with `{fuser.entry.name}`; over all {len(ok)} images:")
        for key, what in (("pred_instances", "instances alone"), ("pred_density",
                                                                  "density alone"),
                          ("pred", "fused")):
            m = count_metrics([r["true"] for r in ok], [r[key] for r in ok])
            summaries[f"all_{what.replace(' ', '_')}"] = {
                k: m[k] for k in ("n_images", "count_exact", "count_within1", "count_mae",
                                  "count_bias")}
            print(f"- {what}: exact {pct(m['count_exact'])}, within 1 "
                  f"{pct(m['count_within1'])}, MAE {num(m['count_mae'])}")
    if args.overlay is not None:
        print(f"\noverlays: {args.overlay}", file=sys.stderr)
    if args.json is not None:
        doc = {"model": predictor.entry.name, "flips": getattr(predictor, "flips", 0),
               "fused_with": fuser.entry.name if fuser is not None else None, "device": predictor.device_name,
               "real": str(args.real), "threshold": args.threshold, "images": rows,
               "summary": summaries, "skipped": [str(p) for p in skipped]}
        args.json.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
