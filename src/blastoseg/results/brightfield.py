"""The files of a brightfield (whole-cell) segmentation: written the same by ``blastoseg
segment brightfield`` and by the "Segment brightfield cells" widget's "Export..."
(:func:`blastoseg.napari.brightfield_job.export_brightfield`).

:func:`write_brightfield_results` writes, under ``out_dir``:

- ``<dataset_dir>/`` (``dataset/`` for the CLI, the folder itself for a napari export):
  ``annotations.json`` + ``images/``, each cell an amodal instance of category 1 =
  :data:`CATEGORY` (``cell``);
- ``counts.csv`` (one row per frame: ``frame, cell_count, mean_diameter_px,
  mean_diameter_um, diameter_cv, overlap_fraction``) and ``cells.csv`` (one row per cell and
  frame: ``frame, instance, track_id, area_px, area_um2, diameter_px, diameter_um,
  eccentricity, overlap_fraction, centroid_y, centroid_x, overlap_px, neighbours, score``),
  the tables of the amodal writer (:mod:`blastoseg.results.instances`);
- ``nuclei_probability.tif`` and ``overlap_probability.tif``: the SE-U-Net heads' maps,
  float32 ImageJ TIFFs of shape (H, W) for one frame or (T, H, W), when the model has them.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from blastoseg.instances import FrameInstances
from blastoseg.results.files import probability_file, refuse_existing, write_tiff
from blastoseg.results.instances import (
    WrittenResults,
    instance_result_paths,
    is_video,
    write_instance_results,
)

__all__ = ["CATEGORY", "MAP_KEYS", "write_brightfield_results"]

#: the dataset category of every brightfield instance
CATEGORY = "cell"
#: the probability maps a brightfield prediction carries in ``FrameInstances.meta``
MAP_KEYS = ("nuclei", "overlap")


class _MapSpool:
    """Each frame's nuclei / overlap map of ``meta`` appended to a temporary raw file in the
    output folder as the results pass (never all of them in memory: a long stack's maps are
    8 bytes per pixel per frame), then written as a float32 ImageJ TIFF read back frame by
    frame. A map is written only when every frame has it."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.spools: dict[str, tuple[Path, object]] = {}
        self.counts = dict.fromkeys(MAP_KEYS, 0)
        self.frames = 0
        self.shape: tuple[int, int] | None = None

    def pass_through(self, results: Iterable[FrameInstances]) -> Iterator[FrameInstances]:
        for inst in results:
            self.frames += 1
            for key in MAP_KEYS:
                m = (inst.meta or {}).get(key)
                if m is None:
                    continue
                m = np.ascontiguousarray(m, np.float32)
                if self.shape is None:
                    self.shape = m.shape
                if m.shape != self.shape:
                    continue  # frames of another size: no single stack (not written)
                if key not in self.spools:
                    self.out.mkdir(parents=True, exist_ok=True)
                    fd, tmp = tempfile.mkstemp(prefix=f".{probability_file(key)}.",
                                               suffix=".spool.tmp", dir=self.out)
                    self.spools[key] = (Path(tmp), os.fdopen(fd, "wb"))
                self.spools[key][1].write(m.tobytes())
                self.counts[key] += 1
            yield inst

    def write(self, written: WrittenResults) -> None:
        for key, (path, fh) in self.spools.items():
            fh.close()
            if self.counts[key] == self.frames:
                written[f"{key}_probability"] = self._tiff(key, path)

    def _tiff(self, key: str, spool: Path) -> Path:
        import tifffile

        h, w = self.shape  # type: ignore[misc]
        n = self.frames

        def frames():
            with open(spool, "rb") as f:
                for _ in range(n):
                    yield np.frombuffer(f.read(4 * h * w), np.float32).reshape(h, w)

        final = self.out / probability_file(key)
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=self.out)
        os.close(fd)
        try:
            shape = (n, h, w) if n > 1 else (h, w)
            tifffile.imwrite(tmp, data=frames(), shape=shape, dtype=np.float32, imagej=True,
                             metadata={"axes": "TYX" if n > 1 else "YX"})
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return final

    def close(self) -> None:
        for path, fh in self.spools.values():
            fh.close()
            path.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def brightfield_result_paths(out_dir: str | os.PathLike, dataset_dir: str = "dataset",
                             keys: Sequence[str] = MAP_KEYS) -> list[Path]:
    """The files whose existence means an earlier brightfield result is in ``out_dir``."""
    out = Path(out_dir)
    return [*instance_result_paths(out, dataset_dir), *(out / probability_file(k) for k in keys)]


def write_brightfield_results(
    results: Sequence[FrameInstances] | Iterable[FrameInstances], out_dir: str | os.PathLike,
    *, images: Iterable[np.ndarray], maps: Mapping[str, np.ndarray] | None = None,
    pixel_size_um: float | None = None, first_frame: int = 0, video: bool | None = None,
    track_ids: bool = True, dataset_dir: str = "dataset", info: dict | None = None,
    overwrite: bool = False,
) -> WrittenResults:
    """Write a brightfield result (see the module docstring for the files and columns).

    ``maps``: key -> (H, W) or (T, H, W) probability map to write as
    ``<key>_probability.tif``; None takes the nuclei / overlap maps of the results' ``meta``
    (each written when every frame has it), spooled to disk frame by frame as the results
    pass, so ``results`` may be a stream of any length. The other parameters are those of
    :func:`blastoseg.results.amodal.write_amodal_results`.

    Returns
    -------
    WrittenResults
        name -> path (``dataset``, ``counts``, ``cells``, ``<key>_probability``), with the
        measurement rows as ``.frames`` and ``.cells``.
    """
    out = Path(out_dir)
    keys = MAP_KEYS if maps is None else tuple(maps)
    refuse_existing(brightfield_result_paths(out, dataset_dir, keys), overwrite)
    video = is_video(results, video)
    spool = _MapSpool(out)
    try:
        written = write_instance_results(
            results if maps is not None else spool.pass_through(results), out,
            images=images, video=video, pixel_size_um=pixel_size_um, first_frame=first_frame,
            track_ids=track_ids, dataset_dir=dataset_dir, categories={1: CATEGORY},
            info=info, overwrite=overwrite)
        spool.write(written)
    finally:
        spool.close()
    for key, array in (maps or {}).items():
        written[f"{key}_probability"] = write_tiff(out / probability_file(key),
                                                   np.asarray(array, np.float32))
    return written
