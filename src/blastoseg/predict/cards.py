"""Typed model cards: a model card's ``config`` read once, checked, into one dataclass per kind.

A model card (:class:`~blastoseg.weights.ModelCard`) stores its settings as a free-form
``config`` dict: the architecture and, per kind, how images are prepared (``preprocess``,
``framing``), what the outputs mean (``postprocess``, ``threshold``) and how large frames are
run (``inference``). ``<Kind>Card.from_card(card)`` reads that dict once, fills in the
defaults of a card that says nothing, and turns a bad value into one clear
:class:`~blastoseg.weights.WeightsError` naming the model and the key. Predictors, the
training tasks and the widgets then read attributes, never dict keys. Which class belongs to
which kind is in :mod:`blastoseg.kinds` (``ModelKind.card``).

Card layouts (``card.config``):

* amodal: ``{"model": AmodalConfig, "framing": {"use_localisation", "min_confidence",
  "margin"}, "postprocess": {"score_threshold", "mask_nms_iou", "layer_rule"}}``
* overlap: ``{"seunet": SEUNetConfig, "preprocess": {"percentiles", "scale"},
  "threshold": {head: value}}``
* brightfield: ``{"model": SparseSEUNetConfig, "preprocess": {"percentiles", "scale"},
  "postprocess": {"score_threshold", "mask_threshold", "mask_nms_iou", "largest_component"},
  "inference": {"max_side", "tile_overlap"}}``; older cards call the NMS IoU ``nms_iou``
  (both are read; ``mask_nms_iou`` wins).
* shape_prior: ``{"vqvae": VQVAEConfig}`` (or the VQVAEConfig keys at the top level)
* pix2pix: ``{"pix2pix": Pix2PixConfig, "preprocess": {...}}``

It lives in ``predict/`` because it reads the framing default and the amodal layer rule
defined here; the training tasks read it too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from blastoseg.errors import BlastosegError
from blastoseg.models.amodal_config import AmodalConfig
from blastoseg.models.configs import VQVAEConfig
from blastoseg.models.pix2pix import Pix2PixConfig
from blastoseg.models.seunet import SEUNetConfig
from blastoseg.models.sparse_seunet import SparseSEUNetConfig
from blastoseg.predict.amodal_post import LayerRule
from blastoseg.predict.framing import DEFAULT_MARGIN
from blastoseg.weights import ModelCard, WeightsError

__all__ = ["AmodalCard", "BrightfieldCard", "OverlapCard", "Pix2PixCard", "ShapePriorCard",
           "brightfield_postprocess", "check_non_negative_int", "check_unit"]

#: normalisation percentiles of the SE-U-Net kinds when the card gives none
DEFAULT_PERCENTILES = (1.0, 99.8)
#: the thesis thresholds the overlap head at 0.3; the other heads at 0.5
DEFAULT_OVERLAP_THRESHOLDS = {"overlap": 0.3, "cytoplasm": 0.5, "nuclei": 0.5}
#: the amodal localiser's confidence below which a frame falls back to the whole frame (the
#: value training uses, :class:`blastoseg.train.amodal_data.AmodalDataset`)
DEFAULT_MIN_CONFIDENCE = 0.15
#: brightfield post-processing of a card without one (S4 section 4.5.3)
DEFAULT_BRIGHTFIELD_POSTPROCESS = {"score_threshold": 0.3, "mask_threshold": 0.5,
                                   "mask_nms_iou": 0.8, "largest_component": True}
#: brightfield frames up to this working size (px per side) run whole; larger ones are tiled
DEFAULT_MAX_SIDE = 1024
#: overlap of the windows of a tiled brightfield frame (working px)
DEFAULT_TILE_OVERLAP = 256


# --- checks shared by the cards and the predictors' overrides ----------------------------------

def _where(source: str) -> str:
    return f" (model {source})" if source else ""


def check_unit(value: Any, name: str, source: str = "", *, allow_none: bool = False
               ) -> float | None:
    """``value`` as a float in [0, 1] (None passes with ``allow_none``), else a clear error
    (a :class:`~blastoseg.errors.BlastosegError`: the value may be the user's override)."""
    if value is None and allow_none:
        return None
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not 0.0 <= float(value) <= 1.0):
        none = " or None" if allow_none else ""
        raise BlastosegError(f"{name} must be a number in [0, 1]{none}, got {value!r}"
                           f"{_where(source)}")
    return float(value)


