"""Focal planes: pick one 2D plane per frame from a (T, Z, Y, X) stack.

Incubator time-lapses often record several focal planes per frame (e.g. F-15, F0, F15). The
segmentation works on 2D frames, so a plane is chosen per frame: a fixed index, or the
best-focused plane, i.e. the one whose variance of the Laplacian is highest (sharp edges give a
strong Laplacian response; defocus blurs it away).

>>> frames, planes = select_focal_planes(stack_tzyx, "best")   # (T, Y, X), (T,) plane indices
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from blastoseg.errors import InvalidImageError

__all__ = ["BEST_FOCUS", "focus_score", "best_focus_planes", "select_focal_planes"]

BEST_FOCUS = "best"


def focus_score(plane: np.ndarray) -> float:
    """Variance of the Laplacian of a 2D plane (higher = sharper)."""
    a = np.asarray(plane, dtype=np.float32)
    if a.ndim != 2:
        raise InvalidImageError(f"focus_score expects one 2D plane; got shape {a.shape}")
    return float(ndimage.laplace(a).var())


def best_focus_planes(stack: np.ndarray) -> np.ndarray:
    """Index of the sharpest plane of each frame of a (T, Z, Y, X) (or (Z, Y, X)) stack."""
    a = np.asarray(stack) if not hasattr(stack, "ndim") else stack
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4:
        raise InvalidImageError(
            f"best focus needs a (T, Z, Y, X) or (Z, Y, X) stack; got shape {tuple(a.shape)}")
    return np.array([int(np.argmax([focus_score(np.asarray(a[t, z])) for z in range(a.shape[1])]))
                     for t in range(a.shape[0])], dtype=np.int64)


def select_focal_planes(stack: np.ndarray, plane: int | str = BEST_FOCUS
                        ) -> tuple[np.ndarray, np.ndarray]:
    """One plane per frame of a (T, Z, Y, X) stack.

    Parameters
    ----------
    stack
        (T, Z, Y, X) array (or array-like, e.g. dask: only the chosen planes are read).
    plane
        A plane index (negative counts from the last plane) or ``"best"`` for the
        best-focused plane of each frame.

    Returns
    -------
    frames : np.ndarray
        (T, Y, X) chosen planes.
    planes : np.ndarray
        (T,) index of the plane used for each frame.
    """
    if stack.ndim != 4:
        raise InvalidImageError(
            f"expected a (T, Z, Y, X) stack with focal planes; got shape {tuple(stack.shape)}")
    n_t, n_z = stack.shape[:2]
    if isinstance(plane, str):
        if plane != BEST_FOCUS:
            raise InvalidImageError(f"focal plane must be an index or {BEST_FOCUS!r}; got {plane!r}")
        planes = best_focus_planes(stack)
    else:
        z = int(plane)
        if not -n_z <= z < n_z:
            raise InvalidImageError(
                f"focal plane {z} does not exist: the stack has {n_z} planes (0 to {n_z - 1})")
        planes = np.full(n_t, z % n_z, dtype=np.int64)
    frames = np.stack([np.asarray(stack[t, planes[t]]) for t in range(n_t)])
    return frames, planes
