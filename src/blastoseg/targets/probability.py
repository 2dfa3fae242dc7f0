r"""Overlap-aware probability maps P (thesis section 4.3, eq. 4.3-4.4; variants of section 5.4).

P is a per-pixel map in [0, 1] that tells the overlap head's loss (eq. 4.5 and the eq. 5.1
alternative, :mod:`blastoseg.train.overlap_losses`) which pixels are hard: those near cell
outlines, near nuclei, or around annotated overlaps. :func:`probability_map` is the single
function that computes it, for training and for the napari preview; the preview uses
:class:`~blastoseg.targets.probability_cache.ProbabilityMapCache`, which recomputes only the cells that were edited and gives the
same map bit for bit.

Our reading of the thesis (its text is not at hand; the formulas below are what we implement)
----------------------------------------------------------------------------------------------
For every cell i (an AMODAL mask, so cells may overlap) a per-cell map is computed inside the
cell, then the cells are max-reduced (eq. 4.3) and log re-weighted (eq. 4.4):

* ``border`` (eq. 4.3-4.4). :math:`e_i(x)` is the Euclidean distance transform of cell i's own
  mask (distance to the nearest pixel outside the cell; 1 on its outline), computed on the
  cell's bounding-box crop. It is normalised per cell to :math:`d_i = (e_i - 1) /
  (\max e_i - 1) \in [0, 1]` (0 on the outline, 1 at the cell's innermost point; a cell at most
  two pixels thick has :math:`d_i = 0`). Then

  .. math:: P_i(x) = f + (1 - f)\,\Bigl(1 - \frac{\log(1 + a\,d_i(x))}{\log(1 + a)}\Bigr),
            \qquad P(x) = \max_{i \ni x} P_i(x)

  so P = 1 on every outline and falls to the floor f at the cell's centre, fast at first
  (the log re-weighting: large ``a`` concentrates the weight on a thin band along the
  outlines, ``a = 0`` is linear). The maximum is over the per-cell *proximities*, so the
  outline of a cell that lies inside another cell (inside an overlap) keeps a high P: this is
  what makes the map overlap-aware. Pixels in no cell get the background value b.
* ``nuclei`` (nuclei-centred, section 5.4): the same, with :math:`d_i` the distance from the
  cell's nucleus (normalised by its maximum inside the cell): P = 1 on the nucleus and decays
  towards the far side of the cell. A cell's nucleus is the nucleus label (value of the
  ``nuclei`` array) covering most of the cell's pixels, so a neighbour's nucleus lying under
  an overlapping cell does not count when labels are given; with a bool mask every nucleus
  pixel inside the cell counts. A cell without a nucleus uses its innermost pixels (the maxima
  of :math:`e_i`) as the seed.
* ``overlap_extended`` (section 5.4): annotated overlap regions O (pixels in two or more amodal
  masks, or the ``overlap`` argument) get P = 1 and a band of width w around them decays as
  :math:`f + (1 - f)(1 - \log(1 + a\,t)/\log(1 + a))` with :math:`t = \min(\mathrm{dist}(x, O)
  / w, 1)`; the rest of every cell gets f. The band is kept inside the cells (outside them P
  is the background value, as for every variant).
* ``combined_border_overlap`` / ``combined_nuclei_overlap``: the pixel-wise maximum of
  ``border`` (resp. ``nuclei``) and ``overlap_extended``.
* ``none``: all ones (training without a probability map; the no-map baseline).

The image edge is not a cell outline: a cell cut by it has no high-P band along it (its real
outline lies outside the image). A cell covering the whole image is measured from the edge.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np
from scipy import ndimage as ndi

from blastoseg.errors import BlastosegError, InvalidImageError
from blastoseg.instances import FrameInstances
from blastoseg.targets.heads import inside_distance

__all__ = [
    "PROBABILITY_VARIANTS",
    "VARIANT_DESCRIPTIONS",
    "VARIANT_PARAMS",
    "ProbabilityParams",
    "as_label_layers",
    "log_reweight",
    "probability_map",
]

#: Names of the probability-map variants, in the order the preview widget lists them.
PROBABILITY_VARIANTS = ("border", "nuclei", "overlap_extended", "combined_border_overlap",
                        "combined_nuclei_overlap", "none")


@dataclass(frozen=True)
class ProbabilityParams:
    """Parameters of the probability maps (which variant uses which: :data:`VARIANT_PARAMS`).

    Attributes
    ----------
    background
        b: P of pixels inside no cell (thesis: 0.1).
    floor
        f: the lowest P inside a cell (at its centre for ``border``, farthest from the
        nucleus for ``nuclei``, outside the overlap band for ``overlap_extended``).
    log_scale
        a in the log re-weighting ``1 - log(1 + a d) / log(1 + a)`` (eq. 4.4); larger =
        weight concentrated closer to the outlines / nuclei / overlaps; 0 = linear decay.
    overlap_width
        w: width in pixels of the band around overlap regions (overlap variants).
    """

    background: float = 0.1
    floor: float = 0.1
    log_scale: float = 10.0
    overlap_width: float = 8.0

    def __post_init__(self) -> None:
        for name in ("background", "floor"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
                raise BlastosegError(f"probability-map parameter {name}={value!r} must be a "
                                     f"number in [0, 1]")
        for name in ("log_scale", "overlap_width"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise BlastosegError(f"probability-map parameter {name}={value!r} must be a "
                                     f"finite number >= 0")

    def to_dict(self) -> dict:
        return asdict(self)


#: Parameters each variant uses (fields of :class:`ProbabilityParams`).
VARIANT_PARAMS: dict[str, tuple[str, ...]] = {
    "border": ("background", "floor", "log_scale"),
    "nuclei": ("background", "floor", "log_scale"),
    "overlap_extended": ("background", "floor", "log_scale", "overlap_width"),
    "combined_border_overlap": ("background", "floor", "log_scale", "overlap_width"),
    "combined_nuclei_overlap": ("background", "floor", "log_scale", "overlap_width"),
    "none": (),
}

#: One line per variant, for the preview widget and the command line help.
VARIANT_DESCRIPTIONS: dict[str, str] = {
    "border": "high on every cell's outline (also inside overlaps), log-decaying to the "
              "cell centre (eq. 4.3-4.4)",
    "nuclei": "high on each cell's nucleus, log-decaying with the distance from it; needs a "
              "nucleus mask (cells without one use their centre)",
    "overlap_extended": "high on annotated overlaps and in a band of width overlap_width "
                        "around them",
    "combined_border_overlap": "maximum of 'border' and 'overlap_extended'",
    "combined_nuclei_overlap": "maximum of 'nuclei' and 'overlap_extended'",
    "none": "all ones (no probability map: the baseline)",
}

# variant -> (per-cell part, with the overlap band)
_SPEC: dict[str, tuple[str, bool]] = {
    "border": ("border", False),
    "nuclei": ("nuclei", False),
    "overlap_extended": ("flat", True),
    "combined_border_overlap": ("border", True),
    "combined_nuclei_overlap": ("nuclei", True),
}

_PARAM_NAMES = tuple(f.name for f in fields(ProbabilityParams))


def make_params(variant: str, params: dict | ProbabilityParams | None = None
                ) -> ProbabilityParams:
    """Check ``variant`` and build its :class:`ProbabilityParams` from keyword values."""
    if variant not in PROBABILITY_VARIANTS:
        raise BlastosegError(f"unknown probability-map variant {variant!r}; choose one of "
                             f"{', '.join(PROBABILITY_VARIANTS)}")
    if isinstance(params, ProbabilityParams):
        return params
    params = dict(params or {})
    unknown = sorted(set(params) - set(_PARAM_NAMES))
    if unknown:
        raise BlastosegError(f"unknown probability-map parameter(s) {unknown}; known: "
                             f"{', '.join(_PARAM_NAMES)}")
    return ProbabilityParams(**params)


def log_reweight(d: np.ndarray, a: float) -> np.ndarray:
    """``1 - log(1 + a d) / log(1 + a)`` for normalised distances d in [0, 1] (eq. 4.4):
    1 at d = 0, 0 at d = 1, decreasing; ``a = 0`` gives ``1 - d``."""
    d = np.asarray(d, dtype=np.float64)
    if a <= 0:
        return 1.0 - d
    return 1.0 - np.log1p(a * d) / math.log1p(a)


def _level(d: np.ndarray, p: ProbabilityParams) -> np.ndarray:
    return p.floor + (1.0 - p.floor) * log_reweight(d, p.log_scale)


# --- input checking -------------------------------------------------------------------------

def as_label_layers(labels: np.ndarray, what: str = "labels") -> np.ndarray:
    """(K, H, W) non-negative integer label layers from a 2D label image, a (K, H, W) stack of
    label layers (labels within a layer do not overlap; layers may) or an (N, H, W) bool mask
    stack (one cell per layer).

    Raises
    ------
    InvalidImageError
        Not 2D/3D, negative labels, non-integer values (e.g. an intensity image chosen instead
        of a labels layer), or a non-numeric dtype.
    """
    arr = np.asarray(labels)
    if arr.ndim not in (2, 3):
        raise InvalidImageError(f"{what} must be a 2D label image (H, W) or a stack of masks "
                                f"or label layers (N, H, W); got shape {arr.shape}")
    if arr.dtype == bool:
        arr = arr.view(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        if arr.size and not (np.isfinite(arr).all() and np.array_equal(arr, np.round(arr))):
            raise InvalidImageError(f"{what} must hold integer labels (one integer per cell, "
                                    f"0 = background); got {arr.dtype} values that are not "
                                    f"whole numbers. Pick a Labels layer or a label image, not "
                                    f"an intensity image")
        arr = arr.astype(np.int64)
    elif not np.issubdtype(arr.dtype, np.integer):
        raise InvalidImageError(f"{what} must hold integer labels; got dtype {arr.dtype}")
    if arr.dtype == np.uint64:
        if arr.size and arr.max() > np.iinfo(np.int64).max:
            raise InvalidImageError(f"{what}: label values above 2**63 are not supported")
        arr = arr.astype(np.int64)
    if np.issubdtype(arr.dtype, np.signedinteger) and arr.size and arr.min() < 0:
        raise InvalidImageError(f"{what} must be >= 0 (0 = background); found the negative "
                                f"label {int(arr.min())}")
    return arr[None] if arr.ndim == 2 else arr


def _layers_of(instances_or_masks) -> np.ndarray:
    if isinstance(instances_or_masks, FrameInstances):
        return as_label_layers(instances_or_masks.masks, "instance masks")
    return as_label_layers(instances_or_masks, "instances_or_masks")


def _check_nuclei(nuclei, shape: tuple[int, int]) -> np.ndarray | None:
    if nuclei is None:
        return None
    arr = np.asarray(nuclei)
    if arr.shape != shape:
        raise InvalidImageError(f"nucleus mask is {arr.shape} but the labels are {shape}; "
                                f"they must have the same size")
    return as_label_layers(arr, "nuclei")[0]


def _check_overlap(overlap, shape: tuple[int, int]) -> np.ndarray | None:
    if overlap is None:
        return None
    arr = np.asarray(overlap)
    if arr.shape != shape:
        raise InvalidImageError(f"overlap mask is {arr.shape} but the labels are {shape}; "
                                f"they must have the same size")
    return arr > 0.5 if np.issubdtype(arr.dtype, np.floating) else arr > 0


# --- cells ----------------------------------------------------------------------------------

@dataclass
class _Cell:
    """One cell: its bounding box grown by one pixel (clipped), its mask and its P_i there
    (-1 outside the mask)."""

    y0: int
    y1: int
    x0: int
    x1: int
    mask: np.ndarray
    value: np.ndarray | None = None


def _grow(y0: int, y1: int, x0: int, x1: int, by: int, shape: tuple[int, int]
          ) -> tuple[int, int, int, int]:
    return max(y0 - by, 0), min(y1 + by, shape[0]), max(x0 - by, 0), min(x1 + by, shape[1])


def _layer_cells(layer: np.ndarray, k: int) -> dict[tuple[int, int], _Cell]:
    """Cells of one label layer, keyed (layer, label)."""
    cells: dict[tuple[int, int], _Cell] = {}
    top = int(layer.max()) if layer.size else 0
    if top == 0:
        return cells
    if top > 65536:  # sparse huge label values: number them 1..n for find_objects
        values = np.unique(layer)
        values = values[values > 0]
        numbered = np.zeros(layer.shape, dtype=np.int64)
        fg = layer > 0
        numbered[fg] = np.searchsorted(values, layer[fg]) + 1
        objects = ndi.find_objects(numbered)
        labels = [int(v) for v in values]
    else:
        objects = ndi.find_objects(layer)
        labels = list(range(1, len(objects) + 1))
    for label, sl in zip(labels, objects, strict=True):
        if sl is None:
            continue
        y0, y1, x0, x1 = _grow(sl[0].start, sl[0].stop, sl[1].start, sl[1].stop, 1,
                               layer.shape)
        cells[(k, label)] = _Cell(y0, y1, x0, x1, layer[y0:y1, x0:x1] == label)
    return cells


def _cell_from_window(layer: np.ndarray, label: int, y0: int, y1: int, x0: int, x1: int
                      ) -> _Cell | None:
    """The cell ``label`` of ``layer``, all of whose pixels lie in the window; None if gone."""
    window = layer[y0:y1, x0:x1] == label
    rows = np.flatnonzero(window.any(axis=1))
    if not len(rows):
        return None
    cols = np.flatnonzero(window.any(axis=0))
    cy0, cy1, cx0, cx1 = _grow(y0 + rows[0], y0 + rows[-1] + 1, x0 + cols[0], x0 + cols[-1] + 1,
                               1, layer.shape)
    return _Cell(cy0, cy1, cx0, cx1, layer[cy0:cy1, cx0:cx1] == label)


def _cell_value(cell: _Cell, part: str, nuclei: np.ndarray | None, p: ProbabilityParams
                ) -> np.ndarray:
    """P_i on the cell's crop, float32, -1 outside the cell."""
    mask = cell.mask
    if part == "flat":
        return np.where(mask, np.float32(p.floor), np.float32(-1))
    e = inside_distance(mask)
    if part == "border":
        top = e.max()
        d = (e - 1.0) / (top - 1.0) if top > 1 else np.zeros_like(e)
    else:  # nuclei-centred
        seed = None
        if nuclei is not None:
            crop = nuclei[cell.y0:cell.y1, cell.x0:cell.x1]
            inside = crop[mask]
            inside = inside[inside > 0]
            if inside.size:
                values, counts = np.unique(inside, return_counts=True)
                seed = mask & (crop == values[np.argmax(counts)])
        if seed is None:
            seed = mask & (e == e.max())
        dist = ndi.distance_transform_edt(~seed)
        top = dist[mask].max()
        d = dist / top if top > 0 else np.zeros_like(dist)
    return np.where(mask, _level(np.clip(d, 0.0, 1.0), p), -1.0).astype(np.float32)


