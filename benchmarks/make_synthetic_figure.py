"""Make docs/images/synthetic_vs_real.png: synthetic embryos beside real frames.

Usage::

    python benchmarks/make_synthetic_figure.py --real /path/to/real/embryo_counts \
        --real-fullframes /path/to/real/blastocyst_embryoscope_focal \
        --real-hmc /path/to/real/blastocyst_hmc \
        --out docs/images/synthetic_vs_real.png

``--real`` is a folder with ``microscope/`` and/or ``timelapse/`` subfolders of real crops
named by blastomere count (``1cell.png``, ``2cells.jpg``, ...). ``--real-fullframes`` (optional)
is a folder of full incubator frames (``*/*_0_*.jpg``: the in-focus plane of each embryo);
synthetic blastocysts in EmbryoScope-like micro-wells are drawn in the row below them.
``--real-hmc`` (optional) is a folder with ``images/`` of Hoffman-contrast blastocyst crops;
synthetic blastocyst crops follow them. The real images are only read to compose the figure; nothing is copied anywhere else.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy.ndimage import binary_dilation
from skimage.segmentation import find_boundaries

from blastoseg.synth import EmbryoConfig, render_blastocyst, render_embryo, render_timelapse

TILE = 256
COLOURS = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200],
                    [245, 130, 48], [145, 30, 180], [70, 240, 240], [240, 50, 230],
                    [210, 245, 60], [250, 190, 212], [0, 128, 128], [170, 110, 40]], np.uint8)


def crop_embryo(img: np.ndarray, meta: dict, margin: float = 1.12) -> tuple[int, int, int]:
    """Square crop (y0, x0, size) around the embryo, like the real crops."""
    cx, cy = meta["embryo_center_xy"]
    r = int(meta["zona_outer_radius_px"] * margin)
    return int(cy) - r, int(cx) - r, 2 * r


def take(img: np.ndarray, box: tuple[int, int, int]) -> np.ndarray:
    y0, x0, s = box
    pad = [(s, s), (s, s)] + [(0, 0)] * (img.ndim - 2)
    big = np.pad(img, pad, mode="edge")
    return big[y0 + s:y0 + 2 * s, x0 + s:x0 + 2 * s]


def tile(a: np.ndarray) -> np.ndarray:
    im = Image.fromarray(a).convert("RGB").resize((TILE, TILE), Image.Resampling.LANCZOS)
    return np.asarray(im)


def outlines(image: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """RGB copy of ``image`` with every amodal outline drawn in its own colour."""
    rgb = np.repeat(image[..., None], 3, axis=2).copy()
    for i, m in enumerate(masks):
        b = binary_dilation(find_boundaries(m, mode="inner"), iterations=1)
        rgb[b] = COLOURS[i % len(COLOURS)]
    return rgb


def label(canvas: Image.Image, xy: tuple[int, int], text: str) -> None:
    d = ImageDraw.Draw(canvas)
    x, y = xy
    d.rectangle((x, y, x + 7 * len(text) + 6, y + 14), fill=(0, 0, 0))
    d.text((x + 3, y + 2), text, fill=(255, 255, 255))


def circle(rgb: np.ndarray, c: list[float], colour=(255, 40, 40)) -> np.ndarray:
    """Draw an [cx, cy, r] circle (the embryo_circle ground truth) on an RGB image."""
    im = Image.fromarray(rgb)
    cx, cy, r = c
    ImageDraw.Draw(im).ellipse((cx - r, cy - r, cx + r, cy + r), outline=colour, width=2)
    return np.asarray(im)


def fullframe_tiles(root: Path, k: int) -> list[tuple[str, np.ndarray]]:
    files = sorted(root.glob("*/*_0_*.jpg"))
    picks = np.linspace(0, len(files) - 1, k).astype(int) if files else []
    return [("real EmbryoScope frame", tile(np.asarray(Image.open(files[i]).convert("L"))))
            for i in picks]


def hmc_tiles(root: Path) -> list[tuple[str, np.ndarray]]:
    out = []
    for f in sorted((root / "images").glob("*"))[:4]:
        a = np.asarray(Image.open(f).convert("L"))
        s = min(a.shape)  # centre square: the blastocyst fills it
        y0, x0 = (a.shape[0] - s) // 2, (a.shape[1] - s) // 2
        out.append(("real HMC blastocyst", tile(a[y0:y0 + s, x0:x0 + s])))
    return out


#: EmbryoScope-like full frames: a tight micro-well around a large embryo, no dish edge
EMBRYOSCOPE_LIKE = dict(mode="incubator", appearance="wide", well_ratio=(1.15, 1.4),
                        embryo_fraction=(0.5, 0.7), dish_edge_prob=0.0)
SUB_STAGES = ("early", "full", "expanded", "hatching")


def blastocyst_rows(seed: int) -> tuple[list, list]:
    """(EmbryoScope-like full frames, crops) of synthetic blastocysts, one per sub-stage."""
    full, crops = [], []
    wells = EmbryoConfig(**EMBRYOSCOPE_LIKE)
    for j, sub in enumerate(SUB_STAGES):
        fr = render_blastocyst(seed + 400 + j, wells, sub)
        rgb = np.repeat(fr.image[..., None], 3, axis=2)
        name = f"synthetic blastocyst, {sub}"
        if j == 3:
            rgb, name = circle(rgb, fr.meta["embryo_circle"]), f"{sub}, red: embryo_circle"
        full.append((name, tile(rgb)))
    for j, sub in enumerate(SUB_STAGES):
        look = EmbryoConfig(appearance="wide" if j % 2 else "default")
        fr = render_blastocyst(seed + 500 + j, look, sub)
        box = crop_embryo(fr.image, fr.meta)
        if j == 3:  # the components, drawn as outlines
            comp = np.stack([fr.components[k] for k in
                             ("zona", "trophectoderm", "blastocoel", "inner_cell_mass")])
            crops.append(("zona, TE, cavity, ICM masks",
                          tile(take(outlines(fr.image, comp), box))))
            continue
        crops.append((f"synthetic blastocyst crop, {sub}", tile(take(fr.image, box))))
    return full, crops


def real_tiles(root: Path, counts: list[int]) -> list[tuple[str, np.ndarray]]:
    out = []
    for sub in ("timelapse", "microscope"):
        for n in counts:
            for f in sorted((root / sub).glob(f"{n}cell*")):
                out.append((f"real {sub} {n}", tile(np.asarray(Image.open(f).convert("L")))))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real", type=Path, required=True, help="folder of real crops")
    ap.add_argument("--real-fullframes", type=Path, default=None,
                    help="folder of real full incubator frames (EmbryoScope focal set)")
    ap.add_argument("--real-hmc", type=Path, default=None,
                    help="folder of real Hoffman-contrast blastocysts (with images/)")
    ap.add_argument("--out", type=Path, required=True, help="output PNG")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    counts = [1, 2, 4, 8]
    rows: list[list[tuple[str, np.ndarray]]] = [[] for _ in range(7)]
    for j, n in enumerate(counts):
        fr = render_embryo(n, seed=args.seed + 10 * j + n)
        rows[0].append((f"synthetic {n} (full frame)", tile(fr.image)))
        box = crop_embryo(fr.image, fr.meta)
        rows[1].append((f"synthetic {n} (crop)", tile(take(fr.image, box))))
        ol = outlines(fr.image, fr.instances.masks)
        rows[2].append((f"amodal outlines, depth {fr.instances.coverage().max()}",
                        tile(take(ol, box))))
    tl = render_timelapse(48, seed=args.seed + 1, max_cells=8)
    picks = np.linspace(0, 47, 4).astype(int)
    for k in picks:
        box = crop_embryo(tl.images[k], tl.meta)
        rows[3].append((f"time-lapse t={tl.meta['hours'][k]:.0f}h n={tl.frames[k].count}",
                        tile(take(tl.images[k], box))))
    incubator = EmbryoConfig(mode="incubator")
    wide_inc = EmbryoConfig(mode="incubator", appearance="wide")
    wide = EmbryoConfig(appearance="wide")
    for j, n in enumerate(counts):
        fr = render_embryo(n, seed=args.seed + 100 + j, config=incubator)
        rgb = circle(np.repeat(fr.image[..., None], 3, axis=2), fr.meta["embryo_circle"])
        rows[4].append((f"incubator {n}, {fr.meta['container']}, red: embryo_circle",
                        tile(rgb)))
        fr = render_embryo(n, seed=args.seed + 200 + j, config=wide_inc)
        rows[5].append((f"incubator {n}, {fr.meta['container']}, wide look", tile(fr.image)))
    for j, n in enumerate((4, 8)):
        fr = render_embryo(n, seed=args.seed + 300 + j, config=wide)
        box = crop_embryo(fr.image, fr.meta)
        rows[6].append((f"wide look {n} (crop)", tile(take(fr.image, box))))
        ol = outlines(fr.image, fr.instances.masks)
        rows[6].append((f"wide: amodal outlines, depth {fr.instances.coverage().max()}",
                        tile(take(ol, box))))
    real = real_tiles(args.real, counts)
    for i in range(0, len(real), 4):
        rows.append(real[i:i + 4])
    blasto_full, blasto_crops = blastocyst_rows(args.seed)
    if args.real_fullframes is not None:
        rows.append(fullframe_tiles(args.real_fullframes, 4))
    rows.append(blasto_full)
    if args.real_hmc is not None:
        rows.append(hmc_tiles(args.real_hmc))
    rows.append(blasto_crops)

    ncol = 4
    canvas = Image.new("RGB", (ncol * TILE, len(rows) * TILE), (255, 255, 255))
    for r, row in enumerate(rows):
        for c, (name, t) in enumerate(row):
            canvas.paste(Image.fromarray(t), (c * TILE, r * TILE))
            label(canvas, (c * TILE + 2, r * TILE + 2), name)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # an adaptive palette keeps the figure small (about 2 MB) at no visible cost
    canvas.convert("P", palette=Image.Palette.ADAPTIVE, colors=256).save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
