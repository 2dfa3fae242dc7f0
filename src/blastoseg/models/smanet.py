"""SMANet (Andreini et al., *A deep learning approach for oocytes segmentation*, section 2.2;
the network of their reference [11], Bonechi et al. 2020): semantic segmentation of oocytes.

Three parts, as the paper lists them:

* **Dilated ResNet encoder.** Residual blocks; the last two stages keep the resolution and
  dilate their convolutions (2, then 4) instead of striding, so the deepest features stay at
  1/8 of the input and see a wide context (a 2-7 px inclusion must survive to the decoder).
  A pyramid pooling module (bins 1, 2, 4, the "PSP" of reference [11]) adds image-level
  context to the deepest features.
* **Multiscale attention module.** The encoder runs on the image at each of ``scales``
  (1 and 0.5: two scales, so two attention maps). The deepest features of each scale are
  reduced by a 1x1 convolution and resized to the 1/8 grid; a small convolutional head on
  their concatenation predicts one map per scale, softmax-normalised across the scales, and
  each map multiplies its scale's reduced features pixel-wise; the sum is the fused feature
  (attention to scale: a pixel takes its features from the scale that suits it).
* **Two-level decoder.** Level 1: the fused features upsampled x2 and concatenated with the
  1x1-reduced 1/4 encoder features, a 3x3 convolution; level 2: upsampled x2 again with the
  1/2 stem features, a 3x3 convolution, then the 1x1 classifier and a last x2 upsampling to
  the input size. Trained with cross-entropy over the classes
  (:mod:`blastoseg.io.oocyte_classes`).

Sized for a 2-core CPU (the paper uses a ResNet-50): widths 16-128 with one BasicBlock per
stage instead of ResNet-50's 3-6 bottlenecks of 256-2048 channels, which would need several
seconds per 256 x 256 image on two cores (about 100x the multiply-adds) and far more data
than a clinic's 18 images or a few hundred synthetic ones to train. The inclusions are
2-7 px at 256 x 256: the 1/2-resolution stem skip of level 2 is what keeps them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from blastoseg.models.configs import CardConfig

__all__ = ["SMANet", "SMANetConfig"]


@dataclass
class SMANetConfig(CardConfig):
    """Architecture of :class:`SMANet`.

    Attributes
    ----------
    in_channels, n_classes
        Grey input; 7 oocyte classes (background included).
    widths
        Channels of the stem (1/2), stage 1 (1/4), stage 2 (1/8) and the two dilated stages.
    dilations
        Dilation of the two last stages (their stride is 1).
    blocks
        Residual blocks in each of the four stages after the stem.
    reduced
        Channels after the 1x1 reductions (attention features and decoder skips).
    scales
        Input scales of the multiscale attention (one attention map each).
    psp_bins
        Pyramid pooling bins on the deepest features (empty: none).
    decoder_channels
        Channels of the two decoder levels.
    working_size
        Side (px) images are resized to before the network (the predictor's choice).
    """

    in_channels: int = 1
    n_classes: int = 7
    widths: tuple[int, ...] = (16, 32, 64, 96, 128)
    dilations: tuple[int, int] = (2, 4)
    blocks: tuple[int, ...] = (1, 1, 1, 1)
    reduced: int = 48
    scales: tuple[float, ...] = (1.0, 0.5)
    psp_bins: tuple[int, ...] = (1, 2, 4)
    decoder_channels: int = 32
    working_size: int = 256

    def __post_init__(self) -> None:
        self.widths = tuple(int(w) for w in self.widths)
        self.dilations = tuple(int(d) for d in self.dilations)  # type: ignore[assignment]
        self.blocks = tuple(int(b) for b in self.blocks)
        self.scales = tuple(float(s) for s in self.scales)
        self.psp_bins = tuple(int(b) for b in self.psp_bins)
        if len(self.widths) != 5 or min(self.widths) < 1:
            raise ValueError(f"SMANetConfig.widths must be 5 positive numbers, got {self.widths}")
        if len(self.blocks) != 4 or min(self.blocks) < 1:
            raise ValueError(f"SMANetConfig.blocks must be 4 numbers >= 1, got {self.blocks}")
        if len(self.dilations) != 2 or min(self.dilations) < 1:
            raise ValueError(f"SMANetConfig.dilations must be 2 numbers >= 1, got "
                             f"{self.dilations}")
        if not self.scales or self.scales[0] != 1.0 or any(not 0 < s <= 1 for s in self.scales):
            raise ValueError(f"SMANetConfig.scales must start with 1.0 and lie in (0, 1], got "
                             f"{self.scales}")
        if self.n_classes < 2 or self.in_channels < 1 or self.reduced < 1:
            raise ValueError("SMANetConfig: n_classes >= 2, in_channels >= 1, reduced >= 1")
        if self.working_size < 32 or self.working_size % 8:
            raise ValueError(f"SMANetConfig.working_size must be a multiple of 8 >= 32, got "
                             f"{self.working_size}")


def _conv_bn(c_in: int, c_out: int, k: int = 3, stride: int = 1, dilation: int = 1
             ) -> nn.Sequential:
    pad = dilation * (k // 2)
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, stride, pad, dilation=dilation, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class ResidualBlock(nn.Module):
    """ResNet BasicBlock with an optional dilation (stride 1 when dilated)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.skip = (nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return F.relu(self.bn2(self.conv2(h)) + self.skip(x), inplace=True)


def _stage(c_in: int, c_out: int, n: int, stride: int, dilation: int) -> nn.Sequential:
    return nn.Sequential(*[ResidualBlock(c_in if i == 0 else c_out, c_out,
                                         stride if i == 0 else 1, dilation) for i in range(n)])


class DilatedResNet(nn.Module):
    """Stem (1/2) -> stage 1 (1/4) -> stage 2 (1/8) -> two dilated stages (1/8); returns the
    1/2, 1/4 and deepest features."""

    def __init__(self, c: SMANetConfig) -> None:
        super().__init__()
        w = c.widths
        self.stem = nn.Sequential(_conv_bn(c.in_channels, w[0], stride=2), _conv_bn(w[0], w[0]))
        self.stage1 = _stage(w[0], w[1], c.blocks[0], 2, 1)
        self.stage2 = _stage(w[1], w[2], c.blocks[1], 2, 1)
        self.stage3 = _stage(w[2], w[3], c.blocks[2], 1, c.dilations[0])
        self.stage4 = _stage(w[3], w[4], c.blocks[3], 1, c.dilations[1])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        low = self.stem(x)
        mid = self.stage1(low)
        deep = self.stage4(self.stage3(self.stage2(mid)))
        return low, mid, deep


class PyramidPooling(nn.Module):
    """Average pooling into ``bins`` x ``bins`` grids, 1x1 convolutions, upsampled and
    concatenated with the input (PSPNet's module, as in SMANet's reference [11])."""

    def __init__(self, channels: int, bins: tuple[int, ...]) -> None:
        super().__init__()
        self.bins = bins
        branch = max(channels // max(len(bins), 1), 8)
        # no batch norm on pooled maps: a 1 x 1 bin of a batch of one has one value per channel
        self.branches = nn.ModuleList(nn.Sequential(nn.Conv2d(channels, branch, 1),
                                                    nn.ReLU(inplace=True)) for _ in bins)
        self.out_channels = channels + branch * len(bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [F.interpolate(b(F.adaptive_avg_pool2d(x, n)), size=size, mode="bilinear",
                                align_corners=False)
                  for n, b in zip(self.bins, self.branches, strict=True)]
        return torch.cat([x, *pooled], dim=1)


class MultiscaleAttention(nn.Module):
    """One attention map per scale (softmax across scales), each multiplied pixel-wise with
    that scale's 1x1-reduced features; returns the fused features and the maps."""

    def __init__(self, channels: int, reduced: int, n_scales: int) -> None:
        super().__init__()
        self.reduce = _conv_bn(channels, reduced, k=1)
        self.score = nn.Sequential(_conv_bn(reduced * n_scales, reduced),
                                   nn.Conv2d(reduced, n_scales, 1))

    def forward(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        size = features[0].shape[-2:]
        reduced = [self.reduce(f) for f in features]
        reduced = [r if r.shape[-2:] == size else F.interpolate(
            r, size=size, mode="bilinear", align_corners=False) for r in reduced]
        attention = torch.softmax(self.score(torch.cat(reduced, dim=1)), dim=1)
        fused = sum(attention[:, k:k + 1] * r for k, r in enumerate(reduced))
        return fused, attention


class SMANet(nn.Module):
    """``(B, in, H, W)`` -> class logits ``(B, n_classes, H, W)``; H, W multiples of 8."""

    def __init__(self, config: SMANetConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or SMANetConfig()
        self.encoder = DilatedResNet(c)
        self.psp = PyramidPooling(c.widths[4], c.psp_bins) if c.psp_bins else None
        deep = self.psp.out_channels if self.psp is not None else c.widths[4]
        self.attention = MultiscaleAttention(deep, c.reduced, len(c.scales))
        d = c.decoder_channels
        self.skip_mid = _conv_bn(c.widths[1], c.reduced, k=1)
        self.skip_low = _conv_bn(c.widths[0], max(c.reduced // 2, 8), k=1)
        self.level1 = nn.Sequential(_conv_bn(2 * c.reduced, d), _conv_bn(d, d))
        self.level2 = nn.Sequential(_conv_bn(d + max(c.reduced // 2, 8), d), _conv_bn(d, d))
        self.classifier = nn.Conv2d(d, c.n_classes, 1)

    def _deep(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        low, mid, deep = self.encoder(x)
        return low, mid, (self.psp(deep) if self.psp is not None else deep)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        if x.dim() != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"expected (B, {self.config.in_channels}, H, W), got "
                             f"{tuple(x.shape)}")
        if x.shape[-2] % 8 or x.shape[-1] % 8:
            raise ValueError(f"H and W must be multiples of 8, got {tuple(x.shape[-2:])}")
        low, mid, deep = self._deep(x)
        features = [deep]
        for s in self.config.scales[1:]:
            xs = F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False,
                               recompute_scale_factor=False)
            features.append(self._deep(xs)[2])
        fused, attention = self.attention(features)
        up = F.interpolate(fused, size=mid.shape[-2:], mode="bilinear", align_corners=False)
        h = self.level1(torch.cat([up, self.skip_mid(mid)], dim=1))
        up = F.interpolate(h, size=low.shape[-2:], mode="bilinear", align_corners=False)
        h = self.level2(torch.cat([up, self.skip_low(low)], dim=1))
        logits = F.interpolate(self.classifier(h), size=x.shape[-2:], mode="bilinear",
                               align_corners=False)
        return (logits, attention) if return_attention else logits