# --- composition ----------------------------------------------------------------------------

class _Composer:
    """Per-cell maps, their max-reduction and the overlap band, updatable by region."""

    def __init__(self, shape: tuple[int, int], variant: str, params: ProbabilityParams,
                 nuclei: np.ndarray | None, overlap: np.ndarray | None) -> None:
        self.shape = shape
        self.params = params
        self.part, self.banded = _SPEC[variant]
        self.nuclei = nuclei
        self.fixed_overlap = overlap
        self.cells: dict = {}
        self.acc = np.full(shape, -1.0, dtype=np.float32)
        self.coverage = (np.zeros(shape, dtype=np.int32)
                         if self.banded and overlap is None else None)
        self.band = (np.full(shape, params.floor, dtype=np.float32)
                     if self.banded else None)
        self.out = np.full(shape, params.background, dtype=np.float32)

    # full computation
    def build(self, cells: dict) -> None:
        self.cells = {}
        for key, cell in cells.items():
            cell.value = _cell_value(cell, self.part, self.nuclei, self.params)
            self.cells[key] = cell
        if self.coverage is not None:
            self.coverage[:] = 0
            for cell in self.cells.values():
                self.coverage[cell.y0:cell.y1, cell.x0:cell.x1] += cell.mask
        whole = (0, self.shape[0], 0, self.shape[1])
        self._reduce(whole)
        if self.banded:
            self._band(whole)
        self._final(whole)

    def recompute_values(self) -> None:
        self.build(self.cells)

    # incremental update
    def replace(self, changes: dict) -> None:
        """Apply ``key -> new _Cell (or None: deleted)`` and update the touched regions."""
        regions = []
        for key, new in changes.items():
            old = self.cells.pop(key, None)
            box = None
            for cell, sign in ((old, -1), (new, 1)):
                if cell is None:
                    continue
                if self.coverage is not None:
                    self.coverage[cell.y0:cell.y1, cell.x0:cell.x1] += sign * cell.mask
                b = (cell.y0, cell.y1, cell.x0, cell.x1)
                box = b if box is None else (min(box[0], b[0]), max(box[1], b[1]),
                                             min(box[2], b[2]), max(box[3], b[3]))
            if new is not None:
                new.value = _cell_value(new, self.part, self.nuclei, self.params)
                self.cells[key] = new
            if box is not None:
                regions.append(box)
        for region in regions:
            self._reduce(region)
            wide = region
            if self.banded and self.fixed_overlap is None:
                # the overlap changed only inside ``region``: the band within w of it
                wide = _grow(*region, math.ceil(self.params.overlap_width), self.shape)
                self._band(wide)
            self._final(wide)

    def _reduce(self, region: tuple[int, int, int, int]) -> None:
        y0, y1, x0, x1 = region
        acc = self.acc[y0:y1, x0:x1]
        acc[:] = -1.0
        for c in self.cells.values():
            iy0, iy1, ix0, ix1 = max(y0, c.y0), min(y1, c.y1), max(x0, c.x0), min(x1, c.x1)
            if iy0 >= iy1 or ix0 >= ix1:
                continue
            sub = self.acc[iy0:iy1, ix0:ix1]
            np.maximum(sub, c.value[iy0 - c.y0:iy1 - c.y0, ix0 - c.x0:ix1 - c.x0], out=sub)

    def _overlap(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        if self.fixed_overlap is not None:
            return self.fixed_overlap[y0:y1, x0:x1]
        return self.coverage[y0:y1, x0:x1] >= 2

    def _band(self, region: tuple[int, int, int, int]) -> None:
        """Overlap band on ``region``: exact, because every overlap pixel within w of the region
        lies inside the region grown by ceil(w) + 1, and farther ones give the floor anyway."""
        p = self.params
        y0, y1, x0, x1 = region
        ey0, ey1, ex0, ex1 = _grow(y0, y1, x0, x1, math.ceil(p.overlap_width) + 1, self.shape)
        ov = self._overlap(ey0, ey1, ex0, ex1)
        target = self.band[y0:y1, x0:x1]
        if not ov.any():
            target[:] = np.float32(p.floor)
            return
        dist = ndi.distance_transform_edt(~ov)[y0 - ey0:y1 - ey0, x0 - ex0:x1 - ex0]
        if p.overlap_width > 0:
            t = np.minimum(dist / p.overlap_width, 1.0)
        else:
            t = (dist > 0).astype(np.float64)
        target[:] = _level(t, p).astype(np.float32)

    def _final(self, region: tuple[int, int, int, int]) -> None:
        y0, y1, x0, x1 = region
        acc = self.acc[y0:y1, x0:x1]
        value = acc if self.band is None else np.maximum(acc, self.band[y0:y1, x0:x1])
        self.out[y0:y1, x0:x1] = np.where(acc >= 0, value,
                                          np.float32(self.params.background))


# --- public API -----------------------------------------------------------------------------

def probability_map(instances_or_masks: FrameInstances | np.ndarray, variant: str = "border",
                    *, nuclei: np.ndarray | None = None, overlap: np.ndarray | None = None,
                    **params) -> np.ndarray:
    """The overlap-aware probability map P of one frame (see the module docstring).

    Parameters
    ----------
    instances_or_masks
        :class:`FrameInstances` (amodal masks), an (N, H, W) bool mask stack, a 2D integer
        label image (one label per cell, cells do not overlap; a Labels layer) or a (K, H, W)
        stack of such label layers.
    variant
        One of :data:`PROBABILITY_VARIANTS`.
    nuclei
        (H, W) nucleus mask or label image, for the ``nuclei`` variants (optional: cells
        without a nucleus use their centre).
    overlap
        (H, W) annotated overlap mask for the overlap variants; default: pixels inside two
        or more of the given masks (always empty for a single label image).
    **params
        Fields of :class:`ProbabilityParams` (``background``, ``floor``, ``log_scale``,
        ``overlap_width``).

    Returns
    -------
    numpy.ndarray
        float32 (H, W), values in [0, 1]. Without cells: the background value everywhere.

    Raises
    ------
    InvalidImageError
        Labels that are not integers, negative labels, wrong shapes.
    BlastosegError
        Unknown variant or parameter, parameter out of range.
    """
    p = make_params(variant, params)
    layers = _layers_of(instances_or_masks)
    shape = layers.shape[1:]
    if variant == "none":
        return np.ones(shape, dtype=np.float32)
    composer = _Composer(shape, variant, p, _check_nuclei(nuclei, shape),
                         _check_overlap(overlap, shape))
    cells: dict = {}
    for k, layer in enumerate(layers):
        cells.update(_layer_cells(layer, k))
    composer.build(cells)
    return composer.out
