"""Day 5-6 human blastocysts: zona, trophectoderm shell, blastocoel and inner cell mass.

A blastocyst is a hollow sphere: the trophectoderm (TE), one layer of many small flat cells,
lines the zona pellucida and encloses the fluid-filled blastocoel; the inner cell mass
(ICM), a clump of small granular cells, sits against the TE on one side of the cavity.
Under relief contrast one sees the TE edge-on at the rim (a thin band, scalloped on its
inner side by the cells' domes), its top and bottom faces through the clear cavity as a
faint polygonal mesh of cell borders, and the ICM as a dense, granular lump.

Everything here is in pixels on an "embryo canvas" centred on the zona (as the zona and
debris maps of :mod:`blastoseg.synth.artefacts`): :func:`sample_blastocyst` draws the
geometry, :func:`blastocyst_maps` returns the cells' path length, absorption and the
component masks. :class:`blastoseg.synth.blastocyst_scene.BlastocystScene` puts them in a
frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from blastoseg.synth.optics import granules, sphere_chord

# per sub-stage (micrometres): zona outer diameter, zona thickness, gap between zona and TE,
# TE thickness, share of the TE cell count range (early blastocysts have fewer, larger cells)
_STAGE_UM = {
    "early":    {"diam": (140.0, 160.0), "zona": (12.0, 17.0), "gap": (2.0, 9.0),
                 "te": (11.0, 17.0), "cells": 0.35},
    "full":     {"diam": (150.0, 172.0), "zona": (9.0, 14.0), "gap": (0.0, 3.0),
                 "te": (8.0, 13.0), "cells": 0.65},
    "expanded": {"diam": (170.0, 215.0), "zona": (4.5, 9.0), "gap": (0.0, 1.0),
                 "te": (6.0, 11.0), "cells": 1.0},
    "hatching": {"diam": (175.0, 220.0), "zona": (3.5, 7.0), "gap": (0.0, 1.0),
                 "te": (6.0, 11.0), "cells": 1.0},
}


@dataclass
class Blastocyst:
    """Geometry of one blastocyst in canvas pixels (x = column, y = row, z up).

    ``te_xy`` is the TE sphere's centre relative to the zona's centre (non-zero only when
    collapsed); ``icm_cells`` are (centre (3,), radius) relative to the TE centre;
    ``hatch_angle``/``bulge_r`` describe the herniated TE outside a zona breach (hatching).
    """

    stage: str
    collapsed: bool
    px_um: float
    r_zout: float
    r_zin: float
    ellip: float
    angle: float
    te_r: float
    te_xy: np.ndarray
    te_t: float
    te_sites: np.ndarray
    icm_cells: list[tuple[np.ndarray, float]]
    icm_center: np.ndarray
    hatch_angle: float | None = None
    bulge_r: float = 0.0
    bulge_sites: np.ndarray | None = None

    @property
    def cavity_r(self) -> float:
        return self.te_r - self.te_t


def _u(rng: np.random.Generator, r: tuple[float, float]) -> float:
    return float(rng.uniform(r[0], r[1]))


def sphere_sites(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` roughly evenly spaced unit vectors (jittered Fibonacci sphere, random rotation):
    cell centres of a single-layer epithelium of similar-sized cells."""
    k = np.arange(n) + 0.5
    z = 1 - 2 * k / n
    phi = np.pi * (1 + 5**0.5) * k + rng.uniform(0, 2 * np.pi)
    rho = np.sqrt(1 - z * z)
    p = np.stack([rho * np.cos(phi), rho * np.sin(phi), z], 1)
    p = p + rng.normal(0, 0.35 * 2 / np.sqrt(n), p.shape)
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    p = p @ q
    return p / np.linalg.norm(p, axis=1, keepdims=True)


def _icm_cells(rng: np.random.Generator, cavity_r: float, te_t: float, size: float
               ) -> tuple[np.ndarray, list[tuple[np.ndarray, float]]]:
    """Small spheres packed in a lump that leans on the TE's inner face."""
    u = rng.standard_normal(3)
    u /= np.linalg.norm(u)
    r_icm = size * cavity_r
    centre = u * (cavity_r - 0.45 * r_icm)
    cells: list[tuple[np.ndarray, float]] = []
    n = int(rng.integers(22, 45))
    for _ in range(40 * n):
        if len(cells) >= n:
            break
        rc = r_icm * rng.uniform(0.2, 0.32)
        p = centre + rng.uniform(-1, 1, 3) * (r_icm - 0.5 * rc)
        if np.linalg.norm(p - centre) > r_icm - 0.5 * rc:
            continue
        if np.linalg.norm(p) > cavity_r + 0.5 * te_t - 0.6 * rc:  # stays inside the TE
            continue
        if any(np.linalg.norm(p - q) < 0.7 * (rc + rq) for q, rq in cells):
            continue
        cells.append((p, rc))
    return centre, cells


