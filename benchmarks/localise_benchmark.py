"""Embryo localisation on real and synthetic frames: centre and radius error against labelled
circles (issue 13, item 1).

Ground truth:

- real sets: the circles in ``benchmarks/data/*.json`` (labelled by us by eye on overlays;
  the images themselves stay in ``../shared/data/real/``, never in the repository);
  ``embryoscope_circles.json`` has one circle per embryo, valid for all its focal planes;
- synthetic sets: any dataset folder whose image entries carry ``embryo_circle``
  ([cx, cy, r], written by ``blastoseg synth embryos``), e.g. the incubator full-frame mode.

For each frame: centre error |c - c_true| / r_true, radius error |r - r_true| / r_true, and
whether both are within 10 %; per set the medians, the share within 10 % of both, frames the
localiser rejected (whole-frame fallback) and ms per frame. ``--overlay DIR`` writes PNGs
(outside the repository) with the true circle in green and the found one in red.

Usage::

    nice python benchmarks/localise_benchmark.py [--real ../shared/data/real]
        [--synthetic DATASET_DIR ...] [--overlay /tmp/localise_overlays] [--json OUT]
        [--steady N]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_REAL = REPO.parent / "shared" / "data" / "real"
LABELS = REPO / "benchmarks" / "data"


def _read_grey(path: Path) -> np.ndarray:
    from blastoseg.io import read_images

    data = np.asarray(read_images(path).data)
    return data if data.ndim == 2 else data[0]


def real_cases(real: Path) -> dict[str, list[tuple[str, Path, tuple[float, float, float]]]]:
    """{set name: [(frame id, image path, (cx, cy, r))]} from the label files."""
    sets: dict[str, list] = {}
    es = LABELS / "embryoscope_circles.json"
    if es.exists():
        circles = json.loads(es.read_text())["circles"]
        root = real / "blastocyst_embryoscope_focal"
        for path in sorted(root.glob("*/*.jpg")):
            emb = path.parent.name.split("_")[-1]
            if emb in circles:
                c = circles[emb]
                sets.setdefault("blastocyst_embryoscope_focal", []).append(
                    (f"{path.parent.name}/{path.name}", path, (c["cx"], c["cy"], c["r"])))
    other = LABELS / "real_embryo_circles.json"
    if other.exists():
        for key, c in json.loads(other.read_text())["circles"].items():
            name = key.split("/")[0]
            if name == "embryo_counts":
                name = f"embryo_counts/{key.split('/')[1]}"
            sets.setdefault(name, []).append((key, real / key, (c["cx"], c["cy"], c["r"])))
    return sets


def synthetic_cases(folder: Path) -> list[tuple[str, Path, tuple[float, float, float]]]:
    ann = json.loads((folder / "annotations.json").read_text())
    out = []
    for im in ann["images"]:
        if "embryo_circle" in im:
            cx, cy, r = im["embryo_circle"]
            out.append((im["file_name"], folder / im["file_name"], (cx, cy, r)))
    return out


def _overlay(img: np.ndarray, true, found, path: Path) -> None:
    from PIL import Image, ImageDraw

    a = img.astype(np.float32)
    lo, hi = np.percentile(a, (1, 99))
    a = np.clip((a - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)
    rgb = Image.fromarray(a).convert("RGB")
    d = ImageDraw.Draw(rgb)
    for (cx, cy, r), colour in ((true, (0, 220, 0)), (found, (255, 0, 0))):
        d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=colour, width=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb.save(path)


def _focal_stack(fid: str) -> tuple[str, float] | None:
    """(embryo folder, focal plane in um) of an EmbryoScope frame id, else None."""
    folder, _, name = fid.partition("/")
    parts = name.split("_")
    if len(parts) < 3:
        return None
    try:
        return folder, float(parts[-2])
    except ValueError:
        return None


def _steadied(cases, boxes: list, window: int) -> list:
    """``boxes`` steadied over each embryo's focal stack (frames in focal order), as the
    predictors steady a time-lapse (predict/steady_framing.py); frames of no stack as they
    are."""
    from blastoseg.predict.localise import accept_box
    from blastoseg.predict.steady_framing import SteadyLocaliser

    stacks: dict[str, list[tuple[float, int]]] = {}
    for i, (fid, _, _) in enumerate(cases):
        key = _focal_stack(fid)
        if key is not None:
            stacks.setdefault(key[0], []).append((key[1], i))
    out = list(boxes)
    for members in stacks.values():
        order = [i for _, i in sorted(members)]
        steady = SteadyLocaliser(len(order), lambda t, order=order: boxes[order[t]][1], window,
                                 min_confidence=MIN_CONFIDENCE)
        for t, i in enumerate(order):
            box = steady.box(t)
            out[i] = (accept_box(box, box.image_shape, MIN_CONFIDENCE)[0], box)
    return out


#: the predictors' default (model cards' framing.min_confidence)
MIN_CONFIDENCE = 0.15
#: the one real set whose frames come in stacks of one embryo (7 focal planes each)
FOCAL_STACKS = "blastocyst_embryoscope_focal"


def run_set(cases, overlay: Path | None, set_name: str, method: str = "auto",
            model: str | None = None, steady: int = 0) -> dict:
    from blastoseg.predict.localise import accept_box, locate_embryo

    boxes, times = [], []
    for _, path, _ in cases:
        img = _read_grey(path)
        t0 = time.perf_counter()
        raw = locate_embryo(img, method=method, model=model)
        boxes.append((accept_box(raw, img.shape, MIN_CONFIDENCE)[0], raw))
        times.append(1000 * (time.perf_counter() - t0))
    if steady > 1 and set_name == FOCAL_STACKS:  # the other sets are separate pictures
        boxes = _steadied(cases, boxes, steady)
    rows = []
    for (fid, path, (cx, cy, r)), (box, _), ms in zip(cases, boxes, times, strict=True):
        ce = float(np.hypot(box.cx - cx, box.cy - cy) / r)
        re_ = float(abs(box.radius - r) / r)
        rows.append({"frame": fid, "centre_err": ce, "radius_err": re_, "ms": ms,
                     "ok": ce <= 0.10 and re_ <= 0.10, "found": box.found,
                     "confidence": box.confidence,
                     "box": [round(box.cx, 1), round(box.cy, 1), round(box.radius, 1)]})
        if overlay is not None:
            img = _read_grey(path)
            safe = fid.replace("/", "__").rsplit(".", 1)[0] + ".png"
            _overlay(img, (cx, cy, r), (box.cx, box.cy, box.radius),
                     overlay / method / set_name.replace("/", "__") / safe)
    ce = np.array([x["centre_err"] for x in rows])
    re_ = np.array([x["radius_err"] for x in rows])
    return {"n": len(rows), "centre_err_median": float(np.median(ce)),
            "radius_err_median": float(np.median(re_)),
            "within_10pct": float(np.mean([x["ok"] for x in rows])),
            "rejected": int(sum(not x["found"] for x in rows)),
            "ms_median": float(np.median([x["ms"] for x in rows])), "frames": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--real", type=Path, default=DEFAULT_REAL)
    ap.add_argument("--synthetic", type=Path, nargs="*", default=[])
    ap.add_argument("--overlay", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--verbose", action="store_true", help="print every frame")
    ap.add_argument("--methods", default="auto",
                    help="comma-separated localiser methods to compare: auto, learned, "
                         "classical (default auto)")
    ap.add_argument("--model", default=None, help="the learned localiser (default: shipped)")
    ap.add_argument("--steady", type=int, default=0, metavar="N",
                    help="steady framing over N frames (predict/steady_framing.py) applied to "
                         "each EmbryoScope embryo's focal stack taken as a sequence of "
                         "frames of one embryo; the other sets are separate pictures")
    args = ap.parse_args(argv)
    if args.overlay is not None and REPO in args.overlay.resolve().parents:
        print("error: --overlay must lie outside the repository", file=sys.stderr)
        return 2
    sets = real_cases(args.real) if args.real.exists() else {}
    for folder in args.synthetic:
        sets[f"synthetic:{folder.name}"] = synthetic_cases(folder)
    results: dict = {}
    print("| set | method | frames | centre err (median, x r) | radius err (median, x r) | "
          "within 10 % of both | no embryo found | ms / frame |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, cases in sets.items():
        if not cases:
            continue
        for method in args.methods.split(","):
            res = run_set(cases, args.overlay, name, method.strip(), args.model, args.steady)
            results.setdefault(name, {})[method] = res
            print(f"| {name} | {method} | {res['n']} | {res['centre_err_median']:.3f} | "
                  f"{res['radius_err_median']:.3f} | {100 * res['within_10pct']:.0f} % | "
                  f"{res['rejected']} | {res['ms_median']:.0f} |", flush=True)
            if args.verbose:
                for x in res["frames"]:
                    print(f"    {x['frame']}: centre {x['centre_err']:.3f} radius "
                          f"{x['radius_err']:.3f} conf {x['confidence']:.2f} box {x['box']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
