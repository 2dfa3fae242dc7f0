"""Draw instance outlines over a grey image, for figures, demo overviews and reports."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from blastoseg.instances import FrameInstances

# Distinct, colour-blind-friendly outline colours (Okabe-Ito, then extras), RGB 0-255.
PALETTE = np.array(
    [
        (230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178),
        (213, 94, 0), (204, 121, 167), (255, 255, 255), (148, 103, 189), (23, 190, 207),
        (188, 189, 34), (227, 119, 194), (127, 255, 0), (255, 99, 71), (64, 224, 208),
        (255, 215, 0),
    ],
    dtype=np.uint8,
)


def to_rgb8(image: np.ndarray) -> np.ndarray:
    """Grey or RGB image of any dtype -> (H, W, 3) uint8, stretched to the 0.5-99.5 percentiles."""
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 3:
        img = img[..., :3].mean(axis=-1)
    lo, hi = np.nanpercentile(img, [0.5, 99.5])
    img = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)
    return np.repeat((img * 255).astype(np.uint8)[..., None], 3, axis=-1)


def draw_outlines(
    image: np.ndarray, instances: FrameInstances, thickness: int = 1
) -> np.ndarray:
    """Return an RGB uint8 copy of ``image`` with each amodal outline in its own colour."""
    rgb = to_rgb8(image)
    structure = ndi.generate_binary_structure(2, 1)
    # colour by track id when there is one, so a cell keeps its colour over a time-lapse
    keys = instances.track_ids if instances.track_ids is not None else range(len(instances))
    for key, mask in zip(keys, instances.masks, strict=True):
        inner = ndi.binary_erosion(mask, structure, iterations=thickness, border_value=0)
        rgb[mask & ~inner] = PALETTE[int(key) % len(PALETTE)]
    return rgb


def montage(tiles: list[np.ndarray], columns: int, gap: int = 4) -> np.ndarray:
    """Tile equally sized RGB images into a grid with a white gap."""
    h, w = tiles[0].shape[:2]
    rows = -(-len(tiles) // columns)
    out = np.full((rows * h + (rows - 1) * gap, columns * w + (columns - 1) * gap, 3), 255, np.uint8)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, columns)
        out[r * (h + gap): r * (h + gap) + h, c * (w + gap): c * (w + gap) + w] = tile
    return out
