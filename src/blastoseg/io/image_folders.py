"""Is a folder of pictures one time-lapse, or separate images?

A folder of single-embryo crops (one picture per embryo) opened as one time-lapse, or failed
with "all frames must have the same size" (issue 18 item 10). A folder is taken for separate
images when nothing in it says time-lapse (no focal-plane folders, no ``RUN<n>`` /
``frame<n>`` / ``t<n>`` / ``F<n>`` tokens in the names) and either its pictures differ in size
or consecutive pictures are unlike each other: frames of one time-lapse a few minutes apart
correlate at 0.85 or more at 64 x 64 pixels, different embryos below 0.4
(:data:`TIMELAPSE_CORRELATION` sits between). Such a folder is read as one
:class:`~blastoseg.io.images.ImageStack` per picture, to be opened or segmented one by one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from blastoseg.errors import ImageReadError
from blastoseg.io.frame_names import (
    focal_folder_value,
    has_frame_token,
    natural_key,
    signed_plane_numbers,
)
from blastoseg.io.images import SUPPORTED_EXTENSIONS, ImageStack, read_image

__all__ = ["TIMELAPSE_CORRELATION", "FolderLayout", "folder_layout", "read_separate_images"]

#: median correlation of consecutive pictures (64 x 64, z-scored) above which a folder
#: without frame tokens is a time-lapse
TIMELAPSE_CORRELATION = 0.6
#: consecutive pairs compared at most (the first ones, in name order)
_PAIRS = 16
_SIDE = 64


@dataclass
class FolderLayout:
    """What a folder of pictures holds: ``separate`` images or one time-lapse, why, and
    its picture files in name order."""

    separate: bool
    reason: str
    files: list[Path] = field(default_factory=list)


def _pictures(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
             and p.suffix.lower() in SUPPORTED_EXTENSIONS]
    return sorted(files, key=lambda p: natural_key(p.name))


def _thumbnail(image: np.ndarray) -> np.ndarray:
    from skimage.transform import resize

    a = np.asarray(image, dtype=np.float32)
    a = a.mean(axis=-1) if a.ndim == 3 else a
    return resize(a, (_SIDE, _SIDE), anti_aliasing=True)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two thumbnails; two flat ones count as alike (1), one flat
    and one not as unlike (0)."""
    sa, sb = float(a.std()), float(b.std())
    flat = 1e-3 * max(abs(float(a.mean())), abs(float(b.mean())), 1.0)
    if sa < flat or sb < flat:
        return 1.0 if sa < flat and sb < flat else 0.0
    return float(np.mean((a - a.mean()) * (b - b.mean())) / (sa * sb))


def folder_layout(folder: str | os.PathLike) -> FolderLayout:
    """Decide whether ``folder`` holds separate images or the frames of one time-lapse
    (a folder that is not readable this way is left to the frame-folder reader: "time-lapse")."""
    folder = Path(folder)
    if not folder.is_dir():
        return FolderLayout(False, "not a folder")
    if any(p.is_dir() and focal_folder_value(p.name) is not None for p in folder.iterdir()):
        return FolderLayout(False, "focal-plane folders")
    files = _pictures(folder)
    if len(files) < 2:
        return FolderLayout(False, "fewer than two pictures", files)
    if any(has_frame_token(p.stem) for p in files):
        return FolderLayout(False, "the names carry frame or focal-plane numbers", files)
    if signed_plane_numbers([p.stem for p in files]) is not None:
        return FolderLayout(False, "the names number the focal planes of one frame (signed "
                                   "offsets such as -15)", files)
    try:
        first = [read_image(p) for p in files[: _PAIRS + 1]]
    except ImageReadError:
        return FolderLayout(False, "unreadable pictures (the frame reader reports them)", files)
    sizes = {a.shape[:2] for a in first}
    if len(sizes) > 1:
        return FolderLayout(True, f"its pictures have {len(sizes)} different sizes", files)
    thumbs = [_thumbnail(a) for a in first]
    corr = [_correlation(a, b) for a, b in zip(thumbs, thumbs[1:], strict=False)]
    median = float(np.median(corr))
    if median < TIMELAPSE_CORRELATION:
        return FolderLayout(True, f"consecutive pictures are unlike each other (correlation "
                                  f"{median:.2f}): not frames of one time-lapse", files)
    return FolderLayout(False, f"consecutive pictures alike (correlation {median:.2f})", files)


def read_separate_images(layout: FolderLayout) -> list[ImageStack]:
    """One ImageStack per picture of a folder of separate images (``folder_layout``)."""
    out = []
    for p in layout.files:
        arr = read_image(p)
        out.append(ImageStack(data=arr, axes="YXC" if arr.ndim == 3 else "YX", files=[p]))
    return out