def check_non_negative_int(value: Any, name: str, source: str = "") -> int:
    """``value`` as a non-negative int (bools refused), else a clear error."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise BlastosegError(f"{name} must be a non-negative integer, got {value!r}"
                           f"{_where(source)}")
    return int(value)


def _section(config: Mapping, key: str, source: str) -> dict:
    value = config.get(key) or {}
    if not isinstance(value, Mapping):
        raise WeightsError(f"model card of {source}: {key} must be a mapping, got "
                           f"{type(value).__name__}")
    return dict(value)


def _numbers(value: Any, what: str, source: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise WeightsError(f"model card of {source}: {what} must be a list of numbers, got "
                           f"{value!r}") from None


def _preprocess(config: Mapping, source: str) -> tuple[tuple[float, float], float]:
    """``(percentiles, scale)`` of a ``preprocess`` block (the SE-U-Net kinds share it)."""
    pre = _section(config, "preprocess", source)
    percentiles = _numbers(pre.get("percentiles", DEFAULT_PERCENTILES),
                           "preprocess.percentiles", source)
    if len(percentiles) != 2 or not 0.0 <= percentiles[0] < percentiles[1] <= 100.0:
        raise WeightsError(f"model card of {source}: preprocess.percentiles must be two "
                           f"increasing numbers in 0..100, got {list(percentiles)}")
    scale = _numbers([pre.get("scale", 1.0)], "preprocess.scale", source)[0]
    if not 0.05 <= scale <= 4.0:
        raise WeightsError(f"model card of {source}: preprocess.scale must be in [0.05, 4], "
                           f"got {scale}")
    return (percentiles[0], percentiles[1]), scale


def _architecture(build, value: Any, source: str):
    """An architecture config from its dict, its errors as WeightsError naming the model."""
    try:
        return build(dict(value or {}))
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"model card of {source}: {exc}") from None


def _framing(config: Mapping, source: str) -> dict:
    """A card's ``framing`` section, checked: ``use_localisation``, ``min_confidence``,
    ``margin`` (>= 0), the fields of every kind that crops around the embryo."""
    framing = _section(config, "framing", source)
    margin = _numbers([framing.get("margin", DEFAULT_MARGIN)], "framing.margin", source)[0]
    if margin < 0:
        raise WeightsError(f"model card of {source}: framing.margin must be >= 0, got "
                           f"{margin}")
    return {"use_localisation": bool(framing.get("use_localisation", True)),
            "min_confidence": _numbers([framing.get("min_confidence", DEFAULT_MIN_CONFIDENCE)],
                                       "framing.min_confidence", source)[0],
            "margin": margin}


# --- one card class per kind ------------------------------------------------------------------

@dataclass(frozen=True)
class AmodalCard:
    """An amodal (Mask R-CNN style) model's card.

    Attributes
    ----------
    model
        The detector's architecture.
    score_threshold
        The calibrated score at which a detection counts as a cell (default 0.5).
    mask_nms_iou
        Mask-NMS IoU: of two detections overlapping more, the lower-scored one goes (0.8).
    layer_rule
        The counting correction for stacked cells (from the occlusion map or the layer
        branch's map), or None.
    use_layer_rule
        Whether the predictor counts with ``layer_rule`` by default (``postprocess.
        use_layer_rule``, default True); a card can carry a rule that users switch on.
    use_localisation, min_confidence, margin
        Framing: localise the embryo in each frame (below ``min_confidence`` the whole frame
        is used) and crop ``(1 + margin)`` x its radius around it, as in training.
    """

    name: str
    model: AmodalConfig
    score_threshold: float = 0.5
    mask_nms_iou: float = 0.8
    layer_rule: LayerRule | None = None
    use_layer_rule: bool = True
    use_localisation: bool = True
    min_confidence: float = DEFAULT_MIN_CONFIDENCE
    margin: float = DEFAULT_MARGIN

    @classmethod
    def from_card(cls, card: ModelCard) -> AmodalCard:
        source, config = card.name, card.config or {}
        post = _section(config, "postprocess", source)
        rule = post.get("layer_rule")
        try:
            layer_rule = None if rule is None else LayerRule.from_dict(rule)
        except (TypeError, ValueError, AttributeError) as exc:
            raise WeightsError(f"model card of {source}: postprocess.layer_rule: {exc}") from None
        return cls(
            name=source,
            model=_architecture(AmodalConfig.from_dict, config.get("model"), source),
            score_threshold=check_unit(post.get("score_threshold", 0.5),
                                       "postprocess.score_threshold", source),
            mask_nms_iou=check_unit(post.get("mask_nms_iou", 0.8), "postprocess.mask_nms_iou",
                                    source),
            layer_rule=layer_rule,
            use_layer_rule=_flag(post.get("use_layer_rule", True), "postprocess.use_layer_rule",
                                 source),
            **_framing(config, source))


def _flag(value, what: str, source: str) -> bool:
    if not isinstance(value, bool):
        raise WeightsError(f"model card of {source}: {what} must be true or false; "
                           f"got {value!r}")
    return value


@dataclass(frozen=True)
class OverlapCard:
    """An overlap (SE-U-Net probability maps) model's card.

    Attributes
    ----------
    seunet
        The network's architecture (its heads, depth, ...).
    percentiles
        Each frame is normalised with its own (low, high) percentiles to [0, 1].
    scale
        The model works at ``scale`` x the image's pixel size (a CPU-sized model trained on
        half-resolution images); maps are resized back.
    thresholds
        Head -> probability threshold of the model's heads (overlap 0.3, others 0.5 unless
        the card's ``threshold`` block says otherwise).
    """

    name: str
    seunet: SEUNetConfig
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES
    scale: float = 1.0
    thresholds: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_card(cls, card: ModelCard) -> OverlapCard:
        source, config = card.name, card.config or {}
        seunet = _architecture(SEUNetConfig.from_dict, config.get("seunet"), source)
        percentiles, scale = _preprocess(config, source)
        given = {**DEFAULT_OVERLAP_THRESHOLDS, **_section(config, "threshold", source)}
        thresholds = {head: check_unit(given.get(head, 0.5), f"the {head} threshold", source)
                      for head in seunet.heads}
        return cls(name=source, seunet=seunet, percentiles=percentiles, scale=scale,
                   thresholds=thresholds)


def brightfield_postprocess(given: Mapping | None, source: str = "") -> dict:
    """A brightfield ``postprocess`` block, checked, with the defaults filled in: keys
    ``score_threshold``, ``mask_threshold``, ``mask_nms_iou`` (None: no NMS; older cards,
    ``brightfield-default`` among them, call it ``nms_iou``) and ``largest_component``."""
    given = dict(given or {})
    post = {**DEFAULT_BRIGHTFIELD_POSTPROCESS, **given}
    nms = given["mask_nms_iou"] if "mask_nms_iou" in given else given.get(
        "nms_iou", DEFAULT_BRIGHTFIELD_POSTPROCESS["mask_nms_iou"])
    if not isinstance(post["largest_component"], bool):
        raise BlastosegError(f"postprocess.largest_component must be true or false, got "
                             f"{post['largest_component']!r}{_where(source)}")
    return {
        "score_threshold": check_unit(post["score_threshold"], "postprocess.score_threshold",
                                      source),
        "mask_threshold": check_unit(post["mask_threshold"], "postprocess.mask_threshold",
                                     source),
        "mask_nms_iou": check_unit(nms, "postprocess.mask_nms_iou", source, allow_none=True),
        "largest_component": post["largest_component"]}


@dataclass(frozen=True)
class BrightfieldCard:
    """A brightfield (SparseSEU-Net whole-cell instances) model's card.

    Attributes
    ----------
    model
        The network's architecture; ``seunet`` its SE-U-Net part.
    percentiles, scale
        Normalisation and working resolution, as for :class:`OverlapCard`.
    score_threshold, mask_threshold
        A prediction is kept with score >= ``score_threshold``; its mask is
        ``sigmoid(logit) >= mask_threshold``.
    mask_nms_iou
        Mask-NMS IoU, None: no NMS (read from ``mask_nms_iou``, or the older ``nms_iou``).
    largest_component
        Keep only each mask's largest connected piece.
    max_side, tile_overlap
        Frames up to ``max_side`` working px per side run whole, larger ones in windows of
        that size overlapping by ``tile_overlap`` (the training crop and half of it).
    """

    name: str
    model: SparseSEUNetConfig
    seunet: SEUNetConfig
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES
    scale: float = 1.0
    score_threshold: float = DEFAULT_BRIGHTFIELD_POSTPROCESS["score_threshold"]
    mask_threshold: float = DEFAULT_BRIGHTFIELD_POSTPROCESS["mask_threshold"]
    mask_nms_iou: float | None = DEFAULT_BRIGHTFIELD_POSTPROCESS["mask_nms_iou"]
    largest_component: bool = True
    max_side: int = DEFAULT_MAX_SIDE
    tile_overlap: int = DEFAULT_TILE_OVERLAP

    @classmethod
    def from_card(cls, card: ModelCard) -> BrightfieldCard:
        source, config = card.name, card.config or {}
        model = _architecture(SparseSEUNetConfig.from_dict, config.get("model"), source)
        percentiles, scale = _preprocess(config, source)
        post = brightfield_postprocess(_section(config, "postprocess", source), source)
        inference = _section(config, "inference", source)
        return cls(
            name=source, model=model, seunet=model.seunet_config,
            percentiles=percentiles, scale=scale, **post,
            max_side=check_non_negative_int(inference.get("max_side", DEFAULT_MAX_SIDE),
                                            "inference.max_side", source),
            tile_overlap=check_non_negative_int(
                inference.get("tile_overlap", DEFAULT_TILE_OVERLAP), "inference.tile_overlap",
                source))


@dataclass(frozen=True)
class ShapePriorCard:
    """A VQ-VAE shape prior's card (used inside amodal models, not run on images)."""

    name: str
    vqvae: VQVAEConfig

    @classmethod
    def from_card(cls, card: ModelCard) -> ShapePriorCard:
        config = card.config or {}
        return cls(name=card.name, vqvae=_architecture(
            VQVAEConfig.from_dict, config.get("vqvae", config), card.name))


