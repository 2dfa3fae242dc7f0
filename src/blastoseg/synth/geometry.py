"""3D blastomere geometry: cleavage, packing inside the zona, projection to masks.

All lengths are in pixels of the rendered image (x = column, y = row, z towards the
objective). A blastomere is a slightly deformed ellipsoid; its AMODAL mask is the filled
projection of the ellipsoid onto the image plane, computed analytically: for an ellipsoid
``v^T A v <= 1`` the projection along z is the ellipse given by the Schur complement of
``A_zz``, and the thickness along z at every pixel follows in closed form.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(eq=False)
class Cell:
    """One blastomere in 3D (pixel units, relative to the embryo centre)."""

    center: np.ndarray          # (3,) x, y, z
    volume: float               # px^3, conserved at cleavage
    track_id: int
    parent: int = -1
    generation: int = 0
    birth_h: float = 0.0        # hours post insemination when the cell appeared
    division_h: float = np.inf  # when it will divide
    intrinsic: np.ndarray = field(default_factory=lambda: np.ones(3))  # own anisotropy
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))    # its principal axes
    harmonics: np.ndarray = field(default_factory=lambda: np.zeros((3, 2)))  # k=2..4 amp, phase
    nucleus_visible: bool = True
    nucleus_offset: np.ndarray = field(default_factory=lambda: np.zeros(3))
    axes: np.ndarray = field(default_factory=lambda: np.ones(3))       # semi-axes, set by shape()
    frame: np.ndarray = field(default_factory=lambda: np.eye(3))       # axes directions (cols)

    @property
    def radius(self) -> float:
        """Radius of the sphere of equal volume."""
        return float((3.0 * self.volume / (4.0 * np.pi)) ** (1.0 / 3.0))


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3D rotation matrix (QR of a Gaussian matrix)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def random_unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(3)
    return v / (np.linalg.norm(v) + 1e-12)


def divide(cell: Cell, rng: np.random.Generator, next_id: int, asymmetry: float,
           anisotropy: float, harmonics: float, hours: float) -> tuple[Cell, Cell]:
    """Split a cell into two daughters that share its volume.

    The cleavage plane is random but tends to be perpendicular to the longest axis of the
    mother (Hertwig's rule), so daughters sit side by side where there is room.
    """
    frac = float(np.clip(rng.normal(0.5, asymmetry), 0.3, 0.7))
    long_axis = cell.frame[:, int(np.argmax(cell.axes))]
    axis = long_axis + 0.6 * random_unit(rng)
    axis[2] *= 0.5  # daughters settle side by side on the dish more often than stacked
    axis /= np.linalg.norm(axis) + 1e-12
    r = cell.radius
    daughters = []
    for sign, f, tid in ((1.0, frac, next_id), (-1.0, 1.0 - frac, next_id + 1)):
        daughters.append(Cell(
            center=cell.center + sign * axis * 0.45 * r * (1.0 - f + 0.25),
            volume=cell.volume * f,
            track_id=tid,
            parent=cell.track_id,
            generation=cell.generation + 1,
            birth_h=hours,
            intrinsic=random_intrinsic(rng, anisotropy),
            rotation=random_rotation(rng),
            harmonics=random_harmonics(rng, harmonics),
            nucleus_visible=bool(rng.random() < 0.7),
            nucleus_offset=rng.normal(0.0, 0.12, 3),
        ))
    return daughters[0], daughters[1]


def random_intrinsic(rng: np.random.Generator, anisotropy: float) -> np.ndarray:
    a = np.exp(rng.normal(0.0, anisotropy, 3))
    return a / np.prod(a) ** (1.0 / 3.0)


def random_harmonics(rng: np.random.Generator, amount: float) -> np.ndarray:
    """Amplitude and phase of the k = 2, 3, 4 outline harmonics (gentle non-ellipticity)."""
    amp = np.abs(rng.normal(0.0, amount, 3)) / np.array([1.0, 1.5, 2.0])
    return np.stack([amp, rng.uniform(0, 2 * np.pi, 3)], axis=1)


def relax(cells: list[Cell], container: np.ndarray, n_iter: int = 60,
          allowed_overlap: float = 0.12, cohesion: float = 0.02) -> None:
    """Pack cells by soft-sphere repulsion, confinement to the zona and mild cohesion.

    Parameters
    ----------
    cells
        Modified in place (``center``).
    container
        (3,) semi-axes of the ellipsoidal space inside the zona.
    allowed_overlap
        Fraction of the summed radii two cells may interpenetrate: real blastomeres deform
        against each other, and the deformation is applied afterwards by :func:`shape`.
    cohesion
        Pull towards the common centre, like cell adhesion, so cells stay in a cluster.
    """
    if not cells:
        return
    p = np.array([c.center for c in cells], dtype=float)
    r = np.array([c.radius for c in cells])
    n = len(cells)
    for _ in range(n_iter):
        if n > 1:
            diff = p[:, None, :] - p[None, :, :]
            d = np.linalg.norm(diff, axis=-1) + np.eye(n)
            target = (r[:, None] + r[None, :]) * (1.0 - allowed_overlap)
            push = np.clip(target - d, 0.0, None) * (1.0 - np.eye(n))
            w = r[None, :] / (r[:, None] + r[None, :])  # small cells move more
            p += 0.5 * np.sum((push * w)[..., None] * diff / d[..., None], axis=1)
            p -= cohesion * (p - 0.3 * p.mean(axis=0))  # adhesion, towards the zona centre
        # confinement: centre must stay inside the container shrunk by the (compressed) radius
        inner = np.clip(container[None, :] - 0.9 * r[:, None], 1.0, None)
        k = np.sqrt(np.sum((p / inner) ** 2, axis=1))
        out = k > 1.0
        p[out] /= k[out, None]
    for c, pos in zip(cells, p, strict=True):
        c.center = pos


def shape(cells: list[Cell], container: np.ndarray, compression: float = 0.8) -> None:
    """Set each cell's ellipsoid axes: intrinsic shape, flattened where it is squeezed.

    The squeeze tensor sums ``overlap * u u^T`` over neighbours and the zona wall; the cell
    shortens along its main eigenvectors and widens across them at constant volume.
    """
    p = np.array([c.center for c in cells])
    r = np.array([c.radius for c in cells])
    for i, c in enumerate(cells):
        t = np.zeros((3, 3))
        for j in range(len(cells)):
            if j == i:
                continue
            u = p[i] - p[j]
            d = np.linalg.norm(u) + 1e-9
            ov = r[i] + r[j] - d
            if ov > 0:
                u /= d
                t += (ov * r[j] / (r[i] + r[j])) * np.outer(u, u)
        # wall: how far the sphere sticks out of the ellipsoidal container
        k = np.sqrt(np.sum((p[i] / container) ** 2))
        if k > 1e-6:
            u = (p[i] / container**2) / np.linalg.norm(p[i] / container**2)
            ov = r[i] - (1.0 / k - 1.0) * np.linalg.norm(p[i]) * 1.0
            if ov > 0:
                t += ov * np.outer(u, u)
        t = t + 1e-9 * (c.rotation @ np.diag(c.intrinsic) @ c.rotation.T)
        lam, vec = np.linalg.eigh(t)
        squeeze = np.exp(-compression * np.clip(lam / r[i], 0.0, 0.6))
        # intrinsic anisotropy expressed in the squeeze frame
        intr = np.sqrt(np.sum((c.rotation.T @ vec) ** 2 * c.intrinsic[:, None] ** 2, axis=0))
        ax = squeeze * intr
        ax /= np.prod(ax) ** (1.0 / 3.0)
        c.axes = r[i] * ax
        c.frame = vec


@dataclass
class Projection:
    """One cell projected onto a pixel box of the image."""

    y0: int
    x0: int
    mask: np.ndarray       # (h, w) bool, amodal
    thickness: np.ndarray  # (h, w) px, chord length along z
    top_z: np.ndarray      # (h, w) z of the upper surface (for visibility)
    edge_dist: np.ndarray  # (h, w) px, radial distance to the outline (signed, + outside)
    center_xy: tuple[float, float]


def contact_planes(cells: list[Cell]) -> list[np.ndarray]:
    """Flat contact faces: for each cell, the planes it is clipped by, as rows (nx, ny, nz, t).

    Two pressed cells share the radical plane of their equal-volume spheres (the points with
    equal power ``|p - c|^2 - r^2``), so their clipped bodies touch along it and never overlap.
    A row means ``n . q <= t`` for ``q`` relative to the cell's centre. Only planes that cut
    the cell's ellipsoid are kept.
    """
    p = np.array([c.center for c in cells], dtype=float)
    r = np.array([c.radius for c in cells])
    out = []
    for i, c in enumerate(cells):
        ainv = c.frame @ np.diag(c.axes**2) @ c.frame.T  # support of the ellipsoid
        rows = []
        for j in range(len(cells)):
            if j == i:
                continue
            d = p[j] - p[i]
            dn = float(np.linalg.norm(d))
            if dn < 1e-6:
                continue
            n = d / dn
            t = (dn * dn + r[i] ** 2 - r[j] ** 2) / (2.0 * dn)
            if t < np.sqrt(n @ ainv @ n):
                rows.append([n[0], n[1], n[2], t])
        out.append(np.array(rows, dtype=float).reshape(-1, 4))
    return out


def clipped_volume(c: Cell, planes: np.ndarray) -> float:
    """Volume (px^3) of the cell's ellipsoid (with its outline wobble) cut by ``planes``."""
    ext = int(np.ceil(c.axes.max() * (1.0 + 2.0 * float(c.harmonics[:, 0].sum())))) + 2
    pr = project(c, (ext - c.center[0], ext - c.center[1]), (2 * ext + 1, 2 * ext + 1),
                 margin=1, planes=planes, edges=False)
    return float(pr.thickness.sum()) if pr is not None else 0.0


def press(cells: list[Cell], n_iter: int = 2) -> list[tuple[Cell, np.ndarray]]:
    """Copies of ``cells`` inflated so that, cut at their contact faces, each keeps its volume.

    Returns (cell copy, its planes) pairs for :func:`project`.
    """
    planes = contact_planes(cells)
    out = []
    for c, pl in zip(cells, planes, strict=True):
        cc = Cell(center=c.center, volume=c.volume, track_id=c.track_id, harmonics=c.harmonics)
        cc.axes, cc.frame = c.axes.copy(), c.frame
        if len(pl):
            v0 = clipped_volume(cc, np.zeros((0, 4)))  # same discretisation, uncut
            for _ in range(n_iter):
                v = clipped_volume(cc, pl)
                if v <= 0:
                    break
                cc.axes = cc.axes * float(np.clip((v0 / v) ** (1 / 3), 1.0, 1.3))
                # the planes stay put: scaling only re-inflates the part left inside them
        out.append((cc, pl))
    return out


def project(c: Cell, origin: tuple[float, float], shape_hw: tuple[int, int],
            margin: int = 4, planes: np.ndarray | None = None,
            edges: bool = True) -> Projection | None:
    """Project a cell centred at ``origin + c.center[:2]`` onto an image of ``shape_hw``.

    ``planes`` (rows nx, ny, nz, t; see :func:`contact_planes`) cut the ellipsoid at flat
    contact faces; the chord, mask, upper surface and outline distance follow the cut body.
    """
    a = c.frame @ np.diag(1.0 / c.axes**2) @ c.frame.T
    azz = a[2, 2]
    m = a[:2, :2] - np.outer(a[:2, 2], a[:2, 2]) / azz
    minv = np.linalg.inv(m)
    ext = np.sqrt(np.diag(minv)) * (1.0 + 2.0 * float(c.harmonics[:, 0].sum())) + margin
    cx, cy = origin[0] + c.center[0], origin[1] + c.center[1]
    h, w = shape_hw
    x0, x1 = max(0, int(np.floor(cx - ext[0]))), min(w, int(np.ceil(cx + ext[0])) + 1)
    y0, y1 = max(0, int(np.floor(cy - ext[1]))), min(h, int(np.ceil(cy + ext[1])) + 1)
    if x1 <= x0 or y1 <= y0:
        return None
    dx = (np.arange(x0, x1) - cx)[None, :]
    dy = (np.arange(y0, y1) - cy)[:, None]
    q = m[0, 0] * dx * dx + 2 * m[0, 1] * dx * dy + m[1, 1] * dy * dy
    phi = np.arctan2(dy, dx)
    wobble = 1.0
    for k, (amp, ph) in zip((2, 3, 4), c.harmonics, strict=True):
        wobble = wobble + amp * np.cos(k * phi - ph)
    q = q * wobble
    inside = np.clip(1.0 - q, 0.0, None)
    thick = 2.0 * np.sqrt(inside / azz)
    zmid = c.center[2] - (a[0, 2] * dx + a[1, 2] * dy) / azz
    rad = np.sqrt(dx * dx + dy * dy)
    sq = np.sqrt(np.maximum(q, 1e-9))
    edge = rad * (1.0 - 1.0 / sq)
    if planes is None or not len(planes):
        return Projection(y0, x0, q <= 1.0, thick, zmid + thick / 2, edge, (cx, cy))
    lo, hi = zmid - thick / 2 - c.center[2], zmid + thick / 2 - c.center[2]  # relative z
    active = np.zeros(q.shape, dtype=bool)
    for nx, ny, nz, t in planes:
        b = t - nx * dx - ny * dy  # constraint nz * z <= b
        if nz > 1e-6:
            cap = b / nz
            active |= cap < hi
            hi = np.minimum(hi, cap)
        elif nz < -1e-6:
            cap = b / nz
            active |= cap > lo
            lo = np.maximum(lo, cap)
        else:
            cut = b < 0
            active |= cut
            hi = np.where(cut, lo, hi)
    mask = (q <= 1.0) & (hi > lo)
    thick = np.where(mask, hi - lo, 0.0)
    active &= q <= 1.0
    if edges and active.any():
        from scipy import ndimage as ndi

        sd = np.where(mask, 0.5 - ndi.distance_transform_edt(mask),
                      ndi.distance_transform_edt(~mask) - 0.5)
        sd = ndi.gaussian_filter(sd, 0.7)
        near = ndi.binary_dilation(active, iterations=3)
        edge = np.where(near, np.maximum(edge, sd), edge)
    return Projection(y0, x0, mask, thick, c.center[2] + hi, edge, (cx, cy))


def masks_from_projections(projs: list[Projection | None], shape_hw: tuple[int, int]
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Amodal masks, visible masks (top-most cell wins) and the occlusion map."""
    n = len(projs)
    h, w = shape_hw
    amodal = np.zeros((n, h, w), dtype=bool)
    top = np.full((n, h, w), -np.inf, dtype=np.float32)
    for i, pr in enumerate(projs):
        if pr is None:
            continue
        sl = (slice(pr.y0, pr.y0 + pr.mask.shape[0]), slice(pr.x0, pr.x0 + pr.mask.shape[1]))
        amodal[i][sl] = pr.mask
        top[i][sl] = np.where(pr.mask, pr.top_z, -np.inf)
    visible = np.zeros_like(amodal)
    if n:
        covered = amodal.any(axis=0)
        winner = np.argmax(top, axis=0)
        for i in range(n):
            visible[i] = covered & (winner == i)
    occlusion = (amodal.sum(axis=0) >= 2).astype(np.float32)
    return amodal, visible, occlusion
