"""Stacks read one frame at a time: a long time-lapse is never held whole in memory.

:func:`open_images` is :func:`~blastoseg.io.images.read_images` for the runs that go frame
by frame (``blastoseg segment amodal`` / ``segment brightfield``, issue 18 item 24): a frame
folder or a multi-page TIFF comes back as an :class:`~blastoseg.io.images.ImageStack` whose
``data`` is a :class:`LazyFrames`, a (T, Y, X) or (T, Z, Y, X) sequence that reads a frame
from disk when it is indexed and keeps nothing. Everything else about the stack is what
``read_images`` gives: frame order, frame numbers, focal planes, pixel size, the frames left
out with ``skip_unreadable``, and the errors. The folder is checked before any work: every
file is decoded once, one at a time (its size and dtype kept, its pixels dropped), so
unequal frame sizes and unreadable frames are reported up front, as before. A TIFF's pages
all have the series' shape, so only its header is read.

What stays eager (``read_images``): single images, TIFFs whose pages are not one 2D grey
frame each (colour, channels, one page holding a whole stack), and anything that is not a
folder or a TIFF.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Iterator
from math import prod
from pathlib import Path

import numpy as np

from blastoseg.errors import ImageReadError
from blastoseg.io.images import (
    ImageStack,
    _normalise_tiff_axes,
    _readable_frames,
    _tiff_pixel_size,
    folder_grid,
    frame_size_error,
    read_image,
    read_images,
)

__all__ = ["LazyFrames", "open_images", "scan_files"]

_TIFF = (".tif", ".tiff")


class LazyFrames:
    """A stack of ``n`` frames of ``frame_shape`` whose frames are read when indexed.

    ``stack[t]`` reads frame ``t`` (an array of ``frame_shape`` and ``dtype``), ``stack[a:b]``
    reads those frames into one array (a batch), iterating reads one frame at a time, and
    ``stack[:, z]`` of a (T, Z, Y, X) stack is the lazy (T, Y, X) stack of focal plane ``z``.
    Nothing read is kept. ``np.asarray(stack)`` reads every frame (the whole stack in memory).

    Parameters
    ----------
    n, frame_shape, dtype
        The stack's shape is ``(n, *frame_shape)``; frames are cast to ``dtype``.
    read
        ``read(t)`` returns frame ``t``.
    read_plane
        For (T, Z, ...) stacks: ``read_plane(t, z)`` returns plane ``z`` of frame ``t``.
    """

    def __init__(self, n: int, frame_shape: tuple[int, ...], dtype,
                 read: Callable[[int], np.ndarray],
                 read_plane: Callable[[int, int], np.ndarray] | None = None) -> None:
        self._n = int(n)
        self.frame_shape = tuple(int(v) for v in frame_shape)
        self.dtype = np.dtype(dtype)
        self._read = read
        self._read_plane = read_plane

    @property
    def shape(self) -> tuple[int, ...]:
        return (self._n, *self.frame_shape)

    @property
    def ndim(self) -> int:
        return 1 + len(self.frame_shape)

    @property
    def size(self) -> int:
        return prod(self.shape)

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        return f"LazyFrames(shape={self.shape}, dtype={self.dtype})"

    def frame(self, t: int) -> np.ndarray:
        """Frame ``t`` read from disk (a file changed since it was opened is an error)."""
        if not -self._n <= t < self._n:
            raise IndexError(f"frame {t} is not in a stack of {self._n} frames")
        t = t % self._n
        a = np.asarray(self._read(t))
        if a.shape != self.frame_shape:
            raise ImageReadError(f"frame {t} now has shape {a.shape}, not {self.frame_shape} "
                                 "as when the stack was opened: was it changed on disk?")
        return a.astype(self.dtype, copy=False)

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return self.frame(int(key))
        if isinstance(key, slice):
            ts = range(*key.indices(self._n))
            out = np.empty((len(ts), *self.frame_shape), self.dtype)
            for i, t in enumerate(ts):
                out[i] = self.frame(t)
            return out
        if (isinstance(key, tuple) and len(key) == 2 and key[0] == slice(None)
                and isinstance(key[1], (int, np.integer))):
            return self.plane(int(key[1]))
        raise TypeError(f"a lazy stack takes a frame index, a slice of frames or [:, plane]; "
                        f"got {key!r} (np.asarray(stack) reads the whole stack)")

    def __iter__(self) -> Iterator[np.ndarray]:
        for t in range(self._n):
            yield self.frame(t)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype, copy=False)

    def plane(self, z: int) -> LazyFrames:
        """The (T, Y, X[, C]) stack of focal plane ``z`` of a (T, Z, ...) stack."""
        if self._read_plane is None:
            raise TypeError(f"a stack of shape {self.shape} has no focal planes")
        n_planes = self.frame_shape[0]
        if not -n_planes <= z < n_planes:
            raise IndexError(f"plane {z} is not in a stack of {n_planes} focal planes")
        z = z % n_planes
        read_plane = self._read_plane
        return LazyFrames(self._n, self.frame_shape[1:], self.dtype,
                          lambda t: read_plane(t, z))


def scan_files(files: list[Path]) -> tuple[tuple[int, ...], np.dtype]:
    """The frames' common shape and dtype (mixed integer widths promoted losslessly), each
    file decoded once and dropped. Raises ImageReadError for an unreadable file or a frame
    of another size, as :func:`~blastoseg.io.images.read_frame_folder` does."""
    first = read_image(files[0])
    shape, dtype = first.shape, first.dtype
    del first
    for p in files[1:]:
        arr = read_image(p)
        if arr.shape != shape:
            raise frame_size_error(p, arr.shape, files[0], shape)
        dtype = np.result_type(dtype, arr.dtype)
    return shape, np.dtype(dtype)


def open_frame_folder(folder: str | os.PathLike, *, skip_unreadable: bool = False
                      ) -> ImageStack:
    """:func:`~blastoseg.io.images.read_frame_folder` with the frames left on disk."""
    folder = Path(folder)
    grids, frames, plane_values, numbered = folder_grid(folder)
    skipped: list[tuple[Path, str]] = []
    files = [grids[v][f] for f in frames for v in plane_values]
    try:
        shape, dtype = scan_files(files)
    except ImageReadError:
        if not skip_unreadable:
            raise
        frames, skipped = _readable_frames(grids, frames, plane_values)
        files = [grids[v][f] for f in frames for v in plane_values]
        shape, dtype = scan_files(files)
    nz = len(plane_values)
    focal = [v for v in plane_values if v is not None] or None
    if nz > 1:
        def read_plane(t: int, z: int) -> np.ndarray:
            return read_image(files[t * nz + z])

        def read(t: int) -> np.ndarray:
            return np.stack([read_plane(t, z) for z in range(nz)])

        data = LazyFrames(len(frames), (nz, *shape), dtype, read, read_plane)
        axes = "TZYX"
    else:
        data = LazyFrames(len(frames), shape, dtype, lambda t: read_image(files[t]))
        axes = "TYX"
    if len(shape) == 3:
        axes += "C"
    return ImageStack(data=data, axes=axes, files=files,
                      frame_numbers=frames if numbered else None, focal_planes=focal,
                      skipped=skipped)


class _OpenTiff:
    """An open TiffFile, closed when the last lazy stack reading it is gone."""

    def __init__(self, tf) -> None:
        self.tf = tf


def _open_tiff(path: Path) -> ImageStack | None:
    """A multi-page TIFF of 2D grey pages with its pages left on disk; None when the file
    is not such a TIFF (or cannot be parsed): ``read_images`` then reads it (and reports)."""
    import tifffile

    try:
        tf = tifffile.TiffFile(path)
    except Exception:  # the eager reader gives the clear error
        return None
    try:
        series = tf.series[0]
        ij = tf.imagej_metadata or {}
        axes = _normalise_tiff_axes(series.axes, ij)
        shape = tuple(series.shape)
        lead = axes[:-2]
        if (len(axes) != len(shape) or len(axes) < 3 or not axes.endswith("YX")
                or any(a not in "TZ" for a in lead) or len(set(lead)) != len(lead)
                or len(series.pages) != prod(shape[:-2])):
            tf.close()
            return None
        pixel_size = _tiff_pixel_size(tf, ij)
    except Exception:
        tf.close()
        return None
    order = "".join(a for a in "TZ" if a in lead)
    lead_shape = shape[:-2]
    frame = shape[-2:]
    # the views (a focal plane's stack) share the open file; it closes with the last of them
    handle = _OpenTiff(tf)

    def page(index: dict[str, int]) -> np.ndarray:
        k = int(np.ravel_multi_index([index[a] for a in lead], lead_shape))
        try:
            return handle.tf.asarray(key=k, series=0)
        except Exception as exc:
            raise ImageReadError(f"{path}: cannot read page {k} ({type(exc).__name__}: "
                                 f"{exc})") from exc

    n = lead_shape[lead.index(order[0])]
    if len(order) == 2:
        nz = lead_shape[lead.index("Z")]

        def read_plane(t: int, z: int) -> np.ndarray:
            return page({"T": t, "Z": z})

        data = LazyFrames(n, (nz, *frame), series.dtype,
                          lambda t: np.stack([read_plane(t, z) for z in range(nz)]),
                          read_plane)
    else:
        data = LazyFrames(n, frame, series.dtype, lambda t: page({order: t}))
    weakref.finalize(handle, tf.close)
    return ImageStack(data=data, axes=order + "YX", files=[path], pixel_size_um=pixel_size)


def open_images(path: str | os.PathLike, *, skip_unreadable: bool = False) -> ImageStack:
    """:func:`~blastoseg.io.images.read_images`, with the frames of a folder or a multi-page
    TIFF left on disk (``data`` a :class:`LazyFrames`; see the module docstring)."""
    path = Path(path)
    if path.is_dir():
        return open_frame_folder(path, skip_unreadable=skip_unreadable)
    if path.is_file() and path.suffix.lower() in _TIFF:
        stack = _open_tiff(path)
        if stack is not None:
            return stack
    return read_images(path, skip_unreadable=skip_unreadable)
