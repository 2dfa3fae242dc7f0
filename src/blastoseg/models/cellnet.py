"""Cell-Net (Moradi Rad et al. 2019, S2 section III.B): blastomere counting by density regression.

The network maps a framed embryo crop (1, S, S) to a non-negative density map (1, S, S) whose
integral is the number of blastomeres and whose peaks are their centroids (section III.A).

Three parts, as in Fig. 3 of the paper:

* **Encoder**: the first stages of a ResNet (torchvision ``resnet18`` or ``resnet34``, random
  initialisation: nothing is downloaded). The paper uses a deeper ResNet on a GPU; here the
  default keeps the stem and ``layer1``-``layer2`` of ResNet-18 (output stride 8, 128 channels,
  about 0.7 GMAC at 192 px): blastoseg trains and runs on 2-core CPUs, and at stride 8 a
  192 px crop still gives 24 x 24 positions, enough for 8 cells whose centres are >= 20 px
  apart. ``encoder_stages=3`` adds ``layer3`` (stride 16) for larger inputs.
* **Residual Incremental Atrous Pyramid** (RIAP, eq. 1, Fig. 4): five 3 x 3 dilated
  convolutions with rates 2^i (i = 0..4) in a *cascade*: each one works on the previous one's
  output plus a residual connection, ``x_i = x_{i-1} + relu(bn(conv_{2^(i-1)}(x_{i-1})))``, so
  the receptive field grows incrementally (1, 3, 7, 15, 31, 63 positions) without the
  "gridding" holes of a single large rate; the pyramid's output fuses the five levels with a
  1 x 1 convolution. ``riap=False`` is the ablation: the same five rates in *parallel* on the
  encoder output (a plain ASPP-like dilated pyramid), fused the same way.
* **Progressive Upsampling Convolution** (PUC): sub-pixel convolutions (a convolution with
  c * r^2 kernels followed by PixelShuffle(r), Shi et al. 2016) that upsample x2 per step
  until the input resolution. Our reading of the paper's kernel schedule: the first step has
  4 kernels per output channel-group (2^2: one x2 sub-pixel step), and every next step has 4
  times more (4, 16, 64, ... x ``puc_width``), so the channel count *grows* as the resolution
  grows; this mirrors the encoder, whose channels grow as resolution shrinks ("mirroring").
  The decoder's 3 x 3 convolutions use mirror (reflect) padding so that dots near the crop
  border are not pulled towards zero padding - the other possible reading of the mirroring
  step; both are written down in docs/models/count.md. ``puc=False`` is the ablation: one
  sub-pixel step from the pyramid straight to the input resolution (r = output stride).

The head is a 3 x 3 convolution to one channel and a softplus (the density must be >= 0;
``output_activation="relu"`` gives exact zeros instead);
the output is divided by ``output_scale`` so that the network works with values of order one
while the returned map integrates to the count (each target dot sums to 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from blastoseg.models.configs import CardConfig, check_positive_ints

__all__ = ["CellNet", "CellNetConfig", "CellNetConfigError", "ProgressiveUpsampling",
           "ResidualIncrementalAtrousPyramid", "ParallelAtrousPyramid"]

#: the five RIAP dilation rates of eq. 1: 2^i, i = 0..4
RIAP_RATES = tuple(2 ** i for i in range(5))


class CellNetConfigError(ValueError):
    """A CellNetConfig with a bad or unknown field."""


@dataclass
class CellNetConfig(CardConfig):
    """Cell-Net's architecture (and the ablation switches of section IV).

    Attributes
    ----------
    working_size
        Side S of the (square) framed crop the network sees; a multiple of the output stride.
    encoder
        ``"resnet18"`` or ``"resnet34"`` (torchvision layers, random init).
    encoder_stages
        ResNet stages after the stem: 2 (stride 8, default) or 3 (stride 16).
    pyramid_channels
        Channels of the atrous pyramid.
    riap
        True: the cascaded residual pyramid (eq. 1); False: five parallel dilated convs.
    puc
        True: progressive x2 sub-pixel steps; False: one sub-pixel step (x stride).
    puc_width
        Multiplier of the PUC kernel schedule (4, 16, 64 ... x puc_width kernels).
    output_scale
        The network's raw output is ``output_scale`` x density (values of order one).
    output_activation
        The output non-linearity: ``"softplus"`` (smooth, never exactly 0) or ``"relu"``
        (exact zeros on the background). A softplus floor integrates over the whole crop:
        a raw 0.005 everywhere is 1.8 cells at 192 px, which the pixel loss barely sees
        (docs/models/count.md, "Background floor").
    """

    working_size: int = 192
    encoder: str = "resnet18"
    encoder_stages: int = 2
    pyramid_channels: int = 128
    riap: bool = True
    puc: bool = True
    puc_width: int = 4
    output_scale: float = 100.0
    output_activation: str = "softplus"

    config_error = CellNetConfigError

    def __post_init__(self) -> None:
        if self.encoder not in ("resnet18", "resnet34"):
            raise CellNetConfigError(f"encoder must be 'resnet18' or 'resnet34', got "
                                     f"{self.encoder!r}")
        if self.encoder_stages not in (2, 3):
            raise CellNetConfigError(f"encoder_stages must be 2 or 3, got {self.encoder_stages!r}")
        check_positive_ints(self, ("pyramid_channels", "puc_width"), CellNetConfigError)
        if not isinstance(self.working_size, int) or self.working_size < self.stride \
                or self.working_size % self.stride:
            raise CellNetConfigError(f"working_size must be a positive multiple of the output "
                                     f"stride {self.stride}, got {self.working_size!r}")
        if not float(self.output_scale) > 0:
            raise CellNetConfigError(f"output_scale must be > 0, got {self.output_scale!r}")
        if self.output_activation not in ("softplus", "relu"):
            raise CellNetConfigError(f"output_activation must be 'softplus' or 'relu', got "
                                     f"{self.output_activation!r}")

    @property
    def stride(self) -> int:
        """Output stride of the encoder (4 from the stem, x2 per stage after layer1)."""
        return 2 ** (self.encoder_stages + 1)

    @property
    def encoder_channels(self) -> int:
        return 64 * 2 ** (self.encoder_stages - 1)


def _conv_bn_relu(cin: int, cout: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ResidualIncrementalAtrousPyramid(nn.Module):
    """RIAP (eq. 1, Fig. 4): five cascaded 3 x 3 dilated convs, rates 1, 2, 4, 8, 16, each
    with a residual connection; the five levels are fused by a 1 x 1 convolution."""

    cascaded = True

    def __init__(self, cin: int, channels: int, rates: tuple[int, ...] = RIAP_RATES) -> None:
        super().__init__()
        self.rates = tuple(rates)
        self.project = nn.Sequential(nn.Conv2d(cin, channels, 1, bias=False),
                                     nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
        self.levels = nn.ModuleList(_conv_bn_relu(channels, channels, r) for r in self.rates)
        self.fuse = nn.Sequential(nn.Conv2d(channels * len(self.rates), channels, 1, bias=False),
                                  nn.BatchNorm2d(channels), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.project(x)
        outs = []
        for level in self.levels:
            x = x + level(x)  # eq. 1: x_i = x_{i-1} + f_{2^(i-1)}(x_{i-1}), a cascade
            outs.append(x)
        return self.fuse(torch.cat(outs, dim=1))


class ParallelAtrousPyramid(ResidualIncrementalAtrousPyramid):
    """The ablation of RIAP: the same five rates applied in parallel to the encoder output
    (the same layers, without the cascade and its residual connections)."""

    cascaded = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.project(x)
        return self.fuse(torch.cat([level(x) for level in self.levels], dim=1))


class SubPixelStep(nn.Module):
    """One sub-pixel convolution: 3 x 3 conv (mirror padding) to cout * r^2 kernels, then
    PixelShuffle(r) to cout channels at r x the resolution."""

    def __init__(self, cin: int, cout: int, r: int) -> None:
        super().__init__()
        self.kernels = cout * r * r
        self.conv = nn.Conv2d(cin, self.kernels, 3, padding=1, padding_mode="reflect")
        self.shuffle = nn.PixelShuffle(r)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.shuffle(self.conv(x)))


class ProgressiveUpsampling(nn.Module):
    """PUC: log2(stride) x2 sub-pixel steps with 4, 16, 64 ... (x ``width``) kernels
    (``progressive=True``), or one x``stride`` step (the ablation)."""

    def __init__(self, cin: int, stride: int, width: int, progressive: bool = True) -> None:
        super().__init__()
        steps = int(round(math.log2(stride)))
        if progressive:
            # step k (k = 0, 1, ...) has width * 4^(k+1) kernels -> width * 4^k channels
            chans = [width * 4 ** k for k in range(steps)]
            layers, c = [], cin
            for cout in chans:
                layers.append(SubPixelStep(c, cout, 2))
                c = cout
        else:
            c = width * 4 ** (steps - 1)  # the same output width as the progressive decoder
            layers = [SubPixelStep(cin, c, stride)]
        self.steps = nn.ModuleList(layers)
        self.out_channels = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for step in self.steps:
            x = step(x)
        return x


def _resnet_encoder(config: CellNetConfig) -> nn.Sequential:
    from torchvision.models import resnet18, resnet34

    net = (resnet18 if config.encoder == "resnet18" else resnet34)(weights=None)
    # grey input: one channel instead of RGB (random init; nothing to adapt)
    conv1 = nn.Conv2d(1, 64, 7, stride=2, padding=3, bias=False)
    stages = [net.layer1, net.layer2, net.layer3][:config.encoder_stages]
    return nn.Sequential(conv1, net.bn1, net.relu, net.maxpool, *stages)


class CellNet(nn.Module):
    """Cell-Net: ResNet encoder -> RIAP -> PUC -> non-negative density map (see the module
    docstring). ``forward(x)`` takes (B, 1, S, S) float and returns (B, 1, S, S) densities."""

    def __init__(self, config: CellNetConfig | None = None) -> None:
        super().__init__()
        self.config = config or CellNetConfig()
        c = self.config
        self.encoder = _resnet_encoder(c)
        pyramid = ResidualIncrementalAtrousPyramid if c.riap else ParallelAtrousPyramid
        self.pyramid = pyramid(c.encoder_channels, c.pyramid_channels)
        self.decoder = ProgressiveUpsampling(c.pyramid_channels, c.stride, c.puc_width,
                                             progressive=c.puc)
        self.head = nn.Conv2d(self.decoder.out_channels, 1, 3, padding=1, padding_mode="reflect")
        # start near an empty map (softplus(-5) * S^2 / output_scale ~ 2.5 cells at 192 px;
        # relu(0.005) likewise ~ 1.8 cells, positive so that the gradient flows)
        nn.init.zeros_(self.head.weight)
        nn.init.constant_(self.head.bias, -5.0 if c.output_activation == "softplus" else 0.005)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 1:
            raise ValueError(f"CellNet expects (B, 1, H, W) images, got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        s = self.config.stride
        if h % s or w % s:
            raise ValueError(f"CellNet input sides must be multiples of {s}, got {h} x {w}")
        y = self.decoder(self.pyramid(self.encoder(x)))
        act = F.softplus if self.config.output_activation == "softplus" else F.relu
        return act(self.head(y)) / float(self.config.output_scale)
