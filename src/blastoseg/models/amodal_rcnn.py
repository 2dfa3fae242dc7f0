"""The S1 amodal blastomere detector (Jang et al., "Learning vector quantized shape code for
amodal blastomere instance segmentation", section 4) on torchvision's Mask R-CNN.

:class:`AmodalMaskRCNN` subclasses ``GeneralizedRCNN`` and assembles torchvision's own
building blocks (``GeneralizedRCNNTransform``, ``AnchorGenerator``, ``RPNHead``,
``RegionProposalNetwork``, ``MultiScaleRoIAlign``, ``TwoMLPHead``, ``FastRCNNPredictor`` and,
for the FCN baseline, ``MaskRCNNHeads`` / ``MaskRCNNPredictor``) with

* a light ResNet-FPN backbone trained from scratch (:mod:`.light_backbone`);
* the occlusion branch of section 4.1 (:mod:`.occlusion`), whose features are concatenated
  onto the FPN levels before the RPN and the RoI heads;
* the VQ-VAE segmentation module and refinement of section 4.2 (:mod:`.amodal_heads`).

Training returns the weighted loss terms of section 4.3 (their sum is the objective);
inference returns per image ``boxes``, ``labels``, ``scores``, ``masks`` (N, 1, H, W amodal
probabilities pasted into the input frame) and ``occlusion`` (1, H, W probability map).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign

from blastoseg.models.amodal_config import AmodalConfig
from blastoseg.models.amodal_heads import AmodalRoIHeads, CodeHead, RefineHead
from blastoseg.models.layer_count import (
    LayerBranch,
    expected_layers,
    layer_loss,
    layer_targets,
)
from blastoseg.models.light_backbone import build_light_backbone
from blastoseg.models.occlusion import (
    OcclusionBranch,
    occlusion_loss,
    occlusion_target_from_masks,
    targets_to_padded,
)
from blastoseg.models.vqvae import VQVAE

__all__ = ["LOSS_KEYS", "AmodalMaskRCNN"]

_ROI_SIZE = 14  # RoIAlign size of the mask features (torchvision and the paper)

#: loss keys returned in training, by configuration
LOSS_KEYS = {
    "always": ("loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"),
    "occlusion": ("loss_occlusion",),
    "layers": ("loss_layers",),
    "fcn": ("loss_mask",),
    "vq": ("loss_code", "loss_mask_init"),
    "vq_refine": ("loss_code", "loss_mask_init", "loss_mask_refine"),
}


class AmodalMaskRCNN(GeneralizedRCNN):
    """Mask R-CNN with an occlusion branch and a VQ-VAE shape-code mask head.

    Parameters
    ----------
    config
        :class:`AmodalConfig`; defaults if None.
    vqvae
        The trained shape prior (VQ modes). It is frozen and becomes part of this module
        (its weights are saved with the detector's). If None, an untrained one is built
        from ``config.vqvae`` (for loading a full detector state dict, or for tests).

    Notes
    -----
    Input: a list of (C, H, W) or (H, W) float tensors in [0, 1]; a 3-channel input to a
    1-channel model is averaged to grey, a 1-channel input to a 3-channel model repeated.
    Training targets per image: ``boxes`` (N, 4) xyxy amodal boxes, ``labels`` (N,) int64,
    ``masks`` (N, H, W) amodal masks and, optionally, ``occlusion`` (H, W) float (pixels in
    >= 2 amodal masks; computed from ``masks`` when missing), all at the input size.
    """

    def __init__(self, config: AmodalConfig | None = None, vqvae: VQVAE | None = None) -> None:
        cfg = config if config is not None else AmodalConfig()
        backbone = build_light_backbone(cfg)
        feat_ch = cfg.feature_channels
        level_names = [str(i) for i in range(cfg.trunk_stages)]

        anchors = AnchorGenerator(sizes=cfg.anchor_sizes,
                                  aspect_ratios=(cfg.anchor_aspect_ratios,) * len(cfg.anchor_sizes))
        rpn = RegionProposalNetwork(
            anchors, RPNHead(feat_ch, anchors.num_anchors_per_location()[0]),
            fg_iou_thresh=0.7, bg_iou_thresh=0.3,
            batch_size_per_image=cfg.rpn_batch_size_per_image, positive_fraction=0.5,
            pre_nms_top_n={"training": cfg.rpn_pre_nms_top_n_train,
                           "testing": cfg.rpn_pre_nms_top_n_test},
            post_nms_top_n={"training": cfg.rpn_post_nms_top_n_train,
                            "testing": cfg.rpn_post_nms_top_n_test},
            nms_thresh=cfg.rpn_nms_thresh)

        box_pool = MultiScaleRoIAlign(level_names, output_size=7, sampling_ratio=2)
        box_head = TwoMLPHead(feat_ch * 7 * 7, cfg.box_representation)
        box_predictor = FastRCNNPredictor(cfg.box_representation, cfg.num_classes)
        mask_pool = MultiScaleRoIAlign(level_names, output_size=_ROI_SIZE, sampling_ratio=2)

        mask_kwargs: dict[str, Any] = {}
        if cfg.mask_head == "fcn":
            w = cfg.mask_head_channels
            mask_kwargs = dict(mask_roi_pool=mask_pool,
                               mask_head=MaskRCNNHeads(feat_ch, (w, w, w, w), 1),
                               mask_predictor=MaskRCNNPredictor(w, w, cfg.num_classes))
        else:
            vq = vqvae if vqvae is not None else VQVAE(cfg.vqvae)
            if vq.config != cfg.vqvae:
                raise ValueError("the VQ-VAE's config differs from config.vqvae; build the "
                                 "AmodalConfig with vqvae=<the shape prior's config>")
            vc = vq.config
            refine = (RefineHead(feat_ch, cfg.refine_channels, vc.mask_size,
                                 cfg.refine_residual) if cfg.mask_head == "vq_refine" else None)
            mask_kwargs = dict(
                shape_roi_pool=mask_pool,
                code_head=CodeHead(feat_ch, cfg.mask_head_channels, cfg.code_fc_channels,
                                   _ROI_SIZE, vc.grid_size, vc.codebook_size),
                vqvae=vq, refine_head=refine)

        # section 4.3: L = L_rpn + L_cls + L_box + alpha L_code + beta L_occ
        #                  + gamma L_init + delta L_refine   (alpha = gamma = delta = 1,
        # beta = 0.01); alpha -> loss_code (eq. 3), beta -> loss_occlusion (eq. 2),
        # gamma -> loss_mask_init (decoded mask), delta -> loss_mask_refine (eq. 4)
        weights = {"loss_code": cfg.loss_weight_code,
                   "loss_mask_init": cfg.loss_weight_mask_init,
                   "loss_mask_refine": cfg.loss_weight_mask_refine,
                   "loss_mask": cfg.loss_weight_mask_fcn}
        roi_heads = AmodalRoIHeads(
            box_pool, box_head, box_predictor,
            0.5, 0.5, cfg.box_batch_size_per_image, cfg.box_positive_fraction, None,
            cfg.box_score_thresh, cfg.box_nms_thresh, cfg.box_detections_per_img,
            loss_weights=weights, **mask_kwargs)

        transform = GeneralizedRCNNTransform(cfg.working_size, cfg.working_size,
                                             list(cfg.image_mean), list(cfg.image_std))
        super().__init__(backbone, rpn, roi_heads, transform)
        self.config = cfg
        self.occlusion_branch = (OcclusionBranch(cfg.fpn_channels, cfg.occlusion_channels)
                                 if cfg.occlusion else None)
        # reads the FPN levels before the occlusion features are appended; feeds nothing back
        self.layer_branch = (LayerBranch(cfg.fpn_channels, cfg.layer_channels,
                                         cfg.layer_classes) if cfg.layer_classes else None)

    # ------------------------------------------------------------------------------------
    @property
    def vqvae(self) -> VQVAE | None:
        """The frozen shape prior (None for the FCN baseline)."""
        return self.roi_heads.vqvae

    def _as_input(self, img: torch.Tensor) -> torch.Tensor:
        if img.ndim == 2:
            img = img[None]
        if img.ndim != 3:
            raise ValueError(f"each image must be (C, H, W) or (H, W); got {tuple(img.shape)}")
        c, want = img.shape[0], self.config.in_channels
        if c == want:
            return img
        if want == 1 and c == 3:
            return img.mean(dim=0, keepdim=True)
        if want == 3 and c == 1:
            return img.expand(3, -1, -1)
        raise ValueError(f"images must have 1 or 3 channels; got {c}")

    def _occlusion_maps(self, targets: list[dict[str, torch.Tensor]]) -> list[torch.Tensor]:
        maps = []
        for t in targets:
            occ = t.get("occlusion")
            maps.append(occ if occ is not None else occlusion_target_from_masks(t["masks"]))
        return maps

    def forward(self, images: list[torch.Tensor],
                targets: list[dict[str, torch.Tensor]] | None = None
                ) -> dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]:
        """Losses (training) or detections (eval); see the class notes for the formats."""
        if self.training and targets is None:
            raise ValueError("targets are required in training mode")
        images = [self._as_input(img) for img in images]
        original_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        occ_maps = (self._occlusion_maps(targets)
                    if self.training and self.occlusion_branch is not None else None)

        image_list, targets = self.transform(images, targets)
        if targets is not None:
            for i, t in enumerate(targets):
                b = t["boxes"]
                if b.ndim != 2 or b.shape[-1] != 4:
                    raise ValueError(f"target {i}: boxes must be (N, 4); got {tuple(b.shape)}")
                if (b[:, 2:] <= b[:, :2]).any():
                    raise ValueError(f"target {i}: every box needs x2 > x1 and y2 > y1")

        features = self.backbone(image_list.tensors)
        layer_logits = (self.layer_branch(features) if self.layer_branch is not None
                        else None)
        occ_logits = None
        if self.occlusion_branch is not None:
            features, occ_logits = self.occlusion_branch(features)
        proposals, rpn_losses = self.rpn(image_list, features, targets)
        detections, roi_losses = self.roi_heads(features, proposals, image_list.image_sizes,
                                                targets)

        if self.training:
            losses = {**rpn_losses, **roi_losses}
            if occ_logits is not None:
                target, valid = targets_to_padded(occ_maps, image_list.image_sizes,
                                                  tuple(image_list.tensors.shape[-2:]))
                losses["loss_occlusion"] = (self.config.loss_weight_occlusion
                                            * occlusion_loss(occ_logits, target, valid))
            if layer_logits is not None:
                losses["loss_layers"] = self._layer_loss(layer_logits, image_list, targets)
            return losses

        detections = self.transform.postprocess(detections, image_list.image_sizes,
                                                 original_sizes)
        padded = tuple(image_list.tensors.shape[-2:])
        for i, det in enumerate(detections):
            h0, w0 = original_sizes[i]
            if layer_logits is not None:
                det["layers"] = self._to_original(expected_layers(layer_logits[i:i + 1]),
                                                  padded, image_list.image_sizes[i], (h0, w0))
            if occ_logits is None:
                det["occlusion"] = image_list.tensors.new_zeros((1, h0, w0))
                continue
            finest = next(iter(occ_logits.values()))[i:i + 1]
            prob = torch.sigmoid(F.interpolate(finest, size=padded, mode="bilinear",
                                               align_corners=False))
            h, w = image_list.image_sizes[i]
            prob = F.interpolate(prob[..., :h, :w], size=(h0, w0), mode="bilinear",
                                 align_corners=False)
            det["occlusion"] = prob[0]
        return detections

    @staticmethod
    def _to_original(level_map: torch.Tensor, padded: tuple[int, int], size: tuple[int, int],
                     original: tuple[int, int]) -> torch.Tensor:
        """(1, 1, h, w) map on the padded batch grid -> (1, H0, W0) on the input image."""
        m = F.interpolate(level_map, size=padded, mode="bilinear", align_corners=False)
        h, w = size
        return F.interpolate(m[..., :h, :w], size=original, mode="bilinear",
                             align_corners=False)[0]

    def _layer_loss(self, logits: torch.Tensor, image_list: Any,
                    targets: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        onehot, valid = layer_targets([t["masks"] for t in targets], image_list.image_sizes,
                                      tuple(image_list.tensors.shape[-2:]),
                                      self.config.layer_classes)
        return self.config.loss_weight_layers * layer_loss(logits, onehot, valid)

    def layer_branch_losses(self, images: list[torch.Tensor],
                            targets: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Only the layer branch's loss, with the detector frozen (no gradient, BatchNorm
        statistics untouched): trains the branch on a shipped detector without changing one
        of its detections."""
        if self.layer_branch is None:
            raise ValueError("this model has no layer branch (config.layer_classes is 0)")
        images = [self._as_input(img) for img in images]
        image_list, targets = self.transform(images, targets)
        was_training = self.backbone.training
        self.backbone.eval()
        try:
            with torch.no_grad():
                features = self.backbone(image_list.tensors)
        finally:
            self.backbone.train(was_training)
        logits = self.layer_branch(features)
        return {"loss_layers": self._layer_loss(logits, image_list, targets)}

    def count_parameters(self, trainable_only: bool = False) -> int:
        """Number of parameters (all, or only those that take gradient)."""
        return sum(p.numel() for p in self.parameters()
                   if p.requires_grad or not trainable_only)
