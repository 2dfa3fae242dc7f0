"""SparseSEU-Net: sparse instance activation maps on the SE-U-Net (S4, Prytula 2023, sections
4.5.1-4.5.4, 5.7.1, 5.7.3).

The SE-U-Net (:mod:`blastoseg.models.seunet`) gives per-head decoder features. An
instance-aware decoder in the style of SparseInst (Cheng et al. 2022) sits on the features of
one decoder (``feature_head``, the cytoplasm decoder by default) and predicts a fixed set of N
instances, one-to-one matched to the cells during training (no boxes, no NMS):

- **Instance branch** (section 4.5.1): ``branch_convs`` x (3 x 3 conv + ReLU) -> a 3 x 3 conv
  with N output channels -> sigmoid: the instance activation maps A (B, N, h, w). Each map is
  normalised to sum 1 over its pixels (A'), and the instance features are the A'-weighted
  means of the branch features X, a = A' X^T (eq. 4.9), (B, N, D). Two linear layers give the
  class logits (B, N, K) and the mask kernels k (B, N, kernel_dim); an optional third gives the
  IoU-objectness logit (section 5.7.3, ``iou_head``).
- **Mask branch** (section 4.5.2): ``branch_convs`` x (3 x 3 conv + ReLU) -> a 1 x 1 conv to
  ``kernel_dim`` channels: the mask features M (B, kernel_dim, h, w). The masks are the dot
  products m_i = k_i . M (per pixel), (B, N, h, w), bilinearly up-sampled to the input size.
- **Multi-level aggregation** (section 4.5.4, ``multi_level``): the branches read the
  features of *all* decoder levels of ``feature_head``, resized to the branch resolution and
  concatenated, instead of one level.
- **Overlap conditioning** (section 5.7.1, ``overlap_conditioned``): the overlap decoder's
  features (the same level(s)) are concatenated to the branch input, so the instance decoder
  sees where cells overlap. Needs ``"overlap"`` among the SE-U-Net heads.

The SE-U-Net's own head logits are returned too (``heads``): they are trained with the
SE-U-Net loss as auxiliary tasks and give the nuclei and overlap maps at inference.

Interpretation (the thesis text is not available here):

- ``branch_stride`` (our addition, default 4): the branches run at 1/``branch_stride`` of
  the input resolution, on the decoder level of that stride (SparseInst runs them at 1/8 of
  the input; at full resolution eight 64-channel 3 x 3 convolutions cost ~20 GMAC for a
  256 x 256 image, far from the CPU speed goal of the issue). The mask logits are then
  up-sampled bilinearly to the input size. ``branch_stride=1`` is the literal full-resolution
  reading ("upsampled to full size" for the multi-level variant). With ``multi_level`` the
  finer levels are average-pooled and the coarser ones bilinearly up-sampled to the branch
  resolution.
- ``coord_features`` (default on): two channels of normalised x, y coordinates in [-1, 1]
  are concatenated to the branch input, as in SparseInst; without them translation-invariant
  activation maps cannot tell two identical-looking cells apart.
- Initialisation follows SparseInst / RetinaNet practice: the class-logit bias and the
  activation-map conv bias start at logit(0.01) (``class_prior``), so at the start every
  prediction is "no object" and the maps are small and uniform; kernels and the map conv
  start with small normal weights (std 0.01); the branch convs with He initialisation.
- ``activation_maps`` are returned at the branch resolution (B, N, H / s, W / s), where they
  sum to 1; up-sampling them to the input size for every prediction would cost N full-size
  maps per image at inference.

This module is torch only (no file I/O); :class:`SparseSEUNetConfig` is stored in model
cards (``config["model"]``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from blastoseg.errors import BlastosegError
from blastoseg.models.configs import CardConfig
from blastoseg.models.seunet import SEUNet, SEUNetConfig, SEUNetConfigError

__all__ = [
    "SparseSEUNet",
    "SparseSEUNetConfig",
    "SparseSEUNetConfigError",
    "SparseSEUNetOutput",
    "default_seunet_dict",
]


class SparseSEUNetConfigError(BlastosegError, ValueError):
    """A SparseSEU-Net configuration (e.g. from a model card) has an unknown key or a bad
    value."""


def default_seunet_dict() -> dict[str, Any]:
    """The default SE-U-Net under a SparseSEU-Net: cytoplasm, nuclei and overlap heads,
    base width 8, depth 4 (the other keys at their SEUNetConfig defaults)."""
    return SEUNetConfig(heads=("cytoplasm", "nuclei", "overlap"), base_width=8,
                        depth=4).to_dict()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class SparseSEUNetConfig(CardConfig):
    """Everything needed to rebuild :class:`SparseSEUNet`.

    Attributes
    ----------
    seunet
        The SE-U-Net's :class:`~blastoseg.models.seunet.SEUNetConfig` as a dict (an
        ``SEUNetConfig`` is accepted and converted); missing keys take the values of
        :func:`default_seunet_dict`. Default: heads cytoplasm, nuclei, overlap; base width 8; depth 4.
    num_instances
        N, the number of predictions (instance activation maps) per image.
    branch_width
        Channels of the instance and mask branch convolutions (D).
    branch_convs
        3 x 3 conv + ReLU blocks in each branch.
    kernel_dim
        Length of a mask kernel k_i = channels of the mask features M.
    num_classes
        K, object classes (1: "cell"); no background class (sigmoid scores).
    multi_level
        Section 4.5.4: feed the branches with every decoder level of ``feature_head``.
    feature_head
        The SE-U-Net head whose decoder features feed the branches.
    overlap_conditioned
        Section 5.7.1: also feed the overlap decoder's features (needs an ``"overlap"`` head).
    iou_head
        Section 5.7.3: predict an IoU-objectness logit per instance.
    branch_stride
        The branches run at 1/branch_stride of the input size (a power of two, at most
        ``2**(depth - 1)``); 1 = full resolution.
    coord_features
        Concatenate normalised x, y coordinate channels to the branch input.
    class_prior
        Initial class probability (the class bias is its logit).
    """

    seunet: dict[str, Any] = field(default_factory=default_seunet_dict)
    num_instances: int = 100
    branch_width: int = 64
    branch_convs: int = 4
    kernel_dim: int = 64
    num_classes: int = 1
    multi_level: bool = False
    feature_head: str = "cytoplasm"
    overlap_conditioned: bool = False
    iou_head: bool = False
    branch_stride: int = 4
    coord_features: bool = True
    class_prior: float = 0.01

    config_error = SparseSEUNetConfigError

    def __post_init__(self) -> None:
        errors: list[str] = []
        seunet = self.seunet
        if isinstance(seunet, SEUNetConfig):
            seunet = seunet.to_dict()
        if seunet is None:
            seunet = default_seunet_dict()
        seu: SEUNetConfig | None = None
        if not isinstance(seunet, dict):
            errors.append(f"seunet must be a dict of SEUNetConfig keys, got "
                          f"{type(seunet).__name__}")
        else:
            try:
                seu = SEUNetConfig.from_dict({**default_seunet_dict(), **seunet})
            except SEUNetConfigError as exc:
                errors.append(f"seunet: {exc}")
        for name, lo, hi in (("num_instances", 1, 4096), ("branch_width", 1, 4096),
                             ("branch_convs", 0, 32), ("kernel_dim", 1, 4096),
                             ("num_classes", 1, 1000), ("branch_stride", 1, 128)):
            value = getattr(self, name)
            if not _is_int(value) or not lo <= value <= hi:
                errors.append(f"{name} must be an integer in {lo}..{hi}, got {value!r}")
        for name in ("multi_level", "overlap_conditioned", "iou_head", "coord_features"):
            if not isinstance(getattr(self, name), bool):
                errors.append(f"{name} must be true or false, got {getattr(self, name)!r}")
        if (isinstance(self.class_prior, bool) or not isinstance(self.class_prior, (int, float))
                or not 0.0 < float(self.class_prior) < 1.0):
            errors.append(f"class_prior must be in (0, 1), got {self.class_prior!r}")
        if seu is not None:
            if self.feature_head not in seu.heads:
                errors.append(f"feature_head {self.feature_head!r} is not one of the SE-U-Net "
                              f"heads {list(seu.heads)}; add it to seunet['heads'] or pick one "
                              f"of them")
            if self.overlap_conditioned is True:
                if "overlap" not in seu.heads:
                    errors.append(f"overlap_conditioned needs an 'overlap' head in the "
                                  f"SE-U-Net; its heads are {list(seu.heads)} (add 'overlap' "
                                  f"to seunet['heads'] or set overlap_conditioned to false)")
                elif self.feature_head == "overlap":
                    errors.append("overlap_conditioned is redundant when feature_head is "
                                  "'overlap'; choose another feature_head")
            s = self.branch_stride
            top = 2 ** (seu.depth - 1)
            if _is_int(s) and s >= 1 and (s & (s - 1) or s > top):
                errors.append(f"branch_stride must be a power of two up to {top} (the "
                              f"coarsest decoder level of a depth-{seu.depth} SE-U-Net), got "
                              f"{s}")
        if errors:
            raise SparseSEUNetConfigError("invalid SparseSEUNetConfig: " + "; ".join(errors))
        self.seunet = seu.to_dict()
        self.class_prior = float(self.class_prior)

    @property
    def seunet_config(self) -> SEUNetConfig:
        """The SE-U-Net configuration as an :class:`SEUNetConfig`."""
        return SEUNetConfig.from_dict(self.seunet)

    @property
    def multiple(self) -> int:
        """Input height and width must be multiples of this (``2**depth``)."""
        return self.seunet_config.multiple

    def branch_level(self) -> int:
        """Index (coarse -> fine) of the decoder level at ``branch_stride``."""
        return self.seunet_config.depth - 1 - int(math.log2(self.branch_stride))

    def branch_in_channels(self) -> int:
        """Channels of the branches' input (features, optional overlap features, coords)."""
        dec = self.seunet_config.decoder_channels()  # coarse -> fine
        per_head = sum(dec) if self.multi_level else dec[self.branch_level()]
        n_heads = 2 if self.overlap_conditioned else 1
        return per_head * n_heads + (2 if self.coord_features else 0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        d = asdict(self)
        d["seunet"] = self.seunet_config.to_dict()
        return d


@dataclass
class SparseSEUNetOutput:
    """Output of :meth:`SparseSEUNet.forward`.

    Attributes
    ----------
    heads
        SE-U-Net head name -> (B, 1, H, W) logits.
    class_logits
        (B, N, K) class logits (sigmoid -> class probabilities).
    mask_logits
        (B, N, H, W) mask logits at the input resolution (at 1/``mask_stride`` of it when
        the forward pass was asked not to up-sample).
    iou_logits
        (B, N) IoU-objectness logits, or None without ``iou_head``.
    activation_maps
        (B, N, H / s, W / s) the normalised instance activation maps A' (each sums to 1),
        s = ``branch_stride``.
    mask_stride
        Input pixels per ``mask_logits`` pixel (1 unless not up-sampled).
    """

    heads: dict[str, torch.Tensor]
    class_logits: torch.Tensor
    mask_logits: torch.Tensor
    iou_logits: torch.Tensor | None
    activation_maps: torch.Tensor
    mask_stride: int = 1


def _conv_stack(cin: int, width: int, n: int) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = []
    for _ in range(n):
        conv = nn.Conv2d(cin, width, 3, padding=1)
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(conv.bias)
        layers += [conv, nn.ReLU(inplace=True)]
        cin = width
    return nn.Sequential(*layers), cin


class InstanceBranch(nn.Module):
    """Instance activation maps, instance features (eq. 4.9), class / kernel / IoU outputs."""

    def __init__(self, cfg: SparseSEUNetConfig, cin: int) -> None:
        super().__init__()
        self.convs, width = _conv_stack(cin, cfg.branch_width, cfg.branch_convs)
        self.iam_conv = nn.Conv2d(width, cfg.num_instances, 3, padding=1)
        self.cls = nn.Linear(width, cfg.num_classes)
        self.kernel = nn.Linear(width, cfg.kernel_dim)
        self.iou = nn.Linear(width, 1) if cfg.iou_head else None
        prior_logit = math.log(cfg.class_prior / (1.0 - cfg.class_prior))
        for layer in (self.iam_conv, self.cls):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.constant_(layer.bias, prior_logit)
        nn.init.normal_(self.kernel.weight, std=0.01)
        nn.init.zeros_(self.kernel.bias)

    def forward(self, x: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        feats = self.convs(x)
        b, d, h, w = feats.shape
        act = torch.sigmoid(self.iam_conv(feats)).flatten(2)  # A: (B, N, hw)
        act = act / act.sum(dim=-1, keepdim=True).clamp_min(1e-6)  # A', rows sum to 1
        # eq. 4.9: a = A' X^T, the activation-weighted mean feature of each instance
        inst = torch.bmm(act, feats.flatten(2).transpose(1, 2))  # (B, N, D)
        cls = self.cls(inst)
        kernels = self.kernel(inst)
        iou = self.iou(inst).squeeze(-1) if self.iou is not None else None
        return cls, kernels, iou, act.view(b, -1, h, w)


class MaskBranch(nn.Module):
    """Mask features M (section 4.5.2): conv stack, then a 1 x 1 conv to ``kernel_dim``."""

    def __init__(self, cfg: SparseSEUNetConfig, cin: int) -> None:
        super().__init__()
        self.convs, width = _conv_stack(cin, cfg.branch_width, cfg.branch_convs)
        self.proj = nn.Conv2d(width, cfg.kernel_dim, 1)
        nn.init.kaiming_normal_(self.proj.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.convs(x))


class SparseSEUNet(nn.Module):
    """SE-U-Net + sparse instance decoder (sections 4.5.1-4.5.4).

    >>> net = SparseSEUNet(SparseSEUNetConfig(num_instances=10))
    >>> out = net(torch.zeros(1, 1, 64, 64))
    >>> out.mask_logits.shape, out.class_logits.shape
    (torch.Size([1, 10, 64, 64]), torch.Size([1, 10, 1]))
    """

    def __init__(self, config: SparseSEUNetConfig | dict | None = None) -> None:
        super().__init__()
        config = SparseSEUNetConfig.from_dict(config)
        self.config = config
        self.seunet = SEUNet(config.seunet_config)
        cin = config.branch_in_channels()
        self.instance_branch = InstanceBranch(config, cin)
        self.mask_branch = MaskBranch(config, cin)

    @property
    def heads(self) -> tuple[str, ...]:
        """The SE-U-Net heads (auxiliary logit maps in the output)."""
        return self.seunet.heads

    @property
    def multiple(self) -> int:
        """Input height and width must be multiples of this."""
        return self.config.multiple

    def check_input(self, x: torch.Tensor) -> None:
        """Raise :class:`~blastoseg.errors.InvalidImageError` for a bad input (see
        :meth:`SEUNet.check_input`)."""
        self.seunet.check_input(x)

    def _level_features(self, levels: list[torch.Tensor]) -> list[torch.Tensor]:
        """The decoder level(s) the branches read, at the branch resolution."""
        cfg = self.config
        k = cfg.branch_level()
        if not cfg.multi_level:
            return [levels[k]]
        size = levels[k].shape[-2:]
        out = []
        for i, f in enumerate(levels):
            if i < k:  # coarser: up-sample
                f = F.interpolate(f, size=size, mode="bilinear", align_corners=False)
            elif i > k:  # finer: average-pool (sizes are exact multiples)
                f = F.avg_pool2d(f, 2 ** (i - k))
            out.append(f)
        return out

    @staticmethod
    def _coords(like: torch.Tensor) -> torch.Tensor:
        b, _, h, w = like.shape
        ys = torch.linspace(-1.0, 1.0, h, device=like.device, dtype=like.dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=like.device, dtype=like.dtype)
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        return torch.stack([xx, yy]).unsqueeze(0).expand(b, -1, -1, -1)

    def forward(self, x: torch.Tensor, *, upsample_masks: bool = True) -> SparseSEUNetOutput:
        """Predict N instances per image.

        Parameters
        ----------
        x
            (B, in_channels, H, W) float, H and W multiples of :attr:`multiple`.
        upsample_masks
            False: keep ``mask_logits`` at the branch resolution (1/``branch_stride``), e.g.
            to score predictions cheaply and up-sample only the kept ones.
        """
        cfg = self.config
        seu = self.seunet(x)
        parts = self._level_features(seu.features[cfg.feature_head])
        if cfg.overlap_conditioned:  # section 5.7.1
            parts += self._level_features(seu.features["overlap"])
        if cfg.coord_features:
            parts.append(self._coords(parts[0]))
        feats = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]

        cls, kernels, iou, act = self.instance_branch(feats)
        mask_feats = self.mask_branch(feats)  # M: (B, kernel_dim, h, w)
        b, _, h, w = mask_feats.shape
        # m_i = k_i . M: one dynamic 1 x 1 convolution per instance
        masks = torch.bmm(kernels, mask_feats.flatten(2)).view(b, -1, h, w)
        stride = cfg.branch_stride
        if upsample_masks and stride > 1:
            masks = F.interpolate(masks, size=tuple(x.shape[-2:]), mode="bilinear",
                                  align_corners=False)
            stride = 1
        return SparseSEUNetOutput(heads=seu.logits, class_logits=cls, mask_logits=masks,
                                  iou_logits=iou, activation_maps=act, mask_stride=stride)
