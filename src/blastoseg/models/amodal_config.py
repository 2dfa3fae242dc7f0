"""Configuration of the S1 amodal detector (Jang et al., section 4).

:class:`AmodalConfig` is plain data: ``to_dict`` gives the JSON-safe dict stored in a model card
and ``from_dict`` rebuilds it, so a weights file plus its card fully describe a detector
(the VQ-VAE shape prior's own config is nested under ``vqvae``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from blastoseg.models.configs import VQVAEConfig

__all__ = ["AmodalConfig", "MASK_HEADS"]

MASK_HEADS = ("fcn", "vq", "vq_refine")


def _tuple(x: Any) -> Any:
    """Lists (as JSON gives them back) -> tuples, recursively."""
    if isinstance(x, (list, tuple)):
        return tuple(_tuple(v) for v in x)
    return x


@dataclass
class AmodalConfig:
    """Everything needed to rebuild :class:`~blastoseg.models.amodal_rcnn.AmodalMaskRCNN`.

    Attributes
    ----------
    working_size
        Side, in pixels, that the detector works at: ``GeneralizedRCNNTransform`` gets
        ``min_size = max_size = working_size``, so the longer side of every input is resized
        to it. The predictor crops the embryo first, so at 256 px a blastomere is about
        25-150 px across.
    in_channels
        1: a grey stem (the first convolution takes one channel). Inputs with 3 identical
        channels are averaged to one by the model, so RGB-of-grey frames are accepted too.
    image_mean, image_std
        Normalisation of the [0, 1] grey input, one value per input channel.
    num_classes
        Including background: 2 (background, blastomere).
    backbone
        ``"resnet18"`` or ``"resnet34"``, built with ``weights=None`` (trained from scratch).
    trunk_stages
        ResNet stages kept (1..4); stage i gives FPN level ``str(i-1)`` at stride ``2**(i+1)``.
        3 keeps layer1-layer3 (strides 4, 8, 16, plus the FPN max-pool level at 32): it
        drops layer4, 75 % of ResNet-18's weights, which blastomeres of <= 150 px at a
        256 px working size do not need.
    fpn_channels
        C, width of the FPN levels (torchvision: 256).
    norm
        ``"batch"`` (trainable BatchNorm2d) or ``"group"`` (GroupNorm, for batches of 1).
    occlusion
        Enable the occlusion branch of section 4.1.
    occlusion_channels
        C_occ, width of the occlusion branch; the RPN and RoI heads see C + C_occ channels.
    layer_classes, layer_channels
        The layer-count branch (:mod:`blastoseg.models.layer_count`, an addition to the
        paper): 0 for none, else K classes of "cells covering this pixel" (0 .. K-1 or more)
        and the branch's width. Its expected-layer map feeds the counting rule.
    anchor_sizes, anchor_aspect_ratios
        One tuple of anchor sides (pixels at ``working_size``) per feature level, the FPN
        max-pool level included (``trunk_stages + 1`` tuples); scale them with
        ``working_size``. Ratios are height / width.
    rpn_*
        Proposal counts sized for an embryo (<= ~16 cells), far below COCO's 2000/1000.
    box_*
        Box head and post-processing. ``box_representation`` is the width of the two-layer
        MLP box head (torchvision: 1024).
    mask_head
        ``"fcn"``: torchvision's FCN mask head on the amodal masks (the paper's baseline);
        ``"vq"``: VQ-VAE code classifier + frozen decoder (section 4.2, no refinement);
        ``"vq_refine"``: plus the refinement decoder of eq. 4 (the paper's full model).
    mask_head_channels
        Width of the mask-head convolutions (FCN head, code head).
    code_fc_channels
        Channels at 7 x 7 before the code head's fully connected layer; the FC has
        ``code_fc_channels * 49 * M * M * K`` weights.
    refine_channels
        Width of the refinement decoder.
    refine_residual
        The refinement decoder predicts a correction added to the initial mask logits.
    vqvae
        Config of the frozen VQ-VAE shape prior (its S is the mask resolution).
    loss_weight_*
        Section 4.3 weights: ``code`` = alpha (eq. 3), ``occlusion`` = beta (eq. 2),
        ``mask_init`` = gamma (BCE of the decoded initial mask), ``mask_refine`` = delta
        (BCE of the refined mask, eq. 4); ``mask_fcn`` weights the FCN baseline's mask loss;
        ``layers`` the layer branch's cross-entropy.
        The RPN and box losses have weight 1.
    """

    working_size: int = 256
    in_channels: int = 1
    image_mean: tuple[float, ...] = (0.5,)
    image_std: tuple[float, ...] = (0.25,)
    num_classes: int = 2
    # backbone
    backbone: Literal["resnet18", "resnet34"] = "resnet18"
    trunk_stages: int = 3
    fpn_channels: int = 64
    norm: Literal["batch", "group"] = "batch"
    # occlusion branch (section 4.1)
    occlusion: bool = True
    occlusion_channels: int = 32
    # layer-count branch (not in the paper; models/layer_count.py): 0 = none, else K classes
    layer_classes: int = 0
    layer_channels: int = 48
    # RPN
    anchor_sizes: tuple[tuple[int, ...], ...] = ((20, 28), (40, 56), (80, 112), (160, 224))
    anchor_aspect_ratios: tuple[float, ...] = (0.75, 1.0, 1.33)
    rpn_pre_nms_top_n_train: int = 600
    rpn_pre_nms_top_n_test: int = 300
    rpn_post_nms_top_n_train: int = 100
    rpn_post_nms_top_n_test: int = 50
    rpn_batch_size_per_image: int = 128
    rpn_nms_thresh: float = 0.7
    # box head
    box_representation: int = 256
    box_batch_size_per_image: int = 64
    box_positive_fraction: float = 0.25
    box_score_thresh: float = 0.05
    box_nms_thresh: float = 0.5
    box_detections_per_img: int = 20
    # mask heads (section 4.2)
    mask_head: Literal["fcn", "vq", "vq_refine"] = "vq_refine"
    mask_head_channels: int = 64
    code_fc_channels: int = 16
    refine_channels: int = 32
    refine_residual: bool = True
    vqvae: VQVAEConfig = field(default_factory=VQVAEConfig)
    # loss weights (section 4.3)
    loss_weight_code: float = 1.0
    loss_weight_occlusion: float = 0.01
    loss_weight_mask_init: float = 1.0
    loss_weight_mask_refine: float = 1.0
    loss_weight_mask_fcn: float = 1.0
    loss_weight_layers: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.vqvae, dict):
            self.vqvae = VQVAEConfig.from_dict(self.vqvae)
        self.image_mean = tuple(float(v) for v in _tuple(self.image_mean))
        self.image_std = tuple(float(v) for v in _tuple(self.image_std))
        self.anchor_sizes = _tuple(self.anchor_sizes)
        self.anchor_aspect_ratios = _tuple(self.anchor_aspect_ratios)
        errors = []
        if self.mask_head not in MASK_HEADS:
            errors.append(f"mask_head must be one of {MASK_HEADS}, got {self.mask_head!r}")
        if self.backbone not in ("resnet18", "resnet34"):
            errors.append(f"backbone must be 'resnet18' or 'resnet34', got {self.backbone!r}")
        if self.norm not in ("batch", "group"):
            errors.append(f"norm must be 'batch' or 'group', got {self.norm!r}")
        if not 1 <= self.trunk_stages <= 4:
            errors.append(f"trunk_stages must be in 1..4, got {self.trunk_stages}")
        if len(self.anchor_sizes) != self.trunk_stages + 1:
            errors.append(f"anchor_sizes needs one tuple per feature level "
                          f"({self.trunk_stages + 1}), got {len(self.anchor_sizes)}")
        elif len({len(s) for s in self.anchor_sizes}) != 1:
            errors.append("every level of anchor_sizes needs the same number of sizes")
        if self.in_channels not in (1, 3):
            errors.append(f"in_channels must be 1 or 3, got {self.in_channels}")
        if len(self.image_mean) != self.in_channels or len(self.image_std) != self.in_channels:
            errors.append("image_mean and image_std need one value per input channel")
        if self.working_size < 32 or self.working_size % 32:
            errors.append(f"working_size must be a multiple of 32 (>= 32), "
                          f"got {self.working_size}")
        if self.num_classes < 2:
            errors.append("num_classes counts the background and must be >= 2")
        if self.vqvae.mask_size % 2:
            errors.append("vqvae.mask_size must be even (twice the 14 x 14 RoI grid is best)")
        for name in ("fpn_channels", "occlusion_channels", "mask_head_channels",
                     "code_fc_channels", "refine_channels", "box_representation"):
            if getattr(self, name) < 1:
                errors.append(f"{name} must be >= 1")
        if self.layer_classes and not 3 <= self.layer_classes <= 16:
            errors.append(f"layer_classes must be 0 (no layer branch) or 3..16, "
                          f"got {self.layer_classes}")
        if self.layer_channels < 1:
            errors.append("layer_channels must be >= 1")
        if errors:
            raise ValueError("invalid AmodalConfig: " + "; ".join(errors))

    @property
    def feature_channels(self) -> int:
        """Channels seen by the RPN and RoI heads: C (+ C_occ with the occlusion branch)."""
        return self.fpn_channels + (self.occlusion_channels if self.occlusion else 0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (tuples become lists, ``vqvae`` a nested dict)."""
        def lists(x: Any) -> Any:
            if isinstance(x, (list, tuple)):
                return [lists(v) for v in x]
            if isinstance(x, dict):
                return {k: lists(v) for k, v in x.items()}
            return x
        return lists(asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AmodalConfig:
        """Build from a dict (e.g. a model card); unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown AmodalConfig keys: {unknown}")
        d = dict(d)
        if isinstance(d.get("vqvae"), dict):
            d["vqvae"] = VQVAEConfig.from_dict(d["vqvae"])
        return cls(**d)
