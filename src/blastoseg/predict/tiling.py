"""Sliding-window inference for images of any size (S4, Prytula 2023, section 5.3).

The image is cut into ``window`` x ``window`` windows that overlap by ``overlap`` pixels
(512 and 256 in the thesis); a function maps each batch of windows to probability maps and
the maps are averaged where windows overlap.

Interpretation / details:

- Windows start every ``window - overlap`` pixels; the last window of a row or column is
  moved back so that it ends at the image border (it then overlaps its neighbour more), so
  no padding is needed for images at least one window large.
- A side shorter than the window gets a smaller window: the side rounded up to a multiple
  of ``multiple`` (the network's ``2**depth``), reflect-padded (half before, half after)
  and cropped back afterwards. A 100 x 700 image with 512 px windows is run as 112 x 512
  windows, not padded to 512 x 700.
- Averaging is a plain mean (every window pixel has weight 1), as in the thesis.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping

import numpy as np

from blastoseg.errors import BlastosegError, InvalidImageError

__all__ = ["TilingError", "count_windows", "iter_sliding_window", "sliding_window",
           "window_grid"]


class TilingError(BlastosegError, ValueError):
    """Bad tiling parameters (window, overlap, batch) or a window function that misbehaves."""


WindowFn = Callable[[np.ndarray], Mapping[str, np.ndarray]]


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _check_params(window: int, overlap: int, multiple: int) -> None:
    for name, value, lo in (("window", window, 1), ("overlap", overlap, 0),
                            ("multiple", multiple, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
            raise TilingError(f"{name} must be an integer >= {lo}, got {value!r}")
    if overlap >= window:
        raise TilingError(f"overlap ({overlap}) must be smaller than the window ({window})")
    if window % multiple:
        raise TilingError(f"window ({window}) must be a multiple of {multiple} "
                         "(the network's 2**depth)")


def _starts(size: int, win: int, stride: int) -> list[int]:
    if size <= win:
        return [0]
    n = -(-(size - win) // stride) + 1
    return sorted({min(i * stride, size - win) for i in range(n)})


def window_grid(shape: tuple[int, int], window: int = 512, overlap: int = 256,
                multiple: int = 1) -> tuple[tuple[int, int], tuple[int, int], list[tuple[int, int]]]:
    """How an image of ``shape`` (H, W) is tiled.

    Returns
    -------
    (win_h, win_w), (pad_h, pad_w), starts
        The window size actually used per axis, the padded image size, and the (y, x) top-left
        corner of every window in padded coordinates (row-major order).
    """
    _check_params(window, overlap, multiple)
    h, w = int(shape[0]), int(shape[1])
    if h < 1 or w < 1:
        raise InvalidImageError(f"cannot tile an empty image of shape {tuple(shape)}")
    win_h, win_w = min(window, _round_up(h, multiple)), min(window, _round_up(w, multiple))
    pad_h, pad_w = max(h, win_h), max(w, win_w)
    stride = window - overlap
    starts = [(y, x) for y in _starts(pad_h, win_h, stride) for x in _starts(pad_w, win_w, stride)]
    return (win_h, win_w), (pad_h, pad_w), starts


def count_windows(shape: tuple[int, int], window: int = 512, overlap: int = 256,
                  multiple: int = 1) -> int:
    """Number of windows :func:`iter_sliding_window` runs for an (H, W) image."""
    return len(window_grid(shape, window, overlap, multiple)[2])


def iter_sliding_window(image: np.ndarray, fn: WindowFn, window: int = 512, overlap: int = 256,
                        batch: int = 4, multiple: int = 1
                        ) -> Generator[tuple[int, int], None, dict[str, np.ndarray]]:
    """Run ``fn`` over overlapping windows of ``image`` and average its outputs.

    Parameters
    ----------
    image
        (H, W) or channels-first (C, H, W) array (converted to float32), any H and W >= 1.
    fn
        Maps a batch of windows, a float32 array (B, C, h, w) (C = 1 for a 2D image), to a dict
        name -> map of shape (B, h, w) or (B, 1, h, w) (numpy, e.g. probabilities).
    window, overlap
        Window side and overlap of neighbouring windows in pixels (thesis: 512 and 256).
    batch
        Windows per call of ``fn``.
    multiple
        Window sides are made multiples of this (a U-Net of depth d needs ``2**d``).

    Yields
    ------
    (done, total)
        Windows processed so far and in all, after each batch.

    Returns
    -------
    dict[str, numpy.ndarray]
        Name -> float32 (H, W) map, the mean of all windows covering each pixel.
    """
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise InvalidImageError(f"expected an (H, W) or (C, H, W) image to tile; got shape "
                                f"{arr.shape}")
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise TilingError(f"batch must be an integer >= 1, got {batch!r}")
    c, h, w = arr.shape
    (win_h, win_w), (pad_h, pad_w), starts = window_grid((h, w), window, overlap, multiple)
    before_y, before_x = (pad_h - h) // 2, (pad_w - w) // 2
    arr = arr.astype(np.float32, copy=False)
    if (pad_h, pad_w) != (h, w):
        arr = np.pad(arr, ((0, 0), (before_y, pad_h - h - before_y),
                           (before_x, pad_w - w - before_x)), mode="reflect")
    total = len(starts)
    sums: dict[str, np.ndarray] = {}
    counts = np.zeros((pad_h, pad_w), np.float32)
    done = 0
    for first in range(0, total, batch):
        chunk = starts[first:first + batch]
        windows = np.stack([arr[:, y:y + win_h, x:x + win_w] for y, x in chunk])
        out = fn(np.ascontiguousarray(windows))
        if not isinstance(out, Mapping) or not out:
            raise TilingError("the window function must return a non-empty dict of maps; got "
                            f"{type(out).__name__}")
        for name, maps in out.items():
            maps = np.asarray(maps, dtype=np.float32)
            if maps.ndim == 4 and maps.shape[1] == 1:
                maps = maps[:, 0]
            if maps.shape != (len(chunk), win_h, win_w):
                raise TilingError(f"the window function returned {name!r} of shape {maps.shape}; "
                                 f"expected {(len(chunk), win_h, win_w)}")
            acc = sums.get(name)
            if acc is None:
                acc = sums[name] = np.zeros((pad_h, pad_w), np.float32)
            for m, (y, x) in zip(maps, chunk, strict=True):
                acc[y:y + win_h, x:x + win_w] += m
        for y, x in chunk:
            counts[y:y + win_h, x:x + win_w] += 1.0
        done += len(chunk)
        yield done, total
    crop = (slice(before_y, before_y + h), slice(before_x, before_x + w))
    norm = counts[crop]
    return {name: np.ascontiguousarray(acc[crop] / norm) for name, acc in sums.items()}


def sliding_window(image: np.ndarray, fn: WindowFn, window: int = 512, overlap: int = 256,
                   batch: int = 4, multiple: int = 1,
                   progress: Callable[[int, int], None] | None = None) -> dict[str, np.ndarray]:
    """:func:`iter_sliding_window` run to the end (``progress(done, total)`` after each batch)."""
    from blastoseg.progress import run_with_progress

    return run_with_progress(iter_sliding_window(image, fn, window, overlap, batch, multiple),
                             progress)
