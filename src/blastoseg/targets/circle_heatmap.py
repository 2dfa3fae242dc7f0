"""The embryo circle as CircleNet sees it: letterboxing, heat-map targets, loss and decoding.

One frame holds one embryo (the localiser frames one; several embryos are handled by the
classical stage, see :mod:`blastoseg.predict.localise`). The circle ``(cx, cy, r)`` is in
pixels of the letterboxed input; :class:`Letterbox` maps it back to the frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from blastoseg.models.circle_net import STRIDE

__all__ = ["Letterbox", "circle_loss", "circle_targets", "decode_circles", "letterbox",
           "normalise_frame"]

#: heat-map Gaussian sigma as a fraction of the radius (in map cells), at least MIN_SIGMA
SIGMA_RATIO = 0.25
MIN_SIGMA = 0.8


def normalise_frame(grey: np.ndarray) -> np.ndarray:
    """Float32 frame centred on its median and scaled by its 1st-99th percentile spread:
    polarity and exposure differ between microscopes, the embryo's texture does not."""
    a = np.asarray(grey, dtype=np.float32)
    lo, med, hi = np.percentile(a, (1, 50, 99))
    return (a - med) / max(float(hi - lo), 1e-3)


@dataclass(frozen=True)
class Letterbox:
    """How a frame was fitted into a square: input = frame * scale + (ox, oy)."""

    scale: float
    ox: float
    oy: float

    def to_frame(self, cx: float, cy: float, r: float) -> tuple[float, float, float]:
        return (cx - self.ox) / self.scale, (cy - self.oy) / self.scale, r / self.scale

    def to_input(self, cx: float, cy: float, r: float) -> tuple[float, float, float]:
        return cx * self.scale + self.ox, cy * self.scale + self.oy, r * self.scale


def letterbox(grey: np.ndarray, size: int) -> tuple[torch.Tensor, Letterbox]:
    """(1, size, size) tensor of the normalised frame, long side fitted, centred, zero
    padded (zero = the frame's median after normalising), and the mapping back."""
    h, w = grey.shape
    s = size / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    t = torch.from_numpy(normalise_frame(grey))[None, None]
    t = F.interpolate(t, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    out = torch.zeros(1, size, size)
    oy, ox = (size - nh) // 2, (size - nw) // 2
    out[:, oy:oy + nh, ox:ox + nw] = t[0]
    # the exact scale per axis differs by rounding; the mean is within half a pixel
    return out, Letterbox(scale=0.5 * (nh / h + nw / w), ox=float(ox), oy=float(oy))


def circle_targets(circles: torch.Tensor, size: int) -> dict[str, torch.Tensor]:
    """Targets for a batch of (B, 3) circles (cx, cy, r in input pixels): ``heat`` (B, G, G)
    Gaussians peaking at exactly 1 in the centre's cell, ``index`` (B,) of that cell,
    ``regress`` (B, 3): log radius (input px) and the centre's offset within the cell."""
    g = size // STRIDE
    yy, xx = torch.meshgrid(torch.arange(g) + 0.5, torch.arange(g) + 0.5, indexing="ij")
    b = circles.shape[0]
    heat = torch.zeros(b, g, g)
    index = torch.zeros(b, dtype=torch.long)
    regress = torch.zeros(b, 3)
    for i in range(b):
        cx, cy, r = (float(v) / STRIDE for v in circles[i])
        sigma = max(SIGMA_RATIO * r, MIN_SIGMA)
        heat[i] = torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma ** 2))
        gx, gy = min(max(int(cx), 0), g - 1), min(max(int(cy), 0), g - 1)
        heat[i, gy, gx] = 1.0
        index[i] = gy * g + gx
        regress[i] = torch.tensor([math.log(max(r * STRIDE, 0.5)), cx - gx - 0.5,
                                   cy - gy - 0.5])
    return {"heat": heat, "index": index, "regress": regress}


def circle_loss(out: torch.Tensor, targets: dict[str, torch.Tensor],
                radius_weight: float = 5.0) -> dict[str, torch.Tensor]:
    """CenterNet's penalty-reduced focal loss on the heat map (alpha 2, beta 4; eq. 1 of
    Zhou et al. 2019) plus smooth-L1 on the log radius and L1 on the offset at the true
    centre's cell."""
    heat = targets["heat"]
    p = torch.sigmoid(out[:, 0].float()).clamp(1e-4, 1 - 1e-4)
    pos = heat.eq(1).float()
    pos_loss = -(torch.log(p) * (1 - p) ** 2 * pos).sum()
    neg_loss = -(torch.log(1 - p) * p ** 2 * (1 - heat) ** 4 * (1 - pos)).sum()
    heat_loss = (pos_loss + neg_loss) / pos.sum().clamp(min=1)
    b = out.shape[0]
    at_centre = out[:, 1:].float().flatten(2)[torch.arange(b), :, targets["index"]]
    reg = targets["regress"]
    radius_loss = F.smooth_l1_loss(at_centre[:, 0], reg[:, 0], beta=0.05)
    offset_loss = F.l1_loss(at_centre[:, 1:], reg[:, 1:])
    total = heat_loss + radius_weight * radius_loss + offset_loss
    return {"loss": total, "heat": heat_loss.detach(), "radius": radius_loss.detach(),
            "offset": offset_loss.detach()}


def decode_circles(out: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(B, 4, G, G) network output -> (B, 3) circles (cx, cy, r in input px) at each heat
    map's peak, and (B,) peak heights (0..1, the confidence)."""
    with torch.no_grad():
        out = out.float()
        b, _, g, _ = out.shape
        heat = torch.sigmoid(out[:, 0]).flatten(1)
        conf, k = heat.max(1)
        gy, gx = k // g, k % g
        at = out[torch.arange(b), 1:, gy, gx]
        r = torch.exp(at[:, 0].clamp(max=math.log(4.0 * g * STRIDE)))
        cx = (gx.float() + 0.5 + at[:, 1]) * STRIDE
        cy = (gy.float() + 0.5 + at[:, 2]) * STRIDE
        return torch.stack([cx, cy, r], 1).cpu().numpy(), conf.cpu().numpy()
