"""The one place that turns an image into frames: which axes an image has, the frames of a
stack, and a frame as grey float32.

Every predictor, widget and CLI verb goes through these three functions, so an image is read
the same way everywhere and a wrong one gets the same clear message:

* :func:`image_axes`: the non-spatial axes of an image (``""``, ``"T"``, ``"Z"`` or
  ``"TZ"``) from its shape (and whether napari shows it as RGB); a kind that cannot use
  focal planes says so.
* :func:`as_frames`: a 2D frame, grey RGB(A), (T, Y, X) or (T, Y, X, C) as a (T, H, W[, C])
  view, and whether it was a stack.
* :func:`grey_frame`: one frame as 2D float32, colour averaged, NaN refused.
"""

from __future__ import annotations

import numpy as np

from blastoseg.errors import InvalidImageError
from blastoseg.io.lazy_stack import LazyFrames

__all__ = ["MIN_SIDE", "as_frames", "check_pixels", "grey_frame", "image_axes"]

#: the smallest frame side any model runs on
MIN_SIDE = 8


def check_pixels(arr: np.ndarray) -> None:
    """Refuse arrays whose pixels are not real numbers (bool, complex, strings, objects)."""
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer)
                                 or np.issubdtype(arr.dtype, np.floating)):
        raise InvalidImageError(f"expected an image of integer or floating-point pixels; got "
                                f"dtype {arr.dtype}")


def image_axes(shape: tuple[int, ...], rgb: bool = False, axes_hint: str | None = None, *,
               focal_planes: bool = True) -> str:
    """Non-spatial axes of an image: ``""``, ``"T"``, ``"Z"`` or ``"TZ"``.

    ``rgb``: the last axis is colour (napari's ``layer.rgb``). ``axes_hint``: the file's own
    axes when known (a 3D image whose hint starts with "Z" is a focal stack, otherwise a
    time-lapse). ``focal_planes=False``: the caller runs on 2D frames or time-lapses only, so
    a (T, Z, Y, X) stack is refused with what to do instead.
    """
    nd = len(shape) - (1 if rgb else 0)
    if nd == 2:
        return ""
    if nd == 3:
        if (axes_hint or "").upper().startswith("Z"):
            return "Z" if focal_planes else "T"
        return "T"
    if nd == 4 and not rgb:
        if focal_planes:
            return "TZ"
        raise InvalidImageError(
            f"cannot run on a {tuple(shape)} stack with focal planes: this model runs on 2D "
            "frames or (T, Y, X) time-lapses. Choose one focal plane first (e.g. right-click "
            "the layer > Split Stack, or open that plane only)")
    raise InvalidImageError(
        f"cannot use an image of shape {tuple(shape)}: expected a 2D frame, a grey RGB frame, "
        "a (T, Y, X) time-lapse" + (" or a (T, Z, Y, X) stack with focal planes"
                                    if focal_planes else ""))


def as_frames(image: np.ndarray, *, rgb: bool | None = None, min_side: int = MIN_SIDE
              ) -> tuple[np.ndarray, bool]:
    """Check an input and view it as frames: returns (frames, was_a_stack).

    ``frames`` is (T, H, W) or (T, H, W, C) with C = 1, 3 or 4 (colour); nothing is copied.
    ``rgb``: whether the last axis is colour (napari's ``layer.rgb``); None guesses: a 3D
    array whose last axis is 3 or 4 long and whose first is longer than 4 is one colour
    frame (Y, X, C), a (Y, X, 1) array one grey frame; otherwise a 3D array is a (T, Y, X)
    stack.

    Raises
    ------
    InvalidImageError
        Empty, non-numeric, (T, Z, Y, X) (choose a plane first), more than 4 axes, or sides
        under ``min_side`` px.
    """
    if isinstance(image, LazyFrames):  # a stack read frame by frame: checked, not read
        return _lazy_frames(image, min_side), True
    arr = np.asarray(image)
    if arr.size == 0:
        raise InvalidImageError(f"the image is empty (shape {arr.shape}); expected a 2D frame or "
                                "a (T, Y, X) stack with pixels")
    check_pixels(arr)
    colour = arr.ndim in (3, 4) and arr.shape[-1] in (1, 3, 4)
    if rgb is None:
        rgb = colour and (arr.ndim == 4 or arr.shape[-1] == 1 or arr.shape[0] > 4)
    elif rgb and not colour:
        raise InvalidImageError(f"expected a colour image with 3 or 4 channels last; got shape "
                                f"{arr.shape}")
    spatial = arr.ndim - (1 if rgb else 0)
    if spatial == 2:
        frames, stack = arr[None], False
    elif spatial == 3:
        frames, stack = arr, True
    elif spatial == 4:
        raise InvalidImageError(
            f"got a (T, Z, Y, X) stack of shape {arr.shape}: choose one focal plane first "
            "(e.g. image[:, z]); the models run on 2D frames")
    else:
        raise InvalidImageError(f"expected a 2D frame, grey RGB (H, W, 3) or a (T, Y, X) stack; "
                                f"got shape {arr.shape}")
    h, w = frames.shape[1:3]
    if min(h, w) < min_side:
        hint = ""
        if arr.ndim == 3 and arr.shape[-1] < min_side <= min(arr.shape[:2]):
            hint = (f"; if its last axis holds {arr.shape[-1]} channels: only grey, RGB or RGBA "
                    "images are read")
        raise InvalidImageError(f"frames must be at least {min_side} pixels per side; got "
                                f"{h} x {w} (shape {arr.shape}){hint}")
    return frames, stack


