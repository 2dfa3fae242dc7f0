"""Write synthetic oocytes as a blastoseg dataset folder (one annotation per region)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from blastoseg.errors import BlastosegError
from blastoseg.io.oocyte_classes import OOCYTE_CATEGORIES
from blastoseg.synth.oocyte.config import OocyteConfig
from blastoseg.synth.oocyte.oocyte import render_oocyte

__all__ = ["write_synthetic_oocytes"]


def _samples(n: int, seed: int, cfg: OocyteConfig, translator,
             progress: Callable[[int, int], None] | None) -> Iterator:
    from blastoseg.io.dataset import Sample

    seeds = np.random.default_rng(seed).integers(0, 2**31 - 1, size=n)
    for i in range(n):
        oo = render_oocyte(int(seeds[i]), cfg)
        image, extra = oo.image, {k: v for k, v in oo.meta.items() if k != "pixel_size_um"}
        if translator is not None:  # the label map turned into an image by pix2pix
            image = translator.translate(oo.labels, seed=int(seeds[i]))
            extra = {**extra, "contrast": "translated", "translator": translator.name}
        yield Sample(image=image, instances=oo.instances,
                     file_name=f"images/oocyte_{i:06d}.png",
                     pixel_size_um=oo.meta["pixel_size_um"],
                     extra={**extra, "generator": "blastoseg.synth.oocyte"})
        if progress is not None:
            progress(i + 1, n)


def write_synthetic_oocytes(out_dir: str | os.PathLike, n: int, seed: int, *,
                            config: OocyteConfig | None = None, translator=None,
                            overwrite: bool = False,
                            progress: Callable[[int, int], None] | None = None) -> Path:
    """Render ``n`` oocytes (master seed ``seed``) into a dataset folder.

    ``translator`` (an :class:`~blastoseg.synth.oocyte.translate.OocyteTranslator`) makes the
    images from the label maps instead of the physical renderer (the paper's recipe).
    Returns the path of the written annotations.json.
    """
    from blastoseg.io.dataset import write_dataset

    if n < 1:
        raise BlastosegError(f"n must be at least 1; got {n}")
    cfg = config if config is not None else OocyteConfig()
    info = {"description": "blastoseg synthetic human MII oocytes (semantic classes)",
            "generator": "blastoseg.synth.oocyte", "seed": int(seed), "n": int(n),
            "semantic": "oocyte", "config": cfg.to_dict(),
            **({"translator": translator.name} if translator is not None else {})}
    return write_dataset(out_dir, _samples(n, int(seed), cfg, translator, progress),
                         categories=OOCYTE_CATEGORIES, overwrite=overwrite, info=info)