def sample_blastocyst(rng: np.random.Generator, stage: str, r_zout_px: float,
                      te_cells: tuple[float, float], collapse_prob: float) -> Blastocyst:
    """Draw one blastocyst of sub-stage ``stage`` whose zona's outer radius is ``r_zout_px``.

    The pixel size follows from the drawn diameter in micrometres (the frame's scale is set
    by where the embryo sits in it, as for cleavage embryos).
    """
    p = _STAGE_UM[stage]
    px_um = 0.5 * _u(rng, p["diam"]) / r_zout_px
    px = 1.0 / px_um
    r_zin = r_zout_px - _u(rng, p["zona"]) * px
    ellip = _u(rng, (0.0, 0.04 if stage in ("expanded", "hatching") else 0.06))
    te_r = max(4.0, r_zin * (1 - ellip) - _u(rng, p["gap"]) * px - 1.0)
    te_t = _u(rng, p["te"]) * px
    te_xy = np.zeros(2)
    collapsed = bool(stage != "early" and rng.random() < collapse_prob)
    if collapsed:  # the TE lets go of the zona and shrinks; its cells thicken
        shrink = rng.uniform(0.6, 0.85)
        a = rng.uniform(0, 2 * np.pi)
        room = te_r * (1 - shrink)
        te_xy = rng.uniform(0, 0.8) * room * np.array([np.cos(a), np.sin(a)])
        te_r *= shrink
        te_t *= rng.uniform(1.3, 1.8)
    te_t = min(te_t, 0.6 * te_r)
    n_te = max(12, int(round(_u(rng, te_cells) * p["cells"])))
    sites = sphere_sites(rng, n_te)
    icm_size = rng.uniform(0.5, 0.7) if stage == "early" else rng.uniform(0.36, 0.55)
    icm_center, icm = _icm_cells(rng, te_r - te_t, te_t, icm_size)
    b = Blastocyst(stage=stage, collapsed=collapsed, px_um=px_um, r_zout=r_zout_px,
                   r_zin=r_zin, ellip=ellip, angle=float(rng.uniform(0, np.pi)), te_r=te_r,
                   te_xy=te_xy, te_t=te_t, te_sites=sites, icm_cells=icm, icm_center=icm_center)
    if stage == "hatching" and not collapsed:
        b.hatch_angle = float(rng.uniform(0, 2 * np.pi))
        b.bulge_r = rng.uniform(0.25, 0.6) * te_r
        b.bulge_sites = sphere_sites(rng, max(12, int(n_te * (b.bulge_r / te_r) ** 2 * 1.3)))
    return b