def _lazy_frames(stack: LazyFrames, min_side: int) -> LazyFrames:
    """The checks of :func:`as_frames` on a lazy (T, Y, X[, C]) stack's shape and dtype."""
    check_pixels(np.empty(0, stack.dtype))
    shape = stack.shape
    if stack.size == 0:
        raise InvalidImageError(f"the image is empty (shape {shape}); expected a 2D frame or "
                                "a (T, Y, X) stack with pixels")
    if len(shape) == 4 and shape[-1] not in (1, 3, 4):
        raise InvalidImageError(
            f"got a (T, Z, Y, X) stack of shape {shape}: choose one focal plane first "
            "(e.g. image[:, z]); the models run on 2D frames")
    if len(shape) not in (3, 4):
        raise InvalidImageError(f"expected a (T, Y, X) stack; got shape {shape}")
    if min(shape[1:3]) < min_side:
        raise InvalidImageError(f"frames must be at least {min_side} pixels per side; got "
                                f"{shape[1]} x {shape[2]} (shape {shape})")
    return stack


def grey_frame(frame: np.ndarray, index: int | None = None, *, min_side: int = MIN_SIDE
               ) -> np.ndarray:
    """One frame as 2D float32: (H, W), (H, W, 1) or grey RGB(A) (R, G, B averaged, alpha
    dropped; equal channels lose nothing). ``index`` names the frame of a stack in errors.

    Raises
    ------
    InvalidImageError
        Another shape, sides under ``min_side`` px, non-numeric pixels, or NaN / infinite
        pixels.
    """
    a = np.asarray(frame)
    check_pixels(a)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    elif a.ndim == 3 and a.shape[-1] in (3, 4):
        a = a[..., :3].astype(np.float32).mean(axis=-1)
    if a.ndim != 2:
        raise InvalidImageError(
            f"expected one 2D frame (H, W) or grey RGB (H, W, 3); got shape {a.shape}. "
            "Pass the frames of a (T, Y, X) stack one at a time.")
    if min(a.shape) < min_side:
        where = "the frame" if index is None else f"frame {index}"
        raise InvalidImageError(f"frames must be at least {min_side} pixels per side; "
                                f"{where} is {a.shape[0]} x {a.shape[1]}")
    a = a.astype(np.float32, copy=False)
    finite = np.isfinite(a)
    if not finite.all():
        where = "the frame has" if index is None else f"frame {index} has"
        raise InvalidImageError(f"{where} {int((~finite).sum())} NaN or infinite pixels; "
                                "expected finite values (replace or mask them first)")
    return a


def frame_range_of(data, axes: str, frame_range: tuple[int, int], what: str
                   ) -> tuple[int, int]:
    """``(t0, t1)`` of the frames to run for an image of ``axes`` ``""`` or ``"T"`` (a 2D
    image is its one frame), checked against the stack; ``what`` names the work in errors."""
    if axes not in ("", "T"):
        raise InvalidImageError(f"{what}: only 2D frames or (T, Y, X) stacks, not axes "
                                f"{axes!r}")
    t0, t1 = (0, 1) if axes == "" else (int(frame_range[0]), int(frame_range[1]))
    n_frames = np.shape(data)[0]
    if axes == "T" and not 0 <= t0 < t1 <= n_frames:
        raise InvalidImageError(f"frames {t0}..{t1 - 1} are not in a stack of {n_frames} frames")
    return t0, t1
