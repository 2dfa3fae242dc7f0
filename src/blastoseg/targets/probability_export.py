"""Export overlap-aware probability maps P alongside a dataset, so training can read exactly
the maps the user previewed (config ``"probability": {"variant": "from_dataset"}``).

For every image of a dataset folder, P is computed from the image's instances (and its
nucleus mask, where the dataset has one: :func:`blastoseg.io.nuclei.load_nuclei`) by
:func:`blastoseg.targets.probability.probability_map`, the same function the preview widget
and training use, and written as ``probability/<image stem>_P.tif`` (float32, (H, W)).
``annotations.json`` then gets, per image entry, the extra key ``probability_file`` (the path
relative to the dataset folder) and ``info["probability"] = {"variant": ..., **params}``.

Safety: the maps are first written to a staging folder inside the dataset and moved into
``probability/`` only when all of them are computed, so a cancelled or failed export changes
nothing; ``annotations.json`` is replaced atomically after a timestamped backup of the old one
(:func:`blastoseg.io.atomic.backup_existing`). Two images with the same stem (in different
sub-folders) get ``<stem>_<image id>_P.tif``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Generator, Mapping
from pathlib import Path, PurePosixPath

import numpy as np

from blastoseg.errors import BlastosegError
from blastoseg.io.atomic import atomic_write_text, backup_existing
from blastoseg.io.dataset import read_dataset
from blastoseg.io.nuclei import load_nuclei
from blastoseg.progress import run_with_progress
from blastoseg.results.files import tiff_bytes

__all__ = ["PROBABILITY_DIR", "PROBABILITY_KEY", "export_probability_maps",
           "iter_export_probability_maps", "probability_file_names"]

#: folder (inside the dataset) that holds the exported maps
PROBABILITY_DIR = "probability"
#: image-entry key naming an image's exported P (relative to the dataset folder)
PROBABILITY_KEY = "probability_file"
#: a variant name that means "read the exported maps": it cannot be exported itself
_FROM_DATASET = "from_dataset"


def probability_file_names(images: list[dict]) -> list[str]:
    """``probability/<stem>_P.tif`` for each image entry (``<stem>_<id>_P.tif`` where two
    entries share a stem), as POSIX paths relative to the dataset folder."""
    stems = [PurePosixPath(str(e["file_name"]).replace("\\", "/")).stem for e in images]
    counts: dict[str, int] = {}
    for s in stems:
        counts[s] = counts.get(s, 0) + 1
    return [f"{PROBABILITY_DIR}/{s}_P.tif" if counts[s] == 1
            else f"{PROBABILITY_DIR}/{s}_{e['id']}_P.tif" for s, e in zip(stems, images,
                                                                          strict=True)]


def _check(variant: str, params: Mapping | None) -> dict:
    from blastoseg.targets.probability import PROBABILITY_VARIANTS

    if variant == _FROM_DATASET or variant not in PROBABILITY_VARIANTS:
        raise BlastosegError(f"unknown probability-map variant {variant!r}; choose one of "
                             f"{', '.join(PROBABILITY_VARIANTS)}")
    params = dict(params or {})
    if "variant" in params:
        raise BlastosegError("pass the variant as its own argument, not inside params")
    try:
        json.dumps(params, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise BlastosegError(f"probability-map parameters must be JSON numbers/strings: "
                             f"{exc}") from None
    return params


def iter_export_probability_maps(dataset_dir: str | os.PathLike, variant: str,
                                 params: Mapping | None = None
                                 ) -> Generator[tuple[int, int], None, Path]:
    """:func:`export_probability_maps` as a generator yielding ``(done, total)`` images, so a
    GUI worker can show progress and cancel (closing the generator discards the staged maps
    and leaves the dataset unchanged)."""
    from blastoseg.targets.probability import probability_map

    params = _check(variant, params)
    ds = read_dataset(dataset_dir)
    n = len(ds)
    if n == 0:
        raise BlastosegError(f"{ds.root}: the dataset has no images to compute P for")
    names = probability_file_names(ds.images)
    stage = Path(tempfile.mkdtemp(prefix=".probability-export-", dir=ds.root))
    try:
        yield 0, n
        for i in range(n):
            p = probability_map(ds.instances(i), variant, nuclei=load_nuclei(ds, i), **params)
            p = np.asarray(p, dtype=np.float32)
            entry = ds.images[i]
            if p.shape != (entry["height"], entry["width"]):
                raise BlastosegError(f"P of {entry['file_name']} is {p.shape}, the image "
                                     f"{(entry['height'], entry['width'])}")
            (stage / f"{i}.tif").write_bytes(tiff_bytes(p))
            yield i + 1, n
        # everything computed: move the maps in, then point annotations.json at them
        for i, name in enumerate(names):
            dest = ds.root / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(stage / f"{i}.tif", dest)
        doc = json.loads(ds.path.read_text(encoding="utf-8"))
        for entry, name in zip(doc["images"], names, strict=True):
            entry[PROBABILITY_KEY] = name
        info = doc.get("info")
        doc["info"] = {**(info if isinstance(info, dict) else {}),
                       "probability": {"variant": variant, **params}}
        backup_existing(ds.path)
        atomic_write_text(ds.path, json.dumps(doc, indent=1))
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return ds.root / PROBABILITY_DIR


def export_probability_maps(dataset_dir: str | os.PathLike, variant: str,
                            params: Mapping | None = None,
                            progress: Callable[[int, int], None] | None = None) -> Path:
    """Compute P for every image of a dataset folder and store it with the dataset.

    Parameters
    ----------
    dataset_dir
        A dataset folder (``annotations.json`` + images), or its ``annotations.json``.
    variant
        One of :data:`blastoseg.targets.probability.PROBABILITY_VARIANTS`.
    params
        The variant's parameters (keyword arguments of ``probability_map``).
    progress
        Called with ``(done, total)`` images.

    Returns
    -------
    Path
        The folder holding the maps (``<dataset>/probability``).

    Raises
    ------
    BlastosegError
        Unknown variant or bad parameters, a dataset that cannot be read (DatasetFormatError),
        an image whose P cannot be computed. Nothing in the dataset is changed then.
    """
    return run_with_progress(iter_export_probability_maps(dataset_dir, variant, params),
                             progress)

