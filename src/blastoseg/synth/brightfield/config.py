"""Configuration of the synthetic brightfield cell renderer: every realism knob in one place."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from blastoseg.errors import BlastosegError

Range = tuple[float, float]

#: the frame size the pixel-valued defaults are tuned for
REFERENCE_SIZE = 512


@dataclass
class BrightfieldConfig:
    """Knobs of :func:`blastoseg.synth.brightfield.render_brightfield` and of copy-paste.

    A ``(lo, hi)`` tuple is sampled uniformly per scene (or per cell, for cell-level knobs).
    Lengths in pixels are for a :data:`REFERENCE_SIZE` frame; :meth:`for_size` rescales them
    (and the cell count) for another frame size. Defaults imitate adherent cells (and the
    flat squamous cells of a Pap smear) under a brightfield microscope with a 20x objective,
    slightly defocused above and below the focal plane.
    """

    # --- frame --------------------------------------------------------------------------
    image_size: tuple[int, int] = (REFERENCE_SIZE, REFERENCE_SIZE)
    pixel_size_um: float = 0.5          # micrometres per pixel (enters the optics)

    # --- cells: geometry (pixels) ---------------------------------------------------------
    n_cells: Range = (6.0, 14.0)        # cells per scene, before placement rejections
    cell_length_px: Range = (70.0, 150.0)   # long axis of a cell body
    elongation: Range = (1.4, 3.2)      # long / short axis of the base ellipse
    irregularity: float = 0.12          # amplitude of the random Fourier outline (relative)
    polygonal: float = 0.5              # probability of an angular (polygonal) outline
    bend: Range = (0.0, 0.35)           # banana-like curvature of the long axis
    protrusions: Range = (1.0, 5.0)     # lamellipodia / processes per cell
    protrusion_length: Range = (0.2, 0.8)  # extra radius of a protrusion, fraction of radius
    nucleus_size: Range = (0.28, 0.45)  # nucleus diameter / cell short axis
    nucleus_elongation: Range = (1.0, 1.5)
    overlap: Range = (0.0, 0.2)         # overlap ratio of each new cell with those placed
    placement_tries: int = 60           # random positions tried per cell before giving up
    max_outside: float = 0.35           # largest fraction of a cell allowed outside the frame

    # --- cells: optics --------------------------------------------------------------------
    cell_thickness_um: Range = (0.8, 1.8)    # cytoplasm thickness near the nucleus
    edge_width_px: Range = (2.0, 5.0)   # how fast the thickness rises from the outline
    nucleus_thickness_um: Range = (1.0, 2.5)  # extra thickness of the nucleus dome
    dn_cytoplasm: float = 0.03          # refractive-index excess over the medium
    dn_nucleus: float = 0.035
    wavelength_um: float = 0.55
    texture: Range = (0.05, 0.15)       # relative thickness modulation (granular cytoplasm)
    phase_strength: Range = (0.8, 1.3)  # gain on the transport-of-intensity (phase) term
    absorption: Range = (0.01, 0.05)    # absorbance of the cytoplasm per micrometre
    nucleus_absorption: Range = (0.04, 0.15)  # absorbance of a nucleus per micrometre (stain)
    defocus_um: tuple[Range, Range] = ((2.0, 5.0), (2.0, 5.0))  # |z| below / above focus
    defocus_blur: float = 0.12          # blur sigma (um) per um of defocus (~ effective NA)
    focus_blur_um: float = 0.3          # blur sigma (um) of the optics in focus
    debris: Range = (0.0, 25.0)         # small dark specks on the slide (per frame)

    # --- copy-paste (thesis section 4.4.1) --------------------------------------------------
    paste_scale: Range = (0.75, 1.3)    # isotropic resize of a pasted cell
    paste_elastic_alpha: Range = (2.0, 6.0)   # elastic displacement amplitude (px)
    paste_elastic_sigma: Range = (6.0, 14.0)  # smoothness of the displacement field (px)
    paste_edge_blur_px: float = 1.0     # Gaussian blur of the pasted mask's edge
    paste_sources: int = 3              # rendered scenes whose cells feed one pasted scene

    # --- illumination and camera -----------------------------------------------------------
    background_level: Range = (30000.0, 48000.0)  # grey level of the empty slide (uint16)
    illumination_variation: Range = (0.02, 0.12)  # smooth uneven illumination (relative)
    photons: Range = (4000.0, 20000.0)  # photo-electrons at the background level (shot noise)
    read_noise: Range = (40.0, 200.0)   # read noise, grey levels

    def __post_init__(self) -> None:
        h, w = (int(v) for v in self.image_size)
        if h < 32 or w < 32:
            raise BlastosegError(f"image_size must be at least 32 x 32 pixels; got {h} x {w}")
        self.image_size = (h, w)
        lo, hi = self.overlap
        if not 0.0 <= lo <= hi < 1.0:
            raise BlastosegError(f"overlap must be a range lo,hi with 0 <= lo <= hi < 1; "
                                 f"got {lo},{hi}")
        if self.n_cells[1] < 1 or self.n_cells[0] > self.n_cells[1]:
            raise BlastosegError(f"n_cells must be a range with at least one cell; "
                                 f"got {self.n_cells}")

    def for_size(self, size: int | tuple[int, int]) -> BrightfieldConfig:
        """A copy for another frame size with the same number of cells: the cells' pixel
        lengths scale with the frame, the optics (pixel size, defocus, blur) stay, so edges
        and nuclei look alike at every size (the cells are smaller in micrometres)."""
        hw = (int(size), int(size)) if isinstance(size, (int, float)) else tuple(
            int(v) for v in size)
        s = min(hw) / float(min(self.image_size))

        def scale(r: tuple) -> tuple:
            return tuple(v * s for v in r)
        return replace(
            self, image_size=hw,
            cell_length_px=scale(self.cell_length_px),
            edge_width_px=scale(self.edge_width_px),
            paste_elastic_alpha=scale(self.paste_elastic_alpha),
            paste_elastic_sigma=scale(self.paste_elastic_sigma),
            paste_edge_blur_px=self.paste_edge_blur_px * max(s, 0.5),
        )

    def to_dict(self) -> dict:
        """JSON-able copy (tuples become lists)."""
        def plain(v):
            return [plain(x) for x in v] if isinstance(v, (tuple, list)) else v
        return {k: plain(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> BrightfieldConfig:
        """Inverse of :meth:`to_dict` (unknown keys are an error)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise BlastosegError(f"unknown brightfield config keys {unknown}; known: "
                                 f"{sorted(names)}")

        def tup(v):
            return tuple(tup(x) for x in v) if isinstance(v, list) else v
        return cls(**{k: tup(v) for k, v in d.items()})
