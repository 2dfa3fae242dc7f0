"""Full incubator frames: the micro-well (or dish edge) around a small embryo, and clutter.

EmbryoScope-type frames show the embryo inside a micro-well: a bright medium disc bounded by a
bright white rim (the well's wall catching the light), a full or partial ring two to three
times the embryo's diameter, and outside it a dark, concentrically rippled surface that is
black on one side. Other incubators show the bright crescent of a culture dish's edge. Air
bubbles, the shadow of a pipette, free cumulus clumps and out-of-focus specks float around.

Everything here is fixed to the camera frame. :func:`sample_layout` places the embryo and the
well; the other functions return maps the scene composes with the relief image:
``image = relief * illum + background * add``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from blastoseg.synth.artefacts import blob
from blastoseg.synth.config import EmbryoConfig
from blastoseg.synth.optics import add_patch


def _u(rng: np.random.Generator, r: tuple[float, float]) -> float:
    return float(rng.uniform(r[0], r[1]))


@dataclass
class Layout:
    """Where the embryo and its container sit in the frame (pixels; x = column, y = row).

    ``kind`` is ``"well"`` (micro-well, ``container_xy``/``container_r`` = the well's inner
    face) or ``"dish"`` (a dish edge: a circle much larger than the frame).
    """

    kind: str
    embryo_xy: np.ndarray
    embryo_r: float
    container_xy: np.ndarray
    container_r: float


def sample_layout(rng: np.random.Generator, shape: tuple[int, int], cfg: EmbryoConfig) -> Layout:
    """Embryo size and position, and the micro-well or dish edge around it."""
    h, w = shape
    s = min(h, w)
    r_e = 0.5 * _u(rng, cfg.embryo_fraction) * s
    if rng.random() < cfg.dish_edge_prob:
        return _dish_layout(rng, shape, r_e)
    r_w = _u(rng, cfg.well_ratio) * r_e
    touch = rng.random() < cfg.touch_rim_prob
    d_max = max(0.0, r_w - r_e - 1.0)  # 1 px to spare: the zona is drawn at whole pixels
    # the embryo's centre must stay in the frame, its circle mostly so
    lo = np.array([0.75 * r_e, 0.75 * r_e])
    hi = np.array([w - 0.75 * r_e, h - 0.75 * r_e])
    if np.any(hi < lo):
        lo = hi = np.array([w / 2, h / 2])
    # a well wider than the frame is moved off-centre so that part of its rim shows, mostly
    show_rim = r_w > 0.45 * s and rng.random() < 0.85
    for _ in range(60):
        if show_rim:
            off = rng.uniform(max(0.0, r_w - 0.5 * s), r_w - 0.22 * s)
        else:
            off = rng.uniform(0.0, 0.12 + 0.2 * max(0.0, r_w / s - 0.5)) * s
        a = rng.uniform(0, 2 * np.pi)
        wc = np.array([w / 2 + off * np.cos(a), h / 2 + off * np.sin(a)])
        d = d_max * (rng.uniform(0.97, 1.0) if touch else np.sqrt(rng.random()))
        b = rng.uniform(0, 2 * np.pi)
        ec = wc + d * np.array([np.cos(b), np.sin(b)])
        if np.all(ec >= lo) and np.all(ec <= hi):
            return Layout("well", ec, r_e, wc, r_w)
    # fallback: embryo clipped into the frame, the well moved so that it still holds it
    ec = np.clip(ec, lo, hi)
    v = wc - ec
    n = np.linalg.norm(v)
    if n > d_max:
        wc = ec + v * (d_max / n)
    return Layout("well", ec, r_e, wc, r_w)


def _dish_layout(rng: np.random.Generator, shape: tuple[int, int], r_e: float) -> Layout:
    h, w = shape
    s = min(h, w)
    m = 0.75 * r_e
    ec = np.array([rng.uniform(m, max(m, w - m)), rng.uniform(m, max(m, h - m))])
    r_d = rng.uniform(1.5, 4.0) * s
    for _ in range(60):
        a = rng.uniform(0, 2 * np.pi)
        u = np.array([np.cos(a), np.sin(a)])
        gap = rng.uniform(0.0, 0.6) * s
        edge = ec + u * (r_e + gap)
        if 0 <= edge[0] < w and 0 <= edge[1] < h:
            break
    else:
        gap = 0.0
    return Layout("dish", ec, r_e, ec - u * (r_d - r_e - gap), r_d)


def _lit(theta: np.ndarray, light: float, power: float) -> np.ndarray:
    return (0.5 + 0.5 * np.cos(theta - light)) ** power


def _ripples(rng: np.random.Generator, r: np.ndarray, theta: np.ndarray,
             s: int) -> np.ndarray:
    """Concentric, slightly wavy grooves of unit contrast (a turned plastic surface)."""
    n = int(r.max()) + 64
    res = 4  # samples per pixel of radius
    period = rng.uniform(0.012, 0.04) * s
    prof = ndi.gaussian_filter1d(rng.standard_normal(n * res), 0.3 * period * res, mode="wrap")
    fine = ndi.gaussian_filter1d(rng.standard_normal(n * res), 0.6 * res, mode="wrap")
    prof = prof / (prof.std() + 1e-8) + rng.uniform(0.0, 0.4) * fine / (fine.std() + 1e-8)
    slow = ndi.gaussian_filter1d(rng.standard_normal(n * res), 4 * period * res, mode="wrap")
    prof = prof * np.clip(1.0 + 0.4 * slow / (slow.std() + 1e-8), 0.2, None)
    warp = np.zeros_like(r)
    for k in (1, 2, 3, 5):
        warp += rng.uniform(0, 0.012 * s / k) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    idx = np.clip(((r + warp + 32) * res).astype(np.int64), 0, n * res - 1)
    return np.clip(prof[idx], -3, 3).astype(np.float32)


def _grid(shape: tuple[int, int], c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dx, dy = xx - np.float32(c[0]), yy - np.float32(c[1])
    return np.sqrt(dx * dx + dy * dy), np.arctan2(dy, dx)


def container_maps(shape: tuple[int, int], rng: np.random.Generator, cfg: EmbryoConfig,
                   lay: Layout) -> tuple[np.ndarray, np.ndarray]:
    """Illumination (multiplicative) and rim (additive, fraction of background) maps."""
    s = min(shape)
    r, th = _grid(shape, lay.container_xy)
    sd = r - lay.container_r  # > 0 outside the medium
    light = rng.uniform(0, 2 * np.pi)
    if lay.kind == "well":
        width = _u(rng, cfg.rim_width) * s
        peak = _u(rng, cfg.rim_brightness)
        out_hi = _u(rng, cfg.outside_level)
        out_lo = rng.uniform(0.2, 0.8) * out_hi
    else:  # a dish edge: broader, dimmer crescent, less dark beyond
        width = rng.uniform(0.02, 0.07) * s
        peak = rng.uniform(0.25, 0.8)
        out_hi = rng.uniform(0.35, 0.9)
        out_lo = rng.uniform(0.3, 0.8) * out_hi
    partial = rng.random() < cfg.partial_rim_prob
    rim_floor = rng.uniform(0.0, 0.35) if partial else rng.uniform(0.6, 1.0)
    lit_out = _lit(th, light, rng.uniform(0.5, 2.0))
    lit_rim = _lit(th, light + rng.normal(0, 0.4), rng.uniform(0.7, 2.5))
    # rim: sharp towards the medium, softer towards the outside, centred just outside R
    c = sd - 0.4 * width
    rim = np.where(c < 0, np.exp(-0.5 * (c / (0.35 * width)) ** 2),
                   np.exp(-0.5 * (c / width) ** 2))
    rim = peak * rim * (rim_floor + (1.0 - rim_floor) * lit_rim)
    outside = 1.0 / (1.0 + np.exp(-np.clip((sd - 0.8 * width) / (0.3 * width), -30, 30)))
    amp = _u(rng, cfg.ripple) * (1.0 if lay.kind == "well" else 0.3)
    ripple = 1.0 + amp * _ripples(rng, r, th, s)
    level = (out_lo + (out_hi - out_lo) * lit_out) * ripple
    # the medium darkens or brightens a little towards the wall (meniscus)
    menisc = 1.0 + rng.uniform(-0.15, 0.1) * np.exp(-0.5 * ((sd + 2.0 * width) / (2.0 * width)) ** 2)
    if lay.kind == "well" and rng.random() < cfg.well_shadow_prob:
        # the well's wall shades one side: black outside there, a dimmer medium inside
        h, w = shape
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        ca, sa = np.cos(light + np.pi), np.sin(light + np.pi)
        proj = (xx - lay.container_xy[0]) * ca + (yy - lay.container_xy[1]) * sa
        p0 = rng.uniform(-0.2, 0.9) * lay.container_r
        soft = rng.uniform(0.04, 0.15) * s
        sig_out = 1.0 / (1.0 + np.exp(-np.clip((proj - p0) / soft, -30, 30)))
        p1 = p0 + rng.uniform(0.0, 0.4) * lay.container_r
        sig_in = 1.0 / (1.0 + np.exp(-np.clip((proj - p1) / (2 * soft), -30, 30)))
        level = level * (1.0 - rng.uniform(0.75, 1.0) * sig_out)
        menisc = menisc * (1.0 - rng.uniform(0.0, 0.6) * sig_in)
        rim = rim * (1.0 - rng.uniform(0.3, 0.9) * sig_out)
    illum = (1.0 - outside) * menisc + outside * level
    return illum.astype(np.float32), ndi.gaussian_filter(rim, 0.8).astype(np.float32)


def bubbles(shape: tuple[int, int], rng: np.random.Generator, avoid: tuple[float, float, float],
            n: int) -> np.ndarray:
    """Multiplicative map of ``n`` air bubbles: a thick dark ring around a bright centre."""
    h, w = shape
    s = min(h, w)
    out = np.ones(shape, np.float32)
    ax, ay, ar = avoid
    for _ in range(n):
        rb = rng.uniform(0.015, 0.1) * s
        for _ in range(30):
            bx, by = rng.uniform(0, w), rng.uniform(0, h)
            if np.hypot(bx - ax, by - ay) > ar + rb + 2:
                break
        else:
            continue
        m = int(rb * 1.4) + 3
        y0, x0 = int(by) - m, int(bx) - m
        yy, xx = np.mgrid[y0:y0 + 2 * m + 1, x0:x0 + 2 * m + 1].astype(np.float32)
        t = np.hypot(xx - bx, yy - by) / rb
        ring = rng.uniform(0.4, 0.85) * np.exp(-0.5 * ((t - 0.85) / rng.uniform(0.08, 0.16)) ** 2)
        centre = rng.uniform(0.1, 0.5) * np.exp(-0.5 * (t / 0.35) ** 2)
        add_patch(out, (centre - ring).astype(np.float32), y0, x0)
    return out


def pipette_shadow(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Multiplicative map of an out-of-focus pipette entering from one side of the frame."""
    h, w = shape
    s = min(h, w)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a = rng.uniform(0, 2 * np.pi)
    u = np.array([np.cos(a), np.sin(a)])  # pointing into the frame
    start = np.array([w / 2, h / 2]) - u * 0.75 * s + rng.normal(0, 0.2 * s, 2)
    length = rng.uniform(0.3, 0.8) * s
    t = np.clip((xx - start[0]) * u[0] + (yy - start[1]) * u[1], -1e9, length)
    px, py = start[0] + t * u[0], start[1] + t * u[1]
    dist = np.hypot(xx - px, yy - py)
    half = rng.uniform(0.05, 0.14) * s
    body = 1.0 / (1.0 + np.exp(-np.clip((half - dist) / (0.15 * half), -30, 30)))
    edge = np.exp(-0.5 * ((dist - half) / (0.12 * half)) ** 2)
    m = 1.0 - rng.uniform(0.1, 0.45) * body + rng.uniform(0.0, 0.2) * edge
    return ndi.gaussian_filter(m, rng.uniform(0.1, 0.3) * half).astype(np.float32)


