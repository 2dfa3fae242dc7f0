"""Re-make docs/images/synthetic_oocytes.png: synthetic oocytes and their class maps.

Row 1: Hoffman relief, row 2: inverted-microscope brightfield, row 3: the paper's random
label maps (1-5 round inclusions) rendered; each image beside its class map in the legend's
colours. Seeds 5-8, 256 x 256.

    python docs/make_oocyte_figure.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

OUT = Path(__file__).parent / "images" / "synthetic_oocytes.png"


def coloured(labels: np.ndarray) -> np.ndarray:
    from blastoseg.io.oocyte_classes import CLASS_COLORS

    rgb = np.zeros((*labels.shape, 3), np.float32)
    for k, (r, g, b, _) in CLASS_COLORS.items():
        if k:
            rgb[labels == k] = (r, g, b) if k >= 4 else (0.6 * r, 0.6 * g, 0.6 * b)
    return (255 * rgb).astype(np.uint8)


def main() -> None:
    import imageio.v3 as iio

    from blastoseg.synth.oocyte import OocyteConfig, render_oocyte

    rows = []
    for cfg in (OocyteConfig(contrast="hoffman"), OocyteConfig(contrast="inverted"),
                OocyteConfig(contrast="mixed", label_maps="paper")):
        tiles = []
        for seed in (5, 6, 7, 8):
            o = render_oocyte(seed, cfg)
            grey = np.repeat(o.image[..., None], 3, axis=2)
            tiles += [grey, coloured(o.labels), np.full((256, 6, 3), 255, np.uint8)]
        rows += [np.concatenate(tiles, axis=1), np.full((6, len(tiles) // 3 * 518, 3), 255,
                                                         np.uint8)]
    OUT.parent.mkdir(exist_ok=True)
    iio.imwrite(OUT, np.concatenate(rows, axis=0))
    print("wrote", OUT)


if __name__ == "__main__":
    main()