@dataclass(frozen=True)
class Pix2PixCard:
    """A pix2pix translator's card (used by ``synth``): the networks and the intensity
    mapping of its ``preprocess`` block (checked by the translator that applies it)."""

    name: str
    pix2pix: Pix2PixConfig
    preprocess: dict = field(default_factory=dict)

    @classmethod
    def from_card(cls, card: ModelCard) -> Pix2PixCard:
        config = card.config or {}
        return cls(name=card.name,
                   pix2pix=_architecture(Pix2PixConfig.from_dict, config.get("pix2pix"),
                                         card.name),
                   preprocess=_section(config, "preprocess", card.name))


@dataclass(frozen=True)
class CountCard:
    """A Cell-Net (``count``, S2) model's card: ``{"model": CellNetConfig, "targets":
    {"sigma_ratio"}, "loss": {...}, "framing": {"use_localisation", "min_confidence",
    "margin"}}``.

    Attributes
    ----------
    model
        The network's architecture (working size, encoder, RIAP / PUC switches).
    use_localisation, min_confidence, margin
        Framing, as for the amodal kind: the embryo is localised in each frame and the square
        of half side ``(1 + margin)`` x its radius is resized to the working size.
    """

    name: str
    model: Any
    use_localisation: bool = True
    min_confidence: float = DEFAULT_MIN_CONFIDENCE
    margin: float = DEFAULT_MARGIN

    @classmethod
    def from_card(cls, card: ModelCard) -> CountCard:
        from blastoseg.models.cellnet import CellNetConfig

        source, config = card.name, card.config or {}
        return cls(name=source,
                   model=_architecture(CellNetConfig.from_dict, config.get("model"), source),
                   **_framing(config, source))

