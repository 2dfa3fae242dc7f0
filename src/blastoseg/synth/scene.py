"""One synthetic embryo in its well: sampled once, then rendered at any time point.

A :class:`Scene` holds everything that stays the same across the frames of a time-lapse
(zona, debris, well edge, optics, the cleavage schedule) and the evolving 3D cell state.
"""

from __future__ import annotations

import heapq

import numpy as np
from scipy import ndimage as ndi

from blastoseg.instances import FrameInstances
from blastoseg.synth import appearance as app
from blastoseg.synth import artefacts as art
from blastoseg.synth import geometry as geo
from blastoseg.synth import incubator as inc
from blastoseg.synth import optics
from blastoseg.synth.config import EmbryoConfig

# mean and sd (hours) of the cell cycle of each generation; t2 is the zygote's division
_CYCLE_H = {0: (26.0, 1.8), 1: (11.5, 1.3), 2: (12.5, 1.6), 3: (13.5, 2.0), 4: (15.0, 2.5)}


def _u(rng: np.random.Generator, r: tuple[float, float]) -> float:
    return float(rng.uniform(r[0], r[1]))


class Scene:
    """A sampled embryo; call :meth:`advance_to` then :meth:`render` for each frame."""

    def __init__(self, seed: int, config: EmbryoConfig, max_cells: int) -> None:
        self.cfg = cfg = config
        self.seed = seed
        ss = np.random.SeedSequence(seed)
        # children 0-5 are the original streams (crop-mode frames are unchanged by the newer
        # options); 6 drives the incubator frame, 7 the wide appearance, 8 the mixed mode's draw
        s_geo, s_div, s_opt, s_art, s_tex, s_frame, s_inc, s_look, s_mode = ss.spawn(9)
        ri = np.random.default_rng(s_inc)
        self.mode = cfg.mode
        if cfg.mode == "mixed":
            draw = np.random.default_rng(s_mode).random()
            self.mode = "incubator" if draw < cfg.incubator_fraction else "crop"
        self.rng_div = np.random.default_rng(s_div)     # cleavage geometry
        self.rng_frame = np.random.default_rng(s_frame)  # per-frame jitter and noise
        self.tex_seed = s_tex
        rng = np.random.default_rng(s_geo)
        h, w = self.shape = tuple(int(v) for v in cfg.image_size)
        s = min(h, w)
        self.px_um = cfg.pixel_size_um * 500.0 / s * float(np.exp(rng.normal(0, cfg.magnification_jitter)))
        px = 1.0 / self.px_um
        self.r0 = 0.5 * _u(rng, cfg.zygote_diameter_um) * px
        self.r_zin = self.r0 + _u(rng, cfg.perivitelline_um) * px
        self.r_zout = self.r_zin + _u(rng, cfg.zona_thickness_um) * px
        self.layout: inc.Layout | None = None
        if self.mode == "incubator":  # the frame's scale follows from the embryo's size
            self.layout = inc.sample_layout(ri, self.shape, cfg)
            k = self.layout.embryo_r / self.r_zout
            self.px_um /= k
            px = 1.0 / self.px_um
            self.r0, self.r_zin, self.r_zout = k * self.r0, k * self.r_zin, k * self.r_zout
        self.ellip = _u(rng, cfg.zona_ellipticity)
        self.angle = float(rng.uniform(0, np.pi))
        self.look: app.Look | None = None
        self.allowed_overlap, self.compression = cfg.allowed_overlap, cfg.compression
        z_squash = 0.93
        if cfg.appearance == "wide":
            self.look = app.sample_look(np.random.default_rng(s_look), s / 500.0)
            self.allowed_overlap = self.look.scene["allowed_overlap"]
            self.compression = self.look.scene["compression"]
            z_squash = self.look.z_squash
        self.container = self.r_zin * np.array([1 + self.ellip, 1 - self.ellip, z_squash]) - 1.5
        lim = max(0.0, min(cfg.off_centre * s, 0.5 * s - self.r_zin - 3))
        off = rng.uniform(-1, 1, 2) * lim
        self.center = np.array([w / 2 + off[0], h / 2 + off[1]])  # x, y
        if self.layout is not None:
            self.center = self.layout.embryo_xy.astype(float)
        self.z_focus = rng.normal(0, 0.15 * self.r0)

        # cleavage schedule: divide cells in order of their scheduled division time
        self.cells = [geo.Cell(center=np.zeros(3), volume=4 / 3 * np.pi * self.r0**3, track_id=1,
                               intrinsic=geo.random_intrinsic(rng, 0.02),
                               harmonics=geo.random_harmonics(rng, 0.3 * cfg.outline_harmonics))]
        self.cells[0].division_h = float(rng.normal(*_CYCLE_H[0]))
        self.next_id = 2
        self.lineage: dict[int, int] = {1: -1}
        self.events: list[tuple[float, int]] = []  # (hours, track_id) of future divisions
        self.max_cells = max_cells
        self._schedule = self._plan(max_cells)
        self.cleavage_hours = [t for t, _ in self._schedule]
        self.pn_fade_h = self.cells[0].division_h - _u(rng, (1.5, 3.0))
        self.has_pn = bool(rng.random() < cfg.pronuclei_prob)
        self.pn = self._sample_pronuclei(rng)
        self._relax_and_shape(80)

        # optics
        ro = np.random.default_rng(s_opt)
        self.shear = (np.deg2rad(cfg.shear_angle_deg) if cfg.shear_angle_deg is not None
                      else float(ro.uniform(0, 2 * np.pi)))
        self.gain = _u(ro, cfg.relief_gain)
        self.gran = _u(ro, cfg.granularity)
        self.gran_size = _u(ro, cfg.granule_size_px)
        self.mem_dark = _u(ro, cfg.membrane_dark)
        self.mem_w = _u(ro, cfg.membrane_width_px)
        self.cyto_abs = _u(ro, cfg.cytoplasm_absorb)
        self.nuc_c = _u(ro, cfg.nucleus_contrast)
        self.depth_blur = _u(ro, cfg.depth_blur)
        self.defocus = _u(ro, cfg.defocus_sigma)
        self.halo = _u(ro, cfg.halo)
        self.under_w = _u(ro, cfg.occluded_outline)
        self.bg = _u(ro, cfg.background_level)
        self.read_noise = _u(ro, cfg.noise_sigma)
        self.shot = cfg.shot_noise
        if self.look is not None:
            for k in ("gain", "gran", "gran_size", "mem_dark", "mem_w", "cyto_abs", "nuc_c",
                      "depth_blur", "defocus", "halo", "under_w", "bg", "read_noise", "shot"):
                setattr(self, k, self.look.scene[k])
        self.bg_opl = cfg.background_texture * (optics.smooth_noise(ro, self.shape, 1.2)
                                                + 0.7 * optics.smooth_noise(ro, self.shape, 6.0))

        # embryo-fixed layers (zona, debris, fragments) and frame-fixed artefacts
        ra = np.random.default_rng(s_art)
        self.canvas = int(2 * (self.r_zout + 16 * px)) | 1
        zopl, self.zona_abs = art.zona_opl(self.canvas, self.r_zout, self.r_zin, self.ellip,
                                           self.angle, ra, 0.08)
        cum = art.cumulus_opl(self.canvas, self.r_zout, int(round(_u(ra, cfg.cumulus_clusters))),
                              int(round(_u(ra, cfg.debris_particles))), self.px_um, ra)
        zopl = ndi.gaussian_filter(zopl, 1.2)  # the zona's faces are not sharp
        self.static_opl = self.px_um * (cfg.zona_dn * zopl + 0.02 * cum)
        frag = art.fragments_opl(self.canvas, self.r_zin, int(round(_u(ra, cfg.fragments))),
                                 self.px_um, ra)
        self.frag_opl = self.px_um * 0.025 * frag
        self.illum = np.ones(self.shape, np.float32)
        self.rim = np.zeros(self.shape, np.float32)
        if ra.random() < cfg.well_edge_prob:
            self.illum, self.rim = art.well_edge(self.shape, ra)
        if ra.random() < cfg.vignetting_prob:
            self.illum = self.illum * art.vignette(self.shape, ra, _u(ra, cfg.vignetting_strength))
        self.text = ra.random() < cfg.text_prob
        self.well = int(ra.integers(1, 17))
        self.text_value = 255.0 if ra.random() < 0.7 else 20.0
        self.text_box = bool(ra.random() < 0.25)
        self.bg_abs = np.zeros(self.shape, np.float32)
        if self.layout is not None:
            self._incubator_frame(ri)
        self._textures: dict[int, np.ndarray] = {}
        self.drift = np.zeros(2)
        self.rot = 0.0

    def _incubator_frame(self, ri: np.random.Generator) -> None:
        """Micro-well or dish edge, vignetting, bubbles, pipette, clutter, text (frame-fixed)."""
        cfg, lay = self.cfg, self.layout
        self.illum, self.rim = inc.container_maps(self.shape, ri, cfg, lay)
        if ri.random() < cfg.bubble_prob:
            avoid = (lay.embryo_xy[0], lay.embryo_xy[1], lay.embryo_r)
            self.illum = self.illum * inc.bubbles(self.shape, ri, avoid, int(ri.integers(1, 5)))
        if ri.random() < cfg.pipette_prob:
            self.illum = self.illum * inc.pipette_shadow(self.shape, ri)
        if ri.random() < cfg.vignetting_prob:
            self.illum = self.illum * art.vignette(self.shape, ri, _u(ri, cfg.vignetting_strength))
        c_opl, self.bg_abs = inc.clutter(self.shape, ri, cfg, self.px_um, lay)
        self.bg_opl = self.bg_opl + c_opl
        self.text = bool(ri.random() < cfg.incubator_text_prob)

    def embryo_circle(self) -> list[float]:
        """[cx, cy, r]: centre (x = column, y = row) and OUTER zona radius, in image pixels.

        The centre is where the zona is drawn (its canvas is placed at whole pixels); the
        radius is the mean of the zona's semi-axes (it is at most 7 % elliptical).
        """
        origin = self.center + self.drift
        half = self.canvas // 2
        cx = float(int(round(origin[0])) - half + (self.canvas - 1) / 2.0)
        cy = float(int(round(origin[1])) - half + (self.canvas - 1) / 2.0)
        return [round(cx, 2), round(cy, 2), round(float(self.r_zout), 2)]

    # --- biology -------------------------------------------------------------------------
    def _plan(self, max_cells: int) -> list[tuple[float, int]]:
        """(hours, mother track id) of the first ``max_cells - 1`` divisions.

        Each cell draws its cycle length at birth; cells divide in order of their division
        time, which gives the asynchronous 2 -> 3 -> 4 -> 5 ... sequence of real embryos.
        Track ids are assigned exactly as :meth:`advance_to` will assign them.
        """
        rng = np.random.default_rng(self.tex_seed.spawn(1)[0])
        t2 = self.cells[0].division_h
        self.div_h = {1: t2}
        heap = [(t2, 1, 0)]
        nid, plan = 2, []
        while len(plan) < max_cells - 1:
            t, tid, g = heapq.heappop(heap)
            plan.append((t, tid))
            for d in (nid, nid + 1):
                mu, sd = _CYCLE_H[min(g + 1, 4)]
                td = t + max(6.0, float(rng.normal(mu, sd)))
                self.div_h[d] = td
                heapq.heappush(heap, (td, d, g + 1))
            nid += 2
        self.next_division_h = heap[0][0] if heap else np.inf
        return plan

    def _sample_pronuclei(self, rng: np.random.Generator) -> list[tuple[np.ndarray, float, list]]:
        """Two pronuclei (centre, radius, nucleoli) near the zygote centre, touching."""
        r = self.r0 * rng.uniform(0.17, 0.21)
        axis = geo.random_unit(rng) * np.array([1, 1, 0.3])
        axis /= np.linalg.norm(axis)
        mid = rng.normal(0, 0.12 * self.r0, 3)
        out = []
        for sgn in (1, -1):
            rr = r * rng.uniform(0.9, 1.1)
            c = mid + sgn * axis * rr * 0.95
            nucleoli = []
            for _ in range(int(rng.integers(3, 8))):
                v = -sgn * axis * rr * 0.55 + rng.normal(0, 0.3 * rr, 3)
                nucleoli.append((c + v, rr * rng.uniform(0.08, 0.14)))
            out.append((c, rr, nucleoli))
        return out

    def _relax_and_shape(self, n_iter: int) -> None:
        geo.relax(self.cells, self.container, n_iter, self.allowed_overlap)
        geo.shape(self.cells, self.container, self.compression)

    def advance_to(self, hours: float) -> int:
        """Perform every scheduled division up to ``hours``; returns how many happened."""
        done = 0
        while self._schedule and self._schedule[0][0] <= hours:
            t, tid = self._schedule.pop(0)
            mother = next(c for c in self.cells if c.track_id == tid)
            d1, d2 = geo.divide(mother, self.rng_div, self.next_id, self.cfg.cleavage_asymmetry,
                                self.cfg.cell_anisotropy, self.cfg.outline_harmonics, t)
            for d in (d1, d2):
                d.nucleus_visible = bool(self.rng_div.random() < self.cfg.nucleus_visible_prob)
                d.division_h = self.div_h.get(d.track_id, np.inf)
                self.lineage[d.track_id] = mother.track_id
            self.next_id += 2
            i = next(k for k, c in enumerate(self.cells) if c is mother)
            self.cells[i:i + 1] = [d1, d2]
            self._relax_and_shape(80)
            done += 1
        return done

    def jitter(self) -> None:
        """Small Brownian-like motion of cells and embryo between time-lapse frames."""
        r = self.rng_frame
        s = 1.0 / self.px_um
        for c in self.cells:
            c.center = c.center + r.normal(0, self.cfg.cell_jitter_um * s, 3)
        self.drift = self.drift + r.normal(0, self.cfg.drift_um * s, 2)
        self.drift = np.clip(self.drift, -0.05 * min(self.shape), 0.05 * min(self.shape))
        lay = self.layout
        if lay is not None and lay.kind == "well":  # stay inside the micro-well
            v = self.center + self.drift - lay.container_xy
            d, room = float(np.linalg.norm(v)), lay.container_r - self.r_zout
            if d > room:
                self.drift = self.drift - v * (1.0 - max(room, 0.0) / d)
        self.rot += np.deg2rad(r.normal(0, self.cfg.rotation_deg))
        self._relax_and_shape(15)

    # --- rendering -----------------------------------------------------------------------
    def _texture(self, tid: int, size: int) -> np.ndarray:
        t = self._textures.get(tid)
        if t is None or t.shape[0] < size:
            rng = np.random.default_rng([self.tex_seed.entropy, tid, size])
            t = optics.granules(rng, (size, size), self.gran_size, 0.02)
            if self.look is not None and self.look.lumpy > 0:
                t = t + self.look.lumpy * optics.smooth_noise(rng, (size, size),
                                                              self.look.lumpy_size)
            self._textures[tid] = t
        return t

    def _rotated(self, c: geo.Cell) -> geo.Cell:
        ca, sa = np.cos(self.rot), np.sin(self.rot)
        rz = np.array([[ca, -sa, 0], [sa, ca, 0], [0, 0, 1.0]])
        out = geo.Cell(center=rz @ c.center, volume=c.volume, track_id=c.track_id,
                       harmonics=c.harmonics)
        out.axes, out.frame = c.axes, rz @ c.frame
        return out

    def render(self, hours: float, flicker: float = 1.0) -> tuple[np.ndarray, FrameInstances, dict]:
        """Render the current cell state as a uint8 image plus its ground truth."""
        h, w = self.shape
        origin = self.center + self.drift
        cells = [self._rotated(c) for c in self.cells]
        if self.look is not None and self.look.contact_faces and len(cells) > 1:
            pressed = geo.press(cells)
            cells = [c for c, _ in pressed]
            projs = [geo.project(c, (origin[0], origin[1]), self.shape, margin=6, planes=pl)
                     for c, pl in pressed]
        else:
            projs = [geo.project(c, (origin[0], origin[1]), self.shape, margin=6) for c in cells]
        amodal, visible, occl = geo.masks_from_projections(projs, self.shape)

        opl, absorb, oy, ox = self._embryo_fixed_maps()
        if len(self.cells) > 1:
            optics.add_patch(opl, self.frag_opl, oy, ox)

        # outlines of lower cells are seen through the cells above them: weaker
        owner = np.where(visible.any(axis=0), np.argmax(visible, axis=0), -1)
        for i, (c, cr, pr) in enumerate(zip(self.cells, cells, projs, strict=True)):
            if pr is None:
                continue
            ph, pw = pr.mask.shape
            own = owner[pr.y0:pr.y0 + ph, pr.x0:pr.x0 + pw]
            seen = np.where((own == i) | (own < 0), 1.0, self.under_w).astype(np.float32)
            p_opl, p_abs = self._cell_patch(c, cr, pr, hours, seen)
            sigma = 0.3 + self.depth_blur * abs(c.center[2] - self.z_focus) / self.r0
            both, pad = optics.blurred_patch(np.stack([p_opl, p_abs]), 0)
            if sigma >= 0.3:
                pad = int(np.ceil(3 * sigma))
                both = ndi.gaussian_filter(np.pad(both, ((0, 0), (pad, pad), (pad, pad))),
                                           (0, sigma, sigma))
            optics.add_patch(opl, both[0], pr.y0 - pad, pr.x0 - pad)
            optics.add_patch(absorb, both[1], pr.y0 - pad, pr.x0 - pad)

        image = self._finish(opl, absorb, hours, flicker)

        tids = np.array([c.track_id for c in self.cells], dtype=np.int64)
        meta = {"n_cells": len(self.cells), "hours": round(float(hours), 2),
                "embryo_circle": self.embryo_circle(),
                "depth_z_px": [round(float(c.center[2]), 2) for c in self.cells]}
        inst = FrameInstances(masks=amodal, visible_masks=visible, occlusion=occl,
                              track_ids=tids, meta=dict(meta))
        return image, inst, meta

    def _embryo_fixed_maps(self) -> tuple[np.ndarray, np.ndarray, int, int]:
        """Background plus the embryo canvas (zona, debris) placed at the embryo's position;
        returns (opl, absorb, y0, x0 of the canvas)."""
        origin = self.center + self.drift
        opl = self.bg_opl.copy()
        absorb = self.bg_abs.copy()
        half = self.canvas // 2
        oy, ox = int(round(origin[1])) - half, int(round(origin[0])) - half
        optics.add_patch(opl, self.static_opl, oy, ox)
        optics.add_patch(absorb, self.zona_abs, oy, ox)
        return opl, absorb, oy, ox

    def _finish(self, opl: np.ndarray, absorb: np.ndarray, hours: float,
                flicker: float) -> np.ndarray:
        """Relief optics, illumination, noise, gamma, text and JPEG: the uint8 frame."""
        opl = ndi.gaussian_filter(opl, self.defocus)
        absorb = ndi.gaussian_filter(absorb, 0.5 * self.defocus)
        img = optics.relief_image(opl, absorb, self.shear, self.gain, self.bg, 6.0, self.halo)
        img = img * self.illum * flicker + self.bg * self.rim
        img = optics.sensor_noise(img, self.rng_frame, self.read_noise, self.shot)
        if self.look is not None:
            img = app.apply_gamma(img, self.look.gamma)
        if self.text:
            scale = max(1, int(round(min(self.shape) / 250)))
            lines = {"tl": f"W{self.well}", "br": f"{hours:.1f}h"}
            img = art.burn_text(img, lines, scale, self.text_value, self.text_box)
        image = np.clip(np.round(img), 0, 255).astype(np.uint8)
        if self.look is not None:
            image = app.jpeg(image, self.look.jpeg_quality)
        return image

    def _cell_patch(self, c: geo.Cell, cr: geo.Cell, pr: geo.Projection, hours: float,
                    seen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Path length (um) and absorption of one cell on its projection box."""
        ph, pw = pr.thickness.shape
        size = int(2 * (1.8 * c.radius + 12)) + 1
        tex = self._texture(c.track_id, size)
        cy, cx = int(round(pr.center_xy[1])), int(round(pr.center_xy[0]))
        ys = (np.arange(pr.y0, pr.y0 + ph) - cy) % size
        xs = (np.arange(pr.x0, pr.x0 + pw) - cx) % size
        g = tex[np.ix_(ys, xs)]
        t_um = pr.thickness * self.px_um
        yy = np.arange(pr.y0, pr.y0 + ph)[:, None] - pr.center_xy[1]
        xx = np.arange(pr.x0, pr.x0 + pw)[None, :] - pr.center_xy[0]
        # nuclei: smooth, lower-index spheres that hide the granules
        nuc_t = np.zeros_like(t_um)
        dense = np.zeros_like(t_um)  # nucleoli: small, denser than cytoplasm
        if c.generation == 0:
            if self.has_pn and hours < self.pn_fade_h:
                for pc, prad, nucleoli in self.pn:
                    off = self._rot_vec(pc) - cr.center
                    nuc_t += optics.sphere_chord(xx - off[0], yy - off[1], prad)
                    for nc, nr in nucleoli:
                        off = self._rot_vec(nc) - cr.center
                        dense += optics.sphere_chord(xx - off[0], yy - off[1], nr)
            rn = self.pn[0][1]
        else:
            rn = 0.3 * c.radius
            if c.nucleus_visible and hours < c.division_h - 1.5:
                off = self._rot_vec(c.nucleus_offset * c.radius)
                nuc_t = optics.sphere_chord(xx - off[0], yy - off[1], rn)
        mask_n = np.clip(nuc_t / rn, 0, 1)
        opl = self.cfg.cytoplasm_dn * (t_um * (1.0 + self.gran * g * (1 - 0.7 * mask_n))
                                       - self.px_um * (self.nuc_c * nuc_t - 2.0 * dense))
        line = np.exp(-0.5 * (pr.edge_dist / self.mem_w) ** 2)
        sign = self.look.membrane_sign if self.look is not None else 1.0
        absorb = sign * self.mem_dark * line * seen + self.cyto_abs * t_um / 100.0
        return opl.astype(np.float32), absorb.astype(np.float32)

    def _rot_vec(self, v: np.ndarray) -> np.ndarray:
        ca, sa = np.cos(self.rot), np.sin(self.rot)
        return np.array([ca * v[0] - sa * v[1], sa * v[0] + ca * v[1], v[2]])
