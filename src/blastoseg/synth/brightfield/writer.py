"""Write synthetic brightfield scenes as a blastoseg dataset folder.

Per scene ``k`` (1-based): ``images/scene_{k:06d}_bf0.png`` and ``_bf1.png`` (uint16, the
focal planes below and above focus, one image entry each with ``focal_plane`` 0 / 1 and the
same amodal instances, category 1 = "cell"), ``_phase.tif`` (float32 radians) and
``_nuclei.png`` (uint16 nucleus labels, label ``i + 1`` = nucleus of the scene's ``i``-th
cell). Image entries carry ``scene_id``, ``phase_file``, ``nuclei_file``, ``source``
("render" | "copy_paste" | "copy_paste+pix2pix"), ``generator``, ``seed``, ``n_cells``,
``defocus_um`` (physical model only) and ``overlap_ratios``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from blastoseg.errors import BlastosegError
from blastoseg.synth.brightfield.config import BrightfieldConfig
from blastoseg.synth.brightfield.copy_paste import render_copy_paste
from blastoseg.synth.brightfield.scene import (
    GENERATOR,
    BrightfieldScene,
    Translator,
    render_brightfield,
)

CATEGORIES = {1: "cell"}


def planes_to_uint16(planes: np.ndarray) -> np.ndarray:
    """Grey-level planes (float) -> uint16, rounded and clipped to [0, 65535]."""
    return np.clip(np.rint(planes), 0, 65535).astype(np.uint16)


def _encode(image: np.ndarray, suffix: str) -> bytes:
    if suffix == ".png":
        import imageio.v3 as iio

        return iio.imwrite("<bytes>", image, extension=".png")
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, image, compression="zlib", photometric="minisblack")
    return buf.getvalue()


def _write_side_file(path: Path, data: bytes) -> None:
    """Write atomically; keep a backup of a different existing file, skip an identical one."""
    from blastoseg.io.atomic import atomic_write_bytes, backup_existing

    if path.exists():
        if path.read_bytes() == data:
            return
        backup_existing(path)
    atomic_write_bytes(path, data)


def scene_plan(n: int, seed: int, copy_paste: float) -> list[tuple[int, bool]]:
    """(scene seed, is copy-paste) for each of ``n`` scenes; a fixed function of the seed."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xB5F]))
    seeds = rng.integers(0, 2**31 - 1, size=n)
    n_cp = int(round(float(copy_paste) * n))
    pasted = np.zeros(n, dtype=bool)
    pasted[rng.permutation(n)[:n_cp]] = True
    return [(int(s), bool(p)) for s, p in zip(seeds, pasted, strict=True)]


def _samples(root: Path, plan: list[tuple[int, bool]], config: BrightfieldConfig,
             translator: Translator | None,
             progress: Callable[[int, int], None] | None) -> Iterator:
    from blastoseg.io.dataset import Sample

    n = len(plan)
    for k, (scene_seed, pasted) in enumerate(plan, start=1):
        scene: BrightfieldScene = (
            render_copy_paste(scene_seed, config, translator=translator) if pasted
            else render_brightfield(scene_seed, config))
        stem = f"images/scene_{k:06d}"
        phase_file, nuclei_file = f"{stem}_phase.tif", f"{stem}_nuclei.png"
        _write_side_file(root / phase_file, _encode(scene.phase.astype(np.float32), ".tif"))
        _write_side_file(root / nuclei_file, _encode(scene.nuclei.astype(np.uint16), ".png"))
        extra = {
            "scene_id": k, "phase_file": phase_file, "nuclei_file": nuclei_file,
            "source": scene.meta["source"], "generator": GENERATOR,
            "seed": scene_seed, "n_cells": scene.instances.count,
            "overlap_ratios": scene.meta.get("overlap_ratios", []),
        }
        if "defocus_um" in scene.meta:
            extra["defocus_um"] = scene.meta["defocus_um"]
        planes = planes_to_uint16(scene.planes)
        for p in range(2):
            yield Sample(image=planes[p], instances=scene.instances,
                         file_name=f"{stem}_bf{p}.png", focal_plane=p,
                         pixel_size_um=float(config.pixel_size_um), extra=dict(extra))
        if progress is not None:
            progress(k, n)


def _translator_name(translator: Translator | None) -> str | None:
    if translator is None:
        return None
    name = getattr(translator, "name", None) or getattr(getattr(translator, "entry", None),
                                                         "name", None)
    return str(name or type(translator).__name__)


def write_synthetic_brightfield(out: str | os.PathLike, n: int, seed: int = 0,
                                config: BrightfieldConfig | None = None,
                                copy_paste: float = 0.0, translator: Translator | None = None,
                                overwrite: bool = False,
                                progress: Callable[[int, int], None] | None = None) -> Path:
    """Generate ``n`` synthetic brightfield scenes and write them in the dataset format.

    Parameters
    ----------
    out
        Dataset folder to create.
    n
        Number of scenes (each gives two image entries, one per focal plane).
    seed
        Master seed; the dataset is a fixed function of it (and of the config).
    config
        Realism knobs, default :class:`BrightfieldConfig` (512 x 512 frames).
    copy_paste
        Fraction of the scenes (0..1) made by copy-paste (thesis section 4.4.1) instead of
        being rendered directly.
    translator
        ``translator(phase, rng) -> float32 (2, H, W)`` grey-level planes (the pix2pix
        phase-to-brightfield model) used for the copy-paste scenes; None uses the physical
        model for them too.
    overwrite
        Replace an existing dataset (the previous files are kept as backups).
    progress
        Optional ``callable(done, total)`` called after every scene.

    Returns
    -------
    Path
        The path of the written annotations.json.
    """
    from blastoseg.io.dataset import write_dataset

    if int(n) < 1:
        raise BlastosegError(f"n must be at least 1 scene; got {n}")
    if not 0.0 <= float(copy_paste) <= 1.0:
        raise BlastosegError(f"copy_paste is the fraction of copy-paste scenes, between 0 and "
                             f"1; got {copy_paste}")
    cfg = config if config is not None else BrightfieldConfig()
    plan = scene_plan(int(n), seed, copy_paste)
    info = {"description": "blastoseg synthetic brightfield cells (phase + two defocused "
                           "focal planes)",
            "generator": GENERATOR, "seed": int(seed), "n_scenes": int(n),
            "copy_paste": float(copy_paste),
            "translator": _translator_name(translator),
            "config": cfg.to_dict()}
    root = Path(out)
    return write_dataset(root, _samples(root, plan, cfg, translator, progress),
                         categories=CATEGORIES, overwrite=overwrite, info=info)