def clutter(shape: tuple[int, int], rng: np.random.Generator, cfg: EmbryoConfig, px_um: float,
            lay: Layout) -> tuple[np.ndarray, np.ndarray]:
    """Free cumulus clumps (path length, um) and blurred specks (absorption) in the medium."""
    h, w = shape
    opl = np.zeros(shape, np.float32)
    absorb = np.zeros(shape, np.float32)
    ex, ey = lay.embryo_xy
    keep_out = lay.embryo_r * 1.08

    def spot() -> tuple[float, float] | None:
        for _ in range(30):
            x, y = rng.uniform(0, w), rng.uniform(0, h)
            if (np.hypot(x - ex, y - ey) > keep_out
                    and (lay.kind == "dish" or np.hypot(x - lay.container_xy[0], y - lay.container_xy[1])
                         < lay.container_r)):
                return x, y
        return None

    for _ in range(int(round(_u(rng, cfg.floating_cumulus)))):
        p = spot()
        if p is None:
            continue
        for _ in range(int(rng.integers(3, 16))):
            r = rng.uniform(3.0, 7.0) / px_um
            y, x = p[1] + rng.normal(0, 1.5 * r), p[0] + rng.normal(0, 1.5 * r)
            if np.hypot(x - ex, y - ey) < keep_out + r:
                continue
            b = blob(r, rng, 0.35, 0.2) * rng.uniform(0.7, 1.2)
            add_patch(opl, b, int(y) - b.shape[0] // 2, int(x) - b.shape[1] // 2)
    for _ in range(int(round(_u(rng, cfg.specks)))):
        p = spot()
        if p is None:
            continue
        r = rng.uniform(0.8, 4.0) / px_um
        b = blob(r, rng, 0.0, 0.3)
        b = ndi.gaussian_filter(np.pad(b, int(3 * r)), rng.uniform(0.5, 2.0) * r)
        b = b / (b.max() + 1e-6) * rng.uniform(0.1, 0.45)
        add_patch(absorb, b.astype(np.float32), int(p[1]) - b.shape[0] // 2,
                  int(p[0]) - b.shape[1] // 2)
    return opl * px_um * 0.02, absorb
