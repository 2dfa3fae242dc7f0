"""Public entry points: one synthetic frame (cleavage embryo or blastocyst), or a time-lapse
of one cleaving embryo."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from blastoseg.errors import BlastosegError
from blastoseg.instances import FrameInstances
from blastoseg.synth.config import EmbryoConfig
from blastoseg.synth.scene import Scene

MAX_CELLS = 16


@dataclass
class SynthFrame:
    """One synthetic frame and its ground truth.

    Attributes
    ----------
    image
        (H, W) uint8 relief-contrast image.
    instances
        Amodal masks, visible masks, occlusion map and track ids of the blastomeres.
    meta
        JSON-able description: stage, n_cells, seed, hours, well, pixel_size_um, zona
        geometry, ...
    components
        Blastocysts only: full-frame boolean masks ``zona``, ``trophectoderm``,
        ``blastocoel`` and ``inner_cell_mass`` (not written to datasets).
    """

    image: np.ndarray
    instances: FrameInstances
    meta: dict = field(default_factory=dict)
    components: dict[str, np.ndarray] | None = None


@dataclass
class SynthTimelapse:
    """A time-lapse of one embryo cleaving from 1 to ``max_cells`` cells.

    Attributes
    ----------
    images
        (T, H, W) uint8.
    frames
        Ground truth of every frame; ``track_ids`` persist across frames.
    cleavage_frames
        Frame index at which each cleavage occurred (one entry per division, sorted; two
        divisions between the same pair of frames give the same index twice).
    lineage
        track id -> parent track id; the zygote maps to -1.
    meta
        JSON-able description, including ``hours`` per frame and ``cleavage_hours``.
    """

    images: np.ndarray
    frames: list[FrameInstances]
    cleavage_frames: list[int]
    lineage: dict[int, int]
    meta: dict = field(default_factory=dict)


def _check_config(config: EmbryoConfig | None) -> EmbryoConfig:
    cfg = config if config is not None else EmbryoConfig()
    h, w = (int(v) for v in cfg.image_size)
    if h < 32 or w < 32:
        raise BlastosegError(f"image_size must be at least 32x32 pixels; got {cfg.image_size}")
    return cfg


def _scene_meta(scene: Scene, seed: int) -> dict:
    meta = {
        "seed": int(seed),
        "stage": "cleavage",
        "well": scene.well,
        "pixel_size_um": round(float(scene.px_um), 4),
        "image_size": list(scene.shape),
        "embryo_center_xy": [round(float(v), 2) for v in scene.center],
        "zona_inner_radius_px": round(float(scene.r_zin), 2),
        "zona_outer_radius_px": round(float(scene.r_zout), 2),
        "zygote_radius_px": round(float(scene.r0), 2),
        "shear_angle_deg": round(float(np.rad2deg(scene.shear)), 2),
        "mode": scene.mode,
        "appearance": scene.cfg.appearance,
        "generator": "blastoseg.synth",
    }
    lay = scene.layout
    if lay is not None:  # the micro-well's inner face, or the dish edge (a circle)
        meta["container"] = lay.kind
        meta["container_circle"] = [round(float(lay.container_xy[0]), 2),
                                    round(float(lay.container_xy[1]), 2),
                                    round(float(lay.container_r), 2)]
    return meta


def render_embryo(n_cells: int, seed: int, config: EmbryoConfig | None = None) -> SynthFrame:
    """Render one synthetic embryo frame with ``n_cells`` blastomeres.

    Parameters
    ----------
    n_cells
        Number of blastomeres, 1 to 16.
    seed
        Seed of every random choice; the same seed and config give the same frame.
    config
        Realism knobs; defaults to :class:`EmbryoConfig`.

    Returns
    -------
    SynthFrame
        The uint8 image, ground-truth instances and metadata.
    """
    if not isinstance(n_cells, (int, np.integer)) or not 1 <= n_cells <= MAX_CELLS:
        raise BlastosegError(f"n_cells must be an integer from 1 to {MAX_CELLS}; got {n_cells!r}")
    cfg = _check_config(config)
    scene = Scene(int(seed), cfg, max_cells=int(n_cells) + 1)
    times = scene.cleavage_hours  # n_cells divisions are planned; the last one not performed
    u = float(np.random.default_rng([int(seed), 7]).uniform(0.05, 0.95))
    lo = times[n_cells - 2] if n_cells > 1 else min(17.0, times[0] - 1.0)
    hours = lo + u * (times[n_cells - 1] - lo)  # strictly before the next division
    scene.advance_to(hours)
    image, inst, fmeta = scene.render(hours)
    meta = {**_scene_meta(scene, seed), **fmeta}
    inst = replace(inst, meta=dict(meta))
    return SynthFrame(image=image, instances=inst, meta=meta)


def render_blastocyst(seed: int, config: EmbryoConfig | None = None,
                      sub_stage: str | None = None) -> SynthFrame:
    """Render one synthetic day 5-6 blastocyst frame.

    Parameters
    ----------
    seed
        Seed of every random choice; the same seed and config give the same frame, and the
        frame (crop or micro-well), optics and appearance are those that
        :func:`render_embryo` draws from the same seed.
    config
        Realism knobs; ``mode`` and ``appearance`` apply as for cleavage embryos.
    sub_stage
        "early", "full", "expanded" or "hatching"; None draws one with
        ``config.blastocyst_stage_weights``.

    Returns
    -------
    SynthFrame
        The image; NO blastomere instances (a blastocyst's cells are not counted:
        ``meta["n_cells"]`` is None and ``meta["count_applicable"]`` False); ``meta`` holds
        ``embryo_circle`` (centre and the zona's outer radius), ``blastocyst_stage`` and the
        geometry; ``components`` the zona, TE, blastocoel and ICM masks.
    """
    from blastoseg.synth.blastocyst_scene import BlastocystScene

    cfg = _check_config(config)
    scene = BlastocystScene(int(seed), cfg, sub_stage)
    image, inst, fmeta = scene.render()
    meta = {**_scene_meta(scene, seed), **fmeta, "stage": "blastocyst"}
    del meta["zygote_radius_px"]  # no zygote: trophectoderm_radius_px describes the cells
    return SynthFrame(image=image, instances=replace(inst, meta=dict(meta)), meta=meta,
                      components=scene.masks)


def _timelapse_hours(scene: Scene, seed: int, n_frames: int) -> np.ndarray:
    rng = np.random.default_rng([int(seed), 11])
    times = scene.cleavage_hours
    if times:
        t0 = max(16.0, times[0] - rng.uniform(2.0, 6.0))
        t1 = times[-1] + rng.uniform(1.0, 4.0)
    else:
        t0 = 17.0
        t1 = max(t0 + 0.1, scene.next_division_h - 0.5)
    hours = np.linspace(t0, t1, n_frames) if n_frames > 1 else np.array([t0])
    if times:  # guarantee the last cleavage happens by the last frame
        hours[-1] = max(hours[-1], times[-1])
    return hours


def _check_timelapse_args(n_frames: int, max_cells: int) -> None:
    if not 1 <= max_cells <= MAX_CELLS:
        raise BlastosegError(f"max_cells must be from 1 to {MAX_CELLS}; got {max_cells}")
    if n_frames < 1 or (max_cells > 1 and n_frames < 2):
        raise BlastosegError(
            f"a time-lapse reaching {max_cells} cells needs at least 2 frames; got {n_frames}")


def iter_timelapse(n_frames: int, seed: int, config: EmbryoConfig | None = None,
                   max_cells: int = 8) -> Iterator[SynthFrame]:
    """Yield the frames of :func:`render_timelapse` one at a time, as :class:`SynthFrame`.

    Frame ``k``'s ``meta`` holds ``frame_index``, ``hours``, ``n_divisions`` (cleavages since
    the previous frame) and ``lineage`` so far. Stopping early (e.g. a cancelled GUI worker)
    costs nothing further; the frames are identical to :func:`render_timelapse`'s.
    """
    _check_timelapse_args(n_frames, max_cells)
    cfg = _check_config(config)
    scene = Scene(int(seed), cfg, max_cells=max_cells)
    hours = _timelapse_hours(scene, seed, n_frames)
    base = _scene_meta(scene, seed)
    for k, hk in enumerate(hours):
        n_div = scene.advance_to(float(hk))
        if k > 0:
            scene.jitter()
        flick = float(np.exp(scene.rng_frame.normal(0, cfg.flicker)))
        img, inst, fmeta = scene.render(float(hk), flicker=flick)
        meta = {**base, **fmeta, "frame_index": k, "n_divisions": int(n_div),
                "lineage": {int(a): int(b) for a, b in scene.lineage.items()},
                "cleavage_hours": [round(float(t), 2) for t in scene.cleavage_hours]}
        yield SynthFrame(image=img, instances=replace(inst, meta={**inst.meta, "frame_index": k}),
                         meta=meta)


def render_timelapse(n_frames: int, seed: int, config: EmbryoConfig | None = None,
                     max_cells: int = 8) -> SynthTimelapse:
    """Render a time-lapse of one embryo cleaving 1 -> 2 -> 3 -> ... -> ``max_cells``.

    Frames are evenly spaced in time from shortly before the first cleavage to shortly
    after the last one; the embryo drifts and rotates slightly, cells move a little and the
    illumination flickers. Daughters get new track ids; unchanged cells keep theirs.

    Parameters
    ----------
    n_frames
        Number of frames (at least 2 when ``max_cells > 1``).
    seed
        Seed of every random choice.
    config
        Realism knobs; defaults to :class:`EmbryoConfig`.
    max_cells
        Number of cells in the last frame, 1 to 16.
    """
    images: list[np.ndarray] = []
    frames: list[FrameInstances] = []
    cleavage_frames: list[int] = []
    last: SynthFrame | None = None
    for k, frame in enumerate(iter_timelapse(n_frames, seed, config, max_cells)):
        images.append(frame.image)
        frames.append(frame.instances)
        cleavage_frames += [k] * frame.meta["n_divisions"]
        last = frame
    assert last is not None  # n_frames >= 1 was checked
    base = {k: v for k, v in last.meta.items()
            if k not in ("frame_index", "n_divisions", "lineage", "hours", "n_cells",
                         "embryo_circle")}
    meta = {
        **base,
        "n_frames": int(n_frames),
        "max_cells": int(max_cells),
        "hours": [round(float(f.meta["hours"]), 2) for f in frames],
        "cleavage_frames": list(cleavage_frames),
        "counts": [f.count for f in frames],
        "embryo_circles": [list(f.meta["embryo_circle"]) for f in frames],
    }
    return SynthTimelapse(images=np.stack(images), frames=frames, cleavage_frames=cleavage_frames,
                          lineage=dict(last.meta["lineage"]), meta=meta)
