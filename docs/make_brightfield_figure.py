"""Render the figure of docs/synthetic_brightfield.md: one synthetic brightfield scene.

Panels: the phase image, focal plane 0 (below focus), focal plane 1 (above focus), every
cell's amodal outline and nucleus over plane 0, the overlap ground truth (cells stacked per
pixel), and plane 0 of a copy-paste scene made from cut, warped cells.

    python docs/make_brightfield_figure.py [--seed 4] [--size 512] [--out PNG]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from blastoseg.synth.brightfield import (  # noqa: E402
    BrightfieldConfig,
    render_brightfield,
    render_copy_paste,
)


def _stretch(img: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(img, [0.2, 99.9])
    return np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=4)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).parent / "images" / "synthetic_brightfield.png")
    args = ap.parse_args()

    cfg = BrightfieldConfig().for_size(args.size)
    scene = render_brightfield(args.seed, cfg)
    pasted = render_copy_paste(args.seed, cfg)

    fig, axes = plt.subplots(2, 3, figsize=(13.5, 9.2))
    ax = axes.ravel()
    ax[0].imshow(scene.phase, cmap="magma")
    ax[0].set_title("phase (radians, cells add up)")
    ax[1].imshow(_stretch(scene.planes[0]), cmap="gray")
    ax[1].set_title(f"plane 0: z = {scene.meta['defocus_um'][0]:+.1f} um")
    ax[2].imshow(_stretch(scene.planes[1]), cmap="gray")
    ax[2].set_title(f"plane 1: z = {scene.meta['defocus_um'][1]:+.1f} um")

    ax[3].imshow(_stretch(scene.planes[0]), cmap="gray")
    colours = plt.get_cmap("tab20")(np.arange(scene.instances.count) % 20)
    for i, m in enumerate(scene.instances.masks):
        ax[3].contour(m, levels=[0.5], colors=[colours[i]], linewidths=1.4)
        ax[3].contour(scene.nuclei == i + 1, levels=[0.5], colors=[colours[i]],
                      linewidths=0.8, linestyles="dashed")
    ax[3].set_title(f"{scene.instances.count} amodal cell outlines + nuclei")

    cov = scene.instances.coverage()
    cmap = ListedColormap(["#101010", "#3b6ea8", "#f2a541", "#d7263d", "#ffffff"])
    ax[4].imshow(np.clip(cov, 0, 4), cmap=cmap, vmin=0, vmax=4, interpolation="nearest")
    ax[4].set_title(f"cells per pixel (overlap = 2+: {scene.overlap.mean():.1%} of pixels)")

    ax[5].imshow(_stretch(pasted.planes[0]), cmap="gray")
    for m in pasted.instances.masks:
        ax[5].contour(m, levels=[0.5], colors=["#ffb000"], linewidths=0.6, alpha=0.7)
    ax[5].set_title("copy-paste scene (phase domain), plane 0")
    for a in ax:
        a.set_axis_off()
    fig.suptitle(f"blastoseg synthetic brightfield, seed {args.seed}, "
                 f"{args.size} x {args.size} px, {cfg.pixel_size_um} um/px", fontsize=12)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
