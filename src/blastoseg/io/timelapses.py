"""The time-lapses of an input path, with their frame times: a TIFF stack, a folder of frames
or a dataset folder (one time-lapse per ``video_id``).

Frame times come from the input (see :mod:`blastoseg.io.frame_times`); where there are none
the frames get their indices and :attr:`Timelapse.time_note` says why.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from blastoseg.errors import InvalidImageError
from blastoseg.io.frame_times import hours_from_entries, hours_from_names, hours_from_tiff

__all__ = ["Timelapse", "read_timelapses"]


class _DatasetFrames(Sequence):
    """The frames of one video of a dataset, read when asked for (a long time-lapse need not
    sit in memory)."""

    def __init__(self, dataset, indices: list[int]) -> None:
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k):  # type: ignore[override]
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        return self.dataset.load_image(self.indices[k])


@dataclass
class Timelapse:
    """One embryo's frames and their times.

    Attributes
    ----------
    name
        What to call it (the file, folder or ``video_<id>``).
    frames
        A (T, Y, X[, C]) array or a sequence of frames read on demand.
    hours
        Time of each frame in hours, or None (then frame indices are used).
    time_source
        Where ``hours`` came from, or "frame index".
    time_note
        Why there are no hours ("" when there are).
    true_counts
        The true cell count of each frame, for a dataset (its ``n_cells`` or the number of
        annotated instances); None otherwise.
    """

    name: str
    frames: Sequence
    hours: list[float] | None
    time_source: str
    time_note: str = ""
    true_counts: list[int] | None = field(default=None, repr=False)
    #: what to call each frame in an error (its file), None: "frame <i>"
    frame_names: list[str] | None = field(default=None, repr=False)


def _from_stack(path: Path) -> Timelapse:
    from blastoseg.io.images import read_images

    stack = read_images(path)
    if "Z" in stack.axes:
        raise InvalidImageError(f"{path}: has focal planes (axes {stack.axes}); a timeline takes "
                                "one plane per frame: export the best-focus plane")
    if "T" not in stack.axes:
        raise InvalidImageError(f"{path}: is a single frame; a timeline needs a time-lapse of at "
                                "least 2 frames")
    if path.is_dir():
        hours, why = hours_from_names([str(f) for f in stack.files])
    else:
        hours, why = hours_from_tiff(path, stack.data.shape[0])
    source = why if hours is not None else "frame index"
    names = [f.name for f in stack.files] if path.is_dir() else None
    return Timelapse(path.name, stack.data, hours, source, "" if hours is not None else why,
                     frame_names=names)


def _from_dataset(path: Path) -> list[Timelapse]:
    from blastoseg.io.dataset import read_dataset

    ds = read_dataset(path)
    videos = ds.videos() or {0: list(range(len(ds)))}  # no video ids: the images in file order
    out = []
    for vid, indices in videos.items():
        entries = [ds.images[i] for i in indices]
        hours, why = hours_from_entries(entries)
        truth = [int(e["n_cells"]) if isinstance(e.get("n_cells"), int)
                 else len(ds.annotations(i)) for e, i in zip(entries, indices, strict=True)]
        out.append(Timelapse(f"video_{vid:04d}" if vid else path.name,
                             _DatasetFrames(ds, indices), hours,
                             "dataset hours" if hours is not None else "frame index",
                             "" if hours is not None else why, truth))
    return out


def read_timelapses(path: str | os.PathLike) -> list[Timelapse]:
    """The time-lapses of a TIFF stack, a frame folder or a dataset folder (one per
    ``video_id``; a dataset without video ids is one time-lapse in file order)."""
    path = Path(path)
    if path.is_dir() and (path / "annotations.json").is_file():
        return _from_dataset(path)
    return [_from_stack(path)]

