"""Light ResNet-FPN backbone for the amodal detector, trained from scratch.

torchvision's ResNet-18/34 with ``weights=None``, trainable normalisation (BatchNorm2d or
GroupNorm: FrozenBatchNorm only makes sense with pretrained statistics), an optional
one-channel stem for grey microscopy, only the first ``trunk_stages`` stages (layer4 holds
three quarters of ResNet-18's weights and is not needed for objects of <= 150 px), and a
narrow FPN (torchvision's ``BackboneWithFPN`` with a max-pool extra level).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn
from torchvision.models import resnet18, resnet34
from torchvision.models.detection.backbone_utils import BackboneWithFPN

from blastoseg.models.amodal_config import AmodalConfig

__all__ = ["build_light_backbone", "norm_layer_for"]

_STAGE_CHANNELS = (64, 128, 256, 512)  # BasicBlock ResNets (18, 34)


def norm_layer_for(kind: str) -> Callable[[int], nn.Module]:
    """Normalisation layer factory: ``"batch"`` or ``"group"`` (8 channels per group)."""
    if kind == "batch":
        return nn.BatchNorm2d
    if kind == "group":
        return lambda c: nn.GroupNorm(max(1, c // 8), c)
    raise ValueError(f"norm must be 'batch' or 'group', got {kind!r}")


def build_light_backbone(cfg: AmodalConfig) -> BackboneWithFPN:
    """ResNet trunk (first ``cfg.trunk_stages`` stages) + FPN of ``cfg.fpn_channels``.

    Returns a ``BackboneWithFPN`` whose output is an ordered dict of levels ``"0"`` ..
    ``str(trunk_stages - 1)`` (strides 4, 8, ...) plus ``"pool"``; ``out_channels`` is C.
    """
    norm = norm_layer_for(cfg.norm)
    make = {"resnet18": resnet18, "resnet34": resnet34}[cfg.backbone]
    trunk = make(weights=None, norm_layer=norm)
    if cfg.in_channels != 3:
        old = trunk.conv1
        trunk.conv1 = nn.Conv2d(cfg.in_channels, old.out_channels, kernel_size=old.kernel_size,
                                stride=old.stride, padding=old.padding, bias=False)
        nn.init.kaiming_normal_(trunk.conv1.weight, mode="fan_out", nonlinearity="relu")
    # IntermediateLayerGetter keeps modules only up to the last returned layer, so the
    # unused stages (and avgpool / fc) are not part of the model
    stages = range(1, cfg.trunk_stages + 1)
    return_layers = {f"layer{i}": str(i - 1) for i in stages}
    in_channels_list = [_STAGE_CHANNELS[i - 1] for i in stages]
    return BackboneWithFPN(trunk, return_layers=return_layers,
                           in_channels_list=in_channels_list, out_channels=cfg.fpn_channels)
