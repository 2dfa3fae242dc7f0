"""Write synthetic embryos as a blastoseg dataset folder (COCO instances + images)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from blastoseg.errors import BlastosegError
from blastoseg.synth.config import EmbryoConfig
from blastoseg.synth.embryo import render_blastocyst, render_embryo, render_timelapse


def _frame_samples(n: int, seed: int, config: EmbryoConfig | None,
                   progress: Callable[[int, int], None] | None) -> Iterator:
    from blastoseg.io.dataset import Sample

    rng = np.random.default_rng(seed)
    # spread counts evenly over 1..8 (shuffled) so every stage is represented
    counts = np.resize(np.arange(1, 9), n)
    rng.shuffle(counts)
    seeds = rng.integers(0, 2**31 - 1, size=n)
    # the stage draws come from their own stream: cleavage datasets are unchanged by them
    cfg = config if config is not None else EmbryoConfig()
    draws = np.random.default_rng([int(seed), 0xB1A5]).random(n)
    blasto = (draws < cfg.blastocyst_fraction if cfg.stage == "mixed"
              else np.full(n, cfg.stage == "blastocyst"))
    for i in range(n):
        fr = (render_blastocyst(int(seeds[i]), config) if blasto[i]
              else render_embryo(int(counts[i]), int(seeds[i]), config))
        yield Sample(
            image=fr.image, instances=fr.instances,
            file_name=f"images/synth_{i:06d}.png",
            pixel_size_um=fr.meta["pixel_size_um"],
            extra={k: v for k, v in fr.meta.items() if k != "pixel_size_um"},
        )
        if progress is not None:
            progress(i + 1, n)


def _video_samples(n: int, seed: int, t: int, config: EmbryoConfig | None,
                   progress: Callable[[int, int], None] | None) -> Iterator:
    from blastoseg.io.dataset import Sample

    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, 2**31 - 1, size=n)
    for v in range(n):
        tl = render_timelapse(t, int(seeds[v]), config, max_cells=8)
        hours = tl.meta["hours"]
        for k in range(t):
            yield Sample(
                image=tl.images[k], instances=tl.frames[k],
                file_name=f"images/video_{v + 1:04d}/frame_{k:04d}.png",
                video_id=v + 1, frame_index=k,
                pixel_size_um=tl.meta["pixel_size_um"],
                extra={
                    "n_cells": tl.frames[k].count, "hours": hours[k], "seed": int(seeds[v]),
                    "well": tl.meta["well"], "cleavage_frames": tl.cleavage_frames,
                    "embryo_circle": tl.meta["embryo_circles"][k], "mode": tl.meta["mode"],
                    "appearance": tl.meta["appearance"],
                    **({"container": tl.meta["container"],
                        "container_circle": tl.meta["container_circle"]}
                       if "container" in tl.meta else {}),
                    "lineage": {str(a): b for a, b in tl.lineage.items()},
                    "generator": "blastoseg.synth",
                },
            )
            if progress is not None:
                progress(v * t + k + 1, n * t)


def write_synthetic_embryos(out_dir: str | os.PathLike, n: int, seed: int, *,
                            timelapse: int | None = None, config: EmbryoConfig | None = None,
                            overwrite: bool = False,
                            progress: Callable[[int, int], None] | None = None) -> Path:
    """Generate synthetic embryos and write them in the blastoseg dataset format.

    Parameters
    ----------
    out_dir
        Dataset folder to create.
    n
        Number of independent frames (cell counts spread over 1..8; blastocysts, which have
        no blastomere instances, with ``config.stage`` "blastocyst" or "mixed"), or, with
        ``timelapse``, number of videos (cleavage stage only).
    seed
        Master seed; the whole dataset is reproducible from it.
    timelapse
        If given, write ``n`` time-lapse videos of this many frames each (1 -> 8 cells), with
        ``video_id``, ``frame_index``, ``hours`` and ``cleavage_frames`` on every image entry.
    config
        Realism knobs, default :class:`EmbryoConfig`.
    overwrite
        Replace an existing dataset (the previous annotations are kept as a backup).
    progress
        Optional ``callable(done, total)`` called after every frame.

    Returns
    -------
    Path
        The path of the written annotations.json.
    """
    from blastoseg.io.dataset import write_dataset

    if n < 1:
        raise BlastosegError(f"n must be at least 1; got {n}")
    if timelapse is not None and timelapse < 2:
        raise BlastosegError(f"timelapse needs at least 2 frames per video; got {timelapse}")
    cfg = config if config is not None else EmbryoConfig()
    if timelapse is not None and cfg.stage != "cleavage":
        raise BlastosegError("time-lapses show cleaving embryos (1 -> 8 cells); give stage "
                             f"'cleavage' with --timelapse, or drop --timelapse (got {cfg.stage!r})")
    samples = (_frame_samples(n, seed, cfg, progress) if timelapse is None
               else _video_samples(n, seed, int(timelapse), cfg, progress))
    what = {"cleavage": "day 1-3 human embryos", "blastocyst": "day 5-6 human blastocysts",
            "mixed": "day 1-3 human embryos and day 5-6 blastocysts"}[cfg.stage]
    info = {"description": f"blastoseg synthetic {what} (relief contrast)",
            "generator": "blastoseg.synth", "seed": int(seed), "n": int(n),
            "timelapse": timelapse, "config": cfg.to_dict()}
    return write_dataset(out_dir, samples, categories={1: "blastomere"}, overwrite=overwrite,
                         info=info)
