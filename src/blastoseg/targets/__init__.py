"""Training targets computed from instance masks: per-head pixel targets of the SE-U-Net
(:mod:`.heads`) and the overlap-aware probability maps that weight the overlap loss
(:mod:`.probability`). numpy/scipy only (no torch), so the napari preview can use them."""

from blastoseg.targets.heads import HEADS, head_targets
from blastoseg.targets.probability import (
    PROBABILITY_VARIANTS,
    VARIANT_DESCRIPTIONS,
    VARIANT_PARAMS,
    ProbabilityParams,
    probability_map,
)
from blastoseg.targets.probability_cache import ProbabilityMapCache

__all__ = [
    "HEADS",
    "PROBABILITY_VARIANTS",
    "VARIANT_DESCRIPTIONS",
    "VARIANT_PARAMS",
    "ProbabilityMapCache",
    "ProbabilityParams",
    "head_targets",
    "probability_map",
]
