"""Geometric shapes for annotation: ellipses, ellipse fits to clicked points, polygons.

Conventions (those of napari and of every mask in the package):

- points and centres are ``(y, x)`` in pixel coordinates, the centre of pixel ``[i, j]`` at
  ``(i, j)``; a pixel belongs to a shape when its centre does;
- angles are in radians, measured from the +x axis (columns) towards +y (rows, downwards);
- an :class:`Ellipse`'s ``axes`` are its semi-axes ``(major, minor)``, the angle that of the
  major axis.

The ellipse fit is the direct least-squares fit of Fitzgibbon, Pilu & Fisher (1999) in the
numerically stable form of Halir & Flusser (1998): it always returns an ellipse (never a
hyperbola), which matters when the clicked points cover only the visible arc of a cell.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from blastoseg.errors import BlastosegError, InvalidImageError

__all__ = ["Ellipse", "circle_from_points", "ellipse_from_points", "ellipse_mask", "polygon_mask"]


def _check_shape(shape: Sequence[int]) -> tuple[int, int]:
    try:
        h, w = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise InvalidImageError(f"shape must be (height, width); got {shape!r}") from None
    if h < 1 or w < 1:
        raise InvalidImageError(f"shape must be positive; got {(h, w)}")
    return h, w


def ellipse_mask(shape: Sequence[int], center: Sequence[float], axes: Sequence[float],
                 angle: float = 0.0) -> np.ndarray:
    """(H, W) bool mask of the pixels whose centres lie inside an ellipse.

    Parameters
    ----------
    shape
        (H, W) of the mask.
    center
        (y, x) centre (may lie outside the mask; the ellipse is clipped).
    axes
        Semi-axes (a, b) in pixels; ``a`` lies along ``angle``.
    angle
        Radians from +x towards +y.
    """
    h, w = _check_shape(shape)
    cy, cx = (float(v) for v in center)
    a, b = (float(v) for v in axes)
    if not (np.isfinite([cy, cx, a, b, angle]).all() and a > 0 and b > 0):
        raise InvalidImageError(f"an ellipse needs a finite centre and positive semi-axes; "
                                f"got center={center!r}, axes={axes!r}, angle={angle!r}")
    co, si = np.cos(angle), np.sin(angle)
    # half extents of the rotated ellipse: only its bounding box is evaluated
    ex, ey = np.hypot(a * co, b * si), np.hypot(a * si, b * co)
    r0, r1 = max(0, int(np.floor(cy - ey))), min(h, int(np.ceil(cy + ey)) + 1)
    c0, c1 = max(0, int(np.floor(cx - ex))), min(w, int(np.ceil(cx + ex)) + 1)
    out = np.zeros((h, w), dtype=bool)
    if r1 <= r0 or c1 <= c0:
        return out
    dy = np.arange(r0, r1, dtype=np.float64)[:, None] - cy
    dx = np.arange(c0, c1, dtype=np.float64)[None, :] - cx
    u = (dx * co + dy * si) / a
    v = (-dx * si + dy * co) / b
    out[r0:r1, c0:c1] = u * u + v * v <= 1.0
    return out


@dataclass(frozen=True)
class Ellipse:
    """An ellipse: ``center`` (y, x), semi-axes ``axes`` (major, minor), ``angle`` (radians,
    of the major axis, in [0, pi))."""

    center: tuple[float, float]
    axes: tuple[float, float]
    angle: float

    @property
    def area(self) -> float:
        return float(np.pi * self.axes[0] * self.axes[1])

    @property
    def box(self) -> tuple[float, float, float, float]:
        """Tight XYXY box in pixel edges (x1, y1, x2, y2), the package's box convention."""
        a, b = self.axes
        co, si = np.cos(self.angle), np.sin(self.angle)
        ex, ey = float(np.hypot(a * co, b * si)), float(np.hypot(a * si, b * co))
        cy, cx = self.center
        return (cx - ex + 0.5, cy - ey + 0.5, cx + ex + 0.5, cy + ey + 0.5)

    def mask(self, shape: Sequence[int]) -> np.ndarray:
        """(H, W) bool mask of the ellipse (see :func:`ellipse_mask`)."""
        return ellipse_mask(shape, self.center, self.axes, self.angle)

    def radial_distance(self, points: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
        """Signed distance (> 0 outside) of (N, 2) (y, x) points to the outline, measured
        along the ray from the centre (the orthogonal distance for a circle)."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        return _radial(p[:, 1] - self.center[1], p[:, 0] - self.center[0], self.axes[0],
                       self.axes[1], self.angle)


def _radial(dx: np.ndarray, dy: np.ndarray, a: float, b: float, th: float) -> np.ndarray:
    u = dx * np.cos(th) + dy * np.sin(th)
    v = -dx * np.sin(th) + dy * np.cos(th)
    rho = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    # a point at radius r lies r (1 - 1/rho) beyond the outline along its ray
    return np.hypot(u, v) * (1.0 - 1.0 / np.maximum(rho, 1e-9))


def _circle_fit(x: np.ndarray, y: np.ndarray) -> Ellipse:
    # algebraic (Kasa) fit: x^2 + y^2 + D x + E y + F = 0, linear in (D, E, F)
    a = np.column_stack([x, y, np.ones_like(x)])
    sol, _, rank, _ = np.linalg.lstsq(a, -(x * x + y * y), rcond=None)
    if rank < 3:
        raise BlastosegError("the points lie on one straight line: no circle or ellipse fits "
                             "them; click points around the cell's outline")
    d, e, f = sol
    cx, cy = -d / 2, -e / 2
    r2 = cx * cx + cy * cy - f
    if not r2 > 0:
        raise BlastosegError("no circle fits these points; click points around the outline")
    r = float(np.sqrt(r2))
    return Ellipse((float(cy), float(cx)), (r, r), 0.0)


def _conic_to_ellipse(p: np.ndarray) -> Ellipse | None:
    a, b, c, d, e, f = p
    m = np.array([[2 * a, b], [b, 2 * c]])
    if abs(np.linalg.det(m)) < 1e-12:
        return None
    cx, cy = np.linalg.solve(m, [-d, -e])
    f0 = a * cx * cx + b * cx * cy + c * cy * cy + d * cx + e * cy + f
    lam, vec = np.linalg.eigh(np.array([[a, b / 2], [b / 2, c]]))
    with np.errstate(divide="ignore", invalid="ignore"):
        ax2 = -f0 / lam
    if not (np.isfinite(ax2).all() and (ax2 > 0).all()):
        return None
    axes = np.sqrt(ax2)
    k = int(np.argmax(axes))  # the major axis first
    angle = float(np.arctan2(vec[1, k], vec[0, k]) % np.pi)
    return Ellipse((float(cy), float(cx)), (float(axes[k]), float(axes[1 - k])), angle)


def _points(points: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2 or len(p) < 3:
        raise BlastosegError(f"an ellipse fit needs at least 3 (y, x) points; got an array "
                             f"of shape {p.shape}")
    if not np.isfinite(p).all():
        raise BlastosegError("the points must be finite numbers")
    p = np.unique(p, axis=0)
    if len(p) < 3:
        raise BlastosegError("an ellipse fit needs at least 3 distinct points")
    return p


def _normalised(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    # centre and scale the points: the fits are then well conditioned at any pixel scale
    mean = p.mean(axis=0)
    scale = float(np.sqrt(((p - mean) ** 2).sum(axis=1).mean())) or 1.0
    y, x = ((p - mean) / scale).T
    return x, y, mean, scale


def _denormalised(e: Ellipse, mean: np.ndarray, scale: float) -> Ellipse:
    (cy, cx), (a, b) = e.center, e.axes
    return Ellipse((float(cy * scale + mean[0]), float(cx * scale + mean[1])),
                   (float(a * scale), float(b * scale)), float(e.angle % np.pi))


def _refine(e: Ellipse, x: np.ndarray, y: np.ndarray, circle: bool) -> Ellipse:
    """Geometric refinement of an algebraic fit: least squares of the radial distances of
    the points to the outline. Algebraic fits are biased on the short, pixel-stepped arcs of
    a partly hidden cell (they come out too small); this removes most of that bias."""
    from scipy.optimize import least_squares

    def radial(q: np.ndarray) -> np.ndarray:
        cy, cx, la, lb, th = q if not circle else (*q, q[2], 0.0)
        return _radial(x - cx, y - cy, np.exp(la), np.exp(lb), th)

    q0 = [e.center[0], e.center[1], np.log(e.axes[0])]
    if not circle:
        q0 += [np.log(e.axes[1]), e.angle]
    q0 = np.array(q0)
    if len(x) < len(q0):
        return e
    try:
        fit = least_squares(radial, q0, method="lm", max_nfev=200 * len(q0))
    except (ValueError, np.linalg.LinAlgError):
        return e
    q = fit.x
    if not (np.isfinite(q).all() and fit.cost <= 0.5 * (radial(q0) ** 2).sum()
            and np.abs(q[2:4 if not circle else 3]).max() < 10):
        return e
    if circle:
        return Ellipse((q[0], q[1]), (np.exp(q[2]), np.exp(q[2])), 0.0)
    a, b, th = np.exp(q[2]), np.exp(q[3]), q[4]
    if b > a:  # keep the major axis first
        a, b, th = b, a, th + np.pi / 2
    return Ellipse((q[0], q[1]), (a, b), th)


def circle_from_points(points: Sequence[Sequence[float]] | np.ndarray) -> Ellipse:
    """The least-squares circle through (N, 2) (y, x) points, N >= 3, as an
    :class:`Ellipse` with equal axes (algebraic fit refined geometrically). Raises
    :class:`BlastosegError` for collinear points."""
    x, y, mean, scale = _normalised(_points(points))
    return _denormalised(_refine(_circle_fit(x, y), x, y, circle=True), mean, scale)


def ellipse_from_points(points: Sequence[Sequence[float]] | np.ndarray) -> Ellipse:
    """The least-squares ellipse through clicked boundary points.

    Parameters
    ----------
    points
        (N, 2) (y, x) points on the outline, N >= 3. With 5 or more the direct ellipse fit is
        used; with 3 or 4 (or if the points are too degenerate for an ellipse) a circle is
        fitted instead. Either fit is then refined to minimise the points' distances to the
        outline. For a cell whose edge is partly hidden, click points along the visible
        part of the edge, spread as widely as possible.

    Raises
    ------
    BlastosegError
        Fewer than 3 points, non-finite points, or points on one straight line.
    """
    x, y, mean, scale = _normalised(_points(points))
    fit = _direct_fit(x, y) if len(x) >= 5 else None
    if fit is None:
        fit = _refine(_circle_fit(x, y), x, y, circle=True)
    else:
        fit = _refine(fit, x, y, circle=False)
    return _denormalised(fit, mean, scale)


def _direct_fit(x: np.ndarray, y: np.ndarray) -> Ellipse | None:
    # Halir & Flusser: split the scatter matrix into quadratic and linear parts and solve
    # the 3 x 3 eigenproblem under the ellipse constraint 4ac - b^2 = 1
    d1 = np.column_stack([x * x, x * y, y * y])
    d2 = np.column_stack([x, y, np.ones_like(x)])
    s1, s2, s3 = d1.T @ d1, d1.T @ d2, d2.T @ d2
    try:
        t = -np.linalg.solve(s3, s2.T)
    except np.linalg.LinAlgError:
        return None
    m = s1 + s2 @ t
    m = np.array([m[2] / 2, -m[1], m[0] / 2])
    try:
        _, vec = np.linalg.eig(m)
    except np.linalg.LinAlgError:
        return None
    vec = np.real(vec)
    cond = 4 * vec[0] * vec[2] - vec[1] ** 2
    good = np.nonzero(cond > 0)[0]
    if len(good) == 0:
        return None
    a1 = vec[:, good[np.argmax(cond[good])]]
    return _conic_to_ellipse(np.concatenate([a1, t @ a1]))


def polygon_mask(shape: Sequence[int], vertices: Sequence[Sequence[float]] | np.ndarray
                 ) -> np.ndarray:
    """(H, W) bool mask of the pixels whose centres lie inside a polygon (even-odd rule).

    Parameters
    ----------
    shape
        (H, W) of the mask.
    vertices
        (N, 2) (y, x) vertices, N >= 3, in order (either direction); the polygon is closed
        automatically and may leave the mask (it is clipped).

    Notes
    -----
    Edges are half-open (a centre on a top or left edge is inside, on a bottom or right edge
    outside), so a rectangle with integer corners ``(y0, x0)``, ``(y1, x1)`` covers exactly
    ``(y1 - y0) * (x1 - x0)`` pixels and shapes that tile the plane never share a pixel.
    """
    h, w = _check_shape(shape)
    v = np.asarray(vertices, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 2 or len(v) < 3 or not np.isfinite(v).all():
        raise InvalidImageError(f"a polygon needs at least 3 finite (y, x) vertices; got an "
                                f"array of shape {v.shape}")
    ys = np.arange(h, dtype=np.float64)
    # per row, +1 at the first column right of each edge crossing; the cumulative sum's
    # parity is then "inside" (scan-line even-odd fill)
    toggles = np.zeros((h, w + 1), dtype=np.int32)
    for (y0, x0), (y1, x1) in zip(v, np.roll(v, -1, axis=0), strict=True):
        if y0 == y1:
            continue  # horizontal edges never cross a scan line under the half-open rule
        lo, hi = min(y0, y1), max(y0, y1)
        rows = np.nonzero((ys >= lo) & (ys < hi))[0]
        if not len(rows):
            continue
        xc = x0 + (ys[rows] - y0) * (x1 - x0) / (y1 - y0)
        cols = np.clip(np.ceil(xc), 0, w).astype(np.int64)
        np.add.at(toggles, (rows, cols), 1)
    return (np.cumsum(toggles[:, :w], axis=1) & 1).astype(bool)
