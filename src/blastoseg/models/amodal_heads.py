"""RoI heads of the amodal detector: the VQ-VAE segmentation module (Jang et al., 4.2).

For every positive proposal (training) or final detection (inference), RoI-aligned features
(14 x 14, C + C_occ channels) go through

* :class:`CodeHead`: three convolutions and one fully connected layer predicting M x M x K
  code logits. Eq. 3: binary cross-entropy of the softmax code probabilities against the
  one-hot codes of the ground-truth amodal mask (cropped to the proposal box, resampled to
  the VQ-VAE input size S, encoded by the *frozen* VQ-VAE encoder);
* the frozen VQ-VAE decoder, fed with the probability-weighted codebook (soft decode, so the
  mask losses reach the code head): the *initial* amodal mask, S x S logits;
* :class:`RefineHead` (eq. 4): RoI features and the initial mask in, final mask logits out.

:class:`AmodalRoIHeads` subclasses torchvision's ``RoIHeads``: the parent runs proposal
sampling and the box branch unchanged (its own mask branch disabled in the VQ modes) and this
class runs the shape branch on top. With ``mask_head="fcn"`` the parent's own FCN mask
branch is used instead (the paper's baseline).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import roi_align

from blastoseg.models.vqvae import VQVAE

__all__ = ["AmodalRoIHeads", "CodeHead", "RefineHead", "code_bce_loss", "crop_masks_to_boxes"]


class CodeHead(nn.Module):
    """(N, C, R, R) RoI features -> (N, K, M, M) code logits: 3 convs + 1 FC (section 4.2).

    The third convolution has stride 2 and narrows to ``fc_channels``, so the single fully
    connected layer (which gives every code a view of the whole RoI) stays small.
    """

    def __init__(self, in_channels: int, channels: int, fc_channels: int, roi_size: int,
                 grid_size: int, codebook_size: int) -> None:
        super().__init__()
        self.grid_size, self.codebook_size = grid_size, codebook_size
        self.convs = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(channels, fc_channels, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        )
        side = (roi_size + 1) // 2
        self.fc = nn.Linear(fc_channels * side * side, grid_size * grid_size * codebook_size)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m, k = self.grid_size, self.codebook_size
        return self.fc(self.convs(x).flatten(1)).view(-1, k, m, m)


class RefineHead(nn.Module):
    """Refinement decoder (eq. 4): RoI features + initial mask -> final S x S mask logits.

    Features are reduced and up-sampled to S x S, concatenated with the initial mask
    probability and fused by two convolutions. With ``residual`` the output is added to
    the initial logits, so the decoder learns a correction of the shape-prior mask.
    """

    def __init__(self, in_channels: int, channels: int, mask_size: int,
                 residual: bool = True) -> None:
        super().__init__()
        self.mask_size, self.residual = mask_size, residual
        self.reduce = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1),
                                    nn.ReLU(inplace=True))
        self.up = nn.Sequential(nn.ConvTranspose2d(channels, channels, 2, stride=2),
                                nn.ReLU(inplace=True))
        self.fuse = nn.Sequential(
            nn.Conv2d(channels + 1, channels, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True),
        )
        self.out = nn.Conv2d(channels, 1, 1)
        if residual:  # start as the identity on the initial mask
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def forward(self, roi_features: torch.Tensor, init_logits: torch.Tensor) -> torch.Tensor:
        x = self.up(self.reduce(roi_features))
        if x.shape[-1] != self.mask_size:
            x = F.interpolate(x, size=(self.mask_size,) * 2, mode="bilinear",
                              align_corners=False)
        x = torch.cat([x, torch.sigmoid(init_logits)], dim=1)
        y = self.out(self.fuse(x))
        return y + init_logits if self.residual else y


def crop_masks_to_boxes(masks: torch.Tensor, boxes: torch.Tensor, matched: torch.Tensor,
                        size: int) -> torch.Tensor:
    """Crop ground-truth masks (G, H, W) to boxes (N, 4) of their matched instances.

    Same resampling as the VQ-VAE's training crops (bilinear ``roi_align``,
    ``aligned=True``); returns (N, 1, size, size) float in [0, 1].
    """
    if boxes.shape[0] == 0:
        return boxes.new_zeros((0, 1, size, size))
    rois = torch.cat([matched[:, None].to(boxes.dtype), boxes], dim=1)
    return roi_align(masks[:, None].to(boxes.dtype), rois, (size, size), spatial_scale=1.0,
                     sampling_ratio=2, aligned=True)


def code_bce_loss(code_logits: torch.Tensor, target_codes: torch.Tensor) -> torch.Tensor:
    """Eq. 3: BCE of softmax code probabilities (N, K, M, M) vs one-hot codes (N, M, M).

    Summed over the K codes of a grid cell and averaged over cells and RoIs, so it is the
    cross-entropy of the true code plus a penalty on confident wrong codes (a mean over K
    would shrink the term by 1 / K against the other losses).
    """
    k = code_logits.shape[1]
    onehot = F.one_hot(target_codes.long(), k).permute(0, 3, 1, 2).to(code_logits.dtype)
    logp = F.log_softmax(code_logits, dim=1)
    log1mp = torch.log1p(-logp.exp().clamp(max=1.0 - 1e-6))
    bce = -(onehot * logp + (1.0 - onehot) * log1mp)
    return bce.sum(dim=1).mean()


class AmodalRoIHeads(RoIHeads):
    """torchvision ``RoIHeads`` + the VQ-VAE segmentation module of section 4.2.

    Parameters
    ----------
    *args, **kwargs
        Passed to ``RoIHeads`` (box branch and, for the FCN baseline, its mask branch).
    shape_roi_pool
        RoIAlign of the mask features (14 x 14); None for the FCN baseline.
    code_head, vqvae, refine_head
        The VQ-VAE module: code classifier, frozen shape prior (frozen here), optional
        refinement decoder. ``code_head=None`` selects the FCN baseline.
    loss_weights
        Multipliers of the loss terms by key (missing keys: 1); the returned losses are
        already weighted, so their sum is the objective of section 4.3.
    """

    def __init__(self, *args, shape_roi_pool: nn.Module | None = None,
                 code_head: CodeHead | None = None, vqvae: VQVAE | None = None,
                 refine_head: RefineHead | None = None,
                 loss_weights: dict[str, float] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if code_head is not None and (vqvae is None or shape_roi_pool is None):
            raise ValueError("the VQ-VAE mask head needs shape_roi_pool and vqvae")
        self.shape_roi_pool = shape_roi_pool
        self.code_head = code_head
        self.vqvae = vqvae.freeze() if vqvae is not None and code_head is not None else None
        self.refine_head = refine_head
        self.loss_weights = dict(loss_weights or {})
        self._samples: tuple | None = None

    def select_training_samples(self, proposals, targets):
        # keep the sampled proposals, their matched ground truth and labels for the shape
        # branch; the parent's box branch uses them as usual
        out = super().select_training_samples(proposals, targets)
        self._samples = (out[0], out[1], out[2])
        return out

    def shape_forward(self, features: dict[str, torch.Tensor], boxes: list[torch.Tensor],
                      image_shapes: list[tuple[int, int]]
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Boxes per image -> (code logits (N,K,M,M), initial and final mask logits (N,1,S,S))."""
        x = self.shape_roi_pool(features, boxes, image_shapes)
        code_logits = self.code_head(x)
        init = self.vqvae.decode_code_probs(code_logits.softmax(dim=1).to(x.dtype))
        final = self.refine_head(x, init) if self.refine_head is not None else init
        return code_logits, init, final

    def _shape_losses(self, features, image_shapes, targets) -> dict[str, torch.Tensor]:
        proposals, matched_idxs, labels = self._samples
        boxes, crops = [], []
        s = self.vqvae.config.mask_size
        for props, matched, lab, t in zip(proposals, matched_idxs, labels, targets, strict=True):
            pos = torch.where(lab > 0)[0]
            boxes.append(props[pos])
            crops.append(crop_masks_to_boxes(t["masks"], props[pos], matched[pos], s))
        code_logits, init, final = self.shape_forward(features, boxes, image_shapes)
        gt = torch.cat(crops).to(init.dtype)
        if gt.shape[0] == 0:  # no positive proposal: zero losses that keep the graph
            zero = code_logits.sum() * 0.0 + init.sum() * 0.0 + final.sum() * 0.0
            losses = {"loss_code": zero, "loss_mask_init": zero}
        else:
            target_codes = self.vqvae.encode_indices((gt >= 0.5).to(gt.dtype))
            losses = {"loss_code": code_bce_loss(code_logits, target_codes),
                      "loss_mask_init": F.binary_cross_entropy_with_logits(init, gt)}
            if self.refine_head is not None:
                losses["loss_mask_refine"] = F.binary_cross_entropy_with_logits(final, gt)
        if self.refine_head is not None and "loss_mask_refine" not in losses:
            losses["loss_mask_refine"] = losses["loss_mask_init"]
        return losses

    def forward(self, features, proposals, image_shapes, targets=None):
        self._samples = None
        result, losses = super().forward(features, proposals, image_shapes, targets)
        if self.code_head is not None:
            if self.training:
                if self._samples is None or targets is None:
                    raise RuntimeError("training the shape branch needs targets")
                losses.update(self._shape_losses(features, image_shapes, targets))
                self._samples = None
            else:
                boxes = [r["boxes"] for r in result]
                _, _, final = self.shape_forward(features, boxes, image_shapes)
                probs = torch.sigmoid(final).split([len(b) for b in boxes])
                for r, p in zip(result, probs, strict=True):
                    r["masks"] = p
        w = self.loss_weights
        return result, {k: v * w.get(k, 1.0) for k, v in losses.items()}