__all__ += ["CountCard"]


@dataclass(frozen=True)
class LocaliserCard:
    """A learned embryo localiser's (``localiser``, CircleNet) card: ``{"model":
    CircleNetConfig, "loss": {...}}``.

    Attributes
    ----------
    model
        The network's architecture (input size, width).
    """

    name: str
    model: Any

    @classmethod
    def from_card(cls, card: ModelCard) -> LocaliserCard:
        from blastoseg.models.circle_net import CircleNetConfig

        return cls(name=card.name, model=_architecture(CircleNetConfig.from_dict,
                                                       (card.config or {}).get("model"),
                                                       card.name))

__all__ += ["LocaliserCard"]


@dataclass(frozen=True)
class OocyteCard:
    """An ``oocyte`` (S3) model's card: ``{"model": SMANetConfig, "classes": {id: name}}``, or
    the SE-U-Net comparison's ``{"architecture": "seunet", "seunet": SEUNetConfig,
    "working_size": N, "classes": ...}`` (:mod:`blastoseg.models.oocyte_networks`). The class
    ids are fixed (:mod:`blastoseg.io.oocyte_classes`); a card whose classes differ is
    refused, since the widget's legend and the measurements rely on them.
    ``postprocess.logit_offsets`` (7 numbers, added to the class scores before the argmax)
    undo part of a class-weighted loss's bias towards rare classes; they are calibrated on
    validation data when the model is trained (:mod:`blastoseg.predict.oocyte_calibrate`);
    a card without them predicts with the raw scores."""

    name: str
    network: Any
    classes: dict = field(default_factory=dict)
    logit_offsets: tuple[float, ...] | None = None

    @property
    def working_size(self) -> int:
        return int(self.network.working_size)

    @classmethod
    def from_card(cls, card: ModelCard) -> OocyteCard:
        from blastoseg.io.oocyte_classes import CLASS_NAMES
        from blastoseg.models.oocyte_networks import oocyte_network_config

        source, config = card.name, card.config or {}
        network = _architecture(oocyte_network_config, config, source)
        classes = {int(k): str(v) for k, v in (config.get("classes") or CLASS_NAMES).items()}
        if classes != CLASS_NAMES or network.n_classes != len(CLASS_NAMES):
            raise WeightsError(f"model card of {source}: classes must be {CLASS_NAMES} "
                               f"(got {classes}, n_classes {network.n_classes})")
        offsets = (config.get("postprocess") or {}).get("logit_offsets")
        if offsets is not None:
            ok = isinstance(offsets, (list, tuple)) and len(offsets) == len(CLASS_NAMES)
            if ok:
                try:
                    offsets = tuple(float(v) for v in offsets)
                    ok = all(np.isfinite(offsets))
                except (TypeError, ValueError):
                    ok = False
            if not ok:
                raise WeightsError(f"model card of {source}: postprocess.logit_offsets must "
                                   f"be {len(CLASS_NAMES)} finite numbers, got {offsets!r}")
        return cls(name=source, network=network, classes=classes, logit_offsets=offsets)

__all__ += ["OocyteCard"]
