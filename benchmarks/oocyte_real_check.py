"""What an oocyte model does on the real images we have (none are oocytes; no oocyte image
with masks is licensed here): a realism check, not a training or test set.

* ``--blastocysts DIR`` (``../shared/data/real/blastocyst_hmc``: 3 human day-5 blastocysts,
  Hoffman contrast, with zona masks ``GT_ZP``): the zona is the one structure a blastocyst
  shares with an oocyte, so the predicted zona class is compared with the true zona (IoU).
* ``--embryos DIR`` (``../shared/data/real/embryo_counts``: 16 day 1-3 embryo crops): what
  the model reports on embryos, which are not its job: does it find an "ooplasm", and does a
  warning say something is off?

    nice python benchmarks/oocyte_real_check.py --model oocyte-default \\
        --blastocysts ../shared/data/real/blastocyst_hmc --embryos ../shared/data/real/embryo_counts
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".png", ".bmp",
                                                                          ".tif", ".jpeg"))


def blastocyst_zona(pred, folder: Path) -> None:
    from blastoseg.io import read_image
    from blastoseg.io.oocyte_classes import ZONA

    print("\n| blastocyst | zona IoU | predicted share zona / PVS / ooplasm / inclusion |")
    print("|---|---:|---|")
    ious = []
    for img_path in _images(folder / "images"):
        key = img_path.stem.split(" D5")[0]
        masks = [m for m in _images(folder / "GT_ZP") if m.name.startswith(key)]
        if not masks:
            continue
        truth = np.asarray(read_image(masks[0])) > 0
        r = pred.predict(read_image(img_path))
        zona = r.labels == ZONA
        if truth.shape != zona.shape:
            continue
        iou = float((zona & truth).sum() / max((zona | truth).sum(), 1))
        ious.append(iou)
        share = " / ".join(f"{100 * np.mean(r.labels == k):.1f}%" for k in (1, 2, 3, 4))
        print(f"| {img_path.name} | {iou:.3f} | {share} |")
    if ious:
        print(f"| mean | {np.mean(ious):.3f} | |")


def embryos(pred, folder: Path) -> None:
    from blastoseg.io import read_image

    print("\n| embryo crop | ooplasm diameter (px) | inclusions | vacuoles | warnings |")
    print("|---|---:|---:|---:|---|")
    for p in _images(folder):
        m = pred.predict(read_image(p)).measurements
        print(f"| {p.parent.name}/{p.name} | {m.ooplasm_diameter} | {m.inclusion_count} | "
              f"{m.vacuole_count} | {'; '.join(w.split(':')[0] for w in m.warnings) or '-'} |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="oocyte-default")
    p.add_argument("--blastocysts", type=Path, default=None)
    p.add_argument("--embryos", type=Path, default=None)
    args = p.parse_args()
    from blastoseg.predict.oocyte import OocytePredictor

    pred = OocytePredictor(args.model, device="cpu")
    if args.blastocysts:
        blastocyst_zona(pred, args.blastocysts)
    if args.embryos:
        embryos(pred, args.embryos)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
