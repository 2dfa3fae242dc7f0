"""Knobs of the synthetic oocyte renderer (S3): geometry in micrometres, optics, abnormalities."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from blastoseg.errors import BlastosegError

Range = tuple[float, float]

#: "hoffman": relief (modulation) contrast, one side of every edge bright and the other dark;
#: "inverted": brightfield of an inverted microscope at 40x (the paper's setting): absorption
#: plus the slight defocus contrast of a phase object; "mixed": each oocyte draws one.
CONTRASTS = ("hoffman", "inverted", "mixed")
#: "realistic": the abnormalities drawn as a clinic sees them (refractile bodies and dark
#: granules, vacuoles, SER discs, central granularity); "paper": the random label maps of
#: Andreini et al. (1 to 5 round inclusions of 2-7 px at 256 x 256, nothing else).
LABEL_MAPS = ("realistic", "paper")


@dataclass
class OocyteConfig:
    """Every knob of :func:`blastoseg.synth.oocyte.render_oocyte`.

    A ``(lo, hi)`` range is drawn uniformly per oocyte, a probability once per oocyte.
    Defaults: a human MII oocyte at 40x, the ooplasm about 115 um across.
    """

    image_size: tuple[int, int] = (256, 256)
    contrast: str = "mixed"
    hoffman_fraction: float = 0.5       # share of Hoffman images in "mixed" contrast
    label_maps: str = "realistic"
    pixel_size_um: float = 0.8          # at 256 px; scaled so the oocyte fills the same share
    magnification_jitter: float = 0.06  # log-normal sd of the magnification
    off_centre: float = 0.07            # max centre offset, fraction of the frame
    cut_by_frame_prob: float = 0.04     # the oocyte pushed half out of the frame

    # --- geometry (um) -------------------------------------------------------------------
    ooplasm_diameter_um: Range = (108.0, 122.0)
    perivitelline_um: Range = (2.0, 9.0)
    zona_thickness_um: Range = (13.0, 20.0)
    ellipticity: Range = (0.0, 0.06)
    polar_body_prob: float = 0.92
    polar_body_diameter_um: Range = (9.0, 15.0)
    polar_body_fragmented_prob: float = 0.25

    # --- abnormalities -------------------------------------------------------------------
    inclusion_prob: float = 0.8
    inclusions: Range = (1.0, 5.0)             # count when present
    inclusion_diameter_um: Range = (1.6, 6.0)  # the paper's 2-7 px at 256 x 256
    refractile_body_prob: float = 0.35         # one larger refractile body (5-10 um)
    vacuole_prob: float = 0.3
    vacuoles: Range = (1.0, 3.0)
    vacuole_diameter_um: Range = (5.0, 20.0)
    ser_prob: float = 0.2
    ser_clusters: Range = (1.0, 2.0)
    ser_diameter_um: Range = (8.0, 18.0)
    central_granularity_prob: float = 0.25

    # --- optics and finishing (domain randomisation) -------------------------------------
    background_level: Range = (120.0, 190.0)
    ooplasm_dn: Range = (0.012, 0.024)   # refractive-index excess of the ooplasm
    granularity: Range = (0.05, 0.3)
    granule_size_px: Range = (0.7, 2.0)
    relief_gain: Range = (250.0, 650.0)
    defocus_um: Range = (-2.0, 2.0)       # inverted contrast: signed defocus of the plane
    absorb_ooplasm: Range = (0.08, 0.35)  # inverted contrast: darkening of the ooplasm
    blur_px: Range = (0.3, 1.3)
    noise_sigma: Range = (1.0, 7.0)
    shot_noise: Range = (0.01, 0.12)
    gamma_sd: float = 0.2
    jpeg_prob: float = 0.35
    vignetting_prob: float = 0.6
    cumulus_prob: float = 0.3
    debris: Range = (0.0, 8.0)
    pipette_prob: float = 0.2

    def __post_init__(self) -> None:
        if self.contrast not in CONTRASTS:
            raise BlastosegError(f"contrast must be one of {', '.join(CONTRASTS)}; got "
                                 f"{self.contrast!r}")
        if self.label_maps not in LABEL_MAPS:
            raise BlastosegError(f"label_maps must be one of {', '.join(LABEL_MAPS)}; got "
                                 f"{self.label_maps!r}")
        if min(self.image_size) < 32:
            raise BlastosegError(f"image_size must be at least 32 px per side; got "
                                 f"{self.image_size}")

    def to_dict(self) -> dict:
        """JSON-able copy (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
