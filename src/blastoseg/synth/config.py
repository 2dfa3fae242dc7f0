"""Configuration of the synthetic embryo generator: every realism knob in one dataclass."""

from __future__ import annotations

from dataclasses import asdict, dataclass

Range = tuple[float, float]

#: "crop": the embryo fills most of the frame (microscope crops, the original generator);
#: "incubator": full incubator frames, the embryo small inside a micro-well with a bright rim
#: (or beside a culture-dish edge); "mixed": each frame draws one of the two.
MODES = ("crop", "incubator", "mixed")
#: "default": the original appearance ranges; "wide": wider domain randomisation (solid,
#: granular cells with flattened contact faces; relief polarity, gamma, blur, noise, JPEG).
APPEARANCES = ("default", "wide")
#: "cleavage": day 1-3 embryos (1-16 blastomeres); "blastocyst": day 5-6 blastocysts (no
#: blastomere instances, see :mod:`blastoseg.synth.blastocyst`); "mixed": each frame draws one.
STAGES = ("cleavage", "blastocyst", "mixed")
#: blastocyst sub-stages, in the order of ``blastocyst_stage_weights``
BLASTOCYST_STAGES = ("early", "full", "expanded", "hatching")


@dataclass
class EmbryoConfig:
    """Knobs of :func:`blastoseg.synth.render_embryo` and :func:`render_timelapse`.

    A ``(lo, hi)`` tuple is sampled uniformly per embryo; a probability is drawn per embryo.
    Defaults imitate day 1-3 human embryos in a time-lapse incubator (Hoffman-like relief).
    """

    # --- frame and scale ---------------------------------------------------------------
    mode: str = "crop"                  # "crop" | "incubator" | "mixed" (see MODES)
    incubator_fraction: float = 0.5     # share of incubator frames in "mixed" mode
    appearance: str = "default"         # "default" | "wide" (see APPEARANCES)
    stage: str = "cleavage"             # "cleavage" | "blastocyst" | "mixed" (see STAGES)
    blastocyst_fraction: float = 0.5    # share of blastocyst frames in stage "mixed"
    image_size: tuple[int, int] = (500, 500)
    pixel_size_um: float = 0.42         # at 500 px; scaled so the embryo fills the same fraction
    magnification_jitter: float = 0.07  # log-normal sd of the magnification
    off_centre: float = 0.12            # max embryo offset from the frame centre, fraction of size

    # --- embryo geometry (micrometres) ---------------------------------------------------
    zygote_diameter_um: Range = (100.0, 118.0)
    perivitelline_um: Range = (2.0, 10.0)      # gap between zygote and the zona's inner face
    zona_thickness_um: Range = (13.0, 21.0)
    zona_ellipticity: Range = (0.0, 0.07)
    cleavage_asymmetry: float = 0.07    # sd of the volume fraction a daughter receives
    cell_anisotropy: float = 0.07       # sd of log semi-axes before compression
    outline_harmonics: float = 0.03     # gentle non-elliptic wobble of outlines
    compression: float = 0.5            # how much neighbours and zona flatten a cell
    allowed_overlap: float = 0.14       # soft-sphere interpenetration while packing

    # --- optics --------------------------------------------------------------------------
    shear_angle_deg: float | None = None  # relief direction; None = random per embryo
    relief_gain: Range = (380.0, 560.0)   # grey levels per (um of path excess per pixel)
    cytoplasm_dn: float = 0.018           # refractive-index excess of cytoplasm
    zona_dn: float = 0.012
    granularity: Range = (0.12, 0.35)     # relative path modulation by granules
    granule_size_px: Range = (1.0, 2.0)
    membrane_dark: Range = (0.30, 0.50)   # absorption on a cell's outline
    membrane_width_px: Range = (1.1, 1.9)
    occluded_outline: Range = (0.25, 0.5)  # outline strength under another cell
    cytoplasm_absorb: Range = (0.12, 0.3)   # per 100 um of cytoplasm
    nucleus_contrast: Range = (0.2, 0.4)  # path deficit of nuclei relative to cytoplasm
    depth_blur: Range = (3.0, 6.0)        # extra blur (px) per zygote radius away from focus
    defocus_sigma: Range = (0.5, 1.2)     # global blur of the whole frame (px)
    halo: Range = (0.3, 0.8)
    background_level: Range = (135.0, 175.0)
    background_texture: float = 0.012
    noise_sigma: Range = (1.5, 4.0)       # read noise in grey levels
    shot_noise: float = 0.04

    # --- biology -------------------------------------------------------------------------
    pronuclei_prob: float = 0.85
    nucleus_visible_prob: float = 0.65
    fragments: Range = (0.0, 6.0)         # number of fragments after the first cleavage
    cumulus_clusters: Range = (0.0, 3.5)
    debris_particles: Range = (2.0, 14.0)

    # --- blastocysts (stage "blastocyst" / "mixed") ----------------------------------
    blastocyst_stage_weights: tuple[float, float, float, float] = (0.2, 0.3, 0.35, 0.15)
    blastocyst_collapse_prob: float = 0.1   # TE pulled away from the zona, shrunk
    trophectoderm_cells: Range = (45.0, 130.0)  # TE cells on the whole sphere (expanded)

    # --- artefacts -----------------------------------------------------------------------
    well_edge_prob: float = 0.45
    vignetting_prob: float = 0.7
    vignetting_strength: Range = (0.1, 0.45)
    text_prob: float = 0.85

    # --- incubator full frames (mode "incubator" / "mixed") -----------------------------
    embryo_fraction: Range = (0.25, 0.70)  # zona outer DIAMETER / short side of the frame
    well_ratio: Range = (1.6, 3.0)      # micro-well radius / zona outer radius
    dish_edge_prob: float = 0.2         # a culture-dish edge crescent instead of a micro-well
    touch_rim_prob: float = 0.3         # embryo pushed against the well's rim
    partial_rim_prob: float = 0.5       # the rim fades on the dark side (partial ring)
    rim_brightness: Range = (0.35, 1.1)  # rim peak over the medium, fraction of background
    rim_width: Range = (0.012, 0.04)    # rim width, fraction of the frame's short side
    outside_level: Range = (0.1, 0.9)  # brightest part of the outside of the well
    ripple: Range = (0.05, 0.25)        # contrast of the concentric ripples outside the well
    well_shadow_prob: float = 0.6      # the well's wall shades one side of the frame black
    bubble_prob: float = 0.25
    pipette_prob: float = 0.15
    floating_cumulus: Range = (0.0, 3.0)  # free cumulus clumps in the well
    specks: Range = (0.0, 25.0)         # out-of-focus debris specks in the well
    incubator_text_prob: float = 0.5

    # --- time-lapse ----------------------------------------------------------------------
    drift_um: float = 0.4                 # embryo random-walk step per frame
    cell_jitter_um: float = 0.6           # blastomere random-walk step per frame
    rotation_deg: float = 0.4             # embryo in-plane rotation step per frame
    flicker: float = 0.02                 # sd of the per-frame illumination gain

    def __post_init__(self) -> None:
        from blastoseg.errors import BlastosegError

        if self.mode not in MODES:
            raise BlastosegError(f"mode must be one of {', '.join(MODES)}; got {self.mode!r}")
        if self.stage not in STAGES:
            raise BlastosegError(f"stage must be one of {', '.join(STAGES)}; got {self.stage!r}")
        if self.appearance not in APPEARANCES:
            raise BlastosegError(
                f"appearance must be one of {', '.join(APPEARANCES)}; got {self.appearance!r}")

    def to_dict(self) -> dict:
        """JSON-able copy (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