def _shell(xx: np.ndarray, yy: np.ndarray, r: float, t0: float, sites: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One epithelial shell seen from above: (path of its top half, of its bottom half, and
    the pixel distance to the nearest cell border on the top and bottom faces, stacked).

    Each cell is a low dome: the shell is ``t0`` thick in a cell's middle and thins to a
    fifth of that at the borders, which grooves the surface (the mesh) and scallops the
    shell's inner edge where it is seen edge-on at the rim.
    """
    rho2 = xx * xx + yy * yy
    z = np.sqrt(np.clip(r * r - rho2, 0, None))
    tree = cKDTree(sites)
    a = 2.0 / np.sqrt(len(sites))  # a cell's radius on the unit sphere
    border, thick = [], []
    for sgn in (1.0, -1.0):
        pts = np.stack([xx, yy, sgn * z], -1).reshape(-1, 3) / r
        d, idx = tree.query(pts, k=2)
        gap = np.linalg.norm(sites[idx[:, 1]] - sites[idx[:, 0]], axis=1) + 1e-9
        b = ((d[:, 1] ** 2 - d[:, 0] ** 2) / (2 * gap)).reshape(xx.shape)
        border.append(b * r)
        thick.append(t0 * (0.2 + 0.8 * (1 - np.exp(-(b / (0.3 * a)) ** 2))))
    t_eff = 0.5 * (thick[0] + thick[1])
    path = sphere_chord(xx, yy, r) - sphere_chord(xx, yy, np.maximum(r - t_eff, 0.0))
    share = thick[0] / (2 * t_eff + 1e-9)
    return path * share, path * (1 - share), np.stack(border)


def _ring_coords(canvas: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel offsets (x, y) from the canvas centre."""
    c = (canvas - 1) / 2.0
    yy, xx = np.mgrid[0:canvas, 0:canvas].astype(np.float32) - c
    return xx, yy


def blastocyst_maps(b: Blastocyst, canvas: int, rng: np.random.Generator, *, gran: float,
                    gran_size: float, mem_dark: float, mem_w: float, membrane_sign: float,
                    z_focus: float, depth_blur: float, under_w: float
                    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Cells' path length (canvas px, before the index excess), absorption, and the masks
    ``trophectoderm``, ``blastocoel`` and ``inner_cell_mass`` on the canvas."""
    xx, yy = _ring_coords(canvas)
    tx, ty = xx - b.te_xy[0], yy - b.te_xy[1]
    top, bot, border = _shell(tx, ty, b.te_r, b.te_t, b.te_sites)
    tex = granules(rng, (canvas, canvas), 2.0 * gran_size, 0.01)  # flat cells: fine grain
    line = np.exp(-0.5 * (border / mem_w) ** 2) * (top + bot > 0)
    # the top face is near the focus when z_focus > 0; the other face is blurred and fainter
    # (half the cleavage depth blur: the thin TE stays recognisable over the whole depth)
    z_face = 0.7 * b.te_r
    s_top = 0.3 + 0.5 * depth_blur * abs(z_face - z_focus) / b.te_r
    s_bot = 0.3 + 0.5 * depth_blur * abs(-z_face - z_focus) / b.te_r
    cells = (ndi.gaussian_filter(top, s_top) + ndi.gaussian_filter(bot, s_bot)) * (
        1 + 0.5 * gran * tex)
    # the borders of flat cells are fine lines: much fainter than a blastomere's outline
    absorb = membrane_sign * 0.5 * mem_dark * (
        ndi.gaussian_filter(line[0], s_top) + under_w * ndi.gaussian_filter(line[1], s_bot))
    te_mask = (top + bot) > 0

    if b.hatch_angle is not None:  # the TE that has squeezed out through the breach
        ca, sa = np.cos(b.hatch_angle), np.sin(b.hatch_angle)
        d = b.r_zin + 0.35 * b.bulge_r
        bx, by = xx - d * ca, yy - d * sa
        btop, bbot, bborder = _shell(bx, by, b.bulge_r, min(b.te_t, 0.5 * b.bulge_r),
                                     b.bulge_sites)
        outside = np.sqrt(xx * xx + yy * yy) > b.r_zin
        bpath = (btop + bbot) * outside
        cells = cells + ndi.gaussian_filter(bpath, 0.5 * (s_top + s_bot)) * (1 + 0.5 * gran * tex)
        bline = np.exp(-0.5 * (bborder[0] / mem_w) ** 2) * (bpath > 0)
        absorb = absorb + membrane_sign * 0.35 * mem_dark * ndi.gaussian_filter(bline, s_top)
        te_mask = te_mask | (bpath > 0)

    icm_path = np.zeros_like(xx)
    icm_line = np.zeros_like(xx)
    for p, rc in b.icm_cells:
        dx, dy = tx - p[0], ty - p[1]
        icm_path += sphere_chord(dx, dy, rc)
        edge = np.sqrt(dx * dx + dy * dy) - rc
        icm_line += np.exp(-0.5 * (edge / mem_w) ** 2) * (1.0 if p[2] >= b.icm_center[2] else under_w)
    s_icm = 0.3 + 0.6 * depth_blur * abs(b.icm_center[2] - z_focus) / b.te_r
    coarse = granules(rng, (canvas, canvas), 1.3 * gran_size, 0.04)
    # the ICM is a dense, granular lump whose cell outlines are only hinted at
    cells = cells + ndi.gaussian_filter(icm_path * (1 + 1.5 * gran * coarse), s_icm)
    absorb = absorb + ndi.gaussian_filter(
        membrane_sign * 0.3 * mem_dark * icm_line, s_icm)
    masks = {"trophectoderm": te_mask,
             "blastocoel": tx * tx + ty * ty < b.cavity_r ** 2,
             "inner_cell_mass": icm_path > 0}
    return cells.astype(np.float32), absorb.astype(np.float32), masks


def zona_mask(canvas: int, b: Blastocyst, breach: np.ndarray) -> np.ndarray:
    """The zona's ring (between its inner and outer faces, as drawn), minus any breach."""
    xx, yy = _ring_coords(canvas)
    ca, sa = np.cos(b.angle), np.sin(b.angle)
    rr = np.hypot((ca * xx + sa * yy) / (1.0 + b.ellip), (-sa * xx + ca * yy) / (1.0 - b.ellip))
    return (rr >= b.r_zin) & (rr <= b.r_zout) & (breach > 0.5)


def zona_breach(canvas: int, b: Blastocyst) -> np.ndarray:
    """Multiplier of the zona's maps: 0 in the breach the hatching TE pushes through."""
    if b.hatch_angle is None:
        return np.ones((canvas, canvas), np.float32)
    xx, yy = _ring_coords(canvas)
    dth = np.angle(np.exp(1j * (np.arctan2(yy, xx) - b.hatch_angle)))
    half = np.arcsin(min(0.95, 0.75 * b.bulge_r / b.r_zin))
    return (1.0 / (1.0 + np.exp(-(np.abs(dth) - half) / 0.03))).astype(np.float32)
